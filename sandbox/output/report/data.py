"""The run as a picture's data: lanes, phases, connection marks, paths and the MX order.

``build_flow`` reads a run's result (its events, its hosts and its scenario) and returns the
plain facts a timeline shows, with no drawing in them:

- one ``Lane`` per mail host, with the phases of its scripted behaviour over virtual time;
- one ``Mark`` per connection attempt, with the outcome of that session, decided by what
  came after the connect: refused, timed out, a 4xx, a 5xx, a lost connection, or accepted
  (each step is judged by the core's classification: ``classify.session_end``), and its TLS
  outcome, from the session's ``tls`` events (``TLS_OUTCOMES``);
- one ``Path`` per message: its marks in order, across attempts, and how it ended;
- the MX table of each recipient domain, in the order the sender chose: one set of rows per
  MX set the sender met (a zone that changes gives several);
- the ``Moment``s worth a line across the lanes: when a zone changes, and when the sender's
  cached MX answer from before that change expires (until then it still uses the old one).

The HTML report (``report.py``) draws these; tests assert on them directly.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sandbox.core.addresses import canonical
from sandbox.core.classify import (
    NoReply,
    Outcome,
    ServerReply,
    SessionEnd,
    SessionStage,
    session_end,
)
from sandbox.core.delivery import reported_reply
from sandbox.core.durations import clock_text, format_duration
from sandbox.core.policy import Profile
from sandbox.dns.zone import Zone
from sandbox.events import (
    Connected,
    ConnectFailed,
    DnsAnswered,
    Event,
    HostPhase,
    RecipientFinal,
    RouteChosen,
    SmtpExchange,
    SmtpFailure,
    TlsChecked,
)
from sandbox.scenario.model import Behaviour, Timeline

if TYPE_CHECKING:
    from sandbox.result.model import RunResult

__all__ = [
    "OUTCOMES",
    "PHASE_KINDS",
    "TLS_OUTCOMES",
    "Flow",
    "Lane",
    "Mark",
    "Moment",
    "MxRow",
    "Path",
    "PhaseSpan",
    "build_flow",
    "phase_kind",
]

# In the order a legend lists them, with the words it uses.
OUTCOMES: dict[SessionEnd, str] = {
    "accepted": "accepted the message",
    "refused": "connection refused",
    "timeout": "no answer (timed out)",
    "tempfail": "4xx: try again later",
    "rejected": "5xx: rejected",
    "lost": "connection lost",
    "error": "other connection error",
}
# A session's TLS, in a word, and the words a legend gives it ("" when TLS never came up:
# the session ended before EHLO, or the sender's level is none).
TLS_OUTCOMES: dict[str, str] = {
    "verified": "TLS, the certificate verified (PKIX or DANE)",
    "untrusted": "TLS, the certificate not verified",
    "failed": "TLS failed: the host was not good enough",
    "plain": "plain text (no STARTTLS)",
}
PHASE_KINDS: dict[str, str] = {
    "up": "up",
    "refuse": "down: refuses connections",
    "timeout": "down: never answers",
    "silent": "silent: connects, never greets",
    "tempfail": "temporary failure (4xx)",
    "greylist": "greylisting",
    "reject": "rejecting (5xx)",
    "drop": "drops the connection",
    "slow": "slow replies",
    "partial": "rejects some recipients",
}


@dataclass(frozen=True, slots=True)
class PhaseSpan:
    start: float
    end: float
    kind: str  # a key of PHASE_KINDS
    label: str  # Behaviour.describe(): "refuse", "greeting→421", "greylist 5m"


@dataclass(frozen=True, slots=True)
class Lane:
    host: str
    addresses: tuple[str, ...]
    phases: tuple[PhaseSpan, ...]
    connections: int
    accepted: int


@dataclass(frozen=True, slots=True)
class Mark:
    """One connection attempt: to which lane, when, for which message, and how it went."""

    index: int  # its place among all connection attempts of the run, from 0
    t: float
    lane: int
    message: int
    attempt: int
    mx: str  # the MX name the sender connected to (may differ from the lane's host)
    address: str
    outcome: SessionEnd
    detail: str
    tls: str = ""  # a key of TLS_OUTCOMES, or ""
    tls_detail: str = ""


@dataclass(frozen=True, slots=True)
class Path:
    """A message's way through the hosts: its marks in order, and how it ended."""

    message: int
    marks: tuple[int, ...]  # indices into Flow.marks
    status: str  # delivered, bounced, deferred (the worst of its recipients)
    host: str | None
    at: float
    attempts: int


@dataclass(frozen=True, slots=True)
class MxRow:
    """One MX record of a recipient domain, in the order the sender first chose."""

    domain: str
    rank: int
    preference: int
    host: str
    addresses: tuple[str, ...]
    first: float  # the fraction of the sender's attempts that tried this host first
    zone_line: int | None
    # Which of the domain's MX sets this row belongs to (0: the first the sender met), and
    # from when the sender used it: a zone that changes over time gives several sets.
    answer: int = 0
    since: float = 0.0


@dataclass(frozen=True, slots=True)
class Moment:
    """An instant worth a line across the lanes: ``zone`` (a zone changes) or ``cache`` (the
    sender's cached MX answer from before such a change expires)."""

    t: float
    kind: str
    text: str


@dataclass(frozen=True, slots=True)
class Flow:
    lanes: tuple[Lane, ...]
    marks: tuple[Mark, ...]
    paths: tuple[Path, ...]
    mx_rows: tuple[MxRow, ...]
    notes: tuple[str, ...]  # per domain without an MX route: what the sender found instead
    end: float  # the last virtual second worth showing
    moments: tuple[Moment, ...] = ()


def phase_kind(behaviour: Behaviour) -> str:
    """The kind of phase a behaviour is, for shading: the most disruptive thing it does."""
    if behaviour.connection != "accept":
        return behaviour.connection
    codes = [reply.code for reply in behaviour.replies.values()]
    if any(code >= 500 for code in codes):
        return "reject"
    if any(code >= 400 for code in codes):
        return "tempfail"
    if behaviour.disconnect:
        return "drop"
    if behaviour.greylist is not None:
        return "greylist"
    if behaviour.recipients:
        return "partial"
    if behaviour.delays:
        return "slow"
    return "up"


# --- building ------------------------------------------------------------------------------------


def build_flow(result: RunResult) -> Flow:
    lanes_by_address: dict[str, int] = {}
    for index, host in enumerate(result.hosts):
        for address in host.addresses:
            lanes_by_address[canonical(address)] = index
    marks = _marks(result.events, lanes_by_address, result.profile)
    moments = _moments(result)
    end = max([result.ended_at, *(m.t for m in marks), *(m.t for m in moments)])
    lanes = tuple(
        Lane(
            host.name,
            host.addresses,
            _phases(
                result.scenario.behaviour_of(host.name, host.addresses),
                end,
                _counted_ends(result.events, host.name, host.addresses),
            ),
            host.connections,
            host.accepted,
        )
        for host in result.hosts
    )
    rows, notes = _mx_rows(result)
    return Flow(lanes, marks, _paths(result.events, marks), rows, notes, end, moments)


def _counted_ends(
    events: Sequence[Event], host: str, addresses: Sequence[str]
) -> list[tuple[int, float]]:
    """(phase index now in force, when) for each phase a host's first address ended by
    counting its sessions (``host_phase`` events); the lane shows that address's phases."""
    first = canonical(addresses[0]) if addresses else ""
    return [
        (e.phase - 1, e.t)
        for e in events
        if isinstance(e, HostPhase) and e.host == host and canonical(e.address) == first
    ]


def _phases(
    timeline: Timeline[Behaviour], end: float, counted: Sequence[tuple[int, float]] = ()
) -> tuple[PhaseSpan, ...]:
    """The spans of a lane: each phase from where the one before ended to its ``until``, or
    to when a count ended it (``counted``: a later phase in force from then on)."""
    spans: list[PhaseSpan] = []
    start = 0.0
    for index, phase in enumerate(timeline.phases):
        stop = end if phase.until is None else phase.until
        stop = min([stop, *(t for later, t in counted if later > index)])
        if start <= end and stop >= start:
            spans.append(
                PhaseSpan(start, min(stop, end), phase_kind(phase.value), phase.value.describe())
            )
        start = max(start, stop)
    return tuple(spans)


@dataclass(slots=True)
class _Session:
    index: int
    t: float
    lane: int
    message: int
    attempt: int
    mx: str
    address: str
    # A connected session that no step settles (cut off when the run ended) counts as lost.
    outcome: SessionEnd = "lost"
    detail: str = "connected"
    settled: bool = False
    tls: str = ""
    tls_detail: str = ""

    def tls_step(self, event: TlsChecked) -> None:
        """A TLS step of this session: its last word says how TLS went."""
        if event.action == "tls":
            verified = event.certificate == "valid" or event.dane == "match"
            self.tls = "verified" if verified else "untrusted"
            dane = f", TLSA {event.dane}" if event.dane else ""
            self.tls_detail = f"{event.version}, certificate {event.certificate}{dane}"
        elif event.action == "plain":
            self.tls, self.tls_detail = "plain", event.why
        elif event.action != "starttls":
            self.tls, self.tls_detail = "failed", event.why
            # The session ends on it: a temporary failure, or a permanent one (a 5xx).
            failure: SessionEnd = "rejected" if event.dsn.startswith("5") else "tempfail"
            self.follow("starttls", failure, event.why)

    def follow(self, stage: SessionStage, outcome: SessionEnd | None, detail: str) -> None:
        """Let one step settle the session: the message accepted wins; otherwise the first
        failure says what went wrong."""
        if outcome is None or self.outcome == "accepted":
            return
        if outcome == "accepted" or not self.settled:
            self.outcome, self.settled = outcome, True
            self.detail = detail if outcome == "accepted" else f"{stage}: {detail}".strip()

    def freeze(self) -> Mark:
        return Mark(
            self.index,
            self.t,
            self.lane,
            self.message,
            self.attempt,
            self.mx,
            self.address,
            self.outcome,
            self.detail,
            self.tls,
            self.tls_detail,
        )


def _marks(events: tuple[Event, ...], lanes: dict[str, int], profile: Profile) -> tuple[Mark, ...]:
    """One mark per connection attempt; the events of its session decide its outcome."""
    sessions: list[_Session] = []
    open_: dict[tuple[int, int], _Session] = {}
    for event in events:
        if isinstance(event, Connected | ConnectFailed):
            lane = lanes.get(canonical(event.address), -1)
            session = _Session(
                len(sessions),
                event.t,
                lane,
                event.message,
                event.attempt,
                event.host,
                event.address,
            )
            if isinstance(event, ConnectFailed):
                session.outcome, session.detail = event.reason, event.detail or event.reason
            else:
                open_[(event.message, event.attempt)] = session
            sessions.append(session)
        elif isinstance(event, SmtpExchange | SmtpFailure):
            current = open_.get((event.message, event.attempt))
            if current is not None and current.address == event.address:
                outcome, said = _outcome_of(event)
                current.follow(event.stage, session_end(event.stage, outcome, profile), said)
        elif isinstance(event, TlsChecked) and event.step != "skip":
            current = open_.get((event.message, event.attempt))
            if current is not None and current.address == event.address:
                current.tls_step(event)
    return tuple(s.freeze() for s in sessions if s.lane >= 0)


def _outcome_of(event: SmtpExchange | SmtpFailure) -> tuple[Outcome, str]:
    """The core's outcome that an SMTP event reports, and the words a mark's detail gives it."""
    if isinstance(event, SmtpFailure):
        return NoReply(event.reason, event.detail), f"{event.reason} {event.detail}"
    return ServerReply(event.code, event.reply), f"{event.code} {event.reply}".strip()


_STATUS_ORDER = {"bounced": 0, "deferred": 1, "delivered": 2}


def _paths(events: tuple[Event, ...], marks: tuple[Mark, ...]) -> tuple[Path, ...]:
    by_message: dict[int, list[int]] = defaultdict(list)
    for mark in marks:
        by_message[mark.message].append(mark.index)
    finals: dict[int, list[RecipientFinal]] = defaultdict(list)
    for event in events:
        if isinstance(event, RecipientFinal):
            finals[event.message].append(event)
    paths = []
    for number in sorted(set(by_message) | set(finals)):
        ends = finals.get(number, [])
        worst = min(ends, key=lambda e: _STATUS_ORDER.get(e.status, 0), default=None)
        paths.append(
            Path(
                number,
                tuple(by_message.get(number, ())),
                worst.status if worst else "deferred",
                worst.host if worst else None,
                max((e.t for e in ends), default=0.0),
                max((e.attempts for e in ends), default=0),
            )
        )
    return tuple(paths)


def _mx_rows(result: RunResult) -> tuple[tuple[MxRow, ...], tuple[str, ...]]:
    """Each recipient domain's MX records in the order the sender first chose them, with
    how often each came first (for equal preferences, the shuffle shows here); one set of
    rows for every set of MX records the sender met, from when it met it."""
    routes: dict[str, list[RouteChosen]] = defaultdict(list)
    for event in result.events:
        if isinstance(event, RouteChosen):
            routes[event.domain].append(event)
    zones = [phase.value for spec in result.scenario.zones for phase in spec.phases.phases]
    domains = sorted(
        {r.rpartition("@")[2].lower() for m in result.scenario.messages for r in m.recipients}
    )
    rows: list[MxRow] = []
    notes: list[str] = []
    for domain in domains:
        chosen = routes.get(domain)
        if not chosen:
            notes.append(_no_route_note(result.events, domain))
            continue
        if chosen[0].route == "implicit":
            notes.append(f"{domain}: {chosen[0].why}")
        for answer, same_set in enumerate(_by_mx_set(chosen)):
            firsts = Counter(route.hosts[0][1] for route in same_set if route.hosts)
            for rank, (preference, host, addresses) in enumerate(same_set[0].hosts, start=1):
                rows.append(
                    MxRow(
                        domain,
                        rank,
                        preference,
                        host,
                        addresses,
                        firsts[host] / len(same_set),
                        _mx_line(zones, domain, host),
                        answer,
                        same_set[0].t,
                    )
                )
    return tuple(rows), tuple(notes)


def _by_mx_set(routes: list[RouteChosen]) -> list[list[RouteChosen]]:
    """The routes grouped by the set of MX records they came from, in order of first use
    (the order within a set changes with every shuffle; the set only with the zone)."""
    sets: dict[frozenset[tuple[int, str]], list[RouteChosen]] = {}
    for route in routes:
        key = frozenset((preference, host) for preference, host, _ in route.hosts)
        sets.setdefault(key, []).append(route)
    return list(sets.values())


def _moments(result: RunResult) -> tuple[Moment, ...]:
    """When each zone changes, and, for a recipient domain's MX records asked before such a
    change, when the sender's cached answer expires: until then it still uses the old one."""
    moments: list[Moment] = []
    answers = [
        e
        for e in result.events
        if isinstance(e, DnsAnswered) and e.rdtype == "MX" and not e.cached and e.ttl > 0
    ]
    for spec in result.scenario.zones:
        for change in spec.phases.boundaries:
            moments.append(Moment(change, "zone", f"the {spec.apex} zone changes"))
            asked: dict[str, DnsAnswered] = {}
            for answer in answers:
                inside = answer.name == spec.apex or answer.name.endswith("." + spec.apex)
                if inside and answer.t < change:
                    asked[answer.name] = answer  # the last answer from before the change
            for name, answer in sorted(asked.items()):
                expiry = answer.t + answer.ttl
                if expiry > change:
                    moments.append(
                        Moment(
                            expiry,
                            "cache",
                            f"the sender's cached MX answer for {name} expires (asked at "
                            f"{clock_text(answer.t)}, TTL {format_duration(answer.ttl)}): "
                            "until then it used the answer from before the change",
                        )
                    )
    return tuple(sorted(moments, key=lambda m: (m.t, m.kind)))


def _no_route_note(events: tuple[Event, ...], domain: str) -> str:
    """Why no connection was made to a domain, in the words of its first final status."""
    for event in events:
        if isinstance(event, RecipientFinal) and event.recipient.lower().endswith("@" + domain):
            reply = reported_reply(event.reply, expired=event.expired)
            return f"{domain}: no MX host to try; {event.status} with {event.dsn}: {reply}"
    return f"{domain}: no MX host to try"


def _mx_line(zones: list[Zone], domain: str, host: str) -> int | None:
    for zone in zones:
        for record in zone.lookup(domain, "MX"):
            if record.target == host:
                return record.line
    return None
