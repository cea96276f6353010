"""Serve mode: a scenario's DNS server and mail hosts as real servers, in real time.

In run mode every mail host sits on 127.0.0.1 at a port of its own, and the sandbox's own
sender maps each zone address to that socket. An external sender (Postfix, a user's code) has
no such map: it asks DNS for the MX records and addresses, then connects to port 25 or to the
one SMTP port it is told about, because MX records carry no port. So in serve mode:

- every mail host address listens on its **own loopback address**, all on **one SMTP port**;
- zone addresses outside 127.0.0.0/8 (192.0.2.10, 2001:db8::25) are assigned loopback
  addresses, and the DNS server answers with those. A zone address that is already loopback
  (127.x.y.z, ::1) keeps its address. An IPv6 zone address is played by an IPv4 loopback
  address (Linux has only one IPv6 loopback address, ::1), and its AAAA record answers with
  the IPv4-mapped form ``::ffff:127.x.y.z``, which a dual-stack client reaches on that same
  IPv4 socket;
- the clock is the loop's real clock, so a ``greylist: 2s`` or ``[{until: 1m, do: refuse}]``
  runs in seconds of wall time.

Binding one port on many addresses
----------------------------------
Port 0 cannot mean "one free port for all addresses" in a single call. The first host binds
its address at the requested port (0: the kernel picks one), and the others bind their own
addresses at that same number. Another program (another sandbox under pytest-xdist, say) may
hold that port on one of the other addresses; then every host is closed again and the whole
layout is tried afresh: a new port when the port was not fixed, a new block of addresses when
the addresses were not fixed. Tests use a random 127.B.C.0/24 block per sandbox (B ≥ 16, clear
of 127.0.0.1, 127.0.0.53 and 127.0.1.1), so two sandboxes rarely even meet.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dnslib

from sandbox.dns.server import DnsServer
from sandbox.errors import SandboxError
from sandbox.events import Emit
from sandbox.hosts import MailHost
from sandbox.net import NotInSandbox, canonical, ensure_loopback
from sandbox.runner import Sandbox
from sandbox.scenario.model import Scenario
from sandbox.zone import Zone, ZoneRecord

__all__ = [
    "CLI_FIRST_ADDRESS",
    "DEFAULT_DNS",
    "DEFAULT_SMTP_PORT",
    "Placement",
    "ServeSandbox",
    "loopback_plan",
    "served_zone",
    "session_outline",
]

DEFAULT_DNS = ("127.0.0.1", 5353)
DEFAULT_SMTP_PORT = 2525
# `mxsandbox serve` numbers hosts from here, so that the addresses a person reads in the table
# stay the same from one start to the next. 127.0.0.1 is left to "localhost" and the DNS server.
CLI_FIRST_ADDRESS = "127.0.0.2"
# How many layouts (port, address block) to try when another program holds what we picked.
BIND_ATTEMPTS = 8

_LOOPBACK_NET = ipaddress.ip_network("127.0.0.0/8")
_MAPPED_PREFIX = "::ffff:"


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one address of one mail host is served.

    ``zone_address`` is the address the zone gives; ``address`` and ``port`` are where the
    host listens; ``answer`` is what the DNS server says for it (``address``, or its
    IPv4-mapped IPv6 form for an AAAA record).
    """

    name: str
    zone_address: str
    address: str
    port: int
    answer: str

    @property
    def listen(self) -> tuple[str, int]:
        return (self.address, self.port)


# --- the plan (pure) ---------------------------------------------------------------------------


def loopback_plan(zone_addresses: Iterable[str], first: str) -> dict[str, str]:
    """zone address → the loopback address that plays it.

    Loopback zone addresses keep their own; the others get addresses counted up from
    ``first`` (an IPv4 address in 127.0.0.0/8), skipping those already kept, 127.0.0.1, and
    the .0 and .255 of every /24.
    """
    addresses = [canonical(a) for a in zone_addresses]
    kept = {a for a in addresses if ipaddress.ip_address(a).is_loopback}
    free = _free_addresses(ipaddress.IPv4Address(first), kept)
    return {a: a if a in kept else next(free) for a in addresses}


def _free_addresses(first: ipaddress.IPv4Address, taken: set[str]) -> Iterator[str]:
    if first not in _LOOPBACK_NET:
        raise SandboxError(f"{first} is not in 127.0.0.0/8; serve mode numbers hosts there")
    candidate = first
    while candidate in _LOOPBACK_NET:
        text = str(candidate)
        last = int(candidate) & 0xFF
        if last not in (0, 255) and text != "127.0.0.1" and text not in taken:
            yield text
        candidate += 1
    raise SandboxError("more mail host addresses than 127.0.0.0/8 can hold from here")


def answer_for(zone_address: str, listen_address: str) -> str:
    """What DNS answers for a zone address played at ``listen_address``: an A record keeps
    the IPv4 address; an AAAA record gets the IPv4-mapped form unless it stays on ::1."""
    zone_ip = ipaddress.ip_address(zone_address)
    listen_ip = ipaddress.ip_address(listen_address)
    if zone_ip.version == 6 and listen_ip.version == 4:
        return f"{_MAPPED_PREFIX}{listen_address}"
    return listen_address


def served_zone(zone: Zone, answers: Mapping[str, str]) -> Zone:
    """``zone`` with every address in ``answers`` (zone address → served address) swapped
    for the served one: A and AAAA records, and MX records that name an IP literal."""
    records = tuple(_served_record(record, answers) for record in zone.records)
    if records == zone.records:
        return zone
    return dataclasses.replace(zone, records=records)


def _served_record(record: ZoneRecord, answers: Mapping[str, str]) -> ZoneRecord:
    if record.address is not None:
        served = answers.get(canonical(record.address))
        if served is None or served == canonical(record.address):
            return record
        packed = ipaddress.ip_address(served).packed
        rdata = dnslib.A(served) if record.rtype == "A" else dnslib.AAAA(tuple(packed))
        return dataclasses.replace(_with_rdata(record, rdata), address=served)
    if record.rtype == "MX" and record.target and record.preference is not None:
        try:
            served = answers.get(canonical(record.target))
        except ValueError:  # a host name, not an IP literal
            return record
        if served is None:
            return record
        mx = dnslib.MX(served + ".", record.preference)
        return dataclasses.replace(_with_rdata(record, mx), target=served)
    return record


def _with_rdata(record: ZoneRecord, rdata: Any) -> ZoneRecord:
    rr = dnslib.RR(record.rr.rname, record.rr.rtype, record.rr.rclass, record.ttl, rdata)
    return dataclasses.replace(record, rdata=rdata.toZone(), rr=rr)


def session_outline(transcript: Iterable[tuple[float, str, str]]) -> str:
    """A session in one line: ``220, EHLO→250, MAIL→250, RCPT→451, QUIT→221``.

    Each command is paired with the code of its reply (the last line of a multi-line reply);
    a command that got no reply shows ``→…``.
    """
    parts: list[str] = []
    pending: str | None = None
    for _, side, line in transcript:
        if side == "C":
            if pending is not None:
                parts.append(f"{pending}→…")
            pending = _verb(line)
        elif line[3:4] != "-":  # the last line of a reply
            code = line[:3]
            parts.append(code if pending is None else f"{pending}→{code}")
            pending = None
    if pending is not None:
        parts.append(f"{pending}→…")
    return ", ".join(parts) or "(nothing said)"


def _verb(line: str) -> str:
    if line.startswith("<message"):
        return "<message>"
    return (line.split(maxsplit=1) or ["(empty line)"])[0].upper()


# --- the sandbox -------------------------------------------------------------------------------


class _AddressInUse(SandboxError):
    """One host could not bind: another program holds that address and port."""


class ServeSandbox(Sandbox):
    """A scenario's DNS server and mail hosts on loopback, for senders outside the sandbox.

    It runs on the caller's event loop, whose clock is the run's clock: serve it from a plain
    asyncio loop for real time. ``dns`` is where the DNS server listens (port 0: any free
    port); ``smtp_port`` is the one port every host listens on (0: one that is free on every
    host's address); ``first_address`` is where the host addresses are counted from (None: a
    random 127.B.C.0/24 block, retried elsewhere when taken).
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        dns: tuple[str, int] = ("127.0.0.1", 0),
        smtp_port: int = 0,
        first_address: str | None = None,
        sinks: Sequence[Emit] = (),
        bind_attempts: int = BIND_ATTEMPTS,
    ) -> None:
        super().__init__(scenario, sinks=sinks)
        ensure_loopback(dns[0])
        if first_address is not None:
            ensure_loopback(first_address)
        self._dns_listen = dns
        self._requested_port = smtp_port
        self._first_address = first_address
        self._bind_attempts = max(1, bind_attempts)
        self._answers: dict[str, str] = {}
        self._smtp_port = smtp_port
        self.placements: tuple[Placement, ...] = ()
        # Its own generator, seeded by the OS: a test that seeds `random` must not make two
        # xdist workers pick the same block.
        self._random = random.Random()

    @property
    def smtp_port(self) -> int:
        """The port every host listens on (0 only when the zones name no host at all)."""
        return self._smtp_port

    @property
    def dns_address(self) -> tuple[str, int]:
        if self.dns is None:
            raise RuntimeError("the sandbox is not started: await start() first")
        return self.dns.address

    def hosts_for(self, key: str) -> list[MailHost]:
        """The hosts that a name, a zone address or a served address stands for."""
        key = key.lower().rstrip(".")
        found = [
            host
            for host, placement in zip(self.hosts, self.placements, strict=True)
            if key in (placement.name, placement.zone_address, placement.address, placement.answer)
        ]
        if not found:
            known = ", ".join(sorted({p.name for p in self.placements})) or "none"
            raise NotInSandbox(f"no mail host {key!r} in this scenario (hosts: {known})")
        return found

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every host, then the DNS server: when DNS answers, the addresses it gives are
        already served."""
        self._start_clock()
        try:
            await self._bind_hosts()
            self.dns = DnsServer(
                self._authority, behaviour=self._dns_behaviour, clock=self.clock, emit=self.emit
            )
            await self.dns.start(*self._dns_listen)
        except BaseException:
            await self.stop()
            raise

    def _served_zone(self, zone: Zone) -> Zone:
        return served_zone(zone, self._answers)

    async def _bind_hosts(self) -> None:
        wanted = self._host_addresses()
        retry = self._requested_port == 0 or self._first_address is None
        attempts = self._bind_attempts if retry else 1
        for attempt in range(1, attempts + 1):
            first = self._first_address or self._random_block()
            plan = loopback_plan((address for _, address in wanted), first)
            try:
                port = await self._bind_layout(wanted, plan)
            except _AddressInUse as busy:
                if attempt == attempts:
                    hint = "" if retry else "; choose another SMTP port"
                    raise SandboxError(f"{busy}{hint}") from busy.__cause__
                continue
            self._smtp_port = port
            return

    async def _bind_layout(self, wanted: list[tuple[str, str]], plan: dict[str, str]) -> int:
        """Start one host per (name, zone address) at its planned address, all on one port."""
        port = self._requested_port
        hosts: list[MailHost] = []
        placements: list[Placement] = []
        try:
            for name, zone_address in wanted:
                address = plan[canonical(zone_address)]
                host = MailHost(
                    name,
                    zone_address,
                    self._behaviour_of(name, zone_address),
                    clock=self.clock,
                    emit=self.emit,
                    bind=(address, port),
                )
                hosts.append(host)
                await _start_host(host, name, address, port)
                port = host.listen[1]
                placements.append(
                    Placement(name, zone_address, address, port, answer_for(zone_address, address))
                )
        except BaseException:
            for host in hosts:
                await host.close()
            raise
        self.hosts = hosts
        self.placements = tuple(placements)
        self._answers = {canonical(p.zone_address): p.answer for p in placements}
        for placement in placements:
            self.network.add(placement.zone_address, placement.listen)
        return port

    def _random_block(self) -> str:
        return f"127.{self._random.randint(16, 254)}.{self._random.randint(0, 255)}.2"


async def _start_host(host: MailHost, name: str, address: str, port: int) -> None:
    where = f"{address}:{port}"
    try:
        await host.start()
    except SandboxError as error:
        cause = error.__cause__
        code = cause.errno if isinstance(cause, OSError) else None
        if code == errno.EADDRINUSE:
            raise _AddressInUse(
                f"mail host {name} cannot listen on {where}: another program holds it"
            ) from cause
        if code == errno.EADDRNOTAVAIL:
            raise SandboxError(
                f"mail host {name} cannot listen on {where}: the address is not on this "
                "machine; serve mode gives each host its own address in 127.0.0.0/8, which "
                "Linux routes to loopback (elsewhere, add the addresses to the loopback "
                "interface first)"
            ) from cause
        raise
