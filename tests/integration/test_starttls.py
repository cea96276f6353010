"""STARTTLS through real TLS sockets: an aiosmtpd host with each ``tls:`` value, and our client.

The host is built the way ``hosts/session.py`` builds sessions (a ``PatchedSMTP`` subclass made
by ``loop.create_server``'s protocol factory, on 127.0.0.1 port 0), with ``StartTlsSMTP`` in
the middle. The client is aiosmtplib, upgraded by ``sender/starttls.py``; the certificate is
judged by ``tls/verify.py`` and ``tls/dane.py``, and the core decides. Everything runs on a
virtual clock (looptime), the one run mode uses included.

Hostile clients (garbage after the 220, a handshake that stops half way, a bounded fuzz) are
tried against the sandbox's own ``MailHost`` in ``tests/reliability/test_bad_tls_clients.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiosmtplib
import pytest

from sandbox.core.classify import NoReply, ServerReply
from sandbox.core.tls import (
    TLS_RULES,
    Established,
    HandshakeFailed,
    HostTls,
    Level,
    NotOffered,
    Offered,
    Requirement,
    StartTlsRefused,
    TlsDecision,
    TlsEvent,
    decide,
    plan_host,
)
from sandbox.hosts.starttls import ALREADY_ACTIVE, StartTlsSMTP
from sandbox.run import _virtual_loop  # the loop run mode runs on
from sandbox.sender.smtp import dot_stuff
from sandbox.sender.starttls import TlsDown, TlsUp, start_tls
from sandbox.tls.certificates import CertificateAuthority
from sandbox.tls.dane import check, record_for
from sandbox.tls.verify import judge

pytestmark = pytest.mark.looptime

HOST = "mx1.example.test"
SENDER = "bob@example.net"
RCPT = "alice@example.test"
BODY = b"Subject: hello\r\n\r\nHi Alice, over TLS.\r\n"
NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.UTC)


# --- the host --------------------------------------------------------------------------------


@dataclass
class Host:
    """What the proof host does and what it saw."""

    ca: CertificateAuthority
    tls: HostTls = "valid"
    refusal: str | None = None  # a scripted reply to STARTTLS (the ``starttls`` stage)
    stored: list[bytes] = field(default_factory=list)
    tls_log: list[tuple[str, str]] = field(default_factory=list)
    port: int = 0


class _Handler:
    def __init__(self, host: Host) -> None:
        self.host = host

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.host.stored.append(envelope.original_content)
        return "250 2.0.0 Ok: queued"


class ProofSession(StartTlsSMTP):
    def __init__(self, host: Host) -> None:
        super().__init__(
            _Handler(host),
            tls_now=lambda: host.tls,
            contexts=lambda tls: host.ca.server_context(HOST, tls),
            hostname=HOST,
            ident="ESMTP MX Sandbox",
            timeout=600,
            loop=asyncio.get_running_loop(),
        )
        self.host = host

    def tls_started(self, version: str, cipher: str) -> None:
        self.host.tls_log.append(("started", version))

    def tls_failed(self, reason: str) -> None:
        self.host.tls_log.append(("failed", reason))

    async def smtp_STARTTLS(self, arg: str) -> None:
        if self.host.refusal is not None:  # as session.py plays a scripted stage
            await self.push(self.host.refusal)
            return
        await super().smtp_STARTTLS(arg)


@contextlib.asynccontextmanager
async def serving(ca: CertificateAuthority, **settings: Any) -> AsyncIterator[Host]:
    host = Host(ca, **settings)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: ProofSession(host), "127.0.0.1", 0)
    host.port = server.sockets[0].getsockname()[1]
    try:
        yield host
    finally:
        server.close()
        await server.wait_closed()


# --- the sender --------------------------------------------------------------------------------


@dataclass
class Session:
    """What one delivery through the proof host found, step by step."""

    offered: bool = False
    upgrade: ServerReply | NoReply | TlsUp | TlsDown | None = None
    verdict: str = ""
    dane: str = ""
    decision: TlsDecision | None = None
    delivered: bool = False
    ehlo_over_tls: str = ""


async def deliver(
    host: Host, level: Level = "may", *, tlsa: bool = False, timeout: float = 60
) -> Session:
    """Our sender's walk through one session, with the core deciding each TLS step."""
    found = Session()
    requirement = plan_host(level, dane="usable" if tlsa else "none")
    assert isinstance(requirement, Requirement)
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=host.port, start_tls=False, timeout=None)
    await client.connect(timeout=timeout)
    try:
        ehlo = await client.execute_command(b"EHLO sender.sandbox.test", timeout=timeout)
        found.offered = "STARTTLS" in ehlo.message.upper().split()
        event: TlsEvent = Offered() if found.offered else NotOffered()
        decision = decide(TLS_RULES["postfix"], requirement, event)
        if decision.action == "starttls":
            context = host.ca.client_context()
            found.upgrade = await start_tls(client, context, server_name=HOST, timeout=timeout)
            decision = decide(TLS_RULES["postfix"], requirement, _event(found, host, tlsa))
        found.decision = decision
        if decision.action == "tls":
            again = await client.execute_command(b"EHLO sender.sandbox.test", timeout=timeout)
            found.ehlo_over_tls = again.message
        if decision.action in ("tls", "plain"):
            found.delivered = await _transaction(client, timeout)
    finally:
        client.close()
    return found


def _event(found: Session, host: Host, tlsa: bool) -> TlsEvent:
    upgrade = found.upgrade
    if isinstance(upgrade, ServerReply):
        return StartTlsRefused(upgrade)
    if not isinstance(upgrade, TlsUp):
        return HandshakeFailed(str(upgrade))
    found.verdict = judge(upgrade.chain, HOST, [host.ca.ca_der], NOW).verdict
    if tlsa:
        # The host's published key (3 1 1), as a zone carrying its TLSA record would say.
        record = record_for(host.ca.server_certificate(HOST, "valid").der)
        found.dane = check(upgrade.chain, [record], [HOST], NOW).verdict
    return Established(upgrade.version, found.verdict, found.dane or None)  # type: ignore[arg-type]


async def _transaction(client: aiosmtplib.SMTP, timeout: float) -> bool:
    for line in (f"MAIL FROM:<{SENDER}>", f"RCPT TO:<{RCPT}>", "DATA"):
        reply = await client.execute_command(line.encode(), timeout=timeout)
        if reply.code >= 400:
            return False
    assert client.protocol is not None
    client.protocol.write(dot_stuff(BODY))
    reply = await client.protocol.read_response(timeout=timeout)
    return reply.code == 250


# --- each tls: value, through real TLS ---------------------------------------------------------


@pytest.mark.parametrize(
    ("tls", "verdict"),
    [
        ("valid", "valid"),
        ("expired", "expired"),
        ("self-signed", "self-signed"),
        ("wrong-name", "wrong-name"),
    ],
)
async def test_each_certificate_gets_its_verdict_and_postfix_at_may_delivers_over_tls(
    ca: CertificateAuthority, tls: HostTls, verdict: str
) -> None:
    async with serving(ca, tls=tls) as host:
        found = await deliver(host)
    assert found.offered
    assert isinstance(found.upgrade, TlsUp) and found.upgrade.version in ("TLSv1.3", "TLSv1.2")
    assert found.verdict == verdict
    assert found.decision is not None and found.decision.action == "tls"
    assert found.delivered and host.stored and BODY.split(b"\r\n")[0] in host.stored[0]
    assert host.tls_log == [("started", found.upgrade.version)]
    assert "STARTTLS" not in found.ehlo_over_tls.upper()  # never offered twice


async def test_the_chain_sent_is_the_certificate_and_the_ca(ca: CertificateAuthority) -> None:
    async with serving(ca) as host:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=host.port, start_tls=False)
        await client.connect()
        await client.execute_command(b"EHLO sender.sandbox.test")
        up = await start_tls(client, ca.client_context(), server_name=HOST, timeout=60)
        assert isinstance(up, TlsUp)
        assert up.chain == ca.server_certificate(HOST, "valid").chain
        assert (await client.execute_command(b"STARTTLS")).message == ALREADY_ACTIVE[4:]
        client.close()


@pytest.mark.parametrize(("tls", "action"), [("valid", "tls"), ("wrong-name", "next_host")])
async def test_verify_level_refuses_the_wrong_name_over_real_tls(
    ca: CertificateAuthority, tls: HostTls, action: str
) -> None:
    async with serving(ca, tls=tls) as host:
        found = await deliver(host, "verify")
    assert found.decision is not None and found.decision.action == action
    assert found.delivered is (action == "tls")


async def test_a_dane_ee_record_authenticates_the_expired_certificate(
    ca: CertificateAuthority,
) -> None:
    async with serving(ca, tls="expired") as host:
        found = await deliver(host, "dane", tlsa=True)
    assert (found.verdict, found.dane) == ("expired", "match")
    assert found.decision is not None and found.decision.action == "tls" and found.delivered


async def test_none_offers_no_starttls_and_may_delivers_in_plain_text(
    ca: CertificateAuthority,
) -> None:
    async with serving(ca, tls="none") as host:
        plain = await deliver(host)
        required = await deliver(host, "encrypt")
    assert not plain.offered and plain.upgrade is None
    assert plain.decision is not None and plain.decision.action == "plain" and plain.delivered
    assert required.decision is not None
    assert (required.decision.action, required.decision.dsn) == ("next_host", "4.7.4")
    assert len(host.stored) == 1


async def test_a_scripted_refusal_of_starttls_goes_on_in_plain_text(
    ca: CertificateAuthority,
) -> None:
    async with serving(ca, refusal="454 4.7.0 TLS not available") as host:
        found = await deliver(host)
    assert found.upgrade == ServerReply(454, "4.7.0 TLS not available")
    assert found.decision is not None and found.decision.action == "plain"
    assert found.delivered and host.tls_log == []


async def test_handshake_failure_breaks_the_handshake_and_the_host_lives_on(
    ca: CertificateAuthority,
) -> None:
    async with serving(ca, tls="handshake-failure") as host:
        broken = await deliver(host)
        host.tls = "valid"
        after = await deliver(host)
    assert isinstance(broken.upgrade, TlsDown)
    assert "upgrading transport" in broken.upgrade.detail
    assert broken.decision is not None
    # A fresh message at Postfix's may: next MX now, plain text once it has waited.
    assert (broken.decision.action, broken.decision.dsn) == ("next_host", "4.7.5")
    assert host.tls_log[0][0] == "failed" and "middle of the handshake" in host.tls_log[0][1]
    assert after.delivered and isinstance(after.upgrade, TlsUp)


async def test_a_host_that_hangs_up_after_starttls_gives_no_reply_not_a_handshake_failure(
    ca: CertificateAuthority,
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 mx1.example.test ESMTP\r\n")
        await reader.readline()
        writer.write(b"250-mx1.example.test\r\n250 STARTTLS\r\n")
        await reader.readline()
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        await client.execute_command(b"EHLO sender.sandbox.test")
        outcome = await start_tls(client, ca.client_context(), server_name=HOST, timeout=30)
    finally:
        server.close()
        await server.wait_closed()
    assert isinstance(outcome, NoReply) and outcome.reason == "lost"


# --- the run-mode loop ---------------------------------------------------------------------------


def test_starttls_on_run_modes_virtual_loop_takes_no_virtual_time(
    ca: CertificateAuthority,
) -> None:
    async def main() -> tuple[Session, float]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with serving(ca, tls="self-signed") as host:
            found = await deliver(host, timeout=300)
        return found, loop.time() - start

    with asyncio.Runner(loop_factory=_virtual_loop) as runner:
        found, elapsed = runner.run(main())
    assert found.delivered and isinstance(found.upgrade, TlsUp)
    assert elapsed < 1.0  # no timer fired: the handshake never waited on the virtual clock
