"""Timing helpers, and running one workload in a fresh Python process."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["ROOT", "ChildFailed", "best", "median", "run_child", "timed", "with_root_on_path"]

ROOT = Path(__file__).resolve().parents[1]


class ChildFailed(RuntimeError):
    """A workload process failed or ran past its time limit."""


def with_root_on_path(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for a child process that imports ``bench`` (and whatever the parent
    could import through its own ``PYTHONPATH``)."""
    paths = [str(ROOT), *filter(None, environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**environ, "PYTHONPATH": os.pathsep.join(paths)}


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    """(wall seconds, result) of one call."""
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def best(values: list[float]) -> float:
    """The fastest of several runs: what the machine can do when nothing else gets in the way
    (other processes on a shared machine only ever make a run slower)."""
    return min(values)


def median(values: list[float]) -> float:
    return statistics.median(values)


def run_child(args: list[str], *, timeout: float) -> dict[str, Any]:
    """Run ``python -m bench.child ARGS`` and return the JSON object it prints last.

    A fresh process per workload: its peak memory is its own, and nothing warmed up by an
    earlier benchmark (caches, imported modules) flatters it.
    """
    env = with_root_on_path(os.environ)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.child", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ChildFailed(f"bench.child {' '.join(args)} ran past {timeout:.0f} s") from None
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise ChildFailed(f"bench.child {' '.join(args)} failed:\n{tail}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
