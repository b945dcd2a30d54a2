"""The DNS sinkhole's listeners: UDP and TCP on one port, answering only the asker.

The answers come from `dns.build_response`; nothing here opens an outgoing socket or
forwards a query anywhere.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from typing import Any

from httpjail_py.jail.linux.dns import MAX_UDP_QUERY, FakeAddressPool, resolve
from httpjail_py.ratelimit import RateLimit, TokenBucket

__all__ = ["DnsSinkhole"]

log = logging.getLogger("httpjail.dns")


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, sinkhole: DnsSinkhole) -> None:
        self._sinkhole = sinkhole
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self._transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if len(data) > MAX_UDP_QUERY:
            log.debug("ignored a %d-byte datagram from %s:%s", len(data), *addr[:2])
            return
        response = self._sinkhole._answer(data, addr, "udp")
        if response is not None and self._transport is not None:
            self._transport.sendto(response, addr)  # only ever to the peer that asked

    def error_received(self, exc: Exception) -> None:
        # E.g. ICMP port unreachable for a client that went away. Unlike mitmproxy_rs's UDP
        # listener, an asyncio datagram transport keeps serving after a failed send.
        log.debug("DNS sinkhole UDP error: %s", exc)


class DnsSinkhole:
    """The sinkhole's UDP and TCP listeners on one port. Start with `await DnsSinkhole.start(...)`.

    TCP carries several length-prefixed queries per connection; a connection closes after
    `idle_timeout` seconds without a complete query, on a query too short to answer, or
    when `max_qps` (shared by UDP and TCP) is exceeded. Excess UDP queries are dropped.
    Each query is logged at INFO on `httpjail.dns` with its type and name.
    """

    def __init__(self, pool: FakeAddressPool, *, max_qps: float, idle_timeout: float,
                 max_tcp_clients: int) -> None:
        self.pool = pool
        self.idle_timeout = idle_timeout
        self.max_tcp_clients = max_tcp_clients
        self.dropped = 0
        """Queries dropped by the rate limit."""
        self.host, self.port = "", 0
        self._limit = TokenBucket(RateLimit.steady(max_qps))
        self._warned_at = -60.0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @classmethod
    async def start(cls, host: str, port: int, pool: FakeAddressPool, *, max_qps: float = 200.0,
                    idle_timeout: float = 10.0, max_tcp_clients: int = 32) -> DnsSinkhole:
        """Listen on UDP and TCP `host:port`; port 0 picks one free port for both.

        Raises `OSError` if the port cannot be bound.
        """
        self = cls(pool, max_qps=max_qps, idle_timeout=idle_timeout, max_tcp_clients=max_tcp_clients)
        loop = asyncio.get_running_loop()
        for _ in range(1 if port else 20):
            tcp = await asyncio.start_server(self._serve_tcp, host, port)
            bound = tcp.sockets[0].getsockname()[1]
            try:
                udp, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self),
                                                             local_addr=(host, bound))
            except OSError as e:
                tcp.close()
                await tcp.wait_closed()
                if port or e.errno != errno.EADDRINUSE:
                    raise
                continue  # the kernel's free TCP port is taken for UDP: try another
            assert isinstance(udp, asyncio.DatagramTransport)
            self._tcp, self._udp, self.host, self.port = tcp, udp, host, bound
            log.debug("DNS sinkhole on %s:%d (udp, tcp), fake addresses from %s", host, bound, pool.network)
            return self
        raise OSError(errno.EADDRINUSE, f"no port on {host} was free for both UDP and TCP")

    def close(self) -> None:
        """Stop listening and close every TCP connection. Idempotent."""
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for writer in list(self._writers):
            writer.close()

    async def wait_closed(self) -> None:
        if self._tcp is not None:
            await self._tcp.wait_closed()

    async def __aenter__(self) -> DnsSinkhole:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await self.wait_closed()

    def _answer(self, query: bytes, peer: tuple[Any, ...], transport: str) -> bytes | None:
        if self._limit.take():
            self.dropped += 1
            if time.monotonic() - self._warned_at > 10:  # once per 10 s of flood, not per query
                self._warned_at = time.monotonic()
                log.warning("DNS sinkhole: over %g queries/s, dropping queries (%d so far)",
                            self._limit.limit.per_second, self.dropped)
            return None
        reply = resolve(query, self.pool)
        log.info("DNS %s from %s:%s (%s)", reply.describe(), peer[0], peer[1], transport)
        return reply.response

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if len(self._writers) >= self.max_tcp_clients:
            log.warning("DNS sinkhole: %d TCP clients already, refusing %s", len(self._writers), peer)
            writer.close()
            return
        self._writers.add(writer)
        try:
            while True:
                prefix = await asyncio.wait_for(reader.readexactly(2), self.idle_timeout)
                query = await asyncio.wait_for(reader.readexactly(int.from_bytes(prefix)),
                                               self.idle_timeout)
                response = self._answer(query, peer, "tcp")
                if response is None:
                    break
                writer.write(len(response).to_bytes(2) + response)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass  # idle, or the client went away: both end the connection, nothing to report
        finally:
            self._writers.discard(writer)
            writer.close()
