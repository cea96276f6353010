"""The TLS-RPT report (RFC 8460 §4.4): its shape, its counts, its stable order."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from sandbox.core.tlsrpt import RESULT_TYPES, SessionResult, build_report, rfc3339

START = datetime(2026, 1, 1, tzinfo=UTC)
END = START + timedelta(days=1, seconds=-1)
STS_LINES = ("version: STSv1", "mode: enforce", "mx: mx1.example.test", "max_age: 86400")


def sts(result: str | None = None, mx: str = "mx1.example.test", ip: str = "") -> SessionResult:
    return SessionResult(
        "example.test",
        "sts",
        result,  # type: ignore[arg-type]
        STS_LINES,
        ("mx1.example.test",),
        receiving_mx_hostname=mx,
        receiving_ip=ip,
        sending_mta_ip="127.0.0.1",
    )


def report(results: list[SessionResult]) -> dict[str, object]:
    return build_report(
        results,
        organization="MX Sandbox",
        contact="postmaster@sender.sandbox.test",
        report_id="primary-down-7-example.test",
        start=START,
        end=END,
    )


def test_the_report_has_rfc_8460_shape() -> None:
    body = report([sts(), sts(), sts("certificate-expired", "mx2.example.test", "192.0.2.11")])
    assert body == {
        "organization-name": "MX Sandbox",
        "date-range": {
            "start-datetime": "2026-01-01T00:00:00Z",
            "end-datetime": "2026-01-01T23:59:59Z",
        },
        "contact-info": "postmaster@sender.sandbox.test",
        "report-id": "primary-down-7-example.test",
        "policies": [
            {
                "policy": {
                    "policy-type": "sts",
                    "policy-string": list(STS_LINES),
                    "policy-domain": "example.test",
                    "mx-host": ["mx1.example.test"],
                },
                "summary": {
                    "total-successful-session-count": 2,
                    "total-failure-session-count": 1,
                },
                "failure-details": [
                    {
                        "result-type": "certificate-expired",
                        "sending-mta-ip": "127.0.0.1",
                        "receiving-mx-hostname": "mx2.example.test",
                        "receiving-ip": "192.0.2.11",
                        "failed-session-count": 1,
                    }
                ],
            }
        ],
    }
    json.dumps(body)  # plain JSON values only


def test_failures_are_counted_per_result_and_host_in_a_stable_order() -> None:
    results = [
        sts("starttls-not-supported", "mx2.example.test"),
        sts("certificate-expired", "mx1.example.test"),
        sts("starttls-not-supported", "mx2.example.test"),
    ]
    body = report(results)
    assert body == report(list(reversed(results)))
    (entry,) = body["policies"]  # type: ignore[misc]
    details = entry["failure-details"]
    assert [(d["result-type"], d["failed-session-count"]) for d in details] == [
        ("certificate-expired", 1),
        ("starttls-not-supported", 2),
    ]


def test_each_policy_is_its_own_entry_and_policies_is_always_a_list() -> None:
    tlsa = SessionResult("example.test", "tlsa", "tlsa-invalid", ("3 1 1 AB",))
    body = report([sts(), tlsa])
    kinds = [p["policy"]["policy-type"] for p in body["policies"]]  # type: ignore[attr-defined]
    assert kinds == ["sts", "tlsa"]
    assert isinstance(report([sts()])["policies"], list)


def test_a_report_without_failures_has_no_failure_details() -> None:
    (entry,) = report([sts()])["policies"]  # type: ignore[misc]
    assert "failure-details" not in entry


def test_times_are_utc_and_must_say_their_zone() -> None:
    two_hours_east = timezone(timedelta(hours=2))
    assert rfc3339(datetime(2026, 1, 1, 2, 0, tzinfo=two_hours_east)) == "2026-01-01T00:00:00Z"
    with pytest.raises(ValueError, match="timezone"):
        rfc3339(datetime(2026, 1, 1))


def test_the_result_types_are_rfc_8460s() -> None:
    assert len(RESULT_TYPES) == len(set(RESULT_TYPES)) == 11
