"""Run an MTA's cases (several at once, each in its own namespace), and tell the result as an
agreement table: case x field, ``agree`` or both values."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.differential.compare import FIELDS
from tests.differential.harness import CaseResult, play
from tests.differential.mtas import MTA
from tests.differential.mtas.exim import Exim
from tests.differential.mtas.haraka import Haraka
from tests.differential.mtas.postfix import Postfix
from tests.differential.options import plays
from tests.differential.pending import KNOWN, PENDING, excused
from tests.differential.scenario import CASES, Case, load_case

__all__ = ["MTAS", "cases_for", "run_suite", "table", "verdicts"]

MTAS: dict[str, type[MTA]] = {"postfix": Postfix, "exim": Exim, "haraka": Haraka}
JOBS = 6  # cases of one MTA at once: most of a case is waiting on the MTA's timers


def all_cases() -> list[str]:
    return sorted(p.stem for p in CASES.glob("*.yaml"))


def cases_for(mta: str, names: Iterable[str] | None = None) -> list[str]:
    return [n for n in (names or all_cases()) if plays(mta, n)]


def _expected_length(case: Case, scale: float) -> float:
    """Longest first, so that the long cases do not start last."""
    until = case.until or 0.0
    return until / scale + len(case.messages) / 10


async def run_suite(
    mta: str, names: Iterable[str] | None = None, jobs: int = JOBS, out: Path | None = None
) -> list[CaseResult]:
    mta_class = MTAS[mta]
    cases = [load_case(n) for n in cases_for(mta, names)]
    cases.sort(key=lambda c: -_expected_length(c, mta_class.scale))
    slots = asyncio.Semaphore(jobs)

    async def one(case: Case) -> CaseResult:
        async with slots:
            return await play(mta_class, case, out)

    began = time.monotonic()
    results = await asyncio.gather(*(one(c) for c in cases))
    wall = time.monotonic() - began
    results = sorted(results, key=lambda r: r.case)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        summary = {
            "mta": mta,
            "version": next((r.mta_version for r in results if r.mta_version), ""),
            "scale": mta_class.scale,
            "wall": round(wall, 1),
            "cases": [
                {
                    "case": r.case,
                    "error": r.error,
                    "wall": round(r.wall, 1),
                    "verdict": verdicts(r),
                    "comparison": r.comparison.to_json() if r.comparison else None,
                }
                for r in results
            ],
        }
        (out / f"{mta}-results.json").write_text(json.dumps(summary, indent=1))
        (out / f"{mta}-agreement.md").write_text(table(mta, results, wall, markdown=True))
    return results


def verdicts(result: CaseResult) -> dict[str, dict[str, Any]]:
    """Per field: agree / differ (and whether excused, why) / n/a, with both values."""
    out: dict[str, dict[str, Any]] = {}
    if result.comparison is None:
        return out
    for name, field in result.comparison.fields.items():
        reason = excused(result.mta, result.case, name)
        state = "n/a" if field.agree is None else "agree" if field.agree else "differ"
        if state == "agree" and reason is not None:
            # A pending entry that agrees is stale; a known race may agree on a given run.
            state = "agree (known race)" if reason.startswith("known") else "agree (stale entry)"
        out[name] = {
            "state": state,
            "excused": reason if state == "differ" else None,
            "cell": field.cell(),
            "real": field.real,
            "run": field.run,
        }
    return out


def failures(result: CaseResult) -> list[str]:
    """What makes this (MTA, case) fail: a harness error, or an unexcused disagreement."""
    if result.error:
        return [f"harness: {result.error.strip().splitlines()[-1]}"]
    problems = []
    for name, verdict in verdicts(result).items():
        if verdict["state"] == "differ" and not verdict["excused"]:
            problems.append(f"{name}: {verdict['cell']}")
    return problems


def table(mta: str, results: list[CaseResult], wall: float, *, markdown: bool = False) -> str:
    """The agreement table: one row per case, one column per field."""
    version = next((r.mta_version for r in results if r.mta_version), mta)
    head = ["case", *FIELDS]
    rows: list[list[str]] = []
    notes: list[str] = []
    for result in results:
        if result.error:
            rows.append([result.case, *["ERROR"] * len(FIELDS)])
            notes.append(f"{result.case}: harness error: {result.error.strip().splitlines()[-1]}")
            continue
        row = [result.case]
        for name in FIELDS:
            verdict = verdicts(result).get(name, {"state": "n/a", "cell": "n/a"})
            if verdict["state"] == "differ":
                mark = "known" if (verdict["excused"] or "").startswith("known") else "pending"
                mark = mark if verdict["excused"] else "DIFFER"
                row.append(mark)
                notes.append(f"{result.case} / {name} [{mark}]: {verdict['cell']}")
            elif verdict["state"] == "agree (stale entry)":
                row.append("agree*")
                notes.append(f"{result.case} / {name}: agrees now; remove its entry in pending.py")
            elif verdict["state"] == "agree (known race)":
                row.append("agree*")
                notes.append(f"{result.case} / {name}: agrees on this run (known: a real race)")
            else:
                row.append(verdict["state"])
        rows.append(row)
    agree = sum(r.count("agree") + r.count("agree*") for r in rows)
    cells = sum(len(r) - 1 for r in rows)
    title = (
        f"{version} (scale {MTAS[mta].scale:g}): {len(results)} cases, {agree}/{cells} fields "
        f"agree, wall {wall:.0f} s"
    )
    if markdown:
        lines = [f"## {title}", "", "| " + " | ".join(head) + " |"]
        lines.append("|" + "---|" * len(head))
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines += ["", *[f"- {n}" for n in notes]]
        return "\n".join(lines) + "\n"
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines += ["", *notes]
    return "\n".join(lines) + "\n"


def excuse_counts() -> dict[str, tuple[int, int]]:
    """(known, pending) entries per MTA."""
    return {m: (sum(k[0] == m for k in KNOWN), sum(k[0] == m for k in PENDING)) for m in MTAS}
