"""Events: one stream of facts that every part of the sandbox emits, and every sink reads.

Each event is a frozen dataclass with the virtual time ``t`` (seconds from the start of the
run) and the correlation fields that apply (message number, recipient, attempt, host,
address). Sinks (narrative, Postfix-style log, JSON Lines, the recorder) only read events;
nothing in the sandbox reads a sink, so what a person sees and what a test asserts come from
the same facts.

A field that holds one of a closed set of words is typed with the core's ``Literal`` for it,
defined where the word is decided (``core.classify``, ``core.delivery``, ``core.mx``,
``core.dsn``); the few words that only the I/O shell decides are named here. The core never
imports this module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from sandbox.core.classify import ConnectFailure, SessionFailure, SessionStage
from sandbox.core.delivery import FinalStatus, NoteAction
from sandbox.core.dsn import DsnAction, DsnVia
from sandbox.core.mx import NoRouteKind, Rcode, RouteKind
from sandbox.core.tls import TlsAction, TlsStepKind

__all__ = [
    "AttemptFinished",
    "AttemptStarted",
    "ConnectFailed",
    "Connected",
    "ConnectionAttempt",
    "ControlAction",
    "ControlChanged",
    "Decision",
    "DecisionAction",
    "DnsAnswered",
    "DnsAsked",
    "DnsServed",
    "DsnCreated",
    "Emit",
    "Event",
    "HostAccepted",
    "HostPhase",
    "HostSession",
    "MessageQueued",
    "MtaStsChecked",
    "PolicyServed",
    "RecipientDeferred",
    "RecipientFinal",
    "RouteChosen",
    "RouteFailed",
    "RunEnd",
    "RunFinished",
    "RunStarted",
    "SmtpExchange",
    "SmtpFailure",
    "TlsChecked",
    "Transport",
    "Warning",
    "event_to_dict",
]


# The words only the I/O shell decides. The runner ends a run once every message is final
# ("settled"), when the scenario's time is up ("until"), or when it is interrupted.
RunEnd = Literal["settled", "until", "interrupted"]
# A decision is one the core told (a ``Note``), or the agent's "keep_open": a session kept
# for the next message to the same host (Postfix's connection cache).
DecisionAction = NoteAction | Literal["keep_open"]
# How a query reached the DNS server.
Transport = Literal["udp", "tcp"]
# What a change to a served world changed (``ControlChanged``).
ControlAction = Literal["behaviour", "dns", "zone", "reset"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    kind: ClassVar[str] = "event"
    t: float


Emit = Callable[[Event], None]


# --- the run -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted(Event):
    kind: ClassVar[str] = "run_started"
    scenario: str
    seed: int
    title: str = ""
    description: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished(Event):
    kind: ClassVar[str] = "run_finished"
    reason: RunEnd


@dataclass(frozen=True, slots=True, kw_only=True)
class Warning(Event):
    kind: ClassVar[str] = "warning"
    text: str
    message: int | None = None
    rule: str = ""


# --- the sender ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageQueued(Event):
    kind: ClassVar[str] = "message_queued"
    message: int
    sender: str
    recipients: tuple[str, ...]
    size: int = 0
    message_id: str = ""
    about: int | None = None  # for a bounce report (DSN): the message it reports on


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptStarted(Event):
    kind: ClassVar[str] = "attempt_started"
    message: int
    domain: str
    attempt: int
    recipients: tuple[str, ...]
    # When the delivery entered the active queue (became due); ``t`` minus this is the wait
    # for a free slot of its destination (Postfix's delays=a/b/c/d: a ends here, b is that
    # wait). None: at ``t``.
    active_since: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsAsked(Event):
    kind: ClassVar[str] = "dns_asked"
    message: int
    attempt: int
    name: str
    rdtype: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsAnswered(Event):
    kind: ClassVar[str] = "dns_answered"
    message: int
    attempt: int
    name: str
    rdtype: str
    rcode: Rcode
    records: tuple[str, ...]  # presentation form: "10 mx1.example.test.", "192.0.2.10"
    cnames: tuple[str, ...] = ()
    ttl: int = 0
    cached: bool = False
    secure: bool = False  # DNSSEC-validated (the AD bit)


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteChosen(Event):
    kind: ClassVar[str] = "route_chosen"
    message: int
    attempt: int
    domain: str
    route: RouteKind
    hosts: tuple[tuple[int, str, tuple[str, ...]], ...]  # (preference, host, addresses)
    why: str
    # The records the sender discarded, being itself an MX (RFC 5321 §5.1), in a sentence.
    discarded: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteFailed(Event):
    """An attempt found no address to try (``core.mx.NoRoute``): ``reason`` says why in a
    word; the recipients bounce when ``permanent``, else wait."""

    kind: ClassVar[str] = "route_failed"
    message: int
    attempt: int
    domain: str
    reason: NoRouteKind
    permanent: bool
    why: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Connected(Event):
    kind: ClassVar[str] = "connected"
    message: int
    attempt: int
    host: str
    address: str
    reused: bool = False  # a session kept open from an earlier delivery (connection cache)
    # The deliveries this session has carried, this one included (Postfix's conn_use=).
    use: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectFailed(Event):
    kind: ClassVar[str] = "connect_failed"
    message: int
    attempt: int
    host: str
    address: str
    reason: ConnectFailure
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SmtpExchange(Event):
    """One command and its reply (the greeting has no command)."""

    kind: ClassVar[str] = "smtp"
    message: int
    attempt: int
    host: str
    address: str
    stage: SessionStage
    command: str
    code: int
    reply: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SmtpFailure(Event):
    """A stage that got no reply: the connection was lost, or the reply never came."""

    kind: ClassVar[str] = "smtp_failure"
    message: int
    attempt: int
    host: str
    address: str
    stage: SessionStage
    command: str
    reason: SessionFailure
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsChecked(Event):
    """A TLS decision about one MX host (``core.tls``): before connecting (``skip``), on
    the EHLO reply (``offer``), or after STARTTLS (``upgrade``: the handshake, the version,
    the certificate's verdict and, under DANE, the TLSA verdict). ``level`` is what the host
    was held to; ``action`` what followed and ``why``; ``report`` the TLS-RPT result of a
    session under a policy that failed (RFC 8460)."""

    kind: ClassVar[str] = "tls"
    message: int
    attempt: int
    host: str
    address: str
    step: TlsStepKind
    action: TlsAction
    why: str
    # What was found: offered, not_offered (the EHLO reply), refused (a reply to STARTTLS),
    # handshake_failed, established; "" for a host skipped before connecting.
    outcome: str = ""
    level: str = ""
    version: str = ""
    certificate: str = ""  # valid, expired, self-signed, wrong-name, untrusted
    dane: str = ""  # match, mismatch ("" when no TLSA record applied)
    detail: str = ""
    dsn: str = ""
    report: str = ""
    policy: str = ""  # "sts:enforce", "sts:testing", "tlsa" when a policy applied


@dataclass(frozen=True, slots=True, kw_only=True)
class MtaStsChecked(Event):
    """The sender looked for the recipient domain's MTA-STS policy (RFC 8461 §3): its
    ``_mta-sts`` record's ``id``, and the policy in force (fetched, or from its cache), or
    why there is none (``failure``: an RFC 8460 result such as sts-policy-fetch-error)."""

    kind: ClassVar[str] = "mta_sts"
    message: int
    attempt: int
    domain: str
    id: str = ""
    mode: str = ""  # enforce, testing, none; "" without a policy
    mx: tuple[str, ...] = ()
    max_age: int = 0
    source: str = ""  # fetched, cached, or "" without a policy
    url: str = ""
    failure: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision(Event):
    """What the sender decided and why."""

    kind: ClassVar[str] = "decision"
    message: int
    attempt: int
    action: DecisionAction
    why: str
    recipients: tuple[str, ...] = ()
    retry_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptFinished(Event):
    kind: ClassVar[str] = "attempt_finished"
    message: int
    domain: str
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RecipientDeferred(Event):
    """A recipient an attempt could not deliver; it stays queued until ``retry_at``."""

    kind: ClassVar[str] = "recipient_deferred"
    message: int
    recipient: str
    attempt: int
    host: str | None  # the host that gave the last error, if any
    address: str | None
    dsn: str
    reply: str
    retry_at: float
    suspended: bool = False  # deferred without a try: the destination is suspended
    # "host[address]" when the last error came over a session with that host (Postfix's
    # relay=); None when no session was made (a refused connect, DNS trouble): relay=none.
    relay: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DsnCreated(Event):
    """A delivery status notification for ``message``, sent to its envelope sender."""

    kind: ClassVar[str] = "dsn_created"
    message: int
    action: DsnAction
    to: str
    recipients: tuple[str, ...]
    dsn_message: int | None  # its own message number when it is sent by SMTP
    via: DsnVia
    message_id: str = ""  # the DSN's own Message-ID


@dataclass(frozen=True, slots=True, kw_only=True)
class RecipientFinal(Event):
    """A (message, recipient) reached its final state for this run."""

    kind: ClassVar[str] = "recipient_final"
    message: int
    recipient: str
    status: FinalStatus
    host: str | None
    address: str | None
    dsn: str
    reply: str  # the last reply or error (``delivery.reported_reply`` adds the expiry to it)
    attempts: int
    expired: bool = False  # bounced because the retry schedule ran out
    # "host[address]" of the host that took it, or whose session gave the last error; None
    # when no session was made (Postfix's relay=none).
    relay: str | None = None
    # A final dot went unanswered on the way: some host may hold a copy (RFC 5321 §6.1).
    unsure: bool = False
    # The TLS of the session that answered last: its version ("" for plain text), and
    # whether the certificate authenticated the host (PKIX valid, or a TLSA match).
    tls: str = ""
    tls_verified: bool = False


# --- the servers ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DnsServed(Event):
    """The DNS server's view of one query."""

    kind: ClassVar[str] = "dns_served"
    client: str
    transport: Transport
    name: str
    rdtype: str
    # NOERROR, NXDOMAIN, SERVFAIL, FORMERR… (any rcode dnslib names), or "dropped" for a
    # timeout fault: an open set, so a plain string.
    rcode: str
    answers: int = 0
    truncated: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class HostSession(Event):
    """A mail host's view of one connection, when it ends."""

    kind: ClassVar[str] = "host_session"
    host: str
    address: str
    client: str
    behaviour: str
    transcript: tuple[tuple[float, str, str], ...]  # (t, "C" or "S", line)
    tls: str = ""  # the TLS version, when STARTTLS completed


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionAttempt(Event):
    """A TCP connection attempt (a SYN) to a served mail host, seen on loopback (serve mode,
    where the platform allows it: ``serve.syn``). Refused and timed-out attempts included,
    which no host session shows; ``behaviour`` is the host's when the attempt was seen."""

    kind: ClassVar[str] = "connection_attempt"
    host: str
    address: str
    client: str
    behaviour: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HostPhase(Event):
    """A mail host's phase ended after its ``times`` sessions (or connection attempts): the
    next phase (``phase``, counted from 1) is in force from now on, doing ``behaviour``.
    ``after`` says what ended the one before (``2 sessions``) and ``ended`` what it did.
    Phases that end at their ``until`` are not reported: the scenario says when they end."""

    kind: ClassVar[str] = "host_phase"
    host: str
    address: str
    phase: int
    behaviour: str
    after: str
    ended: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HostAccepted(Event):
    kind: ClassVar[str] = "host_accepted"
    host: str
    address: str
    sender: str
    recipients: tuple[str, ...]
    message_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyServed(Event):
    """The MTA-STS policy server answered one HTTPS request (RFC 8461 §3.3)."""

    kind: ClassVar[str] = "policy_served"
    client: str
    host: str
    path: str
    status: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlChanged(Event):
    """Serve mode: the world was changed while it runs (the control API, or a test through
    ``ServedScenario``). ``target`` is the host, DNS name or zone apex ("" for a reset);
    ``value`` says what it is now, in the words of the ``ready`` table."""

    kind: ClassVar[str] = "control"
    action: ControlAction
    target: str
    value: str


def event_to_dict(event: Event) -> dict[str, Any]:
    """A JSON-ready dict: ``{"t": …, "kind": …, …fields}`` (tuples become lists)."""
    data: dict[str, Any] = {"t": round(event.t, 6), "kind": event.kind}
    for name in _field_names(type(event)):
        value = getattr(event, name)
        data[name] = _plain(value) if isinstance(value, tuple | list) else value
    return data


# Field names per event class: ``dataclasses.fields`` is rebuilt on every call, and a trace
# writes every event of a run.
_FIELD_NAMES: dict[type[Event], tuple[str, ...]] = {}


def _field_names(kind: type[Event]) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(kind)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(kind) if f.name != "t")
        _FIELD_NAMES[kind] = names
    return names


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value
