"""STARTTLS in whole scenarios: each host ``tls:`` value and the ``starttls`` stage, through the
sandbox's real TLS sockets (the world's CA, aiosmtpd hosts, our aiosmtplib sender), with the
outcome asserted: which host took the mail, over what TLS, and what the host itself saw."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox import (
    HostSession,
    RunResult,
    SmtpExchange,
    TlsChecked,
)
from tests.helpers import run_two_mx

ALICE = "alice@example.test"


def run(hosts: dict[str, Any], sender: dict[str, Any] | None = None, **extra: Any) -> RunResult:
    return run_two_mx(hosts, sender=sender or {"profile": "postfix"}, **extra)


def sessions(result: RunResult, host: str) -> list[HostSession]:
    return [e for e in result.events if isinstance(e, HostSession) and e.host == host]


def tls_steps(result: RunResult) -> list[tuple[str, str, str, str]]:
    return [
        (e.host.split(".")[0], e.step, e.outcome, e.action)
        for e in result.events
        if isinstance(e, TlsChecked)
    ]


@pytest.mark.parametrize(
    ("tls", "certificate", "verified"),
    [
        ("valid", "valid", True),
        ("expired", "expired", False),
        ("self-signed", "self-signed", False),
        ("wrong-name", "wrong-name", False),
    ],
)
def test_at_may_each_certificate_carries_the_mail_over_tls(
    tls: str, certificate: str, verified: bool
) -> None:
    result = run({"mx1.example.test": {"tls": tls}})
    (row,) = result.deliveries
    assert (row.status, row.host) == ("delivered", "mx1.example.test")
    assert row.tls in ("TLSv1.3", "TLSv1.2") and row.tls_verified is verified
    assert result.to_json()["deliveries"][0]["tls"] == {"version": row.tls, "verified": verified}
    (step,) = [e for e in result.events if isinstance(e, TlsChecked)]
    assert (step.outcome, step.certificate, step.action) == ("established", certificate, "tls")
    (seen,) = sessions(result, "mx1.example.test")
    assert seen.tls == row.tls
    lines = [line for _, side, line in seen.transcript if side == "C"]
    assert lines[:2] == ["EHLO sender.sandbox.test", "STARTTLS"]
    assert lines[2].startswith(f"<TLS: {row.tls} ")
    assert lines[3] == "EHLO sender.sandbox.test"  # again, over TLS (RFC 3207 §4.2)
    assert seen.behaviour == ("accept" if tls == "valid" else f"tls {tls}")


@pytest.mark.parametrize("tls", ["expired", "self-signed", "wrong-name"])
def test_at_verify_a_bad_certificate_sends_the_mail_to_the_backup(tls: str) -> None:
    result = run({"mx1.example.test": {"tls": tls}}, {"profile": "postfix", "tls": "verify"})
    (row,) = result.deliveries
    assert (row.status, row.host, row.tls_verified) == ("delivered", "mx2.example.test", True)
    assert tls_steps(result)[0] == ("mx1", "upgrade", "established", "next_host")
    assert result.host("mx1.example.test") is not None
    assert result.host("mx1.example.test").accepted == 0  # type: ignore[union-attr]


def test_none_offers_no_starttls_so_may_delivers_in_plain_text() -> None:
    result = run({"mx1.example.test": {"tls": "none"}})
    (row,) = result.deliveries
    assert (row.host, row.tls) == ("mx1.example.test", "")
    assert result.to_json()["deliveries"][0]["tls"] is None
    assert tls_steps(result) == [("mx1", "offer", "not_offered", "plain")]
    (seen,) = sessions(result, "mx1.example.test")
    assert not any("STARTTLS" in line for _, _, line in seen.transcript)


def test_none_at_encrypt_defers_with_4_7_4_when_no_host_offers_tls() -> None:
    hosts = {"mx1.example.test": {"tls": "none"}, "mx2.example.test": {"tls": "none"}}
    result = run(hosts, {"profile": "postfix", "tls": "encrypt"}, until="1m")
    (row,) = result.deliveries
    assert (row.status, row.dsn) == ("deferred", "4.7.4")
    assert "TLS is required, but was not offered" in row.reply


def test_handshake_failure_at_may_moves_on_then_retries_the_same_host_in_plain_text() -> None:
    hosts = {"mx1.example.test": {"tls": "handshake-failure"}, "mx2.example.test": "refuse"}
    result = run(hosts)
    (row,) = result.deliveries
    # Attempt 1: mx1's handshake breaks, the message is young: next MX (refused): deferred.
    # Attempt 2, once the message has waited minimal_backoff_time: plain text to mx1.
    assert (row.status, row.host, row.attempts, row.tls) == (
        "delivered",
        "mx1.example.test",
        2,
        "",
    )
    assert row.at == 300.0
    seen = sessions(result, "mx1.example.test")
    assert len(seen) == 3  # broken, broken again, then the plain-text retry
    assert any(line.startswith("<TLS failed") for _, _, line in seen[0].transcript)
    assert not any(line == "STARTTLS" for _, _, line in seen[2].transcript)


def test_handshake_failure_at_encrypt_never_falls_back_to_plain_text() -> None:
    broken = {"tls": "handshake-failure"}
    hosts = {"mx1.example.test": broken, "mx2.example.test": broken}
    result = run(hosts, {"profile": "postfix", "tls": "encrypt"}, until="30m")
    (row,) = result.deliveries
    assert (row.status, row.dsn) == ("deferred", "4.7.5")
    assert row.attempts > 1  # retried, every time over TLS only
    assert sum(h.accepted for h in result.hosts) == 0
    assert all(
        "STARTTLS" in [line for _, _, line in seen.transcript]
        for seen in sessions(result, "mx1.example.test")
    )


@pytest.mark.parametrize(
    ("reply", "level", "host", "tls"),
    [
        ("454 4.7.0 TLS not available", "may", "mx1.example.test", ""),
        ("454 4.7.0 TLS not available", "encrypt", "mx2.example.test", "TLSv1.3"),
        ("220 2.0.0 Go ahead", "may", "mx1.example.test", "TLSv1.3"),
    ],
)
def test_the_starttls_stage_plays_a_scripted_reply(
    reply: str, level: str, host: str, tls: str
) -> None:
    result = run({"mx1.example.test": {"starttls": reply}}, {"profile": "postfix", "tls": level})
    (row,) = result.deliveries
    assert (row.host, row.tls) == (host, tls)
    said = [e for e in result.events if isinstance(e, SmtpExchange) and e.stage == "starttls"]
    assert said[0].host == "mx1.example.test" and f"{said[0].code} {said[0].reply}" == reply


def test_the_starttls_stage_takes_delays_and_disconnects() -> None:
    slow = run({"mx1.example.test": {"delay": {"starttls": "2m"}}})
    (row,) = slow.deliveries
    assert (row.host, row.at) == ("mx1.example.test", 120.0)
    dropped = run({"mx1.example.test": {"disconnect": "starttls"}})
    (row,) = dropped.deliveries
    assert row.host == "mx2.example.test"  # no reply to STARTTLS: the next MX


def test_tls_combines_with_the_other_keys() -> None:
    result = run(
        {"mx1.example.test": {"tls": "expired", "rcpt": "451 4.3.0 later"}},
        {"profile": "postfix"},
    )
    (row,) = result.deliveries
    assert (row.host, row.tls_verified) == ("mx2.example.test", True)
    mx1 = sessions(result, "mx1.example.test")[0]
    assert mx1.tls and "RCPT TO:<alice@example.test>" in [line for _, _, line in mx1.transcript]


def test_a_phase_can_change_a_host_s_certificate() -> None:
    phases = [{"until": "1h", "do": {"tls": "expired"}}, {"do": "accept"}]
    result = run(
        {"mx1.example.test": phases, "mx2.example.test": "refuse"},
        {"profile": "postfix", "tls": "verify"},
    )
    (row,) = result.deliveries
    assert row.host == "mx1.example.test" and row.at >= 3600 and row.tls_verified


@pytest.mark.parametrize(
    ("profile", "host"),
    [("postfix", "mx2.example.test"), ("exim", "mx1.example.test"), ("haraka", "mx2.example.test")],
)
def test_each_profile_meets_a_broken_handshake_its_own_way(profile: str, host: str) -> None:
    result = run({"mx1.example.test": {"tls": "handshake-failure"}}, {"profile": profile})
    (row,) = result.deliveries
    assert (row.status, row.host) == ("delivered", host)


def test_a_level_none_sender_never_says_starttls() -> None:
    result = run({}, {"profile": "postfix", "tls": "none"})
    (row,) = result.deliveries
    assert row.tls == "" and tls_steps(result) == []


def test_tls_sessions_are_not_reused_unless_the_profile_says_so() -> None:
    six = [{"from": "bob@example.net", "to": ALICE, "count": 6}]
    postfix = run({}, messages=six)  # Postfix's smtp_tls_connection_reuse = no
    assert {(d.tls, d.tls_verified) for d in postfix.deliveries} == {("TLSv1.3", True)}
    assert len(sessions(postfix, "mx1.example.test")) == 6
    reusing = run({}, {"profile": "postfix", "tls_connection_reuse": True}, messages=six)
    assert {(d.tls, d.tls_verified) for d in reusing.deliveries} == {("TLSv1.3", True)}
    assert len(sessions(reusing, "mx1.example.test")) < 6
    plain = run({}, {"profile": "postfix", "tls": "none"}, messages=six)
    assert len(sessions(plain, "mx1.example.test")) < 6  # plain text: cached as before
