"""Sender fidelity, behaviour by behaviour, each through real DNS and real SMTP on loopback:
host order, status, DSN code and virtual times."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest

from sandbox import (
    Connected,
    ConnectFailed,
    DsnCreated,
    HostAccepted,
    HostSession,
    RecipientDeferred,
    RecipientFinal,
    RouteChosen,
    RunResult,
    SmtpExchange,
    SmtpFailure,
    Warning,
    profile_for,
    run_scenario,
    scenario_from_mapping,
)

TWO_MX = """\
$TTL 3600
@     IN MX 10 mx1
@     IN MX 20 mx2
mx1   IN A  192.0.2.10
mx2   IN A  192.0.2.11
"""


def run(
    zone: str = TWO_MX,
    hosts: dict[str, Any] | None = None,
    *,
    to: str | list[str] = "alice@example.test",
    profile: str | None = None,
    zones: dict[str, Any] | None = None,
    messages: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> RunResult:
    data: dict[str, Any] = {
        "name": "fidelity",
        "zones": zones or {"example.test": zone},
        "hosts": hosts or {},
        "messages": messages or [{"from": "bob@example.net", "to": to}],
    }
    data.update(extra)
    scenario = scenario_from_mapping(data)
    chosen = profile_for(scenario, profile) if profile else None
    return run_scenario(scenario, profile=chosen)


def tried(result: RunResult) -> list[str]:
    return [e.host for e in result.events if isinstance(e, Connected | ConnectFailed)]


def warnings(result: RunResult) -> list[str]:
    return [e.text for e in result.events if isinstance(e, Warning)]


def only(result: RunResult) -> tuple[str, str | None, str, int, float]:
    (row,) = result.deliveries
    return row.status, row.host, row.dsn, row.attempts, row.at


# --- 1. the client is itself an MX ----------------------------------------------------------


def test_a_backup_mx_sender_discards_its_own_preference_and_worse() -> None:
    result = run(
        hosts={"mx1.example.test": "refuse"}, sender={"address": "192.0.2.11"}, until="10m"
    )
    assert set(tried(result)) == {"mx1.example.test"}
    assert only(result)[0] == "deferred"
    assert not any("itself an MX" in w for w in warnings(result))  # the rule, not a fault
    (route, *_) = [e for e in result.events if isinstance(e, RouteChosen)]
    assert "records at 20 and worse are discarded (RFC 5321 §5.1)" in route.discarded


def test_the_best_mx_sending_to_itself_bounces_with_5_4_6() -> None:
    result = run(sender={"address": "192.0.2.10"})
    assert only(result)[:4] == ("bounced", None, "5.4.6", 1)
    assert tried(result) == []


# --- 2. CNAME and IP literal policies --------------------------------------------------------

ALIASED = "$TTL 3600\n@ IN MX 10 mail\nmail IN CNAME server1\nserver1 IN A 192.0.2.30\n"
LITERAL = "$TTL 3600\n@ IN MX 10 192.0.2.40.\n"


def test_mx_to_cname_followed_with_a_warning() -> None:
    result = run(ALIASED)
    assert only(result)[:2] == ("delivered", "mail.example.test")
    assert any("RFC 2181 §10.3" in w for w in warnings(result))


def test_mx_to_cname_rejected_by_policy() -> None:
    result = run(ALIASED, sender={"cname": "reject"})
    assert only(result)[:3] == ("bounced", None, "5.4.4")
    assert tried(result) == []


def test_mx_to_ip_literal_used_with_a_warning_or_rejected() -> None:
    used = run(LITERAL)
    assert only(used)[:2] == ("delivered", "192.0.2.40")
    assert any("IP address" in w for w in warnings(used))
    rejected = run(LITERAL, profile="exim")
    assert only(rejected)[0] == "bounced"
    assert tried(rejected) == []


# --- 3. null MX mixed with real records ----------------------------------------------------


def test_null_mx_beside_real_records_takes_no_mail_with_a_warning() -> None:
    zone = "@ IN MX 0 .\n@ IN MX 10 mx1\nmx1 IN A 192.0.2.10\n"
    result = run(zone)
    # Postfix reports 5.1.0; RFC 7505 registers 5.1.10, which the rfc5321 profile uses.
    assert only(result)[:4] == ("bounced", None, "5.1.0", 1)
    assert only(run(zone, profile="rfc5321"))[:4] == ("bounced", None, "5.1.10", 1)
    assert tried(result) == []
    assert any("RFC 7505" in w for w in warnings(result))


# --- 4. DNS failures -------------------------------------------------------------------------


def test_nxdomain_bounces_at_once_with_5_4_4() -> None:
    result = run(to="alice@nowhere.test")
    assert only(result) == ("bounced", None, "5.4.4", 1, 0.0)


@pytest.mark.parametrize("fault", ["servfail", "timeout"])
def test_servfail_or_timeout_defers_with_4_4_3(fault: str) -> None:
    result = run(dns={"example.test": [{"until": "20m", "do": fault}, {"do": "answer"}]})
    status, host, _, attempts, at = only(result)
    assert (status, host) == ("delivered", "mx1.example.test")
    deferrals = [e for e in result.events if isinstance(e, RecipientDeferred)]
    assert {e.dsn for e in deferrals} == {"4.4.3"}
    assert attempts == len(deferrals) + 1
    assert at >= 20 * 60


# --- 5. MX records without any address -----------------------------------------------------

NO_ADDRESS = "@ IN MX 10 mx1\n@ IN MX 20 mx2\n"


def test_mx_hosts_without_addresses_bounce_with_postfix() -> None:
    assert only(run(NO_ADDRESS))[:4] == ("bounced", None, "5.4.4", 1)


def test_mx_hosts_without_addresses_defer_with_rfc5321() -> None:
    result = run(NO_ADDRESS, profile="rfc5321", until="65m")
    status, _, dsn, attempts, _ = only(result)
    assert (status, dsn, attempts) == ("deferred", "4.4.4", 3)  # tries at 0:00, 0:30, 1:00


# --- 6. TTL caching and a zone that changes ------------------------------------------------


def moving(ttl: int) -> dict[str, Any]:
    old = f"$TTL {ttl}\n@ IN MX 10 old\nold IN A 192.0.2.10\nnew IN A 192.0.2.20\n"
    new = f"$TTL {ttl}\n@ IN MX 10 new\nold IN A 192.0.2.10\nnew IN A 192.0.2.20\n"
    return {"example.test": [{"until": "1h", "zone": old}, {"zone": new}]}


def test_a_cached_mx_outlives_the_zone_change_until_its_ttl_runs_out() -> None:
    result = run(
        zones=moving(7200),
        hosts={"old.example.test": [{"until": "1h", "do": "accept"}, {"do": "refuse"}]},
        messages=[
            {"from": "bob@example.net", "to": "alice@example.test"},
            {"from": "bob@example.net", "to": "alice@example.test", "at": "90m"},
        ],
    )
    first, second = result.deliveries
    assert (first.host, first.at) == ("old.example.test", 0.0)
    assert second.host == "new.example.test"
    assert second.at >= 7200  # the MX answer cached at 0:00 lived until 2:00
    assert "old.example.test" in [
        e.host for e in result.events if isinstance(e, ConnectFailed) and e.message == 2
    ]


def test_a_low_ttl_sees_the_new_mx_at_once() -> None:
    result = run(
        zones=moving(300),
        hosts={"old.example.test": [{"until": "1h", "do": "accept"}, {"do": "refuse"}]},
        messages=[
            {"from": "bob@example.net", "to": "alice@example.test"},
            {"from": "bob@example.net", "to": "alice@example.test", "at": "90m"},
        ],
    )
    second = result.deliveries[1]
    assert (second.host, second.at, second.attempts) == ("new.example.test", 5400.0, 1)


# --- 7. several recipients -------------------------------------------------------------------


def test_recipients_of_one_domain_share_one_transaction() -> None:
    people = ["alice@example.test", "bob@example.test", "carol@example.test"]
    result = run(to=people)
    accepted = [e for e in result.events if isinstance(e, HostAccepted)]
    assert [(e.host, e.recipients) for e in accepted] == [("mx1.example.test", tuple(people))]
    sessions = [e for e in result.events if isinstance(e, HostSession)]
    assert len(sessions) == 1


def test_a_452_to_the_101st_recipient_defers_only_the_rest() -> None:
    people = [f"user{i}@example.test" for i in range(101)]
    result = run(
        "@ IN MX 10 mx1\nmx1 IN A 192.0.2.10\n",
        {"mx1.example.test": {"max_recipients": 100}},
        to=people,
    )
    by_time: dict[float, int] = {}
    for row in result.deliveries:
        assert row.status == "delivered"
        by_time[row.at] = by_time.get(row.at, 0) + 1
    assert by_time == {0.0: 100, 300.0: 1}
    replies = [e.code for e in result.events if isinstance(e, SmtpExchange) and e.stage == "rcpt"]
    assert replies.count(452) == 1


def test_recipients_in_several_domains_are_delivered_separately() -> None:
    zones = {
        "example.test": "@ IN MX 10 mx1\nmx1 IN A 192.0.2.10\n",
        "other.test": "@ IN MX 10 mx\nmx IN A 192.0.2.50\n",
    }
    result = run(zones=zones, to=["alice@example.test", "dave@other.test"])
    accepted = sorted((e.host, e.recipients) for e in result.events if isinstance(e, HostAccepted))
    assert accepted == [
        ("mx.other.test", ("dave@other.test",)),
        ("mx1.example.test", ("alice@example.test",)),
    ]


# --- 8 and 11. the lost final dot -----------------------------------------------------------


def test_a_connection_dropped_after_the_dot_delivers_twice() -> None:
    result = run(hosts={"mx1.example.test": {"disconnect": "message"}})
    assert only(result)[:2] == ("delivered", "mx2.example.test")
    assert result.duplicates == {1: 2}
    failure = next(e for e in result.events if isinstance(e, SmtpFailure))
    assert (failure.host, failure.stage, failure.reason) == ("mx1.example.test", "message", "lost")
    (final,) = [e for e in result.events if isinstance(e, RecipientFinal)]
    assert final.unsure


def test_an_after_dot_delay_past_600_seconds_is_an_unknown_outcome() -> None:
    result = run(hosts={"mx1.example.test": {"delay": {"message": "11m"}}})
    failure = next(e for e in result.events if isinstance(e, SmtpFailure))
    assert (failure.stage, failure.reason, failure.t) == ("message", "timeout", 600.0)
    assert only(result)[:2] == ("delivered", "mx2.example.test")
    assert result.duplicates == {1: 2}
    story = " ".join(e.why for e in result.events if hasattr(e, "why"))
    assert "may arrive twice" in story


# --- 9. bounces are real messages -----------------------------------------------------------


def parse(data: bytes) -> EmailMessage:
    return message_from_bytes(data, policy=policy.default)  # type: ignore[return-value]


def delivery_status(report: EmailMessage) -> list[Any]:
    part = next(p for p in report.walk() if p.get_content_type() == "message/delivery-status")
    return part.get_payload()  # type: ignore[no-any-return]


def test_the_five_day_bounce_is_an_rfc3464_report() -> None:
    result = run(hosts={"mx1.example.test": "refuse", "mx2.example.test": "refuse"})
    (returned,) = result.returned
    assert (returned.action, returned.to, returned.via) == (
        "failed",
        "bob@example.net",
        "returned_mailbox",
    )
    report = parse(returned.data)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    per_message, per_recipient = delivery_status(report)
    assert per_message["Reporting-MTA"] == "dns; sender.sandbox.test"
    assert per_message["Arrival-Date"]
    assert per_recipient["Final-Recipient"] == "rfc822; alice@example.test"
    assert per_recipient["Action"] == "failed"
    assert per_recipient["Status"] == "4.4.1"
    # The last try was a refused connection: no session, so no remote MTA (Postfix's
    # relay=none), and the reason is the connect error.
    assert per_recipient["Remote-MTA"] is None
    assert "Connection refused" in per_recipient["Diagnostic-Code"]
    assert per_recipient["Last-Attempt-Date"]
    assert report["To"] == "bob@example.net"


def test_a_bounce_goes_through_the_senders_own_mx_when_it_is_in_the_scenario() -> None:
    zones = {
        "example.test": "@ IN MX 10 mx1\nmx1 IN A 192.0.2.10\n",
        "example.net": "@ IN MX 10 mail\nmail IN A 192.0.2.60\n",
    }
    result = run(zones=zones, hosts={"mx1.example.test": {"rcpt": "550 5.1.1 No such user"}})
    (returned,) = result.returned
    assert (returned.via, returned.status) == ("mx", "delivered")
    accepted = [e for e in result.events if isinstance(e, HostAccepted)]
    assert [(e.host, e.sender, e.recipients) for e in accepted] == [
        ("mail.example.net", "<>", ("bob@example.net",))
    ]
    assert [row.recipient for row in result.deliveries] == ["alice@example.test"]


def test_delay_warning_sends_a_delayed_dsn_once() -> None:
    result = run(
        hosts={"mx1.example.test": "refuse", "mx2.example.test": "refuse"},
        sender={"delay_warning": "4h"},
        until="10h",
    )
    created = [e for e in result.events if isinstance(e, DsnCreated)]
    assert [e.action for e in created] == ["delayed"]
    assert 4 * 3600 <= created[0].t < 5 * 3600
    (returned,) = result.returned
    (_, recipient) = delivery_status(parse(returned.data))
    assert recipient["Action"] == "delayed"
    assert recipient["Will-Retry-Until"]


# --- Postfix's destination suspension ------------------------------------------------------


def test_a_dead_destination_is_suspended_for_the_other_messages() -> None:
    """Postfix's rule (qmgr_queue.c): each site failure adds 1/window failed cohorts and
    shrinks the window; at one whole cohort the destination is dead for min_backoff. With
    the initial window of 5, the fourth failure in a row kills it (1/5 + 1/4 + 1/3 + 1/2)."""
    result = run(
        "@ IN MX 10 mx1\nmx1 IN A 192.0.2.10\n",
        {"mx1.example.test": "refuse"},
        messages=[
            {"from": "bob@example.net", "to": "alice@example.test", "count": 6},
            {"from": "bob@example.net", "to": "carol@example.test", "at": "1m"},
        ],
        until="4m",
    )
    suspended = [e for e in result.events if isinstance(e, RecipientDeferred) and e.suspended]
    # Five attempts start at once (the initial window); the sixth message waits for a slot
    # and is suspended when the fourth failure kills the destination; the seventh arrives
    # while it is dead.
    assert [(e.message, e.t) for e in suspended] == [(6, 0.0), (7, 60.0)]
    assert suspended[0].reply.startswith("delivery temporarily suspended: connect to")
    assert [e.message for e in result.events if isinstance(e, ConnectFailed)] == [1, 2, 3, 4, 5]
    # A deferral without a try is an attempt, as Postfix's log has a line for it.
    assert {d.message: d.attempts for d in result.deliveries} == dict.fromkeys(range(1, 8), 1)


def test_one_failed_message_does_not_kill_the_destination() -> None:
    result = run(
        "@ IN MX 10 mx1\nmx1 IN A 192.0.2.10\n",
        {"mx1.example.test": "refuse"},
        messages=[
            {"from": "bob@example.net", "to": "alice@example.test"},
            {"from": "bob@example.net", "to": "carol@example.test", "at": "1m"},
        ],
        until="4m",
    )
    assert not [e for e in result.events if isinstance(e, RecipientDeferred) and e.suspended]
    assert [e.message for e in result.events if isinstance(e, ConnectFailed)] == [1, 2]


# --- profiles ---------------------------------------------------------------------------------


def test_haraka_stops_at_a_4xx_greeting_without_trying_the_backup() -> None:
    result = run(
        hosts={"mx1.example.test": {"greeting": "421 4.3.2 busy"}}, profile="haraka", until="1m"
    )
    assert tried(result) == ["mx1.example.test"]
    assert only(result)[0] == "deferred"


def test_postfix_tries_the_backup_after_a_4xx_greeting() -> None:
    result = run(hosts={"mx1.example.test": {"greeting": "421 4.3.2 busy"}})
    assert tried(result) == ["mx1.example.test", "mx2.example.test"]


# --- Postfix's connection cache ------------------------------------------------------------

ONE_MX = "@ IN MX 10 mx1\nmx1 IN A 192.0.2.10\n"


def test_a_backlogged_destination_reuses_open_sessions() -> None:
    # A host without STARTTLS: Postfix caches only plain-text sessions unless
    # smtp_tls_connection_reuse is on (test_tls_scenarios covers sessions over TLS).
    result = run(
        ONE_MX,
        {"mx1.example.test": {"tls": "none"}},
        messages=[{"from": "bob@example.net", "to": "alice@example.test", "count": 60}],
    )
    assert {row.status for row in result.deliveries} == {"delivered"}
    fresh = [e for e in result.events if isinstance(e, Connected) and not e.reused]
    reused = [e for e in result.events if isinstance(e, Connected) and e.reused]
    assert len(fresh) == 20  # one per concurrent delivery (Postfix's destination limit)
    assert len(reused) == 40
    assert result.host("mx1.example.test").connections == 20  # type: ignore[union-attr]
    sessions = [e for e in result.events if isinstance(e, HostSession)]
    assert len(sessions) == 20
    rsets = [e for e in result.events if isinstance(e, SmtpExchange) and e.stage == "rset"]
    assert [e.code for e in rsets] == [250] * 40
    # Every kept session ends with QUIT once the queue is empty.
    assert all(any(line == "QUIT" for _, who, line in s.transcript if who == "C") for s in sessions)


def test_without_a_backlog_the_session_ends_with_quit() -> None:
    result = run(ONE_MX)
    assert not any(isinstance(e, Connected) and e.reused for e in result.events)
    (session,) = [e for e in result.events if isinstance(e, HostSession)]
    assert session.transcript[-2][2] == "QUIT"
