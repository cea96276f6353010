"""Loading and linting grow linearly with the number of recipients.

The loader once checked each recipient list for repeats by searching the list so far for
every address: 25,000 recipients took 3.8 s of CPU for `mxsandbox check`, 100,000 took 76 s.
Each expectation that names a recipient also gathered the recipients of every message again.

No wall-clock time is asserted here: the work is counted (``work.lines_run``) for N
recipients and for 4N, and linear code runs at most about four times as many lines. A search
of a list runs in C, where no line is counted: the comparisons of addresses are counted
instead.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sandbox import load_scenario_text
from sandbox.scenario import load
from sandbox.scenario.lint import lint_scenario
from tests.reliability.work import lines_run

SMALL = 250
LARGE = 4 * SMALL
# Linear growth is 4x; a quarter more is left for what grows with the length of the names
# and the size of dictionaries rather than with the count of recipients.
MOST = 4 * 1.25
PER_MESSAGE = 50
HEAD = (
    "name: many-recipients",
    "zones:",
    "  example.test: |",
    "    $TTL 3600",
    "    @    IN MX 10 mx1",
    "    mx1  IN A 192.0.2.10",
    "messages:",
)


def one_message(recipients: int) -> str:
    """One message to ``recipients`` addresses."""
    lines = [*HEAD, "  - from: bob@example.net", "    to:"]
    lines += [f"      - r{i}@example.test" for i in range(recipients)]
    return "\n".join(lines) + "\n"


def many_messages(recipients: int) -> str:
    """``recipients`` addresses in messages of PER_MESSAGE each, and an expectation about
    every fifth recipient, most of them about every message (``message: all``)."""
    lines = list(HEAD)
    for first in range(0, recipients, PER_MESSAGE):
        listed = ", ".join(f"r{i}@example.test" for i in range(first, first + PER_MESSAGE))
        lines.append(f"  - {{from: bob@example.net, to: [{listed}]}}")
    lines.append("expect:")
    for i in range(0, recipients, 5):
        message = "all" if i % 25 else i // PER_MESSAGE + 1
        lines.append(f"  - {{message: {message}, recipient: r{i}@example.test, status: delivered}}")
    return "\n".join(lines) + "\n"


def _load_and_lint(text: str) -> Callable[[], object]:
    def work() -> None:
        lint_scenario(load_scenario_text(text, "recipients.yaml"))

    return work


def test_one_long_list_of_recipients_loads_in_linear_time() -> None:
    small = lines_run(_load_and_lint(one_message(SMALL)))
    large = lines_run(_load_and_lint(one_message(LARGE)))
    assert large / small <= MOST, f"{SMALL} recipients: {small} lines; {LARGE}: {large}"


def test_recipients_and_expectations_about_them_load_in_linear_time() -> None:
    small = lines_run(_load_and_lint(many_messages(SMALL)))
    large = lines_run(_load_and_lint(many_messages(LARGE)))
    assert large / small <= MOST, f"{SMALL} recipients: {small} lines; {LARGE}: {large}"


class _Address(str):
    """An address that counts how often it is compared with another."""

    compared = 0

    def __eq__(self, other: object) -> bool:
        _Address.compared += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_repeats_are_found_without_comparing_every_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    mailbox = load._mailbox
    monkeypatch.setattr(load, "_mailbox", lambda *args: _Address(mailbox(*args)))
    _Address.compared = 0
    load_scenario_text(one_message(LARGE), "recipients.yaml")
    # Each pair once would be LARGE * (LARGE - 1) / 2 comparisons: half a million.
    assert _Address.compared <= LARGE, f"{_Address.compared} comparisons of addresses"


def test_a_repeated_recipient_is_still_found_at_its_line() -> None:
    text = one_message(LARGE).replace("r999@", "r3@")
    try:
        load_scenario_text(text, "recipients.yaml")
    except ValueError as error:
        assert str(error).startswith("recipients.yaml:1009: messages[0].to[999]: r3@example.test")
        assert "listed twice" in str(error)
    else:
        raise AssertionError("a recipient listed twice was accepted")


def test_an_unknown_recipient_names_a_few_of_a_thousand() -> None:
    text = one_message(LARGE) + "expect:\n  - {message: 1, recipient: r1000@example.test}\n"
    with pytest.raises(ValueError, match=r"use one of: r0@example.test, .* \(1,000 in all\)") as e:
        load_scenario_text(text, "recipients.yaml")
    assert len(str(e.value)) < 400
