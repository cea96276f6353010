"""A scenario served for a test: the object that the ``mx_sandbox`` fixture hands out.

``ServedScenario`` starts a ``ServedWorld`` on the running event loop (real time), and gives
a test what it needs to drive and check a sender of its own: where DNS listens, the SMTP port,
each host's address, ``set_behaviour`` at any time, what every host saw (sessions, messages,
events), assertions that print what happened when they fail, and the errors raised inside the
servers, re-raised in the test.

What a host can see is what reached it. A host that refuses (nothing listens; the kernel
answers with a reset) or times out (the handshake is never answered) sees no session: leave it
out of ``assert_tried_in_order`` and check it with ``assert_not_tried``.

What it keeps is bounded (``retain``, see ``sandbox.serve.retention``): the last 10,000 events,
and per host the last 1,000 sessions and messages, within 64 MiB of message content. The
counts stay exact (``totals``, ``dropped``), and the assertions that count use them.

It works without pytest too::

    async with ServedScenario.from_source("scenarios/primary-down.yaml") as sb:
        ...  # point your sender at sb.dns and sb.smtp_port
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from sandbox.events import Emit, Event
from sandbox.hosts.host import MailHost
from sandbox.hosts.transcript import StoredMessage, session_outline
from sandbox.scenario.load import host_behaviour, load_scenario, scenario_from_mapping
from sandbox.scenario.model import Behaviour, Phase, Scenario, Timeline
from sandbox.serve.plan import Placement
from sandbox.serve.retention import Retention, RetentionSpec
from sandbox.serve.trap import ServerErrorTrap
from sandbox.serve.world import ServedWorld

__all__ = ["Dropped", "ScenarioSource", "ServedScenario", "Session", "Totals", "load_source"]

ScenarioSource = str | Path | Mapping[str, Any] | Scenario
BehaviourSpec = str | Mapping[str, Any] | Sequence[Any] | Behaviour | Timeline[Behaviour]

_NOT_SEEN = (
    "a host that refuses or times out never sees a connection (the kernel answers for it), so "
    "it cannot appear here"
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
    """A scenario from a path (relative to the working directory, else to ``base``), an
    inline mapping (``name`` defaults to ``inline``) or a Scenario."""
    if isinstance(source, Scenario):
        return source
    if isinstance(source, Mapping):
        return scenario_from_mapping({"name": "inline", **source})
    path = Path(source)
    if not path.exists() and not path.is_absolute() and base is not None:
        path = base / path
    return load_scenario(path)


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
        retain: RetentionSpec = None,
    ) -> None:
        self.scenario = scenario
        self._on_event = on_event
        self._changed: asyncio.Event | None = None
        self._trap = ServerErrorTrap()
        self._sandbox = ServedWorld(
            scenario,
            dns=dns,
            smtp_port=smtp_port,
            first_address=first_address,
            sinks=[self._emitted],
            retain=retain,
        )

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

    async def stop(self) -> None:
        """Close every server; errors they raised stay available to ``raise_errors``."""
        try:
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
        shifted = Timeline(
            tuple(
                Phase(None if p.until is None else now + p.until, p.value) for p in timeline.phases
            )
        )
        for mail_host in self._hosts(host):
            mail_host.set_behaviour(shifted)

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

    def sessions(self, host: str | None = None) -> list[Session]:
        """The sessions of ``host`` (all hosts when None) in the order they opened: every
        one, unless more than ``retention.sessions`` per host (then the last ones)."""
        pairs = self._placed() if host is None else self._placed(self._hosts(host))
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
            for mail_host, placement in pairs
            for record in mail_host.sessions
        ]
        return sorted(found, key=lambda s: s.opened)

    def mailbox(self, host: str | None = None) -> list[StoredMessage]:
        """The messages ``host`` (all hosts when None) accepted, with their envelopes (those
        kept: see ``retention``)."""
        hosts = self._sandbox.hosts if host is None else self._hosts(host)
        return sorted((m for h in hosts for m in h.mailbox), key=lambda m: m.t)

    def messages(self, host: str | None = None) -> list[EmailMessage]:
        """The messages ``host`` accepted, parsed."""
        return [stored.email for stored in self.mailbox(host)]

    def tried(self) -> list[str]:
        """The host of every session, in the order the sessions opened."""
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
        """The hosts that saw a session, in order, are exactly ``hosts``."""
        self.raise_errors()
        if dropped := self.dropped.sessions:
            raise AssertionError(
                f"cannot tell the order of every session: {dropped} of the oldest were dropped "
                f"to stay within retain={self.retention} (raise its sessions= to keep them)"
            )
        expected = [h.lower().rstrip(".") for h in hosts]
        observed = self.tried()
        if observed != expected:
            raise AssertionError(
                f"expected the hosts to be tried in this order: {_listing(expected)}\n"
                f"observed: {_listing(observed)}\n{self._story()}\n({_NOT_SEEN})"
            )

    def assert_not_tried(self, host: str) -> None:
        """No session ever reached ``host``."""
        self.raise_errors()
        seen = self.totals(host).sessions
        if seen:
            raise AssertionError(
                f"expected no session at {host}, observed {seen}:\n{self._story()}"
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

    def _placed(self, only: Sequence[MailHost] | None = None) -> list[tuple[MailHost, Placement]]:
        pairs = zip(self._sandbox.hosts, self.placements, strict=True)
        return [(h, p) for h, p in pairs if only is None or h in only]

    def _story(self) -> str:
        sessions = self.sessions()
        if not sessions:
            return "sessions: none"
        return "sessions:\n" + "\n".join(f"  {session}" for session in sessions)


def _listing(hosts: Sequence[str]) -> str:
    return " → ".join(hosts) if hosts else "(none)"
