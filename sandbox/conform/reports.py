"""The conformance report for people (the terminal) and for programs (JSON), and the files.

The JSON object is ``{"cases": [{"id", "clause", "level", "verdict", "evidence", …}], …}``:
every case with its title, its teaching note and the one-sentence ``detail`` of its verdict,
and ``evidence`` holding what the verdict rests on — the case's world (zone text, host
behaviours, DNS faults), each message and what the sender said (exit code, the tail of its
output), every SMTP session with its transcript, every DNS query, the messages the hosts
accepted, the bounces that came back, and all of it merged into one timeline. ``summary``
scores each requirement level. JUnit XML (``junit``) and the HTML page (``html``) are built
from the same object.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sandbox.conform.model import (
    CaseResult,
    Observation,
    behaviour_text,
    scores,
)
from sandbox.conform.runner import Report, scenario_mapping
from sandbox.errors import OutputError

__all__ = [
    "render_catalogue",
    "render_text",
    "report_from_json",
    "timeline",
    "to_json",
    "write_reports",
]

_LEVEL_ORDER = ("MUST", "SHOULD", "profile")
_MARKS = {"pass": "PASS", "fail": "FAIL", "info": "info"}


# --- JSON -------------------------------------------------------------------------------------


def to_json(report: Report) -> dict[str, Any]:
    return {
        "tool": "mxsandbox conform",
        "sender": report.sender,
        "label": report.label,
        "mode": report.mode,
        "time_scale": report.time_scale,
        "case_timeout": report.case_timeout,
        "started": report.started,
        "duration": round(report.duration, 3),
        "summary": scores(report.results),
        "notes": list(report.notes),
        "cases": [case_json(result) for result in report.results],
    }


def case_json(result: CaseResult) -> dict[str, Any]:
    case = result.case
    return {
        "id": case.id,
        "title": case.title,
        "clause": case.clause,
        "level": case.level,
        "note": case.note,
        "verdict": result.verdict,
        "detail": result.judgement.detail,
        "pending": result.pending,
        "duration": round(result.duration, 3),
        "evidence": evidence(result),
    }


def evidence(result: CaseResult) -> dict[str, Any]:
    case = result.case
    world = scenario_mapping(case)
    found: dict[str, Any] = {
        "detail": result.judgement.detail,
        "world": {
            "domain": case.domain,
            "zone": world["zones"][case.domain],  # type: ignore[index]
            "hosts": behaviour_text(case.hosts),
            "dns": behaviour_text(case.dns),
            "recipients": [r.replace("{d}", case.domain) for r in case.recipients],
            "messages": case.messages,
        },
    }
    o = result.observation
    if o is None:
        return found
    found.update(
        {
            "messages": [
                {
                    "number": run.number,
                    "from": run.sender,
                    "to": list(run.recipients),
                    "message_id": run.message_id,
                    "status": run.status,
                    "exit_code": run.exit_code,
                    "started": _t(run.started),
                    "ended": _t(run.ended),
                    "command": list(run.command),
                    "output": run.output,
                }
                for run in o.runs
            ],
            "sessions": [
                {
                    "host": o.name(s.role),
                    "role": s.role,
                    "address": s.address,
                    "zone_address": s.zone_address,
                    "client": s.client,
                    "opened": _t(s.opened),
                    "closed": _t(s.closed),
                    "outline": s.outline,
                    "transcript": [[_t(t), side, line] for t, side, line in s.transcript],
                }
                for s in o.sessions
            ],
            "dns": [
                {
                    "t": _t(q.t),
                    "name": q.name,
                    "type": q.rdtype,
                    "rcode": q.rcode,
                    "answers": q.answers,
                    "transport": q.transport,
                }
                for q in o.queries
            ],
            "accepted": [
                {
                    "t": _t(m.t),
                    "host": o.name(m.role),
                    "recipients": list(m.recipients),
                    "message_id": m.message_id,
                }
                for m in o.stored
            ],
            "returned": [
                {"t": _t(r.t), "action": r.action, "status": r.status, "about": list(r.about)}
                for r in o.returned
            ],
            "timeline": [{"t": _t(t), "what": what} for t, what in timeline(o)],
            "ended": _t(o.ended),
        }
    )
    return found


def _t(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def timeline(o: Observation) -> list[tuple[float, str]]:
    """Everything that happened in the case, in time order, one line each."""
    lines: list[tuple[float, str]] = []
    for run in o.runs:
        who = "submitted to the MTA" if o.mode == "smtp" else "the sender starts"
        lines.append((run.started, f"message {run.number}: {who}"))
        if run.ended is not None:
            lines.append((run.ended, f"message {run.number}: {o.told(run.number)}"))
    for q in o.queries:
        lines.append((q.t, f"DNS {q.rdtype} {q.name.rstrip('.')}? → {q.rcode}, {q.answers} "
                           "answer(s)"))  # fmt: skip
    for s in o.sessions:
        lines.append((s.opened, f"{o.name(s.role)} [{s.address}]: session opens"))
        if s.closed is not None:
            lines.append((s.closed, f"{o.name(s.role)}: {s.outline}"))
    for m in o.stored:
        lines.append((m.t, f"{o.name(m.role)} accepts {m.message_id or 'a message'}"))
    for r in o.returned:
        lines.append((r.t, f"a DSN comes back: Action {r.action}, Status {r.status}"))
    return sorted(lines, key=lambda line: line[0])


def report_from_json(data: dict[str, Any]) -> dict[str, Any]:
    """A report object read back (for tables built from saved JSON): checked, unchanged."""
    if not isinstance(data, dict) or not isinstance(data.get("cases"), list):
        raise ValueError("not a conformance report: no list of cases")
    for case in data["cases"]:
        for key in ("id", "clause", "level", "verdict"):
            if key not in case:
                raise ValueError(f"a case without {key!r}")
    return data


# --- the terminal -----------------------------------------------------------------------------


def render_text(report: Report, *, details: bool = True) -> str:
    lines = [
        f"mxsandbox conform — {report.label or report.sender}",
        f"  sender: {report.sender}",
        f"  mode: {report.mode}; case deadline {report.case_timeout:g} s; "
        f"time scale x{report.time_scale:g}; {len(report.results)} cases in "
        f"{report.duration:.1f} s",
        "",
    ]
    width = max((len(r.case.id) for r in report.results), default=10)
    for result in report.results:
        case = result.case
        lines.append(f"{_MARKS[result.verdict]}  {case.level:<7} {case.id:<{width}}  {case.clause}")
        if details and (result.verdict != "pass"):
            lines.extend(_wrapped(result.judgement.detail, "        "))
            if result.verdict == "fail" and result.observation is not None:
                lines.extend(_evidence_lines(result.observation))
    lines.append("")
    for note in report.notes:
        lines.extend(_wrapped(f"note: {note}", ""))
    lines.extend(summary_lines(report.results))
    return "\n".join(lines) + "\n"


def summary_lines(results: Sequence[CaseResult]) -> list[str]:
    table = scores(tuple(results))
    lines = ["Summary"]
    for level in _LEVEL_ORDER:
        row = table[level]
        if not row["total"]:
            continue
        graded = row["pass"] + row["fail"]
        score = f"{row['pass']}/{graded} passed" if graded else "not graded"
        lines.append(f"  {level:<8} {score:<16} {row['fail']} failed, {row['info']} informational")
    return lines


def _wrapped(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, 96, initial_indent=indent, subsequent_indent=indent) or [indent]


def _evidence_lines(o: Observation) -> list[str]:
    lines = []
    for t, what in timeline(o)[:14]:
        lines.append(f"        {t:7.3f}s  {what}")
    extra = len(timeline(o)) - 14
    if extra > 0:
        lines.append(f"        … and {extra} more (see --json or --html)")
    for run in o.runs[:1]:
        tail = run.output.strip().splitlines()[-3:]
        lines.extend(f"        | {line[:110]}" for line in tail)
    return lines


def render_catalogue(cases: Sequence[Any]) -> str:
    width = max((len(c.id) for c in cases), default=10)
    lines = [f"{'id':<{width}}  {'level':<7}  clause — lesson"]
    for case in cases:
        lines.append(f"{case.id:<{width}}  {case.level:<7}  {case.clause}")
        lines.extend(_wrapped(case.note, " " * (width + 11)))
    return "\n".join(lines) + "\n"


# --- the files --------------------------------------------------------------------------------


def write_reports(
    report: Report,
    *,
    json_path: str | None = None,
    junit_path: str | None = None,
    html_path: str | None = None,
) -> None:
    data = to_json(report)
    if json_path:
        _write(json_path, json.dumps(data, indent=2, ensure_ascii=False) + "\n", "the JSON report")
    if junit_path:
        from sandbox.conform.junit import render_junit

        _write(junit_path, render_junit(data), "the JUnit report")
    if html_path:
        from sandbox.conform.html import render_html

        _write(html_path, render_html(data), "the HTML report")


def _write(path: str, text: str, what: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as error:
        raise OutputError(path, what, error) from error
