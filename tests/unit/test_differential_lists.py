"""The differential suite's list of excused differences keeps its rules: at most two known
differences per MTA, each with a one-line reason, and nothing pending."""

from __future__ import annotations

from collections import defaultdict

from tests.differential.pending import KNOWN, PENDING
from tests.differential.suite import MTAS


def test_at_most_two_known_differences_per_mta_each_with_one_reason() -> None:
    differences: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for (mta, case, _field), reason in KNOWN.items():
        assert mta in MTAS
        differences[mta][case].add(reason)
    for mta, cases in differences.items():
        assert len(cases) <= 2, f"{mta}: {sorted(cases)}"
        for case, reasons in cases.items():
            (reason,) = reasons  # one reason for the fields of one difference
            assert "\n" not in reason and 20 < len(reason) < 240, (mta, case)


def test_nothing_is_pending() -> None:
    assert PENDING == {}
