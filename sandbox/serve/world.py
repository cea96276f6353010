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

import errno
import random
from collections.abc import Sequence

from sandbox.core.addresses import canonical, ensure_loopback
from sandbox.errors import AddressInUse, BindError, NotInSandbox
from sandbox.events import Emit, Event
from sandbox.hosts.host import MailHost
from sandbox.scenario.model import Scenario
from sandbox.serve.plan import BIND_ATTEMPTS, Placement, answer_for, loopback_plan
from sandbox.serve.retention import Retention, RetentionSpec
from sandbox.world import Clock, World

__all__ = ["ServedWorld"]


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
        self.placements: tuple[Placement, ...] = ()
        # Its own generator, seeded by the OS: a test that seeds `random` must not make two
        # xdist workers pick the same block.
        self._random = random.Random()

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

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind every host, then the DNS server: when DNS answers, the addresses it gives are
        already served."""
        self.world.clock.start()
        try:
            await self._bind_hosts()
            self.world.answer_with({p.zone_address: p.answer for p in self.placements})
            await self.world.start_dns(*self._dns_listen)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await self.world.stop()

    async def __aenter__(self) -> ServedWorld:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- the layout ----------------------------------------------------------------------------

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
        port = self._requested_port
        placements: list[Placement] = []
        try:
            for name, zone_address in wanted:
                address = plan[canonical(zone_address)]
                host = await _start_host(self.world, name, zone_address, (address, port))
                port = host.listen[1]
                placements.append(
                    Placement(name, zone_address, address, port, answer_for(zone_address, address))
                )
        except BaseException:
            await self.world.close_hosts()
            raise
        self.placements = tuple(placements)
        return port

    def _random_block(self) -> str:
        return f"127.{self._random.randint(16, 254)}.{self._random.randint(0, 255)}.2"


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
