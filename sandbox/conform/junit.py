"""The conformance report as JUnit XML, the format CI systems read (Jenkins, GitLab, GitHub
actions' test reporters): one ``<testsuite>`` per run, one ``<testcase>`` per case.

- ``classname`` is ``conform.MUST``, ``conform.SHOULD`` or ``conform.profile``, so that a CI
  page groups the cases by requirement level;
- a failed case carries ``<failure type="CLAUSE" message="DETAIL">`` with the case's
  timeline and its sessions as text;
- an informational case (``info``: a profile-specific case, or one that could not be graded
  for this sender) is ``<skipped message="…">``: it counts neither for nor against;
- every case has ``<system-out>`` with its lesson and timeline, and the suite's
  ``<properties>`` say how the sender was run.

Built with ``xml.etree.ElementTree`` (every attribute and text escaped), after removing the
characters XML 1.0 cannot carry (a command's output may hold terminal escapes).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

__all__ = ["render_junit"]

_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _clean(text: object) -> str:
    return _NOT_XML.sub("\ufffd", str(text))


def _seconds(value: object) -> str:
    return f"{float(value or 0):.3f}"  # type: ignore[arg-type]


def render_junit(report: dict[str, Any]) -> str:
    """The JUnit XML document for a report object (``reports.to_json``)."""
    cases = report["cases"]
    failures = sum(c["verdict"] == "fail" for c in cases)
    skipped = sum(c["verdict"] == "info" for c in cases)
    name = "mxsandbox conform" + (f": {report['label']}" if report.get("label") else "")
    root = ET.Element(
        "testsuites",
        {
            "name": _clean(name),
            "tests": str(len(cases)),
            "failures": str(failures),
            "errors": "0",
            "time": _seconds(report.get("duration")),
        },
    )
    suite = ET.SubElement(
        root,
        "testsuite",
        {
            "name": _clean(name),
            "tests": str(len(cases)),
            "failures": str(failures),
            "errors": "0",
            "skipped": str(skipped),
            "time": _seconds(report.get("duration")),
            "hostname": "localhost",
        },
    )
    if report.get("started"):
        suite.set("timestamp", str(report["started"])[:19])  # local form, no zone
    properties = ET.SubElement(suite, "properties")
    for key in ("sender", "mode", "time_scale", "case_timeout"):
        ET.SubElement(properties, "property", {"name": key, "value": _clean(report.get(key, ""))})
    for level, row in report.get("summary", {}).items():
        score = f"{row['pass']} passed, {row['fail']} failed, {row['info']} informational"
        ET.SubElement(properties, "property", {"name": f"score.{level}", "value": score})
    for case in cases:
        _testcase(suite, case)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def _testcase(suite: ET.Element, case: dict[str, Any]) -> None:
    element = ET.SubElement(
        suite,
        "testcase",
        {
            "name": _clean(case["id"]),
            "classname": f"conform.{case['level']}",
            "time": _seconds(case.get("duration")),
        },
    )
    detail = _clean(case.get("detail", ""))
    if case["verdict"] == "fail":
        failure = ET.SubElement(
            element, "failure", {"type": _clean(case["clause"]), "message": detail}
        )
        failure.text = _clean(_evidence_text(case))
    elif case["verdict"] == "info":
        ET.SubElement(element, "skipped", {"message": f"informational: {detail}"})
    out = ET.SubElement(element, "system-out")
    out.text = _clean(
        f"{case['title']}\n{case['clause']} ({case['level']}): {case.get('note', '')}\n"
        f"verdict: {case['verdict']}: {detail}\n\n{_timeline_text(case)}"
    )


def _timeline_text(case: dict[str, Any]) -> str:
    evidence = case.get("evidence", {})
    lines = [f"{row['t']:8.3f}s  {row['what']}" for row in evidence.get("timeline", [])]
    return "\n".join(lines) or "(nothing happened: the case was not run)"


def _evidence_text(case: dict[str, Any]) -> str:
    evidence = case.get("evidence", {})
    parts = [f"{case['clause']} ({case['level']}): {case.get('detail', '')}", ""]
    parts.append(_timeline_text(case))
    for session in evidence.get("sessions", []):
        parts.append(f"\nsession with {session['host']} [{session['address']}]:")
        parts.extend(f"  {side}: {line}" for _, side, line in session["transcript"])
    for message in evidence.get("messages", []):
        if message.get("output"):
            parts.append(f"\nmessage {message['number']}: what the sender printed:")
            parts.extend(f"  | {line}" for line in message["output"].splitlines()[-20:])
    return "\n".join(parts)
