"""The sender's side of STARTTLS: upgrade an aiosmtplib session, and say what happened as data.

Like ``smtp.py``, this is a boundary where exceptions become outcomes. :func:`start_tls` sends
STARTTLS and, after a 220, runs the handshake (aiosmtplib's ``SMTPProtocol.start_tls``, with
the profile's STARTTLS timeout for both, as Postfix's ``smtp_starttls_timeout``):

==================================  =================================================
what happened                       outcome
==================================  =================================================
a reply other than 220              ``ServerReply`` (the core's ``StartTlsRefused``)
no reply: timeout or lost           ``NoReply("timeout" | "lost")``
220, then the handshake failed      :class:`TlsDown` (the core's ``HandshakeFailed``)
220, then the handshake completed   :class:`TlsUp`: version, cipher, the chain sent
==================================  =================================================

aiosmtplib raises alike before and after the 220 (a lost connection is
``SMTPServerDisconnected`` either way), so the exception says which it was: a read timeout
(``SMTPReadTimeoutError``) or a lost connection while reading the reply is no reply at all;
a timeout of the upgrade itself, a TLS error, or a connection lost "while upgrading transport"
(aiosmtplib's words, pinned by ``tests/integration/test_starttls.py``) is a failed handshake.
aiosmtplib's own ``start_tls`` is used, rather than STARTTLS and ``loop.start_tls`` by hand,
for its defence against plain text injected after the 220 (RFC 3207 §4.2, CVE-2011-0411).

The certificate is not verified during the handshake (``CertificateAuthority.client_context``):
the caller judges ``TlsUp.chain`` with ``tls.verify.judge`` and ``tls.dane.check``, so that the
policy, not the TLS library, decides whether an untrusted certificate may carry the mail.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import aiosmtplib

from sandbox.core.classify import NoReply, ServerReply
from sandbox.tls.verify import peer_chain

__all__ = ["TlsDown", "TlsUp", "start_tls"]

# How aiosmtplib words a connection lost during the handshake rather than before it.
_UPGRADING = "while upgrading transport"


@dataclass(frozen=True, slots=True)
class TlsUp:
    """The handshake completed: the protocol version, the cipher, the certificates sent, and
    the host's 220 to STARTTLS."""

    version: str
    cipher: str
    chain: tuple[bytes, ...]
    reply: ServerReply | None = None


@dataclass(frozen=True, slots=True)
class TlsDown:
    """The host said 220 to STARTTLS, but the handshake did not complete."""

    detail: str


async def start_tls(
    client: aiosmtplib.SMTP,
    context: ssl.SSLContext,
    *,
    server_name: str,
    timeout: float,
) -> ServerReply | NoReply | TlsUp | TlsDown:
    """STARTTLS on ``client``'s open session; ``server_name`` goes in SNI (RFC 8461 §7.1,
    RFC 7672 §8.1: the MX host name)."""
    protocol = client.protocol
    transport = protocol.transport if protocol is not None else None
    if protocol is None or transport is None:
        return NoReply("lost", "Connection lost")
    try:
        ready = await protocol.start_tls(context, server_hostname=server_name, timeout=timeout)
    except aiosmtplib.SMTPResponseException as error:
        return ServerReply(error.code, error.message)
    except aiosmtplib.SMTPReadTimeoutError as error:
        client.close()
        return NoReply("timeout", str(error))
    except aiosmtplib.SMTPServerDisconnected as error:
        client.close()
        if _UPGRADING not in str(error):
            return NoReply("lost", str(error))
        return TlsDown(_words(error))
    except (aiosmtplib.SMTPException, OSError) as error:
        client.close()  # a timed-out upgrade, or the TLS library's own error
        return TlsDown(_words(error))
    client.transport = protocol.transport  # as aiosmtplib's own SMTP.starttls does
    ssl_object = client.get_transport_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject):
        client.close()
        return TlsDown("no TLS session after the handshake")
    cipher = ssl_object.cipher()
    return TlsUp(
        ssl_object.version() or "TLS",
        cipher[0] if cipher else "",
        peer_chain(ssl_object),
        ServerReply(ready.code, ready.message),
    )


def _words(error: BaseException) -> str:
    """The most telling words of a failed handshake: the TLS library's, when it has some."""
    cause = error.__cause__
    if isinstance(error, ssl.SSLError) or cause is None:
        return str(error) or type(error).__name__
    return f"{error} ({str(cause) or type(cause).__name__})"
