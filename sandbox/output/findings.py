"""What the command line shows besides the story: the zone check, and the report file.

Kept out of ``cli.py`` so that the command line stays a thin list of options: this module
turns lint findings into the lines ``check`` and ``run`` print, and writes ``--report``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sandbox.errors import OutputError
from sandbox.output.term import PLAIN, Style
from sandbox.result.model import RunResult
from sandbox.scenario.lint import Finding, count_by_severity, format_finding
from sandbox.scenario.model import Scenario

__all__ = ["check_verdict", "finding_lines", "write_report", "zone_check"]

_SEVERITY_STYLE = {"error": ("red", "bold"), "warning": ("yellow", "bold"), "info": ("cyan",)}


def finding_lines(findings: Sequence[Finding], source: str, style: Style = PLAIN) -> list[str]:
    """Each finding as two lines: where, severity and what; then how to mend it."""
    lines: list[str] = []
    for finding in findings:
        head, mend = format_finding(finding, source)
        marker = f": {finding.severity}: "
        painted = style.paint(finding.severity, *_SEVERITY_STYLE[finding.severity])
        lines += [head.replace(marker, f": {painted}: ", 1), style.paint(mend, "dim")]
    return lines


def zone_check(findings: Sequence[Finding], source: str, style: Style = PLAIN) -> list[str]:
    """The block ``run`` prints before the story; nothing when the zones are clean."""
    if not findings:
        return []
    return [
        "Zone check",
        "----------",
        *("  " + line for line in finding_lines(findings, source, style)),
    ]


def check_verdict(scenario: Scenario, findings: Sequence[Finding], source: str) -> str:
    """The last line of ``check``: ok or not, and what the scenario holds."""
    counts = count_by_severity(findings)
    holds = (
        f"{scenario.name}: {len(scenario.zones)} zone(s), {len(scenario.messages)} message(s), "
        f"{len(scenario.expect)} expectation(s)"
    )
    said = ", ".join(_plural(n, word) for word, n in counts.items() if n)
    if counts["error"]:
        return f"{source}: {said} — {holds}"
    return f"{source}: ok — {holds}" + (f"; {said}" if said else "")


def _plural(n: int, word: str) -> str:
    if word == "info":
        return f"{n} info"
    return f"{n} {word}" + ("" if n == 1 else "s")


def write_report(result: RunResult, findings: Sequence[Finding], path: str) -> None:
    """Write the HTML timeline report; a path we cannot write is the user's to mend."""
    from sandbox.output.report.render import render_report  # only runs that ask pay for it

    html = render_report(result, findings)
    try:
        Path(path).write_text(html, encoding="utf-8")
    except OSError as error:
        raise OutputError(path, "the report", error) from None
