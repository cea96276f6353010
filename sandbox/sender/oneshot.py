"""``mxsandbox send``: our sender, for one message, in real time, against DNS and mail hosts
outside the sandbox (``mxsandbox serve``, a conformance case, your own servers on loopback).

It is the same agent that ``mxsandbox run`` drives on a virtual clock, here on a plain
asyncio loop: it asks the DNS server it is given (and no other), walks the MX records with a
profile's rules, and speaks SMTP to the addresses DNS gave, at one port. It never leaves
loopback: an answer outside 127.0.0.0/8 and ::1 is treated as an address it cannot reach.

Exit codes follow sendmail's convention (sysexits.h), so that any harness that runs a mailer
command can read them: 0 every recipient delivered, 75 (EX_TEMPFAIL) deferred, 69
(EX_UNAVAILABLE) some recipient failed for good; 2 the command line is wrong.

Two ways to run:

- one-shot (the default): one delivery attempt, as ``sendmail -odi`` without a queue would:
  a deferral ends the command with 75;
- ``--queue``: the command keeps the message until it is delivered or the profile gives up,
  retrying on the profile's schedule, and with ``--dsn`` sends bounces back through the
  envelope sender's MX like an MTA.

``--time-scale N`` runs every timer of the profile (timeouts, retry waits, the give-up time)
N times faster, so that a five-minute greeting timeout or a 30-minute retry fits in a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sandbox.core.addresses import AddressMap, Service, is_loopback
from sandbox.core.policy import FIELD_KINDS, Profile, RetryRule
from sandbox.errors import NotInSandbox
from sandbox.events import Event, RecipientDeferred, RecipientFinal
from sandbox.output.postfix_log import PostfixLog
from sandbox.scenario.model import MessageSpec
from sandbox.sender.agent import SenderAgent
from sandbox.sender.resolver import StubResolver
from sandbox.tls.certificates import CertificateAuthority
from sandbox.world import Clock

__all__ = [
    "DNS_TIMEOUT",
    "EXIT_DEFERRED",
    "EXIT_DELIVERED",
    "EXIT_FAILED",
    "TIMEOUT_FLOOR",
    "LoopbackNetwork",
    "SendRequest",
    "SendResult",
    "scaled_profile",
    "send_message",
]

EXIT_DELIVERED, EXIT_FAILED, EXIT_DEFERRED = 0, 69, 75
# The stub resolver's wait for one DNS reply, before the time scale (tried twice).
DNS_TIMEOUT = 5.0
_MIN_DNS_TIMEOUT = 1.0
# The shortest any SMTP timeout is scaled down to (see scaled_profile).
TIMEOUT_FLOOR = 1.0

Status = Literal["delivered", "bounced", "deferred"]


class LoopbackNetwork(AddressMap):
    """Every loopback address at one SMTP port (and one HTTPS port, where MTA-STS policies
    are fetched: ``serve``'s default is 443): the network a sender outside the sandbox sees.
    An IPv4-mapped IPv6 answer (``::ffff:127.0.0.5``) is reached at its IPv4 form."""

    def __init__(self, port: int, https_port: int = 443) -> None:
        super().__init__()
        self._port = port
        self._https_port = https_port

    def socket_for(self, zone_address: str, service: Service = "smtp") -> tuple[str, int]:
        address = _unmapped(zone_address)
        if address is None or not is_loopback(address):
            raise NotInSandbox(
                f"{zone_address} is not a loopback address; `mxsandbox send` never leaves loopback"
            )
        return (address, self._port if service == "smtp" else self._https_port)

    def __contains__(self, zone_address: object) -> bool:
        address = _unmapped(str(zone_address))
        return address is not None and is_loopback(address)


def _unmapped(address: str) -> str | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def scaled_profile(profile: Profile, scale: float, *, timeout_floor: float = 0.0) -> Profile:
    """``profile`` with every duration divided by ``scale`` (its timeouts, retry waits,
    queue scan, lifetime, and Exim's retry rules). No timeout goes below ``timeout_floor``:
    on a busy machine a loopback connect can take longer than 30 s / 100, and a host must not
    look dead because the sender was slow."""
    if scale == 1:
        return profile
    changes: dict[str, object] = {}
    for name, kind in FIELD_KINDS.items():
        value = getattr(profile, name)
        if kind == "duration" and isinstance(value, int | float):
            floor = timeout_floor if name.endswith("_timeout") else 0.0
            changes[name] = max(value / scale, min(value, floor))
    changes["retry_rules"] = tuple(
        RetryRule(rule.kind, rule.cutoff / scale, rule.interval / scale, rule.factor)
        for rule in profile.retry_rules
    )
    return dataclasses.replace(profile, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class SendRequest:
    """One message to send: where DNS and the hosts are, the envelope, the content, how."""

    dns: tuple[str, int]
    smtp_port: int
    sender: str
    recipients: tuple[str, ...]
    data: bytes
    profile: Profile
    queue: bool = False
    dsn: bool = False
    seed: int | None = None
    dns_timeout: float = DNS_TIMEOUT


@dataclass(frozen=True, slots=True)
class SendResult:
    """What became of each recipient, and the exit code that says it."""

    statuses: dict[str, Status]
    replies: dict[str, str]

    @property
    def exit_code(self) -> int:
        values = set(self.statuses.values())
        if "bounced" in values:
            return EXIT_FAILED
        if "deferred" in values or not values:
            return EXIT_DEFERRED
        return EXIT_DELIVERED


async def send_message(
    request: SendRequest, *, log: Callable[[str], None] | None = None
) -> SendResult:
    """Send one message on the running loop and report each recipient's fate."""
    clock = Clock()
    clock.start()
    settled: dict[str, Event] = {}
    first_attempt_over = asyncio.Event()
    sinks: list[Callable[[Event], None]] = []
    if log is not None:
        sinks.append(PostfixLog(log))

    def emit(event: Event) -> None:
        for sink in sinks:
            sink(event)
        if isinstance(event, RecipientFinal | RecipientDeferred) and event.message == 1:
            settled.setdefault(event.recipient, event)
            if all(r in settled for r in request.recipients):
                first_attempt_over.set()

    seed = request.seed if request.seed is not None else random.SystemRandom().randrange(2**32)
    # A CA of the sender's own: the client side of STARTTLS, as an MTA at its profile's level
    # has one. It knows no host's CA, so every certificate is judged untrusted: enough at
    # "may" (TLS anyway, as the MTAs do), refused at "verify". Without it the sender had no
    # TLS at all, and a profile that ends the attempt when STARTTLS fails (haraka) never
    # delivered to a host that offers it.
    with CertificateAuthority(label="mxsandbox send") as authority:
        agent = SenderAgent(
            profile=request.profile,
            resolver=StubResolver(
                request.dns,
                clock=clock,
                timeout=max(_MIN_DNS_TIMEOUT, request.dns_timeout),
            ),
            network=LoopbackNetwork(request.smtp_port),
            emit=emit,
            clock=clock,
            seed=seed,
            # With --dsn a bounce goes back through the envelope sender's MX, as an MTA's does;
            # otherwise it is kept, and the exit code says what happened.
            in_scenario=lambda domain: request.dsn,
            authority=authority,
        )
        spec = MessageSpec(1, request.sender, request.recipients)
        delivering = asyncio.ensure_future(agent.deliver((spec,), {1: request.data}))
        if request.queue:
            await delivering
        else:
            waiting = asyncio.ensure_future(first_attempt_over.wait())
            try:
                await asyncio.wait({delivering, waiting}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiting.cancel()
                if not delivering.done():
                    delivering.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await delivering  # raises what the delivery raised, if it failed
    agent.settle_unfinished()
    statuses: dict[str, Status] = {}
    replies: dict[str, str] = {}
    for recipient in request.recipients:
        final = agent.final.get((1, recipient))
        statuses[recipient] = final.status if final is not None else "deferred"
        replies[recipient] = final.reply if final is not None and final.reply else ""
    return SendResult(statuses, replies)
