"""Fixtures of the strong-jail tests: the sink, and what a jail leaves behind.

Every test that sends a packet from a jail uses `quiet_sink`: a sink of its own, built for
the test while it holds a host-wide lock, because the routes to the addresses an escape
would aim at can exist once per host (tests on other xdist workers wait their turn).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.jail.linux.sink import Sink

JAIL_ID = re.compile(r"jail (httpjail_py[a-z0-9]{8}): ")


def strong_capability() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("nft", "ip", "curl"):
        if shutil.which(tool) is None:
            return f"needs the {tool} command"
    return None


SINK_LOCK = Path("/run/httpjail-tests-sink.lock")


@pytest.fixture
def quiet_sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sink]:
    """A sink, checked to route where it should before the test and silent after it."""
    if reason := strong_capability():
        pytest.skip(reason)
    with open(SINK_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sink = Sink.create(tmp_path_factory.mktemp("sink"))
        try:
            sink.check_routes()
            before = sink.snapshot()
            yield sink
            assert sink.snapshot() == before, f"something reached the sink: {sink.arrivals()}"
        finally:
            sink.destroy()


def assert_nothing_escaped(outcome: dict[str, str]) -> None:
    """What escape.py reports from a jail: every TCP connection ended at the proxy, and
    nothing else was even sent."""
    for port in (22, 80, 443, 8080):
        assert outcome[f"tcp {port}"] == "connected, read b''"  # the proxy's, closed at once
    assert outcome["http 8080"] == "HTTP/1.1 403 Forbidden"
    for name in ("udp 9999", "dns to the sink", "udp to the gateway", "icmp", "raw ip", "packet socket"):
        assert outcome[name].startswith("PermissionError"), (name, outcome[name])
    assert outcome["dns to the jail resolver"].startswith("answer of")  # the sinkhole's own
    assert not outcome["ipv6"].startswith("connected")


def jail_id_of(stderr: str) -> str:
    """The jail's netns name, from httpjail's `-v` output."""
    match = JAIL_ID.search(stderr)
    assert match, f"no jail id in httpjail's output:\n{stderr}"
    return match.group(1)


def leftovers(netns_name: str) -> list[str]:
    """What still exists of the jail `netns_name` (httpjail_<id>)."""
    jail_id = netns_name.removeprefix("httpjail_")
    found = []
    if netns_name in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout:
        found.append("netns")
    if subprocess.run(["ip", "link", "show", f"hj{jail_id}"], capture_output=True).returncode == 0:
        found.append("veth")
    if netns_name in subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout:
        found.append("nft table")
    if Path("/etc/netns", netns_name).exists():
        found.append("/etc/netns dir")
    if Path("/run/httpjail", f"{jail_id}.lock").exists():
        found.append("claim file")
    return found
