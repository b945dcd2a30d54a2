"""The proxy's sockets, opened before mitmproxy is loaded (httpjail_py/listening.py)."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from httpjail_py.config import Bind, Listener
from httpjail_py.errors import JailSetupError
from httpjail_py.listening import open_listeners


def test_identical_listeners_share_a_socket_and_others_get_their_own() -> None:
    any_port = Bind("127.0.0.1", 0)
    opened = open_listeners([Listener("regular", any_port), Listener("regular", any_port),
                             Listener("transparent", any_port)])
    try:
        first, second, third = opened.listeners
        assert first == second and first.bind.port != 0
        assert third.mode == "transparent" and third.bind.port not in (0, first.bind.port)
        assert set(opened.sockets) == {first.bind, third.bind}
        for bind, sock in opened.sockets.items():
            assert sock.getsockname() == (bind.host, bind.port)
    finally:
        opened.close()


def test_a_port_in_use_is_a_clear_error_and_leaves_nothing_open() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        fds = len(os.listdir("/proc/self/fd"))
        wanted = [Listener("regular", Bind("127.0.0.1", 0)), Listener("regular", Bind("127.0.0.1", port))]
        with pytest.raises(JailSetupError, match=f"127.0.0.1:{port}.*HTTPJAIL_HTTP_BIND"):
            open_listeners(wanted)
        assert len(os.listdir("/proc/self/fd")) == fds  # the first listener's socket is closed


def test_connections_taken_from_them_have_nagle_off() -> None:
    # The benchmark found 40 ms per keep-alive request when they did not: asyncio sets
    # TCP_NODELAY only on sockets that name their protocol.
    async def main() -> int:
        opened = open_listeners([Listener("regular", Bind("127.0.0.1", 0))])
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        [sock] = opened.sockets.values()
        server = await asyncio.start_server(handle, sock=sock)  # as mitmproxy's listener does
        async with server:
            bind = opened.listeners[0].bind
            _, writer = await asyncio.open_connection(bind.host, bind.port)
            nodelay = await asyncio.wait_for(seen, 10)
            writer.close()
        return nodelay

    assert asyncio.run(main()) != 0
