"""``mxsandbox serve --json`` inside a case's namespace, read as it runs, and one clock for
everything: seconds since serve started (its events' ``t``).

The MTAs log in wall-clock time, often to the second only. Two things put their lines on
serve's clock: a calibration query (a real ``dig`` whose ``dns_served`` event serve reports
with its ``t``, bracketed by the wall clock), and :class:`LogTail`, which reads an MTA's log
file every few tens of milliseconds and stamps each new line with the time it appeared.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LogTail", "Served", "served"]

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
TAIL_EVERY = 0.05
# serve's `stopped` record is one JSON line with every session's transcript: megabytes for the
# fifty-message cases, far beyond asyncio's default 64 KiB line limit.
LINE_LIMIT = 256 * 1024 * 1024


@dataclass
class Served:
    process: asyncio.subprocess.Process
    prefix: tuple[str, ...]
    ready: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    stopped: dict[str, Any] | None = None
    offset: float = 0.0  # wall (time.time) minus serve's t
    stderr: str = ""
    _reader: asyncio.Task[None] | None = None

    def now(self) -> float:
        """The serve clock, now."""
        return time.time() - self.offset

    def at_wall(self, wall: float) -> float:
        """A wall-clock instant (epoch seconds) on the serve clock."""
        return wall - self.offset

    @property
    def address_of(self) -> dict[str, str]:
        """Host name → the loopback address it listens on (what DNS answers)."""
        return {h["name"]: h["address"] for h in self.ready["hosts"]}

    @property
    def name_of(self) -> dict[str, str]:
        """Every address a host is known by (where it listens, its zone address) → its name:
        the one name both sides of the comparison use for it."""
        names = {h["zone_address"]: h["name"] for h in self.ready["hosts"]}
        names.update({h["address"]: h["name"] for h in self.ready["hosts"]})
        return names

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while True:
            raw = await self.process.stdout.readline()
            if not raw:
                return
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if record.get("kind") == "stopped":
                self.stopped = record
            else:
                self.events.append(record)

    async def calibrate(self) -> None:
        """Find the wall-clock time of serve's t = 0 from one real query."""
        name = f"calibrate-{secrets.token_hex(3)}.invalid"
        best: float | None = None
        for _ in range(2):  # keep the tighter of two brackets
            before = time.time()
            dig = await asyncio.create_subprocess_exec(
                *self.prefix,
                "dig",
                "@127.0.0.1",
                "-p",
                "53",
                name,
                "A",
                "+tries=1",
                "+time=2",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await dig.wait()
            after = time.time()
            async with asyncio.timeout(STARTUP_TIMEOUT):
                while True:
                    seen = [
                        e
                        for e in self.events
                        if e.get("kind") == "dns_served" and e.get("name", "").rstrip(".") == name
                    ]
                    if seen:
                        break
                    await asyncio.sleep(0.01)
            t = seen[-1]["t"]
            self.events = [e for e in self.events if e not in seen]  # not the case's traffic
            if best is None or after - before < best:
                best = after - before
                self.offset = (before + after) / 2 - t

    def sessions(self) -> dict[str, list[dict[str, Any]]]:
        assert self.stopped is not None
        return {h["name"]: h["sessions"] for h in self.stopped["hosts"]}

    def accepted(self) -> dict[str, list[dict[str, Any]]]:
        assert self.stopped is not None
        return {h["name"]: h["accepted"] for h in self.stopped["hosts"]}

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGINT)
        async with asyncio.timeout(STOP_TIMEOUT):
            if self._reader is not None:
                await self._reader
            _, errors = await self.process.communicate()
        self.stderr = errors.decode(errors="replace")
        if self.stopped is None:
            raise RuntimeError(f"mxsandbox serve stopped without its record:\n{self.stderr}")


@contextlib.asynccontextmanager
async def served(scenario: Path, prefix: Sequence[str]) -> AsyncIterator[Served]:
    """``mxsandbox serve SCENARIO --json --dns 127.0.0.1:53 --smtp-port 25`` in the namespace
    of ``prefix``, ready (call :meth:`Served.calibrate` when time allows); killed on the way
    out if not stopped."""
    process = await asyncio.create_subprocess_exec(
        *prefix,
        sys.executable,
        "-m",
        "sandbox",
        "serve",
        str(scenario),
        "--json",
        "--dns",
        "127.0.0.1:53",
        "--smtp-port",
        "25",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"NO_COLOR": "1", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        limit=LINE_LIMIT,
    )
    handle = Served(process, tuple(prefix))
    try:
        assert process.stdout is not None
        async with asyncio.timeout(STARTUP_TIMEOUT):
            line = await process.stdout.readline()
        if not line:
            assert process.stderr is not None
            raise RuntimeError(f"mxsandbox serve ended early:\n{(await process.stderr.read())!r}")
        # Serve's t = 0 is a few milliseconds before its ready line: a first estimate of the
        # offset, which calibrate() then measures.
        handle.offset = time.time()
        handle.ready = json.loads(line)
        handle._reader = asyncio.create_task(handle._read())
        yield handle
    finally:
        if process.returncode is None:
            process.kill()
            with contextlib.suppress(Exception):
                await process.communicate()
        if handle._reader is not None and not handle._reader.done():
            handle._reader.cancel()


class LogTail:
    """New lines of a log file, each stamped with the wall-clock time (epoch seconds) it was
    first read; :meth:`Served.at_wall` puts that on the serve clock once calibrated."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[tuple[float, str]] = []
        self._offset = 0
        self._partial = b""
        self._task: asyncio.Task[None] | None = None

    def read(self) -> None:
        try:
            with open(self.path, "rb") as log:
                log.seek(self._offset)
                chunk = log.read()
        except FileNotFoundError:
            return
        if not chunk:
            return
        self._offset += len(chunk)
        # A line appeared at some moment since the last read: the middle of the interval.
        seen = time.time() - TAIL_EVERY / 2
        data = self._partial + chunk
        *complete, self._partial = data.split(b"\n")
        for raw in complete:
            self.lines.append((seen, raw.decode(errors="replace")))

    async def _follow(self) -> None:
        while True:
            self.read()
            await asyncio.sleep(TAIL_EVERY)

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.read()
