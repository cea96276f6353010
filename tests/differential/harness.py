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
# How long past a case's scaled `until` (or, without one, past its settle budget) the harness
# waits before it calls the case stuck.
GRACE = 5.0
SETTLE_BUDGET = 60.0  # real seconds for a case without `until` to settle


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


async def play(mta_class: type[MTA], case: scn.Case, out: Path | None = None) -> CaseResult:
    """One (MTA, case), start to end; never raises for a failure of the case itself."""
    result = CaseResult(mta_class.name, case.name)
    began = time.monotonic()
    home = _home(mta_class.name, case.name)
    mta = mta_class(case, home)
    try:
        serve_copy = scn.write_yaml(scn.scaled(case, mta.scale), home / "serve.yaml")
        run_copy = scn.write_yaml(scn.run_copy(case, mta.run_overrides()), home / "run.yaml")
        running = asyncio.create_task(
            observe_run(run_copy, mta.profile, mta.scale, len(case.messages), home)
        )
        try:
            result.real = await _play_real(mta, case, serve_copy, result)
        finally:
            run_observed, _ = await running
        result.run = run_observed
        result.mta_version = mta.version
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
            for name in ("serve.yaml", "run.yaml", "run.json", "run-trace.jsonl"):
                if (home / name).exists():
                    shutil.copy(home / name, out / f"{mta_class.name}-{case.name}-{name}")
            if mta.log_path.exists():
                shutil.copy(mta.log_path, out / f"{mta_class.name}-{case.name}.log")
        shutil.rmtree(home, ignore_errors=True)
    return result


async def _play_real(mta: MTA, case: scn.Case, serve_copy: Path, result: CaseResult) -> Observed:
    until = case.until
    budget = (until / mta.scale) if until is not None else SETTLE_BUDGET
    phases = result.extra.setdefault("phases", {})
    began = time.monotonic()

    def mark(name: str) -> None:
        phases[name] = round(time.monotonic() - began, 3)

    async with namespace() as ns:
        mark("namespace")
        try:
            await mta.start(ns)
            mark("mta started")
            async with served(serve_copy, inside(ns)) as srv:
                mark("serve ready")
                tail = LogTail(mta.log_path)
                tail.start()
                try:
                    runner = asyncio.create_task(mta.queue_runner(srv.now))
                    await _submit_all(mta, case, srv.now)
                    submitted = time.time()
                    mark("submitted")
                    await srv.calibrate()
                    phases["submitted (serve clock)"] = round(srv.at_wall(submitted), 3)
                    observed = mta.observe(tail.lines, srv)
                    while srv.now() < budget + (0 if until is not None else GRACE):
                        observed = mta.observe(tail.lines, srv)
                        if mta.settled(observed):
                            result.settled = True
                            break
                        await asyncio.sleep(POLL)
                    else:
                        result.settled = until is not None
                        if until is None:
                            observed.notes.append(
                                f"not settled after {budget + GRACE:.0f} s: stopped anyway"
                            )
                finally:
                    mark("settled")
                    runner.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await runner
                    await mta.stop()
                    mark("mta stopped")
                    await tail.stop()
                    await srv.stop()
                    mark("serve stopped")
                observed = mta.observe(tail.lines, srv)
                observed.notes.extend(f"{k}: {v}" for k, v in mta.extra.items() if k != "queue_ids")
                for host, sessions in srv.sessions().items():
                    observed.sessions[host] = len(sessions)
                for host, messages in srv.accepted().items():
                    observed.accepted[host] = len(messages)
                result.log = [line for _, line in tail.lines]
                result.extra["serve_events"] = len(srv.events)
                return observed
        finally:
            with contextlib.suppress(Exception):
                await mta.stop()


async def _submit_all(mta: MTA, case: scn.Case, now: Any) -> None:
    """Each message at its scaled ``at``; messages due at the same time go in together."""
    by_time: dict[float, list[scn.Message]] = {}
    for message in case.messages:
        by_time.setdefault(message.at / mta.scale, []).append(message)
    for due in sorted(by_time):
        wait = due - now()
        if wait > 0:
            await asyncio.sleep(wait)  # a scheduled arrival, not a wait for readiness
        await mta.submit_many(by_time[due])
