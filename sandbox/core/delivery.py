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
the retry policy's question (``settle_deferred``).

The walk stops after the last candidate, once every recipient is settled, or once
``max_sessions`` sessions have completed the SMTP handshake (Postfix's smtp_mx_session_limit).
"""

from __future__ import annotations

from collections.abc import Generator
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
from sandbox.core.durations import format_duration
from sandbox.core.mx import Candidate
from sandbox.core.policy import Profile, Retry, RetryHistory, next_retry

__all__ = [
    "COMMAND_NAMES",
    "Action",
    "Attempt",
    "Connect",
    "Disconnect",
    "Feedback",
    "FinalStatus",
    "Note",
    "NoteAction",
    "ReadGreeting",
    "RecipientState",
    "RecipientStatus",
    "Reused",
    "SendCommand",
    "SendMessage",
    "Settlement",
    "describe_outcome",
    "reported_reply",
    "settle_deferred",
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
    # cache for a backlogged destination).
    reusable: bool = False


@dataclass(frozen=True, slots=True)
class Reused:
    """The answer to ``Connect`` when the shell hands back a session kept open from an
    earlier delivery: it has been greeted and has said EHLO already, so it starts at MAIL.
    The shell checks such a session with an RSET probe first (``classify.probe_passed``)."""


Action = Connect | ReadGreeting | SendCommand | SendMessage | Disconnect


# What the shell feeds back for an action.
Feedback = Outcome | Reused | None


# A decision worth telling: the verdict of a failed step (``next_host``, ``defer``,
# ``bounce``), ``deliver``, the ``fallback`` from EHLO to HELO, or the ``give_up`` of a walk
# that has used ``max_sessions``.
NoteAction = Literal["next_host", "defer", "bounce", "deliver", "fallback", "give_up"]


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


class Attempt:
    """Walks the candidates for the pending recipients. See the module docstring."""

    def __init__(
        self,
        sender: str,
        recipients: tuple[str, ...],
        candidates: tuple[Candidate, ...],
        profile: Profile,
    ) -> None:
        self.sender = sender
        self.candidates = candidates
        self.profile = profile
        self.recipients = {r: RecipientState(r) for r in recipients}
        self._notes: list[Note] = []
        self._stopped = False  # a "defer" verdict ends the walk
        self.connected = False  # some session got past the TCP connect
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

    # --- the dialogue --------------------------------------------------------------------

    def _walk(self) -> Generator[Action, Feedback, None]:
        sessions = 0
        for index, candidate in enumerate(self.candidates):
            if not self.pending or self._stopped:
                return
            if self.profile.max_sessions and sessions >= self.profile.max_sessions:
                self._note(
                    "give_up",
                    f"{sessions} sessions used, the most one attempt may use (max_sessions)",
                )
                return
            session = _Session(candidate)
            yield from self._session(session)
            sessions += session.handshake_done
            if self.pending and not self._stopped and index + 1 < len(self.candidates):
                nxt = self.candidates[index + 1]
                self._note(
                    "next_host",
                    f"try the next address: {where(nxt.host, nxt.address)}",
                    self.pending,
                )

    def _session(self, session: _Session) -> Generator[Action, Feedback, None]:
        candidate = session.candidate
        outcome = yield Connect(candidate, self.profile.connect_timeout)
        if isinstance(outcome, NoReply):
            self._judge("connect", session, outcome, None)
            return
        self.connected = True
        if isinstance(outcome, Reused):
            session.handshake_done = True
            yield from self._transaction(session)
        else:
            yield from self._dialogue(session)
        # Every connected session ends here: QUIT when the connection is still usable.
        yield Disconnect(quit=session.open, reusable=session.open and session.delivered)

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
        return self._step(session, "ehlo", outcome)

    def _transaction(self, session: _Session) -> Generator[Action, Feedback, None]:
        profile = self.profile
        outcome = yield SendCommand("mail", f"MAIL FROM:<{self.sender}>", profile.mail_timeout)
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
            outcome = yield SendCommand("rcpt", f"RCPT TO:<{recipient}>", self.profile.rcpt_timeout)
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
        for r in names:
            state = self.recipients[r]
            state.dsn, state.reply = verdict.dsn, text
            state.host, state.address = session.candidate.host, session.candidate.address
            if action == "bounce":
                state.status = "bounced"
        self._note(action, verdict.why, names)
        return verdict

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


@dataclass(frozen=True, slots=True)
class Settlement:
    """What becomes of recipients an attempt left deferred: retried, or returned."""

    retry: Retry | None
    why: str

    @property
    def give_up(self) -> bool:
        return self.retry is None


def settle_deferred(profile: Profile, history: RetryHistory, now: float) -> Settlement:
    """Retry later, or return to the sender once the profile's schedule is used up."""
    retry = next_retry(profile, history, now)
    if retry is not None:
        return Settlement(retry, "")
    queued = format_duration(round(now - history.arrived))
    if profile.retry == "doubling":
        why = f"{history.failures} temporary failures, the most this sender allows"
    elif profile.retry == "rules":
        cutoff = format_duration(profile.retry_rules[-1].cutoff)
        why = f"the retry rules end {cutoff} after the first failure"
    else:
        why = f"past the {format_duration(profile.max_lifetime)} limit"
    return Settlement(
        None, f"the message has been queued for {queued}, {why}: return it to the sender"
    )


def reported_reply(reply: str, *, expired: bool) -> str:
    """A recipient's last reply as the run reports it (the ``--json`` row, the story, the
    DSN): for one returned because its message expired, with that said after it."""
    if not expired:
        return reply
    return f"{reply} (message expired)" if reply else "expired"
