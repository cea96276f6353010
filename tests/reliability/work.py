"""Counting work instead of timing it: how many lines of the sandbox's own code a call runs.

Scaling tests compare the count for a size N with the count for 4N. Unlike wall-clock time
the count does not depend on the machine or on what else it runs, and code that is linear in
N runs about four times as many lines at 4N, while code that is quadratic runs sixteen times
as many.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import sandbox

__all__ = ["lines_run"]

SANDBOX = str(Path(sandbox.__file__).parent)


def lines_run(work: Callable[[], object]) -> int:
    """How many lines of the sandbox's own code ``work`` runs (loop iterations included)."""
    count = 0

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "line":
            count += 1
        return local

    def calls(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename.startswith(SANDBOX) else None

    previous = sys.gettrace()
    sys.settrace(calls)
    try:
        work()
    finally:
        sys.settrace(previous)
    return count
