"""Sessions kept open between messages: Postfix's connection cache, for a backlogged destination.

When a delivery ends well and other messages are already waiting for the same destination,
Postfix does not say QUIT: it keeps the session and gives it to the next delivery to that
host, which sends RSET to check it is still alive and goes straight to MAIL FROM. This saves
the connect, the greeting and EHLO for every message but the first. Like Postfix, a parked
session is closed (with QUIT) after ``idle`` seconds unused (smtp_connection_cache_time_limit,
2 s) and is not reused once ``max_age`` seconds old (smtp_connection_reuse_time_limit, 300 s).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import aiosmtplib

from sandbox.core.esmtp import HELO_ONLY, Extensions

__all__ = ["ConnectionCache"]


@dataclass(slots=True, eq=False)
class _Parked:
    client: aiosmtplib.SMTP
    opened: float
    extensions: Extensions = HELO_ONLY  # what the host offered in its EHLO reply
    timer: asyncio.TimerHandle | None = None


class ConnectionCache:
    def __init__(
        self, *, clock: Callable[[], float], idle: float = 2.0, max_age: float = 300.0
    ) -> None:
        self._clock = clock
        self._idle = idle
        self._max_age = max_age
        self._parked: dict[str, list[_Parked]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def accepts(self, opened: float) -> bool:
        """A session opened at ``opened`` is young enough to be reused."""
        return self._clock() - opened < self._max_age

    def park(
        self,
        address: str,
        client: aiosmtplib.SMTP,
        opened: float,
        extensions: Extensions = HELO_ONLY,
    ) -> None:
        """Keep a session for the next delivery to ``address``."""
        loop = asyncio.get_running_loop()
        parked = _Parked(client, opened, extensions)
        parked.timer = loop.call_later(self._idle, self._expire, address, parked)
        self._parked.setdefault(address, []).append(parked)

    def take(self, address: str) -> tuple[aiosmtplib.SMTP, float, Extensions] | None:
        """A live parked session to ``address``, when it was opened and what its host
        offered, or None."""
        stack = self._parked.get(address, [])
        while stack:
            parked = stack.pop()
            if parked.timer is not None:
                parked.timer.cancel()
            if parked.client.is_connected:
                return parked.client, parked.opened, parked.extensions
            parked.client.close()
        return None

    async def close(self) -> None:
        """Say QUIT on every parked session and wait until all are closed."""
        for address in list(self._parked):
            for parked in self._parked.pop(address):
                if parked.timer is not None:
                    parked.timer.cancel()
                self._quit_later(parked.client)
        while self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _expire(self, address: str, parked: _Parked) -> None:
        """A session has idled in the cache for ``idle`` seconds: close it."""
        stack = self._parked.get(address, [])
        if parked in stack:
            stack.remove(parked)
            self._quit_later(parked.client)

    def _quit_later(self, client: aiosmtplib.SMTP) -> None:
        task = asyncio.get_running_loop().create_task(_quit(client))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


async def _quit(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(aiosmtplib.SMTPException, OSError):
        if client.is_connected:
            await client.execute_command(b"QUIT", timeout=5)
    client.close()
