"""Sessions kept open between messages: Postfix's connection cache, for a backlogged destination.

When a delivery ends well and other messages are already waiting for the same destination
(the queue says so: ``Queue.keep_open``), the session is not closed: it is parked here, under
its address and its destination, for the next delivery to that destination, which sends RSET
to check it is still alive and goes straight to MAIL FROM. This saves the connect, the
greeting and EHLO for every message but the first. Like Postfix, a parked session is closed
(with QUIT) after ``idle`` seconds unused (smtp_connection_cache_time_limit, 2 s).

Each session also keeps the TLS it was held to (``tls_key``: the level and the policy, as
Postfix keys its cache by TLS level) and how its STARTTLS went: a delivery takes only a session
held to the same TLS as its own plan asks.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import aiosmtplib

from sandbox.core.esmtp import HELO_ONLY, Extensions
from sandbox.core.tls import Established

__all__ = ["ConnectionCache", "Kept"]


@dataclass(slots=True, eq=False)
class _Parked:
    client: aiosmtplib.SMTP
    opened: float
    domain: str
    uses: int  # the deliveries it has carried
    order: int  # when it was parked, in parking order
    extensions: Extensions = HELO_ONLY  # what the host offered in its EHLO reply
    tls_key: str = ""  # the TLS it was held to (``core.delivery``'s Connect.tls)
    tls: Established | None = None  # how its STARTTLS went, if it had one
    timer: asyncio.TimerHandle | None = None


@dataclass(frozen=True, slots=True)
class Kept:
    """A parked session handed back: the client, when it was opened, how many deliveries it
    has carried."""

    client: aiosmtplib.SMTP
    opened: float
    uses: int
    domain: str
    extensions: Extensions = HELO_ONLY  # what the host offered in its EHLO reply
    tls_key: str = ""
    tls: Established | None = None


class ConnectionCache:
    def __init__(self, *, idle: float = 2.0) -> None:
        self._idle = idle
        self._parked: dict[str, list[_Parked]] = {}
        self._parkings = 0
        self._closing: set[asyncio.Task[None]] = set()

    def park(
        self,
        address: str,
        client: aiosmtplib.SMTP,
        opened: float,
        domain: str,
        uses: int,
        extensions: Extensions = HELO_ONLY,
        *,
        tls_key: str = "",
        tls: Established | None = None,
    ) -> None:
        """Keep a session for the next delivery to ``domain`` at ``address``."""
        loop = asyncio.get_running_loop()
        self._parkings += 1
        parked = _Parked(
            client, opened, domain, uses, self._parkings, extensions, tls_key=tls_key, tls=tls
        )
        parked.timer = loop.call_later(self._idle, self._expire, address, parked)
        self._parked.setdefault(address, []).append(parked)

    def take_for(self, domain: str) -> tuple[str, Kept] | None:
        """The live session parked last for ``domain``, and its address, or None."""
        latest: tuple[_Parked, str] | None = None
        for address, stack in self._parked.items():
            for parked in stack:
                alive = parked.domain == domain and parked.client.is_connected
                if alive and (latest is None or parked.order > latest[0].order):
                    latest = (parked, address)
        if latest is None:
            return None
        parked, address = latest
        self._parked[address].remove(parked)
        if parked.timer is not None:
            parked.timer.cancel()
        return address, _kept(parked)

    def put_back(self, address: str, kept: Kept) -> None:
        """A session taken for a delivery that did not use it: parked again."""
        self.park(
            address,
            kept.client,
            kept.opened,
            kept.domain,
            kept.uses,
            kept.extensions,
            tls_key=kept.tls_key,
            tls=kept.tls,
        )

    def take(self, address: str, tls_key: str = "") -> Kept | None:
        """A live parked session to ``address`` held to ``tls_key``, or None."""
        stack = self._parked.get(address, [])
        for parked in reversed(list(stack)):
            if parked.tls_key != tls_key:
                continue
            stack.remove(parked)
            if parked.timer is not None:
                parked.timer.cancel()
            if parked.client.is_connected:
                return _kept(parked)
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


def _kept(parked: _Parked) -> Kept:
    return Kept(
        parked.client,
        parked.opened,
        parked.uses,
        parked.domain,
        parked.extensions,
        parked.tls_key,
        parked.tls,
    )


async def _quit(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(aiosmtplib.SMTPException, OSError):
        if client.is_connected:
            await client.execute_command(b"QUIT", timeout=5)
    client.close()
