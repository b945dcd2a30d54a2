"""The benchmark behind scripts/bench: every figure next to its baselines, measured in the
same run. See scripts/bench --help.

Columns: a direct connection, plain mitmproxy (mitmdump, streaming every body, lazy
connections), squid (a plain forward proxy: HTTPS is tunnelled, not intercepted),
httpjail weak and httpjail strong (with `--js true`). Each client run is a process of its
own (benchkit/client.py), jailed by httpjail in its columns; each cell is the median of
the repeats, with its ratio to direct and to mitmdump. Upstreams are nginx and an SSE
server of ours on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.benchkit.extras import jail_lifecycle, rule_costs  # noqa: E402
from scripts.benchkit.report import Row, render, targets, write_chart  # noqa: E402
from scripts.benchkit.servers import (  # noqa: E402
    Proxy,
    Stack,
    Upstreams,
    rss_kib,
    start_mitmdump,
    start_squid,
    start_upstreams,
)

CLIENT = ROOT / "scripts" / "benchkit" / "client.py"
CONFIGS = ("direct", "mitmdump", "squid", "httpjail weak", "httpjail strong")
MIB = 1 << 20


def make_plan(up: Upstreams, quick: bool) -> list[dict[str, Any]]:
    repeats = 3 if quick else 5
    steps: list[dict[str, Any]] = [{"name": "idle", "workload": "idle", "url": "", "seconds": 1.0}]
    for i in range(repeats):
        steps += [
            {
                "name": f"keepalive#{i}",
                "workload": "keepalive",
                "url": up.url("/small"),
                "count": 300 if quick else 2000,
            },
            {
                "name": f"newconn#{i}",
                "workload": "newconn",
                "url": up.url("/small", tls=True),
                "count": 30 if quick else 200,
            },
        ]
    # The streams before the bulk transfers: right after a 256 MiB upload, an SSE stream
    # measured how the proxy gives memory back as much as how it relays events.
    for i in range(1 if quick else 5):
        steps.append({"name": f"sse#{i}", "workload": "sse", "url": f"https://127.0.0.1:{up.sse_port}/events"})
    for i in range(1 if quick else 3):
        steps += [
            {"name": f"download#{i}", "workload": "download", "url": up.url("/big", tls=True)},
            {
                "name": f"upload#{i}",
                "workload": "upload",
                "url": up.url("/upload", tls=True),
                "size": (64 if quick else 256) * MIB,
            },
        ]
    steps.append(
        {
            "name": "concurrent",
            "workload": "concurrent",
            "url": up.url("/small"),
            "clients": 200,
            "seconds": 3.0 if quick else 10.0,
        }
    )
    steps.append({"name": "after", "workload": "idle", "url": "", "seconds": 0.5})
    return steps


def client_argv(
    config: str, plan: Path, up: Upstreams, proxies: dict[str, Proxy]
) -> tuple[list[str], int | None]:
    """The command for `config`, and the pid whose memory to watch (None: nothing to watch)."""
    client = [sys.executable, str(CLIENT), str(plan)]
    if config == "direct":
        return [*client, "--cafile", str(up.ca)], None
    if config in proxies:
        proxy = proxies[config]
        return [*client, "--proxy", proxy.url, "--cafile", str(proxy.cafile)], proxy.pid
    jail = [
        sys.executable,
        "-m",
        "httpjail_py",
        "--js",
        "true",
        "--allow-private",
        "127.0.0.1/32",
        "--upstream-ca",
        str(up.ca),
    ]
    if config == "httpjail weak":
        jail.append("--weak")
    return [*jail, "--", *client, "--proxy", "env"], -1  # -1: the process itself


def run_config(
    config: str, plan: Path, up: Upstreams, proxies: dict[str, Proxy], env: dict[str, str]
) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """Run the plan in `config`: each step's result, and the watched process's peak memory
    (KiB) during each step."""
    argv, watch = client_argv(config, plan, up, proxies)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    pid = proc.pid if watch == -1 else watch
    current = ["start"]
    peaks: dict[str, int] = defaultdict(int)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            if pid is not None:
                peaks[current[0]] = max(peaks[current[0]], rss_kib(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    results: dict[str, dict[str, Any]] = {}
    assert proc.stdout is not None and proc.stderr is not None
    for line in proc.stdout:
        if line.startswith("start "):
            current[0] = line.split()[1]
        elif line.startswith("{"):
            result = json.loads(line)
            results[result.pop("name")] = result
    err = proc.stderr.read()
    proc.wait()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{config}: the client failed ({proc.returncode}):\n{err[-3000:]}")
    return results, dict(peaks)


def _median_of(results: dict[str, dict[str, Any]], base: str, pick: Any) -> float | None:
    values = [pick(r) for name, r in results.items() if name.split("#")[0] == base]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarise(runs: dict[str, tuple[dict[str, dict[str, Any]], dict[str, int]]]) -> list[Row]:
    rows = [
        Row("1 keep-alive GET, 200 B (HTTP)", "ms/req", "lower"),
        Row("2 new HTTPS connection per GET", "ms/req", "lower"),
        Row("3 download (HTTPS)", "MiB/s", "higher"),
        Row("3 upload (HTTPS)", "MiB/s", "higher"),
        Row("3 proxy peak RSS, download", "MiB", "lower"),
        Row("4 SSE delay per event, median", "ms", "lower"),
        Row("4 SSE delay per event, p99", "ms", "lower"),
        Row("4 SSE time to first event", "ms", "lower"),
        Row("5 200 clients: requests/s", "req/s", "higher"),
        Row("5 200 clients: p99 latency", "ms", "lower"),
        Row("5 200 clients: errors", "", "lower"),
        Row("8 proxy RSS idle", "MiB", "lower"),
        Row("8 proxy RSS after workload 5", "MiB", "lower"),
    ]
    for config, (results, peaks) in runs.items():
        conc = results.get("concurrent", {})
        values = [
            _median_of(results, "keepalive", lambda r: statistics.median(r["times_us"]) / 1000),
            _median_of(results, "newconn", lambda r: statistics.median(r["times_us"]) / 1000),
            _median_of(results, "download", lambda r: r["bytes_per_s"] / MIB),
            _median_of(results, "upload", lambda r: r["bytes_per_s"] / MIB),
            max((v for k, v in peaks.items() if k.startswith("download")), default=0) / 1024 or None,
            _median_of(results, "sse", lambda r: statistics.median(r["delays_us"]) / 1000),
            _median_of(results, "sse", lambda r: _pct(r["delays_us"], 0.99) / 1000),
            _median_of(results, "sse", lambda r: r["first_event_us"] / 1000),
            conc.get("requests_per_s"),
            _pct(conc["latencies_us"], 0.99) / 1000 if conc.get("latencies_us") else None,
            conc.get("errors"),
            peaks.get("idle", 0) / 1024 or None,
            peaks.get("after", 0) / 1024 or None,
        ]
        for row, value in zip(rows, values, strict=True):
            row.cells[config] = value
    return rows


def main() -> int:
    p = argparse.ArgumentParser(
        prog="scripts/bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick", action="store_true", help="smaller workloads and fewer repeats (under two minutes)"
    )
    p.add_argument("--out", type=Path, default=ROOT / "bench", help="where results.json and results.png go")
    args = p.parse_args()
    configs = [c for c in CONFIGS if c != "httpjail strong" or os.geteuid() == 0]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="httpjail-bench-") as tmp:
        os.chmod(tmp, 0o755)  # nginx's and squid's workers run as users of their own
        stack = Stack(Path(tmp))
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env["XDG_CONFIG_HOME"] = str(Path(tmp) / "config")
        try:
            up = start_upstreams(stack, (256 if args.quick else 1024) * MIB, 200 if args.quick else 1000)
            proxies = {"mitmdump": start_mitmdump(stack, up), "squid": start_squid(stack, up)}
            plan = Path(tmp) / "plan.json"
            plan.write_text(json.dumps(make_plan(up, args.quick)))
            runs = {}
            for config in configs:
                print(f"bench: {config} ...", file=sys.stderr, flush=True)
                runs[config] = run_config(config, plan, up, proxies, env)
            rows = summarise(runs)
            print("bench: rule engines, jail start and teardown ...", file=sys.stderr, flush=True)
            rules = asyncio.run(rule_costs(2000 if args.quick else 10000))
            lifecycle = jail_lifecycle(env, 3 if args.quick else 7, up.http_port)
        finally:
            stack.close()
    machine = (
        f"{platform.node()}: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    print(render(rows, configs, rules, lifecycle, machine))
    print()
    print("\n".join(targets(rows, rules, lifecycle)))
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": machine,
        "quick": args.quick,
        "seconds": round(time.monotonic() - started, 1),
        "configs": configs,
        "rows": [row.as_json() for row in rows],
        "rules_us": rules,
        "lifecycle_ms": lifecycle,
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    write_chart(rows, configs, args.out / "results.png")
    print(
        f"\nbench: {args.out / 'results.json'}, {args.out / 'results.png'} "
        f"({time.monotonic() - started:.0f} s)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
