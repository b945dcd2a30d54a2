"""`--sh` rules (engines/shell.py): a process per request, its environment, how its exit
status and stdout become the verdict, and every way it can fail (timeout, signal, cannot
start), with the event loop free while scripts run and at most N running at once."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from httpjail_py.engines.base import Action, Decision, Reason, RequestInfo
from httpjail_py.engines.result import MAX_MESSAGE
from httpjail_py.engines.shell import ShellEngine
from tests.pids import wait_gone


def request(path: str = "/", **kw: Any) -> RequestInfo:
    fields: dict[str, Any] = {"method": "GET", "scheme": "https", "host": "api.test", "port": 443} | kw
    return RequestInfo(path=path, **fields)


def run(engine: ShellEngine, body: Callable[[ShellEngine], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        try:
            return await body(engine)
        finally:
            await engine.aclose()

    return asyncio.run(main())


def decide(script: str, *requests: RequestInfo, **kw: Any) -> list[Decision]:
    async def body(e: ShellEngine) -> list[Decision]:
        return [await e.evaluate(r) for r in requests or (request(),)]

    return run(ShellEngine(script, **kw), body)


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def assert_rule_error(decision: Decision, says: str) -> None:
    assert decision.action is Action.DENY
    assert decision.reason is Reason.RULE_ERROR
    assert decision.message is not None and says in decision.message, decision.message


# --- what the script gets -------------------------------------------------------------------


def test_every_variable_reaches_the_script(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("HTTPJAIL_")]:  # the caller's own
        monkeypatch.delenv(name)
    monkeypatch.setenv("HTTPJAIL_TEST_INHERITED", "from httpjail")
    monkeypatch.setenv("HTTPJAIL_URL", "stale value, must be replaced")
    req = RequestInfo(
        method="PATCH",
        scheme="https",
        host="api.test",
        port=8443,
        path="/v1/items/7",
        query="a=1&b=two words",
        requester_ip="10.99.0.2",
        ip="192.0.2.7",
    )
    [decision] = decide("env; exit 1", req)
    assert decision.message is not None
    env = dict(line.split("=", 1) for line in decision.message.splitlines() if "=" in line)
    assert {k: v for k, v in env.items() if k.startswith("HTTPJAIL_")} == {
        "HTTPJAIL_URL": "https://api.test:8443/v1/items/7?a=1&b=two words",
        "HTTPJAIL_METHOD": "PATCH",
        "HTTPJAIL_SCHEME": "https",
        "HTTPJAIL_HOST": "api.test",
        "HTTPJAIL_PATH": "/v1/items/7",
        "HTTPJAIL_REQUESTER_IP": "10.99.0.2",
        "HTTPJAIL_PORT": "8443",
        "HTTPJAIL_QUERY": "a=1&b=two words",
        "HTTPJAIL_IP": "192.0.2.7",
        "HTTPJAIL_TEST_INHERITED": "from httpjail",
    }
    assert env["PATH"] == os.environ["PATH"]


def test_defaults_for_a_plain_http_request() -> None:
    req = RequestInfo(method="GET", scheme="http", host="ok.test", port=80, path="/")
    script = (
        'printf "%s|%s|%s|%s" "$HTTPJAIL_URL" "$HTTPJAIL_PORT" "$HTTPJAIL_QUERY" '
        '"$HTTPJAIL_REQUESTER_IP"; exit 1'
    )
    [decision] = decide(script, req)
    assert decision.message == "http://ok.test/|80||"


def test_a_script_without_a_space_is_executed_directly(tmp_path: Path) -> None:
    """A Python file: sh could not read it, so it ran through its own #! line."""
    script = executable(
        tmp_path / "rule.py",
        f"#!{sys.executable}\nimport os, sys\n"
        "print('python saw', os.environ['HTTPJAIL_HOST'], sys.argv[1:])\n"
        "sys.exit(0 if os.environ['HTTPJAIL_HOST'] == 'ok.test' else 1)\n",
    )
    decisions = decide(str(script), request(host="ok.test"), request(host="evil.test"))
    assert decisions == [Decision.allow(), Decision.deny("python saw evil.test []")]


def test_a_word_without_a_space_is_not_given_to_sh() -> None:
    """`true;false` would allow under sh -c; executed directly it is no program at all."""
    [decision] = decide("true;false")
    assert_rule_error(decision, "'true;false' could not start: No such file or directory")


def test_a_script_with_a_space_runs_under_sh_c() -> None:
    script = 'test "$HTTPJAIL_HOST" = ok.test && [ "$HTTPJAIL_METHOD" != DELETE ]'
    decisions = decide(
        script, request(host="ok.test"), request(host="ok.test", method="DELETE"), request(host="x.test")
    )
    assert [d.allowed for d in decisions] == [True, False, False]


def test_stdin_is_empty() -> None:
    [decision] = decide("cat; echo read-stdin; exit 1")
    assert decision.message == "read-stdin"


# --- exit status and output ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("exit 0", Decision.allow()),
        ("echo ignored when allowing; exit 0", Decision.allow()),
        ("exit 1", Decision.deny()),  # like JS `false`: the proxy names the rule
        ("exit 2", Decision.deny("rule script exited with status 2")),
        ("exit 255", Decision.deny("rule script exited with status 255")),
        ("echo not on the list; exit 1", Decision.deny("not on the list")),
        ("echo not on the list; exit 3", Decision.deny("not on the list")),
        ("printf '  \\n\\t padded  message \\n\\n'; exit 1", Decision.deny("padded  message")),
        ("printf 'first\\nsecond\\n'; exit 1", Decision.deny("first\nsecond")),
        ("printf '\\377bad utf-8'; exit 1", Decision.deny("\ufffdbad utf-8")),
        ("printf '   \\n'; exit 1", Decision.deny()),
        ("echo to stderr >&2; exit 1", Decision.deny()),
    ],
)
def test_exit_status_and_stdout_make_the_verdict(script: str, expected: Decision) -> None:
    assert decide(script) == [expected]


def test_a_script_killed_by_a_signal_is_a_rule_error() -> None:
    [decision] = decide("echo partial; kill -9 $$")
    assert_rule_error(decision, "rule script was killed by signal 9")


def test_a_long_message_is_cut_and_a_flood_of_output_does_not_block() -> None:
    t0 = time.monotonic()
    [decision] = decide("head -c 5000000 /dev/zero | tr '\\0' x; exit 1")
    assert decision.message == "x" * MAX_MESSAGE
    assert time.monotonic() - t0 < 5


# --- failures ----------------------------------------------------------------------------------


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    """The script starts a background sleep (writing its pid), then hangs itself."""
    pidfile = tmp_path / "bg.pid"
    script = f"sleep 30 & echo $! > {pidfile}; sleep 30"
    t0 = time.monotonic()
    [decision] = decide(script, timeout=0.5)
    assert_rule_error(decision, "rule script gave no verdict within 0.5 s (killed)")
    assert time.monotonic() - t0 < 2.5
    assert wait_gone(int(pidfile.read_text())), "the background sleep outlived the timeout"


def test_exit_with_a_background_job_holding_stdout_is_not_held_up(tmp_path: Path) -> None:
    """The verdict is the exit status; the job it left (still holding stdout) is killed."""
    pidfile = tmp_path / "bg.pid"
    t0 = time.monotonic()
    [decision] = decide(f"sleep 30 & echo $! > {pidfile}; echo bye; exit 1", timeout=10)
    assert decision == Decision.deny("bye")
    assert time.monotonic() - t0 < 2
    assert wait_gone(int(pidfile.read_text()))


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda d: d / "missing.sh", "could not start: No such file or directory"),
        (lambda d: d, "could not start: Permission denied"),  # a directory
        (lambda d: (d / "noexec.sh").write_text("exit 0") and d / "noexec.sh", "Permission denied"),
        (lambda d: (d / "nohashbang").write_bytes(b"\x7fELF junk") and d / "nohashbang", "Exec format"),
    ],
    ids=["missing", "directory", "not-executable", "bad-format"],
)
def test_a_script_that_cannot_start_denies_with_the_os_error(
    tmp_path: Path, make: Callable[[Path], Path], says: str
) -> None:
    path = make(tmp_path)
    if path.name == "nohashbang":
        path.chmod(0o755)
    [decision] = decide(str(path))
    assert_rule_error(decision, says)
    assert repr(str(path)) in (decision.message or "")


def test_a_nul_byte_in_the_request_denies_instead_of_raising() -> None:
    [decision] = decide("exit 0", request("/a\x00b"))
    assert_rule_error(decision, "could not start")


# --- concurrency -------------------------------------------------------------------------------


def test_at_most_max_concurrent_scripts_run_at_once(tmp_path: Path) -> None:
    log = tmp_path / "spans.log"
    script = f'echo "start $(date +%s.%N)" >> {log}; sleep 0.3; echo "end $(date +%s.%N)" >> {log}'
    engine = ShellEngine(script, max_concurrent=2, timeout=10)

    async def body(e: ShellEngine) -> list[Decision]:
        return list(await asyncio.gather(*(e.evaluate(request(f"/{i}")) for i in range(6))))

    assert run(engine, body) == [Decision.allow()] * 6
    events = sorted((float(t), kind) for kind, t in (line.split() for line in log.read_text().splitlines()))
    running = peak = 0
    for _, kind in events:  # at equal times "end" sorts before "start"
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert len(events) == 12
    assert peak == 2


def test_waiting_for_a_slot_counts_against_the_timeout_and_says_so() -> None:
    engine = ShellEngine("true", max_concurrent=1, timeout=0.5)

    async def body(e: ShellEngine) -> Decision:
        # Hold the only slot for longer than the timeout. (Two real requests would share
        # one deadline, and the second could get the slot at the last instant.)
        async with e._slots:
            return await e.evaluate(request("/2"))

    assert_rule_error(
        run(engine, body), "did not get to run within 0.5 s: 1 scripts were already running"
    )


def test_the_event_loop_keeps_running_while_scripts_hang() -> None:
    """Heartbeats every 20 ms while 4 scripts sleep: no gap much beyond that."""
    engine = ShellEngine("sleep 0.6", timeout=5)

    async def body(e: ShellEngine) -> tuple[list[Decision], float]:
        gaps: list[float] = []

        async def heartbeat() -> None:
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.02)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        beat = asyncio.get_running_loop().create_task(heartbeat())
        decisions = await asyncio.gather(*(e.evaluate(request(f"/{i}")) for i in range(4)))
        beat.cancel()
        return list(decisions), max(gaps)

    decisions, worst = run(engine, body)
    assert decisions == [Decision.allow()] * 4
    assert worst < 0.2, worst


def test_aclose_kills_running_scripts(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    engine = ShellEngine(f"echo $$ > {pidfile}; sleep 30", timeout=30)

    async def body(e: ShellEngine) -> Decision:
        task = asyncio.get_running_loop().create_task(e.evaluate(request()))
        while not pidfile.exists() or not pidfile.read_text().strip():
            await asyncio.sleep(0.02)
        await e.aclose()
        return await asyncio.wait_for(task, 20)  # the script's sleep is 30 s

    decision = run(engine, body)
    assert_rule_error(decision, "killed by signal 9")
    assert wait_gone(int(pidfile.read_text()))
