"""7. Start-up: the wall time of ``mxsandbox run`` on a small scenario, and of importing the core.

A person runs one small scenario after another, and most of such a run is Python loading
modules. The baseline is the tree before the v2 layout (``BEFORE``, taken from git into a
temporary folder and run with the same interpreter and libraries), measured in the same run,
alternating with ours so that the machine's load falls on both alike. Medians of ``runs``.

- ``mxsandbox run scenarios/primary-down.yaml --quiet``, a whole process;
- ``import sandbox.core.mx``: what a program that only wants the MX rules pays.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

from bench.measure import ROOT, median
from bench.report import Figure

__all__ = ["BEFORE", "run"]

# The last commit of the v1 layout (every module at the top of sandbox/).
BEFORE = "bc88243"
SCENARIO = "scenarios/primary-down.yaml"


def _export(commit: str, into: Path) -> None:
    """The ``sandbox`` package as it was at ``commit``, unpacked into ``into``."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "sandbox"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")


def _wall(command: list[str], pythonpath: Path) -> float:
    # -s: no user site; -P: not the working folder on sys.path, so PYTHONPATH decides which
    # tree is imported.
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "NO_COLOR": "1"}
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, capture_output=True, check=True, timeout=120)
    return time.perf_counter() - start


def run(*, runs: int = 10) -> list[Figure]:
    python = [sys.executable, "-s", "-P"]
    commands = {
        "run": [*python, "-m", "sandbox", "run", SCENARIO, "--quiet"],
        "core": [*python, "-c", "import sandbox.core.mx"],
    }
    with tempfile.TemporaryDirectory(prefix="bench-before-") as folder:
        before_tree = Path(folder)
        _export(BEFORE, before_tree)
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(runs):
            for name, command in commands.items():
                for label, tree in (("before", before_tree), ("after", ROOT)):
                    times.setdefault((name, label), []).append(_wall(command, tree))
    figures = []
    for name, what in (
        ("run", f"mxsandbox run {Path(SCENARIO).stem} --quiet (whole process)"),
        ("core", "python -c 'import sandbox.core.mx' (whole process)"),
    ):
        after = median(times[(name, "after")])
        before = median(times[(name, "before")])
        figures.append(
            Figure(
                "7 start-up",
                what,
                after * 1000,
                "ms",
                before * 1000,
                f"v1 layout ({BEFORE})",
                before / after,
                "x faster",
                "no slower than v1",
                before / after >= 0.95,
                {
                    "runs": runs,
                    "after_s": times[(name, "after")],
                    "before_s": times[(name, "before")],
                },
            )
        )
    return figures
