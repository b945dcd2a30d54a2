"""The DNS sinkhole of a strong-mode jail: every name gets a fake address of ours, and no
query is ever forwarded, so DNS cannot carry data out of the jail (httpjail issue #53).

The host ruleset DNATs the jail's UDP and TCP port 53 here. Each name gets its own
address from a reserved range (`FakeAddressPool`), so a later TCP flow to that address
tells the proxy which name the child looked up, even for non-HTTP traffic (`- TCP name:22`).

Three layers, I/O only in the last (h11's "no I/O in the core"):

`FakeAddressPool` (name <-> fake address, pure state); `resolve` and `build_response` (bytes
in, bytes out), here; `dns_server.DnsSinkhole` (asyncio UDP and TCP listeners that only
answer the asker).

What the sinkhole answers:

  ================================================== ===========================================
  query                                              answer
  ================================================== ===========================================
  A, class IN                                        NOERROR, one A record: the fake address, TTL 5
  AAAA and every other type (TXT, MX, ANY, HTTPS...) NOERROR, no records (NODATA)
  AXFR, IXFR (zone transfers)                        NOTIMP
  a class other than IN, an opcode other than QUERY  NOTIMP
  QDCOUNT != 1, a compression pointer or an extended FORMERR
  label type in the question, a truncated question
  a name that is not printable ASCII without spaces  NXDOMAIN (never an address)
  or with a "." inside a label; the root name
  shorter than a header, or a response (QR set)      dropped, no answer
  ================================================== ===========================================

NODATA rather than NOTIMP for other types: stub resolvers take NOTIMP as a broken server
and retry or move on; NODATA ("the name exists, not this type") ends the lookup at once and
agrees with the A answer. AAAA is empty: the jail has no IPv6. TTL 5: a reused address (see
`FakeAddressPool`) must not stay cached. Answers are < 512 bytes, so UDP needs no TC bit.
"""

from __future__ import annotations

import logging
import struct
from collections import OrderedDict
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

__all__ = [
    "DEFAULT_RANGE", "FORMERR", "MAX_UDP_QUERY", "NOERROR", "NOTIMP", "NXDOMAIN", "TTL",
    "FakeAddressPool", "Reply", "build_response", "normalize_name", "resolve", "type_name",
]

log = logging.getLogger("httpjail.dns")

# A /16 of the benchmarking range (RFC 2544): not routed on the internet, not a LAN range.
DEFAULT_RANGE = IPv4Network("198.18.0.0/16")
TTL = 5
# RFC 1035 4.2.1: UDP messages are at most 512 bytes; a stub query (even with an EDNS OPT
# record) is far smaller, so anything larger is not a query we owe an answer.
MAX_UDP_QUERY = 512  # (TCP messages are capped at 64 KiB by their 16-bit length prefix.)

NOERROR, FORMERR, NXDOMAIN, NOTIMP = 0, 1, 3, 4
_RCODE_NAMES = {NOERROR: "NOERROR", FORMERR: "FORMERR", NXDOMAIN: "NXDOMAIN", NOTIMP: "NOTIMP"}
_TYPE_A, _CLASS_IN = 1, 1
_ZONE_TRANSFERS = {251, 252}  # IXFR, AXFR
_TYPE_NAMES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
               33: "SRV", 64: "SVCB", 65: "HTTPS", 251: "IXFR", 252: "AXFR", 255: "ANY"}

_HEADER = struct.Struct("!HHHHHH")
_QR, _AA, _RD, _RA = 0x8000, 0x0400, 0x0100, 0x0080
_OPCODE_MASK = 0x7800


def type_name(qtype: int) -> str:
    """The mnemonic of a query type, or `TYPE<n>` (RFC 3597) for one we do not name."""
    return _TYPE_NAMES.get(qtype, f"TYPE{qtype}")


def normalize_name(name: str) -> str:
    """The pool's key for `name`: lower-cased, trailing dot stripped.

    Raises `ValueError` unless the result is 1 to 253 characters of printable ASCII
    without spaces, in labels of 1 to 63 characters.
    """
    key = name.removesuffix(".")
    if not 1 <= len(key) <= 253:
        raise ValueError(f"a name has 1 to 253 characters, got {len(key)}")
    if not all("!" <= c <= "~" for c in key):
        raise ValueError(f"name {name!r} is not printable ASCII without spaces")
    if not all(1 <= len(label) <= 63 for label in key.split(".")):
        raise ValueError(f"name {name!r} has an empty label or one over 63 characters")
    return key.lower()


class FakeAddressPool:
    """Hands each distinct name a stable fake IPv4 address from `network`, and maps back.

    Addresses are handed out in order, skipping the network and broadcast addresses, so a
    /16 holds 65534 names and a /30 two. When the pool is full, the next new name takes the
    address of the least recently *asked* name (an `address_for` call counts as use,
    `name_for` does not), and that name is forgotten: a connection to the address after
    that is attributed to the new name. So `name_for` is a hint for logging; decisions
    still come from the TLS SNI or the Host header.

    Raises `ValueError` if `network` is not an IPv4 network of at least four addresses.
    """

    def __init__(self, network: IPv4Network | str = DEFAULT_RANGE) -> None:
        net = IPv4Network(network)
        if net.prefixlen > 30:
            raise ValueError(f"fake address range {net} is too small; use a /30 or larger")
        self.network = net
        self.capacity = net.num_addresses - 2
        self._next = 1
        self._by_name: OrderedDict[str, IPv4Address] = OrderedDict()
        self._by_address: dict[IPv4Address, str] = {}

    def __len__(self) -> int:
        return len(self._by_name)

    def address_for(self, name: str) -> IPv4Address:
        """The name's fake address, handing one out (or reusing the LRU one) if it has none.

        Raises `ValueError` for an invalid name (see `normalize_name`).
        """
        key = normalize_name(name)
        address = self._by_name.get(key)
        if address is not None:
            self._by_name.move_to_end(key)
            return address
        if self._next <= self.capacity:
            address = self.network.network_address + self._next
            self._next += 1
        else:
            evicted, address = self._by_name.popitem(last=False)
            log.debug("fake address pool %s is full: %s moves from %s to %s", self.network, address,
                      evicted, key)
        self._by_name[key] = address
        self._by_address[address] = key
        return address

    def name_for(self, address: IPv4Address | str) -> str | None:
        """The name that `address` was last handed to, or None (unknown or not an IPv4 address)."""
        try:
            return self._by_address.get(IPv4Address(address))
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class Reply:
    """What the sinkhole makes of one query: the bytes to send, and what to log."""

    response: bytes | None
    """The answer, or None: send nothing."""
    rcode: int | None = None
    name: str | None = None
    """The question's name for the log (undecodable bytes escaped as \\DDD), if it was read."""
    qtype: int | None = None
    address: IPv4Address | None = None

    def describe(self) -> str:
        """One log line's worth: `A exfil.test -> 198.18.0.7`, `TXT x.test -> NOERROR`..."""
        outcome = str(self.address) if self.address is not None else _RCODE_NAMES.get(self.rcode or 0)
        if self.name is None:
            return "unreadable, dropped" if self.response is None else f"malformed -> {outcome}"
        return f"{type_name(self.qtype or 0)} {self.name} -> {outcome}"


def _read_name(packet: bytes, offset: int) -> tuple[list[bytes], int]:
    labels: list[bytes] = []
    wire_length = 1
    while True:
        if offset >= len(packet):
            raise ValueError("truncated name")
        length = packet[offset]
        if length == 0:
            return labels, offset + 1
        if length & 0xC0:
            # The question is the first name in a query, so a compression pointer there has
            # nothing legitimate to point at: it is a loop or a probe. Refuse, never follow.
            raise ValueError("compression pointer or extended label type in the question")
        wire_length += 1 + length
        if wire_length > 255:
            raise ValueError("name longer than 255 octets")
        label = packet[offset + 1 : offset + 1 + length]
        if len(label) < length:
            raise ValueError("truncated label")
        labels.append(label)
        offset += 1 + length


def _display(labels: list[bytes]) -> str:
    def escape(byte: int) -> str:
        char = chr(byte)
        return char if "!" <= char <= "~" and char not in ".\\" else f"\\{byte:03d}"

    return ".".join("".join(escape(b) for b in label) for label in labels) + "."


def _header(ident: int, query_flags: int, rcode: int, qdcount: int, ancount: int) -> bytes:
    flags = _QR | (query_flags & (_OPCODE_MASK | _RD)) | _AA | _RA | rcode
    return _HEADER.pack(ident, flags, qdcount, ancount, 0, 0)


def resolve(query: bytes, pool: FakeAddressPool) -> Reply:
    """Answer one DNS query (the message, without a TCP length prefix) from `pool`.

    Returns a `Reply` whose `response` is None when the query should be dropped. Side
    effect: an A query for a valid name takes an address from `pool`. Never raises for
    any input bytes; an exception here is a bug.
    """
    if len(query) < _HEADER.size:
        return Reply(None)
    ident, flags, qdcount = _HEADER.unpack_from(query)[:3]
    if flags & _QR:
        return Reply(None)  # a response, not a query: answering it could start a loop
    if flags & _OPCODE_MASK:
        return Reply(_header(ident, flags, NOTIMP, 0, 0), NOTIMP)
    try:
        if qdcount != 1:
            raise ValueError(f"QDCOUNT is {qdcount}")
        labels, end = _read_name(query, _HEADER.size)
        if end + 4 > len(query):
            raise ValueError("truncated question")
    except ValueError:  # the question cannot be read
        return Reply(_header(ident, flags, FORMERR, 0, 0), FORMERR)
    qtype, qclass = struct.unpack_from("!HH", query, end)
    # Echo the question as it came: resolvers match it byte for byte (0x20 case randomization).
    question = query[_HEADER.size : end + 4]
    name = _display(labels)

    def reply(rcode: int, address: IPv4Address | None = None) -> Reply:
        header = _header(ident, flags, rcode, 1, 0 if address is None else 1)
        answer = b""
        if address is not None:  # the name is a pointer to the question's, at offset 12
            answer = b"\xc0\x0c" + struct.pack("!HHIH", _TYPE_A, _CLASS_IN, TTL, 4) + address.packed
        return Reply(header + question + answer, rcode, name, qtype, address)

    if qclass != _CLASS_IN or qtype in _ZONE_TRANSFERS:
        return reply(NOTIMP)
    if any(b"." in label for label in labels):
        return reply(NXDOMAIN)  # "a.b" as one label would read like two labels in text
    try:
        key = normalize_name(b".".join(labels).decode("latin-1"))
    except ValueError:
        return reply(NXDOMAIN)
    if qtype != _TYPE_A:
        return reply(NOERROR)
    return reply(NOERROR, pool.address_for(key))


def build_response(query: bytes, pool: FakeAddressPool) -> bytes | None:
    """The answer to one DNS query, or None to drop it. See `resolve`."""
    return resolve(query, pool).response
