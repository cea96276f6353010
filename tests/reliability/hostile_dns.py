"""Hostile DNS packets, family by family, built from a ``random.Random``.

Each family is a function ``(rng) -> bytes``. The same functions feed the Hypothesis fuzzer
(through ``st.randoms()``, so that a failure shrinks and replays) and the 10,000-packet run
over real sockets (through one seeded ``random.Random``, so that it is the same every time).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

import dns.edns
import dns.message

__all__ = ["FAMILIES", "NAMES", "hostile_packet", "valid_query"]

NAMES = (
    "example.test",
    "mx1.example.test",
    "mx2.example.test",
    "www.example.test",
    "big.example.test",
    "text.example.test",
    "missing.example.test",
    "elsewhere.org",
)
TYPES = ("A", "AAAA", "MX", "CNAME", "TXT", "SOA", "NS", "ANY", "SRV", "PTR")

Family = Callable[[random.Random], bytes]


def valid_query(rng: random.Random) -> bytes:
    """A well-formed query, sometimes with EDNS, sometimes with DNSSEC OK."""
    name = rng.choice(NAMES)
    rdtype = rng.choice(TYPES)
    edns = rng.choice((-1, 0))
    payload = rng.choice((512, 1232, 4096, 65535))
    query = dns.message.make_query(
        name, rdtype, use_edns=edns, payload=payload, want_dnssec=rng.random() < 0.2
    )
    query.id = rng.randrange(65536)
    return query.to_wire()


def _header(rng: random.Random, **fields: int) -> bytes:
    values = {
        "id": rng.randrange(65536),
        "flags": 0x0100,
        "qd": 1,
        "an": 0,
        "ns": 0,
        "ar": 0,
    }
    values.update(fields)
    return struct.pack(
        "!HHHHHH",
        values["id"],
        values["flags"],
        values["qd"],
        values["an"],
        values["ns"],
        values["ar"],
    )


def random_bytes(rng: random.Random) -> bytes:
    return rng.randbytes(rng.choice((0, 1, 2, 11, 12, 13, rng.randrange(600))))


def truncated(rng: random.Random) -> bytes:
    packet = valid_query(rng)
    return packet[: rng.randrange(len(packet))]


def compression_loop(rng: random.Random) -> bytes:
    """Names whose compression pointers point at themselves, at each other, forwards, or
    past the end of the packet."""
    shapes = (
        b"\xc0\x0c",  # points at itself
        b"\x01a\xc0\x0c",  # a label, then back to its own start
        b"\xc0\x0e\xc0\x0c",  # two pointers pointing at each other
        b"\xc0\xff",  # beyond the end
        b"\x01a\xc0\x10\x01b\xc0\x0c",  # a longer cycle through labels
        b"\xff\xff",  # reserved label types
        b"\x7f" + b"x" * 10,  # a label longer than the packet
    )
    name = rng.choice(shapes)
    tail = struct.pack("!HH", rng.choice((1, 15, 255)), 1) if rng.random() < 0.8 else b""
    return _header(rng) + name + tail


def lying_counts(rng: random.Random) -> bytes:
    """A real query whose header counts promise more (or fewer) records than there are."""
    packet = bytearray(valid_query(rng))
    for offset in rng.sample((4, 6, 8, 10), rng.randrange(1, 5)):
        packet[offset : offset + 2] = struct.pack("!H", rng.choice((0, 2, 3, 255, 65535)))
    return bytes(packet)


def mutated(rng: random.Random) -> bytes:
    packet = bytearray(valid_query(rng))
    for _ in range(rng.randrange(1, 8)):
        packet[rng.randrange(len(packet))] = rng.randrange(256)
    if rng.random() < 0.3:
        packet += rng.randbytes(rng.randrange(1, 40))
    return bytes(packet)


def odd_header(rng: random.Random) -> bytes:
    """A good question under any flags: opcodes, QR, TC, Z, rcodes nobody sends in a query."""
    packet = bytearray(valid_query(rng))
    packet[2:4] = struct.pack("!H", rng.randrange(65536))
    return bytes(packet)


def odd_question(rng: random.Random) -> bytes:
    """Any type and class, long and strange labels, names past 255 bytes."""
    labels = [
        rng.choice(
            (
                b"mx1",
                b"EXAMPLE",
                b"test",
                b"a.b",
                b"\x00",
                b"\xff\xfe",
                b"x" * 63,
                bytes(rng.randrange(256) for _ in range(rng.randrange(1, 20))),
            )
        )
        for _ in range(rng.randrange(0, 9))
    ]
    if rng.random() < 0.2:
        labels = [b"y" * 63] * 5  # 320 bytes: longer than a name may be
    name = b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"
    question = name + struct.pack("!HH", rng.randrange(65536), rng.choice((1, 3, 4, 254, 255, 0)))
    return _header(rng) + question


def odd_edns(rng: random.Random) -> bytes:
    """OPT records with odd sizes, versions, options, or two of them."""
    query = dns.message.make_query(
        rng.choice(NAMES),
        rng.choice(TYPES),
        use_edns=rng.choice((0, 1, 255)),
        payload=rng.choice((0, 1, 511, 512, 65535)),
        options=[dns.edns.GenericOption(rng.randrange(65536), rng.randbytes(rng.randrange(8)))],
    )
    packet = query.to_wire()
    if rng.random() < 0.3:  # a second OPT record, which RFC 6891 §6.1.1 forbids
        second = b"\x00" + struct.pack("!HHIH", 41, rng.randrange(65536), 0, 0)
        packet = packet[:10] + struct.pack("!H", 2) + packet[12:] + second
    return packet


def response(rng: random.Random) -> bytes:
    """A response (QR=1): answering it could start a loop between two servers."""
    query = dns.message.make_query(rng.choice(NAMES), rng.choice(("A", "MX")))
    return dns.message.make_response(query).to_wire()


def oversized(rng: random.Random) -> bytes:
    """A query followed by kilobytes of trailing junk."""
    return valid_query(rng) + rng.randbytes(rng.randrange(1000, 8000))


FAMILIES: tuple[Family, ...] = (
    random_bytes,
    truncated,
    compression_loop,
    lying_counts,
    mutated,
    odd_header,
    odd_question,
    odd_edns,
    response,
    oversized,
)


def hostile_packet(rng: random.Random) -> bytes:
    return rng.choice(FAMILIES)(rng)
