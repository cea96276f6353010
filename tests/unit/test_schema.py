"""`mxsandbox schema`: a JSON Schema of the scenario format that editors can use. Checked
with the jsonschema library, a validator of its own, against every shipped scenario."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from sandbox.cli import main
from sandbox.scenario.schema import scenario_schema
from tests.helpers import ROOT, SCENARIOS

SCHEMA = scenario_schema()
VALIDATOR = jsonschema.Draft202012Validator(
    SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)


def errors_of(data: object) -> list[str]:
    return [error.message for error in VALIDATOR.iter_errors(data)]


def test_it_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_every_shipped_scenario_validates(path: Path) -> None:
    assert errors_of(yaml.safe_load(path.read_text(encoding="utf-8"))) == []


MINIMAL: dict[str, Any] = {"name": "x", "zones": {"example.test": "@ IN MX 10 mx1\n"}}


@pytest.mark.parametrize(
    "mistake",
    [
        {"hosts": {"mx1.example.test": "explode"}},
        {"hosts": {"mx1.example.test": {"greting": "421 bye"}}},
        {"hosts": {"mx1.example.test": [{"until": "1h", "do": "refuse", "then": "x"}]}},
        {"messages": [{"from": "bob@example.net", "to": "alice@example.test", "cc": "x"}]},
        {"messages": [{"from": "bob@example.net", "to": "alice@example.test", "count": 0}]},
        {"sender": {"profile": "sendmail"}},
        {"sender": {"connect_timeout": "soon"}},
        {"expect": [{"message": 1, "status": "lost"}]},
        {"expect": [{"host": "mx1.example.test", "share": 2}]},
        {"until": "tomorrow"},
        {"hosts": {"mx1.example.test": {"greeting": "221 bye"}}},
        {"hosts": {"mx1.example.test": {"data": 250}}},
        {"zone": {}},
        {"hosts": {"mx1.example.test": {"greeting": "220 hi\r\n250 ok"}}},
        {"hosts": {"mx1.example.test": {"rcpt": "550 " + "x" * 600}}},
        {"title": "two\nlines"},
        {"messages": [{"from": "bob@example.net", "to": ["a@example.test"] * 2}]},
        {"messages": [{"from": "bob@example.net", "to": "a,b@example.test"}]},
        {"sender": {"helo_name": "mta\r\nRSET"}},
        {"sender": {"null_mx_dsn": "4.1.10"}},
        {"name": "n" * 101},
    ],
    ids=lambda m: next(iter(m)),
)
def test_mistakes_the_loader_rejects_are_schema_errors_too(mistake: dict[str, Any]) -> None:
    assert errors_of({**MINIMAL, **mistake})


def test_replies_each_stage_can_give_are_valid() -> None:
    behaviour = {"greeting": "220 hi", "rcpt": 251, "data": "354 go", "message": "452 4.3.1"}
    assert errors_of({**MINIMAL, "hosts": {"mx1.example.test": behaviour}}) == []


def test_the_command_prints_the_schema_and_docs_keeps_a_copy(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == SCHEMA
    # The copy an editor can point at; `mxsandbox schema > docs/scenario.schema.json` remakes it.
    kept = json.loads((ROOT / "docs" / "scenario.schema.json").read_text(encoding="utf-8"))
    assert kept == SCHEMA
