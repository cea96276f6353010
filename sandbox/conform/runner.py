"""The runner: serves each case's world, has the sender deliver into it, and grades it.

Theory of operation
-------------------
For each case (several at once, ``jobs`` of them, each in its own world on its own random
127.B.C.0/24 block and its own ports), on one asyncio loop in real time:

1. build the case's scenario (its zone under ``<id>.test``, the bounce host ``returns``, the
   host behaviours and DNS faults) and serve it with ``ServedScenario``;
2. write each message to a file and hand it to the sender:

   - ``--sender-cmd``: the command template, with ``{dns}``, ``{smtp_port}``, ``{from}``,
     ``{to}``, ``{message_file}`` (and ``{self}``, ``{dns_host}``, ``{dns_port}``) filled
     in, runs once per message; its exit code says what it made of the message (sendmail's
     convention: 0 delivered, 75 deferred, anything else failed). Without ``--queue`` it is a
     one-shot command; with it, the command keeps the message until it is delivered or given
     up, retrying on its own schedule;
   - ``--smtp HOST:PORT``: the messages are submitted to the MTA there over SMTP, as
     sendmail or swaks would. The MTA resolves through one fixed DNS address (its
     resolv.conf), so a ``DnsRouter`` there passes each query to the world of the case
     whose domain it names, and every world's hosts listen on one fixed SMTP port;
3. run the case's script, if it has one (a host that recovers after its first session);
4. end the case when every command has exited (or every submitted message is delivered or
   returned), when the case's ``settled`` predicate says the verdict is known, or at the
   deadline, whichever comes first; commands still running are stopped (their process group,
   SIGTERM then SIGKILL);
5. take the ``Observation`` (sessions, accepted messages, DNS queries, bounces that came
   back, what each command said) and let the case's judge grade it.

Nothing here sleeps to wait for readiness: a world is served once ``start()`` returns, and
every wait is on an event (a session, a DNS query, a process that exits) or the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shlex
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.parser import BytesHeaderParser, BytesParser
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from sandbox.conform.catalogue import CATALOGUE
from sandbox.conform.model import (
    RETURNS,
    Case,
    CaseResult,
    DnsQuery,
    Judgement,
    Mode,
    Observation,
    Returned,
    Run,
    RunStatus,
    SeenSession,
    Stored,
    info,
)
from sandbox.core.addresses import ensure_loopback
from sandbox.events import DnsServed, Event

__all__ = [
    "PLACEHOLDERS",
    "CommandTarget",
    "Options",
    "Report",
    "SmtpTarget",
    "run_catalogue",
    "run_conformance",
]

EXIT_DELIVERED, EXIT_DEFERRED = 0, 75
PLACEHOLDERS = ("dns", "dns_host", "dns_port", "smtp_port", "from", "to", "message_file", "self")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")
_OUTPUT_KEPT = 6000  # characters of a command's output kept for the evidence
_STOP_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
_SUBMIT_TIMEOUT = 30.0
_SELF_ZONE_ADDRESS = "192.0.2.50"  # the sender's own host, in command mode
_NOBODY = "127.0.0.1"  # {self} where the sender is none of the MX hosts: no world serves it
_RETURNS_ZONE = "returns  MX 10 returns\nreturns  A  192.0.2.250\n"
_DEFAULT_JOBS = 6


@dataclass(frozen=True, slots=True)
class CommandTarget:
    """A sender run as a command, once per message."""

    template: str
    queue: bool = False

    def __post_init__(self) -> None:
        try:
            words = shlex.split(self.template)
        except ValueError as error:
            raise ValueError(f"the sender command cannot be split into words: {error}") from None
        if not words:
            raise ValueError("the sender command is empty")
        text = " ".join(words)
        if "{dns}" not in text and not ("{dns_host}" in text and "{dns_port}" in text):
            raise ValueError(
                "the sender command must take the DNS server: put {dns} (HOST:PORT) in it, "
                "or {dns_host} and {dns_port}"
            )
        for needed in ("{smtp_port}", "{to}"):
            if needed not in text:
                raise ValueError(f"the sender command must take {needed}: put it in the template")

    @property
    def takes_self(self) -> bool:
        return "{self}" in self.template

    def argv(self, values: Mapping[str, str]) -> list[str]:
        return [
            _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), word)
            for word in shlex.split(self.template)
        ]

    def describe(self) -> str:
        return self.template + (" (keeps a queue)" if self.queue else " (one-shot)")


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    """An MTA that takes the messages over SMTP at ``host:port``, and resolves through the
    DNS address ``dns`` (its resolv.conf: 127.0.0.1:53 in a namespace), reaching the mail
    hosts at ``smtp_port`` (25 in a namespace). ``self_address`` is an address the MTA counts
    as its own (Postfix's ``proxy_interfaces``, Exim's ``extra_local_interfaces``)."""

    host: str
    port: int
    dns: tuple[str, int] = ("127.0.0.1", 53)
    smtp_port: int = 25
    self_address: str | None = None

    def describe(self) -> str:
        return f"the MTA at {self.host}:{self.port} (over SMTP)"


@dataclass(frozen=True, slots=True)
class Options:
    target: CommandTarget | SmtpTarget
    case_timeout: float = 30.0
    time_scale: float = 1.0
    jobs: int = _DEFAULT_JOBS
    cases: tuple[Case, ...] = CATALOGUE
    on_result: Callable[[CaseResult], None] | None = None
    # --smtp: told where the DNS router and the hosts' SMTP port are, before any case runs.
    on_ready: Callable[[tuple[str, int], int], None] | None = None
    env: Mapping[str, str] | None = None  # the commands' environment (default: ours)

    @property
    def mode(self) -> Mode:
        if isinstance(self.target, SmtpTarget):
            return "smtp"
        return "queue" if self.target.queue else "command"


@dataclass(frozen=True, slots=True)
class Report:
    """A whole run: every case's result, and how the sender was run."""

    results: tuple[CaseResult, ...]
    sender: str
    mode: Mode
    time_scale: float
    case_timeout: float
    started: str  # ISO 8601, UTC
    duration: float
    label: str = ""  # a name for tables: "postfix profile", "Node.js sender"
    notes: tuple[str, ...] = field(default_factory=tuple)


# --- running the catalogue --------------------------------------------------------------------


def run_conformance(options: Options) -> Report:
    """Run the cases on a fresh event loop (real time) and return the report.

    SIGTERM stops the run as Ctrl-C does (asyncio's runner cancels the main task on SIGINT):
    the cancellation reaches every case at an await, each stops the commands it started
    (their process groups; a command being started is killed by asyncio itself), and then
    KeyboardInterrupt is raised. A signal handled by the loop, never an exception raised
    in the middle of starting a process, so that no command is left running."""

    async def main() -> Report:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        stopped: list[int] = []

        def stop() -> None:
            stopped.append(signal.SIGTERM)
            task.cancel()

        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, stop)
        try:
            return await run_catalogue(options)
        except asyncio.CancelledError:
            if stopped:
                raise KeyboardInterrupt from None
            raise
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGTERM)

    return asyncio.run(main())


async def run_catalogue(options: Options) -> Report:
    """Run the cases on the running loop, ``options.jobs`` at a time."""
    started_wall = datetime.now(UTC)
    started = time.monotonic()
    token = secrets.token_hex(3)
    router = None
    smtp_port = 0
    locks: dict[str, asyncio.Lock] = {"self": asyncio.Lock()}
    with tempfile.TemporaryDirectory(prefix="mxsandbox-conform-") as workdir:
        if isinstance(options.target, SmtpTarget):
            from sandbox.conform.router import DnsRouter

            router = DnsRouter()
            await router.start(*options.target.dns)
            smtp_port = options.target.smtp_port or _free_port()
            if options.on_ready is not None:
                options.on_ready(router.address, smtp_port)
        try:
            gate = asyncio.Semaphore(max(1, options.jobs))
            context = _Context(options, Path(workdir), token, router, smtp_port, locks)

            async def one(case: Case) -> CaseResult:
                async with gate:
                    result = await _run_case(case, context)
                if options.on_result is not None:
                    options.on_result(result)
                return result

            results = await asyncio.gather(*(one(case) for case in options.cases))
        finally:
            if router is not None:
                await router.close()
    notes: tuple[str, ...] = ()
    if router is not None and router.unrouted:
        asked = ", ".join(sorted({f"{name} {rdtype}" for name, rdtype in router.unrouted}))
        notes = (f"the MTA also asked DNS for names no case serves (answered NXDOMAIN): {asked}",)
    if router is not None and router.late:
        # An MTA keeps the mail of a case that ended with it queued, and keeps trying.
        ended = sorted({domain for domain, _, _ in router.late})
        notes += (
            f"after their cases had ended, the MTA went on with the mail it still held for "
            f"{len(ended)} of them (retries, bounces; their names now answer NXDOMAIN): "
            + ", ".join(ended),
        )
    target = options.target
    return Report(
        tuple(results),
        target.describe(),
        options.mode,
        options.time_scale,
        options.case_timeout,
        started_wall.isoformat(timespec="seconds"),
        time.monotonic() - started,
        notes=notes,
    )


def _free_port() -> int:
    """A port the OS says is free now, for every world's hosts to share (--smtp with port
    0). Each world binds it on addresses of its own block, and tries another block if taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass(slots=True)
class _Context:
    options: Options
    workdir: Path
    token: str
    router: Any  # DnsRouter | None
    smtp_port: int
    locks: dict[str, asyncio.Lock]


async def _run_case(case: Case, context: _Context) -> CaseResult:
    options = context.options
    started = time.monotonic()
    self_address: str | None = None
    if "self" in case.needs:
        target = options.target
        if isinstance(target, SmtpTarget):
            if target.self_address is None:
                reason = (
                    "not run: give --self ADDRESS, an address the MTA counts as its own "
                    "(Postfix: proxy_interfaces; Exim: extra_local_interfaces)"
                )
                return CaseResult(case, info(reason), None, 0.0, pending=reason)
            ensure_loopback(target.self_address)
            self_address = target.self_address
        elif not target.takes_self:
            reason = (
                "not run: the command has no {self} placeholder, so the sender cannot know "
                "that it is one of the MX hosts"
            )
            return CaseResult(case, info(reason), None, 0.0, pending=reason)
        if self_address is not None:
            # Every self case of an MTA serves a host at the same address and port: one at a
            # time. In command mode each world has a self address of its own.
            async with context.locks["self"]:
                return await _CaseRun(case, context, self_address).run(started)
    return await _CaseRun(case, context, self_address).run(started)


class _CaseRun:
    """One case, from serving its world to its verdict."""

    def __init__(self, case: Case, context: _Context, self_address: str | None) -> None:
        self.case = case
        self.context = context
        self.options = context.options
        self.self_zone = self_address or _SELF_ZONE_ADDRESS
        self.runs: list[Run] = []
        self.poke = asyncio.Event()
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.ended_by_us: set[int] = set()
        self.stopping = False  # the case is over: start no more commands or submissions
        self.t0 = 0.0
        self._stored_ids: dict[int, str] = {}

    # --- the case from start to end -----------------------------------------------------------

    async def run(self, started: float) -> CaseResult:
        from sandbox.scenario.load import scenario_from_mapping
        from sandbox.serve.harness import ServedScenario

        case = self.case
        scenario = scenario_from_mapping(scenario_mapping(case, self.self_zone), f"<{case.id}>")
        smtp_port = self.context.smtp_port
        self.world = ServedScenario(scenario, on_event=self._on_event, smtp_port=smtp_port)
        loop = asyncio.get_running_loop()
        self.t0 = loop.time()
        await self.world.start()
        router = self.context.router
        try:
            if router is not None:
                router.add(case.domain, self.world.dns)
            observation = await self._drive()
        finally:
            if router is not None:
                router.remove(case.domain)
            await self._stop_commands()
            await self.world.stop()
        errors = self.world.errors
        unsubmitted = self._unsubmitted()
        if errors:
            judgement = info(f"the sandbox itself failed while serving this case: {errors[0]!r}")
        elif unsubmitted:
            # The MTA never took the mail: whatever the hosts saw proves nothing about it.
            judgement = info(f"not graded: the MTA did not take the message ({unsubmitted})")
        else:
            judgement = _judge(case, observation)
        return CaseResult(case, judgement, observation, time.monotonic() - started)

    def _unsubmitted(self) -> str | None:
        """Over SMTP: why no message reached the MTA at all, or None."""
        if not isinstance(self.options.target, SmtpTarget) or not self.runs:
            return None
        if all(r.status == "error" and r.output.startswith("could not submit") for r in self.runs):
            return self.runs[0].output
        return None

    async def _drive(self) -> Observation:
        deadline = self.options.case_timeout
        messages = [self._message(n) for n in range(1, self.case.messages + 1)]
        self.runs = [
            Run(n, sender, rcpts, mid, "running")
            for n, (sender, rcpts, mid, _) in enumerate(messages, 1)
        ]
        script = None
        if self.case.script is not None:
            script = asyncio.ensure_future(self.case.script(_Control(self)))
        sending = asyncio.ensure_future(self._send_all(messages))
        sending.add_done_callback(lambda _: self.poke.set())
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline):
                    await self._until_over(sending)
            # Stop what still runs; each command's task then records how it ended (with the
            # output it printed) and the messages not yet handed over are never sent.
            self.stopping = True
            await self._stop_commands()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_STOP_GRACE):
                    await asyncio.shield(sending)
        finally:
            await _cancel(sending)
            if script is not None:
                await _cancel(script)
        return self._observe(final=True)

    async def _until_over(self, sending: asyncio.Future[None]) -> None:
        while True:
            self.poke.clear()
            if self._over(sending):
                return
            await self.poke.wait()

    def _over(self, sending: asyncio.Future[None]) -> bool:
        """The case is over: its commands are done, or what it waits for has happened."""
        mode = self.options.mode
        if mode == "command":
            return sending.done()
        observed = self._observe()
        settled = self.case.settled
        if settled is not None and settled(observed):
            return True
        if not sending.done():
            return False
        if mode == "queue":
            return all(run.status != "running" for run in observed.runs)
        # An MTA says nothing: by default the case is over once every message is delivered
        # or returned; a case that knows better (a lost dot) waits for what it needs.
        return settled is None and all(
            run.status in ("delivered", "failed", "error") for run in observed.runs
        )

    def _on_event(self, event: Event) -> None:
        self.poke.set()

    def now(self) -> float:
        return asyncio.get_running_loop().time() - self.t0

    # --- the messages -------------------------------------------------------------------------

    def _message(self, number: int) -> tuple[str, tuple[str, ...], str, Path]:
        case = self.case
        sender = f"bob@{RETURNS}.{case.domain}"
        recipients = tuple(r.replace("{d}", case.domain) for r in case.recipients)
        mid = f"<{number}.{case.id}.{self.context.token}@conform.mxsandbox.test>"
        path = self.context.workdir / f"{case.id}-{number}.eml"
        path.write_bytes(message_bytes(case, number, sender, recipients, mid))
        return sender, recipients, mid, path

    async def _send_all(self, messages: list[tuple[str, tuple[str, ...], str, Path]]) -> None:
        target = self.options.target
        if isinstance(target, SmtpTarget):
            for number, message in enumerate(messages, 1):
                await self._submit(number, message, target)
            return
        gate = asyncio.Semaphore(max(1, self.case.parallel))

        async def one(number: int, message: tuple[str, tuple[str, ...], str, Path]) -> None:
            async with gate:
                await self._command(number, message, target)

        await asyncio.gather(*(one(n, m) for n, m in enumerate(messages, 1)))

    def _values(self, sender: str, recipients: tuple[str, ...], path: Path) -> dict[str, str]:
        host, port = self.world.dns
        values = {
            "dns": f"{host}:{port}",
            "dns_host": host,
            "dns_port": str(port),
            "smtp_port": str(self.world.smtp_port),
            "from": sender,
            "to": ",".join(recipients),
            "message_file": str(path),
        }
        # The sender's own address: one of the MX hosts in the self-MX cases, and elsewhere
        # an address that no MX names.
        values["self"] = (
            self.world.address_of(f"self.{self.case.domain}")
            if "self" in self.case.needs
            else _NOBODY
        )
        return values

    async def _command(
        self,
        number: int,
        message: tuple[str, tuple[str, ...], str, Path],
        target: CommandTarget,
    ) -> None:
        sender, recipients, _, path = message
        if self.stopping:
            self._not_sent(number)
            return
        values = self._values(sender, recipients, path)
        argv = target.argv(values)
        env = dict(self.options.env if self.options.env is not None else os.environ)
        env.update({f"MXSANDBOX_{k.upper()}": v for k, v in values.items()})
        env["MXSANDBOX_CASE"] = self.case.id
        started = self.now()
        run = self.runs[number - 1]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        except OSError as error:
            self.runs[number - 1] = replace(
                run, status="error", output=str(error), command=tuple(argv), started=started
            )
            self.poke.set()
            return
        self.procs[number] = proc
        self.runs[number - 1] = replace(run, started=started, command=tuple(argv))
        assert proc.stdout is not None
        output = await _read_tail(proc.stdout)
        code = await proc.wait()
        self.procs.pop(number, None)
        status: RunStatus
        if number in self.ended_by_us:
            status = "running"
        elif code == EXIT_DELIVERED:
            status = "delivered"
        elif code == EXIT_DEFERRED:
            status = "deferred"
        else:
            status = "failed"
        self.runs[number - 1] = replace(
            self.runs[number - 1], status=status, exit_code=code, ended=self.now(), output=output
        )
        self.poke.set()

    async def _submit(
        self,
        number: int,
        message: tuple[str, tuple[str, ...], str, Path],
        target: SmtpTarget,
    ) -> None:
        import aiosmtplib

        sender, recipients, _, path = message
        if self.stopping:
            self._not_sent(number)
            return
        started = self.now()
        run = self.runs[number - 1]
        status: RunStatus = "running"
        # aiosmtplib sends a non-ASCII address only when asked for SMTPUTF8 (and then only to
        # an MTA that offers it: SMTPNotSupported otherwise).
        utf8 = not all(address.isascii() for address in (sender, *recipients))
        try:
            _refused, reply = await aiosmtplib.send(
                path.read_bytes(),
                sender=sender,
                recipients=list(recipients),
                hostname=target.host,
                port=target.port,
                timeout=_SUBMIT_TIMEOUT,
                start_tls=False,
                use_tls=False,
                mail_options=["SMTPUTF8"] if utf8 else [],
            )
            output = f"submitted: {reply}"
        except aiosmtplib.SMTPRecipientsRefused as error:
            status, output = "failed", f"the MTA refused the recipients: {error}"
        except aiosmtplib.SMTPResponseException as error:
            status = "failed" if error.code >= 500 else "error"
            output = f"the MTA refused the message: {error.code} {error.message}"
        except (aiosmtplib.SMTPException, OSError) as error:
            status, output = "error", f"could not submit to {target.host}:{target.port}: {error}"
        self.runs[number - 1] = replace(
            run, status=status, started=started, output=output, command=("SMTP",)
        )
        self.poke.set()

    def _not_sent(self, number: int) -> None:
        run = self.runs[number - 1]
        output = "not sent: the case had ended (its deadline came first)"
        self.runs[number - 1] = replace(run, status="error", output=output)

    async def _stop_commands(self) -> None:
        """Stop what still runs: SIGTERM to its process group, SIGKILL after a grace."""
        waiting = []
        for number, proc in list(self.procs.items()):
            if proc.returncode is None:
                self.ended_by_us.add(number)
                _signal_group(proc, signal.SIGTERM)
                waiting.append(proc)
        if not waiting:
            return
        try:
            async with asyncio.timeout(_STOP_GRACE):
                await asyncio.gather(*(p.wait() for p in waiting))
        except TimeoutError:
            for proc in waiting:
                _signal_group(proc, signal.SIGKILL)
            await asyncio.gather(*(p.wait() for p in waiting))

    # --- what was seen ------------------------------------------------------------------------

    def _observe(self, *, final: bool = False) -> Observation:
        domain = self.case.domain
        world = self.world
        sessions = tuple(
            SeenSession(
                _role(s.host, domain),
                s.address,
                s.client,
                s.opened,
                s.closed,
                s.transcript,
                s.outline,
                s.zone_address,
            )
            for s in world.sessions()
        )
        stored: list[Stored] = []
        returned: list[Returned] = []
        for name in world.hosts:
            role = _role(name, domain)
            for message in world.mailbox(name):
                stored.append(Stored(message.t, role, message.recipients, self._header_id(message)))
                if role == RETURNS:
                    returned.extend(_dsn_of(message.t, message.data))
        stored.sort(key=lambda m: m.t)
        queries = tuple(
            DnsQuery(e.t, e.name, e.rdtype, e.rcode, e.answers, e.transport)
            for e in world.events
            if isinstance(e, DnsServed)
        )
        runs = tuple(self.runs)
        if self.options.mode == "smtp":
            runs = _smtp_statuses(runs, stored, returned, final=final)
        return Observation(
            self.case,
            self.options.mode,
            self.options.time_scale,
            self.options.case_timeout,
            runs,
            sessions,
            tuple(stored),
            queries,
            tuple(returned),
            self.now(),
            self.self_zone if "self" in self.case.needs else None,
        )

    def _header_id(self, message: Any) -> str:
        key = id(message)
        if key not in self._stored_ids:
            header = BytesHeaderParser().parsebytes(message.data).get("Message-ID", "")
            self._stored_ids[key] = str(header).strip()
        return self._stored_ids[key]


class _Control:
    """What a case's script may do (``model.Control``)."""

    def __init__(self, run: _CaseRun) -> None:
        self._run = run

    async def sessions_reach(self, role: str, count: int) -> None:
        """Wait until ``count`` sessions of ``role`` have ended."""
        world = self._run.world
        name = _name(role, self._run.case.domain)
        while sum(s.closed is not None for s in world.sessions(name)) < count:
            self._run.poke.clear()
            await self._run.poke.wait()

    def set_behaviour(self, role: str, behaviour: object) -> None:
        self._run.world.set_behaviour(_name(role, self._run.case.domain), behaviour)  # type: ignore[arg-type]


def _judge(case: Case, observation: Observation) -> Judgement:
    try:
        return case.judge(observation)
    except Exception as error:  # a judge's own bug must not hide the other cases
        return info(f"the judge of this case failed: {error!r}")


# --- the case's world -------------------------------------------------------------------------


def scenario_mapping(case: Case, self_address: str = _SELF_ZONE_ADDRESS) -> dict[str, object]:
    """The case's world as a scenario mapping (``scenario_from_mapping`` reads it)."""
    domain = case.domain
    zone = case.zone.replace("$SELF", self_address) + _RETURNS_ZONE
    return {
        "name": case.id,
        "title": case.title,
        "zones": {domain: zone},
        "hosts": {_key(k, domain): _filled(v, domain) for k, v in case.hosts.items()},
        "dns": {_name(k, domain): _filled(v, domain) for k, v in case.dns.items()},
    }


def _name(role: str, domain: str) -> str:
    return domain if role == "@" else f"{role}.{domain}"


def _key(key: str, domain: str) -> str:
    """A host key: a role, or a zone address kept as written."""
    return key if key[:1].isdigit() or ":" in key else _name(key, domain)


def _role(name: str, domain: str) -> str:
    name = name.lower().rstrip(".")
    if name == domain:
        return "@"
    return name.removesuffix(f".{domain}")


def _filled(value: object, domain: str) -> object:
    if isinstance(value, str):
        return value.replace("{d}", domain)
    if isinstance(value, Mapping):
        return {_filled(k, domain): _filled(v, domain) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_filled(v, domain) for v in value]
    return value


def message_bytes(
    case: Case, number: int, sender: str, recipients: tuple[str, ...], message_id: str
) -> bytes:
    """The case's message ``number``: a small RFC 5322 message, padded to ``case.size``."""
    headers = [
        f"From: {sender}",
        f"To: {', '.join(recipients)}",
        f"Subject: mxsandbox conform {case.id}, message {number}",
        f"Date: {format_datetime(datetime.now(UTC))}",
        f"Message-ID: {message_id}",
        "MIME-Version: 1.0",
        'Content-Type: text/plain; charset="utf-8"',
        "Content-Transfer-Encoding: 8bit",
    ]
    body = [f"This message was sent by `mxsandbox conform`, case {case.id}: {case.title}."]
    text = "\r\n".join(headers) + "\r\n\r\n" + "\r\n".join(body) + "\r\n"
    filler = "The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    while len(text.encode()) < case.size:
        text += filler
    return text.encode()


# --- helpers ----------------------------------------------------------------------------------


async def _read_tail(stream: asyncio.StreamReader) -> str:
    kept = bytearray()
    while chunk := await stream.read(4096):
        kept += chunk
        if len(kept) > 4 * _OUTPUT_KEPT:
            del kept[: len(kept) - _OUTPUT_KEPT]
    text = kept.decode(errors="replace")
    return text[-_OUTPUT_KEPT:]


def _signal_group(proc: asyncio.subprocess.Process, signum: int) -> None:
    # The command was started in a session of its own: its process group id is its pid, and
    # the group holds only what it started.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


async def _cancel(task: asyncio.Future[Any]) -> None:
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


_DSN_ACTION = re.compile(rb"^Action:\s*([A-Za-z]+)", re.MULTILINE | re.IGNORECASE)
_DSN_STATUS = re.compile(rb"^Status:\s*([245]\.\d{1,3}\.\d{1,3})", re.MULTILINE | re.IGNORECASE)
_OUR_IDS = re.compile(rb"<\d+\.[a-z0-9-]+\.[0-9a-f]+@conform\.mxsandbox\.test>")


def _dsn_of(t: float, data: bytes) -> list[Returned]:
    """The delivery status notification in a message that came back, if it is one."""
    content_type = BytesParser().parsebytes(data, headersonly=True).get_content_type()
    action = _DSN_ACTION.search(data)
    if content_type != "multipart/report" and action is None:
        return []
    status = _DSN_STATUS.search(data)
    about = tuple(dict.fromkeys(m.decode() for m in _OUR_IDS.findall(data)))
    return [
        Returned(
            t,
            action.group(1).decode().lower() if action else "unknown",
            status.group(1).decode() if status else "",
            about,
        )
    ]


def _smtp_statuses(
    runs: tuple[Run, ...], stored: list[Stored], returned: list[Returned], *, final: bool
) -> tuple[Run, ...]:
    """What became of each submitted message, as the hosts and the bounces tell it."""
    out = []
    for run in runs:
        status = run.status
        if status == "running":
            failed = any(r.action == "failed" and run.message_id in r.about for r in returned)
            delivered = any(m.message_id == run.message_id and m.role != RETURNS for m in stored)
            if failed:
                status = "failed"
            elif delivered:
                status = "delivered"
            elif final:
                status = "deferred"
        out.append(replace(run, status=status) if status != run.status else run)
    return tuple(out)
