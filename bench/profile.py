"""Profile one benchmark workload with pyinstrument and keep the report under ``docs/``.

    python -m bench.profile throughput      # -> docs/profile-throughput.txt
    python -m bench.profile outage --count 200

Workloads: ``throughput`` (1,000 messages, one domain), ``outage`` (1,000 messages while both
MX hosts refuse for 3 days), ``give-up`` (scenarios/give-up-after-5-days.yaml), ``scale``
(1,000 messages over twenty hosts with faults). The report is the call tree, in seconds and
in percent of the run, each with the flat list of the functions that took the most time
themselves. pyinstrument comes with the dev extras (``pip install -e '.[dev]'``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import worlds
from bench.measure import ROOT
from sandbox import Scenario, load_scenario, run_scenario

__all__ = ["main"]

WORKLOADS: dict[str, tuple[Callable[[int], Scenario], int]] = {
    "throughput": (worlds.throughput, 1000),
    "outage": (worlds.outage, 1000),
    "give-up": (lambda _: load_scenario(ROOT / "scenarios" / "give-up-after-5-days.yaml"), 1),
    "scale": (worlds.scale, 1000),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--count", type=int, help="messages (default: the workload's own)")
    parser.add_argument("--out", type=Path, help="default: docs/profile-WORKLOAD.txt")
    args = parser.parse_args(argv)
    try:
        from pyinstrument import Profiler
    except ImportError:
        print(
            "python -m bench.profile needs pyinstrument: pip install -e '.[dev]'", file=sys.stderr
        )
        return 2
    build, default = WORKLOADS[args.workload]
    count = args.count or default
    scenario = build(count)
    run_scenario(build(min(count, 20)))  # warm-up: imports and first-run costs
    profiler = Profiler(interval=0.001, async_mode="disabled")
    start = time.perf_counter()
    profiler.start()
    result = run_scenario(scenario)
    profiler.stop()
    wall = time.perf_counter() - start
    load = os.getloadavg() if hasattr(os, "getloadavg") else "?"
    header = [
        f"python -m bench.profile {args.workload} --count {count}",
        f"{datetime.now(UTC).isoformat(timespec='seconds')}, {os.cpu_count()} cores, "
        f"load average {load}",
        f"{len(result.events):,} events, {result.ended_at:,.0f} virtual s, "
        f"{wall:.2f} s of wall time under the profiler (it slows Python calls down)",
        "events by kind: "
        + ", ".join(f"{kind} {n:,}" for kind, n in Counter(e.kind for e in result.events).items()),
        f"connections per host: {', '.join(f'{h.name} {h.connections:,}' for h in result.hosts)}",
        "",
    ]
    tree = profiler.output_text(unicode=True, color=False)
    share = profiler.output_text(unicode=True, color=False, time="percent_of_total")
    flat = profiler.output_text(unicode=True, color=False, flat=True)
    out = args.out or ROOT / "docs" / f"profile-{args.workload}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(header) + tree + "\n\nThe same tree in percent of the run:\n" + share
    text += "\n\nFunctions by time spent in themselves:\n" + "\n".join(flat.splitlines()[:60])
    out.write_text(text + "\n", encoding="utf-8")
    print(f"{out}: {wall:.2f} s profiled")
    return 0


if __name__ == "__main__":
    sys.exit(main())
