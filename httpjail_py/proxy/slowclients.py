"""Slow clients: a connection whose next request head is not complete in time is closed.

The clock runs from the moment the connection opens, from a CONNECT (the tunnel's first
request), and from the end of the last response once nothing is in flight; it stops when
a request head is complete. So a client that trickles a request head byte by byte
(slowloris) cannot hold a connection of the proxy for long, while a slow response, a
long upload or a WebSocket, which are in flight, are never cut. A sub-addon of `JailAddon`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from mitmproxy import http
from mitmproxy.connection import Client

from httpjail_py.config import DEFAULT_HEADER_TIMEOUT
from httpjail_py.proxy.transparent import close_connections

__all__ = ["SlowClientGuard"]

log = logging.getLogger("httpjail.proxy")


class SlowClientGuard:
    def __init__(self, timeout: float = DEFAULT_HEADER_TIMEOUT) -> None:
        self.timeout = timeout
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._in_flight: Counter[str] = Counter()
        self._upgraded: set[str] = set()

    def _arm(self, client: Client) -> None:
        self._disarm(client)
        if client.id not in self._upgraded:
            loop = asyncio.get_running_loop()
            self._timers[client.id] = loop.call_later(self.timeout, self._too_slow, client)

    def _disarm(self, client: Client) -> None:
        if timer := self._timers.pop(client.id, None):
            timer.cancel()

    def _too_slow(self, client: Client) -> None:
        self._timers.pop(client.id, None)
        peer = client.peername
        who = f"{peer[0]}:{peer[1]}" if peer else "a client"
        log.warning("closed the connection of %s: no complete request head within %g s", who, self.timeout)
        close_connections(client)

    def client_connected(self, client: Client) -> None:
        self._arm(client)

    def http_connect(self, flow: http.HTTPFlow) -> None:
        self._arm(flow.client_conn)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._in_flight[flow.client_conn.id] += 1
        self._disarm(flow.client_conn)

    def _finished(self, flow: http.HTTPFlow) -> None:
        client = flow.client_conn
        if self._in_flight[client.id] > 0:
            self._in_flight[client.id] -= 1
        if self._in_flight[client.id] == 0:
            self._arm(client)

    def response(self, flow: http.HTTPFlow) -> None:
        self._finished(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._finished(flow)

    def websocket_start(self, flow: http.HTTPFlow) -> None:
        self._upgraded.add(flow.client_conn.id)
        self._disarm(flow.client_conn)

    def client_disconnected(self, client: Client) -> None:
        self._disarm(client)
        self._in_flight.pop(client.id, None)
        self._upgraded.discard(client.id)
