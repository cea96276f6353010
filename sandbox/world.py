"""The world of a scenario: its zones over time, the DNS server, the mail hosts, one clock.

Run mode (``sandbox.run``) and serve mode (``sandbox.serve``) both build a ``World`` and differ
only in where they put its servers:

- run mode binds the DNS server and every host on 127.0.0.1 at port 0, and its own sender
  reaches each zone address through an ``AddressMap``;
- serve mode puts every host on a loopback address of its own at one shared port, and has the
  DNS server answer with those addresses (``answer_with``) so that a sender outside can reach
  them.

Everything else is the world's: which zone is in force now (the loader parsed every phase)
and the authority built from it, which DNS behaviour a name has now, which hosts the zones
name and which behaviour each has, and the one stream of events every part of it emits.

The clock is the running loop's: virtual on run mode's looptime loop, real on serve mode's
plain asyncio loop. ``Clock`` reads it as seconds since the world started.

TLS is the world's too: one certificate authority per world (``tls.certificates``, made on
first use and thrown away in ``stop()``), which issues each host the certificate its ``tls:``
asks for, and, for a scenario with ``mta_sts:``, the HTTPS server that plays
``mta-sts.<domain>`` for every policy domain (``tls.policy_server``; ``start_policy_server``
puts it where each mode wants it). Zones under ``dnssec:`` are answered as validated.

A run is finite, and keeps every event and record. Serve mode runs for as long as it is let,
so it keeps only the last ``keep_events`` events (the count of all stays exact) and gives its
hosts ``host_limits`` (``sandbox.hosts.limits``); the message content that the hosts keep is
bounded for all of them together.
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence

from sandbox.core.addresses import canonical
from sandbox.core.idn import domain_to_ascii
from sandbox.core.mx import ip_literal
from sandbox.core.tls import HostTls
from sandbox.dns.server import Authority, DnsServer
from sandbox.dns.zone import Zone, find_zone, with_addresses
from sandbox.events import Emit, Event, PolicyServed
from sandbox.hosts.host import MailHost
from sandbox.hosts.limits import RUN_LIMITS, ContentBudget, HostLimits
from sandbox.scenario.model import Behaviour, DnsBehaviour, Scenario, Timeline
from sandbox.tls.certificates import CertificateAuthority
from sandbox.tls.policy_server import PolicyRequest, PolicyServer

__all__ = ["Clock", "World", "host_addresses"]

_ANSWER = DnsBehaviour()


class Clock:
    """Seconds since :meth:`start`, on the running loop's clock."""

    def __init__(self) -> None:
        self._loop_time: Callable[[], float] = _running_loop_time
        self._start = 0.0
        self._now = 0.0

    def start(self) -> None:
        """Time 0 is now, on the running loop."""
        loop = asyncio.get_running_loop()
        # Every event and transcript line reads the clock: keep the loop's bound method
        # rather than look the running loop up each time (a third of the cost).
        self._loop_time = loop.time
        self._start = loop.time()

    def __call__(self) -> float:
        now = self._loop_time() - self._start
        # On a virtual clock most events share their instant: hand out one float object per
        # instant rather than one per event and transcript line (a tenth of a big run's memory).
        if now == self._now:
            return self._now
        self._now = now
        return now


class World:
    """A scenario's zones, DNS server and mail hosts on the running event loop."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        sinks: Sequence[Emit] = (),
        keep_events: int | None = None,
        host_limits: HostLimits = RUN_LIMITS,
    ) -> None:
        self.scenario = scenario
        self.clock = Clock()
        # Every event (run mode), or at least the last keep_events of them: the list is cut
        # back to that many once it is a quarter longer, so that dropping costs little.
        self.events: list[Event] = []
        self.events_dropped = 0
        self.keep_events = keep_events
        self._cut_events_at = sys.maxsize if keep_events is None else keep_events * 5 // 4 + 1
        self.host_limits = host_limits
        self._content = ContentBudget(host_limits.content_bytes)
        self.dns: DnsServer | None = None
        self.hosts: list[MailHost] = []
        self._sinks = list(sinks)
        self._zones = [spec.phases for spec in scenario.zones]
        self._apexes = [spec.apex for spec in scenario.zones]
        self._dns = dict(scenario.dns)
        self._authority_cache: tuple[tuple[Zone, ...], Authority] | None = None
        self._answers: Mapping[str, str] = {}
        self._certificates: CertificateAuthority | None = None
        self.policy_server: PolicyServer | None = None

    # --- events ------------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        events = self.events
        events.append(event)
        if len(events) >= self._cut_events_at:
            assert self.keep_events is not None
            cut = len(events) - self.keep_events
            del events[:cut]
            self.events_dropped += cut
        for sink in self._sinks:
            sink(event)

    def add_sink(self, sink: Emit) -> None:
        """``sink`` also gets every event from now on (serve mode's control API)."""
        self._sinks.append(sink)

    def remove_sink(self, sink: Emit) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)

    def reset(self) -> None:
        """Forget what happened so far: the events (DNS queries served among them), and every
        host's ended sessions, mailbox and greylisting table. Behaviours, zones and the clock
        stay as they are."""
        self.events.clear()
        self.events_dropped = 0
        for host in self.hosts:
            host.reset()

    def kept_events(self) -> list[Event]:
        """The events kept: all of them, or the last ``keep_events``."""
        if self.keep_events is None or len(self.events) <= self.keep_events:
            return list(self.events)
        return self.events[len(self.events) - self.keep_events :]

    @property
    def events_total(self) -> int:
        """Every event emitted so far, kept or not."""
        return self.events_dropped + len(self.events)

    # --- zones and DNS -----------------------------------------------------------------------

    def zones_now(self) -> list[Zone]:
        """Every zone as it is now."""
        now = self.clock()
        return [phases.at(now) for phases in self._zones]

    def in_scenario(self, domain: str) -> bool:
        """Some zone of the scenario holds ``domain`` now (by its A-label, for an
        internationalised one)."""
        try:
            domain = domain_to_ascii(domain)
        except ValueError:
            return False
        return find_zone(self.zones_now(), domain) is not None

    def answer_with(self, answers: Mapping[str, str]) -> None:
        """From now on the DNS server answers with ``answers[zone address]`` in place of the
        zone's address (serve mode: where each host really listens)."""
        self._answers = {canonical(zone): served for zone, served in answers.items()}
        self._authority_cache = None

    def authority(self) -> Authority:
        """The authority for the zones in force now."""
        # Zones change only at phase boundaries: build the authority again only then.
        zones = tuple(self.zones_now())
        cached = self._authority_cache
        if cached is not None and cached[0] == zones:
            return cached[1]
        served = tuple(with_addresses(zone, self._answers) for zone in zones)
        authority = Authority(served, signed=self.scenario.dnssec)
        self._authority_cache = (zones, authority)
        return authority

    def dns_behaviour(self, name: str) -> DnsBehaviour:
        timeline = self._dns.get(name)
        return timeline.at(self.clock()) if timeline else _ANSWER

    def set_dns_behaviour(self, name: str, timeline: Timeline[DnsBehaviour]) -> None:
        """From now on queries for ``name`` follow ``timeline`` (its phase times are times of
        the world's clock, as a scenario's are)."""
        self._dns[name] = timeline

    def set_zone(self, apex: str, phases: Timeline[Zone]) -> None:
        """Replace the zone at ``apex``, or add it; phase times are times of the world's
        clock. Hosts for addresses it adds are the caller's to start (``host_addresses``)."""
        if apex in self._apexes:
            self._zones[self._apexes.index(apex)] = phases
        else:
            self._apexes.append(apex)
            self._zones.append(phases)
        self._authority_cache = None

    @property
    def apexes(self) -> tuple[str, ...]:
        """The apex of every zone, in the scenario's order (zones added later last)."""
        return tuple(self._apexes)

    @property
    def dns_names(self) -> tuple[str, ...]:
        """The names that have a DNS behaviour of their own (the others answer)."""
        return tuple(self._dns)

    async def start_dns(self, host: str, port: int) -> DnsServer:
        """Serve the zones on ``host:port`` (port 0: a free one), UDP and TCP."""
        server = DnsServer(
            self.authority, behaviour=self.dns_behaviour, clock=self.clock, emit=self.emit
        )
        await server.start(host, port)
        self.dns = server
        return server

    # --- TLS ---------------------------------------------------------------------------------

    @property
    def certificates(self) -> CertificateAuthority:
        """The world's certificate authority, made on first use (``serve`` prints its file)."""
        if self._certificates is None:
            self._certificates = CertificateAuthority()
        return self._certificates

    def tls_contexts(self, name: str) -> Callable[[HostTls], ssl.SSLContext | None]:
        """The server side of STARTTLS for the host ``name``, per ``tls:`` value."""
        return lambda tls: self.certificates.server_context(name, tls)

    def policy_addresses(self) -> dict[str, list[str]]:
        """Each MTA-STS policy domain → the zone addresses of ``mta-sts.<domain>``."""
        zones = [phase.value for phases in self._zones for phase in phases.phases]
        found: dict[str, list[str]] = {}
        for domain in self.scenario.mta_sts:
            site = f"mta-sts.{domain}"
            addresses = found.setdefault(domain, [])
            for zone in zones:
                for address in zone.addresses_of(site):
                    if address not in addresses:
                        addresses.append(address)
        return found

    async def start_policy_server(self, host: str, port: int) -> tuple[str, int]:
        """Serve the scenario's MTA-STS policies over HTTPS at ``host:port`` (port 0: a free
        one); may be called again to listen at another address too."""
        if self.policy_server is None:
            self.policy_server = PolicyServer(
                self.scenario.mta_sts,
                self.certificates,
                clock=self.clock,
                on_request=self._policy_served,
            )
        return await self.policy_server.start(host, port)

    def _policy_served(self, request: PolicyRequest) -> None:
        self.emit(
            PolicyServed(
                t=request.t,
                client=request.client,
                host=request.host,
                path=request.path,
                status=request.status,
            )
        )

    # --- mail hosts --------------------------------------------------------------------------

    def host_addresses(self) -> list[tuple[str, str]]:
        """(owner name, address) for every A/AAAA in every zone phase, one per address."""
        return host_addresses(self._zones)

    def behaviour_of(self, name: str, address: str) -> Timeline[Behaviour]:
        return self.scenario.behaviour_of(name, (address,))

    async def start_host(
        self, name: str, zone_address: str, bind: tuple[str, int] = ("127.0.0.1", 0)
    ) -> MailHost:
        """Start the host that plays ``zone_address`` of ``name``, listening at ``bind``."""
        host = MailHost(
            name,
            zone_address,
            self.behaviour_of(name, zone_address),
            clock=self.clock,
            emit=self.emit,
            bind=bind,
            limits=self.host_limits,
            content=self._content,
            tls_contexts=self.tls_contexts(name),
        )
        self.hosts.append(host)
        await host.start()
        return host

    async def close_hosts(self) -> None:
        """Close every host (serve mode, before it tries another layout)."""
        hosts, self.hosts = self.hosts, []
        for host in hosts:
            await host.close()

    async def stop(self) -> None:
        # All hosts at once: one after the other, each would wait for its sessions to end
        # while clients of the others, still connected, kept the loop busy.
        await asyncio.gather(*(host.close() for host in self.hosts))
        if self.dns is not None:
            await self.dns.close()
        if self.policy_server is not None:
            await self.policy_server.close()
        if self._certificates is not None:
            self._certificates.close()


def host_addresses(zones: Iterable[Timeline[Zone]]) -> list[tuple[str, str]]:
    """(owner name, address) for every A/AAAA in every phase of ``zones``, one per address."""
    seen: dict[str, str] = {}
    for phases in zones:
        for phase in phases.phases:
            for record in phase.value.records:
                if record.address is not None:
                    seen.setdefault(canonical(record.address), record.name)
                elif record.rtype == "MX" and record.target and ip_literal(record.target):
                    # An MX naming an IP literal: a host plays that address too.
                    seen.setdefault(canonical(record.target), record.target)
    return [(name, address) for address, name in seen.items()]


def _running_loop_time() -> float:
    return asyncio.get_running_loop().time()
