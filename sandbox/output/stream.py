"""Lines out of a server that must never wait for its reader.

``serve`` prints a line per DNS query and SMTP session, and the program that started it often
reads the ``ready`` line and nothing more. A plain ``write`` to a full pipe blocks, and with it
the event loop: DNS and SMTP stop answering, and even SIGINT waits. ``LineStream`` writes
through asyncio's non-blocking pipe transport instead, and keeps at most ``limit`` bytes
waiting for the reader:

- past the limit, lines are dropped and counted; once the reader has caught up (the transport
  resumes writing), one line says how many were dropped, in the caller's words;
- a final line (``serve``'s ``stopped`` record) is always queued, and :meth:`close` waits for
  the reader a bounded time, then gives up so that the process can still stop at once;
- a reader that went away (a broken pipe) ends the output quietly.

A terminal or a regular file is written directly: neither fills up the way a pipe does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import sys
from collections.abc import Callable
from typing import TextIO

__all__ = ["DEFAULT_LIMIT", "LineStream"]

# Output kept for a reader that has fallen behind; beyond it, lines are dropped.
DEFAULT_LIMIT = 1 << 20


class _Flow(asyncio.BaseProtocol):
    def __init__(self, stream: LineStream) -> None:
        self._stream = stream

    def pause_writing(self) -> None:
        self._stream._paused = True

    def resume_writing(self) -> None:
        self._stream._paused = False
        self._stream._caught_up()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stream._gone = True


class LineStream:
    """Write lines to ``stream`` without ever blocking the running event loop."""

    def __init__(
        self,
        stream: TextIO,
        *,
        limit: int = DEFAULT_LIMIT,
        dropped_line: Callable[[int], str] = lambda n: f"… {n} line(s) dropped",
    ) -> None:
        self._stream = stream
        self._limit = limit
        self._dropped_line = dropped_line
        self._transport: asyncio.WriteTransport | None = None
        self._fd: int | None = None
        self._paused = False
        self._gone = False
        self.dropped = 0  # lines dropped since the last summary
        self.dropped_total = 0

    async def start(self) -> None:
        """Use a non-blocking transport when the stream is a pipe or a socket."""
        try:
            fd = self._stream.fileno()
            mode = os.fstat(fd).st_mode
        except (OSError, ValueError, AttributeError):
            return  # not a real file (a test's StringIO): direct writes never block
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            return
        self._stream.flush()
        # A duplicate, so that closing the transport leaves the process's own stdout open.
        pipe = os.fdopen(os.dup(fd), "wb", buffering=0)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_write_pipe(lambda: _Flow(self), pipe)
        transport.set_write_buffer_limits(high=self._limit // 2, low=self._limit // 8)
        self._transport = transport
        self._fd = fd

    def write(self, line: str, *, always: bool = False) -> None:
        """Queue one line. Dropped when the reader is ``limit`` bytes behind, unless
        ``always``."""
        if self._gone:
            return
        if self._transport is None:
            self._write_directly(line)
            return
        if not always and self._transport.get_write_buffer_size() >= self._limit:
            self.dropped += 1
            self.dropped_total += 1
            return
        if always:
            self._caught_up()  # the count of dropped lines comes before a line that must go
        self._transport.write(line.encode() + b"\n")

    async def close(self, timeout: float = 0.5) -> bool:
        """Wait up to ``timeout`` seconds for the reader to take what is queued; then close.
        True when everything queued was written."""
        transport, self._transport = self._transport, None
        if transport is None:
            return not self._gone
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while transport.get_write_buffer_size() and not self._gone and loop.time() < deadline:
            await asyncio.sleep(0.01)
        written = not transport.get_write_buffer_size() and not self._gone
        transport.abort()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.set_blocking(self._fd, True)  # leave stdout as we found it
        return written

    def _caught_up(self) -> None:
        if self.dropped and self._transport is not None:
            count, self.dropped = self.dropped, 0
            self._transport.write(self._dropped_line(count).encode() + b"\n")

    def _write_directly(self, line: str) -> None:
        try:
            self._stream.write(line + "\n")
            self._stream.flush()
        except BrokenPipeError:  # the reader went away: keep serving, say nothing more
            self._gone = True
            if self._stream is sys.stdout:
                # Python would report the broken pipe again when it flushes stdout at exit.
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - replaces stdout for good
