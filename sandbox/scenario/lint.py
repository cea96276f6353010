"""Zone lint: the classic MX mistakes, found in a scenario's zones before anything runs.

MX-health checkers teach with a list of findings; so does this module. Each finding names
the zone line (and the scenario file line) of the record at fault, a severity, the rule and
its RFC, and a sentence on how to mend it. Everything here is a pure function of parsed
zones (the ``Zone`` objects the loader made; the lint never reads zone text): ``lint_zone``
looks at one zone against the world of zones around it (an MX may name a host in another zone
of the scenario), and ``lint_scenario`` runs it over every zone and every phase of a zone that
changes over time.

The cost grows with the number of zones, not with its square: the world of zones at a phase
start is built once and shared by every zone linted against it, and names are found in it by
apex (``ZoneIndex``), not by trying every zone.

Severities
----------
- ``error``: mail will not flow the way the zone's author meant, or the zone breaks a MUST
  (an MX to a name with no address, a missing final dot, an IP literal in place of a name, a
  null MX mixed with real ones, a host outside the scenario that nobody will answer for, an
  MX naming a CNAME: RFC 2181 §10.3 MUST NOT, which BIND's named-checkzone calls illegal).
- ``warning``: it works here, but is a trap (two MX leading to one machine, duplicate
  records, TTL 0, no ``$TTL``, a recipient whose domain is in no zone: it bounces).
- ``info``: worth knowing (a single MX: no backup).

STARTTLS, MTA-STS and DANE have checks of their own (``lint_tls``): an MTA-STS policy with no
``_mta-sts`` record or no ``mta-sts`` host, TLSA records outside ``dnssec:``, unusable or
matching no certificate the host can present.

Most findings are about a zone line; one is about the scenario's messages (a recipient's
domain that no zone holds): its ``zone`` is empty, and it is placed at the message's line.

An out-of-range MX preference (outside 0 to 65535) cannot be put on the wire at all, so the zone
reader refuses it while loading the scenario, at its line: it never reaches the lint.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from sandbox.core.durations import format_duration
from sandbox.core.idn import domain_to_ascii
from sandbox.core.mx import ip_literal
from sandbox.dns.zone import (
    OriginDirective,
    TtlDirective,
    Zone,
    ZoneIndex,
    ZoneRecord,
)
from sandbox.scenario.lint_tls import tls_findings
from sandbox.scenario.model import Scenario, ZoneSpec

__all__ = [
    "SEVERITIES",
    "Finding",
    "Severity",
    "count_by_severity",
    "format_finding",
    "has_errors",
    "lint_scenario",
    "lint_zone",
]

Severity = Literal["error", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")

# Rule ids, with the RFC each one rests on.
RFC_MX = "RFC 5321 §5.1"
RFC_CNAME = "RFC 2181 §10.3, RFC 5321 §5.1"
RFC_NULL_MX = "RFC 7505 §3"
RFC_RRSET = "RFC 2181 §5"
RFC_TTL = "RFC 2308 §4"
RFC_TTL_ZERO = "RFC 1035 §3.2.1"
RECIPIENT_OUTSIDE = "recipient-outside-scenario"
_MAX_CNAME_CHAIN = 8


@dataclass(frozen=True, slots=True)
class Finding:
    """One lint finding, at a line of a zone's text (or, with ``zone`` empty and
    ``zone_line`` 0, about the scenario's messages)."""

    severity: Severity
    rule: str
    zone: str
    zone_line: int
    message: str
    mend: str
    rfc: str = ""
    line: int | None = None  # in the scenario file, when known
    phase: int = 0  # which phase of the zone's text (0: the first, or the only one)
    phase_start: float = 0.0  # when that phase begins, in virtual seconds


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(f.severity == "error" for f in findings)


def count_by_severity(findings: Iterable[Finding]) -> dict[Severity, int]:
    counts: dict[Severity, int] = dict.fromkeys(SEVERITIES, 0)
    for finding in findings:
        counts[finding.severity] += 1
    return counts


def format_finding(finding: Finding, source: str) -> tuple[str, str]:
    """Two lines, like a compiler's: where, severity and what; then how to mend it."""
    where = f"{source}:{finding.line}" if finding.line is not None else source
    if finding.zone:
        about = f"zone {finding.zone} line {finding.zone_line}"
        if finding.phase:
            about += f" (phase {finding.phase + 1}, from {format_duration(finding.phase_start)})"
    else:
        about = "messages"
    tag = f"{finding.rule}; {finding.rfc}" if finding.rfc else finding.rule
    return (
        f"{where}: {finding.severity}: {about}: {finding.message} [{tag}]",
        f"    mend: {finding.mend}",
    )


# --- the scenario -----------------------------------------------------------------------------


def lint_scenario(scenario: Scenario) -> tuple[Finding, ...]:
    """Every zone of the scenario, every phase of it, in file order."""
    findings: list[Finding] = []
    worlds: dict[float, _World] = {}  # by phase start: one world for all the zones linted then
    for spec in scenario.zones:
        starts = (0.0, *spec.phases.boundaries)
        for index, (phase, start) in enumerate(zip(spec.phases.phases, starts, strict=True)):
            world = worlds.get(start)
            if world is None:
                world = worlds[start] = _World(other.phases.at(start) for other in scenario.zones)
            for finding in _lint(phase.value, world):
                findings.append(_placed(finding, spec, index, start))
    findings += _recipients_outside(scenario)
    findings += _tls(scenario)
    return tuple(findings)


def _tls(scenario: Scenario) -> list[Finding]:
    """STARTTLS, MTA-STS and DANE findings (``lint_tls``), on the zones as they start."""
    specs = {spec.apex: spec for spec in scenario.zones}
    zones = [spec.phases.initial for spec in scenario.zones]
    raw = tls_findings(zones, dict(scenario.mta_sts), scenario.dnssec)
    return [_placed(Finding(*found), specs[found[2]], 0, 0.0) for found in raw]


def _ascii_or_as_is(domain: str) -> str:
    """The name DNS is asked (an A-label for an internationalised domain: core.idn)."""
    try:
        return domain_to_ascii(domain)
    except ValueError:
        return domain


def _recipients_outside(scenario: Scenario) -> list[Finding]:
    """A recipient whose domain is in no zone: the sandbox's DNS says NXDOMAIN, and the
    message bounces. One finding per domain, at the first message that names it."""
    # A zone's apex never changes over its phases: the first phase of each will do.
    index = ZoneIndex(spec.phases.initial for spec in scenario.zones)
    told: set[str] = set()
    findings: list[Finding] = []
    for message in scenario.messages:
        for recipient in message.recipients:
            domain = recipient.rpartition("@")[2]
            if domain in told or index.find(_ascii_or_as_is(domain)) is not None:
                continue
            told.add(domain)
            findings.append(
                Finding(
                    "warning",
                    RECIPIENT_OUTSIDE,
                    "",
                    0,
                    f"message {message.number} goes to {recipient}, whose domain {domain} is in "
                    "no zone of this scenario: in the sandbox's DNS it does not exist "
                    "(NXDOMAIN), so the message bounces",
                    f"add a zone for {domain} with an MX record, or send to a domain of this "
                    "scenario (a typo?)",
                    RFC_MX,
                    message.line,
                )
            )
    return findings


def _placed(finding: Finding, spec: ZoneSpec, phase: int, start: float) -> Finding:
    first = spec.line_of_phase(phase)
    line = None if first is None else first + finding.zone_line - 1
    return Finding(
        finding.severity,
        finding.rule,
        finding.zone,
        finding.zone_line,
        finding.message,
        finding.mend,
        finding.rfc,
        line,
        phase,
        start,
    )


# --- one zone ----------------------------------------------------------------------------------


def lint_zone(zone: Zone, world: Sequence[Zone] = ()) -> list[Finding]:
    """The findings for one zone. ``world`` is every zone the sender can see (this one is
    added if missing)."""
    zones = list(world) if any(z.apex == zone.apex for z in world) else [*world, zone]
    return _lint(zone, _World(zones))


def _lint(zone: Zone, world: _World) -> list[Finding]:
    lint = _ZoneLint(zone, world)
    lint.ttl()
    lint.duplicates()
    for owner in dict.fromkeys(r.name for r in zone.records if r.rtype == "MX"):
        lint.mx_set(owner)
    return sorted(lint.findings, key=lambda f: (f.zone_line, SEVERITIES.index(f.severity)))


class _World:
    """The zones the sender sees at one moment, indexed for the look-ups of the lint."""

    def __init__(self, zones: Iterable[Zone]) -> None:
        self.zones = tuple(zones)
        self.index = ZoneIndex(self.zones)
        self.apexes = frozenset(zone.apex for zone in self.zones if zone.apex)
        self._free_address: str | None = None

    def find(self, name: str) -> Zone | None:
        return self.index.find(name)

    def free_address(self) -> str:
        """An address no zone uses, for a mend's example record."""
        if self._free_address is None:
            used = {r.address for z in self.zones for r in z.records if r.address}
            candidates = (f"192.0.2.{last}" for last in range(10, 255))
            self._free_address = next((a for a in candidates if a not in used), "192.0.2.254")
        return self._free_address


@dataclass(frozen=True, slots=True)
class _Resolved:
    """Where a name leads in the scenario's DNS: through its CNAMEs to its addresses."""

    final: str
    chain: tuple[str, ...]  # the aliases' targets, in order
    addresses: tuple[str, ...]


class _ZoneLint:
    def __init__(self, zone: Zone, world: _World) -> None:
        self.zone = zone
        self.world = world
        self.origins = {d.origin for d in zone.directives if isinstance(d, OriginDirective)}
        self.findings: list[Finding] = []

    def add(
        self, severity: Severity, rule: str, line: int, message: str, mend: str, rfc: str = ""
    ) -> None:
        self.findings.append(Finding(severity, rule, self.zone.apex, line, message, mend, rfc))

    # -- names in the scenario's DNS --

    def records(self, name: str, rtype: str) -> tuple[ZoneRecord, ...]:
        zone = self.world.find(name)
        return () if zone is None else zone.lookup(name, rtype)

    def owns_records(self, name: str) -> bool:
        zone = self.world.find(name)
        return zone is not None and bool(zone.lookup(name, "ANY"))

    def resolve(self, name: str) -> _Resolved:
        chain: list[str] = []
        current = name
        for _ in range(_MAX_CNAME_CHAIN):
            cnames = self.records(current, "CNAME")
            if not cnames or cnames[0].target is None or cnames[0].target in chain:
                break
            current = cnames[0].target
            chain.append(current)
        zone = self.world.find(current)
        addresses = () if zone is None else zone.addresses_of(current)
        return _Resolved(current, tuple(chain), addresses)

    def relative(self, name: str) -> str:
        """How the name is written inside this zone: ``mx1`` for ``mx1.example.test``."""
        apex = self.zone.apex
        if name == apex:
            return "@"
        return name[: -len(apex) - 1] if name.endswith("." + apex) else name + "."

    # -- TTLs --

    def ttl(self) -> None:
        if not self.zone.ttl_directive:
            self.add(
                "warning",
                "no-ttl",
                1,
                f"the zone has no $TTL line, so records without a TTL get "
                f"{self.zone.default_ttl} s here, and a different default elsewhere "
                "(BIND warns and takes the SOA's minimum)",
                "add '$TTL 3600' (or the TTL you mean) as the zone's first line",
                RFC_TTL,
            )
        directives = [d for d in self.zone.directives if isinstance(d, TtlDirective)]
        for directive in directives:
            if directive.ttl != 0:
                continue
            self.add(
                "warning",
                "ttl-zero",
                directive.line,
                "$TTL 0: every record without its own TTL may not be cached, so each "
                "delivery asks DNS again, and some resolvers mishandle TTL 0",
                "use a real TTL such as '$TTL 300' (5 minutes) even for a zone you change often",
                RFC_TTL_ZERO,
            )
        for record in self.zone.records:
            if record.ttl != 0:
                continue
            governing = [d for d in directives if d.line < record.line]
            if governing and governing[-1].ttl == 0:
                continue  # the $TTL 0 above it is the finding
            self.add(
                "warning",
                "ttl-zero",
                record.line,
                f"the {record.rtype} record of {record.name} has TTL 0: it may not be cached, so "
                "each delivery asks DNS again, and some resolvers mishandle TTL 0",
                "give it a real TTL such as 300 (or leave the TTL out to use $TTL)",
                RFC_TTL_ZERO,
            )

    # -- duplicates --

    def duplicates(self) -> None:
        seen: dict[tuple[str, str, str], ZoneRecord] = {}
        for record in self.zone.records:
            key = (record.name, record.rtype, record.rdata.lower())
            first = seen.setdefault(key, record)
            if first is record:
                continue
            self.add(
                "warning",
                "duplicate-record",
                record.line,
                f"this {record.rtype} record of {record.name} repeats zone line {first.line}; "
                "DNS keeps one copy of a record, so the repeat adds nothing (an MX written "
                "twice does not get twice the mail)",
                "delete one of the two lines",
                RFC_RRSET,
            )

    # -- MX sets --

    def mx_set(self, owner: str) -> None:
        records = self.zone.lookup(owner, "MX")
        nulls = [r for r in records if r.target == ""]
        real = [r for r in records if r.target != ""]
        for null in nulls:
            self.null_mx(null, real)
        targets: list[tuple[ZoneRecord, _Resolved]] = []
        for record in real:
            resolved = self.mx_target(record)
            if resolved is not None:
                targets.append((record, resolved))
        if len({r.target for r in real}) == 1 and not nulls:
            self.single_mx(owner, real[0])
        self.same_address(targets)

    def null_mx(self, null: ZoneRecord, real: list[ZoneRecord]) -> None:
        if real:
            lines = ", ".join(str(r.line) for r in real)
            self.add(
                "error",
                "null-mx-mixed",
                null.line,
                f"{null.name} publishes a null MX ('MX 0 .': no mail accepted) beside other MX "
                f"records (zone line {lines}); senders then treat the domain as taking no mail",
                "keep either the null MX (the domain takes no mail) or the real MX records, "
                "not both",
                RFC_NULL_MX,
            )
        if null.preference != 0:
            self.add(
                "warning",
                "null-mx-preference",
                null.line,
                f"a null MX should have preference 0, not {null.preference}",
                f"write '{self.relative(null.name)} IN MX 0 .'",
                RFC_NULL_MX,
            )

    def mx_target(self, record: ZoneRecord) -> _Resolved | None:
        """The checks on one MX's target, most telling first; the resolved target when the
        name is one the sender can look up at all."""
        target = record.target or ""
        if self.ip_literal(record, target) or self.missing_dot(record, target):
            return None
        if self.world.find(target) is None:
            parent = target.partition(".")[2] or target
            self.add(
                "error",
                "mx-outside-scenario",
                record.line,
                f"the MX names {target}, which is outside every zone of this scenario: in the "
                "sandbox's DNS it does not exist (NXDOMAIN), so nobody will answer for it",
                f"add a zone for {parent} with an A record for {target}, or point the MX at a "
                "host of this scenario",
                RFC_MX,
            )
            return None
        resolved = self.resolve(target)
        if resolved.chain:
            chain = " → ".join((target, *resolved.chain))
            self.add(
                "error",
                "mx-cname",
                record.line,
                f"the MX names {target}, an alias ({chain}); an MX MUST NOT name a CNAME, "
                "but a host with its own address records (BIND's named-checkzone calls it "
                "illegal). Many senders follow it; some refuse, and the mail bounces",
                f"point the MX at {resolved.final}. directly",
                RFC_CNAME,
            )
        if not resolved.addresses:
            final = resolved.final
            where = self.world.find(final)
            zone_name = where.apex if where is not None else self.zone.apex
            relative = final[: -len(zone_name) - 1] if final.endswith("." + zone_name) else "@"
            self.add(
                "error",
                "mx-no-address",
                record.line,
                f"the MX names {target}, but {final} has no A or AAAA record: the sender finds "
                "no address to connect to",
                f"add '{relative} IN A {self.world.free_address()}' to the zone {zone_name}, or "
                "remove this MX",
                RFC_MX,
            )
        return resolved

    def ip_literal(self, record: ZoneRecord, target: str) -> bool:
        written, appended = target, False
        if ip_literal(written) is None:
            for _, as_written in self._completions(target):
                if ip_literal(as_written):
                    written, appended = as_written, True
                    break
            else:
                return False
        address = ip_literal(written)
        rtype = "AAAA" if ":" in str(address) else "A"
        also = f"; and without a final dot it even became the name {target}" if appended else ""
        self.add(
            "error",
            "mx-ip-literal",
            record.line,
            f"the MX names {written}, an IP address: an MX must name a host{also}. Senders "
            "disagree about such a record: Postfix 3.7 uses it with a warning (numeric domain "
            "name in resource data of MX record), Exim bounces the mail (allow_mx_to_ip is "
            "false)",
            f"name the host: 'mx IN {rtype} {address}' and '{self.relative(record.name)} IN MX "
            f"{record.preference} mx'",
            RFC_MX,
        )
        return True

    def missing_dot(self, record: ZoneRecord, target: str) -> bool:
        """``mx1.example.test`` written without its final dot is read relative to the origin:
        ``mx1.example.test.example.test``. Seen when that name does not exist, while the name
        as written (the dotted form) does, or is itself a full name in one of the zones."""
        if self.owns_records(target):
            return False
        for origin, meant in self._completions(target):
            holder = self.world.find(meant)
            full_name = holder is not None and holder.apex != ""  # at or below an apex
            if self.owns_records(meant) or full_name:
                self.add(
                    "error",
                    "mx-missing-dot",
                    record.line,
                    f"the MX names {target}. because the name was written without a final "
                    f"dot, so the origin {origin} was added to it; {meant} was meant",
                    f"end the name with a dot ('{meant}.')" + _relative_form(meant, origin),
                    "RFC 1035 §5.1",
                )
                return True
        return False

    def _completions(self, target: str) -> Iterator[tuple[str, str]]:
        """(origin, the name as written) for each origin that ``target`` may be a relative
        name completed with: a zone's apex or one of this zone's $ORIGIN names, longest
        first. Only the target's own label suffixes can be such an origin."""
        labels = target.split(".")
        for cut in range(1, len(labels)):
            origin = ".".join(labels[cut:])
            if origin in self.world.apexes or origin in self.origins:
                yield origin, ".".join(labels[:cut])

    def single_mx(self, owner: str, record: ZoneRecord) -> None:
        self.add(
            "info",
            "single-mx",
            record.line,
            f"{owner} has a single MX, {record.target}: no backup. When it is down, mail waits "
            "in the senders' queues (for days) rather than going elsewhere; often that is fine",
            f"for a backup, add a second MX with a higher preference number, such as "
            f"'{self.relative(owner)} IN MX {min((record.preference or 0) + 10, 65535)} mx2'",
        )

    def same_address(self, targets: list[tuple[ZoneRecord, _Resolved]]) -> None:
        first_by_address: dict[str, ZoneRecord] = {}
        for record, resolved in targets:
            for address in resolved.addresses:
                first = first_by_address.setdefault(address, record)
                if first is record or first.target == record.target:
                    continue
                self.add(
                    "warning",
                    "mx-same-address",
                    record.line,
                    f"the MX {record.target} leads to {address}, like the MX {first.target} "
                    f"(zone line {first.line}): both names are one machine, so when it is down "
                    "there is no backup",
                    f"give {record.target} an address of its own, or remove one of the two MX "
                    "records",
                    RFC_MX,
                )
                break


def _relative_form(name: str, origin: str) -> str:
    """The other way to write ``name`` under ``origin``, when there is one."""
    if name.endswith("." + origin):
        return f" or write it relative ('{name[: -len(origin) - 1]}')"
    return ""
