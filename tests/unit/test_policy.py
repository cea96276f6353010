"""Each profile's retry schedule, to the second, as pure arithmetic (no clock, no sockets)."""

from __future__ import annotations

import dataclasses
from itertools import pairwise

import pytest

from sandbox import PROFILES, Profile
from sandbox.core.policy import RetryHistory, next_retry

HOUR, DAY = 3600, 86400


def schedule(profile: Profile, fail_until: float = float("inf")) -> list[float]:
    """Try times for a message arriving at 0 whose every try fails (instantly) until
    ``fail_until``; the last entry is the try that succeeds or the failure that gives up."""
    times = [0.0]
    history = RetryHistory(0.0, 0.0, 1)
    while times[-1] < fail_until:
        retry = next_retry(profile, history, times[-1])
        if retry is None:
            break
        times.append(retry.at)
        history = RetryHistory(0.0, 0.0, history.failures + 1, retry)
    return times


def test_postfix_backoff_is_the_age_clamped_and_aligned_to_queue_scans() -> None:
    assert schedule(PROFILES["postfix"], 7200) == [0, 300, 600, 1200, 2400, 4800, 9000]


def test_postfix_gaps_stay_within_the_clamp_plus_one_scan() -> None:
    times = schedule(PROFILES["postfix"], 3 * DAY)
    gaps = [b - a for a, b in pairwise(times)]
    assert max(gaps) == 4200  # 4000 s, rounded up to the next 300 s queue scan
    assert min(gaps) == 300


def test_postfix_gives_up_at_the_first_failure_after_five_days() -> None:
    times = schedule(PROFILES["postfix"])
    assert times[-1] >= 5 * DAY > times[-2]
    assert len(times) == 108


def test_exim_rules_from_the_first_failure() -> None:
    times = schedule(dataclasses.replace(PROFILES["exim"], queue_run_delay=0))
    # F,2h,15m
    assert times[:9] == [0, 900, 1800, 2700, 3600, 4500, 5400, 6300, 7200]
    # G,16h,1h,1.5: 1h, 1.5h, 2.25h, 3.375h, 5.0625h, then the rule in force until 16h
    assert times[9:14] == [10800, 16200, 24300, 36450, 54675]
    assert times[14] == 54675 + 27337.5
    # F,4d,6h until four days after the first failure; the next failure bounces
    assert all(b - a == 6 * HOUR for a, b in pairwise(times[15:]))
    assert times[-2] < 4 * DAY <= times[-1]


def test_exim_retries_only_at_its_queue_runs_every_thirty_minutes() -> None:
    # Debian's QUEUEINTERVAL: the 15-minute rule is acted on at the next 30-minute run.
    times = schedule(PROFILES["exim"], 3 * HOUR)
    assert times == [0, 1800, 3600, 5400, 7200, 10800]
    assert all(t % 1800 == 0 for t in schedule(PROFILES["exim"]))


def test_haraka_doubles_from_64_seconds_and_gives_up_at_the_13th_failure() -> None:
    times = schedule(PROFILES["haraka"])
    gaps = [b - a for a, b in pairwise(times)]
    assert gaps == [2.0 ** (n + 5) for n in range(1, 13)]
    assert len(times) == 13
    assert times[-1] == 2**18 - 64


def test_rfc5321_waits_thirty_minutes_and_gives_up_after_five_days() -> None:
    times = schedule(PROFILES["rfc5321"])
    assert {b - a for a, b in pairwise(times)} == {1800}
    assert times[-1] == 5 * DAY


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_a_host_down_for_three_days_is_reached_at_the_first_try_after(name: str) -> None:
    times = schedule(PROFILES[name], 3 * DAY)
    print(f"{name}: {len(times)} tries, the last at {times[-1]:.0f} s: {times}")
    assert times[-2] < 3 * DAY <= times[-1]


def test_a_message_arriving_between_scans_waits_for_the_next_scan() -> None:
    assert next_retry(Profile(), RetryHistory(7.0, 7.0, 1), 7.0).at == 600  # type: ignore[union-attr]


def test_no_queue_scan_means_the_exact_backoff() -> None:
    retry = next_retry(Profile(queue_run_delay=0), RetryHistory(7.0, 7.0, 1), 7.0)
    assert retry is not None and retry.at == 307
