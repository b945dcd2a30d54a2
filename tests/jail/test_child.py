"""The jailed command as its user sees it: exit status, --timeout, signals, leftovers.

Every test runs the real CLI (`jail.run` / `jail.popen`, weak mode). Pids the child
starts are written to files so the tests can check, through /proc, that nothing the
child started outlives httpjail.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pids import alive


def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def read_pids(path: Path) -> list[int]:
    return [int(p) for p in path.read_text().split()]


@contextlib.contextmanager
def reaped(pidfile: Path) -> Iterator[None]:
    """Kill whatever pids `pidfile` lists on the way out, so that a test failing because a
    kill barrier broke does not leave sleeps behind."""
    try:
        yield
    finally:
        for pid in read_pids(pidfile) if pidfile.exists() else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def proxy_port(stderr_or_env: str) -> int:
    for line in stderr_or_env.splitlines():
        if line.startswith("HTTP_PROXY="):
            return int(line.rsplit(":", 1)[1])
    raise AssertionError(f"no HTTP_PROXY line in {stderr_or_env!r}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# --- exit status --------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 3, 42])
def test_exit_code_passes_through(jail, code):
    result = jail.run([], ["sh", "-c", f"exit {code}"])
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("sig", "expected"), [("TERM", 143), ("KILL", 137), ("INT", 130)])
def test_child_killed_by_signal_is_128_plus_n(jail, sig, expected):
    result = jail.run([], ["sh", "-c", f"kill -{sig} $$"])
    assert result.returncode == expected, result.stderr
    assert "Traceback" not in result.stderr


def test_command_not_found_is_127(jail):
    result = jail.run([], ["no-such-command-httpjail-test", "arg"])
    assert result.returncode == 127
    assert "httpjail:" in result.stderr and "no-such-command-httpjail-test" in result.stderr
    assert "not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_not_executable_is_126(jail, tmp_path):
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho should-not-run\n")
    script.chmod(0o644)
    result = jail.run([], [str(script)])
    assert result.returncode == 126
    assert "should-not-run" not in result.stdout
    assert f"httpjail: cannot execute {script}" in result.stderr
    assert "Traceback" not in result.stderr


def test_executable_without_interpreter_is_126(jail, tmp_path):
    # execve fails with ENOEXEC: not a binary, no `#!` line.
    script = tmp_path / "noshebang"
    script.write_bytes(b"\x00\x01\x02garbage\n")
    script.chmod(0o755)
    result = jail.run([], [str(script)])
    assert result.returncode == 126, result.stderr
    assert f"httpjail: cannot execute {script}" in result.stderr
    assert "Traceback" not in result.stderr


# --- --timeout ----------------------------------------------------------------------


def test_timeout_kills_child_and_its_group(jail, tmp_path):
    pidfile = tmp_path / "pids"
    bg = f"sleep 300 >/dev/null 2>&1 & echo $! >> {pidfile}"
    script = f"{bg}; {bg}; echo $$ >> {pidfile}; wait"
    with reaped(pidfile):
        # The run's own limit is far below the sleeps': reaching it means --timeout failed.
        result = jail.run(["--timeout", "1"], ["sh", "-c", script], timeout=60)
        assert result.returncode == 124, result.stderr
        assert result.stderr.startswith("httpjail:") and "--timeout" in result.stderr
        pids = read_pids(pidfile)
        assert len(pids) == 3
        wait_for(lambda: not any(alive(p) for p in pids), 2, "the group to be gone")


@pytest.mark.slow
def test_timeout_kills_a_child_that_ignores_sigterm(jail, tmp_path):
    pidfile = tmp_path / "pids"
    # `trap '' TERM` is inherited by the sleep: neither dies of SIGTERM.
    script = f"trap '' TERM; sleep 300 >/dev/null 2>&1 & echo $! >> {pidfile}; echo $$ >> {pidfile}; wait"
    with reaped(pidfile):
        # Without the SIGKILL after the grace period, the run would reach its own limit.
        result = jail.run(["--timeout", "1"], ["sh", "-c", script], timeout=60)
        assert result.returncode == 124, result.stderr
        pids = read_pids(pidfile)
        wait_for(lambda: not any(alive(p) for p in pids), 2, "the group to be gone")


# --- signals sent to httpjail -------------------------------------------------------


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 7), (signal.SIGTERM, 9)])
def test_signal_reaches_child_and_its_status_comes_back(jail, tmp_path, sig, code):
    ready, marker, pidfile = tmp_path / "ready", tmp_path / "marker", tmp_path / "pids"
    name = sig.name[3:]
    # A non-interactive sh ignores SIGINT in its background jobs: only the cleanup at
    # exit can stop that sleep. The trap runs between commands, hence `wait`, not `sleep`.
    script = (
        f"trap 'echo got-{name} > {marker}; exit {code}' {name}; "
        f"sleep 300 >/dev/null 2>&1 & echo $! > {pidfile}; echo $$ >> {pidfile}; "
        f"env > {ready}.tmp; mv {ready}.tmp {ready}; wait"
    )
    proc = jail.popen([], ["sh", "-c", script])
    with reaped(pidfile):
        try:
            wait_for(ready.exists, 20, "the child to start")
            pids = read_pids(pidfile)
            port = proxy_port(ready.read_text())
            assert port_open(port)
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=15)
            assert marker.read_text().strip() == f"got-{name}"
            assert proc.returncode == code, err
            assert "Traceback" not in err
            assert not port_open(port)
            wait_for(lambda: not any(alive(p) for p in pids), 2, "the child's processes to be gone")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def test_background_process_is_gone_after_normal_exit(jail, tmp_path):
    pidfile = tmp_path / "pids"
    # The child exits at once and leaves a sleeper behind in its process group.
    script = f"sleep 300 >/dev/null 2>&1 & echo $! > {pidfile}; exit 5"
    with reaped(pidfile):
        result = jail.run([], ["sh", "-c", script], timeout=20)
        assert result.returncode == 5, result.stderr
        pids = read_pids(pidfile)
        wait_for(lambda: not any(alive(p) for p in pids), 2, "the leftover sleep to be gone")


def test_background_process_ignoring_sigterm_is_gone_after_exit(jail, tmp_path):
    pidfile = tmp_path / "pids"
    script = f"trap '' TERM; sleep 300 >/dev/null 2>&1 & echo $! > {pidfile}; exit 0"
    with reaped(pidfile):
        result = jail.run([], ["sh", "-c", script], timeout=20)
        assert result.returncode == 0, result.stderr
        pids = read_pids(pidfile)
        wait_for(lambda: not any(alive(p) for p in pids), 2, "the leftover sleep to be gone")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_teardown_does_not_cut_it_short(jail, upstream, tmp_path, sig):
    # A burst of signals from just before the command exits until httpjail is gone (a
    # supervisor stopping everything as the command ends): the command ignores them, and
    # httpjail must still stop its proxy, write the summary and the log, and exit with
    # the command's status rather than die of the signal half-way.
    marker, log = tmp_path / "marker", tmp_path / "req.log"
    denied = upstream.url("other.test", "/echo")
    script = f"trap '' INT TERM; curl -s -o /dev/null {denied}; touch {marker}; exit 3"
    proc = jail.popen(["--request-log", str(log)], ["sh", "-c", script])
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        wait_for(marker.exists, 20, "the command to finish")
        while proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            time.sleep(0.002)
        proc.wait(timeout=15)
        reader.join(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = "".join(lines)
    assert proc.returncode == 3, err
    assert "Traceback" not in err
    assert "1 requests, 1 denied (other.test)" in err
    assert log.read_text().count(" - GET ") == 1
