"""Checking a scenario's expectations against a run's result, one sentence each.

Every check says what was expected and what happened, so a failing scenario reads like a
failing test: "message 1 to alice@example.test: expected host mx2.example.test, but it was
delivered by mx1.example.test".
"""

from __future__ import annotations

from collections.abc import Sequence

from sandbox.core.durations import format_duration
from sandbox.result.model import DeliveryRow, ExpectationResult, RunResult
from sandbox.result.stats import SIGNIFICANCE, BalanceGroup, balance_groups, format_p
from sandbox.scenario.model import (
    DeliveryExpectation,
    Expectation,
    HostExpectation,
    TlsExpectation,
    TlsReportExpectation,
)

__all__ = ["check_expectations", "describe_expectation"]


def check_expectations(
    expectations: tuple[Expectation, ...], result: RunResult
) -> tuple[ExpectationResult, ...]:
    # The rows of each message, gathered once: scanning every row for each expectation grew
    # with expectations x recipients (20,000 recipients and 4,000 expectations: 80 million).
    by_message: dict[int, list[DeliveryRow]] = {}
    for row in result.deliveries:
        by_message.setdefault(row.message, []).append(row)
    return tuple(_check(e, result, by_message) for e in expectations)


def describe_expectation(e: Expectation) -> str:
    """The expectation as a compact ``{key: value}`` line, as the scenario wrote it."""
    if isinstance(e, TlsReportExpectation):
        parts: dict[str, object] = {
            "tls_report": e.domain,
            "successes": e.successes,
            "failures": e.failures,
            "result": e.result,
        }
    elif isinstance(e, HostExpectation):
        parts = {
            "host": e.host,
            "accepted": e.accepted,
            "connections": e.connections,
            "share": e.share,
            "tolerance": e.tolerance if e.share is not None else None,
        }
    else:
        parts = {
            "message": e.message,
            "recipient": e.recipient,
            "status": e.status,
            "host": e.host,
            "dsn": e.dsn,
            "attempts": e.attempts,
            "after": None if e.after is None else format_duration(e.after),
            "before": None if e.before is None else format_duration(e.before),
            "tls": e.tls,
        }
    return "{" + ", ".join(f"{k}: {v}" for k, v in parts.items() if v is not None) + "}"


def _check(
    e: Expectation, result: RunResult, by_message: dict[int, list[DeliveryRow]]
) -> ExpectationResult:
    text = describe_expectation(e)
    if isinstance(e, HostExpectation):
        ok, detail = _check_host(e, result)
    elif isinstance(e, TlsReportExpectation):
        ok, detail = _check_tls_report(e, result)
    else:
        candidates = result.deliveries if e.message == "all" else by_message.get(e.message, [])
        ok, detail = _check_delivery(e, candidates)
    return ExpectationResult(text, ok, detail)


def _check_delivery(e: DeliveryExpectation, candidates: Sequence[DeliveryRow]) -> tuple[bool, str]:
    recipient = None if e.recipient is None else e.recipient.lower()
    rows = [d for d in candidates if recipient is None or d.recipient.lower() == recipient]
    if not rows:
        return (
            False,
            "no delivery matches this expectation (check the message number and recipient)",
        )
    for row in rows:
        problem = _row_problem(e, row)
        if problem:
            return False, f"{_who(row)}: {problem}"
    if len(rows) == 1:
        return True, f"{_who(rows[0])}: {_story(rows[0])}"
    return True, f"all {len(rows)} matching deliveries hold"


def _row_problem(e: DeliveryExpectation, row: DeliveryRow) -> str:
    if e.status is not None and row.status != e.status:
        return f"expected {e.status}, but it was {_story(row)}"
    if e.host is not None and row.host != e.host:
        got = f"delivered by {row.host}" if row.host else _story(row)
        return f"expected host {e.host}, but it was {got}"
    if e.dsn is not None and row.dsn != e.dsn:
        return f"expected DSN {e.dsn}, but it was {row.dsn} ({row.reply})"
    if e.attempts is not None and row.attempts != e.attempts:
        return f"expected {e.attempts} attempt(s), but it took {row.attempts}"
    if e.after is not None and row.at < e.after:
        return f"expected it after {format_duration(e.after)}, but it was final at {_at(row.at)}"
    if e.before is not None and row.at > e.before:
        return f"expected it before {format_duration(e.before)}, but it was final at {_at(row.at)}"
    if e.tls is not None and _tls_of(row) not in _TLS_MATCHES[e.tls]:
        return f"expected {_TLS_WORDS[e.tls]}, but {_tls_story(row)}"
    return ""


# What each ``tls:`` expectation accepts, of plain, verified and unverified.
_TLS_MATCHES: dict[TlsExpectation, tuple[str, ...]] = {
    "plain": ("plain",),
    "encrypted": ("verified", "unverified"),
    "verified": ("verified",),
    "unverified": ("unverified",),
}
_TLS_WORDS: dict[TlsExpectation, str] = {
    "plain": "a session in plain text",
    "encrypted": "a session over TLS",
    "verified": "TLS with a verified certificate",
    "unverified": "TLS with a certificate that was not verified",
}


def _tls_of(row: DeliveryRow) -> str:
    if not row.tls:
        return "plain"
    return "verified" if row.tls_verified else "unverified"


def _tls_story(row: DeliveryRow) -> str:
    if not row.tls:
        return "its last session was in plain text"
    how = "verified" if row.tls_verified else "not verified"
    return f"its last session was {row.tls} with a certificate {how}"


def _check_tls_report(e: TlsReportExpectation, result: RunResult) -> tuple[bool, str]:
    report = next(
        (
            r
            for r in result.tls_reports
            if any(_policy_domain(p) == e.domain for p in r.get("policies", []))
        ),
        None,
    )
    if report is None:
        return False, f"no TLS report for {e.domain}: no session ran under a policy of it"
    successes = failures = 0
    results: set[str] = set()
    for entry in report["policies"]:
        if _policy_domain(entry) != e.domain:
            continue
        summary = entry["summary"]
        successes += summary["total-successful-session-count"]
        failures += summary["total-failure-session-count"]
        results |= {d["result-type"] for d in entry.get("failure-details", [])}
    named = f" ({', '.join(sorted(results))})" if results else ""
    facts = (
        f"the report for {e.domain} counts {successes} successful and {failures} failed "
        f"session(s){named}"
    )
    if e.successes is not None and successes != e.successes:
        return False, f"expected {e.successes} successful session(s), but {facts}"
    if e.failures is not None and failures != e.failures:
        return False, f"expected {e.failures} failed session(s), but {facts}"
    if e.result is not None and e.result not in results:
        return False, f"expected a failure {e.result}, but {facts}"
    return True, facts


def _policy_domain(entry: object) -> str:
    policy = entry.get("policy", {}) if isinstance(entry, dict) else {}
    return str(policy.get("policy-domain", "")) if isinstance(policy, dict) else ""


def _check_host(e: HostExpectation, result: RunResult) -> tuple[bool, str]:
    stats = result.host(e.host)
    if stats is None:
        return False, f"no mail host is called {e.host}"
    facts = f"{e.host} had {stats.connections} connection(s) and accepted {stats.accepted}"
    if e.accepted is not None and stats.accepted != e.accepted:
        return False, f"expected {e.host} to accept {e.accepted}, but {facts}"
    if e.connections is not None and stats.connections != e.connections:
        return False, f"expected {e.connections} connection(s) to {e.host}, but {facts}"
    if e.share is not None:
        total = sum(h.accepted for h in result.hosts)
        share = stats.accepted / total if total else 0.0
        facts += f", a share of {share:.3f} of {total}"
        group = _balance_group(e.host, result)
        if group is not None and group.p_value is not None:
            facts += (
                f" (its {len(group.hosts)} equal-preference hosts: chi-square "
                f"{group.statistic:.2f}, p = {format_p(group.p_value)})"
            )
        if abs(share - e.share) > e.tolerance:
            return False, f"expected a share of {e.share} ± {e.tolerance}, but {facts}"
        if group is not None and group.biased and _claims_even_split(e.share, group, total):
            return False, (
                f"expected an even share of {e.share}, and {facts}: the split is "
                f"not even, and chance does not explain it (p < {SIGNIFICANCE})"
            )
    return True, facts


def _balance_group(host: str, result: RunResult) -> BalanceGroup | None:
    """The equal-preference group this host belongs to, when there is exactly one."""
    groups = [g for g in balance_groups(result.events) if g.share_of(host) is not None]
    return groups[0] if len(groups) == 1 else None


def _claims_even_split(share: float, group: BalanceGroup, delivered: int) -> bool:
    """The expectation asserts a fair split of this group: its share is the group's 1/k and
    the group took every delivered message, so the chi-square test speaks to it. A small
    sample inside the tolerance can look uneven by chance, so only a large, clear bias
    fails an expectation that the tolerance alone would let pass."""
    return (
        group.total == delivered and group.reliable and abs(share - 1 / len(group.hosts)) <= 0.005
    )


def _who(row: DeliveryRow) -> str:
    return f"message {row.message} to {row.recipient}"


def _at(t: float) -> str:
    return format_duration(round(t, 3))


def _story(row: DeliveryRow) -> str:
    if row.status == "delivered":
        how = f"delivered by {row.host} at {_at(row.at)}"
    elif row.status == "bounced":
        how = f"bounced at {_at(row.at)} with {row.dsn} ({row.reply})"
    else:
        how = f"still deferred at {_at(row.at)} ({row.dsn} {row.reply})"
    return f"{how}, after {row.attempts} attempt(s)"
