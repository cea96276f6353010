"""The DNS server on real loopback sockets, checked by an independent client (dnspython)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from sandbox import DnsServed, Event, SandboxError
from sandbox.dns.server import Authority, DnsServer
from sandbox.dns.zone import parse_zone
from sandbox.scenario.model import DnsBehaviour

BIG_COUNT = 40

ZONE = """\
$TTL 3600
@      IN MX 10 mx1
@      IN MX 20 mx2
mx1    IN A    192.0.2.10
mx1    IN AAAA 2001:db8::10
mx2    IN A    192.0.2.11
www    IN CNAME mx1
a.deep IN A    192.0.2.99
""" + "".join(f"big    IN A 192.0.2.{i}\n" for i in range(1, BIG_COUNT + 1))

FAULTS = {
    "broken.example.test": DnsBehaviour("servfail"),
    "slow.example.test": DnsBehaviour("timeout"),
    "mx1.example.test": DnsBehaviour("answer"),
    "gone.example.test": DnsBehaviour("nxdomain"),
    "mx2.example.test": DnsBehaviour("nxdomain"),
}

HOST = "127.0.0.1"


def behaviour(name: str) -> DnsBehaviour:
    return FAULTS.get(name, DnsBehaviour())


@pytest.fixture
def events() -> list[Event]:
    return []


@pytest.fixture
async def server(events: list[Event]) -> AsyncIterator[DnsServer]:
    authority = Authority([parse_zone("example.test", ZONE)])
    server = DnsServer(authority, behaviour=behaviour, clock=lambda: 12.5, emit=events.append)
    await server.start(HOST, 0)
    try:
        yield server
    finally:
        await server.close()


async def udp(server: DnsServer, name: str, rdtype: str, **edns: int) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **edns)  # type: ignore[arg-type]
    return await dns.asyncquery.udp(query, HOST, timeout=5, port=server.address[1])


async def tcp(server: DnsServer, name: str, rdtype: str) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    return await dns.asyncquery.tcp(query, HOST, timeout=5, port=server.address[1])


def texts(response: dns.message.Message, section: str = "answer") -> list[str]:
    return sorted(
        f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rdata}"
        for rrset in getattr(response, section)
        for rdata in rrset
    )


# --- answers -----------------------------------------------------------------------------------


async def test_mx_answer_matches_the_zone_with_addresses_in_additional(server: DnsServer) -> None:
    response = await udp(server, "example.test", "MX")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert not response.flags & dns.flags.RA
    assert texts(response) == [
        "example.test. MX 10 mx1.example.test.",
        "example.test. MX 20 mx2.example.test.",
    ]
    assert texts(response, "additional") == [
        "mx1.example.test. A 192.0.2.10",
        "mx1.example.test. AAAA 2001:db8::10",
        "mx2.example.test. A 192.0.2.11",
    ]
    assert response.answer[0].ttl == 3600


async def test_a_and_cname_over_udp_and_tcp(server: DnsServer) -> None:
    for ask in (udp, tcp):
        response = await ask(server, "www.example.test", "A")
        assert texts(response) == [
            "mx1.example.test. A 192.0.2.10",
            "www.example.test. CNAME mx1.example.test.",
        ]


async def test_nodata_and_nxdomain_are_told_apart(server: DnsServer) -> None:
    nodata = await udp(server, "mx1.example.test", "MX")
    assert nodata.rcode() == dns.rcode.NOERROR
    assert nodata.answer == []
    assert [rrset.rdtype for rrset in nodata.authority] == [dns.rdatatype.SOA]

    empty_non_terminal = await udp(server, "deep.example.test", "A")
    assert empty_non_terminal.rcode() == dns.rcode.NOERROR

    nxdomain = await udp(server, "nothing.example.test", "A")
    assert nxdomain.rcode() == dns.rcode.NXDOMAIN
    assert [rrset.rdtype for rrset in nxdomain.authority] == [dns.rdatatype.SOA]

    outside = await udp(server, "mail.example.org", "MX")
    assert outside.rcode() == dns.rcode.NXDOMAIN
    assert not outside.flags & dns.flags.AA
    assert outside.authority == []


async def test_udp_and_tcp_share_one_loopback_port(server: DnsServer) -> None:
    host, port = server.address
    assert host == HOST
    assert port > 0
    assert (await tcp(server, "mx2.example.test", "AAAA")).rcode() == dns.rcode.NXDOMAIN


# --- size limits -------------------------------------------------------------------------------


async def test_large_udp_answer_without_edns_is_truncated(
    server: DnsServer, events: list[Event]
) -> None:
    response = await udp(server, "big.example.test", "A")
    assert response.flags & dns.flags.TC
    assert response.answer == []
    assert str(response.question[0].name) == "big.example.test."
    served = events[-1]
    assert isinstance(served, DnsServed)
    assert (served.truncated, served.answers) == (True, 0)


async def test_tcp_gives_the_full_large_answer(server: DnsServer) -> None:
    response = await tcp(server, "big.example.test", "A")
    assert not response.flags & dns.flags.TC
    addresses = sorted(str(rdata) for rdata in response.answer[0])
    assert addresses == sorted(f"192.0.2.{i}" for i in range(1, BIG_COUNT + 1))


async def test_edns_payload_size_is_honoured(server: DnsServer) -> None:
    roomy = await udp(server, "big.example.test", "A", use_edns=0, payload=1232)
    assert not roomy.flags & dns.flags.TC
    assert len(roomy.answer[0]) == BIG_COUNT
    assert roomy.edns == 0  # EDNS answered with EDNS

    tight = await udp(server, "big.example.test", "A", use_edns=0, payload=600)
    assert tight.flags & dns.flags.TC
    assert tight.answer == []


# --- faults ------------------------------------------------------------------------------------


async def test_servfail_behaviour(server: DnsServer) -> None:
    response = await udp(server, "broken.example.test", "MX")
    assert response.rcode() == dns.rcode.SERVFAIL
    assert response.answer == []


async def test_nxdomain_behaviour_hides_a_name_that_exists(server: DnsServer) -> None:
    response = await udp(server, "mx2.example.test", "A")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.flags & dns.flags.AA
    assert [rrset.rdtype for rrset in response.authority] == [dns.rdatatype.SOA]


async def test_timeout_behaviour_sends_nothing(server: DnsServer, events: list[Event]) -> None:
    # The one test that has to wait: silence can only be observed by waiting for it.
    with pytest.raises(dns.exception.Timeout):
        query = dns.message.make_query("slow.example.test", "A")
        await dns.asyncquery.udp(query, HOST, timeout=0.2, port=server.address[1])
    assert events[-1] == DnsServed(
        t=12.5,
        client=HOST,
        transport="udp",
        name="slow.example.test",
        rdtype="A",
        rcode="dropped",
    )
    # The server is still there for everyone else.
    assert (await udp(server, "mx1.example.test", "A")).rcode() == dns.rcode.NOERROR


async def test_events_report_each_query(server: DnsServer, events: list[Event]) -> None:
    await udp(server, "Example.TEST", "MX")
    await tcp(server, "nothing.example.test", "A")
    assert events == [
        DnsServed(
            t=12.5,
            client=HOST,
            transport="udp",
            name="example.test",
            rdtype="MX",
            rcode="NOERROR",
            answers=2,
        ),
        DnsServed(
            t=12.5,
            client=HOST,
            transport="tcp",
            name="nothing.example.test",
            rdtype="A",
            rcode="NXDOMAIN",
        ),
    ]


async def test_authority_callable_is_asked_per_query() -> None:
    zones = {"text": "mx1 IN A 192.0.2.10\n"}

    def current() -> Authority:
        return Authority([parse_zone("example.test", zones["text"])])

    server = DnsServer(current)
    await server.start(HOST)
    try:
        first = await udp(server, "mx1.example.test", "A")
        zones["text"] = "mx1 IN A 192.0.2.77\n"
        second = await udp(server, "mx1.example.test", "A")
    finally:
        await server.close()
    assert texts(first) == ["mx1.example.test. A 192.0.2.10"]
    assert texts(second) == ["mx1.example.test. A 192.0.2.77"]


# --- malformed input ---------------------------------------------------------------------------


class RawUdp:
    """A bare UDP socket, for sending what no DNS library would."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.loop = asyncio.get_running_loop()

    async def send(self, data: bytes) -> None:
        await self.loop.sock_sendto(self.sock, data, self.address)

    async def receive(self) -> bytes:
        return await asyncio.wait_for(self.loop.sock_recv(self.sock, 65535), timeout=5)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
async def raw(server: DnsServer) -> AsyncIterator[RawUdp]:
    client = RawUdp(server.address)
    try:
        yield client
    finally:
        client.close()


def valid_query(name: str = "mx1.example.test", query_id: int = 7) -> bytes:
    return dns.message.make_query(name, "A", id=query_id).to_wire()


async def test_unreadable_packet_with_a_header_gets_formerr(raw: RawUdp) -> None:
    header = (0xBEEF).to_bytes(2, "big") + b"\x01\x00" + b"\x00\x01" + b"\x00" * 6
    await raw.send(header + b"\xff\xfe garbage, not a question")
    reply = dns.message.from_wire(await raw.receive(), question_only=True)
    assert reply.id == 0xBEEF
    assert reply.rcode() == dns.rcode.FORMERR
    assert reply.flags & dns.flags.QR


async def test_packets_shorter_than_a_header_are_dropped_silently(raw: RawUdp) -> None:
    for junk in (b"", b"\x00", b"\x12\x34\x01\x00\x00"):
        await raw.send(junk)
    await raw.send(valid_query(query_id=99))
    # UDP on loopback keeps order: the first datagram back answers the valid query, so the
    # junk got no reply at all.
    reply = dns.message.from_wire(await raw.receive())
    assert reply.id == 99
    assert texts(reply) == ["mx1.example.test. A 192.0.2.10"]


@pytest.mark.parametrize("seed", range(5))
async def test_random_bytes_never_stop_the_server(raw: RawUdp, seed: int) -> None:
    import random

    rng = random.Random(seed)
    for _ in range(50):
        await raw.send(rng.randbytes(rng.randrange(0, 200)))
    await raw.send(valid_query(query_id=4321))
    while True:  # skip the FORMERR replies some of the junk earned
        reply = dns.message.from_wire(await raw.receive(), question_only=True)
        if reply.id == 4321 and reply.rcode() == dns.rcode.NOERROR:
            break


async def test_responses_are_not_answered(raw: RawUdp) -> None:
    response = dns.message.make_response(dns.message.make_query("mx1.example.test", "A"))
    await raw.send(response.to_wire())
    await raw.send(valid_query(query_id=5))
    assert dns.message.from_wire(await raw.receive()).id == 5


async def tcp_connect(server: DnsServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*server.address)


async def tcp_close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    await writer.wait_closed()


def framed(message: bytes) -> bytes:
    return len(message).to_bytes(2, "big") + message


async def read_framed(reader: asyncio.StreamReader) -> dns.message.Message:
    length = int.from_bytes(await reader.readexactly(2), "big")
    return dns.message.from_wire(await reader.readexactly(length))


async def test_several_queries_on_one_tcp_connection(server: DnsServer) -> None:
    reader, writer = await tcp_connect(server)
    try:
        # Both queries in one write, and a third split across writes.
        writer.write(framed(valid_query(query_id=1)) + framed(valid_query("www.example.test", 2)))
        third = framed(valid_query("mx2.example.test", 3))
        writer.write(third[:5])
        await writer.drain()
        writer.write(third[5:])
        replies = [await read_framed(reader) for _ in range(3)]
    finally:
        await tcp_close(writer)
    assert [r.id for r in replies] == [1, 2, 3]
    assert [r.rcode() for r in replies] == [
        dns.rcode.NOERROR,
        dns.rcode.NOERROR,
        dns.rcode.NXDOMAIN,
    ]


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x05hello",  # a length no DNS message can have
        b"\x00\x00",  # zero length
        framed(b"\x00\x07\x01\x00\x00\x01" + b"\x00" * 6 + b"\xc0\xff"),  # framed garbage
    ],
)
async def test_bad_tcp_input_closes_only_that_connection(server: DnsServer, garbage: bytes) -> None:
    reader, writer = await tcp_connect(server)
    try:
        writer.write(garbage)
        rest = await asyncio.wait_for(reader.read(), timeout=5)  # until the server closes
    finally:
        await tcp_close(writer)
    if rest:  # framed garbage with a readable header earns a FORMERR before the close
        assert dns.message.from_wire(rest[2:], question_only=True).rcode() == dns.rcode.FORMERR
    assert (await tcp(server, "mx1.example.test", "A")).rcode() == dns.rcode.NOERROR
    assert (await udp(server, "mx1.example.test", "A")).rcode() == dns.rcode.NOERROR


async def test_short_tcp_read_then_hangup_is_harmless(server: DnsServer) -> None:
    reader, writer = await tcp_connect(server)
    writer.write(b"\x01\x00" + b"\x00" * 20)  # promises 256 bytes, sends 20
    await writer.drain()
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), timeout=5) == b""
    await tcp_close(writer)
    assert (await tcp(server, "mx1.example.test", "A")).rcode() == dns.rcode.NOERROR


async def test_idle_tcp_connection_is_closed() -> None:
    server = DnsServer(Authority([parse_zone("example.test", ZONE)]), idle_timeout=0.05)
    await server.start(HOST)
    try:
        reader, writer = await tcp_connect(server)
        writer.write(b"\x00")  # half a length prefix, then nothing
        assert await asyncio.wait_for(reader.read(), timeout=5) == b""
        await tcp_close(writer)
    finally:
        await server.close()


# --- lifecycle -----------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "::", "localhost", "example.test"])
async def test_refuses_to_bind_outside_loopback(host: str) -> None:
    server = DnsServer(Authority([]))
    with pytest.raises(SandboxError, match="loopback"):
        await server.start(host, 0)


async def test_address_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="start"):
        _ = DnsServer(Authority([])).address


async def test_other_loopback_addresses_and_ipv6() -> None:
    hosts = ["127.0.0.53"]
    if socket.has_ipv6:
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
                probe.bind(("::1", 0))
            hosts.append("::1")
        except OSError:
            pass
    for host in hosts:
        server = DnsServer(Authority([parse_zone("example.test", ZONE)]))
        await server.start(host)
        try:
            query = dns.message.make_query("mx1.example.test", "A")
            for ask in (dns.asyncquery.udp, dns.asyncquery.tcp):
                response = await ask(query, host, timeout=5, port=server.address[1])
                assert texts(response) == ["mx1.example.test. A 192.0.2.10"], host
        finally:
            await server.close()


async def test_close_releases_the_port_and_open_connections() -> None:
    authority = Authority([parse_zone("example.test", ZONE)])
    server = DnsServer(authority)
    await server.start(HOST)
    port = server.address[1]
    reader, writer = await tcp_connect(server)
    tasks_before = asyncio.all_tasks()
    await server.close()
    assert await asyncio.wait_for(reader.read(), timeout=5) == b""  # the server hung up
    await tcp_close(writer)
    assert asyncio.all_tasks() <= tasks_before

    again = DnsServer(authority)
    await again.start(HOST, port)  # both sockets were really released
    try:
        assert (await udp(again, "mx1.example.test", "A")).rcode() == dns.rcode.NOERROR
    finally:
        await again.close()


async def test_start_on_a_taken_tcp_port_fails_clearly(server: DnsServer) -> None:
    # The fixture's server holds UDP and TCP on its port: asking for it again must fail
    # with our error, not an OSError.
    other = DnsServer(Authority([]))
    with pytest.raises(SandboxError, match="cannot listen"):
        await other.start(HOST, server.address[1])


async def test_port_zero_retries_when_the_tcp_twin_is_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    real_create_server: Callable[..., object] = loop.create_server
    calls: list[int] = []

    async def flaky_create_server(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise OSError(98, "Address already in use")
        return await real_create_server(*args, **kwargs)  # type: ignore[misc]

    monkeypatch.setattr(loop, "create_server", flaky_create_server)
    server = DnsServer(Authority([parse_zone("example.test", ZONE)]))
    await server.start(HOST, 0)
    try:
        # Our refusal, then success; under load a real collision may add another attempt.
        assert len(calls) >= 2
        assert (await tcp(server, "mx1.example.test", "A")).rcode() == dns.rcode.NOERROR
    finally:
        await server.close()


async def test_glue_too_large_for_one_message_is_dropped_not_the_answer() -> None:
    """800 MX hosts with 5 addresses each: the answer fits a TCP message, the glue does not.
    The glue goes (RFC 2181 §9: without TC), the 800 MX records stay."""
    lines = ["$TTL 300"] + [f"@ IN MX 10 mx{i}" for i in range(800)]
    lines += [f"mx{i} IN A 10.{i // 250}.{i % 250}.{j}" for i in range(800) for j in range(1, 6)]
    zone = parse_zone("big.test", "\n".join(lines))
    big = DnsServer(Authority([zone]))
    await big.start("127.0.0.1", 0)
    try:
        response = await tcp(big, "big.test", "MX")
    finally:
        await big.close()
    assert len(response.answer[0]) == 800
    assert response.additional == [] and not response.flags & dns.flags.TC
