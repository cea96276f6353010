"""sandbox.scenario.lint: each classic MX mistake, found at its zone line and its file line."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import load_scenario, load_scenario_text
from sandbox.dns.zone import parse_zone
from sandbox.scenario.lint import Finding, format_finding, has_errors, lint_scenario, lint_zone
from tests.helpers import SCENARIOS

GOOD = """\
$TTL 3600
@     IN MX 10 mx1
@     IN MX 20 mx2
mx1   IN A  192.0.2.10
mx2   IN A  192.0.2.11
"""


def lint(text: str, *others: tuple[str, str], apex: str = "example.test") -> list[Finding]:
    zone = parse_zone(apex, text)
    world = [zone, *(parse_zone(a, t) for a, t in others)]
    return lint_zone(zone, world)


def found(findings: list[Finding]) -> list[tuple[str, str, int]]:
    return [(f.rule, f.severity, f.zone_line) for f in findings]


def test_a_good_zone_has_no_findings() -> None:
    assert lint(GOOD) == []


def test_mx_pointing_at_a_cname_is_an_error_at_its_line() -> None:
    """RFC 2181 §10.3: an MX MUST NOT name an alias; BIND's named-checkzone calls it illegal."""
    text = "$TTL 3600\n@ IN MX 10 mx1\n@ IN MX 20 mail\nmx1 IN A 192.0.2.10\n"
    text += "mail IN CNAME server1\nserver1 IN A 192.0.2.30\n"
    findings = lint(text)
    assert found(findings) == [("mx-cname", "error", 3)]
    (finding,) = findings
    assert "RFC 2181 §10.3" in finding.rfc
    assert "server1.example.test." in finding.mend


def test_mx_pointing_at_an_ip_literal_is_an_error() -> None:
    text = GOOD.replace("@     IN MX 20 mx2", "@     IN MX 20 192.0.2.11.")
    assert found(lint(text)) == [("mx-ip-literal", "error", 3)]
    (finding,) = lint(text)
    # What the real MTAs did with such a record (tests/differential/FINDINGS.md).
    assert "Postfix 3.7 uses it with a warning" in finding.message
    assert "Exim bounces the mail" in finding.message


def test_an_ip_literal_without_the_final_dot_is_one_finding_not_two() -> None:
    text = GOOD.replace("@     IN MX 20 mx2", "@     IN MX 20 192.0.2.11")
    (finding,) = lint(text)
    assert (finding.rule, finding.zone_line) == ("mx-ip-literal", 3)
    assert "192.0.2.11.example.test" in finding.message


def test_mx_target_without_an_address_is_an_error_with_a_record_to_add() -> None:
    text = GOOD.replace("mx2   IN A  192.0.2.11\n", "")
    findings = lint(text)
    assert found(findings) == [("mx-no-address", "error", 3)]
    assert "'mx2 IN A 192.0.2." in findings[0].mend


def test_a_cname_chain_that_ends_without_an_address_is_also_an_error() -> None:
    text = "$TTL 3600\n@ IN MX 10 mail\n@ IN MX 20 mx2\nmail IN CNAME gone\nmx2 IN A 192.0.2.11\n"
    text += 'gone IN TXT "nothing here"\n'
    assert found(lint(text)) == [("mx-cname", "error", 2), ("mx-no-address", "error", 2)]


def test_a_missing_trailing_dot_is_found_from_the_dotted_form() -> None:
    text = GOOD.replace("@     IN MX 20 mx2", "@     IN MX 20 mx2.example.test")
    findings = lint(text)
    assert found(findings) == [("mx-missing-dot", "error", 3)]
    assert "mx2.example.test.example.test" in findings[0].message
    assert "'mx2.example.test.'" in findings[0].mend


def test_a_missing_dot_on_a_name_of_another_zone_is_found_too() -> None:
    text = "$TTL 3600\n@ IN MX 10 mx.provider.test\n@ IN MX 20 mx2\nmx2 IN A 192.0.2.11\n"
    provider = ("provider.test", "$TTL 3600\nmx IN A 192.0.2.40\n")
    assert found(lint(text, provider)) == [("mx-missing-dot", "error", 2)]


def test_a_missing_dot_under_an_origin_directive_names_that_origin() -> None:
    text = "$TTL 1h\n$ORIGIN sub.example.test.\n@ IN MX 10 mx\n@ IN MX 20 mx.example.test\n"
    text += "mx IN A 192.0.2.1\n"
    (finding,) = lint(text)
    assert (finding.rule, finding.zone_line) == ("mx-missing-dot", 4)
    assert "the origin sub.example.test was added" in finding.message
    assert finding.mend == "end the name with a dot ('mx.example.test.')"


def test_a_relative_name_that_exists_is_not_a_missing_dot() -> None:
    assert lint(GOOD) == []


def test_null_mx_mixed_with_other_mx_is_an_error_at_the_null_mx() -> None:
    text = GOOD.replace("@     IN MX 20 mx2\n", "@     IN MX 20 mx2\n@     IN MX 0 .\n")
    assert ("null-mx-mixed", "error", 4) in found(lint(text))


def test_a_lone_null_mx_is_fine_and_gets_no_single_mx_note() -> None:
    assert lint("$TTL 3600\n@ IN MX 0 .\n") == []


def test_a_null_mx_with_a_preference_other_than_0_is_a_warning() -> None:
    assert found(lint("$TTL 3600\n@ IN MX 10 .\n")) == [("null-mx-preference", "warning", 2)]


def test_a_single_mx_is_information_only() -> None:
    text = "$TTL 3600\n@ IN MX 10 mx1\nmx1 IN A 192.0.2.10\n"
    findings = lint(text)
    assert found(findings) == [("single-mx", "info", 2)]
    assert not has_errors(findings)


def test_two_mx_leading_to_the_same_address_is_a_warning_at_the_second() -> None:
    text = GOOD.replace("mx2   IN A  192.0.2.11", "mx2   IN A  192.0.2.10")
    assert found(lint(text)) == [("mx-same-address", "warning", 3)]


def test_a_duplicate_record_is_a_warning_at_the_repeat() -> None:
    text = GOOD + "mx2   IN A  192.0.2.11\n"
    findings = lint(text)
    assert found(findings) == [("duplicate-record", "warning", 6)]
    assert "repeats zone line 5" in findings[0].message


def test_a_duplicate_mx_written_differently_is_still_a_duplicate() -> None:
    text = GOOD + "@ 3600 IN MX 20 MX2.example.test.\n"
    assert found(lint(text)) == [("duplicate-record", "warning", 6)]


def test_a_zone_without_ttl_directive_is_a_warning_at_line_1() -> None:
    text = GOOD.replace("$TTL 3600\n", "")
    assert found(lint(text)) == [("no-ttl", "warning", 1)]


def test_ttl_0_directive_is_one_warning_at_its_line() -> None:
    text = GOOD.replace("$TTL 3600", "$TTL 0")
    assert found(lint(text)) == [("ttl-zero", "warning", 1)]


def test_a_record_with_ttl_0_is_a_warning_at_its_line() -> None:
    text = GOOD.replace("mx1   IN A  192.0.2.10", "mx1 0 IN A  192.0.2.10")
    assert found(lint(text)) == [("ttl-zero", "warning", 4)]


def test_an_mx_named_outside_every_zone_is_an_error() -> None:
    text = GOOD.replace("@     IN MX 20 mx2", "@     IN MX 20 mx.elsewhere.test.")
    findings = lint(text)
    assert found(findings) == [("mx-outside-scenario", "error", 3)]
    assert "nobody will answer" in findings[0].message


def test_an_mx_whose_host_is_in_another_scenario_zone_is_fine() -> None:
    text = "$TTL 3600\n@ IN MX 10 mx.provider.test.\n@ IN MX 20 mx2\nmx2 IN A 192.0.2.11\n"
    provider = ("provider.test", "$TTL 3600\nmx IN A 192.0.2.40\n")
    assert lint(text, provider) == []


def test_an_out_of_range_preference_is_refused_at_its_file_line() -> None:
    # It cannot be put on the wire, so the zone reader refuses it while loading: exit 2.
    text = SCENARIO.replace("@     IN MX 20 mx2", "@     IN MX 70000 mx2")
    with pytest.raises(ValueError) as caught:
        load_scenario_text(text, "x.yaml")
    assert "x.yaml:7:" in str(caught.value)
    assert "0 to 65535" in str(caught.value)


SCENARIO = """\
name: lint
zones:
  example.test: |
    $TTL 3600
    ; a comment line
    @     IN MX 10 mx1
    @     IN MX 20 mx2
    mx1   IN A  192.0.2.10
messages:
  - {from: bob@example.net, to: alice@example.test}
"""


def test_file_lines_add_the_line_where_the_zone_text_starts() -> None:
    (finding,) = lint_scenario(load_scenario_text(SCENARIO, "x.yaml"))
    assert (finding.rule, finding.zone_line, finding.line) == ("mx-no-address", 4, 7)
    head, mend = format_finding(finding, "x.yaml")
    assert head.startswith("x.yaml:7: error: zone example.test line 4: ")
    assert head.endswith("[mx-no-address; RFC 5321 §5.1]")
    assert mend.startswith("    mend: add 'mx2 IN A ")


PHASED = """\
name: phased
zones:
  example.test:
    - until: 1h
      zone: |
        $TTL 3600
        @ IN MX 10 mx1
        @ IN MX 20 mx2
        mx1 IN A 192.0.2.10
        mx2 IN A 192.0.2.11
    - zone: |
        $TTL 3600
        @ IN MX 10 mx1
        @ IN MX 20 mx2
        mx1 IN A 192.0.2.10
messages:
  - {from: bob@example.net, to: alice@example.test}
"""


def test_every_phase_of_a_zone_is_linted_at_its_own_lines() -> None:
    (finding,) = lint_scenario(load_scenario_text(PHASED, "p.yaml"))
    assert (finding.rule, finding.phase, finding.zone_line, finding.line) == (
        "mx-no-address",
        1,
        3,
        14,
    )
    assert "(phase 2, from 1h)" in format_finding(finding, "p.yaml")[0]


# The teaching scenario of the mistake keeps making it, on purpose.
TEACHES_AN_ERROR = {"mx-points-at-cname"}


@pytest.mark.parametrize(
    "path", [p for p in SCENARIOS if p.stem not in TEACHES_AN_ERROR], ids=lambda p: p.stem
)
def test_no_other_scenario_file_has_a_lint_error(path: Path) -> None:
    findings = lint_scenario(load_scenario(path))
    assert not has_errors(findings), [format_finding(f, path.name) for f in findings]


def test_the_cname_scenario_shows_its_error() -> None:
    path = next(p for p in SCENARIOS if p.stem == "mx-points-at-cname")
    errors = [f.rule for f in lint_scenario(load_scenario(path)) if f.severity == "error"]
    assert errors == ["mx-cname"]


def test_a_recipient_domain_in_no_zone_is_a_warning_at_its_message() -> None:
    scenario = load_scenario_text(
        "name: x\n"
        "zones:\n"
        "  example.test: |\n"
        "    $TTL 3600\n"
        "    @ IN MX 10 mx1\n"
        "    @ IN MX 20 mx2\n"
        "    mx1 IN A 192.0.2.10\n"
        "    mx2 IN A 192.0.2.11\n"
        "messages:\n"
        "  - {from: bob@example.net, to: alice@example.test}\n"
        "  - {from: bob@example.net, to: [carol@exmaple.test, dave@example.test]}\n"
        "  - {from: bob@example.net, to: erin@exmaple.test}\n",
        "typo.yaml",
    )
    (finding,) = [f for f in lint_scenario(scenario) if f.rule == "recipient-outside-scenario"]
    assert (finding.severity, finding.line) == ("warning", 11)
    head, mend = format_finding(finding, "typo.yaml")
    assert head.startswith("typo.yaml:11: warning: messages: ")
    assert "carol@exmaple.test" in head and "NXDOMAIN" in head
    assert "exmaple.test" in mend
    assert not has_errors(lint_scenario(scenario))
