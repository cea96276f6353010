"""The report as a person sees it: rendered by headless Chromium (Debian's package).

Chromium loads the file from disk with every network feature off, so the page must stand
alone. The test checks that the page logs no console message and throws no error, that the
page's own self-check agrees with the lanes and marks in the DOM, and that those are the
lanes and marks the run implies; then it takes a screenshot. ``scripts/setup-system``
installs Chromium; without it the test is skipped, saying so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sandbox import Connected, ConnectFailed, load_scenario, run_scenario
from sandbox.output.report.render import render_report
from sandbox.scenario.lint import lint_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (scripts/setup-system installs it)"
)


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(
    ("name", "lanes", "marks"),
    [("equal-preference-balancing", 2, 200), ("all-down-then-recovered", 2, 13)],
)
def test_the_report_renders_with_the_expected_lanes_and_marks(
    tmp_path: Path, name: str, lanes: int, marks: int
) -> None:
    scenario = load_scenario(SCENARIOS / f"{name}.yaml")
    result = run_scenario(scenario)
    attempts = sum(isinstance(e, Connected | ConnectFailed) for e in result.events)
    assert attempts == marks
    page = tmp_path / "report.html"
    page.write_text(render_report(result, lint_scenario(scenario)), encoding="utf-8")

    done = chromium(tmp_path / "profile", "--dump-dom", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    dom = done.stdout
    check = re.search(r'<div id="selfcheck"[^>]*>', dom)
    assert check is not None, dom[-2000:]
    attrs = dict(re.findall(r'(data-[a-z]+)="([^"]*)"', check.group(0)))
    assert attrs == {
        "data-lanes": str(lanes),
        "data-marks": str(marks),
        "data-errors": "",
        "data-ok": "true",
    }
    # Counted again from the DOM itself, not from the page's own script.
    assert len(re.findall(r"<g class=\"lane\" data-lane=", dom)) == lanes
    counts = re.findall(r'data-mark="" data-count="(\d+)"', dom)
    assert sum(int(n) for n in counts) == marks

    shot = tmp_path / "report.png"
    done = chromium(
        tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,1000", page.as_uri()
    )
    assert done.returncode == 0, done.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000
