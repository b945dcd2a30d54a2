"""The nftables rules of one strong-mode jail, rendered as text for `nft -f`.

Pure functions, no I/O: the caller writes the text to a file (or pipes it) and runs
`nft -f` in the right network namespace. Two layers:

- `render_host_ruleset(spec)`, loaded in the HOST netns, is the one that holds against a
  jailed root (it cannot be flushed from inside the jail). One `table inet httpjail_<id>`:

  ========== ===================================================================
  prerouting every TCP/UDP flow to port 53 from the jail veth is DNATed to the DNS
             sinkhole, every other TCP flow to the proxy's transparent port;
             nothing else is DNATed.
  input      from the jail veth, only the jail address to the proxy port (TCP) and
             the DNS port (TCP, UDP) on the host address is accepted; IPv6 and the
             rest are dropped, with counters.
  forward    everything from or to the jail veth is dropped, with counters.
  ========== ===================================================================

- `render_jail_ruleset(spec)`, loaded INSIDE the jail netns, is a second layer only: it
  keeps a well-behaved child from even trying (and shows in its counters what it tried).

`render_delete(spec)` undoes the host table. The jail table goes with its netns.

Example::

    spec = JailNetSpec(
        jail_id="a1b2c3",
        host_veth="hj-a1b2c3",
        host_addr=IPv4Interface("10.200.0.1/30"),
        jail_addr=IPv4Interface("10.200.0.2/30"),
        proxy_port=8443,
        dns_port=5353,
    )
    Path("host.nft").write_text(render_host_ruleset(spec))   # then: nft -f host.nft
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Interface

__all__ = [
    "JAIL_TABLE",
    "TABLE_PREFIX",
    "JailNetSpec",
    "render_delete",
    "render_host_ruleset",
    "render_jail_ruleset",
    "table_name",
]

# Every host-side table starts with this; an orphan sweep can list tables by it.
TABLE_PREFIX = "httpjail_"
# The second-layer table inside a jail netns (one jail per netns, so one fixed name).
JAIL_TABLE = "httpjail_jail"

_JAIL_ID = re.compile(r"[a-z0-9]{1,12}")
# IFNAMSIZ is 16 bytes including the NUL. The character set keeps the name inert inside
# nft's double quotes: `"`, `\`, `;`, spaces or newlines would end the string or the rule,
# and a `*` would turn `iifname "x*"` into a wildcard match of every name starting with x.
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


def _check_jail_id(jail_id: object) -> str:
    if not isinstance(jail_id, str) or not _JAIL_ID.fullmatch(jail_id):
        raise ValueError(f"jail_id must be 1 to 12 characters of [a-z0-9], got {jail_id!r}")
    return jail_id


def _check_ifname(name: object) -> None:
    if not isinstance(name, str) or not _IFNAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(
            f"host_veth must be an interface name of 1 to 15 characters of [A-Za-z0-9_.-] "
            f"(not '.' or '..'), got {name!r}"
        )


def _check_addr(field: str, addr: object) -> IPv4Interface:
    if not isinstance(addr, IPv4Interface) or addr.network.prefixlen != 30:
        raise ValueError(
            f"{field} must be an IPv4Interface with a /30 prefix, e.g. 10.200.0.1/30, got {addr!r}"
        )
    ip, net = addr.ip, addr.network
    if ip in (net.network_address, net.broadcast_address):
        raise ValueError(
            f"{field} {addr} is the network or broadcast address of {net}; use one of its two hosts"
        )
    if ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved:
        raise ValueError(f"{field} {addr} is loopback, link-local, multicast or reserved; use a private /30")
    return addr


def _check_port(field: str, port: object) -> None:
    # bool is an int subclass; True would render as port 1.
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"{field} must be an int from 1 to 65535, got {port!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class JailNetSpec:
    """The network facts of one jail that its nftables rules are made of.

    Raises `ValueError` on construction if any field could not be rendered safely.
    """

    jail_id: str
    """1 to 12 characters of [a-z0-9]; the host table is `httpjail_<jail_id>`."""
    host_veth: str
    """The host end of the veth pair (the jail end is not named in any host rule)."""
    host_addr: IPv4Interface
    """The host end's address, e.g. 10.200.0.1/30: the jail's gateway, proxy and DNS."""
    jail_addr: IPv4Interface
    """The jail end's address in the same /30, e.g. 10.200.0.2/30."""
    proxy_port: int
    """The proxy's transparent-mode TCP port on host_addr."""
    dns_port: int
    """The DNS sinkhole's port (UDP and TCP) on host_addr."""
    http_proxy_port: int | None = None
    """The proxy's forward-proxy (HTTP_PROXY) port on host_addr, reached without DNAT."""

    def __post_init__(self) -> None:
        _check_jail_id(self.jail_id)
        _check_ifname(self.host_veth)
        host = _check_addr("host_addr", self.host_addr)
        jail = _check_addr("jail_addr", self.jail_addr)
        if host.network != jail.network:
            raise ValueError(f"host_addr {host} and jail_addr {jail} must be in the same /30")
        if host.ip == jail.ip:
            raise ValueError(f"host_addr and jail_addr must differ, both are {host.ip}")
        _check_port("proxy_port", self.proxy_port)
        _check_port("dns_port", self.dns_port)
        ports = {"proxy_port": self.proxy_port, "dns_port": self.dns_port}
        if self.http_proxy_port is not None:
            _check_port("http_proxy_port", self.http_proxy_port)
            ports["http_proxy_port"] = self.http_proxy_port
        if len(set(ports.values())) != len(ports):
            raise ValueError(f"the ports must differ (all TCP on host_addr), got {ports}")


def table_name(spec: JailNetSpec) -> str:
    """Returns the host-side table's name, `httpjail_<jail_id>`.

    Raises `ValueError` if the id is not 1 to 12 characters of [a-z0-9].
    """
    return TABLE_PREFIX + _check_jail_id(spec.jail_id)


def _chain(name: str, hook: str, rules: Sequence[str]) -> list[str]:
    return [f"\tchain {name} {{", f"\t\t{hook}", *(f"\t\t{rule}" for rule in rules), "\t}"]


def _table(name: str, chains: Sequence[list[str]]) -> str:
    # `create` (not `add`) fails the whole batch with EEXIST if the table already exists;
    # `add` would silently append a second copy of every rule to a stale or foreign table.
    lines = [f"create table inet {name}", f"table inet {name} {{"]
    for i, chain in enumerate(chains):
        lines += ([""] if i else []) + chain
    return "\n".join([*lines, "}", ""])


def render_host_ruleset(spec: JailNetSpec) -> str:
    """Returns the text of the host netns table for `spec`, for `nft -f`.

    Loading it fails (File exists) if the table already exists: delete the stale one first.
    """
    veth = f'iifname "{spec.host_veth}"'
    host, jail = spec.host_addr.ip, spec.jail_addr.ip
    # The forward proxy (what HTTP_PROXY names) is reached as itself: `accept` in a nat
    # chain only means "no translation here"; the input chain below still decides.
    direct = [] if spec.http_proxy_port is None else [
        f"{veth} ip daddr {host} tcp dport {spec.http_proxy_port} accept"
    ]
    proxy_ports = [spec.proxy_port] + ([] if spec.http_proxy_port is None else [spec.http_proxy_port])
    # Chain names avoid `fwd`, `in` and `out`: nft 1.0.6 parses them as keywords.
    prerouting = _chain(
        "prerouting",
        # DNAT in the HOST prerouting, so that SO_ORIGINAL_DST gives mitmproxy the real
        # destination. dstnat - 1: on one hook the first nat chain to bind a flow wins, and
        # Docker's (iptables) DNAT of published ports sits at dstnat and was registered first.
        "type nat hook prerouting priority dstnat - 1; policy accept;",
        [
            *direct,
            # `dnat ip to`: in an inet table nft requires the address family on dnat.
            f"{veth} tcp dport 53 dnat ip to {host}:{spec.dns_port}",
            f"{veth} udp dport 53 dnat ip to {host}:{spec.dns_port}",
            # Every other TCP flow, whatever its destination; IPv6 is not DNATed (an ip-only
            # dnat is a no-op for IPv6 in inet) and is dropped below.
            f"{veth} meta l4proto tcp dnat ip to {host}:{spec.proxy_port}",
        ],
    )
    # After prerouting DNAT, input sees the translated address and port.
    from_jail = f"{veth} ip saddr {jail} ip daddr {host}"
    input_ = _chain(
        "input",
        # filter - 1: our counters see the jail's packets before any host firewall chain.
        "type filter hook input priority filter - 1; policy accept;",
        [
            f"{veth} meta nfproto ipv6 counter drop",
            # A dropped packet is never confirmed in conntrack, so only flows accepted below (or
            # opened by the host) are established: no new flow gets in; path-MTU ICMP does.
            f"{veth} ct state established,related accept",
            # saddr: the proxy tells jails apart by client address, so no spoofing another.
            # One rule per protocol, no anonymous sets: `nft replace rule` crashes on them.
            *(f"{from_jail} tcp dport {port} accept" for port in proxy_ports),
            f"{from_jail} tcp dport {spec.dns_port} accept",
            f"{from_jail} udp dport {spec.dns_port} accept",
            f"{veth} counter drop",
        ],
    )
    forward = _chain(
        "forward",
        # ip_forward is 1 wherever Docker is installed; this is what stops routing out.
        "type filter hook forward priority filter - 1; policy accept;",
        [
            f"{veth} meta nfproto ipv6 counter drop",
            f"{veth} counter drop",
            f'oifname "{spec.host_veth}" counter drop',
        ],
    )
    return _table(table_name(spec), [prerouting, input_, forward])


def render_jail_ruleset(spec: JailNetSpec) -> str:
    """Returns the text of the second-layer table inside the jail netns, for `nft -f`.

    Output policy drop: loopback, IPv4 TCP from the jail address (the only non-loopback
    address, so it leaves by the default route via the veth, and the host DNATs it to the
    proxy), and DNS to the host address. IPv6 and ICMP are dropped with counters. No
    input chain: the host forward chain already lets nothing but the host reach the jail.
    """
    host, jail = spec.host_addr.ip, spec.jail_addr.ip
    output = _chain(
        "output",
        "type filter hook output priority filter; policy drop;",
        [
            'oifname "lo" accept',
            "meta nfproto ipv6 counter drop",
            "meta l4proto icmp counter drop",
            "ct state established,related accept",
            f"ip saddr {jail} ip daddr {host} udp dport 53 accept",
            f"ip saddr {jail} ip daddr {host} tcp dport 53 accept",
            f"ip saddr {jail} meta l4proto tcp accept",
            # Explicit, so that what the policy drops is counted.
            "counter drop",
        ],
    )
    return _table(JAIL_TABLE, [output])


def render_delete(spec: JailNetSpec) -> str:
    """Returns the text that deletes the host table for `spec`, for `nft -f`.

    nft 1.0.6 has no `destroy`: this fails with "No such file or directory" if the table
    is already gone, which a cleanup step must treat as done.
    """
    return f"delete table inet {table_name(spec)}\n"
