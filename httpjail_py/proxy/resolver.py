"""Name resolution for upstream connections, with `--resolve` overrides.

mitmproxy dials with `asyncio.open_connection(host, port)`, which resolves through the
running loop's `getaddrinfo`. We wrap that method on our loop, so the override applies
exactly where the socket is made while `server.address` keeps the name: mitmproxy's
connection pool matches on `server.address`, and rewriting it breaks keep-alive (after 5
pooled connections to one address the next request hangs).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from typing import Any

__all__ = ["install_resolver"]

# RFC 6761: names under .invalid never resolve; we do not even ask the system resolver.
_NEVER_RESOLVED = (".invalid",)


def install_resolver(loop: asyncio.AbstractEventLoop, overrides: Mapping[tuple[str, int], str]) -> None:
    """Make `loop.getaddrinfo` answer (host, port) pairs in `overrides` with their address."""
    system_getaddrinfo = loop.getaddrinfo
    table = dict(overrides)

    async def getaddrinfo(
        host: Any, port: Any, *, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host or "")
        key = (name.lower().rstrip("."), int(port or 0))
        if key in table:
            addr = table[key]
            fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
            sockaddr: tuple[Any, ...] = (addr, key[1], 0, 0) if fam == socket.AF_INET6 else (addr, key[1])
            return [(fam, type or socket.SOCK_STREAM, proto or socket.IPPROTO_TCP, "", sockaddr)]
        if key[0].endswith(_NEVER_RESOLVED) or key[0] == "invalid":
            raise socket.gaierror(socket.EAI_NONAME, f"{name} is a reserved name that never resolves")
        return await system_getaddrinfo(host, port, family=family, type=type, proto=proto, flags=flags)

    loop.getaddrinfo = getaddrinfo  # type: ignore[method-assign]
