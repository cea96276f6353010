"""1. Throughput end to end, against a bare aiosmtplib client and a bare aiosmtpd server.

Ours: ``run_scenario`` with N messages to one domain (two MX hosts, the primary accepts):
the DNS queries, the MX ordering, real SMTP on loopback, every event recorded and written as
JSON Lines (what ``--trace`` does), the loop, the servers and the result included. Twice: in
plain text (``sender: {tls: none}``), and at the postfix profile's own TLS level, ``may``:
STARTTLS in every session, and no TLS session kept for the next message (Postfix's
``smtp_tls_connection_reuse = no``).

The baselines: aiosmtplib's ``send()`` to one aiosmtpd ``SMTP`` server on a plain asyncio
loop, port 0, the same N messages, as many at once as our sender's destination concurrency,
one connection per message: in plain text, and with STARTTLS (a certificate from a trustme CA
that the client trusts). One more row shows the plain ceiling, when each connection is reused
for a share of the messages (what Postfix does for a backlogged destination in plain text).

Runs alternate between ours and the baselines, and the best of each counts.
"""

from __future__ import annotations

import asyncio
import io
import json
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiosmtplib
import trustme
from aiosmtpd.smtp import SMTP

from bench import worlds
from bench.measure import best, timed
from bench.report import Figure
from sandbox import PROFILES, Event, RunResult, event_to_dict, run_scenario

__all__ = ["run"]

SENDER, RECIPIENT = worlds.SENDER, "alice@example.test"
# About the size of the sender's own test messages.
MESSAGE = (
    b"From: bob@example.net\r\nTo: alice@example.test\r\nSubject: Message 1 of bench\r\n"
    b"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <1.1.bench@sender.sandbox.test>\r\n"
    b'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: 7bit\r\n'
    b"MIME-Version: 1.0\r\n\r\nThis is message 1, sent by the MX Sandbox sender.\r\n"
)


class _Accept:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.0.0 Ok"


@dataclass(frozen=True)
class _Tls:
    """The bare server's TLS context and a client context that trusts it."""

    server: ssl.SSLContext
    client: ssl.SSLContext


def _tls() -> _Tls:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return _Tls(server, client)


async def _bare(count: int, concurrency: int, *, reuse: bool, tls: _Tls | None = None) -> None:
    loop = asyncio.get_running_loop()
    handler = _Accept()
    context = tls.server if tls is not None else None
    server = await loop.create_server(lambda: SMTP(handler, tls_context=context), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        if reuse:
            await _reusing(port, count, concurrency)
        else:
            await _one_per_message(port, count, concurrency, tls)
    finally:
        server.close()
        await server.wait_closed()


async def _one_per_message(port: int, count: int, concurrency: int, tls: _Tls | None) -> None:
    slots = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with slots:
            await aiosmtplib.send(
                MESSAGE,
                sender=SENDER,
                recipients=[RECIPIENT],
                hostname="127.0.0.1",
                port=port,
                start_tls=tls is not None,
                tls_context=tls.client if tls is not None else None,
            )

    await asyncio.gather(*(one() for _ in range(count)))


async def _reusing(port: int, count: int, concurrency: int) -> None:
    async def worker(share: int) -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        for _ in range(share):
            await client.sendmail(SENDER, [RECIPIENT], MESSAGE)
        await client.quit()

    shares = [
        count // concurrency + (1 if i < count % concurrency else 0) for i in range(concurrency)
    ]
    await asyncio.gather(*(worker(share) for share in shares if share))


def _run_bare(make: Callable[[], Awaitable[None]]) -> float:
    async def main() -> None:
        await make()

    return timed(lambda: asyncio.run(main()))[0]


def _run_ours(count: int, tls: str = "none") -> tuple[float, RunResult]:
    scenario = worlds.throughput(count, tls)
    trace = io.StringIO()

    def jsonl(event: Event) -> None:
        trace.write(json.dumps(event_to_dict(event)) + "\n")

    return timed(lambda: run_scenario(scenario, sinks=[jsonl]))


def run(*, count: int = 1000, rounds: int = 3) -> list[Figure]:
    concurrency = PROFILES["postfix"].concurrency
    tls = _tls()
    # Warm up both sides: first runs pay for imports and cold caches.
    _run_ours(20)
    _run_ours(20, "may")
    _run_bare(lambda: _bare(20, concurrency, reuse=False))
    _run_bare(lambda: _bare(20, concurrency, reuse=False, tls=tls))
    ours, bare, reused, ours_tls, bare_tls = [], [], [], [], []
    result: RunResult | None = None
    result_tls: RunResult | None = None
    for _ in range(rounds):
        bare.append(_run_bare(lambda: _bare(count, concurrency, reuse=False)))
        wall, result = _run_ours(count)
        ours.append(wall)
        reused.append(_run_bare(lambda: _bare(count, concurrency, reuse=True)))
        bare_tls.append(_run_bare(lambda: _bare(count, concurrency, reuse=False, tls=tls)))
        wall, result_tls = _run_ours(count, "may")
        ours_tls.append(wall)
    assert result is not None and result_tls is not None
    _check_delivered(result, count, over_tls=False)
    _check_delivered(result_tls, count, over_tls=True)
    rate, bare_rate, reused_rate = count / best(ours), count / best(bare), count / best(reused)
    tls_rate, bare_tls_rate = count / best(ours_tls), count / best(bare_tls)
    connections = sum(h.connections for h in result.hosts)
    tls_connections = sum(h.connections for h in result_tls.hosts)
    details = {
        "messages": count,
        "concurrency": concurrency,
        "rounds": rounds,
        "ours_wall_s": ours,
        "bare_wall_s": bare,
        "bare_reusing_wall_s": reused,
        "connections_per_message": connections / count,
        "events_per_message": len(result.events) / count,
    }
    tls_details = {
        "messages": count,
        "concurrency": concurrency,
        "rounds": rounds,
        "ours_wall_s": ours_tls,
        "bare_wall_s": bare_tls,
        "connections_per_message": tls_connections / count,
    }
    return [
        Figure(
            "1 throughput",
            f"{count:,} messages, DNS+MX+SMTP+trace, plain text",
            rate,
            "msg/s",
            bare_rate,
            f"bare aiosmtplib→aiosmtpd, {concurrency} at a time",
            rate / bare_rate,
            "x baseline",
            "≥ 0.8",
            rate / bare_rate >= 0.8,
            details,
        ),
        Figure(
            "1 throughput",
            f"same, against the ceiling ({connections / count:.2f} conn./msg)",
            rate,
            "msg/s",
            reused_rate,
            f"bare, {concurrency} connections reused",
            rate / reused_rate,
            "x baseline",
            "",
            None,
        ),
        Figure(
            "1 throughput",
            f"same over STARTTLS, postfix at may ({tls_connections / count:.2f} conn./msg)",
            tls_rate,
            "msg/s",
            bare_tls_rate,
            f"bare aiosmtplib→aiosmtpd with STARTTLS, {concurrency} at a time",
            tls_rate / bare_tls_rate,
            "x baseline",
            "≥ 0.8",
            tls_rate / bare_tls_rate >= 0.8,
            tls_details,
        ),
    ]


def _check_delivered(result: RunResult, count: int, *, over_tls: bool) -> None:
    """Every message delivered, and over TLS exactly when the run asked for it: a figure for
    mail that went otherwise would measure the wrong thing."""
    delivered = [d for d in result.deliveries if d.status == "delivered"]
    if len(delivered) != count:
        raise RuntimeError(f"throughput: only {len(delivered)} of {count} messages were delivered")
    if any(bool(d.tls) != over_tls for d in delivered):
        raise RuntimeError(
            f"throughput: not every delivery went {'over TLS' if over_tls else 'in plain text'}"
        )
