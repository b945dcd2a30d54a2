"""The rows that are not about traffic: what one rule decision costs per engine (6), and
how long a jail takes to start and to tear down (7)."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

from httpjail_py.config import Config, RuleSource, RunMode
from httpjail_py.engines.base import RequestInfo
from httpjail_py.rules_loader import build_engine

REQUEST = RequestInfo(
    method="GET",
    scheme="https",
    host="api.example.com",
    port=443,
    path="/v1/models",
    headers={"user-agent": "bench"},
)
RULES = {
    "js": RuleSource(kind="js", text="r.host === 'api.example.com' && r.method === 'GET'"),
    "proc": RuleSource(
        kind="proc",
        text=f"{sys.executable} -u -c \"import sys\nfor line in sys.stdin: print('true', flush=True)\"",
    ),
    "sh": RuleSource(kind="sh", text='[ "$HTTPJAIL_HOST" = api.example.com ]'),
}


async def rule_costs(count: int) -> dict[str, float]:
    """Microseconds per decision (median of batches), per engine."""
    costs = {}
    for name, rule in RULES.items():
        engine = build_engine(Config(mode=RunMode.RUN, rule=rule))
        try:
            n = count if name != "sh" else max(50, count // 40)
            for _ in range(min(n, 50)):  # warm up (the proc engine starts its process)
                await engine.evaluate(REQUEST)
            batches = []
            for _ in range(5):
                start = time.perf_counter()
                for _ in range(n // 5):
                    decision = await engine.evaluate(REQUEST)
                batches.append((time.perf_counter() - start) / (n // 5) * 1e6)
                assert decision.allowed, decision
            costs[name] = statistics.median(batches)
        finally:
            await engine.aclose()
    return costs


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(start: launch to the command's first instruction, teardown: its last to the end),
    in ms. The command prints the clock at its start and at its end (`date +%s%N`)."""
    launched = time.time_ns()
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    ended = time.time_ns()
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}...: {out.returncode}: {out.stderr[-2000:]}")
    first, last = (int(x) for x in out.stdout.split()[-2:])
    return (first - launched) / 1e6, (ended - last) / 1e6


CLOCK = ["sh", "-c", "date +%s%N; date +%s%N"]


def _fetch_then_clock(url: str) -> list[str]:
    """A command whose first clock reading is taken once a GET of `url` is answered."""
    return ["sh", "-c", f"curl -sf -o /dev/null {url} && date +%s%N && date +%s%N"]


def jail_lifecycle(env: dict[str, str], repeats: int, port: int) -> dict[str, Any]:
    """Start and teardown (ms, medians) of the bare command, the weak and strong jails, and
    a container bare and in the Docker jail; and, for the first three, the time from the
    launch to the answer of a first GET of a local server's (127.0.0.1:`port`) /small."""
    # In the strong jail 127.0.0.1 is the jail's own: the server gets a name.
    resolve = f"bench.test:{port}:127.0.0.1"
    httpjail = [sys.executable, "-m", "httpjail_py", "--js", "true", "--allow-private", "127.0.0.1/32",
                "--resolve", resolve]

    def cases(command: list[str], bare: list[str] | None = None) -> dict[str, list[str]]:
        out = {"bare command": bare or command, "weak": [*httpjail, "--weak", "--", *command]}
        if os.geteuid() == 0:
            out["strong"] = [*httpjail, "--", *command]
        return out

    clocks = cases(CLOCK)
    if os.geteuid() == 0 and (image := _docker_image()):
        clocks["docker run (bare)"] = ["docker", "run", "--rm", image, *CLOCK]
        clocks["docker jail"] = [*httpjail, "--docker-run", "--", "--rm", image, *CLOCK]
    out: dict[str, Any] = {}
    for name, argv in clocks.items():
        timings = [_timed(argv, env) for _ in range(repeats)]
        out[name] = {
            "start_ms": statistics.median(t[0] for t in timings),
            "teardown_ms": statistics.median(t[1] for t in timings),
        }
    fetches = cases(_fetch_then_clock(f"http://bench.test:{port}/small"),
                    bare=_fetch_then_clock(f"http://127.0.0.1:{port}/small"))
    for name, argv in fetches.items():
        out[name]["first_answer_ms"] = statistics.median(_timed(argv, env)[0] for _ in range(repeats))
    return out


def _docker_image() -> str | None:
    """The tests' image (host binaries, no registry), or None without a Docker engine."""
    if shutil.which("docker") is None:
        return None
    try:
        from httpjail_py.errors import JailSetupError
        from httpjail_py.jail.docker.jail import connect
        from tests.jail.docker.image import build_test_image

        return build_test_image(connect())
    except (JailSetupError, ImportError):
        return None
