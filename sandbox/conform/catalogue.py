"""The catalogue: every conformance case, its clause, its level, its lesson and its judge.

Each case is a small world of its own, under its own domain ``<id>.test`` (so that cases run
side by side, and an MTA can be graded on all of them at once through one DNS address). Zone
addresses are from TEST-NET (192.0.2.0/24); the sandbox serves each at a loopback address of
its own and DNS answers with that. Hosts are named by their role (``mx1``, ``mx2``, ``@`` for
the domain itself); a host the zone names but ``hosts`` does not is ``accept``. Every zone
also gets ``returns``, the mail host of the envelope sender's domain, which takes the bounces
an MTA sends back.

What a host can see is what reached it: a host that refuses or times out sees no session (the
kernel answers for it), so the cases that must see a retry make the host answer ``451``
instead. The judges are pure functions of the ``Observation`` (``model``).

Sources of the clauses (RFC 5321 §5.1 is quoted in the notes where it is short):

- RFC 5321 §5.1 — "a DNS lookup MUST be performed … If a non-existent domain error is
  returned, this situation MUST be reported as an error. If a temporary error is returned, the
  message MUST be queued and retried later … If an empty list of MXs is returned, the address
  is treated as if it was associated with an implicit MX RR … If MX records are present, but
  none of them are usable, or the implicit MX is unusable, this situation MUST be reported as
  an error"; "the SMTP client MUST be able to try (and retry) each of the relevant addresses
  in this list in order, until a delivery attempt succeeds … SHOULD try at least two"; equal
  preferences are randomized; a sender that is one of the MX hosts discards its own
  preference and worse.
- RFC 5321 §4.2.1 (5yz: do not repeat the request), §4.5.4.1 (queue and retry; at least 30
  minutes between tries; give up after 4-5 days), §4.5.3.2 (timeouts), §6.1 (no 250 after the
  dot: the responsibility was not handed over).
- RFC 7505 §3-4 (null MX), RFC 2181 §10.3 (MX to an alias), RFC 1870 §4 (SIZE), RFC 6531 §3.2
  (SMTPUTF8).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

from sandbox.conform.model import (
    Case,
    Control,
    Judge,
    Judgement,
    Observation,
    fail,
    info,
    passed,
)

__all__ = ["CATALOGUE", "RFC_RETRY_MINIMUM", "by_id", "select"]

# RFC 5321 §4.5.4.1: "the retry interval SHOULD be at least 30 minutes"; give up after 4-5 d.
RFC_RETRY_MINIMUM = 30 * 60.0
RFC_GIVE_UP_MINIMUM = 4 * 86400.0

TEMPFAIL = "451 4.3.0 Try again later"
GREETING_421 = "421 4.3.2 Service shutting down"
# Equal preference: how many messages, and below which two-sided binomial p the split is a
# bias rather than chance (a fair sender fails about once in 30,000 runs).
SPREAD_MESSAGES = 24
SPREAD_P = 1e-4

_TWO_MX = """\
@    MX 10 mx1
@    MX 20 mx2
mx1  A  192.0.2.11
mx2  A  192.0.2.12
"""

_ONE_MX = """\
@    MX 10 mx1
mx1  A  192.0.2.11
"""


# --- shared judges ----------------------------------------------------------------------------


def _not_run_hint(o: Observation) -> str:
    return f"{o.told()}; {o.seen()}"


def _failover(broken: str, backup: str) -> Judge:
    """The message ends at ``backup`` after ``broken`` failed, without being returned."""

    def judge(o: Observation) -> Judgement:
        if o.accepted_by(backup):
            if o.bounced():
                return fail(
                    f"{backup} accepted the message, yet {o.told()}: the sender reports a "
                    "failure for mail that was delivered"
                )
            return passed(f"{broken} failed and {backup} took the message ({o.seen()})")
        if o.bounced():
            return fail(
                f"the message was returned instead of tried at {backup}: {_not_run_hint(o)}"
            )
        if not o.sessions_at(backup):
            return fail(f"{backup} was never tried after {broken} failed: {_not_run_hint(o)}")
        return fail(f"{backup} was tried but did not get the message: {_not_run_hint(o)}")

    return judge


def _no_failover(broken: str, backup: str) -> Judge:
    """A 5xx from ``broken`` is final: no MAIL at ``backup``, and the message is returned."""

    def judge(o: Observation) -> Judgement:
        repeated = o.mail_sessions(backup)
        if repeated:
            return fail(
                f"after the 5xx from {broken} the sender tried {backup} too "
                f"({repeated[0].outline}): a permanent reply must not be repeated elsewhere"
            )
        if o.bounced():
            return passed(f"the 5xx from {broken} was final: {o.told()}; {backup} untouched")
        if o.said_delivered():
            return fail(f"{o.told()}, but {broken} rejected the message for good")
        if o.still_queued():
            return fail(
                f"{o.told()}: a 5xx is permanent, yet the sender keeps the message to retry"
            )
        return fail(f"{_not_run_hint(o)}")

    return judge


def _stays_queued(what: str) -> Judge:
    """A temporary failure: the message is deferred (or kept), never returned."""

    def judge(o: Observation) -> Judgement:
        delivered = o.holders()
        if delivered:
            return fail(f"{what}, yet the message reached {', '.join(delivered)}")
        if o.bounced():
            return fail(f"{what}: a temporary failure, but {o.told()}")
        if o.still_queued():
            retries = len(o.mail_sessions())
            extra = f"; {retries} session(s) reached MAIL" if retries else ""
            return passed(f"{what}: {o.told()}{extra}")
        return fail(f"{what}: {_not_run_hint(o)}")

    return judge


def _returned(what: str, *, must_not_touch: tuple[str, ...] = ()) -> Judge:
    """A permanent failure found before any SMTP: reported as an error, no connection."""

    def judge(o: Observation) -> Judgement:
        touched = [r for r in o.tried() if not must_not_touch or r in must_not_touch]
        if touched:
            return fail(f"{what}, yet the sender opened a session with {touched[0]}")
        if o.bounced():
            return passed(f"{what}: {o.told()}, and no host was contacted")
        if o.said_delivered():
            return fail(f"{what}, yet {o.told()}")
        if o.still_queued():
            return fail(f"{what}: this is permanent, but {o.told()}")
        return fail(f"{what}: {_not_run_hint(o)}")

    return judge


def _delivered_to(role: str, reason: str) -> Judge:
    def judge(o: Observation) -> Judgement:
        why = reason.replace("{d}", o.domain)
        holders = o.holders()
        if holders and all(h == role for h in holders):
            return passed(f"{why}: {o.name(role)} took the message")
        if holders:
            return fail(
                f"{why}, but the message went to {', '.join(sorted(set(holders)))} ({o.seen()})"
            )
        return fail(f"{why}, but nobody took the message: {_not_run_hint(o)}")

    return judge


def _one_shot(o: Observation, needs: str) -> Judgement | None:
    """Retry cases grade only a sender that keeps a queue."""
    if o.keeps_queue:
        return None
    return info(
        f"{needs} needs a sender that keeps a queue; a one-shot command cannot retry by "
        f"itself ({o.told()}). Run with --queue (or --smtp for an MTA) and --time-scale."
    )


def _covers(o: Observation, seconds: float) -> bool:
    """The case ran long enough, in the sender's scaled time, to see ``seconds`` pass."""
    return o.deadline * o.time_scale >= seconds


def _scaled(o: Observation, seconds: float) -> str:
    """Real seconds, and what they are in the sender's own (scaled) time."""
    scale = f" (x{o.time_scale:g})" if o.time_scale != 1 else ""
    return f"{seconds:.1f} s{scale} = {_human(seconds * o.time_scale)}"


def _human(seconds: float) -> str:
    if seconds < 3 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.2f} days"


def _mail_gaps(o: Observation, role: str) -> list[float]:
    starts = [s.opened for s in o.mail_sessions(role)]
    return [b - a for a, b in itertools.pairwise(starts)]


# --- judges of single cases -------------------------------------------------------------------


def _mx_order(o: Observation) -> Judgement:
    first = o.first_tried()
    if first is None:
        return fail(f"no host was tried: {_not_run_hint(o)}")
    if first != "mx1":
        return fail(
            f"the first session went to {first}, not to mx1 (preference 10, the lowest); "
            f"order seen: {' → '.join(o.tried())}"
        )
    return _delivered_to("mx1", "mx1 has the lowest preference")(o)


def _failover_order(o: Observation) -> Judgement:
    if o.sessions_at("mx3"):
        return fail(
            "after mx1 refused, the sender went to mx3 (preference 30) before or instead "
            f"of mx2 (preference 20): {o.seen()}"
        )
    return _failover("mx1", "mx2")(o)


def _spread(o: Observation) -> Judgement:
    counts = Counter(o.holders())
    if o.mode == "smtp":
        # An MTA may carry several messages in one session: count the sessions that did.
        counts = Counter(s.role for s in o.mail_sessions() if s.sent_message)
        unit = "sessions that carried mail"
    else:
        unit = "messages"
    a, b = counts.get("mx1", 0), counts.get("mx2", 0)
    n = a + b
    if n == 0:
        return fail(f"no message was delivered: {_not_run_hint(o)}")
    p = _binomial_two_sided(min(a, b), n)
    split = f"mx1 {a}, mx2 {b} of {n} {unit} (two-sided binomial p = {p:.2g})"
    if p < SPREAD_P:
        return fail(f"the two MX records of preference 10 were not shared: {split}")
    return passed(f"both MX records of preference 10 got their share: {split}")


def _binomial_two_sided(low: int, n: int) -> float:
    """P(a fair coin gives ``low`` or fewer, or as many on the other side) over n tosses."""
    tail = math.ldexp(sum(math.comb(n, k) for k in range(low + 1)), -n)
    return min(1.0, 2 * tail)


def _no_implicit_on_nxdomain(o: Observation) -> Judgement:
    extra = [q for q in o.asked("nowhere") if q.rdtype in ("A", "AAAA")]
    if extra:
        return fail(
            f"after the NXDOMAIN for MX nowhere.{o.domain} the sender asked "
            f"{extra[0].rdtype} for it: an implicit MX applies to an empty MX answer "
            "(NODATA), never to a domain that does not exist"
        )
    if not o.asked("nowhere", "MX"):
        return fail(f"the sender never asked MX for nowhere.{o.domain}: {_not_run_hint(o)}")
    return passed(f"only MX was asked for nowhere.{o.domain}; {o.told()}")


def _null_mx(o: Observation) -> Judgement:
    if o.tried():
        return fail(
            f"the domain publishes a null MX (MX 0 .), yet the sender connected to "
            f"{o.tried()[0]} (its A record: the fallback a null MX exists to forbid)"
        )
    return _returned("the domain publishes a null MX")(o)


def _null_mx_mixed(o: Observation) -> Judgement:
    if o.accepted_by("mx1"):
        return info(
            "a null MX beside MX 10 mx1: the sender ignored the null MX and delivered to mx1"
        )
    if o.bounced():
        return info(
            "a null MX beside MX 10 mx1: the sender treated the domain as taking no mail "
            f"({o.told()}), as Postfix does"
        )
    return info(f"a null MX beside MX 10 mx1: {_not_run_hint(o)}")


def _mx_cname(o: Observation) -> Judgement:
    if o.accepted_by("server"):
        return info("the MX names an alias: the sender followed it to server and delivered")
    return info(f"the MX names an alias: the sender did not follow it; {_not_run_hint(o)}")


def _mx_ip_literal(o: Observation) -> Judgement:
    if o.holders():
        return info("the MX names an IP address: the sender used it as an address and delivered")
    return info(f"the MX names an IP address: the sender did not use it; {_not_run_hint(o)}")


def _every_address(o: Observation) -> Judgement:
    # The zone's addresses (192.0.2.21 …), in the order the sender first tried them.
    tried = list(dict.fromkeys(s.zone_address or s.address for s in o.sessions_at("mx1")))
    if o.accepted_by("mx1"):
        return passed(
            f"mx1 has three addresses, two answering 421: the sender went on to the third "
            f"(tried {', '.join(tried)})"
        )
    return fail(
        f"mx1 has three addresses and only 192.0.2.23 accepts; the sender tried "
        f"{len(tried)} of them ({', '.join(tried) or 'none'}) and {o.told()}"
    )


def _discards_itself(discarded: tuple[str, ...], rule: str, outcome: str) -> Judge:
    """The sender is one of the MX hosts: it tries none of ``discarded`` (itself included)."""

    def judge(o: Observation) -> Judgement:
        wrong = [r for r in o.tried() if r in discarded]
        if wrong:
            return fail(f"{rule}; it opened a session with {wrong[0]} ({o.seen()})")
        if o.holders():
            return fail(f"{rule}; the message was delivered to {o.holders()[0]}")
        return passed(f"{outcome}: {o.told()}")

    return judge


def _mx_without_address(o: Observation) -> Judgement:
    if o.sessions_at("@"):
        return fail(
            "the only MX host has no address, and the sender fell back to the domain's own "
            "A record (an implicit MX applies only when there are no MX records at all)"
        )
    if o.holders():
        return fail(f"the message was delivered to {o.holders()[0]}")
    return passed(f"no usable MX host and no fallback to the domain's A record: {o.told()}")


def _retry_after_4xx(o: Observation) -> Judgement:
    one_shot = _one_shot(o, "Retrying after a 4xx")
    if one_shot is not None:
        return one_shot
    sessions = o.mail_sessions("mx1")
    if o.status() == "deferred":
        return fail(
            f"{o.told()} after one try: a sender that keeps a queue must keep the message "
            "and try again"
        )
    if o.accepted_by("mx1") and len(sessions) >= 2:
        gap = sessions[1].opened - sessions[0].opened
        return passed(f"the retry came {_scaled(o, gap)} after the 451, and was accepted")
    if o.bounced():
        return fail(f"a 451 is temporary, but {o.told()} after {len(sessions)} session(s)")
    if not _covers(o, RFC_RETRY_MINIMUM):
        return info(
            f"no retry within the case's {_scaled(o, o.deadline)}: shorter than the RFC's "
            "30-minute interval, so nothing can be concluded (raise --case-timeout or "
            "--time-scale)"
        )
    return fail(
        f"no retry within {_scaled(o, o.deadline)}, longer than the RFC's 30-minute "
        f"interval ({o.seen()})"
    )


def _retry_interval(o: Observation) -> Judgement:
    one_shot = _one_shot(o, "The retry interval")
    if one_shot is not None:
        return one_shot
    gaps = _mail_gaps(o, "mx1")
    if not gaps:
        return info(
            f"no second try within the case's {_scaled(o, o.deadline)}: no interval to measure"
        )
    scaled = gaps[0] * o.time_scale
    if scaled < RFC_RETRY_MINIMUM:
        return fail(
            f"the first retry came {_scaled(o, gaps[0])} after the 451: less than the "
            "30 minutes the RFC recommends"
        )
    return passed(f"the first retry came {_scaled(o, gaps[0])} after the 451")


def _give_up(o: Observation) -> Judgement:
    one_shot = _one_shot(o, "The give-up time")
    if one_shot is not None:
        return one_shot
    run = o.runs[0]
    if o.bounced():
        when = (run.ended or o.ended) - run.started
        if when * o.time_scale < RFC_GIVE_UP_MINIMUM:
            return fail(f"the sender gave up after {_scaled(o, when)}: the RFC asks for 4-5 days")
        return passed(f"the sender gave up after {when * o.time_scale / 86400:.2f} days")
    days = o.deadline * o.time_scale / 86400
    return info(
        f"the sender had not given up when the case ended, {days:.2f} days into its "
        f"(scaled) time: {len(o.mail_sessions())} tries so far"
    )


def _lost_dot(o: Observation) -> Judgement:
    if not any(s.sent_message for s in o.sessions_at("mx1")):
        return info(
            f"mx1 never got the message, so the lost dot was not exercised: {_not_run_hint(o)}"
        )
    copies = Counter(o.holders())
    later = copies.get("mx2", 0) + max(0, copies.get("mx1", 0) - 1)
    if later:
        return passed(
            "no reply came after the dot, so the sender tried again: the message arrived "
            f"{sum(copies.values())} times (the duplicate RFC 1047 describes), never lost"
        )
    if o.mode == "smtp":
        if o.bounced():
            return fail(f"a lost connection is a temporary failure, but {o.told()}")
        if not _covers(o, RFC_RETRY_MINIMUM):
            return info(
                f"no further try within {_scaled(o, o.deadline)}; too short to tell a queued "
                "message from one the MTA believes delivered"
            )
        return fail(
            f"no further try within {_scaled(o, o.deadline)}: the MTA took the dropped "
            f"connection for a delivery ({o.seen()})"
        )
    if o.said_delivered():
        return fail(
            f"mx1 dropped the connection after the dot without a reply, yet {o.told()}: "
            "without a 250 the responsibility was never handed over"
        )
    if o.bounced():
        return fail(f"a lost connection is a temporary failure, but {o.told()}")
    if o.still_queued():
        return passed(f"the dot went unanswered and {o.told()}: the sender keeps the message")
    return fail(f"{_not_run_hint(o)}")


def _seven_mx(o: Observation) -> Judgement:
    tried = sorted(set(o.tried()))
    if o.accepted_by("mx7"):
        return info(
            f"six MX hosts answered 421; the sender tried on and mx7 took it "
            f"({len(o.tried())} sessions)"
        )
    return info(
        f"six MX hosts answered 421 and the sender stopped after {len(tried)} host(s) "
        f"({', '.join(tried) or 'none'}); {o.told()} (a limit on hosts per attempt, "
        "allowed by §5.1)"
    )


def _greeting_5xx(o: Observation) -> Judgement:
    if o.accepted_by("mx2"):
        return info("a 554 greeting at mx1: the sender went on to mx2 (as Postfix does)")
    if o.bounced():
        return info(f"a 554 greeting at mx1: {o.told()} without trying mx2 (as Haraka does)")
    return info(f"a 554 greeting at mx1: {_not_run_hint(o)}")


def _rcpt_one_of_two(o: Observation) -> Judgement:
    carol = f"carol@{o.domain}"
    retried = [s for s in o.mail_sessions() if s.role != "mx1" and _mentions(s, carol)]
    if retried:
        return fail(f"carol was rejected with 550 by mx1, yet tried again at {retried[0].role}")
    kept = [m for m in o.stored if m.role == "mx1" and f"alice@{o.domain}" in m.recipients]
    if not kept:
        return fail(f"alice was accepted by mx1 but did not get the message: {o.seen()}")
    return passed("carol's 550 failed only carol; alice's copy went through mx1 at once")


def _mentions(session: object, address: str) -> bool:
    commands = getattr(session, "commands", ())
    return any(address.lower() in c.lower() for c in commands)


def _smtputf8(o: Observation) -> Judgement:
    leaked = [s for s in o.sessions if any(not c.isascii() for c in s.commands)]
    if leaked:
        return fail(
            f"{leaked[0].role} does not offer SMTPUTF8, yet the sender sent it a non-ASCII address"
        )
    if o.said_delivered():
        return fail(f"the address needs SMTPUTF8, which no host offers, yet {o.told()}")
    return passed(f"no non-ASCII address went to a host without SMTPUTF8: {o.told()}")


def _size(o: Observation) -> Judgement:
    big = [s for s in o.sessions_at("mx1") if s.sent_message]
    if big:
        return fail("mx1 announced SIZE 2000, yet the sender transmitted the larger message")
    if o.said_delivered() or o.still_queued():
        return fail(f"the message can never fit mx1's SIZE 2000, yet {o.told()}")
    return passed(f"the message was not transmitted over mx1's SIZE limit: {o.told()}")


# --- scripts and early ends -------------------------------------------------------------------


async def _accept_after_first_tempfail(control: Control) -> None:
    await control.sessions_reach("mx1", 1)
    control.set_behaviour("mx1", "accept")


def _second_mail_session(o: Observation) -> bool:
    return len(o.mail_sessions("mx1")) >= 2


def _delivered_or_returned(o: Observation) -> bool:
    return bool(o.holders()) or o.bounced()


def _duplicate_seen(o: Observation) -> bool:
    # An MTA's "delivered" is read from the hosts, where the lost dot's copy already is:
    # only the sender's own word, or a second copy, ends the case early.
    told = o.mode != "smtp" and o.said_delivered()
    return len(o.holders()) >= 2 or told or o.bounced()


# --- the catalogue ----------------------------------------------------------------------------

_STAGE_WORDS = {
    "ehlo": "EHLO",
    "mail": "MAIL FROM",
    "rcpt": "RCPT TO",
    "data": "DATA",
    "message": "the final dot",
}


def _failover_4xx(stage: str) -> Case:
    return Case(
        id=f"failover-451-{stage}",
        title=f"mx1 answers 451 to {_STAGE_WORDS[stage]}: the backup takes the mail",
        clause="RFC 5321 §5.1, §4.2.1",
        level="SHOULD",
        note=(
            f"A 4xx to {_STAGE_WORDS[stage]} is a temporary failure at this host: walk on "
            "down the MX list (Postfix does), or at least keep the mail (Haraka defers)."
        ),
        zone=_TWO_MX,
        hosts={"mx1": {stage: TEMPFAIL}},
        judge=_failover("mx1", "mx2"),
    )


def _no_failover_5xx(stage: str, reply: str) -> Case:
    return Case(
        id=f"no-failover-{reply[:3]}-{stage}",
        title=f"mx1 answers {reply[:3]} to {_STAGE_WORDS[stage]}: bounce, no retry at mx2",
        clause="RFC 5321 §4.2.1",
        level="SHOULD",
        note=(
            "A 5yz reply is permanent: the SMTP client should not repeat the request, and "
            "another MX of the same domain would only be asked the same question."
        ),
        zone=_TWO_MX,
        hosts={"mx1": {stage: reply}},
        judge=_no_failover("mx1", "mx2"),
    )


def _failover_case(
    case_id: str, title: str, behaviour: object, note: str, clause: str = "RFC 5321 §5.1"
) -> Case:
    return Case(
        id=case_id,
        title=title,
        clause=clause,
        level="MUST",
        note=note,
        zone=_TWO_MX,
        hosts={"mx1": behaviour},
        judge=_failover("mx1", "mx2"),
    )


CATALOGUE: tuple[Case, ...] = (
    # --- MX order and failover ----------------------------------------------------------------
    Case(
        id="mx-order",
        title="Three MX records, all up: the lowest preference gets the mail",
        clause="RFC 5321 §5.1",
        level="MUST",
        note="Preference is an order, not a weight: try the lowest value first.",
        zone="""\
@    MX 20 mx2
@    MX 30 mx3
@    MX 10 mx1
mx1  A  192.0.2.11
mx2  A  192.0.2.12
mx3  A  192.0.2.13
""",
        judge=_mx_order,
    ),
    Case(
        id="failover-order",
        title="mx1 refuses: the next preference (20), not the next record, takes over",
        clause="RFC 5321 §5.1",
        level="MUST",
        note="After a failure, go on in preference order: 20 before 30, whatever DNS listed.",
        zone="""\
@    MX 30 mx3
@    MX 10 mx1
@    MX 20 mx2
mx1  A  192.0.2.11
mx2  A  192.0.2.12
mx3  A  192.0.2.13
""",
        hosts={"mx1": "refuse"},
        judge=_failover_order,
    ),
    _failover_case(
        "failover-refused",
        "mx1 refuses connections: the backup takes the mail",
        "refuse",
        '"MUST be able to try (and retry) each of the relevant addresses in this list in '
        'order, until a delivery attempt succeeds."',
    ),
    _failover_case(
        "failover-timeout",
        "mx1 never answers the TCP handshake: the backup takes the mail",
        "timeout",
        "A connect that is never answered must time out and give way to the next MX; keep "
        "the connect timeout well inside the case deadline.",
        "RFC 5321 §5.1, §4.5.3.2",
    ),
    _failover_case(
        "failover-silent",
        "mx1 accepts the connection but never greets: the backup takes the mail",
        "silent",
        "No 220 greeting is a failure of this host (§4.5.3.2.1 allows 5 minutes); wait, give "
        "up, and try the next MX.",
        "RFC 5321 §5.1, §4.5.3.2.1",
    ),
    _failover_case(
        "failover-421-greeting",
        "mx1 greets with 421: the backup takes the mail",
        {"greeting": GREETING_421},
        "421 means this host cannot serve now and closes the channel: the next MX may.",
        "RFC 5321 §5.1, §3.8",
    ),
    *(_failover_4xx(stage) for stage in ("ehlo", "mail", "rcpt", "data", "message")),
    _no_failover_5xx("mail", "550 5.7.1 Sender rejected"),
    _no_failover_5xx("rcpt", "550 5.1.1 No such user"),
    _no_failover_5xx("message", "554 5.6.0 Message rejected"),
    Case(
        id="rcpt-550-one-of-two",
        title="Two recipients, mx1 rejects one with 550: the other is delivered at once",
        clause="RFC 5321 §4.2.1, §3.3",
        level="SHOULD",
        note="A 5xx to one RCPT fails that recipient only; the others go on in the session.",
        zone=_TWO_MX,
        recipients=("alice@{d}", "carol@{d}"),
        hosts={"mx1": {"recipients": {"carol@{d}": "550 5.1.1 No such user"}}},
        judge=_rcpt_one_of_two,
    ),
    Case(
        id="equal-preference-spread",
        title=f"Two MX records at preference 10, {SPREAD_MESSAGES} messages: both get some",
        clause="RFC 5321 §5.1",
        level="MUST",
        note="Equal preferences MUST be randomized to spread the load; always taking the "
        "first one listed is a bias the statistics show.",
        zone="""\
@    MX 10 mx1
@    MX 10 mx2
mx1  A  192.0.2.11
mx2  A  192.0.2.12
""",
        messages=SPREAD_MESSAGES,
        parallel=4,
        judge=_spread,
    ),
    Case(
        id="every-address-tried",
        title="One MX host with three addresses, two answering 421: the third takes it",
        clause="RFC 5321 §5.1",
        level="MUST",
        note="A host is all of its addresses (multihoming): try each before giving up.",
        zone="""\
@    MX 10 mx1
mx1  A  192.0.2.21
mx1  A  192.0.2.22
mx1  A  192.0.2.23
""",
        hosts={
            "192.0.2.21": {"greeting": GREETING_421},
            "192.0.2.22": {"greeting": GREETING_421},
        },
        judge=_every_address,
    ),
    Case(
        id="mx-partial-address",
        title="MX 10 has no address record, MX 20 has one: MX 20 takes the mail",
        clause="RFC 5321 §5.1",
        level="MUST",
        note="An MX host without an address is skipped like a dead one; the list goes on.",
        zone="""\
@    MX 10 mx1
@    MX 20 mx2
mx2  A  192.0.2.12
""",
        judge=_delivered_to("mx2", "mx1 has no address"),
    ),
    # --- how the route is found ---------------------------------------------------------------
    Case(
        id="implicit-mx",
        title="No MX records, an A record: the domain itself is the mail host",
        clause="RFC 5321 §5.1",
        level="MUST",
        note="An empty MX answer (NODATA) means an implicit MX: the domain, preference 0.",
        zone="@    A  192.0.2.20\n",
        judge=_delivered_to("@", "the domain has no MX records"),
    ),
    Case(
        id="no-implicit-mx-on-nxdomain",
        title="The recipient domain does not exist: no A lookup as an implicit MX",
        clause="RFC 5321 §5.1",
        level="MUST",
        note="The implicit MX is for a domain with no MX records, not for one that does not "
        "exist (NXDOMAIN).",
        zone=_ONE_MX,
        recipients=("alice@nowhere.{d}",),
        judge=_no_implicit_on_nxdomain,
    ),
    Case(
        id="nxdomain",
        title="The recipient domain does not exist: a permanent error, at once",
        clause="RFC 5321 §5.1",
        level="MUST",
        note='"If a non-existent domain error is returned, this situation MUST be reported '
        'as an error."',
        zone=_ONE_MX,
        recipients=("alice@nowhere.{d}",),
        judge=_returned("the domain does not exist (NXDOMAIN)"),
    ),
    Case(
        id="null-mx",
        title="A null MX (MX 0 .): no delivery, no fallback to the A record",
        clause="RFC 7505 §3, §4",
        level="MUST",
        note="MX 0 . says the domain takes no mail: fail at once (5.1.10), never fall back "
        "to the domain's own address.",
        zone="""\
@    MX 0 .
@    A  192.0.2.20
""",
        judge=_null_mx,
    ),
    Case(
        id="null-mx-mixed",
        title="A null MX beside a real MX: the zone is broken; which wins?",
        clause="RFC 7505 §3",
        level="profile",
        note="A domain with a null MX MUST NOT publish other MX records; senders differ on "
        "what to make of one that does.",
        zone="""\
@    MX 0 .
@    MX 10 mx1
mx1  A  192.0.2.11
""",
        judge=_null_mx_mixed,
    ),
    Case(
        id="mx-without-address",
        title="The only MX host has no address: no fallback to the domain's A record",
        clause="RFC 5321 §5.1",
        level="MUST",
        note='"If MX records are present, but none of them are usable … this situation MUST '
        'be reported as an error": the implicit MX is only for a domain without MX records.',
        zone="""\
@    MX 10 mx1
@    A  192.0.2.20
""",
        judge=_mx_without_address,
    ),
    Case(
        id="domain-cname",
        title="The recipient domain is an alias (CNAME): its target's MX records apply",
        clause="RFC 5321 §5.1",
        level="MUST",
        note='"If a CNAME record is found, the resulting name is processed as if it were the '
        'initial name."',
        zone="""\
alias      CNAME real
real       MX 10 mx1
mx1        A  192.0.2.11
""",
        recipients=("alice@alias.{d}",),
        judge=_delivered_to("mx1", "alias.{d} is an alias of real.{d}"),
    ),
    Case(
        id="mx-cname",
        title="The MX names an alias (CNAME) instead of a host",
        clause="RFC 2181 §10.3, RFC 5321 §5.1",
        level="profile",
        note="An MX must name a host, not an alias; most MTAs follow the alias anyway, some "
        "refuse.",
        zone="""\
@       MX 10 mail
mail    CNAME server
server  A  192.0.2.11
""",
        judge=_mx_cname,
    ),
    Case(
        id="mx-ip-literal",
        title="The MX names an IP address instead of a host",
        clause="RFC 5321 §5.1, RFC 1035 §3.3.9",
        level="profile",
        note="An MX exchange is a domain name; an address written there is a mistake that "
        "some MTAs forgive (Postfix) and others reject (Exim).",
        zone="@    MX 10 192.0.2.30.\n",
        judge=_mx_ip_literal,
    ),
    Case(
        id="self-backup-mx",
        title="The sender is itself MX 20: MX 20 and worse are discarded",
        clause="RFC 5321 §5.1",
        level="MUST",
        note="A sender that is one of the MX hosts discards its own preference and worse, or "
        "mail loops between the backups.",
        zone="""\
@     MX 10 mx1
@     MX 20 self
@     MX 30 mx3
mx1   A  192.0.2.11
self  A  $SELF
mx3   A  192.0.2.13
""",
        hosts={"mx1": "refuse"},
        needs=frozenset({"self"}),
        judge=_discards_itself(
            ("self", "mx3"),
            "the sender is itself MX 20 (self), so MX 20 and 30 must be discarded",
            "mx1 refused and the sender, MX 20 itself, tried neither itself nor mx3",
        ),
    ),
    Case(
        id="self-best-mx",
        title="The sender is itself the best MX: nowhere to deliver, an error",
        clause="RFC 5321 §5.1",
        level="MUST",
        note="When the sender is the most preferred MX, every record is discarded: the mail "
        'would loop (Postfix: "mail for … loops back to myself").',
        zone="""\
@     MX 10 self
@     MX 20 mx2
self  A  $SELF
mx2   A  192.0.2.12
""",
        needs=frozenset({"self"}),
        judge=_discards_itself(
            ("self", "mx2"),
            "the sender is itself the best MX (10), so every record must be discarded (the "
            "mail would loop)",
            "the sender saw that it is the best MX and delivered nowhere",
        ),
    ),
    # --- DNS failures -------------------------------------------------------------------------
    Case(
        id="servfail",
        title="The MX lookup fails with SERVFAIL: defer, never bounce",
        clause="RFC 5321 §5.1, §4.5.4.1",
        level="MUST",
        note='"If a temporary error is returned, the message MUST be queued and retried later."',
        zone=_ONE_MX,
        dns={"@": "servfail"},
        judge=_stays_queued("the MX lookup failed with SERVFAIL"),
    ),
    Case(
        id="dns-timeout",
        title="The DNS server never answers for the domain: defer, never bounce",
        clause="RFC 5321 §5.1, §4.5.4.1",
        level="MUST",
        note="No answer is a temporary error too; keep the resolver's timeout inside the case "
        "deadline.",
        zone=_ONE_MX,
        dns={"@": "timeout"},
        judge=_stays_queued("DNS never answered for the domain"),
    ),
    # --- temporary failures and the queue -----------------------------------------------------
    Case(
        id="all-refused-defers",
        title="Every MX refuses connections: the message waits, it is not returned",
        clause="RFC 5321 §4.5.4.1",
        level="MUST",
        note='"Mail that cannot be transmitted immediately MUST be queued and periodically '
        'retried by the sender."',
        zone=_TWO_MX,
        hosts={"mx1": "refuse", "mx2": "refuse"},
        judge=_stays_queued("both MX hosts refused"),
    ),
    Case(
        id="tempfail-defers",
        title="The only MX answers 451 to RCPT: the message waits, it is not returned",
        clause="RFC 5321 §4.2.1, §4.5.4.1",
        level="MUST",
        note="A 4yz reply is transient: try again later, never turn it into a bounce.",
        zone=_ONE_MX,
        hosts={"mx1": {"rcpt": TEMPFAIL}},
        settled=_second_mail_session,
        judge=_stays_queued("mx1 answered 451"),
    ),
    Case(
        id="retry-after-4xx",
        title="451 to RCPT, then the host recovers: the retry delivers",
        clause="RFC 5321 §4.5.4.1",
        level="MUST",
        note="A queued message is retried until it goes through (greylisting relies on it).",
        zone=_ONE_MX,
        hosts={"mx1": {"rcpt": TEMPFAIL}},
        script=_accept_after_first_tempfail,
        settled=_delivered_or_returned,
        judge=_retry_after_4xx,
    ),
    Case(
        id="retry-interval",
        title="The time between the first try and the retry",
        clause="RFC 5321 §4.5.4.1",
        level="SHOULD",
        note='"The retry interval SHOULD be at least 30 minutes"; many MTAs retry sooner '
        "(Postfix: 5 minutes), which greylisting hosts welcome.",
        zone=_ONE_MX,
        hosts={"mx1": {"rcpt": TEMPFAIL}},
        settled=_second_mail_session,
        judge=_retry_interval,
    ),
    Case(
        id="give-up",
        title="A host that always answers 451: when does the sender give up?",
        clause="RFC 5321 §4.5.4.1",
        level="SHOULD",
        note="Give up no sooner than 4-5 days, and tell the sender (a DSN).",
        zone=_ONE_MX,
        hosts={"mx1": {"rcpt": TEMPFAIL}},
        settled=_delivered_or_returned,
        judge=_give_up,
    ),
    Case(
        id="lost-dot",
        title="mx1 drops the connection after the final dot: keep the message, try again",
        clause="RFC 5321 §6.1, §4.5.3.2.6; RFC 1047",
        level="MUST",
        note="No 250 after the dot means the responsibility was not handed over: the mail "
        "stays the sender's, even if it arrived (hence the duplicate).",
        zone=_TWO_MX,
        hosts={"mx1": {"disconnect": "message"}},
        settled=_duplicate_seen,
        judge=_lost_dot,
    ),
    # --- where MTAs differ --------------------------------------------------------------------
    Case(
        id="greeting-554",
        title="mx1 greets with 554: next MX, or bounce?",
        clause="RFC 5321 §3.1, §4.2.1",
        level="profile",
        note="A 554 greeting refuses service at this host; Postfix tries the next MX "
        "(smtp_skip_5xx_greeting), Haraka bounces.",
        zone=_TWO_MX,
        hosts={"mx1": {"greeting": "554 5.3.2 No SMTP service here"}},
        judge=_greeting_5xx,
    ),
    Case(
        id="seven-mx",
        title="Seven MX records, the first six answer 421: how far does one attempt go?",
        clause="RFC 5321 §5.1",
        level="profile",
        note="A sender MAY limit how many addresses one attempt tries, and SHOULD try at least "
        "two: Postfix stops at 5 addresses, Exim goes on.",
        zone="".join(f"@    MX {10 * n} mx{n}\n" for n in range(1, 8))
        + "".join(f"mx{n}  A  192.0.2.{10 + n}\n" for n in range(1, 8)),
        hosts={f"mx{n}": {"greeting": GREETING_421} for n in range(1, 7)},
        judge=_seven_mx,
    ),
    # --- ESMTP extensions (they need the hosts' `esmtp:` setting) -----------------------------
    Case(
        id="smtputf8-not-offered",
        title="An internationalized address, a host without SMTPUTF8: do not send it",
        clause="RFC 6531 §3.2",
        level="MUST",
        note="A non-ASCII address may only go to a host that offers SMTPUTF8; otherwise the "
        "message fails (it cannot be downgraded).",
        zone=_ONE_MX,
        recipients=("jörg@{d}",),
        hosts={"mx1": {"esmtp": {"smtputf8": False}}},
        judge=_smtputf8,
    ),
    Case(
        id="size-limit",
        title="mx1 announces SIZE 2000; the message is larger: do not transmit it",
        clause="RFC 1870 §4",
        level="SHOULD",
        note="A message larger than the announced SIZE will be refused with 552: learn it "
        "from the EHLO reply, before sending the whole message.",
        zone=_ONE_MX,
        hosts={"mx1": {"esmtp": {"size": 2000}}},
        size=6000,
        judge=_size,
    ),
)


def by_id(case_id: str) -> Case:
    for case in CATALOGUE:
        if case.id == case_id:
            return case
    raise KeyError(case_id)


def select(patterns: tuple[str, ...]) -> tuple[Case, ...]:
    """The cases whose id matches one of the glob patterns (all when there are none)."""
    from fnmatch import fnmatchcase

    if not patterns:
        return CATALOGUE
    return tuple(c for c in CATALOGUE if any(fnmatchcase(c.id, p) for p in patterns))
