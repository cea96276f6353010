"""What the TLS tests share: hostile clients' tools."""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl

__all__ = ["client_hello", "closed_by_peer", "fuzzed_handshake"]


async def closed_by_peer(reader: asyncio.StreamReader, within: float) -> bool:
    """True when the server closes the connection within ``within`` (virtual) seconds; what
    it sends meanwhile is read and dropped."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except OSError:  # reset rather than closed: closed all the same
        return True
    return True


def client_hello(server_name: str) -> bytes:
    """The first flight of a real TLS client: its ClientHello, for ``server_name``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def fuzzed_handshake(rng: random.Random, hello: bytes, case: int, max_bytes: int) -> bytes:
    """What a fuzzing client sends instead of a handshake: for every other case a real hello
    with a few bytes flipped (deeper into the TLS parser), else random bytes."""
    if case % 2 == 0:
        data = bytearray(hello)
        for _ in range(rng.randint(1, 12)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    return rng.randbytes(rng.randint(1, max_bytes))
