"""The pure rules behind scripts that count and the ESMTP extensions, with hand-made inputs:
the host's phase cursor, its EHLO lines and MAIL/RCPT checks, and the sender's decisions
(``core.esmtp``, ``core.idn``). No loop, no sockets."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox import ScenarioError, scenario_from_mapping
from sandbox.core.esmtp import HELO_ONLY, Extensions, MessageFacts, mail_command, refuse_locally
from sandbox.core.idn import address_to_ascii, domain_to_ascii
from sandbox.core.policy import PROFILES
from sandbox.hosts.script import PhaseCursor, ehlo_lines, mail_refusal, rcpt_refusal
from sandbox.scenario.model import Behaviour, Esmtp, Limit, Phase, Reply, Timeline

REFUSE = Behaviour(connection="refuse")
ACCEPT = Behaviour()
BUSY = Behaviour(replies={"greeting": Reply(421, "4.3.2 busy")})


def cursor(*phases: Phase[Behaviour]) -> PhaseCursor:
    return PhaseCursor(Timeline(phases))


# --- the phase cursor -------------------------------------------------------------------------


def test_a_phase_ends_after_its_times_and_the_last_one_counted_still_belongs_to_it() -> None:
    c = cursor(Phase(None, BUSY, times=2), Phase(None, ACCEPT))
    assert c.count(0.0) == (0, False)
    assert c.count(0.0) == (0, True)  # the second: still the first phase's, and its last
    assert c.now(0.0) is ACCEPT
    assert c.count(1.0) == (1, False)
    assert c.counted_in(0, 5.0) is BUSY  # a session counted in phase 0 keeps playing it


def test_until_and_times_end_a_phase_at_whichever_comes_first() -> None:
    c = cursor(Phase(60.0, REFUSE, times=3), Phase(None, ACCEPT))
    c.count(0.0)
    assert c.now(59.0) is REFUSE
    assert c.now(60.0) is ACCEPT  # by time, with one attempt of three
    c = cursor(Phase(60.0, REFUSE, times=1), Phase(None, ACCEPT))
    assert c.count(1.0) == (0, True)
    assert c.now(2.0) is ACCEPT  # by count, long before the until


def test_a_later_phase_whose_until_passed_meanwhile_is_skipped() -> None:
    c = cursor(Phase(None, REFUSE, times=1), Phase(30.0, BUSY), Phase(None, ACCEPT))
    assert c.count(45.0) == (0, True)
    assert c.now(45.0) is ACCEPT
    # A session counted in a phase whose until has passed plays what is in force.
    c = cursor(Phase(30.0, BUSY, times=5), Phase(None, ACCEPT))
    index, _ = c.count(10.0)
    assert c.counted_in(index, 31.0) is ACCEPT


def test_a_mailbox_whose_replies_count_and_the_host_phase_they_belong_to() -> None:
    replies = Timeline(
        (Phase(None, Reply(451, "4.2.0 busy"), times=2), Phase(None, Reply(250, "ok")))
    )
    behaviour = Behaviour(recipient_phases={"carol@example.test": replies})
    c = cursor(Phase(None, behaviour))
    answers = [c.recipient_reply(0, behaviour, "Carol@Example.test") for _ in range(3)]
    assert [r.code for r in answers if r is not None] == [451, 451, 250]
    assert c.recipient_reply(0, behaviour, "alice@example.test") is None


@given(st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=4))
def test_counted_phases_take_exactly_their_times(counts: list[int]) -> None:
    behaviours = [Behaviour(greylist=float(i)) for i in range(len(counts) + 1)]
    phases = [Phase(None, b, times=n) for b, n in zip(behaviours, counts, strict=False)]
    c = cursor(*phases, Phase(None, behaviours[-1]))
    seen = [c.count(0.0)[0] for _ in range(sum(counts) + 3)]
    expected = [i for i, n in enumerate(counts) for _ in range(n)] + [len(counts)] * 3
    assert seen == expected


# --- the host's ESMTP ------------------------------------------------------------------------

AIOSMTPD_EHLO = ["250-mx1", "250-SIZE 33554432", "250-8BITMIME", "250-SMTPUTF8", "250 HELP"]


def test_ehlo_lines_say_what_esmtp_offers() -> None:
    assert ehlo_lines(Esmtp(), AIOSMTPD_EHLO) == AIOSMTPD_EHLO
    lean = Esmtp(size=None, pipelining=True, eightbitmime=False, smtputf8=False)
    assert ehlo_lines(lean, AIOSMTPD_EHLO) == ["250-mx1", "250-PIPELINING", "250 HELP"]


@pytest.mark.parametrize(
    ("esmtp", "arg", "expected"),
    [
        (Esmtp(size=100), "<a@b.test> SIZE=101", "552 5.3.4"),
        (Esmtp(size=100), "<a@b.test> SIZE=100", None),
        (Esmtp(size=None), "<a@b.test> SIZE=1", "555 5.5.4"),
        (Esmtp(eightbitmime=False), "<a@b.test> BODY=8BITMIME", "555 5.5.4"),
        (Esmtp(eightbitmime=False), "<a@b.test> BODY=7BIT", None),
        (Esmtp(smtputf8=False), "<a@b.test> SMTPUTF8", "555 5.5.4"),
        (Esmtp(), "<jörg@b.test>", "553 5.6.7"),
        (Esmtp(), "<jörg@b.test> SMTPUTF8", None),
        (Esmtp(), "<>", None),
    ],
)
def test_mail_is_checked_against_what_the_host_offers(
    esmtp: Esmtp, arg: str, expected: str | None
) -> None:
    refusal = mail_refusal(esmtp, arg)
    assert (refusal[:9] if refusal else None) == expected


def test_rcpt_that_is_not_ascii_needs_a_transaction_begun_with_smtputf8() -> None:
    assert rcpt_refusal("<zoë@b.test>", smtputf8=False) is not None
    assert rcpt_refusal("<zoë@b.test>", smtputf8=True) is None
    assert rcpt_refusal("<zoe@b.test>", smtputf8=False) is None


# --- the sender's ESMTP and IDN ---------------------------------------------------------------

EHLO = "mx1.example.test\nSIZE 1000\n8BITMIME\nSMTPUTF8\nHELP"
ASCII = MessageFacts(size=500, lines=10)
UTF8 = MessageFacts(size=500, lines=10, header_ascii=False, content_ascii=False)


def test_extensions_are_read_from_the_ehlo_reply() -> None:
    assert Extensions.parse(EHLO) == Extensions(1000, smtputf8=True, eightbitmime=True)
    assert Extensions.parse("mx1\nSIZE\nPIPELINING") == Extensions(0)
    assert Extensions.parse("mx1") == HELO_ONLY


@pytest.mark.parametrize(
    ("profile", "facts", "expected"),
    [
        ("postfix", ASCII, "MAIL FROM:<bob@example.net> SIZE=500"),
        ("exim", ASCII, "MAIL FROM:<bob@example.net> SIZE=1534"),
        ("haraka", ASCII, "MAIL FROM:<bob@example.net>"),
        ("postfix", UTF8, "MAIL FROM:<bob@example.net> SIZE=500 BODY=8BITMIME SMTPUTF8"),
        ("exim", UTF8, "MAIL FROM:<bob@example.net> SIZE=1534 SMTPUTF8"),
        ("haraka", UTF8, "MAIL FROM:<bob@example.net>"),
    ],
)
def test_mail_from_carries_what_each_mta_sends(
    profile: str, facts: MessageFacts, expected: str
) -> None:
    ext = Extensions.parse(EHLO)
    line = mail_command("bob@example.net", facts, ext, PROFILES[profile], ("a@b.test",))
    assert line == expected


def test_what_the_sender_keeps_from_a_host() -> None:
    small = Extensions(100, smtputf8=False)
    postfix, exim = PROFILES["postfix"], PROFILES["exim"]
    where = "mx1.example.test[192.0.2.10]"
    kept = refuse_locally(ASCII, small, postfix, sender="b@a", recipients=("c@d",), where=where)
    assert kept is not None and kept.dsn == "5.3.4"
    assert kept.text == f"message size 500 exceeds size limit 100 of server {where}"
    assert refuse_locally(ASCII, small, exim, sender="b@a", recipients=(), where=where) is None
    no_utf8 = Extensions(0)
    kept = refuse_locally(UTF8, no_utf8, postfix, sender="b@a", recipients=(), where=where)
    assert kept is not None and kept.dsn == "5.6.7"
    assert refuse_locally(UTF8, no_utf8, exim, sender="b@a", recipients=(), where=where) is None


def test_international_names_are_idna_2008() -> None:
    assert domain_to_ascii("Bücher.Test.") == "xn--bcher-kva.test"
    assert domain_to_ascii("faß.test") == "xn--fa-hia.test"  # IDNA 2003 would say fass.test
    assert domain_to_ascii("Example.TEST") == "example.test"
    with pytest.raises(ValueError, match="IDNA 2008"):
        domain_to_ascii("☃.test")
    assert address_to_ascii("jörg@bücher.test", local_part=False) == "jörg@xn--bcher-kva.test"
    assert address_to_ascii("jörg@bücher.test", local_part=True) == (
        "xn--jrg-sna@xn--bcher-kva.test"
    )


# --- the loader's sentences -------------------------------------------------------------------


def load_host(behaviour: object) -> Behaviour:
    scenario = scenario_from_mapping(
        {
            "name": "rules",
            "zones": {"example.test": "@ IN MX 10 mx1\nmx1 IN A 192.0.2.10\n"},
            "hosts": {"mx1.example.test": behaviour},
        }
    )
    return scenario.hosts["mx1.example.test"].initial


def test_the_loader_reads_limits_esmtp_and_counted_replies() -> None:
    host = load_host(
        {
            "max_messages": 2,
            "max_connections": {"limit": 1, "reply": "554 5.7.0 one at a time"},
            "esmtp": {"size": 10240, "8bitmime": False},
            "recipients": {"carol@example.test": [{"times": 1, "do": 451}, {"do": 250}]},
        }
    )
    assert host.max_messages is not None and host.max_messages.reply.code == 421
    assert host.max_connections == Limit(1, Reply(554, "5.7.0 one at a time"))
    assert host.esmtp == Esmtp(size=10240, eightbitmime=False)
    assert [p.times for p in host.recipient_phases["carol@example.test"].phases] == [1, None]


@pytest.mark.parametrize(
    ("behaviour", "sentence"),
    [
        ({"max_messages": 0}, "max_messages: 0 is not a whole number of 1 or more"),
        (
            {"max_connections": {"limit": 1, "reply": "250 ok"}},
            "max_connections.reply: 250 cannot answer the connection",
        ),
        (
            {"max_messages": {"limit": 1, "reply": "451 later", "when": 3}},
            "max_messages.when: unknown key 'when'",
        ),
        ({"esmtp": {"size": 0}}, "esmtp.size: 0 is not a size"),
        ({"esmtp": {"smtputf8": "no"}}, "esmtp.smtputf8: 'no' is not true or false"),
        ({"esmtp": {"starttls": True}}, "esmtp.starttls: unknown key 'starttls'"),
        (
            {"recipients": {"c@example.test": [{"until": "1h", "do": 451}, {"do": 250}]}},
            "a mailbox's replies change after a number of RCPTs",
        ),
        (
            {"recipients": {"c@example.test": [{"do": 451}, {"do": 250}]}},
            "every phase but the last needs times",
        ),
        (
            [
                {"times": 2, "until": "1h", "do": "refuse"},
                {"until": "30m", "do": "accept"},
                {"do": "accept"},
            ],
            "until 30m is not later than the previous phase's end",
        ),
    ],
)
def test_the_loader_says_what_is_wrong_with_them(behaviour: object, sentence: str) -> None:
    with pytest.raises(ScenarioError, match=re.escape(sentence)):
        load_host(behaviour)


def test_an_international_recipient_is_taken_and_one_idna_2008_refuses_is_not() -> None:
    def to(address: str) -> None:
        scenario_from_mapping(
            {"name": "idn", "messages": [{"from": "bob@example.net", "to": address}]}
        )

    to("jörg@bücher.test")
    with pytest.raises(ScenarioError, match="has no usable domain"):
        to("snow@☃.test")
