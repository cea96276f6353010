"""What a scripted mail host says at each SMTP stage: the rules, sans I/O.

Theory of operation
===================

The session (``session.py``) is an I/O shell around aiosmtpd. At each stage it reads the
behaviour in force, asks this module for a plan and carries it out: it waits, hangs up, sends a
reply, or lets aiosmtpd answer. Nothing here touches a socket, a clock or an event loop; the
inputs are the behaviour, the stage and a few facts about the session, all plain values.

One stage (greeting, ehlo, mail, rcpt, data): :func:`plan_stage`
-----------------------------------------------------------------

The first matching row decides; the scripted delay comes before any of them.

==============================  ===========================================================
the behaviour at this stage     what the host does
==============================  ===========================================================
``disconnect`` is this stage    hangs up without a reply (:class:`HangUp`)
a 4xx/5xx reply, 421            sends it and closes the connection (RFC 5321 §3.8)
a 4xx/5xx reply, greeting       sends it, then ``503 5.5.1`` to every command but QUIT
                                (RFC 5321 §3.1): :class:`Say` with ``reject_the_rest``
a 4xx/5xx reply                 sends it instead of the stage; the session goes on
a 2xx/3xx reply                 answers normally, with the scripted text for the success
nothing scripted                answers normally (:class:`AnswerNormally`)
==============================  ===========================================================

The ``message`` stage (after the final dot)
-------------------------------------------

Here the order differs, because the message may be stored before the host has its say:

==============================  ===========================================================
the behaviour                   what the host does
==============================  ===========================================================
a 4xx/5xx reply                 waits the delay, sends the reply; the message is not stored
``disconnect: message``         stores the message, waits, hangs up: the sender cannot know
                                that the mail arrived (RFC 5321 §4.5.3.2.6 / §6.1)
a 2xx reply                     stores, waits, answers with the scripted text
nothing scripted                stores, waits, ``250 2.0.0 Ok: queued as ID``
==============================  ===========================================================

One recipient (RCPT, once aiosmtpd has parsed it): :func:`answer_rcpt`
----------------------------------------------------------------------

==================================  =======================================================
the behaviour and the session       the reply
==================================  =======================================================
a 4xx/5xx reply for this mailbox    that reply
``greylist`` and a young triple     ``451 4.7.1`` (the triple is recorded on first sight)
``max_recipients`` already taken    ``452 4.5.3`` (RFC 5321 §4.5.3.1.10: try them later)
a 2xx reply for this mailbox        accepted, with that text
nothing scripted                    accepted: ``250 2.1.5 Ok``
==================================  =======================================================

Phases that count: :class:`PhaseCursor`
---------------------------------------

A host's phases end at their ``until`` (virtual time from the start) or after ``times``
sessions, whichever comes first; the cursor says which phase is in force. What a phase counts
depends on what it does: a phase whose host is reached (``accept``, ``silent``) counts
*sessions*, every connection that reaches the host (one answered ``421`` for too many at
once included); a phase that refuses or times out sees no session and counts *connection
attempts*, as far as someone can see them (``MailHost.connection_attempted``). The count is
the host's, per address: every address of a host is a server of its own.

==========================================  ================================================
what happens                                what the cursor does
==========================================  ================================================
the clock passes the phase's ``until``      the next phase is in force (so are the phases
                                            after it whose ``until`` has passed too)
the phase's ``times``-th session/attempt    that one still belongs to the phase; the next
                                            phase is in force for the ones after it
a session counted in a phase                keeps playing that phase to its end (the
                                            ``times``-th session of ``{times: 2, do:
                                            {greeting: 421}}`` is greeted 421), unless the
                                            phase's ``until`` passes or the behaviour is
                                            replaced meanwhile
==========================================  ================================================

A mailbox's replies (``recipient_phases``) are phases too, which count the RCPTs for that
mailbox at this host: the cursor keeps their counts, per phase of the host.

The ESMTP extensions a host advertises, and enforces: :func:`ehlo_lines`, :func:`mail_refusal`
-----------------------------------------------------------------------------------------------

The EHLO reply lists what ``esmtp`` offers (SIZE, PIPELINING, 8BITMIME, SMTPUTF8), and
MAIL and RCPT are checked against it before the SMTP server reads them:

===========================================  ================================================
MAIL or RCPT                                 the reply
===========================================  ================================================
a parameter the host did not offer           ``555 5.5.4`` (RFC 5321 §4.1.1.11): SIZE= with
(``SIZE=``, ``BODY=8BITMIME``, SMTPUTF8)     no SIZE, BODY=8BITMIME with no 8BITMIME,
                                             SMTPUTF8 with no SMTPUTF8 (RFC 6531 §3.4)
``SIZE=N`` over the advertised size          ``552 5.3.4`` (RFC 1870 §6.1); content over it
                                             after the final dot gets the same
an address that is not ASCII, in a           ``553 5.6.7`` (RFC 6531 §3.5: X.6.7, non-ASCII
transaction begun without SMTPUTF8           addresses not permitted)
===========================================  ================================================

Replies the host does not script
--------------------------------

- Any reply line ``421 …`` closes the connection once sent (:func:`closes_connection`),
  whoever wrote it.
- A positive scripted reply waits for the next reply of the stage and replaces it if it is a
  success (:func:`with_scripted_text`).
- After a rejecting greeting, :func:`answer_while_rejecting` answers every command.
"""

from __future__ import annotations

from dataclasses import dataclass

from sandbox.scenario.model import Behaviour, Esmtp, Phase, Reply, Stage, Timeline

__all__ = [
    "BAD_SEQUENCE",
    "BYE",
    "GREYLISTED",
    "RECIPIENT_OK",
    "TOO_MANY_RECIPIENTS",
    "Action",
    "AnswerNormally",
    "Greylist",
    "HangUp",
    "PhaseCursor",
    "RcptAnswer",
    "Say",
    "StagePlan",
    "answer_rcpt",
    "answer_while_rejecting",
    "closes_connection",
    "ehlo_lines",
    "limit_reply",
    "mail_refusal",
    "plan_stage",
    "queued_reply",
    "rcpt_refusal",
    "with_scripted_text",
]

GREYLISTED = "451 4.7.1 Greylisted, please try again later"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
RECIPIENT_OK = "250 2.1.5 Ok"
BAD_SEQUENCE = "503 5.5.1 Bad sequence of commands"
BYE = "221 2.0.0 Bye"


# --- one stage -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnswerNormally:
    """Let the SMTP server answer as it would; a ``positive`` reply replaces the text of its
    success (an error it gives stands)."""

    positive: Reply | None = None


@dataclass(frozen=True, slots=True)
class Say:
    """Send ``reply`` instead of answering the stage. With ``reject_the_rest``, every later
    command but QUIT gets ``503 5.5.1``."""

    reply: Reply
    reject_the_rest: bool = False


@dataclass(frozen=True, slots=True)
class HangUp:
    """Close the connection without a reply."""


Action = AnswerNormally | Say | HangUp


@dataclass(frozen=True, slots=True)
class StagePlan:
    """Wait ``delay`` virtual seconds, then do ``action``. At the ``message`` stage,
    ``store_first`` says to keep the message before the delay."""

    delay: float
    action: Action
    store_first: bool = False


def plan_stage(behaviour: Behaviour, stage: Stage) -> StagePlan:
    """What the host does at ``stage`` under ``behaviour`` (the tables above)."""
    delay = behaviour.delays.get(stage, 0.0)
    reply = behaviour.replies.get(stage)
    if stage == "message":
        return _plan_message(behaviour, reply, delay)
    if behaviour.disconnect == stage:
        return StagePlan(delay, HangUp())
    if reply is None or reply.code < 400:
        return StagePlan(delay, AnswerNormally(reply))
    rejecting_greeting = stage == "greeting" and not reply.closes
    return StagePlan(delay, Say(reply, reject_the_rest=rejecting_greeting))


def _plan_message(behaviour: Behaviour, reply: Reply | None, delay: float) -> StagePlan:
    if reply is not None and reply.code >= 400:
        return StagePlan(delay, Say(reply))
    if behaviour.disconnect == "message":
        return StagePlan(delay, HangUp(), store_first=True)
    return StagePlan(delay, AnswerNormally(reply), store_first=True)


def queued_reply(message_id: str) -> str:
    """The normal answer after the final dot, once the message is stored."""
    return f"250 2.0.0 Ok: queued as {message_id}"


def limit_reply(behaviour: Behaviour, messages_so_far: int) -> Reply | None:
    """The reply to MAIL past the host's ``max_messages`` in one session, or None."""
    limit = behaviour.max_messages
    if limit is not None and messages_so_far >= limit.count:
        return limit.reply
    return None


# --- ESMTP extensions ----------------------------------------------------------------------

UNKNOWN_PARAMETER = "555 5.5.4 MAIL FROM parameters not recognized or not implemented"
TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"
NOT_ASCII = "553 5.6.7 Non-ASCII addresses not permitted without SMTPUTF8"
_EXTENSIONS = ("SIZE", "8BITMIME", "SMTPUTF8", "PIPELINING")


def ehlo_lines(esmtp: Esmtp, lines: list[str]) -> list[str]:
    """The EHLO reply (``250-NAME``, ``250-SIZE …``, …, ``250 HELP``) with the extensions of
    ``esmtp``: SIZE, PIPELINING, 8BITMIME and SMTPUTF8 as it says, the others as they are,
    but AUTH: a mail exchanger offers none (aiosmtpd says ``250-AUTH`` once TLS is up, with
    no mechanism left after the session excludes them)."""
    kept = [line for line in lines if line[4:].split(" ")[0].upper() not in (*_EXTENSIONS, "AUTH")]
    offered = []
    if esmtp.size is not None:
        offered.append(f"250-SIZE {esmtp.size}")
    if esmtp.pipelining:
        offered.append("250-PIPELINING")
    if esmtp.eightbitmime:
        offered.append("250-8BITMIME")
    if esmtp.smtputf8:
        offered.append("250-SMTPUTF8")
    return kept[:1] + offered + kept[1:]


def _parameters(arg: str) -> tuple[str, dict[str, str]]:
    """``<a@b> SIZE=10 BODY=8BITMIME`` -> ("<a@b>", {"SIZE": "10", "BODY": "8BITMIME"})."""
    arg = arg.strip()
    if arg.startswith("<") and ">" in arg:
        end = arg.index(">") + 1
        address, rest = arg[:end], arg[end:]
    else:
        address, _, rest = arg.partition(" ")
    params = {}
    for word in rest.split():
        key, _, value = word.partition("=")
        params[key.upper()] = value.upper()
    return address, params


def mail_refusal(esmtp: Esmtp, arg: str) -> str | None:
    """The reply to ``MAIL FROM:ARG`` (``arg`` after the colon) that ``esmtp`` makes the host
    give before anything else reads it, or None (the table above)."""
    address, params = _parameters(arg)
    body = params.get("BODY")
    if (
        ("SIZE" in params and esmtp.size is None)
        or (body == "8BITMIME" and not esmtp.eightbitmime)
        or ("SMTPUTF8" in params and not esmtp.smtputf8)
    ):
        return UNKNOWN_PARAMETER
    size = params.get("SIZE", "")
    if esmtp.size is not None and size.isdigit() and int(size) > esmtp.size:
        return TOO_BIG
    if not address.isascii() and "SMTPUTF8" not in params:
        return NOT_ASCII
    return None


def rcpt_refusal(arg: str, smtputf8: bool) -> str | None:
    """The reply to ``RCPT TO:ARG`` in a transaction begun with (or without) SMTPUTF8 that
    the host gives before anything else reads it, or None."""
    address, _ = _parameters(arg)
    if not smtputf8 and not address.isascii():
        return NOT_ASCII
    return None


# --- phases that count ---------------------------------------------------------------------


class PhaseCursor:
    """Where one host is in its phases, by time and by count (the module docstring)."""

    def __init__(self, timeline: Timeline[Behaviour]) -> None:
        self.timeline = timeline
        self.index = 0
        self.used = 0  # sessions or attempts counted in the phase in force
        self._rcpts: dict[tuple[int, str], int] = {}  # (host phase, mailbox) -> RCPTs

    @property
    def phases(self) -> tuple[Phase[Behaviour], ...]:
        return self.timeline.phases

    def now(self, t: float) -> Behaviour:
        """The behaviour in force at ``t`` for a new session."""
        return self.phases[self.at(t)].value

    def at(self, t: float) -> int:
        """The index of the phase in force at ``t`` (the clock only moves forward)."""
        phases = self.phases
        last = len(phases) - 1
        while self.index < last and (until := phases[self.index].until) is not None and t >= until:
            self.index += 1
            self.used = 0
        return self.index

    def count(self, t: float) -> tuple[int, bool]:
        """Count one session (or attempt) in the phase in force at ``t``. Returns that
        phase's index, and whether this one was the phase's last (the next is in force)."""
        index = self.at(t)
        times = self.phases[index].times
        self.used += 1
        if times is None or self.used < times or index == len(self.phases) - 1:
            return index, False
        self.index += 1
        self.used = 0
        self.at(t)  # a phase whose until has passed already is over too
        return index, True

    def counted_in(self, index: int, t: float) -> Behaviour:
        """What a session counted in phase ``index`` plays at ``t``: that phase, until its
        ``until`` passes; then the phase in force."""
        until = self.phases[index].until
        if until is not None and t >= until:
            return self.now(t)
        return self.phases[index].value

    def recipient_reply(self, phase: int, behaviour: Behaviour, mailbox: str) -> Reply | None:
        """The reply scripted for one more RCPT of ``mailbox``, by the count of its RCPTs
        in host phase ``phase`` (None: nothing scripted for it)."""
        wanted = mailbox.lower()
        for scripted, replies in behaviour.recipient_phases.items():
            if scripted.lower() != wanted:
                continue
            key = (phase, wanted)
            seen = self._rcpts.get(key, 0)
            self._rcpts[key] = seen + 1
            return _by_count(replies, seen)
        return None


def _by_count(replies: Timeline[Reply], seen: int) -> Reply:
    """The phase of ``replies`` that the RCPT after ``seen`` others falls in."""
    for phase in replies.phases:
        if phase.times is None or seen < phase.times:
            return phase.value
        seen -= phase.times
    return replies.phases[-1].value


# --- one recipient -------------------------------------------------------------------------


class Greylist:
    """The greylisting table: when each (client address, sender, recipient) triple was first
    seen. One table per host, shared by its sessions; mailboxes compare without case."""

    def __init__(self) -> None:
        self._first_seen: dict[tuple[str, str, str], float] = {}

    def defers(self, client: str, sender: str, recipient: str, period: float, now: float) -> bool:
        """Record the triple if it is new; True while it is younger than ``period``."""
        triple = (client, sender.lower(), recipient.lower())
        first_seen = self._first_seen.setdefault(triple, now)
        return now < first_seen + period

    def forget(self) -> None:
        """Forget every triple: each is new again (a reset between tests)."""
        self._first_seen.clear()


@dataclass(frozen=True, slots=True)
class RcptAnswer:
    """The reply to one RCPT, and whether the recipient joins the envelope."""

    reply: str
    accepted: bool


def answer_rcpt(
    behaviour: Behaviour,
    recipient: str,
    *,
    sender: str,
    client: str,
    accepted_so_far: int,
    greylist: Greylist,
    now: float,
    counted: Reply | None = None,
) -> RcptAnswer:
    """The reply to RCPT TO ``recipient`` (the RCPT table above); ``counted`` is the reply
    of the mailbox's phases (``PhaseCursor.recipient_reply``), when it has some."""
    scripted = counted if counted is not None else _reply_for_mailbox(behaviour, recipient)
    if scripted is not None and scripted.code >= 400:
        return RcptAnswer(str(scripted), accepted=False)
    period = behaviour.greylist
    if period is not None and greylist.defers(client, sender, recipient, period, now):
        return RcptAnswer(GREYLISTED, accepted=False)
    limit = behaviour.max_recipients
    if limit is not None and accepted_so_far >= limit:
        return RcptAnswer(TOO_MANY_RECIPIENTS, accepted=False)
    return RcptAnswer(str(scripted) if scripted is not None else RECIPIENT_OK, accepted=True)


def _reply_for_mailbox(behaviour: Behaviour, mailbox: str) -> Reply | None:
    wanted = mailbox.lower()
    for scripted_mailbox, reply in behaviour.recipients.items():
        if scripted_mailbox.lower() == wanted:
            return reply
    return None


# --- replies the host does not script ------------------------------------------------------


def closes_connection(line: str) -> bool:
    """A 421 reply closes the connection once it is sent (RFC 5321 §3.8)."""
    return line.startswith("421 ") or line == "421"


def with_scripted_text(positive: Reply | None, line: str) -> tuple[str | None, Reply | None]:
    """Apply a waiting ``positive`` scripted reply to the reply ``line`` the server is about
    to send. Returns what to send instead (None: nothing) and what still waits:

    ===========================================  ===============  ==================
    the line                                     sent             still waiting
    ===========================================  ===============  ==================
    any, with nothing waiting                    the line         nothing
    an error (4xx/5xx)                           the line         nothing
    a continuation of a success (``250-…``)      nothing          the scripted reply
    the last line of a success (2xx/3xx)         the scripted     nothing
    ===========================================  ===============  ==================
    """
    if positive is None:
        return line, None
    if line[:1] not in ("2", "3"):
        return line, None
    if line[3:4] == "-":
        return None, positive
    return str(positive), None


def answer_while_rejecting(command: str) -> tuple[str, bool]:
    """After a rejecting greeting: the reply to ``command`` and whether to hang up after it."""
    if command.strip().upper() == "QUIT":
        return BYE, True
    return BAD_SEQUENCE, False
