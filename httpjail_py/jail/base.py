"""The jail backend interface, and the choice of backend.

A backend says where the proxy must listen for it (`listen`), builds whatever isolation
it needs (`setup`, registering an undo step for each resource as it makes it), and runs
the child with the environment it needs (`run`). `teardown` undoes `setup`, in reverse
order, and is safe to call twice.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence

from httpjail_py.ca import CaFiles
from httpjail_py.config import Bind, Config
from httpjail_py.errors import ConfigError

__all__ = ["Jail", "select_jail"]


class Jail(abc.ABC):
    name: str

    def __init__(self, config: Config) -> None:
        self.config = config

    @abc.abstractmethod
    def listen(self) -> list[Bind]:
        """Where the proxy should listen: [HTTP proxy, HTTPS proxy]."""

    async def setup(self, proxy: Sequence[Bind]) -> None:  # noqa: B027 (optional: weak builds nothing)
        """Build the isolation, given where the proxy actually listens."""

    @abc.abstractmethod
    def child_env(self, env: Mapping[str, str], ca: CaFiles, proxy: Sequence[Bind]) -> dict[str, str]:
        """The child's environment, from httpjail's own."""

    @abc.abstractmethod
    async def run(self, argv: Sequence[str], env: Mapping[str, str]) -> int:
        """Run the child to completion. Returns httpjail's exit status for it."""

    async def teardown(self) -> None:  # noqa: B027 (optional, like setup)
        """Remove everything `setup` made. Idempotent."""


def select_jail(config: Config) -> Jail:
    """The backend for `config`. Raises ConfigError when none fits."""
    if config.weak:
        from httpjail_py.jail.weak import WeakJail

        return WeakJail(config)
    raise ConfigError(
        "the strong Linux jail (network namespace) is not available in this version; "
        "run with --weak to jail through proxy environment variables only"
    )
