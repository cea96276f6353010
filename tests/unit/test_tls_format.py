"""The TLS parts of the scenario format, with no socket: the keys the loader reads (host
``tls:``, the ``starttls`` stage, ``mta_sts:``, ``dnssec:``, the sender's ``tls`` and
``mta_sts``, the ``tls`` and ``tls_report`` expectations), each mistake at its line; the
lint's TLS findings; the AD bit of the authority; the transcript's TLS line."""

from __future__ import annotations

import textwrap

import dnslib
import pytest

from sandbox import ScenarioError, load_scenario_text
from sandbox.dns.server import Authority
from sandbox.dns.zone import parse_zone
from sandbox.hosts.transcript import session_outline
from sandbox.scenario.lint import lint_scenario
from sandbox.scenario.model import (
    Behaviour,
    DeliveryExpectation,
    Reply,
    Scenario,
    TlsReportExpectation,
)
from sandbox.tls.certificates import host_key
from sandbox.tls.dane import association_of_key

BASE = """\
name: tls
zones:
  example.test: |
    $TTL 3600
    @        IN MX 10 mx1
    mx1      IN A  192.0.2.10
    mta-sts  IN A  192.0.2.80
    _mta-sts IN TXT "v=STSv1; id=1;"
messages:
  - {from: bob@example.net, to: alice@example.test}
"""


def load(extra: str) -> Scenario:
    return load_scenario_text(BASE + textwrap.dedent(extra), "tls.yaml")


def refused(extra: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as caught:
        load(extra)
    return caught.value


# --- hosts -------------------------------------------------------------------------------------


def test_tls_is_a_behaviour_key_that_combines_with_the_others() -> None:
    scenario = load("hosts:\n  mx1.example.test: {tls: expired, rcpt: '451 4.3.0 later'}\n")
    behaviour = scenario.hosts["mx1.example.test"].initial
    assert behaviour == Behaviour(replies={"rcpt": Reply(451, "4.3.0 later")}, tls="expired")
    assert behaviour.describe() == "rcpt→451, tls expired"
    assert Behaviour().tls == "valid" and Behaviour().describe() == "accept"


def test_a_host_tls_value_outside_the_list_is_refused_at_its_line() -> None:
    error = refused("hosts:\n  mx1.example.test: {tls: expird}\n")
    assert error.line == 12 and "did you mean 'expired'" in str(error)


def test_the_starttls_stage_takes_a_reply_a_delay_and_a_disconnect() -> None:
    scenario = load(
        """\
        hosts:
          mx1.example.test:
            starttls: "454 4.7.0 TLS not available"
            delay: {starttls: 10s}
        """
    )
    behaviour = scenario.hosts["mx1.example.test"].initial
    assert behaviour.replies["starttls"] == Reply(454, "4.7.0 TLS not available")
    assert behaviour.delays == {"starttls": 10.0}
    assert load("hosts: {mx1.example.test: {disconnect: starttls}}\n").hosts[
        "mx1.example.test"
    ].initial.disconnect == ("starttls")


def test_starttls_takes_only_220_as_a_positive_reply() -> None:
    error = refused('hosts: {mx1.example.test: {starttls: "250 ok"}}\n')
    assert "cannot answer STARTTLS" in str(error) and "220" in str(error)


# --- the sender --------------------------------------------------------------------------------


def test_the_sender_takes_a_tls_level_and_mta_sts() -> None:
    scenario = load("sender: {profile: postfix, tls: verify, mta_sts: honor}\n")
    assert scenario.sender.overrides == {"tls": "verify", "mta_sts": "honor"}


def test_a_level_the_profile_s_mta_lacks_is_refused() -> None:
    error = refused("sender: {profile: haraka, tls: dane}\n")
    assert "the haraka profile has no TLS level dane" in str(error)
    assert "none, may, verify" in str(error)


# --- mta_sts and dnssec ------------------------------------------------------------------------


def test_mta_sts_policies_load_and_a_bad_one_points_at_its_line() -> None:
    good = "version: STSv1\n    mode: testing\n    mx: mx1.example.test\n    max_age: 600\n"
    scenario = load(f"mta_sts:\n  example.test: |\n    {good}")
    assert scenario.mta_sts == {"example.test": good.replace("    ", "")}
    error = refused(
        """\
        mta_sts:
          example.test: |
            version: STSv1
            mode: enforced
            mx: mx1.example.test
            max_age: 600
        """
    )
    assert error.line == 14 and "mode is 'enforced'" in str(error) and "policy line 2" in str(error)


def test_a_policy_for_a_domain_outside_every_zone_is_refused() -> None:
    error = refused('mta_sts: {other.test: "version: STSv1\\nmode: none\\nmax_age: 1\\n"}\n')
    assert "other.test is in no zone" in str(error)


def test_dnssec_lists_zones_of_the_scenario() -> None:
    assert load("dnssec: [example.test]\n").dnssec == frozenset({"example.test"})
    error = refused("dnssec: [exmple.test]\n")
    assert "not a zone of this scenario" in str(error) and "example.test" in str(error)


# --- expectations ------------------------------------------------------------------------------


def test_a_delivery_expectation_takes_tls() -> None:
    scenario = load("expect:\n  - {message: 1, tls: verified}\n")
    assert scenario.expect == (DeliveryExpectation(1, tls="verified", line=12),)
    assert "plain, encrypted, verified, unverified" in str(
        refused("expect:\n  - {message: 1, tls: yes please}\n")
    )


def test_a_tls_report_expectation() -> None:
    scenario = load(
        "expect:\n  - {tls_report: example.test, failures: 1, result: certificate-expired}\n"
    )
    assert scenario.expect == (
        TlsReportExpectation("example.test", None, 1, "certificate-expired", line=12),
    )
    error = refused("expect:\n  - {tls_report: example.test, result: expired}\n")
    assert "TLS-RPT result type" in str(error) and "certificate-expired" in str(error)


# --- the lint ----------------------------------------------------------------------------------


def rules(scenario: Scenario) -> list[tuple[str, int | None]]:
    return [(f.rule, f.line) for f in lint_scenario(scenario) if f.rule.startswith(("mta", "tls"))]


def test_check_warns_of_a_policy_without_its_record_or_its_host() -> None:
    zone = BASE.replace('    _mta-sts IN TXT "v=STSv1; id=1;"\n', "").replace(
        "    mta-sts  IN A  192.0.2.80\n", ""
    )
    text = zone + 'mta_sts: {example.test: "version: STSv1\\nmode: none\\nmax_age: 1\\n"}\n'
    assert rules(load_scenario_text(text)) == [("mta-sts-record", 4), ("mta-sts-host", 4)]


def test_check_warns_of_a_record_without_a_policy() -> None:
    assert rules(load("")) == [("mta-sts-policy", 8)]


def test_check_warns_of_tlsa_outside_dnssec_unusable_and_mismatched() -> None:
    good = association_of_key(host_key("mx1.example.test"), 1, 1).hex()
    zone = BASE.replace('    _mta-sts IN TXT "v=STSv1; id=1;"\n', "") + "\n"
    records = (
        f"    _25._tcp.mx1 IN TLSA 3 1 1 {good}\n"
        f"    _25._tcp.mx1 IN TLSA 0 0 1 {good}\n"
        f"    _25._tcp.mx1 IN TLSA 3 1 1 {'00' * 32}\n"
    )
    text = zone.replace("messages:", records.rstrip("\n") + "\nmessages:", 1)
    text = text.replace("    mta-sts  IN A  192.0.2.80\n", "")
    found = rules(load_scenario_text(text))
    assert found == [
        ("tlsa-insecure", 7),
        ("tlsa-unusable", 8),
        ("tlsa-mismatch", 9),
    ]
    (mismatch,) = [f for f in lint_scenario(load_scenario_text(text)) if f.rule == "tlsa-mismatch"]
    assert good in mismatch.mend
    signed = text + "dnssec: [example.test]\n"
    assert [rule for rule, _ in rules(load_scenario_text(signed))] == [
        "tlsa-unusable",
        "tlsa-mismatch",
    ]


# --- the AD bit --------------------------------------------------------------------------------

ZONE = "@ IN MX 10 mx1\nmx1 IN A 192.0.2.10\nout IN CNAME mx.elsewhere.invalid.\n"


def ask(authority: Authority, name: str, *, do: bool = False, ad: bool = False) -> int:
    query = dnslib.DNSRecord.question(name, "A")
    if do:
        query.add_ar(dnslib.EDNS0(flags="do"))
    query.header.ad = int(ad)
    reply = dnslib.DNSRecord.parse(authority.resolve(query).pack())
    return int(reply.header.ad)


@pytest.mark.parametrize(
    ("do", "ad", "expected"), [(False, False, 0), (True, False, 1), (False, True, 1)]
)
def test_a_signed_zone_is_answered_as_validated_to_clients_that_ask(
    do: bool, ad: bool, expected: int
) -> None:
    signed = Authority([parse_zone("example.test", ZONE)], signed={"example.test"})
    assert ask(signed, "mx1.example.test", do=do, ad=ad) == expected
    assert ask(signed, "missing.example.test", do=do, ad=ad) == expected  # a denial too


def test_an_unsigned_zone_or_a_chain_that_leaves_the_world_is_never_validated() -> None:
    unsigned = Authority([parse_zone("example.test", ZONE)])
    assert ask(unsigned, "mx1.example.test", do=True) == 0
    signed = Authority([parse_zone("example.test", ZONE)], signed={"example.test"})
    assert ask(signed, "out.example.test", do=True) == 0
    assert ask(signed, "elsewhere.invalid", do=True) == 0


# --- the transcript ----------------------------------------------------------------------------


def test_the_outline_shows_the_handshake() -> None:
    transcript = [
        (0.0, "S", "220 mx1 ESMTP"),
        (0.0, "C", "EHLO a"),
        (0.0, "S", "250-mx1"),
        (0.0, "S", "250 STARTTLS"),
        (0.0, "C", "STARTTLS"),
        (0.0, "S", "220 Ready to start TLS"),
        (0.0, "C", "<TLS: TLSv1.3 TLS_AES_256_GCM_SHA384>"),
        (0.0, "C", "EHLO a"),
        (0.0, "S", "250 mx1"),
        (0.0, "C", "STARTTLS"),
        (0.0, "S", "220 Ready to start TLS"),
        (0.0, "C", "<TLS failed: reset>"),
    ]
    assert session_outline(transcript) == (
        "220, EHLO→250, STARTTLS→220, TLS: TLSv1.3, EHLO→250, STARTTLS→220, TLS failed"
    )
