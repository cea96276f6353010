"""Figures, the table they are printed in, and the JSON they are written as."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Figure", "format_table", "machine", "write_json"]


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured figure beside its baseline from the same run.

    ``ratio`` is what the goal is about: ours/baseline for rates, baseline/ours for times
    (so that above 1 is better in both), virtual/wall for virtual time, or the speed-up.
    """

    bench: str  # "1 throughput"
    what: str  # what was measured, with the workload
    value: float
    unit: str  # "msg/s", "s", "ms", "MB", "q/s", "x"
    baseline: float | None = None
    baseline_what: str = ""
    ratio: float | None = None
    ratio_what: str = ""
    goal: str = ""
    met: bool | None = None  # None: no goal to meet (shown for information)
    details: dict[str, Any] = field(default_factory=dict)


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".strip()


def _verdict(met: bool | None) -> str:
    return {True: "yes", False: "NO", None: "—"}[met]


def format_table(figures: Sequence[Figure], *, markdown: bool = False) -> str:
    """The figures as a table: plain columns for a terminal, or Markdown for the README."""
    head = ("benchmark", "figure", "value", "baseline (same run)", "ratio", "goal", "met")
    rows = [
        (
            f.bench,
            f.what,
            _number(f.value, f.unit),
            f"{_number(f.baseline, f.unit)} {f.baseline_what}".strip() if f.baseline_what else "—",
            f"{_number(f.ratio)} {f.ratio_what}".strip() if f.ratio is not None else "—",
            f.goal or "—",
            _verdict(f.met),
        )
        for f in figures
    ]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "load_average_at_start": load,
    }


def write_json(path: Path, figures: Sequence[Figure], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {**meta, "figures": [asdict(f) for f in figures]}
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
