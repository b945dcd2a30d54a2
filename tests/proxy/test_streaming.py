"""Bodies stream through the proxy in both directions: nothing waits for, or holds, a
whole body. SSE events arrive as they are sent, a 200 MiB download passes with the
proxy's memory flat, a 50 MiB upload arrives whole and intact.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from pathlib import Path

import pytest

CLIENTS = Path(__file__).parent / "clients"


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler:
    """Samples a process's VmRSS every 20 ms in a thread, keeping the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            value = rss_kib(self.pid)
            if value is None:
                return
            self.peak = max(self.peak, value)
            self.samples += 1
            self._stop.wait(0.02)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.parametrize("tls", [True, False], ids=["https", "http"])
def test_sse_events_arrive_before_the_stream_ends(jail, upstream, tls):
    url = upstream.url("ok.test", "/sse", tls=tls)
    result = jail.run(["--js", "true"], [sys.executable, str(CLIENTS / "sseclient.py"), url])
    assert result.returncode == 0, result.stderr
    events = json.loads(result.stdout)["events"]
    assert [data for _, data in events] == ["first", "second"]
    (t_first, _), (t_second, _) = events
    # The upstream pauses 1.5 s between the two: a buffering proxy delivers both at once.
    assert t_second - t_first > 1.0, events
    assert t_first < 1.0, events


def run_sampled(jail, tmp_path: Path, child_cmd: str) -> tuple[str, str, float, float]:
    """Run `child_cmd` in a weak jail that allows everything, sampling httpjail's RSS.

    Returns (stdout, stderr, baseline MiB once the proxy is up, peak MiB during the run).
    """
    ready = tmp_path / "ready"
    # The command starts before the proxy has loaded: a first request's answer says it is up.
    first = jail.upstream.url("ok.test", "/echo")
    script = f"curl -sS -o /dev/null {first} && touch {ready}; sleep 0.3; {child_cmd}"
    proc = jail.popen(["--js", "true"], ["sh", "-c", script])
    try:
        deadline = time.monotonic() + 20
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        baseline = rss_kib(proc.pid)
        assert baseline, f"httpjail is not running: {proc.communicate()}"
        with RssSampler(proc.pid) as sampler:
            out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert sampler.samples > 10
    return out, err, baseline / 1024, sampler.peak / 1024


@pytest.mark.slow
def test_large_download_streams_with_bounded_memory(jail, upstream, tmp_path):
    size = 200 << 20
    url = upstream.url("ok.test", f"/bytes/{size}")
    out, err, base_mib, peak_mib = run_sampled(
        jail, tmp_path, f"curl -sS -o /dev/null -w '%{{size_download}} %{{http_code}}' {url}"
    )
    assert out == f"{size} 200", err
    assert peak_mib < 250, f"proxy RSS peaked at {peak_mib:.0f} MiB (baseline {base_mib:.0f} MiB)"
    assert peak_mib - base_mib < 64, f"proxy RSS grew from {base_mib:.0f} to {peak_mib:.0f} MiB"


@pytest.mark.parametrize("tls", [True, False], ids=["https", "http"])
def test_large_upload_streams_through(jail, upstream, tmp_path, tls):
    body = hashlib.sha256(b"seed").digest() * ((50 << 20) // 32)
    path = tmp_path / "upload.bin"
    path.write_bytes(body)
    url = upstream.url("ok.test", "/echo?upload=1", tls=tls)
    before = len(upstream.seen)
    out, err, base_mib, peak_mib = run_sampled(jail, tmp_path, f"curl -sS --data-binary @{path} {url}")
    echo = json.loads(out)
    assert echo["body_len"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert [s.body_len for s in upstream.seen[before:] if "upload=1" in s.path] == [len(body)]
    # Streamed, not collected: the proxy never holds the 50 MiB body.
    assert peak_mib - base_mib < 32, f"proxy RSS grew from {base_mib:.0f} to {peak_mib:.0f} MiB"
