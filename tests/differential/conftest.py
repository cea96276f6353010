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
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.differential.suite import MTAS

ROOT = Path(__file__).resolve().parents[2]
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


def _shared_dir(factory: pytest.TempPathFactory, worker: str | None) -> Path:
    base = factory.getbasetemp()
    return (base.parent if worker else base) / "differential"


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
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    shared = _shared_dir(tmp_path_factory, worker)
    shared.mkdir(parents=True, exist_ok=True)
    pairs = [(m, c) for m, c in _selected_pairs(request.session) if not MTAS[m].unavailable()]
    try:
        os.close(os.open(shared / "runner.lock", os.O_CREAT | os.O_EXCL))
        started = True
    except FileExistsError:
        started = False
    if started and pairs:
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
        deadline = time.monotonic() + RESULTS_TIMEOUT
        while not path.exists():
            if (shared / "runner.done").exists() or time.monotonic() > deadline:
                log = ""
                if (shared / "runner.txt").exists():
                    log = (shared / "runner.txt").read_text(errors="replace")[-4000:]
                raise AssertionError(f"no {mta} results from the differential runner:\n{log}")
            time.sleep(1.0)  # waiting on another process's results file, with a deadline
        return json.loads(path.read_text())

    yield results
    for runner in _runners:
        try:
            runner.wait(timeout=RESULTS_TIMEOUT)
        except subprocess.TimeoutExpired:
            runner.kill()
            runner.wait()
