"""Equal-preference balancing, measured: a fair sender passes, a biased one is caught.

The biased sender is our own sender with its equal-preference shuffle turned off (the
profile's ``shuffle_equal: false``): always the first of the group, in name order. Nothing is
mocked; both runs go through real DNS and real SMTP on loopback.
"""

from __future__ import annotations

from typing import Any

from sandbox import RunResult, run_scenario, scenario_from_mapping
from sandbox.result.stats import balance_groups

ZONE = """\
$TTL 3600
@     IN MX 10 mx1
@     IN MX 10 mx2
mx1   IN A  192.0.2.10
mx2   IN A  192.0.2.11
"""


def run(count: int, **sender: Any) -> RunResult:
    return run_scenario(
        scenario_from_mapping(
            {
                "name": "balance",
                "seed": 42,
                "zones": {"example.test": ZONE},
                # Plain text, so that sessions are kept for the next message (Postfix keeps
                # no TLS session): the statistics count the sessions that chose a host.
                "hosts": {
                    "mx1.example.test": {"tls": "none"},
                    "mx2.example.test": {"tls": "none"},
                },
                "messages": [
                    {"from": "bob@example.net", "to": "alice@example.test", "count": count}
                ],
                "sender": sender or None,
                "expect": [
                    {"host": "mx1.example.test", "share": 0.5, "tolerance": 0.1},
                    {"host": "mx2.example.test", "share": 0.5, "tolerance": 0.1},
                ],
            }
        )
    )


def test_a_fair_sender_splits_evenly_and_the_share_expectations_hold() -> None:
    result = run(200)
    (group,) = balance_groups(result.events)
    assert group.total == 200
    assert group.p_value is not None and group.p_value > 0.05
    assert [e.ok for e in result.expectations] == [True, True]
    assert "chi-square" in result.expectations[0].detail


def test_an_always_first_sender_is_caught_by_the_chi_square_test() -> None:
    result = run(200, shuffle_equal=False)
    (group,) = balance_groups(result.events)
    assert [(h.host, h.accepted) for h in group.hosts] == [
        ("mx1.example.test", 200),
        ("mx2.example.test", 0),
    ]
    # Twenty sessions chose mx1, and carried the 200 messages: the test counts the choices.
    assert [h.chosen for h in group.hosts] == [20, 0]
    assert group.p_value is not None and group.p_value < 1e-5
    assert group.biased
    assert [e.ok for e in result.expectations] == [False, False]
    assert "expected a share of 0.5 ± 0.1" in result.expectations[0].detail


def test_a_bias_inside_the_tolerance_still_fails_an_even_share_expectation() -> None:
    # mx1 goes down at 0:00:10, so the 70 messages queued at 0:00:20 all fail over to mx2:
    # mx1 ends with about a third of the mail. That passes a loose tolerance of 0.2, but
    # chance does not explain such a split of 200 messages, and the expectation says so.
    data: dict[str, Any] = {
        "name": "skewed",
        "seed": 1,
        "zones": {"example.test": ZONE},
        "hosts": {"mx1.example.test": [{"until": 10, "do": "accept"}, {"do": "refuse"}]},
        "messages": [
            {"from": "bob@example.net", "to": "alice@example.test", "count": 130},
            {"from": "bob@example.net", "to": "alice@example.test", "count": 70, "at": 20},
        ],
        "expect": [{"host": "mx1.example.test", "share": 0.5, "tolerance": 0.2}],
        # Every message draws its host (no session carries another): 200 draws to test.
        "sender": {"reuse_sessions": False},
    }
    result = run_scenario(scenario_from_mapping(data))
    (group,) = balance_groups(result.events)
    mx1 = group.share_of("mx1.example.test")
    assert mx1 is not None and abs(mx1.share - 0.5) <= 0.2
    assert group.total == 200 and group.biased
    (expectation,) = result.expectations
    assert not expectation.ok
    assert "chance does not explain it" in expectation.detail
