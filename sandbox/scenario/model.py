"""The typed scenario model: what a scenario file means once it has been validated.

Everything here is a frozen, slotted dataclass with plain values (seconds as floats, names in
lower case without the final dot), so the rest of the sandbox never sees YAML or strings that
still need parsing. ``scenario.load`` builds these; the runner and the core read them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Literal, TypeVar, get_args

from sandbox.core.tls import HostTls

if TYPE_CHECKING:
    # Only a name here: the hosts and the sender read this model without needing dnslib.
    from sandbox.dns.zone import Zone

__all__ = [
    "ACCEPT",
    "DEFAULT_SIZE",
    "STAGES",
    "TLS_EXPECTATIONS",
    "Behaviour",
    "DeliveryExpectation",
    "DnsBehaviour",
    "Esmtp",
    "Expectation",
    "HostExpectation",
    "Limit",
    "MessageSpec",
    "Phase",
    "Reply",
    "Scenario",
    "SenderSpec",
    "Stage",
    "Timeline",
    "TlsExpectation",
    "TlsReportExpectation",
    "ZoneSpec",
    "describe_phases",
    "describe_timeline",
]

Stage = Literal["greeting", "ehlo", "starttls", "mail", "rcpt", "data", "message"]
# In the order a session reaches them. "starttls" is the reply to STARTTLS (220, then the
# handshake, when all is well), "data" the reply to DATA (354 when all is well), "message"
# the reply after the final dot.
STAGES: tuple[Stage, ...] = get_args(Stage)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply a scripted host gives: ``451 4.7.1 Try again later``."""

    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}".rstrip()

    @property
    def closes(self) -> bool:
        """A 421 reply closes the connection (RFC 5321 §3.8)."""
        return self.code == 421


@dataclass(frozen=True, slots=True)
class Phase(Generic[T]):
    """One stretch of a timeline: ``value`` holds from the previous phase's end until ``until``
    (virtual seconds from the start of the run); the last phase has ``until=None``.

    A host's phases (and a mailbox's replies) may also end after ``times`` sessions (or
    connection attempts, or RCPTs): the phase ends at whichever comes first, its ``until`` or
    its ``times``. Only the host counts (``hosts.script.PhaseCursor``); ``Timeline.at`` reads
    the phases by time alone."""

    until: float | None
    value: T
    times: int | None = None


@dataclass(frozen=True, slots=True)
class Timeline(Generic[T]):
    """A value that changes over virtual time: a host's behaviour, a name's DNS behaviour, a
    zone. A constant is a timeline of one phase."""

    phases: tuple[Phase[T], ...]

    @classmethod
    def constant(cls, value: T) -> Timeline[T]:
        return cls((Phase(None, value),))

    def at(self, t: float) -> T:
        for phase in self.phases:
            if phase.until is None or t < phase.until:
                return phase.value
        return self.phases[-1].value

    @property
    def boundaries(self) -> tuple[float, ...]:
        """The times at which the value changes, in order."""
        return tuple(p.until for p in self.phases if p.until is not None)

    @property
    def initial(self) -> T:
        return self.phases[0].value

    @property
    def counts(self) -> bool:
        """Some phase ends after a number of sessions (``times``)."""
        return any(p.times is not None for p in self.phases)

    def shifted(self, start: float) -> Timeline[T]:
        """The same phases counted from ``start`` rather than from 0 (a change made while the
        world runs: its phases count from the moment it is made)."""
        return Timeline(
            tuple(
                Phase(None if p.until is None else start + p.until, p.value, p.times)
                for p in self.phases
            )
        )


# What the hosts have always advertised (aiosmtpd's default limit, 32 MiB).
DEFAULT_SIZE = 33_554_432


@dataclass(frozen=True, slots=True)
class Esmtp:
    """The ESMTP extensions a host advertises in its EHLO reply, and enforces: ``size`` (RFC
    1870; None: SIZE not advertised), ``pipelining`` (RFC 2920), ``eightbitmime`` (RFC 6152)
    and ``smtputf8`` (RFC 6531). The defaults are what the hosts have always said."""

    size: int | None = DEFAULT_SIZE
    pipelining: bool = False
    eightbitmime: bool = True
    smtputf8: bool = True

    def describe(self) -> str:
        """What differs from the defaults: ``SIZE 10240, no SMTPUTF8``."""
        parts = []
        if self.size != DEFAULT_SIZE:
            parts.append("no SIZE" if self.size is None else f"SIZE {self.size}")
        if self.pipelining:
            parts.append("PIPELINING")
        if not self.eightbitmime:
            parts.append("no 8BITMIME")
        if not self.smtputf8:
            parts.append("no SMTPUTF8")
        return ", ".join(parts)


DEFAULT_ESMTP = Esmtp()


@dataclass(frozen=True, slots=True)
class Limit:
    """A rate limit of a host: at most ``count``, and ``reply`` past it."""

    count: int
    reply: Reply


@dataclass(frozen=True, slots=True)
class Behaviour:
    """What one mail host does during one phase.

    ``connection`` is about the socket: ``accept`` (a normal SMTP server answers), ``refuse``
    (nothing listens: connection refused), ``timeout`` (the TCP handshake never completes) or
    ``silent`` (the connection opens, no greeting ever comes). The other fields script the SMTP
    conversation of an accepting host; left empty, it is an ordinary mail host.
    """

    connection: Literal["accept", "refuse", "timeout", "silent"] = "accept"
    replies: Mapping[Stage, Reply] = field(default_factory=dict)
    recipients: Mapping[str, Reply] = field(default_factory=dict)
    disconnect: Stage | None = None
    delays: Mapping[Stage, float] = field(default_factory=dict)
    greylist: float | None = None
    max_recipients: int | None = None  # RCPT past this many in one transaction gets 452
    # STARTTLS: the certificate the host presents, or none offered, or a broken handshake
    # (``tls.certificates``, ``hosts.starttls``).
    tls: HostTls = "valid"
    # Replies to RCPT for these mailboxes that change after a number of RCPTs (``times``).
    recipient_phases: Mapping[str, Timeline[Reply]] = field(default_factory=dict)
    # MAIL past this many in one session, and connections past this many at once.
    max_messages: Limit | None = None
    max_connections: Limit | None = None
    esmtp: Esmtp = DEFAULT_ESMTP

    def describe(self) -> str:
        """A few words for tables and the narrative: ``refuse``, ``rcpt→451``, ``greylist 5m``."""
        from sandbox.core.durations import format_duration

        if self.connection != "accept":
            return self.connection
        parts = [f"{stage}→{reply.code}" for stage, reply in self.replies.items()]
        parts += [f"{addr}→{reply.code}" for addr, reply in self.recipients.items()]
        if self.disconnect:
            parts.append(f"disconnect at {self.disconnect}")
        parts += [f"{stage} +{format_duration(s)}" for stage, s in self.delays.items()]
        if self.greylist is not None:
            parts.append(f"greylist {format_duration(self.greylist)}")
        if self.max_recipients is not None:
            parts.append(f"at most {self.max_recipients} recipients")
        if self.tls != "valid":
            parts.append(f"tls {self.tls}")
        for addr, replies in self.recipient_phases.items():
            words = describe_phases(replies, lambda r: str(r.code), "RCPT", joiner=" then ")
            parts.append(f"{addr}→{words}")
        if self.max_messages is not None:
            count = self.max_messages.count
            parts.append(f"at most {count} message{_s(count)} a session")
        if self.max_connections is not None:
            count = self.max_connections.count
            parts.append(f"at most {count} connection{_s(count)} at once")
        if esmtp := self.esmtp.describe():
            parts.append(esmtp)
        return ", ".join(parts) or "accept"

    @property
    def sees_sessions(self) -> bool:
        """A connection reaches this host (``accept`` or ``silent``): its phases count
        sessions. One that refuses or times out sees none: its phases count connection
        attempts."""
        return self.connection in ("accept", "silent")


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def describe_phases(
    timeline: Timeline[T],
    describe: Callable[[T], str],
    unit: str,
    end: float | None = None,
    joiner: str = ", then ",
) -> str:
    """Phases in a few words: ``451 for 1 RCPT, then 250``; with ``end``, the phases that
    start after it are left out and an ``until`` past it is not said."""
    from sandbox.core.durations import clock_text

    parts: list[str] = []
    start = 0.0
    for phase in timeline.phases:
        if end is not None and (start > end or (parts and start == end)):
            break
        words = describe(phase.value)
        ends = []
        if phase.times is not None:
            ends.append(f"for {phase.times} {unit}{_s(phase.times)}")
        if phase.until is not None and (end is None or phase.until < end):
            ends.append(f"until {clock_text(phase.until)}")
        if ends:
            words += " " + " or ".join(ends)
        parts.append(words)
        if phase.until is not None:
            start = phase.until
        elif phase.times is None:
            start = end if end is not None else start
    return joiner.join(parts)


def describe_timeline(timeline: Timeline[Behaviour], end: float) -> str:
    """Every phase a host went through before ``end``, in a few words:
    ``refuse until 2:00:00, then accept``; a single phase is just ``refuse``; a phase that
    counts says what: ``greeting→421 for 2 sessions, then accept``."""
    if not timeline.counts:
        return describe_phases(timeline, Behaviour.describe, "session", end)
    parts = []
    for phase in timeline.phases:
        unit = "session" if phase.value.sees_sessions else "connection attempt"
        parts.append(describe_phases(Timeline((phase,)), Behaviour.describe, unit))
    return ", then ".join(parts)


ACCEPT = Behaviour()
_ACCEPTING: Timeline[Behaviour] = Timeline.constant(ACCEPT)


@dataclass(frozen=True, slots=True)
class DnsBehaviour:
    """How the DNS server treats queries for one name during one phase."""

    kind: Literal["answer", "servfail", "timeout", "nxdomain"] = "answer"


@dataclass(frozen=True, slots=True)
class ZoneSpec:
    """A zone of the scenario: its apex and, over time, the zone its text reads as.

    Each phase's text is parsed once, by the loader; the DNS server (through the world), the
    lint and the report all read these ``Zone`` objects, never the text again.

    ``line`` is the line in the scenario file where the zone text starts, so that a zone
    finding at zone line N can be reported at file line ``line + N - 1``.
    """

    apex: str
    phases: Timeline[Zone]
    line: int | None = None
    # Where each phase's text starts (``line`` is the first's), for a zone written as phases.
    phase_lines: tuple[int | None, ...] = ()

    def line_of_phase(self, index: int) -> int | None:
        """The file line where phase ``index``'s zone text starts, when known."""
        if index < len(self.phase_lines):
            return self.phase_lines[index]
        return self.line if index == 0 else None


@dataclass(frozen=True, slots=True)
class MessageSpec:
    """One message, after ``count`` has been expanded. ``number`` counts from 1 in file order."""

    number: int
    sender: str
    recipients: tuple[str, ...]
    at: float = 0.0
    # Where the scenario file lists it, when known (for findings; not part of its value).
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class SenderSpec:
    """The sender agent's settings: a profile name plus per-scenario overrides (validated
    against the profile's fields by the loader)."""

    profile: str = "postfix"
    overrides: Mapping[str, object] = field(default_factory=dict)


# What an expectation may say of the TLS of the session that delivered (or last answered):
# none at all, any TLS, TLS with a certificate that authenticated the host (PKIX or DANE), or
# TLS with one that did not.
TlsExpectation = Literal["plain", "encrypted", "verified", "unverified"]
TLS_EXPECTATIONS: tuple[TlsExpectation, ...] = get_args(TlsExpectation)


@dataclass(frozen=True, slots=True)
class DeliveryExpectation:
    """``{message: N|all, recipient?, status?, host?, dsn?, attempts?, after?, before?,
    tls?}``."""

    message: int | Literal["all"]
    recipient: str | None = None
    status: Literal["delivered", "bounced", "deferred"] | None = None
    host: str | None = None
    dsn: str | None = None
    attempts: int | None = None
    after: float | None = None
    before: float | None = None
    line: int | None = None
    tls: TlsExpectation | None = None


@dataclass(frozen=True, slots=True)
class HostExpectation:
    """``{host: NAME, accepted?, connections?, share?, tolerance?}``."""

    host: str
    accepted: int | None = None
    connections: int | None = None
    share: float | None = None
    tolerance: float = 0.1
    line: int | None = None


@dataclass(frozen=True, slots=True)
class TlsReportExpectation:
    """``{tls_report: DOMAIN, successes?, failures?, result?}``: the run's TLS-RPT report
    (RFC 8460) for a policy domain counts so many sessions, and names ``result`` among its
    failures."""

    domain: str
    successes: int | None = None
    failures: int | None = None
    result: str | None = None
    line: int | None = None


Expectation = DeliveryExpectation | HostExpectation | TlsReportExpectation


@dataclass(frozen=True, slots=True)
class Scenario:
    """A whole validated scenario. ``source`` is the file it came from (for messages)."""

    name: str
    zones: tuple[ZoneSpec, ...]
    messages: tuple[MessageSpec, ...]
    title: str = ""
    description: str = ""
    seed: int = 0
    until: float | None = None
    hosts: Mapping[str, Timeline[Behaviour]] = field(default_factory=dict)
    dns: Mapping[str, Timeline[DnsBehaviour]] = field(default_factory=dict)
    sender: SenderSpec = field(default_factory=SenderSpec)
    expect: tuple[Expectation, ...] = ()
    source: str = "<scenario>"
    # MTA-STS policies (RFC 8461) the sandbox serves over HTTPS: domain -> policy text.
    mta_sts: Mapping[str, str] = field(default_factory=dict)
    # Zones answered as DNSSEC-validated (the AD bit), for DANE (RFC 7672).
    dnssec: frozenset[str] = frozenset()

    def behaviour_of(self, name: str, addresses: tuple[str, ...] = ()) -> Timeline[Behaviour]:
        """The behaviour of the host ``name`` at ``addresses``: the scenario may script one
        address of a host or the host by name (all its addresses); an address wins, and a
        host the scenario does not mention accepts mail."""
        for key in (*addresses, name):
            if key in self.hosts:
                return self.hosts[key]
        return _ACCEPTING
