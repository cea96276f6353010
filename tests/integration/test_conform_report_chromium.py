"""The conformance report as a person sees it: headless Chromium renders the HTML page of a
real run (a broken sender, so that every verdict appears) with no console message and no
script error, the page's self-check agrees with the cases in the DOM, and the filter works
from its first state. Without Chromium the test is skipped, saying so."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sandbox.conform.catalogue import select
from sandbox.conform.reports import write_reports
from sandbox.conform.runner import CommandTarget, Options, run_conformance
from tests.conform.helpers import NODE, node_command
from tests.integration.test_report_chromium import CHROMIUM, chromium

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed"),
    pytest.mark.skipif(NODE is None, reason="Node.js is not installed"),
]


def test_the_conformance_page_renders_every_case_without_errors(tmp_path: Path) -> None:
    cases = select(("mx-order", "failover-*", "null-mx*", "retry-interval", "size-limit"))
    report = run_conformance(Options(CommandTarget(node_command("mx-order")), cases=cases))
    verdicts = {r.verdict for r in report.results}
    assert verdicts == {"pass", "fail", "info"}
    page = tmp_path / "conform.html"
    write_reports(report, html_path=str(page))

    done = chromium(tmp_path / "profile", "--dump-dom", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    check = re.search(r'<div id="selfcheck"[^>]*>', done.stdout)
    assert check is not None, done.stdout[-2000:]
    attrs = dict(re.findall(r'(data-[a-z]+)="([^"]*)"', check.group(0)))
    assert attrs == {
        "data-cases": str(len(cases)),
        "data-counted": str(len(cases)),
        "data-errors": "",
        "data-ok": "true",
    }
    # Counted again from the DOM: a section per case, one session bar per session seen.
    assert len(re.findall(r'<section class="case v-(?:pass|fail|info)"', done.stdout)) == len(cases)
    sessions = sum(len(r.observation.sessions) for r in report.results if r.observation)
    assert done.stdout.count("data-session=") == sessions

    shot = tmp_path / "conform.png"
    done = chromium(
        tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,1400", page.as_uri()
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
