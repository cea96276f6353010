"""One workload in its own process: ``python -m bench.child WORKLOAD COUNT`` (a key of
``WORKLOADS``).

Prints one JSON object: the wall and CPU time of the run, its virtual time, the process's peak
memory before and after it (``VmHWM``, else ``ru_maxrss``), and what happened (statuses,
connections).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections import Counter

from bench import worlds
from sandbox import run_scenario

__all__ = ["main"]

WORKLOADS = {
    "scale": worlds.scale,
    "outage": worlds.outage,
    "outage-421": worlds.outage_421,
    "outage-refuse": lambda count: worlds.outage_421(count, last="refuse"),
    "throughput": worlds.throughput,
}


def _status_mb(field: str) -> float | None:
    """A ``/proc/self/status`` figure (Linux), in MB; None where there is none."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        return None
    return None


def _peak_mb() -> float:
    # VmHWM is this process image's own peak. ru_maxrss is not: on Linux a child starts with
    # the peak of the parent it was forked from, which would hide a small run's growth.
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str]) -> int:
    name, count = argv[0], int(argv[1])
    scenario = WORKLOADS[name](count)
    before, cpu = _peak_mb(), _cpu_s()
    start = time.perf_counter()
    result = run_scenario(scenario)
    wall = time.perf_counter() - start
    cpu = _cpu_s() - cpu
    report = {
        "workload": name,
        "messages": count,
        "wall_s": wall,
        "cpu_s": cpu,
        "virtual_s": result.ended_at,
        "peak_mb_before": before,
        "peak_mb": _peak_mb(),
        "events": len(result.events),
        "statuses": dict(Counter(d.status for d in result.deliveries)),
        "connections": sum(h.connections for h in result.hosts),
        "accepted": sum(h.accepted for h in result.hosts),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
