"""serve when connections pile up: out of file descriptors, too many at once, idle ones.

- Out of descriptors (``mxsandbox serve`` under ``prlimit --nofile=48:64``, held connections
  until accept fails): serve raises its soft limit to the hard one, says so in one line and
  then at most one line per five seconds (it used to log a traceback per failed accept, about
  200 kB/s), answers DNS all along, greets a new client once the held connections close, and
  stops on SIGTERM with exit 0 and its ``stopped`` record.
- A served host serves at most 100 sessions at once (Postfix's default_process_limit); the
  next connection gets ``421 4.7.0`` and is closed, counted, with one warning.
- On a virtual clock (looptime): a served SMTP session that says nothing is closed after 300 s
  (RFC 5321 §4.5.3.2.7), a scripted 400 s delay still works, and a silent host lets an idle
  client go after an hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from sandbox import Warning as WarningEvent
from sandbox import scenario_from_mapping
from sandbox.hosts.limits import SERVE_CONCURRENT_SESSIONS
from sandbox.serve.harness import ServedScenario
from tests.integration.serve_process import dig, smtp_send
from tests.reliability.hostile import watched

SOFT, HARD = 48, 64
HELD = 120  # more connections than serve has descriptors

SCENARIO: dict[str, Any] = {
    "name": "limits",
    "zones": {
        "example.test": "$TTL 60\n@ IN MX 10 mx1\n@ IN MX 20 mx2\n@ IN MX 30 mx3\n"
        "mx1 IN A 192.0.2.10\nmx2 IN A 192.0.2.11\nmx3 IN A 192.0.2.12\n"
    },
    "hosts": {"mx2.example.test": {"delay": {"greeting": "400s"}}, "mx3.example.test": "silent"},
}


def open_files_limit(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise LookupError("no open-files limit")


async def hold(address: tuple[str, int], count: int) -> list[socket.socket]:
    """Open ``count`` connections and keep them; the kernel completes the handshake whether
    serve can accept or not (up to its listen backlog)."""
    loop = asyncio.get_running_loop()
    held: list[socket.socket] = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            async with asyncio.timeout(5):
                await loop.sock_connect(sock, address)
        except (TimeoutError, OSError):
            sock.close()
            break  # the backlog is full too
        held.append(sock)
    return held


async def greeting(address: tuple[str, int]) -> bytes:
    """The first line a new client gets, trying again (boundedly) while serve cannot accept
    yet: asyncio tries to accept again a second after it ran out."""
    async with asyncio.timeout(30):
        while True:
            reader, writer = await asyncio.open_connection(*address)
            try:
                async with asyncio.timeout(5):
                    line = await reader.readline()
            except TimeoutError:
                line = b""
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
            if line:
                return line


async def test_out_of_file_descriptors_serve_says_so_briefly_and_recovers(tmp_path: Path) -> None:
    scenario = tmp_path / "limits.yaml"
    scenario.write_text(json.dumps(SCENARIO), encoding="utf-8")
    async with watched(scenario, prefix=("prlimit", f"--nofile={SOFT}:{HARD}")) as served:
        assert open_files_limit(served.pid) == (HARD, HARD)  # raised to the hard limit
        mx1 = served.address_of("mx1.example.test")
        held = await hold(mx1, HELD)
        try:
            # The first line, then the count five seconds later: nothing in between.
            await served.wait_for_errors("serve: cannot accept connections")
            await served.wait_for_errors("serve: still short of file descriptors")
            assert len(served.errors.splitlines()) == 2, served.errors.decode()
            mx1_address = served.address_of("mx1.example.test")[0]
            assert await dig(served.dns, "A", "mx1.example.test") == [mx1_address]
        finally:
            for sock in held:
                sock.close()
        assert (await greeting(mx1)).startswith(b"220 ")
        assert (await smtp_send(*mx1)).startswith("2.0.0")
        code, errors = await served.stop()
    assert code == 0, errors
    assert served.stopped is not None
    assert "Traceback" not in errors


SERVED = scenario_from_mapping(SCENARIO)


@contextlib.asynccontextmanager
async def client(address: tuple[str, int]) -> AsyncIterator[asyncio.StreamReader]:
    reader, writer = await asyncio.open_connection(*address)
    try:
        yield reader
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_a_served_host_serves_a_hundred_sessions_at_once_and_says_421_to_more() -> None:
    warnings: list[WarningEvent] = []
    record = lambda e: warnings.append(e) if isinstance(e, WarningEvent) else None  # noqa: E731
    async with ServedScenario(SERVED, on_event=record) as sb, contextlib.AsyncExitStack() as stack:
        mx1 = (sb.address_of("mx1.example.test"), sb.smtp_port)
        readers = [
            await stack.enter_async_context(client(mx1)) for _ in range(SERVE_CONCURRENT_SESSIONS)
        ]
        assert {await r.readline() for r in readers} == {
            b"220 mx1.example.test ESMTP MX Sandbox\r\n"
        }
        for _ in range(3):
            async with client(mx1) as extra:
                assert (await extra.readline()).startswith(b"421 4.7.0 mx1.example.test Too many")
                assert await extra.read() == b""  # and closed
        assert sb.totals("mx1.example.test").too_many == 3
        assert sb.totals("mx1.example.test").sessions == SERVE_CONCURRENT_SESSIONS
        assert len(warnings) == 1 and "421 4.7.0" in warnings[0].text
        await stack.aclose()  # every session ends: room again
        await sb.wait_for(lambda: all(s.closed is not None for s in sb.sessions()))
        assert (await smtp_send(*mx1)).startswith("2.0.0")


@pytest.mark.looptime
async def test_served_sessions_idle_out_after_five_minutes_and_delays_still_work() -> None:
    async with ServedScenario(SERVED) as sb:
        mx1, mx2, mx3 = ((sb.address_of(f"mx{i}.example.test"), sb.smtp_port) for i in (1, 2, 3))
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with client(mx1) as idle, client(mx2) as late, client(mx3) as silent:
            assert (await idle.readline()).startswith(b"220 ")
            assert await idle.read() == b""  # closed by the host: idle too long
            idle_for = loop.time() - start
            assert (await late.readline()).startswith(b"220 ")  # after the 400 s delay
            late_at = loop.time() - start
            assert await silent.read() == b""  # a silent host lets an idle client go at last
            silent_for = loop.time() - start
    assert 300 <= idle_for < 301
    assert 400 <= late_at < 401
    assert 3600 <= silent_for < 3601
