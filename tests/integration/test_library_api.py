"""The library API as the package docstring shows it."""

from __future__ import annotations

import sandbox
from tests.helpers import ROOT


def test_every_public_name_is_importable() -> None:
    for name in sandbox.__all__:
        assert getattr(sandbox, name) is not None, name


def test_load_and_run_from_the_top_level() -> None:
    result = sandbox.run_scenario(sandbox.load_scenario(ROOT / "scenarios" / "primary-down.yaml"))
    assert result.ok
    (row,) = result.deliveries
    assert (row.status, row.host, row.attempts) == ("delivered", "mx2.example.test", 1)


def test_a_profile_from_the_top_level_changes_the_schedule() -> None:
    scenario = sandbox.load_scenario(ROOT / "scenarios" / "profiles-compared.yaml")
    haraka = sandbox.run_scenario(scenario, profile=sandbox.profile_for(scenario, "haraka"))
    assert haraka.profile == sandbox.PROFILES["haraka"]
    assert haraka.deliveries[0].at == 32704.0
