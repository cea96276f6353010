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
from sandbox.core.mx import Candidate
from sandbox.core.policy import Profile

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
    "describe_outcome",
    "reported_reply",
    "where",
]


@dataclass(frozen=True, slots=True)
class Connect:
    candidate: Candidate
    timeout: float


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
    the host offered then), so it starts at MAIL. The shell checks such a session with an
    RSET probe first (``classify.probe_passed``)."""

    extensions: Extensions = HELO_ONLY


Action = Connect | ReadGreeting | SendCommand | SendMessage | Disconnect


# What the shell feeds back for an action.
Feedback = Outcome | Reused | None


# A decision worth telling: the verdict of a failed step (``next_host``, ``defer``,
# ``bounce``), ``deliver``, the ``fallback`` from EHLO to HELO, or the ``give_up`` of a walk
# that has used ``max_sessions``.
NoteAction = Literal["next_host", "defer", "bounce", "deliver", "fallback", "give_up", "skip"]


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
    handshake_done: bool = False
    open: bool = True
    delivered: bool = False
    # Why this host failed as a host (connect, greeting, handshake, a lost connection before
    # the transaction completed); None when it did not.
    site_failure: str | None = None
    # Why the session ended on a temporary failure, to be told with the walk's next step.
    ending: str | None = None
    # What the host offered in its reply to EHLO (nothing after HELO).
    extensions: Extensions = HELO_ONLY


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
        facts: MessageFacts | None = None,
    ) -> None:
        self.sender = sender
        self.candidates = candidates
        self.profile = profile
        self.avoid = avoid
        # The message's size and whether it is all ASCII (what MAIL FROM declares, and
        # whether a host's SIZE and SMTPUTF8 let it be sent: core.esmtp).
        self.facts = facts or MessageFacts(0, 0)
        self.recipients = {r: RecipientState(r) for r in recipients}
        self._notes: list[Note] = []
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
        untried = NO_HOST_DUE if not sessions and self.pending and self.candidates else None
        return AttemptReport(dict(self.recipients), site, failed, good, untried)

    # --- the dialogue --------------------------------------------------------------------

    def _walk(self) -> Generator[Action, Feedback, None]:
        profile = self.profile
        handshakes = tried = 0
        index = 0
        while index < len(self.candidates) and self.pending and not self._stopped:
            candidate = self.candidates[index]
            following = index + 1
            if candidate.address in self.avoid:
                self._note("skip", f"{_at(candidate)}: {RETRY_NOT_DUE}")
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
            session = _Session(candidate)
            self._sessions.append(session)
            yield from self._session(session)
            handshakes += session.handshake_done
            self._tell_next_step(session, following, handshakes, tried)
            index = following

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
        outcome = yield Connect(candidate, self.profile.connect_timeout)
        if isinstance(outcome, NoReply):
            self._judge("connect", session, outcome, None)
            return
        if isinstance(outcome, Reused):
            session.handshake_done = True
            session.extensions = outcome.extensions
            yield from self._transaction(session)
        else:
            yield from self._dialogue(session)
        # Every connected session ends here: QUIT when the connection is still usable.
        reusable = session.open and session.delivered
        yield Disconnect(quit=session.open, reusable=reusable, extensions=session.extensions)

    def _dialogue(self, session: _Session) -> Generator[Action, Feedback, None]:
        outcome = yield ReadGreeting(self.profile.greeting_timeout)
        assert isinstance(outcome, ServerReply | NoReply)
        if not self._step(session, "greeting", outcome):
            return
        if not (yield from self._handshake(session)):
            return
        session.handshake_done = True
        yield from self._transaction(session)

    def _handshake(self, session: _Session) -> Generator[Action, Feedback, bool]:
        helo = self.profile.helo_name
        outcome = yield SendCommand("ehlo", f"EHLO {helo}", self.profile.ehlo_timeout)
        assert isinstance(outcome, ServerReply | NoReply)
        if isinstance(outcome, ServerReply) and outcome.code // 100 == 5:
            self._note("fallback", classify("ehlo", outcome, self.profile).why)
            outcome = yield SendCommand("helo", f"HELO {helo}", self.profile.ehlo_timeout)
            assert isinstance(outcome, ServerReply | NoReply)
            return self._step(session, "helo", outcome)
        if isinstance(outcome, ServerReply) and outcome.code // 100 == 2:
            session.extensions = Extensions.parse(outcome.text)
        return self._step(session, "ehlo", outcome)

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
            self._deliver(session.candidate, outcome, verdict.dsn, accepted)
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
        action = verdict.verdict
        if action == "continue" or action == "delivered":
            return verdict
        if action == "defer":
            self._stopped = True
        text = describe_outcome(stage, session.candidate.host, session.candidate.address, outcome)
        if action == "next_host" and (stage != "rcpt" or not session.open):
            # The session ends here: told with the walk's next step (_tell_next_step).
            session.ending = verdict.why
        if stage in _HANDSHAKE or (isinstance(outcome, NoReply) and not session.delivered):
            session.site_failure = text
        for r in names:
            state = self.recipients[r]
            state.dsn, state.reply = verdict.dsn, text
            state.host, state.address = session.candidate.host, session.candidate.address
            if action == "bounce":
                state.status = "bounced"
        if session.ending is None or action != "next_host":
            self._note(action, verdict.why, names)
        return verdict

    def _fail_locally(self, session: _Session, failure: LocalFailure) -> None:
        """The sender keeps the message from this host (core.esmtp): every recipient left
        bounces, without a word to the host (it says QUIT)."""
        names = self.pending
        for r in names:
            state = self.recipients[r]
            state.status, state.dsn, state.reply = "bounced", failure.dsn, failure.text
            state.host, state.address = session.candidate.host, session.candidate.address
        self._note("bounce", failure.why, names)

    def _deliver(self, candidate: Candidate, reply: Outcome, dsn: str, accepted: list[str]) -> None:
        for r in accepted:
            state = self.recipients[r]
            state.status, state.dsn, state.reply = "delivered", dsn, str(reply)
            state.host, state.address = candidate.host, candidate.address
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
