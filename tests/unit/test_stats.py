"""sandbox.result.stats: chi-square values and p-values against tabulated ones, and the groups."""

from __future__ import annotations

import math

import pytest

from sandbox import Event, RecipientFinal, RouteChosen
from sandbox.result.stats import (
    balance_groups,
    chi_square,
    chi_square_p,
    regularized_gamma_q,
    verdict,
)

# Critical values of the chi-square distribution (any statistics table, e.g. NIST/SEMATECH
# e-Handbook §1.3.6.7.4): (statistic, degrees of freedom, upper-tail probability).
CRITICAL = [
    (3.841, 1, 0.05),
    (6.635, 1, 0.01),
    (10.828, 1, 0.001),
    (5.991, 2, 0.05),
    (9.210, 2, 0.01),
    (7.815, 3, 0.05),
    (11.345, 3, 0.01),
    (9.488, 4, 0.05),
    (18.307, 10, 0.05),
    (23.209, 10, 0.01),
    (67.505, 50, 0.05),
    (0.455, 1, 0.50),
    (1.386, 2, 0.50),
    (0.016, 1, 0.90),
]


@pytest.mark.parametrize(("statistic", "dof", "p"), CRITICAL)
def test_p_values_match_the_tables(statistic: float, dof: int, p: float) -> None:
    # The tables give three or four significant figures.
    assert chi_square_p(statistic, dof) == pytest.approx(p, rel=2e-3, abs=2e-4)


def test_two_degrees_of_freedom_have_a_closed_form() -> None:
    for x in (0.1, 1.0, 4.0, 20.0, 100.0):
        assert chi_square_p(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-12)


def test_one_degree_of_freedom_is_the_normal_tail() -> None:
    for z in (0.5, 1.0, 1.96, 3.0, 6.0):
        assert chi_square_p(z * z, 1) == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-9)


def test_gamma_q_edges() -> None:
    assert regularized_gamma_q(1.5, 0.0) == 1.0
    assert regularized_gamma_q(3.0, 1e-9) == pytest.approx(1.0)
    assert 0 < regularized_gamma_q(0.5, 500.0) < 1e-200
    with pytest.raises(ValueError):
        regularized_gamma_q(0, 1.0)
    with pytest.raises(ValueError):
        regularized_gamma_q(1.0, -1.0)


def test_chi_square_statistic_known_values() -> None:
    assert chi_square([106, 94], [100, 100]) == pytest.approx(0.72)
    assert chi_square([200, 0], [100, 100]) == pytest.approx(200.0)
    # A die rolled 60 times: observed 5, 8, 9, 8, 10, 20 against 10 each.
    assert chi_square([5, 8, 9, 8, 10, 20], [10] * 6) == pytest.approx(13.4)
    assert chi_square_p(13.4, 5) == pytest.approx(0.0199, abs=1e-4)
    with pytest.raises(ValueError):
        chi_square([1, 2], [1.0])
    with pytest.raises(ValueError):
        chi_square([1], [0.0])


def route(message: int, *hosts: tuple[int, str]) -> RouteChosen:
    return RouteChosen(
        t=0.0,
        message=message,
        attempt=1,
        domain="example.test",
        route="mx",
        hosts=tuple((p, h, ()) for p, h in hosts),
        why="",
    )


def delivered(message: int, host: str, recipient: str = "a@example.test") -> RecipientFinal:
    return RecipientFinal(
        t=0.0,
        message=message,
        recipient=recipient,
        status="delivered",
        host=host,
        address=None,
        dsn="2.0.0",
        reply="250",
        attempts=1,
    )


def test_groups_count_messages_per_equal_preference_host() -> None:
    events: list[Event] = []
    for n in range(1, 101):
        events.append(
            route(
                n, (10, "mx1.example.test"), (10, "mx2.example.test"), (20, "backup.example.test")
            )
        )
        events.append(delivered(n, "mx1.example.test" if n <= 60 else "mx2.example.test"))
    (group,) = balance_groups(events)
    assert (group.domain, group.preference, group.total, group.dof) == ("example.test", 10, 100, 1)
    assert [(h.host, h.accepted, h.share, h.expected) for h in group.hosts] == [
        ("mx1.example.test", 60, 0.6, 0.5),
        ("mx2.example.test", 40, 0.4, 0.5),
    ]
    assert group.statistic == pytest.approx(4.0)
    assert group.p_value == pytest.approx(0.0455, abs=1e-4)
    assert not group.biased and group.reliable
    assert "somewhat uneven" in verdict(group)


def test_a_message_with_two_recipients_counts_once() -> None:
    events: list[Event] = [
        route(1, (10, "a.example.test"), (10, "b.example.test")),
        delivered(1, "a.example.test", "x@example.test"),
        delivered(1, "a.example.test", "y@example.test"),
    ]
    (group,) = balance_groups(events)
    assert group.total == 1
    assert not group.reliable
    assert "too few messages" in verdict(group)


def test_all_to_one_host_is_biased() -> None:
    events: list[Event] = []
    for n in range(1, 201):
        events += [
            route(n, (10, "mx1.example.test"), (10, "mx2.example.test")),
            delivered(n, "mx1.example.test"),
        ]
    (group,) = balance_groups(events)
    assert group.statistic == pytest.approx(200.0)
    assert group.p_value is not None and group.p_value < 1e-40
    assert group.biased
    assert "not an even split" in verdict(group)


def test_no_group_without_equal_preferences_and_none_tested_without_mail() -> None:
    assert balance_groups([route(1, (10, "a.example.test"), (20, "b.example.test"))]) == ()
    (group,) = balance_groups([route(1, (10, "a.example.test"), (10, "b.example.test"))])
    assert group.total == 0 and group.p_value is None
    assert "nothing to test" in verdict(group)


def test_hosts_alone_at_a_preference_in_different_answers_are_no_group() -> None:
    """An MX that moved (moving-your-mx): old, then new, each alone at preference 10."""
    events: list[Event] = [
        route(1, (10, "old.example.test")),
        delivered(1, "old.example.test"),
        route(2, (10, "new.example.test")),
        delivered(2, "new.example.test"),
    ]
    assert balance_groups(events) == ()
