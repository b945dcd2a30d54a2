"""The jails a proxy serves, told apart by client address, and what transparent mode needs
from them: the name a redirected connection was meant for.

A connection NATed to the transparent listener arrives with only its original destination
address (SO_ORIGINAL_DST), usually a fake address our DNS sinkhole handed out. The name
the rules see comes from the request itself: the TLS SNI for HTTPS, the Host header (or
HTTP/2 `:authority`) for plain HTTP. The fake address only names the target in the logs
of what is not HTTP (`- TCP example.com:22`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from mitmproxy import http
from mitmproxy.connection import Client
from mitmproxy.net.http import url as mitm_url
from mitmproxy.proxy import mode_specs

from httpjail_py.engines.base import Decision, Reason
from httpjail_py.jail.linux.dns import DEFAULT_RANGE

__all__ = ["JailRegistry", "is_transparent", "normal_host"]


def normal_host(host: str) -> str:
    return host.lower().rstrip(".").strip("[]")


def is_transparent(client: Client) -> bool:
    return isinstance(client.proxy_mode, mode_specs.TransparentMode)


@dataclass(frozen=True, slots=True)
class _Jail:
    jail_id: str
    name_for: Callable[[str], str | None]


class JailRegistry:
    """Jail ids and fake-address lookups by client address; `default_id` for the rest."""

    def __init__(self, default_id: str) -> None:
        self.default_id = default_id
        self._by_address: dict[str, _Jail] = {}

    def register(self, address: str, jail_id: str, name_for: Callable[[str], str | None]) -> None:
        self._by_address[address] = _Jail(jail_id, name_for)

    def unregister(self, address: str) -> None:
        self._by_address.pop(address, None)

    def _jail(self, client: Client) -> _Jail | None:
        peer = client.peername
        return self._by_address.get(str(peer[0])) if peer else None

    def jail_id(self, client: Client) -> str:
        jail = self._jail(client)
        return jail.jail_id if jail else self.default_id

    def display(self, client: Client, host: str) -> str:
        """`host` as the logs show it: a fake address of the client's jail as its name."""
        jail = self._jail(client)
        name = jail.name_for(host) if jail else None
        return name or host

    def name_transparent(self, flow: http.HTTPFlow) -> Decision | None:
        """Make a redirected request's target its name: the SNI, else the Host header.

        Returns a refusal when there is no usable name. The port stays the original one;
        a Host header naming another port is refused later, as a mismatch.
        """
        request = flow.request
        original = f"{self.display(flow.client_conn, request.host)}:{request.port}"
        if request.scheme == "https":
            name = flow.client_conn.sni or ""
        else:
            header = request.host_header
            if not header:
                return Decision.deny(
                    f"plain HTTP to {original} without a Host header: no name to decide on",
                    Reason.HOST_MISMATCH,
                )
            try:
                name, _ = mitm_url.parse_authority(header, check=True)
            except ValueError:
                return Decision.deny(f"malformed Host header {header!r}", Reason.HOST_MISMATCH)
        name = normal_host(name)
        if not name:
            return Decision.deny(f"no name for the connection to {original}", Reason.HOST_MISMATCH)
        if _is_placeholder(name):
            return Decision.deny(
                f"{name} is a placeholder address of the jail's DNS; ask for the name instead",
                Reason.HOST_MISMATCH,
            )
        request.data.host = name
        return None


def _is_placeholder(host: str) -> bool:
    """Whether `host` is an address of the DNS sinkhole's range: never a real destination."""
    try:
        return ipaddress.ip_address(host) in DEFAULT_RANGE
    except ValueError:
        return False
