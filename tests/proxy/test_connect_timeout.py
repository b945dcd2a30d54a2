"""--connect-timeout: an upstream that never answers the connect costs a request its
deadline, not the kernel's two minutes of SYN retries.

The silent upstream is a network namespace of the test's own whose firewall drops every
TCP SYN (root). Its address routes into that namespace, checked before anything is sent,
and its counter shows the proxy's SYNs arrived there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Jail
from tests.nethost import TestHost, run_checked

pytestmark = pytest.mark.root


@dataclass
class SilentHost:
    """A test host that drops every TCP SYN it gets, and counts them."""

    host: TestHost

    @property
    def address(self) -> str:
        return self.host.address

    def syns(self) -> int:
        out = run_checked("nft", "list", "table", "inet", "silent", netns=self.host.netns)
        return int(out.split("counter packets ")[1].split()[0])


@pytest.fixture
def silent_host() -> Iterator[SilentHost]:
    host = TestHost.create("sil", 202)
    try:
        run_checked("nft", "-f", "-", netns=host.netns, stdin=(
            "table inet silent {\n chain input {\n type filter hook input priority 0;\n"
            " tcp flags syn counter drop\n }\n}\n"))
        yield SilentHost(host)
    finally:
        host.destroy()


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
