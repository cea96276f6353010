"""Every scenario's ``--json`` under every profile, byte for byte as recorded in golden/.

The JSON object is a contract that other people's programs parse, so a change to it must be
deliberate: when a change of behaviour is meant (and written in the README's changelog),
``scripts/update-golden`` records the new output, and the diff shows exactly what changed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandbox import PROFILES, load_scenario, profile_for, run_scenario
from tests.helpers import SCENARIOS

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = [(path, profile) for path in SCENARIOS for profile in sorted(PROFILES)]


def json_output(path: Path, profile: str) -> str:
    """What ``mxsandbox run PATH --json --profile PROFILE`` prints."""
    scenario = load_scenario(path)
    result = run_scenario(scenario, profile=profile_for(scenario, profile))
    return json.dumps(result.to_json(), indent=2) + "\n"


@pytest.mark.parametrize(("path", "profile"), CASES, ids=lambda c: getattr(c, "stem", c))
def test_json_is_byte_identical_to_the_golden_file(path: Path, profile: str) -> None:
    golden = GOLDEN / f"{path.stem}.{profile}.json"
    assert golden.exists(), f"no golden file for {path.stem} ({profile}): run scripts/update-golden"
    assert json_output(path, profile) == golden.read_text(encoding="utf-8")


def test_every_golden_file_belongs_to_a_scenario() -> None:
    expected = {f"{path.stem}.{profile}.json" for path, profile in CASES}
    assert {p.name for p in GOLDEN.glob("*.json")} == expected
