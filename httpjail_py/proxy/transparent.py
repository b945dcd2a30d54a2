"""What transparent mode must close before any request exists: TLS without an SNI (no
name to decide on), and connections that send nothing (protocols where the server speaks
first, like SSH or SMTP, are not HTTP either; mitmproxy would wait for them forever).
Both are closed and logged with their original destination. A sub-addon of `JailAddon`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from mitmproxy import ctx, tls
from mitmproxy.connection import Client, Connection
from mitmproxy.proxy import layer

from httpjail_py.engines.base import Decision, Reason
from httpjail_py.proxy.jails import JailRegistry, is_transparent

if TYPE_CHECKING:
    from mitmproxy.addons.proxyserver import Proxyserver

__all__ = ["SILENT_CLIENT_SECONDS", "TransparentGuard", "close_connections"]

SILENT_CLIENT_SECONDS = 5.0

# (client, method, target, host, port, decision, status): one request-log line and audit record.
Refuse = Callable[[Client, str, str, str, int, Decision, int | None], None]


def close_connections(client: Client, *connections: Connection) -> None:
    """Close, at once and in this order, those of `connections` (default: the client
    connection itself) that are still open on the client's proxy connection."""
    proxyserver: Proxyserver | None = ctx.master.addons.get("proxyserver")
    handler = proxyserver.connections.get(client.id) if proxyserver else None
    if handler is None:
        return
    for conn in connections or (client,):
        if conn in handler.transports:
            handler.close_connection(conn)


class TransparentGuard:
    def __init__(self, jails: JailRegistry, refuse: Refuse) -> None:
        self._jails = jails
        self._refuse = refuse
        self._silent: dict[str, asyncio.TimerHandle] = {}

    def _destination(self, client: Client) -> tuple[str, int]:
        address = client.sockname  # in transparent mode: the original destination
        return self._jails.display(client, str(address[0])), int(address[1])

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        client = data.context.client
        if not is_transparent(client) or data.client_hello.sni:
            return
        host, port = self._destination(client)
        decision = Decision.deny("TLS without SNI names no host to decide on", Reason.NOT_HTTP)
        self._refuse(client, "TLS", f"{host}:{port}", host, port, decision, None)
        asyncio.get_running_loop().call_soon(close_connections, client)

    def client_connected(self, client: Client) -> None:
        if is_transparent(client):
            loop = asyncio.get_running_loop()
            self._silent[client.id] = loop.call_later(SILENT_CLIENT_SECONDS, self._silent_client, client)

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        if nextlayer.data_client() and (timer := self._silent.pop(nextlayer.context.client.id, None)):
            timer.cancel()

    def _silent_client(self, client: Client) -> None:
        self._silent.pop(client.id, None)
        host, port = self._destination(client)
        decision = Decision.deny(
            f"sent nothing for {SILENT_CLIENT_SECONDS:g} s: only HTTP and TLS may leave", Reason.NOT_HTTP
        )
        self._refuse(client, "TCP", f"{host}:{port}", host, port, decision, None)
        close_connections(client)

    def client_disconnected(self, client: Client) -> None:
        if timer := self._silent.pop(client.id, None):
            timer.cancel()
