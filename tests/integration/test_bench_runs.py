"""The benchmarks still run: ``python -m bench`` at its smallest, and every world they build.

No figure is checked against anything here (timing belongs to ``make bench``, not to tests);
only that the command works, prints its table and writes the JSON it promises, so that the
benchmarks cannot rot while the sandbox changes under them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench import worlds, zones
from sandbox import load_scenario_text
from tests.helpers import ROOT


def test_the_benchmark_worlds_are_valid_scenarios() -> None:
    assert len(worlds.throughput(3).messages) == 3
    assert len(worlds.outage(3).messages) == 3
    assert len(worlds.ten_hosts().zones) == 5
    scale = worlds.scale(100)
    assert len(scale.messages) == 100
    assert len({m.recipients[0].partition("@")[2] for m in scale.messages}) == 10
    many = load_scenario_text(zones.scenario_text(300))
    assert len(many.zones) == 300
    addresses = {r.address for z in many.zones for r in z.phases.initial.records if r.address}
    assert len(addresses) == 600


def test_python_m_bench_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "startstop,dns", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "3 start+stop" in done.stdout and "5 DNS" in done.stdout
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["benchmarks"] == ["startstop", "dns"]
    figures = data["figures"]
    assert [f["bench"] for f in figures] == ["3 start+stop"] * 2 + ["5 DNS"] * 2
    for figure in figures:
        assert figure["value"] > 0 and figure["baseline"] > 0 and figure["ratio"] > 0


def test_an_unknown_benchmark_is_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "unknown benchmark nope" in done.stderr


def test_the_control_round_trip_bench_runs() -> None:
    from bench import control

    trip, put = control.run(rounds=3)
    assert trip.bench == put.bench == "8 control"
    assert trip.value > 0 and trip.baseline is not None and trip.baseline > 0
    assert len(trip.details["round"]) == 3
