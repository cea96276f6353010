"""``mxsandbox serve FILE``: a scenario's DNS server and mail hosts, up until interrupted.

It prints where everything listens (a table for people, and one ``ready:`` line that a script
can parse), then one line per DNS query and per SMTP session as they happen. Ctrl-C (SIGINT)
or SIGTERM closes every server and prints what each host saw. With ``--json`` the output is
JSON Lines instead: ``{"kind": "ready", …}``, every event as ``--trace`` writes it, and
``{"kind": "stopped", …}`` with every host's sessions and accepted messages — those that
``--retain`` kept, with the exact counts of all of them and of those it dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from sandbox.core.addresses import is_loopback
from sandbox.errors import DnsAddressInUse, SandboxError
from sandbox.events import (
    ControlChanged,
    DnsServed,
    Event,
    HostAccepted,
    HostPhase,
    HostSession,
    PolicyServed,
    Warning,
    event_to_dict,
)
from sandbox.hosts.transcript import session_outline
from sandbox.output.narrative import clock_text
from sandbox.output.stream import LineStream
from sandbox.scenario.model import Scenario
from sandbox.serve.plan import CLI_FIRST_ADDRESS, DEFAULT_DNS, DEFAULT_SMTP_PORT, Placement
from sandbox.serve.resources import AcceptFailures, raise_fd_limit
from sandbox.serve.retention import DEFAULT_RETENTION, Retention

if TYPE_CHECKING:
    from sandbox.hosts.host import MailHost
    from sandbox.serve.control import ControlServer
    from sandbox.serve.world import ServedWorld

__all__ = ["add_serve_arguments", "serve_scenario"]

EXIT_OK, EXIT_INVALID = 0, 2
# The MTA-STS policy server's port: HTTPS's own where serve may bind it, else 8443.
DEFAULT_HTTPS_PORTS = (443, 8443)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a scenario file, or the name of one in ./scenarios")
    parser.add_argument(
        "--dns",
        type=_host_port,
        default=DEFAULT_DNS,
        metavar="HOST:PORT",
        help=f"where the DNS server listens, UDP and TCP (default {DEFAULT_DNS[0]}:"
        f"{DEFAULT_DNS[1]}; port 0: any free port)",
    )
    parser.add_argument(
        "--smtp-port",
        type=_port,
        default=DEFAULT_SMTP_PORT,
        metavar="N",
        help="the port every mail host listens on (default 2525; 25 where allowed; 0: any "
        "free port)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print JSON Lines: ready, every event, then what the hosts saw",
    )
    parser.add_argument(
        "--control",
        type=_host_port,
        default=None,
        metavar="HOST:PORT",
        help="serve the control API (HTTP, JSON) and the live page there, on loopback "
        "(port 0: any free port)",
    )
    parser.add_argument(
        "--https-port",
        type=_port,
        default=None,
        metavar="N",
        help="the port of the MTA-STS policy server, for a scenario with mta_sts: (default "
        "443 where it may bind, 8443 otherwise; 0: any free port)",
    )
    parser.add_argument(
        "--retain",
        type=_retention,
        default=DEFAULT_RETENTION,
        metavar="KEY=N,…",
        help=f"what serve keeps in memory: the last N events, and per host the last N sessions "
        f"and messages, and the bytes of message content of all hosts; counts stay exact "
        f"(default {DEFAULT_RETENTION}; 'all': keep everything)",
    )


def serve_scenario(scenario: Scenario, args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; 0 after a clean stop, 2 when it cannot start."""
    try:
        output = _Output(sys.stdout, args.json)
        https = DEFAULT_HTTPS_PORTS if args.https_port is None else (args.https_port,)
        asyncio.run(
            _serve(scenario, args.dns, args.smtp_port, args.retain, output, args.control, https)
        )
    except DnsAddressInUse as error:
        print(
            f"error: {error}. Give the DNS server another port with --dns HOST:PORT "
            "(--dns 127.0.0.1:0 takes any free port; the ready: line says which)",
            file=sys.stderr,
        )
        return EXIT_INVALID
    except SandboxError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:  # interrupted before the signal handlers were in place
        return EXIT_OK
    return EXIT_OK


async def _serve(
    scenario: Scenario,
    dns: tuple[str, int],
    smtp_port: int,
    retain: Retention,
    out: _Output,
    control_at: tuple[str, int] | None = None,
    https_ports: Sequence[int] = DEFAULT_HTTPS_PORTS,
) -> None:
    from sandbox.serve.world import ServedWorld

    await out.open()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    raise_fd_limit()
    failures = AcceptFailures(_say)
    failures.install(loop)
    sandbox = ServedWorld(
        scenario,
        dns=dns,
        smtp_port=smtp_port,
        first_address=CLI_FIRST_ADDRESS,
        sinks=[out.event],
        retain=retain,
        https_ports=https_ports,
    )
    out.sandbox = sandbox
    try:
        await sandbox.start()
    except BaseException:
        await out.close()
        raise
    control: ControlServer | None = None
    if control_at is not None:
        try:
            control = await _start_control(sandbox, control_at)
        except BaseException:
            await sandbox.stop()
            await out.close()
            raise
    try:
        out.ready(sandbox, control)
        await stop.wait()
    finally:
        ended = sandbox.clock()
        if control is not None:
            await control.close()
        await sandbox.stop()
        failures.close()
    out.stopped(sandbox, ended)
    if not await out.close():
        _say(
            "serve: stopped; the last of the output (the stopped record) was not read: the "
            "reader of stdout stopped reading"
        )


async def _start_control(sandbox: ServedWorld, at: tuple[str, int]) -> ControlServer:
    from sandbox.serve.control import ControlServer

    control = ControlServer(sandbox)
    await control.start(*at)
    return control


def _say(text: str) -> None:
    """One line on stderr, if it can be written at once; serve never waits for a reader."""
    try:
        fd = sys.stderr.fileno()
        blocking = os.get_blocking(fd)
    except (OSError, ValueError):
        return
    try:
        os.set_blocking(fd, False)
        os.write(fd, text.encode() + b"\n")
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            os.set_blocking(fd, blocking)


# --- the command line's values ---------------------------------------------------------------


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0 to 65535)")
    return port


def _retention(text: str) -> Retention:
    try:
        return Retention.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _host_port(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT, such as 127.0.0.1:10053")
    if not is_loopback(host):
        raise argparse.ArgumentTypeError(
            f"{host} is not a loopback address; the sandbox listens only on 127.0.0.0/8 or ::1"
        )
    return host, _port(port)


# --- what it prints --------------------------------------------------------------------------


class _Output:
    """Writes for people, or JSON Lines for programs, a line at a time (stdout is often a
    pipe, and the reader is waiting for the ready line). It never waits for the reader:
    lines a slow reader has no room for are dropped and counted (``LineStream``), except the
    ``ready`` and ``stopped`` records."""

    def __init__(self, stream: TextIO, as_json: bool) -> None:
        self._json = as_json
        self._lines = LineStream(stream, dropped_line=self._dropped)
        self._always = False
        self.sandbox: ServedWorld | None = None

    async def open(self) -> None:
        await self._lines.start()

    async def close(self) -> bool:
        """Give the reader a moment to take the rest; True when it did."""
        return await self._lines.close()

    def line(self, text: str = "") -> None:
        self._lines.write(text, always=self._always)

    def record(self, data: dict[str, Any]) -> None:
        self.line(json.dumps(data))

    def _dropped(self, count: int) -> str:
        t = self.sandbox.clock() if self.sandbox is not None else 0.0
        if self._json:
            return json.dumps({"kind": "output_dropped", "t": round(t, 6), "lines": count})
        return (
            f"  {clock_text(t):>12}  … {count} line(s) not shown: the reader of this output "
            "fell behind, and serve never waits for it"
        )

    def ready(self, sandbox: ServedWorld, control: ControlServer | None = None) -> None:
        self._always = True
        try:
            self._ready(sandbox, control)
        finally:
            self._always = False

    def _ready(self, sandbox: ServedWorld, control: ControlServer | None) -> None:
        host, port = sandbox.dns_address
        control_where = ""
        if control is not None:
            control_host, control_port = control.address
            control_where = _where(control_host, control_port)
        if self._json:
            extra: dict[str, Any] = {}
            if control is not None:
                extra["control"] = {"host": control_host, "port": control_port}
            self.record(
                {
                    "kind": "ready",
                    **extra,
                    "scenario": sandbox.scenario.name,
                    "dns": {"host": host, "port": port},
                    "smtp_port": sandbox.smtp_port,
                    "ca_file": sandbox.ca_file,
                    "mta_sts": [
                        {"domain": d, "url": _policy_url(d), "address": a, "port": p}
                        for d, a, p in sandbox.policy_sites
                    ],
                    "retain": _retention_record(sandbox.retention),
                    "hosts": [
                        {
                            "name": p.name,
                            "zone_address": p.zone_address,
                            "address": p.address,
                            "port": p.port,
                            "answer": p.answer,
                            "behaviour": h.behaviour_now().describe(),
                        }
                        for p, h in zip(sandbox.placements, sandbox.hosts, strict=True)
                    ],
                }
            )
            return
        scenario = sandbox.scenario
        title = f" — {scenario.title}" if scenario.title else ""
        self.line(f"Serving {scenario.name}{title}")
        self.line("Real time. The file's messages and expectations are for `mxsandbox run`.")
        self.line()
        dns_where = _where(host, port)
        self.line(f"  DNS server   {dns_where} (UDP and TCP)")
        self.line(f"  SMTP port    {sandbox.smtp_port} on every mail host address")
        if control is not None:
            self.line(f"  Control API  http://{control_where}/api/v1 (the live page: /)")
        self.line(f"  CA file      {sandbox.ca_file} (trust it to verify the hosts' certificates)")
        for domain, address, https_port in sandbox.policy_sites:
            self.line(f"  MTA-STS      {_policy_url(domain)} at {_where(address, https_port)}")
        self.line()
        rows = [("host", "zone address", "listens on", "behaviour")]
        for placement, mail_host in zip(sandbox.placements, sandbox.hosts, strict=True):
            rows.append(
                (
                    placement.name,
                    placement.zone_address,
                    f"{placement.address}:{placement.port}",
                    mail_host.behaviour_now().describe(),
                )
            )
        for row in _table(rows):
            self.line(row)
        self.line()
        for spec in scenario.zones[:1]:
            self.line(f"  Try: dig @{host} -p {port} MX {spec.apex} +short")
        self.line()
        control_part = f" control {control_where}" if control is not None else ""
        self.line(
            f"ready: dns {dns_where} smtp-port {sandbox.smtp_port}{control_part} "
            f"ca-file {sandbox.ca_file}"
        )
        self.line("Ctrl-C stops the sandbox and prints what each host saw.")

    def event(self, event: Event) -> None:
        if self._json:
            self.record(event_to_dict(event))
            return
        text = self._describe(event)
        if text is not None:
            self.line(f"  {clock_text(event.t):>12}  {text}")

    def _describe(self, event: Event) -> str | None:
        if isinstance(event, DnsServed):
            answers = f", {event.answers} answer(s)" if event.rcode == "NOERROR" else ""
            return (
                f"DNS     {event.rdtype} {event.name}? from {event.client} "
                f"({event.transport}) → {event.rcode}{answers}"
            )
        if isinstance(event, HostSession):
            return (
                f"SMTP    {event.host} [{self._listen_of(event.address)}] from "
                f"{event.client}: {session_outline(event.transcript)}"
            )
        if isinstance(event, HostAccepted):
            return (
                f"SMTP    {event.host} accepted a message from <{event.sender}> for "
                f"{', '.join(event.recipients)} (queued as {event.message_id})"
            )
        if isinstance(event, PolicyServed):
            return (
                f"HTTPS   GET https://{event.host}{event.path} from {event.client} → {event.status}"
            )
        if isinstance(event, Warning):
            return f"warning {event.text}"
        if isinstance(event, HostPhase):
            return (
                f"PHASE   {event.host} [{self._listen_of(event.address)}]: {event.ended} for "
                f"{event.after}; now: {event.behaviour}"
            )
        if isinstance(event, ControlChanged):
            target = f"{event.target}: " if event.target else ""
            return f"CONTROL {event.action} {target}{event.value}"
        return None

    def _listen_of(self, zone_address: str) -> str:
        placements = self.sandbox.placements if self.sandbox is not None else ()
        for placement in placements:
            if placement.zone_address == zone_address:
                return placement.address
        return zone_address

    def stopped(self, sandbox: ServedWorld, ended: float) -> None:
        self._always = True
        self._stopped(sandbox, ended)

    def _stopped(self, sandbox: ServedWorld, ended: float) -> None:
        pairs = list(zip(sandbox.placements, sandbox.hosts, strict=True))
        events_total, events_kept = sandbox.events_total, len(sandbox.events)
        if self._json:
            self.record(
                {
                    "kind": "stopped",
                    "t": round(ended, 6),
                    "retain": _retention_record(sandbox.retention),
                    "events": {
                        "total": events_total,
                        "kept": events_kept,
                        "dropped": events_total - events_kept,
                    },
                    "hosts": [_host_record(p, h) for p, h in pairs],
                }
            )
            return
        self.line()
        self.line(f"Stopped after {clock_text(ended)}. What each host saw:")
        rows = [("host", "listens on", "sessions", "accepted")]
        for placement, mail_host in pairs:
            rows.append(
                (
                    placement.name,
                    f"{placement.address}:{placement.port}",
                    str(mail_host.connections),
                    str(mail_host.accepted),
                )
            )
        for row in _table(rows):
            self.line(row)
        dropped = _dropped_text(
            sum(h.sessions_dropped for h in sandbox.hosts),
            sum(h.messages_dropped for h in sandbox.hosts),
            events_total - events_kept,
        )
        if dropped:
            self.line(f"  (--retain {sandbox.retention}: {dropped}; the counts are of all)")
        busy = sum(h.too_many for h in sandbox.hosts)
        if busy:
            self.line(f"  ({busy} connection(s) answered 421: too many at once)")
        sessions = sorted(
            (
                (s.opened, p.name, s.client, session_outline(s.transcript))
                for p, h in pairs
                for s in h.sessions
            ),
        )
        if sessions:
            self.line()
            for opened, name, client, outline in sessions:
                self.line(f"  {clock_text(opened):>12}  {name} from {client}: {outline}")


def _policy_url(domain: str) -> str:
    return f"https://mta-sts.{domain}/.well-known/mta-sts.txt"


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _retention_record(retention: Retention) -> dict[str, int | None]:
    return {
        "events": retention.events,
        "sessions": retention.sessions,
        "messages": retention.messages,
        "bytes": retention.bytes,
    }


def _host_record(placement: Placement, host: MailHost) -> dict[str, Any]:
    """One host in the ``stopped`` record: what it kept, and the counts of everything."""
    return {
        "name": placement.name,
        "zone_address": placement.zone_address,
        "address": placement.address,
        "port": placement.port,
        "sessions": [
            {
                "opened": round(s.opened, 6),
                "closed": None if s.closed is None else round(s.closed, 6),
                "client": s.client,
                "behaviour": s.behaviour,
                "transcript": [[round(t, 6), side, line] for t, side, line in s.transcript],
            }
            for s in host.sessions
        ],
        "accepted": [
            {
                "t": round(m.t, 6),
                "sender": m.sender,
                "recipients": list(m.recipients),
                "message_id": m.message_id,
                "client": m.client,
            }
            for m in host.mailbox
        ],
        "sessions_total": host.connections,
        "sessions_dropped": host.sessions_dropped,
        "accepted_total": host.accepted,
        "accepted_dropped": host.messages_dropped,
        "too_many": host.too_many,
    }


def _dropped_text(sessions: int, messages: int, events: int) -> str:
    counts = ((sessions, "session"), (messages, "message"), (events, "event"))
    dropped = [f"{count} {what}{'' if count == 1 else 's'}" for count, what in counts if count]
    return f"dropped {', '.join(dropped)}" if dropped else ""


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
