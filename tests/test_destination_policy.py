"""The destination policy through the real CLI and proxy: what a rule allows by name still
cannot reach loopback or private addresses, unless the user opens them; DNS rebinding
gets nowhere; the rule sees the address it will be dialled at.

Everything here stays on loopback: the "private" servers are the tests' own, and each
test counts what reached them. The rebinding tests give httpjail a DNS server of their
own (a private mount namespace with its own resolv.conf: root).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from tests.conftest import ROOT, Jail, base_env
from tests.dnsserver import RebindingDns

REFUSED = re.compile(r"^HTTP/1\.1 403", re.M)


class CountingServer:
    """A plain HTTP server on a loopback address that counts the requests it gets."""

    def __init__(self, address: str, port: int = 0) -> None:
        self.paths: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                outer.paths.append(self.path)
                body = f"reached {address}\n".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((address, port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def loopback_server() -> Iterator[CountingServer]:
    server = CountingServer("127.0.0.1")
    yield server
    server.close()


def curl(url: str) -> list[str]:
    return ["curl", "-sS", "-m", "20", "-D", "-", url]


def audit_records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- names and literals that point at the host ---------------------------------------------


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        ("localhost", "destination 127.0.0.1 (localhost) is loopback"),  # /etc/hosts
        ("127.0.0.1", "destination 127.0.0.1 is loopback"),
        ("127.1.2.3", "destination 127.1.2.3 is loopback"),
        ("[::ffff:127.0.0.1]", ", which carries 127.0.0.1, is loopback"),
    ],
)
def test_a_rule_that_allows_everything_still_cannot_reach_loopback(
    jail: Jail, loopback_server: CountingServer, tmp_path: Path, host: str, shown: str
) -> None:
    url = f"http://{host}:{loopback_server.port}/secret"
    audit = tmp_path / "audit.jsonl"
    result = jail.run(["-v", "--js", "true", "--audit-log", str(audit)], curl(url), timeout=60)
    assert result.returncode == 0, result.stderr
    assert REFUSED.search(result.stdout), result.stdout
    assert "X-Httpjail-Reason: destination-private" in result.stdout
    assert shown in result.stdout
    assert "allow it with --allow-private 127.0.0.0/8" in result.stdout
    # Both logs say which address and why.
    assert shown in result.stderr
    [record] = audit_records(audit)
    assert (record["decision"], record["reason"]) == ("deny", "destination-private")
    assert shown in str(record["message"])
    assert loopback_server.paths == []


def test_allow_private_opens_the_range_and_the_rule_sees_the_address(
    jail: Jail, loopback_server: CountingServer
) -> None:
    # A rule is asked first on the name (r.ip empty: nothing is resolved for a name it
    # refuses), then again with the address it will be dialled at.
    rule = "r.ip === '' || r.ip === '127.0.0.1' || ({deny_message: 'not at ' + r.ip})"
    url = f"http://localhost:{loopback_server.port}/opened"
    result = jail.run(["--js", rule, "--allow-private", "127.0.0.0/8"], curl(url), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n", 1)[0].endswith(" 200 OK"), result.stdout
    assert "reached 127.0.0.1" in result.stdout
    assert loopback_server.paths == ["/opened"]


def test_a_rule_can_refuse_by_address(jail: Jail, loopback_server: CountingServer) -> None:
    rule = "r.ip === '' || ({deny_message: 'not at ' + r.ip})"
    url = f"http://localhost:{loopback_server.port}/by-address"
    result = jail.run(["--js", rule, "--allow-private", "127.0.0.1"], curl(url), timeout=60)
    assert result.returncode == 0, result.stderr
    assert "X-Httpjail-Reason: rule-denied" in result.stdout
    assert "not at 127.0.0.1" in result.stdout
    assert loopback_server.paths == []


def test_allow_private_is_checked(jail: Jail) -> None:
    result = jail.run(["--allow-private", "10.0.0.0/33"], ["true"])
    assert result.returncode == 2
    assert "--allow-private: '10.0.0.0/33' is not an address range" in result.stderr


# --- DNS rebinding -------------------------------------------------------------------------


@pytest.fixture
def servers() -> Iterator[tuple[CountingServer, CountingServer]]:
    """A server at 127.0.0.2, which the tests open with --allow-private, and one at
    127.0.0.1 on the same port, which nothing may reach."""
    if os.geteuid() != 0:
        pytest.skip("needs root (a private mount namespace for the test resolver)")
    opened = CountingServer("127.0.0.2")
    forbidden = CountingServer("127.0.0.1", opened.port)
    yield opened, forbidden
    opened.close()
    forbidden.close()


@pytest.fixture
def make_dns(tmp_path: Path) -> Iterator[Callable[[list[str]], RebindingDns]]:
    made: list[RebindingDns] = []

    def make(answers: list[str]) -> RebindingDns:
        made.append(RebindingDns(answers, tmp_path))
        return made[-1]

    yield make
    for dns in made:
        dns.close()


MODES = [pytest.param(True, id="weak"), pytest.param(False, id="strong", marks=[pytest.mark.netns])]


def run_with_resolver(
    jail: Jail, dns: RebindingDns, args: list[str], child: list[str]
) -> CompletedProcess[str]:
    argv = dns.with_resolver(jail.command(args, child))
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, env=base_env(jail.config_home), cwd=ROOT
    )


@pytest.mark.root
@pytest.mark.parametrize("weak", MODES)
def test_rebinding_after_the_check_never_reaches_loopback(
    jail: Jail,
    servers: tuple[CountingServer, CountingServer],
    make_dns: Callable[[list[str]], RebindingDns],
    weak: bool,
) -> None:
    opened, forbidden = servers
    # The first answer is an address the user opened, every later one loopback.
    dns = make_dns(["127.0.0.2", "127.0.0.1"])
    url = f"http://rebind.example:{opened.port}/one"
    # In the weak jail curl must use the proxy (with --noproxy it would resolve the name
    # itself); in the strong one the NAT catches it either way.
    noproxy = "" if weak else "--noproxy '*'"
    child = ["sh", "-c", f"curl -sS -m 20 {noproxy} {url}; curl -sS -m 20 {noproxy} {url}"]
    args = [*(["--weak"] if weak else []), "--js", "true", "--allow-private", "127.0.0.2/32"]
    result = run_with_resolver(jail, dns, args, child)
    assert result.returncode == 0, result.stderr
    # Resolved once, checked, and dialled at the address that was checked, twice over.
    assert result.stdout == "reached 127.0.0.2\n" * 2, result.stdout + result.stderr
    assert opened.paths == ["/one", "/one"]
    assert forbidden.paths == []
    assert dns.queries("rebind.example") == 1


@pytest.mark.root
@pytest.mark.parametrize("weak", MODES)
def test_a_public_looking_name_that_resolves_to_loopback_is_refused(
    jail: Jail,
    servers: tuple[CountingServer, CountingServer],
    make_dns: Callable[[list[str]], RebindingDns],
    weak: bool,
    tmp_path: Path,
) -> None:
    opened, forbidden = servers
    dns = make_dns(["127.0.0.1"])
    url = f"http://public-looking.example:{opened.port}/two"
    log = tmp_path / "requests.log"
    args = [
        *(["--weak"] if weak else []),
        "--js",
        "true",
        "--allow-private",
        "127.0.0.2/32",
        "--request-log",
        str(log),
    ]
    result = run_with_resolver(jail, dns, args, ["curl", "-sS", "-m", "20", "-D", "-", url])
    assert result.returncode == 0, result.stderr
    assert "X-Httpjail-Reason: destination-private" in result.stdout
    assert "destination 127.0.0.1 (public-looking.example) is loopback" in result.stdout
    assert log.read_text().split(" ", 1)[1] == f"- GET {url}\n"
    assert (opened.paths, forbidden.paths) == ([], [])
