"""Play one case against one real MTA, and the same case through ``mxsandbox run``.

For each (MTA, case):

1. write the serve copy (times / S) and the run copy (profile values x S) of the case;
2. start ``mxsandbox run --profile NAME`` on the run copy (in the background);
3. make a namespace with only ``lo``; start the MTA in it, then ``mxsandbox serve`` (so the
   scenario's real-time phases start when the messages arrive), calibrate the clocks, tail
   the MTA's log;
4. submit the messages at their (scaled) times; wait, bounded, until every message and the
   DSNs it caused reached a final state, or the scenario's ``until`` (scaled) has passed;
5. stop the MTA and serve; read the MTA's log and serve's ``stopped`` record into the same
   shape as the run, and compare (:mod:`tests.differential.compare`).

Nothing here sleeps to wait for readiness: serve's ``ready`` line, the calibration query's
event, and the MTA's log say when things happened; the waits are polls with deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.differential import scenario as scn
from tests.differential.compare import Comparison, compare
from tests.differential.model import Observed
from tests.differential.mtas import MTA
from tests.differential.netns import inside, namespace
from tests.differential.sandbox_run import observe_run
from tests.differential.served import LogTail, served

__all__ = ["CaseResult", "play"]

POLL = 0.2
# A case without `until` may take what run mode needs to settle it (scaled) plus half as much
# again (at least SETTLE_MARGIN), and never more than MAX_BUDGET real seconds.
SETTLE_MARGIN = 20.0
MAX_BUDGET = 240.0


@dataclass
class CaseResult:
    mta: str
    case: str
    real: Observed | None = None
    run: Observed | None = None
    comparison: Comparison | None = None
    error: str | None = None
    wall: float = 0.0
    settled: bool = False
    mta_version: str = ""
    log: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "mta": self.mta,
            "case": self.case,
            "mta_version": self.mta_version,
            "error": self.error,
            "wall": round(self.wall, 2),
            "settled": self.settled,
            "real": self.real.to_json() if self.real else None,
            "run": self.run.to_json() if self.run else None,
            "comparison": self.comparison.to_json() if self.comparison else None,
            "log": self.log,
            "extra": self.extra,
        }


def _home(mta: str, case: str) -> Path:
    # Not under pytest's tmp_path: the MTAs' daemons drop to their own users, who cannot
    # pass root-only directories.
    home = Path(tempfile.mkdtemp(prefix=f"mxdiff-{mta}-{case}-"))
    home.chmod(0o755)
    return home


# Starting a case (the MTA, serve, the submission) is when CPU time matters to timing: the
# first attempt follows the submission within milliseconds. At most two cases (two cores)
# start at once, in every MTA's suite together.
STARTING = asyncio.Semaphore(2)


async def play(mta_class: type[MTA], case: scn.Case, out: Path | None = None) -> CaseResult:
    """One (MTA, case), start to end; never raises for a failure of the case itself."""
    result = CaseResult(mta_class.name, case.name)
    began = time.monotonic()
    home = _home(mta_class.name, case.name)
    mta = mta_class(case, home)
    try:
        serve_copy = scn.write_yaml(scn.scaled(case, mta.scale), home / "serve.yaml")
        result.extra["budget"] = round(await _budget(mta, case, home), 1)
        result.real = await _play_real(mta, case, serve_copy, result)
        result.mta_version = mta.version
        # The run copy starts where the real run did: time 0 is the MTA's own origin (Postfix:
        # its queue manager's start, from which its queue scans count), each message arrives
        # when the MTA logged its arrival, and the scenario's phases keep their place.
        origin = result.real.origin
        arrivals = {n: (t - origin) * mta.scale for n, t in result.real.arrivals.items()}
        copy = scn.run_copy(case, mta.run_overrides(), arrivals, -origin * mta.scale)
        run_copy = scn.write_yaml(copy, home / "run.yaml")
        result.run, _ = await observe_run(
            run_copy, mta.profile, mta.scale, len(case.messages), home, origin, log=mta.log_format
        )
        names = result.extra.pop("names")
        result.real.normalize(names)
        result.run.normalize(names)
        result.comparison = compare(mta, case, result.real, result.run)
    except Exception:
        result.error = traceback.format_exc()
    finally:
        result.wall = time.monotonic() - began
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{mta_class.name}-{case.name}.json").write_text(
                json.dumps(result.to_json(), indent=1)
            )
            for name in (
                "serve.yaml",
                "run.yaml",
                "run.json",
                "run-postfix.log",
                "run-trace.jsonl",
                "events.jsonl",
                "serve-record.jsonl",
            ):
                if (home / name).exists():
                    shutil.copy(home / name, out / f"{mta_class.name}-{case.name}-{name}")
            if mta.log_path.exists():
                shutil.copy(mta.log_path, out / f"{mta_class.name}-{case.name}.log")
        shutil.rmtree(home, ignore_errors=True)
    return result


async def _budget(mta: MTA, case: scn.Case, home: Path) -> float:
    """How long (real seconds) the real MTA may take: the case's ``until`` scaled, or else what
    run mode needs to settle it, scaled, with room to spare (an MTA that behaves differently
    is then stopped there and compared as it stands)."""
    if case.until is not None:
        return case.until / mta.scale
    workdir = home / "preview"
    workdir.mkdir()
    copy = scn.write_yaml(scn.run_copy(case, mta.run_overrides()), workdir / "case.yaml")
    _, preview = await observe_run(copy, mta.profile, mta.scale, len(case.messages), workdir)
    ends = [d["at"] for d in preview["deliveries"] if d.get("at") is not None]
    ends += [r["at"] for r in preview.get("returned", []) if r.get("at") is not None]
    end = max(ends, default=0.0) / mta.scale
    # The real arrivals come a few seconds after serve's start, which can push the end one
    # queue scan (or one doubled retry) later than the preview's.
    return min(MAX_BUDGET, end + max(SETTLE_MARGIN, end / 2))


async def _play_real(mta: MTA, case: scn.Case, serve_copy: Path, result: CaseResult) -> Observed:
    until = case.until
    budget = result.extra["budget"]
    phases = result.extra.setdefault("phases", {})
    began = time.monotonic()

    def mark(name: str) -> None:
        phases[name] = round(time.monotonic() - began, 3)

    tail = LogTail(mta.log_path)
    tail.start()  # before the MTA starts: its first lines carry its origin
    try:
        async with namespace() as ns, contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(mta.stop)
            async with STARTING:
                mark("namespace")
                await mta.start(ns)
                mark("mta started")
                srv = await stack.enter_async_context(served(serve_copy, inside(ns)))
                await mta.served(srv)
                mark("serve ready")
                runner = asyncio.create_task(mta.queue_runner(srv.now))
                stack.push_async_callback(_cancel, runner)
                groups = _arrival_groups(mta, case)
                due, first = groups.pop(0)
                wait = max(due, mta.first_arrival(tail.lines, srv)) - srv.now()
                if wait > 0:
                    await asyncio.sleep(wait)  # a chosen arrival time, not a readiness wait
                await mta.submit_many(first)
                submitted = time.time()
                mark("submitted")
            later = asyncio.create_task(_submit_later(mta, groups, srv.now))
            stack.push_async_callback(_cancel, later)
            await srv.calibrate()
            phases["submitted (serve clock)"] = round(srv.at_wall(submitted), 3)
            while srv.now() < budget:
                if mta.settled(mta.observe(tail.lines, srv)):
                    result.settled = True
                    break
                await asyncio.sleep(POLL)
            else:
                result.settled = until is not None
            mark("settled")
            if later.done():
                later.result()  # a failed submission is the harness's failure
            await _cancel(later)
            await _cancel(runner)
            await mta.stop()
            mark("mta stopped")
            await tail.stop()
            await srv.stop()
            mark("serve stopped")
            observed = mta.observe(tail.lines, srv)
            if not result.settled:
                observed.notes.append(f"not settled after {budget:.0f} s: stopped")
            observed.notes.extend(f"{k}: {v}" for k, v in mta.extra.items() if k != "queue_ids")
            for host, sessions in srv.sessions().items():
                observed.sessions[host] = len(sessions)
            for host, messages in srv.accepted().items():
                observed.accepted[host] = len(messages)
            missing = [m.number for m in case.messages if m.number not in observed.arrivals]
            if missing:
                raise RuntimeError(f"the MTA never logged the arrival of message(s) {missing}")
            result.log = [line for _, line in tail.lines]
            result.extra["serve_events"] = len(srv.events)
            result.extra["names"] = srv.name_of
            (mta.home / "serve-record.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in [srv.ready, *srv.events, srv.stopped])
            )
            result.extra["origin"] = round(observed.origin, 3)
            result.extra["arrivals"] = {n: round(t, 3) for n, t in observed.arrivals.items()}
            return observed
    finally:
        await tail.stop()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _arrival_groups(mta: MTA, case: scn.Case) -> list[tuple[float, list[scn.Message]]]:
    """The messages by their scaled ``at``, earliest first; a group goes in together."""
    by_time: dict[float, list[scn.Message]] = {}
    for message in case.messages:
        by_time.setdefault(message.at / mta.scale, []).append(message)
    return sorted(by_time.items())


async def _submit_later(
    mta: MTA, groups: list[tuple[float, list[scn.Message]]], now: Callable[[], float]
) -> None:
    for due, messages in groups:
        wait = due - now()
        if wait > 0:
            await asyncio.sleep(wait)  # a scheduled arrival, not a wait for readiness
        await mta.submit_many(messages)
