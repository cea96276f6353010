"""The scenario loader: YAML -> the typed model, and errors that say FILE:LINE: KEY and how to
mend it. Broken examples live in tests/data/broken/, one mistake per file."""

from __future__ import annotations

import contextlib
import re
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox import (
    Scenario,
    ScenarioError,
    load_scenario,
    load_scenario_text,
    scenario_from_mapping,
)
from sandbox.dns.zone import TtlDirective
from sandbox.scenario.load import host_behaviour
from sandbox.scenario.model import (
    Behaviour,
    DeliveryExpectation,
    DnsBehaviour,
    HostExpectation,
    MessageSpec,
    Phase,
    Reply,
    Timeline,
    describe_timeline,
)

BROKEN = Path(__file__).parent.parent / "data" / "broken"

DESIGN_EXAMPLE = """\
name: primary-down
title: The primary MX refuses connections; the backup takes the mail
description: |
  mx1 (preference 10) refuses the connection, so the sender moves on to
  mx2 (preference 20) in the same delivery attempt.
seed: 7
zones:
  example.test: |
    $TTL 3600
    @     IN MX 10 mx1.example.test.
    @     IN MX 20 mx2.example.test.
    mx1   IN A  192.0.2.10
    mx2   IN A  192.0.2.11
hosts:                        # by host name (all its addresses) or by address
  mx1.example.test: refuse
  mx2.example.test: accept
messages:
  - from: bob@example.net
    to: alice@example.test
sender:
  profile: postfix
expect:
  - {message: 1, status: delivered, host: mx2.example.test}
  - {message: 1, attempts: 1}
"""

EVERYTHING = """\
name: everything
seed: 3
until: 5d
zones:
  Example.Test.:
    - until: 1h
      zone: |
        @    IN MX 10 mx1
        mx1  IN A  192.0.2.10
    - zone: |
        @    IN MX 10 mx1
        @    IN MX 20 mx2
        mx1  IN A  192.0.2.10
        mx2  IN AAAA 2001:DB8::25
hosts:
  MX1.example.test.:
    - {until: 2h, do: refuse}
    - until: 3h
      do: {greeting: "421 4.3.2 Shutting down", rcpt: 451}
    - do: accept
  2001:db8::25:
    recipients: {"carol@Example.TEST": "550 5.1.1 No such user"}
    disconnect: message
    delay: {greeting: 5m, data: 30}
    greylist: 10m
dns:
  example.test: servfail
  mx2.example.test: [{until: 30m, do: timeout}, {do: answer}]
messages:
  - from: ""
    to: [alice@example.test, carol@example.test]
    count: 2
    at: 1m
  - {from: <bob@example.net>, to: alice@example.test}
sender:
  profile: postfix
  connect_timeout: 10s
  max_sessions: 3
  skip_5xx_greeting: false
  cname: reject
  helo_name: client.example.net
  address: 2001:DB8::1
  delay_warning: 4h
expect:
  - message: all
    status: delivered
    after: 1m
    before: 2d
  - {message: 2, recipient: carol@example.test, status: bounced, dsn: "5.1.1", attempts: 1}
  - {message: 3, host: mx1.example.test}
  - {host: 2001:db8::25, accepted: 2, connections: 4, share: 0.5, tolerance: 0.2}
"""


def load_broken(name: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as caught:
        load_scenario(BROKEN / name)
    return caught.value


# --- every broken fixture: exact file, line and key, and a phrase that says how to mend it ----

BROKEN_CASES = [
    ("tab_indent.yaml", 3, "", "indent with spaces"),
    ("unclosed_quote.yaml", 2, "", "add the closing quote"),
    ("top_level_list.yaml", 1, "", "expected a mapping of keys such as name"),
    ("missing_name.yaml", 2, "name", "add a short slug such as 'name: primary-down'"),
    ("name_not_slug.yaml", 1, "name", "such as 'primary-down'"),
    ("unknown_top_key.yaml", 5, "hots", "unknown key 'hots'; did you mean 'hosts'? allowed: name"),
    ("unknown_message_key.yaml", 7, "messages[1].cout", "did you mean 'count'? allowed: from"),
    ("bad_duration.yaml", 2, "until", "such as 30s, 5m, 2h or 5d"),
    ("reply_code_999.yaml", 7, "hosts.mx1.example.test.greeting", "outside 200-599; use a 4xx"),
    ("reply_without_code.yaml", 6, "hosts.mx1.example.test.greeting", "write a reply such as"),
    (
        "reply_code_wrong_stage.yaml",
        7,
        "hosts.mx1.example.test.greeting",
        "221 cannot answer the connection (the greeting); RFC 5321 §4.3.2 gives it 220",
    ),
    ("unknown_stage.yaml", 7, "hosts.mx1.example.test.helo", "did you mean 'ehlo'?"),
    (
        "unknown_disconnect_stage.yaml",
        7,
        "hosts.mx1.example.test.disconnect",
        "use one of: greeting, ehlo, starttls, mail, rcpt, data, message",
    ),
    ("misplaced_phase_key.yaml", 6, "hosts.mx1.example.test.until", "which go in a list"),
    ("zone_syntax.yaml", 6, "zones.example.test", "not an IPv4 address"),
    ("zone_phase_syntax.yaml", 10, "zones.example.test[1].zone", "unknown record type 'BOGUS'"),
    (
        "host_not_in_zone.yaml",
        10,
        "hosts.mx3.example.test",
        "add 'mx3 IN A 192.0.2.12' to example.test or remove it",
    ),
    ("phases_out_of_order.yaml", 8, "hosts.mx1.example.test[1].until", "in time order"),
    (
        "last_phase_until.yaml",
        9,
        "hosts.mx1.example.test[1].until",
        "remove it or add a final phase such as {do: …}",
    ),
    ("bad_status.yaml", 6, "expect[0].status", "did you mean 'delivered'?"),
    ("message_out_of_range.yaml", 8, "expect[1].message", "use a number from 1 to 2, or all"),
    ("expect_unknown_host.yaml", 6, "expect[0].host", "did you mean 'mx1.example.test'?"),
    ("bad_dsn.yaml", 5, "expect[0].dsn", 'such as "5.1.1"'),
    ("unknown_profile.yaml", 3, "sender.profile", "use one of: postfix"),
    ("bad_sender_override.yaml", 5, "sender.max_sessions", "write one such as 5"),
    ("unknown_sender_key.yaml", 3, "sender.conect_timeout", "did you mean 'connect_timeout'?"),
    ("duplicate_key.yaml", 7, "hosts.mx1.example.test", "appears twice"),
    ("to_without_at.yaml", 4, "messages[0].to", "write to as local@domain"),
    ("from_without_at.yaml", 3, "messages[0].from", 'or "" for a null reverse-path'),
    ("seed_not_integer.yaml", 2, "seed", "such as 7"),
]


@pytest.mark.parametrize(("fixture", "line", "key", "phrase"), BROKEN_CASES)
def test_broken_fixture_names_file_line_key_and_mend(
    fixture: str, line: int, key: str, phrase: str
) -> None:
    error = load_broken(fixture)
    assert error.file == str(BROKEN / fixture)
    assert (error.line, error.key) == (line, key)
    assert phrase in error.message
    expected_where = f"{BROKEN / fixture}:{line}: " + (f"{key}: " if key else "")
    assert str(error).startswith(expected_where)


def test_every_broken_fixture_has_a_case() -> None:
    on_disk = {path.name for path in BROKEN.glob("*.yaml")}
    assert on_disk == {case[0] for case in BROKEN_CASES}


@pytest.mark.parametrize("fixture", sorted(case[0] for case in BROKEN_CASES))
def test_broken_fixture_message_is_one_line(fixture: str) -> None:
    error = load_broken(fixture)
    assert "\n" not in str(error)
    assert "Traceback" not in str(error)
    assert error.__cause__ is None


# --- files and YAML --------------------------------------------------------------------------


def test_missing_file_is_a_scenario_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(ScenarioError, match="no such file; check the path") as caught:
        load_scenario(path)
    assert caught.value.file == str(path)


def test_directory_is_a_scenario_error(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="this is a directory"):
        load_scenario(tmp_path)


def test_non_utf8_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: x\ntitle: caf\xe9\n")
    with pytest.raises(ScenarioError, match="save it as UTF-8") as caught:
        load_scenario(path)
    assert caught.value.line == 2


def test_empty_text_says_what_was_expected() -> None:
    with pytest.raises(ScenarioError, match="found an empty file"):
        load_scenario_text("# nothing yet\n", "empty.yaml")


def test_scalar_document_says_what_was_expected() -> None:
    with pytest.raises(ScenarioError, match="at the top of the file, found 'just text'"):
        load_scenario_text("just text\n")


def test_two_documents_are_refused() -> None:
    with pytest.raises(ScenarioError, match="one scenario per file") as caught:
        load_scenario_text("name: a\n---\nname: b\n", "two.yaml")
    assert caught.value.line == 2


def test_bad_explicit_tag_is_a_scenario_error() -> None:
    with pytest.raises(ScenarioError, match="remove its '!!' tag") as caught:
        load_scenario_text("name: x\nseed: !!float seven\n")
    assert caught.value.line == 2


def test_control_character_names_its_line() -> None:
    with pytest.raises(ScenarioError, match="not allowed in YAML") as caught:
        load_scenario_text("name: x\ntitle: a\x00b\n")
    assert caught.value.line == 2


def test_dates_stay_text() -> None:
    scenario = load_scenario_text("name: dated\ntitle: 2024-05-01\n")
    assert scenario.title == "2024-05-01"


def test_anchors_and_merge_keys_are_not_duplicates() -> None:
    text = """\
name: anchors
zones:
  example.test: |
    mx1 IN A 192.0.2.10
    mx2 IN A 192.0.2.11
hosts:
  mx1.example.test: &slow {delay: {greeting: 5m}, rcpt: "451 4.3.0 Busy"}
  mx2.example.test:
    <<: *slow
    rcpt: "452 4.2.2 Full"
"""
    scenario = load_scenario_text(text)
    mx2 = scenario.hosts["mx2.example.test"].initial
    assert mx2.delays == {"greeting": 300.0}
    assert mx2.replies == {"rcpt": Reply(452, "4.2.2 Full")}


def test_duplicate_top_level_key_points_at_the_second() -> None:
    with pytest.raises(ScenarioError, match=r"first on line 1\)") as caught:
        load_scenario_text("name: a\nseed: 1\nname: b\n", "dup.yaml")
    assert (caught.value.line, caught.value.key) == (3, "name")


# --- the valid examples ----------------------------------------------------------------------


def test_design_example_loads() -> None:
    scenario = load_scenario_text(DESIGN_EXAMPLE, "primary-down.yaml")
    assert scenario.name == "primary-down"
    assert scenario.source == "primary-down.yaml"
    assert scenario.title.startswith("The primary MX refuses")
    assert scenario.description.startswith("mx1 (preference 10)")
    assert scenario.seed == 7
    assert scenario.until is None
    (zone,) = scenario.zones
    assert zone.apex == "example.test"
    assert zone.line == 9
    parsed = zone.phases.initial  # parsed by the loader, once
    assert [(r.target, r.line) for r in parsed.lookup("example.test", "MX")] == [
        ("mx1.example.test", 2),
        ("mx2.example.test", 3),
    ]
    assert parsed.directives == (TtlDirective(line=1, ttl=3600),)
    assert scenario.hosts == {
        "mx1.example.test": Timeline.constant(Behaviour(connection="refuse")),
        "mx2.example.test": Timeline.constant(Behaviour()),
    }
    assert scenario.messages == (MessageSpec(1, "bob@example.net", ("alice@example.test",), 0.0),)
    assert scenario.sender.profile == "postfix"
    assert scenario.sender.overrides == {}
    assert scenario.expect == (
        DeliveryExpectation(message=1, status="delivered", host="mx2.example.test", line=23),
        DeliveryExpectation(message=1, attempts=1, line=24),
    )


def test_design_example_loads_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "primary-down.yaml"
    path.write_text(DESIGN_EXAMPLE, encoding="utf-8")
    scenario = load_scenario(path)
    assert scenario.source == str(path)
    assert scenario == load_scenario_text(DESIGN_EXAMPLE, str(path))


@pytest.fixture(scope="module")
def everything() -> Scenario:
    return load_scenario_text(EVERYTHING, "everything.yaml")


def test_zone_phases_and_names(everything: Scenario) -> None:
    (zone,) = everything.zones
    assert zone.apex == "example.test"
    assert zone.phases.boundaries == (3600.0,)
    assert zone.phases.at(3600.0).addresses_of("mx2.example.test") == ("2001:db8::25",)
    assert zone.phases.at(0.0).addresses_of("mx2.example.test") == ()
    assert zone.line == 8  # the line after the first phase's `zone: |`


def test_host_phases(everything: Scenario) -> None:
    mx1 = everything.hosts["mx1.example.test"]
    assert mx1 == Timeline(
        (
            Phase(7200.0, Behaviour(connection="refuse")),
            Phase(
                10800.0,
                Behaviour(
                    replies={
                        "greeting": Reply(421, "4.3.2 Shutting down"),
                        "rcpt": Reply(451, ""),
                    }
                ),
            ),
            Phase(None, Behaviour()),
        )
    )
    assert mx1.initial.describe() == "refuse"
    assert mx1.phases[1].value.replies["greeting"].closes


def test_host_by_address_with_combined_behaviour(everything: Scenario) -> None:
    behaviour = everything.hosts["2001:db8::25"].initial
    assert behaviour == Behaviour(
        recipients={"carol@example.test": Reply(550, "5.1.1 No such user")},
        disconnect="message",
        delays={"greeting": 300.0, "data": 30.0},
        greylist=600.0,
    )


def test_dns_behaviours(everything: Scenario) -> None:
    assert everything.dns == {
        "example.test": Timeline.constant(DnsBehaviour("servfail")),
        "mx2.example.test": Timeline(
            (Phase(1800.0, DnsBehaviour("timeout")), Phase(None, DnsBehaviour("answer")))
        ),
    }


def test_messages_expand_count_in_file_order(everything: Scenario) -> None:
    both = ("alice@example.test", "carol@example.test")
    assert everything.messages == (
        MessageSpec(1, "", both, 60.0),
        MessageSpec(2, "", both, 60.0),
        MessageSpec(3, "bob@example.net", ("alice@example.test",), 0.0),
    )


def test_sender_overrides_are_typed(everything: Scenario) -> None:
    assert everything.sender.profile == "postfix"
    assert everything.sender.overrides == {
        "connect_timeout": 10.0,
        "max_sessions": 3,
        "skip_5xx_greeting": False,
        "cname": "reject",
        "helo_name": "client.example.net",
        "address": "2001:db8::1",
        "delay_warning": 14400.0,
    }


def test_expectations(everything: Scenario) -> None:
    assert everything.until == 5 * 86400.0
    assert everything.seed == 3
    assert everything.expect == (
        DeliveryExpectation(
            message="all", status="delivered", after=60.0, before=172800.0, line=45
        ),
        DeliveryExpectation(
            message=2,
            recipient="carol@example.test",
            status="bounced",
            dsn="5.1.1",
            attempts=1,
            line=49,
        ),
        DeliveryExpectation(message=3, host="mx1.example.test", line=50),
        HostExpectation(
            host="2001:db8::25", accepted=2, connections=4, share=0.5, tolerance=0.2, line=51
        ),
    )


# --- inline mappings (the pytest plugin) -----------------------------------------------------


def inline_scenario() -> dict[str, object]:
    return {
        "name": "inline",
        "zones": {"example.test": "@ IN MX 10 mx1\nmx1 IN A 192.0.2.10\n"},
        "hosts": {"mx1.example.test": [{"until": "1h", "do": "refuse"}, {"do": "accept"}]},
        "messages": [{"from": "bob@example.net", "to": "alice@example.test", "count": 2}],
        "expect": [{"message": "all", "status": "delivered"}],
    }


def test_inline_mapping_loads() -> None:
    scenario = scenario_from_mapping(inline_scenario())
    assert scenario.source == "<inline>"
    assert scenario.zones[0].line is None
    assert scenario.hosts["mx1.example.test"].at(3599.0) == Behaviour(connection="refuse")
    assert scenario.hosts["mx1.example.test"].at(3600.0) == Behaviour()
    assert [m.number for m in scenario.messages] == [1, 2]
    assert scenario.expect == (DeliveryExpectation(message="all", status="delivered"),)


def test_inline_mapping_errors_have_key_paths_but_no_lines() -> None:
    data = inline_scenario()
    data["messages"] = [{"from": "bob@example.net", "to": ["alice@example.test", "nobody"]}]
    with pytest.raises(ScenarioError) as caught:
        scenario_from_mapping(data, "test_thing")
    assert (caught.value.file, caught.value.line) == ("test_thing", None)
    assert caught.value.key == "messages[0].to[1]"
    assert str(caught.value).startswith("test_thing: messages[0].to[1]: 'nobody'")


def test_inline_mapping_that_is_not_a_mapping() -> None:
    with pytest.raises(ScenarioError, match="found a list"):
        scenario_from_mapping([1, 2])  # type: ignore[arg-type]


# --- smaller rules ---------------------------------------------------------------------------


def scenario_with(extra: str) -> str:
    return (
        "name: small\nzones:\n  example.test: |\n    mx1 IN A 192.0.2.10\n"
        "messages:\n  - {from: bob@example.net, to: alice@example.test}\n" + extra
    )


@pytest.mark.parametrize(
    ("extra", "key", "phrase"),
    [
        ("hosts:\n  mx1.example.test: refused\n", "hosts.mx1.example.test", "'refuse'?"),
        ("hosts:\n  192.0.2.99: accept\n", "hosts.192.0.2.99", "appears in no zone"),
        ("hosts:\n  mx1.other.test: accept\n", "hosts.mx1.other.test", "add a zone such as"),
        ("hosts:\n  mx1.example.test: []\n", "hosts.mx1.example.test", "at least one phase"),
        (
            "hosts:\n  mx1.example.test: [{do: refuse}, {do: accept}]\n",
            "hosts.mx1.example.test[0].until",
            "add until: DURATION",
        ),
        (
            "hosts:\n  mx1.example.test: [{until: 1h, greeting: '421 x'}, {do: accept}]\n",
            "hosts.mx1.example.test[0].greeting",
            "goes under do",
        ),
        (
            "hosts:\n  mx1.example.test: {delay: {dot: 5m}}\n",
            "hosts.mx1.example.test.delay.dot",
            "use one of: greeting",
        ),
        (
            "hosts:\n  mx1.example.test: {recipients: {carol: '550 5.1.1 No'}}\n",
            "hosts.mx1.example.test.recipients.carol",
            "local@domain",
        ),
        (
            "hosts:\n  mx1.example.test: {greylist: soon}\n",
            "hosts.mx1.example.test.greylist",
            "not a duration",
        ),
        ("dns:\n  example.test: broken\n", "dns.example.test", "use one of: answer"),
        ("expect:\n  - {status: delivered}\n", "expect[0]", "add one of them"),
        ("expect:\n  - {message: 1, accepted: 1}\n", "expect[0].accepted", "its own"),
        (
            "expect:\n  - {host: mx1.example.test, status: delivered}\n",
            "expect[0].status",
            "add message: N",
        ),
        (
            "expect:\n  - {message: 1, recipient: carol@example.test}\n",
            "expect[0].recipient",
            "use one of: alice@example.test",
        ),
        ("expect:\n  - {message: 1, after: 2h, before: 1h}\n", "expect[0].before", "swap them"),
        ("expect:\n  - {host: mx1.example.test, share: 1.5}\n", "expect[0].share", "0 to 1"),
        ("expect:\n  - {message: 0}\n", "expect[0].message", "write 1, 2, … or all"),
        ("sender:\n  cname: follw\n", "sender.cname", "did you mean 'follow'?"),
        ("sender:\n  skip_5xx_greeting: maybe\n", "sender.skip_5xx_greeting", "true or false"),
        ("sender:\n  address: somewhere\n", "sender.address", "not an IP address"),
        ("sender: postfix\n", "sender", "such as {profile: postfix}"),
        ("until: .inf\n", "until", "not a finite duration"),
        ("title: [a, b]\n", "title", "put it in quotes"),
    ],
)
def test_small_rules(extra: str, key: str, phrase: str) -> None:
    text = scenario_with(extra)
    with pytest.raises(ScenarioError) as caught:
        load_scenario_text(text, "small.yaml")
    assert caught.value.key == key
    assert phrase in caught.value.message
    assert caught.value.line is not None and caught.value.line > 6


def test_message_without_from_names_the_message_line() -> None:
    text = "name: x\nmessages:\n  - to: alice@example.test\n"
    with pytest.raises(ScenarioError, match="from is missing; add from:") as caught:
        load_scenario_text(text)
    assert (caught.value.line, caught.value.key) == (3, "messages[0].from")


def test_huge_count_is_refused_before_expanding() -> None:
    text = "name: x\nmessages:\n  - {from: a@b.test, to: c@d.test, count: 1000000000000}\n"
    with pytest.raises(ScenarioError, match="use a smaller count"):
        load_scenario_text(text)


def test_names_are_normalised() -> None:
    text = (
        "name: x\nzones:\n  EXAMPLE.test.: |\n    MX1 IN A 192.0.2.10\n"
        "hosts:\n  Mx1.Example.Test.: silent\n  192.000.2.10: timeout\n"
    )
    with pytest.raises(ScenarioError):  # 192.000.2.10 is no address, nor a name any zone has
        load_scenario_text(text)
    scenario = load_scenario_text(text.replace("192.000.2.10", "192.0.2.10"))
    assert scenario.zones[0].apex == "example.test"
    assert set(scenario.hosts) == {"mx1.example.test", "192.0.2.10"}


def test_empty_sections_count_as_absent() -> None:
    scenario = load_scenario_text("name: bare\nzones:\nhosts:\nmessages:\nexpect:\n")
    assert scenario == Scenario(name="bare", zones=(), messages=(), source="<scenario>")


# --- properties: nothing but ScenarioError escapes -------------------------------------------

FRAGMENTS = [
    "name: x",
    "name:",
    "zones:",
    "  example.test: |",
    "    @ IN MX 10 mx1",
    "    mx1 IN A 192.0.2.10",
    "    mx2 IN AAAA 2001:db8::1",
    "    $TTL 1h",
    "    (",
    "hosts:",
    "  mx1.example.test: refuse",
    "  mx1.example.test:",
    "    - {until: 2h, do: refuse}",
    "    - do: {greeting: '421 4.3.2 x'}",
    "    greylist: 5m",
    "dns:",
    "  example.test: [{until: 1h, do: timeout}, {do: answer}]",
    "messages:",
    "  - from: bob@example.net",
    "    to: [alice@example.test]",
    "    count: 3",
    "expect:",
    "  - {message: 1, status: delivered}",
    "  - {host: mx1.example.test, share: 0.5}",
    "sender: {profile: postfix, max_sessions: 2}",
    "seed: 7",
    "until: 5d",
    "- a",
    "? [x]",
    ": y",
    "&a b: *a",
    "<<: {}",
    "!!binary x: y",
    '"',
    "'",
    "\t",
    "{",
    "]",
    "---",
    "",
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=25))
def test_yamlish_text_raises_only_scenario_errors(lines: list[str]) -> None:
    with contextlib.suppress(ScenarioError):
        load_scenario_text("\n".join(lines))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=string.printable + "\x00\u00e9\u2028", max_size=200))
def test_random_text_raises_only_scenario_errors(text: str) -> None:
    with contextlib.suppress(ScenarioError):
        load_scenario_text(text)


WORDS = [
    "name", "zones", "hosts", "dns", "messages", "sender", "expect", "until", "do", "zone",
    "from", "to", "count", "at", "message", "status", "host", "share", "profile", "greeting",
    "rcpt", "recipients", "delay", "disconnect", "greylist", "accept", "refuse", "all",
    "delivered", "example.test", "mx1.example.test", "192.0.2.10", "bob@example.net",
    "@ IN MX 10 mx1\nmx1 IN A 192.0.2.10\n", "421 4.3.2 x", "5m", "postfix", "",
]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(),
    st.sampled_from(WORDS),
    st.text(max_size=10),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(WORDS) | SCALARS, inner, max_size=4)
    ),
    max_leaves=20,
)
TOP_LEVEL = st.dictionaries(
    st.sampled_from(["name", "title", "seed", "until", "zones", "hosts", "dns", "messages",
                     "sender", "expect", "hots"]),
    VALUES,
    max_size=8,
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(TOP_LEVEL)
def test_random_mappings_raise_only_scenario_errors(data: dict[str, object]) -> None:
    with contextlib.suppress(ScenarioError):
        scenario_from_mapping(data)
    try:
        text = yaml.safe_dump(data)
    except yaml.YAMLError:
        return
    with contextlib.suppress(ScenarioError):
        load_scenario_text(text)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=6))
def test_messages_are_numbered_in_file_order_with_count_expanded(counts: list[int]) -> None:
    data: dict[str, object] = {
        "name": "counts",
        "messages": [
            {"from": f"s{i}@example.net", "to": "r@example.test", "count": c}
            for i, c in enumerate(counts)
        ],
    }
    scenario = scenario_from_mapping(data)
    assert [m.number for m in scenario.messages] == list(range(1, sum(counts) + 1))
    senders = [m.sender for m in scenario.messages]
    assert senders == [f"s{i}@example.net" for i, c in enumerate(counts) for _ in range(c)]


def test_a_timeline_is_described_phase_by_phase_up_to_the_end_of_the_run() -> None:
    hosts = load_scenario_text(
        "name: t\nzones: {example.test: 'mx1 IN A 192.0.2.10'}\n"
        "hosts: {mx1.example.test: [{until: 2h, do: refuse}, {until: 3h, do: {greylist: 5m}},"
        " {do: accept}]}\n"
    ).hosts["mx1.example.test"]
    assert describe_timeline(hosts, 3600) == "refuse"
    assert describe_timeline(hosts, 7200) == "refuse"
    assert describe_timeline(hosts, 9000) == "refuse until 2:00:00, then greylist 5m"
    assert describe_timeline(hosts, 86400) == (
        "refuse until 2:00:00, then greylist 5m until 3:00:00, then accept"
    )


@pytest.mark.parametrize(
    ("behaviour", "complaint"),
    [
        ({"greeting": "250 hello"}, "250 cannot answer the connection (the greeting)"),
        ({"ehlo": "354 go on"}, "354 cannot answer EHLO; RFC 5321 §4.3.2 gives it 250"),
        ({"mail": "221 bye"}, "221 cannot answer MAIL FROM"),
        ({"data": "250 Ok"}, "250 cannot answer DATA; RFC 5321 §4.3.2 gives it 354"),
        ({"message": "354 more"}, "354 cannot answer the end of the message"),
        ({"recipients": {"a@example.test": "354 x"}}, "354 cannot answer RCPT TO"),
    ],
)
def test_a_reply_code_that_cannot_occur_at_its_stage_is_refused(
    behaviour: dict[str, object], complaint: str
) -> None:
    with pytest.raises(ScenarioError, match=re.escape(complaint)):
        host_behaviour(behaviour)


@pytest.mark.parametrize(
    "behaviour",
    [
        {"greeting": "220 mail.example.test ready", "ehlo": "250 hi", "mail": 250},
        {"rcpt": "251 2.1.5 User not local; will forward", "data": "354 go ahead"},
        {"message": "250 2.0.0 kept"},
        # Any 4xx or 5xx may answer anything: a client reads its first digit (§4.2.1).
        {"greeting": "421 4.3.2 bye", "ehlo": "451 4.3.0 later", "data": 554, "message": 452},
    ],
)
def test_the_replies_each_stage_can_give_are_accepted(behaviour: dict[str, object]) -> None:
    host_behaviour(behaviour)
