"""A test harness that reads serve's ``ready`` line and never drains stdout again.

That is the most common way to start a server from a test. serve must go on answering DNS
and SMTP, drop (and count) the output its reader has no room for, and stop on SIGINT or
SIGTERM with exit 0, writing its ``stopped`` record when the reader comes back, and saying on
stderr that it could not when the reader never does. Bounded: 12,000 DNS queries (24,000
for the shorter text lines), whose lines come to about twice what serve keeps for a slow
reader.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from typing import Any, cast

from sandbox.output.stream import DEFAULT_LIMIT
from tests.helpers import ROOT
from tests.integration.serve_process import PICK_PORTS, ServeProcess, dig, serve, smtp_send
from tests.reliability.hostile import udp_queries

QUERIES = 12_000
STOP_TIMEOUT = 10.0  # generous: the point is that it stops at all, not how fast


async def flood(
    address: tuple[str, int], count: int, name: str = "mx2.example.test", batch: int | None = None
) -> int:
    return await udp_queries(address, count, name, batch)


async def still_serving(served: ServeProcess) -> None:
    mx2 = next(h for h in served.ready["hosts"] if h["name"] == "mx2.example.test")
    assert await dig(served.dns, "A", "mx2.example.test") == [mx2["address"]]
    assert (await smtp_send(mx2["address"], served.smtp_port)).startswith("2.0.0")


async def test_a_reader_that_falls_behind_loses_lines_not_the_sandbox() -> None:
    async with serve("scenarios/primary-down.yaml", *PICK_PORTS, as_json=True) as served:
        answered = await flood(served.dns, QUERIES)
        assert answered > QUERIES * 0.9
        await still_serving(served)
        code, rest, errors = await served.stop(signal.SIGTERM)
    assert code == 0, errors
    records = [json.loads(line) for line in rest.splitlines()]
    dropped = [r for r in records if r["kind"] == "output_dropped"]
    assert dropped, "the reader fell behind, yet no line was dropped"
    shown = sum(1 for r in records if r["kind"] == "dns_served")
    assert shown + sum(r["lines"] for r in dropped) >= answered
    # What was kept is bounded: far less than the 12,000 lines the queries made.
    assert sum(len(line) + 1 for line in rest.splitlines()) < 3 * DEFAULT_LIMIT
    assert records[-1]["kind"] == "stopped"


async def test_a_reader_that_never_comes_back_does_not_keep_serve_from_stopping() -> None:
    # A plain child process whose stdout nobody reads after the ready line (asyncio's own
    # subprocess support would wait for the pipe to be read before reporting the exit).
    command = [sys.executable, "-m", "sandbox", "serve", "scenarios/primary-down.yaml"]
    with subprocess.Popen(
        [*command, *PICK_PORTS, "--json"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        try:
            ready = json.loads(process.stdout.readline())
            served = ServeProcess(cast(Any, process), ready=ready)
            served.dns = (ready["dns"]["host"], ready["dns"]["port"])
            served.smtp_port = ready["smtp_port"]
            await flood(served.dns, QUERIES)
            await still_serving(served)
            process.send_signal(signal.SIGINT)
            code = await asyncio.to_thread(process.wait, STOP_TIMEOUT)
        finally:
            process.kill()
        errors = process.stderr.read().decode()
    assert code == 0, errors
    assert "the stopped record" in errors


async def test_text_output_falls_behind_the_same_way() -> None:
    async with serve("scenarios/primary-down.yaml", *PICK_PORTS) as served:
        await flood(served.dns, 2 * QUERIES)  # text lines are half as long as JSON ones
        code, rest, errors = await served.stop(signal.SIGINT)
    assert code == 0, errors
    assert "line(s) not shown: the reader of this output fell behind" in rest
    assert "What each host saw" in rest
