"""The DNS fast paths: packed replies reused by the server, questions shared by the resolver.

Both are optimisations (see the README's Performance section); these tests hold them to
giving exactly what the slow path gives: the same bytes with the query's own ID, the zones and
DNS faults in force at each query, one ``DnsServed`` event per query, and answers that every
caller gets even when the one who asked is cancelled. Virtual time (looptime) makes TTLs and
resolver timeouts free.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import dns.flags
import dns.message
import dns.rcode
import pytest

from sandbox import DnsServed, Event
from sandbox.dns.server import Authority, DnsServer
from sandbox.dns.zone import parse_zone
from sandbox.scenario.model import DnsBehaviour
from sandbox.sender.resolver import CachedAnswer, StubResolver

pytestmark = pytest.mark.looptime

HOST = "127.0.0.1"
ZONE = "$TTL 3600\nmx1 IN A 192.0.2.10\n" + "".join(f"big IN A 192.0.2.{i}\n" for i in range(1, 41))


class World:
    """A DNS server whose zone text and per-name faults a test can change at any time."""

    def __init__(self) -> None:
        self.zone = ZONE
        self.faults: dict[str, DnsBehaviour] = {}
        self.events: list[Event] = []
        self._built: tuple[str, Authority] | None = None

    def authority(self) -> Authority:
        # Like the runner: the same Authority object while the zone text stays the same.
        if self._built is None or self._built[0] != self.zone:
            self._built = (self.zone, Authority([parse_zone("example.test", self.zone)]))
        return self._built[1]

    def behaviour(self, name: str) -> DnsBehaviour:
        return self.faults.get(name, DnsBehaviour())

    def served(self) -> list[DnsServed]:
        return [e for e in self.events if isinstance(e, DnsServed)]


@pytest.fixture
async def world() -> AsyncIterator[tuple[World, DnsServer]]:
    w = World()
    loop = asyncio.get_running_loop()
    server = DnsServer(w.authority, behaviour=w.behaviour, clock=loop.time, emit=w.events.append)
    await server.start(HOST, 0)
    try:
        yield w, server
    finally:
        await server.close()


async def exchange(server: DnsServer, query: bytes, *, tcp: bool = False) -> bytes:
    if tcp:
        reader, writer = await asyncio.open_connection(*server.address)
        try:
            writer.write(len(query).to_bytes(2, "big") + query)
            length = int.from_bytes(await reader.readexactly(2), "big")
            return await reader.readexactly(length)
        finally:
            writer.close()
            await writer.wait_closed()
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(server.address)
        await loop.sock_sendall(sock, query)
        return await asyncio.wait_for(loop.sock_recv(sock, 65535), 5)


def query(name: str, rdtype: str = "A", query_id: int = 1) -> bytes:
    return dns.message.make_query(name, rdtype, id=query_id).to_wire()


def addresses(reply: bytes) -> list[str]:
    message = dns.message.from_wire(reply)
    return sorted(str(rdata) for rrset in message.answer for rdata in rrset)


# --- the server: packed replies ---------------------------------------------------------------


async def test_the_same_question_gets_the_same_bytes_with_its_own_id(
    world: tuple[World, DnsServer],
) -> None:
    w, server = world
    first = await exchange(server, query("mx1.example.test", query_id=0x1111))
    second = await exchange(server, query("mx1.example.test", query_id=0x2222))
    assert first[:2] == b"\x11\x11"
    assert second[:2] == b"\x22\x22"
    assert first[2:] == second[2:]
    assert addresses(second) == ["192.0.2.10"]
    one, two = w.served()
    assert (one.name, one.rdtype, one.rcode, one.answers) == ("mx1.example.test", "A", "NOERROR", 1)
    assert (two.name, two.rdtype, two.rcode, two.answers) == (one.name, one.rdtype, one.rcode, 1)


async def test_a_changed_zone_is_answered_at_once(world: tuple[World, DnsServer]) -> None:
    w, server = world
    assert addresses(await exchange(server, query("mx1.example.test"))) == ["192.0.2.10"]
    w.zone = ZONE.replace("192.0.2.10", "192.0.2.77")
    assert addresses(await exchange(server, query("mx1.example.test"))) == ["192.0.2.77"]
    w.zone = ZONE
    assert addresses(await exchange(server, query("mx1.example.test"))) == ["192.0.2.10"]


async def test_a_dns_fault_that_starts_or_ends_applies_to_the_next_query(
    world: tuple[World, DnsServer],
) -> None:
    w, server = world
    asked = query("mx1.example.test")
    assert dns.message.from_wire(await exchange(server, asked)).rcode() == dns.rcode.NOERROR
    w.faults["mx1.example.test"] = DnsBehaviour("servfail")
    assert dns.message.from_wire(await exchange(server, asked)).rcode() == dns.rcode.SERVFAIL
    w.faults["mx1.example.test"] = DnsBehaviour("nxdomain")
    assert dns.message.from_wire(await exchange(server, asked)).rcode() == dns.rcode.NXDOMAIN
    del w.faults["mx1.example.test"]
    assert addresses(await exchange(server, asked)) == ["192.0.2.10"]
    assert [e.rcode for e in w.served()] == ["NOERROR", "SERVFAIL", "NXDOMAIN", "NOERROR"]


async def test_udp_and_tcp_replies_are_packed_apart(world: tuple[World, DnsServer]) -> None:
    w, server = world
    big = query("big.example.test")
    for _ in range(2):
        truncated = dns.message.from_wire(await exchange(server, big))
        assert truncated.flags & dns.flags.TC
        assert addresses(await exchange(server, big, tcp=True)) == sorted(
            f"192.0.2.{i}" for i in range(1, 41)
        )
    assert [(e.transport, e.truncated) for e in w.served()] == [
        ("udp", True),
        ("tcp", False),
        ("udp", True),
        ("tcp", False),
    ]


# --- the resolver: one question on the wire ----------------------------------------------------


def resolver(server: DnsServer, *, timeout: float = 5.0, tries: int = 2) -> StubResolver:
    loop = asyncio.get_running_loop()
    start = loop.time()

    def clock() -> float:
        return loop.time() - start

    return StubResolver(server.address, clock=clock, timeout=timeout, tries=tries)


async def test_twenty_callers_at_once_send_one_query(world: tuple[World, DnsServer]) -> None:
    w, server = world
    stub = resolver(server)
    results: list[CachedAnswer] = await asyncio.gather(
        *(stub.query("mx1.example.test", "A") for _ in range(20))
    )
    assert len(w.served()) == 1
    assert {r.answer.addresses for r in results} == {("192.0.2.10",)}
    assert [r.cached for r in results].count(False) == 1  # the one who asked


async def test_callers_still_get_an_answer_when_the_asker_is_cancelled(
    world: tuple[World, DnsServer],
) -> None:
    w, server = world
    w.faults["mx1.example.test"] = DnsBehaviour("timeout")
    stub = resolver(server)
    asker = asyncio.create_task(stub.query("mx1.example.test", "A"))
    await asyncio.sleep(0.1)  # the question is on the wire, unanswered
    follower = asyncio.create_task(stub.query("mx1.example.test", "A"))
    await asyncio.sleep(0.1)
    del w.faults["mx1.example.test"]
    asker.cancel()
    result = await follower
    assert asker.cancelled()
    assert (result.answer.rcode, result.answer.addresses) == ("NOERROR", ("192.0.2.10",))
    assert [e.rcode for e in w.served()] == ["dropped", "NOERROR"]


async def test_a_failure_is_shared_but_never_cached(world: tuple[World, DnsServer]) -> None:
    w, server = world
    w.faults["mx1.example.test"] = DnsBehaviour("timeout")
    stub = resolver(server, timeout=2.0, tries=2)
    both = await asyncio.gather(*(stub.query("mx1.example.test", "A") for _ in range(2)))
    assert [(r.answer.rcode, r.cached) for r in both] == [("TIMEOUT", False)] * 2
    assert len(w.served()) == 2  # one caller, two tries
    del w.faults["mx1.example.test"]
    again = await stub.query("mx1.example.test", "A")
    assert (again.answer.rcode, again.cached) == ("NOERROR", False)


async def test_answers_asked_again_after_their_ttl_follow_the_zone(
    world: tuple[World, DnsServer],
) -> None:
    w, server = world
    stub = resolver(server)
    first = await stub.query("mx1.example.test", "A")
    await asyncio.sleep(3601)  # the TTL runs out: the same question, the same reply bytes
    second = await stub.query("mx1.example.test", "A")
    w.zone = ZONE.replace("192.0.2.10", "192.0.2.77")
    await asyncio.sleep(3601)
    third = await stub.query("mx1.example.test", "A")
    assert [r.cached for r in (first, second, third)] == [False, False, False]
    assert [r.answer.addresses for r in (first, second, third)] == [
        ("192.0.2.10",),
        ("192.0.2.10",),
        ("192.0.2.77",),
    ]
    assert first.answer == second.answer
