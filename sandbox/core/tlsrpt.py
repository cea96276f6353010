"""SMTP TLS Reporting (RFC 8460): the aggregate report a sender writes, sans I/O.

A sender that honours MTA-STS or DANE records the outcome of every TLS session it tried under
a policy, and reports them per policy domain as one JSON object (RFC 8460 §4.4). The sandbox
puts that object in the run's result instead of mailing it, so a test can assert on it.

The report's shape (§4.4), as :func:`build_report` writes it::

    {"organization-name", "date-range": {"start-datetime", "end-datetime"},
     "contact-info", "report-id",
     "policies": [                      # always an array, even for one policy (§4)
       {"policy": {"policy-type",       # "sts", "tlsa" or "no-policy-found" (§4.3)
                   "policy-string",     # the policy, one line (or TLSA record) per string
                   "policy-domain",
                   "mx-host"},          # the policy's MX patterns (MTA-STS)
        "summary": {"total-successful-session-count", "total-failure-session-count"},
        "failure-details": [{"result-type", "sending-mta-ip", "receiving-mx-hostname",
                             "receiving-ip", "failed-session-count",
                             "failure-reason-code"}]}]}

Sessions are grouped by policy, then failures by what went wrong and where; every list comes
out in a stable order, so the same run writes the same report.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, get_args

__all__ = [
    "RESULT_TYPES",
    "PolicyType",
    "ResultType",
    "SessionResult",
    "build_report",
    "rfc3339",
]

# RFC 8460 §4.3: why a session failed. Negotiation failures (§4.3.1), then the policy failures
# of DANE (§4.3.2.1) and of MTA-STS (§4.3.2.2).
ResultType = Literal[
    "starttls-not-supported",
    "certificate-host-mismatch",
    "certificate-expired",
    "certificate-not-trusted",
    "validation-failure",
    "tlsa-invalid",
    "dnssec-invalid",
    "dane-required",
    "sts-policy-fetch-error",
    "sts-policy-invalid",
    "sts-webpki-invalid",
]
RESULT_TYPES: tuple[ResultType, ...] = get_args(ResultType)
PolicyType = Literal["sts", "tlsa", "no-policy-found"]


@dataclass(frozen=True, slots=True)
class SessionResult:
    """One TLS session to one MX host under one policy: it succeeded (``result`` None) or
    failed for ``result``. ``policy_string`` is the policy as lines (MTA-STS) or records
    (TLSA); ``mx_patterns`` the MTA-STS ``mx`` patterns."""

    policy_domain: str
    policy_type: PolicyType
    result: ResultType | None = None
    policy_string: tuple[str, ...] = ()
    mx_patterns: tuple[str, ...] = ()
    receiving_mx_hostname: str = ""
    receiving_ip: str = ""
    sending_mta_ip: str = ""
    failure_reason_code: str = ""


def rfc3339(moment: datetime) -> str:
    """``2026-01-02T03:04:05Z``: the date-time form RFC 8460 §4.4 asks for, in UTC."""
    if moment.tzinfo is None:
        raise ValueError("a report's times must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_report(
    results: Iterable[SessionResult],
    *,
    organization: str,
    contact: str,
    report_id: str,
    start: datetime,
    end: datetime,
) -> dict[str, object]:
    """The RFC 8460 §4.4 report of ``results`` (one reporting period, usually one domain)."""
    by_policy: dict[tuple[PolicyType, str, tuple[str, ...], tuple[str, ...]], list[SessionResult]]
    by_policy = {}
    for result in results:
        key = (result.policy_type, result.policy_domain, result.policy_string, result.mx_patterns)
        by_policy.setdefault(key, []).append(result)
    return {
        "organization-name": organization,
        "date-range": {"start-datetime": rfc3339(start), "end-datetime": rfc3339(end)},
        "contact-info": contact,
        "report-id": report_id,
        "policies": [_policy(key, by_policy[key]) for key in sorted(by_policy)],
    }


def _policy(
    key: tuple[PolicyType, str, tuple[str, ...], tuple[str, ...]],
    results: list[SessionResult],
) -> dict[str, object]:
    policy_type, domain, policy_string, mx_patterns = key
    policy: dict[str, object] = {"policy-type": policy_type}
    if policy_string:
        policy["policy-string"] = list(policy_string)
    policy["policy-domain"] = domain
    if mx_patterns:
        policy["mx-host"] = list(mx_patterns)
    failures = [r for r in results if r.result is not None]
    entry: dict[str, object] = {
        "policy": policy,
        "summary": {
            "total-successful-session-count": len(results) - len(failures),
            "total-failure-session-count": len(failures),
        },
    }
    if failures:
        entry["failure-details"] = _failure_details(failures)
    return entry


def _failure_details(failures: list[SessionResult]) -> list[dict[str, object]]:
    counted: dict[tuple[str, str, str, str, str], int] = {}
    for f in failures:
        assert f.result is not None
        where = (
            f.result,
            f.sending_mta_ip,
            f.receiving_mx_hostname,
            f.receiving_ip,
            f.failure_reason_code,
        )
        counted[where] = counted.get(where, 0) + 1
    details = []
    for (result, sending, mx_host, ip, reason), count in sorted(counted.items()):
        detail: dict[str, object] = {"result-type": result}
        if sending:
            detail["sending-mta-ip"] = sending
        if mx_host:
            detail["receiving-mx-hostname"] = mx_host
        if ip:
            detail["receiving-ip"] = ip
        detail["failed-session-count"] = count
        if reason:
            detail["failure-reason-code"] = reason
        details.append(detail)
    return details
