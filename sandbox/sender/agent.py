"""The sender agent: the I/O shell that drives the core over real DNS and real SMTP.

Each (message, recipient domain) is one job, run as one task: wait until the message enters
the queue, then attempt delivery until every recipient is delivered or bounced, sleeping on
the run's clock between attempts. An attempt asks the core's ``Resolution`` which DNS
questions to ask, then the core's ``Attempt`` which SMTP steps to take, performs them, and
feeds back what happened. The shell takes no decision of its own; it reports everything as
events.

At most ``profile.concurrency`` attempts to one domain run at once, like Postfix's
destination concurrency limit.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypedDict

from sandbox.core.classify import NoReply, ServerReply
from sandbox.core.delivery import (
    Action,
    Attempt,
    Connect,
    Disconnect,
    ReadGreeting,
    RecipientState,
    SendCommand,
    SendMessage,
    settle_deferred,
)
from sandbox.core.mx import Answer, NoRoute, Resolution, Route
from sandbox.core.policy import Profile
from sandbox.dns.resolver import StubResolver
from sandbox.events import (
    AttemptFinished,
    AttemptStarted,
    ConnectFailed,
    Connected,
    Decision,
    DnsAnswered,
    DnsAsked,
    Emit,
    MessageQueued,
    RecipientFinal,
    RouteChosen,
    SmtpExchange,
    SmtpFailure,
    Warning,
)
from sandbox.net import AddressMap
from sandbox.scenario.model import MessageSpec
from sandbox.sender.message import compose
from sandbox.sender.smtp import SmtpConnection

__all__ = ["SenderAgent"]


class _Where(TypedDict):
    """The correlation fields every SMTP event of one session shares."""

    t: float
    message: int
    attempt: int
    host: str
    address: str


@dataclass(slots=True)
class _Job:
    spec: MessageSpec
    domain: str
    recipients: tuple[str, ...]
    content: bytes
    attempt: int = 0


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
    ) -> None:
        self.profile = profile
        self._resolver = resolver
        self._network = network
        self._emit = emit
        self._clock = clock
        self._seed = seed
        self._scenario = scenario
        self._slots: dict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(max(1, profile.concurrency))
        )
        self.attempts: dict[tuple[int, str], int] = defaultdict(int)
        self.last: dict[tuple[int, str], RecipientState] = {}
        self.final: dict[tuple[int, str], RecipientFinal] = {}

    # --- the queue ---------------------------------------------------------------------

    async def deliver(self, messages: tuple[MessageSpec, ...]) -> None:
        """Deliver every message; returns when every recipient is delivered or bounced."""
        async with asyncio.TaskGroup() as group:
            for spec in messages:
                content = compose(spec, self._scenario, self._seed)
                for domain, recipients in _by_domain(spec.recipients).items():
                    group.create_task(self._run_job(_Job(spec, domain, recipients, content)))

    def settle_unfinished(self) -> None:
        """At the end of the run: whatever is still queued is reported as deferred."""
        for key, state in sorted(self.last.items()):
            if key not in self.final:
                self._finalise(key[0], state, "deferred")

    async def _run_job(self, job: _Job) -> None:
        await self._sleep_until(job.spec.at)
        if job.domain == min(_by_domain(job.spec.recipients)):
            self._emit(MessageQueued(t=self._clock(), message=job.spec.number,
                                     sender=job.spec.sender, recipients=job.spec.recipients))
        pending = job.recipients
        for r in pending:
            self.last[(job.spec.number, r)] = RecipientState(r)
        while pending:
            job.attempt += 1
            async with self._slots[job.domain]:
                states = await self._attempt(job, pending)
            pending = self._settle(job, states)
            if pending:
                retry_at = self._retry_or_give_up(job, pending)
                if retry_at is None:
                    return
                await self._sleep_until(retry_at)

    def _settle(self, job: _Job, states: dict[str, RecipientState]) -> tuple[str, ...]:
        deferred = []
        for r, state in states.items():
            self.last[(job.spec.number, r)] = state
            if state.status == "pending":
                deferred.append(r)
            else:
                self._finalise(job.spec.number, state, state.status)
        return tuple(deferred)

    def _retry_or_give_up(self, job: _Job, pending: tuple[str, ...]) -> float | None:
        now = self._clock()
        settlement = settle_deferred(self.profile, job.spec.at, now)
        number = job.spec.number
        if settlement.give_up:
            self._decide(job, "bounce", settlement.why, pending)
            for r in pending:
                state = self.last[(number, r)]
                state.reply = f"{state.reply} (message expired)" if state.reply else "expired"
                self._finalise(number, state, "bounced")
            return None
        assert settlement.retry_at is not None
        last = self.last[(number, pending[0])]
        why = f"{last.dsn or '4.0.0'} {last.reply}".strip()
        self._emit(Decision(t=now, message=number, attempt=job.attempt, action="defer",
                            why=why, recipients=pending, retry_at=settlement.retry_at))
        return settlement.retry_at

    def _finalise(self, number: int, state: RecipientState, status: str) -> None:
        key = (number, state.recipient)
        event = RecipientFinal(
            t=self._clock(), message=number, recipient=state.recipient, status=status,
            host=state.host if status == "delivered" else None,
            address=state.address if status == "delivered" else None,
            dsn=state.dsn or ("2.0.0" if status == "delivered" else "4.0.0"),
            reply=state.reply, attempts=self.attempts[key],
        )
        self.final[key] = event
        self._emit(event)

    # --- one attempt -----------------------------------------------------------------------

    async def _attempt(self, job: _Job, pending: tuple[str, ...]) -> dict[str, RecipientState]:
        number = job.spec.number
        for r in pending:
            self.attempts[(number, r)] += 1
        self._emit(AttemptStarted(t=self._clock(), message=number, domain=job.domain,
                                  attempt=job.attempt, recipients=pending))
        try:
            route = await self._resolve(job)
            if isinstance(route, NoRoute):
                return self._no_route(job, route, pending)
            attempt = Attempt(job.spec.sender, pending, route.candidates, self.profile)
            await self._walk(job, attempt)
            return attempt.recipients
        finally:
            self._emit(AttemptFinished(t=self._clock(), message=number, domain=job.domain,
                                       attempt=job.attempt))

    async def _resolve(self, job: _Job) -> Route | NoRoute:
        rng = random.Random(f"{self._seed}:{job.spec.number}:{job.domain}:{job.attempt}")
        resolution = Resolution(job.domain, self.profile, rng)
        while (query := resolution.next_query()) is not None:
            self._emit(DnsAsked(t=self._clock(), message=job.spec.number, attempt=job.attempt,
                                name=query.name, rdtype=query.rdtype))
            result = await self._resolver.query(query.name, query.rdtype)
            self._report_answer(job, result.answer, result.cached)
            resolution.feed(result.answer)
        route = resolution.result
        assert route is not None
        for text in route.warnings:
            self._emit(Warning(t=self._clock(), message=job.spec.number, text=text))
        hosts = tuple((h.preference, h.host, h.addresses) for h in route.hosts)
        if isinstance(route, Route):
            self._emit(RouteChosen(t=self._clock(), message=job.spec.number, attempt=job.attempt,
                                   domain=job.domain, route=route.kind, hosts=hosts, why=route.why))
        return route

    def _report_answer(self, job: _Job, answer: Answer, cached: bool) -> None:
        records = tuple(str(r) for r in answer.mx) + answer.addresses
        self._emit(DnsAnswered(t=self._clock(), message=job.spec.number, attempt=job.attempt,
                               name=answer.name, rdtype=answer.rdtype, rcode=answer.rcode,
                               records=records, cnames=answer.cnames, ttl=answer.ttl,
                               cached=cached))

    def _no_route(
        self, job: _Job, route: NoRoute, pending: tuple[str, ...]
    ) -> dict[str, RecipientState]:
        status: Literal["bounced", "pending"] = "bounced" if route.permanent else "pending"
        states = {r: RecipientState(r, status, route.dsn, route.reason) for r in pending}
        if route.permanent:
            self._decide(job, "bounce", f"{route.reason}: permanent ({route.dsn})", pending)
        return states

    async def _walk(self, job: _Job, attempt: Attempt) -> None:
        connection = SmtpConnection(self._network, self.profile.helo_name)
        current: Connect | None = None
        stage = "connect"
        try:
            while (action := attempt.next_action()) is not None:
                if isinstance(action, Connect):
                    current = action
                outcome = await self._perform(connection, action, job.content)
                assert current is not None
                stage = self._report_step(job, current, action, outcome, stage)
                attempt.receive(outcome)
                for note in attempt.take_notes():
                    self._decide(job, note.action, note.why, note.recipients)
        finally:
            await connection.close(quit=False, timeout=0)

    async def _perform(
        self, connection: SmtpConnection, action: Action, content: bytes
    ) -> ServerReply | NoReply | None:
        match action:
            case Connect(candidate=candidate, timeout=timeout):
                return await connection.connect(candidate.address, timeout)
            case ReadGreeting(timeout=timeout):
                return await connection.read_greeting(timeout)
            case SendCommand(line=line, timeout=timeout):
                return await connection.command(line, timeout)
            case SendMessage(timeout=timeout):
                return await connection.message(content, timeout)
            case Disconnect(quit=quit):
                await connection.close(quit=quit, timeout=self.profile.ehlo_timeout)
                return None
        raise AssertionError(f"unknown action {action!r}")

    def _report_step(
        self,
        job: _Job,
        current: Connect,
        action: Action,
        outcome: ServerReply | NoReply | None,
        stage: str,
    ) -> str:
        base = _Where(t=self._clock(), message=job.spec.number, attempt=job.attempt,
                      host=current.candidate.host, address=current.candidate.address)
        if isinstance(action, Connect):
            if isinstance(outcome, NoReply):
                self._emit(ConnectFailed(**base, reason=outcome.reason, detail=outcome.detail))
            else:
                self._emit(Connected(**base))
            return "greeting"
        if isinstance(action, Disconnect):
            return stage
        stage = {ReadGreeting: "greeting", SendMessage: "message"}.get(type(action), stage)
        command = ""
        if isinstance(action, SendCommand):
            stage, command = action.stage, action.line
        elif isinstance(action, SendMessage):
            command = "<message> ."
        if isinstance(outcome, ServerReply):
            self._emit(SmtpExchange(**base, stage=stage, command=command, code=outcome.code,
                                    reply=outcome.text))
        elif isinstance(outcome, NoReply):
            self._emit(SmtpFailure(**base, stage=stage, command=command, reason=outcome.reason,
                                   detail=outcome.detail))
        return stage

    def _decide(self, job: _Job, action: str, why: str, recipients: tuple[str, ...]) -> None:
        self._emit(Decision(t=self._clock(), message=job.spec.number, attempt=job.attempt,
                            action=action, why=why, recipients=recipients))

    async def _sleep_until(self, when: float) -> None:
        delay = when - self._clock()
        if delay > 0:
            await asyncio.sleep(delay)


def _by_domain(recipients: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Recipients grouped by domain, in the order they were written: one job per domain."""
    groups: dict[str, list[str]] = {}
    for r in recipients:
        groups.setdefault(r.rpartition("@")[2].lower(), []).append(r)
    return {domain: tuple(rs) for domain, rs in groups.items()}
