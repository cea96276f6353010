"""The world's CA and the hosts' certificates, judged by the sender's PKIX and DANE checks.

No sockets here: the certificates are made, then judged as DER bytes, the way the sender
judges what a server sent. ``tests/integration/test_starttls.py`` does the same through real
TLS handshakes.
"""

from __future__ import annotations

import datetime
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sandbox.core.tls import HOST_TLS
from sandbox.tls.certificates import (
    EXPIRED_UNTIL,
    WRONG_NAME,
    CertificateAuthority,
    CertVariant,
    certificate_variant,
    host_key,
)
from sandbox.tls.dane import Tlsa, association, check, lookup_state, record_for
from sandbox.tls.verify import judge

HOST = "mx1.example.test"
NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)
VARIANTS: tuple[CertVariant, ...] = ("valid", "expired", "self-signed", "wrong-name")


def chain(ca: CertificateAuthority, variant: CertVariant, host: str = HOST) -> tuple[bytes, ...]:
    return ca.server_certificate(host, variant).chain


# --- the certificates --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variant", "verdict", "detail"),
    [
        ("valid", "valid", "certificate verified"),
        ("expired", "expired", "certificate has expired"),
        ("self-signed", "self-signed", "self-signed certificate"),
        ("wrong-name", "wrong-name", "hostname mismatch"),
    ],
)
def test_each_variant_gets_its_verdict(
    ca: CertificateAuthority, variant: CertVariant, verdict: str, detail: str
) -> None:
    found = judge(chain(ca, variant), HOST, [ca.ca_der], NOW)
    assert (found.verdict, detail in found.detail) == (verdict, True)


def test_a_certificate_from_another_ca_is_untrusted(ca: CertificateAuthority) -> None:
    with CertificateAuthority() as stranger:
        found = judge(chain(stranger, "valid"), HOST, [ca.ca_der], NOW)
    assert (found.verdict, found.detail) == ("untrusted", "unable to get local issuer certificate")


def test_the_valid_certificate_names_the_host_and_the_wrong_one_does_not(
    ca: CertificateAuthority,
) -> None:
    assert judge(chain(ca, "valid"), HOST, [ca.ca_der], NOW).names == (HOST,)
    assert judge(chain(ca, "wrong-name"), HOST, [ca.ca_der], NOW).names == (WRONG_NAME,)


def test_the_expired_certificate_was_valid_once(ca: CertificateAuthority) -> None:
    back_then = EXPIRED_UNTIL - datetime.timedelta(days=30)
    assert judge(chain(ca, "expired"), HOST, [ca.ca_der], back_then).verdict == "valid"


def test_host_names_compare_without_case_or_final_dot(ca: CertificateAuthority) -> None:
    assert judge(chain(ca, "valid"), "MX1.Example.Test.", [ca.ca_der], NOW).verdict == "valid"


def test_a_host_keeps_its_key_in_every_variant_and_every_run(ca: CertificateAuthority) -> None:
    keys = {association(chain(ca, v)[0], 1, 0) for v in VARIANTS}
    assert len(keys) == 1
    with CertificateAuthority() as other:
        assert association(chain(other, "valid")[0], 1, 0) in keys
    assert host_key(HOST).private_numbers() == host_key("MX1.example.test.").private_numbers()
    assert host_key(HOST).private_numbers() != host_key("mx2.example.test").private_numbers()


def test_the_chain_carries_the_ca_except_for_a_self_signed_certificate(
    ca: CertificateAuthority,
) -> None:
    assert chain(ca, "valid")[1:] == (ca.ca_der,)
    assert len(chain(ca, "self-signed")) == 1


def test_each_host_tls_value_has_its_server_context(ca: CertificateAuthority) -> None:
    for tls in HOST_TLS:
        context = ca.server_context(HOST, tls)
        if tls == "none":
            assert context is None and certificate_variant(tls) is None
        else:
            assert isinstance(context, ssl.SSLContext)
    assert ca.server_context(HOST, "handshake-failure") is ca.server_context(HOST, "valid")


def test_the_ca_file_is_the_ca_and_keys_are_private(ca: CertificateAuthority) -> None:
    ca_cert = x509.load_pem_x509_certificate(ca.ca_file.read_bytes())
    assert ca_cert.public_bytes(serialization.Encoding.DER) == ca.ca_der
    key_file = ca.server_certificate(HOST, "valid").key_file
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_closing_removes_every_file() -> None:
    authority = CertificateAuthority()
    certificate = authority.server_certificate(HOST, "valid")
    directory = authority.directory
    assert certificate.chain_file.exists()
    authority.close()
    authority.close()  # twice is fine
    assert not directory.exists()
    with pytest.raises(RuntimeError, match="closed"):
        authority.server_certificate("mx2.example.test", "valid")


# --- DANE ------------------------------------------------------------------------------------


def dane(ca: CertificateAuthority, variant: CertVariant, *records: Tlsa) -> str:
    return check(chain(ca, variant), records, [HOST, "example.test"], NOW).verdict


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(("selector", "matching"), [(1, 1), (1, 2), (1, 0)])
def test_dane_ee_on_the_key_matches_every_variant(
    ca: CertificateAuthority, variant: CertVariant, selector: int, matching: int
) -> None:
    record = record_for(chain(ca, "valid")[0], 3, selector, matching)
    assert dane(ca, variant, record) == "match"


def test_dane_ee_on_the_whole_certificate_matches_that_certificate_only(
    ca: CertificateAuthority,
) -> None:
    record = record_for(chain(ca, "valid")[0], 3, 0, 1)
    assert dane(ca, "valid", record) == "match"
    assert dane(ca, "expired", record) == "mismatch"


def test_dane_ta_on_the_ca_checks_dates_and_names(ca: CertificateAuthority) -> None:
    record = record_for(ca.ca_der, 2, 1, 1)
    assert dane(ca, "valid", record) == "match"
    assert dane(ca, "expired", record) == "mismatch"
    assert dane(ca, "wrong-name", record) == "mismatch"
    assert dane(ca, "self-signed", record) == "mismatch"


def test_dane_ta_with_the_anchor_key_in_the_record(ca: CertificateAuthority) -> None:
    key = association(ca.ca_der, 1, 0)
    assert dane(ca, "valid", Tlsa(2, 1, 0, key)) == "match"
    assert dane(ca, "valid", Tlsa(2, 1, 0, b"\x30\x00")) == "mismatch"


def test_dane_ta_names_may_be_the_tlsa_base_domain(ca: CertificateAuthority) -> None:
    record = record_for(ca.ca_der, 2, 0, 2)
    found = check(chain(ca, "valid"), [record], ["mx.other.test", HOST], NOW)
    assert found.verdict == "match" and found.matched == record


def test_a_mismatch_says_why(ca: CertificateAuthority) -> None:
    other = record_for(chain(ca, "valid", "mx2.example.test")[0])
    found = check(chain(ca, "valid"), [other], [HOST], NOW)
    assert found.verdict == "mismatch" and "no TLSA record matches" in found.detail


@pytest.mark.parametrize(
    "record",
    [
        Tlsa(1, 1, 1, bytes(32)),  # PKIX-EE: unusable in SMTP
        Tlsa(0, 0, 1, bytes(32)),  # PKIX-TA
        Tlsa(3, 2, 1, bytes(32)),  # unknown selector
        Tlsa(3, 1, 9, bytes(32)),  # unknown matching type
        Tlsa(3, 1, 1, bytes(31)),  # a SHA-256 of the wrong length
        Tlsa(3, 1, 2, bytes(32)),  # a SHA-512 of the wrong length
        Tlsa(3, 1, 0, b""),
    ],
)
def test_unusable_records_never_match(ca: CertificateAuthority, record: Tlsa) -> None:
    assert not record.usable
    assert dane(ca, "valid", record) == "mismatch"
    assert lookup_state([record], secure=True) == "unusable"


def test_the_lookup_state_follows_rfc_7672() -> None:
    usable = Tlsa(3, 1, 1, bytes(32))
    assert lookup_state([usable], secure=True) == "usable"
    assert lookup_state([usable, Tlsa(1, 1, 1, bytes(32))], secure=True) == "usable"
    assert lookup_state([], secure=True) == "none"
    assert lookup_state([usable], secure=False) == "insecure"
    assert lookup_state([], secure=True, failed=True) == "error"


def test_tlsa_text_reads_as_zone_files_write_it() -> None:
    record = Tlsa.parse("3 1 1 0123456789abcdef 0123456789ABCDEF0123456789abcdef0123456789abcdef")
    assert (record.usage, record.selector, record.matching, len(record.data)) == (3, 1, 1, 32)
    assert str(record).startswith("3 1 1 0123456789ABCDEF0123")
    assert Tlsa.parse(str(record)) == record
    for bad in ("3 1 1", "3 1 1 abc", "256 1 1 ab", "x 1 1 ab", "3 1 1 zz"):
        with pytest.raises(ValueError, match="not TLSA data"):
            Tlsa.parse(bad)
