"""The shipped scenarios: found from any directory, by name, whether installed or not."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.scenario.shipped import find_scenario, shipped_folder, shipped_scenarios
from tests.helpers import ROOT, SCENARIOS


def test_every_scenario_of_the_repository_is_shipped() -> None:
    assert [p.name for p in shipped_scenarios()] == [p.name for p in SCENARIOS]
    # An editable install or a checkout reads the source tree's folder itself.
    assert shipped_folder().resolve() == (ROOT / "scenarios").resolve()


@pytest.mark.parametrize("name", ["null-mx", "null-mx.yaml"])
def test_a_bare_name_finds_the_shipped_scenario_from_anywhere(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_scenario(name) == shipped_folder() / "null-mx.yaml"


def test_a_folder_of_ones_own_comes_before_the_shipped_scenarios(tmp_path: Path) -> None:
    own = tmp_path / "scenarios"
    own.mkdir()
    (own / "null-mx.yml").write_text("name: mine\n")
    assert find_scenario("null-mx", folders=[own]) == own / "null-mx.yml"


def test_a_path_or_an_unknown_name_stays_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "null-mx").write_text("name: a file without a suffix\n")
    assert find_scenario("null-mx") == Path("null-mx")  # a file that exists is itself
    assert find_scenario("no-such-scenario") == Path("no-such-scenario")
    assert find_scenario("sub/null-mx") == Path("sub/null-mx")  # a path is not a name
