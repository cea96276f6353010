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
import errno
import gc
import resource
import signal
from collections.abc import Iterator, Sequence
from email.parser import BytesHeaderParser
from typing import Any

import looptime

from sandbox.core.addresses import AddressMap, canonical
from sandbox.core.policy import PROFILES, Profile
from sandbox.dns.server import DnsServer
from sandbox.errors import ScenarioError
from sandbox.events import (
    Connected,
    ConnectFailed,
    DsnCreated,
    Emit,
    Event,
    RunEnd,
    RunFinished,
    RunStarted,
)
from sandbox.hosts.host import MailHost
from sandbox.result.expect import check_expectations
from sandbox.result.model import DeliveryRow, HostStats, ReturnedRow, RunResult
from sandbox.scenario.load import retry_schedule_problem
from sandbox.scenario.model import Scenario, describe_timeline
from sandbox.sender.agent import SenderAgent
from sandbox.sender.message import message_id
from sandbox.sender.resolver import StubResolver
from sandbox.world import Clock, World, host_addresses

__all__ = ["Sandbox", "profile_for", "run_scenario"]


def profile_for(scenario: Scenario, override_profile: str | None = None) -> Profile:
    """The scenario's profile with its overrides; ``override_profile`` swaps the base.

    The loader checked that the scenario's own profile gives up on a failing message in a
    run's time; a swapped one meets the same settings with another schedule (a
    `retry_interval: 1s` that Postfix ignores, rfc5321 tries 432,000 times), and is checked
    here."""
    profile = PROFILES[override_profile or scenario.sender.profile].with_overrides(
        dict(scenario.sender.overrides)
    )
    problem = retry_schedule_problem(profile) if override_profile else None
    if problem is not None:
        raise ScenarioError(problem, file=scenario.source, key="sender")
    return profile


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
        self.world = World(scenario, sinks=sinks)
        self.network = AddressMap()
        self._delivering: asyncio.Task[None] | None = None
        self._interrupted = False

    # --- what it is made of ------------------------------------------------------------

    @property
    def events(self) -> list[Event]:
        return self.world.events

    @property
    def hosts(self) -> list[MailHost]:
        return self.world.hosts

    @property
    def dns(self) -> DnsServer | None:
        return self.world.dns

    @property
    def clock(self) -> Clock:
        return self.world.clock

    def emit(self, event: Event) -> None:
        self.world.emit(event)

    # --- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Start the DNS server and one host per zone address, each on 127.0.0.1 at a free
        port, and map every zone address to its host's socket."""
        self.world.clock.start()
        addresses = self.world.host_addresses()
        _make_room_for(len(addresses))
        try:
            with self._enough_files(len(addresses)):
                await self.world.start_dns("127.0.0.1", 0)
                for name, address in addresses:
                    host = await self.world.start_host(name, address)
                    self.network.add(address, host.listen, host.connection_attempted)
                if self.scenario.mta_sts:
                    # One HTTPS server plays mta-sts.<domain> for every policy domain.
                    listen = await self.world.start_policy_server("127.0.0.1", 0)
                    for policy_addresses in self.world.policy_addresses().values():
                        for address in policy_addresses:
                            self.network.add(address, listen, service="https")
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await self.world.stop()

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
            in_scenario=self.world.in_scenario,
            authority=self.world.certificates,
        )
        reason: RunEnd = "settled"
        self._delivering = asyncio.get_running_loop().create_task(agent.deliver(scenario.messages))
        if self._interrupted:  # interrupted before the run began
            self._cancel_delivery()
        try:
            async with asyncio.timeout(scenario.until):
                with self._enough_files(len(self.hosts)):
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

    @contextlib.contextmanager
    def _enough_files(self, hosts: int) -> Iterator[None]:
        """Running out of file descriptors is the machine's limit, not a crash: it becomes a
        ScenarioError that says how many the run needs and how to raise the limit."""
        try:
            yield
        except (OSError, BaseExceptionGroup) as error:  # the sender's task groups gather them
            code = _out_of_files(error)
            if code is None:
                raise
            raise _too_many_files(self.scenario, hosts, code) from None

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

    # --- the result ----------------------------------------------------------------------

    def _result(self, agent: SenderAgent) -> RunResult:
        rows = tuple(
            DeliveryRow.of(e)
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
            tls_reports=agent.tls.reports(self.scenario.name, self.seed),
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
                # Kept in the returned-mail mailbox: it arrived there (``via`` says where).
                status, data = "delivered", next(kept).data
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
                describe_timeline(
                    self.scenario.behaviour_of(name, (group[0].address,)), self.clock()
                ),
            )
            for name, group in sorted(by_name.items())
        )


_VIRTUAL_TICK = 1e-6

# The file descriptors a run needs: a mail host holds one socket (listening, or bound to
# refuse), and one that times connections out holds a listener, a filler connection and a
# probe; besides the hosts, the DNS server's sockets and the resolver's, the sessions in
# flight (two descriptors each: the sender's end and the host's), the event loop's own and
# the interpreter's.
_FILES_PER_HOST = 3
_FILES_BESIDES_HOSTS = 256


def _files_needed(hosts: int) -> int:
    return hosts * _FILES_PER_HOST + _FILES_BESIDES_HOSTS


def _make_room_for(hosts: int) -> None:
    """Raise this process's soft limit of open files (``ulimit -n``) as far as the run of
    ``hosts`` mail hosts needs, if the hard limit allows: many hosts then just run."""
    needed = _files_needed(hosts)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if wanted > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _out_of_files(error: BaseException) -> int | None:
    """EMFILE or ENFILE when ``error`` (or an error of its group) is running out of files."""
    if isinstance(error, BaseExceptionGroup):
        codes = (_out_of_files(inner) for inner in error.exceptions)
        return next((code for code in codes if code is not None), None)
    if isinstance(error, OSError) and error.errno in (errno.EMFILE, errno.ENFILE):
        return error.errno
    return None


def _too_many_files(scenario: Scenario, hosts: int, code: int) -> ScenarioError:
    needed = _files_needed(hosts)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(needed, 2 * soft)  # when the estimate fell short, ask for more than now
    if code == errno.ENFILE:
        why = "the system has no more open files to give (ENFILE); close other programs"
    elif hard != resource.RLIM_INFINITY and hard < target:
        why = (
            f"this process may open at most {soft:,} (ulimit -n; the hard limit is {hard:,}); "
            f"raise the hard limit to {target:,} or more (as root: ulimit -Hn {target}, or "
            "nofile in /etc/security/limits.conf), then run again"
        )
    else:
        why = f"this process may open at most {soft:,}; raise it with ulimit -n {target}"
    # Point at the zone that gives the most addresses: the one to trim.
    busiest = max(scenario.zones, key=lambda z: len(host_addresses([z.phases])), default=None)
    return ScenarioError(
        f"the zones give {hosts:,} mail host address{'es' if hosts != 1 else ''}, and a run "
        f"of them needs up to about {needed:,} open files; {why}, or give the zones fewer "
        "addresses",
        file=scenario.source,
        line=busiest.line if busiest is not None else None,
        key="zones",
    )


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
        with _sigint_interrupts(sandbox), _out_of_files_stops(sandbox) as out_of_files:
            async with sandbox:
                result = await sandbox.run()
        if out_of_files:
            raise _too_many_files(scenario, len(sandbox.hosts), out_of_files[0])
        return result

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


@contextlib.contextmanager
def _out_of_files_stops(sandbox: Sandbox) -> Iterator[list[int]]:
    """A host that cannot accept a connection for want of file descriptors is no crash, but
    asyncio only logs it (a traceback on stderr, each time) and the run would go on with
    connections that were never answered. Stop the run instead; the list says why (EMFILE or
    ENFILE), and the caller turns that into one clear error."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    codes: list[int] = []

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        code = None if error is None else _out_of_files(error)
        if code is None:
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)
        elif not codes:
            codes.append(code)
            sandbox.interrupt()

    loop.set_exception_handler(handle)
    try:
        yield codes
    finally:
        loop.set_exception_handler(previous)


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


def _virtual_loop() -> asyncio.AbstractEventLoop:
    loop = looptime.new_event_loop(start=0.0)
    # asyncio runs a timer once loop.time() + clock resolution passes it. The resolution is
    # the real clock's (1 ns), and past about 200 virtual days adding 1 ns to a float time
    # changes nothing: a timer due exactly now would never run, and the run would hang. The
    # virtual clock ticks in microseconds (looptime's resolution), so say so.
    loop._clock_resolution = _VIRTUAL_TICK  # type: ignore[attr-defined]
    return loop
