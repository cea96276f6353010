"""From a recipient domain to the ordered list of addresses to try: RFC 5321 §5.1, sans I/O.

Theory of operation
-------------------
``Resolution`` is a small state machine in the style of dnspython's ``_Resolution``: the I/O
shell asks it for the next DNS question (``next_query()``), performs the real query, and feeds
the answer back (``feed()``), until ``result`` holds a ``Route`` or a ``NoRoute``. The shell
decides nothing; every rule lives here:

1. Ask MX for the domain.
   - NXDOMAIN: the domain does not exist; bounce (5.4.4).
   - SERVFAIL or no reply: try again later (4.4.3).
   - A null MX (RFC 7505, a single "0 ."): the domain takes no mail; bounce (5.1.10). A null MX
     mixed with real records is a broken zone; like Postfix we treat the domain as taking no
     mail, and say so in a warning.
   - Records: sort by preference, lowest first; shuffle each group of equal preference with
     the injected random generator (§5.1 asks senders to spread the load).
   - No records (NODATA): the implicit MX. The domain itself is the only host, at
     preference 0 (§5.1). Only here is the domain's own address used.
2. Ask A, then AAAA, for each host in that order. Every address of a host is tried, in the
   order DNS gave them. A host named by a CNAME follows the profile's ``cname`` policy
   (RFC 2181 §10.3 forbids it; most MTAs follow it anyway); an IP literal in place of a name
   follows ``ip_literal``.
3. If the sender is itself one of the MX hosts (the profile's ``address``), the records at
   its own preference and worse are discarded (§5.1), so that mail never loops back; if
   nothing is left, bounce (5.4.6). This is the rule, not a fault: the route says so in
   ``discarded``, not in a warning.
4. At most ``max_addresses`` addresses are kept (Postfix's smtp_mx_address_limit).
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import groupby
from typing import Literal

from sandbox.core.idn import domain_to_ascii
from sandbox.core.policy import Profile

__all__ = [
    "TRIED_ALL_MXS",
    "Answer",
    "Candidate",
    "MxRecord",
    "NoRoute",
    "NoRouteKind",
    "Query",
    "Rcode",
    "Resolution",
    "Route",
    "RouteHost",
    "RouteKind",
    "ip_literal",
    "order_mx",
]

# A DNS answer's outcome as the core sees it ("TIMEOUT": no answer came).
Rcode = Literal["NOERROR", "NXDOMAIN", "SERVFAIL", "TIMEOUT"]
# The hosts to try come from MX records, or from the domain itself (the implicit MX).
RouteKind = Literal["mx", "implicit"]
# Why there is nothing to try.
NoRouteKind = Literal["null", "nxdomain", "dns_failure", "no_address", "loop"]


@dataclass(frozen=True, slots=True)
class MxRecord:
    preference: int
    exchange: str  # lower case, no final dot; "" is the null MX "."

    @property
    def is_null(self) -> bool:
        return self.exchange == ""

    def __str__(self) -> str:
        return f"{self.preference} {self.exchange}."


@dataclass(frozen=True, slots=True)
class Query:
    name: str
    rdtype: Literal["MX", "A", "AAAA"]


@dataclass(frozen=True, slots=True)
class Answer:
    """A DNS answer as the core needs it; the shell builds it from the wire (or a failure)."""

    name: str
    rdtype: str
    rcode: Rcode
    mx: tuple[MxRecord, ...] = ()
    addresses: tuple[str, ...] = ()
    cnames: tuple[str, ...] = ()  # the aliases followed to reach the answer, in order
    ttl: int = 0
    # Other record types, in presentation form: a TXT record's strings joined, a TLSA
    # record as "3 1 1 HEX".
    texts: tuple[str, ...] = ()
    # The answer (or the denial) was DNSSEC-validated: the AD bit (RFC 6840 §5.7).
    secure: bool = False


@dataclass(frozen=True, slots=True)
class RouteHost:
    preference: int
    host: str
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One address to try, with the MX host it belongs to."""

    host: str
    address: str
    preference: int


@dataclass(frozen=True, slots=True)
class Route:
    kind: RouteKind
    hosts: tuple[RouteHost, ...]
    candidates: tuple[Candidate, ...]
    why: str
    warnings: tuple[str, ...] = ()
    # The records this sender discarded because it is itself one of the MX hosts (§5.1),
    # in a sentence; "" when it is not.
    discarded: str = ""


@dataclass(frozen=True, slots=True)
class NoRoute:
    """No address to try. ``permanent`` bounces the recipients; otherwise they wait.

    ``reason`` explains it (the story's words); ``reply`` is what the recipients report, in
    the words of the MTA the profile follows (``Profile.wording``), or ``reason``."""

    kind: NoRouteKind
    permanent: bool
    dsn: str
    reason: str
    hosts: tuple[RouteHost, ...] = ()
    warnings: tuple[str, ...] = ()
    reply: str = ""


def order_mx(
    records: tuple[MxRecord, ...], rng: random.Random, *, shuffle: bool = True
) -> tuple[MxRecord, ...]:
    """Lowest preference first; equal preferences in an order drawn from ``rng``.

    ``shuffle=False`` keeps equal preferences in name order: a biased sender, for tests.
    """
    ordered: list[MxRecord] = []
    by_preference = sorted(records, key=lambda r: (r.preference, r.exchange))
    for _, group in groupby(by_preference, key=lambda r: r.preference):
        same = list(group)
        if shuffle:
            rng.shuffle(same)
        ordered.extend(same)
    return tuple(ordered)


def ip_literal(text: str) -> str | None:
    """The canonical spelling of an IP address written in place of a name (``192.0.2.40``,
    ``[2001:db8::1]``), or None when ``text`` is a name."""
    try:
        return str(ipaddress.ip_address(text.strip().strip("[]")))
    except ValueError:
        return None


@dataclass(slots=True)
class _HostState:
    preference: int
    host: str
    addresses: list[str] = field(default_factory=list)
    failed: Literal["", "temporary", "permanent"] = ""
    skipped: bool = False
    # Why the sender's policy skipped it, as the end of a sentence about the host: "is an
    # alias (a CNAME), which this sender rejects (RFC 2181 §10.3)".
    rejected: str = ""


class Resolution:
    """Finds the route to one domain for one delivery attempt. See the module docstring."""

    def __init__(self, domain: str, profile: Profile, rng: random.Random) -> None:
        # DNS holds the A-label of an internationalised domain (bücher.test is asked as
        # xn--bcher-kva.test): core.idn.
        self.domain = _ascii_or_as_is(domain)
        self._profile = profile
        self._rng = rng
        self._warnings: list[str] = []
        self._hosts: list[_HostState] = []
        self._kind: RouteKind = "mx"
        self._why = ""
        self._discarded = ""
        self._pending: Iterator[Query] | None = None
        self._current: Query | None = Query(self.domain, "MX")
        self.result: Route | NoRoute | None = None

    # --- the shell's side --------------------------------------------------------------

    def next_query(self) -> Query | None:
        """The next DNS question, or None when ``result`` is ready."""
        return self._current if self.result is None else None

    def feed(self, answer: Answer) -> None:
        query = self._current
        if query is None or self.result is not None:
            raise RuntimeError("Resolution.feed() called with no question outstanding")
        if query.rdtype == "MX":
            self._on_mx(answer)
        else:
            self._on_address(query, answer)
        if self.result is None:
            self._advance()

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(self._warnings)

    # --- the rules -----------------------------------------------------------------------

    def _on_mx(self, answer: Answer) -> None:
        if answer.rcode == "NXDOMAIN":
            self._finish_no_route(
                "nxdomain", True, "5.4.4", f"the domain {self.domain} does not exist (NXDOMAIN)"
            )
            return
        if answer.rcode in ("SERVFAIL", "TIMEOUT"):
            what = "no answer" if answer.rcode == "TIMEOUT" else "SERVFAIL"
            self._finish_no_route(
                "dns_failure",
                False,
                "4.4.3",
                f"DNS gave {what} for the MX records of {self.domain}",
                rcode=answer.rcode,
            )
            return
        if any(r.is_null for r in answer.mx):
            if len(answer.mx) > 1:
                self._warnings.append(
                    f"{self.domain} publishes a null MX beside other MX records (RFC 7505 §3): "
                    "the domain is treated as taking no mail"
                )
            self._finish_no_route(
                "null", True, "5.1.10", f"{self.domain} publishes a null MX: it accepts no mail"
            )
            return
        if answer.mx:
            self._start_mx(answer.mx)
        else:
            self._kind = "implicit"
            self._why = (
                f"{self.domain} has no MX records, so the domain itself is the mail host "
                "(the implicit MX of RFC 5321 §5.1)"
            )
            self._hosts = [_HostState(0, self.domain)]
        self._pending = self._address_queries()

    def _start_mx(self, records: tuple[MxRecord, ...]) -> None:
        shuffle = self._profile.shuffle_equal
        ordered = order_mx(records, self._rng, shuffle=shuffle)
        self._hosts = [_HostState(r.preference, r.exchange) for r in ordered]
        self._why = _explain_order(ordered, shuffled=shuffle)
        for state in self._hosts:
            literal = ip_literal(state.host)
            if literal is None:
                continue
            if self._profile.ip_literal == "use":
                state.addresses.append(literal)
                self._warnings.append(
                    f"the MX {state.host} is an IP address, not a host name (RFC 5321 §5.1 wants "
                    "a name); used as it is"
                )
            else:
                state.skipped = True
                state.rejected = "is an IP address, not a host name, which this sender rejects"
                self._warnings.append(
                    f"the MX {state.host} is an IP address, not a host name; skipped"
                )

    def _address_queries(self) -> Iterator[Query]:
        for state in self._hosts:
            if state.skipped or ip_literal(state.host) is not None:
                continue
            yield Query(state.host, "A")
            yield Query(state.host, "AAAA")

    def _on_address(self, query: Query, answer: Answer) -> None:
        state = next(s for s in self._hosts if s.host == query.name and not s.skipped)
        if answer.cnames and self._kind == "mx" and not self._cname_allowed(state, answer):
            return
        if answer.rcode in ("SERVFAIL", "TIMEOUT"):
            state.failed = "temporary"
        elif answer.rcode == "NXDOMAIN" and not state.failed:
            state.failed = "permanent"
        for address in answer.addresses:
            if address not in state.addresses:
                state.addresses.append(address)

    def _cname_allowed(self, state: _HostState, answer: Answer) -> bool:
        chain = " → ".join((state.host, *answer.cnames))
        if self._profile.cname == "reject":
            state.skipped = True
            state.rejected = "is an alias (a CNAME), which this sender rejects (RFC 2181 §10.3)"
            self._warnings.append(
                f"the MX {state.host} is an alias ({chain}); RFC 2181 §10.3 forbids an MX "
                "pointing at a CNAME, and this sender rejects it: host skipped"
            )
            return False
        warning = (
            f"the MX {state.host} is an alias ({chain}); RFC 2181 §10.3 forbids an MX "
            "pointing at a CNAME, but this sender follows it"
        )
        if warning not in self._warnings:
            self._warnings.append(warning)
        return True

    def _advance(self) -> None:
        assert self._pending is not None
        for query in self._pending:
            if not any(s.host == query.name and s.skipped for s in self._hosts):
                self._current = query
                return
        self._current = None
        self._finish_route()

    def _finish_route(self) -> None:
        hosts = self._discard_self()
        if hosts is None:
            return
        usable = [s for s in hosts if s.addresses]
        route_hosts = tuple(RouteHost(s.preference, s.host, tuple(s.addresses)) for s in hosts)
        if not usable:
            self._finish_no_address(hosts, route_hosts)
            return
        candidates = tuple(
            Candidate(s.host, address, s.preference) for s in usable for address in s.addresses
        )
        limit = self._profile.max_addresses
        if limit and len(candidates) > limit:
            self._warnings.append(
                f"{len(candidates)} addresses found; only the first {limit} are tried "
                "(max_addresses)"
            )
            candidates = candidates[:limit]
        self.result = Route(
            self._kind, route_hosts, candidates, self._why, self.warnings, self._discarded
        )

    def _discard_self(self) -> list[_HostState] | None:
        own = self._profile.address
        if own is None or self._kind != "mx":
            return self._hosts
        mine = [s.preference for s in self._hosts if own in s.addresses]
        if not mine:
            return self._hosts
        cut = min(mine)
        kept = [s for s in self._hosts if s.preference < cut]
        self._discarded = (
            f"this sender ({own}) is itself an MX of {self.domain} at preference {cut}, so the "
            f"records at {cut} and worse are discarded (RFC 5321 §5.1): mail must never loop "
            "back to itself or go to a worse backup"
        )
        if not kept:
            self._finish_no_route(
                "loop",
                True,
                "5.4.6",
                f"mail for {self.domain} loops back to myself: no MX is better than this sender",
            )
            return None
        return kept

    def _finish_no_address(
        self, hosts: list[_HostState], route_hosts: tuple[RouteHost, ...]
    ) -> None:
        names = ", ".join(s.host for s in hosts) or self.domain
        if any(s.failed == "temporary" for s in hosts):
            self._finish_no_route(
                "dns_failure",
                False,
                "4.4.3",
                f"DNS failed while looking up the address of {names}",
                route_hosts,
                failed=next(s for s in hosts if s.failed == "temporary"),
            )
        else:
            self._finish_no_route(
                "no_address",
                True,
                "5.4.4",
                _why_no_address(self._kind, hosts),
                route_hosts,
                failed=hosts[-1] if hosts else None,
            )

    def _finish_no_route(
        self,
        kind: NoRouteKind,
        permanent: bool,
        dsn: str,
        reason: str,
        hosts: tuple[RouteHost, ...] = (),
        *,
        rcode: Rcode = "NOERROR",
        failed: _HostState | None = None,
    ) -> None:
        self._current = None
        words = _mta_words(self._profile.wording, kind, self.domain, rcode, failed, self._hosts)
        self.result = NoRoute(kind, permanent, dsn, reason, hosts, self.warnings, words or reason)


# What each MTA says when no host can be asked, as its log and its bounce show it (seen
# against Postfix 3.7, Exim 4.96 and Haraka 3.3.4; tests/differential/FINDINGS.md). Postfix
# asks A records only here (inet_protocols = ipv4), so its errors name type=A.
_POSTFIX_DNS = "Host or domain name not found. Name service error for name={name} type={rdtype}: "


def _mta_words(
    wording: str,
    kind: NoRouteKind,
    domain: str,
    rcode: Rcode,
    failed: _HostState | None,
    hosts: list[_HostState],
) -> str | None:
    """The reply a recipient reports when its attempt found no host to ask, in the words of
    the MTA the profile follows; None: the sandbox's own explanation."""
    name = failed.host if failed is not None else domain
    if wording == "postfix":
        if kind == "null":
            return f"Domain {domain} does not accept mail (nullMX)"
        if kind == "nxdomain":
            return _POSTFIX_DNS.format(name=domain, rdtype="A") + "Host not found"
        if kind == "dns_failure":
            rdtype = "A" if failed is not None else "MX"
            return _POSTFIX_DNS.format(name=name, rdtype=rdtype) + "Host not found, try again"
        if kind == "no_address" and failed is not None and not failed.rejected:
            found = (
                "Host not found"
                if failed.failed == "permanent"
                else "Host found but no data record of requested type"
            )
            return _POSTFIX_DNS.format(name=name, rdtype="A") + found
        if kind == "loop":
            return f"mail for {domain} loops back to myself"
    elif wording == "exim":
        if kind == "null":
            return "an MX or SRV record indicated no SMTP service"
        if kind == "nxdomain":
            return "Unrouteable address"
        if kind == "dns_failure":
            return "host lookup did not complete"
        if kind == "no_address":
            literal = any(ip_literal(s.host) is not None for s in hosts)
            extra = " or (invalidly) to IP addresses" if literal else ""
            return f"all relevant MX records point to non-existent hosts{extra}"
        if kind == "loop":
            return "lowest numbered MX record points to local host"
    elif wording == "haraka":
        if kind == "null":
            return f"Domain {domain} sends and receives no email (NULL MX)"
        if kind == "nxdomain":
            return f"Nowhere to deliver mail to for domain: {domain}"
        if kind == "dns_failure" and failed is None:
            code = "ETIMEOUT" if rcode == "TIMEOUT" else "ESERVFAIL"
            return f"DNS lookup failure: Error: queryMx {code} {domain}"
        if kind == "no_address":
            return TRIED_ALL_MXS
    return None


# Haraka's words when every MX failed without a reply that ends the attempt, or none has an
# address (outbound/hmail.js).
TRIED_ALL_MXS = "Tried all MXs"


def _why_no_address(kind: RouteKind, hosts: list[_HostState]) -> str:
    """Why no MX host of a route can be reached, host by host: the sender's policy rejected
    it (an alias, an IP literal) or DNS gave it no address."""
    if kind == "implicit" or not hosts:
        return f"no address found for {', '.join(s.host for s in hosts)}"
    told = [(s.host, s.rejected or _no_address_of(s)) for s in hosts]
    if len(told) == 1:
        host, why = told[0]
        return f"the only MX, {host}, {why}"
    return "no MX host can be used: " + "; ".join(f"{host} {why}" for host, why in told)


def _no_address_of(state: _HostState) -> str:
    if state.failed == "permanent":
        return "does not exist (NXDOMAIN)"
    return "has no address (no A or AAAA record)"


def _explain_order(ordered: tuple[MxRecord, ...], *, shuffled: bool = True) -> str:
    if len(ordered) == 1:
        return f"a single MX: {ordered[0].exchange} (preference {ordered[0].preference})"
    groups = [
        [r.exchange for r in group] for _, group in groupby(ordered, key=lambda r: r.preference)
    ]
    text = "lowest preference first"
    if any(len(g) > 1 for g in groups):
        text += (
            "; equal preferences in a shuffled order, to share the load"
            if shuffled
            else "; equal preferences in name order (shuffle_equal is off: no load sharing)"
        )
    return text


def _ascii_or_as_is(domain: str) -> str:
    try:
        return domain_to_ascii(domain)
    except ValueError:  # the loader refuses such a name: ask as it is, and meet NXDOMAIN
        return domain.lower().rstrip(".")
