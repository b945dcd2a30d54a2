"""The DNS sinkhole: a table of queries against `build_response` (no sockets), the fake
address pool, and the asyncio server on 127.0.0.1 with real UDP and TCP queries.

Queries are built and answers parsed by the small helpers below, written independently of
the module's own parser. Nothing here sends a packet beyond 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import pytest

from httpjail_py.jail.linux.dns import (
    DEFAULT_RANGE,
    FORMERR,
    NOERROR,
    NOTIMP,
    NXDOMAIN,
    TTL,
    FakeAddressPool,
    build_response,
    normalize_name,
    resolve,
)
from httpjail_py.jail.linux.dns_server import DnsSinkhole

A, NS, MX, TXT, AAAA, HTTPS, AXFR, ANY = 1, 2, 15, 16, 28, 65, 252, 255
DATA_LABEL = "4a6f686e20536d6974682c2070617373776f72643a2068756e746572322c205"  # 63 hex chars
assert len(DATA_LABEL) == 63


def encode_name(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode() for label in name.split(".") if label) + b"\0"


def header(*, ident: int = 0x1234, flags: int = 0x0100, qdcount: int = 1, arcount: int = 0) -> bytes:
    return struct.pack("!HHHHHH", ident, flags, qdcount, 0, 0, arcount)


def query(name: str = "example.com", qtype: int = A, *, ident: int = 0x1234, qclass: int = 1) -> bytes:
    return header(ident=ident) + encode_name(name) + struct.pack("!HH", qtype, qclass)


def raw_query(name_wire: bytes, *, qdcount: int = 1, tail: bytes = b"\0\x01\0\x01") -> bytes:
    return header(qdcount=qdcount) + name_wire + tail


@dataclass
class Answer:
    ident: int
    flags: int
    rcode: int
    question: bytes
    records: list[tuple[int, int, int, bytes]]  # (type, class, ttl, rdata)

    @property
    def addresses(self) -> list[IPv4Address]:
        return [IPv4Address(rdata) for rtype, _, _, rdata in self.records if rtype == A]


def _skip_name(msg: bytes, offset: int) -> int:
    while msg[offset]:
        if msg[offset] & 0xC0 == 0xC0:
            return offset + 2
        offset += 1 + msg[offset]
    return offset + 1


def parse(msg: bytes) -> Answer:
    ident, flags, qdcount, ancount, nscount, arcount = struct.unpack_from("!HHHHHH", msg)
    assert (nscount, arcount) == (0, 0)
    offset = 12
    for _ in range(qdcount):
        offset = _skip_name(msg, offset) + 4
    question = msg[12:offset]
    records = []
    for _ in range(ancount):
        offset = _skip_name(msg, offset)
        rtype, rclass, ttl, length = struct.unpack_from("!HHIH", msg, offset)
        offset += 10
        records.append((rtype, rclass, ttl, msg[offset : offset + length]))
        offset += length
    assert offset == len(msg), "trailing bytes in the answer"
    assert flags & 0x8000, "QR must be set in an answer"
    return Answer(ident, flags, flags & 0xF, question, records)


# --- build_response: one query in, one answer (or nothing) out --------------------------

_EDNS_OPT = b"\0" + struct.pack("!HHIH", 41, 1232, 0, 0)

ROWS: list[tuple[str, bytes, int, int]] = [
    # (id, query, rcode, number of A records)
    ("A", query("example.com", A), NOERROR, 1),
    ("A with an EDNS OPT record", header(arcount=1) + encode_name("example.com") + b"\0\1\0\1" + _EDNS_OPT,
     NOERROR, 1),
    ("A for a 63-char data label", query(f"{DATA_LABEL}.exfil.test"), NOERROR, 1),
    ("A for a 253-char name", query(".".join(["a" * 63] * 3 + ["b" * 61])), NOERROR, 1),
    ("AAAA", query("example.com", AAAA), NOERROR, 0),
    ("TXT", query(f"{DATA_LABEL}.exfil.test", TXT), NOERROR, 0),
    ("MX", query("example.com", MX), NOERROR, 0),
    ("NS", query("example.com", NS), NOERROR, 0),
    ("HTTPS", query("example.com", HTTPS), NOERROR, 0),
    ("ANY", query("example.com", ANY), NOERROR, 0),
    ("AXFR", query("example.com", AXFR), NOTIMP, 0),
    ("class CH", query("version.bind", TXT, qclass=3), NOTIMP, 0),
    ("opcode STATUS", struct.pack("!HHHHHH", 1, 2 << 11, 0, 0, 0, 0), NOTIMP, 0),
    ("QDCOUNT 0", header(qdcount=0), FORMERR, 0),
    ("QDCOUNT 2", header(qdcount=2) + (encode_name("a.test") + b"\0\1\0\1") * 2, FORMERR, 0),
    ("pointer to itself", raw_query(b"\xc0\x0c"), FORMERR, 0),
    ("pointer loop", raw_query(b"\x01a\xc0\x0e" + b"\x01b\xc0\x0c"), FORMERR, 0),
    ("pointer after a label", raw_query(b"\x03www\xc0\x0c"), FORMERR, 0),
    ("pointer past the end", raw_query(b"\xff\xff"), FORMERR, 0),
    ("extended label type", raw_query(b"\x41" + b"a" * 65 + b"\0"), FORMERR, 0),
    ("name of 5 x 63-char labels", raw_query(encode_name(".".join(["a" * 63] * 5))), FORMERR, 0),
    ("254-char name (256 octets)", raw_query(encode_name(".".join(["a" * 63] * 3 + ["b" * 62]))),
     FORMERR, 0),
    ("header only", header(), FORMERR, 0),
    ("name cut mid-label", header() + b"\x07exa", FORMERR, 0),
    ("name without its end", header() + b"\x07example", FORMERR, 0),
    ("no type and class", header() + encode_name("example.com"), FORMERR, 0),
    ("half a type", header() + encode_name("example.com") + b"\0\1\0", FORMERR, 0),
    ("NUL in a label", raw_query(b"\x03a\0b\0"), NXDOMAIN, 0),
    ("space in a label", raw_query(b"\x03a b\x04test\0"), NXDOMAIN, 0),
    ("non-ASCII byte", raw_query(b"\x04caf\xe9\x04test\0"), NXDOMAIN, 0),
    ("dot inside a label", raw_query(b"\x03a.b\x04test\0"), NXDOMAIN, 0),
    ("root name", raw_query(b"\0"), NXDOMAIN, 0),
    ("TXT for a NUL name", raw_query(b"\x03a\0b\0", tail=b"\0\x10\0\x01"), NXDOMAIN, 0),
]


@pytest.mark.parametrize(("msg", "rcode", "n_addresses"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_build_response(msg: bytes, rcode: int, n_addresses: int) -> None:
    pool = FakeAddressPool()
    answer = parse(build_response(msg, pool) or b"")
    assert (answer.ident, answer.rcode) == (struct.unpack_from("!H", msg)[0], rcode)
    assert answer.flags & 0x7800 == struct.unpack_from("!H", msg, 2)[0] & 0x7800, "opcode copied"
    assert len(answer.addresses) == len(answer.records) == n_addresses
    for address in answer.addresses:
        assert address in DEFAULT_RANGE
    assert all(ttl == TTL for _, _, ttl, _ in answer.records)
    assert len(pool) == n_addresses, "only an answered A query takes an address"
    if answer.question:  # echoed exactly as asked
        assert msg[12:].startswith(answer.question)


@pytest.mark.parametrize(
    "msg",
    [b"", b"\x12", header()[:11], struct.pack("!HHHHHH", 1, 0x8180, 1, 1, 0, 0) + encode_name("a.test")],
    ids=["empty", "1 byte", "11 bytes", "a response (QR set)"],
)
def test_unreadable_or_responses_are_dropped(msg: bytes) -> None:
    assert build_response(msg, FakeAddressPool()) is None


def test_the_answer_echoes_the_question_and_flags() -> None:
    msg = query("ExAmPlE.CoM", A, ident=0xBEEF)
    answer = parse(build_response(msg, FakeAddressPool()) or b"")
    assert answer.question == msg[12:], "case kept (0x20 randomization)"
    assert answer.flags & 0x0100, "RD copied"
    assert answer.records[0][:3] == (A, 1, TTL)


def test_a_data_bearing_name_gets_a_stable_address_like_any_other() -> None:
    pool = FakeAddressPool()
    name = f"{DATA_LABEL}.exfil.test"

    def address(n: str) -> IPv4Address:
        return parse(build_response(query(n), pool) or b"").addresses[0]

    first = address(name)
    assert address(name.upper() + ".") == first
    assert address(f"{DATA_LABEL[:-1]}0.exfil.test") != first
    assert address("example.com") not in (first, address(f"{DATA_LABEL[:-1]}0.exfil.test"))
    assert pool.name_for(first) == name
    reply = resolve(query(name, TXT), pool)
    assert reply.describe() == f"TXT {name}. -> NOERROR"


def test_describe_escapes_what_it_cannot_print() -> None:
    assert resolve(raw_query(b"\x03a\0b\0"), FakeAddressPool()).describe() == "A a\\000b. -> NXDOMAIN"
    assert resolve(header(qdcount=0), FakeAddressPool()).describe() == "malformed -> FORMERR"
    assert resolve(b"", FakeAddressPool()).describe() == "unreadable, dropped"


# --- the pool -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [("Example.COM.", "example.com"), ("a", "a"), ("x_y-1.test", "x_y-1.test"),
     ("a" * 63 + ".t", "a" * 63 + ".t")],
)
def test_normalize_name(name: str, key: str) -> None:
    assert normalize_name(name) == key


@pytest.mark.parametrize(
    "name",
    ["", ".", "a..b", ".a", "a" * 64 + ".test", "a." * 126 + "ab", "a b.test", "caf\xe9.test", "a\n.test",
     "\x00.test"],
)
def test_invalid_names_never_get_an_address(name: str) -> None:
    pool = FakeAddressPool()
    with pytest.raises(ValueError):
        pool.address_for(name)
    assert len(pool) == 0


def test_default_range_is_benchmarking_space_and_skips_the_network_address() -> None:
    pool = FakeAddressPool()
    assert pool.network.subnet_of(IPv4Network("198.18.0.0/15"))
    assert pool.capacity == 65534
    assert pool.address_for("a.test") == IPv4Address("198.18.0.1")


@pytest.mark.parametrize("network", ["10.0.0.0/31", "10.0.0.1/32", "::/64", "10.0.0.1/24", "nonsense"])
def test_ranges_that_are_refused(network: str) -> None:
    with pytest.raises(ValueError):
        FakeAddressPool(network)


def test_a_full_pool_reuses_the_least_recently_asked_address() -> None:
    pool = FakeAddressPool(IPv4Network("10.99.0.0/30"))
    assert pool.capacity == 2
    a, b = pool.address_for("a.test"), pool.address_for("b.test")
    assert (a, b) == (IPv4Address("10.99.0.1"), IPv4Address("10.99.0.2"))
    assert pool.address_for("A.test") == a  # a is now the most recently asked
    assert pool.name_for(b) == "b.test"  # a reverse lookup does not count as use
    c = pool.address_for("c.test")
    assert c == b and pool.name_for(b) == "c.test"
    assert pool.address_for("b.test") == a, "b comes back on a's address, the LRU one"
    assert (pool.name_for(a), pool.name_for("10.99.0.2"), len(pool)) == ("b.test", "c.test", 2)
    assert pool.address_for("c.test") == c, "c kept its address"


@pytest.mark.parametrize("address", ["10.99.0.3", "10.99.0.0", "127.0.0.1", "::1", "not an address"])
def test_name_for_unknown_addresses(address: str) -> None:
    pool = FakeAddressPool("10.99.0.0/30")
    pool.address_for("a.test")
    pool.address_for("b.test")
    assert pool.name_for(address) is None


# --- the server, on 127.0.0.1 ---------------------------------------------------------------


def run(scenario: Callable[[DnsSinkhole], Awaitable[Any]], **options: Any) -> Any:
    async def main() -> Any:
        async with await DnsSinkhole.start("127.0.0.1", 0, FakeAddressPool(), **options) as sinkhole:
            return await asyncio.wait_for(scenario(sinkhole), 2)

    return asyncio.run(main())


async def udp_exchange(port: int, msgs: list[bytes], *, wait: float = 0.3) -> list[Answer]:
    """Send every message, then collect answers until none came for `wait` seconds."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.bind(("127.0.0.1", 0))
        for msg in msgs:
            await loop.sock_sendto(sock, msg, ("127.0.0.1", port))
        answers: list[Answer] = []
        while True:
            try:
                data, _ = await asyncio.wait_for(loop.sock_recvfrom(sock, 4096), wait)
            except TimeoutError:
                return answers
            answers.append(parse(data))


async def tcp_exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, msg: bytes) -> Answer:
    writer.write(len(msg).to_bytes(2) + msg)
    length = int.from_bytes(await reader.readexactly(2))
    return parse(await reader.readexactly(length))


def test_udp_queries_are_answered(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="httpjail.dns")
    name = f"{DATA_LABEL}.exfil.test"

    async def scenario(sinkhole: DnsSinkhole) -> list[Answer]:
        msgs = [query(name, A, ident=1), query(name, AAAA, ident=2), query(name, TXT, ident=3),
                b"\0" * (513 - 12) + b"x" * 12, header(ident=5, qdcount=0)]
        return await udp_exchange(sinkhole.port, msgs)

    answers = sorted(run(scenario), key=lambda a: a.ident)
    assert [(a.ident, a.rcode, len(a.records)) for a in answers] == [
        (1, NOERROR, 1), (2, NOERROR, 0), (3, NOERROR, 0), (5, FORMERR, 0)
    ], "the 513-byte datagram is ignored"
    assert answers[0].addresses[0] in DEFAULT_RANGE
    logged = [r.getMessage() for r in caplog.records if r.name == "httpjail.dns"
              and r.levelno == logging.INFO]
    assert any(f"A {name}. -> 198.18." in line and "(udp)" in line for line in logged), logged
    assert any(f"TXT {name}. -> NOERROR" in line for line in logged), logged


def test_tcp_carries_several_queries_per_connection() -> None:
    async def scenario(sinkhole: DnsSinkhole) -> list[Answer]:
        reader, writer = await asyncio.open_connection("127.0.0.1", sinkhole.port)
        answers = [await tcp_exchange(reader, writer, msg) for msg in
                   (query("a.test", A, ident=1), query("b.test", A, ident=2), query("a.test", A, ident=3),
                    query("a.test", MX, ident=4), raw_query(b"\xc0\x0c"))]
        udp = await udp_exchange(sinkhole.port, [query("b.test", A, ident=6)])
        writer.write(b"\0\x05abc")  # a short message, then EOF: the server closes its side
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 1) == b""
        writer.close()
        return answers + udp

    one, two, three, mx, bad, udp = run(scenario)
    assert one.addresses == three.addresses != two.addresses
    assert udp.addresses == two.addresses, "UDP and TCP share the pool"
    assert (mx.rcode, mx.records, bad.rcode) == (NOERROR, [], FORMERR)


def test_idle_tcp_connections_are_closed() -> None:
    async def scenario(sinkhole: DnsSinkhole) -> tuple[bytes, Answer]:
        reader, writer = await asyncio.open_connection("127.0.0.1", sinkhole.port)
        writer.write(b"\0")  # half a length prefix, then nothing
        closed = await asyncio.wait_for(reader.read(), 1)
        writer.close()
        return closed, (await udp_exchange(sinkhole.port, [query()]))[0]

    closed, still_serving = run(scenario, idle_timeout=0.2)
    assert closed == b"" and still_serving.rcode == NOERROR


def test_tcp_clients_are_bounded() -> None:
    async def scenario(sinkhole: DnsSinkhole) -> tuple[Answer, bytes]:
        first = await asyncio.open_connection("127.0.0.1", sinkhole.port)
        answer = await tcp_exchange(*first, query())  # the first connection is being served
        reader, writer = await asyncio.open_connection("127.0.0.1", sinkhole.port)
        refused = await asyncio.wait_for(reader.read(), 1)
        writer.close()
        first[1].close()
        return answer, refused

    answer, refused = run(scenario, max_tcp_clients=1)
    assert answer.rcode == NOERROR and refused == b""


def test_queries_over_the_rate_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(sinkhole: DnsSinkhole) -> tuple[int, int]:
        answers = await udp_exchange(sinkhole.port, [query(ident=i) for i in range(40)], wait=0.2)
        return len(answers), sinkhole.dropped

    answered, dropped = run(scenario, max_qps=10)
    assert 10 <= answered <= 20 and answered + dropped == 40
    assert "dropping queries" in caplog.text


def _socket_fds() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except FileNotFoundError:  # the fd listdir itself used, closed by now
            pass
    return count


def test_the_sinkhole_opens_no_socket_and_only_answers_the_asker(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sinkhole that forwarded a query would need a new socket, or would send from its
    listener to somewhere other than the client: both are recorded here."""
    created: list[tuple[int, int]] = []
    sent: list[tuple[Any, Any]] = []
    original_init = socket.socket.__init__

    def recording_init(self: socket.socket, family: Any = -1, type: Any = -1, proto: Any = -1,
                       fileno: Any = None) -> None:
        original_init(self, family, type, proto, fileno)
        if fileno is None:  # accept() wraps an existing fd; anything else is a new socket
            created.append((self.family, self.type))

    def recording_sendto(self: socket.socket, data: bytes, *args: Any) -> int:
        sent.append((self.getsockname(), args[-1]))
        return socket.socket.__mro__[1].sendto(self, data, *args)  # type: ignore[attr-defined, no-any-return]

    async def scenario(sinkhole: DnsSinkhole) -> tuple[int, int, int, set[tuple[Any, Any]]]:
        tcp = await asyncio.open_connection("127.0.0.1", sinkhole.port)
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.bind(("127.0.0.1", 0))
        client.setblocking(False)
        server, asker = ("127.0.0.1", sinkhole.port), client.getsockname()
        before = _socket_fds()
        monkeypatch.setattr(socket.socket, "__init__", recording_init)
        monkeypatch.setattr(socket.socket, "sendto", recording_sendto)
        loop = asyncio.get_running_loop()
        msgs = [query(f"q{i}.{DATA_LABEL}.exfil.test", qtype, ident=i)
                for i in range(60) for qtype in (A, AAAA, TXT, MX)]
        for msg in msgs:
            await loop.sock_sendto(client, msg, server)
        received = 0
        for _ in msgs:
            await asyncio.wait_for(loop.sock_recvfrom(client, 4096), 1)
            received += 1
        for msg in msgs[:40]:
            await tcp_exchange(*tcp, msg)
        during = _socket_fds()
        monkeypatch.undo()
        tcp[1].close()
        client.close()
        return before, during, received, {(asker, server), (server, asker)}

    before, during, received, allowed = run(scenario, max_qps=10_000)
    assert received == 240
    assert not created, f"the sinkhole created {len(created)} sockets: {created[:3]}..."
    assert before == during, "a socket was opened while serving"
    assert len(sent) == 2 * 240, "240 queries sent by the client, 240 answers by the sinkhole"
    assert set(sent) <= allowed, f"datagrams other than client <-> sinkhole: {set(sent) - allowed}"


def test_a_taken_port_is_an_error() -> None:
    async def main() -> None:
        async with await DnsSinkhole.start("127.0.0.1", 0, FakeAddressPool()) as sinkhole:
            with pytest.raises(OSError):
                await DnsSinkhole.start("127.0.0.1", sinkhole.port, FakeAddressPool())

    asyncio.run(main())
