"""Serve mitmproxy listeners on sockets httpjail opened before mitmproxy was loaded
(`httpjail_py.listening`): connections already queued on them are then the proxy's first.

mitmproxy opens a listener's socket itself (`AsyncioServerInstance.listen`). Its `listen`
is wrapped: for an address handed over with `adopt`, the server is started on that
socket; for any other, mitmproxy opens one as it always does.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from typing import Any

from mitmproxy.proxy import mode_servers

from httpjail_py.config import Bind

__all__ = ["adopt", "forget", "install"]

_adopted: dict[tuple[str, int], socket.socket] = {}
_installed = False


def adopt(sockets: Mapping[Bind, socket.socket]) -> None:
    """The next listener on each of these addresses serves the socket given for it."""
    _adopted.update({(bind.host, bind.port): sock for bind, sock in sockets.items()})


def forget(sockets: Mapping[Bind, socket.socket]) -> None:
    """Drop what `adopt` was given and no listener took (a start that failed)."""
    for bind in sockets:
        _adopted.pop((bind.host, bind.port), None)


def install() -> bool:
    """Wrap mitmproxy's `listen`. Returns False when mitmproxy has no such method."""
    global _installed
    if _installed:
        return True
    server_cls: Any = mode_servers.AsyncioServerInstance
    original = getattr(server_cls, "listen", None)
    if original is None:
        return False

    async def listen(self: Any, host: str, port: int) -> list[Any]:
        # An IPv6 host comes bracketed from the mode spec (`regular@[::1]:8080`).
        key = (host.removeprefix("[").removesuffix("]"), port)
        if self.mode.transport_protocol == "tcp" and (sock := _adopted.pop(key, None)):
            return [await asyncio.start_server(self.handle_stream, sock=sock)]
        return await original(self, host, port)  # type: ignore[no-any-return]

    listen.__name__ = "listen"
    server_cls.listen = listen
    _installed = True
    return True
