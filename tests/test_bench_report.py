"""scripts/benchkit/report.py: the ratios, the table and the verdict on each target, on
made-up figures (the benchmark itself is scripts/bench, never a timed test)."""

from __future__ import annotations

from scripts.benchkit.report import Row, render, targets


def rows() -> list[Row]:
    keepalive = Row("1 keep-alive GET, 200 B (HTTP)", "ms/req", "lower",
                    {"direct": 0.5, "mitmdump": 2.0, "httpjail weak": 2.1, "httpjail strong": 2.6})
    download = Row("3 download (HTTPS)", "MiB/s", "higher",
                   {"direct": 400.0, "mitmdump": 100.0, "httpjail weak": 95.0, "httpjail strong": 80.0})
    upload = Row("3 upload (HTTPS)", "MiB/s", "higher", {"direct": 400.0, "mitmdump": 100.0})
    rss = Row("3 proxy peak RSS, download", "MiB", "lower", {"mitmdump": 70.0, "httpjail weak": 160.0})
    errors = Row("5 200 clients: errors", "", "lower", {"direct": 0.0, "httpjail weak": 0.0})
    return [keepalive, download, upload, rss, errors]


def test_ratios_and_cells() -> None:
    keepalive = rows()[0]
    assert keepalive.ratio("httpjail weak", "mitmdump") == 1.05
    text = render(rows(), ["direct", "mitmdump", "httpjail weak"], {"js": 9.0}, {}, "test machine")
    assert "| 1 keep-alive GET, 200 B (HTTP) | ms/req | 0.5" in text
    assert "2.1 (4.20x / 1.05x)" in text
    assert "6 rule decision: js 9.0 µs" in text


def test_each_target_is_met_or_missed() -> None:
    lifecycle = {"strong": {"start_ms": 250, "teardown_ms": 250}}
    verdicts = targets(rows(), {"js": 9.0, "proc": 200.0}, lifecycle)
    keepalive = "of mitmdump on '1 keep-alive GET, 200 B (HTTP)'"
    assert f"met    httpjail weak within 1.1x {keepalive}: 1.05x" in verdicts
    assert f"MISSED httpjail strong within 1.2x {keepalive}: 1.30x" in verdicts
    download = "at least 0.9x mitmdump's throughput, '3 download (HTTPS)'"
    assert f"MISSED httpjail strong {download}: 0.80x" in verdicts
    assert "MISSED httpjail weak peak RSS during the download under 150 MiB: 160 MiB" in verdicts
    assert "met    js decision under 20 µs: 9.0 µs" in verdicts
    assert "MISSED proc decision under 150 µs: 200.0 µs" in verdicts
    assert "met    strong jail start under 300 ms: 250 ms" in verdicts
    assert "MISSED strong jail teardown under 200 ms: 250 ms" in verdicts
