"""The MTA-STS and DANE rules, one test each, in whole runs: the sender finds the policy (over
real DNS and real HTTPS) or the TLSA records (DNSSEC-validated by the sandbox's DNS), and the
core's rules decide which hosts may have the mail."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox import (
    DnsServed,
    MtaStsChecked,
    PolicyServed,
    RunResult,
    TlsChecked,
    run_scenario,
    scenario_from_mapping,
)
from sandbox.tls.certificates import host_key
from sandbox.tls.dane import association_of_key

ALICE = "alice@example.test"
POLICY = "version: STSv1\nmode: {mode}\nmx: mx1.example.test\nmax_age: {max_age}\n"
STS_ZONE = """\
$TTL 3600
@          IN MX  10 mx1.example.test.
@          IN MX  20 mx2.example.test.
mx1        IN A   192.0.2.10
mx2        IN A   192.0.2.11
mta-sts    IN A   192.0.2.80
_mta-sts   IN TXT "v=STSv1; id={id};"
"""


def pin(host: str) -> str:
    """The ``3 1 1`` data that matches ``host``'s key."""
    return association_of_key(host_key(host), 1, 1).hex()


def sts(
    hosts: dict[str, Any],
    *,
    mode: str = "enforce",
    max_age: int = 86400,
    zone: str = STS_ZONE,
    sender: dict[str, Any] | None = None,
    **extra: Any,
) -> RunResult:
    data: dict[str, Any] = {
        "name": "sts",
        "zones": {"example.test": zone.replace("{id}", "1")},
        "mta_sts": {"example.test": POLICY.format(mode=mode, max_age=max_age)},
        "hosts": hosts,
        "messages": [{"from": "bob@example.net", "to": ALICE}],
        "sender": sender or {"profile": "postfix", "mta_sts": "honor"},
    }
    data.update(extra)
    return run_scenario(scenario_from_mapping(data))


def dane(tlsa: dict[str, str], hosts: dict[str, Any] | None = None, **extra: Any) -> RunResult:
    records = "".join(f"_25._tcp.{h} IN TLSA {data}\n" for h, data in tlsa.items())
    zone = (
        "$TTL 3600\n@ IN MX 10 mx1\n@ IN MX 20 mx2\nmx1 IN A 192.0.2.10\nmx2 IN A 192.0.2.11\n"
        + records
    )
    data: dict[str, Any] = {
        "name": "dane",
        "zones": {"example.test": zone},
        "dnssec": ["example.test"],
        "hosts": hosts or {},
        "messages": [{"from": "bob@example.net", "to": ALICE}],
        "sender": {"profile": "postfix", "tls": "dane"},
    }
    data.update(extra)
    return run_scenario(scenario_from_mapping(data))


def reports(result: RunResult) -> dict[str, Any]:
    (report,) = result.to_json()["tls_reports"]
    (policy,) = report["policies"]
    return dict(policy)


# --- MTA-STS -----------------------------------------------------------------------------------


def test_the_policy_is_fetched_over_https_from_the_address_the_zone_gives() -> None:
    result = sts({})
    (served,) = [e for e in result.events if isinstance(e, PolicyServed)]
    assert (served.host, served.path, served.status) == (
        "mta-sts.example.test",
        "/.well-known/mta-sts.txt",
        200,
    )
    (found,) = [e for e in result.events if isinstance(e, MtaStsChecked)]
    assert (found.mode, found.mx, found.id, found.source) == (
        "enforce",
        ("mx1.example.test",),
        "1",
        "fetched",
    )


def test_enforce_never_uses_an_mx_host_the_policy_does_not_list() -> None:
    result = sts({"mx1.example.test": "refuse"}, until="1h")
    (row,) = result.deliveries
    assert (row.status, row.dsn) == ("deferred", "4.7.5")
    assert result.host("mx2.example.test").connections == 0  # type: ignore[union-attr]
    skips = [e for e in result.events if isinstance(e, TlsChecked) and e.step == "skip"]
    assert skips and {e.host for e in skips} == {"mx2.example.test"}


def test_enforce_uses_a_listed_host_only_with_a_valid_certificate() -> None:
    result = sts({"mx1.example.test": {"tls": "expired"}}, until="1h")
    (row,) = result.deliveries
    assert (row.status, row.dsn) == ("deferred", "4.7.5")
    assert result.host("mx1.example.test").accepted == 0  # type: ignore[union-attr]
    policy = reports(result)
    assert policy["policy"]["policy-type"] == "sts"
    assert policy["policy"]["mx-host"] == ["mx1.example.test"]
    results = {d["result-type"] for d in policy["failure-details"]}
    assert results == {"certificate-expired", "validation-failure"}


def test_enforce_delivers_over_verified_tls_to_a_listed_host() -> None:
    result = sts({})
    (row,) = result.deliveries
    assert (row.host, row.tls_verified) == ("mx1.example.test", True)
    assert reports(result)["summary"] == {
        "total-successful-session-count": 1,
        "total-failure-session-count": 0,
    }


def test_testing_mode_reports_a_failure_and_still_delivers() -> None:
    result = sts({"mx1.example.test": {"tls": "self-signed"}}, mode="testing")
    (row,) = result.deliveries
    assert (row.status, row.host, row.tls_verified) == ("delivered", "mx1.example.test", False)
    (detail,) = reports(result)["failure-details"]
    assert detail["result-type"] == "certificate-not-trusted"
    assert detail["receiving-mx-hostname"] == "mx1.example.test"


def test_testing_mode_still_uses_an_unlisted_host() -> None:
    result = sts({"mx1.example.test": "refuse"}, mode="testing")
    (row,) = result.deliveries
    assert (row.status, row.host) == ("delivered", "mx2.example.test")


def test_a_sender_that_ignores_mta_sts_never_asks() -> None:
    result = sts({"mx1.example.test": "refuse"}, sender={"profile": "postfix"})
    (row,) = result.deliveries
    assert row.host == "mx2.example.test"
    asked = {e.name for e in result.events if isinstance(e, DnsServed)}
    assert "_mta-sts.example.test" not in asked
    assert result.to_json()["tls_reports"] == []


def test_a_policy_that_cannot_be_fetched_is_reported_and_the_mail_goes_as_without_one() -> None:
    zone = STS_ZONE.replace("mta-sts    IN A   192.0.2.80\n", "")
    result = sts({"mx1.example.test": "refuse"}, zone=zone)
    (row,) = result.deliveries
    assert row.host == "mx2.example.test"
    (found,) = [e for e in result.events if isinstance(e, MtaStsChecked)]
    assert (found.mode, found.failure) == ("", "sts-policy-fetch-error")
    (detail,) = reports(result)["failure-details"]
    assert detail["result-type"] == "sts-policy-fetch-error"


def test_the_policy_is_cached_for_max_age_and_refetched_when_the_id_changes() -> None:
    zone = [
        {"until": "2h", "zone": STS_ZONE.replace("{id}", "1")},
        {"zone": STS_ZONE.replace("{id}", "2")},
    ]
    data: dict[str, Any] = {
        "name": "sts-cache",
        "zones": {"example.test": zone},
        "mta_sts": {"example.test": POLICY.format(mode="enforce", max_age=86400)},
        "messages": [
            {"from": "bob@example.net", "to": ALICE},
            {"from": "bob@example.net", "to": ALICE, "at": "1h"},
            {"from": "bob@example.net", "to": ALICE, "at": "3h"},
        ],
        "sender": {"profile": "postfix", "mta_sts": "honor"},
    }
    result = run_scenario(scenario_from_mapping(data))
    found = [(e.message, e.id, e.source) for e in result.events if isinstance(e, MtaStsChecked)]
    assert found == [(1, "1", "fetched"), (2, "1", "cached"), (3, "2", "fetched")]
    assert len([e for e in result.events if isinstance(e, PolicyServed)]) == 2


# --- DANE --------------------------------------------------------------------------------------


def test_a_matching_tlsa_record_authenticates_the_host() -> None:
    result = dane({"mx1": f"3 1 1 {pin('mx1.example.test')}"})
    (row,) = result.deliveries
    assert (row.host, row.tls_verified) == ("mx1.example.test", True)
    (step,) = [e for e in result.events if isinstance(e, TlsChecked)]
    assert (step.dane, step.level, step.policy) == ("match", "dane", "tlsa")
    assert reports(result)["policy"]["policy-type"] == "tlsa"


def test_dane_ee_authenticates_even_an_expired_self_signed_certificate() -> None:
    result = dane(
        {"mx1": f"3 1 1 {pin('mx1.example.test')}"}, {"mx1.example.test": {"tls": "self-signed"}}
    )
    (row,) = result.deliveries
    assert (row.host, row.tls_verified) == ("mx1.example.test", True)


def test_a_mismatch_makes_that_mx_unusable_and_the_next_one_takes_the_mail() -> None:
    result = dane(
        {"mx1": f"3 1 1 {pin('old.example.test')}", "mx2": f"3 1 1 {pin('mx2.example.test')}"}
    )
    (row,) = result.deliveries
    assert (row.status, row.host, row.tls_verified) == ("delivered", "mx2.example.test", True)
    assert result.host("mx1.example.test").accepted == 0  # type: ignore[union-attr]


def test_a_mismatch_on_every_mx_defers_the_mail() -> None:
    wrong = f"3 1 1 {pin('old.example.test')}"
    result = dane({"mx1": wrong, "mx2": wrong}, until="1h")
    (row,) = result.deliveries
    assert (row.status, row.dsn) == ("deferred", "4.7.5")
    assert sum(h.accepted for h in result.hosts) == 0


def test_a_host_without_tlsa_records_is_may_and_takes_plain_text() -> None:
    result = dane(
        {"mx2": f"3 1 1 {pin('mx2.example.test')}"}, {"mx1.example.test": {"tls": "none"}}
    )
    (row,) = result.deliveries
    assert (row.host, row.tls) == ("mx1.example.test", "")


def test_unusable_records_mean_encrypt_without_authentication() -> None:
    result = dane(
        {"mx1": f"1 1 1 {pin('old.example.test')}"}, {"mx1.example.test": {"tls": "expired"}}
    )
    (row,) = result.deliveries
    assert (row.host, row.tls_verified) == ("mx1.example.test", False)
    (step,) = [e for e in result.events if isinstance(e, TlsChecked)]
    assert step.level == "encrypt"


def test_tlsa_records_in_an_unsigned_zone_are_ignored() -> None:
    wrong = f"3 1 1 {pin('old.example.test')}"
    result = dane({"mx1": wrong, "mx2": wrong}, dnssec=[])
    (row,) = result.deliveries
    assert (row.host, row.tls_verified) == ("mx1.example.test", True)  # PKIX, as "may"
    asked = {e.name for e in result.events if isinstance(e, DnsServed)}
    assert "_25._tcp.mx1.example.test" not in asked  # insecure MX: no TLSA look-up


def test_a_failed_tlsa_lookup_rules_the_host_out() -> None:
    result = dane(
        {"mx2": f"3 1 1 {pin('mx2.example.test')}"},
        dns={"_25._tcp.mx1.example.test": "servfail"},
    )
    (row,) = result.deliveries
    assert row.host == "mx2.example.test"
    skip = [e for e in result.events if isinstance(e, TlsChecked) and e.step == "skip"]
    assert [(e.host, e.report) for e in skip] == [("mx1.example.test", "dnssec-invalid")]


@pytest.mark.parametrize("profile", ["exim", "rfc5321"])
def test_profiles_at_dane_by_default_honour_the_records(profile: str) -> None:
    wrong = f"3 1 1 {pin('old.example.test')}"
    data: dict[str, Any] = {"sender": {"profile": profile}, "until": "1h"}
    result = dane({"mx1": wrong, "mx2": wrong}, **data)
    (row,) = result.deliveries
    assert row.status == "deferred"
