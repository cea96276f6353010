"""Shutdown mid-flight: Ctrl-C during a run or while serving ends cleanly, with the summary so
far, and nothing a host already accepted goes missing from it.

- ``mxsandbox run`` gets a real SIGINT while messages are being delivered: it exits 130 (as a
  shell reports Ctrl-C), prints the JSON (``"interrupted": true``) or the summary, says on
  stderr when it stopped, and never a traceback. Every (message, recipient) has a row; every
  delivered one is in the trace's ``host_accepted`` events; the hosts' ``accepted`` counts
  match them.
- ``Sandbox.interrupt()`` (what the SIGINT handler calls) at a chosen virtual time: what the
  hosts stored but the sender never heard confirmed is a message in flight, reported as
  deferred, like a dropped final dot.
- ``mxsandbox serve`` gets SIGINT in the middle of a client's DATA: it exits 0 (Ctrl-C is how
  serve mode ends) and its ``stopped`` record lists the message accepted before, and the cut
  session with its incomplete content.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from sandbox import HostAccepted, RunFinished, RunResult, Sandbox, Scenario, scenario_from_mapping
from sandbox.core.addresses import canonical
from tests.helpers import ROOT

# Long enough in wall time (a few seconds) that a SIGINT lands in the middle of it; mx2 takes
# 30 s to answer the final dot, so some messages are always in flight.
LONG_RUN: dict[str, Any] = {
    "name": "long-run",
    "seed": 1,
    "zones": {
        "example.test": (
            "$TTL 3600\n@ IN MX 10 mx1\n@ IN MX 10 mx2\n"
            "mx1 IN A 192.0.2.10\nmx2 IN A 192.0.2.11\n"
        )
    },
    "hosts": {
        "mx1.example.test": [{"until": "20m", "do": "refuse"}, {"do": "accept"}],
        "mx2.example.test": {"delay": {"message": "30s"}},
    },
    "messages": [
        {"from": "bob@example.net", "to": ["alice@example.test", "carol@example.test"],
         "count": 3000, "at": 0},
    ],
}  # fmt: skip


def every_row_is_there(scenario: Scenario, deliveries: list[dict[str, Any]]) -> None:
    expected = Counter((m.number, r) for m in scenario.messages for r in m.recipients)
    assert Counter((d["message"], d["recipient"]) for d in deliveries) == expected


# --- the run command, with a real SIGINT ---------------------------------------------------


def interrupted_run(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Start ``mxsandbox run``, wait until a message is delivered, then SIGINT it."""
    scenario = tmp_path / "long.yaml"
    scenario.write_text(json.dumps(LONG_RUN), encoding="utf-8")
    trace = tmp_path / "trace.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "run", str(scenario), "--trace", str(trace), *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        # The trace is written in blocks: once one holds a delivery, the run is well under way
        # (a bounded wait, polling a file the process writes).
        while time.monotonic() < deadline and process.poll() is None:
            if trace.exists() and '"status": "delivered"' in trace.read_text(encoding="utf-8"):
                break
            time.sleep(0.01)
        assert process.poll() is None, "the run ended before it could be interrupted"
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), trace


def test_sigint_during_a_run_prints_the_json_so_far_and_exits_130(tmp_path: Path) -> None:
    done, trace = interrupted_run(tmp_path, "--json")
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("interrupted at ") and done.stderr.count("\n") == 1
    data = json.loads(done.stdout)
    assert data["interrupted"] is True
    events = [json.loads(line) for line in trace.read_text(encoding="utf-8").splitlines()]
    finished = [e for e in events if e["kind"] == "run_finished"]
    assert [e["reason"] for e in finished] == ["interrupted"]

    scenario = scenario_from_mapping(LONG_RUN)
    every_row_is_there(scenario, data["deliveries"])
    statuses = Counter(d["status"] for d in data["deliveries"])
    assert statuses["delivered"] > 0 and statuses["deferred"] > 0  # it was mid-flight
    accepted = [e for e in events if e["kind"] == "host_accepted"]
    copies = Counter((canonical(e["address"]), r) for e in accepted for r in e["recipients"])
    delivered = Counter(
        (canonical(d["address"]), d["recipient"])
        for d in data["deliveries"]
        if d["status"] == "delivered"
    )
    assert not delivered - copies, "a delivery no host accepted"
    in_flight = copies - delivered  # stored, the 250 never read: at most one per session
    assert sum(in_flight.values()) <= 2 * 20  # two recipients, 20 sessions to one domain
    per_host = Counter(e["host"] for e in accepted)
    assert {h: v["accepted"] for h, v in data["hosts"].items()} == {
        h: per_host[h] for h in data["hosts"]
    }


def test_sigint_during_a_run_prints_the_summary_so_far(tmp_path: Path) -> None:
    done, _ = interrupted_run(tmp_path, "--quiet")
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    assert "interrupted at " in done.stderr
    assert "mx1.example.test" in done.stdout and "mx2.example.test" in done.stdout


# --- Sandbox.interrupt() at a chosen virtual time ------------------------------------------


async def interrupt_at(when: float, scenario: Scenario) -> RunResult:
    async with Sandbox(scenario) as sandbox:
        asyncio.get_running_loop().call_later(when, sandbox.interrupt)
        return await sandbox.run()


@pytest.mark.looptime
async def test_interrupt_keeps_the_run_so_far_and_settles_the_rest_as_deferred() -> None:
    first = {"from": "bob@example.net", "to": ["alice@example.test", "carol@example.test"]}
    small = {**LONG_RUN, "messages": [{**first, "count": 10}, {**first, "count": 40, "at": 600}]}
    scenario = scenario_from_mapping(small)
    # mx1 refuses for 20 minutes, so everything goes to mx2, which answers the dot 30 s
    # late: at 615 s the first ten are delivered, ten sessions wait for their 250 (Postfix's
    # concurrency window by then: 5 at first, one more per delivery up to the attempts in
    # flight plus 5) and thirty messages wait for a session.
    result = await interrupt_at(615, scenario)
    assert result.interrupted
    assert result.to_json()["interrupted"] is True
    (finished,) = [e for e in result.events if isinstance(e, RunFinished)]
    assert (finished.reason, finished.t) == ("interrupted", 615)
    every_row_is_there(
        scenario, [{"message": d.message, "recipient": d.recipient} for d in result.deliveries]
    )
    statuses = Counter(d.status for d in result.deliveries)
    assert set(statuses) <= {"delivered", "deferred"} and statuses["deferred"] > 0
    accepted = [e for e in result.events if isinstance(e, HostAccepted)]
    for row in result.deliveries:
        if row.status == "delivered":
            assert any(row.recipient in e.recipients and e.t <= row.at for e in accepted), row
    unconfirmed = [e for e in accepted if e.t > 615 - 30]  # stored, reply still being delayed
    assert len(unconfirmed) == 10
    assert statuses == {"delivered": 20, "deferred": 80}
    assert len(accepted) == sum(h.accepted for h in result.hosts)
    for event in unconfirmed:
        for recipient in event.recipients:
            assert any(
                d.recipient == recipient and d.status == "deferred" for d in result.deliveries
            )


@pytest.mark.looptime
async def test_an_interrupt_before_the_run_starts_settles_everything_as_deferred() -> None:
    one = {"from": "bob@example.net", "to": ["alice@example.test", "carol@example.test"]}
    scenario = scenario_from_mapping({**LONG_RUN, "messages": [{**one, "count": 2}]})
    async with Sandbox(scenario) as sandbox:
        sandbox.interrupt()
        result = await sandbox.run()
    assert result.interrupted
    assert {d.status for d in result.deliveries} == {"deferred"}
    assert len(result.deliveries) == 4


@pytest.mark.looptime
async def test_cancelling_the_run_from_outside_is_not_an_interrupt() -> None:
    scenario = scenario_from_mapping(LONG_RUN)
    async with Sandbox(scenario) as sandbox:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(60):
                await sandbox.run()


# --- serve, with a real SIGINT -------------------------------------------------------------

SERVED: dict[str, Any] = {
    "name": "served",
    "zones": {"example.test": "@ IN MX 10 mx1\nmx1 IN A 192.0.2.10\n"},
    "messages": [],
}


async def read_json_line(stream: asyncio.StreamReader) -> dict[str, Any]:
    line = await asyncio.wait_for(stream.readline(), 30)
    assert line, "serve ended early"
    record: dict[str, Any] = json.loads(line)
    return record


async def smtp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes) -> int:
    writer.write(line)
    await writer.drain()
    while True:
        reply = await asyncio.wait_for(reader.readline(), 30)
        if reply[3:4] != b"-":
            return int(reply[:3])


async def test_sigint_while_serving_mid_transaction_keeps_what_was_accepted(
    tmp_path: Path,
) -> None:
    scenario = tmp_path / "served.yaml"
    scenario.write_text(json.dumps(SERVED), encoding="utf-8")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sandbox", "serve", str(scenario),
        "--dns", "127.0.0.1:0", "--smtp-port", "0", "--json",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    try:
        ready = await read_json_line(process.stdout)
        assert ready["kind"] == "ready"
        (host,) = ready["hosts"]
        reader, writer = await asyncio.open_connection(host["address"], host["port"])
        assert (await asyncio.wait_for(reader.readline(), 30))[:3] == b"220"
        for command, code in (
            (b"EHLO client.example.net\r\n", 250),
            (b"MAIL FROM:<bob@example.net>\r\n", 250),
            (b"RCPT TO:<alice@example.test>\r\n", 250),
            (b"DATA\r\n", 354),
            (b"Subject: first\r\n\r\nkept\r\n.\r\n", 250),
            (b"MAIL FROM:<bob@example.net>\r\n", 250),
            (b"RCPT TO:<carol@example.test>\r\n", 250),
            (b"DATA\r\n", 354),
        ):
            assert await smtp(reader, writer, command) == code
        writer.write(b"Subject: second\r\n\r\nhalf of it")  # and then Ctrl-C
        await writer.drain()
        while True:  # the host has seen the half message once its session says so
            record = await read_json_line(process.stdout)
            if record["kind"] == "host_accepted":
                break
        process.send_signal(signal.SIGINT)
        rest, errors = await asyncio.wait_for(process.communicate(), 60)
        writer.close()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, errors
    assert b"Traceback" not in errors
    stopped = json.loads(rest.decode().splitlines()[-1])
    assert stopped["kind"] == "stopped"
    (served,) = stopped["hosts"]
    assert [m["recipients"] for m in served["accepted"]] == [["alice@example.test"]]
    (session,) = served["sessions"]
    lines = [line for _, side, line in session["transcript"] if side == "C"]
    # However much of the half message the host had read when it stopped:
    assert lines[-1].startswith("<message: ") and lines[-1].endswith(" bytes, incomplete>")
    assert session["closed"] is not None


def test_sigint_while_the_json_is_being_printed_leaves_valid_json(tmp_path: Path) -> None:
    """The reader takes one byte, then stops: the JSON (about 1 MB) fills the pipe and the
    write blocks half-way. A Ctrl-C there must not cut the object short."""
    scenario = tmp_path / "big.yaml"
    quick = {
        **LONG_RUN,
        "hosts": {},
        "messages": [{"from": "bob@example.net", "to": ["alice@example.test"], "count": 3000}],
    }
    scenario.write_text(json.dumps(quick), encoding="utf-8")
    command = [sys.executable, "-m", "sandbox", "run", str(scenario), "--json"]
    with subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.read(1)  # printing has begun
        process.send_signal(signal.SIGINT)
        rest = process.stdout.read()
        code = process.wait(timeout=60)
        errors = process.stderr.read().decode()
    assert len(first + rest) > 200_000, "the JSON must be longer than a pipe holds"
    data = json.loads(first + rest)
    assert len(data["deliveries"]) == 3000
    assert code == 130, errors
    assert "Traceback" not in errors


# A Ctrl-C that lands while the command's modules are still being imported: an import hook
# raises KeyboardInterrupt where the signal would, at the import of ``sandbox.cli``.
_INTERRUPTED_IMPORT = """
import sys

class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "sandbox.cli":
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, CtrlC())
from sandbox.__main__ import entry
sys.exit(entry())
"""


def test_sigint_while_the_command_loads_exits_130_without_a_traceback() -> None:
    # It was a KeyboardInterrupt traceback and a death by SIGINT (the point 14).
    done = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED_IMPORT, "run", "primary-down", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (130, "", "interrupted\n")


def test_the_mxsandbox_command_enters_through_the_guarded_entry_point() -> None:
    entry_points = importlib.metadata.entry_points(group="console_scripts", name="mxsandbox")
    assert [e.value for e in entry_points] == ["sandbox.__main__:entry"]
