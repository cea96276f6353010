"""`mxsandbox serve` as a user meets it: a real process, the real `dig`, SMTP to the printed
addresses, Ctrl-C (SIGINT) or SIGTERM, and the summary of what each host saw."""

from __future__ import annotations

import json
import re
import signal
import socket
from pathlib import Path

import aiosmtplib
import pytest

from tests.helpers import mxsandbox
from tests.integration.serve_process import PICK_PORTS, dig, serve, smtp_send


def table_addresses(lines: list[str]) -> dict[str, str]:
    """host name → "address:port" from the start-up table."""
    found = {}
    for line in lines:
        match = re.match(r"^\s+(\S+\.test)\s+(\S+)\s+(127\.\S+:\d+)\s+(.+)$", line)
        if match:
            found[match[1]] = match[3]
    return found


async def test_serve_answers_dig_takes_smtp_and_stops_on_ctrl_c() -> None:
    async with serve("scenarios/primary-down.yaml", *PICK_PORTS) as served:
        assert served.dns[0] == "127.0.0.1" and served.dns[1] > 0
        where = table_addresses(served.lines)
        assert set(where) == {"mx1.example.test", "mx2.example.test"}
        assert {w.rsplit(":", 1)[1] for w in where.values()} == {str(served.smtp_port)}
        mx1, mx2 = (where[h].rsplit(":", 1)[0] for h in ("mx1.example.test", "mx2.example.test"))
        assert any(
            re.search(r"mx1\.example\.test\s+192\.0\.2\.10\s+.*refuse$", line)
            for line in served.lines
        )

        assert await dig(served.dns, "MX", "example.test") == [
            "10 mx1.example.test.",
            "20 mx2.example.test.",
        ]
        assert await dig(served.dns, "A", "mx1.example.test") == [mx1]
        assert await dig(served.dns, "+tcp", "A", "mx2.example.test") == [mx2]

        with pytest.raises(aiosmtplib.SMTPConnectError):
            await smtp_send(mx1, served.smtp_port)
        assert (await smtp_send(mx2, served.smtp_port)).startswith("2.0.0 Ok: queued as")
        live = await served.read_until("SMTP    mx2.example.test [")
        assert live.endswith("<message>→250, QUIT→221")

        code, rest, errors = await served.stop(signal.SIGINT)
    assert code == 0, errors
    assert "Traceback" not in errors
    assert re.search(rf"mx1\.example\.test\s+{re.escape(mx1)}:\d+\s+0\s+0$", rest, re.M)
    assert re.search(rf"mx2\.example\.test\s+{re.escape(mx2)}:\d+\s+1\s+1$", rest, re.M)
    assert re.search(
        r"mx2\.example\.test from 127\.0\.0\.1: 220, EHLO→250, MAIL→250, "
        r"RCPT→250, DATA→354, <message>→250, QUIT→221",
        rest,
    )


async def test_serve_json_reports_ready_events_and_what_each_host_saw() -> None:
    async with serve("scenarios/primary-down.yaml", *PICK_PORTS, as_json=True) as served:
        hosts = {h["name"]: h for h in served.ready["hosts"]}
        assert hosts["mx1.example.test"]["zone_address"] == "192.0.2.10"
        assert hosts["mx1.example.test"]["behaviour"] == "refuse"
        assert hosts["mx2.example.test"]["port"] == served.smtp_port
        mx2 = hosts["mx2.example.test"]["address"]
        assert await dig(served.dns, "A", "mx2.example.test") == [mx2]
        await smtp_send(mx2, served.smtp_port)
        accepted = json.loads(await served.read_until('"kind": "host_accepted"'))
        assert (accepted["host"], accepted["recipients"]) == (
            "mx2.example.test",
            ["alice@example.test"],
        )
        code, rest, errors = await served.stop(signal.SIGTERM)
    assert code == 0, errors
    stopped = json.loads(rest.splitlines()[-1])
    assert stopped["kind"] == "stopped"
    saw = {h["name"]: h for h in stopped["hosts"]}
    assert saw["mx1.example.test"]["sessions"] == []
    (session,) = saw["mx2.example.test"]["sessions"]
    assert session["client"] == "127.0.0.1"
    assert [line for _, side, line in session["transcript"] if side == "S"][-1].startswith("221")
    assert [m["recipients"] for m in saw["mx2.example.test"]["accepted"]] == [
        ["alice@example.test"]
    ]


async def test_loopback_zone_addresses_are_kept_and_ipv6_is_mapped(tmp_path: Path) -> None:
    scenario = tmp_path / "loopback.yaml"
    scenario.write_text(
        "name: loopback\n"
        "zones:\n"
        "  example.test: |\n"
        "    @    IN MX 10 mx1\n"
        "    @    IN MX 20 mx2\n"
        "    @    IN MX 30 mx3\n"
        "    mx1  IN A    127.0.0.9\n"
        "    mx2  IN A    192.0.2.11\n"
        "    mx3  IN AAAA 2001:db8::25\n"
    )
    async with serve(scenario, *PICK_PORTS, as_json=True) as served:
        hosts = {h["name"]: h for h in served.ready["hosts"]}
        assert hosts["mx1.example.test"]["address"] == "127.0.0.9"
        assert hosts["mx2.example.test"]["address"] == "127.0.0.2"
        assert hosts["mx3.example.test"]["address"] == "127.0.0.3"
        assert await dig(served.dns, "A", "mx1.example.test") == ["127.0.0.9"]
        assert await dig(served.dns, "A", "mx2.example.test") == ["127.0.0.2"]
        assert await dig(served.dns, "AAAA", "mx3.example.test") == ["::ffff:127.0.0.3"]
        # A dual-stack client reaches the IPv4 socket through the mapped address.
        assert (await smtp_send("::ffff:127.0.0.3", served.smtp_port)).startswith("2.0.0")
        code, _, errors = await served.stop()
    assert code == 0, errors


@pytest.mark.parametrize(
    ("option", "complaint"),
    [
        (["--dns", "10.0.0.1:53"], "10.0.0.1 is not a loopback address"),
        (["--dns", "localhost"], "is not HOST:PORT"),
        (["--smtp-port", "70000"], "70000 is not a port number"),
    ],
)
def test_bad_options_exit_2_with_one_line(option: list[str], complaint: str) -> None:
    done = mxsandbox("serve", "primary-down", *option)
    assert done.returncode == 2
    assert complaint in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_port_in_use_exits_2_and_says_so() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = mxsandbox("serve", "primary-down", "--dns", f"127.0.0.1:{port}", "--smtp-port", "0")
    assert done.returncode == 2
    # (UDP comes first: on the rare machine where another program holds the same number for
    # UDP, that is the complaint, and just as right.)
    assert re.search(rf"cannot listen on (TCP|UDP) 127\.0\.0\.1:{port}\b", done.stderr)
    assert "with --dns HOST:PORT" in done.stderr  # the option that mends it
    assert "Traceback" not in done.stderr


def test_the_default_dns_port_is_not_multicast_dns() -> None:
    """5353 is mDNS's port, which avahi holds on many desktops: the default must not be it."""
    done = mxsandbox("serve", "--help")
    assert done.returncode == 0
    default = re.search(r"default 127\.0\.0\.1:(\d+)", " ".join(done.stdout.split()))
    assert default is not None, done.stdout
    assert int(default.group(1)) not in (53, 5353)


def test_an_smtp_port_in_use_exits_2_and_says_so() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.2", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = mxsandbox("serve", "primary-down", "--dns", "127.0.0.1:0", "--smtp-port", str(port))
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.2:{port}" in done.stderr
    assert "choose another SMTP port" in done.stderr


def test_a_missing_scenario_exits_2() -> None:
    done = mxsandbox("serve", "no-such-scenario.yaml", *PICK_PORTS)
    assert done.returncode == 2
    assert "no such file" in done.stderr


async def test_sigterm_during_quiet_serving_stops_cleanly() -> None:
    async with serve("null-mx", *PICK_PORTS) as served:
        code, rest, errors = await served.stop(signal.SIGTERM)
    assert (code, errors) == (0, "")
    assert "Stopped after" in rest
