"""The typed scenario model: what a scenario file means once it has been validated.

Everything here is a frozen, slotted dataclass with plain values (seconds as floats, names in
lower case without the final dot), so the rest of the sandbox never sees YAML or strings that
still need parsing. ``scenario.load`` builds these; the runner and the core read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, Literal, TypeVar, get_args

from sandbox.core.tls import HostTls

if TYPE_CHECKING:
    # Only a name here: the hosts and the sender read this model without needing dnslib.
    from sandbox.dns.zone import Zone

__all__ = [
    "ACCEPT",
    "STAGES",
    "TLS_EXPECTATIONS",
    "Behaviour",
    "DeliveryExpectation",
    "DnsBehaviour",
    "Expectation",
    "HostExpectation",
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
    (virtual seconds from the start of the run); the last phase has ``until=None``."""

    until: float | None
    value: T


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

    def shifted(self, start: float) -> Timeline[T]:
        """The same phases counted from ``start`` rather than from 0 (a change made while the
        world runs: its phases count from the moment it is made)."""
        return Timeline(
            tuple(Phase(None if p.until is None else start + p.until, p.value) for p in self.phases)
        )


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
        return ", ".join(parts) or "accept"


def describe_timeline(timeline: Timeline[Behaviour], end: float) -> str:
    """Every phase a host went through before ``end``, in a few words:
    ``refuse until 2:00:00, then accept``; a single phase is just ``refuse``."""
    from sandbox.core.durations import clock_text

    parts: list[str] = []
    start = 0.0
    for phase in timeline.phases:
        if start > end or (parts and start == end):
            break
        words = phase.value.describe()
        if phase.until is not None and phase.until < end:
            words += f" until {clock_text(phase.until)}"
        parts.append(words)
        start = phase.until if phase.until is not None else end
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
