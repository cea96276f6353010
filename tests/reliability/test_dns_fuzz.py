"""Hostile packets to the DNS server: it never crashes, and it never stops answering right.

Three layers:

1. Hypothesis throws every family of ``hostile_dns`` at ``DnsServer.serve`` (the boundary
   where bytes become queries), thousands of times: no exception may reach the catch-all, and
   every reply is a well-formed response to the packet's ID, within the transport's size.
2. Over real UDP, 10,000 hostile packets in a row, and after every hundred a valid query
   whose answer is compared with the zone as dnspython reads it.
3. Over real TCP, streams with wrong length prefixes (zero, shorter than a header, longer
   than what follows, split), garbage between good queries, and hang-ups mid-message: only
   that connection suffers; the server answers the next client correctly and holds no
   connection once the clients are gone.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import dns.asyncquery
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.zone
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.dns.server import EDNS_PAYLOAD_CAP, UDP_PLAIN_LIMIT, Authority, DnsServer
from sandbox.dns.zone import parse_zone
from tests.reliability.budget import scaled
from tests.reliability.hostile_dns import FAMILIES, hostile_packet, valid_query

APEX = "example.test"
ZONE = """\
$TTL 3600
@      IN MX 10 mx1
@      IN MX 20 mx2
mx1    IN A    192.0.2.10
mx1    IN AAAA 2001:db8::10
mx2    IN A    192.0.2.11
www    IN CNAME mx1
text   IN TXT "v=spf1 -all" "hello"
""" + "".join(f"big    IN A 192.0.2.{i}\n" for i in range(1, 61))

PACKETS_IN_A_ROW = scaled(10_000, 100_000)
PROBE_EVERY = 100
TCP_STREAMS = scaled(300)
HOST = "127.0.0.1"

# (name, type, transport): valid questions whose answers are checked against dnspython.
PROBES = (
    (APEX, "MX", "udp"),
    ("mx1.example.test", "A", "udp"),
    ("mx1.example.test", "AAAA", "tcp"),
    ("mx2.example.test", "A", "tcp"),
    ("mx2.example.test", "AAAA", "udp"),  # NODATA
    ("text.example.test", "TXT", "udp"),
    ("missing.example.test", "A", "udp"),  # NXDOMAIN
    ("big.example.test", "A", "tcp"),  # 60 records: too big for plain UDP
)


class _ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def no_errors_logged() -> Iterator[None]:
    """The server's catch-all logs an unexpected error: none may happen."""
    handler = _ErrorLog()
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
    assert not handler.messages, handler.messages


class CountingServer(DnsServer):
    """The real server, counting the messages that reached it (the kernel drops datagrams
    when a receive buffer is full; this proves that every hostile packet was read)."""

    def __init__(self) -> None:
        super().__init__(_AUTHORITY)
        self.messages = 0

    def serve(self, data: bytes, client: str, transport: str) -> tuple[bytes | None, bool]:
        self.messages += 1
        return super().serve(data, client, transport)


_AUTHORITY = Authority([parse_zone(APEX, ZONE)])
# One server for the in-process fuzzers: serve() needs no socket, and its reply cache is
# part of what is under test.
_IN_PROCESS = DnsServer(_AUTHORITY)


# --- the reference: the zone as dnspython reads it ------------------------------------------

_REFERENCE = dns.zone.from_text(ZONE, origin=APEX, relativize=False, check_origin=False)


def expected(name: str, rdtype: str) -> tuple[int, list[str]]:
    """(rcode, sorted answer texts) that an authoritative server must give."""
    node = _REFERENCE.get_node(dns.name.from_text(name))
    if node is None:
        return dns.rcode.NXDOMAIN, []
    rdataset = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))
    if rdataset is None:
        return dns.rcode.NOERROR, []
    return dns.rcode.NOERROR, sorted(f"{name}. {rdtype} {rdata}" for rdata in rdataset)


def answer_of(response: dns.message.Message) -> tuple[int, list[str]]:
    return response.rcode(), sorted(
        f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rdata}"
        for rrset in response.answer
        for rdata in rrset
    )


async def answers_correctly(server: DnsServer, probe: tuple[str, str, str]) -> None:
    name, rdtype, transport = probe
    query = dns.message.make_query(name, rdtype)
    ask = dns.asyncquery.udp if transport == "udp" else dns.asyncquery.tcp
    response = await ask(query, HOST, timeout=5, port=server.address[1])
    assert response.flags & dns.flags.AA
    assert answer_of(response) == expected(name, rdtype), probe


# --- 1. the packet boundary, in process -----------------------------------------------------


def check_reply(packet: bytes, reply: bytes | None, transport: str) -> None:
    """A reply, when there is one, answers this packet's ID and fits its transport."""
    if reply is None:
        return
    assert len(reply) >= 12
    reply_id, flags = struct.unpack("!HH", reply[:4])
    assert reply_id == int.from_bytes(packet[:2], "big")
    assert flags & 0x8000, "a reply must have QR set"
    query_flags = int.from_bytes(packet[2:4], "big") if len(packet) >= 4 else 0
    assert query_flags & 0x8000 == 0, "a response was answered"
    if transport == "udp":
        assert len(reply) <= EDNS_PAYLOAD_CAP
        if b"\x00\x00\x29" not in packet:  # no OPT record could be in the query
            assert len(reply) <= UDP_PLAIN_LIMIT
    if (flags >> 11) & 0xF == dns.opcode.QUERY:
        # dnspython reads other opcodes by their own rules (an UPDATE's zone section must
        # be an SOA), which our echo of the client's question need not satisfy.
        dns.message.from_wire(reply)


@settings(max_examples=scaled(1500))
@given(
    family=st.sampled_from(FAMILIES),
    rng=st.randoms(use_true_random=False),
    transport=st.sampled_from(("udp", "tcp")),
)
def test_no_packet_escapes_the_server_boundary(
    family: object, rng: random.Random, transport: str
) -> None:
    assert callable(family)
    packet = family(rng)
    with no_errors_logged():
        reply, _ = _IN_PROCESS.serve(packet, HOST, transport)
    check_reply(packet, reply, transport)


@given(st.binary(max_size=1024))
def test_any_bytes_at_all(packet: bytes) -> None:
    with no_errors_logged():
        reply, _ = _IN_PROCESS.serve(packet, HOST, "udp")
    check_reply(packet, reply, "udp")


# --- 2. ten thousand packets over UDP -------------------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[CountingServer]:
    running = CountingServer()
    await running.start(HOST, 0)
    try:
        yield running
    finally:
        await running.close()


def drain(sock: socket.socket) -> list[bytes]:
    replies = []
    while True:
        try:
            replies.append(sock.recv(65535))
        except BlockingIOError:
            return replies


async def test_ten_thousand_hostile_packets_in_a_row(server: CountingServer) -> None:
    rng = random.Random(20260101)
    loop = asyncio.get_running_loop()
    sent = probes = replied = 0
    with no_errors_logged(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        while sent < PACKETS_IN_A_ROW:
            for _ in range(PROBE_EVERY):
                await loop.sock_sendto(sock, hostile_packet(rng), server.address)
                sent += 1
                await asyncio.sleep(0)  # let the server read it: a full buffer drops packets
            # The probe's answer proves the server read the hundred packets before it
            # (UDP on loopback keeps order) and still answers right.
            await answers_correctly(server, PROBES[probes % len(PROBES)])
            probes += 1
            replied += len(drain(sock))
    assert sent == PACKETS_IN_A_ROW
    assert server.messages == sent + probes  # every hostile packet reached the server
    assert 0 < replied < sent  # some earn a FORMERR, others (no header, responses) silence
    for probe in PROBES:
        await answers_correctly(server, probe)


# --- 3. TCP streams that lie about their lengths --------------------------------------------


def framed(message: bytes) -> bytes:
    return len(message).to_bytes(2, "big") + message


def bad_stream(rng: random.Random) -> tuple[bytes, int]:
    """A TCP stream and the number of good queries at its start that must be answered."""
    good = [framed(valid_query(rng)) for _ in range(rng.randrange(0, 3))]
    bad = rng.choice(
        (
            b"\x00\x00",  # zero length
            struct.pack("!H", rng.randrange(1, 12)) + rng.randbytes(11),  # shorter than a header
            struct.pack("!H", rng.randrange(200, 65536)) + valid_query(rng),  # promises more
            struct.pack("!H", 12) + valid_query(rng),  # promises less: the rest is misframed
            framed(hostile_packet(rng)),  # well framed, hostile inside
            rng.randbytes(rng.randrange(1, 300)),  # no framing at all
            b"\x00",  # half a length prefix
        )
    )
    return b"".join(good) + bad, len(good)


async def play_stream(server: DnsServer, stream: bytes, good: int, rng: random.Random) -> None:
    reader, writer = await asyncio.open_connection(*server.address)
    try:
        at = 0
        while at < len(stream):  # in random pieces, as a slow network would deliver it
            step = rng.randrange(1, 64)
            writer.write(stream[at : at + step])
            await writer.drain()
            at += step
        writer.write_eof()
        for _ in range(good):
            length = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 5), "big")
            reply = dns.message.from_wire(await reader.readexactly(length))
            assert reply.flags & dns.flags.QR
        await asyncio.wait_for(reader.read(), 5)  # the server ends the connection
    finally:
        writer.close()
        await writer.wait_closed()


async def test_tcp_streams_with_wrong_lengths_hurt_only_themselves(server: DnsServer) -> None:
    rng = random.Random(7766)
    with no_errors_logged():
        for index in range(TCP_STREAMS):
            stream, good = bad_stream(rng)
            await play_stream(server, stream, good, rng)
            if index % 25 == 0:
                await answers_correctly(server, PROBES[index % len(PROBES)])
    await asyncio.sleep(0)  # let the server see the last connection_lost
    assert not server._connections  # nothing held open for clients that are gone
    for probe in PROBES:
        await answers_correctly(server, probe)


async def test_many_hostile_tcp_clients_at_once(server: DnsServer) -> None:
    rng = random.Random(9)
    streams = [bad_stream(rng) for _ in range(50)]
    with no_errors_logged():
        await asyncio.gather(
            *(
                play_stream(server, s, good, random.Random(i))
                for i, (s, good) in enumerate(streams)
            ),
            *(answers_correctly(server, probe) for probe in PROBES),
        )
    for probe in PROBES:
        await answers_correctly(server, probe)


@settings(max_examples=scaled(100))
@given(rng=st.randoms(use_true_random=False))
def test_hypothesis_drives_tcp_streams(rng: random.Random) -> None:
    async def main() -> None:
        running = CountingServer()
        await running.start(HOST, 0)
        try:
            stream, good = bad_stream(rng)
            await play_stream(running, stream, good, rng)
            await answers_correctly(running, PROBES[rng.randrange(len(PROBES))])
        finally:
            await running.close()

    with no_errors_logged():
        asyncio.run(main())


def test_a_name_longer_than_a_name_may_be_gets_formerr() -> None:
    # dnslib reads a 320-byte name but cannot write it back: the reply used to fail inside
    # the server (SERVFAIL, and an error logged); now it is the client's FORMERR.
    name = b"".join(b"\x3f" + b"y" * 63 for _ in range(5)) + b"\x00"
    packet = struct.pack("!HHHHHH", 0xABCD, 0x0100, 1, 0, 0, 0) + name + b"\x00\x01\x00\x01"
    with no_errors_logged():
        reply, sensible = _IN_PROCESS.serve(packet, HOST, "udp")
    assert reply is not None and not sensible
    assert dns.message.from_wire(reply).rcode() == dns.rcode.FORMERR
