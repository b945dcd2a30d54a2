"""The proxy's sockets, opened before mitmproxy is loaded (httpjail_py/listening.py)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from httpjail_py.config import Bind, Listener
from httpjail_py.errors import JailSetupError
from httpjail_py.listening import open_listeners
from tests.conftest import Jail


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
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        first = free.getsockname()[1]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        wanted = [Listener("regular", Bind("127.0.0.1", first)), Listener("regular", Bind("127.0.0.1", port))]
        with pytest.raises(JailSetupError, match=f"127.0.0.1:{port}.*HTTPJAIL_HTTP_BIND"):
            open_listeners(wanted)
    with socket.socket() as again:  # the first listener's socket was closed: its port is free
        again.bind(("127.0.0.1", first))
        again.listen()


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


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="needs IPv6 on the loopback interface")
def test_the_proxy_serves_ipv6_binds(jail: Jail) -> None:
    env = {"HTTPJAIL_HTTP_BIND": "[::1]:0", "HTTPJAIL_HTTPS_BIND": "[::1]:0"}
    denied = jail.upstream.url("api.test", "/echo")
    curl = f"echo $HTTPS_PROXY; curl -sS -m 20 -o /dev/null -w '%{{http_code}}\\n' {denied}"
    result = jail.run(["--js", "r.host === 'ok.test'"], ["sh", "-c", curl], env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    proxy, status = result.stdout.split()
    assert proxy.startswith("http://[::1]:") and status == "403"
