"""1. Throughput end to end, against a bare aiosmtplib client and a bare aiosmtpd server.

Ours: ``run_scenario`` with N messages to one domain (two MX hosts, the primary accepts):
the DNS queries, the MX ordering, real SMTP on loopback, every event recorded and written as
JSON Lines (what ``--trace`` does), the loop, the servers and the result included.

The baseline: aiosmtplib's ``send()`` to one aiosmtpd ``SMTP`` server on a plain asyncio loop,
port 0, the same N messages, as many at once as our sender's destination concurrency, one
connection per message, as our sender makes today. A second row shows the ceiling when each
of those connections is reused for a share of the messages (what Postfix does for a
backlogged destination).

Runs alternate between ours and the baselines, and the best of each counts.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiosmtplib
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


async def _bare(count: int, concurrency: int, *, reuse: bool) -> None:
    loop = asyncio.get_running_loop()
    handler = _Accept()
    server = await loop.create_server(lambda: SMTP(handler), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        if reuse:
            await _reusing(port, count, concurrency)
        else:
            await _one_per_message(port, count, concurrency)
    finally:
        server.close()
        await server.wait_closed()


async def _one_per_message(port: int, count: int, concurrency: int) -> None:
    slots = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with slots:
            await aiosmtplib.send(
                MESSAGE,
                sender=SENDER,
                recipients=[RECIPIENT],
                hostname="127.0.0.1",
                port=port,
                start_tls=False,
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


def _run_ours(count: int) -> tuple[float, RunResult]:
    scenario = worlds.throughput(count)
    trace = io.StringIO()

    def jsonl(event: Event) -> None:
        trace.write(json.dumps(event_to_dict(event)) + "\n")

    return timed(lambda: run_scenario(scenario, sinks=[jsonl]))


def run(*, count: int = 1000, rounds: int = 3) -> list[Figure]:
    concurrency = PROFILES["postfix"].concurrency
    # Warm up both sides: first runs pay for imports and cold caches.
    _run_ours(20)
    _run_bare(lambda: _bare(20, concurrency, reuse=False))
    ours, bare, reused = [], [], []
    result: RunResult | None = None
    for _ in range(rounds):
        bare.append(_run_bare(lambda: _bare(count, concurrency, reuse=False)))
        wall, result = _run_ours(count)
        ours.append(wall)
        reused.append(_run_bare(lambda: _bare(count, concurrency, reuse=True)))
    assert result is not None
    delivered = sum(1 for d in result.deliveries if d.status == "delivered")
    if delivered != count:
        raise RuntimeError(f"throughput: only {delivered} of {count} messages were delivered")
    rate, bare_rate, reused_rate = count / best(ours), count / best(bare), count / best(reused)
    connections = sum(h.connections for h in result.hosts)
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
    workload = f"{count:,} messages, DNS+MX+SMTP+trace"
    return [
        Figure(
            "1 throughput",
            workload,
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
    ]
