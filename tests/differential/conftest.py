"""The differential suites run once per pytest session, in one background process
(``python -m tests.differential``) that plays every selected (MTA, case) pair, the three MTAs
side by side; each test waits for its MTA's results and checks its case.

Under pytest-xdist the first worker to need the results starts that process (a lock file in
the session's shared temporary directory says who did); the others wait for the same files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.differential.suite import MTAS
from tests.helpers import ROOT, claim_shared_run, shared_directory, tail, wait_for_file

# All three suites side by side take 4-5 minutes here; a hung MTA must not hang CI.
RESULTS_TIMEOUT = 15 * 60.0
_runners: list[subprocess.Popen[bytes]] = []


def _selected_pairs(session: pytest.Session) -> list[tuple[str, str]]:
    pairs = []
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and item.get_closest_marker("differential"):
            pairs.append((callspec.params["mta"], callspec.params["case"]))
    return sorted(set(pairs))


def _why_not_here() -> str | None:
    if os.geteuid() != 0:
        return "the differential tests need root (network namespaces, the MTAs' users)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing"
    return None


@pytest.fixture(scope="session")
def differential_results(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], dict[str, Any]]]:
    why = _why_not_here()
    if why:
        pytest.skip(why)
    shared = shared_directory(tmp_path_factory, "differential")
    pairs = [(m, c) for m, c in _selected_pairs(request.session) if not MTAS[m].unavailable()]
    if claim_shared_run(shared) and pairs:
        with open(shared / "runner.txt", "wb") as output:
            _runners.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tests.differential",
                        "--out",
                        str(shared),
                        *(arg for m, c in pairs for arg in ("--pair", f"{m}:{c}")),
                    ],
                    cwd=ROOT,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            )

    def results(mta: str) -> dict[str, Any]:
        path = shared / f"{mta}-results.json"

        def missing() -> str:
            log = tail(shared / "runner.txt")
            return f"no {mta} results from the differential runner:\n{log}"

        wait_for_file(
            path,
            RESULTS_TIMEOUT,
            failed=lambda: missing() if (shared / "runner.done").exists() else None,
            late=missing,
        )
        return json.loads(path.read_text())

    yield results
    for runner in _runners:
        try:
            runner.wait(timeout=RESULTS_TIMEOUT)
        except subprocess.TimeoutExpired:
            runner.kill()
            runner.wait()
