"""The story of a run, for people: each message step by step, then a summary.

It reads only events and the run's result. Each message's story follows the sender: the DNS
question and answer, the order chosen and why, each connection and reply, and each decision
(next host, defer until T, bounce, delivered). Long stories are shortened the way a teacher
would: the first attempts and the last one in full, the ones between in a line each; with
many messages, the first few stories and then the summary.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sandbox.core.classify import CONNECT_FAILURES
from sandbox.core.delivery import reported_reply, where
from sandbox.core.durations import clock_text, format_duration
from sandbox.events import (
    AttemptStarted,
    Connected,
    ConnectFailed,
    Decision,
    DnsAnswered,
    DnsAsked,
    DsnCreated,
    Event,
    HostPhase,
    MessageQueued,
    MtaStsChecked,
    RecipientFinal,
    RouteChosen,
    SmtpExchange,
    SmtpFailure,
    TlsChecked,
    Warning,
)
from sandbox.output.term import PLAIN, Style, table
from sandbox.result.model import RunResult
from sandbox.result.stats import BalanceGroup, balance_groups, verdict

__all__ = ["clock_text", "render_narrative"]

FULL_ATTEMPTS_FIRST = 2
_DSN_PREFIX = re.compile(r"^[245]\.\d{1,3}\.\d{1,3} ")
FULL_STORIES = 3
_KEPT = "kept in the returned-mail mailbox"  # a DSN whose recipient is outside the scenario


@dataclass(slots=True)
class _Lines:
    lines: list[str]

    def at(self, t: float, text: str) -> None:
        self.lines.append(f"  {clock_text(t):>12}  {text}")

    def more(self, text: str) -> None:
        self.lines.append(f"  {'':>12}    {text}")


def render_narrative(
    result: RunResult,
    *,
    all_stories: bool = False,
    style: Style = PLAIN,
    preface: Sequence[str] = (),
) -> str:
    """The story and the summary. ``preface`` (the zone check) goes after the heading;
    ``style`` paints the text for a terminal (plain by default)."""
    scenario = result.scenario
    out = _Lines([])
    heading = scenario.name + (f" — {scenario.title}" if scenario.title else "")
    out.lines += [heading, "=" * len(heading)]
    if scenario.description:
        out.lines += [line.rstrip() for line in scenario.description.strip().splitlines()]
    out.lines.append(f"(seed {result.seed}, sender profile {result.profile.name})")
    if preface:
        out.lines += ["", *preface]
    by_message = _events_by_message(result.events)
    stories = [(number, _told(by_message[number])) for number in sorted(by_message)]
    if all_stories:
        for _, lines in stories:
            out.lines += ["", *lines]
    else:
        _fold_stories(out, stories)
    out.lines.append("")
    out.lines += render_summary(result, style)
    return style.text("\n".join(out.lines)) + "\n"


def _told(events: list[Event]) -> list[str]:
    """One message's story, as lines."""
    lines = _Lines([])
    _story(lines, events)
    return lines.lines


# What differs between two tellings of the same story: the message's number, the host's
# queue ID, the TTL left in a cached answer and the cache mark, a DSN's message number.
_VARYING = re.compile(r"^Message \d+:|queued as \w+|\(TTL \d+\)|\[from cache\]|sent as message \d+")


def _fold_stories(out: _Lines, stories: list[tuple[int, list[str]]]) -> None:
    """Each different story once, followed by the messages whose story is the same; at most
    FULL_STORIES different stories (more when only two more would be left out)."""
    groups: dict[tuple[str, ...], list[tuple[int, list[str]]]] = {}
    for number, lines in stories:
        key = tuple(" ".join(_VARYING.sub("", line).split()) for line in lines)
        groups.setdefault(key, []).append((number, lines))
    shown = list(groups.values())
    if len(shown) > FULL_STORIES + 2:
        shown = shown[:FULL_STORIES]
    for group in shown:
        first, lines = group[0]
        out.lines += ["", *lines]
        same = [number for number, _ in group[1:]]
        if same:
            out.lines.append(
                f"{_messages_named(same)}: the same story as message {first} "
                f"({len(same)} more like this one)."
            )
    left = len(stories) - sum(len(group) for group in shown)
    if left:
        out.lines += [
            "",
            f"… and {left} more messages: their outcomes are in the summary "
            "(--all-stories tells every story).",
        ]


def _messages_named(numbers: list[int]) -> str:
    """``Message 2``, ``Messages 2 and 3``, ``Messages 2, 3 and 5``, ``Messages 2, 3, … 199``."""
    if len(numbers) == 1:
        return f"Message {numbers[0]}"
    if len(numbers) <= 5:
        return f"Messages {', '.join(map(str, numbers[:-1]))} and {numbers[-1]}"
    return f"Messages {', '.join(map(str, numbers[:3]))}, … {numbers[-1]}"


def _events_by_message(events: Iterable[Event]) -> dict[int, list[Event]]:
    grouped: dict[int, list[Event]] = defaultdict(list)
    for event in events:
        number = getattr(event, "message", None)
        if isinstance(number, int):
            grouped[number].append(event)
    return grouped


def _story(out: _Lines, events: list[Event]) -> None:
    attempts: dict[int, list[Event]] = defaultdict(list)
    current = 0
    for event in events:
        if isinstance(event, MessageQueued):
            out.lines.append(
                f"Message {event.message}: {event.sender or '<>'} → {', '.join(event.recipients)}"
            )
            out.at(event.t, "enters the queue")
            continue
        number = getattr(event, "attempt", None)
        if isinstance(number, int):
            current = number
        attempts[current].append(event)
    last = max(attempts, default=0)
    shorts: list[tuple[float, str]] = []
    for number, group in sorted(attempts.items()):
        if number <= FULL_ATTEMPTS_FIRST or number == last:
            _flush_short(out, shorts)
            _full_attempt(out, group)
        else:
            shorts.append((group[0].t, _short_attempt(group)))
    _flush_short(out, shorts)


def _flush_short(out: _Lines, shorts: list[tuple[float, str]]) -> None:
    """One line per middle attempt; a long run of identical ones folds into three lines."""
    index = 0
    while index < len(shorts):
        end = index
        while end + 1 < len(shorts) and _same(shorts[end + 1][1], shorts[index][1]):
            end += 1
        if end - index >= 3:
            out.at(*shorts[index])
            out.more(f"… {end - index - 1} more attempts like this one …")
            out.at(*shorts[end])
        else:
            for t, text in shorts[index : end + 1]:
                out.at(t, text)
        index = end + 1
    shorts.clear()


def _same(a: str, b: str) -> bool:
    """Two attempt lines that differ only in their numbers (attempt, retry time)."""
    strip = str.maketrans("", "", "0123456789:d ")
    return a.translate(strip) == b.translate(strip)


def _full_attempt(out: _Lines, events: list[Event]) -> None:
    # The order is decided from the MX answer, so tell it right there, at the answer's time,
    # before the address lookups it leads to (the event itself comes once the addresses are
    # known, which a DNS timeout can make many seconds later).
    route = next((e for e in events if isinstance(e, RouteChosen)), None)
    unreachable = {host for _, host, addresses in route.hosts if not addresses} if route else set()
    pending_a: DnsAnswered | None = None

    def tell_addresses(a: DnsAnswered, aaaa: DnsAnswered | None) -> None:
        out.at(a.t, _addresses_line(a, aaaa))
        if a.name in unreachable and not a.records and not (aaaa and aaaa.records):
            out.more(f"⇒ skip {a.name}: DNS gave it no address ({_no_address(a, aaaa)})")

    for event in events:
        if isinstance(event, DnsAsked):
            continue
        if isinstance(event, RouteChosen):
            if event.discarded:
                # Found from the addresses: told after them, with the order it leads to.
                out.at(event.t, event.discarded)
                _route_lines(out, event)
            continue
        if (
            isinstance(event, DnsAnswered)
            and event.rdtype == "MX"
            and route is not None
            and not route.discarded
        ):
            _full_line(out, event)
            _route_lines(out, route, event.t)
            continue
        if isinstance(event, DnsAnswered) and event.rdtype == "A":
            pending_a = event
            continue
        if pending_a is not None:
            if (
                isinstance(event, DnsAnswered)
                and event.rdtype == "AAAA"
                and event.name == pending_a.name
            ):
                tell_addresses(pending_a, event)
                pending_a = None
                continue
            tell_addresses(pending_a, None)
            pending_a = None
        _full_line(out, event)
    if pending_a is not None:
        tell_addresses(pending_a, None)


def _no_address(a: DnsAnswered, aaaa: DnsAnswered | None) -> str:
    """Why a host's address look-ups found nothing, in words."""
    rcodes = {a.rcode} | ({aaaa.rcode} if aaaa else set())
    if "TIMEOUT" in rcodes:
        return "no answer"
    if "SERVFAIL" in rcodes:
        return "SERVFAIL"
    if "NXDOMAIN" in rcodes:
        return "the name does not exist"
    return "no A or AAAA record"


def _full_line(out: _Lines, event: Event) -> None:
    match event:
        case AttemptStarted():
            out.at(
                event.t,
                f"attempt {event.attempt}: deliver to {event.domain} "
                f"({', '.join(event.recipients)})",
            )
        case DnsAnswered(rdtype="MX"):
            alias = (
                f" (an alias: {' → '.join((event.name, *event.cnames))})" if event.cnames else ""
            )
            out.at(event.t, f"DNS: MX {event.name}? → {_records(event)}{alias}")
            if event.cnames:
                out.more(
                    f"⇒ {event.name} is an alias: the MX records of {event.cnames[-1]}, the "
                    "name the alias points to, are the ones that count (RFC 5321 §5.1)"
                )
            if any(record.endswith(" .") for record in event.records):
                out.more(
                    "⇒ a null MX: the domain takes no mail, and the domain's own address "
                    "records are not used (the implicit MX applies only when there is no MX "
                    "record at all; RFC 7505 §3)"
                )
        case DnsAnswered():
            out.at(event.t, f"DNS: {event.rdtype} {event.name}? → {_records(event)}")
        case TlsChecked():
            _tls_lines(out, event)
        case MtaStsChecked():
            out.at(event.t, _policy_line(event))
        case RouteChosen():
            _route_lines(out, event)  # an implicit MX: no MX answer to hang it on
        case Warning():
            out.at(event.t, f"warning: {event.text}")
        case Connected(reused=True):
            out.at(event.t, f"reuse the open connection to {where(event.host, event.address)}:25")
        case Connected() | ConnectFailed():
            if isinstance(event, Connected):
                what = "connected"
            else:
                what = CONNECT_FAILURES[event.reason].story or event.detail
            out.at(event.t, f"connect to {where(event.host, event.address)}:25 … {what}")
        case SmtpExchange():
            _exchange_lines(out, event)
        case SmtpFailure():
            what = "no reply (timed out)" if event.reason == "timeout" else "connection lost"
            sent = f"C: {event.command}   " if event.command else ""
            out.at(event.t, f"{sent}S: … {what}")
        case Decision():
            _decision_line(out, event)
        case RecipientFinal():
            _final_line(out, event)
        case DsnCreated():
            what = "a bounce report" if event.action == "failed" else "a delay warning"
            went = (
                f"sent as message {event.dsn_message}"
                if event.dsn_message is not None
                else f"{_KEPT} (the sender's domain is not in this scenario)"
            )
            out.more(
                f"↩ {what} (DSN) for {', '.join(event.recipients)} goes back to {event.to}: {went}"
            )
        case _:
            pass


def _short_attempt(events: list[Event]) -> str:
    tried = []
    decision = ""
    untried = ""  # why nothing was tried: the deferral's reason
    for event in events:
        if isinstance(event, ConnectFailed):
            tried.append(f"{event.host} {event.reason}")
        elif isinstance(event, SmtpExchange) and event.code >= 400 and event.stage != "quit":
            tried.append(f"{event.host} {event.code}")
        elif isinstance(event, SmtpFailure):
            tried.append(f"{event.host} {event.reason} at {event.stage}")
        elif isinstance(event, Decision) and event.action == "defer" and event.retry_at:
            decision = f"→ defer until {clock_text(event.retry_at)}"
            untried = _DSN_PREFIX.sub("", event.why)
        elif isinstance(event, RecipientFinal):
            decision = f"→ {event.status}"
    number = getattr(events[0], "attempt", "?")
    summary = ", ".join(tried) or untried or "nothing to try"
    return f"attempt {number}: {summary} {decision}".rstrip()


def _addresses_line(a: DnsAnswered, aaaa: DnsAnswered | None) -> str:
    found = list(a.records) + (list(aaaa.records) if aaaa else [])
    alias = f" (an alias: {' → '.join((a.name, *a.cnames))})" if a.cnames else ""
    if found:
        return f"DNS: address of {a.name}? → {', '.join(found)}{alias}{_cached(a)}"
    if a.rcode in ("SERVFAIL", "TIMEOUT"):
        return f"DNS: address of {a.name}? → {a.rcode}{_cached(a)}"
    return f"DNS: address of {a.name}? → {a.rcode}, no address{alias}"


def _records(event: DnsAnswered) -> str:
    if event.rcode != "NOERROR":
        return event.rcode + _cached(event)
    if not event.records:
        return "no records (NOERROR, NODATA)" + _cached(event)
    return ", ".join(event.records) + f"  (TTL {event.ttl})" + _cached(event)


def _cached(event: DnsAnswered) -> str:
    secure = " [DNSSEC: secure]" if event.secure else ""
    return secure + (" [from cache]" if event.cached else "")


def _tls_lines(out: _Lines, event: TlsChecked) -> None:
    """A TLS step: the handshake and the verdict on the certificate, and what follows when
    TLS goes on or plain text is allowed (a failure's decision line follows on its own, and a
    host skipped before connecting has its own decision line)."""
    reported = f" (reported to TLS-RPT: {event.report})" if event.report else ""
    if event.outcome == "established":
        dane = f", TLSA {event.dane}" if event.dane else ""
        out.at(event.t, f"TLS: {event.version}, certificate {event.certificate}{dane}{reported}")
        reported = ""
    elif event.outcome == "handshake_failed":
        out.at(event.t, f"C: STARTTLS → 220, then the TLS handshake failed{reported}")
    if event.action in ("tls", "plain"):
        out.more(f"⇒ {event.why} (TLS level {event.level}){reported}")


def _policy_line(event: MtaStsChecked) -> str:
    if event.mode:
        patterns = ", ".join(event.mx) or "no mx"
        how = f"fetched from {event.url}" if event.source == "fetched" else "from the cache"
        if event.failure:
            how = f"the cached one: fetching failed, {event.detail}"
        return (
            f"MTA-STS: {event.domain} has a policy (id {event.id}): mode {event.mode}, "
            f"mx {patterns}, max_age {event.max_age} ({how})"
        )
    if event.failure:
        return f"MTA-STS: no policy for {event.domain}: {event.detail} ({event.failure})"
    return f"MTA-STS: no policy for {event.domain} ({event.detail})"


def _route_lines(out: _Lines, event: RouteChosen, t: float | None = None) -> None:
    when = event.t if t is None else t
    if event.route == "implicit":
        out.at(when, f"route: {event.why}")
        return
    order = ", then ".join(f"{host} ({pref})" for pref, host, _ in event.hosts)
    out.at(when, f"order: {order}")
    out.more(f"why: {event.why}")


def _exchange_lines(out: _Lines, event: SmtpExchange) -> None:
    first, *rest = event.reply.splitlines() or [""]
    extra = f"  (+{len(rest)} lines)" if rest else ""
    reply = f"S: {event.code} {first}{extra}"
    if event.command:
        out.at(event.t, f"C: {event.command:<32} {reply}")
    else:
        out.at(event.t, reply)


def _decision_line(out: _Lines, event: Decision) -> None:
    match event.action:
        case "defer" if event.retry_at is not None:  # the recipients wait for a retry
            out.more(f"⇒ defer: {event.why}")
            out.more(
                f"  try again at {clock_text(event.retry_at)} "
                f"(in {format_duration(round(event.retry_at - event.t))})"
            )
        case "bounce":
            out.more(f"⇒ bounce: {event.why}")
        case "deliver":
            pass  # the recipient's final line tells it
        case _:
            # The next host, a step that ends the attempt (a "defer" verdict: the deferral
            # with its retry time follows), the HELO fallback, give_up, keep_open.
            out.more(f"⇒ {event.why}")


def _final_line(out: _Lines, event: RecipientFinal) -> None:
    if event.status == "delivered":
        text = f"✔ delivered to {event.recipient} by {event.host} (dsn {event.dsn})"
    elif event.status == "bounced":
        reply = reported_reply(event.reply, expired=event.expired)
        text = f"✘ bounced {event.recipient}: {event.dsn} {reply}"
    else:
        text = (
            f"… still deferred for {event.recipient} when the run ended: {event.dsn} {event.reply}"
        )
    out.at(event.t, text)


def _phase_lines(events: Iterable[Event]) -> list[str]:
    """The phases that hosts ended by counting: ``mx1.example.test[192.0.2.10] answered its
    first 2 sessions with greeting→421; from 0:00:00 on: accept``."""
    lines = []
    for event in events:
        if isinstance(event, HostPhase):
            which = "first" if event.phase == 2 else "next"
            lines.append(
                f"  {where(event.host, event.address)}: {event.ended} for its {which} "
                f"{event.after}; from {clock_text(event.t)} on: {event.behaviour}"
            )
    return ["", *lines] if lines else []


def render_summary(result: RunResult, style: Style = PLAIN) -> list[str]:
    lines = ["Summary", "-------"]
    rows = [("message", "recipient", "status", "host", "at", "attempts", "dsn")]
    for d in result.deliveries:
        rows.append(
            (
                str(d.message),
                d.recipient,
                d.status,
                d.host or "-",
                clock_text(d.at),
                str(d.attempts),
                d.dsn,
            )
        )
    lines += table(rows, style)
    counts: defaultdict[str, int] = defaultdict(int)
    for d in result.deliveries:
        counts[d.status] += 1
    lines.append("  " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    lines.append("")
    host_rows = [("host", "addresses", "behaviour", "connections", "accepted", "share")]
    total = sum(h.accepted for h in result.hosts)
    for h in result.hosts:
        share = f"{h.accepted / total:.2f}" if total else "-"
        host_rows.append(
            (
                h.name,
                ", ".join(h.addresses),
                h.behaviour,
                str(h.connections),
                str(h.accepted),
                share,
            )
        )
    lines += table(host_rows, style)
    lines += _phase_lines(result.events)
    for group in balance_groups(result.events):
        lines += ["", *_balance_lines(group, style)]
    lines += _returned_lines(result, style)
    lines += _duplicate_lines(result)
    if result.expectations:
        lines += ["", "Expectations", "------------"]
        for e in result.expectations:
            mark = "✔" if e.ok else "✘"
            lines.append(f"  {mark} {e.text}")
            lines.append(f"      {e.detail}")
        failed = sum(not e.ok for e in result.expectations)
        lines.append("")
        lines.append(
            "All expectations hold."
            if not failed
            else f"{failed} of {len(result.expectations)} expectations failed."
        )
    return lines


def _returned_lines(result: RunResult, style: Style) -> list[str]:
    """The bounce reports (DSNs) sent back to the envelope senders, and where they went."""
    if not result.returned:
        return []
    rows = [("message", "report", "to", "at", "went")]
    for r in sorted(result.returned, key=lambda r: (r.message, r.at)):
        went = (
            _KEPT if r.via == "returned_mailbox" else f"message {r.dsn_message} via MX: {r.status}"
        )
        kind = "bounce" if r.action == "failed" else "delay warning"
        rows.append((str(r.message), kind, r.to, clock_text(r.at), went))
    return ["", "Returned to sender (RFC 3464 delivery status notifications)", *table(rows, style)]


def _duplicate_lines(result: RunResult) -> list[str]:
    if not result.duplicates:
        return []
    lines = ["", "Duplicates"]
    for number, copies in sorted(result.duplicates.items()):
        lines.append(
            f"  message {number} arrived {copies} times: a connection was lost after "
            "the final dot, so the sender could not know the host had taken it, and "
            "sent it again (RFC 5321 §4.5.3.2, §6.1)."
        )
    return lines


def _balance_lines(group: BalanceGroup, style: Style) -> list[str]:
    """Each host's share of its equal-preference group, against a fair split."""
    lines = [
        f"Balancing: {group.domain}, preference {group.preference} "
        f"({len(group.hosts)} hosts, {group.total} messages)"
    ]
    reuse = group.choices != group.total
    rows = [("host", "accepted", "share", "expected", *(("sessions",) if reuse else ()))]
    rows += [
        (
            h.host,
            str(h.accepted),
            f"{h.share:.3f}",
            f"{h.expected:.3f}",
            *((str(h.chosen),) if reuse else ()),
        )
        for h in group.hosts
    ]
    lines += table(rows, style)
    if group.statistic is not None:
        dof = "degree" if group.dof == 1 else "degrees"
        over = (
            f" over the {group.choices} sessions that chose a host (a reused session "
            "carries messages without a choice of its own)"
            if reuse
            else ""
        )
        lines.append(
            f"  chi-square {group.statistic:.2f} with {group.dof} {dof} of freedom{over}: "
            f"{verdict(group)}"
        )
    else:
        lines.append(f"  {verdict(group)}")
    return lines
