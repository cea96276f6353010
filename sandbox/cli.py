"""``mxsandbox``: run, check, list and serve scenarios; print the format's JSON Schema; grade
senders (``conform``, ``send``).

Exit codes are part of the output contract: 0 every expectation holds, 1 an expectation
failed, 2 the scenario or the command line is invalid, 130 interrupted (Ctrl-C: a run prints
what happened so far first). A mistake of the user's is printed as one clear line on stderr,
never as a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sandbox.core.policy import PROFILES
from sandbox.errors import OutputError, ScenarioError

if TYPE_CHECKING:
    from sandbox.output.term import Progress
    from sandbox.result.model import RunResult
    from sandbox.scenario.model import Scenario

__all__ = ["main"]

EXIT_OK, EXIT_EXPECTATION_FAILED, EXIT_INVALID = 0, 1, 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C
DEFAULT_SCENARIOS = Path("scenarios")


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mxsandbox", description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run a scenario and tell the story of each message")
    run.add_argument(
        "file", help="a scenario file, or the name of one in ./scenarios or of a shipped one"
    )
    run.add_argument("--seed", type=_seed, help="override the scenario's seed")
    run.add_argument("--profile", choices=sorted(PROFILES), help="swap the sender profile")
    run.add_argument("--json", action="store_true", help="print one JSON object, no story")
    run.add_argument("--trace", metavar="FILE", help="write every event as JSON Lines")
    run.add_argument(
        "--log",
        choices=["postfix"],
        help="tell the story as Postfix log lines instead of the narrative",
    )
    run.add_argument(
        "--all-stories",
        action="store_true",
        help="tell every message's story, however many there are",
    )
    run.add_argument(
        "--report", metavar="FILE", help="write a self-contained HTML timeline of the run"
    )
    run.add_argument("--quiet", action="store_true", help="print only the summary")

    check = commands.add_parser("check", help="validate a scenario file and lint its zones")
    check.add_argument("file")

    listing = commands.add_parser(
        "list", help="list the scenarios that come with the package, or those in a folder"
    )
    listing.add_argument("folder", nargs="?", help="a folder of scenario files")

    commands.add_parser(
        "schema",
        help="print a JSON Schema of the scenario format, for editors "
        "(docs/scenario-format.md says how to use it)",
    )

    serve = commands.add_parser(
        "serve", help="serve a scenario's DNS and mail hosts in real time, for your own sender"
    )
    from sandbox.serve.cli import add_serve_arguments

    add_serve_arguments(serve)

    from sandbox.conform.cli import add_conform_arguments, add_send_arguments

    conform = commands.add_parser(
        "conform", help="grade a sender (a command or an MTA) against the conformance catalogue"
    )
    add_conform_arguments(conform)
    send = commands.add_parser(
        "send", help="send one message with our sender, in real time (a --sender-cmd for conform)"
    )
    add_send_arguments(send)
    return parser


def _seed(text: str) -> int:
    """``--seed``: a whole number, within the bounds of a scenario's ``seed``."""
    from sandbox.scenario.load import MAX_SEED

    try:
        seed = int(text) if len(text) <= 100 else MAX_SEED
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if abs(seed) >= MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"the seed has more than {len(str(MAX_SEED)) - 1} digits; give a shorter one"
        )
    return seed


def main(argv: Sequence[str] | None = None) -> int:
    # Each command imports what it needs when it runs: `list` and `check` never load the
    # event loop, the SMTP libraries or the servers, and a Ctrl-C while a command loads them
    # is caught here like any other.
    try:
        args = _parser().parse_args(argv)
        if args.command == "run":
            return _run(args)
        if args.command == "check":
            return _check(args)
        if args.command == "serve":
            return _serve(args)
        if args.command == "schema":
            return _schema()
        if args.command == "conform":
            return _conform(args)
        if args.command == "send":
            return _send(args)
        return _list(args)
    except _UsageError as error:
        print(error, file=sys.stderr)
        return EXIT_INVALID
    except (ScenarioError, OutputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    except BrokenPipeError:
        # The reader went away (`mxsandbox run … | head`): not an error worth a traceback.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - replaces the closed stdout for good
        return EXIT_OK
    except KeyboardInterrupt:
        # Ctrl-C outside a run (loading, printing), or a second one during a run.
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


@contextlib.contextmanager
def _pytest_hidden() -> Iterator[None]:
    """While the run's modules load, pretend pytest is not installed.

    looptime defines a pytest fixture whenever pytest can be imported, and importing pytest
    costs more than everything else a small run does (about 0.2 s). A command-line process
    never runs pytest. In a test that calls ``main()``, pytest is loaded already and nothing
    changes.
    """
    if "pytest" in sys.modules:
        yield
        return
    sys.modules["pytest"] = None  # type: ignore[assignment]  # `import pytest` now fails
    try:
        yield
    finally:
        del sys.modules["pytest"]


def _serve(args: argparse.Namespace) -> int:
    from sandbox.scenario.load import load_scenario
    from sandbox.serve.cli import serve_scenario

    return serve_scenario(load_scenario(_scenario_path(args.file)), args)


def _conform(args: argparse.Namespace) -> int:
    from sandbox.conform.cli import conform_command

    return conform_command(args)


def _send(args: argparse.Namespace) -> int:
    with _pytest_hidden():
        from sandbox.conform.cli import send_command

    return send_command(args)


def _scenario_path(name: str) -> Path:
    """A scenario file by its path, or by its name in ./scenarios or among the shipped ones."""
    from sandbox.scenario.shipped import find_scenario

    path = find_scenario(name, folders=[DEFAULT_SCENARIOS])
    if not path.exists() and len(path.parts) == 1:
        raise ScenarioError(
            "no such file, and no scenario of that name in ./scenarios or among the shipped "
            "ones; `mxsandbox list` shows the shipped scenarios",
            file=name,
        )
    return path


def _run(args: argparse.Namespace) -> int:
    with _pytest_hidden():
        from sandbox.events import Emit
        from sandbox.output.findings import write_report, zone_check
        from sandbox.output.narrative import render_narrative, render_summary
        from sandbox.output.postfix_log import PostfixLog
        from sandbox.output.term import style_for
        from sandbox.output.trace import JsonLinesTrace, open_trace
        from sandbox.run import profile_for, run_scenario
        from sandbox.scenario.lint import lint_scenario
        from sandbox.scenario.load import load_scenario

    if args.json and args.log:
        # One stdout, one kind of output: JSON for programs, or the story as log lines.
        raise _UsageError(
            f"mxsandbox run: --json and --log {args.log} both want stdout; use one of them "
            "(with --json, --trace FILE writes every event beside it)"
        )
    scenario = load_scenario(_scenario_path(args.file))
    findings = lint_scenario(scenario)
    profile = profile_for(scenario, args.profile)
    sinks: list[Emit] = []
    progress = _progress(scenario, quiet=args.quiet)
    if progress is not None:
        sinks.append(progress)
    trace: JsonLinesTrace | None = None
    try:
        if args.trace:
            trace = open_trace(args.trace)
            sinks.append(trace)
        log_lines: list[str] = []
        if args.log == "postfix":
            sinks.append(PostfixLog(log_lines.append))
        result = run_scenario(scenario, seed=args.seed, profile=profile, sinks=sinks)
    finally:
        if progress is not None:
            progress.close()
        if trace is not None:
            trace.close()
    style = style_for(sys.stdout)
    if args.json:
        text = json.dumps(result.to_json(), indent=2) + "\n"
    elif args.log == "postfix":
        text = "".join(line + "\n" for line in log_lines)
        text += "\n" + "\n".join(render_summary(result)) + "\n"
    elif args.quiet:
        text = "\n".join(render_summary(result, style)) + "\n"
    else:
        preface = zone_check(findings, scenario.source, style)
        text = render_narrative(result, all_stories=args.all_stories, style=style, preface=preface)
    _print_whole(text)
    # The files asked for come after the story: a report or trace that cannot be written
    # fails the command (exit 2) without taking the run's own output with it.
    if args.report:
        write_report(result, findings, args.report)
        print(f"report written to {args.report}", file=sys.stderr)
    if trace is not None and trace.error is not None:
        raise trace.error
    if result.interrupted:
        _say_interrupted(result)
        return EXIT_INTERRUPTED
    return EXIT_OK if result.ok else EXIT_EXPECTATION_FAILED


def _print_whole(text: str) -> None:
    """Write ``text`` to stdout whole: a reader gets valid JSON (or the whole story) or nothing.

    A Ctrl-C (or SIGTERM) that arrives while the text is being written waits until it is
    written, then interrupts as usual. A second one gives up at once: the reader is not
    reading, so nobody would see the rest anyway. A write that fails (a full disk) is the
    user's to mend: one line, exit 2.
    """
    caught: list[int] = []

    def defer(signum: int, frame: object) -> None:
        if caught:
            raise KeyboardInterrupt
        caught.append(signum)

    try:
        previous = {s: signal.signal(s, defer) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: signals cannot be caught here
        previous = {}
    try:
        _write_all(text)
    except BrokenPipeError:
        raise
    except OSError as error:
        raise OutputError("<stdout>", "the output", error) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if signal.SIGTERM in caught:
        raise SystemExit(128 + signal.SIGTERM)
    if caught:
        raise KeyboardInterrupt


def _write_all(text: str) -> None:
    # os.write, not sys.stdout: a blocking write that a signal interrupts half-way returns how
    # much it wrote, and here, unlike in the io module's buffered writer, nothing of the rest
    # is lost (seen with a 1 MB write to a pipe: the buffered writer kept 69,632 bytes).
    sys.stdout.flush()
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError, AttributeError):  # not a real file (a test's capture)
        sys.stdout.write(text)
        return
    view = memoryview(text.encode())
    while view:
        view = view[os.write(fd, view) :]


def _say_interrupted(result: RunResult) -> None:
    from sandbox.output.narrative import clock_text

    unsettled = sum(1 for d in result.deliveries if d.status == "deferred")
    print(
        f"interrupted at {clock_text(result.ended_at)} (virtual time): the summary shows the "
        f"run so far; {unsettled} recipient(s) still queued are reported as deferred",
        file=sys.stderr,
    )


def _progress(scenario: Scenario, *, quiet: bool) -> Progress | None:
    """Progress on stderr, for a person watching a terminal (never in a pipe or a log)."""
    from sandbox.output.narrative import clock_text
    from sandbox.output.term import Progress, is_terminal

    if quiet or not is_terminal(sys.stderr):
        return None
    total = sum(len(m.recipients) for m in scenario.messages)
    return Progress(sys.stderr, total, show_time=clock_text)


def _check(args: argparse.Namespace) -> int:
    from sandbox.output.findings import check_verdict, finding_lines
    from sandbox.output.term import style_for
    from sandbox.scenario.lint import has_errors, lint_scenario
    from sandbox.scenario.load import load_scenario

    scenario = load_scenario(_scenario_path(args.file))
    findings = lint_scenario(scenario)
    lines = finding_lines(findings, scenario.source, style_for(sys.stdout))
    lines.append(check_verdict(scenario, findings, args.file))
    _print_whole("".join(line + "\n" for line in lines))
    return EXIT_EXPECTATION_FAILED if has_errors(findings) else EXIT_OK


def _schema() -> int:
    from sandbox.scenario.schema import scenario_schema

    _print_whole(json.dumps(scenario_schema(), indent=2) + "\n")
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    from sandbox.scenario.load import load_scenario
    from sandbox.scenario.shipped import scenario_files, shipped_folder

    folder = Path(args.folder) if args.folder is not None else shipped_folder()
    files = scenario_files(folder)
    if not files:
        print(f"no scenario files in {folder}/", file=sys.stderr)
        return EXIT_INVALID
    rows = []
    for path in files:
        try:
            scenario = load_scenario(path)
            rows.append((path.stem, scenario.title or scenario.name))
        except ScenarioError as error:
            rows.append((path.stem, f"(invalid: {error.message})"))
    width = max(len(name) for name, _ in rows)
    _print_whole("".join(f"{name:<{width}}  {title}\n" for name, title in rows))
    return EXIT_OK
