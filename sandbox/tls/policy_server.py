"""The MTA-STS policy server: ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` on loopback.

Theory of operation
===================

RFC 8461 §3.3 has a sender fetch a domain's policy over HTTPS from the host ``mta-sts.<domain>``,
with a certificate valid for that name. One :class:`PolicyServer` plays that host for every
domain of the scenario's ``mta_sts:``: the client's SNI picks the certificate (issued by the
world's CA for ``mta-sts.<domain>``), the ``Host`` header picks the policy. It listens where
it is told, on loopback only: run mode gives it 127.0.0.1 port 0 (the sender reaches it
through its address map, as it reaches the mail hosts), serve mode the loopback address that
plays ``mta-sts.<domain>`` (:meth:`start` may be called once per address).

It speaks just enough HTTP/1.1 for a policy fetch, and nothing a client sends can stop it:

=====================================  ====================================================
the client                             the server
=====================================  ====================================================
``GET /.well-known/mta-sts.txt`` for   ``200``, ``Content-Type: text/plain``, the policy
a domain it serves                     text as the scenario wrote it
another path; a domain it does not     ``404``
serve
another method                         ``405`` (``Allow: GET``)
a request it cannot read               ``400``
garbage instead of a TLS handshake;    asyncio's TLS layer drops that connection; the
a handshake that stops half way        handshake times out after ``handshake_timeout``
a request that never ends, or longer   the connection is closed after ``request_timeout``,
than 8 KiB of head                     or at once
more than ``max_connections`` at once  the extra connections are closed at once
=====================================  ====================================================

Every response closes its connection (``Connection: close``): a sender fetches one policy and
goes. Every request answered is recorded (:attr:`PolicyServer.requests`) and handed to
``on_request``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sandbox.core.addresses import ensure_loopback
from sandbox.tls.certificates import CertificateAuthority, CertVariant

__all__ = ["WELL_KNOWN", "PolicyRequest", "PolicyServer"]

WELL_KNOWN = "/.well-known/mta-sts.txt"
_HEAD_LIMIT = 8192
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """One request the server answered: who asked, for which host and path, and the status."""

    t: float
    client: str
    host: str
    path: str
    status: int


class PolicyServer:
    """HTTPS for the MTA-STS policies of ``policies`` (domain → policy text).

    ``certificates`` may give a domain's site another certificate than a valid one (to play a
    site whose certificate a sender must refuse: RFC 8460's ``sts-webpki-invalid``)."""

    def __init__(
        self,
        policies: Mapping[str, str],
        authority: CertificateAuthority,
        *,
        certificates: Mapping[str, CertVariant] | None = None,
        clock: Callable[[], float] | None = None,
        on_request: Callable[[PolicyRequest], None] | None = None,
        handshake_timeout: float = 10.0,
        request_timeout: float = 10.0,
        max_connections: int = 64,
    ) -> None:
        self._policies = {_domain(d): text for d, text in policies.items()}
        self._authority = authority
        self._variants = {_domain(d): v for d, v in (certificates or {}).items()}
        self._clock = clock or _loop_clock
        self._on_request = on_request
        self._handshake_timeout = handshake_timeout
        self._request_timeout = request_timeout
        self._max_connections = max_connections
        self._servers: list[asyncio.Server] = []
        self._live: set[asyncio.StreamWriter] = set()
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._default: ssl.SSLContext | None = None
        self.requests: list[PolicyRequest] = []

    # -- life cycle -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen on ``host:port`` (loopback only; port 0 picks one) and return where."""
        ensure_loopback(host)
        server = await asyncio.start_server(
            self._serve,
            host,
            port,
            ssl=self._server_context(),
            ssl_handshake_timeout=self._handshake_timeout,
            limit=_HEAD_LIMIT,
        )
        self._servers.append(server)
        bound = server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    @property
    def addresses(self) -> list[tuple[str, int]]:
        found = []
        for server in self._servers:
            for sock in server.sockets:
                name = sock.getsockname()
                found.append((str(name[0]), int(name[1])))
        return found

    def set_policy(self, domain: str, text: str | None) -> None:
        """Serve ``text`` for ``domain`` from now on (None: stop serving it)."""
        domain = _domain(domain)
        if text is None:
            self._policies.pop(domain, None)
        else:
            self._policies[domain] = text

    async def close(self) -> None:
        """Stop listening and close every open connection."""
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for writer in list(self._live):
            writer.transport.abort()
        for server in servers:
            await server.wait_closed()

    async def __aenter__(self) -> PolicyServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- TLS ----------------------------------------------------------------------------------

    def _server_context(self) -> ssl.SSLContext:
        if self._default is None:
            first = next(iter(sorted(self._policies)), "invalid")
            self._default = self._site_context(first)
            self._default.sni_callback = self._choose_certificate
        return self._default

    def _site_context(self, domain: str) -> ssl.SSLContext:
        context = self._contexts.get(domain)
        if context is None:
            certificate = self._authority.server_certificate(
                f"mta-sts.{domain}", self._variants.get(domain, "valid")
            )
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 8461 §7.2
            context.load_cert_chain(certificate.chain_file, certificate.key_file)
            self._contexts[domain] = context
        return context

    def _choose_certificate(
        self, ssl_object: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        """SNI: ``mta-sts.<domain>`` gets that site's certificate; anything else the default."""
        if server_name is None:
            return
        name = _domain(server_name)
        if name.startswith("mta-sts.") and name[len("mta-sts.") :] in self._policies:
            ssl_object.context = self._site_context(name[len("mta-sts.") :])

    # -- HTTP -----------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._live) >= self._max_connections:
            writer.transport.abort()
            return
        self._live.add(writer)
        try:
            async with asyncio.timeout(self._request_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
                status, body, path, host = self._answer(head)
                writer.write(_response(status, body))
                await writer.drain()
            self._record(writer, host, path, status)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a request that never ended, or was too long: no answer
        except (ConnectionError, ssl.SSLError):
            pass  # the client went away
        finally:
            self._live.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
                async with asyncio.timeout(self._request_timeout):
                    await writer.wait_closed()

    def _answer(self, head: bytes) -> tuple[int, bytes, str, str]:
        """(status, body, path, host) for a request head."""
        try:
            lines = head.decode("ascii").split("\r\n")
            method, target, version = lines[0].split(" ")
        except (UnicodeDecodeError, ValueError):
            return 400, b"", "", ""
        if not version.startswith("HTTP/1."):
            return 400, b"", target, ""
        host = _host_header(lines[1:])
        if method != "GET":
            return 405, b"", target, host
        domain = host[len("mta-sts.") :] if host.startswith("mta-sts.") else ""
        text = self._policies.get(domain)
        if target != WELL_KNOWN or text is None:
            return 404, b"", target, host
        return 200, text.encode(), target, host

    def _record(self, writer: asyncio.StreamWriter, host: str, path: str, status: int) -> None:
        peer = writer.get_extra_info("peername")
        request = PolicyRequest(self._clock(), str(peer[0]) if peer else "?", host, path, status)
        self.requests.append(request)
        if self._on_request is not None:
            self._on_request(request)


def _host_header(lines: list[str]) -> str:
    """The host the request names (the ``Host`` header, without a port)."""
    for line in lines:
        name, colon, value = line.partition(":")
        if colon and name.strip().lower() == "host":
            host, _, _port = value.strip().partition(":")
            return _domain(host)
    return ""


def _response(status: int, body: bytes) -> bytes:
    headers = [f"HTTP/1.1 {status} {_REASONS[status]}", "Connection: close"]
    if status == 200:
        headers.append("Content-Type: text/plain")
    if status == 405:
        headers.append("Allow: GET")
    headers.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


def _domain(name: str) -> str:
    return name.strip().lower().rstrip(".")


def _loop_clock() -> float:
    return asyncio.get_running_loop().time()
