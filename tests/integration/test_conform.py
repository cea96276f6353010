"""``mxsandbox conform`` against real senders, on real loopback sockets.

- A sender written in another language (``tests/conform/node_sender.mjs``, Node.js with only
  its own dns and net modules) runs the whole catalogue and passes every graded case; the
  reports it produces are checked (JSON, JUnit XML against a schema).
- The same sender, broken on purpose one mistake at a time, fails exactly the cases that
  teach that mistake, and each failure names its clause and shows its evidence.
- Our own sender (``mxsandbox send``) runs the catalogue as a one-shot command, and keeps a
  queue for the retry cases.
- An MTA that takes mail over SMTP (``--smtp``): a small relay built on our sender, reached
  through the DNS router, bounces coming back through the envelope sender's MX.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest

from sandbox.conform.catalogue import CATALOGUE, select
from sandbox.conform.junit import render_junit
from sandbox.conform.reports import to_json, write_reports
from sandbox.conform.runner import CommandTarget, Options, Report, SmtpTarget, run_catalogue
from sandbox.conform.runner import run_conformance as run
from tests.conform.helpers import NODE, node_command, send_command, validate_junit
from tests.conform.relay import Relay
from tests.helpers import mxsandbox

needs_node = pytest.mark.skipif(NODE is None, reason="Node.js is not installed")

GRADED = {c.id for c in CATALOGUE if c.level != "profile"}
QUEUE_ONLY = {"retry-after-4xx", "retry-interval", "give-up"}


def verdicts(report: Report) -> dict[str, str]:
    return {r.case.id: r.verdict for r in report.results}


def failed(report: Report) -> set[str]:
    return {r.case.id for r in report.results if r.verdict == "fail"}


def run_cases(
    template: str, *patterns: str, queue: bool = False, scale: float = 1.0, timeout: float = 30
) -> Report:
    return run(
        Options(
            CommandTarget(template, queue=queue),
            cases=select(patterns),
            time_scale=scale,
            case_timeout=timeout,
            jobs=6,
        )
    )


@needs_node
def test_a_node_sender_passes_the_whole_catalogue_and_the_reports_hold(tmp_path: Path) -> None:
    report = run(Options(CommandTarget(node_command())))
    assert len(report.results) >= 30
    graded_one_shot = GRADED - QUEUE_ONLY
    seen = verdicts(report)
    assert {case for case in graded_one_shot if seen[case] != "pass"} == set()
    assert {seen[case] for case in QUEUE_ONLY} == {"info"}
    # Profile-specific cases say what the sender did, without a grade.
    assert {r.verdict for r in report.results if r.case.level == "profile"} == {"info"}

    write_reports(
        report,
        json_path=str(tmp_path / "r.json"),
        junit_path=str(tmp_path / "r.xml"),
        html_path=str(tmp_path / "r.html"),
    )
    data = json.loads((tmp_path / "r.json").read_text())
    assert len(data["cases"]) == len(CATALOGUE)
    assert data["summary"]["MUST"]["fail"] == 0
    suites = validate_junit((tmp_path / "r.xml").read_text(), tmp_path)
    assert next(iter(suites)).tests == len(CATALOGUE)
    assert 'data-case="mx-order"' in (tmp_path / "r.html").read_text()


# Each mistake, the cases that must catch it, and cases it must leave passing (so that a
# verdict is about the mistake, not about a sender that fails everything).
MISTAKES = [
    ("mx-order", {"mx-order", "failover-order"}, {"failover-refused", "implicit-mx"}),
    (
        "no-failover-4xx",
        {
            "failover-refused",
            "failover-timeout",
            "failover-silent",
            "failover-421-greeting",
            "failover-451-ehlo",
            "failover-451-mail",
            "failover-451-rcpt",
            "failover-451-data",
            "failover-451-message",
        },
        {"mx-order", "no-failover-550-rcpt", "tempfail-defers"},
    ),
    (
        "failover-5xx",
        {"no-failover-550-mail", "no-failover-550-rcpt", "no-failover-554-message"},
        {"failover-451-rcpt", "mx-order"},
    ),
    ("implicit-mx-on-nxdomain", {"no-implicit-mx-on-nxdomain"}, {"implicit-mx", "null-mx"}),
    ("ignore-null-mx", {"null-mx"}, {"implicit-mx", "nxdomain"}),
    ("first-address-only", {"every-address-tried"}, {"failover-refused"}),
    ("no-shuffle", {"equal-preference-spread"}, {"mx-order"}),
    ("servfail-bounces", {"servfail", "dns-timeout"}, {"nxdomain"}),
    ("dot-lost-delivered", {"lost-dot"}, {"failover-451-message"}),
    ("no-self-check", {"self-backup-mx", "self-best-mx"}, {"mx-order"}),
    ("mx-address-fallback", {"mx-without-address"}, {"mx-partial-address", "implicit-mx"}),
    ("ignore-size", {"size-limit"}, {"mx-order"}),
    ("ignore-smtputf8", {"smtputf8-not-offered"}, {"size-limit"}),
    ("rcpt-5xx-fails-all", {"rcpt-550-one-of-two"}, {"no-failover-550-rcpt", "failover-451-rcpt"}),
    ("unresolved-mx-bounces", {"mx-partial-address"}, {"mx-without-address", "failover-refused"}),
    ("no-implicit-mx", {"implicit-mx"}, {"nxdomain", "mx-order"}),
    ("nxdomain-defers", {"nxdomain"}, {"no-implicit-mx-on-nxdomain", "servfail"}),
    ("cname-not-followed", {"domain-cname"}, {"implicit-mx", "mx-order"}),
    ("unreachable-bounces", {"all-refused-defers"}, {"failover-refused", "tempfail-defers"}),
]


@needs_node
@pytest.mark.parametrize(("mistake", "caught", "unharmed"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_a_broken_sender_fails_the_cases_that_teach_its_mistake(
    mistake: str, caught: set[str], unharmed: set[str]
) -> None:
    report = run_cases(node_command(mistake), *caught, *unharmed)
    assert failed(report) >= caught
    assert not failed(report) & unharmed
    for result in report.results:
        if result.case.id in caught:
            # The failure names its clause and shows its evidence.
            data = to_json(Report((result,), "", "command", 1, 30, "", 0))["cases"][0]
            assert data["clause"].startswith("RFC ")
            assert data["evidence"]["timeline"], result.case.id
            junit = render_junit({"cases": [data], "duration": 0})
            assert f'type="{data["clause"]}"' in junit


QUEUE_MISTAKES = [
    ("", set()),
    ("--break no-retry", {"retry-after-4xx"}),
    ("--break retry-too-soon", {"retry-interval"}),
    # Giving up after 100 scaled seconds also returns the mail that only had to wait.
    ("--give-up 1000", {"give-up", "tempfail-defers", "retry-after-4xx"}),
]


@needs_node
@pytest.mark.parametrize(
    ("extra", "caught"),
    QUEUE_MISTAKES,
    ids=["correct", "no-retry", "retry-too-soon", "gives-up-early"],
)
def test_a_queueing_sender_is_graded_on_its_retries(extra: str, caught: set[str]) -> None:
    # The sender's timers run 300 times faster: its 6 s retry interval is 30 minutes, and
    # each case's 12 s are an hour of its time.
    template = node_command(queue=True, extra=f"--retry-interval 6000 {extra}".strip())
    report = run_cases(
        template, "retry-*", "tempfail-defers", "give-up", queue=True, scale=300, timeout=12
    )
    assert failed(report) == caught
    seen = verdicts(report)
    if not caught:
        assert seen["retry-after-4xx"] == seen["retry-interval"] == "pass"
        assert seen["give-up"] == "info"  # an hour is less than four days


def test_every_graded_case_has_a_mistake_that_fails_it() -> None:
    # A case no mistake fails is a judge nobody has seen say "fail": it may never.
    caught = set().union(*(c for _, c, _ in MISTAKES), *(c for _, c in QUEUE_MISTAKES))
    graded = {case.id for case in CATALOGUE if case.level != "profile"}
    assert graded - caught == set()


def test_our_own_sender_passes_every_graded_one_shot_case() -> None:
    report = run(Options(CommandTarget(send_command("postfix"))))
    seen = verdicts(report)
    assert {case for case in GRADED - QUEUE_ONLY if seen[case] != "pass"} == set()


@pytest.mark.parametrize("profile", ["postfix", "exim", "haraka", "rfc5321"])
def test_each_profile_goes_on_over_starttls_to_the_cases_hosts(profile: str) -> None:
    # The cases' hosts offer STARTTLS. `mxsandbox send` has a TLS client of its own, which
    # trusts no host's CA: at each profile's own level it goes on over untrusted TLS, as the
    # MTAs do. It had none, and the haraka profile ended every attempt at STARTTLS.
    report = run_cases(send_command(profile), "mx-order", "no-failover-550-mail")
    assert verdicts(report) == {"mx-order": "pass", "no-failover-550-mail": "pass"}
    sessions = [s for r in report.results if r.observation for s in r.observation.sessions]
    assert sessions and all(
        any(line.startswith("<TLS") for _, _, line in s.transcript) for s in sessions
    )


def test_our_own_sender_keeps_a_queue_and_retries() -> None:
    report = run_cases(
        send_command("rfc5321", queue=True, scale=300),
        "retry-after-4xx",
        "retry-interval",
        queue=True,
        scale=300,
        timeout=12,
    )
    # rfc5321 retries every 30 minutes: 6 s at x300.
    assert verdicts(report) == {"retry-after-4xx": "pass", "retry-interval": "pass"}


async def test_an_mta_over_smtp_is_graded_through_the_dns_router() -> None:
    relay = Relay(time_scale=100, self_address="127.0.0.99")
    await relay.start()
    try:
        host, port = relay.address
        target = SmtpTarget(host, port, ("127.0.0.1", 0), 0, self_address="127.0.0.99")
        # 12 s at x100 are 20 minutes of the relay's time: its retries come after 10.
        options = Options(target, time_scale=100, case_timeout=12, jobs=10, on_ready=relay.ready)
        report = await run_catalogue(options)
    finally:
        await relay.close()
    seen = verdicts(report)
    # The relay is our postfix profile: it retries after 10 minutes (x100), which the RFC's
    # 30 minutes call too soon, and it has not given up within the deadline.
    assert failed(report) == {"retry-interval"}
    assert {case for case in GRADED - {"retry-interval", "give-up"} if seen[case] != "pass"} == (
        set()
    )
    assert relay.accepted >= len(GRADED)
    # Bounces came back through the envelope sender's MX and were read as failures.
    returned = next(r for r in report.results if r.case.id == "no-failover-550-rcpt")
    assert returned.observation is not None and returned.observation.returned


async def test_without_a_self_address_the_self_cases_say_why_they_did_not_run() -> None:
    relay = Relay(time_scale=100)
    await relay.start()
    try:
        host, port = relay.address
        options = Options(
            SmtpTarget(host, port, ("127.0.0.1", 0), 0),
            cases=select(("self-*",)),
            on_ready=relay.ready,
        )
        report = await run_catalogue(options)
    finally:
        await relay.close()
    assert {r.verdict for r in report.results} == {"info"}
    assert all(r.pending and "--self" in r.pending for r in report.results)


def test_the_command_line_grades_and_exits_by_the_must_cases(tmp_path: Path) -> None:
    good = mxsandbox(
        "conform",
        "--sender-cmd",
        send_command("postfix"),
        "--case",
        "mx-order",
        "--case",
        "null-mx",
        "--json",
        str(tmp_path / "r.json"),
        "--junit",
        str(tmp_path / "r.xml"),
    )
    assert good.returncode == 0, good.stderr
    assert "PASS  MUST    mx-order" in good.stdout
    assert json.loads((tmp_path / "r.json").read_text())["cases"][0]["id"] == "mx-order"
    validate_junit((tmp_path / "r.xml").read_text(), tmp_path)

    if NODE is not None:
        broken = mxsandbox("conform", "--sender-cmd", node_command("mx-order"), "--case", "mx-*")
        assert broken.returncode == 1, broken.stdout
        assert "FAIL  MUST    mx-order" in broken.stdout and "RFC 5321 §5.1" in broken.stdout

    usage = mxsandbox("conform", "--sender-cmd", "sendmail -t")
    assert usage.returncode == 2 and "{dns}" in usage.stderr
    listed = mxsandbox("conform", "--list")
    assert listed.returncode == 0 and "lost-dot" in listed.stdout


async def test_mxsandbox_send_exits_by_sendmails_convention(tmp_path: Path) -> None:
    from sandbox import ServedScenario

    zone = "@ MX 10 mx1\nmx1 A 192.0.2.10\n"
    message = tmp_path / "m.eml"
    message.write_bytes(b"Subject: hi\r\nMessage-ID: <m1@test>\r\n\r\nhello\r\n")
    for behaviour, code in (
        ("accept", 0),
        ({"rcpt": "451 4.3.0 later"}, 75),
        ({"rcpt": "550 5.1.1 no"}, 69),
    ):
        async with ServedScenario.from_source(
            {"zones": {"x.test": zone}, "hosts": {"mx1.x.test": behaviour}}
        ) as sb:
            process = await asyncio.create_subprocess_exec(
                *send_command("postfix").split()[:4],
                "--dns",
                f"{sb.dns[0]}:{sb.dns[1]}",
                "--smtp-port",
                str(sb.smtp_port),
                "--from",
                "bob@y.test",
                "--to",
                "alice@x.test",
                "--message-file",
                str(message),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await process.communicate()
            assert process.returncode == code, err.decode()
            if code == 0:
                assert sb.messages("mx1.x.test")[0]["Message-ID"] == "<m1@test>"
                assert out.decode().startswith("delivered alice@x.test")
            assert b"postfix/smtp" in err  # the log, as Postfix writes it


def test_sigterm_stops_the_run_and_the_commands_it_started(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import threading

    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    # A sender that says it has started (its pid, through the FIFO), then never finishes.
    sender = f'sh -c "echo $$ > {fifo}; exec sleep 600" {{dns}} {{smtp_port}} {{to}}'
    conform = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "conform", "--queue", "--case", "tempfail-defers",
         "--sender-cmd", sender],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    started: list[str] = []
    reader = threading.Thread(target=lambda: started.append(fifo.read_text()), daemon=True)
    reader.start()
    reader.join(timeout=30)
    try:
        assert started, "the sender never started"
        pid = int(started[0])
        conform.send_signal(signal.SIGTERM)
        out, _ = conform.communicate(timeout=30)
    finally:
        if conform.poll() is None:
            conform.kill()
            conform.wait()
    try:
        assert conform.returncode == 130, out
        assert "interrupted" in out
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # only if the test failed: never leave it running
