"""Memory figures of a process, read from /proc, and a way to show them.

The hostile-client tests measure what a flood costs the ``serve`` process: its resident set
(``VmRSS``) before, during and after, and its peak (``VmHWM``, reset before each flood by
writing 5 to ``/proc/PID/clear_refs``). ``show`` prints a figure (``pytest -s`` shows it) and
keeps it on the test's report, so that the suite's summary lists every figure too (see
``conftest.py`` beside this file).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

__all__ = ["MiB", "mib", "peak", "quiet", "reset_peak", "rss", "show"]

MiB = 1 << 20


def _status(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/PID/status, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"no {field} in /proc/{pid}/status")


def rss(pid: int) -> int:
    """The process's resident set now, in bytes."""
    return _status(pid, "VmRSS")


def peak(pid: int) -> int:
    """The largest resident set since the last ``reset_peak`` (or the start), in bytes."""
    return _status(pid, "VmHWM")


def reset_peak(pid: int) -> None:
    """Start measuring the peak afresh (Linux 4.0+; where it is not allowed, the peak since
    the start stands, which only makes the figure larger)."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


async def quiet(pid: int, *, polls: int = 3, interval: float = 0.1, bound: float = 60.0) -> None:
    """Wait until the process has used no CPU for ``polls`` readings in a row: it has done
    all it will with what it was sent (read it, or stopped reading). Bounded: after
    ``bound`` seconds it returns anyway, and the figures say what they say."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(bound):
            last, still = _cpu_ticks(pid), 0
            while still < polls:
                await asyncio.sleep(interval)
                now = _cpu_ticks(pid)
                still = still + 1 if now == last else 0
                last = now


def mib(size: float) -> str:
    return f"{size / MiB:.1f} MiB"


def show(request: pytest.FixtureRequest, text: str) -> None:
    """Print one figure and keep it for the summary at the end of the run."""
    print(f"\nfigure: {text}")
    request.node.user_properties.append(("figure", text))
