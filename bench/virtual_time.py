"""2. Virtual time: days of retries in a fraction of a second of wall time.

- ``scenarios/give-up-after-5-days.yaml``: mx1 refuses, mx2's connects time out (30 s each),
  the sender retries for five days and bounces. Median of several runs, in this process.
- 1,000 messages queued while both MX hosts refuse for three days, then accept: the queue
  manager's work over 3 days (retries, suspended destination, the drain). In its own process,
  with a time limit so that the benchmark stays bounded whatever the sender does.

- The same 1,000 messages while the primary refuses and the backup, the last MX, answers
  ``421`` at the greeting for three days; beside it the same run with the backup refusing.
  A 421 greeting is a handshake failure for Postfix (negative feedback, the destination can
  die): the goal is at most twice the wall time of the refusing run, with a similar number
  of connections. Before the queue moved into the core it took 45 s and 133,020 connections,
  against 3.3 s and 3,660 for the refusing run.

The first two goals are absolute wall times; the ratio printed is virtual seconds per wall
second. The third is the ratio of the two runs' wall times.
"""

from __future__ import annotations

from bench.measure import ROOT, ChildFailed, median, run_child, timed
from bench.report import Figure
from sandbox import load_scenario, run_scenario

__all__ = ["run"]

GIVE_UP = ROOT / "scenarios" / "give-up-after-5-days.yaml"


def run(*, outage_messages: int = 1000, runs: int = 5, limit: float = 120.0) -> list[Figure]:
    scenario = load_scenario(GIVE_UP)
    run_scenario(scenario)  # warm-up
    walls, virtual = [], 0.0
    for _ in range(runs):
        wall, result = timed(lambda: run_scenario(scenario))
        walls.append(wall)
        virtual = result.ended_at
        if not result.ok:
            raise RuntimeError("give-up-after-5-days: its expectations failed")
    wall = median(walls)
    figures = [
        Figure(
            "2 virtual time",
            "give-up-after-5-days (5 d of retries, then a bounce)",
            wall,
            "s",
            None,
            "",
            virtual / wall,
            "virtual/wall",
            "< 0.5 s",
            wall < 0.5,
            {"wall_s": walls, "virtual_s": virtual},
        )
    ]
    workload = f"{outage_messages:,} messages, both MX down 3 d"
    try:
        child = run_child(["outage", str(outage_messages)], timeout=limit)
    except ChildFailed as error:
        figures.append(
            Figure(
                "2 virtual time",
                workload,
                limit,
                "s",
                None,
                "",
                None,
                "",
                "< 5 s",
                False,
                {"error": str(error), "capped_at_s": limit},
            )
        )
        return figures
    wall = child["wall_s"]
    figures.append(
        Figure(
            "2 virtual time",
            workload,
            wall,
            "s",
            None,
            "",
            child["virtual_s"] / wall,
            "virtual/wall",
            "< 5 s",
            wall < 5.0,
            child,
        )
    )
    figures.append(_greeting_421(outage_messages, limit))
    return figures


def _greeting_421(count: int, limit: float) -> Figure:
    workload = f"{count:,} messages, backup MX answers 421 for 3 d"
    try:
        refused = run_child(["outage-refuse", str(count)], timeout=limit)
        greeted = run_child(["outage-421", str(count)], timeout=limit)
    except ChildFailed as error:
        return Figure(
            "2 virtual time", workload, limit, "s", None, "", None, "", "at most 2x refuse", False,
            {"error": str(error), "capped_at_s": limit},
        )  # fmt: skip
    ratio = greeted["wall_s"] / refused["wall_s"]
    return Figure(
        "2 virtual time",
        f"{workload} ({greeted['connections']:,} connections; "
        f"refusing: {refused['connections']:,})",
        greeted["wall_s"],
        "s",
        refused["wall_s"],
        "backup refuses instead",
        ratio,
        "x the refusing run",
        "at most 2x refuse",
        ratio <= 2.0,
        {"421": greeted, "refuse": refused},
    )
