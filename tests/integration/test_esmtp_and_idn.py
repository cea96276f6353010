"""ESMTP extensions and internationalised mail in run mode: hosts that advertise a SIZE, no
SMTPUTF8 or no 8BITMIME, and each profile's sender doing what its MTA does with them. Every
scenario runs through real DNS and real SMTP; the assertions read what the hosts were sent."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox import (
    DnsAsked,
    HostSession,
    RunResult,
    profile_for,
    run_scenario,
    scenario_from_mapping,
)

ZONE = "$TTL 3600\n@ IN MX 10 mx1\nmx1 IN A 192.0.2.10\n"
IDN_APEX = "xn--bcher-kva.test"


def run(
    esmtp: dict[str, Any], to: str = "alice@example.test", profile: str = "postfix", **extra: Any
) -> RunResult:
    domain = to.rpartition("@")[2]
    apex = IDN_APEX if domain == "bücher.test" else domain
    scenario = scenario_from_mapping(
        {
            "name": "esmtp",
            "zones": {apex: ZONE},
            "hosts": {f"mx1.{apex}": {"esmtp": esmtp}},
            "messages": [{"from": "bob@example.net", "to": to}],
            **extra,
        }
    )
    return run_scenario(scenario, profile=profile_for(scenario, profile))


def commands(result: RunResult) -> list[str]:
    """What the sender said to the hosts, command by command."""
    return [
        line
        for e in result.events
        if isinstance(e, HostSession)
        for _, side, line in e.transcript
        if side == "C" and not line.startswith("<")
    ]


def mail_and_rcpt(result: RunResult) -> list[str]:
    return [c for c in commands(result) if c.startswith(("MAIL", "RCPT"))]


# --- SIZE ---------------------------------------------------------------------------------------


def test_postfix_does_not_send_a_message_larger_than_the_hosts_size() -> None:
    result = run({"size": 100})
    (row,) = result.deliveries
    assert (row.status, row.dsn) == ("bounced", "5.3.4")
    assert row.reply.startswith("message size ")
    assert row.reply.endswith("exceeds size limit 100 of server mx1.example.test[192.0.2.10]")
    # The SIZE that counts is the one offered over TLS (the EHLO after STARTTLS).
    assert [c.split()[0] for c in commands(result)] == ["EHLO", "STARTTLS", "EHLO", "QUIT"]


@pytest.mark.parametrize("profile", ["exim", "haraka"])
def test_exim_and_haraka_send_it_and_the_host_refuses_it_552(profile: str) -> None:
    result = run({"size": 100}, profile=profile)
    (row,) = result.deliveries
    # Exim's bounces all say 5.0.0; the host's own status stays in the reply.
    assert (row.status, row.dsn) == ("bounced", "5.0.0" if profile == "exim" else "5.3.4")
    assert "552 5.3.4 Message size exceeds fixed maximum message size" in row.reply
    (mail,) = [c for c in commands(result) if c.startswith("MAIL")]
    if profile == "exim":  # refused at MAIL: its SIZE= says it all
        assert " SIZE=" in mail
        assert "(in reply to MAIL FROM command)" in row.reply
    else:  # Haraka declares no size: refused after the content
        assert "SIZE=" not in mail
        assert "(in reply to end of DATA command)" in row.reply


def test_size_is_declared_when_offered_as_each_mta_counts_it() -> None:
    postfix = run({"size": 10240})
    exim = run({"size": 10240}, profile="exim")
    (postfix_mail,) = [c for c in commands(postfix) if c.startswith("MAIL")]
    (exim_mail,) = [c for c in commands(exim) if c.startswith("MAIL")]
    postfix_size = int(postfix_mail.rpartition("SIZE=")[2])
    exim_size = int(exim_mail.split("SIZE=")[1].split()[0])
    assert 200 < postfix_size < exim_size - 1024  # Exim adds the lines and 1024 bytes
    assert all(row.status == "delivered" for row in (*postfix.deliveries, *exim.deliveries))
    no_size = run({"size": False})
    assert [c for c in commands(no_size) if c.startswith("MAIL")] == ["MAIL FROM:<bob@example.net>"]


# --- SMTPUTF8 and international domains ------------------------------------------------------


def test_an_international_domain_is_asked_by_its_a_label_and_smtputf8_is_used() -> None:
    result = run({}, to="jörg@bücher.test")
    (row,) = result.deliveries
    assert (row.status, row.host) == ("delivered", "mx1.xn--bcher-kva.test")
    asked = [e.name for e in result.events if isinstance(e, DnsAsked) and e.rdtype == "MX"]
    assert asked == [IDN_APEX]
    mail, rcpt = mail_and_rcpt(result)
    assert mail.startswith("MAIL FROM:<bob@example.net> SIZE=")
    assert mail.endswith(" BODY=8BITMIME SMTPUTF8")  # its To: header is not ASCII
    assert rcpt == "RCPT TO:<jörg@bücher.test>"


def test_without_smtputf8_postfix_bounces_5_6_7() -> None:
    result = run({"smtputf8": False}, to="jörg@bücher.test")
    (row,) = result.deliveries
    assert (row.status, row.dsn) == ("bounced", "5.6.7")
    assert row.reply == (
        "SMTPUTF8 is required, but was not offered by host mx1.xn--bcher-kva.test[192.0.2.10]"
    )
    assert mail_and_rcpt(result) == []


def test_without_smtputf8_exim_downconverts_the_addresses() -> None:
    result = run({"smtputf8": False}, to="jörg@bücher.test", profile="exim")
    assert result.deliveries[0].status == "delivered"
    assert mail_and_rcpt(result)[1] == "RCPT TO:<xn--jrg-sna@xn--bcher-kva.test>"
    assert "SMTPUTF8" not in mail_and_rcpt(result)[0]


def test_without_smtputf8_haraka_sends_the_mailbox_as_it_is_and_the_host_refuses_it() -> None:
    result = run({"smtputf8": False}, to="jörg@bücher.test", profile="haraka")
    (row,) = result.deliveries
    assert (row.status, row.dsn) == ("bounced", "5.6.7")
    assert mail_and_rcpt(result)[1] == "RCPT TO:<jörg@xn--bcher-kva.test>"
    assert "553 5.6.7" in row.reply
    # With SMTPUTF8 offered, Haraka asks for it only for a sender that is not ASCII: the
    # host refuses the recipient that is not ASCII all the same (RFC 6531 §3.5).
    offered = run({}, to="jörg@bücher.test", profile="haraka")
    assert "SMTPUTF8" not in mail_and_rcpt(offered)[0]
    assert offered.deliveries[0].status == "bounced"


def test_a_domain_only_international_address_reaches_a_host_without_smtputf8_by_exim() -> None:
    result = run({"smtputf8": False, "8bitmime": False}, to="anna@bücher.test", profile="exim")
    assert result.deliveries[0].status == "delivered"
    assert mail_and_rcpt(result)[1] == "RCPT TO:<anna@xn--bcher-kva.test>"


# --- 8BITMIME and PIPELINING ------------------------------------------------------------------


def test_without_8bitmime_no_body_parameter_is_sent() -> None:
    result = run({"8bitmime": False}, to="jörg@bücher.test")
    assert result.deliveries[0].status == "delivered"
    (mail,) = [c for c in commands(result) if c.startswith("MAIL")]
    assert "BODY=" not in mail and mail.endswith(" SMTPUTF8")


def test_pipelining_is_advertised_when_asked() -> None:
    result = run({"pipelining": True})
    ehlo = [
        line
        for e in result.events
        if isinstance(e, HostSession)
        for _, side, line in e.transcript
        if side == "S" and line.startswith("250-")
    ]
    # Before STARTTLS, then over TLS (RFC 3207 §4.2: EHLO again); no AUTH either time.
    offered = ["250-SIZE 33554432", "250-PIPELINING", "250-8BITMIME", "250-SMTPUTF8"]
    assert ehlo == [
        "250-mx1.example.test",
        *offered,
        "250-STARTTLS",
        "250-mx1.example.test",
        *offered,
    ]
    assert result.deliveries[0].status == "delivered"
