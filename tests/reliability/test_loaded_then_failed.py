"""Scenario files that once loaded (``check`` said ok), then failed at run time: each is now
refused when it is loaded, with exit 2 and one line ``FILE:LINE: KEY: what is wrong; how to
mend it``, by ``check`` and ``run`` alike.

Each section is one finding of issue 16: a line break in a scripted reply (point 8),
numbers of thousands of digits (point 9), too many deliveries (point 10) and more mail hosts
than the process may open files for (point 11, which only `run` can find), and what a second
look at the loader found: addresses that no SMTP command can carry, an EHLO name of any text,
bounce statuses of any value, names too long for a header, more records at one name than one
DNS message can hold, and retry schedules that never end.
"""

from __future__ import annotations

import contextlib
import io
import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox import ScenarioError, load_scenario_text, scenario_from_mapping
from sandbox.cli import main
from sandbox.run import run_scenario
from sandbox.scenario.load import (
    MAX_DELIVERIES,
    MAX_RECIPIENTS,
    MAX_REPLY_OCTETS,
    MAX_SEED,
    host_behaviour,
)
from sandbox.scenario.yaml_lines import MAX_NUMBER_LENGTH
from tests.helpers import ROOT

ZONE = "zones:\n  example.test: |\n    @ IN MX 10 mx1\n    mx1 IN A 192.0.2.10\n"


def scenario(*parts: str) -> str:
    """A scenario with one zone (mx1.example.test at 192.0.2.10) and ``parts`` after it."""
    return "name: loaded-then-failed\n" + ZONE + "".join(parts)


def refused(text: str, line: int, key: str, *words: str) -> ScenarioError:
    """Loading ``text`` fails at ``line`` and ``key`` with a message that has ``words``."""
    with pytest.raises(ScenarioError) as caught:
        load_scenario_text(text, "bad.yaml")
    error = caught.value
    assert (error.line, error.key) == (line, key), str(error)
    for word in words:
        assert word in error.message, str(error)
    return error


def commands_refuse(tmp_path: Path, text: str, line: int) -> None:
    """``check`` and ``run`` both exit 2 with one line that points at ``line``."""
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    for command in ("check", "run"):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([command, str(path)])
        assert code == 2, (command, out.getvalue())
        (said,) = err.getvalue().splitlines()
        assert said.startswith(f"error: {path}:{line}: "), said


# --- point 8: a reply is one line of text ------------------------------------------------------

MESSAGE = "messages:\n  - {from: bob@example.net, to: alice@example.test}\n"


@pytest.mark.parametrize(
    ("reply", "complaint"),
    [
        ("220 hi\r\n250 ok", "line break"),
        ("220 hi\n250 ok", "line break"),
        ("220 hi\r250 ok", "line break"),
        ("220 hi\u2028there", "line break"),
        ("220 hi\x00there", "control character U+0000"),
        ("220 hi\x1b[2Jthere", "control character U+001B"),
        ("220 hi\tthere", "control character U+0009"),
        ("220 hi\ud800there", "surrogate"),
        ("220 " + "x" * (MAX_REPLY_OCTETS - 3), "at most 512"),
        ("220 " + "é" * (MAX_REPLY_OCTETS // 2), "at most 512"),
    ],
    ids=["crlf", "lf", "cr", "u2028", "nul", "escape", "tab", "surrogate", "long", "long-utf8"],
)
def test_a_reply_that_is_not_one_line_of_text_is_refused(
    tmp_path: Path, reply: str, complaint: str
) -> None:
    # `{greeting: "220 hi\r\n250 ok"}` was sent raw: the sender read "220 hi" as the greeting
    # and "250 ok" as the answer to its EHLO, and every reply after that was one step late.
    text = scenario(f"hosts:\n  mx1.example.test: {{greeting: {json.dumps(reply)}}}\n", MESSAGE)
    refused(text, 7, "hosts.mx1.example.test.greeting", complaint)
    commands_refuse(tmp_path, text, 7)


@pytest.mark.parametrize(
    ("behaviour", "key"),
    [
        ({"rcpt": "550 a\r\n250 b"}, "rcpt"),
        ({"recipients": {"alice@example.test": "550 a\r\n250 b"}}, "recipients.alice@example.test"),
        ([{"until": "1h", "do": {"message": "451 a\n250 b"}}, {"do": "accept"}], "[0].do.message"),
    ],
    ids=["rcpt", "recipients", "in-a-phase"],
)
def test_every_reply_is_checked_in_files_and_in_changes_made_while_serving(
    behaviour: object, key: str
) -> None:
    text = scenario(f"hosts:\n  mx1.example.test: {json.dumps(behaviour)}\n", MESSAGE)
    host = "hosts.mx1.example.test"
    refused(text, 7, host + key if key.startswith("[") else f"{host}.{key}", "line break")
    with pytest.raises(ScenarioError, match="line break"):  # the control API's way in
        host_behaviour(behaviour, "PUT /api/v1/hosts/mx1.example.test/behaviour")


def test_the_longest_reply_allowed_reaches_the_sender_whole() -> None:
    reply = "550 5.1.1 " + "x" * (MAX_REPLY_OCTETS - 10)
    text = scenario(f"hosts:\n  mx1.example.test: {{rcpt: {json.dumps(reply)}}}\n", MESSAGE)
    (row,) = run_scenario(load_scenario_text(text)).deliveries
    assert (row.status, row.dsn) == ("bounced", "5.1.1")
    assert reply in row.reply


@pytest.mark.parametrize(
    ("key", "value", "complaint"),
    [
        ("title", "Mail\x1b[2J", "control character U+001B"),
        ("title", "two\nlines", "write the title on one line"),
        ("description", "a paragraph\x07", "control character U+0007"),
        ("description", "half of \ud83d", "surrogate"),
    ],
    ids=["escape-in-title", "title-of-two-lines", "bell", "half-a-character"],
)
def test_text_that_a_terminal_would_obey_or_cannot_print_is_refused(
    key: str, value: str, complaint: str
) -> None:
    # The story prints the title and the description: an escape sequence would be obeyed
    # by the terminal, and half a surrogate pair cannot be encoded at all.
    refused(f"{key}: {json.dumps(value)}\n" + scenario(MESSAGE), 1, key, complaint)


def test_a_description_keeps_its_lines_and_tabs() -> None:
    text = "description: |\n  one\ttab\n  two\n" + scenario(MESSAGE)
    assert load_scenario_text(text).description == "one\ttab\ntwo"


# --- point 9: numbers of thousands of digits -------------------------------------------------

# Python converts at most 4,300 decimal digits to an integer, and raises ValueError past that.
HUGE = "9" * 5000


@pytest.mark.parametrize(
    ("record", "complaint"),
    [
        (f"$TTL {HUGE}", "the TTL 9999"),
        (f"mx1 {HUGE} IN A 192.0.2.10", "the TTL 9999"),
        (f"mx1 1h{HUGE}m IN A 192.0.2.10", "the TTL 1h999"),
        (f"@ IN MX {HUGE} mx1", "MX preference"),
        (f"@ IN SOA ns1 hostmaster {HUGE} 1h 15m 1w 1h", "SOA serial"),
        (f"@ IN SOA ns1 hostmaster 1 1h 15m {HUGE} 1h", "the TTL 9999"),
        (f"_25._tcp.mx1 IN TLSA {HUGE} 1 1 0c72ac70", "usage of a TLSA"),
        (f"_smtp._tcp IN SRV {HUGE} 0 25 mx1", "could not read the SRV data"),
    ],
    ids=["$TTL", "ttl", "ttl-compound", "mx", "serial", "soa-expire", "tlsa", "srv"],
)
def test_a_number_of_thousands_of_digits_in_a_zone_is_refused_at_its_line(
    tmp_path: Path, record: str, complaint: str
) -> None:
    # A $TTL of 5,000 nines was a ValueError traceback from int(), and exit 1.
    text = scenario(f"    {record}\n", MESSAGE)
    error = refused(text, 6, "zones.example.test", complaint, "(zone line 3)")
    assert len(str(error)) < 400, "the error shows the number whole"
    commands_refuse(tmp_path, text, 6)


def test_leading_zeros_do_not_make_a_number_large() -> None:
    zeros = "0" * 5000
    text = scenario(f"    $TTL {zeros}300\n    @ IN MX {zeros}20 mx1\n", MESSAGE)
    (zone,) = load_scenario_text(text).zones
    assert zone.phases.initial.default_ttl == 300
    assert [r.preference for r in zone.phases.initial.records if r.rtype == "MX"] == [10, 20]


@pytest.mark.parametrize(
    ("line", "key_line"),
    [
        (f"seed: {HUGE}", 1),
        ("seed: 0x" + "f" * 4000, 1),
        (f"seed: !!int {'1:' * 60}1", 1),
        (f"until: {HUGE}", 1),
        (f"messages:\n  - {{from: a@b.test, to: c@example.test, count: {HUGE}}}", 2),
        (f"messages:\n  - {{from: a@b.test, to: c@example.test, at: -{HUGE}}}", 2),
        (f"expect:\n  - {{host: mx1.example.test, accepted: 0x{'f' * 4000}}}", 2),
    ],
    ids=["seed", "hexadecimal-seed", "sexagesimal-seed", "until", "count", "at", "accepted"],
)
def test_a_yaml_number_of_thousands_of_digits_is_refused_at_its_line(
    tmp_path: Path, line: str, key_line: int
) -> None:
    # A hexadecimal number of 4,000 digits made an integer that could not be printed: the run
    # crashed writing the Message-ID, and an error message about it crashed as well.
    text = scenario(MESSAGE if "messages" not in line else "", line, "\n")
    where = text.count("\n", 0, text.index(line)) + key_line
    with pytest.raises(ScenarioError, match="write a smaller number") as caught:
        load_scenario_text(text, "bad.yaml")
    assert caught.value.line == where
    assert len(str(caught.value)) < 400
    commands_refuse(tmp_path, text, where)


def test_numbers_as_long_as_a_scenario_needs_load() -> None:
    loaded = load_scenario_text(scenario(MESSAGE, f"seed: {MAX_SEED - 1}\n"))
    assert loaded.seed == MAX_SEED - 1
    assert len(str(MAX_SEED - 1)) < MAX_NUMBER_LENGTH


@pytest.mark.parametrize(
    "seed", [MAX_SEED, -MAX_SEED, 10**5000], ids=["21-digits", "negative", "5001-digits"]
)
def test_a_seed_too_long_for_a_message_id_is_refused(tmp_path: Path, seed: int) -> None:
    # A seed of 2,000 digits made a Message-ID header longer than 998 characters, and every
    # host answered "500 Line too long": every message bounced.
    with pytest.raises(ScenarioError, match="more than 20 digits"):
        scenario_from_mapping({"name": "x", "seed": seed})
    if seed != 10**5000:
        text = scenario(MESSAGE, f"seed: {seed}\n")
        refused(text, 8, "seed", "more than 20 digits")
        path = tmp_path / "good.yaml"
        path.write_text(scenario(MESSAGE), encoding="utf-8")
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            assert main(["run", str(path), "--seed", str(seed)]) == 2
        assert "more than 20 digits" in err.getvalue()


@pytest.mark.parametrize(
    ("mapping", "key"),
    [
        ({"name": 10**5000}, "name"),
        ({"name": "x", "title": 10**5000}, "title"),
        ({"name": "x", "messages": [{"from": "a@b.test", "to": "c@d.test", "count": -(10**5000)}]},
         "messages[0].count"),
        ({"name": "x", "hosts": {"mx1.example.test": {"greeting": 10**5000}}},
         "hosts.mx1.example.test.greeting"),
        ({"name": "x", "hosts": {"mx1.example.test": {"max_recipients": 10**5000}}},
         "hosts.mx1.example.test.max_recipients"),
        ({"name": "x", "messages": [{"from": "a@b.test", "to": "c@example.test"}],
          "expect": [{"message": 10**5000}]}, "expect[0].message"),
    ],
    ids=["name", "title", "count", "reply", "max_recipients", "message-number"],
)  # fmt: skip
def test_a_huge_number_given_in_python_is_refused_without_printing_it(
    mapping: dict[str, object], key: str
) -> None:
    # The pytest plugin's mappings hold Python integers of any size: str() of one of 5,001
    # digits raised ValueError, in the loader's own error message or later in the run.
    mapping.setdefault("zones", {"example.test": "@ IN MX 10 mx1\nmx1 IN A 192.0.2.10\n"})
    with pytest.raises(ScenarioError, match="a number of about 5,001 digits is far larger") as e:
        scenario_from_mapping(mapping)
    assert e.value.key == key


# --- point 10: count x recipients ------------------------------------------------------------


def recipients(count: int) -> str:
    return "".join(f"      - r{i}@example.test\n" for i in range(count))


def test_count_times_recipients_past_the_limit_is_refused_at_the_count(tmp_path: Path) -> None:
    # The file: 100,000 copies of a message to 10,000 recipients passed `check`, then
    # `run` died of MemoryError after 47 s. Now the recipients alone are too many.
    text = scenario(
        "messages:\n  - from: bob@example.net\n    count: 100000\n    to:\n",
        recipients(10_000),
    )
    refused(text, 10, "messages[0].to", f"more than the {MAX_RECIPIENTS:,} one message")
    commands_refuse(tmp_path, text, 10)
    # Within the limit per message, the product is what counts.
    per_message = 101
    count = MAX_DELIVERIES // per_message + 1
    text = scenario(
        f"messages:\n  - from: bob@example.net\n    count: {count}\n    to:\n",
        recipients(per_message),
    )
    refused(text, 8, "messages[0].count", f"more than the {MAX_DELIVERIES:,} a run may have")
    commands_refuse(tmp_path, text, 8)


def test_deliveries_are_counted_across_messages() -> None:
    half = MAX_DELIVERIES // 2
    text = scenario(
        "messages:\n",
        f"  - {{from: bob@example.net, to: a@example.test, count: {half}}}\n",
        f"  - {{from: bob@example.net, to: b@example.test, count: {half - 1}}}\n",
        "  - {from: bob@example.net, to: [c@example.test, d@example.test]}\n",
    )
    refused(text, 9, "messages[2].to", f"{MAX_DELIVERIES + 1:,} deliveries")


def test_the_limits_themselves_load() -> None:
    per_message = MAX_RECIPIENTS
    count = MAX_DELIVERIES // per_message
    text = scenario(
        f"messages:\n  - from: bob@example.net\n    count: {count}\n    to:\n",
        recipients(per_message),
    )
    loaded = load_scenario_text(text)
    assert sum(len(m.recipients) for m in loaded.messages) == MAX_DELIVERIES


# --- point 11: more hosts than file descriptors ------------------------------------------------


def many_hosts(addresses: int, count: int = 1) -> str:
    """One MX host with ``addresses`` addresses, and ``count`` messages to it."""
    records = "".join(f"    mx1 IN A 10.0.{i // 250}.{i % 250 + 1}\n" for i in range(addresses))
    return (
        "name: many-hosts\nzones:\n  example.test: |\n    @ IN MX 10 mx1\n"
        f"{records}messages:\n  - {{from: bob@example.net, to: a@example.test, count: {count}}}\n"
    )


def run_with_files(path: Path, soft: int, hard: int) -> subprocess.CompletedProcess[str]:
    """``mxsandbox run --json PATH`` in a process that may open ``soft`` files (``hard`` at
    most: ``ulimit -Sn soft -Hn hard``)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return subprocess.run(
        [sys.executable, "-m", "sandbox", "run", "--json", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=limit,  # only setrlimit, before exec
    )


def says_ulimit_in_one_line(done: subprocess.CompletedProcess[str], path: Path) -> None:
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    # The line is where the zone that gives the most addresses starts (its text, line 4).
    assert line.startswith(f"error: {path}:4: zones: the zones give "), line
    assert "open files" in line and "ulimit" in line, line


def test_more_hosts_than_the_hard_limit_of_files_is_one_clear_line(tmp_path: Path) -> None:
    # It was a BindError traceback ("Too many open files") and exit 1.
    path = tmp_path / "hosts.yaml"
    path.write_text(many_hosts(200), encoding="utf-8")
    says_ulimit_in_one_line(run_with_files(path, 64, 64), path)


def test_files_running_out_during_the_run_is_one_clear_line(tmp_path: Path) -> None:
    # The hosts fit, but not the sessions too: the sender's socket() and the hosts' accept()
    # failed inside the run, with tracebacks from asyncio for each accept.
    path = tmp_path / "hosts.yaml"
    path.write_text(many_hosts(60, count=300), encoding="utf-8")
    says_ulimit_in_one_line(run_with_files(path, 80, 80), path)


def test_a_low_soft_limit_is_raised_as_far_as_the_hard_limit_allows(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1000:
        pytest.skip(f"the hard limit of open files here is {hard}")
    path = tmp_path / "hosts.yaml"
    path.write_text(many_hosts(200), encoding="utf-8")
    done = run_with_files(path, 64, hard)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [row["status"] for row in json.loads(done.stdout)["deliveries"]] == ["delivered"]


# --- a second look: addresses an SMTP command cannot carry --------------------------------------


@pytest.mark.parametrize(
    ("address", "complaint"),
    [
        ("a,b@example.test", "quote it, such as \"a,b\"@example.test"),
        ("a<b@example.test", "quote it"),
        ("a:b@example.test", "quote it"),
        ("a b@example.test", "quote it, such as \"a b\"@example.test"),
        ("a@b@example.test", "quote it, such as \"a@b\"@example.test"),
        ("a..b@example.test", "joined by single dots"),
        ("alice@[192.0.2.10]", "has no usable domain"),
        ("alice@exa mple.test", "has no usable domain"),
        ("a" * 300 + "@example.test", "at most 256"),
    ],
    ids=["comma", "angle", "colon", "space", "two-ats", "two-dots", "literal", "space-in-domain",
         "long"],
)  # fmt: skip
def test_an_address_no_smtp_command_can_carry_is_refused(
    tmp_path: Path, address: str, complaint: str
) -> None:
    # These loaded, and then the sandbox's own host answered "501 Syntax", "553 malformed
    # address" or "500 Command line too long", or DNS had no such domain: every one bounced.
    text = scenario(f"messages:\n  - from: bob@example.net\n    to: {json.dumps(address)}\n")
    refused(text, 8, "messages[0].to", complaint)
    commands_refuse(tmp_path, text, 8)


@pytest.mark.parametrize(
    "address",
    ['"a b"@example.test', '"a@b"@example.test', "a+tag@example.test", "élise@example.test",
     "!#$%&'*+-/=?^_`{|}~@example.test", "<alice@example.test>", "a" * 240 + "@example.test"],
    ids=["quoted-space", "quoted-at", "plus", "utf8", "specials", "angle-brackets", "long"],
)  # fmt: skip
def test_what_rfc_5321_allows_is_delivered(address: str) -> None:
    text = scenario(f"messages:\n  - from: bob@example.net\n    to: {json.dumps(address)}\n")
    (row,) = run_scenario(load_scenario_text(text)).deliveries
    assert (row.status, row.recipient) == ("delivered", address.strip("<>"))


# --- a second look: the sender's settings, the name --------------------------------------------


@pytest.mark.parametrize(
    "helo", ["mta\r\nRSET", "mta example", "", "h" * 300, "bücher.test", "[2001:db8::1]"]
)
def test_an_ehlo_name_that_is_no_host_name_is_refused(tmp_path: Path, helo: str) -> None:
    # A line break or a space in it crashed the run with a traceback; 300 characters made
    # the host answer "500 Command line too long" to EHLO and HELO, and every message bounced.
    text = scenario(MESSAGE, f"sender: {{helo_name: {json.dumps(helo)}}}\n")
    refused(text, 8, "sender.helo_name", "is not a host name")
    commands_refuse(tmp_path, text, 8)


@pytest.mark.parametrize("helo", ["mta.example.net", "[192.0.2.1]", "[IPv6:2001:db8::1]"])
def test_host_names_and_address_literals_are_ehlo_names(helo: str) -> None:
    text = scenario(MESSAGE, f"sender: {{helo_name: {json.dumps(helo)}}}\n")
    (row,) = run_scenario(load_scenario_text(text)).deliveries
    assert row.status == "delivered"


@pytest.mark.parametrize(
    ("status", "complaint"),
    [("[1, 2]", "is not a DSN status code"), ("7", "is not a DSN status code"),
     ('"junk"', "is not a DSN status code"), ('"4.1.10"', "write a 5.x.x status")],
    ids=["list", "number", "word", "temporary"],
)  # fmt: skip
def test_a_bounce_status_setting_is_a_permanent_status(
    tmp_path: Path, status: str, complaint: str
) -> None:
    # null_mx_dsn and nxdomain_dsn were passed on as written: a list or a number crashed the
    # run when the first bounce was made.
    text = scenario(MESSAGE, f"sender: {{nxdomain_dsn: '5.1.2', null_mx_dsn: {status}}}\n")
    refused(text, 8, "sender.null_mx_dsn", complaint)
    commands_refuse(tmp_path, text, 8)


def test_a_name_too_long_for_a_header_is_refused() -> None:
    # A name of 2,000 characters made the Message-ID and Subject lines longer than RFC 5322's
    # 998: the host answered "500 Line too long" to the message, and every message bounced.
    text = scenario(MESSAGE).replace("loaded-then-failed", "n" * 2000)
    refused(text, 1, "name", "more than the 100")


# --- a second look: more records at one name than one DNS message can hold ----------------------


def addresses_of_mx1(count: int, rtype: str) -> str:
    records = "".join(
        f"    mx1 IN A 10.0.{i // 256}.{i % 256}\n"
        if rtype == "A"
        else f"    mx1 IN AAAA 2001:db8::{i:x}\n"
        for i in range(count)
    )
    return "name: big-rrset\nzones:\n  example.test: |\n    @ IN MX 10 mx1\n" + records + MESSAGE


@pytest.mark.parametrize(("rtype", "most"), [("A", 4093), ("AAAA", 2338)])
def test_more_records_at_a_name_than_one_answer_can_hold_are_refused(rtype: str, most: int) -> None:
    # 4,100 A records at one name loaded; the DNS server could only answer TC=1 with no
    # records, even over TCP, and every message bounced with "no address found".
    load_scenario_text(addresses_of_mx1(most, rtype))
    refused(
        addresses_of_mx1(most + 1, rtype),
        most + 5,
        "zones.example.test",
        f"{rtype} record number {most + 1:,} of mx1.example.test",
        "65,535 bytes",
    )


# --- a second look: retry schedules that never end ----------------------------------------------


@pytest.mark.parametrize(
    ("sender", "key", "complaint"),
    [
        ("{profile: rfc5321, retry_interval: 0s}", "retry_interval", "at the same instant"),
        ("{min_backoff: 0}", "min_backoff", "at the same instant"),
        ("{max_backoff: 0s, queue_run_delay: 0s}", "max_backoff", "at the same instant"),
        ("{profile: rfc5321, retry_interval: 1s}", "retry_interval", "about 432,001 times"),
        ("{min_backoff: 0.001, max_backoff: 0.001}", "max_backoff", "every 0.001s"),
        ("{max_lifetime: 1000d}", "max_lifetime", "every 5m to 1h6m40s"),
        ("{profile: haraka, max_failures: 22}", "max_failures", "use 21 or fewer"),
    ],
    ids=["zero-interval", "zero-min", "zero-max", "every-second", "every-millisecond",
         "long-lifetime", "doubling"],
)  # fmt: skip
def test_a_retry_schedule_that_would_not_end_is_refused(
    tmp_path: Path, sender: str, key: str, complaint: str
) -> None:
    # A wait of 0s retried a failing message at the same virtual instant for ever: `run`
    # never returned. A wait of a second made 432,000 attempts of one message, half an hour
    # of CPU; Haraka's doubling waits with max_failures: 100 ran past any time the clock holds.
    hosts = "hosts: {mx1.example.test: refuse}\n"
    text = scenario(hosts, MESSAGE, f"sender: {sender}\n")
    refused(text, 9, f"sender.{key}", complaint)
    commands_refuse(tmp_path, text, 9)


def test_the_longest_retry_schedules_allowed_end() -> None:
    hosts = "hosts: {mx1.example.test: refuse}\n"
    load_scenario_text(scenario(hosts, MESSAGE, "sender: {max_lifetime: 400d}\n"))
    text = scenario(hosts, MESSAGE, "sender: {profile: haraka, max_failures: 21}\n")
    (row,) = run_scenario(load_scenario_text(text)).deliveries
    assert (row.status, row.attempts) == ("bounced", 21)


def test_a_profile_swapped_in_at_run_time_is_checked_too(tmp_path: Path) -> None:
    # Postfix ignores retry_interval; `run --profile rfc5321` meets it, every second.
    hosts = "hosts: {mx1.example.test: refuse}\n"
    path = tmp_path / "swap.yaml"
    path.write_text(scenario(hosts, MESSAGE, "sender: {retry_interval: 1s}\n"), encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["run", str(path), "--profile", "rfc5321"]) == 2
    (line,) = err.getvalue().splitlines()
    assert line.startswith(f"error: {path}: sender: a message that keeps failing"), line
    assert "with the rfc5321 profile" in line
