"""Authority.resolve: the DNS rules, with hand-made dnslib queries and no sockets."""

from __future__ import annotations

import dnslib
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox.dns.server import MAX_CNAME_HOPS, Authority, DnsServer
from sandbox.dns.zone import parse_zone

EXAMPLE = """\
$TTL 300
@        IN SOA ns1 hostmaster 2024010101 1h 15m 1w 60
@        IN NS  ns1
@        IN MX  10 mx1
@        IN MX  20 mx2.other.test.
@        IN MX  30 mx3.elsewhere.invalid.
ns1      IN A   192.0.2.1
mx1      IN A   192.0.2.10
mx1      IN AAAA 2001:db8::10
www      IN CNAME web
web      IN CNAME mx1
away     IN CNAME host.elsewhere.invalid.
dangling IN CNAME missing
cross    IN CNAME mx2.other.test.
loop1    IN CNAME loop2
loop2    IN CNAME loop1
a.b.c    IN TXT "deep"
"""

OTHER = """\
mx2 IN A 192.0.2.20
@   IN MX 0 .
"""


@pytest.fixture
def authority() -> Authority:
    return Authority([parse_zone("example.test", EXAMPLE), parse_zone("other.test", OTHER)])


def ask(authority: Authority, name: str, qtype: str = "A") -> dnslib.DNSRecord:
    reply = authority.resolve(dnslib.DNSRecord.question(name, qtype))
    # Every reply must survive the wire.
    return dnslib.DNSRecord.parse(reply.pack())


def rcode(reply: dnslib.DNSRecord) -> str:
    return str(dnslib.RCODE[reply.header.rcode])


def answers(reply: dnslib.DNSRecord) -> list[tuple[str, str, str]]:
    return [(str(rr.rname), str(dnslib.QTYPE[rr.rtype]), rr.rdata.toZone()) for rr in reply.rr]


def test_reply_copies_id_question_and_rd_and_is_authoritative(authority: Authority) -> None:
    query = dnslib.DNSRecord.question("mx1.example.test", "A")
    query.header.id = 4242
    reply = authority.resolve(query)
    assert reply.header.id == 4242
    assert reply.header.qr == 1
    assert reply.header.aa == 1
    assert reply.header.ra == 0
    assert reply.header.rd == 1
    assert reply.questions == query.questions
    assert answers(reply) == [("mx1.example.test.", "A", "192.0.2.10")]


def test_rd_clear_stays_clear(authority: Authority) -> None:
    query = dnslib.DNSRecord.question("mx1.example.test", "A")
    query.header.rd = 0
    assert authority.resolve(query).header.rd == 0


def test_names_are_case_insensitive(authority: Authority) -> None:
    reply = ask(authority, "MX1.Example.TEST", "A")
    assert rcode(reply) == "NOERROR"
    assert [a[2] for a in answers(reply)] == ["192.0.2.10"]


def test_mx_answer_with_addresses_in_additional(authority: Authority) -> None:
    reply = ask(authority, "example.test", "MX")
    assert rcode(reply) == "NOERROR"
    assert answers(reply) == [
        ("example.test.", "MX", "10 mx1.example.test."),
        ("example.test.", "MX", "20 mx2.other.test."),
        ("example.test.", "MX", "30 mx3.elsewhere.invalid."),
    ]
    # mx1 from this zone, mx2 from the other zone; mx3 is outside our world.
    additional = [(str(rr.rname), rr.rdata.toZone()) for rr in reply.ar]
    assert additional == [
        ("mx1.example.test.", "192.0.2.10"),
        ("mx1.example.test.", "2001:db8::10"),
        ("mx2.other.test.", "192.0.2.20"),
    ]
    assert reply.auth == []


def test_null_mx_has_no_additional(authority: Authority) -> None:
    reply = ask(authority, "other.test", "MX")
    assert answers(reply) == [("other.test.", "MX", "0 .")]
    assert reply.ar == []


def test_nodata_is_noerror_with_the_soa(authority: Authority) -> None:
    reply = ask(authority, "mx1.example.test", "MX")
    assert rcode(reply) == "NOERROR"
    assert reply.header.aa == 1
    assert reply.rr == []
    (soa,) = reply.auth
    assert soa.rtype == dnslib.QTYPE.SOA
    assert str(soa.rname) == "example.test."


def test_negative_soa_ttl_is_the_smaller_of_ttl_and_minimum(authority: Authority) -> None:
    # SOA TTL 300, minimum 60: RFC 2308 §5.
    assert ask(authority, "mx1.example.test", "MX").auth[0].ttl == 60
    assert ask(authority, "nothing.example.test").auth[0].ttl == 60


def test_apex_without_mx_is_nodata_for_implicit_mx() -> None:
    authority = Authority([parse_zone("example.test", "@ IN A 192.0.2.5\n")])
    reply = ask(authority, "example.test", "MX")
    assert rcode(reply) == "NOERROR"
    assert reply.rr == []
    assert str(reply.auth[0].rdata.mname) == "ns.example.test."  # the synthesised SOA


def test_empty_non_terminal_is_nodata_not_nxdomain(authority: Authority) -> None:
    for name in ("b.c.example.test", "c.example.test"):
        reply = ask(authority, name, "A")
        assert rcode(reply) == "NOERROR", name
        assert reply.rr == []
        assert len(reply.auth) == 1


def test_nxdomain_inside_a_zone_has_the_soa(authority: Authority) -> None:
    reply = ask(authority, "nothing.example.test", "MX")
    assert rcode(reply) == "NXDOMAIN"
    assert reply.header.aa == 1
    assert reply.rr == []
    assert [str(rr.rname) for rr in reply.auth] == ["example.test."]


def test_name_outside_every_zone_is_nxdomain_without_aa(authority: Authority) -> None:
    reply = ask(authority, "mail.example.org", "MX")
    assert rcode(reply) == "NXDOMAIN"
    assert reply.header.aa == 0
    assert reply.rr == []
    assert reply.auth == []


def test_cname_chain_is_followed_inside_our_zones(authority: Authority) -> None:
    reply = ask(authority, "www.example.test", "A")
    assert rcode(reply) == "NOERROR"
    assert answers(reply) == [
        ("www.example.test.", "CNAME", "web.example.test."),
        ("web.example.test.", "CNAME", "mx1.example.test."),
        ("mx1.example.test.", "A", "192.0.2.10"),
    ]


def test_cname_chain_across_zones(authority: Authority) -> None:
    reply = ask(authority, "cross.example.test", "A")
    assert answers(reply)[-1] == ("mx2.other.test.", "A", "192.0.2.20")


def test_cname_leaving_our_zones_ends_the_chain(authority: Authority) -> None:
    reply = ask(authority, "away.example.test", "A")
    assert rcode(reply) == "NOERROR"
    assert answers(reply) == [("away.example.test.", "CNAME", "host.elsewhere.invalid.")]
    assert reply.auth == []


def test_cname_to_a_missing_name_is_nxdomain(authority: Authority) -> None:
    reply = ask(authority, "dangling.example.test", "A")
    assert rcode(reply) == "NXDOMAIN"
    assert answers(reply) == [("dangling.example.test.", "CNAME", "missing.example.test.")]
    assert len(reply.auth) == 1


def test_cname_to_a_name_without_the_type_is_nodata(authority: Authority) -> None:
    reply = ask(authority, "www.example.test", "MX")
    assert rcode(reply) == "NOERROR"
    assert [a[1] for a in answers(reply)] == ["CNAME", "CNAME"]
    assert len(reply.auth) == 1


def test_cname_loop_stops(authority: Authority) -> None:
    reply = ask(authority, "loop1.example.test", "A")
    assert answers(reply) == [
        ("loop1.example.test.", "CNAME", "loop2.example.test."),
        ("loop2.example.test.", "CNAME", "loop1.example.test."),
    ]


def test_long_cname_chain_is_cut_at_the_hop_limit() -> None:
    hops = MAX_CNAME_HOPS + 5
    text = "\n".join(f"h{i} IN CNAME h{i + 1}" for i in range(hops)) + f"\nh{hops} IN A 192.0.2.1"
    reply = ask(Authority([parse_zone("example.test", text)]), "h0.example.test", "A")
    assert len(reply.rr) == MAX_CNAME_HOPS + 1
    assert all(rr.rtype == dnslib.QTYPE.CNAME for rr in reply.rr)


def test_asking_for_the_cname_itself_does_not_follow_it(authority: Authority) -> None:
    reply = ask(authority, "www.example.test", "CNAME")
    assert answers(reply) == [("www.example.test.", "CNAME", "web.example.test.")]


def test_any_gives_all_records_of_the_name(authority: Authority) -> None:
    reply = ask(authority, "example.test", "ANY")
    types = [a[1] for a in answers(reply)]
    assert types == ["SOA", "NS", "MX", "MX", "MX"]


def test_any_includes_a_synthesised_soa_at_the_apex() -> None:
    authority = Authority([parse_zone("example.test", "@ IN MX 10 mx1\n")])
    assert [a[1] for a in answers(ask(authority, "example.test", "ANY"))] == ["SOA", "MX"]
    assert [a[1] for a in answers(ask(authority, "example.test", "SOA"))] == ["SOA"]


def test_unknown_query_type_is_nodata(authority: Authority) -> None:
    query = dnslib.DNSRecord(q=dnslib.DNSQuestion("mx1.example.test", 65400))
    reply = authority.resolve(query)
    assert rcode(reply) == "NOERROR"
    assert reply.rr == []


def test_no_question_is_formerr(authority: Authority) -> None:
    reply = authority.resolve(dnslib.DNSRecord())
    assert rcode(reply) == "FORMERR"
    assert reply.rr == []


def test_two_questions_is_formerr(authority: Authority) -> None:
    query = dnslib.DNSRecord.question("example.test", "MX")
    query.add_question(dnslib.DNSQuestion("mx1.example.test"))
    reply = authority.resolve(query)
    assert rcode(reply) == "FORMERR"
    assert reply.rr == []


def test_other_opcode_is_notimp(authority: Authority) -> None:
    query = dnslib.DNSRecord.question("example.test", "SOA")
    query.header.opcode = dnslib.OPCODE.NOTIFY
    reply = authority.resolve(query)
    assert rcode(reply) == "NOTIMP"
    assert reply.header.opcode == dnslib.OPCODE.NOTIFY


def test_other_class_is_refused(authority: Authority) -> None:
    query = dnslib.DNSRecord.question("version.bind", "TXT", "CH")
    assert rcode(authority.resolve(query)) == "REFUSED"


def test_nxdomain_fault_inside_a_zone_looks_real(authority: Authority) -> None:
    reply = authority.nxdomain(dnslib.DNSRecord.question("mx1.example.test"))
    assert rcode(reply) == "NXDOMAIN"
    assert reply.header.aa == 1
    assert reply.rr == []
    assert len(reply.auth) == 1
    outside = authority.nxdomain(dnslib.DNSRecord.question("mx.example.org"))
    assert (rcode(outside), outside.header.aa, outside.auth) == ("NXDOMAIN", 0, [])


def test_longest_zone_wins_for_delegated_child() -> None:
    parent = parse_zone("example.test", "mx1.sub IN A 192.0.2.1\n")
    child = parse_zone("sub.example.test", "@ IN MX 10 mx1\n")
    reply = ask(Authority([parent, child]), "mx1.sub.example.test", "A")
    # The child zone has no mx1: its answer counts, not the parent's record.
    assert rcode(reply) == "NXDOMAIN"
    assert str(reply.auth[0].rname) == "sub.example.test."


# --- the wire boundary (DnsServer.serve, no sockets) --------------------------------------------


def _check_served(data: bytes) -> None:
    authority = Authority([parse_zone("example.test", EXAMPLE)])
    reply, _ = DnsServer(authority).serve(data, "127.0.0.1", "udp")
    if reply is None:
        return
    parsed = dnslib.DNSRecord.parse(reply)
    assert parsed.header.qr == 1
    assert parsed.header.id == int.from_bytes(data[:2], "big")
    assert len(reply) <= 512


@given(st.binary(max_size=300))
def test_any_bytes_get_a_reply_or_silence_never_an_exception(data: bytes) -> None:
    _check_served(data)


@given(st.data())
def test_damaged_queries_get_a_reply_or_silence(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(["example.test", "www.example.test", "x.example.org"]))
    packet = bytearray(dnslib.DNSRecord.question(name, "MX").pack())
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(packet) - 1))
        packet[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(packet)))
    _check_served(bytes(packet[:cut]))
