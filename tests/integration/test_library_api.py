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


def test_the_public_api_covers_the_errors_and_the_events() -> None:
    import sandbox.errors
    import sandbox.events

    assert set(sandbox.errors.__all__) - {"bind_error"} <= set(sandbox.__all__)
    assert set(sandbox.events.__all__) <= set(sandbox.__all__)
    assert issubclass(sandbox.ServerError, sandbox.SandboxError)
    assert issubclass(sandbox.AddressInUse, OSError)
    assert issubclass(sandbox.ScenarioError, ValueError)


def test_old_import_paths_keep_working() -> None:
    from importlib.metadata import entry_points

    from sandbox.harness import ServedScenario

    assert ServedScenario is sandbox.ServedScenario
    (plugin,) = [e for e in entry_points(group="pytest11") if e.name == "mx_sandbox"]
    assert hasattr(plugin.load(), "mx_sandbox")


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        sandbox.no_such_thing  # noqa: B018 - the look-up is the test
    except AttributeError as error:
        assert "no_such_thing" in str(error)
    else:
        raise AssertionError("sandbox.no_such_thing did not raise")


def test_the_lazy_table_and_all_name_the_same_things() -> None:
    assert sorted(sandbox.__all__) == sorted(sandbox._MODULE_OF)
