"""The route to a domain (RFC 5321 §5.1), fed hand-made answers: no sockets, no loop."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from sandbox import PROFILES, Profile
from sandbox.core.mx import Answer, MxRecord, NoRoute, Query, Resolution, Route, order_mx

POSTFIX = Profile()


def mx(*records: tuple[int, str]) -> Answer:
    return Answer("example.test", "MX", "NOERROR", mx=tuple(MxRecord(p, h) for p, h in records))


def addresses(zone: dict[tuple[str, str], Answer]):
    """Answer every question from a dict; a missing A/AAAA is NODATA."""

    def answer(query: Query) -> Answer:
        return zone.get((query.name, query.rdtype), Answer(query.name, query.rdtype, "NOERROR"))

    return answer


def resolve(
    first: Answer,
    zone: dict[tuple[str, str], Answer] | None = None,
    profile: Profile = POSTFIX,
    seed: int = 0,
) -> tuple[Route | NoRoute, list[Query]]:
    resolution = Resolution("example.test", profile, random.Random(seed))
    asked = []
    answer_for = addresses(zone or {})
    while (query := resolution.next_query()) is not None:
        asked.append(query)
        resolution.feed(first if query.rdtype == "MX" else answer_for(query))
    assert resolution.result is not None
    return resolution.result, asked


def a(name: str, *ips: str, rdtype: str = "A") -> tuple[tuple[str, str], Answer]:
    return (name, rdtype), Answer(name, rdtype, "NOERROR", addresses=ips)


def test_lowest_preference_first_and_every_address_in_order() -> None:
    route, asked = resolve(
        mx((20, "mx2.example.test"), (10, "mx1.example.test")),
        dict(
            [
                a("mx1.example.test", "192.0.2.10", "192.0.2.12"),
                a("mx1.example.test", "2001:db8::10", rdtype="AAAA"),
                a("mx2.example.test", "192.0.2.11"),
            ]
        ),
    )
    assert isinstance(route, Route)
    assert [(c.host, c.address) for c in route.candidates] == [
        ("mx1.example.test", "192.0.2.10"),
        ("mx1.example.test", "192.0.2.12"),
        ("mx1.example.test", "2001:db8::10"),
        ("mx2.example.test", "192.0.2.11"),
    ]
    assert asked[0] == Query("example.test", "MX")
    assert asked[1:] == [
        Query("mx1.example.test", "A"),
        Query("mx1.example.test", "AAAA"),
        Query("mx2.example.test", "A"),
        Query("mx2.example.test", "AAAA"),
    ]


def test_equal_preferences_are_shuffled_by_the_seed_only() -> None:
    records = (MxRecord(10, "a"), MxRecord(10, "b"), MxRecord(10, "c"), MxRecord(20, "z"))
    firsts = Counter(order_mx(records, random.Random(seed))[0].exchange for seed in range(300))
    assert set(firsts) == {"a", "b", "c"}
    assert all(n > 60 for n in firsts.values())
    assert order_mx(records, random.Random(5)) == order_mx(records, random.Random(5))
    assert all(order_mx(records, random.Random(s))[-1].exchange == "z" for s in range(50))


def test_null_mx_bounces_with_5_1_10_and_asks_nothing_more() -> None:
    route, asked = resolve(mx((0, "")))
    assert isinstance(route, NoRoute)
    assert (route.kind, route.permanent, route.dsn) == ("null", True, "5.1.10")
    assert asked == [Query("example.test", "MX")]
    assert route.warnings == ()


def test_null_mx_mixed_with_real_records_takes_no_mail_with_a_warning() -> None:
    route, _ = resolve(mx((0, ""), (10, "mx1.example.test")))
    assert isinstance(route, NoRoute)
    assert route.dsn == "5.1.10"
    assert "RFC 7505" in route.warnings[0]


def test_no_mx_records_means_the_implicit_mx() -> None:
    nodata = Answer("example.test", "MX", "NOERROR")
    route, _asked = resolve(nodata, dict([a("example.test", "192.0.2.50")]))
    assert isinstance(route, Route)
    assert route.kind == "implicit"
    assert [(c.host, c.address, c.preference) for c in route.candidates] == [
        ("example.test", "192.0.2.50", 0)
    ]


def test_with_mx_records_the_domains_own_address_is_never_used() -> None:
    route, asked = resolve(
        mx((10, "mx1.example.test")),
        dict([a("example.test", "192.0.2.99"), a("mx1.example.test", "192.0.2.10")]),
    )
    assert isinstance(route, Route)
    assert Query("example.test", "A") not in asked
    assert [c.address for c in route.candidates] == ["192.0.2.10"]


@pytest.mark.parametrize(
    ("rcode", "permanent", "dsn"),
    [("NXDOMAIN", True, "5.4.4"), ("SERVFAIL", False, "4.4.3"), ("TIMEOUT", False, "4.4.3")],
)
def test_mx_lookup_failures(rcode: str, permanent: bool, dsn: str) -> None:
    route, _ = resolve(Answer("example.test", "MX", rcode))  # type: ignore[arg-type]
    assert isinstance(route, NoRoute)
    assert (route.permanent, route.dsn) == (permanent, dsn)


def test_mx_hosts_without_addresses_bounce_but_a_dns_failure_defers() -> None:
    route, _ = resolve(mx((10, "mx1.example.test")))
    assert isinstance(route, NoRoute) and (route.kind, route.dsn) == ("no_address", "5.4.4")
    failing = {("mx1.example.test", "A"): Answer("mx1.example.test", "A", "SERVFAIL")}
    route, _ = resolve(mx((10, "mx1.example.test")), failing)
    assert isinstance(route, NoRoute) and (route.permanent, route.dsn) == (False, "4.4.3")


def test_a_host_without_address_is_skipped_and_the_next_one_used() -> None:
    route, _ = resolve(
        mx((10, "mx1.example.test"), (20, "mx2.example.test")),
        dict([a("mx2.example.test", "192.0.2.11")]),
    )
    assert isinstance(route, Route)
    assert [c.host for c in route.candidates] == ["mx2.example.test"]
    assert route.hosts[0].addresses == ()


def test_cname_follow_warns_and_reject_skips() -> None:
    aliased = {
        ("mail.example.test", "A"): Answer(
            "mail.example.test",
            "A",
            "NOERROR",
            addresses=("192.0.2.30",),
            cnames=("server1.example.test",),
        )
    }
    route, _ = resolve(mx((10, "mail.example.test")), aliased)
    assert isinstance(route, Route)
    assert [c.address for c in route.candidates] == ["192.0.2.30"]
    assert "RFC 2181 §10.3" in route.warnings[0]
    route, asked = resolve(mx((10, "mail.example.test")), aliased, profile=Profile(cname="reject"))
    assert isinstance(route, NoRoute)
    assert Query("mail.example.test", "AAAA") not in asked


def test_ip_literal_is_used_or_rejected_by_policy() -> None:
    route, asked = resolve(mx((10, "192.0.2.40")))
    assert isinstance(route, Route)
    assert [c.address for c in route.candidates] == ["192.0.2.40"]
    assert asked == [Query("example.test", "MX")]
    route, _ = resolve(mx((10, "192.0.2.40")), profile=Profile(ip_literal="reject"))
    assert isinstance(route, NoRoute)


def test_own_address_discards_its_preference_and_worse() -> None:
    zone = dict(
        [
            a("mx1.example.test", "192.0.2.10"),
            a("mx2.example.test", "192.0.2.11"),
            a("mx3.example.test", "192.0.2.12"),
        ]
    )
    records = mx((10, "mx1.example.test"), (20, "mx2.example.test"), (30, "mx3.example.test"))
    route, _ = resolve(records, zone, profile=Profile(address="192.0.2.11"))
    assert isinstance(route, Route)
    assert [c.host for c in route.candidates] == ["mx1.example.test"]
    assert route.warnings == ()
    assert route.discarded.startswith("this sender (192.0.2.11) is itself an MX")
    route, _ = resolve(records, zone, profile=Profile(address="192.0.2.10"))
    assert isinstance(route, NoRoute) and route.dsn == "5.4.6"


def test_address_limit_keeps_the_first_five() -> None:
    zone = dict([a(f"mx{i}.example.test", f"192.0.2.{i}", f"192.0.2.{100 + i}") for i in range(4)])
    route, _ = resolve(mx(*((10 * (i + 1), f"mx{i}.example.test") for i in range(4))), zone)
    assert isinstance(route, Route)
    assert len(route.candidates) == 5
    assert route.candidates[-1].address == "192.0.2.2"


NXDOMAIN_HOST = {("mx1.example.test", "A"): Answer("mx1.example.test", "A", "NXDOMAIN")}


@pytest.mark.parametrize(
    ("profile", "first", "zone", "reply"),
    [
        ("postfix", mx((0, "")), {}, "Domain example.test does not accept mail (nullMX)"),
        (
            "postfix",
            Answer("example.test", "MX", "NXDOMAIN"),
            {},
            "Host or domain name not found. Name service error for name=example.test type=A: "
            "Host not found",
        ),
        (
            "postfix",
            Answer("example.test", "MX", "SERVFAIL"),
            {},
            "Host or domain name not found. Name service error for name=example.test type=MX: "
            "Host not found, try again",
        ),
        (
            "postfix",
            mx((10, "mx1.example.test")),
            {},
            "Host or domain name not found. Name service error for name=mx1.example.test "
            "type=A: Host found but no data record of requested type",
        ),
        (
            "postfix",
            mx((10, "mx1.example.test")),
            NXDOMAIN_HOST,
            "Host or domain name not found. Name service error for name=mx1.example.test "
            "type=A: Host not found",
        ),
        ("exim", mx((0, "")), {}, "an MX or SRV record indicated no SMTP service"),
        ("exim", Answer("example.test", "MX", "NXDOMAIN"), {}, "Unrouteable address"),
        (
            "exim",
            mx((10, "mx1.example.test")),
            {},
            "all relevant MX records point to non-existent hosts",
        ),
        (
            "exim",
            mx((10, "127.0.0.60")),
            {},
            "all relevant MX records point to non-existent hosts or (invalidly) to IP addresses",
        ),
        ("haraka", mx((0, "")), {}, "Domain example.test sends and receives no email (NULL MX)"),
        (
            "haraka",
            Answer("example.test", "MX", "NXDOMAIN"),
            {},
            "Nowhere to deliver mail to for domain: example.test",
        ),
        (
            "haraka",
            Answer("example.test", "MX", "SERVFAIL"),
            {},
            "DNS lookup failure: Error: queryMx ESERVFAIL example.test",
        ),
        ("haraka", mx((10, "mx1.example.test")), {}, "Tried all MXs"),
        ("rfc5321", mx((0, "")), {}, "example.test publishes a null MX: it accepts no mail"),
    ],
)
def test_a_failed_route_replies_in_the_words_of_the_mta_the_profile_follows(
    profile: str, first: Answer, zone: dict[tuple[str, str], Answer], reply: str
) -> None:
    route, _ = resolve(first, zone, profile=PROFILES[profile])
    assert isinstance(route, NoRoute)
    assert route.reply == reply
