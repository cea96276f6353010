"""A scripted mail host: a real SMTP server on loopback whose behaviour follows a timeline.

Theory of operation
===================

A :class:`MailHost` stands for one address of one mail host. It owns one loopback port for its
whole life and runs entirely on the caller's event loop: no threads, no Controller, no sleeps
to wait for readiness. A client learns what the host does only from the wire.

The host holds the pieces together:

- its port, in one of three socket states (``sockets``): ``listen`` for ``accept`` and
  ``silent``, ``refuse``, ``timeout``;
- a session per accepted connection (``session``), made by the listener's protocol factory
  from the behaviour in force when the connection arrives: ``silent`` gets a session that
  never answers, anything else an SMTP session that plays the script (``script``);
- the records: every session's transcript, the mailbox, the greylisting table, and the
  events ``host_session`` and ``host_accepted``;
- STARTTLS, with the certificate its ``tls:`` asks for (``tls_contexts``, from the world's
  certificate authority; without one the host offers no STARTTLS);
- its limits (``limits``): run mode keeps every record; serve mode keeps the last so many
  sessions and messages (with exact counts of all), bounds each transcript, and answers
  ``421 4.7.0`` to a connection beyond its limit of sessions at once.

Phase switching
---------------
The behaviour in force is the phase a ``script.PhaseCursor`` points at: phases end at their
``until`` or after ``times`` sessions (connection attempts for a phase that refuses or times
out), whichever comes first. ``start()`` binds the port (port 0 picks one), enters the initial
socket state and schedules one ``loop.call_at`` per ``until``. At a boundary, or when a count
ends a phase, the host enters the socket state of the new phase, synchronously; moving between
``accept`` and ``silent`` changes no socket at all. :meth:`MailHost.set_behaviour` does the same
at once, with a new cursor, and schedules the new timeline's boundaries.

Who counts: the host counts every session it opens; a refused or timed-out connection attempt
reaches no session, so whoever sees it says so (:meth:`MailHost.connection_attempted`): run
mode's network map, for every connect of the sandbox's own sender, and serve mode's SYN
watcher, where the platform allows one.

The SMTP-level fields (scripted replies, recipients, disconnects, delays, greylisting) are not
part of the socket state: every session reads them at each stage from the phase it was counted
in (or, once that phase's ``until`` has passed or the behaviour was replaced, the phase in
force), so a change of time or a new behaviour takes effect at the next command.

Limits a scenario scripts (``max_connections``: more sessions at once than that are greeted
with the limit's reply; ``max_messages``: the session's MAIL past that many) are separate
from serve's fixed safety limit of sessions at once (``limits``), which is far higher.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from collections.abc import Callable, Iterable

from sandbox.core.addresses import ensure_loopback
from sandbox.core.tls import HostTls
from sandbox.errors import bind_error
from sandbox.events import Emit, HostAccepted, HostPhase, HostSession
from sandbox.events import Warning as WarningEvent
from sandbox.hosts.limits import RUN_LIMITS, ContentBudget, HostLimits
from sandbox.hosts.script import Greylist, PhaseCursor
from sandbox.hosts.session import (
    BusySession,
    LiveSession,
    SessionHost,
    SessionScript,
    SilentSession,
    SmtpSession,
)
from sandbox.hosts.sockets import HostSocket, socket_state_for
from sandbox.hosts.transcript import SessionLog, SessionRecord, StoredMessage
from sandbox.scenario.model import Behaviour, Reply, Timeline

__all__ = ["MailHost"]

Clock = Callable[[], float]

# The idle timeout is set this far past the host's longest scripted delay, so that a delay
# never looks like an idle client.
_DELAY_MARGIN = 300.0


def _without_tls(tls: HostTls) -> None:
    return None  # no certificate authority: no STARTTLS


class MailHost:
    """One address of one mail host: a real listening socket whose behaviour follows a
    Timeline."""

    def __init__(
        self,
        name: str,
        address: str,
        behaviour: Timeline[Behaviour],
        *,
        clock: Clock,
        emit: Emit | None = None,
        bind: tuple[str, int] = ("127.0.0.1", 0),
        limits: HostLimits = RUN_LIMITS,
        content: ContentBudget | None = None,
        tls_contexts: Callable[[HostTls], ssl.SSLContext | None] | None = None,
    ) -> None:
        ensure_loopback(bind[0])
        self.name = name
        self.address = address
        self.limits = limits
        # The messages kept (all of them in run mode), oldest first; ``accepted`` counts all.
        self.mailbox: list[StoredMessage] = []
        self.accepted = 0
        self.messages_dropped = 0
        self.sessions_dropped = 0
        self.too_many = 0  # connections answered 421: more than the limit at once
        self._content = content if content is not None else ContentBudget(limits.content_bytes)
        self._connections = 0
        self._cursor = PhaseCursor(behaviour)
        self._clock = clock
        self._emit = emit
        self._socket = HostSocket(
            bind, new_session=self._new_session, warn=self._warn, reclaim=limits.reclaim_port
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._origin = 0.0  # loop time at which clock() was 0
        self._timers: list[asyncio.TimerHandle] = []
        self._logs: deque[SessionLog] = deque()
        self._live: set[LiveSession] = set()
        # Sessions made but not opened yet: asyncio makes the protocol of each connection it
        # accepts, then calls connection_made on a later turn of the loop.
        self._opening = 0
        self._for_sessions = SessionHost(
            name=name,
            clock=clock,
            closing=lambda: self._closed,
            greylist=Greylist(),
            opened=self._session_opened,
            closed=self._session_closed,
            store=self._store,
            read_size=limits.read_size,
            tls_contexts=tls_contexts or _without_tls,
        )
        self._tag = f"{zlib.crc32(f'{name}/{address}'.encode()):08X}"
        self._closed = False
        self._busy = False  # at the limit of sessions at once, and warned

    # -- public API -----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the port, enter the initial state, schedule the phase switches."""
        if self._loop is not None:
            raise RuntimeError(f"mail host {self.name} ({self.address}) already started")
        self._loop = asyncio.get_running_loop()
        self._origin = self._loop.time() - self._clock()
        self._enter_state_or_raise()
        self._schedule_boundaries()
        await self._socket.settle()

    @property
    def listen(self) -> tuple[str, int]:
        """The real loopback (host, port) that stands for :attr:`address`."""
        if not self._socket.port:
            raise RuntimeError(f"mail host {self.name} ({self.address}) is not started")
        return (self._socket.host, self._socket.port)

    def set_behaviour(self, behaviour: Behaviour | Timeline[Behaviour]) -> None:
        """Replace the behaviour at any time. A Timeline's phase times stay relative to the
        start of the run, so phases already over are skipped."""
        if isinstance(behaviour, Behaviour):
            behaviour = Timeline.constant(behaviour)
        self._cursor = PhaseCursor(behaviour)
        if self._loop is None or self._closed:
            return
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._enter_state_or_raise()
        self._schedule_boundaries()

    def behaviour_now(self) -> Behaviour:
        """The behaviour in force for the next connection."""
        return self._cursor.now(self._clock())

    @property
    def timeline(self) -> Timeline[Behaviour]:
        """The phases the host follows (from the scenario, or the last ``set_behaviour``)."""
        return self._cursor.timeline

    def connection_attempted(self) -> None:
        """Someone saw a connection attempt to this address (a connect refused or timed out,
        or a SYN): a phase that refuses or times out counts it. A phase that a connection
        reaches counts the session instead, when it opens."""
        if self._closed or self.behaviour_now().sees_sessions:
            return
        self._count("connection attempt")

    @property
    def sessions(self) -> list[SessionRecord]:
        """Every session kept (all of them, unless ``limits`` says otherwise), in the order
        they opened; open ones have ``closed=None``."""
        return [log.snapshot() for log in self._logs]

    def reset(self) -> None:
        """Forget the sessions that have ended, the mailbox and the greylisting table, as if
        the host had just started; a session still open carries on and is kept. The
        behaviour and its phases are not touched."""
        self._logs = deque(log for log in self._logs if log.closed is None)
        for stored in self.mailbox:
            self._content.forget(stored)  # the shared content budget gets its bytes back
        self.mailbox.clear()
        self._for_sessions.greylist.forget()
        # Phases that count start counting again (those whose until has passed stay over).
        self._cursor = PhaseCursor(self._cursor.timeline)
        if self._loop is not None and not self._closed:
            self._enter_state_or_raise()
        # The counts start again too: an open session carries on, but it is not counted anew.
        self._connections = len(self._logs)
        self.accepted = self.messages_dropped = self.sessions_dropped = self.too_many = 0

    @property
    def connections(self) -> int:
        """TCP connections that reached the host (accepted sessions), kept or not."""
        return self._connections

    async def close(self) -> None:
        """Close the sockets and every open session; cancel timers and tasks."""
        self._closed = True
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        tasks = self._socket.stop()
        live = list(self._live)
        for session in live:
            session.abort()
        if tasks:
            await asyncio.wait(tasks)
        for session in live:
            await session.wait_closed()

    def __repr__(self) -> str:
        port = self._socket.port or "-"
        return f"<MailHost {self.name} {self.address} at {self._socket.host}:{port}>"

    # -- phases -----------------------------------------------------------------------------

    def _schedule_boundaries(self) -> None:
        assert self._loop is not None
        now = self._clock()
        for boundary in self._cursor.timeline.boundaries:
            if boundary > now:
                when = self._origin + boundary
                self._timers.append(self._loop.call_at(when, self._on_boundary, boundary))

    def _on_boundary(self, boundary: float) -> None:
        # asyncio may run a timer up to one clock resolution early: ask for the phase that
        # starts at the boundary rather than for clock().
        if self._closed:
            return
        self._switch_socket(self._cursor.now(max(boundary, self._clock())))

    def _switch_socket(self, behaviour: Behaviour) -> None:
        """Enter the socket state of ``behaviour`` (from a timer or a count: nobody to raise
        to, so a failure is reported)."""
        if self._loop is None:
            return
        try:
            self._socket.enter(socket_state_for(behaviour), self._loop)
        except OSError as error:
            self._warn(f"could not switch its socket: {error}")

    def _enter_state_or_raise(self) -> None:
        assert self._loop is not None
        try:
            self._socket.enter(socket_state_for(self.behaviour_now()), self._loop)
        except OSError as error:
            where = f"{self._socket.host}:{self._socket.port}"
            raise bind_error(f"mail host {self.name}", where, error) from error

    def _warn(self, text: str) -> None:
        if self._emit is not None:
            self._emit(WarningEvent(t=self._clock(), text=f"{self.name} ({self.address}): {text}"))

    # -- sessions ---------------------------------------------------------------------------

    def _new_session(self) -> asyncio.BaseProtocol:
        if len(self._live) >= self.limits.concurrent_sessions:
            self._too_many()
            return BusySession(self.name)
        cursor = self._cursor
        index = self._count("session")
        behaviour = cursor.phases[index].value
        if behaviour.connection == "silent":
            self._opening += 1
            return SilentSession(self._for_sessions, behaviour, self.limits.silent_timeout)
        self._opening += 1
        limit = behaviour.max_connections
        if limit is not None and len(self._live) + self._opening > limit.count:
            # Past the scripted limit: a session all the same, greeted with the limit's reply.
            return SmtpSession(
                self._for_sessions, _greeted_with(limit.reply, behaviour), self._idle_timeout()
            )
        # A connection accepted just before a switch to refuse/timeout is served normally.
        script = SessionScript(
            behaviour=lambda: self._played(cursor, index),
            recipient_reply=lambda b, mailbox: cursor.recipient_reply(index, b, mailbox),
        )
        return SmtpSession(self._for_sessions, script, self._idle_timeout())

    def _played(self, cursor: PhaseCursor, index: int) -> Behaviour:
        """What a session counted in phase ``index`` of ``cursor`` plays now."""
        if cursor is not self._cursor:  # the behaviour was replaced meanwhile
            return self.behaviour_now()
        return cursor.counted_in(index, self._clock())

    def _count(self, what: str) -> int:
        """Count one session or connection attempt in the phase in force; when it was that
        phase's last, enter the next one's socket state and say so. Returns the index of the
        phase it was counted in."""
        cursor = self._cursor
        index, ended = cursor.count(self._clock())
        if ended:
            times = cursor.phases[index].times
            now = cursor.index
            self._switch_socket(cursor.phases[now].value)
            if self._emit is not None:
                self._emit(
                    HostPhase(
                        t=self._clock(),
                        host=self.name,
                        address=self.address,
                        phase=now + 1,
                        behaviour=cursor.phases[now].value.describe(),
                        after=f"{times} {what}{'' if times == 1 else 's'}",
                        ended=cursor.phases[index].value.describe(),
                    )
                )
        return index

    def _idle_timeout(self) -> float:
        phases = self._cursor.timeline.phases
        delays = [d for phase in phases for d in phase.value.delays.values()]
        return max(self.limits.idle_timeout, max(delays, default=0.0) + _DELAY_MARGIN)

    def _too_many(self) -> None:
        self.too_many += 1
        if not self._busy:  # once per spell of being full, not once per connection
            self._busy = True
            self._warn(
                f"{len(self._live)} sessions open, its limit: answering 421 4.7.0 to new "
                "connections until one ends"
            )

    def _session_opened(
        self, session: LiveSession, client: str, behaviour: Behaviour
    ) -> SessionLog:
        limits = self.limits
        log = SessionLog(
            self._clock,
            client,
            behaviour.describe(),
            head=limits.transcript_head,
            tail=limits.transcript_tail,
            line_chars=limits.line_chars,
        )
        self._connections += 1
        self._opening = max(0, self._opening - 1)
        self._logs.append(log)
        if len(self._logs) > limits.sessions_kept:
            self._logs.popleft()
            self.sessions_dropped += 1
        self._live.add(session)
        return log

    def _session_closed(self, session: LiveSession, log: SessionLog) -> None:
        self._live.discard(session)
        self._busy = False
        log.close()
        if self._emit is not None:
            self._emit(
                HostSession(
                    t=self._clock(),
                    host=self.name,
                    address=self.address,
                    client=log.client,
                    behaviour=log.behaviour,
                    transcript=log.lines,
                    tls=log.tls,
                )
            )

    def _store(self, sender: str, recipients: Iterable[str], data: bytes, client: str) -> str:
        self.accepted += 1
        message_id = f"{self._tag}{self.accepted:04X}"
        stored = StoredMessage(self._clock(), sender, tuple(recipients), data, message_id, client)
        self.mailbox.append(stored)
        if len(self.mailbox) > self.limits.messages_kept:
            self._content.forget(self._drop_oldest())
        self._content.add(stored, self._dropped_for_content)
        if self._emit is not None:
            self._emit(
                HostAccepted(
                    t=stored.t,
                    host=self.name,
                    address=self.address,
                    sender=sender,
                    recipients=stored.recipients,
                    message_id=message_id,
                )
            )
        return message_id

    def _drop_oldest(self) -> StoredMessage:
        self.messages_dropped += 1
        # A list, as it always was; serve keeps at most a thousand or so: cheap to shift.
        return self.mailbox.pop(0)

    def _dropped_for_content(self, message: StoredMessage) -> None:
        # The content budget drops the oldest message of all hosts: this host's oldest.
        assert self.mailbox[0] is message
        self._drop_oldest()


def _greeted_with(reply: Reply, behaviour: Behaviour) -> SessionScript:
    """A session past ``max_connections``: greeted with the limit's reply, and otherwise
    (after a positive reply, or a rejecting one: 503 to all but QUIT) the phase's."""
    limited = Behaviour(
        replies={"greeting": reply},
        esmtp=behaviour.esmtp,
    )
    return SessionScript(behaviour=lambda: limited)
