"""The STARTTLS stage of a mail host's SMTP session: aiosmtpd's STARTTLS, played per ``tls:``.

:class:`StartTlsSMTP` is aiosmtpd's ``SMTP`` (through ``PatchedSMTP``) with the sandbox's
rules for TLS; a session class puts it in place of ``PatchedSMTP``. What it does, by the
host's ``tls:`` in force when the client says EHLO or STARTTLS (``core.tls.HostTls``):

=================  ================  ========================================================
``tls:``           EHLO offers       after STARTTLS
=================  ================  ========================================================
valid, expired,    ``STARTTLS``      ``220``, then aiosmtpd's own handshake with that
self-signed,                         certificate (``CertificateAuthority.server_context``)
wrong-name
handshake-failure  ``STARTTLS``      ``220``; the first bytes of the client's handshake (its
                                     ClientHello) close the connection: the handshake dies
                                     half way, as with a broken TLS stack or a middlebox
none               nothing           ``454 4.7.0 TLS not available`` (aiosmtpd's answer when
                                     it has no context), as a server without TLS would say
=================  ================  ========================================================

``STARTTLS`` once TLS is up gets ``554 5.5.1 Error: TLS already active`` (Postfix's words).

A client that sends garbage instead of a handshake, or stops half way, costs the host one
connection and nothing more: aiosmtpd's handshake fails (or times out after asyncio's 60 s
``ssl_handshake_timeout``) and the session closes; the listener serves everyone else all along.
A connection aborted by the host in the middle of a handshake (the host closing) ends the
session too: asyncio's TLS layer reports such a handshake as done without a TLS transport,
which is taken for the failure it is.

Hooks for the session: :meth:`tls_started` once the handshake completes (with the version and
cipher), :meth:`tls_failed` when it does not. aiosmtpd calls ``connection_made`` a second time
when the handshake completes, with the TLS transport: :attr:`tls_upgrading` is True during
that call, so that a session does not take it for a new connection.

Reliance on aiosmtpd beyond its documented interface: the ``tls_context`` attribute is read
again at each EHLO and STARTTLS (the constructor argument of that name, kept as an attribute);
``TLSSetupException`` (public) is what aiosmtpd raises when the handshake fails, and
``handle_exception`` (documented) would log it as an error: it is answered here instead.
Both are listed in ``aiosmtpd_patches``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import TLSSetupException

from sandbox.core.tls import HostTls
from sandbox.hosts.aiosmtpd_patches import PatchedSMTP

__all__ = ["ALREADY_ACTIVE", "READY", "StartTlsSMTP"]

READY = "220 2.0.0 Ready to start TLS"
ALREADY_ACTIVE = "554 5.5.1 Error: TLS already active"


class StartTlsSMTP(PatchedSMTP):
    """aiosmtpd's SMTP with the sandbox's STARTTLS (see the module docstring).

    ``tls_now`` gives the host's ``tls:`` in force; ``contexts`` the server context for a
    ``tls:`` value (None: no TLS)."""

    def __init__(
        self,
        handler: Any,
        *,
        tls_now: Callable[[], HostTls],
        contexts: Callable[[HostTls], ssl.SSLContext | None],
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._tls_now = tls_now
        self._contexts = contexts
        self._breaking = False  # handshake-failure: 220 sent, the client's first bytes end it
        self._upgrading = False  # between the 220 and the end of the handshake
        self._secure = False

    @property
    def tls_upgrading(self) -> bool:
        """True while the TLS handshake after STARTTLS is under way."""
        return self._upgrading

    @property
    def breaking_handshake(self) -> bool:
        """True between the 220 of a ``handshake-failure`` host and the client's first
        bytes, which end the connection (they are a TLS hello, not commands)."""
        return self._breaking

    @property
    def secure(self) -> bool:
        """True once the session runs over TLS."""
        return self._secure

    # -- hooks ------------------------------------------------------------------------------

    def tls_started(self, version: str, cipher: str) -> None:
        """The handshake completed."""

    def tls_failed(self, reason: str) -> None:
        """The handshake did not complete (the connection is closing)."""

    # -- the stage --------------------------------------------------------------------------

    async def smtp_EHLO(self, hostname: str) -> None:
        # aiosmtpd offers STARTTLS when it has a context and TLS is not up yet.
        self.tls_context = None if self._secure else self._contexts(self._tls_now())
        await super().smtp_EHLO(hostname)

    async def smtp_STARTTLS(self, arg: str) -> None:
        if self._secure and not arg:
            await self.push(ALREADY_ACTIVE)
            return
        tls = self._tls_now()
        self.tls_context = self._contexts(tls)
        if arg or self.tls_context is None:
            await super().smtp_STARTTLS(arg)  # 501 for an argument, 454 without TLS
            return
        if tls == "handshake-failure":
            await self.push(READY)
            self._breaking = True
            return
        self._upgrading = True
        try:
            await super().smtp_STARTTLS(arg)
            if self._upgrading:
                # The connection went away under the handshake without an error (the host
                # aborting it as it closes): asyncio's TLS layer then ends the handshake as
                # if it had worked, but no TLS transport ever comes. End the session the way
                # aiosmtpd ends a failed handshake, or it waits for commands for ever.
                lost = ConnectionAbortedError("the connection closed during the handshake")
                raise TLSSetupException() from lost
        finally:
            self._upgrading = False

    def data_received(self, data: bytes) -> None:
        if self._breaking:
            # The client's hello, half a handshake: hang up without a word.
            self._breaking = False
            self.tls_failed("the host closed the connection in the middle of the handshake")
            if self.transport is not None:
                self.transport.close()
            return
        super().data_received(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._upgrading:  # aiosmtpd again, with the TLS transport: the handshake is done
            self._upgrading = False
            self._secure = True
            ssl_object = transport.get_extra_info("ssl_object")
            version = ssl_object.version() if ssl_object is not None else None
            cipher = ssl_object.cipher() if ssl_object is not None else None
            self.tls_started(version or "TLS", cipher[0] if cipher else "")

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            cause = error.__cause__
            self.tls_failed(f"the TLS handshake failed: {cause or error}")
            return ""  # aiosmtpd closes the connection without a reply
        return await super().handle_exception(error)
