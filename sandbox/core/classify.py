"""What one outcome means for the delivery: the classification table, sans I/O.

Every step of an SMTP session ends in a reply (a code and its text) or in no reply (the
connection was refused, timed out or was lost). ``classify`` turns that into a verdict:

- ``continue``: go on to the next step of the session;
- ``next_host``: a temporary failure with this host: keep the recipients and try the next
  address in the same attempt (or defer them if there is none left);
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
mail       continue    next_host  bounce the message              next_host
rcpt       continue    next_host  bounce this recipient           next_host
data       continue    next_host  bounce the message              next_host
message    delivered   next_host  bounce the message              next_host (outcome unknown)
=========  ==========  =========  ==============================  ==========================

A 4xx to RCPT keeps only that recipient for the next host; the others go on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from sandbox.core.policy import Profile

__all__ = [
    "Classified",
    "NoReply",
    "Outcome",
    "ServerReply",
    "Verdict",
    "classify",
    "dsn_of",
]

Verdict = Literal["continue", "next_host", "defer", "bounce", "delivered"]
Stage = Literal["connect", "greeting", "ehlo", "helo", "mail", "rcpt", "data", "message"]


@dataclass(frozen=True, slots=True)
class ServerReply:
    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}".rstrip()


@dataclass(frozen=True, slots=True)
class NoReply:
    reason: Literal["refused", "timeout", "lost", "error"]
    detail: str = ""


Outcome = ServerReply | NoReply


@dataclass(frozen=True, slots=True)
class Classified:
    verdict: Verdict
    dsn: str
    why: str


_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")

# (stage, reply class) -> (verdict, why). Reply classes: "2", "3", "4", "5".
_TABLE: dict[tuple[str, str], tuple[Verdict, str]] = {
    ("greeting", "2"): ("continue", ""),
    ("greeting", "4"): ("next_host", "a 4xx greeting is temporary: try the next host"),
    ("greeting", "5"): ("next_host", "a 5xx greeting refuses this host only: try the next host"),
    ("ehlo", "2"): ("continue", ""),
    ("ehlo", "4"): ("next_host", "a 4xx reply to EHLO is temporary: try the next host"),
    ("ehlo", "5"): ("continue", "EHLO refused: fall back to HELO"),
    ("helo", "2"): ("continue", ""),
    ("helo", "4"): ("next_host", "a 4xx reply to HELO is temporary: try the next host"),
    ("helo", "5"): ("bounce", "the host refuses to talk to us (5xx to HELO): permanent"),
    ("mail", "2"): ("continue", ""),
    ("mail", "4"): ("next_host", "a 4xx reply to MAIL is temporary: try the next host"),
    ("mail", "5"): ("bounce", "a 5xx reply to MAIL refuses the whole message: permanent"),
    ("rcpt", "2"): ("continue", ""),
    ("rcpt", "4"): ("next_host", "a 4xx reply to RCPT is temporary: keep the recipient"),
    ("rcpt", "5"): ("bounce", "a 5xx reply to RCPT refuses this recipient: permanent, no failover"),
    ("data", "3"): ("continue", ""),
    ("data", "2"): ("continue", ""),
    ("data", "4"): ("next_host", "a 4xx reply to DATA is temporary: try the next host"),
    ("data", "5"): ("bounce", "a 5xx reply to DATA refuses the message: permanent"),
    ("message", "2"): ("delivered", "the host accepted the message"),
    ("message", "4"): (
        "next_host",
        "a 4xx reply after the message is temporary: try the next host",
    ),
    ("message", "5"): ("bounce", "a 5xx reply after the message refuses it: permanent"),
}

_NO_REPLY_DSN = {"refused": "4.4.1", "timeout": "4.4.2", "lost": "4.4.2", "error": "4.4.1"}


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


def _classify_no_reply(stage: Stage, outcome: NoReply) -> Classified:
    dsn = "4.4.1" if stage == "connect" else _NO_REPLY_DSN[outcome.reason]
    if stage == "connect":
        why = {
            "refused": "the connection was refused: try the next host",
            "timeout": "the connection timed out: try the next host",
        }.get(outcome.reason, "the connection failed: try the next host")
    elif stage == "message":
        why = (
            "no reply after the final dot: the host may have the message or not, so it stays "
            "queued and may arrive twice (RFC 5321 §4.5.3.2, §6.1)"
        )
    elif outcome.reason == "timeout":
        why = f"no reply at {stage} within the timeout: try the next host"
    else:
        why = f"the connection was lost at {stage}: try the next host"
    return Classified("next_host", dsn, why)
