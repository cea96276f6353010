"""8. The control API's round trip: a PUT that changes a host, then an SMTP session with it.

``mxsandbox serve scenarios/primary-down.yaml --control 127.0.0.1:0`` runs in a child
process, as a test suite in another language would start it. This process is the test: an
HTTP client (aiohttp, one kept-alive connection, as a suite's client would hold) and an
SMTP client (aiosmtplib: connect, EHLO, MAIL, RCPT, DATA, the message, QUIT).

One round is ``PUT /api/v1/hosts/mx1.example.test/behaviour`` (``"accept"``, a new timeline
each time: the same work as any change) followed by one message delivered to mx1. The
baseline is the same SMTP session without the PUT; the PUT alone is shown too. Medians of
``rounds`` rounds, after a warm-up.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
from email.message import EmailMessage

import aiohttp
import aiosmtplib

from bench.measure import ROOT, median
from bench.report import Figure

__all__ = ["run"]

_READY = re.compile(rb"^ready: dns \S+ smtp-port (\d+) control (\S+)(?: ca-file \S+)?$")


def _message() -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = (
        "bob@example.net",
        "alice@example.test",
        "Round trip",
    )
    message.set_content("Hi Alice.\n")
    return message


async def _session(address: str, port: int, message: EmailMessage) -> None:
    await aiosmtplib.send(
        message,
        hostname=address,
        port=port,
        start_tls=False,
        local_hostname="bench.example.net",
        timeout=10,
    )


async def _measure(rounds: int) -> dict[str, list[float]]:
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "sandbox", "serve", "scenarios/primary-down.yaml"),
        *("--dns", "127.0.0.1:0", "--smtp-port", "0", "--control", "127.0.0.1:0"),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(60):
            while (ready := _READY.match((await process.stdout.readline()).rstrip())) is None:
                pass
        # serve never waits for its reader, but there is no need to make it drop lines.
        drain = asyncio.create_task(process.stdout.read())
        smtp_port, control = int(ready[1]), ready[2].decode()
        api = f"http://{control}/api/v1"
        message = _message()
        walls: dict[str, list[float]] = {"put": [], "smtp": [], "round": []}
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{api}/hosts/mx1.example.test/behaviour") as answer:
                address = (await answer.json())["hosts"][0]["address"]

            async def put() -> None:
                url = f"{api}/hosts/mx1.example.test/behaviour"
                async with http.put(url, json="accept") as answer:
                    assert answer.status == 200, await answer.text()
                    await answer.read()

            for _ in range(5):  # warm-up: connections, caches, imports
                await put()
                await _session(address, smtp_port, message)
            for _ in range(rounds):
                start = time.perf_counter()
                await put()
                walls["put"].append(time.perf_counter() - start)
                start = time.perf_counter()
                await _session(address, smtp_port, message)
                walls["smtp"].append(time.perf_counter() - start)
                start = time.perf_counter()
                await put()
                await _session(address, smtp_port, message)
                walls["round"].append(time.perf_counter() - start)
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            await process.wait()
        await drain
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return walls


def run(*, rounds: int = 50) -> list[Figure]:
    walls = asyncio.run(_measure(rounds))
    put_ms, smtp_ms, round_ms = (median(walls[k]) * 1000 for k in ("put", "smtp", "round"))
    details = {k: [w * 1000 for w in v] for k, v in walls.items()} | {"rounds": rounds}
    return [
        Figure(
            "8 control",
            "PUT behaviour, then an SMTP session (serve in a child process)",
            round_ms,
            "ms",
            smtp_ms,
            "the SMTP session alone",
            round_ms - smtp_ms,
            "ms the PUT adds",
            "< 50 ms",
            round_ms < 50.0,
            details,
        ),
        Figure("8 control", "PUT behaviour alone (kept-alive HTTP)", put_ms, "ms", details={}),
    ]
