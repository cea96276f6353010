"""Each profile against a host that is down for three days, through real sockets: the tries
the host saw match the profile's rules to the second."""

from __future__ import annotations

import pytest

from sandbox import (
    PROFILES,
    Connected,
    ConnectFailed,
    profile_for,
    run_scenario,
    scenario_from_mapping,
)
from sandbox.output.narrative import render_narrative
from tests.unit.test_policy import schedule

DAY = 86400

DOWN_THREE_DAYS = {
    "name": "down-three-days",
    "zones": {"example.test": "@ IN MX 10 mx1\nmx1 IN A 192.0.2.10\n"},
    "hosts": {"mx1.example.test": [{"until": "3d", "do": "refuse"}, {"do": "accept"}]},
    "messages": [{"from": "bob@example.net", "to": "alice@example.test"}],
}


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_retry_times_for_a_host_down_three_days(name: str) -> None:
    scenario = scenario_from_mapping(DOWN_THREE_DAYS)
    result = run_scenario(scenario, profile=profile_for(scenario, name))
    tries = [e.t for e in result.events if isinstance(e, Connected | ConnectFailed)]
    print(f"{name}: {len(tries)} tries at {tries}")
    assert tries == schedule(PROFILES[name], 3 * DAY)
    (row,) = result.deliveries
    assert (row.status, row.attempts, row.at) == ("delivered", len(tries), tries[-1])


def test_haraka_gives_up_after_13_failures() -> None:
    forever = dict(DOWN_THREE_DAYS, hosts={"mx1.example.test": "refuse"})
    scenario = scenario_from_mapping(forever)
    result = run_scenario(scenario, profile=profile_for(scenario, "haraka"))
    (row,) = result.deliveries
    # Every MX refused: Haraka defers with "Tried all MXs" (5.1.2) and bounces with it.
    assert (row.status, row.attempts, row.at, row.dsn) == ("bounced", 13, 262080.0, "5.1.2")
    assert row.reply.startswith("Tried all MXs")


def test_a_4xx_that_ends_the_attempt_is_told_before_the_deferral() -> None:
    """Haraka's "defer" verdict (no next host) has no retry time of its own: the story tells
    it as a step, then the deferral with its retry time."""
    busy = dict(DOWN_THREE_DAYS, hosts={"mx1.example.test": {"greeting": "421 4.3.2 Busy"}})
    scenario = scenario_from_mapping(dict(busy, until="1m"))
    story = render_narrative(run_scenario(scenario, profile=profile_for(scenario, "haraka")))
    ends = "⇒ a 4xx reply at greeting ends this attempt: no next host for this sender"
    assert f"{ends}\n" in story
    assert (
        "⇒ defer: 4.3.2 host mx1.example.test[192.0.2.10] refused to talk to me: 421 4.3.2 Busy"
        in story
    )
