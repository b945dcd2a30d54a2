"""Which addresses the proxy may dial: a pure classifier and the policy built on it.

The proxy runs on the host, so whatever a rule allows by name could reach the host's own
services, its private network, or the cloud metadata service, if the name resolves there
(and whoever controls a DNS name decides where it resolves). Every address the proxy is
about to dial is checked here first; `proxy/resolver.py` makes sure the address checked
is the address dialled.

Refused unless the user opens the range (`--allow-private CIDR`): loopback, RFC 1918,
link-local (the metadata service at 169.254.169.254 among them), CGNAT, unique-local,
"this network", multicast, broadcast, the benchmarking and reserved ranges, and the IPv6
forms that carry an IPv4 address, judged by the address they carry. Always refused: the
jails' own networks (their gateway is the host) and the proxy's own listeners.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

__all__ = ["DestinationPolicy", "Refusal", "classify", "embedded_ipv4", "parse_network"]

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

# Most specific first: the first match names the category.
_REFUSED_V4: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(net), what)
    for net, what in (
        ("169.254.169.254/32", "the cloud metadata service"),
        ("255.255.255.255/32", "broadcast"),
        ("0.0.0.0/8", '"this network" (0.0.0.0/8)'),
        ("10.0.0.0/8", "private (RFC 1918)"),
        ("100.64.0.0/10", "shared address space (CGNAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private (RFC 1918)"),
        ("192.168.0.0/16", "private (RFC 1918)"),
        ("198.18.0.0/15", "reserved for benchmarking"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
    )
)

_REFUSED_V6: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(net), what)
    for net, what in (
        ("::/128", "the unspecified address"),
        ("::1/128", "loopback"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("fc00::/7", "unique-local"),
        ("ff00::/8", "multicast"),
    )
)

_MAPPED = IPv6Network("::ffff:0:0/96")
_TRANSLATED = IPv6Network("::ffff:0:0:0/96")  # SIIT (RFC 2765)
_COMPATIBLE = IPv6Network("::/96")  # IPv4-compatible (deprecated), ::a.b.c.d
_NAT64 = IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = IPv6Network("2002::/16")
_TEREDO = IPv6Network("2001::/32")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an address may not be dialled."""

    address: str
    what: str  # "loopback", "private (RFC 1918)", ...
    network: str  # the range that matched: what --allow-private would have to open
    via: str = ""  # the IPv6 form that carried an IPv4 address, if any
    can_allow: bool = True

    def message(self, name: str = "") -> str:
        shown = self.via or self.address
        named = f" ({name})" if name and name != shown else ""
        carried = f", which carries {self.address}," if self.via else ""
        if not self.can_allow:
            return f"destination {shown}{named}{carried} is {self.what}"
        return (
            f"destination {shown}{named}{carried} is {self.what}; "
            f"allow it with --allow-private {self.network}"
        )


def parse_network(text: str) -> IPNetwork:
    """`--allow-private`'s argument: a CIDR, or a single address. Raises ValueError."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not an address range (CIDR such as 10.0.0.0/8)") from None


def embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 form carries (mapped, SIIT, compatible, NAT64, 6to4,
    the Teredo client), or None."""
    packed = address.packed
    if address in _MAPPED or address in _TRANSLATED or address in _NAT64:
        return IPv4Address(packed[12:])
    if address in _COMPATIBLE and address > IPv6Address("::1"):
        return IPv4Address(packed[12:])
    if address in _SIX_TO_FOUR:
        return IPv4Address(packed[2:6])
    if address in _TEREDO:
        return IPv4Address(bytes(b ^ 0xFF for b in packed[12:]))  # stored inverted
    return None


def classify(address: IPAddress | str) -> Refusal | None:
    """Why the default policy refuses `address`, or None when it is an ordinary one."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, IPv6Address):
        if (carried := embedded_ipv4(ip)) is not None:
            inner = classify(carried)
            if inner is None and ip.teredo is not None:
                inner = classify(ip.teredo[0])  # the Teredo server is carried too
            if inner is None:
                return None
            return Refusal(inner.address, inner.what, inner.network, via=str(ip))
        for net, what in _REFUSED_V6:
            if ip in net:
                return Refusal(str(ip), what, str(net))
        return None
    for net4, what in _REFUSED_V4:
        if ip in net4:
            return Refusal(str(ip), what, str(net4))
    return None


class DestinationPolicy:
    """`classify` plus what the user opened and what is never open.

    `allow_private`: ranges opened on purpose. `jail_networks`: the jails' own networks,
    and `own_listeners`: the proxy's (address, port) pairs, refused whatever else is open.
    """

    def __init__(
        self,
        *,
        allow_private: Sequence[IPNetwork] = (),
        jail_networks: Sequence[IPNetwork] = (),
    ) -> None:
        self.allow_private = tuple(allow_private)
        self.jail_networks = tuple(jail_networks)
        self.own_listeners: set[tuple[str, int]] = set()

    def _is_own_listener(self, ip: IPAddress, port: int) -> bool:
        if (str(ip), port) in self.own_listeners:
            return True
        # A listener on every address (0.0.0.0, ::) is also reached at loopback; at the
        # host's other addresses the loop header stops the request one hop later.
        return ip.is_loopback and any(
            (wildcard, port) in self.own_listeners for wildcard in ("0.0.0.0", "::")
        )

    def check(self, address: str, port: int, *, named_by_user: bool = False) -> Refusal | None:
        """Why `address`:`port` may not be dialled, or None when it may.

        `named_by_user`: the user gave this address for the name (`--resolve`), a statement
        of their own that the address is meant: only what is never open is refused then.
        """
        ip = ipaddress.ip_address(address)
        plain = (embedded_ipv4(ip) or ip) if isinstance(ip, IPv6Address) else ip
        via = str(ip) if plain is not ip else ""
        for net in self.jail_networks:
            if plain.version == net.version and plain in net:
                return Refusal(str(plain), "a jail's own network", str(net), via=via, can_allow=False)
        if self._is_own_listener(plain, port):
            itself = ipaddress.ip_network(plain)
            return Refusal(str(plain), "the proxy itself", str(itself), via=via, can_allow=False)
        if named_by_user:
            return None
        refusal = classify(ip)
        if refusal is None:
            return None
        judged = ipaddress.ip_address(refusal.address)
        if any(judged.version == net.version and judged in net for net in self.allow_private):
            return None
        return refusal
