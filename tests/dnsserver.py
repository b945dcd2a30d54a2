"""A DNS server of the tests' own whose answers change from one query to the next (DNS
rebinding), and a way to run a command whose resolver is that server.

It answers A queries for every name from a script (`answers`: the first query gets the
first address, and so on; the last repeats), AAAA with no address, and counts the A
queries per name. It listens on UDP port 53 of a loopback address of its own, so glibc
can reach it from a `resolv.conf`; `with_resolver` bind-mounts that file over
/etc/resolv.conf in a private mount namespace (root), for one command only.
"""

from __future__ import annotations

import random
import socket
import threading
from collections import Counter
from collections.abc import Sequence
from ipaddress import IPv4Address
from pathlib import Path

from httpjail_py.jail.linux.dns import resolve

__all__ = ["RebindingDns"]


class _ScriptedAnswers:
    """Stands in for the sinkhole's address pool: `resolve` asks it for each A answer."""

    def __init__(self, answers: Sequence[str]) -> None:
        self._answers = [IPv4Address(a) for a in answers]
        self.queries: Counter[str] = Counter()

    def address_for(self, name: str) -> IPv4Address:
        n = self.queries[name]
        self.queries[name] += 1
        return self._answers[min(n, len(self._answers) - 1)]


class RebindingDns:
    def __init__(self, answers: Sequence[str], directory: Path) -> None:
        self._pool = _ScriptedAnswers(answers)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(20):  # a loopback address no other test worker picked
            self.address = f"127.{random.randint(64, 254)}.{random.randint(1, 254)}.53"
            try:
                self._sock.bind((self.address, 53))
                break
            except OSError:
                continue
        else:
            raise RuntimeError("no free loopback address for the test DNS server")
        self.resolv_conf = directory / "resolv.conf"
        self.resolv_conf.write_text(f"nameserver {self.address}\noptions timeout:2 attempts:1\n")
        self._stop = threading.Event()
        self._sock.settimeout(0.2)  # so that the thread sees `close`
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def queries(self, name: str) -> int:
        """How many A queries for `name` arrived."""
        return self._pool.queries[name]

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                query, peer = self._sock.recvfrom(512)
            except TimeoutError:
                continue
            reply = resolve(query, self._pool)  # type: ignore[arg-type]
            if reply.response is not None:
                self._sock.sendto(reply.response, peer)

    def with_resolver(self, argv: Sequence[str]) -> list[str]:
        """`argv`, run with this server as its only DNS server (needs root)."""
        script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            script,
            str(self.resolv_conf),
            *argv,
        ]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()
