"""7. Zones: loading and checking a scenario of 250 and of 1,000 zones.

Each zone is a primary and a backup MX, each with an address of its own (``scenario_text``);
the scenario has one message. Two figures per size, both measured in this process, best of
three rounds, in CPU time (wall time on a shared machine also counts other processes):
loading the file (YAML, validation, every zone phase parsed once) and ``mxsandbox check``
(loading, the lint of every zone, the verdict printed).

Growth is judged per zone against the smallest size: up to 1.25x (noise) counts as linear.
The lint once parsed every zone again for every zone it linted, so 1,000 zones took sixteen
times as long as 250.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.report import Figure
from sandbox import load_scenario
from sandbox.cli import main as mxsandbox

__all__ = ["run", "scenario_text"]

LINEAR = 1.25


def scenario_text(count: int, *, mistakes: bool = False) -> str:
    """A scenario file with ``count`` zones ``d0.test`` … and one message to ``d0.test``.

    Each zone has two MX records and their two addresses (distinct across the zones, up to
    32,000 zones). With
    ``mistakes``, each zone also has an MX written without its final dot and one naming a
    host with no address: two lint errors per zone.
    """
    lines = ["name: many-zones", "zones:"]
    for i in range(count):
        high, low = divmod(2 * i, 250)
        lines += [
            f"  d{i}.test: |",
            "    $TTL 3600",
            "    @    IN MX 10 mx1",
            "    @    IN MX 20 mx2",
            f"    mx1  IN A 10.0.{high}.{low + 1}",
            f"    mx2  IN A 10.0.{high}.{low + 2}",
        ]
        if mistakes:
            lines += [f"    @    IN MX 30 mx2.d{i}.test", "    @    IN MX 40 mx3"]
    lines += ["messages:", "  - {from: bob@example.net, to: alice@d0.test}"]
    return "\n".join(lines) + "\n"


def _cpu(work: Callable[[], object], rounds: int) -> tuple[float, float]:
    """(best CPU seconds, best wall seconds) of ``rounds`` calls."""
    cpu, wall = [], []
    for _ in range(rounds):
        began_cpu, began_wall = time.process_time(), time.perf_counter()
        work()
        cpu.append(time.process_time() - began_cpu)
        wall.append(time.perf_counter() - began_wall)
    return min(cpu), min(wall)


def _check(path: Path) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        code = mxsandbox(["check", str(path)])
    if code != 0:
        raise RuntimeError(f"mxsandbox check {path} exited {code}")


def run(*, sizes: tuple[int, ...] = (250, 1000), rounds: int = 3) -> list[Figure]:
    measured: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-zones-") as folder:
        for count in sizes:
            path = Path(folder) / f"zones-{count}.yaml"
            path.write_text(scenario_text(count), encoding="utf-8")
            load_cpu, load_wall = _cpu(lambda p=path: load_scenario(p), rounds)
            check_cpu, check_wall = _cpu(lambda p=path: _check(p), rounds)
            measured.append(
                {
                    "zones": count,
                    "load_cpu_s": load_cpu,
                    "load_wall_s": load_wall,
                    "check_cpu_s": check_cpu,
                    "check_wall_s": check_wall,
                }
            )
    first = measured[0]
    figures = []
    for what, key in (("load", "load"), ("mxsandbox check", "check")):
        per_zone = first[f"{key}_cpu_s"] / first["zones"]
        for row in measured:
            n, value = row["zones"], row[f"{key}_cpu_s"]
            ratio = value / (per_zone * n)
            figures.append(
                Figure(
                    "7 zones",
                    f"{n:,} zones: {what}, CPU s (wall {row[f'{key}_wall_s']:.2f} s)",
                    value,
                    "s",
                    per_zone * n,
                    f"{first['zones']:,} zones x {n / first['zones']:g}",
                    ratio,
                    "x linear",
                    f"≤ {LINEAR}x linear",
                    ratio <= LINEAR if row is not first else None,
                    row,
                )
            )
    return figures
