"""4. Scale: 1k, 3k and 10k messages over twenty hosts with a mix of faults.

The world is ``bench.worlds.scale``: ten domains, each a primary with a fault (refuse, connect
timeout, 421 greeting, greylisting, down for an hour, a mailbox that does not exist, 452 after
the dot, a slow greeting, 450 to RCPT with a backup that drops the connection) and a backup;
the run ends after two virtual hours. Each size runs in its own process, which reports its
wall time, its CPU time and its peak memory (``VmHWM``: the peak resident set size).

Growth is judged per message against the smallest size: CPU time per message (wall time on a
shared machine also counts the time other processes held the CPU), and memory above the
process's own baseline (the interpreter and the sandbox imported, before the run) per
message. Up to 1.25x (noise) counts as linear.
"""

from __future__ import annotations

from typing import Any

from bench.measure import ChildFailed, run_child
from bench.report import Figure

__all__ = ["run"]

LINEAR = 1.25
MEMORY_GOAL_MB = 300.0


def _size(count: int) -> str:
    return f"{count // 1000}k" if count % 1000 == 0 else str(count)


def run(*, sizes: tuple[int, ...] = (1000, 3000, 10000), limit: float = 150.0) -> list[Figure]:
    results: list[dict[str, Any]] = []
    figures: list[Figure] = []
    for count in sizes:
        try:
            results.append(run_child(["scale", str(count)], timeout=limit))
        except ChildFailed as error:
            figures.append(
                Figure(
                    "4 scale",
                    f"{_size(count)} messages: did not finish",
                    limit,
                    "s",
                    goal="linear",
                    met=False,
                    details={"error": str(error)},
                )
            )
            break
    if not results:
        return figures
    first = results[0]
    base_n, base_size = first["messages"], _size(first["messages"])
    cpu_per_message = first["cpu_s"] / base_n
    growth = (first["peak_mb"] - first["peak_mb_before"]) / base_n
    largest = max(sizes)
    for r in results:
        n, size = r["messages"], _size(r["messages"])
        linear_cpu = cpu_per_message * n
        cpu_ratio = r["cpu_s"] / linear_cpu
        figures.append(
            Figure(
                "4 scale",
                f"{size} msgs, 20 hosts, faults: CPU s (wall {r['wall_s']:.1f} s)",
                r["cpu_s"],
                "s",
                linear_cpu,
                f"{base_size} x {n / base_n:g}",
                cpu_ratio,
                "x linear",
                f"≤ {LINEAR}x linear",
                cpu_ratio <= LINEAR if r is not first else None,
                r,
            )
        )
        above = r["peak_mb"] - r["peak_mb_before"]
        mem_ratio = (above / n) / growth if growth > 0 else 1.0
        linear_ok = mem_ratio <= LINEAR if r is not first else None
        goal, met = f"≤ {LINEAR}x linear", linear_ok
        if n == largest:
            goal, met = f"< {MEMORY_GOAL_MB:.0f} MB, linear", r["peak_mb"] < MEMORY_GOAL_MB
            met = met and linear_ok is not False
        figures.append(
            Figure(
                "4 scale",
                f"{size}: peak memory ({above / n * 1000:.0f} kB/msg above base)",
                r["peak_mb"],
                "MB",
                r["peak_mb_before"],
                "process before the run",
                mem_ratio,
                "x linear growth",
                goal,
                met,
            )
        )
    return figures
