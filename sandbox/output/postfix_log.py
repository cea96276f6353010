"""The story as Postfix would log it, for people who read mail logs every day.

A sink: each event becomes zero or more lines in Postfix's own format, with virtual
timestamps (the run starts at ``RUN_EPOCH``) and a queue ID per message::

    Jan  1 00:00:00 sender postfix/smtp[2002]: connect to mx1.example.test[192.0.2.10]:25: Connection refused
    Jan  1 00:00:00 sender postfix/smtp[2002]: 10A0001: to=<alice@example.test>, relay=mx2.example.test[192.0.2.11]:25, delay=0, delays=0/0/0/0, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as …)

Queue IDs are derived from the message number, so the same run always logs the same lines.
"""  # noqa: E501 - the example lines are Postfix's, and they are long

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sandbox.core.classify import NoReply, ServerReply
from sandbox.core.delivery import describe_outcome, where
from sandbox.events import (
    AttemptStarted,
    ConnectFailed,
    DsnCreated,
    Event,
    MessageQueued,
    RecipientDeferred,
    RecipientFinal,
    SmtpExchange,
    SmtpFailure,
    TlsChecked,
)
from sandbox.sender.message import RUN_EPOCH

__all__ = ["PostfixLog", "queue_id"]

_PIDS = {"cleanup": 1001, "qmgr": 1002, "smtp": 1003, "bounce": 1004}


def queue_id(message: int) -> str:
    """A Postfix-looking queue ID, the same for the same message number on every run."""
    return f"{0x10A0000 + message:X}"


def _stamp(t: float) -> str:
    when = RUN_EPOCH + timedelta(seconds=t)
    return f"{when:%b} {when.day:>2} {when:%H:%M:%S}"


def _relay(host: str | None, address: str | None) -> str:
    return f"{where(host, address)}:25" if host and address else "none"


def _tls_established(event: TlsChecked) -> str:
    """Postfix's words (smtp_tls_policy, tls_client.c): "Verified" when the certificate was
    checked and passed (DANE, or a level that verifies), "Trusted" when its chain reaches a
    trusted CA, "Untrusted" otherwise."""
    if event.dane == "match" or (event.certificate == "valid" and event.level in _VERIFYING):
        trust = "Verified"
    elif event.certificate in ("valid", "wrong-name"):
        trust = "Trusted"
    else:
        trust = "Untrusted"
    at = where(event.host, event.address)
    return f"{trust} TLS connection established to {at}:25: {event.version}"


_VERIFYING = ("verify", "dane")


def _seconds(value: float) -> str:
    return f"{value:.2g}" if value < 10 else str(round(value))


@dataclass(slots=True)
class _Message:
    arrived: float
    sender: str
    waiting: set[str]
    attempt_started: float


@dataclass(slots=True)
class PostfixLog:
    """Call it with each event; ``write`` receives each finished line."""

    write: Callable[[str], None]
    hostname: str = "sender"
    _messages: dict[int, _Message] = field(default_factory=dict)

    def __call__(self, event: Event) -> None:
        match event:
            case MessageQueued():
                self._queued(event)
            case AttemptStarted():
                if event.message in self._messages:
                    self._messages[event.message].attempt_started = event.t
            case ConnectFailed():
                failure = NoReply(event.reason, event.detail)
                text = describe_outcome("connect", event.host, event.address, failure)
                self._line(event.t, "smtp", text)
            case SmtpExchange() if event.code >= 400 and event.stage != "quit":
                reply = ServerReply(event.code, event.reply)
                text = describe_outcome(event.stage, event.host, event.address, reply)
                self._line(event.t, "smtp", f"{queue_id(event.message)}: {text}")
            case TlsChecked(outcome="established"):
                self._line(event.t, "smtp", _tls_established(event))
            case TlsChecked(outcome="handshake_failed"):
                at = where(event.host, event.address)
                self._line(event.t, "smtp", f"SSL_connect error to {at}:25: {event.detail}")
            case SmtpFailure():
                failure = NoReply(event.reason, event.detail)
                text = describe_outcome(event.stage, event.host, event.address, failure)
                self._line(event.t, "smtp", f"{queue_id(event.message)}: {text}")
            case RecipientDeferred():
                relay = _relay(event.host, event.address)
                self._status(
                    event.t,
                    event.message,
                    event.recipient,
                    relay,
                    event.dsn,
                    "deferred",
                    event.reply,
                )
            case RecipientFinal():
                self._final(event)
            case DsnCreated() if event.dsn_message is not None:
                what = (
                    "non-delivery notification"
                    if event.action == "failed"
                    else "delay status notification"
                )
                self._line(
                    event.t,
                    "bounce",
                    f"{queue_id(event.message)}: sender {what}: {queue_id(event.dsn_message)}",
                )
            case _:
                pass

    def _queued(self, event: MessageQueued) -> None:
        self._messages[event.message] = _Message(
            event.t, event.sender, set(event.recipients), event.t
        )
        qid = queue_id(event.message)
        if event.message_id:
            self._line(event.t, "cleanup", f"{qid}: message-id={event.message_id}")
        self._line(
            event.t,
            "qmgr",
            f"{qid}: from=<{event.sender}>, size={event.size}, "
            f"nrcpt={len(event.recipients)} (queue active)",
        )

    def _final(self, event: RecipientFinal) -> None:
        relay = f"{event.relay}:25" if event.relay else "none"
        if event.status == "delivered":
            self._status(
                event.t, event.message, event.recipient, relay, event.dsn, "sent", event.reply
            )
        elif event.expired:
            # Postfix logs the last try as deferred, then qmgr returns the expired message.
            self._status(
                event.t, event.message, event.recipient, relay, event.dsn, "deferred", event.reply
            )
            sender = self._messages[event.message].sender if event.message in self._messages else ""
            self._line(
                event.t,
                "qmgr",
                f"{queue_id(event.message)}: from=<{sender}>, status=expired, returned to sender",
            )
        elif event.status == "bounced":
            self._status(
                event.t, event.message, event.recipient, relay, event.dsn, "bounced", event.reply
            )
        else:
            return  # still queued when the run ended: Postfix would say nothing yet
        message = self._messages.get(event.message)
        if message is not None:
            message.waiting.discard(event.recipient)
            if not message.waiting:
                self._line(event.t, "qmgr", f"{queue_id(event.message)}: removed")

    def _status(
        self, t: float, number: int, recipient: str, relay: str, dsn: str, status: str, reply: str
    ) -> None:
        message = self._messages.get(number)
        arrived = message.arrived if message else t
        started = message.attempt_started if message else t
        delays = f"0/{_seconds(started - arrived)}/0/{_seconds(t - started)}"
        self._line(
            t,
            "smtp",
            f"{queue_id(number)}: to=<{recipient}>, relay={relay}, "
            f"delay={_seconds(t - arrived)}, delays={delays}, dsn={dsn}, "
            f"status={status} ({reply})",
        )

    def _line(self, t: float, process: str, text: str) -> None:
        self.write(f"{_stamp(t)} {self.hostname} postfix/{process}[{_PIDS[process]}]: {text}")
