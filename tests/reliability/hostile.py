"""Hostile clients, and ``mxsandbox serve --json`` watched while they flood it.

``flood`` sends pipelined lines on one connection and never reads a reply, until it has sent
what it was asked to or the server has stopped taking bytes (no progress for ``STALL``
seconds: the kernel's buffers are full because the server stopped reading, which is what a
server that protects itself does). ``Watched`` runs serve as a child process and reads its
JSON Lines all the time, keeping only the start of each line (a flood can make very long
ones), whole ``ready`` and ``stopped`` records, and every line's kind and host.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.message

from tests.helpers import ROOT

__all__ = ["STALL", "Line", "Watched", "flood", "udp_queries", "watched"]

STALL = 1.0  # seconds without progress after which a flood stops: the server stopped reading
STARTUP_TIMEOUT = 30.0
EVENT_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
_CHUNK = 64 * 1024
_BATCH = 200
_PREFIX = 400  # the part of each output line kept: enough for its kind and host
_KIND = re.compile(rb'"kind": "([a-z_]+)"')
_HOST = re.compile(rb'"host": "([^"]+)"')


async def _writable(sock: socket.socket, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_writer(sock.fileno(), lambda: ready.done() or ready.set_result(None))
    try:
        async with asyncio.timeout(timeout):
            await ready
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_writer(sock.fileno())


async def flood(
    address: tuple[str, int],
    total: int,
    line: bytes = b"NOOP\r\n",
    *,
    prefix: bytes = b"",
    framed: bool = False,
) -> tuple[socket.socket, int]:
    """Connect, send ``prefix`` then ``line`` over and over (as DNS-over-TCP messages with a
    length prefix when ``framed``) up to ``total`` bytes, reading nothing. Returns the open
    socket (the caller closes it) and how many bytes were sent."""
    unit = len(line).to_bytes(2, "big") + line if framed else line
    chunk = prefix + unit * max(1, _CHUNK // len(unit))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, address)
    sent = 0
    view = memoryview(chunk)
    while sent < total:
        try:
            done = sock.send(view)
        except BlockingIOError:
            if not await _writable(sock, STALL):
                break
            continue
        except OSError:  # the server hung up: what it took is what counts
            break
        sent += done
        view = view[done:]
        if not view:
            view = memoryview(unit * max(1, _CHUNK // len(unit)))
    return sock, sent


async def udp_queries(
    address: tuple[str, int], count: int, name: str, batch: int | None = None
) -> int:
    """``count`` queries for the A record of ``name``, sent in batches, each batch's answers
    awaited; returns how many were answered (UDP may drop a datagram: the count says so).
    Keep ``batch`` answers within the client's receive buffer: a long name's are larger."""
    batch = batch or _BATCH
    wire = dns.message.make_query(name, "A").to_wire()
    loop = asyncio.get_running_loop()
    answered = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(address)
        for _ in range(count // batch):
            for _ in range(batch):
                sock.send(wire)
            for _ in range(batch):
                try:
                    async with asyncio.timeout(2.0):
                        await loop.sock_recv(sock, 4096)
                except TimeoutError:
                    break  # a datagram lost on the way: on to the next batch
                answered += 1
    return answered


@dataclass
class Line:
    kind: str
    host: str


@dataclass
class Watched:
    """A running ``mxsandbox serve --json`` and what it has printed so far."""

    process: asyncio.subprocess.Process
    ready: dict[str, Any] = field(default_factory=dict)
    stopped: dict[str, Any] | None = None
    lines: list[Line] = field(default_factory=list)
    errors: bytearray = field(default_factory=bytearray)  # stderr so far
    _new: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None
    _errors_reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def dns(self) -> tuple[str, int]:
        return (self.ready["dns"]["host"], self.ready["dns"]["port"])

    def address_of(self, name: str) -> tuple[str, int]:
        host = next(h for h in self.ready["hosts"] if h["name"] == name)
        return (host["address"], host["port"])

    def count(self, kind: str, host: str | None = None) -> int:
        return sum(1 for x in self.lines if x.kind == kind and host in (None, x.host))

    async def wait_for(self, kind: str, host: str | None = None, count: int = 1) -> None:
        """Wait (boundedly) until ``count`` lines of ``kind`` (for ``host``) were printed."""
        async with asyncio.timeout(EVENT_TIMEOUT):
            while self.count(kind, host) < count:
                self._new.clear()
                await self._new.wait()

    async def wait_for_errors(self, text: str, count: int = 1) -> None:
        """Wait (boundedly) until stderr holds ``text`` ``count`` times."""
        async with asyncio.timeout(EVENT_TIMEOUT):
            while self.errors.count(text.encode()) < count:
                self._new.clear()
                await self._new.wait()

    async def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str]:
        """Signal serve; return its exit code and stderr once it has ended."""
        self.process.send_signal(signum)
        async with asyncio.timeout(STOP_TIMEOUT):
            for reader in (self._reader, self._errors_reader):
                if reader is not None:
                    await reader
            code = await self.process.wait()
        return code, self.errors.decode()

    async def _read_errors(self) -> None:
        assert self.process.stderr is not None
        while chunk := await self.process.stderr.read(1 << 16):
            self.errors += chunk
            self._new.set()

    async def _read(self) -> None:
        assert self.process.stdout is not None
        pending = bytearray()  # the start of the current line
        whole: bytearray | None = None  # the current line, whole (ready and stopped only)
        while chunk := await self.process.stdout.read(1 << 20):
            while chunk:
                end = chunk.find(b"\n")
                piece, chunk = (chunk, b"") if end < 0 else (chunk[:end], chunk[end + 1 :])
                if whole is not None:
                    whole += piece
                before = len(pending)
                if before < _PREFIX:
                    pending += piece[: _PREFIX - before]
                if whole is None and (b'"kind": "stopped"' in pending or not self.ready):
                    # The kind comes first in a record: what came before is all in pending.
                    whole = bytearray(pending[:before]) + piece
                if end >= 0:
                    self._line(bytes(pending), whole)
                    pending, whole = bytearray(), None

    def _line(self, start: bytes, whole: bytearray | None) -> None:
        kind = _KIND.search(start)
        host = _HOST.search(start)
        line = Line(kind[1].decode() if kind else "", host[1].decode() if host else "")
        if whole is not None and line.kind == "ready":
            self.ready = json.loads(whole)
        elif whole is not None and line.kind == "stopped":
            self.stopped = json.loads(whole)
        self.lines.append(line)
        self._new.set()


@asynccontextmanager
async def watched(
    scenario: Path, *options: str, prefix: Sequence[str] = ()
) -> AsyncIterator[Watched]:
    """``mxsandbox serve SCENARIO --json --dns 127.0.0.1:0 --smtp-port 0 OPTIONS``, ready;
    killed on the way out if the test did not stop it."""
    command = [*prefix, sys.executable, "-m", "sandbox", "serve", str(scenario), "--json"]
    process = await asyncio.create_subprocess_exec(
        *command,
        "--dns",
        "127.0.0.1:0",
        "--smtp-port",
        "0",
        *options,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    served = Watched(process)
    served._reader = asyncio.create_task(served._read())
    served._errors_reader = asyncio.create_task(served._read_errors())
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT):
            while not served.ready and not served._reader.done():
                served._new.clear()
                await served._new.wait()
        if not served.ready:
            await process.wait()
            await served._errors_reader
            raise AssertionError(f"serve did not start: {served.errors.decode()!r}")
        yield served
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        for reader in (served._reader, served._errors_reader):
            if not reader.done():
                reader.cancel()
