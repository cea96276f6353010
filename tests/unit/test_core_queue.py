"""The queue manager, sans I/O: hand-made attempt reports, no event loop, no sockets."""

from __future__ import annotations

import dataclasses

import pytest

from sandbox.core.delivery import AttemptReport, HostFailure, RecipientState
from sandbox.core.mx import NoRoute
from sandbox.core.policy import PROFILES, Profile
from sandbox.core.queue import (
    Bounce,
    Deferred,
    Enqueued,
    Envelope,
    Final,
    Output,
    Queue,
    Returned,
    Start,
    suspended_reason,
)

POSTFIX = PROFILES["postfix"]
REFUSED = "connect to mx1.example.test[192.0.2.10]:25: Connection refused"


def starts(outputs: list[Output]) -> list[Start]:
    return [o for o in outputs if isinstance(o, Start)]


def of(kind: type, outputs: list[Output]) -> list:  # type: ignore[type-arg]
    return [o for o in outputs if isinstance(o, kind)]


def delivered(start: Start) -> AttemptReport:
    states = {
        r: RecipientState(r, "delivered", "2.0.0", "250 ok", "mx1.example.test", "192.0.2.10")
        for r in start.recipients
    }
    return AttemptReport(states)


def refused(start: Start, *, site: bool = True) -> AttemptReport:
    states = {
        r: RecipientState(r, "pending", "4.4.1", REFUSED, "mx1.example.test", "192.0.2.10")
        for r in start.recipients
    }
    failures = (HostFailure("192.0.2.10", REFUSED),)
    return AttemptReport(states, REFUSED if site else None, failures)


def queue_of(count: int, profile: Profile = POSTFIX, **options: object) -> Queue:
    queue = Queue(profile, **options)  # type: ignore[arg-type]
    for number in range(1, count + 1):
        queue.submit(Envelope(number, "bob@example.net", ("alice@example.test",), 0.0))
    return queue


def test_one_message_is_queued_tried_and_delivered() -> None:
    queue = queue_of(1)
    first = queue.poll(0.0)
    assert [type(o) for o in first] == [Enqueued, Start]
    (start,) = starts(first)
    assert (start.number, start.domain, start.attempt, start.recipients) == (
        1,
        "example.test",
        1,
        ("alice@example.test",),
    )
    queue.attempt_done(start, delivered(start), 1.0)
    (final,) = queue.poll(1.0)
    assert isinstance(final, Final)
    assert (final.status, final.attempts, final.state.host) == ("delivered", 1, "mx1.example.test")
    assert queue.finished and queue.next_wakeup() is None


def test_a_message_enters_the_queue_at_its_arrival() -> None:
    queue = Queue(POSTFIX)
    queue.submit(Envelope(1, "bob@example.net", ("alice@example.test",), 100.0))
    assert queue.poll(0.0) == []
    assert queue.next_wakeup() == 100.0
    assert [type(o) for o in queue.poll(100.0)] == [Enqueued, Start]


def test_one_delivery_per_recipient_domain() -> None:
    queue = Queue(POSTFIX)
    recipients = ("a@one.test", "b@two.test", "c@one.test")
    queue.submit(Envelope(1, "bob@example.net", recipients, 0.0))
    found = {(s.domain, s.recipients) for s in starts(queue.poll(0.0))}
    assert found == {("one.test", ("a@one.test", "c@one.test")), ("two.test", ("b@two.test",))}


def test_the_window_starts_at_the_initial_concurrency_and_grows_with_success() -> None:
    queue = queue_of(20)
    first = starts(queue.poll(0.0))
    assert len(first) == POSTFIX.initial_concurrency == 5
    assert queue.backlog("example.test") == 15
    queue.attempt_done(first[0], delivered(first[0]), 1.0)
    # Positive feedback: the window is 6 now, and 4 attempts are still busy.
    assert len(starts(queue.poll(1.0))) == 2
    assert queue.active == 6


def test_the_window_grows_no_further_than_busy_plus_the_initial_concurrency() -> None:
    profile = dataclasses.replace(POSTFIX, initial_concurrency=1, concurrency=20)
    queue = queue_of(10, profile)
    (first,) = starts(queue.poll(0.0))
    queue.attempt_done(first, delivered(first), 1.0)
    # window 1 → 2 (busy 0 + initial 1 = 1 would cap a further step)
    assert len(starts(queue.poll(1.0))) == 2


def test_four_site_failures_in_a_row_kill_the_destination_and_suspend_the_rest() -> None:
    queue = queue_of(10)
    first = starts(queue.poll(0.0))
    assert len(first) == 5
    outputs: list[Output] = []
    for index, start in enumerate(first[:4]):
        queue.attempt_done(start, refused(start), 10.0 + index)
        outputs += queue.poll(10.0 + index)
    # 1/5 + 1/4 + 1/3 < 1 after three failures: nothing suspended yet, no new starts (the
    # window shrank below the attempts in flight).
    suspended = [d for d in of(Deferred, outputs) if not d.tried]
    assert [d.number for d in suspended] == [6, 7, 8, 9, 10]
    assert all(d.states[0].reply == suspended_reason(REFUSED) for d in suspended)
    assert not starts(outputs)
    # Suspended deliveries count as an attempt, as Postfix's log shows a status=deferred.
    assert queue.attempts[(6, "alice@example.test")] == 1


def test_a_dead_destination_comes_back_after_the_minimal_backoff() -> None:
    queue = queue_of(5)
    for index, start in enumerate(starts(queue.poll(0.0))):
        queue.attempt_done(start, refused(start), 1.0 + index)
        queue.poll(1.0 + index)
    # The destination died at the fourth failure (t=4): dead until 4 + 300.
    queue.submit(Envelope(6, "bob@example.net", ("alice@example.test",), 100.0))
    late = queue.poll(100.0)
    assert [type(o) for o in late] == [Enqueued, Deferred]
    assert not late[1].tried  # type: ignore[union-attr]
    # Everything retries at the queue scan after its backoff; by then the site is alive.
    wake = queue.next_wakeup()
    assert wake is not None and wake >= 304.0
    assert starts(queue.poll(wake))


def test_a_deferral_is_retried_after_the_backoff_at_a_queue_scan() -> None:
    queue = queue_of(1)
    (start,) = starts(queue.poll(0.0))
    queue.attempt_done(start, refused(start, site=False), 10.0)
    (deferred,) = queue.poll(10.0)
    assert isinstance(deferred, Deferred)
    # Postfix: wait the message's age clamped to [300 s, 4000 s], then the next queue scan.
    assert deferred.retry_at == 600.0
    assert deferred.tried and deferred.states[0].dsn == "4.4.1"
    assert queue.next_wakeup() == 600.0
    (again,) = starts(queue.poll(600.0))
    assert again.attempt == 2


def test_the_message_expires_and_returns_to_a_sender_inside_the_scenario() -> None:
    profile = dataclasses.replace(POSTFIX, max_lifetime=1000.0, queue_run_delay=0.0)
    queue = Queue(profile, in_scenario=lambda domain: domain == "example.net")
    queue.submit(Envelope(1, "bob@example.net", ("alice@example.test",), 0.0))
    now = 0.0
    start = starts(queue.poll(now))[0]
    while True:
        queue.attempt_done(start, refused(start, site=False), now)
        outputs = queue.poll(now)
        finals, returned = of(Final, outputs), of(Returned, outputs)
        if finals:
            break
        wake = queue.next_wakeup()
        assert wake is not None
        now = wake
        start = starts(queue.poll(now))[0]
    (final,) = finals
    assert final.status == "bounced" and final.expired
    assert final.state.reply == REFUSED  # the last reply; the report says it expired
    assert final.state.dsn == "4.4.1"  # Postfix keeps the last temporary status
    (dsn,) = returned
    assert (dsn.action, dsn.to, dsn.via, dsn.number) == ("failed", "bob@example.net", "mx", 2)
    # The DSN is a message of its own, from <> to the sender, through the same queue.
    assert [type(o) for o in outputs] == [Bounce, Final, Returned, Enqueued, Start]
    assert "past the 16m40s limit" in outputs[0].why  # type: ignore[union-attr]
    assert outputs[3].envelope == Envelope(2, "", ("bob@example.net",), now, about=1)  # type: ignore[union-attr]


def test_haraka_makes_an_expired_status_permanent() -> None:
    profile = dataclasses.replace(
        PROFILES["haraka"], max_failures=1, initial_concurrency=5, concurrency=5
    )
    queue = queue_of(1, profile)
    (start,) = starts(queue.poll(0.0))
    queue.attempt_done(start, refused(start, site=False), 1.0)
    final = of(Final, queue.poll(1.0))[0]
    assert (final.status, final.state.dsn) == ("bounced", "5.4.1")


def test_no_bounce_about_a_bounce_and_none_to_the_null_sender() -> None:
    queue = Queue(POSTFIX, in_scenario=lambda domain: True)
    queue.submit(Envelope(1, "", ("alice@example.test",), 0.0))
    queue.submit(Envelope(2, "bob@example.net", ("carol@example.test",), 0.0, about=9))
    for start in starts(queue.poll(0.0)):
        states = {r: RecipientState(r, "bounced", "5.1.1", "550 no") for r in start.recipients}
        queue.attempt_done(start, AttemptReport(states), 1.0)
    outputs = queue.poll(1.0)
    assert len(of(Final, outputs)) == 2
    assert of(Returned, outputs) == []


def test_a_bounce_to_a_sender_outside_the_scenario_goes_to_the_returned_mailbox() -> None:
    queue = queue_of(1)
    (start,) = starts(queue.poll(0.0))
    states = {r: RecipientState(r, "bounced", "5.1.1", "550 no") for r in start.recipients}
    queue.attempt_done(start, AttemptReport(states), 1.0)
    (returned,) = of(Returned, queue.poll(1.0))
    assert (returned.via, returned.number, returned.action) == ("returned_mailbox", None, "failed")


def test_a_delay_warning_goes_once() -> None:
    profile = dataclasses.replace(POSTFIX, delay_warning=500.0)
    queue = queue_of(1, profile)
    now, warnings = 0.0, []
    start = starts(queue.poll(now))[0]
    for _ in range(4):
        queue.attempt_done(start, refused(start, site=False), now)
        warnings += [r for r in of(Returned, queue.poll(now)) if r.action == "delayed"]
        now = queue.next_wakeup() or now
        start = starts(queue.poll(now))[0]
    (warning,) = warnings
    assert warning.retry_until == POSTFIX.max_lifetime


@pytest.mark.parametrize(
    ("profile", "kind", "dsn"),
    [
        ("postfix", "null", "5.1.0"),
        ("rfc5321", "null", "5.1.10"),
        ("postfix", "nxdomain", "5.4.4"),
        ("haraka", "nxdomain", "5.1.2"),
    ],
)
def test_a_domain_without_a_route_bounces_with_the_profiles_status(
    profile: str, kind: str, dsn: str
) -> None:
    queue = queue_of(1, PROFILES[profile])
    (start,) = starts(queue.poll(0.0))
    route = NoRoute(kind, True, "5.1.10" if kind == "null" else "5.4.4", "no mail here")  # type: ignore[arg-type]
    queue.no_route(start, route, 0.0)
    (final,) = of(Final, queue.poll(0.0))
    assert (final.status, final.state.dsn) == ("bounced", dsn)


def test_a_dns_failure_waits_and_counts_as_a_site_failure() -> None:
    queue = queue_of(6)
    for index, start in enumerate(starts(queue.poll(0.0))[:4]):
        queue.no_route(start, NoRoute("dns_failure", False, "4.4.3", "DNS failed"), float(index))
        outputs = queue.poll(float(index))
    assert [d.number for d in of(Deferred, outputs) if not d.tried] == [6]


def test_exim_skips_a_host_inside_its_retry_time_for_every_message() -> None:
    queue = Queue(PROFILES["exim"])
    queue.submit(Envelope(1, "bob@example.net", ("alice@example.test",), 0.0))
    queue.submit(Envelope(2, "bob@example.net", ("carol@example.test",), 60.0))
    (first,) = starts(queue.poll(0.0))
    assert first.avoid == frozenset()
    queue.attempt_done(first, refused(first, site=False), 5.0)
    queue.poll(5.0)
    # The host's record is shared: message 2 skips it until its retry time (15 min later).
    (second,) = starts(queue.poll(60.0))
    assert second.avoid == frozenset({"192.0.2.10"})
    queue.attempt_done(
        second, AttemptReport(delivered(second).states, good_hosts=("192.0.2.10",)), 61.0
    )
    queue.poll(61.0)
    (again,) = starts(queue.poll(queue.next_wakeup() or 0.0))
    assert again.number == 1 and again.avoid == frozenset()


def test_the_unfinished_are_reported_as_deferred_at_the_end() -> None:
    queue = queue_of(1)
    queue.poll(0.0)
    (final,) = queue.give_up_unfinished()
    assert isinstance(final, Final)
    assert (final.status, final.attempts) == ("deferred", 1)


def test_a_retry_time_a_float_sum_puts_off_by_a_hair_is_due_at_the_clocks_tick() -> None:
    # 48.545 + 64 + 128 is 240.54500000000002; a clock that ticks in microseconds reads
    # 240.545 at the wakeup the queue asked for, and the retry must start then, not never.
    haraka = PROFILES["haraka"]
    queue = Queue(haraka)
    queue.submit(Envelope(1, "bob@example.net", ("alice@example.test",), 48.545))
    (start,) = starts(queue.poll(48.545))
    queue.attempt_done(start, refused(start), 48.545)
    queue.poll(48.545)
    (start,) = starts(queue.poll(112.545))
    queue.attempt_done(start, refused(start), 112.545)
    queue.poll(112.545)
    wakeup = queue.next_wakeup()
    assert wakeup is not None and wakeup != 240.545 and round(wakeup, 6) == 240.545
    assert [s.attempt for s in starts(queue.poll(240.545))] == [3]


def test_exim_bounces_say_5_0_0_in_the_row_and_in_the_dsn() -> None:
    queue = Queue(PROFILES["exim"], in_scenario=lambda domain: True)
    queue.submit(Envelope(1, "bob@example.net", ("alice@example.test",), 0.0))
    (start,) = starts(queue.poll(0.0))
    states = {
        r: RecipientState(r, "bounced", "5.1.1", "550 5.1.1 No such user") for r in start.recipients
    }
    queue.attempt_done(start, AttemptReport(states), 1.0)
    outputs = queue.poll(1.0)
    (final,), (returned,) = of(Final, outputs), of(Returned, outputs)
    assert final.state.dsn == returned.states[0].dsn == "5.0.0"
    assert returned.states[0].reply == "550 5.1.1 No such user"  # the Diagnostic-Code


def test_exim_retries_in_a_queue_run_one_after_the_other() -> None:
    queue = queue_of(3, PROFILES["exim"])
    first = starts(queue.poll(0.0))
    assert len(first) == 3  # immediate deliveries, side by side
    for start in first:
        queue.attempt_done(start, refused(start, site=False), 1.0)
    queue.poll(1.0)
    assert queue.next_wakeup() == 1800.0  # the next queue run
    (run,) = starts(queue.poll(1800.0))  # the queue runner takes one message
    assert queue.backlog("example.test") == 2
    assert queue.keep_open("example.test", 0.0)  # the others wait for this host
    queue.attempt_done(run, delivered(run), 1800.0)
    (after,) = starts(queue.poll(1800.0))
    assert after.number != run.number and after.attempt == 2


def test_a_session_is_kept_only_for_waiting_mail_and_while_young() -> None:
    queue = queue_of(6)
    first = starts(queue.poll(0.0))
    assert queue.backlog("example.test") == 1
    assert queue.keep_open("example.test", 10.0)
    assert not queue.keep_open("example.test", POSTFIX.reuse_time_limit)
    haraka = queue_of(6, dataclasses.replace(PROFILES["haraka"], initial_concurrency=5))
    haraka.poll(0.0)
    assert haraka.backlog("example.test") == 1 and not haraka.keep_open("example.test", 0.0)
    queue.attempt_done(first[0], delivered(first[0]), 1.0)
    queue.poll(1.0)
    assert not queue.keep_open("example.test", 1.0)  # nothing waits any more


@pytest.mark.parametrize(
    ("profile", "kind", "status", "dsn"),
    [
        ("postfix", "dns_failure", "pending", "4.4.3"),
        ("haraka", "dns_failure", "pending", "4.1.0"),
        ("haraka", "no_address", "pending", "5.1.2"),
        ("rfc5321", "no_address", "pending", "4.4.4"),
        ("exim", "no_address", "bounced", "5.0.0"),
    ],
)
def test_a_route_failure_takes_the_profiles_status_and_reply(
    profile: str, kind: str, status: str, dsn: str
) -> None:
    queue = queue_of(1, PROFILES[profile])
    (start,) = starts(queue.poll(0.0))
    permanent = kind == "no_address"
    route = NoRoute(kind, permanent, "5.4.4", "explained", reply="the MTA's words")  # type: ignore[arg-type]
    queue.no_route(start, route, 0.0)
    outputs = queue.poll(0.0)
    state = (of(Final, outputs) or of(Deferred, outputs))[0]
    state = state.state if isinstance(state, Final) else state.states[0]
    assert (state.status, state.dsn, state.reply) == (status, dsn, "the MTA's words")
