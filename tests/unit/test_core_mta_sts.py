"""MTA-STS policies and records (RFC 8461 §3.1, §3.2) and MX matching (§4.1), with no I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox.core.mta_sts import (
    MAX_AGE_LIMIT,
    PolicyProblem,
    StsPolicy,
    StsRecord,
    choose_record,
    matches_mx,
    parse_policy,
    parse_record,
)

POLICY = (
    "version: STSv1\nmode: enforce\nmx: mx1.example.test\nmx: *.backup.example.test\n"
    "max_age: 86400\n"
)


def policy(text: str) -> StsPolicy:
    parsed = parse_policy(text)
    assert isinstance(parsed, StsPolicy), parsed
    return parsed


def problem(text: str) -> PolicyProblem:
    parsed = parse_policy(text)
    assert isinstance(parsed, PolicyProblem), parsed
    return parsed


def test_a_policy_reads_its_four_keys() -> None:
    p = policy(POLICY)
    assert (p.mode, p.max_age, p.mx) == (
        "enforce",
        86400,
        ("mx1.example.test", "*.backup.example.test"),
    )
    assert p.lines == tuple(POLICY.splitlines())


def test_crlf_and_lf_and_no_final_line_end_all_read_alike() -> None:
    crlf = POLICY.replace("\n", "\r\n")
    assert policy(crlf) == policy(POLICY) == policy(POLICY.rstrip("\n"))


def test_white_space_after_the_colon_and_at_the_end_of_a_line_is_allowed() -> None:
    p = policy("version:STSv1\nmode:\t testing \nmx:   mx1.example.test\t\nmax_age: 0\n")
    assert (p.mode, p.mx, p.max_age) == ("testing", ("mx1.example.test",), 0)


def test_unknown_keys_are_ignored_and_the_first_of_a_repeated_key_wins() -> None:
    p = policy(POLICY + "x-note: hello world\nmode: none\n")
    assert p.mode == "enforce"


def test_mode_none_needs_no_mx() -> None:
    assert policy("version: STSv1\nmode: none\nmax_age: 600\n").mx == ()


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ("", 0, "empty"),
        ("version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 1\n", 1, "STSv1"),
        ("version: STSv1\nmode: strict\nmx: a.test\nmax_age: 1\n", 2, "enforce, testing or none"),
        ("version: STSv1\nmode: enforce\nmax_age: 1\n", 0, "at least one 'mx:'"),
        ("version: STSv1\nmode: enforce\nmx: a.test\n", 0, "no 'max_age'"),
        ("mode: enforce\nmx: a.test\nmax_age: 1\n", 0, "no 'version'"),
        ("version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 31557601\n", 4, "31557600"),
        ("version: STSv1\nmode: enforce\nmx: a.test\nmax_age: -5\n", 4, "number of seconds"),
        ("version: STSv1\nmode: enforce\nmx: mx*.a.test\nmax_age: 1\n", 3, "not an MX pattern"),
        ("version: STSv1\nmode: enforce\nmx: *.*.a.test\nmax_age: 1\n", 3, "not an MX pattern"),
        ("version: STSv1\n\nmode: enforce\nmx: a.test\nmax_age: 1\n", 2, "empty line"),
        ("version: STSv1\nmode enforce\nmx: a.test\nmax_age: 1\n", 2, "not a 'key: value'"),
        ("Version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 1\n", 0, "no 'version'"),
        (POLICY + "\n", 6, "empty line"),
    ],
)
def test_each_mistake_is_reported_at_its_line(text: str, line: int, says: str) -> None:
    found = problem(text)
    assert found.line == line
    assert says in found.message


def test_max_age_may_be_the_limit_itself() -> None:
    assert policy(
        f"version: STSv1\nmode: testing\nmx: a.test\nmax_age: {MAX_AGE_LIMIT}"
    ).max_age == (MAX_AGE_LIMIT)


# --- MX matching (§4.1) --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("mx1.example.test", "mx1.example.test", True),
        ("mx1.example.test", "MX1.Example.Test.", True),
        ("mx1.example.test", "mx2.example.test", False),
        ("*.example.test", "mx1.example.test", True),
        ("*.example.test", "example.test", False),
        ("*.example.test", "a.mx1.example.test", False),
        ("*.example.test", ".example.test", False),
        ("*.Example.Test", "mx9.example.test.", True),
    ],
)
def test_a_wildcard_matches_exactly_one_label(pattern: str, host: str, matches: bool) -> None:
    assert matches_mx(pattern, host) is matches


def test_a_policy_lists_the_hosts_its_patterns_match() -> None:
    p = policy(POLICY)
    assert p.lists("mx1.example.test")
    assert p.lists("b1.backup.example.test")
    assert not p.lists("mx2.example.test")
    assert not p.lists("backup.example.test")


labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)


@given(st.lists(labels, min_size=2, max_size=5), labels)
def test_a_wildcard_matches_one_more_label_and_never_two(parent: list[str], extra: str) -> None:
    domain = ".".join(parent)
    assert matches_mx(f"*.{domain}", f"{extra}.{domain}")
    assert not matches_mx(f"*.{domain}", f"{extra}.{extra}.{domain}")
    assert not matches_mx(f"*.{domain}", domain)


@given(st.text(max_size=200))
def test_any_text_reads_as_a_policy_or_a_problem(text: str) -> None:
    assert isinstance(parse_policy(text), (StsPolicy, PolicyProblem))


# --- the TXT record (§3.1) -----------------------------------------------------------------------


def test_the_txt_record_gives_its_id() -> None:
    assert parse_record("v=STSv1; id=20260101T000000;") == StsRecord("20260101T000000")
    assert parse_record("v=STSv1;id=abc") == StsRecord("abc")
    assert parse_record("v=STSv1; x-ext=1; id=a1") == StsRecord("a1")


@pytest.mark.parametrize(
    "text",
    ["id=abc; v=STSv1", "v=STSv2; id=a", "v=STSv1", "v=STSv1; id=a-b", "v=STSv1; id=" + "a" * 33],
)
def test_a_bad_txt_record_is_a_problem(text: str) -> None:
    assert isinstance(parse_record(text), PolicyProblem)


def test_exactly_one_sts_record_must_remain() -> None:
    assert choose_record(["v=spf1 -all", "v=STSv1; id=a"]) == StsRecord("a")
    assert isinstance(choose_record(["v=STSv1; id=a", "v=STSv1; id=b"]), PolicyProblem)
    assert isinstance(choose_record(["v=spf1 -all"]), PolicyProblem)
