"""The tables benchmarks/run.py prints: figures (one row per workload and path) and targets."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

MB = 1024 * 1024


def _ms(seconds: float, signed: bool = False) -> str:
    if math.isnan(seconds):
        return "—"
    return f"{seconds * 1000:+.2f}" if signed else f"{seconds * 1000:.2f}"


def _num(value: float, digits: int = 0) -> str:
    return "—" if math.isnan(value) else f"{value:.{digits}f}"


def _spread(values: Sequence[float], digits: int) -> str:
    """"min / median / max" of a loaded comparison's slices; "" for fewer than three."""
    if len(values) < 3:
        return ""
    return " / ".join(f"{v:.{digits}f}" for v in (min(values), statistics.median(values), max(values)))


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *(line(r) for r in rows)])


def figures_table(figures: Sequence[Any]) -> str:
    header = ["workload", "path", "client", "sess.", "msgs", "msg/s", "CPU ms/msg",
              "p50 ms", "p99 ms", "+p50 ms", "+p99 ms", "peak RSS MB"]
    rows = []
    for f in figures:
        star = "*" if f.latency_from == "loaded" else ""
        rows.append([
            f.workload, f.path, f.client, str(f.sessions), str(f.messages),
            _spread([rate for rate, _ in f.slices], 0) or _num(f.rate),
            _spread([cpu for _, cpu in f.slices], 2) or _num(f.cpu_ms, 2),
            _ms(f.p50) + star, _ms(f.p99) + star,
            _ms(f.added_p50, True), _ms(f.added_p99, True),
            _num(f.peak_rss / MB) if not math.isnan(f.peak_rss) else "—",
        ])
    return markdown(header, rows)


def targets_table(targets: Sequence[Any]) -> str:
    header = ["scenario", "target", "measured", "ratio", "needs", "result"]
    rows = []
    for t in targets:
        informative = t.target.startswith("(not a target)")
        result = "info" if informative else ("PASS" if t.passed else "FAIL")
        rows.append([t.scenario, t.target, t.measured + (f" [{t.note}]" if t.note else ""),
                     _num(t.ratio, 2), t.needs, result])
    return markdown(header, rows)
