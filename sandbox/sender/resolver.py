"""The sender's stub resolver: real DNS packets to the sandbox's server, and a TTL cache.

It asks one server only (the sandbox's), over UDP first and over TCP when the answer comes
back truncated (TC), the way a stub resolver does. Answers are cached for their TTL on the
run's clock (virtual in ``run`` mode), negative answers for the SOA's negative TTL (RFC 2308),
so a zone that changes is seen only once the cached answer has expired: the lesson behind
"lower your TTL before you move your MX". Failures (no reply, SERVFAIL) are not cached.

A question already on the wire is not asked twice: when twenty deliveries to one domain start
at the same instant, the first asks and the others wait for its answer and take it from the
cache, as a caching resolver does. Each UDP exchange uses a fresh socket (a new source port).

Every query carries EDNS with the DO bit, as a DNSSEC-aware stub's does, so that a server
that validates (the sandbox's, for the zones under ``dnssec:``) says so with the AD bit; the
answer keeps it (``Answer.secure``), which is what DANE needs (RFC 7672 §2.2, RFC 6840 §5.7).

dnslib is the codec; everything it returns is turned here into the core's ``Answer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import dnslib

from sandbox.core.addresses import ensure_loopback
from sandbox.core.mx import Answer, MxRecord

__all__ = ["CachedAnswer", "StubResolver"]

_RCODES = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN"}
_MEMORY = 1024
_EDNS_PAYLOAD = 1232  # the UDP size DNS Flag Day 2020 settled on

_K = TypeVar("_K")
_V = TypeVar("_V")


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    answer: Answer
    cached: bool


class _Cached:
    """A cached answer, and the copy of it last handed out with its remaining TTL: in virtual
    time a whole wave of deliveries reads the cache at one instant, and they can share it."""

    __slots__ = ("_last", "answer", "expires")

    def __init__(self, expires: float, answer: Answer) -> None:
        self.expires = expires
        self.answer = answer
        self._last = answer

    def aged(self, remaining: int) -> Answer:
        if self._last.ttl != remaining:
            self._last = replace(self.answer, ttl=remaining)
        return self._last


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
        self._cache: dict[tuple[str, str], _Cached] = {}
        self._asking: dict[tuple[str, str], asyncio.Future[Answer]] = {}
        # The server packs each reply once, so a question asked again gets the same bytes
        # (but the ID): decode those once too. Both are bounded, by _MEMORY entries.
        self._decoded: dict[tuple[str, str, bytes], Answer] = {}
        self._requests: dict[tuple[str, str], bytes] = {}

    async def query(self, name: str, rdtype: str) -> CachedAnswer:
        key = (name.lower().rstrip("."), rdtype)
        while True:
            hit = self._cache.get(key)
            now = self._clock()
            if hit is not None and hit.expires > now:
                return CachedAnswer(hit.aged(int(hit.expires - now)), True)
            asking = self._asking.get(key)
            if asking is None:
                return CachedAnswer(await self._ask_once(key), False)
            shared = await _follow(asking)
            if shared is not None and not _cacheable(shared):
                return CachedAnswer(shared, False)  # a failure: shared, never cached
            # A cacheable answer is in the cache now; an asker that was cancelled left the
            # question to us. Either way, go round again.

    async def _ask_once(self, key: tuple[str, str]) -> Answer:
        asking: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._asking[key] = asking
        try:
            answer = await self._ask(*key)
        except BaseException:
            asking.cancel()  # whoever waits for it asks again
            raise
        finally:
            del self._asking[key]
        if _cacheable(answer):
            self._cache[key] = _Cached(self._clock() + answer.ttl, answer)
        asking.set_result(answer)
        return answer

    async def _ask(self, name: str, rdtype: str) -> Answer:
        request = self._request(name, rdtype)
        for _ in range(self._tries):
            try:
                packet = await self._udp(request)
                if packet[:2] != request[:2]:
                    continue  # not the reply to this query (the ID differs)
                known = self._decoded.get((name, rdtype, packet[2:]))
                if known is not None:
                    return known
                response = dnslib.DNSRecord.parse(packet)
                if response.header.tc:
                    response = dnslib.DNSRecord.parse(await self._tcp(request))
                    return _to_answer(name, rdtype, response)
            except (
                TimeoutError,
                OSError,
                dnslib.DNSError,
                struct.error,
                asyncio.IncompleteReadError,
            ):
                continue
            answer = _to_answer(name, rdtype, response)
            _remember(self._decoded, (name, rdtype, packet[2:]), answer)
            return answer
        return Answer(name, rdtype, "TIMEOUT")

    def _request(self, name: str, rdtype: str) -> bytes:
        """The packed query, with a fresh random ID (dnslib's own way of choosing one)."""
        packed = self._requests.get((name, rdtype))
        if packed is None:
            question = dnslib.DNSRecord.question(name or ".", rdtype)
            question.add_ar(dnslib.EDNS0(flags="do", udp_len=_EDNS_PAYLOAD))
            packed = bytes(question.pack())
            _remember(self._requests, (name, rdtype), packed)
        return random.randint(0, 0xFFFF).to_bytes(2, "big") + packed[2:]

    async def _udp(self, payload: bytes) -> bytes:
        # A plain non-blocking socket: half the cost of a datagram transport per exchange.
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.server[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.connect(self.server)
            await loop.sock_sendall(sock, payload)
            async with asyncio.timeout(self._timeout):
                return await loop.sock_recv(sock, 65535)

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


def _remember(memory: dict[_K, _V], key: _K, value: _V) -> None:
    if len(memory) >= _MEMORY:
        del memory[next(iter(memory))]  # the oldest: insertion order
    memory[key] = value


def _cacheable(answer: Answer) -> bool:
    return answer.rcode in ("NOERROR", "NXDOMAIN") and answer.ttl > 0


async def _follow(asking: asyncio.Future[Answer]) -> Answer | None:
    """Wait for the answer to a question already asked; None if its asker was cancelled."""
    try:
        return await asyncio.shield(asking)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if asking.cancelled() and (task is None or not task.cancelling()):
            return None
        raise


def _to_answer(name: str, rdtype: str, response: Any) -> Answer:
    rcode = _RCODES.get(response.header.rcode, "SERVFAIL")
    current, cnames = name, []
    mx: list[MxRecord] = []
    addresses: list[str] = []
    texts: list[str] = []
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
        elif kind == "TXT" and rdtype == "TXT":
            texts.append(b"".join(rr.rdata.data).decode("utf-8", errors="replace"))
        elif kind == rdtype:
            texts.append(str(rr.rdata))
    ttl = min(ttls) if ttls else _negative_ttl(response)
    secure = bool(response.header.ad) and rcode in ("NOERROR", "NXDOMAIN")
    return Answer(
        name,
        rdtype,
        rcode,  # type: ignore[arg-type]
        tuple(mx),
        tuple(addresses),
        tuple(cnames),
        ttl,
        tuple(texts),
        secure,
    )


def _negative_ttl(response: Any) -> int:
    for rr in response.auth:
        if dnslib.QTYPE.get(rr.rtype) == "SOA":
            return int(min(rr.ttl, rr.rdata.times[-1]))
    return 0
