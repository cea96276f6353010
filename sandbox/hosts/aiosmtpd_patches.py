"""Every place where the mail hosts lean on aiosmtpd's private or undocumented internals.

aiosmtpd (1.4) documents a subclassing interface: the constructor's arguments, the
``smtp_<COMMAND>`` coroutines, ``push``, ``transport``, ``session`` and ``envelope``, and the
handler hooks. The SMTP session (``session.py``) keeps to it, apart from what this module
gathers, so that an upgrade of aiosmtpd has one place to check.

Private or undocumented names, all used below and nowhere else:

- ``__dir__``, consulted by ``SMTP.__init__``: answered with fewer names, for speed;
- ``_getaddr``: wrapped with a cache, for speed;
- ``_handler_coroutine``: the task that runs the conversation, so that it can be awaited;
- ``_timeout_cb``, the idle timer's callback: extended to abort a connection whose client
  stopped reading;
- ``smtp_DATA`` is replaced (``_read_content``), and with it the names it uses:
  ``_reader``, ``_handle_hooks``, ``_call_handler_hook``, ``_decode_data``,
  ``_set_post_data_state`` and ``_DataState``;
- the ``__smtp_syntax__`` marks of ``@syntax``: copied onto our overrides, for HELP;
- ``command_size_limit``: read to tell what aiosmtpd will take for a command.

Undocumented behaviour that the session relies on (see ``SmtpSession`` in ``session.py``):

- every reply goes through ``push``, the greeting and the ``354`` included, and the greeting
  is the first: ``push`` is where the session records, scripts and closes;
- ``354`` is pushed just before aiosmtpd starts reading the message content;
- ``push`` raises ``ConnectionError`` when the client has gone (from the writer's drain);
- ``SMTP`` is an ``asyncio.StreamReaderProtocol``: ``data_received`` feeds its reader, so the
  bytes the session holds back (until the greeting is decided) are not read yet;
- the handler's ``handle_DATA`` answer is pushed as it is: after a hang-up the session returns
  ``""``, which its own ``push`` drops.

STARTTLS (``starttls.py``, and ``session.py`` through it):

- ``tls_context``, a constructor argument kept as an attribute, is read again at each EHLO
  (to offer STARTTLS) and at STARTTLS (to start the handshake): set per ``tls:`` value;
- ``TLSSetupException`` (public) is what a failed handshake raises; ``handle_exception``
  answers it, and aiosmtpd then calls ``connection_lost`` itself (asyncio may call it
  again): the session's ``connection_lost`` runs once;
- ``connection_made`` is called a second time when the handshake completes, with the TLS
  transport: not a new session;
- after STARTTLS the TLS layer hands decrypted bytes to ``data_received``, so the
  transcript reads them as before; the handshake's own bytes never reach it.

``tests/integration/test_hosts_fast_paths.py`` checks the speed-ups and HELP against a bare
aiosmtpd server; the test suite as a whole checks the rest.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, cast

from aiosmtpd.smtp import MISSING, SMTP, _DataState

__all__ = ["COMMAND_SIZE_LIMIT", "PatchedSMTP"]

# The longest command line aiosmtpd takes (an undocumented class attribute; only MAIL, with
# SIZE or SMTPUTF8, may be longer).
COMMAND_SIZE_LIMIT: int = SMTP.command_size_limit

# Parsed MAIL FROM / RCPT TO arguments, shared by every session (see PatchedSMTP._getaddr).
_PARSED_ADDRESSES: dict[str, tuple[str | None, str | None]] = {}
_MAX_PARSED_ADDRESSES = 4096

_SYNTAX_MARKS = ("__smtp_syntax__", "__smtp_syntax_extended__", "__smtp_syntax_when__")


class PatchedSMTP(SMTP):
    """aiosmtpd's ``SMTP`` with the sandbox's patches; subclass it instead of ``SMTP``."""

    # -- what aiosmtpd costs per session ------------------------------------------------------
    # A session is built for every connection, and aiosmtpd's __init__ spent two thirds of its
    # time in inspect.getmembers(self) and dir(self), looking for the ``smtp_*`` commands and
    # ``auth_*`` mechanisms. Those are the only names it lists, so listing only them (once per
    # class) gives it the same tables at a third of the cost.

    _listed: ClassVar[list[str] | None] = None

    def __dir__(self) -> list[str]:
        cls = type(self)
        listed: list[str] | None = cls.__dict__.get("_listed")  # per class, not inherited
        if listed is None:
            names = object.__dir__(self)
            listed = sorted(n for n in names if n.startswith(("smtp_", "auth_")))
            cls._listed = listed
        return list(listed)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd parses every address with the email package's header parser (and defines a
        # class on each call); a sandbox sees the same few addresses all run long. The verdict
        # depends on the argument and on local_part_limit, which no session of ours changes.
        parsed = _PARSED_ADDRESSES.get(arg)
        if parsed is None:
            parsed = super()._getaddr(arg)
            if len(_PARSED_ADDRESSES) < _MAX_PARSED_ADDRESSES:
                _PARSED_ADDRESSES[arg] = parsed
        return parsed

    # -- the conversation's task --------------------------------------------------------------

    def handler_task(self) -> asyncio.Task[None]:
        """The task that runs the conversation. aiosmtpd keeps it in ``_handler_coroutine``
        (private, stable through 1.4), set by ``connection_made``; the session retrieves its
        outcome, so that a lost connection is never reported as "Task exception was never
        retrieved", and awaits it when the host closes."""
        return cast("asyncio.Task[None]", self._handler_coroutine)

    # -- what an ended session keeps -----------------------------------------------------------

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        # aiosmtpd keeps a STARTTLS session's SSLProtocol (``_tls_protocol``, private, stable
        # through 1.4), the plain transport under it (``_original_transport``) and the TLS
        # connection's details (``session.ssl``, which holds OpenSSL's connection object) after
        # the connection is gone; the protocol alone holds a 256 KiB read buffer. The session
        # lives on in reference cycles until the collector runs, which a run makes rare
        # (``run._fewer_collections``): 10,000 TLS sessions held 600 MB. Let them go now.
        self._tls_protocol = None
        self._original_transport = None
        if self.session is not None:
            self.session.ssl = None

    # -- the idle timeout --------------------------------------------------------------------

    def _timeout_cb(self) -> None:
        """aiosmtpd closes an idle session with ``transport.close()``, which first sends what
        is buffered: for a client that stopped reading, never, and the connection (its file
        descriptor and buffer) would stay for good. Abort it instead when anything is left
        unsent."""
        transport = cast("asyncio.Transport | None", self.transport)
        super()._timeout_cb()  # type: ignore[no-untyped-call]
        if transport is not None and transport.get_write_buffer_size():
            transport.abort()

    # -- the message content -----------------------------------------------------------------

    async def smtp_DATA(self, arg: str | None) -> None:
        """aiosmtpd's DATA, line for line (1.4.6), but for where the content waits for the
        final dot: aiosmtpd keeps a bytearray per line, 60 bytes or more each, so that a
        message of short lines cost 20 to 40 times its size (a 32 MiB one, a gigabyte) until
        the dot. Here the lines go into one bytearray, unstuffed (RFC 5321 §4.5.2) as they
        come, which is what aiosmtpd's join after the dot gives."""
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        content, state = await self._read_content()
        if state == _DataState.TOO_LONG:
            await self.push("500 Line too long (see RFC5321 4.5.3.1.6)")
        elif state == _DataState.TOO_MUCH:
            # aiosmtpd says "552 Error: Too much mail data"; RFC 1870 §6.1 and RFC 3463
            # give the code that says why (the same text as at MAIL with SIZE=).
            await self.push("552 5.3.4 Message size exceeds fixed maximum message size")
        if state != _DataState.NOMINAL:
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        # The sessions never decode (decode_data=False), and always have a handle_DATA hook.
        assert not self._decode_data and "DATA" in self._handle_hooks
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)

    async def _read_content(self) -> tuple[bytes, _DataState]:
        """The content up to the final dot, and how it ended (aiosmtpd's loop)."""
        content = bytearray()
        num_bytes = 0
        limit: int | None = self.data_size_limit
        line_fragments: list[bytes] = []
        state = _DataState.NOMINAL
        while self.transport is not None:
            try:
                line: bytes = await self._reader.readuntil(b"\r\n")
            except asyncio.CancelledError:
                self._writer.close()  # the connection was reset during DATA
                # The frame lives on in the task's traceback, until the collector breaks the
                # session's cycles: let the content go now.
                content.clear()
                raise
            except asyncio.LimitOverrunError as error:
                # A line longer than the reader's limit: answered 500 after the dot.
                if state == _DataState.NOMINAL:
                    state = _DataState.TOO_LONG
                content.clear()
                line = await self._reader.read(error.consumed)
            if not line_fragments and line == b".\r\n":
                break
            num_bytes += len(line)
            if state == _DataState.NOMINAL and limit and num_bytes > limit:
                state = _DataState.TOO_MUCH  # answered 552 after the dot
                content.clear()
            line_fragments.append(line)
            if line.endswith(b"\r\n"):
                if state == _DataState.NOMINAL:
                    whole = b"".join(line_fragments)
                    if len(whole) > self.line_length_limit:
                        state = _DataState.TOO_LONG
                        content.clear()
                    else:
                        content += whole[1:] if whole.startswith(b".") else whole
                line_fragments.clear()
        return bytes(content), state

    # -- HELP -------------------------------------------------------------------------------

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """An override of an aiosmtpd command loses the ``@syntax`` marks of the original,
        and HELP then leaves the command out (and answers ``HELP MAIL`` with 501): copy the
        marks over, for every subclass (and this class: ``_copy_syntax_marks`` below)."""
        super().__init_subclass__(**kwargs)
        _copy_syntax_marks(cls)


def _copy_syntax_marks(cls: type) -> None:
    for name, method in vars(cls).items():
        original = getattr(SMTP, name, None) if name.startswith("smtp_") else None
        for mark in _SYNTAX_MARKS:
            if original is not None and hasattr(original, mark):
                setattr(method, mark, getattr(original, mark))


_copy_syntax_marks(PatchedSMTP)
