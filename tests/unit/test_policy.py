"""Postfix's retry arithmetic, to the second."""

from __future__ import annotations

from sandbox.core.policy import Profile, next_retry, should_give_up


def schedule(profile: Profile, fail_until: float) -> list[float]:
    """Attempt times for a message arriving at 0 that fails until ``fail_until``."""
    times = [0.0]
    while times[-1] < fail_until:
        times.append(next_retry(profile, 0.0, times[-1]))
    return times


def test_postfix_backoff_is_the_age_clamped_and_aligned_to_queue_scans() -> None:
    assert schedule(Profile(), 7200) == [0, 300, 600, 1200, 2400, 4800, 9000]


def test_backoff_never_exceeds_the_maximum() -> None:
    times = schedule(Profile(), 3 * 86400)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps) <= 4000 + 300
    assert min(gaps) >= 300


def test_a_message_arriving_between_scans_waits_for_the_next_scan() -> None:
    assert next_retry(Profile(), 7.0, 7.0) == 600


def test_no_queue_scan_means_the_exact_backoff() -> None:
    assert next_retry(Profile(queue_run_delay=0), 7.0, 7.0) == 307


def test_give_up_at_the_maximal_lifetime() -> None:
    assert not should_give_up(Profile(), 10, 10 + 5 * 86400 - 1)
    assert should_give_up(Profile(), 10, 10 + 5 * 86400)
