"""Hermetic by construction: a scenario full of real names and public addresses sends nothing
past loopback.

The check is the interpreter's own: an audit hook (PEP 578) sees every ``socket.connect``,
``socket.bind``, ``socket.sendto``/``sendmsg`` and name lookup that Python code makes, asyncio's
included, whoever makes it. While a test watches, every address must be loopback, and no name
may be looked up through the system's resolver. The scenario delivers to gmail.com, whose MX
hosts the zone puts at 8.8.8.8 and 2001:4860::1, and to yahoo.com, which no zone has.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message
import dns.rdatatype

from sandbox import ServedWorld, run_scenario, scenario_from_mapping
from tests.helpers import ROOT

REAL_LOOKING: dict[str, Any] = {
    "name": "real-names",
    "zones": {
        "gmail.com": (
            "$TTL 300\n"
            "@ IN MX 5 gmail-smtp-in.l.google.com.\n"
            "@ IN MX 10 alt1\n"
            "alt1 IN A 8.8.8.8\n"
            "alt1 IN AAAA 2001:4860::1\n"
        ),
        "google.com": (
            "$TTL 300\n"
            "gmail-smtp-in.l IN A 142.250.27.26\n"
            "gmail-smtp-in.l IN AAAA 2a00:1450:400c:c0b::1b\n"
        ),
        "example.com": "@ IN MX 10 8.8.4.4.\n",  # an MX naming an IP literal
    },
    "hosts": {"142.250.27.26": "refuse", "2a00:1450:400c:c0b::1b": "timeout"},
    "messages": [
        {"from": "me@example.org", "to": ["someone@gmail.com", "other@gmail.com"]},
        {"from": "me@example.org", "to": "nobody@yahoo.com"},
        {"from": "me@example.org", "to": "user@example.com"},
    ],
    "sender": {"max_lifetime": "1h"},
}

_WATCHED = {
    "socket.connect",
    "socket.bind",
    "socket.sendto",
    "socket.sendmsg",
    "socket.getaddrinfo",
    "socket.gethostbyname",
    "socket.gethostbyname_ex",
    "socket.gethostbyaddr",
}
_seen: list[tuple[str, tuple[Any, ...]]] | None = None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _seen is not None and event in _WATCHED:
        _seen.append((event, args))


# An audit hook cannot be removed; it records only while a test watches (``_seen`` set).
sys.addaudithook(_audit)


@contextmanager
def watching() -> Iterator[list[tuple[str, tuple[Any, ...]]]]:
    global _seen
    _seen = []
    try:
        yield _seen
    finally:
        _seen = None


def is_loopback(host: object) -> bool:
    try:
        address = ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def escapes(seen: list[tuple[str, tuple[Any, ...]]]) -> list[str]:
    """Every watched call that reached past loopback, or asked the system to resolve a name."""
    found = []
    for event, args in seen:
        if event in ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"):
            sock, address = args[0], args[1]
            if sock.family == socket.AF_UNIX:  # asyncio's own wake-up pipe: not a network
                continue
            if address is None:  # sendmsg on a connected socket
                continue
            if not is_loopback(address[0]):
                found.append(f"{event} {address!r}")
        elif event == "socket.getaddrinfo":
            if not is_loopback(args[0]):  # a numeric loopback literal is not a lookup
                found.append(f"{event} {args[0]!r}")
        else:
            found.append(f"{event} {args!r}")
    return found


def kinds(seen: list[tuple[str, tuple[Any, ...]]]) -> set[str]:
    return {event for event, _ in seen}


def test_a_run_with_real_names_and_public_addresses_stays_on_loopback() -> None:
    scenario = scenario_from_mapping(REAL_LOOKING)
    with watching() as seen:
        result = run_scenario(scenario)
    assert not escapes(seen), escapes(seen)
    assert {"socket.bind", "socket.connect"} <= kinds(seen)  # the hook did see the traffic
    rows = {d.recipient: d for d in result.deliveries}
    # Delivered to "8.8.8.8" and "2001:4860::1": the sandbox's own hosts, playing them.
    assert rows["someone@gmail.com"].status == "delivered"
    assert rows["someone@gmail.com"].address in ("8.8.8.8", "2001:4860::1")
    assert rows["nobody@yahoo.com"].status == "bounced"  # no zone: NXDOMAIN, never the internet
    assert (rows["user@example.com"].status, rows["user@example.com"].address) == (
        "delivered",
        "8.8.4.4",  # the MX's IP literal, played by a sandbox host too
    )


def test_the_check_itself_sees_an_address_outside_loopback() -> None:
    # Binding the wildcard address sends nothing anywhere, but it is not loopback: the
    # check must flag it, or its silence above would prove nothing.
    with watching() as seen, socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
    assert escapes(seen) == ["socket.bind ('0.0.0.0', 0)"]


def test_the_command_line_stays_on_loopback(tmp_path: Path) -> None:
    """The same check around the real ``mxsandbox run`` in a fresh interpreter."""
    scenario = tmp_path / "real.yaml"
    scenario.write_text(json.dumps(REAL_LOOKING), encoding="utf-8")  # JSON is YAML
    log = tmp_path / "sockets.jsonl"
    program = f"""
import json, socket, sys
log = open({str(log)!r}, "w")
def hook(event, args):
    if event in ("socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo"):
        target = args[1] if event != "socket.getaddrinfo" else (args[0],)
        if event != "socket.getaddrinfo" and args[0].family == socket.AF_UNIX:
            return
        log.write(json.dumps([event, str(target[0]) if target else None]) + "\\n")
        log.flush()
sys.addaudithook(hook)
from sandbox.cli import main
sys.exit(main(["run", {str(scenario)!r}, "--json"]))
"""
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    assert json.loads(done.stdout)["scenario"] == "real-names"
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert {"socket.connect", "socket.bind"} <= {event for event, _ in calls}
    outside = [(event, host) for event, host in calls if host is not None and not is_loopback(host)]
    assert not outside, outside


async def test_serve_mode_binds_and_answers_only_loopback() -> None:
    """Serve mode is for senders outside the sandbox: its DNS must send them to loopback."""
    scenario = scenario_from_mapping(REAL_LOOKING)
    sandbox = ServedWorld(scenario)
    with watching() as seen:
        await sandbox.start()
        try:
            host, port = sandbox.dns_address
            answers: list[str] = []
            for name, rdtype in (
                ("alt1.gmail.com", "A"),
                ("alt1.gmail.com", "AAAA"),
                ("gmail-smtp-in.l.google.com", "A"),
                ("gmail-smtp-in.l.google.com", "AAAA"),
            ):
                query = dns.message.make_query(name, rdtype)
                response = await dns.asyncquery.udp(query, host, port=port, timeout=5)
                answers += [
                    rdata.address
                    for rrset in response.answer
                    if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
                    for rdata in rrset
                ]
        finally:
            await sandbox.stop()
            await asyncio.sleep(0)
    assert not escapes(seen), escapes(seen)
    assert "socket.bind" in kinds(seen)
    assert len(answers) == 4
    assert all(is_loopback(a) for a in answers), answers
    assert all(is_loopback(p.address) for p in sandbox.placements)
