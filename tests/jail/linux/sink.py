"""A sink host of the tests' own: where an escape from a jail would land, and counts.

A network namespace `hjsink<id>` behind a veth pair, with 203.0.113.9 (TEST-NET-3) on its
end, and host routes that send 203.0.113.9 and 198.18.0.0/16 (the DNS sinkhole's fake
addresses) to it. So a packet that got past a jail's barriers towards either range would
arrive here and nowhere else: `check_routes()` proves that before any test sends a packet.
It counts every IPv4 packet that arrives (nft counter) and runs TCP listeners on 22, 80,
443, 8080 and UDP listeners on 53 and 9999 that count what they receive.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.nethost import run_checked

SINK_IP = "203.0.113.9"
# The sink's own address only, not its /24: a machine may reach real services at other
# TEST-NET-3 addresses (this one's npm registry answers at 203.0.113.80), and a wider route
# would take their traffic into the sink while a test runs.
ROUTED = (f"{SINK_IP}/32", "198.18.0.0/16")
TCP_PORTS = (22, 80, 443, 8080)
UDP_PORTS = (53, 9999)

_LISTENER = r"""
import json, selectors, socket, sys
out = sys.argv[1]
counts = {"tcp": 0, "udp": 0}
sel = selectors.DefaultSelector()
for port in (22, 80, 443, 8080):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16); sel.register(s, selectors.EVENT_READ, "tcp")
for port in (53, 9999):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", port))
    sel.register(s, selectors.EVENT_READ, "udp")
open(out, "w").write(json.dumps(counts))
while True:
    for key, _ in sel.select():
        if key.data == "tcp":
            conn, _ = key.fileobj.accept(); conn.close()
        else:
            key.fileobj.recvfrom(65536)
        counts[key.data] += 1
        open(out + ".tmp", "w").write(json.dumps(counts))
        import os; os.replace(out + ".tmp", out)
"""


def _ip(*args: str, netns: str | None = None) -> str:
    return run_checked("ip", *args, netns=netns)


@dataclass
class Sink:
    netns: str
    host_veth: str
    gateway: str
    counts_file: Path
    listener: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(cls, directory: Path) -> Sink:
        suffix = secrets.token_hex(3)
        third = secrets.randbelow(256)
        sink = cls(f"hjsink{suffix}", f"hsk{suffix}", f"10.201.{third}.2", directory / "sink-counts.json")
        try:
            sink._build(third, suffix)
        except BaseException:
            sink.destroy()
            raise
        return sink

    def _build(self, third: int, suffix: str) -> None:
        peer = f"hsk{suffix}p"
        _ip("netns", "add", self.netns)
        _ip("link", "add", self.host_veth, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", self.netns)
        _ip("addr", "add", f"10.201.{third}.1/30", "dev", self.host_veth)
        _ip("link", "set", self.host_veth, "up")
        _ip("addr", "add", f"{self.gateway}/30", "dev", peer, netns=self.netns)
        _ip("addr", "add", f"{SINK_IP}/32", "dev", peer, netns=self.netns)
        _ip("link", "set", peer, "up", netns=self.netns)
        _ip("link", "set", "lo", "up", netns=self.netns)
        _ip("route", "add", "default", "via", f"10.201.{third}.1", netns=self.netns)
        # The set keeps who sent what, for the message of a test that finds an arrival.
        rules = (
            "table inet sink {\n"
            " set seen { type ipv4_addr . ipv4_addr . inet_proto; flags dynamic; size 4096; }\n"
            " chain pre {\n type filter hook prerouting priority -400;\n"
            f' iifname "{peer}" meta nfproto ipv4 counter'
            " add @seen { ip saddr . ip daddr . meta l4proto }\n"
            " }\n}\n"
        )
        run_checked("nft", "-f", "-", netns=self.netns, stdin=rules)
        for net in ROUTED:
            _ip("route", "add", net, "via", self.gateway, "dev", self.host_veth)
        self.listener = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, sys.executable, "-c", _LISTENER, str(self.counts_file)]
        )
        deadline = time.monotonic() + 10
        while not self.counts_file.exists():
            if time.monotonic() > deadline or self.listener.poll() is not None:
                raise RuntimeError("the sink's listeners did not start")
            time.sleep(0.05)

    def check_routes(self) -> None:
        """Every address a test may aim at routes into the sink, or the test stops here."""
        for address in (SINK_IP, "198.18.0.1", "198.18.255.254"):
            route = json.loads(_ip("-j", "route", "get", address))[0]
            if route.get("dev") != self.host_veth:
                raise RuntimeError(f"{address} does not route into the sink ({route}); refusing to test")

    def packets(self) -> int:
        """IPv4 packets that arrived at the sink so far."""
        out = run_checked("nft", "list", "table", "inet", "sink", netns=self.netns)
        return int(out.split("counter packets ")[1].split()[0])

    def arrivals(self) -> list[str]:
        """`source . destination . protocol` of what arrived so far."""
        out = run_checked("nft", "list", "set", "inet", "sink", "seen", netns=self.netns)
        body = out.split("elements = {", 1)[1].split("}", 1)[0] if "elements" in out else ""
        return [" ".join(e.split()) for e in body.split(",") if e.strip()]

    def received(self) -> dict[str, int]:
        """TCP connections accepted and UDP datagrams received by the listeners so far."""
        counts: dict[str, int] = json.loads(self.counts_file.read_text())
        return counts

    def snapshot(self) -> tuple[int, dict[str, int]]:
        return self.packets(), self.received()

    def destroy(self) -> None:
        if self.listener is not None:
            self.listener.kill()
            self.listener.wait()
        subprocess.run(["ip", "link", "del", self.host_veth], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=30)
