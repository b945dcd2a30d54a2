"""What the person at the terminal sees: the exit summary, `-v` decision lines, rule
console output, error messages without tracebacks, and a terminal that the jailed
command owns while it runs and that is handed back afterwards.
"""

from __future__ import annotations

import os
import re
import select
import shlex
import subprocess
import time

import pytest

from tests.conftest import ROOT, base_env

RULE = ["--js", "r.host === 'ok.test'"]
SUMMARY = re.compile(r"^httpjail: \d+ requests?, \d+ denied")


def curls(*urls: str) -> list[str]:
    return ["sh", "-c", "; ".join(f"curl -s -o /dev/null {u}" for u in urls)]


# --- the exit summary ---------------------------------------------------------------


def test_no_summary_when_nothing_was_denied(jail, upstream):
    result = jail.run(RULE, curls(upstream.url("ok.test"), upstream.url("ok.test", "/echo?2")))
    assert result.returncode == 0, result.stderr
    assert not [line for line in result.stderr.splitlines() if SUMMARY.match(line)], result.stderr
    assert "denied" not in result.stderr


def test_one_summary_line_when_requests_were_denied(jail, upstream, tmp_path):
    log = tmp_path / "req.log"
    urls = (upstream.url("ok.test"), upstream.url("other.test", "/a"), upstream.url("other.test", "/b"))
    result = jail.run([*RULE, "--request-log", str(log)], curls(*urls))
    assert result.returncode == 0, result.stderr
    summaries = [line for line in result.stderr.splitlines() if SUMMARY.match(line)]
    assert summaries == [f"httpjail: 3 requests, 2 denied (other.test); log: {log}"], result.stderr
    assert result.stderr.rstrip("\n").endswith(summaries[0])  # the last thing printed


def test_summary_names_each_denied_host_without_a_log(jail, upstream):
    urls = (upstream.url("other.test"), upstream.url("evil.test"), upstream.url("evil.test", "/x"))
    result = jail.run(RULE, curls(*urls))
    summaries = [line for line in result.stderr.splitlines() if SUMMARY.match(line)]
    assert summaries == ["httpjail: 3 requests, 3 denied (evil.test, other.test)"], result.stderr


# --- -v -----------------------------------------------------------------------------


def test_verbose_prints_one_line_per_decision(jail, upstream):
    allowed, denied = upstream.url("ok.test", "/echo?v=1"), upstream.url("other.test", "/echo?v=2")
    result = jail.run(["-v", *RULE], curls(allowed, denied))
    lines = result.stderr.splitlines()
    assert [line for line in lines if line.startswith("httpjail: + ")] == [f"httpjail: + GET {allowed}"]
    assert [line.split(" (")[0] for line in lines if line.startswith("httpjail: - ")] == [
        f"httpjail: - GET {denied}"
    ]


def test_no_decision_lines_without_verbose(jail, upstream):
    result = jail.run(RULE, curls(upstream.url("ok.test"), upstream.url("other.test")))
    assert not [
        line for line in result.stderr.splitlines() if line.startswith(("httpjail: + ", "httpjail: - "))
    ]


@pytest.mark.parametrize("verbose", [True, False])
def test_rule_console_log_only_at_verbose(jail, upstream, verbose):
    rule = "console.log('rule saw', r.host); r.host === 'ok.test'"
    result = jail.run([*(["-v"] if verbose else []), "--js", rule], curls(upstream.url("ok.test")))
    assert result.returncode == 0, result.stderr
    assert ("rule saw ok.test" in result.stderr) is verbose, result.stderr
    assert "rule saw" not in result.stdout


# --- errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--js", "r.host ==="], {}, "--js"),
        (["--js-file", "/nonexistent/rule.js"], {}, "/nonexistent/rule.js"),
        (["--request-log", "/nonexistent/dir/req.log"], {}, "/nonexistent/dir/req.log"),
        (["--timeout", "-1"], {}, "--timeout"),
        (["--upstream-ca", "/nonexistent/ca.pem"], {}, "/nonexistent/ca.pem"),
        ([], {"XDG_CONFIG_HOME": "/dev/null/cfg"}, "XDG_CONFIG_HOME"),
    ],
    ids=["js-syntax", "js-file-missing", "request-log-dir", "timeout", "upstream-ca", "ca-store"],
)
def test_errors_are_one_clear_line_without_traceback(jail, args, env, needle):
    result = jail.run(args, ["true"], env=env, timeout=30)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("httpjail: "), result.stderr
    assert needle in result.stderr


def test_a_rule_that_throws_denies_without_traceback(jail, upstream):
    result = jail.run(
        ["--js", "throw new Error('boom')"],
        ["sh", "-c", f"curl -s -w '%{{http_code}}' -o /dev/null {upstream.url('ok.test')}"],
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "403"
    assert "Traceback" not in result.stderr


# --- a real terminal ----------------------------------------------------------------


class Terminal:
    """A pty whose slave is the controlling terminal of `sh -c SCRIPT` (a new session)."""

    def __init__(self, script: str, env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(
            ["setsid", "-c", "sh", "-c", script],
            stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT, close_fds=True,
        )  # fmt: skip
        os.close(slave)
        self.output = b""

    def expect(self, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.output:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.master], [], [], left)[0]:
                raise AssertionError(
                    f"no {text!r} on the terminal; it shows {self.output.decode(errors='replace')!r}"
                )
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: every slave end is closed
                chunk = b""
            if not chunk:
                raise AssertionError(
                    f"terminal closed before {text!r}: {self.output.decode(errors='replace')!r}"
                )
            self.output += chunk

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        os.close(self.master)


def on_terminal(jail, child: str, after: str) -> Terminal:
    """httpjail running `child` on a terminal, then `after` in the same shell."""
    full = ["--weak", *jail.upstream_args()]
    cmd = shlex.join(jail.command(full, ["sh", "-c", child]))
    return Terminal(f"{cmd}; echo status:$?; {after}", base_env(jail.config_home))


def test_the_command_reads_the_terminal_and_gets_it_back(jail):
    term = on_terminal(jail, "echo ready; read line; echo got:$line; exit 4", "read x; echo after:$x")
    try:
        term.expect("ready")
        term.type(b"hello\n")
        term.expect("got:hello")
        term.expect("status:4")
        # The shell that ran httpjail reads the terminal again: it is back in the foreground.
        term.type(b"bye\n")
        term.expect("after:bye")
        assert term.proc.wait(timeout=10) == 0
    finally:
        term.close()


def test_ctrl_c_goes_to_the_command_not_to_httpjail(jail):
    child = "trap 'echo caught-int; exit 5' INT; echo ready; while :; do sleep 0.1; done"
    term = on_terminal(jail, child, "echo shell-alive")
    try:
        term.expect("ready")
        term.type(b"\x03")
        term.expect("caught-int")
        # httpjail (and the shell around it) did not die of the ^C: it reports the status.
        term.expect("status:5")
        term.expect("shell-alive")
        assert b"Traceback" not in term.output
    finally:
        term.close()
