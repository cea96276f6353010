"""serve and the process's file descriptors: as many as it may have, and one line, not a flood,
when they run out.

Every connection a served host or the DNS server accepts costs a file descriptor. When the
process has none left, asyncio cannot accept: it reports "socket.accept() out of system
resource" to the loop's exception handler, stops listening on that socket for a second and
tries again, so serve answers again as soon as descriptors are free. But the default handler
logs each failure with a traceback, up to a hundred of them per listener and per try (one per
connection waiting), which filled stderr at about 200 kB/s. ``AcceptFailures`` condenses them:
one line when it starts, then at most one line per ``every`` seconds with the count since.

``raise_fd_limit`` lifts the soft limit on descriptors to the hard one (a shell's 1024 is
often far below what the system allows), so that running out takes far more connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import Callable
from typing import Any

__all__ = ["AcceptFailures", "raise_fd_limit"]

_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def raise_fd_limit() -> int | None:
    """Raise the soft limit on open files to the hard limit; return the limit in force (None
    where the platform has no such limit)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Unix
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return None if soft == resource.RLIM_INFINITY else soft


class AcceptFailures:
    """The loop's exception handler in serve mode: connections that could not be accepted for
    want of descriptors (or memory) become one line on ``say`` per ``every`` seconds; anything
    else goes to the handler that was there before."""

    def __init__(self, say: Callable[[str], None], *, every: float = 5.0) -> None:
        self._say = say
        self._every = every
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: Any = None
        self._quiet_until = 0.0
        self._untold = 0  # failures since the last line
        self._flush: asyncio.TimerHandle | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._previous = loop.get_exception_handler()
        loop.set_exception_handler(self)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if not (isinstance(error, OSError) and error.errno in _OUT_OF_RESOURCES):
            if self._previous is not None:
                self._previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self._untold += 1
        now = loop.time()
        if now >= self._quiet_until:
            self._tell(error, first=True)
            self._quiet_until = now + self._every
        elif self._flush is None:
            self._flush = loop.call_at(self._quiet_until, self._tell_rest, error)

    def close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None

    def _tell_rest(self, error: OSError) -> None:
        self._flush = None
        if self._untold:
            assert self._loop is not None
            self._tell(error, first=False)
            self._quiet_until = self._loop.time() + self._every

    def _tell(self, error: OSError, *, first: bool) -> None:
        count, self._untold = self._untold, 0
        reason = os.strerror(error.errno) if error.errno else str(error)
        if first:
            self._say(
                f"serve: cannot accept connections ({reason}; at most {_limit_text()} open "
                "files): they wait in the kernel, and are accepted as soon as others close"
            )
        else:
            self._say(
                f"serve: still short of file descriptors ({reason}): {count} more failed "
                f"attempts to accept in the last {self._every:g} s"
            )


def _limit_text() -> str:
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # pragma: no cover - not on Unix
        return "?"
    return "unlimited" if soft == resource.RLIM_INFINITY else str(soft)
