"""The story as Postfix 3.7 would log it, for people who read mail logs every day.

A sink: each event becomes zero or more lines in Postfix's own format, with virtual
timestamps (the run starts at ``RUN_EPOCH``), a queue ID per message and a pid per Postfix
process. Only those three differ from what Postfix itself logs for the same events; the
lines, their fields, their order and their words are Postfix's (checked line by line against
the real Postfix 3.7 in tests/differential)::

    Jan  1 00:00:00 sender postfix/pickup[1000]: 10A0001: uid=0 from=<bob@example.net>
    Jan  1 00:00:00 sender postfix/cleanup[1001]: 10A0001: message-id=<…>
    Jan  1 00:00:00 sender postfix/qmgr[1002]: 10A0001: from=<bob@example.net>, size=331, nrcpt=1 (queue active)
    Jan  1 00:00:00 sender postfix/smtp[1003]: connect to mx1.example.test[192.0.2.10]:25: Connection refused
    Jan  1 00:00:00 sender postfix/smtp[1003]: 10A0001: to=<alice@example.test>, relay=mx2.example.test[192.0.2.11]:25, delay=0, delays=0/0/0/0, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as …)
    Jan  1 00:00:00 sender postfix/qmgr[1002]: 10A0001: removed

How Postfix logs, and so this sink (src/global/log_adhoc.c, src/smtp, src/qmgr):

- a message enters the active queue (``(queue active)``) at each attempt, with the number
  of recipients still to deliver; a bounce (DSN) is made by the cleanup and bounce daemons;
- a failed connect is logged at once, without queue ID; any other failure of a host
  (``host … said: …``, ``… refused to talk to me: …``, a timeout, a lost connection) only when
  the next host is tried: when it was the last host, the deferral's reason says it;
- a 5xx reply to RCPT bounces that recipient at once (``status=bounced`` before the others'
  lines);
- ``relay=`` names the host whose session gave the result, ``none`` when no session was
  made; ``conn_use=N`` follows it on a session used for the Nth time;
- ``delays=a/b/c/d``: a, the time before the message entered the active queue (since its
  arrival); b, the wait for a delivery agent (a free slot of its destination); c, the
  connection set-up (DNS, connect, greeting, EHLO of the session that carried the mail); d,
  the transmission. Each is formatted like Postfix's ``format_tv``: two significant digits
  below 10 s, at most two decimals, whole seconds above;
- a delivery deferred without a try because its destination is dead is the ``error``
  transport's line (``delivery temporarily suspended: …``, relay=none);
- a message that is given up on logs its last deferral, then ``status=expired, returned to
  sender``; every bounce is followed by ``sender non-delivery notification: QID2``.

Queue IDs are derived from the message number, so the same run always logs the same lines.
"""  # noqa: E501 - the example lines are Postfix's, and they are long

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sandbox.core.classify import NoReply, ServerReply, dsn_of
from sandbox.core.delivery import describe_outcome, where
from sandbox.core.mx import ip_literal
from sandbox.events import (
    AttemptFinished,
    AttemptStarted,
    Connected,
    ConnectFailed,
    DnsAnswered,
    DsnCreated,
    Event,
    MessageQueued,
    RecipientDeferred,
    RecipientFinal,
    RouteChosen,
    RouteFailed,
    RunFinished,
    SmtpExchange,
    SmtpFailure,
    TlsChecked,
)
from sandbox.sender.message import RUN_EPOCH

__all__ = ["PostfixLog", "format_tv", "queue_id"]

_PIDS = {
    "pickup": 1000,
    "cleanup": 1001,
    "qmgr": 1002,
    "bounce": 1004,
    "error": 1005,
}
# Postfix runs a pool of smtp processes, one per delivery in flight: each attempt takes the
# lowest free pid from here on, so that a line without a queue ID (a refused connect, a
# warning) is tied to its delivery by its pid, as in Postfix's own log.
_SMTP_PIDS = 2001
# The sender's uid that Postfix's pickup logs for a local submission (the differential
# tests submit as root).
_UID = 0


def queue_id(message: int) -> str:
    """A Postfix-looking queue ID, the same for the same message number on every run."""
    return f"{0x10A0000 + message:X}"


def format_tv(seconds: float, significant: int = 2, decimals: int = 2) -> str:
    """A time as Postfix's ``format_tv`` writes a delay (src/util/format_tv.c): at most
    ``significant`` digits for a small number, at most ``decimals`` after the point, no
    trailing zeros; a number of ``10 ** significant`` seconds or more rounded to whole
    seconds (``delay_logging_resolution_limit`` is ``decimals``)."""
    micro = max(0, round(seconds * 1_000_000))
    whole, fraction = divmod(micro, 1_000_000)
    width = 10**significant
    resolution = 1_000_000 // 10**decimals
    if resolution < 1_000_000:
        if whole > 0:
            digits = 1
            while whole >= digits and digits <= width // 10:
                digits *= 10
            resolution = (1_000_000 // width) * digits
        else:
            while fraction >= width * resolution:
                resolution *= 10
    if resolution > 1:
        fraction += resolution // 2
        if fraction >= 1_000_000:
            whole += 1
            fraction -= 1_000_000
    text = str(whole)
    if fraction >= resolution:
        text += "."
        rest, unit = fraction, 100_000
        while rest >= resolution and unit > 0:
            text += str(rest // unit)
            rest %= unit
            unit //= 10
    return text


def _stamp(t: float) -> str:
    when = RUN_EPOCH + timedelta(seconds=t)
    return f"{when:%b} {when.day:>2} {when:%H:%M:%S}"


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def _tls_established(event: TlsChecked) -> str:
    """Postfix's words (smtp_tls_policy, tls_client.c): "Verified" when the certificate was
    checked and passed (a TLSA match, or a valid one at a level that verifies names),
    "Untrusted" when TLSA records did not match it, "Trusted" when its chain reaches a
    trusted CA, "Untrusted" otherwise."""
    if event.dane == "match" or (
        not event.dane and event.certificate == "valid" and event.level in _VERIFYING
    ):
        trust = "Verified"
    elif event.dane != "mismatch" and event.certificate in ("valid", "wrong-name"):
        trust = "Trusted"
    else:
        trust = "Untrusted"
    at = where(event.host, event.address)
    return f"{trust} TLS connection established to {at}:25: {event.version}"


# Levels that check names (at "dane", a host without TLSA records is at "may").
_VERIFYING = ("verify",)


@dataclass(slots=True)
class _Message:
    arrived: float
    sender: str
    size: int
    waiting: set[str]
    busy: int = 0  # attempts in flight: while one is, the message is in the active queue


@dataclass(slots=True)
class _Attempt:
    """What the status lines of one attempt need to know."""

    active: float  # when the delivery entered the active queue
    handoff: float  # when the delivery agent took it
    setup_done: float | None = None  # the carrying session's handshake completed
    use: int = 1  # the carrying session's use count (conn_use)
    mx_records: bool = False  # DNS gave MX records (Postfix warns when none has an address)
    pid: int = _SMTP_PIDS  # the smtp process's
    # A failure of the host just tried, logged only if the walk goes on to another host.
    held: tuple[float, str] | None = None


@dataclass(slots=True)
class PostfixLog:
    """Call it with each event; ``write`` receives each finished line."""

    write: Callable[[str], None]
    hostname: str = "sender"
    _messages: dict[int, _Message] = field(default_factory=dict)
    _attempts: dict[tuple[int, str, int], _Attempt] = field(default_factory=dict)
    # The attempt each (message, attempt number) is in, for the SMTP events (no domain).
    _current: dict[tuple[int, int], tuple[int, str, int]] = field(default_factory=dict)
    _bounced_now: set[tuple[int, str]] = field(default_factory=set)  # logged at their RCPT
    _busy_pids: set[int] = field(default_factory=set)
    # The queue manager's last words on a message ("expired", "removed"), held until its
    # other recipients' lines and its notification are out: (t, what, message).
    _closing: list[tuple[float, str, int]] = field(default_factory=list)

    def __call__(self, event: Event) -> None:
        if self._closing and not _about_closing(event, self._closing):
            self._flush("expired", "removed")
        match event:
            case MessageQueued():
                self._queued(event)
            case AttemptStarted():
                self._attempt_started(event)
            case AttemptFinished():
                message = self._messages.get(event.message)
                if message is not None:
                    message.busy = max(0, message.busy - 1)
                key = (event.message, event.domain, event.attempt)
                if key in self._attempts:
                    self._busy_pids.discard(self._attempts[key].pid)
            case DnsAnswered(rdtype="MX", rcode="NOERROR") if event.records:
                attempt = self._attempt_of(event.message, event.attempt)
                if attempt is not None:
                    attempt.mx_records = True
            case DnsAnswered(rdtype="TLSA", rcode="NOERROR", secure=True):
                # tls_dane.c: a DANE sender ignores PKIX-TA and PKIX-EE records (RFC 7672
                # §3.1.3), and says so.
                attempt = self._attempt_of(event.message, event.attempt)
                for record in event.records:
                    if record.split(" ", 1)[0] in ("0", "1"):
                        self._smtp(
                            event.t,
                            attempt,
                            f"warning: {event.name} unsupported TLSA certificate usage: {record}",
                        )
            case RouteChosen():
                attempt = self._attempt_of(event.message, event.attempt)
                for _, host, _ in event.hosts:
                    literal = ip_literal(host)
                    if event.route == "mx" and literal is not None:
                        self._smtp(
                            event.t,
                            attempt,
                            "warning: numeric domain name in resource data of MX record for "
                            f"{event.domain}: {literal}",
                        )
            case RouteFailed(reason="no_address"):
                attempt = self._attempt_of(event.message, event.attempt)
                if attempt is not None and attempt.mx_records:
                    self._smtp(
                        event.t,
                        attempt,
                        f"warning: no MX host for {event.domain} has a valid address record",
                    )
            case Connected():
                self._connected(event)
            case ConnectFailed():
                self._release_held(event.message, event.attempt)
                failure = NoReply(event.reason, event.detail)
                text = describe_outcome("connect", event.host, event.address, failure)
                self._smtp(event.t, self._attempt_of(event.message, event.attempt), text)
            case SmtpExchange():
                self._exchange(event)
            case TlsChecked(outcome="established" | "handshake_failed"):
                self._tls(event)
            case SmtpFailure():
                failure = NoReply(event.reason, event.detail)
                text = describe_outcome(event.stage, event.host, event.address, failure)
                self._hold(
                    event.t, event.message, event.attempt, f"{queue_id(event.message)}: {text}"
                )
            case RecipientDeferred():
                self._deferred(event)
            case RecipientFinal():
                self._final(event)
            case DsnCreated():
                self._dsn(event)
            case RunFinished():
                self._flush("expired", "removed")
            case _:
                pass

    # --- the queue ---------------------------------------------------------------------------

    def _queued(self, event: MessageQueued) -> None:
        self._messages[event.message] = _Message(
            event.t, event.sender, event.size, set(event.recipients)
        )
        if event.about is not None:
            return
        qid = queue_id(event.message)
        self._line(event.t, "pickup", f"{qid}: uid={_UID} from=<{event.sender}>")
        if event.message_id:
            self._line(event.t, "cleanup", f"{qid}: message-id={event.message_id}")

    def _activate(self, t: float, number: int) -> None:
        """The message enters the active queue, unless it is there already."""
        message = self._messages.get(number)
        if message is None or message.busy > 0:
            return
        self._line(
            t,
            "qmgr",
            f"{queue_id(number)}: from=<{message.sender}>, size={message.size}, "
            f"nrcpt={len(message.waiting)} (queue active)",
        )

    def _attempt_started(self, event: AttemptStarted) -> None:
        active = event.t if event.active_since is None else event.active_since
        self._activate(active, event.message)
        message = self._messages.get(event.message)
        if message is not None:
            message.busy += 1
        key = (event.message, event.domain, event.attempt)
        pid = next(p for p in itertools.count(_SMTP_PIDS) if p not in self._busy_pids)
        self._busy_pids.add(pid)
        self._attempts[key] = _Attempt(active, event.t, pid=pid)
        self._current[(event.message, event.attempt)] = key

    def _attempt_of(self, message: int, attempt: int) -> _Attempt | None:
        key = self._current.get((message, attempt))
        return self._attempts.get(key) if key is not None else None

    # --- the SMTP client -----------------------------------------------------------------------

    def _connected(self, event: Connected) -> None:
        self._release_held(event.message, event.attempt)
        attempt = self._attempt_of(event.message, event.attempt)
        if attempt is not None:
            attempt.use = event.use
            attempt.setup_done = event.t if event.reused else None

    def _exchange(self, event: SmtpExchange) -> None:
        attempt = self._attempt_of(event.message, event.attempt)
        if event.stage in ("ehlo", "helo") and event.code < 400 and attempt is not None:
            attempt.setup_done = event.t
        if event.code < 400 or event.stage == "quit":
            return
        reply = ServerReply(event.code, event.reply)
        text = describe_outcome(event.stage, event.host, event.address, reply)
        if event.stage == "rcpt" and event.code >= 500:
            recipient = event.command.partition("<")[2].rpartition(">")[0]
            self._bounced_now.add((event.message, recipient.lower()))
            relay = f"{event.host}[{event.address}]"
            key = self._current.get((event.message, event.attempt))
            self._status(
                event.t, event.message, recipient, relay, dsn_of(reply), "bounced", text, key
            )
            return
        self._hold(event.t, event.message, event.attempt, f"{queue_id(event.message)}: {text}")

    def _tls(self, event: TlsChecked) -> None:
        """The handshake's lines (tls_client.c at smtp_tls_loglevel 1), and, when the host is
        given up for it, the failure that is logged once the next host is tried."""
        attempt = self._attempt_of(event.message, event.attempt)
        at = where(event.host, event.address)
        if event.outcome == "handshake_failed":
            # The sandbox's broken handshakes close the connection: OpenSSL's "lost connection".
            self._smtp(event.t, attempt, f"SSL_connect error to {at}:25: lost connection")
            failure = "Cannot start TLS: handshake failure"
        else:
            if event.dane == "mismatch":
                self._smtp(
                    event.t,
                    attempt,
                    f"server certificate verification failed for {at}:25: "
                    "num=65:no matching DANE TLSA records",
                )
            self._smtp(event.t, attempt, _tls_established(event))
            failure = "Server certificate not verified"
        if event.action in ("next_host", "retry_plain"):
            text = f"{queue_id(event.message)}: {failure}"
            self._hold(event.t, event.message, event.attempt, text)

    def _hold(self, t: float, message: int, attempt_number: int, text: str) -> None:
        attempt = self._attempt_of(message, attempt_number)
        if attempt is None:
            self._smtp(t, None, text)
            return
        self._release_held(message, attempt_number)
        attempt.held = (t, text)

    def _release_held(self, message: int, attempt_number: int) -> None:
        """The walk goes on to another host: the last host's failure is logged now."""
        attempt = self._attempt_of(message, attempt_number)
        if attempt is not None and attempt.held is not None:
            t, text = attempt.held
            attempt.held = None
            self._smtp(t, attempt, text)

    # --- outcomes ------------------------------------------------------------------------------

    def _deferred(self, event: RecipientDeferred) -> None:
        key = (event.message, _domain(event.recipient), event.attempt)
        self._outcome(event, key, event.relay, "deferred")

    def _final(self, event: RecipientFinal) -> None:
        key = (event.message, _domain(event.recipient), event.attempts)
        if event.status == "delivered":
            self._outcome(event, key, event.relay, "sent")
        elif event.expired:
            # Postfix logs the last try as deferred, then qmgr returns the expired message.
            self._outcome(event, key, event.relay, "deferred")
            if not any(what == "expired" and m == event.message for _, what, m in self._closing):
                self._closing.append((event.t, "expired", event.message))
        elif event.status == "bounced":
            if (event.message, event.recipient.lower()) not in self._bounced_now:
                self._outcome(event, key, event.relay, "bounced")
        else:
            return  # still queued when the run ended: Postfix would say nothing yet
        for k in [k for k in self._attempts if k[0] == event.message and k[1] == key[1]]:
            self._attempts[k].held = None
        message = self._messages.get(event.message)
        if message is not None:
            message.waiting.discard(event.recipient)
            if not message.waiting:
                self._closing.append((event.t, "removed", event.message))

    def _outcome(
        self,
        event: RecipientDeferred | RecipientFinal,
        key: tuple[int, str, int],
        relay: str | None,
        status: str,
    ) -> None:
        """A recipient's status line: the smtp process's for an attempt that ran; for a
        deferral without one (its destination is dead), the error transport's, as the
        queue manager hands it over on entering the active queue."""
        tried = key in self._attempts
        if not tried:
            self._activate(event.t, event.message)
        self._status(
            event.t,
            event.message,
            event.recipient,
            relay,
            event.dsn,
            status,
            event.reply,
            key if tried else None,
            process="smtp" if tried else "error",
        )

    def _dsn(self, event: DsnCreated) -> None:
        original = queue_id(event.message)
        self._flush("expired")
        if event.dsn_message is not None:
            qid = queue_id(event.dsn_message)
            if event.message_id:
                self._line(event.t, "cleanup", f"{qid}: message-id={event.message_id}")
            what = "non-delivery" if event.action == "failed" else "delay"
            self._line(event.t, "bounce", f"{original}: sender {what} notification: {qid}")
        self._flush("removed")

    def _flush(self, *kinds: str) -> None:
        """Log the held closing lines of these kinds, in order."""
        keep: list[tuple[float, str, int]] = []
        for t, what, number in self._closing:
            if what not in kinds:
                keep.append((t, what, number))
            elif what == "expired":
                message = self._messages.get(number)
                sender = message.sender if message is not None else ""
                self._line(
                    t,
                    "qmgr",
                    f"{queue_id(number)}: from=<{sender}>, status=expired, returned to sender",
                )
            else:
                self._line(t, "qmgr", f"{queue_id(number)}: removed")
                self._forget(number)
        self._closing = keep

    def _forget(self, number: int) -> None:
        for key in [k for k in self._attempts if k[0] == number]:
            del self._attempts[key]
        for pair in [k for k in self._current if k[0] == number]:
            del self._current[pair]

    def _status(
        self,
        t: float,
        number: int,
        recipient: str,
        relay: str | None,
        dsn: str,
        status: str,
        reply: str,
        key: tuple[int, str, int] | None,
        *,
        process: str = "smtp",
    ) -> None:
        message = self._messages.get(number)
        arrived = message.arrived if message is not None else t
        attempt = self._attempts.get(key) if key is not None else None
        if attempt is not None:
            attempt.held = None
        active = attempt.active if attempt is not None else t
        handoff = attempt.handoff if attempt is not None else t
        setup = attempt.setup_done if attempt is not None else None
        if setup is None:
            setup = t  # no session carried mail: the whole attempt was set-up
        delays = "/".join(
            format_tv(max(0.0, d))
            for d in (active - arrived, handoff - active, setup - handoff, t - setup)
        )
        use = attempt.use if attempt is not None and relay is not None else 1
        conn_use = f", conn_use={use}" if use > 1 else ""
        text = (
            f"{queue_id(number)}: to=<{recipient}>, relay={f'{relay}:25' if relay else 'none'}"
            f"{conn_use}, delay={format_tv(max(0.0, t - arrived))}, delays={delays}, "
            f"dsn={dsn}, status={status} ({reply})"
        )
        if process == "smtp":
            self._smtp(t, attempt, text)
        else:
            self._line(t, process, text)

    def _smtp(self, t: float, attempt: _Attempt | None, text: str) -> None:
        """A line of the smtp process that carries this attempt."""
        pid = attempt.pid if attempt is not None else _SMTP_PIDS
        self.write(f"{_stamp(t)} {self.hostname} postfix/smtp[{pid}]: {text}")

    def _line(self, t: float, process: str, text: str) -> None:
        self.write(f"{_stamp(t)} {self.hostname} postfix/{process}[{_PIDS[process]}]: {text}")


def _about_closing(event: Event, closing: list[tuple[float, str, int]]) -> bool:
    """The event is another recipient's outcome, or the notification, of a message whose
    closing lines are held: they wait for it."""
    if isinstance(event, RecipientFinal | DsnCreated):
        return any(number == event.message for _, _, number in closing)
    return False
