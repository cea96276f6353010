"""Bad TLS clients against a sandbox mail host: garbage instead of a handshake, a handshake that
stops half way, many stalled at once, a bounded fuzz. Each costs the host that connection and
nothing else: the host records it, serves a polite client over TLS meanwhile and afterwards,
and closes at once when asked.

The hosts are the sandbox's own (``MailHost`` with the world's certificate authority, the
session class run and serve use), on a virtual clock (looptime): asyncio's 60 s handshake
timeout passes in no wall time.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sandbox import Event, HostSession
from sandbox.hosts.host import MailHost
from sandbox.scenario.model import Behaviour, Timeline
from sandbox.tls.certificates import CertificateAuthority
from tests.integration.tls_clients import client_hello, closed_by_peer, fuzzed_handshake
from tests.reliability.test_bad_smtp_clients import run_clock

pytestmark = pytest.mark.looptime

HOST = "mx1.example.test"
FUZZ_CASES = 40
FUZZ_MAX_BYTES = 4000
STALLED_AT_ONCE = 50
HANDSHAKE_TIMEOUT = 60.0  # asyncio's ssl_handshake_timeout, which aiosmtpd leaves as it is


@contextlib.asynccontextmanager
async def tls_host(
    ca: CertificateAuthority, events: list[Event], behaviour: Behaviour | None = None
) -> AsyncIterator[MailHost]:
    host = MailHost(
        HOST,
        "192.0.2.10",
        Timeline.constant(behaviour or Behaviour()),
        clock=run_clock(),
        emit=events.append,
        tls_contexts=lambda tls: ca.server_context(HOST, tls),
    )
    await host.start()
    try:
        yield host
    finally:
        await host.close()


async def _reply(reader: asyncio.StreamReader) -> bytes:
    """One whole reply (its last line)."""
    while True:
        line = await asyncio.wait_for(reader.readline(), 30)
        if not line:
            raise EOFError("the host hung up")
        if line[3:4] != b"-":
            return line


async def to_starttls(host: MailHost) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection that has said EHLO and STARTTLS and got the 220."""
    reader, writer = await asyncio.open_connection(*host.listen)
    assert (await _reply(reader)).startswith(b"220")
    writer.write(b"EHLO hostile.example.net\r\n")
    assert b"STARTTLS" in (await reader.readuntil(b"250 HELP\r\n"))
    writer.write(b"STARTTLS\r\n")
    assert (await _reply(reader)).startswith(b"220")
    return reader, writer


async def polite_delivery(ca: CertificateAuthority, host: MailHost) -> str:
    """A whole transaction over TLS, as a sender at level "verify" would make it; the TLS
    version it got."""
    reader, writer = await to_starttls(host)
    context = ca.trusting_context()
    await writer.start_tls(context, server_hostname=HOST)
    ssl_object = writer.get_extra_info("ssl_object")
    assert isinstance(ssl_object, ssl.SSLObject)
    for line, code in (
        (b"EHLO good.example.net", b"250"),
        (b"MAIL FROM:<bob@example.net>", b"250"),
        (b"RCPT TO:<alice@example.test>", b"250"),
        (b"DATA", b"354"),
        (b"Subject: hi\r\n\r\nover TLS\r\n.", b"250"),
        (b"QUIT", b"221"),
    ):
        writer.write(line + b"\r\n")
        assert (await _reply(reader)).startswith(code), line
    writer.close()
    return ssl_object.version() or ""


def tls_lines(events: list[Event]) -> list[str]:
    return [
        line
        for e in events
        if isinstance(e, HostSession)
        for _, side, line in e.transcript
        if line.startswith("<TLS")
    ]


async def test_garbage_instead_of_a_handshake_costs_one_connection(
    ca: CertificateAuthority,
) -> None:
    events: list[Event] = []
    async with tls_host(ca, events) as host:
        reader, writer = await to_starttls(host)
        writer.write(b"GET / HTTP/1.1\r\nHost: mx1\r\n\r\n" + bytes(range(256)) * 4)
        assert await closed_by_peer(reader, 30)
        writer.close()
        assert await polite_delivery(ca, host) in ("TLSv1.3", "TLSv1.2")
        assert host.accepted == 1
    failed, started = tls_lines(events)
    assert failed.startswith("<TLS failed: the TLS handshake failed") and started.startswith(
        "<TLS: TLSv1"
    )


async def test_a_handshake_stopped_half_way_blocks_nobody_and_times_out(
    ca: CertificateAuthority,
) -> None:
    events: list[Event] = []
    hello = client_hello(HOST)
    async with tls_host(ca, events) as host:
        reader, writer = await to_starttls(host)
        writer.write(hello[: len(hello) // 2])  # then nothing, ever
        assert not await closed_by_peer(reader, HANDSHAKE_TIMEOUT / 2)
        assert await polite_delivery(ca, host)  # served while the other one stalls
        assert await closed_by_peer(reader, HANDSHAKE_TIMEOUT * 2)
        writer.close()
        assert await polite_delivery(ca, host)
        assert host.accepted == 2
    assert [line.split(":")[0] for line in tls_lines(events)] == [
        "<TLS",
        "<TLS failed",
        "<TLS",
    ]


async def test_many_stalled_handshakes_at_once_and_the_host_still_serves_then_closes(
    ca: CertificateAuthority,
) -> None:
    events: list[Event] = []
    hello = client_hello(HOST)
    loop = asyncio.get_running_loop()
    async with tls_host(ca, events) as host:
        stalled = [await to_starttls(host) for _ in range(STALLED_AT_ONCE)]
        for _, writer in stalled:
            writer.write(hello[:10])
        assert await polite_delivery(ca, host)
        began = loop.time()
        await host.close()  # with every stalled handshake still open
        assert loop.time() - began < 1.0
        for reader, writer in stalled:
            assert await closed_by_peer(reader, 1)
            writer.close()
    assert host.accepted == 1


async def test_a_client_that_resets_mid_handshake_costs_nothing(ca: CertificateAuthority) -> None:
    events: list[Event] = []
    hello = client_hello(HOST)
    async with tls_host(ca, events) as host:
        for _ in range(5):
            _, writer = await to_starttls(host)
            writer.write(hello)
            await writer.drain()
            writer.transport.abort()  # RST, in the middle of the server's reply
            writer.close()
        assert await polite_delivery(ca, host)
        await asyncio.sleep(HANDSHAKE_TIMEOUT * 2)
        assert len(host.sessions) == 6 and all(s.closed is not None for s in host.sessions)


async def test_garbage_to_a_handshake_failure_host_is_no_different(
    ca: CertificateAuthority,
) -> None:
    events: list[Event] = []
    async with tls_host(ca, events, Behaviour(tls="handshake-failure")) as host:
        reader, writer = await to_starttls(host)
        writer.write(b"\x00" * 5000)
        assert await closed_by_peer(reader, 5)
        writer.close()
        host.set_behaviour(Behaviour())
        assert await polite_delivery(ca, host)
    assert tls_lines(events)[0].startswith("<TLS failed: the host closed the connection")


async def test_fuzzed_handshakes_never_stop_the_host(ca: CertificateAuthority) -> None:
    rng = random.Random(1414)
    hello = client_hello(HOST)
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    events: list[Event] = []
    writers: list[asyncio.StreamWriter] = []
    async with tls_host(ca, events) as host:
        for case in range(FUZZ_CASES):
            _, writer = await to_starttls(host)
            writers.append(writer)
            writer.write(fuzzed_handshake(rng, hello, case, FUZZ_MAX_BYTES))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            if case % 3 == 0:
                writer.close()  # some hang up, the others wait for the timeout
        assert await polite_delivery(ca, host)
        await asyncio.sleep(HANDSHAKE_TIMEOUT * 2)
        assert all(s.closed is not None for s in host.sessions)  # every one timed out
        assert await polite_delivery(ca, host)
        assert host.accepted == 2
    for writer in writers:
        writer.close()
    assert errors == []
    failed = [line for line in tls_lines(events) if line.startswith("<TLS failed")]
    assert len(failed) == FUZZ_CASES
