"""``python -m tests.differential [--mta NAME]… [--case NAME]… [--jobs N] [--out DIR]``

Plays the cases against the real MTAs (root, network namespaces, and what
scripts/setup-differential installs), prints one agreement table per MTA, and writes to DIR
(default out/differential): ``MTA-agreement.md``, ``MTA-results.json`` and, per case, the
harness's record, the MTA's log, the serve and run copies and the run's trace. The MTAs run
side by side, each with up to ``--jobs`` cases at once. Exit status 1 if any case has a
disagreement not excused in pending.py, or the harness failed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from tests.differential.suite import JOBS, MTAS, failures, run_suite, table

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.differential")
    parser.add_argument("--mta", action="append", choices=sorted(MTAS), help="default: all")
    parser.add_argument("--case", action="append", help="default: every case file")
    parser.add_argument(
        "--pair", action="append", metavar="MTA:CASE", help="only these (MTA, case) pairs"
    )
    parser.add_argument("--jobs", type=int, default=JOBS, help="cases of one MTA at once")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "differential")
    args = parser.parse_args(argv)
    pairs = [tuple(p.split(":", 1)) for p in args.pair or []]
    mtas = args.mta or sorted({m for m, _ in pairs}) or list(MTAS)
    missing = {m: MTAS[m].unavailable() for m in mtas}
    for mta, why in missing.items():
        if why:
            print(f"{mta}: skipped: {why}", file=sys.stderr)
    mtas = [m for m in mtas if not missing[m]]

    async def everything() -> dict[str, tuple[list, float]]:
        async def one(mta: str) -> tuple[str, list, float]:
            began = time.monotonic()
            names = [c for m, c in pairs if m == mta] if pairs else args.case
            results = await run_suite(mta, names, args.jobs, args.out)
            return mta, results, time.monotonic() - began

        done = await asyncio.gather(*(one(m) for m in mtas))
        return {mta: (results, wall) for mta, results, wall in done}

    try:
        outcome = asyncio.run(everything())
    finally:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "runner.done").write_text("")  # whoever waits on results stops waiting
    failed = False
    for mta, (results, wall) in outcome.items():
        print(table(mta, results, wall))
        failed = failed or any(failures(r) for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
