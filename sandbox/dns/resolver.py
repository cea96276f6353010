"""The sender's stub resolver: real DNS packets to the sandbox's server, and a TTL cache.

It asks one server only (the sandbox's), over UDP first and over TCP when the answer comes
back truncated (TC), the way a stub resolver does. Answers are cached for their TTL on the
run's clock (virtual in ``run`` mode), negative answers for the SOA's negative TTL (RFC 2308),
so a zone that changes is seen only once the cached answer has expired: the lesson behind
"lower your TTL before you move your MX". Failures (no reply, SERVFAIL) are not cached.

dnslib is the codec; everything it returns is turned here into the core's ``Answer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import dnslib

from sandbox.core.mx import Answer, MxRecord
from sandbox.net import ensure_loopback

__all__ = ["CachedAnswer", "StubResolver"]

_RCODES = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN"}


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    answer: Answer
    cached: bool


class _UdpExchange(asyncio.DatagramProtocol):
    def __init__(self, waiter: asyncio.Future[bytes]) -> None:
        self._waiter = waiter

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self._waiter.done():
            self._waiter.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self._waiter.done():
            self._waiter.set_exception(exc)


class StubResolver:
    def __init__(
        self,
        server: tuple[str, int],
        *,
        clock: Callable[[], float],
        timeout: float = 5.0,
        tries: int = 2,
    ) -> None:
        ensure_loopback(server[0])
        self.server = server
        self._clock = clock
        self._timeout = timeout
        self._tries = tries
        self._cache: dict[tuple[str, str], tuple[float, Answer]] = {}

    async def query(self, name: str, rdtype: str) -> CachedAnswer:
        key = (name.lower().rstrip("."), rdtype)
        hit = self._cache.get(key)
        if hit is not None and hit[0] > self._clock():
            remaining = int(hit[0] - self._clock())
            return CachedAnswer(replace(hit[1], ttl=remaining), True)
        answer = await self._ask(key[0], rdtype)
        if answer.rcode in ("NOERROR", "NXDOMAIN") and answer.ttl > 0:
            self._cache[key] = (self._clock() + answer.ttl, answer)
        return CachedAnswer(answer, False)

    async def _ask(self, name: str, rdtype: str) -> Answer:
        request = dnslib.DNSRecord.question(name or ".", rdtype)
        for _ in range(self._tries):
            try:
                packet = await self._udp(request.pack())
                response = dnslib.DNSRecord.parse(packet)
                if response.header.id != request.header.id:
                    continue
                if response.header.tc:
                    response = dnslib.DNSRecord.parse(await self._tcp(request.pack()))
            except (
                TimeoutError,
                OSError,
                dnslib.DNSError,
                struct.error,
                asyncio.IncompleteReadError,
            ):
                continue
            return _to_answer(name, rdtype, response)
        return Answer(name, rdtype, "TIMEOUT")

    async def _udp(self, payload: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bytes] = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpExchange(waiter), remote_addr=self.server
        )
        try:
            transport.sendto(payload)
            return await asyncio.wait_for(waiter, self._timeout)
        finally:
            transport.close()

    async def _tcp(self, payload: bytes) -> bytes:
        async def exchange() -> bytes:
            reader, writer = await asyncio.open_connection(*self.server)
            try:
                writer.write(struct.pack("!H", len(payload)) + payload)
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                return await reader.readexactly(length)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

        return await asyncio.wait_for(exchange(), self._timeout)


def _to_answer(name: str, rdtype: str, response: Any) -> Answer:
    rcode = _RCODES.get(response.header.rcode, "SERVFAIL")
    current, cnames = name, []
    mx: list[MxRecord] = []
    addresses: list[str] = []
    ttls: list[int] = []
    for rr in response.rr:
        owner = str(rr.rname).lower().rstrip(".")
        if owner != current:
            continue
        kind = dnslib.QTYPE.get(rr.rtype)
        ttls.append(rr.ttl)
        if kind == "CNAME" and rdtype != "CNAME":
            current = str(rr.rdata.label).lower().rstrip(".")
            cnames.append(current)
        elif kind == "MX" and rdtype == "MX":
            mx.append(MxRecord(rr.rdata.preference, str(rr.rdata.label).lower().rstrip(".")))
        elif kind in ("A", "AAAA") and kind == rdtype:
            addresses.append(str(rr.rdata))
    ttl = min(ttls) if ttls else _negative_ttl(response)
    return Answer(name, rdtype, rcode, tuple(mx), tuple(addresses), tuple(cnames), ttl)  # type: ignore[arg-type]


def _negative_ttl(response: Any) -> int:
    for rr in response.auth:
        if dnslib.QTYPE.get(rr.rtype) == "SOA":
            return int(min(rr.ttl, rr.rdata.times[-1]))
    return 0
