"""6. Many scenarios: the whole ``scenarios/`` folder through pytest, serial and ``-n auto``.

``tests/scenarios`` runs every file in ``scenarios/`` (twice each, for the determinism check).
Both runs are whole ``pytest`` processes, start-up included, since that is what a developer
waits for. The figure is the speed-up (serial wall time / parallel wall time) on this
machine's cores.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from bench.measure import ROOT
from bench.report import Figure

__all__ = ["run"]


def _pytest(extra: list[str], limit: float) -> tuple[float, str]:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "tests/scenarios",
        "-q",
        "-p",
        "no:cacheprovider",
        *extra,
    ]
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=limit, check=False
    )
    wall = time.perf_counter() - start
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"pytest {' '.join(extra)} failed: {summary}")
    return wall, summary


def run(*, limit: float = 150.0) -> list[Figure]:
    # pytest's own start-up (imports, plugins, collection) is paid once serially and by the
    # controller and every worker with -n: it is what the speed-up has to win back.
    startup, _ = _pytest(["-n", "0", "--collect-only"], limit)
    serial, summary = _pytest(["-n", "0"], limit)
    parallel, _ = _pytest(["-n", "auto"], limit)
    passed = re.search(r"(\d+) passed", summary)
    cores = os.cpu_count() or 1
    tests = passed[1] if passed else "?"
    details = {
        "serial_s": serial,
        "parallel_s": parallel,
        "startup_s": startup,
        "tests_s": serial - startup,
        "cores": cores,
        "summary": summary,
    }
    return [
        Figure(
            "6 many scenarios",
            f"pytest -n auto, tests/scenarios ({tests} tests, {cores} cores;"
            f" start-up {startup:.1f} s)",
            parallel,
            "s",
            serial,
            "serial (-n 0)",
            serial / parallel,
            "x speed-up",
            "show it",
            None,
            details,
        )
    ]
