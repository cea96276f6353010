"""The conformance suite without a socket: the catalogue's shape, each case's world, the judges
on hand-made observations, the command template, the DSN reader, the router's routing, and
the reports (JSON, JUnit XML against a schema, HTML)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from sandbox.conform.catalogue import CATALOGUE, by_id, select
from sandbox.conform.html import render_html
from sandbox.conform.junit import render_junit
from sandbox.conform.model import CaseResult, DnsQuery, Returned, info, scores
from sandbox.conform.reports import render_text, to_json
from sandbox.conform.router import DnsRouter
from sandbox.conform.runner import (
    CommandTarget,
    Report,
    _dsn_of,
    message_bytes,
    scenario_mapping,
)
from sandbox.core.policy import PROFILES
from sandbox.errors import NotInSandbox
from sandbox.scenario.load import scenario_from_mapping
from sandbox.sender.oneshot import LoopbackNetwork, scaled_profile
from tests.conform.helpers import (
    DELIVERY,
    TEMPFAIL_AT_RCPT,
    observe,
    session,
    validate_junit,
)

# --- the catalogue ----------------------------------------------------------------------------


def test_the_catalogue_has_at_least_30_cases_each_with_clause_level_and_lesson() -> None:
    ids = [case.id for case in CATALOGUE]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 30
    for case in CATALOGUE:
        assert re.fullmatch(r"[a-z0-9-]+", case.id), case.id
        assert case.clause.startswith("RFC "), case.id
        assert case.level in ("MUST", "SHOULD", "profile")
        assert case.note and case.title, case.id
    levels = {case.level for case in CATALOGUE}
    assert levels == {"MUST", "SHOULD", "profile"}


@pytest.mark.parametrize("case", CATALOGUE, ids=lambda c: c.id)
def test_every_case_world_is_a_valid_scenario(case: object) -> None:
    from sandbox.conform.model import Case

    assert isinstance(case, Case)
    scenario = scenario_from_mapping(scenario_mapping(case))
    names = {r.name for zone in scenario.zones for r in zone.phases.phases[0].value.records}
    assert f"returns.{case.domain}" in names  # the bounce host is in every world


def test_cases_are_picked_by_glob() -> None:
    assert [c.id for c in select(("failover-451-*",))] == [
        f"failover-451-{s}" for s in ("ehlo", "mail", "rcpt", "data", "message")
    ]
    assert select(()) == CATALOGUE
    assert by_id("null-mx").level == "MUST"


def test_a_message_is_padded_to_the_case_size_and_carries_its_id() -> None:
    case = by_id("size-limit")
    data = message_bytes(case, 1, "bob@a.test", ("alice@b.test",), "<1.x.y@conform.test>")
    assert len(data) >= case.size
    assert b"Message-ID: <1.x.y@conform.test>\r\n" in data


# --- the judges ---------------------------------------------------------------------------------


def test_mx_order_passes_only_when_the_lowest_preference_comes_first() -> None:
    case = by_id("mx-order")
    good = observe(case, sessions=(session("mx1", *DELIVERY),), stored=(("mx1", 0.01),))
    assert case.judge(good).verdict == "pass"
    bad = observe(case, sessions=(session("mx3", *DELIVERY),), stored=(("mx3", 0.01),))
    judged = case.judge(bad)
    assert judged.verdict == "fail"
    assert "mx3" in judged.detail and "preference 10" in judged.detail


def test_failover_fails_a_sender_that_defers_or_bounces_instead() -> None:
    case = by_id("failover-451-rcpt")
    tried = session("mx1", *TEMPFAIL_AT_RCPT)
    deferred = observe(case, status="deferred", exit_code=75, sessions=(tried,))
    assert case.judge(deferred).verdict == "fail"
    assert "mx2 was never tried" in case.judge(deferred).detail
    bounced = observe(case, status="failed", exit_code=69, sessions=(tried,))
    assert "returned instead of tried at mx2" in case.judge(bounced).detail
    moved = observe(
        case,
        sessions=(tried, session("mx2", *DELIVERY, opened=0.1)),
        stored=(("mx2", 0.11),),
    )
    assert case.judge(moved).verdict == "pass"


def test_no_failover_after_a_5xx() -> None:
    case = by_id("no-failover-550-rcpt")
    rejected = session("mx1", *DELIVERY[:6], ("S", "550 5.1.1 no"))
    bounced = observe(case, status="failed", exit_code=69, sessions=(rejected,))
    assert case.judge(bounced).verdict == "pass"
    again = observe(
        case,
        sessions=(rejected, session("mx2", *DELIVERY, opened=0.1)),
        stored=(("mx2", 0.11),),
    )
    judged = case.judge(again)
    assert judged.verdict == "fail" and "tried mx2 too" in judged.detail
    kept = observe(case, status="deferred", exit_code=75, sessions=(rejected,))
    assert "keeps the message" in case.judge(kept).detail


def test_equal_preference_spread_uses_an_exact_binomial_test() -> None:
    case = by_id("equal-preference-spread")
    even = tuple(("mx1" if i % 2 else "mx2", i / 100) for i in range(24))
    assert case.judge(observe(case, stored=even)).verdict == "pass"
    biased = tuple(("mx1", i / 100) for i in range(24))
    judged = case.judge(observe(case, stored=biased))
    assert judged.verdict == "fail" and "mx1 24, mx2 0 of 24" in judged.detail
    # 3 of 24 is rare but possible for a fair sender: it is not called a bias.
    uneven = tuple(("mx1" if i < 21 else "mx2", i / 100) for i in range(24))
    assert case.judge(observe(case, stored=uneven)).verdict == "pass"


def test_implicit_mx_after_nxdomain_is_caught_from_the_dns_queries() -> None:
    case = by_id("no-implicit-mx-on-nxdomain")
    name = f"nowhere.{case.domain}."
    mx = DnsQuery(0.01, name, "MX", "NXDOMAIN", 0, "udp")
    a = DnsQuery(0.02, name, "A", "NXDOMAIN", 0, "udp")
    assert case.judge(observe(case, status="failed", exit_code=69, queries=(mx,))).verdict == (
        "pass"
    )
    judged = case.judge(observe(case, status="failed", exit_code=69, queries=(mx, a)))
    assert judged.verdict == "fail" and "asked A" in judged.detail


def test_null_mx_must_not_fall_back_to_the_a_record() -> None:
    case = by_id("null-mx")
    assert case.judge(observe(case, status="failed", exit_code=69)).verdict == "pass"
    fallback = observe(case, sessions=(session("@", *DELIVERY),), stored=(("@", 0.01),))
    judged = case.judge(fallback)
    assert judged.verdict == "fail" and "null MX" in judged.detail


def test_retry_cases_are_informational_for_a_one_shot_command() -> None:
    for case_id in ("retry-after-4xx", "retry-interval", "give-up"):
        case = by_id(case_id)
        judged = case.judge(observe(case, status="deferred", exit_code=75))
        assert judged.verdict == "info" and "keeps a queue" in judged.detail


def test_the_retry_interval_is_measured_in_the_senders_scaled_time() -> None:
    case = by_id("retry-interval")
    first = session("mx1", *TEMPFAIL_AT_RCPT, opened=0.0)
    soon = session("mx1", *TEMPFAIL_AT_RCPT, opened=6.0)
    late = session("mx1", *TEMPFAIL_AT_RCPT, opened=18.0)
    queued = {"status": "running", "exit_code": None, "mode": "queue", "time_scale": 100.0}
    judged = case.judge(observe(case, sessions=(first, soon), **queued))  # type: ignore[arg-type]
    assert judged.verdict == "fail" and "10.0 min" in judged.detail
    judged = case.judge(observe(case, sessions=(first, late), **queued))  # type: ignore[arg-type]
    assert judged.verdict == "pass" and "30.0 min" in judged.detail


def test_no_retry_is_a_failure_only_when_the_case_outlasted_30_scaled_minutes() -> None:
    case = by_id("retry-after-4xx")
    once = (session("mx1", *TEMPFAIL_AT_RCPT),)
    short = observe(case, status="running", exit_code=None, mode="queue", sessions=once)
    assert case.judge(short).verdict == "info"  # 30 s of real time: too short to tell
    long = replace(short, time_scale=100.0)
    assert case.judge(long).verdict == "fail"
    gave_back = observe(case, status="deferred", exit_code=75, mode="queue", sessions=once)
    assert "after one try" in case.judge(gave_back).detail


def test_giving_up_is_judged_against_four_days() -> None:
    case = by_id("give-up")
    early = observe(case, status="failed", exit_code=69, mode="queue", time_scale=100.0, ended=10.0)
    assert case.judge(early).verdict == "fail"
    late = observe(
        case, status="failed", exit_code=69, mode="queue", time_scale=20000.0, ended=20.0
    )
    assert case.judge(late).verdict == "pass"


def test_lost_dot_fails_a_sender_that_calls_it_delivered() -> None:
    case = by_id("lost-dot")
    dropped = session("mx1", *DELIVERY[:-1])
    claimed = observe(case, sessions=(dropped,), stored=(("mx1", 0.01),))
    judged = case.judge(claimed)
    assert judged.verdict == "fail" and "without a 250" in judged.detail
    again = observe(
        case,
        sessions=(dropped, session("mx2", *DELIVERY, opened=0.1)),
        stored=(("mx1", 0.01), ("mx2", 0.11)),
    )
    assert case.judge(again).verdict == "pass"
    # An MTA's copy at mx1 is no claim of its own: with a retry it passes, without one
    # inside 30 scaled minutes nothing can be said.
    mta = observe(
        case,
        status="running",
        exit_code=None,
        mode="smtp",
        sessions=(dropped,),
        stored=(("mx1", 0.01),),
    )
    assert case.judge(mta).verdict == "info"


def test_the_self_cases_fail_a_sender_that_talks_to_itself() -> None:
    case = by_id("self-backup-mx")
    itself = session("self", *DELIVERY)
    judged = case.judge(observe(case, sessions=(itself,), stored=(("self", 0.01),)))
    assert judged.verdict == "fail" and "MX 20 and 30 must be discarded" in judged.detail
    assert case.judge(observe(case, status="deferred", exit_code=75)).verdict == "pass"


def test_profile_cases_are_always_informational() -> None:
    for case in CATALOGUE:
        if case.level != "profile":
            continue
        for status, code in (("delivered", 0), ("failed", 69), ("deferred", 75)):
            judged = case.judge(observe(case, status=status, exit_code=code))  # type: ignore[arg-type]
            assert judged.verdict == "info", case.id


# --- the runner's pieces -------------------------------------------------------------------


def test_the_command_template_fills_placeholders_word_by_word() -> None:
    target = CommandTarget("send --dns {dns} --to {to} --port={smtp_port} '{x}' --self {self}")
    argv = target.argv({"dns": "127.0.0.1:53", "to": "a@x,b@y", "smtp_port": "25"})
    assert argv == [
        "send",
        "--dns",
        "127.0.0.1:53",
        "--to",
        "a@x,b@y",
        "--port=25",
        "{x}",
        "--self",
        "{self}",
    ]
    assert target.takes_self
    with pytest.raises(ValueError, match="DNS server"):
        CommandTarget("send --to {to} --smtp-port {smtp_port}")
    with pytest.raises(ValueError, match="smtp_port"):
        CommandTarget("send --dns {dns} --to {to}")
    with pytest.raises(ValueError, match="split"):
        CommandTarget("send 'unclosed")


def test_a_bounce_is_read_whatever_mta_wrote_it() -> None:
    dsn = (
        b"From: MAILER-DAEMON@relay.test\r\nContent-Type: multipart/report; "
        b'report-type=delivery-status; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; relay\r\n\r\n"
        b"Final-Recipient: rfc822; alice@x.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        b"--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        b"Message-ID: <3.null-mx.a1b2c3@conform.mxsandbox.test>\r\n--b--\r\n"
    )
    (returned,) = _dsn_of(1.5, dsn)
    assert returned == Returned(
        1.5, "failed", "5.1.1", ("<3.null-mx.a1b2c3@conform.mxsandbox.test>",)
    )
    assert _dsn_of(0.0, b"Subject: hello\r\n\r\nnot a report\r\n") == []


def test_the_router_sends_a_name_to_the_longest_domain_that_holds_it() -> None:
    router = DnsRouter()
    router.add("a.test", ("127.0.0.1", 1001))
    router.add("b.a.test", ("127.0.0.1", 1002))
    assert router.route("mx1.b.a.test.") == ("127.0.0.1", 1002)
    assert router.route("MX1.A.TEST") == ("127.0.0.1", 1001)
    assert router.route("a.test") == ("127.0.0.1", 1001)
    assert router.route("elsewhere.test") is None
    router.remove("b.a.test")
    assert router.route("mx1.b.a.test") == ("127.0.0.1", 1001)


def test_the_router_tells_late_questions_from_names_no_case_serves() -> None:
    """A real MTA keeps the mail of a case that ended while it was queued, and asks about it
    again later: that is not a name outside every case, and the report says so apart."""
    import dnslib

    router = DnsRouter()
    router.add("servfail.test", ("127.0.0.1", 1001))
    router.remove("servfail.test")
    for name, rdtype in (("returns.servfail.test", "MX"), ("elsewhere.test", "A")):
        server, reply = router._target(bytes(dnslib.DNSRecord.question(name, rdtype).pack()))
        assert server is None and reply is not None
        assert dnslib.DNSRecord.parse(reply).header.rcode == dnslib.RCODE.NXDOMAIN
    assert router.late == [("servfail.test", "returns.servfail.test", "MX")]
    assert router.unrouted == [("elsewhere.test", "A")]


def test_mxsandbox_send_never_leaves_loopback() -> None:
    network = LoopbackNetwork(2525)
    assert network.socket_for("127.0.0.7") == ("127.0.0.7", 2525)
    assert network.socket_for("::ffff:127.0.0.7") == ("127.0.0.7", 2525)
    for outside in ("8.8.8.8", "2001:4860::1", "192.0.2.10", "not an address"):
        with pytest.raises(NotInSandbox, match="never leaves loopback"):
            network.socket_for(outside)
        assert outside not in network


def test_time_scale_divides_every_timer_of_a_profile() -> None:
    exim = scaled_profile(PROFILES["exim"], 100)
    assert exim.connect_timeout == PROFILES["exim"].connect_timeout / 100
    assert exim.max_lifetime == PROFILES["exim"].max_lifetime / 100
    assert exim.retry_rules[0].interval == PROFILES["exim"].retry_rules[0].interval / 100
    assert scaled_profile(PROFILES["postfix"], 1) is PROFILES["postfix"]
    floored = scaled_profile(PROFILES["postfix"], 100, timeout_floor=1.0)
    assert floored.connect_timeout == 1.0  # 30 s / 100 would be 0.3 s
    assert floored.greeting_timeout == 3.0  # above the floor: scaled
    assert floored.min_backoff == 3.0  # not a timeout: scaled


# --- the reports ----------------------------------------------------------------------------------


def _report() -> Report:
    mx_order = by_id("mx-order")
    nasty = 'evil \x1b[31m <&> "quoted" \x00 byte'
    failed = observe(
        mx_order,
        sessions=(session("mx3", *DELIVERY),),
        stored=(("mx3", 0.01),),
    )
    failed = replace(failed, runs=(replace(failed.runs[0], output=nasty),))
    results = [
        CaseResult(mx_order, mx_order.judge(failed), failed, 0.5),
        CaseResult(
            by_id("null-mx"),
            by_id("null-mx").judge(observe(by_id("null-mx"), status="failed", exit_code=69)),
            None,
            0.2,
        ),
        CaseResult(by_id("size-limit"), info("not run: no esmtp"), None, 0.0, pending="no"),
        CaseResult(by_id("mx-cname"), info("followed"), None, 0.1),
    ]
    return Report(
        tuple(results),
        "node x.mjs",
        "command",
        1.0,
        30.0,
        "2026-01-01T00:00:00+00:00",
        1.25,
        label="test",
    )


def test_the_json_report_has_the_documented_keys() -> None:
    data = json.loads(json.dumps(to_json(_report())))
    case = data["cases"][0]
    assert {"id", "clause", "level", "verdict", "evidence"} <= set(case)
    assert case["verdict"] == "fail" and case["clause"] == "RFC 5321 §5.1"
    evidence = case["evidence"]
    assert evidence["sessions"][0]["host"] == "mx3.mx-order.test"
    assert evidence["world"]["zone"].startswith("@    MX 20 mx2")
    assert any("mx3.mx-order.test" in row["what"] for row in evidence["timeline"])
    assert data["summary"]["MUST"] == {"pass": 1, "fail": 1, "info": 0, "total": 2}
    assert scores(_report().results)["profile"]["info"] == 1


def test_junit_xml_validates_and_reads_back_with_the_right_counts(tmp_path: Path) -> None:
    text = render_junit(to_json(_report()))
    suites = validate_junit(text, tmp_path)
    (suite,) = list(suites)
    assert (suite.tests, suite.failures, suite.skipped, suite.errors) == (4, 1, 2, 0)
    cases = {case.name: case for case in suite}
    assert cases["mx-order"].classname == "conform.MUST"
    (failure,) = cases["mx-order"].result
    assert failure.type == "RFC 5321 §5.1" and "mx3" in failure.message
    assert "\x1b" not in text and "\x00" not in text


def test_the_text_report_names_the_clause_and_the_evidence_of_a_failure() -> None:
    text = render_text(_report())
    assert "FAIL  MUST    mx-order" in text and "RFC 5321 §5.1" in text
    assert "mx3.mx-order.test" in text
    assert "MUST     1/2 passed" in text


def test_the_html_report_has_a_section_per_case() -> None:
    page = render_html(to_json(_report()))
    assert page.count('data-case="') == 4
    assert 'id="case-mx-order"' in page and 'data-verdict="fail"' in page
    assert "<script>" in page and "&lt;&amp;&gt;" in page  # the command output, escaped
