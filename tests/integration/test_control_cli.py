"""``mxsandbox serve --control HOST:PORT`` as a user starts it: the ready line and record say
where the API listens, a shell script drives it with curl and dig, changes show in the
output, and a bad ``--control`` is exit 2 with a sentence."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import sys

import aiohttp
import pytest

from tests.helpers import ROOT, mxsandbox
from tests.integration.serve_process import PICK_PORTS, STOP_TIMEOUT, serve

SCENARIO = ROOT / "scenarios" / "primary-down.yaml"
CONTROL = ("--control", "127.0.0.1:0")
SCRIPT = ROOT / "tests" / "shell" / "control_api.sh"


async def get_json(url: str) -> dict[str, object]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.get(url) as answer,
    ):
        assert answer.status == 200
        found: dict[str, object] = await answer.json()
        return found


async def test_the_ready_record_says_where_the_control_api_listens() -> None:
    async with serve(SCENARIO, *PICK_PORTS, *CONTROL, as_json=True) as served:
        control = served.ready["control"]
        assert control["host"] == "127.0.0.1" and control["port"] > 0
        world = await get_json(f"http://{served.control}/api/v1/world")
        assert world["dns"] == served.ready["dns"]
        assert world["smtp_port"] == served.smtp_port
        async with (
            aiohttp.ClientSession() as http,
            http.put(
                f"http://{served.control}/api/v1/hosts/mx1.example.test/behaviour", json="accept"
            ) as answer,
        ):
            assert answer.status == 200
        record = json.loads(await served.read_until('"kind": "control"'))
        assert (record["action"], record["target"], record["value"]) == (
            "behaviour",
            "mx1.example.test",
            "accept",
        )
        code, _, _ = await served.stop()
    assert code == 0


async def test_the_ready_line_says_where_the_control_api_listens() -> None:
    async with serve(SCENARIO, *PICK_PORTS, *CONTROL) as served:
        host, _, port = served.control.rpartition(":")
        assert host == "127.0.0.1" and int(port) > 0
        assert any(
            line.startswith(f"  Control API  http://{served.control}/api/v1")
            for line in served.lines
        )
        await get_json(f"http://{served.control}/api/v1/openapi.json")
        code, rest, _ = await served.stop()
    assert code == 0 and "Stopped after" in rest


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig is not installed")
async def test_a_shell_script_drives_the_api_with_curl() -> None:
    async with serve(SCENARIO, *PICK_PORTS, *CONTROL) as served:
        script = await asyncio.create_subprocess_exec(
            "bash",
            str(SCRIPT),
            served.control,
            f"{served.dns[0]}:{served.dns[1]}",
            str(served.smtp_port),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            out, err = await script.communicate()
        assert script.returncode == 0, (out.decode(), err.decode())
        assert out.decode().startswith("ok: data: ")
        # The sandbox still answers after all of it, and says what the script changed.
        await get_json(f"http://{served.control}/api/v1/world")
        code, rest, _ = await served.stop()
    assert code == 0
    assert "CONTROL behaviour mx1.example.test: accept" in "\n".join(served.lines)
    assert "CONTROL reset" in rest or "CONTROL reset" in "\n".join(served.lines)


def test_control_outside_loopback_is_refused_at_the_command_line() -> None:
    done = mxsandbox("serve", str(SCENARIO), *PICK_PORTS, "--control", "192.0.2.1:8080")
    assert done.returncode == 2
    assert "192.0.2.1 is not a loopback address" in done.stderr


async def test_a_control_port_already_taken_is_exit_2_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "sandbox", "serve", str(SCENARIO), *PICK_PORTS),
            *("--control", f"127.0.0.1:{port}"),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(STOP_TIMEOUT * 2):
            out, err = await process.communicate()
    assert process.returncode == 2, (out, err)
    assert f"the control API cannot listen on 127.0.0.1:{port}" in err.decode()
    assert "Traceback" not in err.decode()


async def test_sigterm_stops_serve_with_an_event_stream_open() -> None:
    async with (
        serve(SCENARIO, *PICK_PORTS, *CONTROL, as_json=True) as served,
        aiohttp.ClientSession() as http,
        http.get(f"http://{served.control}/api/v1/events") as stream,
    ):
        await stream.content.readuntil(b"\n\n")
        # A guard against a hang, not a measurement: an open stream must not keep serve up.
        async with asyncio.timeout(30):
            code, rest, _ = await served.stop(signal.SIGTERM)
        assert await stream.content.read() == b""  # the stream ended with the sandbox
    assert code == 0
    assert json.loads(rest.splitlines()[-1])["kind"] == "stopped"
