"""One delivery attempt: walking the route's addresses for a set of recipients, sans I/O.

Theory of operation
-------------------
An ``Attempt`` is a state machine written as a generator, so that the SMTP dialogue reads
top to bottom like the RFC: connect, greeting, EHLO (HELO if refused), MAIL, one RCPT per
recipient, DATA, the message, QUIT. The I/O shell drives it:

    attempt = Attempt(sender, recipients, route.candidates, profile)
    while (action := attempt.next_action()) is not None:
        outcome = await perform(action)       # real sockets; exceptions become NoReply
        attempt.receive(outcome)
        for note in attempt.take_notes(): ...  # decisions, for the narrative

Actions are plain data (``Connect``, ``ReadGreeting``, ``SendCommand``, ``SendMessage``,
``Disconnect``); outcomes are ``ServerReply`` or ``NoReply`` (``None`` for a successful
connect or a disconnect, ``Reused`` when the shell hands back a session kept open from an
earlier delivery, which then starts at MAIL). Every decision goes through ``classify``; this
module only applies verdicts to recipients and chooses the next step.

Recipients move ``pending`` → ``delivered`` or ``bounced``. What is still pending when the
walk ends is deferred by this attempt; whether it is tried again or returned to its sender is
the queue's question (``core.queue``), which reads the attempt's ``report()``: the recipients'
states, whether the destination as a whole failed (a *site failure*: the last host tried
failed at connect, at the greeting, at EHLO/HELO, or lost the connection before the
transaction completed; a 4xx/5xx to MAIL, RCPT or DATA concerns the message, not the site)
and which hosts failed or worked (for Exim's per-host retry records).

Which candidates the walk tries:

- an address in ``avoid`` (a host inside its retry time) is skipped and not counted;
- it stops after the last candidate, once every recipient is settled, once ``max_sessions``
  sessions have completed the SMTP handshake (Postfix's smtp_mx_session_limit), or once
  ``hosts_max_try`` hosts have been tried (Exim's rule: when the limit is reached with a host
  and a later host has another MX preference, the walk jumps to that host and the one just
  tried does not count; ``hosts_max_try_hardlimit`` caps the total).

A session that ends on a temporary failure is told once it has ended, in one decision that
says what happened and what the walk does next, as only the walk knows it: the next host,
another address of the same host, or nothing left to try (the queue's deferral follows).

STARTTLS
--------
What TLS asks of each host comes from ``core.tls`` (``TlsFacts.plan``: the level, the host's
TLSA look-up, the MTA-STS policy): a host the policy rules out is skipped before any
connection (a ``skip`` note, 4.7.5). After a 250 to EHLO, ``core.tls.decide`` judges the
offer (STARTTLS among the extensions or not); for ``starttls`` the walk asks the shell for a
``StartTls`` and judges what came back (a reply other than 220, a failed handshake, or an
established session with the shell's verdict on the certificate). Then:

==============  =========================================================================
decision        what the walk does
==============  =========================================================================
tls             EHLO again, over TLS (RFC 3207 §4.2), then the transaction
plain           the transaction in plain text, in this session
retry_plain     this connection ends; the same address again without STARTTLS, counted
                neither as another host nor as another session (Postfix's
                RETRY_AS_PLAINTEXT, Exim's tls_tempfail_tryclear)
next_host       as a failed handshake: the host's failure (a site failure), next host
defer, bounce   as the same verdicts of ``classify``
==============  =========================================================================

No reply to STARTTLS is classified at the ``starttls`` stage (next host, 4.4.2). Each TLS
decision is kept as a ``TlsStep`` for the shell to report (``take_tls_steps``), and each
recipient keeps the TLS of the session that answered for it last (``RecipientState.tls``).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Literal

from sandbox.core.classify import (
    Classified,
    NoReply,
    Outcome,
    ServerReply,
    SessionStage,
    Stage,
    classify,
    connect_words,
)
from sandbox.core.esmtp import (
    HELO_ONLY,
    Extensions,
    LocalFailure,
    MessageFacts,
    mail_command,
    rcpt_command,
    refuse_locally,
)
from sandbox.core.mx import TRIED_ALL_MXS, Candidate
from sandbox.core.policy import Profile
from sandbox.core.tls import (
    Established,
    HandshakeFailed,
    NotOffered,
    Offered,
    Requirement,
    StartTlsRefused,
    TlsDecision,
    TlsEvent,
    TlsFacts,
    TlsStep,
    TlsStepKind,
    decide,
    offers_starttls,
    rules_for,
)

__all__ = [
    "COMMAND_NAMES",
    "NO_HOST_DUE",
    "RETRY_NOT_DUE",
    "Action",
    "Attempt",
    "AttemptReport",
    "Connect",
    "Disconnect",
    "Feedback",
    "FinalStatus",
    "HostFailure",
    "Note",
    "NoteAction",
    "ReadGreeting",
    "RecipientState",
    "RecipientStatus",
    "Reused",
    "SendCommand",
    "SendMessage",
    "StartTls",
    "TlsOutcome",
    "describe_outcome",
    "reported_reply",
    "where",
]


@dataclass(frozen=True, slots=True)
class Connect:
    candidate: Candidate
    timeout: float
    # The TLS the session will be held to, as a key: the shell keeps sessions kept open for
    # reuse apart by it (Postfix's SMTP_KEY_FLAG_TLS_LEVEL); "plain" for a plain-text retry.
    tls: str = ""


@dataclass(frozen=True, slots=True)
class ReadGreeting:
    timeout: float


@dataclass(frozen=True, slots=True)
class SendCommand:
    stage: Stage
    line: str
    timeout: float


@dataclass(frozen=True, slots=True)
class SendMessage:
    """Send the message content, dot-stuffed and ended by the final dot; read the reply."""

    timeout: float


@dataclass(frozen=True, slots=True)
class StartTls:
    """Send STARTTLS and, after a 220, run the TLS handshake with ``server_name`` in SNI (the
    MX host: RFC 7672 §8.1, RFC 8461 §7.1). The shell answers with the reply when it is not
    220 (``ServerReply``), ``NoReply``, or the core's ``HandshakeFailed`` / ``Established``:
    the version and its verdict on the certificate, and with ``dane`` its DANE verdict
    against the host's TLSA records."""

    server_name: str
    timeout: float
    dane: bool = False


@dataclass(frozen=True, slots=True)
class Disconnect:
    quit: bool  # say QUIT first; False when the connection is already gone or closing
    # The session ended on a delivered message and is still usable: the shell may keep it
    # for the next message to the same host instead of saying QUIT (Postfix's connection
    # cache for a backlogged destination), with what the host offered in its EHLO reply.
    reusable: bool = False
    extensions: Extensions = HELO_ONLY


@dataclass(frozen=True, slots=True)
class Reused:
    """The answer to ``Connect`` when the shell hands back a session kept open from an
    earlier delivery: it has been greeted and has said EHLO already (``extensions`` is what
    the host offered then), and STARTTLS too when ``tls`` says how that went, so it starts at
    MAIL. The shell checks such a session with an RSET probe first
    (``classify.probe_passed``)."""

    extensions: Extensions = HELO_ONLY
    tls: Established | None = None


Action = Connect | ReadGreeting | SendCommand | StartTls | SendMessage | Disconnect

# What the shell makes of a STARTTLS that got its 220.
TlsOutcome = HandshakeFailed | Established

# What the shell feeds back for an action.
Feedback = Outcome | Reused | TlsOutcome | None


# A decision worth telling: the verdict of a failed step (``next_host``, ``defer``,
# ``bounce``), ``deliver``, the ``fallback`` from EHLO to HELO, or the ``give_up`` of a walk
# that has used ``max_sessions``.
NoteAction = Literal[
    "next_host", "defer", "bounce", "deliver", "fallback", "give_up", "skip", "retry_plain"
]


@dataclass(frozen=True, slots=True)
class Note:
    action: NoteAction
    why: str
    recipients: tuple[str, ...] = ()


RecipientStatus = Literal["pending", "delivered", "bounced"]
# How the run reports a recipient: one still pending when the run ends is "deferred".
FinalStatus = Literal["delivered", "bounced", "deferred"]


@dataclass(slots=True)
class RecipientState:
    recipient: str
    status: RecipientStatus = "pending"
    dsn: str = ""
    reply: str = ""  # the last reply or error, in Postfix's words
    host: str | None = None  # the host that delivered it, or that gave the last error
    address: str | None = None
    unsure: bool = False  # a final dot went unanswered: the message may have arrived
    # The TLS of the session that gave the last answer (None: plain text, or no session).
    tls: Established | None = None
    # The last reply or error came over a session with ``host`` (Postfix then names it as
    # the relay); False when it was a failed connect, or no host at all (relay=none).
    session: bool = False

    @property
    def relay(self) -> str | None:
        """``host[address]`` as Postfix's ``relay=`` names it, or None for ``relay=none``."""
        if self.host and self.address and self.session:
            return where(self.host, self.address)
        return None


@dataclass(frozen=True, slots=True)
class HostFailure:
    """An address that failed at connect or in the handshake (a host problem)."""

    address: str
    reason: str


@dataclass(frozen=True, slots=True)
class AttemptReport:
    """What an attempt found, as the queue needs it.

    ``states``: every recipient of the attempt, after it. ``site_failure``: the reason when
    the destination as a whole failed (see the module docstring), else None. ``failed_hosts``
    and ``good_hosts``: addresses for Exim's retry records. ``untried``: the reason no host
    was tried at all (every one inside its retry time), else None.
    """

    states: Mapping[str, RecipientState]
    site_failure: str | None = None
    failed_hosts: tuple[HostFailure, ...] = ()
    good_hosts: tuple[str, ...] = ()
    untried: str | None = None


NO_HOST_DUE = "retry time not reached for any host"

# What the sender was doing at each stage, in Postfix's words ("... while X").
_DOING: dict[SessionStage, str] = {
    "greeting": "receiving the initial server greeting",
    "ehlo": "performing the EHLO handshake",
    "helo": "performing the HELO handshake",
    "starttls": "receiving the STARTTLS response",
    "mail": "sending MAIL FROM",
    "rcpt": "sending RCPT TO",
    "data": "sending DATA command",
    "message": "sending end of data -- message may be sent more than once",
    "rset": "sending RSET probe",
    "quit": "sending QUIT",
}
# What a reply answers, in Postfix's words ("... (in reply to X)").
COMMAND_NAMES: dict[SessionStage, str] = {
    "greeting": "initial greeting",
    "ehlo": "EHLO command",
    "helo": "HELO command",
    "starttls": "STARTTLS command",
    "mail": "MAIL FROM command",
    "rcpt": "RCPT TO command",
    "data": "DATA command",
    "message": "end of DATA command",
    "rset": "RSET probe",
    "quit": "QUIT command",
}


def where(host: str, address: str) -> str:
    """One address of a host as Postfix names it: ``mx1.example.test[192.0.2.10]``."""
    return f"{host}[{address}]"


def describe_outcome(stage: SessionStage, host: str, address: str, outcome: Outcome) -> str:
    """The error text a Postfix log would show for this outcome."""
    at = where(host, address)
    if isinstance(outcome, ServerReply) and stage in _HANDSHAKE:
        # A greeting other than 2xx, or EHLO/HELO refused: Postfix's smtp_helo() words.
        return f"host {at} refused to talk to me: {outcome}"
    if isinstance(outcome, ServerReply):
        return f"host {at} said: {outcome} (in reply to {COMMAND_NAMES[stage]})"
    if stage == "connect":
        error = connect_words(outcome.reason).error or outcome.detail or "connection failed"
        return f"connect to {at}:25: {error}"
    if outcome.reason == "timeout":
        return f"conversation with {at} timed out while {_DOING[stage]}"
    return f"lost connection with {at} while {_DOING[stage]}"


@dataclass(slots=True)
class _Session:
    candidate: Candidate
    requirement: Requirement
    handshake_done: bool = False
    open: bool = True
    delivered: bool = False
    # Why this host failed as a host (connect, greeting, handshake, a lost connection before
    # the transaction completed); None when it did not.
    site_failure: str | None = None
    # Why the session ended on a temporary failure, to be told with the walk's next step.
    ending: str | None = None
    # What the host offered in its reply to EHLO (nothing after HELO), and that reply's
    # text (STARTTLS is read from it).
    extensions: Extensions = HELO_ONLY
    ehlo: ServerReply | None = None
    # TLS, once the handshake has completed and the policy took the certificate.
    tls: Established | None = None
    # This session is a plain-text retry after a failed handshake (no STARTTLS at all), or
    # asks for one (Postfix's RETRY_AS_PLAINTEXT; Exim's tls_tempfail_tryclear).
    plain_retry: bool = False
    retry_plain: bool = False


class Attempt:
    """Walks the candidates for the pending recipients. See the module docstring."""

    def __init__(
        self,
        sender: str,
        recipients: tuple[str, ...],
        candidates: tuple[Candidate, ...],
        profile: Profile,
        *,
        avoid: frozenset[str] = frozenset(),
        tls: TlsFacts | None = None,
        waited: float = 0.0,
        kept: str | None = None,
        facts: MessageFacts | None = None,
    ) -> None:
        self.sender = sender
        self.candidates = candidates
        self.profile = profile
        self.avoid = avoid
        self.tls = tls if tls is not None else TlsFacts()
        # How long the message had waited in the queue when this attempt began (Postfix's
        # plain-text fallback after a failed handshake waits for minimal_backoff_time).
        self.waited = waited
        self.kept = kept
        # The message's size and whether it is all ASCII (what MAIL FROM declares, and
        # whether a host's SIZE and SMTPUTF8 let it be sent: core.esmtp).
        self.facts = facts or MessageFacts(0, 0)
        self.recipients = {r: RecipientState(r) for r in recipients}
        self._rules = rules_for(profile.name)
        self._notes: list[Note] = []
        self._tls_steps: list[TlsStep] = []
        self._tls_skipped = False  # a host was ruled out by TLS before any connection
        self._stopped = False  # a "defer" verdict ends the walk
        self._sessions: list[_Session] = []
        self._script = self._walk()
        self._action: Action | None = next(self._script, None)

    # --- the shell's side --------------------------------------------------------------

    def next_action(self) -> Action | None:
        return self._action

    def receive(self, outcome: Feedback) -> None:
        if self._action is None:
            raise RuntimeError("Attempt.receive() called after the attempt finished")
        try:
            self._action = self._script.send(outcome)
        except StopIteration:
            self._action = None

    def take_notes(self) -> list[Note]:
        notes, self._notes = self._notes, []
        return notes

    def take_tls_steps(self) -> list[TlsStep]:
        """The TLS decisions since the last call, for the shell to report."""
        steps, self._tls_steps = self._tls_steps, []
        return steps

    @property
    def pending(self) -> tuple[str, ...]:
        return tuple(r for r, s in self.recipients.items() if s.status == "pending")

    def report(self) -> AttemptReport:
        """What the queue needs to know, once the walk has ended."""
        sessions = self._sessions
        last = sessions[-1] if sessions else None
        site = last.site_failure if last is not None and self.pending else None
        failed = tuple(
            HostFailure(s.candidate.address, s.site_failure) for s in sessions if s.site_failure
        )
        good = tuple(s.candidate.address for s in sessions if s.handshake_done)
        nothing_tried = not sessions and self.pending and self.candidates
        untried = NO_HOST_DUE if nothing_tried and not self._tls_skipped else None
        return AttemptReport(dict(self.recipients), site, failed, good, untried)

    # --- the dialogue --------------------------------------------------------------------

    def _walk(self) -> Generator[Action, Feedback, None]:
        profile = self.profile
        handshakes = tried = 0
        index = self._first()
        while index < len(self.candidates) and self.pending and not self._stopped:
            candidate = self.candidates[index]
            following = index + 1
            if candidate.address in self.avoid:
                self._note("skip", f"{_at(candidate)}: {RETRY_NOT_DUE}")
                index = following
                continue
            plan = self.tls.plan(profile.tls, candidate.host)
            if isinstance(plan, TlsDecision):
                self._skip_for_tls(candidate, plan)
                index = following
                continue
            limit = self._limit_reached(handshakes, tried)
            if limit is not None:
                self._note("give_up", limit)
                return
            if profile.hosts_max_try:
                tried += 1
                if tried >= profile.hosts_max_try:
                    # Exim: make sure a host of another MX preference still gets its turn.
                    later = _next_preference(self.candidates, index)
                    if later is not None:
                        following, tried = later, tried - 1
            session = _Session(candidate, plan)
            self._sessions.append(session)
            yield from self._session(session)
            if session.retry_plain:
                # The same address again, in plain text: not one more host or session.
                session = _Session(candidate, plan, plain_retry=True)
                self._sessions.append(session)
                yield from self._session(session)
            handshakes += session.handshake_done
            self._tell_next_step(session, following, handshakes, tried)
            index = following
        self._tried_all()

    def _first(self) -> int:
        """Where the walk starts: at the host whose session was kept open for this
        destination, if there is one (the hosts before it are not tried: Postfix's session
        cached under the next-hop destination, Exim's continued connection), else at the
        first candidate."""
        kept = next((i for i, c in enumerate(self.candidates) if c.address == self.kept), None)
        if not kept:
            return 0
        skipped = ", ".join(_at(c) for c in self.candidates[:kept])
        self._note(
            "skip",
            f"{skipped}: not tried: a session to {_at(self.candidates[kept])} is open for this "
            "destination (kept from an earlier delivery), and the delivery starts there",
        )
        return kept

    def _tried_all(self) -> None:
        """A walk that ran out of hosts, each one failing without a reply that ends the
        attempt: for a sender that says so in its own words (Haraka's "Tried all MXs"), the
        pending recipients report that, with no remote host."""
        status = self.profile.tried_all_dsn
        if not status or self._stopped or not self._sessions or not self.pending:
            return
        for r in self.pending:
            state = self.recipients[r]
            state.dsn, state.reply = status, TRIED_ALL_MXS
            state.host = state.address = None
            state.session = False

    def _limit_reached(self, handshakes: int, tried: int) -> str | None:
        """Why the walk may try no more hosts in this attempt, or None."""
        profile = self.profile
        if profile.max_sessions and handshakes >= profile.max_sessions:
            return f"{handshakes} sessions used, the most one attempt may use (max_sessions)"
        if profile.hosts_max_try and (
            tried >= profile.hosts_max_try
            or len(self._sessions) >= (profile.hosts_max_try_hardlimit or len(self.candidates))
        ):
            return f"{len(self._sessions)} hosts tried (hosts_max_try)"
        return None

    def _tell_next_step(
        self, session: _Session, following: int, handshakes: int, tried: int
    ) -> None:
        """After a session: why it ended (if on a temporary failure) and what comes next."""
        reason = session.ending
        step = ""
        if self.pending and not self._stopped:
            nxt = self._next_untried(following)
            if nxt is None:
                step = "no other host is left to try"
            elif self._limit_reached(handshakes, tried) is not None:
                step = ""  # the give_up decision that follows says why the walk stops
            elif nxt.host == session.candidate.host:
                step = f"try another address of {nxt.host}, {_at(nxt)}"
            else:
                step = f"try the next host, {_at(nxt)}"
        if reason and step:
            joint = ": " if step.startswith("try") else "; "
            self._note("next_host", f"{reason}{joint}{step}", self.pending)
        elif reason or step:
            self._note("next_host", reason or step, self.pending)

    def _next_untried(self, index: int) -> Candidate | None:
        for candidate in self.candidates[index:]:
            if candidate.address not in self.avoid:
                return candidate
        return None

    def _session(self, session: _Session) -> Generator[Action, Feedback, None]:
        candidate = session.candidate
        key = "plain" if session.plain_retry else _tls_key(session.requirement)
        outcome = yield Connect(candidate, self.profile.connect_timeout, key)
        if isinstance(outcome, NoReply):
            self._judge("connect", session, outcome, None)
            return
        if isinstance(outcome, Reused):
            session.handshake_done = True
            session.extensions = outcome.extensions
            session.tls = outcome.tls
            yield from self._transaction(session)
        else:
            yield from self._dialogue(session)
        # Every connected session ends here: QUIT when the connection is still usable. One that
        # went over TLS is kept for reuse only when the profile says so.
        reusable = session.open and session.delivered
        if session.tls is not None and not self.profile.tls_connection_reuse:
            reusable = False
        yield Disconnect(quit=session.open, reusable=reusable, extensions=session.extensions)

    def _dialogue(self, session: _Session) -> Generator[Action, Feedback, None]:
        outcome = yield ReadGreeting(self.profile.greeting_timeout)
        assert isinstance(outcome, ServerReply | NoReply)
        if not self._step(session, "greeting", outcome):
            return
        if not (yield from self._handshake(session)):
            return
        if not (yield from self._starttls(session)):
            return
        session.handshake_done = True
        yield from self._transaction(session)

    def _handshake(self, session: _Session) -> Generator[Action, Feedback, bool]:
        helo = self.profile.helo_name
        outcome = yield SendCommand("ehlo", f"EHLO {helo}", self.profile.ehlo_timeout)
        assert isinstance(outcome, ServerReply | NoReply)
        why = self._helo_fallback(outcome)
        if why:
            self._note("fallback", why)
            outcome = yield SendCommand("helo", f"HELO {helo}", self.profile.ehlo_timeout)
            assert isinstance(outcome, ServerReply | NoReply)
            return self._step(session, "helo", outcome)
        if isinstance(outcome, ServerReply) and outcome.code // 100 == 2:
            session.ehlo = outcome
            session.extensions = Extensions.parse(outcome.text)
        return self._step(session, "ehlo", outcome)

    # --- STARTTLS (``core.tls`` decides; this applies) ------------------------------------

    def _starttls(self, session: _Session) -> Generator[Action, Feedback, bool]:
        """STARTTLS if the host offers it and the policy wants it, then EHLO again over TLS
        (RFC 3207 §4.2). True means carry on with the transaction."""
        if session.plain_retry:
            return True  # the retry runs without TLS, as the policy allowed
        requirement = session.requirement
        offered = session.ehlo is not None and offers_starttls(session.ehlo.text)
        offer: TlsEvent = Offered() if offered else NotOffered()
        decision = decide(self._rules, requirement, offer)
        if decision.action != "starttls":
            if requirement.starttls:  # at level none there is nothing to tell
                self._tls_step(session.candidate, "offer", requirement, decision, offer)
            return self._apply_tls(session, decision, offer)
        server_name = session.candidate.host
        timeout = self.profile.starttls_timeout
        outcome = yield StartTls(server_name, timeout, requirement.dane)
        if isinstance(outcome, NoReply):
            return self._step(session, "starttls", outcome)
        assert isinstance(outcome, ServerReply | HandshakeFailed | Established)
        event: TlsEvent = StartTlsRefused(outcome) if isinstance(outcome, ServerReply) else outcome
        if isinstance(event, HandshakeFailed):
            session.open = False  # nothing more can be said on this connection
        decision = decide(
            self._rules,
            requirement,
            event,
            waited=self.waited,
            min_backoff=self.profile.min_backoff,
        )
        self._tls_step(session.candidate, "upgrade", requirement, decision, event)
        if decision.action != "tls" or not isinstance(event, Established):
            return self._apply_tls(session, decision, event)
        session.tls = event
        helo = self.profile.helo_name
        again = yield SendCommand("ehlo", f"EHLO {helo}", self.profile.ehlo_timeout)
        assert isinstance(again, ServerReply | NoReply)
        if isinstance(again, ServerReply) and again.code // 100 == 2:
            # What the host offers over TLS is what counts (RFC 3207 §4.2).
            session.extensions = Extensions.parse(again.text)
        return self._step(session, "ehlo", again)

    def _apply_tls(self, session: _Session, decision: TlsDecision, event: TlsEvent) -> bool:
        """Carry out a TLS decision other than ``tls``; True means go on in plain text."""
        action = decision.action
        if action == "plain":
            return True
        if action == "retry_plain":
            session.retry_plain = True
            session.open = False
            self._note("retry_plain", decision.why)
            return False
        assert action in ("next_host", "defer", "bounce"), action
        verdict = Classified(action, decision.dsn, decision.why)
        text = _tls_failure_text(session.candidate, event)
        self._apply(session, verdict, text, self.pending, host_failure=True)
        return False

    def _skip_for_tls(self, candidate: Candidate, decision: TlsDecision) -> None:
        """A host that the TLS policy rules out before any connection (MTA-STS enforce does
        not list it; its TLSA look-up failed)."""
        self._tls_skipped = True
        self._tls_step(candidate, "skip", None, decision, None)
        for r in self.pending:
            state = self.recipients[r]
            state.dsn, state.reply = decision.dsn, f"{_at(candidate)}: {decision.why}"
            state.host, state.address, state.tls = candidate.host, candidate.address, None
            state.session = False  # ruled out before any connection: relay=none
        self._note("skip", f"{_at(candidate)}: {decision.why}")

    def _tls_step(
        self,
        candidate: Candidate,
        step: TlsStepKind,
        requirement: Requirement | None,
        decision: TlsDecision,
        event: TlsEvent | None,
    ) -> None:
        self._tls_steps.append(
            TlsStep(candidate.host, candidate.address, step, requirement, decision, event)
        )

    def _helo_fallback(self, outcome: Outcome) -> str:
        """Why the sender tries HELO after this reply to EHLO ("" if it does not): a 5xx
        always (RFC 5321 §4.1.4); a 4xx too for a sender that tries HELO after any refusal
        (Exim), unless it is a 421, which closes the connection."""
        if not isinstance(outcome, ServerReply):
            return ""
        if outcome.code // 100 == 5:
            return classify("ehlo", outcome, self.profile).why
        if outcome.code // 100 == 4 and outcome.code != 421 and self.profile.ehlo_fallback == "any":
            return "EHLO refused: this sender tries HELO before it gives up on the host"
        return ""

    def _transaction(self, session: _Session) -> Generator[Action, Feedback, None]:
        profile = self.profile
        pending = self.pending
        ext = session.extensions
        refused = refuse_locally(
            self.facts,
            ext,
            profile,
            sender=self.sender,
            recipients=pending,
            where=_at(session.candidate),
        )
        if refused is not None:
            self._fail_locally(session, refused)
            return
        line = mail_command(self.sender, self.facts, ext, profile, pending)
        outcome = yield SendCommand("mail", line, profile.mail_timeout)
        assert isinstance(outcome, ServerReply | NoReply)
        if not self._step(session, "mail", outcome):
            return
        accepted = yield from self._recipients(session)
        if not accepted or not session.open:
            return
        outcome = yield SendCommand("data", "DATA", profile.data_timeout)
        assert isinstance(outcome, ServerReply | NoReply)
        if not self._step(session, "data", outcome, accepted):
            return
        outcome = yield SendMessage(profile.dot_timeout)
        assert isinstance(outcome, ServerReply | NoReply)
        verdict = self._judge("message", session, outcome, accepted)
        if verdict.verdict == "delivered":
            session.delivered = True
            self._deliver(session, outcome, verdict.dsn, accepted)
        elif isinstance(outcome, NoReply):
            for r in accepted:
                self.recipients[r].unsure = True

    def _recipients(self, session: _Session) -> Generator[Action, Feedback, list[str]]:
        accepted: list[str] = []
        for recipient in self.pending:
            line = rcpt_command(recipient, session.extensions, self.profile)
            outcome = yield SendCommand("rcpt", line, self.profile.rcpt_timeout)
            assert isinstance(outcome, ServerReply | NoReply)
            verdict = self._judge("rcpt", session, outcome, [recipient])
            if verdict.verdict == "continue":
                accepted.append(recipient)
            if not session.open:
                break
        return accepted

    # --- applying verdicts ---------------------------------------------------------------

    def _step(
        self,
        session: _Session,
        stage: Stage,
        outcome: Outcome,
        concerned: list[str] | None = None,
    ) -> bool:
        """Judge one reply; True means carry on with the session."""
        return self._judge(stage, session, outcome, concerned).verdict == "continue"

    def _judge(
        self,
        stage: Stage,
        session: _Session,
        outcome: Outcome,
        concerned: list[str] | None,
    ) -> Classified:
        verdict = classify(stage, outcome, self.profile)
        names = self.pending if concerned is None else tuple(concerned)
        closing = isinstance(outcome, NoReply) or outcome.code == 421
        if closing:
            session.open = False
        if verdict.verdict == "continue" or verdict.verdict == "delivered":
            return verdict
        text = describe_outcome(stage, session.candidate.host, session.candidate.address, outcome)
        host_failure = stage in _HANDSHAKE or (
            isinstance(outcome, NoReply) and not session.delivered
        )
        self._apply(session, verdict, text, names, host_failure=host_failure, stage=stage)
        return verdict

    def _apply(
        self,
        session: _Session,
        verdict: Classified,
        text: str,
        names: tuple[str, ...],
        *,
        host_failure: bool,
        stage: Stage | None = None,
    ) -> None:
        """A failed step's verdict, applied: to the recipients concerned, the session and the
        walk. ``text`` is the error as the recipients will report it."""
        action = verdict.verdict
        assert action != "continue" and action != "delivered", action
        if action == "defer":
            self._stopped = True
        if action == "next_host" and (stage != "rcpt" or not session.open):
            # The session ends here: told with the walk's next step (_tell_next_step).
            session.ending = verdict.why
        if host_failure:
            session.site_failure = text
        for r in names:
            state = self.recipients[r]
            state.dsn, state.reply = verdict.dsn, text
            state.host, state.address = session.candidate.host, session.candidate.address
            state.session = stage != "connect"
            state.tls = session.tls if state.session else None
            if action == "bounce":
                state.status = "bounced"
        if session.ending is None or action != "next_host":
            self._note(action, verdict.why, names)

    def _fail_locally(self, session: _Session, failure: LocalFailure) -> None:
        """The sender keeps the message from this host (core.esmtp): every recipient left
        bounces, without a word to the host (it says QUIT)."""
        names = self.pending
        for r in names:
            state = self.recipients[r]
            state.status, state.dsn, state.reply = "bounced", failure.dsn, failure.text
            state.host, state.address = session.candidate.host, session.candidate.address
            state.tls = session.tls
        self._note("bounce", failure.why, names)

    def _deliver(self, session: _Session, reply: Outcome, dsn: str, accepted: list[str]) -> None:
        candidate = session.candidate
        for r in accepted:
            state = self.recipients[r]
            state.status, state.dsn, state.reply = "delivered", dsn, str(reply)
            state.host, state.address, state.session = candidate.host, candidate.address, True
            state.tls = session.tls
        self._note(
            "deliver",
            f"{where(candidate.host, candidate.address)} accepted the message",
            tuple(accepted),
        )

    def _note(self, action: NoteAction, why: str, recipients: tuple[str, ...] = ()) -> None:
        self._notes.append(Note(action, why, recipients))


# The stages whose failure is the host's, not the message's (with a lost connection anywhere
# before the transaction completed): Postfix's smtp_site_fail.
_HANDSHAKE: frozenset[Stage] = frozenset({"connect", "greeting", "ehlo", "helo"})
RETRY_NOT_DUE = "retry time not reached"


def _at(candidate: Candidate) -> str:
    return where(candidate.host, candidate.address)


def _tls_key(requirement: Requirement) -> str:
    """``may``, ``verify+sts:enforce``, ``dane+dane``: what a session is held to."""
    parts: list[str] = [requirement.level]
    if requirement.dane:
        parts.append("dane")
    if requirement.sts is not None:
        parts.append(f"sts:{requirement.sts}")
    return "+".join(parts)


def _tls_failure_text(candidate: Candidate, event: TlsEvent) -> str:
    """The error a recipient reports when TLS failed a host, in Postfix's words (smtp_proto.c,
    as its log shows them: tests/differential/FINDINGS.md)."""
    at = _at(candidate)
    if isinstance(event, StartTlsRefused):
        return f"TLS is required, but host {at} refused to start TLS: {event.reply}"
    if isinstance(event, HandshakeFailed):
        return "Cannot start TLS: handshake failure"
    if isinstance(event, Established):
        return "Server certificate not verified"
    return f"TLS is required, but was not offered by host {at}"


def _next_preference(candidates: tuple[Candidate, ...], index: int) -> int | None:
    """The first candidate after ``index`` whose MX preference differs from its own."""
    preference = candidates[index].preference
    for later in range(index + 1, len(candidates)):
        if candidates[later].preference != preference:
            return later
    return None


def reported_reply(reply: str, *, expired: bool) -> str:
    """A recipient's last reply as the run reports it (the ``--json`` row, the story, the
    DSN): for one returned because its message expired, with that said after it."""
    if not expired:
        return reply
    return f"{reply} (message expired)" if reply else "expired"
