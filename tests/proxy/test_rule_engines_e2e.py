"""`--sh` and `--proc` rules end to end: curl in a weak jail, the real CLI and proxy.

A denial, and every way each engine can fail, shows its reason in the 403 body, the
request log and the audit log (with the engine's name); a hanging script does not stop
the proxy from answering other requests meanwhile.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from tests.pids import wait_gone

FILTER = Path(__file__).parent.parent / "engines" / "scripts" / "filter.py"


def proc_rule(*args: str) -> list[str]:
    return ["--proc", shlex.join([sys.executable, "-u", str(FILTER), *args])]


def log_entries(path: Path) -> list[str]:
    """The request log without timestamps: `+ GET url` ..."""
    return [line.split(" ", 1)[1] for line in path.read_text().splitlines()]


def audit_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def responses(stdout: str) -> list[tuple[str, str]]:
    """(head, body) of each response curl printed with -D - (CONNECT answers skipped)."""
    out = []
    for part in stdout.split("\n===\n"):
        part = part.replace("\r\n", "\n")
        if not part.strip():
            continue
        head, _, body = part.split("Connection established\n\n")[-1].partition("\n\n")
        out.append((head, body))
    return out


def curl_each(*urls: str) -> list[str]:
    """A child that fetches each URL in turn, printing headers and body, then `===`."""
    script = "; ".join(f"curl -sS --http1.1 -D - {shlex.quote(u)}; echo; echo ===" for u in urls)
    return ["sh", "-c", script]


SH_RULE = (
    'case "$HTTPJAIL_PATH" in /allow*) exit 0;; esac; '
    'echo "sh says no to $HTTPJAIL_METHOD $HTTPJAIL_HOST$HTTPJAIL_PATH"; exit 1'
)


@pytest.mark.parametrize(
    ("rule", "engine", "message"),
    [
        (["--sh", SH_RULE], "sh", "sh says no to GET ok.test/echo"),
        (proc_rule("--stderr", "filter says hello on stderr"), "proc", "denied /echo"),
    ],
    ids=["sh", "proc"],
)
def test_a_denial_shows_its_reason_in_the_403_and_both_logs(
    jail, upstream, tmp_path, rule, engine, message
):
    req_log, audit = tmp_path / "req.log", tmp_path / "audit.jsonl"
    allowed, denied = upstream.url("ok.test", "/allow/x"), upstream.url("ok.test", "/echo")
    result = jail.run(
        [*rule, "--request-log", str(req_log), "--audit-log", str(audit)], curl_each(allowed, denied)
    )
    assert result.returncode == 0, result.stderr
    (ok_head, ok_body), (head, body) = responses(result.stdout)
    assert ok_head.startswith("HTTP/1.1 200") and '"path": "/allow/x"' in ok_body
    assert head.startswith("HTTP/1.1 403")
    assert "X-Httpjail-Reason: rule-denied" in head
    assert body.strip() == f"Request blocked by httpjail\n{message}"
    assert log_entries(req_log) == [f"+ GET {allowed}", f"- GET {denied}"]
    ok_record, record = audit_records(audit)
    assert (ok_record["decision"], ok_record["engine"], ok_record["status"]) == ("allow", engine, 200)
    assert record["url"] == denied
    assert (record["decision"], record["reason"], record["engine"]) == ("deny", "rule-denied", engine)
    assert record["message"] == message
    assert record["status"] == 403
    if engine == "proc":
        assert "filter says hello on stderr" in result.stderr


@pytest.mark.parametrize(
    ("rule", "engine", "says"),
    [
        (["--sh", "sleep 5", "--rule-timeout", "0.5"], "sh", "rule script gave no verdict within 0.5 s"),
        (["--sh", "/nonexistent/rule.sh"], "sh",
         "rule script '/nonexistent/rule.sh' could not start: No such file or directory"),
        (["--sh", "kill -9 $$"], "sh", "rule script was killed by signal 9"),
        ([*proc_rule("--hang"), "--rule-timeout", "0.5"], "proc", "it gave no answer within 0.5 s"),
        (proc_rule("--crash-on-line", "3"), "proc", "it exited with status 3"),
        (proc_rule("--eof"), "proc", "it closed its stdout"),
        (proc_rule("--empty"), "proc", "it answered an empty line"),
    ],
    ids=["sh-timeout", "sh-cannot-start", "sh-signal", "proc-timeout", "proc-crash", "proc-eof",
         "proc-empty-line"],
)
def test_every_failure_denies_with_its_reason_in_the_403_and_both_logs(
    jail, upstream, tmp_path, rule, engine, says
):
    req_log, audit = tmp_path / "req.log", tmp_path / "audit.jsonl"
    url = upstream.url("ok.test", "/allow/x")
    before = len(upstream.seen)
    result = jail.run([*rule, "--request-log", str(req_log), "--audit-log", str(audit)], curl_each(url))
    assert result.returncode == 0, result.stderr
    [(head, body)] = responses(result.stdout)
    assert head.startswith("HTTP/1.1 403")
    assert "X-Httpjail-Reason: rule-error" in head
    assert body.startswith("Request blocked by httpjail\n")
    assert says in body
    assert log_entries(req_log) == [f"- GET {url}"]
    [record] = audit_records(audit)
    assert (record["decision"], record["reason"], record["engine"]) == ("deny", "rule-error", engine)
    assert says in record["message"]
    assert upstream.seen[before:] == []
    if engine == "proc":  # the restart is said on stderr too
        assert f"failed: {says}" in result.stderr


def test_a_hanging_script_does_not_stall_other_requests(jail, upstream, tmp_path):
    """One request's script sleeps 30 s (timeout 20 s); another request, sent while it
    hangs, is answered at once. Stopping httpjail then kills the hanging script."""
    pidfile = tmp_path / "hanging.pid"
    rule = (
        f'case "$HTTPJAIL_PATH" in /slow*) sleep 30 & echo $! > {pidfile}; wait;; esac; exit 0'
    )
    slow, fast = upstream.url("ok.test", "/slow"), upstream.url("ok.test", "/allow/fast")
    child = f"""
        curl -sS -o /dev/null -w 'slow:%{{http_code}}\\n' {slow} &
        slow_curl=$!
        while [ ! -s {pidfile} ]; do sleep 0.02; done
        t0=$(date +%s.%N)
        curl -sS -o /dev/null -w 'fast:%{{http_code}}\\n' {fast}
        t1=$(date +%s.%N)
        echo "elapsed: $(echo "$t1 - $t0" | bc)"
        kill -0 "$(cat {pidfile})" && echo still-hanging
        kill "$slow_curl"
    """
    result = jail.run(["--sh", rule, "--rule-timeout", "20"], ["sh", "-c", child], timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "fast:200" in lines, result.stdout + result.stderr
    assert "still-hanging" in lines  # the fast answer came while the slow script ran
    elapsed = float(next(line for line in lines if line.startswith("elapsed:")).split()[1])
    assert elapsed < 15  # far below the slow script's 30 s
    assert wait_gone(int(pidfile.read_text()))
