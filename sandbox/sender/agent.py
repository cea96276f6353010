"""The sender agent: the I/O shell that drives the core over real DNS and real SMTP.

Each (message, recipient domain) is one job, run as one task: wait until the message enters
the queue, then attempt delivery until every recipient is delivered or bounced, sleeping on
the run's clock between attempts. An attempt asks the core's ``Resolution`` which DNS
questions to ask, then the core's ``Attempt`` which SMTP steps to take, performs them, and
feeds back what happened. The shell takes no decision of its own; it reports everything as
events.

Around the attempts, the agent keeps what a queue manager keeps:

- each job's ``RetryHistory``, from which the profile's schedule picks the next try;
- the destinations whose last attempt could not connect anywhere: with Postfix, the other
  messages to them are deferred without a try ("delivery temporarily suspended") until the
  minimum backoff has passed;
- the delivery status notifications: a bounce for recipients that failed for good, a
  "delayed" warning once a message has waited ``delay_warning``. A DSN is a new message from
  ``<>`` to the envelope sender, delivered through the scenario's MX hosts when the sender's
  domain is in the scenario, and otherwise put in the "returned mail" mailbox.

At most ``profile.concurrency`` attempts to one domain run at once, like Postfix's
destination concurrency limit.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypedDict

from sandbox.core.addresses import AddressMap
from sandbox.core.classify import (
    PROBE_COMMAND,
    NoReply,
    Outcome,
    ServerReply,
    SessionStage,
    probe_passed,
)
from sandbox.core.delivery import (
    Action,
    Attempt,
    Connect,
    Disconnect,
    Feedback,
    FinalStatus,
    ReadGreeting,
    RecipientState,
    RecipientStatus,
    Reused,
    SendCommand,
    SendMessage,
    reported_reply,
    settle_deferred,
    where,
)
from sandbox.core.dsn import DsnAction, DsnRecipient, build_dsn
from sandbox.core.mx import Answer, NoRoute, Resolution, Route
from sandbox.core.policy import Profile, Retry, RetryHistory
from sandbox.events import (
    AttemptFinished,
    AttemptStarted,
    Connected,
    ConnectFailed,
    Decision,
    DecisionAction,
    DnsAnswered,
    DnsAsked,
    DsnCreated,
    Emit,
    MessageQueued,
    RecipientDeferred,
    RecipientFinal,
    RouteChosen,
    SmtpExchange,
    SmtpFailure,
    Warning,
)
from sandbox.scenario.model import MessageSpec
from sandbox.sender.message import RUN_EPOCH, compose, message_id
from sandbox.sender.pool import ConnectionCache
from sandbox.sender.resolver import StubResolver
from sandbox.sender.smtp import SmtpConnection

__all__ = ["ReturnedMail", "SenderAgent"]


class _Where(TypedDict):
    """The correlation fields every SMTP event of one session shares."""

    t: float
    message: int
    attempt: int
    host: str
    address: str


@dataclass(frozen=True, slots=True)
class ReturnedMail:
    """A DSN whose recipient is outside the scenario: kept in the returned-mail mailbox."""

    t: float
    message: int
    to: str
    action: DsnAction
    data: bytes


@dataclass(slots=True)
class _Job:
    spec: MessageSpec
    domain: str
    recipients: tuple[str, ...]
    content: bytes
    message_id: str
    is_dsn: bool = False
    attempt: int = 0
    history: RetryHistory | None = None
    warned: bool = False
    suspended_reply: dict[str, str] = field(default_factory=dict)


class SenderAgent:
    def __init__(
        self,
        *,
        profile: Profile,
        resolver: StubResolver,
        network: AddressMap,
        emit: Emit,
        clock: Callable[[], float],
        seed: int,
        scenario: str = "",
        in_scenario: Callable[[str], bool] = lambda domain: False,
    ) -> None:
        self.profile = profile
        self._resolver = resolver
        self._network = network
        self._emit = emit
        self._clock = clock
        self._seed = seed
        self._scenario = scenario
        self._in_scenario = in_scenario
        self._slots: dict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(max(1, profile.concurrency))
        )
        self._suspended_until: dict[str, tuple[float, str]] = {}
        self._waiting: dict[str, int] = defaultdict(int)  # jobs queued for a domain's slot
        self._cache = ConnectionCache(clock=clock)
        self._group: asyncio.TaskGroup | None = None
        self._next_number = 1
        self.attempts: dict[tuple[int, str], int] = defaultdict(int)
        self.last: dict[tuple[int, str], RecipientState] = {}
        self.final: dict[tuple[int, str], RecipientFinal] = {}
        self.dsn_messages: dict[int, int] = {}  # DSN message number -> the message it reports
        self.returned: list[ReturnedMail] = []

    # --- the queue ---------------------------------------------------------------------

    async def deliver(self, messages: tuple[MessageSpec, ...]) -> None:
        """Deliver every message (and the DSNs they cause); returns when all are settled."""
        self._next_number = max((m.number for m in messages), default=0) + 1
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                for spec in messages:
                    mid = message_id(self._scenario, self._seed, spec.number)
                    self._enqueue(spec, compose(spec, self._scenario, self._seed), mid)
        finally:
            await self._cache.close()

    def settle_unfinished(self) -> None:
        """At the end of the run: whatever is still queued is reported as deferred."""
        for key, state in sorted(self.last.items()):
            if key not in self.final:
                self._finalise(key[0], state, "deferred")

    def _enqueue(
        self, spec: MessageSpec, content: bytes, mid: str, *, is_dsn: bool = False
    ) -> None:
        assert self._group is not None
        for r in spec.recipients:
            # Known from the start, so that a message the run ends before is still reported.
            self.last[(spec.number, r)] = RecipientState(r, reply="not yet in the queue")
        for domain, recipients in _by_domain(spec.recipients).items():
            job = _Job(spec, domain, recipients, content, mid, is_dsn)
            self._group.create_task(self._run_job(job))

    async def _run_job(self, job: _Job) -> None:
        await self._sleep_until(job.spec.at)
        number = job.spec.number
        if job.domain == next(iter(_by_domain(job.spec.recipients))):
            self._emit(
                MessageQueued(
                    t=self._clock(),
                    message=number,
                    sender=job.spec.sender,
                    recipients=job.spec.recipients,
                    size=len(job.content),
                    message_id=job.message_id,
                    about=self.dsn_messages.get(number),
                )
            )
        pending = job.recipients
        for r in pending:
            self.last[(number, r)] = RecipientState(r, reply="in its first attempt")
        while pending:
            states = await self._attempt_or_suspend(job, pending)
            pending = self._settle(job, states)
            if pending:
                retry = self._retry_or_give_up(job, pending)
                if retry is None:
                    return
                await self._sleep_until(retry.at)

    async def _attempt_or_suspend(
        self, job: _Job, pending: tuple[str, ...]
    ) -> dict[str, RecipientState]:
        # Checked before waiting for a slot, and again once the slot is ours: the attempts
        # ahead of this one may have found the destination dead in the meantime.
        if (suspended := self._suspended(job, pending)) is not None:
            return suspended
        self._waiting[job.domain] += 1
        async with self._slots[job.domain]:
            self._waiting[job.domain] -= 1
            if (suspended := self._suspended(job, pending)) is not None:
                return suspended
            job.suspended_reply = {}
            job.attempt += 1
            return await self._attempt(job, pending)

    def _suspended(self, job: _Job, pending: tuple[str, ...]) -> dict[str, RecipientState] | None:
        """Deferred without a try while the destination is marked dead (Postfix)."""
        suspended = self._suspended_until.get(job.domain)
        if suspended is None or self._clock() >= suspended[0]:
            return None
        reply = f"delivery temporarily suspended: {suspended[1]}"
        job.suspended_reply = dict.fromkeys(pending, reply)
        number = job.spec.number
        return {
            r: RecipientState(r, "pending", self.last[(number, r)].dsn or "4.4.1", reply)
            for r in pending
        }

    def _settle(self, job: _Job, states: dict[str, RecipientState]) -> tuple[str, ...]:
        deferred, bounced = [], []
        for r, state in states.items():
            # Once a final dot went unanswered, a copy may exist, whatever later attempts do.
            state.unsure = state.unsure or self.last[(job.spec.number, r)].unsure
            self.last[(job.spec.number, r)] = state
            if state.status == "pending":
                deferred.append(r)
            else:
                self._finalise(job.spec.number, state, state.status)
                if state.status == "bounced":
                    bounced.append(state)
        self._return_to_sender(job, tuple(bounced), "failed")
        return tuple(deferred)

    def _retry_or_give_up(self, job: _Job, pending: tuple[str, ...]) -> Retry | None:
        now = self._clock()
        history = self._history_after_failure(job, now)
        settlement = settle_deferred(self.profile, history, now)
        number = job.spec.number
        if settlement.retry is None:
            self._decide(job, "bounce", settlement.why, pending)
            states = tuple(self.last[(number, r)] for r in pending)
            for state in states:
                self._finalise(number, state, "bounced", expired=True)
            self._return_to_sender(job, states, "failed", expired=True)
            return None
        retry = settlement.retry
        job.history = RetryHistory(history.arrived, history.first_failure, history.failures, retry)
        self._report_deferral(job, pending, retry)
        self._maybe_warn(job, pending, now, retry)
        return retry

    def _history_after_failure(self, job: _Job, now: float) -> RetryHistory:
        if job.suspended_reply and job.history is not None:
            return job.history  # a suspended destination costs no failure
        if job.history is None:
            return RetryHistory(job.spec.at, now, 1)
        return RetryHistory(
            job.history.arrived,
            job.history.first_failure,
            job.history.failures + 1,
            job.history.last,
        )

    def _report_deferral(self, job: _Job, pending: tuple[str, ...], retry: Retry) -> None:
        now, number = self._clock(), job.spec.number
        last = self.last[(number, pending[0])]
        why = f"{_status_code(last)} {last.reply}".strip()
        self._emit(
            Decision(
                t=now,
                message=number,
                attempt=job.attempt,
                action="defer",
                why=why,
                recipients=pending,
                retry_at=retry.at,
            )
        )
        for r in pending:
            state = self.last[(number, r)]
            self._emit(
                RecipientDeferred(
                    t=now,
                    message=number,
                    recipient=r,
                    attempt=job.attempt,
                    host=state.host,
                    address=state.address,
                    dsn=_status_code(state),
                    reply=state.reply,
                    retry_at=retry.at,
                    suspended=bool(job.suspended_reply),
                )
            )

    def _finalise(
        self, number: int, state: RecipientState, status: FinalStatus, *, expired: bool = False
    ) -> None:
        key = (number, state.recipient)
        event = RecipientFinal(
            t=self._clock(),
            message=number,
            recipient=state.recipient,
            status=status,
            host=state.host if status == "delivered" else None,
            address=state.address if status == "delivered" else None,
            dsn=_status_code(state),
            reply=state.reply,
            attempts=self.attempts[key],
            expired=expired,
            relay=where(state.host, state.address) if state.host and state.address else None,
            unsure=state.unsure,
        )
        self.final[key] = event
        self._emit(event)

    # --- delivery status notifications -------------------------------------------------

    def _maybe_warn(self, job: _Job, pending: tuple[str, ...], now: float, retry: Retry) -> None:
        warning = self.profile.delay_warning
        if warning is None or job.warned or now - job.spec.at < warning:
            return
        job.warned = True
        states = tuple(self.last[(job.spec.number, r)] for r in pending)
        self._return_to_sender(job, states, "delayed")

    def _return_to_sender(
        self,
        job: _Job,
        states: tuple[RecipientState, ...],
        action: DsnAction,
        *,
        expired: bool = False,
    ) -> None:
        sender = job.spec.sender
        if not states or job.is_dsn or not sender:
            return  # never a bounce about a bounce (RFC 5321 §4.5.5 / RFC 3464 §2)
        now = self._clock()
        mid = f"<dsn.{action}.{job.spec.number}.{round(now)}@sender.sandbox.test>"
        data = self._dsn_bytes(job, states, action, now, mid, expired=expired)
        domain = sender.rpartition("@")[2].lower()
        recipients = tuple(s.recipient for s in states)
        dsn_message: int | None = None
        if self._in_scenario(domain):
            dsn_message = self._next_number
            self._next_number += 1
            self.dsn_messages[dsn_message] = job.spec.number
        else:
            self.returned.append(ReturnedMail(now, job.spec.number, sender, action, data))
        self._emit(
            DsnCreated(
                t=now,
                message=job.spec.number,
                action=action,
                to=sender,
                recipients=recipients,
                dsn_message=dsn_message,
                via="returned_mailbox" if dsn_message is None else "mx",
            )
        )
        if dsn_message is not None:
            self._enqueue(MessageSpec(dsn_message, "", (sender,), now), data, mid, is_dsn=True)

    def _dsn_bytes(
        self,
        job: _Job,
        states: tuple[RecipientState, ...],
        action: DsnAction,
        now: float,
        mid: str,
        *,
        expired: bool,
    ) -> bytes:
        when = RUN_EPOCH + timedelta(seconds=now)
        history = job.history
        until = None
        if action == "delayed" and history is not None:
            until = RUN_EPOCH + timedelta(seconds=history.arrived + self.profile.max_lifetime)
        return build_dsn(
            original=job.content,
            original_sender=job.spec.sender,
            arrival=RUN_EPOCH + timedelta(seconds=job.spec.at),
            recipients=tuple(
                # An expired recipient keeps its last 4.x.x status, as Postfix reports it.
                DsnRecipient(
                    s.recipient,
                    action,
                    _status_code(s),
                    reported_reply(s.reply, expired=expired),
                    s.host,
                    when,
                )
                for s in states
            ),
            message_id=mid,
            date=when,
            will_retry_until=until,
        )

    # --- one attempt -----------------------------------------------------------------------

    async def _attempt(self, job: _Job, pending: tuple[str, ...]) -> dict[str, RecipientState]:
        number = job.spec.number
        for r in pending:
            self.attempts[(number, r)] += 1
        self._emit(
            AttemptStarted(
                t=self._clock(),
                message=number,
                domain=job.domain,
                attempt=job.attempt,
                recipients=pending,
            )
        )
        try:
            route = await self._resolve(job)
            if isinstance(route, NoRoute):
                return self._no_route(job, route, pending)
            attempt = Attempt(job.spec.sender, pending, route.candidates, self.profile)
            await self._walk(job, attempt)
            self._note_dead_destination(job.domain, attempt)
            return attempt.recipients
        finally:
            self._emit(
                AttemptFinished(
                    t=self._clock(), message=number, domain=job.domain, attempt=job.attempt
                )
            )

    def _note_dead_destination(self, domain: str, attempt: Attempt) -> None:
        """Postfix marks a destination dead when an attempt could not connect anywhere."""
        if not self.profile.suspend_dead_destinations:
            return
        if attempt.connected or not attempt.pending:
            self._suspended_until.pop(domain, None)
            return
        last = attempt.recipients[attempt.pending[0]].reply
        self._suspended_until[domain] = (self._clock() + self.profile.min_backoff, last)

    async def _resolve(self, job: _Job) -> Route | NoRoute:
        rng = random.Random(f"{self._seed}:{job.spec.number}:{job.domain}:{job.attempt}")
        resolution = Resolution(job.domain, self.profile, rng)
        while (query := resolution.next_query()) is not None:
            self._emit(
                DnsAsked(
                    t=self._clock(),
                    message=job.spec.number,
                    attempt=job.attempt,
                    name=query.name,
                    rdtype=query.rdtype,
                )
            )
            result = await self._resolver.query(query.name, query.rdtype)
            self._report_answer(job, result.answer, result.cached)
            resolution.feed(result.answer)
        route = resolution.result
        assert route is not None
        for text in route.warnings:
            self._emit(Warning(t=self._clock(), message=job.spec.number, text=text))
        hosts = tuple((h.preference, h.host, h.addresses) for h in route.hosts)
        if isinstance(route, Route):
            self._emit(
                RouteChosen(
                    t=self._clock(),
                    message=job.spec.number,
                    attempt=job.attempt,
                    domain=job.domain,
                    route=route.kind,
                    hosts=hosts,
                    why=route.why,
                )
            )
        return route

    def _report_answer(self, job: _Job, answer: Answer, cached: bool) -> None:
        records = tuple(str(r) for r in answer.mx) + answer.addresses
        self._emit(
            DnsAnswered(
                t=self._clock(),
                message=job.spec.number,
                attempt=job.attempt,
                name=answer.name,
                rdtype=answer.rdtype,
                rcode=answer.rcode,
                records=records,
                cnames=answer.cnames,
                ttl=answer.ttl,
                cached=cached,
            )
        )

    def _no_route(
        self, job: _Job, route: NoRoute, pending: tuple[str, ...]
    ) -> dict[str, RecipientState]:
        permanent = route.permanent
        if route.kind == "no_address" and self.profile.no_address == "defer":
            permanent = False
        status: RecipientStatus = "bounced" if permanent else "pending"
        dsn = route.dsn if permanent else "4" + route.dsn[1:]
        states = {r: RecipientState(r, status, dsn, route.reason) for r in pending}
        if permanent:
            self._decide(job, "bounce", f"{route.reason}: permanent ({route.dsn})", pending)
        return states

    async def _walk(self, job: _Job, attempt: Attempt) -> None:
        connection = SmtpConnection(self._network, self.profile.helo_name)
        current: Connect | None = None
        opened = self._clock()
        try:
            while (action := attempt.next_action()) is not None:
                if isinstance(action, Connect):
                    current = action
                    outcome, opened = await self._connect(job, connection, action)
                elif isinstance(action, Disconnect):
                    assert current is not None
                    await self._disconnect(job, connection, action, current, opened)
                    outcome = None
                else:
                    outcome = await self._perform(connection, action, job.content)
                assert current is not None
                self._report_step(job, current, action, outcome)
                attempt.receive(outcome)
                for note in attempt.take_notes():
                    self._decide(job, note.action, note.why, note.recipients)
        finally:
            await connection.close(quit=False, timeout=0)

    async def _connect(
        self, job: _Job, connection: SmtpConnection, action: Connect
    ) -> tuple[Feedback, float]:
        """A session kept open for this address if there is one (and RSET says it is alive),
        otherwise a new connection. Returns the outcome and when the session was opened."""
        address = action.candidate.address
        while (kept := self._cache.take(address)) is not None:
            client, opened = kept
            base = self._where(job, action)
            self._emit(Connected(**base, reused=True))
            probe = await connection.adopt(client, self.profile.ehlo_timeout)
            self._report_reply(base, "rset", PROBE_COMMAND, probe)
            if probe_passed(probe):
                return Reused(), opened
            await connection.close(quit=False, timeout=0)
        return await connection.connect(address, action.timeout), self._clock()

    async def _disconnect(
        self,
        job: _Job,
        connection: SmtpConnection,
        action: Disconnect,
        current: Connect,
        opened: float,
    ) -> None:
        """QUIT, unless the session can serve a message already waiting for this domain."""
        waiting = self._waiting[job.domain]
        if action.reusable and waiting > 0 and self._cache.accepts(opened):
            client = connection.release()
            if client is not None:
                candidate = current.candidate
                self._cache.park(candidate.address, client, opened)
                self._decide(
                    job,
                    "keep_open",
                    f"keep the connection to {where(candidate.host, candidate.address)} open: "
                    f"{waiting} more message(s) wait for {job.domain} (Postfix's connection cache)",
                    (),
                )
                return None
        await connection.close(quit=action.quit, timeout=self.profile.ehlo_timeout)

    def _where(self, job: _Job, connect: Connect) -> _Where:
        candidate = connect.candidate
        return _Where(
            t=self._clock(),
            message=job.spec.number,
            attempt=job.attempt,
            host=candidate.host,
            address=candidate.address,
        )

    async def _perform(
        self,
        connection: SmtpConnection,
        action: ReadGreeting | SendCommand | SendMessage,
        content: bytes,
    ) -> Outcome:
        match action:
            case ReadGreeting(timeout=timeout):
                return await connection.read_greeting(timeout)
            case SendCommand(line=line, timeout=timeout):
                return await connection.command(line, timeout)
            case SendMessage(timeout=timeout):
                return await connection.message(content, timeout)

    def _report_step(self, job: _Job, current: Connect, action: Action, outcome: Feedback) -> None:
        base = self._where(job, current)
        match action:
            case Connect():
                if isinstance(outcome, NoReply):
                    assert outcome.reason != "lost"  # a connect is refused, times out or fails
                    self._emit(ConnectFailed(**base, reason=outcome.reason, detail=outcome.detail))
                elif not isinstance(outcome, Reused):  # a reused session was told in _connect
                    self._emit(Connected(**base))
            case ReadGreeting():
                self._report_reply(base, "greeting", "", outcome)
            case SendCommand(stage=stage, line=line):
                self._report_reply(base, stage, line, outcome)
            case SendMessage():
                self._report_reply(base, "message", "<message> .", outcome)
            case Disconnect():
                pass

    def _report_reply(
        self, base: _Where, stage: SessionStage, command: str, outcome: Feedback
    ) -> None:
        """One step's reply, or the lack of one (the greeting has no command)."""
        if isinstance(outcome, ServerReply):
            self._emit(
                SmtpExchange(
                    **base, stage=stage, command=command, code=outcome.code, reply=outcome.text
                )
            )
        elif isinstance(outcome, NoReply):
            assert outcome.reason in ("timeout", "lost")  # a step of an open session
            self._emit(
                SmtpFailure(
                    **base,
                    stage=stage,
                    command=command,
                    reason=outcome.reason,
                    detail=outcome.detail,
                )
            )

    def _decide(
        self, job: _Job, action: DecisionAction, why: str, recipients: tuple[str, ...]
    ) -> None:
        self._emit(
            Decision(
                t=self._clock(),
                message=job.spec.number,
                attempt=job.attempt,
                action=action,
                why=why,
                recipients=recipients,
            )
        )

    async def _sleep_until(self, when: float) -> None:
        delay = when - self._clock()
        if delay > 0:
            await asyncio.sleep(delay)


def _status_code(state: RecipientState) -> str:
    """The DSN status to report: the recipient's own, or the basic one for its state."""
    return state.dsn or ("2.0.0" if state.status == "delivered" else "4.0.0")


def _by_domain(recipients: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Recipients grouped by domain, in the order they were written: one job per domain."""
    groups: dict[str, list[str]] = {}
    for r in recipients:
        groups.setdefault(r.rpartition("@")[2].lower(), []).append(r)
    return {domain: tuple(rs) for domain, rs in groups.items()}
