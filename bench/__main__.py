"""``python -m bench``: run every benchmark, print the table, write the figures as JSON.

    python -m bench                      # everything: two to four minutes on two cores
    python -m bench --only dns,startstop # some of them
    python -m bench --quick              # small sizes: checks that the benchmarks run

Every benchmark keeps to loopback and is bounded in count and in time: the workloads that run
in a child process have a time limit, and a workload that hits it is reported as not met.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import (
    cli_startup,
    control,
    dns_qps,
    many_scenarios,
    scale,
    start_stop,
    throughput,
    virtual_time,
    zones,
)
from bench.measure import ROOT
from bench.report import Figure, format_table, machine, write_json

__all__ = ["main"]

Bench = Callable[[bool], list[Figure]]

BENCHES: dict[str, Bench] = {
    "throughput": lambda quick: throughput.run(
        count=100 if quick else 1000, rounds=1 if quick else 3
    ),
    "virtual": lambda quick: virtual_time.run(
        outage_messages=50 if quick else 1000, runs=2 if quick else 5
    ),
    "startstop": lambda quick: start_stop.run(count=5 if quick else 30),
    "scale": lambda quick: scale.run(sizes=(100, 300, 1000) if quick else (1000, 3000, 10000)),
    "dns": lambda quick: dns_qps.run(count=300 if quick else 5000, rounds=1 if quick else 3),
    "scenarios": lambda quick: many_scenarios.run(),
    "startup": lambda quick: cli_startup.run(runs=2 if quick else 10),
    "zones": lambda quick: zones.run(
        sizes=(50, 200) if quick else (250, 1000), rounds=1 if quick else 3
    ),
    "control": lambda quick: control.run(rounds=5 if quick else 50),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated: {','.join(BENCHES)}")
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    parser.add_argument(
        "--json",
        type=Path,
        default=ROOT / "bench" / "results.json",
        help="where to write the figures (default: bench/results.json)",
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = list(BENCHES) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(
            f"python -m bench: unknown benchmark {', '.join(unknown)}; "
            f"choose from {', '.join(BENCHES)}",
            file=sys.stderr,
        )
        return 2
    meta = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "quick": args.quick,
        "benchmarks": names,
    }
    start = time.perf_counter()
    figures: list[Figure] = []
    for name in names:
        began = time.perf_counter()
        print(f"… {name}", file=sys.stderr, flush=True)
        figures += BENCHES[name](args.quick)
        print(f"  {name}: {time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)
    meta["duration_s"] = round(time.perf_counter() - start, 1)
    print(format_table(figures, markdown=args.markdown))
    print(f"\n{len(figures)} figures in {meta['duration_s']} s; written to {args.json}")
    write_json(args.json, figures, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
