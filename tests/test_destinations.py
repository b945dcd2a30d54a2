"""Which addresses the proxy may dial (destinations.py): the default refusals, edge by edge,
the IPv6 forms that carry an IPv4 address, and what the user can and cannot open.

Each refused range is pinned at both ends (first and last address refused, with its own
category and network) and just outside them (one below the first and one above the last
dialled, unless that neighbour belongs to another refused range, which is then asserted).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from ipaddress import IPv4Network, IPv6Network, ip_address

import pytest

from httpjail_py.destinations import DestinationPolicy, Refusal, classify, embedded_ipv4, parse_network


@dataclass(frozen=True)
class Refused:
    """What `classify` should say: the category, the range --allow-private would open, and for
    an IPv6 form that carries an IPv4 address, that carried address (which is what is judged)."""

    what: str
    network: str
    carried: str = ""

    def carrying(self, address: str) -> Refused:
        return replace(self, carried=address)


PUBLIC = None  # not refused: an ordinary address

THIS_NETWORK = Refused('"this network" (0.0.0.0/8)', "0.0.0.0/8")
PRIVATE_10 = Refused("private (RFC 1918)", "10.0.0.0/8")
CGNAT = Refused("shared address space (CGNAT)", "100.64.0.0/10")
LOOPBACK = Refused("loopback", "127.0.0.0/8")
LINK_LOCAL = Refused("link-local", "169.254.0.0/16")
METADATA = Refused("the cloud metadata service", "169.254.169.254/32")
PRIVATE_172 = Refused("private (RFC 1918)", "172.16.0.0/12")
PRIVATE_192 = Refused("private (RFC 1918)", "192.168.0.0/16")
BENCHMARKING = Refused("reserved for benchmarking", "198.18.0.0/15")
MULTICAST = Refused("multicast", "224.0.0.0/4")
RESERVED = Refused("reserved", "240.0.0.0/4")
BROADCAST = Refused("broadcast", "255.255.255.255/32")

UNSPECIFIED_V6 = Refused("the unspecified address", "::/128")  # beyond the list
LOOPBACK_V6 = Refused("loopback", "::1/128")
LINK_LOCAL_V6 = Refused("link-local", "fe80::/10")
SITE_LOCAL_V6 = Refused("site-local", "fec0::/10")  # deprecated (RFC 3879); beyond the list
UNIQUE_LOCAL = Refused("unique-local", "fc00::/7")
MULTICAST_V6 = Refused("multicast", "ff00::/8")

# A Teredo address is 2001:0:<server IPv4>:<flags>:<port>:<client IPv4>, with the client's port
# and address stored bit-inverted. These share a public server (65.54.227.120) and port, and
# differ in the client.
TEREDO = "2001:0:4136:e378:8000:63bf:{}"

TABLE: list[tuple[str, Refused | None]] = [
    # 0.0.0.0/8 ("this network"); nothing below it
    ("0.0.0.0", THIS_NETWORK),
    ("0.255.255.255", THIS_NETWORK),
    ("1.0.0.0", PUBLIC),
    # 10.0.0.0/8
    ("9.255.255.255", PUBLIC),
    ("10.0.0.0", PRIVATE_10),
    ("10.255.255.255", PRIVATE_10),
    ("11.0.0.0", PUBLIC),
    # 100.64.0.0/10 (CGNAT)
    ("100.63.255.255", PUBLIC),
    ("100.64.0.0", CGNAT),
    ("100.127.255.255", CGNAT),
    ("100.128.0.0", PUBLIC),
    # 127.0.0.0/8
    ("126.255.255.255", PUBLIC),
    ("127.0.0.0", LOOPBACK),
    ("127.255.255.255", LOOPBACK),
    ("128.0.0.0", PUBLIC),
    # 169.254.0.0/16 (link-local)
    ("169.253.255.255", PUBLIC),
    ("169.254.0.0", LINK_LOCAL),
    ("169.254.255.255", LINK_LOCAL),
    ("169.255.0.0", PUBLIC),
    # 169.254.169.254: the metadata service has a category of its own; its neighbours are
    # ordinary link-local
    ("169.254.169.253", LINK_LOCAL),
    ("169.254.169.254", METADATA),
    ("169.254.169.255", LINK_LOCAL),
    # 172.16.0.0/12
    ("172.15.255.255", PUBLIC),
    ("172.16.0.0", PRIVATE_172),
    ("172.31.255.255", PRIVATE_172),
    ("172.32.0.0", PUBLIC),
    # 192.168.0.0/16
    ("192.167.255.255", PUBLIC),
    ("192.168.0.0", PRIVATE_192),
    ("192.168.255.255", PRIVATE_192),
    ("192.169.0.0", PUBLIC),
    # 198.18.0.0/15 (benchmarking)
    ("198.17.255.255", PUBLIC),
    ("198.18.0.0", BENCHMARKING),
    ("198.19.255.255", BENCHMARKING),
    ("198.20.0.0", PUBLIC),
    # 224.0.0.0/4 (multicast) ends where 240.0.0.0/4 (reserved) begins: the two edge rows in
    # the middle are each one range's edge and the other's neighbour
    ("223.255.255.255", PUBLIC),
    ("224.0.0.0", MULTICAST),
    ("239.255.255.255", MULTICAST),
    ("240.0.0.0", RESERVED),
    # ... and 240.0.0.0/4's last address is the broadcast address, which has its own category;
    # nothing above it
    ("255.255.255.254", RESERVED),
    ("255.255.255.255", BROADCAST),
    # ::1 (loopback): both neighbours are refused for reasons of their own. :: is the
    # unspecified address, and ::2 is an IPv4-compatible address (::/96, deprecated) carrying
    # 0.0.0.2
    ("::", UNSPECIFIED_V6),
    ("::1", LOOPBACK_V6),
    ("::2", THIS_NETWORK.carrying("0.0.0.2")),
    # fe80::/10 (link-local); above it is fec0::/10 (site-local)
    ("fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", PUBLIC),
    ("fe80::", LINK_LOCAL_V6),
    ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", LINK_LOCAL_V6),
    ("fec0::", SITE_LOCAL_V6),
    # fc00::/7 (unique-local)
    ("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", PUBLIC),
    ("fc00::", UNIQUE_LOCAL),
    ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", UNIQUE_LOCAL),
    ("fe00::", PUBLIC),
    # ff00::/8 (multicast); below it is the end of fec0::/10 (site-local), nothing above it
    ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", SITE_LOCAL_V6),
    ("ff00::", MULTICAST_V6),
    ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", MULTICAST_V6),
    # Ordinary addresses of both families
    ("8.8.8.8", PUBLIC),
    ("2606:4700:4700::1111", PUBLIC),
    #
    # The IPv6 forms that carry an IPv4 address are judged by the address they carry: their
    # first address carries 0.0.0.0 and their last 255.255.255.255 (for Teredo, inverted: the
    # other way round), and outside them nothing is carried.
    #
    # IPv4-mapped, ::ffff:0:0/96
    ("::fffe:ffff:ffff", PUBLIC),
    ("::ffff:0.0.0.0", THIS_NETWORK.carrying("0.0.0.0")),
    ("::ffff:255.255.255.255", BROADCAST.carrying("255.255.255.255")),
    ("::1:0:0:0", PUBLIC),
    ("::ffff:8.8.8.8", PUBLIC),
    ("::ffff:10.1.2.3", PRIVATE_10.carrying("10.1.2.3")),
    ("::ffff:127.0.0.1", LOOPBACK.carrying("127.0.0.1")),
    ("::ffff:169.254.169.254", METADATA.carrying("169.254.169.254")),
    # NAT64, 64:ff9b::/96
    ("64:ff9a:ffff:ffff:ffff:ffff:ffff:ffff", PUBLIC),
    ("64:ff9b::", THIS_NETWORK.carrying("0.0.0.0")),
    ("64:ff9b::ffff:ffff", BROADCAST.carrying("255.255.255.255")),
    ("64:ff9b::1:0:0", PUBLIC),
    ("64:ff9b::8.8.8.8", PUBLIC),
    ("64:ff9b::192.168.1.1", PRIVATE_192.carrying("192.168.1.1")),
    # 6to4, 2002::/16: the IPv4 address is the 32 bits after the prefix
    ("2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff", PUBLIC),
    ("2002::", THIS_NETWORK.carrying("0.0.0.0")),
    ("2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff", BROADCAST.carrying("255.255.255.255")),
    ("2003::", PUBLIC),
    ("2002:808:808::1", PUBLIC),
    ("2002:7f00:1::1", LOOPBACK.carrying("127.0.0.1")),
    # Teredo, 2001::/32: the client address is the last 32 bits inverted, so all zeros there
    # is 255.255.255.255 and all ones is 0.0.0.0
    ("2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff", PUBLIC),
    ("2001::", BROADCAST.carrying("255.255.255.255")),
    ("2001:0:ffff:ffff:ffff:ffff:ffff:ffff", THIS_NETWORK.carrying("0.0.0.0")),
    ("2001:1::", PUBLIC),
    (TEREDO.format("f7f7:f7f7"), PUBLIC),  # client 8.8.8.8
    (TEREDO.format("3f57:fefe"), PRIVATE_192.carrying("192.168.1.1")),  # client 192.168.1.1
    # 192.168.1.1 written without the inversion is the client 63.87.254.254, a public one:
    # a check that forgot to invert would refuse this
    (TEREDO.format("c0a8:101"), PUBLIC),
    # The Teredo server's address is carried too (here 10.0.0.1, with the public client 8.8.8.8)
    ("2001:0:a00:1:8000:63bf:f7f7:f7f7", PRIVATE_10.carrying("10.0.0.1")),
]


def _case_id(value: object) -> str:
    if isinstance(value, Refused):
        return f"{value.network} via {value.carried}" if value.carried else value.network
    return "public" if value is None else str(value)


@pytest.mark.parametrize(("address", "expected"), TABLE, ids=_case_id)
def test_classify(address: str, expected: Refused | None) -> None:
    refusal = classify(address)
    # An address object is judged as its text is.
    assert classify(ip_address(address)) == refusal
    if expected is None:
        assert refusal is None, f"{address} should be dialled, but: {refusal and refusal.message()}"
        return
    assert refusal is not None, f"{address} should be refused as {expected.what} ({expected.network})"
    assert (refusal.what, refusal.network) == (expected.what, expected.network)
    shown = str(ip_address(address))
    if expected.carried:
        # The carried IPv4 address is the one judged; the IPv6 form is what was dialled.
        assert (refusal.address, refusal.via) == (expected.carried, shown)
    else:
        assert (refusal.address, refusal.via) == (shown, "")
    assert refusal.can_allow


def test_table_has_no_repeated_address() -> None:
    # A shared edge (224/4 and 240/4) is listed once; a repeat would only hide a typo.
    addresses = [ip_address(address) for address, _ in TABLE]
    assert len(addresses) == len(set(addresses))


@pytest.mark.parametrize(
    ("address", "carried"),
    [
        ("::ffff:10.1.2.3", "10.1.2.3"),
        ("64:ff9b::203.0.113.7", "203.0.113.7"),
        ("2002:cb00:7107::1", "203.0.113.7"),
        (TEREDO.format("3f57:fefe"), "192.168.1.1"),  # the client, not the server
        ("::1", None),
        ("::", None),
        ("2606:4700:4700::1111", None),
        ("fe80::1", None),
    ],
)
def test_embedded_ipv4(address: str, carried: str | None) -> None:
    ip = ip_address(address)
    assert ip.version == 6
    assert embedded_ipv4(ip) == (ip_address(carried) if carried else None)


@pytest.mark.parametrize(
    ("address", "name", "message"),
    [
        ("127.0.0.1", "", "destination 127.0.0.1 is loopback; allow it with --allow-private 127.0.0.0/8"),
        # A name that is only the address again is not repeated.
        (
            "127.0.0.1",
            "127.0.0.1",
            "destination 127.0.0.1 is loopback; allow it with --allow-private 127.0.0.0/8",
        ),
        (
            "169.254.169.254",
            "metadata.google.internal",
            "destination 169.254.169.254 (metadata.google.internal) is the cloud metadata service; "
            "allow it with --allow-private 169.254.169.254/32",
        ),
        (
            "::ffff:10.0.0.1",
            "db.example",
            "destination ::ffff:a00:1 (db.example), which carries 10.0.0.1, is private (RFC 1918); "
            "allow it with --allow-private 10.0.0.0/8",
        ),
        ("fd00::1", "", "destination fd00::1 is unique-local; allow it with --allow-private fc00::/7"),
    ],
)
def test_message(address: str, name: str, message: str) -> None:
    refusal = classify(address)
    assert refusal is not None
    assert refusal.message(name) == message


@pytest.mark.parametrize(
    ("text", "network"),
    [
        ("10.0.0.0/8", IPv4Network("10.0.0.0/8")),
        (" 192.168.0.0/16 ", IPv4Network("192.168.0.0/16")),
        # Host bits are dropped rather than refused: 10.1.2.3/8 means 10.0.0.0/8.
        ("10.1.2.3/8", IPv4Network("10.0.0.0/8")),
        ("127.0.0.1", IPv4Network("127.0.0.1/32")),  # a single address
        ("fd00::/8", IPv6Network("fd00::/8")),
        ("::1", IPv6Network("::1/128")),
        ("0.0.0.0/0", IPv4Network("0.0.0.0/0")),
    ],
)
def test_parse_network(text: str, network: IPv4Network | IPv6Network) -> None:
    assert parse_network(text) == network


@pytest.mark.parametrize("text", ["", "private", "10.0.0.0/33", "10.0.0.256/8", "fd00::/129", "10.0.0.0/8/8"])
def test_parse_network_refuses(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_network(text)
    assert str(caught.value) == f"{text!r} is not an address range (CIDR such as 10.0.0.0/8)"


# --- DestinationPolicy -------------------------------------------------------------------------

OPENED = DestinationPolicy(allow_private=[parse_network("10.0.0.0/24"), parse_network("fd00::/16")])


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        # The opened range, at both ends ...
        ("10.0.0.0", PUBLIC),
        ("10.0.0.255", PUBLIC),
        # ... and only it: the rest of 10.0.0.0/8 and every other range stay refused.
        ("10.0.1.0", PRIVATE_10),
        ("10.255.255.255", PRIVATE_10),
        ("172.16.0.1", PRIVATE_172),
        ("127.0.0.1", LOOPBACK),
        ("169.254.169.254", METADATA),
        ("fd00::1", PUBLIC),
        ("fd01::1", UNIQUE_LOCAL),
        ("fc00::1", UNIQUE_LOCAL),
        ("::1", LOOPBACK_V6),
        # An embedded form is opened by the range of the IPv4 address it carries.
        ("::ffff:10.0.0.7", PUBLIC),
        ("::ffff:10.0.1.7", PRIVATE_10.carrying("10.0.1.7")),
        ("64:ff9b::10.0.0.7", PUBLIC),
        ("2002:a00:7::1", PUBLIC),
        (TEREDO.format("f5ff:fff8"), PUBLIC),  # client 10.0.0.7
        (TEREDO.format("f5ff:fef8"), PRIVATE_10.carrying("10.0.1.7")),
        ("8.8.8.8", PUBLIC),
    ],
    ids=_case_id,
)
def test_allow_private_opens_that_range_only(address: str, expected: Refused | None) -> None:
    refusal = OPENED.check(address, 443)
    if expected is None:
        assert refusal is None, f"{address} should be open, but: {refusal and refusal.message()}"
        return
    assert refusal is not None, f"{address} should stay refused as {expected.what}"
    assert (refusal.what, refusal.network) == (expected.what, expected.network)
    assert refusal.address == (expected.carried or str(ip_address(address)))


def test_addresses_the_user_named_are_allowed_and_only_then() -> None:
    # --resolve names an address on purpose: it is dialled even though it is private; the
    # same address reached through a name the user did not map stays refused.
    policy = DestinationPolicy()
    for address in ("10.1.2.3", "::1", "fd00::5", "127.0.0.1"):
        assert policy.check(address, 443, named_by_user=True) is None
        assert policy.check(address, 443) is not None


def _wide_open() -> DestinationPolicy:
    """Everything opened: what stays refused here (also for an address the user named,
    see test_never_open) is refused whatever the user says."""
    policy = DestinationPolicy(
        allow_private=[parse_network("0.0.0.0/0"), parse_network("::/0")],
        jail_networks=[parse_network("10.200.0.0/24"), parse_network("fd42::/64")],
    )
    policy.own_listeners |= {("127.0.0.1", 8080), ("::1", 8080)}
    return policy


@pytest.mark.parametrize(
    ("address", "port", "what", "network"),
    [
        # The jails' networks (their gateway is the host), at both ends, on any port
        ("10.200.0.0", 443, "a jail's own network", "10.200.0.0/24"),
        ("10.200.0.5", 443, "a jail's own network", "10.200.0.0/24"),
        ("10.200.0.255", 80, "a jail's own network", "10.200.0.0/24"),
        ("fd42::5", 443, "a jail's own network", "fd42::/64"),
        ("fd42::ffff:ffff:ffff:ffff", 443, "a jail's own network", "fd42::/64"),
        # ... and through a form that carries a jail address
        ("::ffff:10.200.0.5", 443, "a jail's own network", "10.200.0.0/24"),
        ("64:ff9b::10.200.0.5", 443, "a jail's own network", "10.200.0.0/24"),
        # The proxy's own listeners, on their port
        ("127.0.0.1", 8080, "the proxy itself", "127.0.0.1/32"),
        ("::1", 8080, "the proxy itself", "::1/128"),
        ("::ffff:127.0.0.1", 8080, "the proxy itself", None),  # its range: see the test below
    ],
)
@pytest.mark.parametrize("named_by_user", [False, True])
def test_never_open(address: str, port: int, what: str, network: str | None, named_by_user: bool) -> None:
    refusal = _wide_open().check(address, port, named_by_user=named_by_user)
    assert refusal is not None, f"{address}:{port} should be refused even with everything open"
    assert refusal.what == what
    assert not refusal.can_allow
    # Nothing the user can pass would open it, so the message suggests nothing.
    assert "--allow-private" not in refusal.message()
    assert refusal.message().endswith(f" is {what}")
    # The range that matched, as a range (not an address with a wrong prefix length).
    assert network is None or refusal.network == network, f"{address}:{port}: network {refusal.network!r}"


@pytest.mark.parametrize(
    ("address", "carried", "network"),
    [
        ("::ffff:10.200.0.5", "10.200.0.5", "10.200.0.0/24"),
        ("::ffff:127.0.0.1", "127.0.0.1", "127.0.0.1/32"),  # port 8080: the proxy itself
    ],
)
def test_never_open_names_the_carried_address(address: str, carried: str, network: str) -> None:
    # As for any refusal of an IPv6 form that carries an IPv4 address: `address` is the
    # carried address (and `network` its range), `via` the form dialled.
    refusal = _wide_open().check(address, 8080)
    assert refusal is not None
    got = (refusal.address, refusal.via, refusal.network)
    want = (carried, str(ip_address(address)), network)
    assert got == want, f"{address}: (address, via, network) is {got}, should be {want}"


@pytest.mark.parametrize(
    "address",
    ["10.200.1.0", "10.199.255.255", "fd42:0:0:1::", "172.16.0.1", "169.254.169.254", "::ffff:10.0.0.1"],
)
def test_wide_open_opens_the_rest(address: str) -> None:
    # Just outside the jail networks, and every other refused range, everything is open.
    assert _wide_open().check(address, 443) is None


def test_other_ports_of_the_proxys_own_address() -> None:
    # Only the listener itself is never open: another port on its address is loopback like any,
    # open when loopback is opened ...
    assert _wide_open().check("127.0.0.1", 8081) is None
    assert _wide_open().check("::1", 8081) is None
    # ... and refused, as loopback (which the user could open), when it is not.
    policy = DestinationPolicy()
    policy.own_listeners.add(("127.0.0.1", 8080))
    refusal = policy.check("127.0.0.1", 8081)
    assert refusal == Refusal("127.0.0.1", "loopback", "127.0.0.0/8")
    listener = policy.check("127.0.0.1", 8080)
    assert listener is not None and not listener.can_allow


@pytest.mark.parametrize("wildcard", ["0.0.0.0", "::"])
def test_a_listener_on_every_address_is_also_the_proxy_at_loopback(wildcard: str) -> None:
    policy = DestinationPolicy(allow_private=[parse_network("0.0.0.0/0"), parse_network("::/0")])
    policy.own_listeners.add((wildcard, 8080))
    for address in ("127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"):
        refusal = policy.check(address, 8080)
        assert refusal is not None and refusal.what == "the proxy itself", address
    assert policy.check("127.0.0.1", 8081) is None
