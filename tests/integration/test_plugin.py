"""The ``mx_sandbox`` fixture, driven by an independent sender (dnspython + aiosmtplib) the way a
user drives it: real DNS and SMTP on loopback, real time, outcomes read from the hosts."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path
from typing import Any

import dns.asyncresolver
import pytest

from sandbox import (
    DnsServed,
    Event,
    HostAccepted,
    NotInSandbox,
    ScenarioError,
    ServedScenario,
    ServerError,
)
from sandbox.serve.plugin import MxSandbox
from tests.helpers import TWO_MX_ZONE
from tests.integration.user_sender import Outcome, SimpleSender, make_message


def world(hosts: dict[str, Any], zone: str = TWO_MX_ZONE) -> dict[str, Any]:
    return {"zones": {"example.test": zone}, "hosts": hosts}


def sender_for(sb: ServedScenario, **options: Any) -> SimpleSender:
    return SimpleSender(sb.dns, sb.smtp_port, **options)


async def send(sb: ServedScenario, to: str = "alice@example.test", **options: Any) -> Outcome:
    return await sender_for(sb, **options).send("bob@example.net", to, make_message())


async def test_failover_from_a_refusing_primary(mx_sandbox: MxSandbox) -> None:
    sb = await mx_sandbox("scenarios/primary-down.yaml")
    outcome = await send(sb, max_attempts=1)
    assert (outcome.status, outcome.host, outcome.attempts) == ("delivered", "mx2.example.test", 1)
    mx1 = sb.address_of("mx1.example.test")
    assert outcome.log[0].startswith(f"mx1.example.test[{mx1}]: cannot connect")
    # The refused connection reached no host, but the sandbox saw the sender's SYN.
    assert sb.sees_connection_attempts
    sb.assert_tried_in_order(["mx1.example.test", "mx2.example.test"])
    (refused,) = sb.connection_attempts("mx1.example.test")
    assert (refused.address, refused.behaviour) == (mx1, "refuse")
    assert refused.client.startswith("127.0.0.1:")
    assert sb.sessions("mx1.example.test") == []
    sb.assert_accepted("mx2.example.test", 1)
    (session,) = sb.sessions("mx2.example.test")
    assert session.client == "127.0.0.1"
    assert session.outline == (
        "220, EHLO→250, MAIL→250, RCPT→250, DATA→354, <message>→250, QUIT→221"
    )
    ehlo, mail, rcpt = session.commands[:3]
    assert ehlo == "EHLO sender.example.net"
    assert mail.startswith("MAIL FROM:<bob@example.net>")
    assert rcpt == "RCPT TO:<alice@example.test>"
    assert session.opened <= session.transcript[0][0] and session.closed is not None
    (message,) = sb.messages("mx2.example.test")
    assert (message["Subject"], message.get_content()) == ("Hello", "Hi Alice.\n")
    (stored,) = sb.mailbox("mx2.example.test")
    assert (stored.sender, stored.recipients) == ("bob@example.net", ("alice@example.test",))


async def test_failover_from_a_primary_that_answers_421(mx_sandbox: MxSandbox) -> None:
    sb = await mx_sandbox(world({"mx1.example.test": {"greeting": "421 4.3.2 Shutting down"}}))
    outcome = await send(sb, max_attempts=1)
    assert (outcome.status, outcome.host) == ("delivered", "mx2.example.test")
    sb.assert_tried_in_order(["mx1.example.test", "mx2.example.test"])
    first, second = sb.sessions()
    assert first.replies == ("421 4.3.2 Shutting down",)
    assert second.outline.endswith("<message>→250, QUIT→221")


async def test_greylisting_defers_then_the_retry_is_accepted(mx_sandbox: MxSandbox) -> None:
    sb = await mx_sandbox(
        world({"mx1.example.test": {"greylist": "2s"}, "mx2.example.test": {"greylist": "2s"}})
    )
    outcome = await send(sb, retry_every=0.5, max_attempts=20)
    assert (outcome.status, outcome.host) == ("delivered", "mx1.example.test")
    assert outcome.attempts >= 2
    sessions = sb.sessions()
    hosts = [s.host for s in sessions]
    # Every attempt before the last walked mx1 then mx2 and met 451 at RCPT at both.
    assert hosts == ["mx1.example.test", "mx2.example.test"] * (outcome.attempts - 1) + [
        "mx1.example.test"
    ]
    for session in sessions[:-1]:
        assert "RCPT→451" in session.outline
        assert "451 4.7.1 Greylisted, please try again later" in session.replies
    assert "RCPT→250" in sessions[-1].outline
    (stored,) = sb.mailbox("mx1.example.test")
    assert stored.t >= sessions[0].opened + 2.0  # not before the greylisting period ended
    sb.assert_accepted("mx2.example.test", 0)


async def test_null_mx_bounces_without_a_connection(mx_sandbox: MxSandbox) -> None:
    sb = await mx_sandbox("scenarios/null-mx.yaml")
    outcome = await send(sb, "info@noreply.test", max_attempts=3)
    assert (outcome.status, outcome.attempts) == ("bounced", 1)
    assert outcome.reply.startswith("5.1.10")
    assert sb.sessions() == []
    served = [(e.name, e.rdtype, e.rcode) for e in sb.events if isinstance(e, DnsServed)]
    assert served == [("noreply.test", "MX", "NOERROR")]
    sb.assert_not_tried("noreply.test")


async def test_set_behaviour_takes_effect_at_once(mx_sandbox: MxSandbox) -> None:
    sb = await mx_sandbox("scenarios/primary-down.yaml")
    assert (await send(sb, max_attempts=1)).host == "mx2.example.test"
    sb.set_behaviour("mx1.example.test", "accept")
    assert (await send(sb, max_attempts=1)).host == "mx1.example.test"
    sb.set_behaviour("mx1.example.test", {"rcpt": "550 5.1.1 No such user"})
    bounced = await send(sb, max_attempts=1)
    assert (bounced.status, bounced.reply) == ("bounced", "550 5.1.1 No such user")
    sb.assert_tried_in_order(
        ["mx1.example.test", "mx2.example.test", "mx1.example.test", "mx1.example.test"]
    )
    assert [s.behaviour for s in sb.sessions("mx1.example.test")] == ["accept", "rcpt→550"]


async def test_set_behaviour_phases_count_from_the_call(mx_sandbox: MxSandbox) -> None:
    sb = await mx_sandbox(world({}))
    sb.set_behaviour("mx1.example.test", [{"until": "1h", "do": "refuse"}, {"do": "accept"}])
    assert (await send(sb, max_attempts=1)).host == "mx2.example.test"
    assert sb.sessions("mx1.example.test") == []
    sb.assert_tried_in_order(["mx1.example.test", "mx2.example.test"])


async def test_addresses_ports_and_dns_agree(mx_sandbox: MxSandbox) -> None:
    sb = await mx_sandbox(world({}))
    first, second = sb.address_of("mx1.example.test"), sb.address_of("mx2.example.test")
    assert first != second
    assert all(
        ipaddress.ip_address(a) in ipaddress.ip_network("127.0.0.0/8") for a in (first, second)
    )
    assert sb.address_of("192.0.2.10") == first  # the zone address works as a key too
    assert {p.port for p in sb.placements} == {sb.smtp_port}
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers, resolver.port = [sb.dns[0]], sb.dns[1]
    answer = await resolver.resolve("mx1.example.test", "A")
    assert [r.address for r in answer] == [first]
    assert sb.hosts == ("mx1.example.test", "mx2.example.test")


async def test_two_sandboxes_at_once_never_collide(mx_sandbox: MxSandbox) -> None:
    one = await mx_sandbox(world({}))
    two = await mx_sandbox(world({}))
    listening = {(p.address, p.port) for sb in (one, two) for p in sb.placements}
    assert len(listening) == 4
    assert one.dns != two.dns
    assert (await send(one, max_attempts=1)).host == "mx1.example.test"
    assert (await send(two, max_attempts=1)).host == "mx1.example.test"
    one.assert_accepted("mx1.example.test", 1)
    two.assert_accepted("mx1.example.test", 1)


async def test_wait_for_returns_when_the_host_has_the_message(mx_sandbox: MxSandbox) -> None:
    accepted: list[Event] = []
    sb = await mx_sandbox(
        world({}), on_event=lambda e: accepted.append(e) if isinstance(e, HostAccepted) else None
    )
    await send(sb, max_attempts=1)
    await sb.wait_for(lambda: len(sb.messages("mx1.example.test")) == 1, timeout=5)
    assert [e.host for e in accepted if isinstance(e, HostAccepted)] == ["mx1.example.test"]


async def test_a_failing_assertion_prints_what_was_observed(mx_sandbox: MxSandbox) -> None:
    sb = await mx_sandbox("scenarios/primary-down.yaml")
    await send(sb, max_attempts=1)
    with pytest.raises(AssertionError) as failed:
        sb.assert_tried_in_order(["mx2.example.test"])
    text = str(failed.value)
    assert "expected the hosts to be tried in this order: mx2.example.test\n" in text
    assert "observed: mx1.example.test → mx2.example.test\n" in text
    assert "mx1.example.test [" in text and "connection attempt (refuse)" in text
    assert "mx2.example.test [" in text and "RCPT→250" in text


async def test_unknown_host_and_bad_behaviour_say_what_is_wrong(mx_sandbox: MxSandbox) -> None:
    sb = await mx_sandbox(world({}))
    with pytest.raises(
        NotInSandbox, match=r"no mail host 'mx9\.example\.test'.*mx1\.example\.test"
    ):
        sb.sessions("mx9.example.test")
    with pytest.raises(ScenarioError, match="set_behaviour"):
        sb.set_behaviour("mx1.example.test", "explode")


async def test_an_on_event_error_fails_the_test_and_the_servers_carry_on(
    mx_sandbox: MxSandbox,
) -> None:
    def broken_sink(event: Event) -> None:
        if isinstance(event, HostAccepted | DnsServed):
            raise ValueError(f"the sink broke at {event.kind}")

    sb = await mx_sandbox(world({}), on_event=broken_sink)
    outcome = await send(sb, max_attempts=1)
    assert (outcome.status, outcome.host) == ("delivered", "mx1.example.test")
    with pytest.raises(ServerError, match="the sink broke at dns_served") as raised:
        sb.assert_accepted("mx1.example.test", 1)
    assert isinstance(raised.value.__cause__, ValueError)
    assert "on_event callback, at a host_accepted event" in str(raised.value)
    sb.raise_errors()  # reported once: teardown has nothing more to raise


INNER_TEST = """
import asyncio

import aiosmtplib
from sandbox import HostSession

ZONE = "@ IN MX 10 mx1\\nmx1 IN A 192.0.2.10\\n"


async def test_inner(mx_sandbox):
    ended = asyncio.Event()

    def sink(event):
        if isinstance(event, HostSession):
            ended.set()
            raise RuntimeError("the sink broke at the end of a session")

    sb = await mx_sandbox({"zones": {"example.test": ZONE}}, on_event=sink)
    smtp = aiosmtplib.SMTP(hostname=sb.address_of("mx1.example.test"), port=sb.smtp_port,
                           local_hostname="inner.test", start_tls=False, timeout=10)
    await smtp.connect()
    await smtp.quit()
    await ended.wait()  # the error happened; the test body itself passes
"""


def test_the_plugin_is_registered_and_fails_the_test_that_broke_a_server(
    tmp_path: Path,
) -> None:
    """A pytest run of its own, outside this project: the entry point brings the fixture, and
    an error inside a server shows up as an error of the test at teardown."""
    (tmp_path / "test_inner.py").write_text(INNER_TEST)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_mode=auto",
            "-o",
            "asyncio_default_fixture_loop_scope=function",
            "test_inner.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 passed, 1 error" in done.stdout
    assert "ERROR at teardown of test_inner" in done.stdout
    assert "ServerError: an error inside the sandbox's servers" in done.stdout
    assert "RuntimeError: the sink broke at the end of a session" in done.stdout
