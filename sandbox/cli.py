"""``mxsandbox``: run, check and list scenarios.

Exit codes are part of the output contract: 0 every expectation holds, 1 an expectation
failed, 2 the scenario or the command line is invalid. A mistake of the user's is printed as
one clear line on stderr, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from sandbox.core.policy import PROFILES
from sandbox.errors import ScenarioError
from sandbox.events import Emit, Event, event_to_dict
from sandbox.narrative import render_narrative
from sandbox.runner import profile_for, run_scenario
from sandbox.scenario import load_scenario

__all__ = ["main"]

EXIT_OK, EXIT_EXPECTATION_FAILED, EXIT_INVALID = 0, 1, 2
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
    run.add_argument("file", help="a scenario file, or the name of one in ./scenarios")
    run.add_argument("--seed", type=int, help="override the scenario's seed")
    run.add_argument("--profile", choices=sorted(PROFILES), help="swap the sender profile")
    run.add_argument("--json", action="store_true", help="print one JSON object, no story")
    run.add_argument("--trace", metavar="FILE", help="write every event as JSON Lines")
    run.add_argument("--all-stories", action="store_true",
                     help="tell every message's story, however many there are")

    check = commands.add_parser("check", help="validate a scenario file")
    check.add_argument("file")

    listing = commands.add_parser("list", help="list the scenarios in a folder")
    listing.add_argument("folder", nargs="?", default=str(DEFAULT_SCENARIOS))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        if args.command == "run":
            return _run(args)
        if args.command == "check":
            return _check(args)
        return _list(args)
    except _UsageError as error:
        print(error, file=sys.stderr)
        return EXIT_INVALID
    except ScenarioError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID


def _scenario_path(name: str) -> Path:
    path = Path(name)
    if not path.exists() and not path.suffix:
        candidate = DEFAULT_SCENARIOS / f"{name}.yaml"
        if candidate.exists():
            return candidate
    return path


def _run(args: argparse.Namespace) -> int:
    scenario = load_scenario(_scenario_path(args.file))
    profile = profile_for(scenario, args.profile)
    sinks: list[Emit] = []
    trace: IO[str] | None = None
    try:
        if args.trace:
            try:
                trace = open(args.trace, "w", encoding="utf-8")  # noqa: SIM115 - closed below
            except OSError as error:
                raise ScenarioError(f"cannot write the trace: {error.strerror}",
                                    file=args.trace) from None
            sinks.append(_jsonl_sink(trace))
        result = run_scenario(scenario, seed=args.seed, profile=profile, sinks=sinks)
    finally:
        if trace is not None:
            trace.close()
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        sys.stdout.write(render_narrative(result, all_stories=args.all_stories))
    return EXIT_OK if result.ok else EXIT_EXPECTATION_FAILED


def _jsonl_sink(stream: IO[str]) -> Emit:
    def write(event: Event) -> None:
        stream.write(json.dumps(event_to_dict(event)) + "\n")

    return write


def _check(args: argparse.Namespace) -> int:
    scenario = load_scenario(_scenario_path(args.file))
    print(f"{args.file}: ok — {scenario.name}: {len(scenario.zones)} zone(s), "
          f"{len(scenario.messages)} message(s), {len(scenario.expect)} expectation(s)")
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    files = sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml"))
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
    for name, title in rows:
        print(f"{name:<{width}}  {title}")
    return EXIT_OK
