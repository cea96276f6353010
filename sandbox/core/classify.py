"""What one outcome means for the delivery: the classification table, sans I/O.

Every step of an SMTP session ends in a reply (a code and its text) or in no reply (the
connection was refused, timed out or was lost). ``classify`` turns that into a verdict:

- ``continue``: go on to the next step of the session;
- ``next_host``: a temporary failure with this host: keep the recipients and try the next
  address in the same attempt (or defer them if there is none left). Its ``why`` says what
  happened; the attempt (``core.delivery``) adds what it does next, which only it knows;
- ``defer``: a temporary failure that ends the whole attempt at once (Haraka, for a 4xx
  greeting, MAIL or DATA: the profile's ``tempfail_ends_attempt``);
- ``bounce``: a permanent failure: return the recipients concerned to the sender;
- ``delivered``: the host took responsibility for the message.

The table follows Postfix (RFC 5321 §4.2.1 and §4.5.4.1 leave the choices to the sender):

=========  ==========  =========  ==============================  ==========================
stage      2xx / 3xx   4xx        5xx                             timeout / lost / refused
=========  ==========  =========  ==============================  ==========================
connect    —           —          —                               next_host
greeting   continue    next_host  next_host (skip_5xx_greeting)   next_host
ehlo       continue    next_host  bounce (after HELO also fails)  next_host
starttls   the TLS policy decides (``core.tls.decide``)           next_host
mail       continue    next_host  bounce the message              next_host
rcpt       continue    next_host  bounce this recipient           next_host
data       continue    next_host  bounce the message              next_host
message    delivered   next_host  bounce the message              next_host (outcome unknown)
=========  ==========  =========  ==============================  ==========================

A 4xx to RCPT keeps only that recipient for the next host; the others go on.

Two readers share these verdicts: the shell's RSET probe of a session kept open
(``probe_passed``), and the report, whose marks say in a word how each session went
(``session_end``). The words of a failed connect live here too (``CONNECT_FAILURES``), once
for every voice: the log's, the story's and the decision's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from sandbox.core.policy import Profile

__all__ = [
    "CONNECT_FAILURES",
    "PROBE_COMMAND",
    "Classified",
    "ConnectFailure",
    "ConnectWords",
    "NoReply",
    "Outcome",
    "ServerReply",
    "SessionEnd",
    "SessionFailure",
    "SessionStage",
    "Stage",
    "Verdict",
    "classify",
    "connect_words",
    "dsn_of",
    "probe_passed",
    "session_end",
]

Verdict = Literal["continue", "next_host", "defer", "bounce", "delivered"]
Stage = Literal[
    "connect", "greeting", "ehlo", "helo", "starttls", "mail", "rcpt", "data", "message"
]
# The steps the shell takes on its own: a session kept open from an earlier delivery is
# checked with RSET (Postfix's "RSET probe") before the walk gets it back as ``Reused``, and
# a session ends with QUIT, whose reply decides nothing.
SessionStage = Stage | Literal["rset", "quit"]
PROBE_COMMAND = "RSET"

# Why a step got no reply. The TCP connect is refused, times out, or fails with another socket
# error; a step of an open session times out or finds the connection lost.
ConnectFailure = Literal["refused", "timeout", "error"]
SessionFailure = Literal["timeout", "lost"]


@dataclass(frozen=True, slots=True)
class ServerReply:
    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}".rstrip()


@dataclass(frozen=True, slots=True)
class NoReply:
    reason: ConnectFailure | SessionFailure
    detail: str = ""


Outcome = ServerReply | NoReply


@dataclass(frozen=True, slots=True)
class ConnectWords:
    """A failed TCP connect in each voice the sandbox speaks."""

    error: str  # the system's, as Postfix logs it: "connect to H[A]:25: Connection refused"
    story: str  # the narrative's: "connect to H[A]:25 … refused"
    why: str  # a decision's: "the connection was refused" (the attempt adds what follows)


CONNECT_FAILURES: dict[ConnectFailure, ConnectWords] = {
    "refused": ConnectWords("Connection refused", "refused", "the connection was refused"),
    "timeout": ConnectWords("Connection timed out", "timed out", "the connection timed out"),
    # Any other socket error speaks for itself (its text is the outcome's detail).
    "error": ConnectWords("", "", "the connection failed"),
}


@dataclass(frozen=True, slots=True)
class Classified:
    verdict: Verdict
    dsn: str
    why: str


_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


# (stage, reply class) -> (verdict, why). Reply classes: "2", "3", "4", "5".
_TABLE: dict[tuple[str, str], tuple[Verdict, str]] = {
    ("greeting", "2"): ("continue", ""),
    ("greeting", "4"): ("next_host", "a 4xx greeting is temporary"),
    ("greeting", "5"): ("next_host", "a 5xx greeting refuses this host only"),
    ("ehlo", "2"): ("continue", ""),
    ("ehlo", "4"): ("next_host", "a 4xx reply to EHLO is temporary"),
    ("ehlo", "5"): ("continue", "EHLO refused: try HELO, as RFC 5321 §4.1.4 allows"),
    ("helo", "2"): ("continue", ""),
    ("helo", "4"): ("next_host", "a 4xx reply to HELO is temporary"),
    ("helo", "5"): ("bounce", "the host refuses to talk to us (5xx to HELO): permanent"),
    # A reply to STARTTLS means what the sender's TLS policy says it means (``core.tls``):
    # the session goes on here, and ``core.tls.decide`` judges it.
    ("starttls", "2"): ("continue", ""),
    ("starttls", "4"): ("continue", ""),
    ("starttls", "5"): ("continue", ""),
    ("mail", "2"): ("continue", ""),
    ("mail", "4"): ("next_host", "a 4xx reply to MAIL is temporary"),
    ("mail", "5"): ("bounce", "a 5xx reply to MAIL refuses the whole message: permanent"),
    ("rcpt", "2"): ("continue", ""),
    ("rcpt", "4"): ("next_host", "a 4xx reply to RCPT is temporary: keep the recipient"),
    ("rcpt", "5"): ("bounce", "a 5xx reply to RCPT refuses this recipient: permanent, no failover"),
    ("data", "3"): ("continue", ""),
    ("data", "2"): ("continue", ""),
    ("data", "4"): ("next_host", "a 4xx reply to DATA is temporary"),
    ("data", "5"): ("bounce", "a 5xx reply to DATA refuses the message: permanent"),
    ("message", "2"): ("delivered", "the host accepted the message"),
    ("message", "4"): ("next_host", "a 4xx reply after the message is temporary"),
    ("message", "5"): ("bounce", "a 5xx reply after the message refuses it: permanent"),
}

_NO_REPLY_DSN: dict[ConnectFailure | SessionFailure, str] = {
    "refused": "4.4.1",
    "timeout": "4.4.2",
    "lost": "4.4.2",
    "error": "4.4.1",
}


def dsn_of(reply: ServerReply) -> str:
    """The enhanced status code (RFC 3463) in the reply text, or the basic one for its class."""
    match = _ENHANCED.match(reply.text)
    if match and match.group(1) == str(reply.code)[0]:
        return ".".join(match.groups())
    return f"{str(reply.code)[0]}.0.0"


def classify(stage: Stage, outcome: Outcome, profile: Profile) -> Classified:
    if isinstance(outcome, NoReply):
        return _classify_no_reply(stage, outcome)
    reply_class = str(outcome.code)[0]
    if stage == "greeting" and reply_class == "5" and not profile.skip_5xx_greeting:
        return Classified("bounce", dsn_of(outcome), "a 5xx greeting is permanent for this sender")
    verdict, why = _TABLE.get((stage, reply_class), ("next_host", "an unexpected reply"))
    if verdict == "next_host" and reply_class == "4" and stage in profile.tempfail_ends_attempt:
        return Classified(
            "defer",
            dsn_of(outcome),
            f"a 4xx reply at {stage} ends this attempt: no next host for this sender",
        )
    dsn = dsn_of(outcome)
    if verdict == "next_host" and dsn.startswith("5"):
        # A permanent code that we treat as temporary (a skipped 5xx greeting) is reported
        # as temporary, as Postfix does: the recipient is deferred, not failed.
        dsn = "4" + dsn[1:]
    return Classified(verdict, dsn, why)


def probe_passed(outcome: Outcome) -> bool:
    """Whether a session kept open may serve again: its RSET probe got a 250."""
    return isinstance(outcome, ServerReply) and outcome.code == 250


# How one session went, in a word (the report's marks): the host took the message; the
# connect failed (refused, timeout, error); a step got no reply (timeout, lost); or a reply
# failed a step (tempfail for 4xx, rejected for 5xx).
SessionEnd = Literal["accepted", "refused", "timeout", "tempfail", "rejected", "lost", "error"]


def session_end(stage: SessionStage, outcome: Outcome, profile: Profile) -> SessionEnd | None:
    """What one step says of its session, by the step's verdict: None while it goes on."""
    if stage == "quit":
        return None  # the session has had its say
    if stage == "rset":
        verdict: Verdict = "continue" if probe_passed(outcome) else "next_host"
    else:
        verdict = classify(stage, outcome, profile).verdict
    if verdict == "continue":
        return None
    if verdict == "delivered":
        return "accepted"
    if isinstance(outcome, NoReply):
        return outcome.reason
    return "rejected" if outcome.code >= 500 else "tempfail"


def connect_words(reason: ConnectFailure | SessionFailure) -> ConnectWords:
    """How a failed connect is worded (a connect is never "lost": that reads as an error)."""
    return CONNECT_FAILURES["error" if reason == "lost" else reason]


def _classify_no_reply(stage: Stage, outcome: NoReply) -> Classified:
    dsn = "4.4.1" if stage == "connect" else _NO_REPLY_DSN[outcome.reason]
    if stage == "connect":
        why = connect_words(outcome.reason).why
    elif stage == "message":
        why = (
            "no reply after the final dot: the host may have the message or not, so it stays "
            "queued and may arrive twice (RFC 5321 §4.5.3.2, §6.1)"
        )
    elif outcome.reason == "timeout":
        why = f"no reply at {stage} within the timeout"
    else:
        why = f"the connection was lost at {stage}"
    return Classified("next_host", dsn, why)
