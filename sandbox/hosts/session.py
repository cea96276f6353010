"""One connection to a mail host: the I/O shell that carries out the script.

:class:`SmtpSession` is aiosmtpd's SMTP state machine. At each stage it reads the behaviour in
force, asks ``script`` what to do (``plan_stage``, ``answer_rcpt``) and does it: waits, hangs
up, sends the scripted reply, or lets aiosmtpd answer. The behaviour is read at each stage, so
a change takes effect at the next command. :class:`SilentSession` accepts the connection and
never says a word. Both record a transcript and tell their host when they open and close.

Where the session leans on aiosmtpd beyond its documented interface, the why is in
``aiosmtpd_patches``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from sandbox.core.tls import HostTls
from sandbox.hosts import script
from sandbox.hosts.aiosmtpd_patches import COMMAND_SIZE_LIMIT
from sandbox.hosts.script import AnswerNormally, Greylist, HangUp, Say
from sandbox.hosts.starttls import StartTlsSMTP
from sandbox.hosts.transcript import ClientLines, SessionLog, decode_line
from sandbox.scenario.model import DEFAULT_SIZE, Behaviour, Esmtp, Reply, Stage

__all__ = [
    "EARLY_LIMIT",
    "BusySession",
    "LiveSession",
    "SessionHost",
    "SessionScript",
    "SilentSession",
    "SmtpSession",
]

_MAIL_OK = "250 2.1.0 Ok"
# Client bytes held until the greeting is decided; past this, the session stops reading (the
# rest waits in the kernel's buffers, and then in the client's).
EARLY_LIMIT = 64 * 1024


class LiveSession(Protocol):
    """What the host needs from an open session to close it."""

    def abort(self) -> None: ...

    async def wait_closed(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SessionHost:
    """What a session may ask of the host it serves; the host makes one for all its sessions."""

    name: str
    clock: Callable[[], float]
    closing: Callable[[], bool]  # the host is closing: a session accepted now is aborted
    greylist: Greylist
    opened: Callable[[LiveSession, str, Behaviour], SessionLog]
    closed: Callable[[LiveSession, SessionLog], None]
    # (sender, recipients, content, client address) -> the message id
    store: Callable[[str, Iterable[str], bytes, str], str]
    # The most a session reads at a time (None: asyncio's 256 KiB; see _read_in_pieces).
    read_size: int | None = None
    # The server side of STARTTLS for each ``tls:`` value (None: not offered); a host
    # without a certificate authority offers no STARTTLS at all.
    tls_contexts: Callable[[HostTls], ssl.SSLContext | None] = lambda _: None


@dataclass(frozen=True, slots=True)
class SessionScript:
    """What one session plays: ``behaviour()`` at each stage (the phase the session was
    counted in, or the one in force: ``script.PhaseCursor``), and the reply scripted for one
    more RCPT of a mailbox whose replies count (None: nothing scripted)."""

    behaviour: Callable[[], Behaviour]
    recipient_reply: Callable[[Behaviour, str], Reply | None] = lambda behaviour, mailbox: None


# --- too many at once ------------------------------------------------------------------------


class BusySession(asyncio.Protocol):
    """A connection beyond the host's limit of sessions at once: one ``421 4.7.0`` line and
    the connection is closed, whatever the client does (RFC 5321 §3.8 lets a server that
    cannot serve say 421 at once). It costs the host one write and no record."""

    def __init__(self, name: str) -> None:
        self._reply = f"421 4.7.0 {name} Too many connections, try again later\r\n".encode()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        wire = cast(asyncio.Transport, transport)
        wire.write(self._reply)
        wire.close()

    def data_received(self, data: bytes) -> None:
        pass  # closing: nothing the client says matters


# --- silent --------------------------------------------------------------------------------


class SilentSession(asyncio.Protocol):
    """Accepts the connection, records what the client says, never sends a byte. With an
    ``idle_timeout``, a client that sends nothing for that long is cut off."""

    def __init__(
        self, host: SessionHost, behaviour: Behaviour, idle_timeout: float | None = None
    ) -> None:
        self._host = host
        self._behaviour = behaviour
        self._transport: asyncio.Transport | None = None
        self._log: SessionLog | None = None
        self._lines: ClientLines | None = None
        self._loop = asyncio.get_running_loop()
        self._lost = self._loop.create_future()
        self._idle_timeout = idle_timeout
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        _read_in_pieces(transport, self._host.read_size)
        self._log = self._host.opened(self, _client_of(transport), self._behaviour)
        self._lines = ClientLines(self._log)
        if self._host.closing():  # accepted while the host was closing
            self._transport.abort()
        self._restart_idle_timer()

    def data_received(self, data: bytes) -> None:
        assert self._lines is not None
        self._lines.feed(data, commands=False)
        self._restart_idle_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        assert self._log is not None and self._lines is not None
        if self._idle is not None:
            self._idle.cancel()
        self._lines.finish()
        try:
            self._host.closed(self, self._log)
        finally:  # an event sink that raises must not leave close() waiting forever
            self._lost.set_result(None)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    async def wait_closed(self) -> None:
        await self._lost

    def _restart_idle_timer(self) -> None:
        if self._idle_timeout is None:
            return
        if self._idle is not None:
            self._idle.cancel()
        self._idle = self._loop.call_later(self._idle_timeout, self.abort)


# --- SMTP ----------------------------------------------------------------------------------


class _Handler:
    """aiosmtpd's handler interface; each hook hands over to the session that called it."""

    async def handle_MAIL(
        self, server: SmtpSession, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        server.mail_accepted()
        return _MAIL_OK

    async def handle_RCPT(
        self, server: SmtpSession, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        return server.answer_rcpt(envelope, address, options)

    async def handle_DATA(self, server: SmtpSession, session: Any, envelope: Any) -> str:
        return await server.answer_message(envelope)

    async def handle_EHLO(
        self, server: SmtpSession, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        # aiosmtpd's five-argument hook (its documented way to change the EHLO reply): the
        # hook, not aiosmtpd, records the client's name.
        session.host_name = hostname
        return script.ehlo_lines(server.esmtp(), responses)


_HANDLER = _Handler()


class SmtpSession(StartTlsSMTP):
    """One SMTP session: aiosmtpd's state machine, with each stage scripted by the behaviour
    in force. ``push`` is the one door every reply goes through: it records the reply, plays
    the greeting's script, applies positive scripted replies and closes after a 421.

    STARTTLS is ``hosts.starttls``'s, played as a stage first (a scripted reply, delay or
    disconnect at ``starttls``), with the certificate of the host's ``tls:`` in force. The
    handshake is not in the transcript (its bytes never reach ``data_received``): one line
    ``<TLS: TLSv1.3 TLS_AES_256_GCM_SHA384>`` (or ``<TLS failed: …>``) takes its place, and
    the session record keeps the version.

    ``idle_timeout`` is aiosmtpd's: a session that sends no command for that long is closed
    (the host sets it well past its longest scripted delay).

    What a client sends is read only as fast as the session can take it: before the greeting
    at most ``EARLY_LIMIT`` bytes wait for it, and after a rejecting greeting the session
    stops reading while its ``503`` replies wait for a client that does not read them.
    aiosmtpd does the same for the rest (a reader of bounded size, a writer it drains)."""

    def __init__(self, host: SessionHost, script: SessionScript, idle_timeout: float) -> None:
        loop = asyncio.get_running_loop()
        behaviour = script.behaviour()
        super().__init__(
            _HANDLER,
            tls_now=lambda: script.behaviour().tls,
            contexts=host.tls_contexts,
            hostname=host.name,
            ident="ESMTP MX Sandbox",
            timeout=idle_timeout,
            enable_SMTPUTF8=True,
            # A mail exchanger takes mail; it offers no AUTH (aiosmtpd would, once TLS is up).
            auth_exclude_mechanism=["LOGIN", "PLAIN"],
            loop=loop,
        )
        self._host = host
        self._script = script
        self._behaviour = behaviour  # as the session opened: its record says so
        self._messages = 0  # MAIL commands accepted in this session (max_messages)
        self._client = "?"
        self._wire: asyncio.Transport | None = None  # aiosmtpd's self.transport, kept after loss
        self._log: SessionLog | None = None
        self._lines: ClientLines | None = None
        self._lost: asyncio.Future[None] = loop.create_future()
        self._greeted = False
        self._early: bytearray | None = bytearray()  # client bytes held until the greeting
        self._early_commands: list[str] = []
        self._rejecting = False  # after a 4xx/5xx greeting: 503 to all but QUIT
        self._hung_up = False
        self._positive: Reply | None = None  # a positive scripted reply for the next answer
        self._reading_paused = False  # by this class; aiosmtpd's reader pauses on its own
        self._replies_pile_up = False  # the transport's buffer is past its high-water mark
        self._unanswered: deque[str] = deque()  # commands after a rejecting greeting
        self._ended = False  # connection_lost has run (aiosmtpd may call it twice)

    # -- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.tls_upgrading:
            # aiosmtpd again, with the TLS transport: the same session, now encrypted.
            self._wire = cast(asyncio.Transport, transport)
            super().connection_made(transport)
            return
        self._wire = cast(asyncio.Transport, transport)
        _read_in_pieces(transport, self._host.read_size)
        self._client = _client_of(transport)
        self._log = self._host.opened(self, self._client, self._behaviour)
        self._lines = ClientLines(self._log, hold_after_data_up_to=COMMAND_SIZE_LIMIT)
        super().connection_made(transport)
        if self._host.closing():  # accepted while the host was closing
            self._wire.abort()
        self.handler_task().add_done_callback(self._conversation_ended)

    def connection_lost(self, error: Exception | None) -> None:
        # After a failed handshake aiosmtpd calls this itself, and asyncio may again.
        if self._ended:
            return
        self._ended = True
        super().connection_lost(error)
        # Nothing more will be read: let go of what waited for the greeting now, rather than
        # when the collector breaks the session's reference cycles.
        self._early, self._early_commands = None, []
        self._unanswered.clear()
        assert self._log is not None and self._lines is not None
        self._lines.finish()
        try:
            self._host.closed(self, self._log)
        finally:  # an event sink that raises must not leave close() waiting forever
            if not self._lost.done():
                self._lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.breaking_handshake:  # the client's hello, which only ends the connection
            super().data_received(data)
            return
        assert self._lines is not None
        # The command lines matter only before the greeting and after a rejecting one.
        commands = self._lines.feed(data, commands=self._early is not None or self._rejecting)
        if self._early is not None:  # the greeting is not decided yet: hold the bytes
            self._early += data
            self._early_commands += commands
            if len(self._early) > EARLY_LIMIT:
                self._pause_reading()
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

    def _conversation_ended(self, task: asyncio.Task[None]) -> None:
        _retrieve(task)
        # aiosmtpd ends the conversation when the client's side closes (EOF), but leaves the
        # connection open if that happens before its loop, during the greeting (which a
        # scripted delay can make long): close it, or it lingers until the idle timeout.
        if self._wire is not None and not self._wire.is_closing():
            self._wire.close()

    # -- reading only as fast as the client reads ---------------------------------------------

    def _pause_reading(self) -> None:
        if self._wire is not None and not self._reading_paused:
            self._reading_paused = True
            self._wire.pause_reading()

    def _resume_reading(self) -> None:
        if self._wire is not None and self._reading_paused:
            self._reading_paused = False
            self._wire.resume_reading()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._replies_pile_up = True
        if self._rejecting:  # replies pile up unread: stop reading the commands that ask more
            self._pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._replies_pile_up = False
        if self._rejecting:
            self._answer_rejected([])

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
        self._resume_reading()
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
        # aiosmtpd never sees these commands: the replies go straight to the transport, as
        # long as the client reads them; the rest wait (and the session stops reading) until
        # it does, so that one read of many commands is not answered all in one go.
        assert self._log is not None and self._wire is not None
        self._unanswered.extend(commands)
        while self._unanswered and not self._hung_up and not self._replies_pile_up:
            reply, hang_up = script.answer_while_rejecting(self._unanswered.popleft())
            self._log.add("S", reply)
            self._wire.write(reply.encode() + b"\r\n")
            if hang_up:
                self._hang_up()
        if self._hung_up:
            self._unanswered.clear()
        elif self._unanswered:
            self._pause_reading()
        else:
            self._resume_reading()

    # -- stages -----------------------------------------------------------------------------

    async def _play(self, stage: Stage) -> bool:
        """Play ``stage`` as the script says. True when the stage is answered (or the
        connection dropped) and aiosmtpd must not handle it."""
        plan = script.plan_stage(self._script.behaviour(), stage)
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

    # -- TLS (``hosts.starttls`` plays it; the session records it) ---------------------------

    async def smtp_STARTTLS(self, arg: str) -> None:
        if not await self._play("starttls"):
            await super().smtp_STARTTLS(arg)

    def tls_started(self, version: str, cipher: str) -> None:
        assert self._log is not None
        self._log.add("C", f"<TLS: {version} {cipher}>".replace(" >", ">"))
        self._log.tls = version

    def tls_failed(self, reason: str) -> None:
        if self._log is not None:
            self._log.add("C", f"<TLS failed: {reason}>")

    def esmtp(self) -> Esmtp:
        """The extensions the behaviour in force offers."""
        return self._script.behaviour().esmtp

    def _take_size_limit(self) -> None:
        # aiosmtpd checks SIZE= and the content against data_size_limit: the advertised size,
        # or (none advertised) the limit the hosts have always had.
        self.data_size_limit = self.esmtp().size or DEFAULT_SIZE

    async def smtp_HELO(self, hostname: str) -> None:
        if not await self._play("ehlo"):
            self._take_size_limit()
            await super().smtp_HELO(hostname)

    async def smtp_EHLO(self, hostname: str) -> None:
        if not await self._play("ehlo"):
            self._take_size_limit()
            await super().smtp_EHLO(hostname)

    async def smtp_MAIL(self, arg: str | None) -> None:
        behaviour = self._script.behaviour()
        limited = script.limit_reply(behaviour, self._messages)
        if limited is not None and self.envelope is not None and self.envelope.mail_from is None:
            await self._send(str(limited))
            return
        if not await self._play("mail"):
            refusal = self._refusal(arg, "FROM:", lambda a: script.mail_refusal(behaviour.esmtp, a))
            if refusal is not None:
                await self.push(refusal)
                return
            await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if not await self._play("rcpt"):
            utf8 = bool(self.envelope is not None and self.envelope.smtp_utf8)
            refusal = self._refusal(arg, "TO:", lambda a: script.rcpt_refusal(a, utf8))
            if refusal is not None:
                await self.push(refusal)
                return
            await super().smtp_RCPT(arg)

    def _refusal(
        self, arg: str | None, keyword: str, check: Callable[[str], str | None]
    ) -> str | None:
        """What ``check`` says of a MAIL or RCPT argument, in a session that may carry on
        (aiosmtpd answers the ones out of sequence or malformed)."""
        if arg is None or self.session is None or not self.session.host_name:
            return None  # before HELO/EHLO: aiosmtpd asks for it
        if self.envelope is None or (keyword == "FROM:" and self.envelope.mail_from):
            return None
        if keyword == "TO:" and not self.envelope.mail_from:
            return None
        if not arg.upper().startswith(keyword):
            return None
        return check(arg[len(keyword) :])

    async def smtp_DATA(self, arg: str | None) -> None:
        assert self._lines is not None
        contents = self._lines.contents
        if not await self._play("data"):
            await super().smtp_DATA(arg)
        if self._lines.contents == contents:
            self._lines.data_refused()

    def mail_accepted(self) -> None:
        """A transaction began (MAIL FROM got 250): it counts towards ``max_messages``."""
        self._messages += 1

    def answer_rcpt(self, envelope: Any, address: str, options: list[str]) -> str:
        """The reply to one RCPT that aiosmtpd has parsed (the ``rcpt`` stage is played)."""
        behaviour = self._script.behaviour()
        answer = script.answer_rcpt(
            behaviour,
            address,
            sender=envelope.mail_from or "",
            client=self._client,
            accepted_so_far=len(envelope.rcpt_tos),
            greylist=self._host.greylist,
            now=self._host.clock(),
            counted=self._script.recipient_reply(behaviour, address),
        )
        if answer.accepted:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
        return answer.reply

    async def answer_message(self, envelope: Any) -> str:
        """The reply after the final dot (the ``message`` stage)."""
        plan = script.plan_stage(self._script.behaviour(), "message")
        message_id = ""
        if plan.store_first:  # before the delay: a sender that stops waiting has delivered
            sender = envelope.mail_from or ""
            content = envelope.original_content
            message_id = self._host.store(sender, envelope.rcpt_tos, content, self._client)
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


def _read_in_pieces(transport: asyncio.BaseTransport, size: int | None) -> None:
    # asyncio's socket transport reads up to 256 KiB at a time, and a session handles what it
    # reads before the loop runs anything else: aiosmtpd answers every command in its buffer
    # while the client's kernel takes the replies, so 256 KiB of pipelined NOOPs held the
    # loop (every host, the DNS server, the stop signal) for a few tenths of a second. Smaller
    # reads keep it to milliseconds. ``max_size`` is the transport's own, undocumented (stable
    # since Python 3.4); a transport without it reads as it does.
    if size is not None and hasattr(transport, "max_size"):
        transport.max_size = size


def _client_of(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if peer else "?"


def _retrieve(task: asyncio.Task[None]) -> None:
    # Read the conversation task's outcome, so that a lost connection is never reported as
    # "Task exception was never retrieved". Reading a cancelled task's outcome also makes it
    # let go of the CancelledError, whose traceback holds the conversation's frames (and what
    # they were reading) until the collector breaks the session's reference cycles.
    with contextlib.suppress(asyncio.CancelledError):
        task.exception()
