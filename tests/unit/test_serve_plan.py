"""Serve mode's pure parts: which loopback address plays each zone address, what DNS answers
for it, and a session in one line. No sockets."""

from __future__ import annotations

import dnslib
import pytest

from sandbox import SandboxError
from sandbox.dns.server import Authority
from sandbox.dns.zone import parse_zone
from sandbox.dns.zone import with_addresses as served_zone
from sandbox.hosts.transcript import session_outline
from sandbox.serve.plan import answer_for, loopback_plan


def test_addresses_outside_loopback_are_numbered_from_the_first() -> None:
    plan = loopback_plan(["192.0.2.10", "192.0.2.11", "2001:db8::25"], "127.0.0.2")
    assert plan == {
        "192.0.2.10": "127.0.0.2",
        "192.0.2.11": "127.0.0.3",
        "2001:db8::25": "127.0.0.4",
    }


def test_loopback_zone_addresses_keep_their_own_and_are_never_handed_out_twice() -> None:
    plan = loopback_plan(["192.0.2.10", "127.0.0.2", "::1", "192.0.2.11"], "127.0.0.2")
    assert plan == {
        "192.0.2.10": "127.0.0.3",
        "127.0.0.2": "127.0.0.2",
        "::1": "::1",
        "192.0.2.11": "127.0.0.4",
    }


def test_numbering_skips_the_ends_of_each_block_and_localhost() -> None:
    plan = loopback_plan(["192.0.2.1", "192.0.2.2", "192.0.2.3"], "127.0.0.254")
    assert list(plan.values()) == ["127.0.0.254", "127.0.1.1", "127.0.1.2"]
    assert loopback_plan(["192.0.2.1"], "127.0.0.1") == {"192.0.2.1": "127.0.0.2"}


def test_numbering_stays_inside_127_slash_8() -> None:
    with pytest.raises(SandboxError, match=r"more mail host addresses than 127\.0\.0\.0/8"):
        loopback_plan(["192.0.2.1", "192.0.2.2"], "127.255.255.254")
    with pytest.raises(SandboxError, match=r"not in 127\.0\.0\.0/8"):
        loopback_plan(["192.0.2.1"], "10.0.0.2")


def test_dns_answers_an_ipv6_zone_address_with_the_mapped_loopback_address() -> None:
    assert answer_for("192.0.2.10", "127.0.0.2") == "127.0.0.2"
    assert answer_for("2001:db8::25", "127.0.0.4") == "::ffff:127.0.0.4"
    assert answer_for("::1", "::1") == "::1"


ZONE = """\
$TTL 300
@     IN MX 10 mx1
@     IN MX 20 192.0.2.30.
mx1   IN A    192.0.2.10
mx1   IN AAAA 2001:db8::25
www   IN A    127.0.0.7
"""


def test_served_zone_swaps_addresses_and_keeps_everything_else() -> None:
    zone = parse_zone("example.test", ZONE)
    answers = {
        "192.0.2.10": "127.0.0.2",
        "2001:db8::25": "::ffff:127.0.0.3",
        "192.0.2.30": "127.0.0.4",
        "127.0.0.7": "127.0.0.7",
    }
    served = served_zone(zone, answers)
    shown = [(r.name, r.rtype, r.ttl, r.rdata, r.line) for r in served.records]
    assert shown == [
        ("example.test", "MX", 300, "10 mx1.example.test.", 2),
        ("example.test", "MX", 300, "20 127.0.0.4.", 3),
        ("mx1.example.test", "A", 300, "127.0.0.2", 4),
        ("mx1.example.test", "AAAA", 300, "::ffff:7f00:3", 5),
        ("www.example.test", "A", 300, "127.0.0.7", 6),
    ]
    assert served.records[2].address == "127.0.0.2"
    assert served.records[1].target == "127.0.0.4"
    assert served_zone(zone, {}) is zone


def test_the_authority_answers_from_the_served_zone() -> None:
    zone = served_zone(parse_zone("example.test", ZONE), {"192.0.2.10": "127.0.0.2"})
    reply = Authority([zone]).resolve(dnslib.DNSRecord.question("mx1.example.test", "A"))
    assert [str(rr.rdata) for rr in reply.rr] == ["127.0.0.2"]
    mx = Authority([zone]).resolve(dnslib.DNSRecord.question("example.test", "MX"))
    assert "127.0.0.2" in [str(rr.rdata) for rr in mx.ar]


def test_session_outline_pairs_each_command_with_its_reply() -> None:
    transcript = [
        (0.0, "S", "220 mx1 ESMTP"),
        (0.1, "C", "EHLO me"),
        (0.1, "S", "250-mx1"),
        (0.1, "S", "250 HELP"),
        (0.2, "C", "MAIL FROM:<a@b>"),
        (0.2, "S", "250 2.1.0 Ok"),
        (0.3, "C", "rcpt TO:<c@d>"),
        (0.3, "S", "451 4.7.1 Greylisted"),
        (0.4, "C", "DATA"),
        (0.4, "S", "354 go"),
        (0.5, "C", "<message: 12 bytes>"),
    ]
    assert session_outline(transcript) == (
        "220, EHLO→250, MAIL→250, RCPT→451, DATA→354, <message>→…"
    )
    assert session_outline([]) == "(nothing said)"
