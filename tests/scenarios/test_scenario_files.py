"""Every file in scenarios/ runs through real DNS and real SMTP, and its expectations hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandbox import load_scenario, profile_for, run_scenario
from tests.helpers import SCENARIOS


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_expectations_hold(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.expect, f"{path.name} has no expectations: it would teach nothing testable"
    result = run_scenario(scenario)
    failed = [f"{e.text}: {e.detail}" for e in result.expectations if not e.ok]
    assert not failed, "\n".join(failed)
    settled = {d.status for d in result.deliveries}
    assert settled <= {"delivered", "bounced", "deferred"}
    assert len(result.deliveries) == sum(len(m.recipients) for m in scenario.messages)


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_same_seed_gives_identical_json(path: Path) -> None:
    scenario = load_scenario(path)
    first = json.dumps(run_scenario(scenario).to_json(), sort_keys=True)
    second = json.dumps(run_scenario(scenario).to_json(), sort_keys=True)
    assert first == second


def test_the_scenario_folder_has_the_teaching_set() -> None:
    names = {p.stem for p in SCENARIOS}
    assert {
        "primary-down",
        "backup-while-primary-tempfails",
        "all-down-then-recovered",
        "equal-preference-balancing",
        "null-mx",
        "implicit-mx",
        "mx-points-at-cname",
        "rejected-recipient",
        "give-up-after-5-days",
        # sender fidelity
        "moving-your-mx",
        "duplicate-after-lost-dot",
        "client-is-backup-mx",
        "profiles-compared",
        "greylisting",
    } <= names


@pytest.mark.parametrize("profile", ["postfix", "exim", "haraka", "rfc5321"])
def test_profiles_compared_holds_for_every_profile(profile: str) -> None:
    path = Path(__file__).resolve().parents[2] / "scenarios" / "profiles-compared.yaml"
    scenario = load_scenario(path)
    result = run_scenario(scenario, profile=profile_for(scenario, profile))
    assert result.ok, [e.detail for e in result.expectations if not e.ok]
