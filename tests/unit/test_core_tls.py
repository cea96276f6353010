"""The TLS policy table: each MTA's documented answer to each STARTTLS step, with no socket."""

from __future__ import annotations

import pytest

from sandbox.core.classify import ServerReply
from sandbox.core.policy import PROFILES
from sandbox.core.tls import (
    LEVELS,
    TLS_RULES,
    Established,
    HandshakeFailed,
    Level,
    NotOffered,
    Offered,
    Requirement,
    StartTlsRefused,
    TlsDecision,
    TlsEvent,
    decide,
    plan_host,
)

POSTFIX = TLS_RULES["postfix"]
EXIM = TLS_RULES["exim"]
HARAKA = TLS_RULES["haraka"]
RFC = TLS_RULES["rfc5321"]
REFUSED_454 = StartTlsRefused(ServerReply(454, "4.7.0 TLS not available"))
REFUSED_554 = StartTlsRefused(ServerReply(554, "5.7.0 No TLS for you"))
GOOD = Established("TLSv1.3", "valid")


def req(level: Level) -> Requirement:
    plan = plan_host(level)
    assert isinstance(plan, Requirement)
    return plan


def action(event: TlsEvent, level: Level = "may", rules: str = "postfix", **kw: float) -> str:
    return decide(TLS_RULES[rules], req(level), event, **kw).action


# --- what each level asks --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "starttls", "required", "pkix"),
    [
        ("none", False, False, False),
        ("may", True, False, False),
        ("encrypt", True, True, False),
        ("verify", True, True, True),
        ("dane", True, False, False),  # no TLSA records: as may
    ],
)
def test_each_level_asks_what_postfix_documents(
    level: Level, starttls: bool, required: bool, pkix: bool
) -> None:
    r = req(level)
    assert (r.starttls, r.required, r.pkix, r.dane) == (starttls, required, pkix, False)


@pytest.mark.parametrize(
    ("state", "effective", "dane"),
    [
        ("usable", "dane", True),
        ("unusable", "encrypt", False),
        ("none", "may", False),
        ("insecure", "may", False),
    ],
)
def test_dane_level_follows_the_tlsa_lookup(state: str, effective: str, dane: bool) -> None:
    plan = plan_host("dane", dane=state)  # type: ignore[arg-type]
    assert isinstance(plan, Requirement)
    assert (plan.level, plan.dane) == (effective, dane)


def test_a_failed_tlsa_lookup_skips_the_host_before_connecting() -> None:
    plan = plan_host("dane", dane="error")
    assert isinstance(plan, TlsDecision)
    assert (plan.action, plan.dsn, plan.report) == ("next_host", "4.7.5", "dnssec-invalid")


def test_tlsa_records_mean_nothing_below_the_dane_level() -> None:
    plan = plan_host("may", dane="usable")
    assert isinstance(plan, Requirement) and not plan.dane and not plan.required


def test_mta_sts_enforce_skips_an_unlisted_mx_and_requires_pkix_for_listed_ones() -> None:
    skipped = plan_host("may", sts="enforce", listed=False)
    assert isinstance(skipped, TlsDecision) and skipped.action == "next_host"
    listed = plan_host("may", sts="enforce", listed=True)
    assert isinstance(listed, Requirement) and listed.required and listed.pkix


@pytest.mark.parametrize("level", ["none", "may", "encrypt"])
def test_mta_sts_enforce_raises_a_lower_level_to_verify(level: Level) -> None:
    plan = plan_host(level, sts="enforce")
    assert isinstance(plan, Requirement) and plan.level == "verify" and plan.starttls
    assert decide(POSTFIX, plan, Offered()).action == "starttls"
    assert decide(POSTFIX, plan, NotOffered()).action == "next_host"


def test_mta_sts_enforce_keeps_a_dane_requirement() -> None:
    plan = plan_host("dane", dane="usable", sts="enforce")
    assert isinstance(plan, Requirement) and (plan.level, plan.dane, plan.pkix) == (
        "dane",
        True,
        True,
    )


def test_mta_sts_testing_changes_nothing_for_an_unlisted_mx() -> None:
    plan = plan_host("may", sts="testing", listed=False)
    assert isinstance(plan, Requirement) and not plan.required and plan.sts == "testing"


# --- the steps, per MTA ------------------------------------------------------------------------


def test_level_none_never_sends_starttls() -> None:
    assert action(Offered(), "none") == "plain"


@pytest.mark.parametrize("level", [lv for lv in LEVELS if lv != "none"])
def test_an_offer_is_taken_at_every_other_level(level: Level) -> None:
    assert action(Offered(), level) == "starttls"


# (event, level) -> Postfix's action: smtp_proto.c
POSTFIX_TABLE: list[tuple[TlsEvent, Level, str, str]] = [
    (NotOffered(), "may", "plain", ""),
    (NotOffered(), "encrypt", "next_host", "4.7.4"),
    (NotOffered(), "verify", "next_host", "4.7.4"),
    (REFUSED_454, "may", "plain", ""),
    (REFUSED_554, "may", "plain", ""),
    (REFUSED_454, "encrypt", "next_host", "4.7.0"),
    (REFUSED_554, "encrypt", "bounce", "5.7.0"),
    (HandshakeFailed(), "encrypt", "next_host", "4.7.5"),
    (Established("TLSv1.3", "expired"), "may", "tls", ""),
    (Established("TLSv1.3", "self-signed"), "encrypt", "tls", ""),
    (Established("TLSv1.3", "wrong-name"), "verify", "next_host", "4.7.5"),
    (Established("TLSv1.3", "expired"), "verify", "next_host", "4.7.5"),
    (GOOD, "verify", "tls", ""),
]


@pytest.mark.parametrize(("event", "level", "expected", "dsn"), POSTFIX_TABLE)
def test_postfix(event: TlsEvent, level: Level, expected: str, dsn: str) -> None:
    decision = decide(POSTFIX, req(level), event)
    assert (decision.action, decision.dsn) == (expected, dsn)


def test_postfix_at_may_falls_back_to_plain_text_only_for_a_message_that_has_waited() -> None:
    fresh = decide(POSTFIX, req("may"), HandshakeFailed(), waited=0, min_backoff=300)
    assert (fresh.action, fresh.dsn) == ("next_host", "4.7.5")
    assert "minimal_backoff_time" in fresh.why
    old = decide(POSTFIX, req("may"), HandshakeFailed(), waited=300, min_backoff=300)
    assert (old.action, old.dsn) == ("retry_plain", "4.7.5")


def test_exim_tries_clear_text_at_once_after_a_failed_negotiation() -> None:
    assert action(HandshakeFailed(), "may", "exim", waited=0) == "retry_plain"
    assert action(REFUSED_454, "may", "exim") == "plain"
    assert action(REFUSED_554, "may", "exim") == "plain"


def test_exim_with_tls_required_tries_the_other_hosts_for_every_failure() -> None:
    for event in (NotOffered(), REFUSED_454, REFUSED_554, HandshakeFailed()):
        assert action(event, "encrypt", "exim") == "next_host"


def test_haraka_ends_the_attempt_on_a_4xx_and_bounces_on_a_5xx_to_starttls() -> None:
    assert action(REFUSED_454, "may", "haraka") == "defer"
    assert action(REFUSED_554, "may", "haraka") == "bounce"
    assert action(HandshakeFailed(), "may", "haraka", waited=1e6) == "next_host"
    assert action(Established("TLSv1.3", "self-signed"), "may", "haraka") == "tls"


def test_haraka_force_tls_defers_a_host_without_tls_or_with_a_bad_certificate() -> None:
    assert action(NotOffered(), "verify", "haraka") == "defer"
    assert action(Established("TLSv1.3", "expired"), "verify", "haraka") == "defer"


def test_rfc_profile_aborts_a_failed_handshake_and_moves_on() -> None:
    assert action(HandshakeFailed(), "may", "rfc5321", waited=1e6) == "next_host"


def test_every_profile_states_its_default_level_and_source() -> None:
    assert {name: rules.level for name, rules in TLS_RULES.items()} == {
        "postfix": "may",
        "exim": "dane",
        "haraka": "may",
        "rfc5321": "dane",
    }
    for rules in TLS_RULES.values():
        assert rules.level in rules.levels and rules.source
        assert set(rules.optional) == set(rules.required)
        # The profile a scenario gets starts at the level its rules name.
        assert PROFILES[rules.name].tls == rules.level


# --- DANE and MTA-STS on an established session ------------------------------------------------


def dane_req(**kw: object) -> Requirement:
    plan = plan_host("dane", dane="usable", **kw)  # type: ignore[arg-type]
    assert isinstance(plan, Requirement)
    return plan


def test_a_dane_match_authenticates_even_an_expired_self_signed_certificate() -> None:
    event = Established("TLSv1.3", "expired", dane="match")
    assert decide(POSTFIX, dane_req(), event).action == "tls"


def test_a_dane_mismatch_makes_the_host_unusable() -> None:
    decision = decide(POSTFIX, dane_req(), Established("TLSv1.3", "valid", dane="mismatch"))
    assert (decision.action, decision.dsn, decision.report) == (
        "next_host",
        "4.7.5",
        "tlsa-invalid",
    )


def test_no_plain_text_fallback_when_dane_applies() -> None:
    assert decide(POSTFIX, dane_req(), HandshakeFailed(), waited=1e6).action == "next_host"
    assert decide(POSTFIX, dane_req(), NotOffered()).action == "next_host"


def test_mta_sts_never_overrides_a_failing_dane_check() -> None:
    both = dane_req(sts="enforce")
    assert decide(POSTFIX, both, Established("TLSv1.3", "valid", dane="mismatch")).action == (
        "next_host"
    )


def test_mta_sts_enforce_refuses_a_certificate_that_dane_alone_would_accept() -> None:
    both = dane_req(sts="enforce")
    event = Established("TLSv1.3", "self-signed", dane="match")
    assert decide(POSTFIX, both, event).action == "next_host"


@pytest.mark.parametrize(
    ("verdict", "report"),
    [
        ("expired", "certificate-expired"),
        ("self-signed", "certificate-not-trusted"),
        ("untrusted", "certificate-not-trusted"),
        ("wrong-name", "certificate-host-mismatch"),
    ],
)
def test_mta_sts_enforce_refuses_each_bad_certificate_with_its_tlsrpt_result(
    verdict: str, report: str
) -> None:
    plan = plan_host("may", sts="enforce")
    assert isinstance(plan, Requirement)
    decision = decide(POSTFIX, plan, Established("TLSv1.3", verdict))  # type: ignore[arg-type]
    assert (decision.action, decision.report) == ("next_host", report)


def test_mta_sts_testing_reports_and_still_delivers() -> None:
    plan = plan_host("may", sts="testing")
    assert isinstance(plan, Requirement)
    decision = decide(POSTFIX, plan, Established("TLSv1.3", "expired"))
    assert (decision.action, decision.report) == ("tls", "certificate-expired")
    not_offered = decide(POSTFIX, plan, NotOffered())
    assert (not_offered.action, not_offered.report) == ("plain", "starttls-not-supported")


def test_without_a_policy_nothing_is_reported() -> None:
    for event in (NotOffered(), REFUSED_454, HandshakeFailed(), Established("TLSv1.2", "expired")):
        assert decide(POSTFIX, req("may"), event).report is None


def test_every_decision_says_why() -> None:
    events: list[TlsEvent] = [
        Offered(),
        NotOffered(),
        REFUSED_454,
        REFUSED_554,
        HandshakeFailed("EOF"),
        GOOD,
        Established("TLSv1.2", "wrong-name", dane="mismatch"),
    ]
    for rules in TLS_RULES.values():
        for level in LEVELS:
            for state in ("usable", "none"):
                plan = plan_host(level, dane=state)  # type: ignore[arg-type]
                assert isinstance(plan, Requirement)
                for event in events:
                    decision = decide(rules, plan, event)
                    assert decision.why
                    assert decision.action in (
                        "starttls",
                        "plain",
                        "tls",
                        "retry_plain",
                        "next_host",
                        "defer",
                        "bounce",
                    )
                    if decision.action in ("next_host", "defer", "bounce", "retry_plain"):
                        assert decision.dsn[:1] in ("4", "5")
