"""--connect-timeout: an upstream that never answers the connect costs a request its
deadline, not the kernel's two minutes of SYN retries.

The silent upstream is a network namespace of the test's own whose firewall drops every
TCP SYN (root). Its address routes into that namespace, checked before anything is sent,
and its counter shows the proxy's SYNs arrived there.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Jail
from tests.jail.linux.sink import run_checked

pytestmark = pytest.mark.root


@dataclass
class SilentHost:
    """A namespace at `address` that drops every TCP SYN it gets, and counts them."""

    netns: str
    host_veth: str
    address: str

    def syns(self) -> int:
        out = run_checked("nft", "list", "table", "inet", "silent", netns=self.netns)
        return int(out.split("counter packets ")[1].split()[0])


@pytest.fixture
def silent_host() -> Iterator[SilentHost]:
    suffix = secrets.token_hex(3)
    third = secrets.randbelow(256)
    host = SilentHost(f"hjsilent{suffix}", f"hsl{suffix}", f"10.202.{third}.2")
    peer = f"{host.host_veth}p"
    try:
        run_checked("ip", "netns", "add", host.netns)
        run_checked("ip", "link", "add", host.host_veth, "type", "veth", "peer", "name", peer)
        run_checked("ip", "link", "set", peer, "netns", host.netns)
        run_checked("ip", "addr", "add", f"10.202.{third}.1/30", "dev", host.host_veth)
        run_checked("ip", "link", "set", host.host_veth, "up")
        run_checked("ip", "addr", "add", f"{host.address}/30", "dev", peer, netns=host.netns)
        run_checked("ip", "link", "set", peer, "up", netns=host.netns)
        run_checked("nft", "-f", "-", netns=host.netns, stdin=(
            "table inet silent {\n chain input {\n type filter hook input priority 0;\n"
            " tcp flags syn counter drop\n }\n}\n"))
        route = json.loads(run_checked("ip", "-j", "route", "get", host.address))[0]
        if route.get("dev") != host.host_veth:
            raise RuntimeError(f"{host.address} does not route into the test's namespace ({route})")
        yield host
    finally:
        subprocess.run(["ip", "link", "del", host.host_veth], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", host.netns], capture_output=True, timeout=30)


def test_an_upstream_that_drops_the_connect_gets_a_502_at_the_deadline(
    jail: Jail, silent_host: SilentHost, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    result = jail.run(
        ["--js", "true", "--connect-timeout", "1", "--resolve", f"silent.test:80:{silent_host.address}",
         "--audit-log", str(audit), "-v"],
        # Without the deadline, curl gives up first (exit 28) and the test fails.
        ["curl", "-sS", "-i", "--max-time", "25", "http://silent.test/"],
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HTTP/1.1 502"), result.stdout
    assert "connect timed out after 1 s" in result.stdout, result.stdout
    assert "connect timed out after 1 s" in result.stderr
    [record] = [json.loads(line) for line in audit.read_text().splitlines()]
    assert record["reason"] == "upstream-error"
    assert "connect timed out after 1 s" in record["message"]
    assert silent_host.syns() >= 1, "the proxy's connect never reached the silent host"


def test_the_connect_timeout_must_be_a_positive_number(jail: Jail) -> None:
    result = jail.run(["--connect-timeout", "0", "--js", "true"], ["true"])
    assert result.returncode != 0
    assert "--connect-timeout 0: must be a positive number of seconds" in result.stderr
