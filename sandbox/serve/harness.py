"""A scenario served for a test: the object that the ``mx_sandbox`` fixture hands out.

``ServedScenario`` starts a ``ServedWorld`` on the running event loop (real time), and gives
a test what it needs to drive and check a sender of its own: where DNS listens, the SMTP port,
each host's address, changes at any time (``set_behaviour``, ``set_dns_behaviour``,
``set_zone``, ``reset``), what every host saw (sessions, messages, DNS queries, events),
assertions that print what happened when they fail, and the errors raised inside the servers,
re-raised in the test. With ``control=("127.0.0.1", 0)`` it also serves the control API and
the live page (``sandbox.serve.control``), for a sender under test in another language.

What a host can see is what reached it. A host that refuses (nothing listens; the kernel
answers with a reset) or times out (the handshake is never answered) sees no session. Where the
platform allows it (Linux, CAP_NET_RAW), the sandbox also watches the TCP SYNs sent to the
hosts (``serve.syn``), so every connection attempt counts, refused and timed-out ones
included: ``assert_tried_in_order`` then compares the exact sequence of hosts the sender
tried. Elsewhere it sees sessions only, and counts a host that refused or timed out as tried
when the sender asked DNS for its address: weaker evidence (``sees_connection_attempts``
says which).

What it keeps is bounded (``retain``, see ``sandbox.serve.retention``): the last 10,000 events,
and per host the last 1,000 sessions and messages, within 64 MiB of message content. The
counts stay exact (``totals``, ``dropped``), and the assertions that count use them.

It works without pytest too::

    async with ServedScenario.from_source("primary-down") as sb:
        ...  # point your sender at sb.dns and sb.smtp_port
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandbox.dns.zone import Zone
from sandbox.events import ConnectionAttempt, DnsServed, Emit, Event
from sandbox.hosts.host import MailHost
from sandbox.hosts.transcript import StoredMessage
from sandbox.scenario.lint import Finding
from sandbox.scenario.load import (
    dns_behaviour,
    domain_name,
    host_behaviour,
    load_scenario,
    scenario_from_mapping,
    zone_phases,
)
from sandbox.scenario.model import Behaviour, DnsBehaviour, Scenario, Timeline
from sandbox.scenario.shipped import find_scenario
from sandbox.serve.plan import Placement
from sandbox.serve.retention import Retention, RetentionSpec
from sandbox.serve.syn import SynSeen
from sandbox.serve.trap import ServerErrorTrap

if TYPE_CHECKING:
    from sandbox.serve.control import ControlServer
from sandbox.serve.world import ServedWorld, Session

__all__ = [
    "ConnectAttempt",
    "Dropped",
    "ScenarioSource",
    "ServedScenario",
    "Session",
    "Totals",
    "load_source",
]

ScenarioSource = str | Path | Mapping[str, Any] | Scenario
BehaviourSpec = str | Mapping[str, Any] | Sequence[Any] | Behaviour | Timeline[Behaviour]
DnsSpec = str | Sequence[Any] | Timeline[DnsBehaviour]
ZoneSource = str | Sequence[Any] | Timeline[Zone]

_SESSIONS_ONLY = (
    "this platform does not let the sandbox see connection attempts (that needs Linux and "
    "CAP_NET_RAW), only sessions: a host that refused or timed out counts as tried when the "
    "sender asked DNS for its address"
)
_ADDRESS_TYPES = ("A", "AAAA")


@dataclass(frozen=True, slots=True)
class ConnectAttempt:
    """One TCP connection attempt a sender made to a host, refused and timed-out ones
    included (seen as its SYN on loopback). ``t`` is seconds since the sandbox started;
    ``behaviour`` is the host's at that moment."""

    host: str
    address: str
    zone_address: str
    client: str
    t: float
    behaviour: str

    def __str__(self) -> str:
        return (
            f"{self.t:8.3f}s  {self.host} [{self.address}] from {self.client}: connection "
            f"attempt ({self.behaviour})"
        )


@dataclass(frozen=True, slots=True)
class Totals:
    """What one host (or all of them) saw, counted exactly, kept or not: ``sessions``
    (connections that reached it), ``accepted`` messages, and ``too_many``, the connections
    answered ``421 4.7.0`` because as many sessions as it serves at once were open."""

    sessions: int
    accepted: int
    too_many: int


@dataclass(frozen=True, slots=True)
class Dropped:
    """How many events, sessions and messages the retention limits have dropped so far."""

    events: int
    sessions: int
    messages: int


def load_source(source: ScenarioSource, *, base: Path | None = None) -> Scenario:
    """A scenario from a path (relative to the working directory, else to ``base``), the
    name of a shipped scenario (``"primary-down"``; a ``scenarios/`` folder in the working
    directory or in ``base`` comes first), an inline mapping (``name`` defaults to
    ``inline``) or a Scenario."""
    if isinstance(source, Scenario):
        return source
    if isinstance(source, Mapping):
        return scenario_from_mapping({"name": "inline", **source})
    path = Path(source)
    if not path.exists() and not path.is_absolute() and base is not None:
        if (base / path).exists():
            return load_scenario(base / path)
        folders = [Path("scenarios"), base / "scenarios"]
        found = find_scenario(path, folders=folders)
        return load_scenario(found if found.exists() else base / path)
    return load_scenario(find_scenario(path, folders=[Path("scenarios")]))


class ServedScenario:
    """A scenario's DNS server and mail hosts, served on loopback for a sender under test."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        on_event: Emit | None = None,
        dns: tuple[str, int] = ("127.0.0.1", 0),
        smtp_port: int = 0,
        first_address: str | None = None,
        control: tuple[str, int] | None = None,
        watch_connects: bool = True,
        retain: RetentionSpec = None,
    ) -> None:
        self.scenario = scenario
        self._on_event = on_event
        self._control_at = control
        self._control: ControlServer | None = None
        self._changed: asyncio.Event | None = None
        self._trap = ServerErrorTrap()
        self._attempts: list[ConnectAttempt] = []
        # set_behaviour's changes per zone address: (from when, the timeline then in force).
        self._changes: dict[str, list[tuple[float, Timeline[Behaviour]]]] = {}
        self._sandbox = ServedWorld(
            scenario,
            dns=dns,
            smtp_port=smtp_port,
            first_address=first_address,
            sinks=[self._emitted],
            retain=retain,
            watch_connects=watch_connects,
        )
        self._sandbox.on_attempt(self._syn_seen)

    @classmethod
    def from_source(cls, source: ScenarioSource, **options: Any) -> ServedScenario:
        return cls(load_source(source), **options)

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._changed = asyncio.Event()
        self._trap.install()
        try:
            await self._sandbox.start()
        except BaseException:
            self._trap.uninstall()
            raise
        if self._control_at is not None:
            try:
                self._control = await self._start_control(self._control_at)
            except BaseException:
                await self.stop()
                raise

    async def _start_control(self, at: tuple[str, int]) -> ControlServer:
        # Imported here: only a sandbox that serves the control API loads the web server.
        from sandbox.serve.control import ControlServer

        control = ControlServer(self._sandbox)
        await control.start(*at)
        return control

    async def stop(self) -> None:
        """Close every server; errors they raised stay available to ``raise_errors``."""
        try:
            control, self._control = self._control, None
            if control is not None:
                await control.close()
            await self._sandbox.stop()
            # Connections closed just now report connection_lost on the next loop turn; an
            # error there is still the servers' and must be caught.
            await asyncio.sleep(0)
        finally:
            self._trap.uninstall()

    async def __aenter__(self) -> ServedScenario:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
        if exc_info[0] is None:
            self.raise_errors()

    # -- where things are ----------------------------------------------------------------------

    @property
    def dns(self) -> tuple[str, int]:
        """(host, port) of the DNS server, UDP and TCP."""
        return self._sandbox.dns_address

    @property
    def smtp_port(self) -> int:
        """The one port every mail host listens on."""
        return self._sandbox.smtp_port

    @property
    def control(self) -> tuple[str, int]:
        """(host, port) of the control API and the live page (``control=`` when made)."""
        return self._control_server().address

    @property
    def control_url(self) -> str:
        """``http://127.0.0.1:PORT``: the live page; the API is under ``/api/v1``."""
        return self._control_server().url

    @property
    def placements(self) -> tuple[Placement, ...]:
        """Every host address: name, zone address, where it listens, what DNS answers."""
        return self._sandbox.placements

    @property
    def hosts(self) -> tuple[str, ...]:
        """The mail host names, in zone order."""
        return tuple(dict.fromkeys(p.name for p in self.placements))

    def address_of(self, host: str) -> str:
        """The loopback address where ``host`` (a name or a zone address) listens; for a
        host with several addresses, the first."""
        return self.addresses_of(host)[0]

    def addresses_of(self, host: str) -> tuple[str, ...]:
        return tuple(h.listen[0] for h in self._hosts(host))

    # -- changing behaviour --------------------------------------------------------------------

    def set_behaviour(self, host: str, behaviour: BehaviourSpec) -> None:
        """Change what ``host`` (a name: all its addresses; or one address) does, from now on.

        ``behaviour`` is written as in a scenario (``"accept"``, ``{"greylist": "2s"}``, a list
        of phases) or is a ``Behaviour``/``Timeline``. The ``until`` of each phase counts from
        this call.
        """
        if isinstance(behaviour, Behaviour):
            timeline = Timeline.constant(behaviour)
        elif isinstance(behaviour, Timeline):
            timeline = behaviour
        else:
            timeline = host_behaviour(behaviour, source=f"set_behaviour({host!r})")
        now = self._sandbox.clock()
        for mail_host in self._sandbox.set_behaviour(host, timeline):
            self._changes.setdefault(mail_host.address, []).append((now, timeline.shifted(now)))

    def set_dns_behaviour(self, name: str, behaviour: DnsSpec) -> None:
        """Change how the DNS server treats queries for ``name``, from now on: ``answer``,
        ``servfail``, ``timeout``, ``nxdomain`` or a list of phases, as under a scenario's
        ``dns``, phases counted from this call."""
        source = f"set_dns_behaviour({name!r})"
        key = domain_name(name, source, "a DNS name")
        timeline = (
            behaviour if isinstance(behaviour, Timeline) else dns_behaviour(behaviour, source)
        )
        self._sandbox.set_dns_behaviour(key, timeline)

    async def set_zone(self, apex: str, zone: ZoneSource) -> list[Finding]:
        """Serve new zone text at ``apex`` (replacing the zone there, or adding one), from
        now on: text as under a scenario's ``zones``, or a list of phases counted from this
        call. Text that does not parse raises ScenarioError and changes nothing; the lint's
        findings are returned. A new address gets a host of its own (``placements``)."""
        source = f"set_zone({apex!r})"
        key = domain_name(apex, source, "a zone's apex")
        timeline = zone if isinstance(zone, Timeline) else zone_phases(key, zone, source)
        findings = self._sandbox.check_zone(key, timeline)
        await self._sandbox.set_zone(key, timeline)
        return findings

    def reset(self) -> None:
        """Forget every session, accepted message, greylisting table and event so far (the
        behaviours and zones stay): a fresh start for the next test on the same sandbox."""
        self._sandbox.reset()

    # -- what happened -------------------------------------------------------------------------

    @property
    def retention(self) -> Retention:
        """What the sandbox keeps (``retain=``)."""
        return self._sandbox.retention

    @property
    def events(self) -> list[Event]:
        """The events so far (DNS queries served, host sessions, accepted messages, …): the
        last ``retention.events`` of them. ``on_event`` sees every one."""
        return self._sandbox.events

    def totals(self, host: str | None = None) -> Totals:
        """The exact counts of ``host`` (all hosts when None), whatever was dropped."""
        hosts = self._sandbox.hosts if host is None else self._hosts(host)
        return Totals(
            sessions=sum(h.connections for h in hosts),
            accepted=sum(h.accepted for h in hosts),
            too_many=sum(h.too_many for h in hosts),
        )

    @property
    def dropped(self) -> Dropped:
        """How many events, sessions and messages were dropped to stay within ``retain``."""
        hosts = self._sandbox.hosts
        return Dropped(
            events=self._sandbox.events_total - len(self._sandbox.events),
            sessions=sum(h.sessions_dropped for h in hosts),
            messages=sum(h.messages_dropped for h in hosts),
        )

    def dns_queries(self) -> list[DnsServed]:
        """Every query the DNS server served (since the last reset), in order."""
        return self._sandbox.dns_queries()

    def sessions(self, host: str | None = None) -> list[Session]:
        """The sessions of ``host`` (all hosts when None) in the order they opened: every
        one, unless more than ``retention.sessions`` per host (then the last ones)."""
        return self._sandbox.sessions(host)

    def mailbox(self, host: str | None = None) -> list[StoredMessage]:
        """The messages ``host`` (all hosts when None) accepted, with their envelopes (those
        kept: see ``retention``)."""
        hosts = self._sandbox.hosts if host is None else self._hosts(host)
        return sorted((m for h in hosts for m in h.mailbox), key=lambda m: m.t)

    def messages(self, host: str | None = None) -> list[EmailMessage]:
        """The messages ``host`` accepted, parsed."""
        return [stored.email for stored in self.mailbox(host)]

    @property
    def sees_connection_attempts(self) -> bool:
        """Whether the sandbox sees every connection attempt (refused and timed-out ones
        included), or only the sessions that reached a host (see the module docstring)."""
        return self._sandbox.sees_connection_attempts

    def connection_attempts(self, host: str | None = None) -> list[ConnectAttempt]:
        """Every connection attempt to ``host`` (all hosts when None), in order; empty where
        the sandbox cannot see them (``sees_connection_attempts``)."""
        self._sandbox.drain_attempts()
        if host is None:
            return list(self._attempts)
        served = {h.listen[0] for h in self._hosts(host)}
        return [a for a in self._attempts if a.address in served]

    def tried(self) -> list[str]:
        """The host of every connection attempt, in order: refused and timed-out attempts
        included where the sandbox sees them (``sees_connection_attempts``), otherwise the
        host of every session, in the order the sessions opened."""
        if self.sees_connection_attempts:
            return [attempt.host for attempt in self.connection_attempts()]
        return [session.host for session in self.sessions()]

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``condition()`` holds; it is checked again after every event."""
        assert self._changed is not None, "start() the sandbox first"
        try:
            async with asyncio.timeout(timeout):
                while not condition():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(
                f"the condition did not hold within {timeout:g}s; what the hosts saw:\n"
                f"{self._story()}"
            ) from None
        self.raise_errors()

    # -- assertions ----------------------------------------------------------------------------

    def assert_tried_in_order(self, hosts: Sequence[str]) -> None:
        """The sender tried exactly ``hosts``, in this order, one entry per connection.

        Where the sandbox sees connection attempts (``sees_connection_attempts``), that is
        the sequence of every attempt, refused and timed-out ones included. Elsewhere it is
        the sequence of sessions, and a host that refused or timed out (no session) counts
        as tried where the sender asked DNS for its address before the next session.
        """
        self.raise_errors()
        if dropped := self.dropped.sessions:
            raise AssertionError(
                f"cannot tell the order of every session: {dropped} of the oldest were dropped "
                f"to stay within retain={self.retention} (raise its sessions= to keep them)"
            )
        expected = [h.lower().rstrip(".") for h in hosts]
        if self.sees_connection_attempts:
            observed = self.tried()
            if observed != expected:
                raise AssertionError(
                    f"expected the hosts to be tried in this order: {_listing(expected)}\n"
                    f"observed: {_listing(observed)}\n{self._story()}"
                )
            return
        problem = self._sessions_and_lookups_disagree(expected)
        if problem:
            raise AssertionError(
                f"expected the hosts to be tried in this order: {_listing(expected)}\n"
                f"{problem}\n{self._story()}\n({_SESSIONS_ONLY})"
            )

    def assert_not_tried(self, host: str) -> None:
        """The sender never tried ``host``: no connection attempt (where the sandbox sees
        them, ``sees_connection_attempts``) and no session reached it."""
        self.raise_errors()
        attempts = self.connection_attempts(host)
        seen = self.totals(host).sessions
        if attempts or seen:
            count = max(len(attempts), seen)
            raise AssertionError(
                f"expected no connection attempt at {host}, observed {count}:\n{self._story()}"
            )

    def assert_accepted(self, host: str, count: int = 1) -> None:
        """``host`` accepted exactly ``count`` messages."""
        self.raise_errors()
        accepted = self.totals(host).accepted
        if accepted != count:
            counts = ", ".join(f"{name}: {self.totals(name).accepted}" for name in self.hosts)
            raise AssertionError(
                f"expected {host} to accept {count} message(s), it accepted {accepted} "
                f"(accepted per host: {counts})\n{self._story()}"
            )

    # -- errors inside the servers -------------------------------------------------------------

    @property
    def errors(self) -> list[BaseException]:
        """Every exception raised inside the servers so far."""
        return [fault.error for fault in self._trap.faults]

    def raise_errors(self) -> None:
        """Raise a ServerError for server errors not raised before (teardown calls this)."""
        self._trap.raise_new()

    # -- inside --------------------------------------------------------------------------------

    def _control_server(self) -> ControlServer:
        if self._control is None:
            raise RuntimeError(
                "this sandbox serves no control API; make it with control=('127.0.0.1', 0)"
            )
        return self._control

    def _syn_seen(self, mail_host: MailHost, placement: Placement, seen: SynSeen) -> None:
        client = f"{seen.client[0]}:{seen.client[1]}"
        behaviour = mail_host.behaviour_now().describe()
        now = self._sandbox.clock()
        self._attempts.append(
            ConnectAttempt(
                placement.name, placement.address, placement.zone_address, client, now, behaviour
            )
        )
        self._sandbox.world.emit(
            ConnectionAttempt(
                t=now,
                host=placement.name,
                address=placement.zone_address,
                client=client,
                behaviour=behaviour,
            )
        )

    def _sessions_and_lookups_disagree(self, expected: list[str]) -> str:
        """Without connection attempts: match ``expected`` against the sessions, letting a
        host with no session there count when its address was looked up before the next
        session (after the previous match). An empty string when they agree."""
        sessions = self.sessions()
        lookups = [
            (event.t, event.name.lower().rstrip("."))
            for event in self.events
            if isinstance(event, DnsServed) and event.rdtype in _ADDRESS_TYPES
        ]
        observed = [s.host for s in sessions]
        index, since = 0, -1.0
        for position, host in enumerate(expected):
            if index < len(sessions) and sessions[index].host == host:
                since = sessions[index].opened
                index += 1
                continue
            until = sessions[index].opened if index < len(sessions) else float("inf")
            asked = [
                t
                for t, name in lookups
                if name == host and since <= t <= until and self._unseen_at(host, t)
            ]
            if not asked:
                return (
                    f"entry {position + 1}, {host}: no session there, and no sign of a try "
                    "(the sender did not ask DNS for its address at that point while it refused "
                    f"or timed out)\nsessions: {_listing(observed)}"
                )
            since = asked[0]
        if index < len(sessions):
            return f"more sessions than expected\nsessions: {_listing(observed)}"
        return ""

    def _unseen_at(self, host: str, t: float) -> bool:
        """Whether a try of ``host`` at ``t`` would reach no session: it refused or timed out
        then (by name, or at one of its addresses)."""
        for placement in self.placements:
            if placement.name != host:
                continue
            timeline = self.scenario.behaviour_of(host, (placement.zone_address,))
            for start, changed in self._changes.get(placement.zone_address, ()):
                if start <= t:
                    timeline = changed
            if timeline.at(t).connection in ("refuse", "timeout"):
                return True
        return False

    def _emitted(self, event: Event) -> None:
        if self._changed is not None:
            self._changed.set()
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception as error:
            # The test's own observer failed: that fails the test, but the servers carry on
            # as if nobody had been watching, so the sender under test sees nothing odd.
            self._trap.record(f"on_event callback, at a {event.kind} event", error)

    def _hosts(self, key: str) -> list[MailHost]:
        return self._sandbox.hosts_for(key)

    def _story(self) -> str:
        lines = []
        if self.sees_connection_attempts:
            attempts = self.connection_attempts()
            lines.append(
                "connection attempts:\n" + "\n".join(f"  {a}" for a in attempts)
                if attempts
                else "connection attempts: none"
            )
        sessions = self.sessions()
        lines.append(
            "sessions:\n" + "\n".join(f"  {session}" for session in sessions)
            if sessions
            else "sessions: none"
        )
        return "\n".join(lines)


def _listing(hosts: Sequence[str]) -> str:
    return " → ".join(hosts) if hosts else "(none)"
