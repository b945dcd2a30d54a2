"""The proxy's listening sockets, opened before the proxy itself is loaded.

A jail's command can then start at once: the sockets it is sent to already exist, the
kernel queues its connections on them, and the proxy takes them from the queue once
mitmproxy is loaded (a few hundred milliseconds of imports, which the command's own start
overlaps). Nothing the command sends can go anywhere else in the meantime: its only ways
out (the jail's NAT, or its proxy variables) lead to these sockets.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

from httpjail_py.config import Bind, Listener
from httpjail_py.errors import JailSetupError

__all__ = ["OpenListeners", "cannot_listen", "open_listeners"]

# As asyncio's: how many connections the kernel queues before the proxy accepts them.
BACKLOG = 100


def cannot_listen(bind: Bind, err: BaseException | None) -> JailSetupError:
    hint = ""
    if isinstance(err, OSError) and err.errno == errno.EADDRINUSE:
        hint = " (the port is in use: pick another with HTTPJAIL_HTTP_BIND / HTTPJAIL_HTTPS_BIND)"
    return JailSetupError(f"cannot listen on {bind}: {err}{hint}")


@dataclass
class OpenListeners:
    """Listeners with their ports chosen and their sockets listening."""

    listeners: list[Listener]
    """The listeners asked for, in order, each with its actual port."""
    sockets: dict[Bind, socket.socket] = field(default_factory=dict)
    """One socket per distinct listener (identical listeners share one)."""

    @property
    def binds(self) -> list[Bind]:
        return [listener.bind for listener in self.listeners]

    def close(self) -> None:
        """Close the sockets (a no-op for those the proxy has closed already)."""
        for sock in self.sockets.values():
            sock.close()


def _listening_socket(bind: Bind) -> socket.socket:
    family = socket.AF_INET6 if ipaddress.ip_address(bind.host).version == 6 else socket.AF_INET
    # IPPROTO_TCP named, not left 0: asyncio turns Nagle's algorithm off (TCP_NODELAY)
    # only on connections whose socket says it is TCP, and each accepted connection
    # inherits this. Without it, small writes waited on delayed ACKs: 40 ms per request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        # What asyncio's start_server does for a socket it opens itself.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((bind.host, bind.port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise cannot_listen(bind, e) from e
    return sock


def open_listeners(wanted: Sequence[Listener]) -> OpenListeners:
    """Open a listening socket for each distinct listener of `wanted` (port 0: a free
    one). Raises JailSetupError, with none left open, when one cannot be opened."""
    opened = OpenListeners(listeners=[])
    actual: dict[Listener, Listener] = {}
    try:
        for listener in wanted:
            if listener not in actual:
                sock = _listening_socket(listener.bind)
                host, port = sock.getsockname()[:2]
                bound = Listener(listener.mode, Bind(host, port))
                opened.sockets[bound.bind] = sock
                actual[listener] = bound
            opened.listeners.append(actual[listener])
    except BaseException:
        opened.close()
        raise
    return opened
