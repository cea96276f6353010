"""3. Start and stop a sandbox with ten mail hosts: the cost of a pytest fixture per test.

- run mode: ``Sandbox`` (DNS server + 10 hosts) built, started and stopped on a looptime
  loop, as ``run_scenario`` does;
- the fixture's way: ``ServedScenario`` (serve mode: 10 hosts at their own 127.x addresses
  on one shared port) on a plain asyncio loop, as the ``mx_sandbox`` fixture does.

The baseline is the floor of the stack: ten aiosmtpd servers (``loop.create_server``, port 0)
and a UDP and a TCP socket for DNS, opened and closed on the same loop. Medians.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import looptime
from aiosmtpd.smtp import SMTP

from bench import worlds
from bench.measure import median
from bench.report import Figure
from sandbox import Sandbox, Scenario, ServedScenario

__all__ = ["run"]


async def _floor(hosts: int) -> None:
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(lambda: SMTP(None), "127.0.0.1", 0) for _ in range(hosts)]
    udp, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    servers.append(await loop.create_server(asyncio.Protocol, "127.0.0.1", 0))
    udp.close()
    for server in servers:
        server.close()
    for server in servers:
        await server.wait_closed()
    await asyncio.sleep(0)


async def _run_mode(scenario: Scenario) -> None:
    sandbox = Sandbox(scenario)
    await sandbox.start()
    await sandbox.stop()


async def _fixture_way(scenario: Scenario) -> None:
    served = ServedScenario(scenario)
    await served.start()
    await served.stop()


async def _times(work: Callable[[], Awaitable[None]], count: int) -> list[float]:
    await work()  # warm-up
    walls = []
    for _ in range(count):
        start = time.perf_counter()
        await work()
        walls.append(time.perf_counter() - start)
    return walls


def run(*, count: int = 30) -> list[Figure]:
    scenario = worlds.ten_hosts()
    hosts = 10
    with asyncio.Runner(loop_factory=lambda: looptime.new_event_loop(start=0.0)) as runner:
        run_mode = runner.run(_times(lambda: _run_mode(scenario), count))
    with asyncio.Runner() as runner:
        fixture = runner.run(_times(lambda: _fixture_way(scenario), count))
        floor = runner.run(_times(lambda: _floor(hosts), count))
    floor_ms = median(floor) * 1000
    figures = []
    for what, walls in (
        ("Sandbox (run mode), 10 hosts", run_mode),
        ("ServedScenario (the pytest fixture), 10 hosts", fixture),
    ):
        ms = median(walls) * 1000
        figures.append(
            Figure(
                "3 start+stop",
                what,
                ms,
                "ms",
                floor_ms,
                "10 bare aiosmtpd servers + DNS sockets",
                floor_ms / ms,
                "x baseline",
                "< 50 ms",
                ms < 50.0,
                {
                    "runs": count,
                    "walls_ms": [w * 1000 for w in walls],
                    "floor_ms": [w * 1000 for w in floor],
                },
            )
        )
    return figures
