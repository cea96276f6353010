"""Zones are parsed once, and loading and linting grow linearly with the number of zones.

The loader parses each phase of each zone into a ``Zone``; the lint, the world (the DNS
server's zones) and the report read those objects and never parse again. The lint once
parsed every zone again for every zone it linted, and looked names up by trying every zone:
the cost grew with the square of the number of zones (250 zones took seconds, 1,000 minutes).

No wall-clock time is asserted here. The work is counted instead: the lines of the sandbox's
own code that run (``sys.settrace``), for a scenario of N zones and of 4N zones. Linear code
runs at most about four times as many lines (a little less: some work is per scenario); the
quadratic lint ran more than ten times as many.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bench.zones import scenario_text
from sandbox import load_scenario_text
from sandbox.dns.zone import Zone
from sandbox.output.report.data import build_flow
from sandbox.run import run_scenario
from sandbox.scenario.lint import lint_scenario
from tests.reliability.work import lines_run

SMALL = 25
LARGE = 4 * SMALL
# Linear growth is 4x; a quarter more is left for what grows with the size of names and
# dictionaries rather than with the count of zones.
MOST = 4 * 1.25

PHASED = """\
name: phased-zones
zones:
  example.test:
    - until: 1h
      zone: |
        $TTL 300
        @    IN MX 10 mx1
        mx1  IN A 192.0.2.10
    - zone: |
        $TTL 300
        @    IN MX 10 mx1
        @    IN MX 20 mx2.example.net.
        mx1  IN A 192.0.2.10
  example.net: |
    mx2  IN A 192.0.2.20
  example.org: |
    @    IN MX 10 mx1.example.test
hosts:
  mx1.example.test: [{until: 2h, do: refuse}, {do: accept}]
messages:
  - {from: bob@example.org, to: alice@example.test}
"""


def test_each_zone_phase_is_parsed_once_for_load_lint_run_and_report(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[str] = []
    post_init = Zone.__post_init__

    def counted(zone: Zone) -> None:
        built.append(zone.apex)
        post_init(zone)

    monkeypatch.setattr(Zone, "__post_init__", counted)
    scenario = load_scenario_text(PHASED, "phased.yaml")
    assert sorted(built) == ["example.net", "example.org", "example.test", "example.test"]
    findings = lint_scenario(scenario)
    assert {f.rule for f in findings} >= {"mx-missing-dot", "no-ttl"}
    result = run_scenario(scenario)
    assert [d.status for d in result.deliveries] == ["delivered"]
    assert build_flow(result).mx_rows
    assert len(built) == 4  # nothing after the loader parsed a zone again


def _load_and_lint(count: int) -> Callable[[], object]:
    # Every zone has findings, so that the lint's look-ups and its mends (a free address,
    # the name that was meant) all run once per zone.
    text = scenario_text(count, mistakes=True)

    def work() -> None:
        findings = lint_scenario(load_scenario_text(text, "zones.yaml"))
        assert len(findings) == 2 * count

    return work


def test_load_and_lint_grow_linearly_with_the_number_of_zones() -> None:
    small = lines_run(_load_and_lint(SMALL))
    large = lines_run(_load_and_lint(LARGE))
    assert large / small <= MOST, f"{SMALL} zones: {small} lines; {LARGE} zones: {large}"


def test_lint_alone_grows_linearly_with_the_number_of_zones() -> None:
    small_scenario = load_scenario_text(scenario_text(SMALL, mistakes=True))
    large_scenario = load_scenario_text(scenario_text(LARGE, mistakes=True))
    small = lines_run(lambda: lint_scenario(small_scenario))
    large = lines_run(lambda: lint_scenario(large_scenario))
    assert large / small <= MOST, f"{SMALL} zones: {small} lines; {LARGE} zones: {large}"
