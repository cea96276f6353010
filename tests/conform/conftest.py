"""The real MTAs' conformance runs (``-m conformance``) happen once per pytest session, in one
process (``python -m tests.conform.mtas``) that grades Postfix, Exim and Haraka side by side;
each test then reads its MTA's report.

Under pytest-xdist the first worker to need the reports runs that process (a lock file in the
session's shared temporary directory says who does); the others wait for its files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from tests.conform.mtas import GRADINGS, RUN_TIMEOUT
from tests.helpers import ROOT, claim_shared_run, shared_directory, tail, wait_for_file

# The runs end themselves at RUN_TIMEOUT, cleaning up their namespaces; this is the backstop.
DEADLINE = RUN_TIMEOUT + 5 * 60.0


def _selected(session: pytest.Session) -> list[str]:
    chosen = set()
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and item.get_closest_marker("conformance"):
            chosen.add(callspec.params["mta"])
    return sorted(chosen)


@pytest.fixture(scope="session")
def mta_reports(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], dict[str, Any]]:
    """``reports(mta)``: that MTA's fresh report (without evidence), once its runs are over."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("the real MTAs' runs need root and iproute2 (network namespaces)")
    shared = shared_directory(tmp_path_factory, "conformance")
    # The first worker runs them; the others read its reports from the same directory.
    if claim_shared_run(shared):
        mtas = [m for m in _selected(request.session) if not GRADINGS[m].driver.unavailable()]
        command = [sys.executable, "-m", "tests.conform.mtas", "--out", str(shared)]
        command += [arg for mta in mtas for arg in ("--mta", mta)]
        # Killed at the deadline (a hung MTA must not hang CI); each MTA's test then says so.
        with (
            open(shared / "runner.txt", "wb") as output,
            contextlib.suppress(subprocess.TimeoutExpired),
        ):
            subprocess.run(
                command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, timeout=DEADLINE
            )

    def reports(mta: str) -> dict[str, Any]:
        report, error = shared / f"{mta}.json", shared / f"{mta}.error"
        wait_for_file(
            report,
            DEADLINE,
            failed=lambda: (
                f"{mta}'s conformance run failed:\n{error.read_text()}" if error.exists() else None
            ),
            late=lambda: (
                f"no report from {mta} in {DEADLINE:.0f} s:\n{tail(shared / 'runner.txt')}"
            ),
        )
        return dict(json.loads(report.read_text()), out=str(shared))

    return reports
