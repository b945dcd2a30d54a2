"""The Linux strong jail: the child runs in a network namespace of its own whose only way
out is the proxy and the DNS sinkhole on the host end of its veth.

    prepare   sweep what dead jails left; claim an id; a free /30 and the netns, veth,
              addresses, route and resolv.conf (`netns.create_jail_network`)
    (the proxy's sockets open: a transparent and a forward-proxy listener on the host end)
    setup     the DNS sinkhole on the host end; the host nftables table (NAT of every TCP
              flow to the transparent listener, DNS to the sinkhole, nothing forwarded);
              the jail's own table as a second layer
    run       `enter.py` joins the netns, drops capabilities (and root, under sudo), and
              becomes the command, in the process group and terminal `child` gives it
    teardown  everything above, newest first; then the claim on the id

Each step is blocking (netlink, `nft`) and runs in a thread. A signal that cancels
`prepare` half way does not stop the thread; `teardown` waits for it before undoing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import pwd
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from httpjail_py.ca import CaFiles, invoking_user
from httpjail_py.config import Bind, Config, Listener
from httpjail_py.errors import JailSetupError
from httpjail_py.jail.base import Jail, JailClient
from httpjail_py.jail.child import run_child
from httpjail_py.jail.cleanup import UndoStack
from httpjail_py.jail.linux.dns import FakeAddressPool
from httpjail_py.jail.linux.dns_server import DnsSinkhole
from httpjail_py.jail.linux.liveness import Claim, claim, host_veth_name, subnet_lock, sweep
from httpjail_py.jail.linux.netns import (
    NETNS_ETC,
    add_netns,
    allocate_subnet,
    create_jail_network,
    netns_name,
)
from httpjail_py.jail.linux.nft import JailNetSpec, render_delete, render_host_ruleset, render_jail_ruleset
from httpjail_py.jail.weak import own_loopback_env, proxied_env

__all__ = ["StrongJail", "load_rulesets"]

log = logging.getLogger("httpjail")

# Run as a script by path (module doc of enter.py), never imported.
ENTER_SCRIPT = Path(__file__).with_name("enter.py")


def _nft_argv(netns: str | None) -> list[str]:
    argv = ["nft", "-f", "-"]
    return ["ip", "netns", "exec", netns, *argv] if netns is not None else argv


def _nft(text: str, netns: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_nft_argv(netns), input=text, capture_output=True, text=True, timeout=30)


def load_rulesets(rulesets: Sequence[tuple[str, str | None]]) -> None:
    """`nft -f -` with each text, in the host netns (netns None) or in that netns, all at
    once. Raises JailSetupError for the first that fails, once all are done."""
    procs = [subprocess.Popen(_nft_argv(netns), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _, netns in rulesets]
    failures = []
    for proc, (text, netns) in zip(procs, rulesets, strict=True):
        try:
            _, err = proc.communicate(text, timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if proc.returncode != 0:
            where = f"in {netns}" if netns else "on the host"
            failures.append(f"cannot load the jail's nftables rules {where}: {err.strip()}")
    if failures:
        raise JailSetupError(failures[0])


def _delete_table(spec: JailNetSpec) -> None:
    result = _nft(render_delete(spec))
    if result.returncode != 0 and "No such file or directory" not in result.stderr:
        raise RuntimeError(result.stderr.strip())


def _child_user() -> pwd.struct_passwd | None:
    """Who ran `sudo httpjail`: the child runs as them. None when root ran it, directly or
    through sudo (the child then stays root, without the capabilities enter.py drops)."""
    user = invoking_user()
    return user if user is not None and user.pw_uid != 0 else None


class StrongJail(Jail):
    name = "strong"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._undo = UndoStack()
        self._claim: Claim | None = None
        self._spec: JailNetSpec | None = None
        self._pool = FakeAddressPool()
        self._dns: DnsSinkhole | None = None
        self._preparing: asyncio.Future[None] | None = None
        self._user = _child_user()

    # --- prepare: the namespace ----------------------------------------------------------

    async def prepare(self) -> None:
        self._preparing = asyncio.ensure_future(asyncio.to_thread(self._make_network))
        await asyncio.shield(self._preparing)

    # At teardown, stop what still runs in the netns (the Docker jail's go with its containers).
    stop_leftovers = True

    def _sweep(self) -> list[str]:
        return sweep()

    def _make_netns(self, spec: JailNetSpec) -> Callable[[str], None]:
        """How the jail's netns comes to be: `ip netns add` (the Docker jail names a
        container's instead)."""
        return add_netns

    def _make_network(self) -> None:
        removed = self._sweep()
        if removed:
            log.warning("removed what a killed httpjail left behind: %s", ", ".join(removed))
        self._claim = claim()
        jail_id = self._claim.jail_id
        self.jail_id = netns_name(jail_id)
        with subnet_lock():
            host, jail = allocate_subnet()
            # The ports are placeholders until the proxy listens (`setup`); the network
            # does not depend on them.
            self._spec = JailNetSpec(
                jail_id=jail_id, host_veth=host_veth_name(jail_id), host_addr=host,
                jail_addr=jail, proxy_port=1, dns_port=2,
            )
            create_jail_network(self._spec, self._undo, self._make_netns(self._spec),
                                stop_leftovers=self.stop_leftovers)
        log.info("jail %s: %s (host end %s on %s)", self.jail_id, jail.ip, host.ip, self._spec.host_veth)

    def _net(self) -> JailNetSpec:
        if self._spec is None:
            raise RuntimeError("the strong jail is used before prepare()")
        return self._spec

    def listeners(self) -> list[Listener]:
        host = str(self._net().host_addr.ip)
        return [Listener("regular", Bind(host, 0)), Listener("transparent", Bind(host, 0))]

    def client(self) -> JailClient:
        return JailClient(str(self._net().jail_addr.ip), self.jail_id, self._pool.name_for)

    # --- setup: the rules ----------------------------------------------------------------

    async def setup(self, bound: Sequence[Bind]) -> None:
        regular, transparent = bound
        net = self._net()
        try:
            self._dns = await DnsSinkhole.start(str(net.host_addr.ip), 0, self._pool)
        except OSError as e:
            raise JailSetupError(f"cannot start the DNS sinkhole on {net.host_addr.ip}: {e}") from e
        self._spec = dataclasses.replace(
            net, proxy_port=transparent.port, dns_port=self._dns.port, http_proxy_port=regular.port
        )
        await asyncio.to_thread(self._load_rules, self._spec)

    def _load_rules(self, spec: JailNetSpec) -> None:
        # Pushed first: a table that failed to load is simply not there to delete.
        self._undo.push(f"delete nft table of {self.jail_id}", lambda: _delete_table(spec))
        load_rulesets([(render_host_ruleset(spec), None),
                       (render_jail_ruleset(spec), netns_name(spec.jail_id))])

    # --- run -----------------------------------------------------------------------------

    def child_env(self, env: Mapping[str, str], ca: CaFiles, bound: Sequence[Bind]) -> dict[str, str]:
        # Programs that honour HTTP_PROXY name their target in the CONNECT; the others are
        # caught all the same by the NAT.
        out = proxied_env(env, ca, bound[0], bound[0]) | own_loopback_env()
        if self._user is not None:
            out.update(HOME=self._user.pw_dir, USER=self._user.pw_name, LOGNAME=self._user.pw_name)
        return out

    def enter_argv(self, command: Sequence[str]) -> list[str]:
        net = self._net()
        ns = netns_name(net.jail_id)
        argv = [sys.executable, "-I", "-S", str(ENTER_SCRIPT), "--netns", ns,
                "--resolv", str(NETNS_ETC / ns / "resolv.conf")]
        if self._user is not None:
            argv += ["--user", f"{self._user.pw_uid}:{self._user.pw_gid}"]
        return [*argv, "--", *command]

    async def run(
        self, argv: Sequence[str], env: Mapping[str, str], started: Callable[[], object] | None = None
    ) -> int:
        return await run_child(
            self.enter_argv(argv), env, timeout=self.config.timeout, held=True, started=started
        )

    # --- teardown ------------------------------------------------------------------------

    async def teardown(self) -> None:
        if self._preparing is not None:
            await asyncio.wait([self._preparing])
            if not self._preparing.cancelled():
                self._preparing.exception()  # raised in prepare already (unless it was cancelled)
        if self._dns is not None:
            self._dns.close()
            await self._dns.wait_closed()
            self._dns = None
        await asyncio.to_thread(self._undo.run)
        if self._claim is not None:
            self._claim.release()
            self._claim = None
