"""TLSA records in zone text (RFC 6698 §2.2): read, answered, and matched by DANE."""

from __future__ import annotations

import dnslib
import pytest

from sandbox.dns.server import Authority
from sandbox.dns.zone import parse_zone
from sandbox.errors import ZoneSyntaxError
from sandbox.tls.certificates import CertificateAuthority
from sandbox.tls.dane import Tlsa, record_for

KEY_SHA256 = "0c72ac70b745ac19998811b131d662c9ac69dbdbe7cb23e5b514b56664c5d3d6"
ZONE = f"""\
$TTL 300
@              IN MX   10 mx1
mx1            IN A    192.0.2.10
_25._tcp.mx1   IN TLSA 3 1 1 {KEY_SHA256}
_25._tcp.mx1   IN TLSA 2 0 2 (
                    {"ab" * 32}
                    {"cd" * 32} )
"""


def test_tlsa_records_read_with_their_fields() -> None:
    zone = parse_zone("example.test", ZONE)
    records = zone.lookup("_25._tcp.mx1.example.test", "TLSA")
    assert [(r.line, r.ttl) for r in records] == [(4, 300), (5, 300)]
    first, second = (Tlsa.parse(r.rdata) for r in records)
    assert first == Tlsa(3, 1, 1, bytes.fromhex(KEY_SHA256))
    assert second == Tlsa(2, 0, 2, bytes.fromhex("ab" * 32 + "cd" * 32))


def test_the_authority_answers_tlsa_on_the_wire() -> None:
    authority = Authority([parse_zone("example.test", ZONE)])
    query = dnslib.DNSRecord.question("_25._tcp.mx1.example.test", "TLSA")
    reply = dnslib.DNSRecord.parse(authority.resolve(query).pack())
    assert [str(dnslib.QTYPE[rr.rtype]) for rr in reply.rr] == ["TLSA", "TLSA"]
    assert Tlsa.parse(reply.rr[0].rdata.toZone()).data == bytes.fromhex(KEY_SHA256)


def test_a_record_published_for_a_hosts_key_matches_its_certificate() -> None:
    with CertificateAuthority() as ca:
        der = ca.server_certificate("mx1.example.test", "valid").der
    published = record_for(der)
    zone = parse_zone("example.test", f"_25._tcp.mx1 IN TLSA {published}\n")
    (record,) = zone.lookup("_25._tcp.mx1.example.test", "TLSA")
    assert Tlsa.parse(record.rdata) == published


@pytest.mark.parametrize(
    ("record", "says"),
    [
        ("_25._tcp.mx1 IN TLSA 3 1 1", "needs a usage, a selector, a matching type"),
        ("_25._tcp.mx1 IN TLSA 3 1", "needs a usage"),
        ("_25._tcp.mx1 IN TLSA 256 1 1 abcd", "'256' is not the usage"),
        ("_25._tcp.mx1 IN TLSA 3 x 1 abcd", "'x' is not the selector"),
        ("_25._tcp.mx1 IN TLSA 3 1 -1 abcd", "'-1' is not the matching type"),
        ("_25._tcp.mx1 IN TLSA 3 1 1 abc", "whole bytes in hex"),
        ("_25._tcp.mx1 IN TLSA 3 1 1 zz", "whole bytes in hex"),
    ],
)
def test_a_bad_tlsa_record_says_how_to_mend_it(record: str, says: str) -> None:
    with pytest.raises(ZoneSyntaxError) as raised:
        parse_zone("example.test", f"mx1 IN A 192.0.2.10\n{record}\n")
    assert says in str(raised.value)
    assert raised.value.line == 2


def test_unusable_parameters_are_still_zone_data() -> None:
    # Usage 1 or a short digest is legal DNS, only unusable for DANE (RFC 7672 §2.2).
    zone = parse_zone("example.test", "_25._tcp.mx1 IN TLSA 1 1 1 abcd\n")
    (record,) = zone.lookup("_25._tcp.mx1.example.test", "TLSA")
    assert not Tlsa.parse(record.rdata).usable
