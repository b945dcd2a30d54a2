"""Name resolution for upstream connections: `--resolve` overrides, the destination policy
on every address, and the addresses that were checked are the ones dialled.

mitmproxy dials with `asyncio.open_connection(host, port)`, which resolves through the
running loop's `getaddrinfo`. We replace that method on our loop, so the policy applies
exactly where the socket is made, while `server.address` keeps the name: mitmproxy's
connection pool matches on `server.address`, and rewriting it breaks keep-alive (after 5
pooled connections to one address the next request hangs).

A name is resolved once per `CACHE_SECONDS`: the lookup the addon makes after the rule
allowed a request is the one the dial uses, so a DNS answer that changes between the
check and the dial (rebinding) is never seen. The dial checks again whatever it gets, so
no path reaches a socket without the policy. An IP literal never reaches `getaddrinfo`
(asyncio skips it), which is why the addon checks every dial in `server_connect` too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from httpjail_py.destinations import DestinationPolicy, Refusal
from httpjail_py.proxy.jails import normal_host

__all__ = ["Lookup", "UpstreamResolver"]

CACHE_SECONDS = 30.0

# RFC 6761: names under .invalid never resolve; we do not even ask the system resolver.
_NEVER_RESOLVED = (".invalid",)


@dataclass(frozen=True, slots=True)
class Lookup:
    """The addresses `host` will be dialled at, in order; or why it will not be."""

    host: str
    addresses: tuple[str, ...] = ()
    refusal: Refusal | None = None
    error: str | None = None  # the name did not resolve

    @property
    def ok(self) -> bool:
        return self.refusal is None and self.error is None

    def problem(self) -> str:
        """What stops the dial, for the 403/502 body and the logs."""
        if self.refusal is not None:
            return self.refusal.message(self.host)
        return f"cannot resolve {self.host}: {self.error}"


def _literal(name: str) -> str | None:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return None


class UpstreamResolver:
    def __init__(
        self,
        overrides: Mapping[tuple[str, int], str] | None = None,
        policy: DestinationPolicy | None = None,
    ) -> None:
        self.overrides = dict(overrides or {})
        self.policy = policy or DestinationPolicy()
        self._system: Any = None
        self._cache: dict[tuple[str, int], tuple[float, Lookup]] = {}
        self._pending: dict[tuple[str, int], asyncio.Task[Lookup]] = {}

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make `loop.getaddrinfo` answer through `lookup` (mitmproxy's dials use it)."""
        if self._system is not None:
            return
        self._system = loop.getaddrinfo
        loop.getaddrinfo = self._getaddrinfo  # type: ignore[method-assign]

    async def lookup(self, host: str, port: int) -> Lookup:
        """Resolve `host` (once per CACHE_SECONDS) and check every address for `port`."""
        name = normal_host(host)
        key = (name, port)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        task = self._pending.get(key)
        if task is None:
            # A task of its own: callers that give up (cancelled) do not cancel the
            # lookup for the others waiting on it.
            task = asyncio.get_running_loop().create_task(self._resolve(name, port))
            self._pending[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(task)

    def _finished(self, key: tuple[str, int], task: asyncio.Task[Lookup]) -> None:
        del self._pending[key]
        if task.cancelled() or task.exception() is not None:
            return
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = (time.monotonic() + CACHE_SECONDS, task.result())

    async def _resolve(self, name: str, port: int) -> Lookup:
        if (address := self.overrides.get((name, port))) is not None:
            refusal = self.policy.check(address, port, named_by_user=True)
            return Lookup(name, refusal=refusal) if refusal else Lookup(name, (address,))
        if (literal := _literal(name)) is not None:
            addresses: list[str] = [literal]
        elif name == "invalid" or name.endswith(_NEVER_RESOLVED):
            return Lookup(name, error="a reserved name that never resolves")
        else:
            system = self._system or asyncio.get_running_loop().getaddrinfo
            try:
                infos = await system(name, port, type=socket.SOCK_STREAM)
            except OSError as e:
                return Lookup(name, error=str(e.strerror or e))
            addresses = list(dict.fromkeys(str(info[4][0]).partition("%")[0] for info in infos))
        for address in addresses:
            if (refusal := self.policy.check(address, port)) is not None:
                return Lookup(name, refusal=refusal)
        return Lookup(name, tuple(addresses))

    async def _getaddrinfo(
        self, host: Any, port: Any, *, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> list[tuple[Any, ...]]:
        name = host.decode() if isinstance(host, bytes) else str(host or "")
        number = int(port or 0)
        result = await self.lookup(name, number)
        if not result.ok:
            raise OSError(f"httpjail: {result.problem()}")
        infos = []
        for address in result.addresses:
            fam = socket.AF_INET6 if ":" in address else socket.AF_INET
            if family not in (0, fam):
                continue
            sockaddr = (address, number, 0, 0) if fam == socket.AF_INET6 else (address, number)
            infos.append((fam, type or socket.SOCK_STREAM, proto or socket.IPPROTO_TCP, "", sockaddr))
        if not infos:
            raise socket.gaierror(socket.EAI_ADDRFAMILY, f"{name} has no address of family {family}")
        return infos
