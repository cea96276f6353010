"""Errors raised inside the sandbox's servers, caught where they surface and kept for the test.

A server runs inside callbacks that nobody awaits: a protocol's ``data_received``, a timer, an
aiosmtpd handler. An exception there never reaches the test that started the server. asyncio
hands it to the loop's exception handler; aiosmtpd and the DNS server log it and answer with an
error reply so that they keep serving. ``ServerErrorTrap`` listens at both places while a served
sandbox runs, keeps what belongs to the sandbox, and ``raise_new()`` raises it in the test as a
``ServerError`` whose cause is the original exception, traceback and all.

What belongs to the sandbox: an exception whose traceback passes through the sandbox's or
aiosmtpd's code, or that asyncio reports for one of their protocols. An exception from the
test's own tasks on the same loop goes to the loop's previous handler, untouched.
"""

from __future__ import annotations

import asyncio
import logging
import os
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any

import aiosmtpd.smtp

from sandbox.errors import ServerError, ServerFault

__all__ = ["ServerErrorTrap"]

# aiosmtpd logs a handler's exception here; the DNS server logs under "sandbox.dns.server".
_LOGGERS = ("mail.log", "sandbox")
# Where the sandbox's and aiosmtpd's code lives. From module files, not package ``__file__``s:
# an editable install may present ``sandbox`` as a namespace package, whose __file__ is None.
_OUR_CODE = (
    str(Path(__file__).resolve().parents[1]) + os.sep,
    str(Path(aiosmtpd.smtp.__file__).resolve().parent) + os.sep,
)


class ServerErrorTrap:
    """Collects the sandbox's server errors on one event loop, from ``install`` to
    ``uninstall``."""

    def __init__(self) -> None:
        self.faults: list[ServerFault] = []
        self._raised = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: Any = None
        self._handler = _LogHandler(self)

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._previous = loop.get_exception_handler()
        loop.set_exception_handler(self._on_loop_error)
        for name in _LOGGERS:
            logging.getLogger(name).addHandler(self._handler)

    def uninstall(self) -> None:
        for name in _LOGGERS:
            logging.getLogger(name).removeHandler(self._handler)
        loop, self._loop = self._loop, None
        if loop is not None and loop.get_exception_handler() == self._on_loop_error:
            loop.set_exception_handler(self._previous)

    def record(self, where: str, error: BaseException) -> None:
        """Keep an error caught elsewhere (the test's own event callback, say)."""
        self.faults.append(ServerFault(where, error))

    def raise_new(self) -> None:
        """Raise the errors not raised before, as one ServerError (cause: the first)."""
        new = self.faults[self._raised :]
        if not new:
            return
        self._raised = len(self.faults)
        raise ServerError(new) from new[0].error

    # -- the two doors -------------------------------------------------------------------------

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if isinstance(error, BaseException) and _belongs_to_us(error, context):
            self.faults.append(ServerFault(str(context.get("message", "event loop")), error))
            return
        if self._previous is not None:
            self._previous(loop, context)
        else:
            loop.default_exception_handler(context)

    def _on_log(self, record: logging.LogRecord) -> None:
        if record.exc_info is None or record.exc_info[1] is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return
        if running is self._loop:
            self.faults.append(ServerFault(record.getMessage(), record.exc_info[1]))


class _LogHandler(logging.Handler):
    def __init__(self, trap: ServerErrorTrap) -> None:
        super().__init__(level=logging.ERROR)
        self._trap = trap

    def emit(self, record: logging.LogRecord) -> None:
        self._trap._on_log(record)


def _belongs_to_us(error: BaseException, context: dict[str, Any]) -> bool:
    protocol = context.get("protocol")
    transport = context.get("transport")
    if protocol is None and transport is not None:
        protocol = getattr(transport, "get_protocol", lambda: None)()
    if protocol is not None and _is_our_module(type(protocol).__module__):
        return True
    return _passes_through_our_code(error.__traceback__)


def _is_our_module(module: str) -> bool:
    return module.split(".")[0] in ("sandbox", "aiosmtpd")


def _passes_through_our_code(tb: TracebackType | None) -> bool:
    return any(frame.filename.startswith(_OUR_CODE) for frame in traceback.extract_tb(tb))
