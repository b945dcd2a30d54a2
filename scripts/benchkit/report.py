"""The benchmark's table, its targets, and its chart."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Row:
    label: str
    unit: str
    better: str  # "lower" or "higher"
    cells: dict[str, float | None] = field(default_factory=dict)

    def ratio(self, config: str, base: str) -> float | None:
        value, reference = self.cells.get(config), self.cells.get(base)
        if value is None or not reference:
            return None
        return value / reference

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "unit": self.unit,
            "better": self.better,
            "values": self.cells,
            "vs_direct": {c: self.ratio(c, "direct") for c in self.cells},
            "vs_mitmdump": {c: self.ratio(c, "mitmdump") for c in self.cells},
        }


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.3g}"


def _cell(row: Row, config: str) -> str:
    value = _number(row.cells.get(config))
    ratios = [
        f"{r:.2f}x" if (r := row.ratio(config, base)) is not None else "-"
        for base in ("direct", "mitmdump")
        if base != config
    ]
    if config == "direct" or value == "-":
        return value
    return f"{value} ({' / '.join(ratios)})"


def render(
    rows: list[Row], configs: list[str], rules: dict[str, float], lifecycle: dict[str, Any], machine: str
) -> str:
    header = ["workload", "unit", *configs]
    table = [[row.label, row.unit, *(_cell(row, c) for c in configs)] for row in rows]
    widths = [max(len(line[i]) for line in [header, *table]) for i in range(len(header))]
    lines = [f"machine: {machine}", "cells: median (ratio to direct / ratio to mitmdump)", ""]
    lines.append("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in table:
        lines.append("| " + " | ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) + " |")
    lines += ["", "6 rule decision: " + ", ".join(f"{name} {us:.1f} µs" for name, us in rules.items())]
    lines.append(
        "7 start / teardown (ms): "
        + "; ".join(f"{name} {t['start_ms']:.0f} / {t['teardown_ms']:.0f}" for name, t in lifecycle.items())
    )
    first = {name: t["first_answer_ms"] for name, t in lifecycle.items() if "first_answer_ms" in t}
    if first:
        lines.append(
            "7 start to the answer of a first request (ms): "
            + "; ".join(f"{name} {ms:.0f}" for name, ms in first.items())
        )
    return "\n".join(lines)


def targets(rows: list[Row], rules: dict[str, float], lifecycle: dict[str, Any]) -> list[str]:
    """Each target of the benchmark issue: met or missed, with the figure."""
    out = []

    def check(ok: bool, text: str) -> None:
        out.append(f"{'met   ' if ok else 'MISSED'} {text}")

    by_label = {row.label: row for row in rows}
    for row in rows[:10]:
        if row.label.startswith(("1", "2", "4", "5 200 clients: p99")):
            for config, limit in (("httpjail weak", 1.1), ("httpjail strong", 1.2)):
                ratio = row.ratio(config, "mitmdump")
                if ratio is not None:
                    check(
                        ratio <= limit, f"{config} within {limit}x of mitmdump on '{row.label}': {ratio:.2f}x"
                    )
    for label in ("3 download (HTTPS)", "3 upload (HTTPS)"):
        for config in ("httpjail weak", "httpjail strong"):
            ratio = by_label[label].ratio(config, "mitmdump")
            if ratio is not None:
                check(ratio >= 0.9, f"{config} at least 0.9x mitmdump's throughput, '{label}': {ratio:.2f}x")
    for config in ("httpjail weak", "httpjail strong"):
        peak = by_label["3 proxy peak RSS, download"].cells.get(config)
        if peak is not None:
            check(peak < 150, f"{config} peak RSS during the download under 150 MiB: {peak:.0f} MiB")
        errors = by_label["5 200 clients: errors"].cells.get(config)
        if errors is not None:
            check(errors == 0, f"{config} no errors at 200 concurrent clients: {errors:.0f}")
    for name, limit in (("js", 20), ("proc", 150), ("sh", 3000)):
        if name in rules:
            check(rules[name] < limit, f"{name} decision under {limit} µs: {rules[name]:.1f} µs")
    if "strong" in lifecycle:
        check(
            lifecycle["strong"]["start_ms"] < 300,
            f"strong jail start under 300 ms: {lifecycle['strong']['start_ms']:.0f} ms",
        )
        check(
            lifecycle["strong"]["teardown_ms"] < 200,
            f"strong jail teardown under 200 ms: {lifecycle['strong']['teardown_ms']:.0f} ms",
        )
    if "docker jail" in lifecycle and "docker run (bare)" in lifecycle:
        extra = lifecycle["docker jail"]["start_ms"] - lifecycle["docker run (bare)"]["start_ms"]
        check(extra < 1000, f"Docker jail start overhead over a bare docker run under 1 s: {extra:.0f} ms")
    return out


def write_chart(rows: list[Row], configs: list[str], path: Path) -> None:
    """Each workload's ratio to mitmdump, one bar per column (1.0 is mitmdump)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [row for row in rows if row.cells.get("mitmdump")]
    others = [c for c in configs if c != "mitmdump"]
    fig, ax = plt.subplots(figsize=(12, 6))
    width = 0.8 / len(others)
    for i, config in enumerate(others):
        ratios = [row.ratio(config, "mitmdump") or float("nan") for row in shown]
        ax.bar([x + i * width for x in range(len(shown))], ratios, width, label=config)
    ax.set_yscale("log")  # direct is 50x mitmdump on some rows, httpjail near 1x
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([x + width * (len(others) - 1) / 2 for x in range(len(shown))])
    ax.set_xticklabels([row.label for row in shown], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("ratio to mitmdump (see each row for lower/higher is better)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
