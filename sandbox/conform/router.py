"""One DNS address for many worlds: the router in front of the cases' DNS servers (--smtp).

An MTA resolves through the one server its resolv.conf names (127.0.0.1:53 in a network
namespace), but every conformance case serves its own world with a DNS server of its own, so
that cases run side by side. Each case's names live under its own domain (``<id>.test``):
the router reads the question of each query, finds the case whose domain holds the name, and
passes the query on to that case's server unchanged, over the same transport; the case's
server records it as usual. A name no case serves gets NXDOMAIN (the sandbox's rule: outside
every zone nothing exists), and is remembered for the report: in ``late`` when it lies under
the domain of a case that has ended (an MTA goes on with the mail it still holds: retries,
bounces), in ``unrouted`` otherwise. A case's DNS fault (``timeout``: no reply) passes
through: no reply comes back to the MTA either.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Container
from typing import Any, cast

import dnslib

from sandbox.core.addresses import ensure_loopback
from sandbox.dns.server import bind_udp_and_tcp

__all__ = ["DnsRouter"]

_FORWARD_TIMEOUT = 10.0  # seconds to wait for a case's server (longer than any resolver)


class DnsRouter:
    """Passes each DNS query to the server of the domain it names (UDP and TCP)."""

    def __init__(self) -> None:
        self._routes: dict[str, tuple[str, int]] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.unrouted: list[tuple[str, str]] = []  # (name, type): under no case's domain
        self.late: list[tuple[str, str, str]] = []  # (ended case's domain, name, type)
        self._ended: set[str] = set()

    @property
    def address(self) -> tuple[str, int]:
        if self._udp is None:
            raise RuntimeError("the router is not started")
        host, port = self._udp.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def add(self, domain: str, server: tuple[str, int]) -> None:
        self._routes[domain.lower().rstrip(".")] = server

    def remove(self, domain: str) -> None:
        """The case is over: its names answer NXDOMAIN from now on, counted as ``late``."""
        domain = domain.lower().rstrip(".")
        self._routes.pop(domain, None)
        self._ended.add(domain)

    def route(self, name: str) -> tuple[str, int] | None:
        """The server for ``name``: the longest routed domain that holds it."""
        domain = _holder(name, self._routes)
        return None if domain is None else self._routes[domain]

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        ensure_loopback(host)
        self._tcp, self._udp, _ = await bind_udp_and_tcp(
            "the conformance DNS router",
            host,
            port,
            lambda: _TcpFront(self),
            lambda: _UdpFront(self),
        )

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- inside --------------------------------------------------------------------------------

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _target(self, query: bytes) -> tuple[tuple[str, int] | None, bytes | None]:
        """Where a query goes, or the NXDOMAIN answer for it; (None, None): drop it."""
        try:
            request = dnslib.DNSRecord.parse(query)
        except Exception:  # dnslib raises several kinds on garbage: none of them is ours
            return None, None
        if not request.questions:
            return None, None
        question = request.questions[0]
        name = str(question.qname)
        server = self.route(name)
        if server is not None:
            return server, None
        asked = (name.rstrip("."), dnslib.QTYPE.get(question.qtype, "?"))
        ended = _holder(name, self._ended)
        if ended is None:
            self.unrouted.append(asked)
        else:
            self.late.append((ended, *asked))
        reply = request.reply()
        reply.header.rcode = dnslib.RCODE.NXDOMAIN
        reply.header.aa = 0
        return None, bytes(reply.pack())


def _holder(name: str, domains: Container[str]) -> str | None:
    """The longest of ``domains`` that holds ``name`` (the name itself included)."""
    labels = name.lower().rstrip(".").split(".")
    for start in range(len(labels)):
        domain = ".".join(labels[start:])
        if domain in domains:
            return domain
    return None


class _UdpFront(asyncio.DatagramProtocol):
    def __init__(self, router: DnsRouter) -> None:
        self._router = router
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        server, answer = self._router._target(data)
        if answer is not None and self._transport is not None:
            self._transport.sendto(answer, addr)
        elif server is not None:
            self._router._spawn(self._forward(data, server, addr))

    async def _forward(self, data: bytes, server: tuple[str, int], addr: tuple[Any, ...]) -> None:
        reply = await _ask_udp(data, server)
        if reply is not None and self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(reply, addr)


class _TcpFront(asyncio.Protocol):
    def __init__(self, router: DnsRouter) -> None:
        self._router = router
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 2:
            length = int.from_bytes(self._buffer[:2], "big")
            if len(self._buffer) < 2 + length:
                return
            message = bytes(self._buffer[2 : 2 + length])
            del self._buffer[: 2 + length]
            server, answer = self._router._target(message)
            if answer is not None:
                self._send(answer)
            elif server is not None:
                self._router._spawn(self._forward(message, server))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def _send(self, reply: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(len(reply).to_bytes(2, "big") + reply)

    async def _forward(self, message: bytes, server: tuple[str, int]) -> None:
        reply = await _ask_tcp(message, server)
        if reply is not None:
            self._send(reply)


async def _ask_udp(data: bytes, server: tuple[str, int]) -> bytes | None:
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[bytes] = loop.create_future()

    class _Asker(asyncio.DatagramProtocol):
        def datagram_received(self, reply: bytes, addr: tuple[Any, ...]) -> None:
            if not answered.done():
                answered.set_result(reply)

    transport, _ = await loop.create_datagram_endpoint(_Asker, remote_addr=server)
    try:
        transport.sendto(data)
        async with asyncio.timeout(_FORWARD_TIMEOUT):
            return await answered
    except TimeoutError:
        return None  # the case's server dropped it (a DNS timeout fault): so do we
    finally:
        transport.close()


async def _ask_tcp(message: bytes, server: tuple[str, int]) -> bytes | None:
    try:
        async with asyncio.timeout(_FORWARD_TIMEOUT):
            reader, writer = await asyncio.open_connection(*server)
            try:
                writer.write(len(message).to_bytes(2, "big") + message)
                length = int.from_bytes(await reader.readexactly(2), "big")
                return await reader.readexactly(length)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (TimeoutError, OSError, asyncio.IncompleteReadError):
        return None
