"""Two sandboxes on one SMTP port: the second cannot answer for a host the first refuses.

A refusing host is a socket bound to its address and port, never listening. It used to be
bound with ``SO_REUSEADDR``, which Linux lets a second socket share as long as neither listens:
a second sandbox on the same SMTP port then bound the address, listened, and greeted the
clients that the first promised to refuse. Now the second one fails to start, with exit 2
and a message that names the address and port; and a refusing port that has to be bound
shared for a while (its own connections still on it) is made exclusive again once they end.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import random
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from sandbox import AddressInUse, scenario_from_mapping
from sandbox.serve.harness import ServedScenario
from sandbox.serve.plan import CLI_FIRST_ADDRESS
from tests.helpers import ROOT
from tests.reliability.hostile import watched


def one_host(behaviour: Any) -> dict[str, Any]:
    return {
        "name": "one-host",
        "zones": {"example.test": "$TTL 60\n@ IN MX 10 mx1\nmx1 IN A 192.0.2.10\n"},
        "hosts": {"mx1.example.test": behaviour},
    }


def free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def can_bind_shared(address: str, port: int) -> bool:
    """Whether another program could bind the port the way a listener does."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as error:
            assert error.errno == errno.EADDRINUSE
            return False
        return True


async def refused(address: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(address, port)
    except ConnectionRefusedError:
        return True
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return False


async def test_a_second_sandbox_cannot_take_the_port_of_a_refusing_host() -> None:
    first_address = f"127.{random.randint(16, 254)}.{random.randint(0, 255)}.2"
    refusing = scenario_from_mapping(one_host("refuse"))
    accepting = scenario_from_mapping(one_host("accept"))
    async with ServedScenario(refusing, first_address=first_address) as first:
        port = first.smtp_port
        second = ServedScenario(accepting, first_address=first_address, smtp_port=port)
        with pytest.raises(AddressInUse, match=f"{first_address}:{port}"):
            await second.start()
        assert await refused(first_address, port)
        assert not can_bind_shared(first_address, port)


async def test_two_serve_commands_on_one_smtp_port(tmp_path: Path) -> None:
    (tmp_path / "refuse.yaml").write_text(json.dumps(one_host("refuse")), encoding="utf-8")
    (tmp_path / "accept.yaml").write_text(json.dumps(one_host("accept")), encoding="utf-8")
    port = free_port(CLI_FIRST_ADDRESS)
    options = ("--dns", "127.0.0.1:0", "--smtp-port", str(port))
    command = [sys.executable, "-m", "sandbox", "serve", str(tmp_path / "accept.yaml")]
    async with watched(tmp_path / "refuse.yaml", "--smtp-port", str(port)) as first:
        second = await asyncio.create_subprocess_exec(
            *command, *options, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            async with asyncio.timeout(30):
                out, errors = await second.communicate()
        finally:
            if second.returncode is None:  # it started: the failure this test is about
                second.kill()
                await second.wait()
        assert second.returncode == 2, (out, errors)
        assert f"{CLI_FIRST_ADDRESS}:{port}" in errors.decode()
        assert "choose another SMTP port" in errors.decode()
        assert await refused(CLI_FIRST_ADDRESS, port)
        code, _ = await first.stop()
    assert code == 0


@pytest.mark.looptime
async def test_a_refusing_port_shared_for_a_while_is_made_exclusive_again() -> None:
    async with ServedScenario(scenario_from_mapping(one_host("accept"))) as sb:
        address, port = sb.address_of("mx1.example.test"), sb.smtp_port
        reader, writer = await asyncio.open_connection(address, port)
        assert (await reader.readline()).startswith(b"220 ")
        # A session still open on the port: the refusing socket cannot have the port alone.
        sb.set_behaviour("mx1.example.test", "refuse")
        assert await refused(address, port)
        writer.close()
        await writer.wait_closed()
        await sb.wait_for(lambda: all(s.closed is not None for s in sb.sessions()))
        await asyncio.sleep(2)  # virtual: the host tries again after a second
        assert await refused(address, port)
        assert not can_bind_shared(address, port)
