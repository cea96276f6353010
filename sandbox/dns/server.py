"""The embedded authoritative DNS server: the scenario's zones, served on real loopback sockets.

Theory of operation
-------------------
The server is two layers, so that the DNS rules can be tested without a socket:

``Authority`` (pure)
    Takes a parsed query (``dnslib.DNSRecord``) and returns the reply, following the rules of
    an authoritative server for the scenario's zones (RFC 1034 §4.3.2, RFC 2308):

    ========================================  =================================================
    the query                                 the reply
    ========================================  =================================================
    opcode other than QUERY                   NOTIMP
    no question, or more than one             FORMERR
    class other than IN (or ANY)              REFUSED
    name outside every zone                   NXDOMAIN, AA=0, empty authority: the sandbox's
                                              DNS is the sender's whole world
    records of the asked type exist           NOERROR, AA=1, the records; for MX, the hosts'
                                              A/AAAA records in ADDITIONAL
    a CNAME (asked type not CNAME or ANY)     the CNAME, then the same question for its target,
                                              hop by hop (at most ``MAX_CNAME_HOPS``, never the
                                              same name twice); a target outside our zones
                                              ends the chain with NOERROR
    the name exists, not the asked type       NODATA: NOERROR, empty answer, the SOA in
                                              AUTHORITY. A name "exists" when it owns records
                                              or a name below it does (an empty non-terminal,
                                              RFC 8020); implicit MX (RFC 5321 §5.1) depends on
                                              NODATA not being NXDOMAIN
    the name does not exist in its zone       NXDOMAIN, the SOA in AUTHORITY
    ========================================  =================================================

    The SOA in AUTHORITY carries TTL min(SOA TTL, SOA minimum): the negative-caching TTL of
    RFC 2308 §5.

    Zones listed as ``signed`` (a scenario's ``dnssec:``) are answered as a validating
    resolver answers a secure name: the AD bit is set on a reply (records, or a denial) when
    every zone it came from is signed and the query asked with DO (in EDNS) or AD, which
    shows that the client understands the bit (RFC 6840 §5.7, §5.8). There are no RRSIGs:
    the sandbox plays the validating resolver a DANE client trusts (glibc's ``options
    trust-ad``), not a signer.

``DnsServer`` (I/O)
    Binds UDP and TCP on one loopback port of the caller's event loop (never a thread, so that
    a virtual-time loop sees all of its work), turns bytes into queries and replies into
    bytes, and applies the scenario's DNS faults (``servfail``, ``nxdomain``, ``timeout``:
    no reply at all) per query name. It owns everything about the wire: the 512-byte limit
    of plain UDP and the EDNS payload size (RFC 6891), the TC bit, TCP's two-byte length
    prefix (RFC 1035 §4.2.2, RFC 7766), and malformed input. Nothing a client sends can stop
    it: a packet that does not parse gets FORMERR when its header can be read and silence
    otherwise, and a TCP stream that stops making sense loses its connection, not the server.
    Each query is reported as a ``DnsServed`` event.

    Nothing a client sends can make it grow either. Over TCP a client may pipeline queries
    (RFC 7766 §6.2.1.1) and never read the answers: once the answers waiting for it pass the
    transport's high-water mark, the connection stops reading (the queries wait in the
    kernel's buffers, then in the client's) until the client catches up. A connection idle
    for ``idle_timeout`` is closed, and aborted if its answers are still unread. At most
    ``max_tcp_connections`` are open at once; a connection beyond them is closed at once
    (RFC 7766 §6.2.2 lets a server close connections to free resources).

    A sender asks the same few questions over and over, and dnslib's codec is pure Python, so
    each reply is packed once: a query whose bytes after the ID match an earlier one, while
    the authority (the zones in force) and the name's DNS behaviour are the same, gets the
    packed reply with its own ID (the technique of NSD's precompiled answers). The reply is
    byte for byte what the slow path would build, and is reported the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import dnslib

from sandbox.core.addresses import ensure_loopback
from sandbox.dns.zone import Zone, find_zone
from sandbox.errors import BindError, bind_error
from sandbox.events import DnsServed, Event, Transport
from sandbox.scenario.model import DnsBehaviour

__all__ = [
    "EDNS_PAYLOAD_CAP",
    "MAX_CNAME_HOPS",
    "MAX_TCP_CONNECTIONS",
    "TCP_BIND_ATTEMPTS",
    "TCP_IDLE_TIMEOUT",
    "UDP_PLAIN_LIMIT",
    "Authority",
    "DnsServer",
    "bind_udp_and_tcp",
]

logger = logging.getLogger(__name__)

MAX_CNAME_HOPS = 8
UDP_PLAIN_LIMIT = 512  # RFC 1035 §4.2.1: UDP without EDNS
EDNS_PAYLOAD_CAP = 4096  # the largest UDP reply we send, whatever the client advertises
TCP_IDLE_TIMEOUT = 30.0  # loop seconds a TCP connection may sit without a byte
# TCP connections open at once (BIND's tcp-clients default is 150).
MAX_TCP_CONNECTIONS = 150
TCP_BIND_ATTEMPTS = 5  # port 0: fresh (TCP, UDP) port pairs to try when the UDP twin is taken
_HEADER_SIZE = 12
_MAX_NAME_TEXT = 253  # RFC 1035 §2.3.4: 255 octets on the wire, 253 characters as text
_MAX_TCP_MESSAGE = 65535
_CLASS_ANY = 255
_EDNS_DO = 0x8000  # the DO bit, in the OPT record's TTL field (RFC 6891 §6.1.3, RFC 3225)
# Packed replies kept for reuse. Bounded, so that a client sending endless distinct packets
# (a fuzzer) cannot grow it; only replies that fit a UDP datagram are kept.
_PACKED_REPLIES = 1024


# --- the authority (pure) ----------------------------------------------------------------------


class Authority:
    """Answers queries for a fixed set of zones. No I/O: give it a query, get the reply."""

    def __init__(self, zones: Sequence[Zone], *, signed: Iterable[str] = ()) -> None:
        self._zones = tuple(zones)
        self._signed = frozenset(signed)

    @property
    def zones(self) -> tuple[Zone, ...]:
        return self._zones

    @property
    def signed(self) -> frozenset[str]:
        """The apexes of the zones answered as DNSSEC-validated."""
        return self._signed

    def resolve(self, request: dnslib.DNSRecord) -> dnslib.DNSRecord:
        """The reply to ``request``, following the table in the module docstring."""
        reply = _reply_to(request)
        problem = _request_problem(request)
        if problem is not None:
            reply.header.rcode = problem
            return reply
        question = request.questions[0]
        name, qtype = _name_of(question.qname), _type_name(question.qtype)
        zone = find_zone(self._zones, name)
        if zone is None:
            reply.header.rcode = dnslib.RCODE.NXDOMAIN
            return reply
        reply.header.aa = 1
        visited = self._answer(reply, zone, name, qtype)
        if visited and self._secure(visited) and _wants_ad(request):
            reply.header.ad = 1
        return reply

    def _secure(self, zones: list[Zone]) -> bool:
        return bool(self._signed) and all(zone.apex in self._signed for zone in zones)

    def nxdomain(self, request: dnslib.DNSRecord) -> dnslib.DNSRecord:
        """An NXDOMAIN for the question, whatever the zones say: the ``nxdomain`` DNS fault.

        Inside a zone it looks like the real thing (AA=1, the SOA), so that a sender cannot
        tell it from a name that is missing.
        """
        reply = _reply_to(request)
        reply.header.rcode = dnslib.RCODE.NXDOMAIN
        if request.questions:
            zone = find_zone(self._zones, _name_of(request.questions[0].qname))
            if zone is not None:
                reply.header.aa = 1
                reply.add_auth(_negative_soa(zone))
        return reply

    def _answer(
        self, reply: dnslib.DNSRecord, zone: Zone, name: str, qtype: str
    ) -> list[Zone] | None:
        """Fill the reply for a name inside ``zone``, following CNAMEs inside our zones;
        return the zones the answer came from (None: part of it came from outside)."""
        seen = {name}
        visited = [zone]
        for _ in range(MAX_CNAME_HOPS + 1):
            records = _records(zone, name, qtype)
            if records:
                reply.add_answer(*records)
                self._add_mx_addresses(reply, records)
                return visited
            cnames = zone.lookup(name, "CNAME") if qtype not in ("CNAME", "ANY") else ()
            if not cnames:
                # The rcode follows the last name of the chain, in the zone that holds it.
                if not zone.exists(name):
                    reply.header.rcode = dnslib.RCODE.NXDOMAIN
                reply.add_auth(_negative_soa(zone))
                return visited
            reply.add_answer(cnames[0].rr)
            target = cnames[0].target or ""
            next_zone = find_zone(self._zones, target)
            if next_zone is None:
                return None  # the chain leaves our world: nothing vouches for the rest
            if target in seen:
                return visited  # the chain loops: the CNAMEs are the answer
            seen.add(target)
            name, zone = target, next_zone
            visited.append(zone)
        return visited

    def _add_mx_addresses(self, reply: dnslib.DNSRecord, records: list[Any]) -> None:
        """Put the MX hosts' addresses in ADDITIONAL: it spares the sender a query per host."""
        added: set[tuple[str, str]] = set()
        for rr in records:
            if rr.rtype != dnslib.QTYPE.MX:
                continue
            host = _name_of(rr.rdata.label)
            zone = find_zone(self._zones, host) if host else None
            if zone is None:
                continue
            for record in (*zone.lookup(host, "A"), *zone.lookup(host, "AAAA")):
                key = (record.name, record.rdata)
                if key not in added:
                    added.add(key)
                    reply.add_ar(record.rr)


def _reply_to(request: dnslib.DNSRecord) -> dnslib.DNSRecord:
    """The reply skeleton: id, opcode, RD and the question copied; AA=0, RA=0 (not a resolver)."""
    header = dnslib.DNSHeader(id=request.header.id, bitmap=0, qr=1)
    header.opcode = request.header.opcode
    header.rd = request.header.rd
    return dnslib.DNSRecord(header, questions=list(request.questions))


def _wants_ad(request: dnslib.DNSRecord) -> bool:
    """The query shows it understands the AD bit: DO in its EDNS flags, or AD set (RFC 6840
    §5.7, §5.8)."""
    if request.header.ad:
        return True
    opt = _opt_of(request)
    return opt is not None and bool(opt.ttl & _EDNS_DO)


def _request_problem(request: dnslib.DNSRecord) -> int | None:
    """The rcode for a query we will not answer from the zones, or None."""
    if request.header.opcode != dnslib.OPCODE.QUERY:
        return int(dnslib.RCODE.NOTIMP)
    if len(request.questions) != 1:
        return int(dnslib.RCODE.FORMERR)
    if request.questions[0].qclass not in (dnslib.CLASS.IN, _CLASS_ANY):
        return int(dnslib.RCODE.REFUSED)
    return None


def _records(zone: Zone, name: str, qtype: str) -> list[Any]:
    """The RRs at ``name`` of type ``qtype``, the SOA included even when synthesised."""
    records = [r.rr for r in zone.lookup(name, qtype)]
    wants_soa = qtype in ("SOA", "ANY") and name == zone.apex
    if wants_soa and not zone.lookup(name, "SOA"):
        records.insert(0, zone.soa)
    return records


def _negative_soa(zone: Zone) -> Any:
    """The zone's SOA for AUTHORITY, with the negative-caching TTL of RFC 2308 §5."""
    soa = zone.soa
    ttl = min(soa.ttl, soa.rdata.times[4])
    return dnslib.RR(soa.rname, dnslib.QTYPE.SOA, soa.rclass, ttl, soa.rdata)


def _name_of(label: Any) -> str:
    """A dnslib label in the sandbox's spelling: lower case, no final dot."""
    return str(label).lower().rstrip(".")


def _type_name(qtype: int) -> str:
    name = dnslib.QTYPE.get(qtype)
    return name if isinstance(name, str) else f"TYPE{qtype}"


def _rcode_name(rcode: int) -> str:
    name = dnslib.RCODE.get(rcode)
    return name if isinstance(name, str) else f"RCODE{rcode}"


# --- the server (I/O) ----------------------------------------------------------------------------


def _time_zero() -> float:
    return 0.0


async def bind_udp_and_tcp(
    what: str,
    host: str,
    port: int,
    tcp_protocol: Callable[[], asyncio.Protocol],
    udp_protocol: Callable[[], asyncio.DatagramProtocol],
) -> tuple[asyncio.Server, asyncio.DatagramTransport, int]:
    """Listen for DNS on UDP and TCP at one loopback port (``port``, or a free one for 0): the
    TCP server, the UDP transport and the port. ``what`` names the server in a BindError."""
    loop = asyncio.get_running_loop()

    async def bind_tcp(at: int) -> asyncio.Server:
        try:
            return await loop.create_server(tcp_protocol, host, at)
        except OSError as exc:
            raise bind_error(what, f"TCP {host}:{at}", exc, "choose another port") from exc

    async def bind_udp(at: int) -> asyncio.DatagramTransport:
        try:
            transport, _ = await loop.create_datagram_endpoint(udp_protocol, local_addr=(host, at))
        except OSError as exc:
            raise bind_error(what, f"UDP {host}:{at}", exc, "choose another port") from exc
        return transport

    # TCP first. With port 0 the kernel then picks a port that a TCP listener can have: a
    # busy machine holds thousands of TCP ports in TIME_WAIT that a new listener may not take
    # (a quarter of them or more under the test suite), but few UDP ports. UDP then gets the
    # same number, which is rarely taken; when it is, a fresh pair is tried.
    attempts_left = TCP_BIND_ATTEMPTS if port == 0 else 1
    while True:
        attempts_left -= 1
        tcp = None
        try:
            tcp = await bind_tcp(port)
            bound = int(tcp.sockets[0].getsockname()[1])
            return tcp, await bind_udp(bound), bound
        except BindError:
            if tcp is not None:
                tcp.close()
                await tcp.wait_closed()
            if attempts_left == 0:
                raise


class DnsServer:
    """An ``Authority`` on one loopback port, UDP and TCP, on the running event loop."""

    def __init__(
        self,
        authority: Authority | Callable[[], Authority],
        *,
        behaviour: Callable[[str], DnsBehaviour] | None = None,
        clock: Callable[[], float] = _time_zero,
        emit: Callable[[Event], None] | None = None,
        idle_timeout: float = TCP_IDLE_TIMEOUT,
        max_tcp_connections: int = MAX_TCP_CONNECTIONS,
    ) -> None:
        self._authority = authority
        self._behaviour = behaviour
        self._clock = clock
        self._emit = emit
        self.idle_timeout = idle_timeout
        self.max_tcp_connections = max_tcp_connections
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: set[_TcpConnection] = set()
        self._address: tuple[str, int] | None = None
        self._packed: dict[tuple[str, bytes], _PackedReply] = {}

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) that UDP and TCP both listen on. Only after ``start()``."""
        if self._address is None:
            raise RuntimeError("the DNS server has not been started: await start() first")
        return self._address

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Bind UDP and TCP on the same loopback port; when this returns, queries are served."""
        ensure_loopback(host)
        if self._udp is not None:
            raise RuntimeError("the DNS server is already started")
        tcp, udp, bound = await bind_udp_and_tcp(
            "the DNS server", host, port, self._tcp_connection, lambda: _UdpProtocol(self)
        )
        self._tcp, self._udp, self._address = tcp, udp, (host, bound)

    async def close(self) -> None:
        """Stop serving: close both sockets and every open TCP connection."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        tcp, self._tcp = self._tcp, None
        if tcp is not None:
            tcp.close()
        for connection in list(self._connections):
            connection.close()
        if tcp is not None:
            await tcp.wait_closed()
        # The transports report connection_lost on the next loop turn; let them, so that
        # nothing of ours is left pending when this returns.
        await asyncio.sleep(0)

    def _tcp_connection(self) -> asyncio.Protocol:
        if len(self._connections) >= self.max_tcp_connections:
            return _Refused()
        return _TcpConnection(self)

    # -- one query, from bytes to bytes --

    def serve(self, data: bytes, client: str, transport: Transport) -> tuple[bytes | None, bool]:
        """The reply to one message (None: no reply), and whether the message made sense.

        This is the boundary where any bytes at all may arrive, so nothing may escape it.
        """
        try:
            return self._serve(data, client, transport)
        except Exception:
            logger.exception("DNS server: unexpected error answering %s; SERVFAIL", client)
            return self._bare_reply(data, client, transport, dnslib.RCODE.SERVFAIL), False

    def _serve(self, data: bytes, client: str, transport: Transport) -> tuple[bytes | None, bool]:
        key = (transport, data[2:])
        known = self._packed.get(key)
        if known is not None:
            reused = self._reuse(known, data, client, transport)
            if reused is not None:
                return reused, True
        try:
            request = dnslib.DNSRecord.parse(data)
        except Exception:  # dnslib raises DNSError, but also whatever odd bytes provoke
            return self._bare_reply(data, client, transport, dnslib.RCODE.FORMERR), False
        if request.header.qr:
            return None, False  # a response, not a query: answering it could start a loop
        if any(len(q.qname) > _MAX_NAME_TEXT for q in request.questions):
            # dnslib reads a name past RFC 1035's 255 octets, but cannot echo it back.
            return self._bare_reply(data, client, transport, dnslib.RCODE.FORMERR), False
        name, rdtype = _question_of(request)
        kind = self._kind(name, rdtype)
        if kind == "timeout":
            self._report(client, transport, name, rdtype, "dropped", None)
            return None, True
        authority = self._current_authority()
        reply = self._reply(authority, request, kind)
        packed, sent = _fit(request, reply, transport)
        rcode = _rcode_name(sent.header.rcode)
        answers, truncated = len(sent.rr), bool(sent.header.tc)
        self._report_served(client, transport, name, rdtype, rcode, answers, truncated)
        if len(packed) <= EDNS_PAYLOAD_CAP:
            self._remember(
                key, _PackedReply(authority, kind, name, rdtype, packed, rcode, answers, truncated)
            )
        return packed, True

    def _kind(self, name: str, rdtype: str) -> str:
        return self._behaviour(name).kind if self._behaviour and rdtype else "answer"

    def _reuse(
        self, known: _PackedReply, data: bytes, client: str, transport: Transport
    ) -> bytes | None:
        """The packed reply with this query's ID, or None when the zones or the name's DNS
        behaviour have changed since it was packed."""
        if self._kind(known.name, known.rdtype) != known.kind:
            return None
        if self._current_authority() is not known.authority:
            return None
        self._report_served(
            client, transport, known.name, known.rdtype, known.rcode, known.answers, known.truncated
        )
        return data[:2] + known.reply[2:]

    def _remember(self, key: tuple[str, bytes], reply: _PackedReply) -> None:
        if len(self._packed) >= _PACKED_REPLIES:
            del self._packed[next(iter(self._packed))]  # the oldest: insertion order
        self._packed[key] = reply

    def _reply(
        self, authority: Authority, request: dnslib.DNSRecord, kind: str
    ) -> dnslib.DNSRecord:
        if kind == "servfail":
            reply = _reply_to(request)
            reply.header.rcode = dnslib.RCODE.SERVFAIL
            return reply
        if kind == "nxdomain":
            return authority.nxdomain(request)
        return authority.resolve(request)

    def _current_authority(self) -> Authority:
        # A callable lets the zones change over (virtual) time; it is asked once per query.
        if isinstance(self._authority, Authority):
            return self._authority
        return self._authority()

    def _bare_reply(
        self, data: bytes, client: str, transport: Transport, rcode: int
    ) -> bytes | None:
        """A header-only reply to a message we cannot read; None if not even the header."""
        if len(data) < _HEADER_SIZE:
            return None
        request_header = dnslib.DNSHeader.parse(dnslib.DNSBuffer(data[:_HEADER_SIZE]))
        if request_header.qr:
            return None
        header = dnslib.DNSHeader(id=request_header.id, bitmap=0, qr=1, rcode=rcode)
        header.opcode = request_header.opcode
        reply = dnslib.DNSRecord(header)
        self._report(client, transport, "", "", _rcode_name(rcode), reply)
        return bytes(reply.pack())

    def _report(
        self,
        client: str,
        transport: Transport,
        name: str,
        rdtype: str,
        rcode: str,
        sent: dnslib.DNSRecord | None,
    ) -> None:
        answers = len(sent.rr) if sent is not None else 0
        truncated = bool(sent.header.tc) if sent is not None else False
        self._report_served(client, transport, name, rdtype, rcode, answers, truncated)

    def _report_served(
        self,
        client: str,
        transport: Transport,
        name: str,
        rdtype: str,
        rcode: str,
        answers: int,
        truncated: bool,
    ) -> None:
        if self._emit is None:
            return
        self._emit(
            DnsServed(
                t=self._clock(),
                client=client,
                transport=transport,
                name=name,
                rdtype=rdtype,
                rcode=rcode,
                answers=answers,
                truncated=truncated,
            )
        )


@dataclass(frozen=True, slots=True)
class _PackedReply:
    """A reply packed once, with what its ``DnsServed`` event says, and what it depends on."""

    authority: Authority
    kind: str  # the name's DNS behaviour when it was packed
    name: str
    rdtype: str
    reply: bytes  # its first two bytes (the ID) are replaced by each query's own
    rcode: str
    answers: int
    truncated: bool


def _question_of(request: dnslib.DNSRecord) -> tuple[str, str]:
    """(name, type) of a well-formed query; ("", "") when it has no single question."""
    if request.header.opcode != dnslib.OPCODE.QUERY or len(request.questions) != 1:
        return "", ""
    question = request.questions[0]
    return _name_of(question.qname), _type_name(question.qtype)


def _opt_of(request: dnslib.DNSRecord) -> Any | None:
    return next((rr for rr in request.ar if rr.rtype == dnslib.QTYPE.OPT), None)


def _fit(
    request: dnslib.DNSRecord, reply: dnslib.DNSRecord, transport: Transport
) -> tuple[bytes, dnslib.DNSRecord]:
    """Pack the reply within the transport's size limit, truncating (TC=1) when it does not fit.

    Plain UDP allows 512 bytes; an EDNS query advertises its own payload size, which we honour
    up to ``EDNS_PAYLOAD_CAP``. TCP allows the whole reply.
    """
    opt = _opt_of(request)
    if opt is not None:
        reply.add_ar(dnslib.EDNS0(udp_len=EDNS_PAYLOAD_CAP))  # RFC 6891 §6.1.1: EDNS answers EDNS
    if transport == "tcp":
        limit = _MAX_TCP_MESSAGE
    elif opt is not None:
        limit = min(max(opt.edns_len, UDP_PLAIN_LIMIT), EDNS_PAYLOAD_CAP)
    else:
        limit = UDP_PLAIN_LIMIT
    packed = bytes(reply.pack())
    if len(packed) <= limit:
        return packed, reply
    if reply.ar:
        # The glue (an MX answer's addresses) is only a courtesy: drop it before the answer
        # itself, and without TC (RFC 2181 §9), keeping the OPT record.
        bare = _without_glue(reply)
        packed = bytes(bare.pack())
        if len(packed) <= limit:
            return packed, bare
    truncated = _truncated(reply, opt is not None)
    return bytes(truncated.pack()), truncated


def _without_glue(reply: dnslib.DNSRecord) -> dnslib.DNSRecord:
    bare = dnslib.DNSRecord(reply.header, q=reply.q, rr=list(reply.rr), auth=list(reply.auth))
    bare.ar = [rr for rr in reply.ar if rr.rtype == dnslib.QTYPE.OPT]
    bare.set_header_qa()
    return bare


def _truncated(reply: dnslib.DNSRecord, edns: bool) -> dnslib.DNSRecord:
    """The reply with TC=1 and only its question: the client must ask again over TCP.

    Unlike dnslib's ``truncate()``, the question stays, so clients can match the reply.
    """
    header = dnslib.DNSHeader(id=reply.header.id, bitmap=reply.header.bitmap)
    header.tc = 1
    small = dnslib.DNSRecord(header, questions=list(reply.questions))
    if edns:
        small.add_ar(dnslib.EDNS0(udp_len=EDNS_PAYLOAD_CAP))
    return small


# --- the transports ------------------------------------------------------------------------------


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's own UDP transport does not subclass DatagramTransport in 3.11.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        reply, _ = self._server.serve(data, str(addr[0]), "udp")
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        # An ICMP error about an earlier reply (the client went away): nothing to do, and
        # certainly no reason to stop serving.
        logger.debug("DNS server: UDP error ignored: %s", exc)


class _Refused(asyncio.Protocol):
    """A TCP connection beyond the server's limit: closed as soon as it is accepted."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).abort()


class _TcpConnection(asyncio.Protocol):
    """One TCP client: two-byte length-prefixed messages, any number per connection, answered
    only as fast as the client reads the answers."""

    def __init__(self, server: DnsServer) -> None:
        self._server = server
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._client = ""
        self._idle_timer: asyncio.TimerHandle | None = None
        self._writing_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._client = str(peer[0]) if peer else ""
        self._server._connections.add(self)
        self._restart_idle_timer()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._restart_idle_timer()
        self._answer_buffered()

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its questions until it does.
        self._writing_paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._transport is not None:
            self._restart_idle_timer()  # the client reads: it is not idle
            self._transport.resume_reading()
            self._answer_buffered()

    def _answer_buffered(self) -> None:
        while self._transport is not None and not self._writing_paused and len(self._buffer) >= 2:
            length = int.from_bytes(self._buffer[:2], "big")
            if length < _HEADER_SIZE:
                self.close()  # no DNS message is this short: the framing is wrong
                return
            if len(self._buffer) < 2 + length:
                return  # the rest is on its way; if it never comes, the idle timer ends it
            message = bytes(self._buffer[2 : 2 + length])
            del self._buffer[: 2 + length]
            self._answer(message)

    def _answer(self, message: bytes) -> None:
        reply, sensible = self._server.serve(message, self._client, "tcp")
        if self._transport is None:
            return
        if reply is not None:
            self._transport.write(len(reply).to_bytes(2, "big") + reply)
        if not sensible:
            # After garbage, the next length prefix cannot be trusted either.
            self.close()

    def eof_received(self) -> bool | None:
        return None  # the client is done sending: close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_idle_timer()
        self._transport = None
        self._server._connections.discard(self)

    def close(self) -> None:
        self._cancel_idle_timer()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def _idle(self) -> None:
        transport = self._transport
        self.close()
        # close() waits to send what is buffered: for a client that stopped reading, forever.
        if transport is not None and transport.get_write_buffer_size():
            transport.abort()

    def _restart_idle_timer(self) -> None:
        self._cancel_idle_timer()
        loop = asyncio.get_running_loop()
        self._idle_timer = loop.call_later(self._server.idle_timeout, self._idle)

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
