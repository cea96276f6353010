"""The control API's event stream: every event of a served world, as Server-Sent Events.

Each event goes out as the object ``--trace`` writes (``event_to_dict``), one SSE message
each, numbered by ``id``::

    id: 42
    data: {"t": 3.25, "kind": "host_session", "host": "mx2.example.test", …}

Bounds
------
The sandbox never waits for a reader and never keeps more for it than a fixed amount:

- an event is turned into text once, whoever listens, and handed to each subscriber's own
  queue without waiting (``publish`` is called from the servers' callbacks);
- a subscriber's queue holds at most ``buffer_bytes`` of text. A reader that falls behind (its
  socket full, so writing to it waits) loses the events that do not fit; they are counted, and
  once there is room again the stream says so with a message of its own::

      event: dropped
      data: {"kind": "events_dropped", "t": 12.5, "count": 310}

  An ``EventSource`` hears it only with ``addEventListener("dropped", …)``: ``onmessage``
  gets nothing but the trace objects;
- at most ``max_subscribers`` streams are open at once; one more is refused with 429;
- a reader that goes away is noticed when its connection closes (aiohttp cancels the
  handler) or, at the latest, at the next write: a comment line every ``keepalive`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from sandbox.events import Event, event_to_dict

__all__ = ["BUFFER_BYTES", "KEEPALIVE", "MAX_SUBSCRIBERS", "EventStream", "TooManyStreams"]

MAX_SUBSCRIBERS = 16
BUFFER_BYTES = 1 << 20  # per subscriber
KEEPALIVE = 15.0  # seconds between comment lines on a quiet stream
_WRITE_AT_ONCE = 1 << 16  # the most text one write takes from a queue
_GATHER = 0.002  # seconds to wait for more events before writing the first of a burst


class TooManyStreams(Exception):
    """Every slot for an event stream is taken."""


@dataclass(slots=True)
class _Gap:
    """Where events were dropped, and how many: it becomes a ``dropped`` message."""

    t: float
    count: int = 1

    def text(self) -> str:
        notice = {"kind": "events_dropped", "t": round(self.t, 6), "count": self.count}
        return f"event: dropped\ndata: {json.dumps(notice)}\n\n"


class _Subscriber:
    """One reader's queue: text waiting to be written, bounded in bytes, with a gap where
    events did not fit (consecutive drops share one gap, so gaps stay as few as events)."""

    def __init__(self, limit: int) -> None:
        self.pending: deque[str | _Gap] = deque()
        self.size = 0
        self.limit = limit
        self.wake = asyncio.Event()

    def offer(self, text: str, now: float) -> None:
        if self.size + len(text) <= self.limit:
            self.pending.append(text)
            self.size += len(text)
        elif self.pending and isinstance(self.pending[-1], _Gap):
            self.pending[-1].count += 1
        else:
            self.pending.append(_Gap(now))
        self.wake.set()

    def take(self) -> str:
        """Some of the waiting messages, whole, about ``_WRITE_AT_ONCE`` bytes at most."""
        parts: list[str] = []
        taken = 0
        while self.pending and (not parts or taken + _size(self.pending[0]) <= _WRITE_AT_ONCE):
            item = self.pending.popleft()
            if isinstance(item, _Gap):
                parts.append(item.text())
            else:
                parts.append(item)
                taken += len(item)
        self.size -= taken
        return "".join(parts)


def _size(item: str | _Gap) -> int:
    return len(item) if isinstance(item, str) else 0


class EventStream:
    """Fans a world's events out to SSE readers; ``publish`` is the world's sink."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        max_subscribers: int = MAX_SUBSCRIBERS,
        buffer_bytes: int = BUFFER_BYTES,
        keepalive: float = KEEPALIVE,
    ) -> None:
        self._clock = clock
        self.max_subscribers = max_subscribers
        self._buffer_bytes = buffer_bytes
        self._keepalive = keepalive
        self._subscribers: set[_Subscriber] = set()
        self._sequence = 0
        self._closing = False

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @property
    def pending_bytes(self) -> int:
        """Text waiting for readers, all subscribers together."""
        return sum(s.size for s in self._subscribers)

    def publish(self, event: Event) -> None:
        """Queue ``event`` for every reader, without waiting for any of them."""
        self._sequence += 1
        if not self._subscribers:
            return
        text = f"id: {self._sequence}\ndata: {json.dumps(event_to_dict(event))}\n\n"
        now = self._clock()
        for subscriber in self._subscribers:
            subscriber.offer(text, now)

    def close(self) -> None:
        """End every stream (the sandbox is stopping)."""
        self._closing = True
        for subscriber in self._subscribers:
            subscriber.wake.set()

    async def serve(self, request: web.Request) -> web.StreamResponse:
        """The response to ``GET /api/v1/events``: a stream until the reader or the sandbox
        goes. Raises TooManyStreams when every slot is taken."""
        if len(self._subscribers) >= self.max_subscribers:
            raise TooManyStreams(
                f"{self.max_subscribers} event streams are open already, the most the sandbox "
                "keeps; close one first"
            )
        subscriber = _Subscriber(self._buffer_bytes)
        self._subscribers.add(subscriber)
        try:
            response = web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream; charset=utf-8",
                    "Cache-Control": "no-cache",
                    "X-Accel-Buffering": "no",
                }
            )
            await response.prepare(request)
            # The first bytes: a reader knows the stream is open (fetch resolves on headers,
            # EventSource fires "open"), and a reconnecting EventSource waits a second.
            await response.write(b"retry: 1000\n: events from here on\n\n")
            with contextlib.suppress(ConnectionError):
                await self._pump(subscriber, response)
            return response
        finally:
            self._subscribers.discard(subscriber)

    async def _pump(self, subscriber: _Subscriber, response: web.StreamResponse) -> None:
        while not self._closing:
            if not subscriber.pending:
                subscriber.wake.clear()
                try:
                    async with asyncio.timeout(self._keepalive):
                        await subscriber.wake.wait()
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                # Events come in bursts (a sender's queries, a session's end and its
                # message): gather what comes within a moment into one write, rather than
                # one system call per event.
                await asyncio.sleep(_GATHER)
            await response.write(subscriber.take().encode())
