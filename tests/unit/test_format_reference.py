"""docs/scenario-format.md is the reference of the scenario format: it names every key the
loader accepts, with a default and an example, under the heading of the mapping it goes in.

The keys come from the loader's own lists (``scenario.load.ACCEPTED_KEYS``, which reads
``core.policy.FIELD_KINDS`` for the sender), never from a copy here: a key added to the
loader and not to the document fails this test.
"""

from __future__ import annotations

import re

import pytest

from sandbox.core.durations import format_duration
from sandbox.core.policy import FIELD_KINDS, PROFILES
from sandbox.scenario.load import ACCEPTED_KEYS, CONNECTIONS, DNS_KINDS, STATUSES
from sandbox.scenario.model import STAGES
from tests.helpers import ROOT

DOCUMENT = (ROOT / "docs" / "scenario-format.md").read_text(encoding="utf-8")
_ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|([^|]*)\|([^|]*)\|", re.MULTILINE)


def section(heading: str) -> str:
    """The text under ``## heading``, up to the next heading of that level."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", DOCUMENT, re.S | re.M)
    assert match is not None, f"docs/scenario-format.md has no section '## {heading}'"
    return match.group(1)


def documented(heading: str) -> dict[str, tuple[str, str]]:
    """key -> (default, example), from the table rows of a section."""
    return {
        key: (default.strip(), example.strip())
        for key, default, example in _ROW.findall(section(heading))
    }


@pytest.mark.parametrize("heading", ACCEPTED_KEYS)
def test_every_key_the_loader_accepts_is_documented_with_a_default_and_an_example(
    heading: str,
) -> None:
    rows = documented(heading)
    missing = [key for key in ACCEPTED_KEYS[heading] if key not in rows]
    assert not missing, f"## {heading} leaves out {missing}"
    for key in ACCEPTED_KEYS[heading]:
        default, example = rows[key]
        assert default, f"{key}: no default"
        assert f"{key}:" in example or key in example, f"{key}: the example does not use it"


def test_the_documented_sender_defaults_are_the_postfix_profiles() -> None:
    rows = documented("The sender")
    postfix = PROFILES["postfix"]
    for key, kind in FIELD_KINDS.items():
        value = getattr(postfix, key)
        if value is None or value == "" or value == frozenset():
            expected = "none"
        elif kind == "duration":
            expected = f"`{format_duration(value)}`"
        elif kind == "count" and value == 0:
            expected = "no limit"
        elif kind == "flag":
            expected = f"`{str(value).lower()}`"
        else:
            expected = f"`{value}`"
        assert rows[key][0] == expected, f"{key}: documented {rows[key][0]}, is {expected}"


@pytest.mark.parametrize(
    ("heading", "words"),
    [
        ("Host behaviour", (*CONNECTIONS, *STAGES)),
        ("DNS behaviour", DNS_KINDS),
        ("Expectations about deliveries", STATUSES),
        ("The sender", tuple(PROFILES)),
    ],
)
def test_every_word_a_value_may_be_is_documented(heading: str, words: tuple[str, ...]) -> None:
    text = section(heading)
    assert [word for word in words if f"`{word}`" not in text] == []


def test_the_readme_points_at_the_reference() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/scenario-format.md" in readme
    assert "the team's design notes" not in readme
