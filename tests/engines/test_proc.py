"""`--proc` rules (engines/proc.py): one long-running process, a JSON line in and an
answer line out per request, several requests in flight, and every way the process can
fail (timeout, crash, EOF, empty line) restarting it with backoff and denying."""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from httpjail_py.engines.base import Action, Decision, Reason, RequestInfo
from httpjail_py.engines.proc import ProcEngine
from httpjail_py.errors import RuleError
from tests.pids import wait_gone

FILTER = Path(__file__).parent / "scripts" / "filter.py"


def filter_command(*args: str | Path) -> str:
    """`--proc` text that runs the test filter with these options, shell-quoted."""
    return shlex.join([sys.executable, "-u", str(FILTER), *map(str, args)])


def request(path: str = "/allow", **kw: Any) -> RequestInfo:
    fields: dict[str, Any] = {"method": "GET", "scheme": "https", "host": "api.test", "port": 443} | kw
    return RequestInfo(path=path, **fields)


def with_engine(engine: ProcEngine, body: Callable[[ProcEngine], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        try:
            return await body(engine)
        finally:
            await engine.aclose()

    return asyncio.run(run())


def decide(engine: ProcEngine, *requests: RequestInfo) -> list[Decision]:
    async def body(e: ProcEngine) -> list[Decision]:
        return [await e.evaluate(r) for r in requests]

    return with_engine(engine, body)


def starts(path: Path) -> list[float]:
    return [float(line.split()[0]) for line in path.read_text().splitlines()] if path.exists() else []


def assert_rule_error(decision: Decision, *says: str) -> None:
    assert decision.action is Action.DENY
    assert decision.reason is Reason.RULE_ERROR
    for text in says:
        assert decision.message is not None and text in decision.message, decision.message


# --- starting it ------------------------------------------------------------------------


def test_command_is_split_like_a_shell_command_line(tmp_path: Path) -> None:
    spaced = tmp_path / "dir with space"
    spaced.mkdir()
    record = spaced / "seen.log"
    command = filter_command("--record", record, "--extra-words", "a b", "c#d")
    assert "'" in command  # the quoting is what is being tested
    [decision] = decide(ProcEngine(command), request("/allow"))
    assert decision == Decision.allow()
    assert len(record.read_text().splitlines()) == 1


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("no-such-program-xyz --flag", "'no-such-program-xyz' is not an executable program"),
        ("/nonexistent/filter", "'/nonexistent/filter' is not an executable program"),
        ("python3 'unterminated", "cannot split it into words"),
        ("   ", "--proc needs a program"),
    ],
)
def test_a_program_that_cannot_run_is_a_startup_error(command: str, says: str) -> None:
    with pytest.raises(RuleError, match=says.replace("(", r"\(").replace(")", r"\)")):
        ProcEngine(command)


def test_a_file_that_is_not_executable_is_a_startup_error(tmp_path: Path) -> None:
    script = tmp_path / "filter.sh"
    script.write_text("#!/bin/sh\necho true\n")
    with pytest.raises(RuleError, match="not an executable program"):
        ProcEngine(str(script))


def test_missing_program_exits_2_through_the_cli(jail) -> None:
    result = jail.run(["--proc", "no-such-program-xyz --strict", "--test", "https://ok.test/"])
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("httpjail: error: --proc 'no-such-program-xyz --strict'")
    assert "not an executable program" in result.stderr
    assert result.stdout == ""


# --- what it is sent ----------------------------------------------------------------------


def test_each_request_is_one_compact_json_line_holding_r(tmp_path: Path) -> None:
    record = tmp_path / "seen.log"
    req = RequestInfo(
        method="POST",
        scheme="https",
        host="api.test",
        port=8443,
        path="/v1/chat",
        query="a=1&b=two",
        headers={"Content-Type": "application/json", "X-Note": 'quote " and\nnewline é'},
        requester_ip="10.99.0.2",
        jail="weak-1234",
    )
    decide(ProcEngine(filter_command("--record", record, "--answer", "true")), req, request("/x"))
    lines = [line.split(" ", 1)[1] for line in record.read_text().splitlines()]
    assert len(lines) == 2  # the newline inside the header value stayed escaped
    assert json.loads(lines[0]) == req.as_rule_input()
    assert json.loads(lines[0])["url"] == "https://api.test:8443/v1/chat?a=1&b=two"
    assert set(json.loads(lines[0])) == {
        "url", "method", "scheme", "host", "port", "path", "query", "headers", "requester_ip", "jail", "ip",
    }
    assert lines[0] == json.dumps(req.as_rule_input(), separators=(",", ":"))


def test_answers_are_read_with_the_shared_parser() -> None:
    decisions = decide(
        ProcEngine(filter_command()),
        request("/allow-1"),
        request("/nope"),
        request("/allow-2"),
    )
    assert decisions == [Decision.allow(), Decision.deny("denied /nope"), Decision.allow()]


def test_process_is_reused_across_requests(tmp_path: Path) -> None:
    log = tmp_path / "starts.log"
    decide(ProcEngine(filter_command("--starts", log)), *[request(f"/allow{i}") for i in range(5)])
    assert len(starts(log)) == 1


# --- several in flight ----------------------------------------------------------------------


def test_requests_in_flight_together_are_answered_in_order(tmp_path: Path) -> None:
    """The first answer takes 1 s; the other four were sent meanwhile (not held behind a
    lock), and each gets its own answer, not its neighbour's."""
    record, answered = tmp_path / "seen.log", tmp_path / "answered.log"
    engine = ProcEngine(
        filter_command("--delay-first", "1", "--record", record, "--answered", answered), timeout=5
    )
    paths = ["/allow-first", "/deny-2", "/allow-3", "/deny-4", "/allow-5"]

    async def body(e: ProcEngine) -> tuple[list[Decision], list[float]]:
        done: list[float] = [0.0] * len(paths)

        async def one(i: int) -> Decision:
            d = await e.evaluate(request(paths[i]))
            done[i] = time.monotonic()
            return d

        tasks = []
        for i in range(len(paths)):
            tasks.append(asyncio.get_running_loop().create_task(one(i)))
            await asyncio.sleep(0.05)  # sent in this order
        return list(await asyncio.gather(*tasks)), done

    decisions, done = with_engine(engine, body)
    assert decisions == [
        Decision.allow(),
        Decision.deny("denied /deny-2"),
        Decision.allow(),
        Decision.deny("denied /deny-4"),
        Decision.allow(),
    ]
    received = [float(line.split()[0]) for line in record.read_text().splitlines()]
    first_answer = float(answered.read_text().split()[0])
    assert len(received) == 5
    assert max(received) < first_answer, "requests 2-5 were not sent while 1 was unanswered"
    assert done == sorted(done)


# --- failures: timeout, crash, EOF, empty line ---------------------------------------------


def test_timeout_restarts_and_the_retry_on_the_new_process_answers(tmp_path: Path) -> None:
    log, marker = tmp_path / "starts.log", tmp_path / "hung-once"
    engine = ProcEngine(filter_command("--hang-once", marker, "--starts", log), timeout=0.5)
    t0 = time.monotonic()
    [decision] = decide(engine, request("/allow"))
    assert decision == Decision.allow()
    assert len(starts(log)) == 2
    assert time.monotonic() - t0 < 10  # the hang is forever: only the timeout ends it


def test_timeout_twice_denies_after_one_retry(tmp_path: Path, caplog) -> None:
    log = tmp_path / "starts.log"
    engine = ProcEngine(filter_command("--hang", "--starts", log), timeout=0.5)
    t0 = time.monotonic()
    [decision] = decide(engine, request("/allow"))
    elapsed = time.monotonic() - t0
    assert_rule_error(decision, "no answer within 0.5 s")
    assert len(starts(log)) == 2  # the first try and exactly one retry
    assert 1.0 <= elapsed < 10  # two timeouts of 0.5 s, not a hang
    assert "no answer within 0.5 s" in caplog.text  # the log says why it was restarted


def test_crash_on_a_request_denies_with_the_exit_status(tmp_path: Path) -> None:
    log = tmp_path / "starts.log"
    engine = ProcEngine(filter_command("--crash-on-line", "7", "--starts", log), timeout=5)
    t0 = time.monotonic()
    [decision] = decide(engine, request("/allow"))
    assert_rule_error(decision, "exited with status 7")
    assert len(starts(log)) == 2
    assert time.monotonic() - t0 < 2  # noticed at once, not at the timeout


def test_closed_stdout_restarts_without_waiting_for_the_timeout(tmp_path: Path) -> None:
    log = tmp_path / "starts.log"
    engine = ProcEngine(filter_command("--eof", "--starts", log), timeout=10)
    t0 = time.monotonic()
    [decision] = decide(engine, request("/allow"))
    assert_rule_error(decision, "stdout")
    assert len(starts(log)) == 2
    assert time.monotonic() - t0 < 4


def test_empty_line_restarts_and_denies(tmp_path: Path) -> None:
    log = tmp_path / "starts.log"
    engine = ProcEngine(filter_command("--empty", "--starts", log), timeout=5)
    [decision] = decide(engine, request("/allow"))
    assert_rule_error(decision, "empty line")
    assert len(starts(log)) == 2


@pytest.mark.slow
def test_a_filter_that_always_crashes_is_restarted_with_backoff(tmp_path: Path) -> None:
    """Over ~3 s of back-to-back requests, restarts stay few and their gaps grow."""
    log = tmp_path / "starts.log"
    engine = ProcEngine(filter_command("--crash", "3", "--starts", log), timeout=5)

    async def body(e: ProcEngine) -> list[Decision]:
        out = []
        end = time.monotonic() + 3
        while time.monotonic() < end:
            out.append(await e.evaluate(request("/allow")))
        return out

    decisions = with_engine(engine, body)
    for d in decisions:
        assert_rule_error(d, "exited with status 3")
    times = starts(log)
    # 0, 0.1, 0.2, 0.4, 0.8, 1.6 s between starts: about 6 in 3 s. A tight loop makes hundreds.
    assert 3 <= len(times) <= 10, times
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps[-1] > 0.5, gaps


def test_a_successful_answer_resets_the_backoff(tmp_path: Path) -> None:
    log, marker = tmp_path / "starts.log", tmp_path / "hung-once"
    engine = ProcEngine(filter_command("--hang-once", marker, "--starts", log), timeout=0.3)

    async def body(e: ProcEngine) -> list[Decision]:
        first = await e.evaluate(request("/allow"))  # times out once, then answered
        t0 = time.monotonic()
        second = await e.evaluate(request("/allow"))
        assert time.monotonic() - t0 < 0.5  # no backoff left over
        return [first, second]

    assert with_engine(engine, body) == [Decision.allow(), Decision.allow()]


def test_every_request_in_flight_is_retried_when_the_process_fails(tmp_path: Path) -> None:
    """Five requests wait on a process that never answers: all are retried on the
    restarted one (which answers), none is lost or left hanging."""
    log, marker = tmp_path / "starts.log", tmp_path / "hung-once"
    engine = ProcEngine(filter_command("--hang-once", marker, "--starts", log), timeout=0.5)

    async def body(e: ProcEngine) -> list[Decision]:
        reqs = [request(f"/allow{i}") if i % 2 else request(f"/no{i}") for i in range(5)]
        return list(await asyncio.wait_for(asyncio.gather(*map(e.evaluate, reqs)), 5))

    decisions = with_engine(engine, body)
    assert decisions == [
        Decision.deny(f"denied /no{i}") if i % 2 == 0 else Decision.allow() for i in range(5)
    ]
    assert len(starts(log)) == 2


def test_a_death_noticed_before_its_eof_still_retries_the_request_waiting(tmp_path: Path) -> None:
    """The filter exits on its first line without answering, but a helper it started
    keeps its stdout open, so no EOF comes. The next request finds the process dead: it
    is restarted and the first request retried on it, not left waiting for ever. The
    helper goes with the process group."""
    marker, pidfile = tmp_path / "crashed-once", tmp_path / "helper.pid"
    inner = filter_command("--crash-once", marker)
    engine = ProcEngine(shlex.join(["sh", "-c", f"sleep 30 & echo $! > {pidfile}; exec {inner}"]), timeout=3)

    async def body(e: ProcEngine) -> list[Decision]:
        first = asyncio.get_running_loop().create_task(e.evaluate(request("/allow-1")))
        while not marker.exists():
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)  # it has exited by now
        second = await e.evaluate(request("/allow-2"))
        return [await asyncio.wait_for(first, 5), second]

    t0 = time.monotonic()
    assert with_engine(engine, body) == [Decision.allow(), Decision.allow()]
    assert time.monotonic() - t0 < 2.5  # not at the 3 s timeout
    assert wait_gone(int(pidfile.read_text()))


def test_program_removed_after_startup_denies_with_the_os_error(tmp_path: Path) -> None:
    script = tmp_path / "filter.sh"
    script.write_text("#!/bin/sh\nwhile read -r line; do echo true; done\n")
    script.chmod(0o755)
    engine = ProcEngine(str(script), timeout=1)
    script.unlink()
    [decision] = decide(engine, request("/allow"))
    assert_rule_error(decision, "No such file or directory")


def test_stderr_goes_to_httpjails_stderr(capfd) -> None:
    decide(ProcEngine(filter_command("--stderr", "filter says hello")), request("/allow"))
    assert "filter says hello" in capfd.readouterr().err


def test_aclose_stops_the_process(tmp_path: Path) -> None:
    log = tmp_path / "starts.log"
    engine = ProcEngine(filter_command("--starts", log))

    async def body(e: ProcEngine) -> None:
        await e.evaluate(request("/allow"))
        await e.aclose()
        after = await e.evaluate(request("/allow"))
        assert_rule_error(after, "shutting down")

    with_engine(engine, body)
    assert wait_gone(int(log.read_text().split()[1]))
