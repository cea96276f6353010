"""The scripted mail hosts: real SMTP servers on loopback whose behaviour follows a timeline.

Theory of operation
===================

A :class:`MailHost` stands for one address of one mail host. It owns one loopback port for its
whole life and runs entirely on the caller's event loop: no threads, no Controller, no sleeps
to wait for readiness. A client learns what the host does only from the wire.

Socket states
-------------
``Behaviour.connection`` picks one of three states for the port (``sockets``): ``listen`` for
``accept`` and ``silent``, ``refuse``, ``timeout``. The listener's protocol factory looks at the
behaviour in force when each connection arrives: ``accept`` gets an SMTP session (aiosmtpd's
``SMTP``, subclassed), ``silent`` a protocol that records what the client says and never
answers.

Phase switching
---------------
The behaviour in force is ``timeline.at(clock())``. ``start()`` binds the port (port 0 picks
one), enters the initial socket state and schedules one ``loop.call_at`` per phase boundary.
At a boundary the host enters the socket state of the new phase, synchronously; moving between
``accept`` and ``silent`` changes no socket at all. :meth:`MailHost.set_behaviour` does the same
at once, and schedules the new timeline's boundaries.

The SMTP-level fields (scripted replies, recipients, disconnects, delays, greylisting) are not
part of the socket state: every session reads them from the behaviour in force at each stage,
so a change (a phase boundary or :meth:`MailHost.set_behaviour`) takes effect at the next
command.

One SMTP stage
--------------
What a session says at each stage is decided by ``script`` (pure: behaviour x stage -> reply,
hang-up, delay or "answer normally"); the session carries it out.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Iterable
from typing import Any, cast

from sandbox.core.addresses import ensure_loopback
from sandbox.errors import bind_error
from sandbox.events import Emit, HostAccepted, HostSession
from sandbox.events import Warning as WarningEvent
from sandbox.hosts import script
from sandbox.hosts.aiosmtpd_patches import COMMAND_SIZE_LIMIT, PatchedSMTP
from sandbox.hosts.script import AnswerNormally, Greylist, HangUp, Say
from sandbox.hosts.sockets import HostSocket, socket_state_for
from sandbox.hosts.transcript import (
    ClientLines,
    SessionLog,
    SessionRecord,
    StoredMessage,
    decode_line,
)
from sandbox.scenario.model import Behaviour, Reply, Stage, Timeline

__all__ = ["MailHost"]

Clock = Callable[[], float]
# aiosmtpd closes a session after this much idle time; scripted delays must never hit it.
_MIN_IDLE_TIMEOUT = 600.0
_DELAY_MARGIN = 300.0


# --- the host ------------------------------------------------------------------------------


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
    ) -> None:
        ensure_loopback(bind[0])
        self.name = name
        self.address = address
        self.mailbox: list[StoredMessage] = []
        self._timeline = behaviour
        self._clock = clock
        self._emit = emit
        self._socket = HostSocket(bind, new_session=self._new_protocol, warn=self._warn)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._origin = 0.0  # loop time at which clock() was 0
        self._timers: list[asyncio.TimerHandle] = []
        self._logs: list[SessionLog] = []
        self._live: set[_Live] = set()
        self._greylist = Greylist()
        self._tag = f"{zlib.crc32(f'{name}/{address}'.encode()):08X}"
        self._closed = False

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
        self._timeline = behaviour
        if self._loop is None or self._closed:
            return
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._enter_state_or_raise()
        self._schedule_boundaries()

    def behaviour_now(self) -> Behaviour:
        return self._timeline.at(self._clock())

    @property
    def sessions(self) -> list[SessionRecord]:
        """Every session so far, in the order they opened; open ones have ``closed=None``."""
        return [log.snapshot() for log in self._logs]

    @property
    def connections(self) -> int:
        """TCP connections that reached the host (accepted sessions)."""
        return len(self._logs)

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
        for boundary in self._timeline.boundaries:
            if boundary > now:
                when = self._origin + boundary
                self._timers.append(self._loop.call_at(when, self._on_boundary, boundary))

    def _on_boundary(self, boundary: float) -> None:
        # asyncio may run a timer up to one clock resolution early: ask for the phase that
        # starts at the boundary rather than for clock().
        if self._closed:
            return
        assert self._loop is not None
        try:
            self._socket.enter(socket_state_for(self._timeline.at(boundary)), self._loop)
        except OSError as error:  # nobody to raise to from a timer: report it
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

    def _new_protocol(self) -> asyncio.BaseProtocol:
        behaviour = self.behaviour_now()
        if behaviour.connection == "silent":
            return _SilentSession(self, behaviour)
        # A connection accepted just before a switch to refuse/timeout is served normally.
        return _SmtpSession(self, behaviour, self._idle_timeout())

    def _idle_timeout(self) -> float:
        delays = [d for phase in self._timeline.phases for d in phase.value.delays.values()]
        return max(_MIN_IDLE_TIMEOUT, max(delays, default=0.0) + _DELAY_MARGIN)

    def _session_opened(self, session: _Live, client: str, behaviour: Behaviour) -> SessionLog:
        log = SessionLog(self._clock, client, behaviour.describe())
        self._logs.append(log)
        self._live.add(session)
        return log

    def _session_closed(self, session: _Live, log: SessionLog) -> None:
        self._live.discard(session)
        log.close()
        if self._emit is not None:
            self._emit(
                HostSession(
                    t=self._clock(),
                    host=self.name,
                    address=self.address,
                    client=log.client,
                    behaviour=log.behaviour,
                    transcript=tuple(log.lines),
                )
            )

    def _store(self, sender: str, recipients: Iterable[str], data: bytes, client: str) -> str:
        message_id = f"{self._tag}{len(self.mailbox) + 1:04X}"
        stored = StoredMessage(self._clock(), sender, tuple(recipients), data, message_id, client)
        self.mailbox.append(stored)
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


def _client_of(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if peer else "?"


class _Live:
    """What the host needs from an open session to close it."""

    def abort(self) -> None:
        raise NotImplementedError

    async def wait_closed(self) -> None:
        raise NotImplementedError


# --- silent --------------------------------------------------------------------------------


class _SilentSession(asyncio.Protocol, _Live):
    """Accepts the connection, records what the client says, never sends a byte."""

    def __init__(self, host: MailHost, behaviour: Behaviour) -> None:
        self._host = host
        self._behaviour = behaviour
        self._transport: asyncio.Transport | None = None
        self._log: SessionLog | None = None
        self._lines: ClientLines | None = None
        self._lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._log = self._host._session_opened(self, _client_of(transport), self._behaviour)
        self._lines = ClientLines(self._log)
        if self._host._closed:  # accepted while the host was closing
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        assert self._lines is not None
        self._lines.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        assert self._log is not None and self._lines is not None
        self._lines.finish()
        try:
            self._host._session_closed(self, self._log)
        finally:  # an event sink that raises must not leave close() waiting forever
            self._lost.set_result(None)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    async def wait_closed(self) -> None:
        await self._lost


# --- SMTP ----------------------------------------------------------------------------------


class _Hooks:
    """aiosmtpd's handler interface; each hook hands over to the session that called it."""

    async def handle_MAIL(
        self, server: _SmtpSession, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self, server: _SmtpSession, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        return server.answer_rcpt(envelope, address, options)

    async def handle_DATA(self, server: _SmtpSession, session: Any, envelope: Any) -> str:
        return await server.answer_message(envelope)


_HOOKS = _Hooks()


class _SmtpSession(PatchedSMTP, _Live):
    """One SMTP session: aiosmtpd's state machine, with each stage scripted by the behaviour
    in force. ``push`` is the one door every reply goes through: it records the reply, plays
    the greeting's script, applies positive scripted replies and closes after a 421."""

    def __init__(self, host: MailHost, behaviour: Behaviour, idle_timeout: float) -> None:
        loop = asyncio.get_running_loop()
        super().__init__(
            _HOOKS,
            hostname=host.name,
            ident="ESMTP MX Sandbox",
            timeout=idle_timeout,
            enable_SMTPUTF8=True,
            loop=loop,
        )
        self._host = host
        self._behaviour = behaviour
        self._client = "?"
        self._wire: asyncio.Transport | None = None  # aiosmtpd's self.transport, typed
        self._log: SessionLog | None = None
        self._lines: ClientLines | None = None
        self._lost: asyncio.Future[None] = loop.create_future()
        self._greeted = False
        self._early: bytearray | None = bytearray()  # client bytes held until the greeting
        self._early_commands: list[str] = []
        self._rejecting = False  # after a 4xx/5xx greeting: 503 to all but QUIT
        self._hung_up = False
        self._positive: Reply | None = None  # a positive scripted reply for the next answer

    # -- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._wire = cast(asyncio.Transport, transport)
        self._client = _client_of(transport)
        self._log = self._host._session_opened(self, self._client, self._behaviour)
        self._lines = ClientLines(self._log, hold_after_data_up_to=COMMAND_SIZE_LIMIT)
        super().connection_made(transport)
        if self._host._closed:  # accepted while the host was closing
            self._wire.abort()
        self.handler_task().add_done_callback(_retrieve)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        assert self._log is not None and self._lines is not None
        self._lines.finish()
        try:
            self._host._session_closed(self, self._log)
        finally:  # an event sink that raises must not leave close() waiting forever
            if not self._lost.done():
                self._lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        assert self._lines is not None
        commands = self._lines.feed(data)
        if self._early is not None:  # the greeting is not decided yet: hold the bytes
            self._early += data
            self._early_commands += commands
        elif self._rejecting:
            self._answer_rejected(commands)
        else:
            super().data_received(data)

    def abort(self) -> None:
        if self._wire is not None:
            self._wire.abort()

    async def wait_closed(self) -> None:
        await self._lost
        await asyncio.wait([self.handler_task()])

    # -- replies --------------------------------------------------------------------------------

    async def push(self, status: str | bytes) -> None:
        line = status if isinstance(status, str) else decode_line(status)
        if self._hung_up:
            return
        if not self._greeted:
            self._greeted = True
            await self._greet(line)
            return
        assert self._lines is not None
        content = line.startswith("354")  # aiosmtpd now reads the content: count it, not log it
        if content:
            self._lines.start_content()
        to_send, self._positive = script.with_scripted_text(self._positive, line)
        if to_send is not None:
            await self._send(to_send)
        if content:  # content the client sent ahead of the 354, logged after the 354 itself
            self._lines.catch_up()

    async def _greet(self, natural: str) -> None:
        if not await self._play("greeting"):
            to_send, self._positive = script.with_scripted_text(self._positive, natural)
            await self._send(to_send or natural)
        self._release_early()

    def _release_early(self) -> None:
        early, self._early = self._early, None
        if self._hung_up or not early:
            return
        if self._rejecting:
            assert self._lines is not None
            self._answer_rejected(self._early_commands + self._lines.never_hold())
        else:
            super().data_received(bytes(early))

    async def _send(self, line: str) -> None:
        if self._hung_up or self.transport is None or self.transport.is_closing():
            return
        assert self._log is not None
        self._log.add("S", line)
        try:
            await super().push(line)
        except ConnectionError:  # the client went away: nothing more to say
            self._hung_up = True
            return
        if script.closes_connection(line):
            self._hang_up()

    def _hang_up(self) -> None:
        self._hung_up = True
        if self.transport is not None:
            self.transport.close()

    def _answer_rejected(self, commands: list[str]) -> None:
        # aiosmtpd never sees these commands: the replies go straight to the transport.
        assert self._log is not None and self._wire is not None
        for command in commands:
            if self._hung_up:
                return
            reply, hang_up = script.answer_while_rejecting(command)
            self._log.add("S", reply)
            self._wire.write(reply.encode() + b"\r\n")
            if hang_up:
                self._hang_up()

    # -- stages -----------------------------------------------------------------------------

    async def _play(self, stage: Stage) -> bool:
        """Play ``stage`` as the script says. True when the stage is answered (or the
        connection dropped) and aiosmtpd must not handle it."""
        plan = script.plan_stage(self._host.behaviour_now(), stage)
        if plan.delay > 0:
            await asyncio.sleep(plan.delay)
        action = plan.action
        if isinstance(action, HangUp):
            self._hang_up()
            return True
        if isinstance(action, AnswerNormally):
            if action.positive is not None:
                self._positive = action.positive
            return False
        if action.reject_the_rest:
            self._rejecting = True
        await self._send(str(action.reply))
        return True

    async def smtp_HELO(self, hostname: str) -> None:
        if not await self._play("ehlo"):
            await super().smtp_HELO(hostname)

    async def smtp_EHLO(self, hostname: str) -> None:
        if not await self._play("ehlo"):
            await super().smtp_EHLO(hostname)

    async def smtp_MAIL(self, arg: str | None) -> None:
        if not await self._play("mail"):
            await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if not await self._play("rcpt"):
            await super().smtp_RCPT(arg)

    async def smtp_DATA(self, arg: str | None) -> None:
        assert self._lines is not None
        contents = self._lines.contents
        if not await self._play("data"):
            await super().smtp_DATA(arg)
        if self._lines.contents == contents:
            self._lines.data_refused()

    def answer_rcpt(self, envelope: Any, address: str, options: list[str]) -> str:
        """The reply to one RCPT that aiosmtpd has parsed (the ``rcpt`` stage is played)."""
        answer = script.answer_rcpt(
            self._host.behaviour_now(),
            address,
            sender=envelope.mail_from or "",
            client=self._client,
            accepted_so_far=len(envelope.rcpt_tos),
            greylist=self._host._greylist,
            now=self._host._clock(),
        )
        if answer.accepted:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
        return answer.reply

    async def answer_message(self, envelope: Any) -> str:
        """The reply after the final dot (the ``message`` stage)."""
        plan = script.plan_stage(self._host.behaviour_now(), "message")
        message_id = ""
        if plan.store_first:  # before the delay: a sender that stops waiting has delivered
            sender = envelope.mail_from or ""
            content = envelope.original_content
            message_id = self._host._store(sender, envelope.rcpt_tos, content, self._client)
        if plan.delay > 0:
            await asyncio.sleep(plan.delay)
        action = plan.action
        if isinstance(action, HangUp):
            self._hang_up()  # stored, never confirmed: the sender cannot know it arrived
            return ""
        if isinstance(action, Say):
            return str(action.reply)
        if action.positive is not None:
            return str(action.positive)
        return script.queued_reply(message_id)


def _retrieve(task: asyncio.Task[None]) -> None:
    # Read the conversation task's outcome, so that a lost connection is never reported as
    # "Task exception was never retrieved".
    if not task.cancelled():
        task.exception()
