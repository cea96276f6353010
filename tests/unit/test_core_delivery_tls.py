"""STARTTLS in the delivery attempt, driven by hand: the walk applies ``core.tls``'s decisions.

Each test answers the attempt's actions with made-up outcomes, as ``test_core_delivery``
does, with an EHLO reply that offers STARTTLS (or not) and a ``StartTls`` answered by the
core's ``Established`` / ``HandshakeFailed`` or a reply.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sandbox import PROFILES, Profile
from sandbox.core.classify import NoReply, Outcome, ServerReply
from sandbox.core.delivery import (
    Action,
    Attempt,
    Connect,
    Disconnect,
    ReadGreeting,
    Reused,
    SendCommand,
    SendMessage,
    StartTls,
    TlsOutcome,
)
from sandbox.core.mta_sts import StsPolicy
from sandbox.core.mx import Candidate
from sandbox.core.tls import Established, HandshakeFailed, TlsFacts, offers_starttls

MX1 = Candidate("mx1.example.test", "192.0.2.10", 10)
MX2 = Candidate("mx2.example.test", "192.0.2.11", 20)
OFFERS = ServerReply(250, "mx.example.test\nSIZE 10240000\nSTARTTLS\nHELP")
PLAIN = ServerReply(250, "mx.example.test\nSIZE 10240000\nHELP")
GOOD = Established("TLSv1.3", "valid")
EXPIRED = Established("TLSv1.3", "expired")
RCPT = "alice@example.test"

Answer = Outcome | TlsOutcome | Reused | None
Script = Callable[[Candidate, Action], Answer]


def host(*, ehlo: ServerReply = OFFERS, starttls: Answer = GOOD) -> Script:
    def script(candidate: Candidate, action: Action) -> Answer:
        match action:
            case Connect() | Disconnect():
                return None
            case ReadGreeting():
                return ServerReply(220, f"{candidate.host} ESMTP")
            case SendCommand(stage="ehlo"):
                return ehlo
            case StartTls():
                return starttls
            case SendCommand(stage="data"):
                return ServerReply(354, "go ahead")
            case SendMessage() | SendCommand():
                return ServerReply(250, "2.0.0 Ok")
        raise AssertionError(action)

    return script


def drive(attempt: Attempt, **by_host: Script) -> list[tuple[str, str]]:
    log: list[tuple[str, str]] = []
    candidate = attempt.candidates[0]
    while (action := attempt.next_action()) is not None:
        if isinstance(action, Connect):
            candidate = action.candidate
        step = getattr(action, "line", type(action).__name__)
        log.append((candidate.host.split(".")[0], step))
        attempt.receive(by_host.get(candidate.host.split(".")[0], host())(candidate, action))
    return log


def new(
    level: str = "may",
    profile: str = "postfix",
    *,
    facts: TlsFacts | None = None,
    waited: float = 0.0,
    **overrides: object,
) -> Attempt:
    chosen: Profile = PROFILES[profile].with_overrides({"tls": level, **overrides})
    return Attempt("bob@example.net", (RCPT,), (MX1, MX2), chosen, tls=facts, waited=waited)


def test_the_ehlo_reply_offers_starttls_by_its_keyword_lines() -> None:
    assert offers_starttls(OFFERS.text)
    assert not offers_starttls(PLAIN.text)
    assert not offers_starttls("STARTTLS.example.test\nSIZE 1")  # the first line is a name


def test_may_upgrades_then_says_ehlo_again_over_tls() -> None:
    attempt = new()
    log = drive(attempt)
    assert [step for _, step in log][:5] == [
        "Connect",
        "ReadGreeting",
        "EHLO sender.sandbox.test",
        "StartTls",
        "EHLO sender.sandbox.test",
    ]
    state = attempt.recipients[RCPT]
    assert (state.status, state.tls) == ("delivered", GOOD)
    (step,) = attempt.take_tls_steps()
    assert (step.step, step.decision.action, step.event) == ("upgrade", "tls", GOOD)


def test_may_delivers_over_an_untrusted_certificate_and_keeps_it_unverified() -> None:
    attempt = new()
    drive(attempt, mx1=host(starttls=EXPIRED))
    state = attempt.recipients[RCPT]
    assert state.host == "mx1.example.test" and state.tls == EXPIRED
    assert state.tls is not None and not state.tls.verified


def test_none_never_sends_starttls_and_tells_nothing() -> None:
    attempt = new("none")
    log = drive(attempt)
    assert "StartTls" not in [step for _, step in log]
    assert attempt.recipients[RCPT].tls is None and attempt.take_tls_steps() == []


def test_may_without_an_offer_goes_on_in_plain_text_and_says_so() -> None:
    attempt = new()
    drive(attempt, mx1=host(ehlo=PLAIN))
    assert attempt.recipients[RCPT].status == "delivered"
    (step,) = attempt.take_tls_steps()
    assert (step.step, step.decision.action) == ("offer", "plain")


def test_encrypt_without_an_offer_moves_on_with_4_7_4_as_a_site_failure() -> None:
    attempt = new("encrypt")
    drive(attempt, mx1=host(ehlo=PLAIN), mx2=host(ehlo=PLAIN))
    state = attempt.recipients[RCPT]
    assert (state.status, state.dsn) == ("pending", "4.7.4")
    assert state.reply.startswith("TLS is required, but was not offered by host mx2")
    report = attempt.report()
    assert report.site_failure is not None and len(report.failed_hosts) == 2
    notes = [n for n in attempt.take_notes() if n.action == "next_host"]
    assert notes[0].why.endswith("try the next host, mx2.example.test[192.0.2.11]")


def test_postfix_may_after_a_failed_handshake_moves_on_while_the_message_is_young() -> None:
    attempt = new(waited=0.0)
    log = drive(attempt, mx1=host(starttls=HandshakeFailed("reset")))
    assert [h for h, step in log if step == "Connect"] == ["mx1", "mx2"]
    assert attempt.recipients[RCPT].host == "mx2.example.test"


def test_postfix_may_after_a_failed_handshake_retries_in_plain_text_once_old_enough() -> None:
    attempt = new(waited=300.0, min_backoff=300.0)
    log = drive(attempt, mx1=host(starttls=HandshakeFailed("reset")))
    connects = [h for h, step in log if step == "Connect"]
    assert connects == ["mx1", "mx1"]
    second = log[[i for i, e in enumerate(log) if e == ("mx1", "Connect")][1] :]
    assert "StartTls" not in [step for _, step in second]
    state = attempt.recipients[RCPT]
    assert (state.status, state.host, state.tls) == ("delivered", "mx1.example.test", None)
    assert any(n.action == "retry_plain" for n in attempt.take_notes())


def test_the_plain_retry_connects_with_its_own_cache_key_and_counts_as_one_session() -> None:
    attempt = new(waited=1e6, max_sessions=1)
    keys: list[str] = []
    while (action := attempt.next_action()) is not None:
        if isinstance(action, Connect):
            keys.append(action.tls)
        answer = host(starttls=HandshakeFailed("x"))(MX1, action)
        attempt.receive(answer)
    assert keys == ["may", "plain"]
    assert attempt.recipients[RCPT].status == "delivered"


def test_exim_falls_back_to_plain_text_at_once_and_haraka_moves_on() -> None:
    exim = new("may", "exim")
    drive(exim, mx1=host(starttls=HandshakeFailed("x")))
    assert exim.recipients[RCPT].host == "mx1.example.test"
    haraka = new("may", "haraka")
    drive(haraka, mx1=host(starttls=HandshakeFailed("x")))
    assert haraka.recipients[RCPT].host == "mx2.example.test"


@pytest.mark.parametrize(("profile", "status"), [("postfix", "delivered"), ("haraka", "pending")])
def test_a_4xx_to_starttls_is_plain_text_for_postfix_and_ends_haraka_s_attempt(
    profile: str, status: str
) -> None:
    attempt = new("may", profile)
    log = drive(attempt, mx1=host(starttls=ServerReply(454, "4.7.0 TLS not available")))
    assert attempt.recipients[RCPT].status == status
    if profile == "haraka":
        assert "mx2" not in {h for h, _ in log}


def test_a_5xx_to_starttls_at_encrypt_bounces() -> None:
    attempt = new("encrypt")
    drive(attempt, mx1=host(starttls=ServerReply(554, "5.7.0 no")))
    state = attempt.recipients[RCPT]
    assert (state.status, state.dsn) == ("bounced", "5.7.0")
    assert state.reply == (
        "TLS is required, but host mx1.example.test[192.0.2.10] refused to start TLS: 554 5.7.0 no"
    )


def test_no_reply_to_starttls_is_the_starttls_stage_s_failure() -> None:
    attempt = new()
    drive(attempt, mx1=host(starttls=NoReply("timeout")))
    state = attempt.recipients[RCPT]
    assert state.host == "mx2.example.test" and state.status == "delivered"


def test_verify_refuses_an_untrusted_certificate_with_4_7_5() -> None:
    attempt = new("verify")
    drive(attempt, mx1=host(starttls=EXPIRED), mx2=host(starttls=EXPIRED))
    state = attempt.recipients[RCPT]
    assert (state.status, state.dsn) == ("pending", "4.7.5")
    assert state.reply.startswith("Server certificate not verified")


def test_dane_asks_the_shell_for_a_dane_verdict_and_a_mismatch_rules_the_host_out() -> None:
    facts = TlsFacts(dane={"mx1.example.test": "usable", "mx2.example.test": "usable"})
    attempt = new("dane", facts=facts)
    mismatch = Established("TLSv1.3", "valid", "mismatch")
    dane_flags: list[bool] = []

    def watch(candidate: Candidate, action: Action) -> Answer:
        if isinstance(action, StartTls):
            dane_flags.append(action.dane)
        return host(starttls=mismatch if candidate is MX1 else GOOD)(candidate, action)

    drive(attempt, mx1=watch, mx2=watch)
    assert dane_flags == [True, True]
    # mx2 "matched" only PKIX: still no DANE match, so it is unusable too.
    state = attempt.recipients[RCPT]
    assert (state.status, state.dsn) == ("pending", "4.7.5")
    results = [s.decision.report for s in attempt.take_tls_steps()]
    assert results == ["tlsa-invalid", "tlsa-invalid"]


def test_mta_sts_enforce_skips_an_unlisted_host_before_connecting() -> None:
    policy = StsPolicy("enforce", 86400, ("mx1.example.test",))
    attempt = new(facts=TlsFacts(policy=policy))
    log = drive(attempt, mx1=host(ehlo=PLAIN))
    assert {h for h, _ in log} == {"mx1"}
    state = attempt.recipients[RCPT]
    assert (state.status, state.dsn, state.host) == ("pending", "4.7.5", "mx2.example.test")
    steps = attempt.take_tls_steps()
    assert [(s.host, s.step) for s in steps] == [
        ("mx1.example.test", "offer"),
        ("mx2.example.test", "skip"),
    ]
    # Every host ruled out or failed: a deferral, not "no host due" (Exim's retry times).
    assert attempt.report().untried is None


def test_mta_sts_testing_delivers_over_a_bad_certificate_and_reports_it() -> None:
    policy = StsPolicy("testing", 86400, ("mx1.example.test",))
    attempt = new(facts=TlsFacts(policy=policy))
    drive(attempt, mx1=host(starttls=EXPIRED))
    assert attempt.recipients[RCPT].status == "delivered"
    (step,) = attempt.take_tls_steps()
    assert (step.decision.action, step.decision.report) == ("tls", "certificate-expired")


def test_a_reused_session_keeps_its_tls() -> None:
    attempt = new()
    while (action := attempt.next_action()) is not None:
        answer = Reused(tls=GOOD) if isinstance(action, Connect) else host()(MX1, action)
        attempt.receive(answer)
    assert attempt.recipients[RCPT].tls == GOOD
