"""The reliability suite's summary: every figure a test measured (see ``figures.show``)."""

from __future__ import annotations

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    figures = [
        (report.nodeid, value)
        for reports in terminalreporter.stats.values()
        for report in reports
        if isinstance(report, pytest.TestReport) and report.when == "call"
        for name, value in report.user_properties
        if name == "figure"
    ]
    if not figures:
        return
    terminalreporter.section("figures measured")
    for nodeid, text in figures:
        terminalreporter.write_line(f"{nodeid.rsplit('::', 1)[-1]}: {text}")
