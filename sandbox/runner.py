"""The Sandbox: build a scenario's world on one event loop, run the sender through it, report.

``Sandbox`` starts the DNS server and one ``MailHost`` per zone address on loopback port 0,
maps each zone address to its socket, and runs the sender agent until every message is
delivered or bounced (or the scenario's ``until``). ``run_scenario`` does all of that on a
looptime event loop, so the run's clock is virtual: the loop jumps to the next timer whenever
nothing is ready, and five days of retries take milliseconds.

Every part emits events into one stream; the result (deliveries, per-host counts, the checked
expectations) is computed from the sender's and the hosts' records after the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from typing import Any

import looptime

from sandbox.core.mx import ip_literal
from sandbox.core.policy import PROFILES, Profile
from sandbox.dns.resolver import StubResolver
from sandbox.dns.server import Authority, DnsServer
from sandbox.events import (
    Connected,
    ConnectFailed,
    DsnCreated,
    Emit,
    Event,
    RunFinished,
    RunStarted,
)
from sandbox.expect import ExpectationResult, check_expectations
from sandbox.hosts import MailHost
from sandbox.net import AddressMap, canonical
from sandbox.scenario.model import ACCEPT, Behaviour, DnsBehaviour, Scenario, Timeline
from sandbox.sender.agent import SenderAgent
from sandbox.sender.message import message_id
from sandbox.zone import Zone, find_zone, parse_zone

__all__ = [
    "DeliveryRow",
    "HostStats",
    "ReturnedRow",
    "RunResult",
    "Sandbox",
    "profile_for",
    "run_scenario",
]

_ANSWER = DnsBehaviour()


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    message: int
    recipient: str
    status: str
    host: str | None
    address: str | None
    at: float
    attempts: int
    dsn: str
    reply: str


@dataclass(frozen=True, slots=True)
class HostStats:
    name: str
    addresses: tuple[str, ...]
    connections: int
    accepted: int
    behaviour: str


@dataclass(frozen=True, slots=True)
class ReturnedRow:
    """A delivery status notification sent back to a message's envelope sender."""

    message: int
    action: str  # failed, delayed
    to: str
    recipients: tuple[str, ...]
    at: float
    via: str  # "mx" or "returned_mailbox"
    dsn_message: int | None
    status: str  # the DSN's own fate: delivered, bounced, deferred, or "returned_mailbox"
    data: bytes = field(repr=False, default=b"")


@dataclass(frozen=True, slots=True)
class RunResult:
    scenario: Scenario
    seed: int
    profile: Profile
    deliveries: tuple[DeliveryRow, ...]
    hosts: tuple[HostStats, ...]
    expectations: tuple[ExpectationResult, ...]
    events: tuple[Event, ...] = field(repr=False)
    ended_at: float = 0.0
    returned: tuple[ReturnedRow, ...] = ()
    # message number -> copies found in the hosts' mailboxes, for messages that arrived twice
    duplicates: dict[int, int] = field(default_factory=dict)
    # The run was stopped from outside (SIGINT, Sandbox.interrupt()) before it settled.
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return all(e.ok for e in self.expectations)

    def host(self, name: str) -> HostStats | None:
        return next((h for h in self.hosts if h.name == name), None)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object of the output contract."""
        return {
            "scenario": self.scenario.name,
            "seed": self.seed,
            "ok": self.ok,
            "deliveries": [
                {
                    "message": d.message,
                    "recipient": d.recipient,
                    "status": d.status,
                    "host": d.host,
                    "address": d.address,
                    "at": round(d.at, 6),
                    "attempts": d.attempts,
                    "dsn": d.dsn,
                    "reply": d.reply,
                }
                for d in self.deliveries
            ],
            "hosts": {
                h.name: {"connections": h.connections, "accepted": h.accepted} for h in self.hosts
            },
            "expectations": [
                {"expect": e.text, "ok": e.ok, "detail": e.detail} for e in self.expectations
            ],
            # Extensions of the v1 contract: DSNs sent back, and messages that arrived twice.
            "returned": [
                {
                    "message": r.message,
                    "action": r.action,
                    "to": r.to,
                    "recipients": list(r.recipients),
                    "at": round(r.at, 6),
                    "via": r.via,
                    "status": r.status,
                }
                for r in self.returned
            ],
            "duplicates": [{"message": m, "copies": n} for m, n in sorted(self.duplicates.items())],
            # Only when it happened, so that a finished run's JSON stays as it was.
            **({"interrupted": True} if self.interrupted else {}),
        }


def profile_for(scenario: Scenario, override_profile: str | None = None) -> Profile:
    """The scenario's profile with its overrides; ``override_profile`` swaps the base."""
    base = PROFILES[override_profile or scenario.sender.profile]
    return base.with_overrides(dict(scenario.sender.overrides))


class Sandbox:
    """A scenario's DNS server, mail hosts and sender, on the running event loop."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        seed: int | None = None,
        profile: Profile | None = None,
        sinks: Sequence[Emit] = (),
    ) -> None:
        self.scenario = scenario
        self.seed = scenario.seed if seed is None else seed
        self.profile = profile or profile_for(scenario)
        self.events: list[Event] = []
        self._sinks = list(sinks)
        self.network = AddressMap()
        self.hosts: list[MailHost] = []
        self.dns: DnsServer | None = None
        self._zone_texts = {spec.apex: spec.texts for spec in scenario.zones}
        self._parsed: dict[tuple[str, str], Zone] = {}
        self._authority_cache: tuple[tuple[Zone, ...], Authority] | None = None
        self._start = 0.0
        self._loop_time: Callable[[], float] = _running_loop_time
        self._now = 0.0
        self._delivering: asyncio.Task[None] | None = None
        self._interrupted = False

    # --- events ------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        self.events.append(event)
        for sink in self._sinks:
            sink(event)

    def clock(self) -> float:
        now = self._loop_time() - self._start
        # On a virtual clock most events share their instant: hand out one float object per
        # instant rather than one per event and transcript line (a tenth of a big run's memory).
        if now == self._now:
            return self._now
        self._now = now
        return now

    # --- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        self._start_clock()
        self.dns = DnsServer(
            self._authority, behaviour=self._dns_behaviour, clock=self.clock, emit=self.emit
        )
        try:
            await self.dns.start("127.0.0.1", 0)
            for name, address in self._host_addresses():
                host = MailHost(
                    name,
                    address,
                    self._behaviour_of(name, address),
                    clock=self.clock,
                    emit=self.emit,
                )
                self.hosts.append(host)
                await host.start()
                self.network.add(address, host.listen)
        except BaseException:
            await self.stop()
            raise

    def _start_clock(self) -> None:
        """Time 0 of the run is now, on the running loop (serve mode starts here too)."""
        loop = asyncio.get_running_loop()
        # Every event and transcript line reads the clock: keep the loop's bound method
        # rather than look the running loop up each time (a third of the cost).
        self._loop_time = loop.time
        self._start = loop.time()

    async def stop(self) -> None:
        for host in self.hosts:
            await host.close()
        if self.dns is not None:
            await self.dns.close()

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def run(self) -> RunResult:
        """Send the scenario's messages and wait for them to settle (or for ``until``)."""
        assert self.dns is not None, "start() the sandbox first"
        scenario = self.scenario
        self.emit(
            RunStarted(
                t=self.clock(),
                scenario=scenario.name,
                seed=self.seed,
                title=scenario.title,
                description=scenario.description,
            )
        )
        agent = SenderAgent(
            profile=self.profile,
            resolver=StubResolver(self.dns.address, clock=self.clock),
            network=self.network,
            emit=self.emit,
            clock=self.clock,
            seed=self.seed,
            scenario=scenario.name,
            in_scenario=self._in_scenario,
        )
        reason = "settled"
        self._delivering = asyncio.get_running_loop().create_task(agent.deliver(scenario.messages))
        if self._interrupted:  # interrupted before the run began
            self._cancel_delivery()
        try:
            async with asyncio.timeout(scenario.until):
                await self._delivering
        except TimeoutError:
            reason = "until"
        except asyncio.CancelledError:
            # Our own interrupt() cancelled the delivery; a cancellation of run() itself
            # (a caller's timeout, the task being cancelled) goes on up.
            current = asyncio.current_task()
            if not self._interrupted or (current is not None and current.cancelling()):
                raise
            reason = "interrupted"
        finally:
            self._delivering = None
        agent.settle_unfinished()
        self.emit(RunFinished(t=self.clock(), reason=reason))
        result = self._result(agent)
        return dataclasses.replace(result, interrupted=True) if reason == "interrupted" else result

    @property
    def interrupted(self) -> bool:
        return self._interrupted

    def interrupt(self) -> None:
        """Stop the run now, as Ctrl-C does. Sessions in flight are cut off; every recipient
        not yet delivered or bounced is reported as deferred, and ``run()`` returns a result
        with ``interrupted`` set. What the hosts accepted stays in their mailboxes."""
        self._interrupted = True
        self._cancel_delivery()

    def _cancel_delivery(self) -> None:
        # On the next loop turn rather than at once: a delivery whose task has not taken its
        # first step yet then still queues every message, so that each one is reported.
        if self._delivering is not None:
            self._delivering.get_loop().call_soon(self._delivering.cancel)

    # --- building the world ------------------------------------------------------------

    def _zones_now(self) -> list[Zone]:
        now = self.clock()
        return [self._zone(apex, texts.at(now)) for apex, texts in self._zone_texts.items()]

    def _zone(self, apex: str, text: str) -> Zone:
        key = (apex, text)
        if key not in self._parsed:
            self._parsed[key] = parse_zone(apex, text)
        return self._parsed[key]

    def _authority(self) -> Authority:
        # Zones change only at phase boundaries: build the authority again only then.
        zones = tuple(self._zones_now())
        cached = self._authority_cache
        if cached is not None and cached[0] == zones:
            return cached[1]
        authority = Authority(tuple(self._served_zone(zone) for zone in zones))
        self._authority_cache = (zones, authority)
        return authority

    def _served_zone(self, zone: Zone) -> Zone:
        """The zone as the DNS server answers it. Run mode serves the zone as written; serve
        mode (``sandbox.serve``) overrides this to answer with the loopback addresses it plays."""
        return zone

    def _in_scenario(self, domain: str) -> bool:
        return find_zone(self._zones_now(), domain) is not None

    def _dns_behaviour(self, name: str) -> DnsBehaviour:
        timeline = self.scenario.dns.get(name)
        return timeline.at(self.clock()) if timeline else _ANSWER

    def _host_addresses(self) -> list[tuple[str, str]]:
        """(owner name, address) for every A/AAAA in every zone phase, one per address."""
        seen: dict[str, str] = {}
        for apex, texts in self._zone_texts.items():
            for phase in texts.phases:
                for record in self._zone(apex, phase.value).records:
                    if record.address is not None:
                        seen.setdefault(canonical(record.address), record.name)
                    elif record.rtype == "MX" and record.target and ip_literal(record.target):
                        # An MX naming an IP literal: a host plays that address too.
                        seen.setdefault(canonical(record.target), record.target)
        return [(name, address) for address, name in seen.items()]

    def _behaviour_of(self, name: str, address: str) -> Timeline[Behaviour]:
        hosts = self.scenario.hosts
        for key in (address, name):
            if key in hosts:
                return hosts[key]
        return Timeline.constant(ACCEPT)

    # --- the result ----------------------------------------------------------------------

    def _result(self, agent: SenderAgent) -> RunResult:
        rows = tuple(
            DeliveryRow(
                e.message, e.recipient, e.status, e.host, e.address, e.t, e.attempts, e.dsn, e.reply
            )
            for (number, _), e in sorted(agent.final.items())
            if number not in agent.dsn_messages
        )
        hosts = self._host_stats()
        result = RunResult(
            self.scenario,
            self.seed,
            self.profile,
            rows,
            hosts,
            (),
            tuple(self.events),
            self.clock(),
            self._returned(agent),
            self._duplicates(),
        )
        checked = check_expectations(self.scenario.expect, result)
        return dataclasses.replace(result, expectations=checked)

    def _returned(self, agent: SenderAgent) -> tuple[ReturnedRow, ...]:
        rows = []
        kept = iter(agent.returned)
        for event in self.events:
            if not isinstance(event, DsnCreated):
                continue
            if event.dsn_message is None:
                status, data = "returned_mailbox", next(kept).data
            else:
                final = agent.final.get((event.dsn_message, event.to))
                status, data = (final.status if final else "deferred"), b""
            rows.append(
                ReturnedRow(
                    event.message,
                    event.action,
                    event.to,
                    event.recipients,
                    event.t,
                    event.via,
                    event.dsn_message,
                    status,
                    data,
                )
            )
        return tuple(rows)

    def _duplicates(self) -> dict[int, int]:
        """Messages that reached one recipient more than once (by their Message-ID): message
        number -> the most copies any one recipient got. A message to two domains is stored
        twice, once per domain, and is no duplicate."""
        copies: dict[tuple[str, str], int] = {}
        parser = BytesHeaderParser()
        for host in self.hosts:
            for stored in host.mailbox:
                mid = parser.parsebytes(stored.data).get("Message-ID", "")
                for recipient in stored.recipients:
                    key = (mid, recipient.lower())
                    copies[key] = copies.get(key, 0) + 1
        numbers = {
            message_id(self.scenario.name, self.seed, m.number): m.number
            for m in self.scenario.messages
        }
        duplicates: dict[int, int] = {}
        for (mid, _), n in copies.items():
            if n > 1 and mid in numbers:
                number = numbers[mid]
                duplicates[number] = max(n, duplicates.get(number, 0))
        return duplicates

    def _host_stats(self) -> tuple[HostStats, ...]:
        # Count by the address as written first, then fold the spellings together: parsing
        # an address per event cost more than the rest of the result.
        written: dict[str, int] = {}
        for event in self.events:
            # A session reused from the connection cache is not a new connection.
            if isinstance(event, ConnectFailed) or (
                isinstance(event, Connected) and not event.reused
            ):
                written[event.address] = written.get(event.address, 0) + 1
        tried: dict[str, int] = {}
        for address, count in written.items():
            tried[canonical(address)] = tried.get(canonical(address), 0) + count
        by_name: dict[str, list[MailHost]] = {}
        for host in self.hosts:
            by_name.setdefault(host.name, []).append(host)
        return tuple(
            HostStats(
                name,
                tuple(h.address for h in group),
                sum(tried.get(canonical(h.address), 0) for h in group),
                sum(len(h.mailbox) for h in group),
                group[0].behaviour_now().describe(),
            )
            for name, group in sorted(by_name.items())
        )


_VIRTUAL_TICK = 1e-6


def run_scenario(
    scenario: Scenario,
    *,
    seed: int | None = None,
    profile: Profile | None = None,
    sinks: Sequence[Emit] = (),
) -> RunResult:
    """Run a scenario to the end on its own virtual-time event loop."""

    async def main() -> RunResult:
        sandbox = Sandbox(scenario, seed=seed, profile=profile, sinks=sinks)
        with _sigint_interrupts(sandbox):
            async with sandbox:
                return await sandbox.run()

    with _fewer_collections(), asyncio.Runner(loop_factory=_virtual_loop) as runner:
        return runner.run(main())


@contextlib.contextmanager
def _sigint_interrupts(sandbox: Sandbox) -> Iterator[None]:
    """While the run lasts, SIGINT (Ctrl-C) interrupts it cleanly: the result comes back with
    what happened so far. A second SIGINT, for a run that does not stop, raises
    KeyboardInterrupt. Outside the main thread signals cannot be caught: nothing changes."""
    loop = asyncio.get_running_loop()

    def on_sigint() -> None:
        if sandbox.interrupted:
            raise KeyboardInterrupt
        sandbox.interrupt()

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (ValueError, RuntimeError, NotImplementedError):  # not the main thread
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


# A run keeps every event it emits: a 10,000-message run holds half a million long-lived
# objects, and each of the garbage collector's full passes walks them all again. At Python's
# default thresholds those passes grew faster than the run (a quarter of a 4,000-message run's
# CPU time); collecting the young generation ten times less often keeps them in proportion.
_GC_YOUNG_THRESHOLD = 10_000


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], _GC_YOUNG_THRESHOLD), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _running_loop_time() -> float:
    return asyncio.get_running_loop().time()


def _virtual_loop() -> asyncio.AbstractEventLoop:
    loop = looptime.new_event_loop(start=0.0)
    # asyncio runs a timer once loop.time() + clock resolution passes it. The resolution is
    # the real clock's (1 ns), and past about 200 virtual days adding 1 ns to a float time
    # changes nothing: a timer due exactly now would never run, and the run would hang. The
    # virtual clock ticks in microseconds (looptime's resolution), so say so.
    loop._clock_resolution = _VIRTUAL_TICK  # type: ignore[attr-defined]
    return loop
