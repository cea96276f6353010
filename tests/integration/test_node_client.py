"""The control API from Node.js (``fetch`` only) with a Node MX-walking sender of its own
(``node:dns`` Resolver pointed at the sandbox's DNS server, SMTP over ``node:net``): mx1 is
switched from refuse to accept halfway through, and the sessions are read back. The scripts
are in tests/node/; ``scripts/setup-system`` installs Node.js where it is missing."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest

from tests.helpers import ROOT
from tests.integration.serve_process import PICK_PORTS, serve

NODE = shutil.which("node")
FLOW = ROOT / "tests" / "node" / "control_flow.mjs"

pytestmark = pytest.mark.skipif(
    NODE is None, reason="node is not installed (scripts/setup-system installs it)"
)


async def test_a_node_sender_and_fetch_drive_a_served_scenario() -> None:
    assert NODE is not None
    scenario = ROOT / "scenarios" / "primary-down.yaml"
    async with serve(scenario, *PICK_PORTS, "--control", "127.0.0.1:0", as_json=True) as served:
        node = await asyncio.create_subprocess_exec(
            NODE,
            str(FLOW),
            served.control,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            out, err = await node.communicate()
        assert node.returncode == 0, (out.decode(), err.decode())
        code, rest, _ = await served.stop()
    assert code == 0
    summary = json.loads(out)
    assert (summary["first"]["status"], summary["first"]["host"]) == (
        "delivered",
        "mx2.example.test",
    )
    assert "ECONNREFUSED" in summary["first"]["log"][0]
    assert summary["put"] == {"status": 200, "behaviour": "accept"}
    assert (summary["second"]["status"], summary["second"]["host"]) == (
        "delivered",
        "mx1.example.test",
    )
    full = "220, EHLO→250, MAIL→250, RCPT→250, DATA→354, <message>→250, QUIT→221"
    assert summary["sessions"] == {"mx1.example.test": [full], "mx2.example.test": [full]}
    assert summary["subjects"] == ["Hello from Node"]
    assert summary["events"] == [
        "host_session mx2.example.test",
        "control mx1.example.test: accept",
        "host_session mx1.example.test",
    ]
    assert summary["bad"]["status"] == 400
    assert "3-digit reply code" in summary["bad"]["body"]["error"]
    # What serve itself recorded agrees: its stopped record has one message at each host.
    stopped = json.loads(rest.splitlines()[-1])
    accepted = {h["name"]: [m["sender"] for m in h["accepted"]] for h in stopped["hosts"]}
    assert accepted == {
        "mx1.example.test": ["bob@example.net"],
        "mx2.example.test": ["bob@example.net"],
    }
