"""Postfix, Exim and Haraka graded by ``mxsandbox conform --smtp``, the whole catalogue each.

Every MTA runs as tests/differential runs it (the same drivers, tests/differential/mtas/, the
same namespaces with only ``lo``, the same timers: its defaults divided by its scale factor S,
tests/differential/FINDINGS.md §1.1), with a ``Submission`` on top: a listener on
127.0.0.1:2525 that relays for loopback to any domain, and 127.0.0.99 counted as its own
address (Postfix ``proxy_interfaces``, Exim ``extra_local_interfaces``; Haraka has no such
setting, so it meets itself as a stranger in the self-MX cases). Inside the namespace the
suite follows docs/conformance.md's recipe::

    mxsandbox conform --smtp 127.0.0.1:2525 --dns 127.0.0.1:53 --smtp-port 25 \\
        --self 127.0.0.99 --time-scale S --case-timeout T

Each MTA makes two runs, side by side, each with an instance and a namespace of its own:

- every case but ``give-up``, at the MTA's S;
- ``give-up`` alone: giving up takes days (Postfix 5 d, Exim 4 d and a bit, Haraka its 13th
  failure), far beyond a case at S, so that run divides the MTA's give-up time by a larger
  factor (``give_up_scale``) and retries as often as the MTA allows until then; its verdict
  takes its place in the first report (``sandbox.conform.table.merge``), as the profile
  reports of scripts/conformance-docs do.

``python -m tests.conform.mtas --out DIR [--mta NAME]…`` (root) plays the MTAs side by side
and writes, per MTA, ``DIR/NAME.json`` (the report without its evidence: the form
docs/conformance/ keeps), ``DIR/NAME-full.json`` (with it), the MTA's log, or ``DIR/NAME.error``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox.conform.catalogue import CATALOGUE
from sandbox.conform.table import merge, slim
from tests.differential.mtas import MTA, Submission
from tests.differential.mtas.exim import Exim
from tests.differential.mtas.haraka import Haraka
from tests.differential.mtas.postfix import Postfix
from tests.differential.netns import inside, namespace
from tests.differential.scenario import Case

__all__ = ["GRADINGS", "TIMING_DEPENDENT", "Chance", "Grading", "grade", "report_name"]

ROOT = Path(__file__).resolve().parents[2]
LISTEN = ("127.0.0.1", 2525)
OWN_ADDRESS = "127.0.0.99"
LISTEN_TIMEOUT = 30.0
# One conform run's deadline, far beyond its cases' (a hung MTA must not hang CI); when it
# passes, the run's namespace is removed with everything in it.
RUN_TIMEOUT = 10 * 60.0
GIVE_UP = "give-up"


@dataclass(frozen=True)
class Grading:
    """How one MTA runs the catalogue: its driver (whose S is the time scale declared to the
    suite), each case's deadline, and the factor its give-up time is divided by in the
    give-up run, with that run's deadline."""

    driver: type[MTA]
    case_timeout: float
    give_up_scale: float
    give_up_timeout: float
    give_up_how: str  # what the give-up run changes, for the report's notes

    @property
    def scale(self) -> float:
        return self.driver.scale


# The deadlines: a case that waits for a retry must see one (Postfix: backoff 10 s plus a
# queue scan of 10 s; Exim: a queue run every 12 s, 6 s after the failure at the earliest;
# Haraka: 2 s), with room for a loaded machine, and a deferred message must be watched for 30
# minutes of the MTA's time before the lost-dot and retry judges may call it kept (60 s x 30,
# x 150, x 32). A minute each: Haraka's give-up run sets the pace anyway.
GRADINGS: dict[str, Grading] = {
    "postfix": Grading(
        Postfix,
        case_timeout=60,
        give_up_scale=14400,
        give_up_timeout=90,
        give_up_how="maximal_queue_lifetime 5d / 14400 = 30 s, a retry every 3 s",
    ),
    "exim": Grading(
        Exim,
        case_timeout=60,
        give_up_scale=14400,
        give_up_timeout=90,
        give_up_how="the retry rule's 4-day cutoff / 14400 = 24 s (F,24s,1s), a queue run "
        "every second",
    ),
    "haraka": Grading(
        Haraka,
        case_timeout=60,
        give_up_scale=2048,
        give_up_timeout=240,
        give_up_how="each of its 12 retry delays (64 s doubling to 36 h) / 2048, at least "
        "1 s (Haraka's timer ticks once a second)",
    ),
}


@dataclass(frozen=True)
class Chance:
    """A verdict that a real MTA's timing leaves to chance: the verdicts it may take, and why."""

    verdicts: frozenset[str]
    why: str


# The (MTA, case) pairs whose verdict is not fixed by the MTA's behaviour alone. The test
# accepts any of the verdicts for them; the published report shows the one its run gave, and
# its notes say why that cell may read otherwise next time.
TIMING_DEPENDENT: dict[tuple[str, str], Chance] = {
    ("exim", "retry-interval"): Chance(
        frozenset({"pass", "fail"}),
        "Exim retries only in a queue run (Debian: every 30 min), once the retry time of its "
        "rule (15 min after the 451) has passed, so the first retry comes 15 to 45 min after "
        "the 451, depending on where the 451 fell between two queue runs. Here it falls just "
        "after one (the case starts when another case's retry ended a queue run): the retry "
        "comes one queue interval later, 30 min, right at the RFC's minimum, and a few "
        "hundredths of a second decide pass or fail",
    ),
}
# The conform runs need no differential case; the drivers read only its `sender:` overrides.
_NO_CASE = Case(name="conform", path=ROOT, data={})


def report_name(mta: str) -> str:
    """The report's name in docs/conformance/ (and the column's key in table.DOCS_REPORTS)."""
    return f"mta-{mta}"


async def grade(mta: str, out: Path, cases: tuple[str, ...] = ()) -> dict[str, Any]:
    """Both runs of one MTA, side by side; the merged report (slim) is written to
    ``out/NAME.json`` and returned. ``cases`` narrows the catalogue (globs, as ``--case``)."""
    grading = GRADINGS[mta]
    out.mkdir(parents=True, exist_ok=True)
    everything = [case.id for case in CATALOGUE]
    chosen = [c for c in everything if c != GIVE_UP and _matches(c, cases)]
    runs = []
    if chosen:
        main_args = [
            "--time-scale",
            f"{grading.scale:g}",
            "--case-timeout",
            f"{grading.case_timeout:g}",
        ]
        runs.append(_run(mta, grading, None, main_args + _case_args(chosen), out / f"{mta}-main"))
    if _matches(GIVE_UP, cases):
        give_up_args = [
            "--time-scale", f"{grading.give_up_scale:g}",
            "--case-timeout", f"{grading.give_up_timeout:g}",
            "--case", GIVE_UP,
        ]  # fmt: skip
        runs.append(_run(mta, grading, grading.give_up_scale, give_up_args, out / f"{mta}-give-up"))
    if not runs:
        raise ValueError(f"no case matches {', '.join(cases)}")
    reports = await asyncio.gather(*runs)
    full = reports[0]
    if _matches(GIVE_UP, cases):
        how = f"give-up: graded in a run of its own, {grading.give_up_how}"
        order = {case_id: n for n, case_id in enumerate(everything)}
        every = [case for report in reports for case in report["cases"]]
        every.sort(key=lambda c: order[c["id"]])
        # merge() counts the scores again and notes how; the cases keep their evidence.
        full = merge(full | {"cases": every}, reports[-1], how) | {"cases": every}
    full["label"] = f"{full['label']} (real MTA)"
    full["notes"] = [
        f"its timers are its defaults divided by S = {grading.scale:g} (tests/differential), "
        f"in a network namespace of its own",
        *full.get("notes", []),
        *(
            f"{case}: left to chance: {c.why}"
            for (m, case), c in TIMING_DEPENDENT.items()
            if m == mta
        ),
    ]
    kept = slim(full)
    _write(out / f"{mta}-full.json", full)
    _write(out / f"{mta}.json", kept)  # last: whoever waits for it finds both whole
    return kept


def _write(path: Path, report: dict[str, Any]) -> None:
    """Written whole, then renamed into place: a reader never sees half a report."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    partial.replace(path)


def _matches(case_id: str, patterns: tuple[str, ...]) -> bool:
    from fnmatch import fnmatchcase

    return not patterns or any(fnmatchcase(case_id, p) for p in patterns)


def _case_args(ids: list[str]) -> list[str]:
    return [arg for case_id in ids for arg in ("--case", case_id)]


async def _run(
    mta: str, grading: Grading, give_up_scale: float | None, args: list[str], stem: Path
) -> dict[str, Any]:
    """One MTA instance in one namespace, graded by one ``mxsandbox conform --smtp`` run."""
    # Not under pytest's tmp_path: the MTAs' daemons drop to their own users, who cannot pass
    # root-only directories.
    home = Path(tempfile.mkdtemp(prefix=f"mxconf-{mta}-"))
    home.chmod(0o755)
    submission = Submission(LISTEN, OWN_ADDRESS, give_up_scale)
    driver = grading.driver(_NO_CASE, home, submission)
    report = stem.with_suffix(".report.json")
    try:
        async with namespace("mxconf") as ns:
            try:
                await driver.start(ns)
                await _wait_listening(ns)
                command = [
                    *inside(ns), sys.executable, "-m", "sandbox", "conform",
                    "--smtp", f"{LISTEN[0]}:{LISTEN[1]}", "--dns", "127.0.0.1:53",
                    "--smtp-port", "25", "--self", OWN_ADDRESS, "--label", driver.version,
                    "--json", str(report), "--quiet", *args,
                ]  # fmt: skip
                process = await asyncio.create_subprocess_exec(
                    *command,
                    cwd=ROOT,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                )
                async with asyncio.timeout(RUN_TIMEOUT):
                    output, _ = await process.communicate()
                stem.with_suffix(".txt").write_bytes(output)
                # Exit 1 is a verdict (a MUST case failed); 2 and the rest are the run's failure.
                if process.returncode not in (0, 1) or not report.exists():
                    raise RuntimeError(
                        f"mxsandbox conform exited {process.returncode}:\n"
                        + output.decode(errors="replace")[-4000:]
                    )
            finally:
                await driver.stop()
    finally:
        if driver.log_path.exists():
            shutil.copy(driver.log_path, stem.with_suffix(".log"))
        shutil.rmtree(home, ignore_errors=True)
    data: dict[str, Any] = json.loads(report.read_text())
    return data


async def _wait_listening(ns: str) -> None:
    """Until the MTA takes connections on LISTEN inside the namespace (a poll, in one process
    there, with a deadline)."""
    process = await asyncio.create_subprocess_exec(
        *inside(ns), sys.executable, "-m", "tests.conform.mtas", "--wait-listening",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the MTA did not listen on {LISTEN}: {output.decode()}")


def wait_listening(timeout: float = LISTEN_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(LISTEN, timeout=1.0):
            return True
        time.sleep(0.05)  # polling for the listener, with a deadline
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.conform.mtas")
    parser.add_argument("--mta", action="append", choices=sorted(GRADINGS), help="default: all")
    parser.add_argument("--case", action="append", default=[], help="globs; default: all")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "conformance")
    parser.add_argument("--wait-listening", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.wait_listening:
        return 0 if wait_listening() else 1
    names = args.mta or list(GRADINGS)
    missing = {m: GRADINGS[m].driver.unavailable() for m in names}

    async def everything() -> None:
        async def one(mta: str) -> None:
            began = time.monotonic()
            try:
                report = await grade(mta, args.out, tuple(args.case))
                graded = sum(c["verdict"] != "info" for c in report["cases"])
                print(
                    f"{mta}: {len(report['cases'])} cases, {graded} graded, "
                    f"{time.monotonic() - began:.0f} s",
                    flush=True,
                )
            except Exception:
                (args.out / f"{mta}.error").write_text(traceback.format_exc())
                print(f"{mta}: failed, see {args.out / f'{mta}.error'}", flush=True)

        args.out.mkdir(parents=True, exist_ok=True)
        await asyncio.gather(*(one(m) for m in names if not missing[m]))

    for mta, why in missing.items():
        if why:
            print(f"{mta}: skipped: {why}", file=sys.stderr)
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"{mta}.skipped").write_text(why)
    asyncio.run(everything())
    return 0


if __name__ == "__main__":
    sys.exit(main())
