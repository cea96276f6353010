"""The queue manager: every message from arrival to its last recipient's fate, sans I/O.

Theory of operation
===================
An ``Attempt`` (``core.delivery``) walks one route once. Everything around the attempts is
here: when a message may be tried, how many tries may run at once, what a failure means for
the other messages, when to give up, and which delivery status notifications (DSNs) to send.
The I/O shell drives it like this::

    queue = Queue(profile, in_scenario=...)
    queue.submit(envelope)                      # for each message, before or during the run
    while not queue.finished:
        for output in queue.poll(now):          # what to do now, in order
            ...                                 # Start: run an attempt; the rest: report it
        await the earlier of queue.next_wakeup() and an attempt that finishes
        queue.attempt_done(start, report, now)  # or queue.no_route(start, route, now)

The queue never reads a clock and never waits: ``now`` comes in, outputs come out, and
``next_wakeup()`` says when calling ``poll`` again can change anything.

Deliveries
----------
Mail for one recipient domain of one message is a *delivery* (Postfix calls it a queue
entry): its recipients travel together, and each try of them is one attempt. A delivery is
always in one of these states:

=========  ============================================================================
state      meaning
=========  ============================================================================
waiting    not eligible before ``eligible`` (its arrival, or its retry time)
ready      eligible, waiting for a free slot of its destination (the todo list), or,
           for a retry under ``serial_queue_runs``, for the queue runner (the run queue)
active     an attempt is in flight
done       every recipient is delivered or bounced (or given up on)
=========  ============================================================================

and moves between them by this table (``poll`` takes the time-driven steps, in order):

=======================================  =========  =======  ===================================
event                                    from       to       outputs
=======================================  =========  =======  ===================================
submit                                   —          waiting  (Enqueued at its arrival)
time passes ``eligible``                 waiting    ready    —
destination dead (suspended)             ready      waiting  Deferred(suspended), retry time
every usable host in its retry time      ready      waiting  Deferred(no host due), retry time
a slot is free (busy < window)           ready      active   Start
the queue runner is free (Exim)          ready      active   Start (one at a time)
attempt done, nothing left pending       active     done     Final per recipient; DSN if any
                                                             bounced
attempt done, some pending, retry        active     waiting  Deferred per recipient; a delay
                                                             warning once it is old enough
attempt done, some pending, give up      active     done     Final(bounced, expired); DSN
=======================================  =========  =======  ===================================

A deferral without a try counts as an attempt, as Postfix logs it: a ``status=deferred`` line
for each recipient, with ``relay=none`` and the reason "delivery temporarily suspended".

Destinations: Postfix's concurrency window
------------------------------------------
Deliveries to one destination (the recipient domain) share a concurrency *window*: at most
that many attempts run at once. It starts at ``initial_concurrency`` and follows Postfix's
feedback (qmgr_queue.c, SCHEDULER_README "Concurrency scheduling"):

- an attempt that ends without a *site failure* (below) is positive feedback: the window
  grows by one, up to ``concurrency`` and to no more than the attempts in flight plus
  ``initial_concurrency``, and the count of failed cohorts starts again at zero;
- an attempt that ends with a site failure is negative feedback: the failed cohorts grow by
  1/window, and the window shrinks by one (not below one). Once the failed cohorts reach
  ``failed_cohort_limit``, the destination is *dead*: every delivery waiting for it is
  deferred at once ("delivery temporarily suspended: " and the last reason), and so is every
  delivery that becomes eligible, until ``min_backoff`` has passed. Then the window starts
  again at ``initial_concurrency``. With the defaults (5 and 1) four site failures in a row
  kill a destination: 1/5 + 1/4 + 1/3 + 1/2 ≥ 1.

A *site failure* is what Postfix's SMTP client reports as a problem with the destination
rather than with one message: the last host the attempt tried could not be connected to, or
failed the handshake (any greeting other than 2xx, EHLO/HELO refused), or the connection was
lost or timed out before the mail transaction completed; or DNS failed. A 4xx to MAIL,
RCPT or DATA is about the message, not the site. The attempt reports it
(``AttemptReport.site_failure``); this module only counts.

Exim's queue runner
-------------------
With ``serial_queue_runs``, a retry does not take a slot of its destination: it waits for the
queue runner, which starts one delivery at a time, in the order they became due (Exim runs
``exim -q`` every ``queue_run_delay``; a new message is still delivered at once, side by side
with the others). A delivery that ends while others wait for the same destination keeps its
session open for them (``keep_open``), so the runner sends the waiting messages down one
connection.

Sessions kept open
------------------
``keep_open(domain, age)`` answers the shell when a session has just delivered: keep it for
the next delivery to that destination (the profile reuses sessions, more mail is waiting for
it, and the session is younger than ``reuse_time_limit``) or say QUIT. The next delivery
starts at that session's host (``core.delivery``).

Hosts: Exim's retry records
---------------------------
With ``host_retry``, a host (an address) that fails at connect or in the handshake gets a
retry record shared by all messages: its next try follows the retry rules, counted from the
host's first failure. Until then an attempt skips it ("retry time not reached"); a delivery
whose hosts are all in their retry time is deferred without a try. A host that takes a
message loses its record.

Retries, give-up and DSNs
-------------------------
When an attempt leaves recipients pending, the profile's schedule (``policy.next_retry``)
picks the next try; None means give up: the recipients bounce as expired. A bounce (now or
at give-up) sends one "failed" DSN per message and attempt, from ``<>`` to the envelope
sender; a message that has waited ``delay_warning`` sends one "delayed" DSN. A DSN about a
DSN, or to the null sender, is never sent (RFC 5321 §4.5.5). When the sender's domain is in
the scenario, the DSN is a new message in this queue (numbered after the others);
otherwise it goes to the returned-mail mailbox.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from sandbox.core.delivery import AttemptReport, FinalStatus, RecipientState
from sandbox.core.durations import format_duration
from sandbox.core.mx import NoRoute
from sandbox.core.policy import Profile, Retry, RetryHistory, host_retry_at, next_retry

__all__ = [
    "Bounce",
    "Deferred",
    "Enqueued",
    "Envelope",
    "Final",
    "Output",
    "Queue",
    "Returned",
    "Start",
    "domain_of",
    "suspended_reason",
]

SUSPENDED = "delivery temporarily suspended: "
# How close to ``now`` a time counts as due. A retry time is a sum of floats (48.545 + 64 +
# 128 = 240.54500000000002), and a virtual clock that ticks in microseconds reads 240.545
# there: without this slack, ``poll`` would find nothing due at the wakeup that
# ``next_wakeup`` asked for, and a driver would wake at the same instant for ever.
DUE_SLACK = 1e-6


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def _failure_dsn(report: AttemptReport) -> str:
    """The status of an attempt's site failure: that of a recipient it left pending."""
    pending = [state.dsn for state in report.states.values() if state.status == "pending"]
    return next((dsn for dsn in pending if dsn), "4.4.1")


def suspended_reason(reason: str) -> str:
    """Postfix's wording for a delivery deferred because its destination is dead."""
    return SUSPENDED + reason


# --- what comes in --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message as the queue knows it. ``about`` is set for a DSN: the message it reports."""

    number: int
    sender: str
    recipients: tuple[str, ...]
    arrival: float
    about: int | None = None


# --- what goes out --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Enqueued:
    """A message entered the queue."""

    envelope: Envelope


@dataclass(frozen=True, slots=True)
class Start:
    """Run one attempt for these recipients; skip the addresses in ``avoid`` (Exim's hosts in
    their retry time)."""

    number: int
    domain: str
    attempt: int
    sender: str
    recipients: tuple[str, ...]
    avoid: frozenset[str] = frozenset()
    # When the delivery became due and joined the queue of its destination (Postfix: entered
    # the active queue); the attempt starts once a slot is free.
    active_since: float = 0.0


@dataclass(frozen=True, slots=True)
class Deferred:
    """Recipients that wait until ``retry_at``. ``tried`` is False for a deferral without a
    try (a dead destination, or no host due)."""

    number: int
    attempt: int
    states: tuple[RecipientState, ...]
    retry_at: float
    why: str
    tried: bool = True


@dataclass(frozen=True, slots=True)
class Bounce:
    """The queue returns these recipients to their sender, for this reason (the story's
    "⇒ bounce" line). The attempt's own bounces (a 5xx) are told by the attempt."""

    number: int
    attempt: int
    why: str
    recipients: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Final:
    """A recipient's fate for this run. ``expired``: bounced because the schedule ran out."""

    number: int
    state: RecipientState
    status: FinalStatus
    attempts: int
    expired: bool = False


@dataclass(frozen=True, slots=True)
class Returned:
    """A DSN to the envelope sender of ``about``. ``number`` is the DSN's own message number
    when it travels through this queue (``via == "mx"``), else None."""

    about: int
    action: Literal["failed", "delayed"]
    to: str
    states: tuple[RecipientState, ...]
    via: Literal["mx", "returned_mailbox"]
    number: int | None
    message_id: str
    at: float
    retry_until: float | None = None  # for a delay warning: when the queue gives up


Output = Enqueued | Start | Deferred | Bounce | Final | Returned


# --- inside ---------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Delivery:
    envelope: Envelope
    domain: str
    pending: tuple[str, ...]
    eligible: float
    attempt: int = 0
    history: RetryHistory | None = None
    warned: bool = False
    state: Literal["waiting", "ready", "active", "done"] = "waiting"
    ready_at: float = 0.0

    @property
    def is_dsn(self) -> bool:
        return self.envelope.about is not None


@dataclass(slots=True)
class _Destination:
    window: float
    busy: int = 0
    fail_cohorts: float = 0.0
    dead_until: float | None = None
    dead_reason: str = ""
    dead_dsn: str = "4.4.1"  # the status of the failure that killed it (Postfix's queue DSN)
    todo: deque[_Delivery] = field(default_factory=deque)


@dataclass(slots=True)
class _HostRecord:
    first_failure: float
    next_try: float
    last: Retry | None
    reason: str


class Queue:
    """The queue manager. See the module docstring."""

    def __init__(
        self,
        profile: Profile,
        *,
        in_scenario: Callable[[str], bool] = lambda domain: False,
        first_free_number: int = 1,
    ) -> None:
        self.profile = profile
        self._in_scenario = in_scenario
        self._next_number = first_free_number
        self._waiting: list[tuple[float, int, _Delivery]] = []  # heap by eligibility
        self._arrivals: list[tuple[float, int, Envelope]] = []  # heap of unannounced messages
        self._destinations: dict[str, _Destination] = {}
        self._hosts: dict[str, _HostRecord] = {}
        self._active_by_key: dict[tuple[int, str], _Delivery] = {}
        # Exim's queue runner (serial_queue_runs): the retries it has yet to take, and the
        # one it is delivering.
        self._run_queue: deque[_Delivery] = deque()
        self._runner: _Delivery | None = None
        self._active = 0
        self._unfinished = 0
        self._seq = itertools.count()
        self._out: list[Output] = []
        self._arrival: dict[int, float] = {}
        self.attempts: dict[tuple[int, str], int] = {}
        self.last: dict[tuple[int, str], RecipientState] = {}
        self.final: dict[tuple[int, str], Final] = {}

    # --- the shell's side --------------------------------------------------------------------

    def submit(self, envelope: Envelope) -> None:
        """A message enters the queue at ``envelope.arrival``; each of its recipients is known
        from now on, so that one the run ends before is still reported."""
        self._next_number = max(self._next_number, envelope.number + 1)
        self._arrival[envelope.number] = envelope.arrival
        for r in envelope.recipients:
            self.last[(envelope.number, r)] = RecipientState(r, reply="not yet in the queue")
            self.attempts.setdefault((envelope.number, r), 0)
        heapq.heappush(self._arrivals, (envelope.arrival, next(self._seq), envelope))
        for domain, recipients in _by_domain(envelope.recipients).items():
            delivery = _Delivery(envelope, domain, recipients, envelope.arrival)
            self._wait(delivery)
            self._unfinished += 1

    def poll(self, now: float) -> list[Output]:
        """Everything due at ``now``, in the order it happened."""
        due = now + DUE_SLACK
        while self._arrivals and self._arrivals[0][0] <= due:
            _, _, envelope = heapq.heappop(self._arrivals)
            for r in envelope.recipients:
                self.last[(envelope.number, r)] = RecipientState(r, reply="in its first attempt")
            self._out.append(Enqueued(envelope))
        while self._waiting and self._waiting[0][0] <= due:
            _, _, delivery = heapq.heappop(self._waiting)
            self._make_ready(delivery, now)
        for domain in list(self._destinations):
            self._start_what_fits(domain, now)
        self._run_queue_runner(now)
        out, self._out = self._out, []
        return out

    def next_wakeup(self) -> float | None:
        """The earliest time at which ``poll`` can have something new, or None."""
        times = [self._waiting[0][0]] if self._waiting else []
        if self._arrivals:
            times.append(self._arrivals[0][0])
        times += [
            d.dead_until for d in self._destinations.values() if d.dead_until is not None and d.todo
        ]
        return min(times, default=None)

    def arrival_of(self, number: int) -> float:
        """When message ``number`` entered the queue."""
        return self._arrival[number]

    @property
    def finished(self) -> bool:
        """Every delivery is done."""
        return self._unfinished == 0

    @property
    def active(self) -> int:
        """Attempts in flight."""
        return self._active

    def backlog(self, domain: str) -> int:
        """Deliveries ready for ``domain`` and waiting for a slot (or for the queue runner)."""
        destination = self._destinations.get(domain)
        waiting = len(destination.todo) if destination is not None else 0
        return waiting + sum(d.domain == domain for d in self._run_queue)

    def keep_open(self, domain: str, age: float) -> bool:
        """Whether a session that has just delivered for ``domain``, open for ``age``
        seconds, is kept for the next delivery instead of saying QUIT: the profile reuses
        sessions, more mail is waiting for the destination, and the session is young enough
        (Postfix's connection cache on demand; Exim's continued connection)."""
        profile = self.profile
        return (
            profile.reuse_sessions and age < profile.reuse_time_limit and self.backlog(domain) > 0
        )

    def attempt_done(self, start: Start, report: AttemptReport, now: float) -> None:
        """An attempt ``poll`` started has ended; ``poll`` then says what follows."""
        self._host_feedback(report, now)
        # Feedback first, while the attempt still counts as busy (as in Postfix's qmgr).
        self._site_feedback(start.domain, report.site_failure, now, _failure_dsn(report))
        delivery = self._finish_attempt(start)
        if report.untried is not None:
            self._mark_untried(delivery, report.untried)
            self._retry_or_give_up(delivery, now, tried=False)
            return
        self._settle(delivery, dict(report.states), now)

    def no_route(self, start: Start, route: NoRoute, now: float) -> None:
        """An attempt ``poll`` started found no address to try."""
        permanent = route.permanent
        if route.kind == "no_address" and self.profile.no_address == "defer":
            permanent = False
        dsn = self._route_dsn(route, permanent)
        status: Literal["bounced", "pending"] = "bounced" if permanent else "pending"
        reply = route.reply or route.reason
        states = {r: RecipientState(r, status, dsn, reply) for r in start.recipients}
        failure = route.reason if route.kind == "dns_failure" else None
        self._site_feedback(start.domain, failure, now, dsn)
        delivery = self._finish_attempt(start)
        if permanent:
            why = f"{route.reason}: permanent ({dsn})"
            self._out.append(Bounce(start.number, start.attempt, why, start.recipients))
        self._settle(delivery, states, now, reason=route.reason)

    def give_up_unfinished(self) -> list[Output]:
        """At the end of the run: what was decided but not yet polled, then every recipient
        not yet final, reported as deferred. Nothing new starts."""
        finals: list[Output] = [o for o in self._out if not isinstance(o, Start)]
        self._out = []
        for key, state in sorted(self.last.items()):
            if key not in self.final:
                final = Final(key[0], _copy(state), "deferred", self.attempts.get(key, 0))
                self.final[key] = final
                finals.append(final)
        return finals

    # --- time-driven steps -------------------------------------------------------------------

    def _wait(self, delivery: _Delivery) -> None:
        delivery.state = "waiting"
        heapq.heappush(self._waiting, (delivery.eligible, next(self._seq), delivery))

    def _make_ready(self, delivery: _Delivery, now: float) -> None:
        destination = self._destination(delivery.domain)
        if destination.dead_until is not None and now + DUE_SLACK < destination.dead_until:
            self._defer_suspended(delivery, destination, now)
            return
        delivery.state = "ready"
        delivery.ready_at = now
        if self.profile.serial_queue_runs and delivery.attempt > 0:
            self._run_queue.append(delivery)  # a retry: the queue runner's, in turn
        else:
            destination.todo.append(delivery)

    def _start_what_fits(self, domain: str, now: float) -> None:
        destination = self._destinations[domain]
        if destination.dead_until is not None:
            if now + DUE_SLACK < destination.dead_until:
                return
            self._resurrect(destination)
        while destination.todo and destination.busy < max(1, int(destination.window)):
            delivery = destination.todo.popleft()
            self._start(delivery, destination, now)

    def _run_queue_runner(self, now: float) -> None:
        """Exim's queue runner: the retries due, one delivery at a time, in the order they
        became due."""
        while self._runner is None and self._run_queue:
            delivery = self._run_queue.popleft()
            destination = self._destination(delivery.domain)
            if destination.dead_until is not None and now + DUE_SLACK < destination.dead_until:
                self._defer_suspended(delivery, destination, now)
                continue
            self._runner = delivery
            self._start(delivery, destination, now)

    def _start(self, delivery: _Delivery, destination: _Destination, now: float) -> None:
        avoid = self._avoided(now)
        delivery.attempt += 1
        for r in delivery.pending:
            self.attempts[(delivery.envelope.number, r)] += 1
        delivery.state = "active"
        destination.busy += 1
        self._active += 1
        self._active_by_key[(delivery.envelope.number, delivery.domain)] = delivery
        self._out.append(
            Start(
                delivery.envelope.number,
                delivery.domain,
                delivery.attempt,
                delivery.envelope.sender,
                delivery.pending,
                avoid,
                delivery.ready_at,
            )
        )

    def _avoided(self, now: float) -> frozenset[str]:
        return frozenset(
            a for a, record in self._hosts.items() if record.next_try > now + DUE_SLACK
        )

    def _resurrect(self, destination: _Destination) -> None:
        """Back from the almost grave: best concurrency is anyone's guess (Postfix)."""
        destination.dead_until = None
        destination.dead_reason = ""
        destination.fail_cohorts = 0.0
        destination.window = destination.busy or self.profile.initial_concurrency

    # --- feedback ----------------------------------------------------------------------------

    def _destination(self, domain: str) -> _Destination:
        destination = self._destinations.get(domain)
        if destination is None:
            destination = _Destination(float(self._initial_window()))
            self._destinations[domain] = destination
        return destination

    def _initial_window(self) -> int:
        profile = self.profile
        limit = profile.concurrency or profile.initial_concurrency
        return max(1, min(profile.initial_concurrency or limit, limit))

    def _finish_attempt(self, start: Start) -> _Delivery:
        delivery = self._active_by_key.pop((start.number, start.domain))
        assert delivery.state == "active", delivery.state  # one report per Start
        if delivery is self._runner:
            self._runner = None
        self._destinations[start.domain].busy -= 1
        self._active -= 1
        return delivery

    def _site_feedback(self, domain: str, failure: str | None, now: float, dsn: str) -> None:
        destination = self._destinations[domain]
        profile = self.profile
        if failure is None:
            self._positive(destination)
            return
        if not profile.suspend_dead_destinations or destination.dead_until is not None:
            return
        destination.fail_cohorts += 1.0 / max(1.0, destination.window)
        limit = profile.failed_cohort_limit
        if limit > 0 and destination.fail_cohorts >= limit:
            destination.dead_until = now + profile.min_backoff
            destination.dead_reason = failure
            destination.dead_dsn = dsn
            while destination.todo:
                self._defer_suspended(destination.todo.popleft(), destination, now)
            return
        destination.window = max(1.0, destination.window - 1)

    def _positive(self, destination: _Destination) -> None:
        destination.fail_cohorts = 0.0
        if destination.dead_until is not None:
            self._resurrect(destination)
            return
        limit = self.profile.concurrency
        ceiling = destination.busy + self.profile.initial_concurrency
        if (limit == 0 or destination.window < limit) and destination.window < ceiling:
            destination.window += 1
            if limit and destination.window > limit:
                destination.window = limit

    def _host_feedback(self, report: AttemptReport, now: float) -> None:
        if not self.profile.host_retry:
            return
        for address in report.good_hosts:
            self._hosts.pop(address, None)
        for failure in report.failed_hosts:
            record = self._hosts.get(failure.address)
            first = record.first_failure if record is not None else now
            last = record.last if record is not None else None
            retry = host_retry_at(self.profile, first, last, now)
            self._hosts[failure.address] = _HostRecord(first, retry.at, retry, failure.reason)

    # --- settling an attempt -----------------------------------------------------------------

    def _settle(
        self,
        delivery: _Delivery,
        states: dict[str, RecipientState],
        now: float,
        *,
        reason: str = "",
    ) -> None:
        """``reason``: why the recipients wait, in the story's words, when their reply is in
        the MTA's (a route failure)."""
        number = delivery.envelope.number
        pending: list[str] = []
        bounced: list[RecipientState] = []
        for r, state in states.items():
            key = (number, r)
            # Once a final dot went unanswered, a copy may exist, whatever later attempts do.
            state.unsure = state.unsure or self.last[key].unsure
            self.last[key] = state
            if state.status == "pending":
                pending.append(r)
            else:
                self._finalise(number, state, state.status)
                if state.status == "bounced":
                    bounced.append(state)
        self._return(delivery, tuple(bounced), "failed", now)
        if not pending:
            self._done(delivery)
            return
        delivery.pending = tuple(pending)
        self._retry_or_give_up(delivery, now, tried=True, reason=reason)

    def _defer_suspended(self, delivery: _Delivery, destination: _Destination, now: float) -> None:
        """Deferred without a try because the destination is dead: it counts as an attempt,
        as Postfix logs it, with the status and reason of the failure that killed it."""
        delivery.attempt += 1
        for r in delivery.pending:
            self.attempts[(delivery.envelope.number, r)] += 1
        reason = suspended_reason(destination.dead_reason)
        self._mark_untried(delivery, reason, destination.dead_dsn)
        self._retry_or_give_up(delivery, now, tried=False)

    def _mark_untried(self, delivery: _Delivery, reason: str, dsn: str | None = None) -> None:
        """Each pending recipient waits with ``reason``, and ``dsn`` or else its last status."""
        for r in delivery.pending:
            key = (delivery.envelope.number, r)
            last = self.last[key]
            status = dsn or last.dsn or "4.4.1"
            self.last[key] = RecipientState(r, "pending", status, reason, unsure=last.unsure)

    def _retry_or_give_up(
        self, delivery: _Delivery, now: float, *, tried: bool, reason: str = ""
    ) -> None:
        number = delivery.envelope.number
        history = self._history_after_failure(delivery, now, tried=tried)
        retry = next_retry(self.profile, history, now)
        states = tuple(_copy(self.last[(number, r)]) for r in delivery.pending)
        if retry is None:
            why = _give_up_why(self.profile, history, now)
            expired = []
            self._out.append(Bounce(number, delivery.attempt, why, delivery.pending))
            for state in states:
                state.dsn = self._expired_dsn(state.dsn)
                self._finalise(number, state, "bounced", expired=True)
                expired.append(state)
            self._return(delivery, tuple(expired), "failed", now)
            self._done(delivery)
            return
        delivery.history = dataclasses.replace(history, last=retry)
        first = states[0]
        why = f"{first.dsn or '4.0.0'} {reason or first.reply}".strip()
        self._out.append(Deferred(number, delivery.attempt, states, retry.at, why, tried))
        self._maybe_warn(delivery, states, now)
        delivery.eligible = retry.at
        self._wait(delivery)

    def _history_after_failure(
        self, delivery: _Delivery, now: float, *, tried: bool
    ) -> RetryHistory:
        history = delivery.history
        if history is None:
            return RetryHistory(delivery.envelope.arrival, now, 1)
        if not tried:
            return history  # a deferral without a try costs no failure
        return dataclasses.replace(history, failures=history.failures + 1)

    def _finalise(
        self, number: int, state: RecipientState, status: FinalStatus, *, expired: bool = False
    ) -> None:
        if status == "bounced" and self.profile.bounce_dsn:
            state.dsn = self.profile.bounce_dsn  # Exim: every bounce says 5.0.0
        key = (number, state.recipient)
        final = Final(number, _copy(state), status, self.attempts.get(key, 0), expired)
        self.final[key] = final
        self.last[key] = state
        self._out.append(final)

    def _done(self, delivery: _Delivery) -> None:
        delivery.state = "done"
        self._unfinished -= 1

    # --- DSNs --------------------------------------------------------------------------------

    def _maybe_warn(
        self, delivery: _Delivery, states: tuple[RecipientState, ...], now: float
    ) -> None:
        warning = self.profile.delay_warning
        if warning is None or delivery.warned or now - delivery.envelope.arrival < warning:
            return
        delivery.warned = True
        self._return(delivery, states, "delayed", now)

    def _return(
        self,
        delivery: _Delivery,
        states: tuple[RecipientState, ...],
        action: Literal["failed", "delayed"],
        now: float,
    ) -> None:
        envelope = delivery.envelope
        if not states or delivery.is_dsn or not envelope.sender:
            return  # never a bounce about a bounce (RFC 5321 §4.5.5 / RFC 3464 §2)
        mid = f"<dsn.{action}.{envelope.number}.{round(now)}@sender.sandbox.test>"
        until = None
        if action == "delayed":
            until = envelope.arrival + self.profile.max_lifetime
        if self._in_scenario(domain_of(envelope.sender)):
            number: int | None = self._next_number
            self._next_number += 1
            via: Literal["mx", "returned_mailbox"] = "mx"
        else:
            number, via = None, "returned_mailbox"
        states = tuple(_copy(s) for s in states)
        self._out.append(
            Returned(envelope.number, action, envelope.sender, states, via, number, mid, now, until)
        )
        if number is not None:
            self.submit(Envelope(number, "", (envelope.sender,), now, about=envelope.number))

    # --- profile's codes ---------------------------------------------------------------------

    def _route_dsn(self, route: NoRoute, permanent: bool) -> str:
        profile = self.profile
        dsn = route.dsn
        if route.kind == "null":
            dsn = profile.null_mx_dsn
        elif route.kind == "nxdomain":
            dsn = profile.nxdomain_dsn
        elif route.kind == "dns_failure":
            dsn = profile.dns_failure_dsn
        elif route.kind == "no_address" and profile.tried_all_dsn:
            return profile.tried_all_dsn  # Haraka: "Tried all MXs", 5.1.2 even while it waits
        return dsn if permanent else "4" + dsn[1:]

    def _expired_dsn(self, dsn: str) -> str:
        dsn = dsn or "4.0.0"
        if self.profile.expired_dsn == "permanent" and dsn.startswith("4"):
            return "5" + dsn[1:]
        return dsn


def _by_domain(recipients: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """Recipients grouped by domain, in the order they were written: one delivery each."""
    groups: dict[str, list[str]] = {}
    for r in recipients:
        groups.setdefault(domain_of(r), []).append(r)
    return {domain: tuple(rs) for domain, rs in groups.items()}


def _copy(state: RecipientState) -> RecipientState:
    return dataclasses.replace(state)


def _give_up_why(profile: Profile, history: RetryHistory, now: float) -> str:
    """Why the schedule ran out, in the profile's own terms."""
    queued = format_duration(round(now - history.arrived))
    if profile.retry == "doubling":
        why = f"{history.failures} temporary failures, the most this sender allows"
    elif profile.retry == "rules":
        cutoff = format_duration(profile.retry_rules[-1].cutoff)
        why = f"the retry rules end {cutoff} after the first failure"
    else:
        why = f"past the {format_duration(profile.max_lifetime)} limit"
    return f"the message has been queued for {queued}, {why}: return it to the sender"
