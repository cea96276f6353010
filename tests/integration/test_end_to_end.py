"""The whole path on real sockets, with outcomes asserted: which host, in which order, which
status, and when (virtual time)."""

from __future__ import annotations

from sandbox import (
    Connected,
    ConnectFailed,
    DnsServed,
    HostAccepted,
    RecipientFinal,
    RunResult,
    SmtpExchange,
)
from tests.helpers import run_two_mx as run


def connections(result: RunResult) -> list[tuple[float, str, str]]:
    return [
        (e.t, e.host, "connected" if isinstance(e, Connected) else e.reason)
        for e in result.events
        if isinstance(e, Connected | ConnectFailed)
    ]


def test_refused_primary_then_backup_in_one_attempt() -> None:
    result = run({"mx1.example.test": "refuse"})
    assert connections(result) == [
        (0.0, "mx1.example.test", "refused"),
        (0.0, "mx2.example.test", "connected"),
    ]
    (row,) = result.deliveries
    assert (row.status, row.host, row.address, row.attempts, row.dsn) == (
        "delivered",
        "mx2.example.test",
        "192.0.2.11",
        1,
        "2.0.0",
    )
    accepted = [e for e in result.events if isinstance(e, HostAccepted)]
    assert [(e.host, e.recipients) for e in accepted] == [
        ("mx2.example.test", ("alice@example.test",))
    ]


def test_the_sender_asked_the_real_dns_server() -> None:
    result = run({})
    served = [(e.name, e.rdtype, e.rcode) for e in result.events if isinstance(e, DnsServed)]
    assert served[0] == ("example.test", "MX", "NOERROR")
    assert ("mx1.example.test", "A", "NOERROR") in served


def test_connect_timeout_costs_30_virtual_seconds_then_the_backup() -> None:
    result = run({"mx1.example.test": "timeout"})
    assert connections(result) == [
        (30.0, "mx1.example.test", "timeout"),
        (30.0, "mx2.example.test", "connected"),
    ]
    assert result.deliveries[0].at == 30.0


def test_silent_host_costs_the_300_second_greeting_timeout() -> None:
    result = run({"mx1.example.test": "silent"})
    assert result.deliveries[0].host == "mx2.example.test"
    assert result.deliveries[0].at == 300.0


def test_greylisting_defers_then_delivers_to_the_primary() -> None:
    result = run({"mx1.example.test": {"greylist": "5m"}, "mx2.example.test": {"greylist": "5m"}})
    (row,) = result.deliveries
    assert (row.status, row.host, row.attempts, row.at) == (
        "delivered",
        "mx1.example.test",
        2,
        300.0,
    )
    replies = [
        (e.host, e.code) for e in result.events if isinstance(e, SmtpExchange) and e.stage == "rcpt"
    ]
    assert replies == [
        ("mx1.example.test", 451),
        ("mx2.example.test", 451),
        ("mx1.example.test", 250),
    ]


def test_5xx_at_rcpt_bounces_without_failover() -> None:
    result = run({"mx1.example.test": {"rcpt": "550 5.1.1 No such user"}})
    (row,) = result.deliveries
    assert (row.status, row.dsn, row.attempts) == ("bounced", "5.1.1", 1)
    assert "550 5.1.1 No such user (in reply to RCPT TO command)" in row.reply
    assert [h for _, h, _ in connections(result)] == ["mx1.example.test"]


def test_phases_over_virtual_time() -> None:
    down_two_hours = [{"until": "2h", "do": "refuse"}, {"do": "accept"}]
    result = run({"mx1.example.test": down_two_hours, "mx2.example.test": down_two_hours})
    (row,) = result.deliveries
    assert (row.status, row.host, row.attempts, row.at) == (
        "delivered",
        "mx1.example.test",
        7,
        9000.0,
    )


def test_five_day_give_up_bounces_with_the_last_error() -> None:
    result = run({"mx1.example.test": "refuse", "mx2.example.test": "refuse"})
    (row,) = result.deliveries
    assert row.status == "bounced"
    assert row.dsn == "4.4.1"
    assert 5 * 86400 <= row.at < 5 * 86400 + 4300
    assert row.reply.endswith(" (message expired)")
    # The event keeps the last error as it was, and says why it is final beside it.
    (final,) = [e for e in result.events if isinstance(e, RecipientFinal)]
    assert final.expired
    assert row.reply == f"{final.reply} (message expired)"


def test_until_leaves_queued_messages_deferred() -> None:
    result = run({"mx1.example.test": "refuse", "mx2.example.test": "refuse"}, until="1h")
    (row,) = result.deliveries
    assert (row.status, row.dsn, row.at) == ("deferred", "4.4.1", 3600.0)
    assert row.attempts == 5  # 0:00, 0:05, 0:10, 0:20, 0:40
