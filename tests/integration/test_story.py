"""The story never misleads: what `mxsandbox run` tells a learner, checked line by line.

Each test reads the narrative (or the report) of a real run and checks one thing the story
used to get wrong: a decision that named a next host when none was left, timestamps that went
backwards, a behaviour column that showed only the last phase, a balancing section for hosts
that never shared a preference, an RFC rule told as a warning after the fact, a bounce that
contradicted the line above it, a missing QUIT, three identical stories.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from sandbox import RunResult, load_scenario, load_scenario_text, run_scenario
from sandbox.output.narrative import render_narrative, render_summary
from sandbox.output.report.data import build_flow
from sandbox.output.report.render import render_report
from tests.helpers import ROOT, mxsandbox

_CLOCK = re.compile(r"^\s+((?:\d+d )?\d+:\d\d:\d\d(?:\.\d+)?)  ")


def shipped(name: str) -> RunResult:
    return run_scenario(load_scenario(ROOT / "scenarios" / f"{name}.yaml"))


def inline(text: str) -> RunResult:
    return run_scenario(load_scenario_text(text))


def story(result: RunResult) -> str:
    return render_narrative(result, all_stories=True)


def message_story(text: str, number: int) -> list[str]:
    """The lines of one message's story."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"Message {number}:"))
    end = next(
        (i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), len(lines)
    )
    return lines[start:end]


def after(lines: list[str], needle: str) -> list[str]:
    """The lines that follow the first one containing ``needle``, up to the next timed line."""
    index = next(i for i, line in enumerate(lines) if needle in line)
    rest = []
    for line in lines[index + 1 :]:
        if _CLOCK.match(line):
            break
        rest.append(line.strip())
    return rest


def seconds(clock: str) -> float:
    days, _, clock = clock.rpartition("d ")
    h, m, s = clock.split(":")
    return (int(days) if days else 0) * 86400 + int(h) * 3600 + int(m) * 60 + float(s)


TWO_MX = """\
name: two-mx
zones:
  example.test: |
    $TTL 60
    @     IN MX 10 mx1
    @     IN MX 20 mx2
    mx1   IN A  192.0.2.10
    mx1   IN AAAA 2001:db8::10
    mx2   IN A  192.0.2.11
messages:
  - {from: bob@example.net, to: alice@example.test}
"""


# --- 1. the next step the story names is the one that follows --------------------------------


def test_a_refusal_names_the_next_host_it_tries() -> None:
    lines = message_story(story(shipped("primary-down")), 1)
    decided = after(lines, "mx1.example.test[192.0.2.10]:25 … refused")
    assert decided == [
        "⇒ the connection was refused: try the next host, mx2.example.test[192.0.2.11]"
    ]


def test_a_refusal_with_no_host_left_says_so_instead_of_try_the_next_host() -> None:
    lines = message_story(story(shipped("all-down-then-recovered")), 1)
    decided = after(lines, "mx2.example.test[192.0.2.11]:25 … refused")
    assert "try the next host" not in " ".join(decided)
    assert decided[0] == "⇒ the connection was refused; no other host is left to try"
    assert decided[1].startswith("⇒ defer: 4.4.1")


def test_another_address_of_the_same_host_is_called_that() -> None:
    result = inline(TWO_MX + "hosts:\n  mx1.example.test: refuse\n")
    lines = message_story(story(result), 1)
    decided = after(lines, "mx1.example.test[192.0.2.10]:25 … refused")
    assert decided == [
        "⇒ the connection was refused: try another address of mx1.example.test, "
        "mx1.example.test[2001:db8::10]"
    ]
    decided = after(lines, "mx1.example.test[2001:db8::10]:25 … refused")
    assert decided == [
        "⇒ the connection was refused: try the next host, mx2.example.test[192.0.2.11]"
    ]


# --- 2. DNS trouble, told in order and in words ----------------------------------------------


# mx1 has no IPv6 address here, and its name never answers.
DNS_TIMEOUT = (
    TWO_MX.replace("two-mx", "dns-timeout").replace("    mx1   IN AAAA 2001:db8::10\n", "")
    + "dns:\n  mx1.example.test: timeout\n"
)


def test_with_a_dns_timeout_the_story_never_goes_back_in_time() -> None:
    lines = message_story(story(inline(DNS_TIMEOUT)), 1)
    times = [seconds(m.group(1)) for line in lines if (m := _CLOCK.match(line))]
    assert times == sorted(times), "\n".join(lines)


def test_a_host_without_an_address_is_skipped_in_a_line_of_its_own() -> None:
    lines = message_story(story(inline(DNS_TIMEOUT)), 1)
    asked = next(i for i, line in enumerate(lines) if "DNS: address of mx1.example.test?" in line)
    assert "TIMEOUT" in lines[asked]
    assert "skip mx1.example.test: DNS gave it no address (no answer)" in "\n".join(lines)
    # It comes before the connection to mx2, and no connection to mx1 is made.
    text = "\n".join(lines)
    assert text.index("skip mx1.example.test") < text.index("connect to mx2.example.test")
    assert "connect to mx1.example.test" not in text


def test_a_servfail_retry_is_told_in_words_not_as_no_route() -> None:
    result = inline(
        """\
name: servfail
zones:
  example.test: |
    $TTL 60
    @     IN MX 10 mx1
    mx1   IN A  192.0.2.10
dns:
  example.test: [{until: 1h, do: servfail}, {do: answer}]
messages:
  - {from: bob@example.net, to: alice@example.test}
"""
    )
    text = "\n".join(message_story(story(result), 1))
    assert "no route" not in text
    assert "attempt 3: DNS gave SERVFAIL for the MX records of example.test → defer until" in text


# --- 3. the behaviour column tells every phase -----------------------------------------------


def test_the_summary_shows_every_phase_a_host_went_through() -> None:
    summary = "\n".join(render_summary(shipped("all-down-then-recovered")))
    row = next(line for line in summary.splitlines() if line.strip().startswith("mx1.example.test"))
    assert "refuse until 2:00:00, then accept" in row


# --- 4. moving-your-mx: no balancing, both MX sets, the moments that matter -------------------


def test_hosts_never_in_the_zone_together_are_no_balancing_group() -> None:
    result = shipped("moving-your-mx")
    assert "Balancing" not in "\n".join(render_summary(result))
    assert 'data-group="' not in render_report(result)


def test_the_report_lists_every_mx_set_and_marks_the_zone_change_and_the_cache_expiry() -> None:
    result = shipped("moving-your-mx")
    flow = build_flow(result)
    assert [row.host for row in flow.mx_rows] == ["old.example.test", "new.example.test"]
    moments = [(moment.t, moment.kind) for moment in flow.moments]
    assert (3600.0, "zone") in moments
    assert (7200.0, "cache") in moments
    page = html.unescape(render_report(result))
    assert 'data-moment="zone"' in page and 'data-moment="cache"' in page
    assert "1:00:00 the example.test zone changes" in re.sub(r"<[^>]+>", "", page)
    assert "the sender's cached MX answer for example.test expires" in page
    assert "the MX records the sender used from 2:10:00" in page


# --- 5. discarding its own preference is the rule, told where the order is chosen -------------


def test_a_sender_that_is_an_mx_explains_the_discard_before_the_order() -> None:
    lines = message_story(story(shipped("client-is-backup-mx")), 1)
    text = "\n".join(lines)
    assert "warning: this sender" not in text
    discard = text.index("records at 20 and worse are discarded (RFC 5321 §5.1)")
    assert discard < text.index("order: mx1.example.test (10)")
    assert discard > text.index("DNS: MX example.test?")


# --- 6. aliases and the null MX, said where they matter ---------------------------------------


def test_a_rejected_cname_bounces_for_that_reason_not_for_a_missing_address() -> None:
    text = (ROOT / "scenarios" / "mx-points-at-cname.yaml").read_text()
    text = text.replace("messages:", "sender: {cname: reject}\nmessages:", 1)
    text = text[: text.index("expect:")]
    told = story(inline(text))
    assert "no address found for mail.example.test" not in told
    assert (
        "✘ bounced alice@example.test: 5.4.4 the only MX, mail.example.test, is an alias "
        "(a CNAME), which this sender rejects (RFC 2181 §10.3)"
    ) in told


def test_a_recipient_domain_that_is_an_alias_is_followed_aloud() -> None:
    result = inline(
        """\
name: domain-cname
zones:
  example.test: |
    $TTL 3600
    mail   IN CNAME real.example.test.
    real   IN MX 10 mx1
    mx1    IN A 192.0.2.10
messages:
  - {from: bob@example.net, to: alice@mail.example.test}
"""
    )
    text = "\n".join(message_story(story(result), 1))
    assert (
        "DNS: MX mail.example.test? → 10 mx1.example.test.  (TTL 3600) "
        "(an alias: mail.example.test → real.example.test)"
    ) in text
    assert "the MX records of real.example.test, the name the alias points to" in text


def test_the_null_mx_story_says_the_domains_own_address_is_ignored() -> None:
    text = "\n".join(message_story(story(shipped("null-mx")), 1))
    assert "the domain's own address records are not used" in text


# --- 7. the smaller points ---------------------------------------------------------------------


def test_the_story_shows_quit() -> None:
    lines = message_story(story(shipped("primary-down")), 1)
    quit_line = next(line for line in lines if "C: QUIT" in line)
    assert "S: 221" in quit_line
    text = "\n".join(lines)
    assert text.index("C: QUIT") > text.index("C: <message> .")


def test_identical_stories_are_told_once() -> None:
    told = render_narrative(shipped("backup-while-primary-tempfails"))
    assert told.count("attempt 1: deliver to example.test") == 1
    assert "Messages 2 and 3: the same story as message 1 (2 more like this one)." in told


def test_the_returned_mail_table_lists_messages_in_order() -> None:
    result = inline(
        """\
name: returned-in-order
zones:
  example.test: |
    $TTL 60
    @     IN MX 10 mx1
    mx1   IN A  192.0.2.10
hosts:
  mx1.example.test: [{until: 1h, do: refuse}, {do: {rcpt: "550 5.1.1 No such user"}}]
messages:
  - {from: bob@example.net, to: alice@example.test}
  - {from: bob@example.net, to: carol@other.test}
"""
    )
    summary = render_summary(result)
    start = summary.index("Returned to sender (RFC 3464 delivery status notifications)")
    rows = [line.split()[0] for line in summary[start + 2 :] if line.strip()]
    numbers = [int(n) for n in rows if n.isdigit()]
    assert numbers == sorted(numbers) and len(numbers) == 2


def test_json_and_a_postfix_log_together_are_refused_not_silently_half_done() -> None:
    done = mxsandbox("run", "primary-down", "--json", "--log", "postfix")
    assert done.returncode == 2
    assert "--log postfix" in done.stderr and "--json" in done.stderr
    assert done.stdout == ""


def test_the_report_says_where_it_was_written(tmp_path: Path) -> None:
    target = tmp_path / "out.html"
    done = mxsandbox("run", "primary-down", "--quiet", "--report", str(target))
    assert done.returncode == 0, done.stderr
    assert target.exists()
    assert f"report written to {target}" in done.stderr


def test_a_returned_message_kept_in_the_mailbox_has_its_own_status_not_its_via() -> None:
    (returned,) = shipped("null-mx").to_json()["returned"]
    assert returned["via"] == "returned_mailbox"
    assert returned["status"] == "delivered"


# --- TLS (issue 14): the step, the verdict and why, in the story and in the report's lanes ---


def test_the_story_tells_the_tls_step_the_verdict_and_why_it_goes_on() -> None:
    lines = message_story(story(shipped("tls-broken-certificate")), 1)
    step = next(i for i, line in enumerate(lines) if re.search(r"TLS: TLSv1\.[23], ", line))
    assert lines[step].endswith("certificate expired")
    assert "untrusted TLS connection (certificate has expired)" in lines[step + 1]
    assert lines[step + 1].endswith("encryption is enough here (TLS level may)")
    assert "delivered to alice@example.test by mx1.example.test" in lines[-1]


def test_the_story_tells_a_tlsa_mismatch_ruling_out_each_host_then_the_wait() -> None:
    lines = message_story(story(shipped("dane-mismatch")), 1)
    first_try = lines[: next(i for i, line in enumerate(lines) if "attempt 2:" in line)]
    verdicts = [line for line in first_try if "TLS: TLSv1" in line]
    assert len(verdicts) == 2 and all("TLSA mismatch" in line for line in verdicts)
    decisions = [line.strip() for line in first_try if "⇒" in line]
    assert decisions == [
        "⇒ Server certificate not verified: it matches none of the TLSA records: try the "
        "next host, mx2.example.test[192.0.2.11]",
        "⇒ Server certificate not verified: it matches none of the TLSA records; no other "
        "host is left to try",
        "⇒ defer: 4.7.5 Server certificate not verified",
    ]


def test_the_report_marks_each_session_with_its_tls_outcome() -> None:
    untrusted = build_flow(shipped("tls-broken-certificate"))
    assert [(m.mx, m.tls) for m in untrusted.marks] == [("mx1.example.test", "untrusted")]
    ruled_out = build_flow(shipped("dane-mismatch"))
    assert {m.tls for m in ruled_out.marks} == {"failed"}
    page = html.unescape(render_report(shipped("dane-mismatch")))
    assert 'data-tls="failed"' in page and "TLS failed: the host was not good enough" in page
