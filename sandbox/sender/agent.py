"""The sender agent: the I/O shell that drives the core over real DNS and real SMTP.

It decides nothing. The core's ``Queue`` says which attempt to start when, and what follows
each one; the core's ``Resolution`` says which DNS questions to ask; the core's ``Attempt``
says which SMTP step to take. The agent performs those steps on real sockets, feeds back
what happened, and reports everything as events::

    submit every message to the queue
    loop until the queue is finished:
        for each output of queue.poll(now): start an attempt task, or report what happened
        sleep until queue.next_wakeup(), or until an attempt ends

An attempt task resolves the domain, walks the route with the ``Attempt`` over one
``SmtpConnection``, and hands the attempt's report to the queue. A session that ends well
while more mail waits for its destination is parked in the connection cache for the next
attempt to the same address (Postfix's connection cache, on demand), when the queue says
there is such a backlog.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from email.parser import BytesHeaderParser
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
    ReadGreeting,
    RecipientState,
    Reused,
    SendCommand,
    SendMessage,
    StartTls,
    reported_reply,
    where,
)
from sandbox.core.dsn import DsnAction, DsnRecipient, build_dsn
from sandbox.core.esmtp import MessageFacts
from sandbox.core.mx import Answer, NoRoute, Resolution, Route
from sandbox.core.policy import Profile
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
)
from sandbox.core.tls import Established, TlsStep
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
    MtaStsChecked,
    RecipientDeferred,
    RecipientFinal,
    RouteChosen,
    RouteFailed,
    SmtpExchange,
    SmtpFailure,
    TlsChecked,
    Warning,
)
from sandbox.scenario.model import MessageSpec
from sandbox.sender.message import RUN_EPOCH, compose, message_id
from sandbox.sender.pool import ConnectionCache, Kept
from sandbox.sender.resolver import StubResolver
from sandbox.sender.smtp import SmtpConnection
from sandbox.sender.tls_policy import PolicyFound, TlsShell
from sandbox.tls.certificates import CertificateAuthority

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


@dataclass(frozen=True, slots=True)
class _Session:
    """An SMTP session's life: when it was opened, and the deliveries it has carried."""

    opened: float
    uses: int


@dataclass(frozen=True, slots=True)
class _Content:
    data: bytes
    message_id: str

    @property
    def facts(self) -> MessageFacts:
        return MessageFacts.of(self.data)


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
        authority: CertificateAuthority | None = None,
    ) -> None:
        self.profile = profile
        self._resolver = resolver
        self._network = network
        self._emit = emit
        self._clock = clock
        self._seed = seed
        self._scenario = scenario
        self.queue = Queue(profile, in_scenario=in_scenario)
        self._contents: dict[int, _Content] = {}
        self._cache = ConnectionCache()
        self._group: asyncio.TaskGroup | None = None
        self._changed = asyncio.Event()
        self.final: dict[tuple[int, str], RecipientFinal] = {}
        self.dsn_messages: dict[int, int] = {}  # DSN message number -> the message it reports
        self.returned: list[ReturnedMail] = []
        # STARTTLS, DANE and MTA-STS: what the network tells, for the core to judge.
        self.tls = TlsShell(profile=profile, authority=authority, network=network, clock=clock)

    # --- the driver loop -----------------------------------------------------------------

    async def deliver(
        self, messages: tuple[MessageSpec, ...], contents: Mapping[int, bytes] | None = None
    ) -> None:
        """Deliver every message (and the DSNs they cause); returns when all are settled.

        Each message is the sandbox's own test message unless ``contents`` gives its bytes
        by number (``mxsandbox send`` carries a message file of the user's)."""
        given = contents or {}
        for spec in messages:
            data = given.get(spec.number)
            if data is None:
                mid = message_id(self._scenario, self._seed, spec.number)
                content = _Content(compose(spec, self._scenario, self._seed), mid)
            else:
                content = _Content(data, _header_message_id(data))
            self._contents[spec.number] = content
            self.queue.submit(Envelope(spec.number, spec.sender, spec.recipients, spec.at))
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                try:
                    await self._drive(loop)
                finally:
                    # Cancelled (the run was interrupted): the attempts in flight end now,
                    # and nothing new may start while they do.
                    self._group = None
        finally:
            await self._cache.close()

    async def _drive(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            self._pump()
            if self.queue.finished:
                return
            self._changed.clear()
            wakeup = self.queue.next_wakeup()
            timer = None
            if wakeup is not None:
                timer = loop.call_later(max(0.0, wakeup - self._clock()), self._wake)
            await self._changed.wait()
            if timer is not None:
                timer.cancel()

    def settle_unfinished(self) -> None:
        """At the end of the run: whatever is still queued is reported as deferred."""
        for output in self.queue.give_up_unfinished():
            self._carry_out(output)

    def _wake(self) -> None:
        self._changed.set()

    def _pump(self) -> None:
        """Carry out everything the queue has for now."""
        if self._group is None:
            return  # the run is ending: settle_unfinished reports the rest
        for output in self.queue.poll(self._clock()):
            self._carry_out(output)

    def _carry_out(self, output: Output) -> None:
        match output:
            case Start():
                if self._group is not None:
                    self._group.create_task(self._attempt(output))
            case Enqueued(envelope=envelope):
                content = self._contents[envelope.number]
                self._emit(
                    MessageQueued(
                        t=self._clock(),
                        message=envelope.number,
                        sender=envelope.sender,
                        recipients=envelope.recipients,
                        size=len(content.data),
                        message_id=content.message_id,
                        about=envelope.about,
                    )
                )
            case Deferred():
                self._report_deferral(output)
            case Bounce(number=number, attempt=attempt, why=why, recipients=recipients):
                self._decide(number, attempt, "bounce", why, recipients)
            case Final():
                self._report_final(output)
            case Returned():
                self._return_to_sender(output)

    # --- reporting the queue's outputs -------------------------------------------------------

    def _report_deferral(self, deferred: Deferred) -> None:
        now = self._clock()
        recipients = tuple(s.recipient for s in deferred.states)
        self._emit(
            Decision(
                t=now,
                message=deferred.number,
                attempt=deferred.attempt,
                action="defer",
                why=deferred.why,
                recipients=recipients,
                retry_at=deferred.retry_at,
            )
        )
        for state in deferred.states:
            self._emit(
                RecipientDeferred(
                    t=now,
                    message=deferred.number,
                    recipient=state.recipient,
                    attempt=deferred.attempt,
                    host=state.host,
                    address=state.address,
                    dsn=_status_code(state),
                    reply=state.reply,
                    retry_at=deferred.retry_at,
                    suspended=not deferred.tried,
                    relay=state.relay,
                )
            )

    def _report_final(self, final: Final) -> None:
        state = final.state
        delivered = final.status == "delivered"
        event = RecipientFinal(
            t=self._clock(),
            message=final.number,
            recipient=state.recipient,
            status=final.status,
            host=state.host if delivered else None,
            address=state.address if delivered else None,
            dsn=_status_code(state),
            reply=state.reply,
            attempts=final.attempts,
            expired=final.expired,
            relay=state.relay,
            unsure=state.unsure,
            tls=state.tls.version if state.tls is not None else "",
            tls_verified=state.tls is not None and state.tls.verified,
        )
        self.final[(final.number, state.recipient)] = event
        self._emit(event)

    def _return_to_sender(self, returned: Returned) -> None:
        data = self._dsn_bytes(returned)
        if returned.number is None:
            self.returned.append(
                ReturnedMail(returned.at, returned.about, returned.to, returned.action, data)
            )
        else:
            self.dsn_messages[returned.number] = returned.about
            self._contents[returned.number] = _Content(data, returned.message_id)
        self._emit(
            DsnCreated(
                t=returned.at,
                message=returned.about,
                action=returned.action,
                to=returned.to,
                recipients=tuple(s.recipient for s in returned.states),
                dsn_message=returned.number,
                via=returned.via,
                message_id=returned.message_id,
            )
        )

    def _dsn_bytes(self, returned: Returned) -> bytes:
        when = RUN_EPOCH + timedelta(seconds=returned.at)
        original = self._contents[returned.about]
        envelope_arrival = self.queue.arrival_of(returned.about)
        until = None
        if returned.retry_until is not None:
            until = RUN_EPOCH + timedelta(seconds=returned.retry_until)
        expired = {
            key[1]
            for key, final in self.queue.final.items()
            if key[0] == returned.about and final.expired
        }
        return build_dsn(
            original=original.data,
            original_sender=returned.to,
            arrival=RUN_EPOCH + timedelta(seconds=envelope_arrival),
            recipients=tuple(
                DsnRecipient(
                    s.recipient,
                    returned.action,
                    _status_code(s),
                    reported_reply(s.reply, expired=s.recipient in expired),
                    s.host if s.relay else None,
                    when,
                )
                for s in returned.states
            ),
            message_id=returned.message_id,
            date=when,
            will_retry_until=until,
        )

    # --- one attempt -------------------------------------------------------------------------

    async def _attempt(self, start: Start) -> None:
        number = start.number
        self._emit(
            AttemptStarted(
                t=self._clock(),
                message=number,
                domain=start.domain,
                attempt=start.attempt,
                recipients=start.recipients,
                active_since=start.active_since,
            )
        )
        key = (number, start.attempt)
        try:
            answers: list[Answer] = []
            route = await self._resolve(start, answers)
            if isinstance(route, NoRoute):
                self._emit(
                    RouteFailed(
                        t=self._clock(),
                        message=number,
                        attempt=start.attempt,
                        domain=start.domain,
                        reason=route.kind,
                        permanent=route.permanent,
                        why=route.reason,
                    )
                )
                self.queue.no_route(start, route, self._clock())
            else:
                facts = await self.tls.facts(
                    key,
                    start.domain,
                    route,
                    answers,
                    lambda name, rdtype: self._ask(start, name, rdtype),
                    lambda found: self._report_policy(start, found),
                )
                kept = self._cache.take_for(start.domain)
                attempt = Attempt(
                    start.sender,
                    start.recipients,
                    route.candidates,
                    self.profile,
                    avoid=start.avoid,
                    tls=facts,
                    waited=self._clock() - self.queue.arrival_of(number),
                    kept=kept[0] if kept is not None else None,
                    facts=self._contents[number].facts,
                )
                await self._walk(start, attempt, kept)
                self.queue.attempt_done(start, attempt.report(), self._clock())
        finally:
            self.tls.done(key)
            self._emit(
                AttemptFinished(
                    t=self._clock(), message=number, domain=start.domain, attempt=start.attempt
                )
            )
        # What follows the attempt is told right after it, then the driver looks again.
        self._pump()
        self._changed.set()

    async def _resolve(self, start: Start, answers: list[Answer]) -> Route | NoRoute:
        """The route, asked through DNS; every answer is also kept in ``answers``."""
        rng = random.Random(f"{self._seed}:{start.number}:{start.domain}:{start.attempt}")
        resolution = Resolution(start.domain, self.profile, rng)
        while (query := resolution.next_query()) is not None:
            answer = await self._ask(start, query.name, query.rdtype)
            answers.append(answer)
            resolution.feed(answer)
        route = resolution.result
        assert route is not None
        for text in route.warnings:
            self._emit(Warning(t=self._clock(), message=start.number, text=text))
        hosts = tuple((h.preference, h.host, h.addresses) for h in route.hosts)
        if isinstance(route, Route):
            self._emit(
                RouteChosen(
                    t=self._clock(),
                    message=start.number,
                    attempt=start.attempt,
                    domain=start.domain,
                    route=route.kind,
                    hosts=hosts,
                    why=route.why,
                    discarded=route.discarded,
                )
            )
        return route

    async def _ask(self, start: Start, name: str, rdtype: str) -> Answer:
        """One DNS question of an attempt, told as it is asked and answered."""
        self._emit(
            DnsAsked(
                t=self._clock(),
                message=start.number,
                attempt=start.attempt,
                name=name,
                rdtype=rdtype,
            )
        )
        result = await self._resolver.query(name, rdtype)
        self._report_answer(start, result.answer, result.cached)
        return result.answer

    def _report_answer(self, start: Start, answer: Answer, cached: bool) -> None:
        records = tuple(str(r) for r in answer.mx) + answer.addresses + answer.texts
        self._emit(
            DnsAnswered(
                t=self._clock(),
                message=start.number,
                attempt=start.attempt,
                name=answer.name,
                rdtype=answer.rdtype,
                rcode=answer.rcode,
                records=records,
                cnames=answer.cnames,
                ttl=answer.ttl,
                cached=cached,
                secure=answer.secure,
            )
        )

    def _report_policy(self, start: Start, found: PolicyFound) -> None:
        policy = found.policy
        self._emit(
            MtaStsChecked(
                t=self._clock(),
                message=start.number,
                attempt=start.attempt,
                domain=found.domain,
                id=found.id,
                mode=policy.mode if policy is not None else "",
                mx=policy.mx if policy is not None else (),
                max_age=policy.max_age if policy is not None else 0,
                source=found.source,
                url=found.url,
                failure=found.failure or "",
                detail=found.detail,
            )
        )

    async def _walk(self, start: Start, attempt: Attempt, kept: tuple[str, Kept] | None) -> None:
        """Walk the attempt over one connection. ``kept``: a session parked for this
        destination, taken for this delivery (the attempt starts at its host)."""
        connection = SmtpConnection(self._network, self.profile.helo_name)
        content = self._contents[start.number].data
        current: Connect | None = None
        session = _Session(self._clock(), 1)
        tls: Established | None = None  # the session's TLS, for the connection cache
        try:
            self._tell(start, attempt)  # hosts skipped before the first connect
            while (action := attempt.next_action()) is not None:
                outcome: Feedback
                if isinstance(action, Connect):
                    current = action
                    mine = None
                    if kept is not None and _fits(kept, action):
                        mine, kept = kept[1], None
                    outcome, session = await self._connect(start, connection, action, mine)
                    tls = outcome.tls if isinstance(outcome, Reused) else None
                elif isinstance(action, Disconnect):
                    assert current is not None
                    await self._disconnect(start, connection, action, current, session, tls)
                    outcome = None
                elif isinstance(action, StartTls):
                    assert current is not None
                    outcome = await self._starttls(start, connection, action, current)
                    tls = outcome if isinstance(outcome, Established) else None
                else:
                    outcome = await self._perform(connection, action, content)
                if current is not None:
                    self._report_step(start, current, action, outcome)
                attempt.receive(outcome)
                self._tell(start, attempt)
        finally:
            await connection.close(quit=False, timeout=0)
            if kept is not None:  # taken for this delivery, which never came to its host
                self._cache.put_back(*kept)

    async def _starttls(
        self, start: Start, connection: SmtpConnection, action: StartTls, current: Connect
    ) -> Feedback:
        """STARTTLS and the handshake; the host's reply is told here, the verdict by the
        core's TLS step."""
        key = (start.number, start.attempt)
        upgrade = await self.tls.upgrade(key, start.domain, connection, action)
        if upgrade.ready is not None:
            self._report_reply(self._where(start, current), "starttls", "STARTTLS", upgrade.ready)
        return upgrade.outcome

    async def _connect(
        self, start: Start, connection: SmtpConnection, action: Connect, mine: Kept | None
    ) -> tuple[Feedback, _Session]:
        """A session kept open for this address if there is one (``mine``, taken for this
        delivery, or one parked for the address) and RSET says it is alive, otherwise a new
        connection. Returns the outcome and the session's life so far."""
        address = action.candidate.address
        while (kept := mine or self._cache.take(address, action.tls)) is not None:
            mine = None
            base = self._where(start, action)
            session = _Session(kept.opened, kept.uses + 1)
            self._emit(Connected(**base, reused=True, use=session.uses))
            probe = await connection.adopt(kept.client, self.profile.ehlo_timeout)
            self._report_reply(base, "rset", PROBE_COMMAND, probe)
            if probe_passed(probe):
                return Reused(kept.extensions, kept.tls), session
            await connection.close(quit=False, timeout=0)
        return await connection.connect(address, action.timeout), _Session(self._clock(), 1)

    async def _disconnect(
        self,
        start: Start,
        connection: SmtpConnection,
        action: Disconnect,
        current: Connect,
        session: _Session,
        tls: Established | None,
    ) -> None:
        """QUIT, unless the queue keeps the session for a delivery already waiting for this
        domain."""
        if action.reusable and self.queue.keep_open(start.domain, self._clock() - session.opened):
            client = connection.release()
            if client is not None:
                candidate = current.candidate
                self._cache.park(
                    candidate.address,
                    client,
                    session.opened,
                    start.domain,
                    session.uses,
                    action.extensions,
                    tls_key=current.tls,
                    tls=tls,
                )
                self._decide(
                    start.number,
                    start.attempt,
                    "keep_open",
                    f"keep the connection to {where(candidate.host, candidate.address)} open: "
                    f"{self.queue.backlog(start.domain)} more message(s) wait for "
                    f"{start.domain} (a connection cache)",
                    (),
                )
                return None
        reply = await connection.close(quit=action.quit, timeout=self.profile.ehlo_timeout)
        if reply is not None:
            self._report_reply(self._where(start, current), "quit", "QUIT", reply)

    def _where(self, start: Start, connect: Connect) -> _Where:
        candidate = connect.candidate
        return _Where(
            t=self._clock(),
            message=start.number,
            attempt=start.attempt,
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

    def _report_step(
        self, start: Start, current: Connect, action: Action, outcome: Feedback
    ) -> None:
        base = self._where(start, current)
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
            case StartTls():
                if isinstance(outcome, ServerReply | NoReply) and not _ready(outcome):
                    self._report_reply(base, "starttls", "STARTTLS", outcome)
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

    def _tell(self, start: Start, attempt: Attempt) -> None:
        """The attempt's TLS steps and decisions so far, as events."""
        for step in attempt.take_tls_steps():
            self.tls.record((start.number, start.attempt), start.domain, step)
            self._emit(_tls_event(self._clock(), start, step))
        for note in attempt.take_notes():
            self._decide(start.number, start.attempt, note.action, note.why, note.recipients)

    def _decide(
        self,
        number: int,
        attempt: int,
        action: DecisionAction,
        why: str,
        recipients: tuple[str, ...],
    ) -> None:
        self._emit(
            Decision(
                t=self._clock(),
                message=number,
                attempt=attempt,
                action=action,
                why=why,
                recipients=recipients,
            )
        )


def _fits(kept: tuple[str, Kept], action: Connect) -> bool:
    """A session parked for the destination serves this connect: the same address, held to
    the same TLS (the cache is keyed by TLS level and policy, as Postfix's is)."""
    return kept[0] == action.candidate.address and kept[1].tls_key == action.tls


def _ready(outcome: ServerReply | NoReply) -> bool:
    return isinstance(outcome, ServerReply) and outcome.code == 220


_TLS_OUTCOMES = {
    "Offered": "offered",
    "NotOffered": "not_offered",
    "StartTlsRefused": "refused",
    "HandshakeFailed": "handshake_failed",
    "Established": "established",
}


def _tls_event(t: float, start: Start, step: TlsStep) -> TlsChecked:
    decision, requirement, event = step.decision, step.requirement, step.event
    policy = ""
    if requirement is not None and requirement.dane:
        policy = "tlsa"
    elif requirement is not None and requirement.sts is not None:
        policy = f"sts:{requirement.sts}"
    elif step.step == "skip" and decision.report == "validation-failure":
        policy = "sts:enforce"
    established = event if isinstance(event, Established) else None
    return TlsChecked(
        t=t,
        message=start.number,
        attempt=start.attempt,
        host=step.host,
        address=step.address,
        step=step.step,
        action=decision.action,
        why=decision.why,
        outcome=_TLS_OUTCOMES.get(type(event).__name__, "") if event is not None else "",
        level=requirement.level if requirement is not None else "",
        version=established.version if established else "",
        certificate=established.certificate if established else "",
        dane=(established.dane or "") if established else "",
        detail=getattr(event, "detail", "") if event is not None else "",
        dsn=decision.dsn,
        report=decision.report or "",
        policy=policy,
    )


def _header_message_id(data: bytes) -> str:
    """The Message-ID header of a message given as bytes ("" when it has none)."""
    return str(BytesHeaderParser().parsebytes(data).get("Message-ID", "")).strip()


def _status_code(state: RecipientState) -> str:
    """The DSN status to report: the recipient's own, or the basic one for its state."""
    return state.dsn or ("2.0.0" if state.status == "delivered" else "4.0.0")
