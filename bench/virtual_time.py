"""2. Virtual time: days of retries in a fraction of a second of wall time.

- ``scenarios/give-up-after-5-days.yaml``: mx1 refuses, mx2's connects time out (30 s each),
  the sender retries for five days and bounces. Median of several runs, in this process.
- 1,000 messages queued while both MX hosts refuse for three days, then accept: the queue
  manager's work over 3 days (retries, suspended destination, the drain). In its own process,
  with a time limit so that the benchmark stays bounded whatever the sender does.

Both goals are absolute wall times; the ratio printed is virtual seconds per wall second.
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
    return figures
