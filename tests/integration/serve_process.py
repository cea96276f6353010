"""`mxsandbox serve` as a child process, for the tests: start it, read its output as it comes,
stop it with a signal, always clean up. Ports are never fixed: ``--dns 127.0.0.1:0`` and
``--smtp-port 0`` let it pick, and its ``ready`` output says what it picked."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosmtplib

from tests.helpers import ROOT
from tests.integration.user_sender import make_message

READY = re.compile(
    r"^ready: dns (?P<host>\S+):(?P<port>\d+) smtp-port (?P<smtp>\d+)"
    r"(?: control (?P<control>\S+))?(?: ca-file (?P<ca_file>\S+))?$"
)
# Let serve pick free ports; its ready output says which.
PICK_PORTS = ("--dns", "127.0.0.1:0", "--smtp-port", "0")
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


@dataclass
class ServeProcess:
    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    dns: tuple[str, int] = ("", 0)
    smtp_port: int = 0
    control: str = ""  # HOST:PORT of the control API, with --control
    ca_file: str = ""  # the world's CA certificate (PEM)
    ready: dict[str, Any] = field(default_factory=dict)

    async def read_line(self, timeout: float = STARTUP_TIMEOUT) -> str:
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            raw = await self.process.stdout.readline()
        if not raw:
            raise AssertionError(f"mxsandbox serve ended early:\n{await self.stderr()}")
        line = raw.decode().rstrip("\n")
        self.lines.append(line)
        return line

    async def read_until(self, wanted: str, timeout: float = STARTUP_TIMEOUT) -> str:
        """Read lines until one contains ``wanted``; return it."""
        async with asyncio.timeout(timeout):
            while True:
                line = await self.read_line(timeout)
                if wanted in line:
                    return line

    async def stop(self, signum: int = signal.SIGINT) -> tuple[int, str, str]:
        """Send ``signum``; return the exit code, the rest of stdout and stderr."""
        self.process.send_signal(signum)
        async with asyncio.timeout(STOP_TIMEOUT):
            rest, errors = await self.process.communicate()
        self.lines += rest.decode().splitlines()
        assert self.process.returncode is not None
        return self.process.returncode, rest.decode(), errors.decode()

    async def stderr(self) -> str:
        assert self.process.stderr is not None
        async with asyncio.timeout(STOP_TIMEOUT):
            return (await self.process.stderr.read()).decode()


@asynccontextmanager
async def serve(
    scenario: str | Path,
    *options: str,
    prefix: Sequence[str] = (),
    as_json: bool = False,
) -> AsyncIterator[ServeProcess]:
    """`mxsandbox serve SCENARIO OPTIONS` (under ``prefix``, e.g. ``ip netns exec NS``),
    running and ready; killed on the way out if the test did not stop it."""
    command = [*prefix, sys.executable, "-m", "sandbox", "serve", str(scenario), *options]
    if as_json:
        command.append("--json")
    process = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    served = ServeProcess(process)
    try:
        if as_json:
            served.ready = json.loads(await served.read_line())
            assert served.ready["kind"] == "ready", served.ready
            served.dns = (served.ready["dns"]["host"], served.ready["dns"]["port"])
            served.smtp_port = served.ready["smtp_port"]
            if "control" in served.ready:
                control = served.ready["control"]
                served.control = f"{control['host']}:{control['port']}"
            served.ca_file = served.ready.get("ca_file", "")
        else:
            match = READY.match(await served.read_until("ready: "))
            assert match is not None, served.lines
            served.dns = (match["host"], int(match["port"]))
            served.smtp_port = int(match["smtp"])
            served.control = match["control"] or ""
            served.ca_file = match["ca_file"] or ""
        yield served
    finally:
        if process.returncode is None:
            process.kill()
            await process.communicate()


async def dig(dns: tuple[str, int], *query: str, prefix: Sequence[str] = ()) -> list[str]:
    """The real `dig @HOST -p PORT QUERY… +short`, its answer lines."""
    process = await asyncio.create_subprocess_exec(
        *prefix,
        "dig",
        f"@{dns[0]}",
        "-p",
        str(dns[1]),
        *query,
        "+short",
        "+time=2",
        "+tries=2",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(STOP_TIMEOUT):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode().splitlines()


async def smtp_send(address: str, port: int) -> str:
    """One message from bob@example.net to alice@example.test; the reply to the final dot."""
    smtp = aiosmtplib.SMTP(
        hostname=address,
        port=port,
        timeout=10,
        local_hostname="sender.example.net",
        start_tls=False,
    )
    await smtp.connect()
    try:
        _, reply = await smtp.sendmail(
            "bob@example.net", ["alice@example.test"], make_message().as_bytes()
        )
    finally:
        await smtp.quit()
    return reply
