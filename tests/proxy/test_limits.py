"""Per-jail limits: requests in flight (503) and requests per second (429), counted in the
token bucket itself and through the real CLI and proxy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from httpjail_py.engines.base import Reason
from httpjail_py.proxy.limits import JailLimits
from httpjail_py.ratelimit import RateLimit, parse_rate
from tests.conftest import Jail


def test_parse_rate() -> None:
    assert parse_rate("10") == RateLimit(10, 10)
    assert parse_rate("0.5") == RateLimit(0.5, 1)
    assert parse_rate("10:50") == RateLimit(10, 50)
    for bad in ("", "ten", "0", "-1", "5:0", "5:x", "inf"):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_in_flight_cap_is_per_jail_and_released() -> None:
    limits = JailLimits(max_in_flight=2)
    assert limits.admit("a") is None and limits.admit("a") is None
    refusal = limits.admit("a")
    assert refusal is not None and refusal.reason is Reason.CONNECTION_LIMIT
    assert limits.admit("b") is None  # another jail has its own count
    limits.release("a")
    assert limits.admit("a") is None


def test_rate_allows_a_burst_then_refills(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr("httpjail_py.ratelimit.time.monotonic", lambda: now[0])
    limits = JailLimits(rate=RateLimit(per_second=2, burst=3))
    results = []
    for _ in range(4):
        results.append(limits.admit("a"))
        limits.release("a")
    assert results[:3] == [None, None, None]
    assert results[3] is not None and results[3].reason is Reason.RATE_LIMIT
    assert "retry in 0.50 s" in (results[3].message or "")
    assert limits.admit("b") is None  # another jail has its own bucket
    now[0] += 0.5  # one token back
    assert limits.admit("a") is None
    assert limits.admit("a") is not None


def test_in_flight_cap_answers_503_and_requests_still_flow(jail: Jail, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    slow = jail.upstream.url("ok.test", "/sse")  # 1.5 s each
    fetch = f"curl -sS -m 20 -o /dev/null -w '%{{http_code}}\\n' {slow}"
    script = f"for i in 1 2 3 4 5 6; do {fetch} & done; wait; {fetch}"
    args = ["--js", "true", "--max-connections", "2", "--audit-log", str(audit)]
    result = jail.run(args, ["sh", "-c", script], timeout=60)
    assert result.returncode == 0, result.stderr
    burst, after = result.stdout.split()[:6], result.stdout.split()[6:]
    assert set(burst) <= {"200", "503"} and burst.count("200") >= 2 and "503" in burst, burst
    assert after == ["200"]  # once the burst is over, requests flow again
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    refused = [r for r in records if r["reason"] == "connection-limit"]
    assert len(refused) == burst.count("503")
    assert all(r["status"] == 503 and "--max-connections" in r["message"] for r in refused)


def test_rate_limit_answers_429_with_retry_after(jail: Jail, tmp_path: Path) -> None:
    log = tmp_path / "requests.log"
    url = jail.upstream.url("ok.test", "/echo")
    # Headers only (HTTP/2 through the tunnel: lower-case names), one block per request.
    fetch = f"curl -sS -m 20 -D - -o /dev/null {url}; echo ---"
    script = f"for i in 1 2 3 4 5 6 7 8; do {fetch}; done; sleep 1.2; {fetch}"
    args = ["--js", "true", "--rate", "1:3", "--request-log", str(log)]
    result = jail.run(args, ["sh", "-c", script], timeout=60)
    assert result.returncode == 0, result.stderr
    blocks = [b for b in result.stdout.split("---") if b.strip()]
    statuses = [b.split()[b.split().index("HTTP/2") + 1] for b in blocks]
    burst, after = statuses[:8], statuses[8]
    assert burst[:3] == ["200"] * 3 and "429" in burst, burst
    assert after == "200"  # a token came back
    refused = blocks[burst.index("429")]
    assert "x-httpjail-reason: rate-limit" in refused and "retry-after: 1" in refused
    assert sum(1 for line in log.read_text().splitlines() if " - GET " in line) == burst.count("429")


TRICKLE = """
import os, socket, sys, time
host, port = os.environ["HTTP_PROXY"].rsplit("/", 1)[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)))
s.sendall(b"GET " + sys.argv[1].encode() + b" HTTP/1.1\\r\\nX-Slow: ")
s.settimeout(0.25)
deadline = time.monotonic() + 15
while time.monotonic() < deadline:
    try:
        s.sendall(b"x")  # a byte at a time: never silent, never complete
        if s.recv(1) == b"":
            print("closed")
            break
    except TimeoutError:
        continue
    except OSError:
        print("closed")
        break
else:
    print("still open")
"""


def test_a_client_that_trickles_its_request_head_is_closed(jail: Jail) -> None:
    url = jail.upstream.url("ok.test", "/echo", tls=False)
    slow_response = jail.upstream.url("ok.test", "/sse", tls=False)  # 1.5 s, in flight
    script = f'python3 -c "$TRICKLE" {url}; curl -sS -m 20 {slow_response}'
    result = jail.run(
        ["--js", "true", "--header-timeout", "1"], ["sh", "-c", script], timeout=60, env={"TRICKLE": TRICKLE}
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split()
    assert lines[0] == "closed", result.stdout
    assert "no complete request head within 1 s" in result.stderr
    assert lines[1:] == ["data:", "first", "data:", "second"]  # a slow response is not cut
