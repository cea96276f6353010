"""The --smtp recipe of docs/conformance.md, as an MTA will run it: everything inside a network
namespace of its own, the DNS router on 127.0.0.1:53, every mail host on port 25, the MTA
taking mail on 127.0.0.1:2525 and counting 127.0.0.99 as its own address. The MTA here is the
test relay built on our sender (tests/conform/relay.py); Postfix, Exim and Haraka take its
place in the real-MTA runs. Skipped, with the reason, where namespaces cannot be made."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT
from tests.integration.test_postfix import netns  # the namespace fixture

__all__ = ["netns"]

TIMEOUT = 120


def test_an_mta_in_a_namespace_is_graded_through_ports_53_and_25(
    netns: str, tmp_path: Path
) -> None:
    inside = ["ip", "netns", "exec", netns]
    relay = subprocess.Popen(
        [*inside, sys.executable, "-m", "tests.conform.relay", "--listen", "127.0.0.1:2525",
         "--dns", "127.0.0.1:53", "--smtp-port", "25", "--self", "127.0.0.99"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        assert relay.stdout is not None
        assert relay.stdout.readline().startswith("ready 127.0.0.1:2525"), relay.stdout.read()
        report = tmp_path / "relay.json"
        done = subprocess.run(
            [*inside, sys.executable, "-m", "sandbox", "conform", "--smtp", "127.0.0.1:2525",
             "--dns", "127.0.0.1:53", "--smtp-port", "25", "--self", "127.0.0.99",
             "--time-scale", "100", "--case-timeout", "12", "--json", str(report),
             "--case", "mx-order", "--case", "failover-refused", "--case", "self-*",
             "--case", "no-failover-550-rcpt", "--case", "retry-after-4xx", "--quiet"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )  # fmt: skip
    finally:
        relay.terminate()
        relay.wait(timeout=TIMEOUT)
        if relay.stdout is not None:
            relay.stdout.close()
    assert done.returncode == 0, done.stdout + done.stderr
    cases = {case["id"]: case for case in json.loads(report.read_text())["cases"]}
    assert {case["verdict"] for case in cases.values()} == {"pass"}, cases
    assert len(cases) == 6
    # The hosts listened on port 25 of their own loopback addresses.
    sessions = cases["mx-order"]["evidence"]["sessions"]
    assert sessions and all(s["address"].startswith("127.") for s in sessions)
