"""The sender's SMTP client: performs the core's actions with aiosmtplib on real sockets.

This is the one boundary where socket errors and aiosmtplib's exceptions become the core's
outcomes (``ServerReply`` or ``NoReply``); nothing above it sees an exception from the wire.

The TCP connect is done here, with the profile's connect timeout, and the connected socket is
handed to aiosmtplib, which then reads the greeting with the greeting timeout: two stages,
two timeouts, as in Postfix. Commands go through ``execute_command`` so that every reply,
4xx and 5xx included, comes back as data rather than as an exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl

import aiosmtplib

from sandbox.core.addresses import AddressMap
from sandbox.core.classify import CONNECT_FAILURES, PROBE_COMMAND, NoReply, Outcome, ServerReply
from sandbox.errors import NotInSandbox
from sandbox.sender.starttls import TlsDown, TlsUp, start_tls

__all__ = ["SmtpConnection", "dot_stuff"]

_LINE_END = re.compile(rb"\r\n|\r|\n")


def dot_stuff(message: bytes) -> bytes:
    """The DATA payload: CRLF line ends, leading dots doubled (RFC 5321 §4.5.2), final dot."""
    lines = _LINE_END.split(message)
    if lines and lines[-1] == b"":
        lines.pop()
    stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
    return b"".join(line + b"\r\n" for line in stuffed) + b".\r\n"


def _connect_failure(error: TimeoutError | OSError) -> NoReply:
    if isinstance(error, TimeoutError):
        return NoReply("timeout", CONNECT_FAILURES["timeout"].error)
    if isinstance(error, ConnectionRefusedError):
        return NoReply("refused", CONNECT_FAILURES["refused"].error)
    return NoReply("error", error.strerror or str(error))


class SmtpConnection:
    """One SMTP session to one zone address, through the sandbox's address map."""

    def __init__(self, network: AddressMap, helo_name: str) -> None:
        self._network = network
        self._helo_name = helo_name
        self._client: aiosmtplib.SMTP | None = None
        # A connected socket that aiosmtplib has not taken over yet: ours to close.
        self._unclaimed: socket.socket | None = None

    async def connect(self, address: str, timeout: float) -> NoReply | None:
        try:
            host, port = self._network.socket_for(address)
        except NotInSandbox as error:
            return NoReply("error", str(error))
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto=IPPROTO_TCP so that asyncio turns Nagle off: with it on, a reply's second
        # segment waits ~40 ms of real time for a delayed ACK, and on a virtual clock that
        # idle wait lets time jump past every timeout.
        try:
            sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        except OSError as error:  # out of file descriptors: no attempt was made
            return NoReply("error", f"cannot open a socket: {error.strerror or error}")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout)
        except BaseException as error:
            sock.close()  # also when the run is cancelled mid-connect: never leak the socket
            if isinstance(error, TimeoutError | OSError):
                # Told once the outcome is known: a host whose phase ends with this attempt
                # must not change its socket while the attempt is still under way.
                self._network.attempted(address)
                return _connect_failure(error)
            raise
        self._network.attempted(address)
        self._unclaimed = sock
        self._client = aiosmtplib.SMTP(
            sock=sock, local_hostname=self._helo_name, start_tls=False, timeout=None
        )
        return None

    async def adopt(self, client: aiosmtplib.SMTP, timeout: float) -> Outcome:
        """Take over a session kept open from an earlier delivery; RSET checks it is alive."""
        self._client = client
        return await self.command(PROBE_COMMAND, timeout)

    def release(self) -> aiosmtplib.SMTP | None:
        """Hand the open session over (to the connection cache) instead of closing it."""
        client, self._client = self._client, None
        return client

    async def read_greeting(self, timeout: float) -> Outcome:
        client = self._require()
        self._unclaimed = None  # from here on aiosmtplib's transport owns and closes it
        try:
            response = await client.connect(timeout=timeout)
        except aiosmtplib.SMTPConnectResponseError as error:
            return ServerReply(error.code, error.message)
        except aiosmtplib.SMTPConnectTimeoutError:
            return NoReply("timeout")
        except (aiosmtplib.SMTPException, OSError) as error:
            return NoReply("lost", str(error))
        return ServerReply(response.code, response.message)

    async def command(self, line: str, timeout: float) -> Outcome:
        client = self._require()
        try:
            response = await client.execute_command(line.encode(), timeout=timeout)
        except aiosmtplib.SMTPTimeoutError:
            return NoReply("timeout")
        except (aiosmtplib.SMTPException, OSError) as error:
            return NoReply("lost", str(error))
        return ServerReply(response.code, response.message)

    async def starttls(
        self, context: ssl.SSLContext, server_name: str, timeout: float
    ) -> Outcome | TlsUp | TlsDown:
        """STARTTLS and the handshake (``sender.starttls``); the certificate is the
        caller's to judge."""
        return await start_tls(self._require(), context, server_name=server_name, timeout=timeout)

    async def message(self, content: bytes, timeout: float) -> Outcome:
        """Send the content after a 354 and read the reply to the final dot."""
        client = self._require()
        protocol = client.protocol
        if protocol is None:
            return NoReply("lost", "Connection lost")
        try:
            # No await between the write and read_response(), so the reply cannot arrive
            # before aiosmtplib is waiting for it.
            protocol.write(dot_stuff(content))
            response = await protocol.read_response(timeout=timeout)
        except aiosmtplib.SMTPTimeoutError:
            client.close()
            return NoReply("timeout")
        except (aiosmtplib.SMTPException, OSError) as error:
            client.close()
            return NoReply("lost", str(error))
        return ServerReply(response.code, response.message)

    async def close(self, *, quit: bool, timeout: float) -> ServerReply | None:
        """Close the session, saying QUIT first when asked; the reply to QUIT, if one came."""
        client, self._client = self._client, None
        unclaimed, self._unclaimed = self._unclaimed, None
        if unclaimed is not None:
            unclaimed.close()
        if client is None:
            return None
        reply = None
        if quit and client.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                response = await client.execute_command(b"QUIT", timeout=timeout)
                reply = ServerReply(response.code, response.message)
        client.close()
        return reply

    def _require(self) -> aiosmtplib.SMTP:
        if self._client is None:
            raise RuntimeError("no SMTP connection: connect() first")
        return self._client
