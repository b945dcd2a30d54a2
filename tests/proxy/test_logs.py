"""What the logs say about real traffic: the request log in httpjail's exact line
format, one line per evaluated request, and the JSON-lines audit log with plausible
numbers and no secrets.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

LINE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z [+-] [A-Z]+ \S+$")
FIELDS = [
    "time", "jail", "client", "method", "url", "host", "port", "decision", "reason",
    "message", "engine", "status", "bytes_sent", "bytes_received", "duration_ms",
]
RULE = "r.host === 'ok.test' || {deny_message: 'not ' + r.host}"


@pytest.fixture(scope="module")
def traffic(jail, upstream, tmp_path_factory):
    """One jailed run with a mix of allowed and denied requests, HTTP and HTTPS."""
    tmp_path = tmp_path_factory.mktemp("logs")
    log, audit = tmp_path / "req.log", tmp_path / "audit.jsonl"
    upload = tmp_path / "upload"
    upload.write_bytes(b"u" * 300_000)
    urls = {
        "get": upstream.url("ok.test", "/echo?a=1"),
        "plain": upstream.url("ok.test", "/echo", tls=False),
        "denied": upstream.url("other.test", "/secret?k=v"),
        "mib": upstream.url("ok.test", f"/bytes/{1 << 20}"),
        "post": upstream.url("ok.test", "/echo?post"),
        "denied_plain": upstream.url("api.test", "/x", tls=False),
    }
    script = "; ".join(
        [
            f"curl -sS -o /dev/null -H 'Authorization: Bearer sk-live-SECRET' {urls['get']}",
            f"curl -sS -o /dev/null {urls['plain']}",
            f"curl -sS -o /dev/null {urls['denied']}",
            f"curl -sS -o /dev/null {urls['mib']}",
            f"curl -sS -o /dev/null --data-binary @{upload} {urls['post']}",
            f"curl -sS -o /dev/null -X DELETE {urls['denied_plain']}",
        ]
    )
    result = jail.run(
        ["--js", RULE, "--request-log", str(log), "--audit-log", str(audit)], ["sh", "-c", script]
    )
    assert result.returncode == 0, result.stderr
    return urls, log.read_text(), audit.read_text()


def test_request_log_has_one_exact_line_per_request(traffic):
    urls, log, _ = traffic
    lines = log.splitlines()
    for line in lines:
        assert LINE.match(line), line
    assert [line.split(" ", 1)[1] for line in lines] == [
        f"+ GET {urls['get']}",
        f"+ GET {urls['plain']}",
        f"- GET {urls['denied']}",
        f"+ GET {urls['mib']}",
        f"+ POST {urls['post']}",
        f"- DELETE {urls['denied_plain']}",
    ]


def test_audit_log_records_every_request(traffic, upstream):
    urls, _, audit = traffic
    records = [json.loads(line) for line in audit.splitlines()]
    assert len(records) == 6
    by_url = {r["url"]: r for r in records}
    assert set(by_url) == set(urls.values())
    for r in records:
        assert list(r) == FIELDS
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", r["time"])
        assert re.fullmatch(r"weak-\d+", r["jail"])
        assert re.fullmatch(r"127\.0\.0\.1:\d+", r["client"])
        assert isinstance(r["duration_ms"], int | float) and r["duration_ms"] >= 0
        assert r["bytes_sent"] > 0 and r["bytes_received"] > 0

    ok = by_url[urls["get"]]
    assert (ok["method"], ok["host"], ok["port"]) == ("GET", "ok.test", upstream.https_port)
    assert (ok["decision"], ok["reason"], ok["engine"], ok["status"]) == ("allow", "rule-allowed", "js", 200)
    assert ok["message"] is None

    denied = by_url[urls["denied"]]
    assert (denied["decision"], denied["reason"], denied["status"]) == ("deny", "rule-denied", 403)
    assert denied["message"] == "not other.test"
    plain_denied = by_url[urls["denied_plain"]]
    assert (plain_denied["method"], plain_denied["status"], plain_denied["port"]) == (
        "DELETE", 403, upstream.http_port,
    )

    assert by_url[urls["mib"]]["bytes_received"] >= 1 << 20
    assert by_url[urls["mib"]]["bytes_received"] < (1 << 20) + 4096
    assert by_url[urls["post"]]["bytes_sent"] >= 300_000
    assert by_url[urls["post"]]["bytes_sent"] < 300_000 + 4096
    assert by_url[urls["get"]]["bytes_received"] < 4096


def test_logs_hold_no_header_values(traffic):
    _, log, audit = traffic
    assert "SECRET" not in log and "SECRET" not in audit
    assert "Bearer" not in audit


@pytest.mark.skipif(not shutil.which("jq"), reason="needs jq")
def test_audit_log_is_valid_json_lines_for_jq(traffic):
    _, _, audit = traffic
    out = subprocess.run(["jq", "-c", "."], input=audit, capture_output=True, text=True, check=True)
    assert [json.loads(line) for line in out.stdout.splitlines()] == [
        json.loads(line) for line in audit.splitlines()
    ]
    decisions = subprocess.run(
        ["jq", "-r", "select(.decision == \"deny\") | .status"], input=audit, capture_output=True,
        text=True, check=True,
    )
    assert decisions.stdout.split() == ["403", "403"]


def test_verbose_lines_and_exit_summary(jail, upstream, tmp_path):
    denied = upstream.url("other.test", "/echo")
    script = f"curl -sS -o /dev/null {upstream.url('ok.test')}; curl -sS -o /dev/null {denied}"
    result = jail.run(["-v", "--js", RULE, "--request-log", str(tmp_path / "r.log")], ["sh", "-c", script])
    assert f"httpjail: + GET {upstream.url('ok.test')}" in result.stderr
    assert f"httpjail: - GET {denied} (rule-denied: not other.test)" in result.stderr
    assert result.stderr.rstrip().endswith(f"2 requests, 1 denied (other.test); log: {tmp_path / 'r.log'}")


def test_request_log_appends_across_runs(jail, upstream, tmp_path):
    log = tmp_path / "req.log"
    log.write_text("2025-01-01T00:00:00.000Z + GET https://earlier.invalid/\n")
    url = upstream.url("ok.test", "/echo?again")
    for _ in range(2):
        jail.run(["--js", "true", "--request-log", str(log)], ["curl", "-sS", "-o", "/dev/null", url])
    lines = Path(log).read_text().splitlines()
    assert len(lines) == 3
    assert [line.split(" ", 1)[1] for line in lines[1:]] == [f"+ GET {url}"] * 2
