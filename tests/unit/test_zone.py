"""sandbox.dns.zone: zone text as BIND reads it, with line numbers and mendable errors."""

from __future__ import annotations

import dnslib
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox import ZoneSyntaxError
from sandbox.dns.zone import (
    OriginDirective,
    TtlDirective,
    Zone,
    ZoneIndex,
    find_zone,
    parse_zone,
)

FULL_ZONE = """\
$TTL 300
; the zone of the seed articles
@   IN SOA ns1 hostmaster (
        2024010101 ; serial
        1h         ; refresh
        15m        ; retry
        1w         ; expire
        60 )       ; minimum
    IN NS ns1
    IN MX 10 mx1            ; primary
    IN MX 20 MX2.Example.TEST.
ns1 IN A 192.0.2.1
mx1 60 IN A 192.0.2.10
mx1 IN AAAA 2001:DB8:0:0::10
mx1 IN A 192.0.2.12
mx2 IN 120 A 192.0.2.11
www IN CNAME @
@   IN TXT "v=spf1 mx -all" "second; string"

$ORIGIN sub.example.test.
host IN A 192.0.2.99
"""


@pytest.fixture
def zone() -> Zone:
    return parse_zone("Example.TEST.", FULL_ZONE)


def test_apex_is_lower_case_without_the_final_dot(zone: Zone) -> None:
    assert zone.apex == "example.test"


def test_records_keep_file_order_and_the_line_where_they_start(zone: Zone) -> None:
    assert [(r.line, r.name, r.rtype) for r in zone.records] == [
        (3, "example.test", "SOA"),
        (9, "example.test", "NS"),
        (10, "example.test", "MX"),
        (11, "example.test", "MX"),
        (12, "ns1.example.test", "A"),
        (13, "mx1.example.test", "A"),
        (14, "mx1.example.test", "AAAA"),
        (15, "mx1.example.test", "A"),
        (16, "mx2.example.test", "A"),
        (17, "www.example.test", "CNAME"),
        (18, "example.test", "TXT"),
        (21, "host.sub.example.test", "A"),
    ]


def test_multi_line_soa_with_comments_and_units(zone: Zone) -> None:
    (soa,) = zone.lookup("example.test", "SOA")
    assert soa.rdata == "ns1.example.test. hostmaster.example.test. 2024010101 3600 900 604800 60"
    assert zone.soa is soa.rr
    assert zone.soa.rdata.times == (2024010101, 3600, 900, 604800, 60)


def test_ttl_directive_explicit_ttl_and_class_in_either_order(zone: Zone) -> None:
    assert zone.default_ttl == 300
    assert zone.ttl_directive is True
    assert zone.lookup("ns1.example.test", "A")[0].ttl == 300
    assert zone.lookup("mx1.example.test", "A")[0].ttl == 60
    assert zone.lookup("mx2.example.test", "A")[0].ttl == 120


def test_mx_fields_relative_and_absolute_targets(zone: Zone) -> None:
    mx = zone.lookup("example.test", "MX")
    assert [(r.preference, r.target, r.rdata) for r in mx] == [
        (10, "mx1.example.test", "10 mx1.example.test."),
        (20, "mx2.example.test", "20 mx2.example.test."),
    ]
    assert mx[0].rr.rdata.preference == 10
    assert str(mx[0].rr.rdata.label) == "mx1.example.test."


def test_at_sign_in_data_is_the_origin(zone: Zone) -> None:
    (cname,) = zone.lookup("www.example.test", "CNAME")
    assert cname.target == "example.test"


def test_origin_directive_changes_relative_names(zone: Zone) -> None:
    assert zone.lookup("host.sub.example.test", "A")[0].address == "192.0.2.99"


def test_txt_strings_keep_quoted_semicolons(zone: Zone) -> None:
    (txt,) = zone.lookup("example.test", "TXT")
    assert txt.rr.rdata.data == [b"v=spf1 mx -all", b"second; string"]


def test_addresses_of_gives_a_then_aaaa_in_zone_order(zone: Zone) -> None:
    assert zone.addresses_of("MX1.example.test.") == ("192.0.2.10", "192.0.2.12", "2001:db8::10")
    assert zone.addresses_of("nowhere.example.test") == ()


def test_lookup_is_case_insensitive_and_any_gives_everything(zone: Zone) -> None:
    assert len(zone.lookup("MX1.EXAMPLE.TEST.", "a")) == 2
    assert [r.rtype for r in zone.lookup("example.test", "ANY")] == ["SOA", "NS", "MX", "MX", "TXT"]


def test_names_and_contains(zone: Zone) -> None:
    assert "mx1.example.test" in zone.names()
    assert "example.test" in zone.names()
    assert zone.contains("deep.below.Example.Test.")
    assert zone.contains("example.test")
    assert not zone.contains("test")
    assert not zone.contains("badexample.test")


def test_exists_covers_empty_non_terminals(zone: Zone) -> None:
    assert zone.exists("sub.example.test")  # only host.sub.example.test has records
    assert not zone.exists("nothing.example.test")


def test_records_pack_on_the_wire(zone: Zone) -> None:
    reply = dnslib.DNSRecord.question("example.test", "ANY").reply()
    reply.add_answer(*(r.rr for r in zone.records))
    parsed = dnslib.DNSRecord.parse(reply.pack())
    assert len(parsed.rr) == len(zone.records)


def test_defaults_without_ttl_or_soa() -> None:
    zone = parse_zone("example.test", "@ IN MX 10 mx1\nmx1 IN A 192.0.2.10\n")
    assert zone.ttl_directive is False
    assert zone.default_ttl == 3600
    assert {r.ttl for r in zone.records} == {3600}
    assert zone.lookup("example.test", "SOA") == ()
    assert str(zone.soa.rname) == "example.test."
    assert str(zone.soa.rdata.mname) == "ns.example.test."
    assert str(zone.soa.rdata.rname) == "hostmaster.example.test."
    assert zone.soa.rdata.times[0] == 1
    assert zone.soa.rdata.times[4] == 3600


def test_default_ttl_argument_feeds_records_and_synthesised_soa() -> None:
    zone = parse_zone("example.test", "mx1 IN A 192.0.2.10", default_ttl=120)
    assert zone.records[0].ttl == 120
    assert zone.soa.rdata.times[4] == 120


def test_null_mx_target_is_the_empty_name() -> None:
    zone = parse_zone("example.test", "@ IN MX 0 .")
    (mx,) = zone.records
    assert (mx.preference, mx.target, mx.rdata) == (0, "", "0 .")


def test_relative_name_without_dot_is_appended_to_the_origin() -> None:
    # The classic mistake: the zone says "mx1.example.test" meaning an absolute name.
    zone = parse_zone("example.test", "@ IN MX 10 mx1.example.test")
    assert zone.records[0].target == "mx1.example.test.example.test"


def test_omitted_owner_repeats_previous_owner_and_class_may_be_omitted() -> None:
    zone = parse_zone("example.test", "mx1 A 192.0.2.10\n\tAAAA 2001:db8::1\n")
    assert [(r.name, r.rtype) for r in zone.records] == [
        ("mx1.example.test", "A"),
        ("mx1.example.test", "AAAA"),
    ]


def test_uniformly_indented_text_is_dedented() -> None:
    zone = parse_zone("example.test", "    @ IN MX 10 mx1\n    mx1 IN A 192.0.2.10\n")
    assert [r.name for r in zone.records] == ["example.test", "mx1.example.test"]


def test_ttl_in_bind_units() -> None:
    zone = parse_zone("example.test", "$TTL 1h30m\nmx1 IN A 192.0.2.10\nmx2 2d A 192.0.2.11")
    assert [r.ttl for r in zone.records] == [5400, 172800]


def test_unicode_names_become_their_idna_form() -> None:
    zone = parse_zone("bücher.test", "@ IN MX 10 post\npost IN A 192.0.2.1\n")
    assert zone.apex == "xn--bcher-kva.test"
    assert zone.records[0].target == "post.xn--bcher-kva.test"
    assert zone.addresses_of("post.xn--bcher-kva.test") == ("192.0.2.1",)


def test_escapes_in_txt_strings() -> None:
    zone = parse_zone("example.test", '@ IN TXT "say \\"hi\\"" \\065\\;b\n')
    assert zone.records[0].rr.rdata.data == [b'say "hi"', b"A;b"]


def test_other_types_go_through_dnslib() -> None:
    zone = parse_zone("example.test", "_smtp._tcp IN SRV 10 5 25 mx1.example.test.\n")
    (srv,) = zone.records
    assert srv.rtype == "SRV"
    assert srv.rdata == "10 5 25 mx1.example.test."


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("@ IN MX 10 mx1\n@ IN MX 20\n", 2, "MX needs a preference and a host name"),
        ("@ IN MX ten mx1\n", 1, "not the MX preference"),
        ("; hosts\n\nmx1 IN A 192.0.2.300\n", 3, "not an IPv4 address"),
        ("mx1 IN AAAA 192.0.2.1\n", 1, "not an IPv6 address"),
        ("$TTL 1h\n@ IN SOA ns1 hostmaster (\n 1 2 3\n 4 5\n", 2, "never closed"),
        ("@ IN SOA ns1 hostmaster ( 1 2 3 4 )\n", 1, "SOA needs 7 fields"),
        ("mx1 IN A 192.0.2.1\n  )\n", 2, "without a '('"),
        ("\n\n@ IN MXX 10 mx1\n", 3, "unknown record type 'MXX'"),
        ('@ IN SPF "v=spf1 -all"\n', 1, "dnslib cannot read SPF"),
        ("www.example.org. IN A 192.0.2.1\n", 1, "outside the zone example.test"),
        ("$ORIGIN example.org.\nmx1 IN A 192.0.2.1\n", 2, "outside the zone"),
        ("; hosts\n  IN A 192.0.2.1\n", 2, "there is none yet"),
        ("@ IN MX 10 mx1\nIN MX 20 mx2\n", 2, "starts with 'IN'"),
        ("$TTL soon\n", 1, "not a TTL"),
        ('@ IN TXT "unterminated\n', 1, "no closing quote"),
        ("@ CH TXT hello\n", 1, "class IN only"),
        ("mx1..example.test. IN A 192.0.2.1\n", 1, "empty label"),
        ("@ IN\n", 1, "no type"),
        ("$INCLUDE other.zone\n", 1, "not supported"),
        ("$ORIGIN\n", 1, "$ORIGIN needs one name"),
        ("@ IN SOA ns1 hm 1 1h 1h 1w 1h\n@ IN SOA ns2 hm 2 1h 1h 1w 1h\n", 2, "second SOA"),
        ("www IN SOA ns1 hm 1 1h 1h 1w 1h\n", 1, "belongs at the zone's apex"),
        ("@ IN SRV 10 5\n", 1, "could not read the SRV data"),
        ("@ IN TXT " + "x" * 256 + "\n", 1, "longer than 255 bytes"),
        ("@ IN CNAME a b\n", 1, "CNAME needs one host name"),
        ("@ IN MX 70000 mx1\n", 1, "from 0 to 65535"),
    ],
)
def test_syntax_errors_name_the_line_and_the_mend(text: str, line: int, words: str) -> None:
    with pytest.raises(ZoneSyntaxError) as caught:
        parse_zone("example.test", text)
    assert caught.value.line == line
    assert words in caught.value.message
    assert str(caught.value).startswith(f"line {line}: ")


def test_find_zone_picks_the_longest_apex() -> None:
    parent = parse_zone("example.test", "mx1 IN A 192.0.2.1")
    child = parse_zone("sub.example.test", "mx1 IN A 192.0.2.2")
    zones = [parent, child]
    assert find_zone(zones, "mx1.sub.example.test.") is child
    assert find_zone(zones, "sub.example.test") is child
    assert find_zone(zones, "mx1.example.test") is parent
    assert find_zone(zones, "example.org") is None


def test_the_index_finds_the_longest_apex_by_walking_labels() -> None:
    root = parse_zone(".", "a IN A 192.0.2.9")
    parent = parse_zone("example.test", "mx1 IN A 192.0.2.1")
    child = parse_zone("sub.example.test", "mx1 IN A 192.0.2.2")
    again = parse_zone("example.test", "mx1 IN A 192.0.2.3")
    index = ZoneIndex([parent, child, again])
    assert index.find("MX1.Sub.Example.TEST.") is child
    assert index.find("deep.below.mx1.example.test") is parent  # the first of two apexes
    assert index.find("example.org") is None
    assert list(index) == [parent, child]
    assert "sub.example.test" in index
    with_root = ZoneIndex([root, child])
    assert with_root.find("example.test") is root
    assert with_root.find("") is root
    assert with_root.find("x.sub.example.test") is child


def test_directives_are_kept_with_their_lines_and_values() -> None:
    text = (
        "$TTL 1h\n"
        "@ IN MX 10 mx1\n"
        "$ORIGIN sub\n"  # relative: to the origin in force, the apex
        "mx1 IN A 192.0.2.1\n"
        "$ttl 0 ; lower case, with a comment\n"
        "$ORIGIN Other.Example.Test.\n"
        "mx2 IN A 192.0.2.2\n"
    )
    zone = parse_zone("example.test", text)
    assert zone.directives == (
        TtlDirective(line=1, ttl=3600),
        OriginDirective(line=3, origin="sub.example.test"),
        TtlDirective(line=5, ttl=0),
        OriginDirective(line=6, origin="other.example.test"),
    )
    assert zone.ttl_directive is True
    assert zone.default_ttl == 3600  # the first $TTL's
    assert [r.name for r in zone.records] == [
        "example.test",
        "mx1.sub.example.test",
        "mx2.other.example.test",
    ]


def test_root_zone_contains_every_name() -> None:
    root = parse_zone(".", "a.b IN A 192.0.2.1")
    assert root.apex == ""
    assert root.records[0].name == "a.b"
    assert root.contains("anything.at.all")
    assert root.exists("b")


def test_zones_and_records_are_hashable_values() -> None:
    one = parse_zone("example.test", "mx1 IN A 192.0.2.1")
    two = parse_zone("EXAMPLE.test.", "MX1 IN A 192.0.2.1")
    assert one == two
    assert len({one, two}) == 1
    assert len(set(one.records + two.records)) == 1


_ZONE_WORDS = st.sampled_from(
    [
        *'@$();"\\ \t\n\r.0123456789abmx:-_*²é',
        *("IN", "MX", "A", "AAAA", "SOA", "TXT", "CNAME", "NS", "SRV", "CAA", "LOC", "PTR"),
        *("$TTL", "$ORIGIN", "10", "1h", "192.0.2.1", "::1", "HTTPS"),
    ]
)


@settings(max_examples=300)
@given(st.lists(_ZONE_WORDS, max_size=40).map("".join))
def test_any_text_parses_or_fails_with_a_line(text: str) -> None:
    try:
        zone = parse_zone("example.test", text)
    except ZoneSyntaxError as error:
        assert 1 <= error.line <= max(1, text.count("\n") + 1)
    else:
        assert all(1 <= r.line <= text.count("\n") + 1 for r in zone.records)


_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)


@given(
    hosts=st.lists(
        st.tuples(_LABEL, st.integers(0, 65535), st.ip_addresses(v=4)), min_size=1, max_size=8
    ),
    blank_lines=st.lists(st.integers(0, 2), min_size=8, max_size=8),
)
def test_generated_zones_round_trip_with_their_lines(
    hosts: list[tuple[str, int, object]], blank_lines: list[int]
) -> None:
    lines: list[str] = []
    expected: list[tuple[int, str, int, str]] = []
    for (label, preference, address), blanks in zip(hosts, blank_lines, strict=False):
        lines += ["; a comment"] * blanks
        lines.append(f"@ IN MX {preference} {label}")
        expected.append((len(lines), "MX", preference, f"{label}.example.test"))
        lines.append(f"{label} IN A {address}")
        expected.append((len(lines), "A", 0, str(address)))
    zone = parse_zone("example.test", "\n".join(lines))
    got = [
        (r.line, r.rtype, r.preference or 0, r.target if r.rtype == "MX" else r.address)
        for r in zone.records
    ]
    assert got == expected
