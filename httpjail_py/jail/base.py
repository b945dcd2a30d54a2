"""The jail backend interface, and the choice of backend.

A backend builds what its proxy listeners need (`prepare`: the strong jail's network
namespace and veth, so that the proxy can listen on the veth's host end), says where the
proxy must listen (`listeners`), finishes its isolation once the proxy listens (`setup`:
the NAT and filter rules name the proxy's ports), and runs the child with the environment
it needs (`run`). Each step registers how to undo what it made as soon as it made it;
`teardown` undoes it all, in reverse order, is safe to call twice, and is safe to call
after any step failed or was cancelled half way.
"""

from __future__ import annotations

import abc
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from httpjail_py.config import Bind, Config, Listener
from httpjail_py.errors import ConfigError

if TYPE_CHECKING:
    from httpjail_py.ca import CaFiles

__all__ = ["Jail", "JailClient", "select_jail"]


@dataclass(frozen=True, slots=True)
class JailClient:
    """How the proxy recognises a jail's connections, and reads its fake addresses."""

    address: str
    """The address the jail's connections come from."""
    jail_id: str
    name_for: Callable[[str], str | None]
    """The name a fake address of the jail's DNS sinkhole was handed to, if any."""


class Jail(abc.ABC):
    name: str
    jail_id: str

    def __init__(self, config: Config) -> None:
        self.config = config
        self.jail_id = f"{self.name}-{os.getpid()}"

    async def prepare(self) -> None:  # noqa: B027 (optional: weak builds nothing)
        """Build what the proxy's listeners need."""

    @abc.abstractmethod
    def listeners(self) -> list[Listener]:
        """Where the proxy should listen; `setup` gets the bound addresses in this order."""

    def client(self) -> JailClient | None:
        """The jail's own client address, when its connections can be told apart."""
        return None

    async def setup(self, bound: Sequence[Bind]) -> None:  # noqa: B027 (optional, like prepare)
        """Finish the isolation, given where the proxy actually listens."""

    @abc.abstractmethod
    def child_env(self, env: Mapping[str, str], ca: CaFiles, bound: Sequence[Bind]) -> dict[str, str]:
        """The child's environment, from httpjail's own."""

    @abc.abstractmethod
    async def run(
        self, argv: Sequence[str], env: Mapping[str, str], started: Callable[[], object] | None = None
    ) -> int:
        """Run the child to completion. Returns httpjail's exit status for it. `started`:
        see `child.run_child`."""

    async def teardown(self) -> None:  # noqa: B027 (optional, like prepare)
        """Remove everything `prepare` and `setup` made. Idempotent."""


def strong_jail_problem() -> str | None:
    """Why the strong jail cannot run here, or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"the strong jail needs Linux (this is {sys.platform}); run with --weak"
    if os.geteuid() != 0:
        return (
            "the strong jail (a network namespace) needs root: run httpjail with sudo, "
            "or with --weak to jail through proxy environment variables only"
        )
    for tool, package in (("nft", "nftables"), ("ip", "iproute2")):
        if shutil.which(tool) is None:
            return (
                f"the strong jail needs the `{tool}` command: install it "
                f"(apt-get install {package}), or run with --weak"
            )
    return None


def select_jail(config: Config) -> Jail:
    """The backend for `config`. Raises ConfigError when none fits."""
    if config.weak:
        from httpjail_py.jail.weak import WeakJail

        return WeakJail(config)
    if problem := strong_jail_problem():
        if config.docker_run:
            problem = f"--docker-run wires the container's network as the strong jail does, and {problem}"
        raise ConfigError(problem)
    if config.docker_run:
        from httpjail_py.jail.docker.jail import DockerJail

        return DockerJail(config)
    from httpjail_py.jail.linux.strong import StrongJail

    return StrongJail(config)
