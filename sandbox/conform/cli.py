"""The command lines of ``mxsandbox conform`` and ``mxsandbox send``.

Only argparse is imported here: ``sandbox.cli`` builds its parser from these functions, and
each command loads what it runs when it runs.

``mxsandbox conform --sender-cmd 'CMD …'`` (or ``--smtp HOST:PORT``) runs the catalogue and
prints a report; ``--json``, ``--junit`` and ``--html`` write it to files as well. Exit
codes: 0 every MUST case passed (every SHOULD case too, with ``--strict``), 1 some did not,
2 the command line is wrong.

``mxsandbox send`` is our own sender as a one-message command, for ``--sender-cmd``::

    mxsandbox conform --sender-cmd 'mxsandbox send --dns {dns} --smtp-port {smtp_port}
        --from {from} --to {to} --message-file {message_file} --self {self}
        --profile postfix --time-scale 100'
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from sandbox.core.addresses import ensure_loopback

# HOST:PORT on loopback, and a port number, read as `mxsandbox serve` reads them.
from sandbox.serve.cli import _host_port as _loopback_host_port
from sandbox.serve.cli import _port

if TYPE_CHECKING:
    from sandbox.conform.model import CaseResult
    from sandbox.conform.runner import Report

__all__ = [
    "add_conform_arguments",
    "add_send_arguments",
    "conform_command",
    "send_command",
]

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
EXIT_INTERRUPTED = 130


def _loopback(text: str) -> str:
    try:
        ensure_loopback(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be more than 0")
    return value


# --- mxsandbox conform --------------------------------------------------------------------------


def add_conform_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--sender-cmd",
        metavar="CMD",
        help="the sender under test, run once per message; placeholders: {dns} {dns_host} "
        "{dns_port} {smtp_port} {from} {to} {message_file} {self}; exit 0 delivered, 75 "
        "deferred, anything else failed",
    )
    target.add_argument(
        "--smtp",
        type=_loopback_host_port,
        metavar="HOST:PORT",
        help="an MTA that takes the messages over SMTP; it must resolve through --dns and "
        "reach the mail hosts at --smtp-port (see docs/conformance.md)",
    )
    target.add_argument(
        "--list", action="store_true", help="list the cases with their clause and level"
    )
    parser.add_argument(
        "--queue",
        action="store_true",
        help="the command keeps the message until delivered or given up (retrying itself)",
    )
    parser.add_argument(
        "--time-scale",
        type=_positive,
        default=1.0,
        metavar="N",
        help="the sender's timers run N times faster than real time (for the retry cases)",
    )
    parser.add_argument(
        "--case-timeout",
        type=_positive,
        default=30.0,
        metavar="SECONDS",
        help="each case's deadline (default 30)",
    )
    parser.add_argument(
        "--jobs", type=int, default=6, metavar="N", help="cases run at once (default 6)"
    )
    parser.add_argument(
        "--case",
        action="append",
        default=[],
        metavar="ID",
        help="run only this case (a glob such as 'failover-*'); repeatable",
    )
    parser.add_argument(
        "--dns",
        type=_loopback_host_port,
        default=("127.0.0.1", 53),
        metavar="HOST:PORT",
        help="--smtp: where the MTA's resolver asks (default 127.0.0.1:53; port 0: any)",
    )
    parser.add_argument(
        "--smtp-port",
        type=_port,
        default=25,
        metavar="N",
        help="--smtp: the port every mail host listens on (default 25; 0: any free one)",
    )
    parser.add_argument(
        "--self",
        dest="self_address",
        type=_loopback,
        metavar="ADDRESS",
        help="--smtp: an address the MTA counts as its own, for the self-MX cases",
    )
    parser.add_argument("--label", default="", help="a name for the sender, in the reports")
    parser.add_argument("--json", metavar="FILE", help="write the report as JSON")
    parser.add_argument("--junit", metavar="FILE", help="write the report as JUnit XML")
    parser.add_argument("--html", metavar="FILE", help="write the report as an HTML page")
    parser.add_argument(
        "--strict", action="store_true", help="a failed SHOULD case fails the run too"
    )
    parser.add_argument("--quiet", action="store_true", help="print only the summary")


def conform_command(args: argparse.Namespace) -> int:
    from sandbox.conform.catalogue import select
    from sandbox.conform.reports import render_catalogue, render_text, write_reports
    from sandbox.conform.runner import CommandTarget, Options, SmtpTarget, run_conformance

    cases = select(tuple(args.case))
    if args.case and not cases:
        print(f"error: no case matches {', '.join(args.case)}", file=sys.stderr)
        return EXIT_INVALID
    if args.list:
        print(render_catalogue(cases), end="")
        return EXIT_OK
    target: CommandTarget | SmtpTarget
    if args.smtp is not None:
        target = SmtpTarget(args.smtp[0], args.smtp[1], args.dns, args.smtp_port, args.self_address)
    else:
        try:
            target = CommandTarget(args.sender_cmd, queue=args.queue)
        except ValueError as error:
            print(f"error: --sender-cmd: {error}", file=sys.stderr)
            return EXIT_INVALID
    progress = None if args.quiet else _progress(len(cases))
    options = Options(
        target,
        case_timeout=args.case_timeout,
        time_scale=args.time_scale,
        jobs=max(1, args.jobs),
        cases=cases,
        on_result=progress,
    )
    try:
        # Ctrl-C and SIGTERM end the cases in flight and the commands they started.
        report = run_conformance(options)
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("interrupted: no report", file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.label:
        from dataclasses import replace

        report = replace(report, label=args.label)
    print(render_text(report, details=not args.quiet), end="")
    write_reports(report, json_path=args.json, junit_path=args.junit, html_path=args.html)
    return EXIT_OK if report_ok(report, strict=args.strict) else EXIT_FAILED


def report_ok(report: Report, *, strict: bool) -> bool:
    """No MUST case failed (no SHOULD case either, when ``strict``)."""
    levels = ("MUST", "SHOULD") if strict else ("MUST",)
    return not any(r.verdict == "fail" and r.case.level in levels for r in report.results)


def _progress(total: int) -> Callable[[CaseResult], None]:
    done = [0]

    def tell(result: CaseResult) -> None:
        done[0] += 1
        print(
            f"  [{done[0]:>2}/{total}] {result.verdict:<4}  {result.case.id}",
            file=sys.stderr,
            flush=True,
        )

    return tell


# --- mxsandbox send ------------------------------------------------------------------------------


def add_send_arguments(parser: argparse.ArgumentParser) -> None:
    from sandbox.core.policy import PROFILES

    parser.add_argument(
        "--dns", type=_loopback_host_port, required=True, metavar="HOST:PORT",
        help="the DNS server to ask (and no other)",
    )  # fmt: skip
    parser.add_argument(
        "--smtp-port", type=_port, required=True, metavar="N",
        help="the port of every mail host",
    )  # fmt: skip
    parser.add_argument("--from", dest="sender", required=True, metavar="ADDRESS")
    parser.add_argument(
        "--to", required=True, metavar="ADDRESS[,ADDRESS…]", help="recipients, comma-separated"
    )
    parser.add_argument(
        "--message-file", required=True, metavar="FILE", help="the message ('-': stdin)"
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="postfix")
    parser.add_argument(
        "--queue",
        action="store_true",
        help="keep the message until delivered or given up, retrying on the profile's schedule",
    )
    parser.add_argument(
        "--dsn",
        action="store_true",
        help="with --queue: send a bounce back through the envelope sender's MX",
    )
    parser.add_argument(
        "--time-scale",
        type=_positive,
        default=1.0,
        metavar="N",
        help="run every timer of the profile N times faster (no timeout below 1 s)",
    )
    parser.add_argument(
        "--self",
        dest="self_address",
        metavar="ADDRESS",
        help="the sender's own address: MX records at its preference and worse are discarded",
    )
    parser.add_argument("--seed", type=int, help="fix the equal-preference shuffle")
    parser.add_argument("--quiet", action="store_true", help="no log lines on stderr")


def send_command(args: argparse.Namespace) -> int:
    import asyncio

    from sandbox.core.policy import PROFILES
    from sandbox.sender.oneshot import (
        DNS_TIMEOUT,
        TIMEOUT_FLOOR,
        SendRequest,
        scaled_profile,
        send_message,
    )

    recipients = tuple(r.strip() for r in args.to.split(",") if r.strip())
    if not recipients:
        print("error: --to: no recipient", file=sys.stderr)
        return EXIT_INVALID
    try:
        data = (
            sys.stdin.buffer.read()
            if args.message_file == "-"
            else open(args.message_file, "rb").read()  # noqa: SIM115 - read at once
        )
    except OSError as error:
        print(f"error: --message-file: {error.strerror}: {args.message_file}", file=sys.stderr)
        return EXIT_INVALID
    profile = PROFILES[args.profile]
    if args.self_address:
        try:
            profile = profile.with_overrides(
                {"address": str(ipaddress.ip_address(args.self_address))}
            )
        except ValueError:
            print(f"error: --self: {args.self_address!r} is not an address", file=sys.stderr)
            return EXIT_INVALID
    profile = scaled_profile(profile, args.time_scale, timeout_floor=TIMEOUT_FLOOR)
    request = SendRequest(
        dns=args.dns,
        smtp_port=args.smtp_port,
        sender=args.sender,
        recipients=recipients,
        data=data,
        profile=profile,
        queue=args.queue,
        dsn=args.dsn,
        seed=args.seed,
        dns_timeout=DNS_TIMEOUT / args.time_scale,
    )

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = asyncio.run(send_message(request, log=None if args.quiet else log))
    for recipient, status in result.statuses.items():
        reply = result.replies.get(recipient, "")
        print(f"{status} {recipient}" + (f": {reply}" if reply else ""), flush=True)
    return result.exit_code
