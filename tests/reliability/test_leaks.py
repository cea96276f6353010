"""No leaks: start, run and stop a sandbox again and again; nothing is left behind.

A cycle starts a ``Sandbox`` (DNS server on UDP and TCP, a mail host per address), runs a
scenario that touches every socket state (accept, refuse, timeout with its filler connection,
silent, a phase switch) and DNS over TCP (an answer too big for UDP), and stops it. After the
cycles the process has the same open file descriptors, threads and asyncio tasks as before
them, and no ResourceWarning was raised (an unclosed socket, transport or event loop).

50 cycles in CI (and 20 whole ``run_scenario`` calls, each with its own event loop); 500 and
200 with ``HYPOTHESIS_PROFILE=deep``. One cycle runs before the counts are taken, so that
what is created once per process (caches, the loop's own self-pipe) is not counted as a leak.
"""

from __future__ import annotations

import asyncio
import gc
import os
import ssl
import threading
import warnings
from asyncio.sslproto import SSLProtocol
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from sandbox import DnsServed, Sandbox, Scenario, run_scenario, scenario_from_mapping
from tests.reliability.budget import scaled

SANDBOX_CYCLES = scaled(50, 500)
RUN_CYCLES = scaled(20, 200)

# Sixteen MX records with long names: the answer is too big for the sender's EDNS UDP size
# (1232 bytes: TC=1), so it asks again over TCP, and the DNS server's TCP side is part of
# every cycle.
_NAME = "mail-exchanger-number-{}-with-a-long-name-that-fills-the-reply"
_MX = "".join(f"@ IN MX {10 * i} {_NAME.format(i)}\n" for i in range(1, 17))
_A = "".join(f"{_NAME.format(i)} IN A 192.0.2.{i}\n" for i in range(1, 17))
EVERYTHING: dict[str, Any] = {
    "name": "every-socket-state",
    "zones": {"example.test": "$TTL 60\n" + _MX + _A},
    "hosts": {
        f"{_NAME.format(1)}.example.test": "refuse",
        f"{_NAME.format(2)}.example.test": "timeout",
        f"{_NAME.format(3)}.example.test": "silent",
        f"{_NAME.format(4)}.example.test": [
            {"until": "10m", "do": "refuse"},
            {"do": {"greylist": "5m", "tls": "handshake-failure"}},
        ],
        f"{_NAME.format(5)}.example.test": {"disconnect": "message", "tls": "expired"},
    },
    "messages": [{"from": "bob@example.net", "to": ["alice@example.test", "carol@example.test"]}],
    "sender": {"max_sessions": 5, "max_lifetime": "1h"},
    "until": "2h",
}


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextmanager
def no_resource_warnings() -> Iterator[list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield caught
        gc.collect()  # an object never closed warns when it is collected
    resource = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not resource, [str(w.message) for w in resource]


def scenario() -> Scenario:
    return scenario_from_mapping(EVERYTHING)


async def one_cycle(world: Scenario) -> None:
    async with Sandbox(world) as sandbox:
        result = await sandbox.run()
    assert {d.status for d in result.deliveries} <= {"delivered", "deferred", "bounced"}
    assert any(isinstance(e, DnsServed) and e.transport == "tcp" for e in result.events)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc")
@pytest.mark.looptime
async def test_sandbox_cycles_leave_no_fds_threads_or_tasks() -> None:
    world = scenario()
    await one_cycle(world)  # warm-up: what is made once per process
    gc.collect()
    fds, threads, tasks = open_fds(), threading.active_count(), len(asyncio.all_tasks())
    with no_resource_warnings():
        for _ in range(SANDBOX_CYCLES):
            await one_cycle(world)
    await asyncio.sleep(0)
    assert (open_fds(), threading.active_count(), len(asyncio.all_tasks())) == (
        fds,
        threads,
        tasks,
    )


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc")
def test_whole_runs_each_on_its_own_loop_leave_nothing() -> None:
    world = scenario()
    run_scenario(world)  # warm-up
    gc.collect()
    fds, threads = open_fds(), threading.active_count()
    with no_resource_warnings():
        for _ in range(RUN_CYCLES):
            run_scenario(world)
    assert (open_fds(), threading.active_count()) == (fds, threads)


def test_an_ended_tls_session_lets_go_of_its_tls_state_at_once() -> None:
    # A host's session ends in reference cycles that only the collector frees, and a run
    # makes collections rare. What it held of TLS (asyncio's SSLProtocol, 256 KiB of read
    # buffer; OpenSSL's connection) must go when the connection goes: it did not, and a run
    # of 10,000 TLS sessions peaked at 658 MB.
    scenario = scenario_from_mapping(
        {
            "name": "tls-sessions",
            "zones": {"example.test": "@ IN MX 10 mx1\nmx1 IN A 192.0.2.10\n"},
            "messages": [{"from": "bob@example.net", "to": "alice@example.test", "count": 40}],
        }
    )
    gc.collect()
    gc.disable()
    try:
        result = run_scenario(scenario)
        alive = [o for o in gc.get_objects() if isinstance(o, (ssl.SSLObject, SSLProtocol))]
    finally:
        gc.enable()
    assert sum(1 for d in result.deliveries if d.tls) == 40  # every session went over TLS
    assert alive == []
