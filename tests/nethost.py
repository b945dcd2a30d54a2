"""A test host of the tests' own: a network namespace behind a veth pair, at one address.

Upstreams that must not be on loopback (a fake API that has to listen on port 443, a host
that drops SYNs) live here. Its address is checked to route into the namespace before any
test sends a packet to it, and everything is removed by `destroy()`.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

LOCK = Path("/run/httpjail-tests-nethost.lock")


def run_checked(*cmd: str, netns: str | None = None, stdin: str | None = None) -> str:
    """Run `cmd` (in `netns`, if given); its stdout. Raises RuntimeError with its stderr."""
    argv = [*(["ip", "netns", "exec", netns] if netns else []), *cmd]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, input=stdin)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


@dataclass
class TestHost:
    """Namespace `netns`, reached from the host through `host_veth` (whose own address is
    `gateway`), answering at `address`."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    netns: str
    host_veth: str
    address: str
    gateway: str

    @classmethod
    def create(cls, prefix: str, second_octet: int) -> TestHost:
        """A host at 10.<second_octet>.<n>.2, n not used by another; `prefix` (3 letters)
        names its parts."""
        with open(LOCK, "w") as lock:  # two workers must not pick the same n
            fcntl.flock(lock, fcntl.LOCK_EX)
            return cls._create(prefix, second_octet)

    @classmethod
    def _create(cls, prefix: str, second_octet: int) -> TestHost:
        suffix = secrets.token_hex(3)
        # A /24 with any address or route of the host's in it is left alone: the test host
        # must not shadow a network the machine uses.
        links = json.loads(run_checked("ip", "-4", "-j", "addr", "show"))
        routes = json.loads(run_checked("ip", "-4", "-j", "route", "show", "table", "all"))
        taken = {info["local"] for link in links for info in link.get("addr_info", [])}
        taken |= {route["dst"].split("/")[0] for route in routes if route.get("dst", "default") != "default"}
        free = [n for n in range(256) if not any(t.startswith(f"10.{second_octet}.{n}.") for t in taken)]
        if not free:
            raise RuntimeError(f"no free 10.{second_octet}.n.0/24 for a test host")
        net = f"10.{second_octet}.{free[0]}"
        host = cls(f"hj{prefix}{suffix}", f"h{prefix}{suffix}", f"{net}.2", f"{net}.1")
        peer, gateway = f"{host.host_veth}p", host.gateway
        try:
            run_checked("ip", "netns", "add", host.netns)
            run_checked("ip", "link", "add", host.host_veth, "type", "veth", "peer", "name", peer)
            run_checked("ip", "link", "set", peer, "netns", host.netns)
            run_checked("ip", "addr", "add", f"{gateway}/30", "dev", host.host_veth)
            run_checked("ip", "link", "set", host.host_veth, "up")
            run_checked("ip", "addr", "add", f"{host.address}/30", "dev", peer, netns=host.netns)
            run_checked("ip", "link", "set", peer, "up", netns=host.netns)
            run_checked("ip", "link", "set", "lo", "up", netns=host.netns)
            run_checked("ip", "route", "add", "default", "via", gateway, netns=host.netns)
            host.check_route()
        except BaseException:
            host.destroy()
            raise
        return host

    def check_route(self) -> None:
        """The address routes into this namespace, or nothing may be sent to it."""
        route = json.loads(run_checked("ip", "-j", "route", "get", self.address))[0]
        if route.get("dev") != self.host_veth:
            raise RuntimeError(f"{self.address} does not route into the test's namespace ({route})")

    def listen(self, port: int) -> socket.socket:
        """A TCP socket listening on `port` inside the namespace, for servers in this process.

        A socket belongs to the namespace it was made in, so a short-lived thread enters
        the namespace, makes it and leaves; the calling thread never changes namespace.
        """
        made: list[socket.socket | BaseException] = []

        def make() -> None:
            try:
                with open(f"/run/netns/{self.netns}") as netns:
                    os.setns(netns.fileno(), os.CLONE_NEWNET)
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self.address, port))
                sock.listen(64)
                made.append(sock)
            except BaseException as error:  # handed to the caller below
                made.append(error)

        # The thread's namespace dies with the thread: nothing else runs on it.
        thread = threading.Thread(target=make, name=f"listen-in-{self.netns}")
        thread.start()
        thread.join()
        if isinstance(made[0], BaseException):
            raise made[0]
        return made[0]

    def destroy(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_veth], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=30)
