"""Serve mode: a scenario's world on loopback, in real time, for senders outside the sandbox.

``ServedWorld`` builds the same ``World`` that run mode builds and places it for a sender that
knows nothing but DNS: every mail host address listens on a loopback address of its own, all
at one SMTP port, and the DNS server answers with those addresses (see ``sandbox.serve.plan``).
The clock is the loop's own, so a ``greylist: 2s`` or ``[{until: 1m, do: refuse}]`` runs in
seconds of wall time.

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

import asyncio
import errno
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from sandbox.core.addresses import canonical, ensure_loopback
from sandbox.core.durations import format_duration
from sandbox.dns.zone import Zone
from sandbox.errors import (
    AddressInUse,
    BindError,
    DnsAddressInUse,
    NotInSandbox,
    ScenarioError,
    bind_error,
)
from sandbox.events import ControlAction, ControlChanged, DnsServed, Emit, Event
from sandbox.hosts.host import MailHost
from sandbox.hosts.transcript import session_outline
from sandbox.scenario.lint import Finding, lint_zone
from sandbox.scenario.model import Behaviour, DnsBehaviour, Scenario, Timeline
from sandbox.serve.plan import BIND_ATTEMPTS, Placement, answer_for, extend_plan, loopback_plan
from sandbox.serve.retention import Retention, RetentionSpec
from sandbox.serve.syn import SynSeen, SynWatcher
from sandbox.world import Clock, World, host_addresses

_T = TypeVar("_T")

__all__ = ["AttemptListener", "ServedWorld", "Session"]

# Told of every connection attempt the SYN watcher sees, before the host counts it.
AttemptListener = Callable[[MailHost, Placement, SynSeen], None]

_CANNOT_SEE = (
    "it refuses or times out, so no connection reaches a host, and serve counts such "
    "connection attempts only where it sees their SYNs on loopback (Linux, as root or with "
    "CAP_NET_RAW: sudo setcap cap_net_raw+ep on the Python binary), which it cannot here; "
    "end this phase with until instead, or count with mxsandbox run"
)


@dataclass(frozen=True, slots=True)
class Session:
    """One connection as a host saw it. Times are seconds since the sandbox started;
    ``transcript`` holds ``(t, "C" or "S", line)``; ``closed`` is None while it is open."""

    host: str
    address: str
    zone_address: str
    client: str
    opened: float
    closed: float | None
    behaviour: str
    transcript: tuple[tuple[float, str, str], ...]

    @property
    def commands(self) -> tuple[str, ...]:
        """What the client said, line by line (message content as ``<message: N bytes>``)."""
        return tuple(line for _, side, line in self.transcript if side == "C")

    @property
    def replies(self) -> tuple[str, ...]:
        """What the host answered, line by line, the greeting first."""
        return tuple(line for _, side, line in self.transcript if side == "S")

    @property
    def outline(self) -> str:
        """``220, EHLO→250, MAIL→250, RCPT→451, QUIT→221``."""
        return session_outline(self.transcript)

    def __str__(self) -> str:
        return (
            f"{self.opened:8.3f}s  {self.host} [{self.address}] from {self.client}: {self.outline}"
        )


class ServedWorld:
    """A scenario's DNS server and mail hosts on loopback, for senders outside the sandbox.

    It runs on the caller's event loop, whose clock is the world's clock: serve it from a plain
    asyncio loop for real time. ``dns`` is where the DNS server listens (port 0: any free
    port); ``smtp_port`` is the one port every host listens on (0: one that is free on every
    host's address); ``first_address`` is where the host addresses are counted from (None: a
    random 127.B.C.0/24 block, retried elsewhere when taken). ``retain`` bounds what it keeps
    (``sandbox.serve.retention``; None: the defaults).
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
        retain: RetentionSpec = None,
        https_ports: Sequence[int] = (0,),
        watch_connects: bool = True,
    ) -> None:
        ensure_loopback(dns[0])
        if first_address is not None:
            ensure_loopback(first_address)
        self.retention = Retention.of(retain)
        self.world = World(
            scenario,
            sinks=sinks,
            keep_events=self.retention.events,
            host_limits=self.retention.host_limits(),
        )
        self._dns_listen = dns
        self._requested_port = smtp_port
        self._first_address = first_address
        self._bind_attempts = max(1, bind_attempts)
        self._smtp_port = smtp_port
        self._https_ports = tuple(https_ports) or (0,)
        self.placements: tuple[Placement, ...] = ()
        # Where each MTA-STS policy is served: (domain, address, port), in the zones' order.
        self.policy_sites: tuple[tuple[str, str, int], ...] = ()
        # Its own generator, seeded by the OS: a test that seeds `random` must not make two
        # xdist workers pick the same block.
        self._random = random.Random()
        self._changes = asyncio.Lock()
        self._watch_connects = watch_connects
        self._watcher: SynWatcher | None = None
        self._attempt_listeners: list[AttemptListener] = []

    # -- what it is made of --------------------------------------------------------------------

    @property
    def scenario(self) -> Scenario:
        return self.world.scenario

    @property
    def clock(self) -> Clock:
        return self.world.clock

    @property
    def events(self) -> list[Event]:
        """The events kept: the last ``retention.events`` of them."""
        return self.world.kept_events()

    @property
    def events_total(self) -> int:
        """Every event so far, kept or not."""
        return self.world.events_total

    @property
    def hosts(self) -> list[MailHost]:
        """One host per placement, in the same order."""
        return self.world.hosts

    @property
    def smtp_port(self) -> int:
        """The port every host listens on (0 only when the zones name no host at all)."""
        return self._smtp_port

    @property
    def ca_file(self) -> str:
        """The world's CA certificate (PEM): what a sender outside trusts to verify the mail
        hosts and the MTA-STS policy server (Postfix's smtp_tls_CAfile)."""
        return str(self.world.certificates.ca_file)

    @property
    def dns_address(self) -> tuple[str, int]:
        if self.world.dns is None:
            raise RuntimeError("the sandbox is not started: await start() first")
        return self.world.dns.address

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

    def placed(self, key: str | None = None) -> list[tuple[MailHost, Placement]]:
        """(host, placement) for every host that ``key`` stands for (all hosts when None)."""
        pairs = zip(self.hosts, self.placements, strict=True)
        if key is None:
            return list(pairs)
        only = self.hosts_for(key)
        return [(host, placement) for host, placement in pairs if host in only]

    def sessions(self, key: str | None = None) -> list[Session]:
        """Every session of the hosts ``key`` stands for (all when None), in opening order."""
        found = [
            Session(
                placement.name,
                placement.address,
                placement.zone_address,
                record.client,
                record.opened,
                record.closed,
                record.behaviour,
                record.transcript,
            )
            for host, placement in self.placed(key)
            for record in host.sessions
        ]
        return sorted(found, key=lambda s: s.opened)

    def dns_queries(self) -> list[DnsServed]:
        """Every query the DNS server has served (since the last reset), in order."""
        return [event for event in self.world.events if isinstance(event, DnsServed)]

    # -- changes while it runs ----------------------------------------------------------------
    # Each takes what the scenario loader reads (``sandbox.scenario.load``) with its phase
    # times counted from the change, and says what it did in a ``control`` event.

    def set_behaviour(self, key: str, behaviour: Timeline[Behaviour]) -> list[MailHost]:
        """The hosts that ``key`` stands for (a name: all its addresses; or one address)
        follow ``behaviour`` from now on. A phase it cannot count is a ScenarioError (see the
        class docstring), and nothing changes."""
        hosts = self.hosts_for(key)
        self.check_countable(behaviour, f"set_behaviour({key!r})", "")
        now = self.clock()
        for host in hosts:
            host.set_behaviour(behaviour.shifted(now))
        target = key.lower().rstrip(".")
        self._changed("behaviour", target, _phases_text(behaviour, Behaviour.describe))
        return hosts

    def set_dns_behaviour(self, name: str, behaviour: Timeline[DnsBehaviour]) -> None:
        """Queries for ``name`` follow ``behaviour`` from now on."""
        self.world.set_dns_behaviour(name, behaviour.shifted(self.clock()))
        self._changed("dns", name, _phases_text(behaviour, lambda b: b.kind))

    async def set_zone(self, apex: str, zone: Timeline[Zone]) -> list[Placement]:
        """Serve ``zone`` at ``apex`` from now on (replacing the zone there, or adding one).

        An address that no host plays yet gets a host first, at the next free loopback
        address and the SMTP port, so that DNS never answers with an address that is not
        served; those new placements are returned. Changes are made one at a time.
        """
        async with self._changes:
            added = await self._serve_addresses_of(zone)
            self.world.set_zone(apex, zone.shifted(self.clock()))
        self._changed("zone", apex, _phases_text(zone, _zone_words))
        return added

    def check_zone(self, apex: str, zone: Timeline[Zone]) -> list[Finding]:
        """The zone lint's findings for ``zone`` at ``apex``, each phase among the other
        zones as they are now (what ``mxsandbox check`` would say of it in a scenario)."""
        others = [z for z in self.world.zones_now() if z.apex != apex]
        findings: list[Finding] = []
        for index, phase in enumerate(zone.phases):
            findings += [replace(f, phase=index) for f in lint_zone(phase.value, others)]
        return findings

    # -- connection attempts -------------------------------------------------------------------

    @property
    def sees_connection_attempts(self) -> bool:
        """Whether connection attempts are seen (refused and timed-out ones included), or
        only the sessions that reached a host."""
        return self._watcher is not None

    def on_attempt(self, listener: AttemptListener) -> None:
        """``listener`` hears of every connection attempt seen from now on."""
        self._attempt_listeners.append(listener)

    def drain_attempts(self) -> None:
        """Take in the connection attempts that have arrived but not been read yet."""
        if self._watcher is not None:
            self._watcher.drain()

    def check_countable(self, timeline: Timeline[Behaviour], source: str, key: str) -> None:
        """Raise a ScenarioError when ``timeline`` has a phase that refuses or times out
        ``times`` times and connection attempts cannot be seen here."""
        if self.sees_connection_attempts:
            return
        for index, phase in enumerate(timeline.phases):
            if phase.times is not None and not phase.value.sees_sessions:
                where = f"{key}[{index}].times" if key else f"[{index}].times"
                raise ScenarioError(
                    f"this phase ends after {phase.times} {phase.value.connection} connection "
                    f"attempt(s), but {_CANNOT_SEE}",
                    file=source,
                    key=where,
                )

    def _serves(self, address: str) -> bool:
        return any(p.address == address for p in self.placements)

    def _syn_seen(self, seen: SynSeen) -> None:
        pairs = [(h, p) for h, p in self.placed() if p.address == seen.address]
        if not pairs:
            return
        host, placement = pairs[0]
        for listener in self._attempt_listeners:
            listener(host, placement, seen)
        host.connection_attempted()

    def reset(self) -> None:
        """Forget the sessions, mailboxes, greylisting tables and events so far (a test's
        fresh start), and count the phases that count afresh; behaviours and zones stay as
        they are."""
        self.world.reset()
        self._changed("reset", "", "sessions, mailboxes, greylisting and events forgotten")

    def _changed(self, action: ControlAction, target: str, value: str) -> None:
        self.world.emit(ControlChanged(t=self.clock(), action=action, target=target, value=value))

    async def _serve_addresses_of(self, zone: Timeline[Zone]) -> list[Placement]:
        placed = {canonical(p.zone_address) for p in self.placements}
        wanted = [(n, a) for n, a in host_addresses([zone]) if canonical(a) not in placed]
        if not wanted:
            return []
        plan = {canonical(p.zone_address): p.address for p in self.placements}
        served = set(plan.values())
        for _, address in wanted:
            if canonical(address) in served:
                raise AddressInUse(
                    f"the zone address {address} is where another zone address is served; "
                    "give it an address outside the ones the sandbox serves at"
                )
        first = self._first_address or (
            self.placements[0].address if self.placements else self._random_block()
        )
        taken: set[str] = set()
        for attempt in range(1, self._bind_attempts + 1):
            plan = extend_plan(plan, (a for _, a in wanted), first, taken)
            try:
                added = await self._start_hosts(wanted, plan, self._smtp_port)
            except AddressInUse:
                if attempt == self._bind_attempts:
                    raise
                taken |= {plan.pop(canonical(a)) for _, a in wanted}
                continue
            self.placements += tuple(added)
            self._smtp_port = self._smtp_port or added[0].port
            self.world.answer_with({p.zone_address: p.answer for p in self.placements})
            return added
        raise AssertionError("unreachable")

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every host, then the DNS server: when DNS answers, the addresses it gives are
        already served."""
        self.world.clock.start()
        try:
            await self._bind_hosts()
            await self._serve_policies()
            self.world.answer_with({p.zone_address: p.answer for p in self.placements})
            try:
                await self.world.start_dns(*self._dns_listen)
            except AddressInUse as busy:
                raise DnsAddressInUse(str(busy)) from busy.__cause__
            if self._watch_connects:
                self._watcher = SynWatcher.open(self._smtp_port, self._serves, self._syn_seen)
            for key, timeline in self.scenario.hosts.items():
                self.check_countable(timeline, self.scenario.source, f"hosts.{key}")
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.drain()
            self._watcher.close()
            self._watcher = None
        await self.world.stop()

    async def __aenter__(self) -> ServedWorld:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- the layout ----------------------------------------------------------------------------

    async def _serve_policies(self) -> None:
        """HTTPS for each MTA-STS policy, at the loopback address that plays its
        ``mta-sts.<domain>``, all at one port: the first of ``https_ports`` that binds (443
        wants privileges that the next port does not)."""
        sites: list[tuple[str, str, int]] = []
        ports = self._https_ports
        served: dict[str, int] = {}  # listen address -> port
        by_zone_address = {canonical(p.zone_address): p for p in self.placements}
        for domain, zone_addresses in self.world.policy_addresses().items():
            for zone_address in zone_addresses:
                address = by_zone_address[canonical(zone_address)].address
                if address not in served:
                    served[address] = await self._bind_policy(address, ports)
                    ports = (served[address],)
                sites.append((domain, address, served[address]))
        self.policy_sites = tuple(sites)

    async def _bind_policy(self, address: str, ports: tuple[int, ...]) -> int:
        for index, port in enumerate(ports):
            try:
                _, bound = await self.world.start_policy_server(address, port)
            except OSError as error:
                if index == len(ports) - 1:
                    raise bind_error(
                        "the MTA-STS policy server",
                        f"{address}:{port}",
                        error,
                        "choose another port with --https-port",
                    ) from error
                continue
            return bound
        raise AssertionError("no port to try")

    async def _bind_hosts(self) -> None:
        wanted = self.world.host_addresses()
        retry = self._requested_port == 0 or self._first_address is None
        attempts = self._bind_attempts if retry else 1
        for attempt in range(1, attempts + 1):
            first = self._first_address or self._random_block()
            plan = loopback_plan((address for _, address in wanted), first)
            try:
                port = await self._bind_layout(wanted, plan)
            except AddressInUse as busy:
                if attempt == attempts:
                    if retry:
                        raise
                    raise AddressInUse(f"{busy}; choose another SMTP port") from busy.__cause__
                continue
            self._smtp_port = port
            return

    async def _bind_layout(self, wanted: list[tuple[str, str]], plan: dict[str, str]) -> int:
        """Start one host per (name, zone address) at its planned address, all on one port."""
        try:
            placements = await self._start_hosts(wanted, plan, self._requested_port)
        except BaseException:
            await self.world.close_hosts()
            raise
        self.placements = tuple(placements)
        return placements[-1].port if placements else self._requested_port

    async def _start_hosts(
        self, wanted: list[tuple[str, str]], plan: Mapping[str, str], port: int
    ) -> list[Placement]:
        """Start one host per (name, zone address) at its planned address and ``port`` (0:
        the port the first one gets). If one cannot start, those started here are closed."""
        started: list[MailHost] = []
        placements: list[Placement] = []
        try:
            for name, zone_address in wanted:
                address = plan[canonical(zone_address)]
                host = await _start_host(self.world, name, zone_address, (address, port))
                started.append(host)
                port = host.listen[1]
                placements.append(
                    Placement(name, zone_address, address, port, answer_for(zone_address, address))
                )
        except BaseException:
            for host in started:
                await host.close()
                self.world.hosts.remove(host)
            raise
        return placements

    def _random_block(self) -> str:
        return f"127.{self._random.randint(16, 254)}.{self._random.randint(0, 255)}.2"


def _phases_text(timeline: Timeline[_T], describe: Callable[[_T], str]) -> str:
    """``refuse``, or ``refuse for 1m, then accept`` for phases counted from now."""
    parts: list[str] = []
    start = 0.0
    for phase in timeline.phases:
        words = describe(phase.value)
        if phase.until is None:
            parts.append(words)
        else:
            parts.append(f"{words} for {format_duration(phase.until - start)}")
            start = phase.until
    return ", then ".join(parts)


def _zone_words(zone: Zone) -> str:
    return f"{len(zone.records)} record(s)"


async def _start_host(
    world: World, name: str, zone_address: str, bind: tuple[str, int]
) -> MailHost:
    try:
        return await world.start_host(name, zone_address, bind)
    except AddressInUse:
        raise
    except BindError as error:
        if error.errno != errno.EADDRNOTAVAIL:
            raise
        raise BindError(
            error.errno,
            f"mail host {name} cannot listen on {bind[0]}:{bind[1]}: the address is not on "
            "this machine; serve mode gives each host its own address in 127.0.0.0/8, which "
            "Linux routes to loopback (elsewhere, add the addresses to the loopback "
            "interface first)",
        ) from error.__cause__
