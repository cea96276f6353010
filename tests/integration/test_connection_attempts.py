"""Every connection attempt counts: the SYNs a sender sends to a served host, refused and
timed-out ones included, seen on loopback (Linux with CAP_NET_RAW: root here and in CI), and
the weaker evidence of the DNS queries where the sandbox cannot see them."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox import ConnectionAttempt, ServedScenario, event_to_dict
from sandbox.serve.plugin import MxSandbox
from tests.integration.test_plugin import world as two_mx
from tests.integration.user_sender import Outcome, SimpleSender, SkipsThePrimary, make_message

BOTH = ["mx1.example.test", "mx2.example.test"]


def world(primary: object) -> dict[str, Any]:
    """mx1 (preference 10) behaving as ``primary``, mx2 (20) accepting."""
    return two_mx({"mx1.example.test": primary})


async def send(sb: ServedScenario, sender: type[SimpleSender] = SimpleSender, **kw: Any) -> Outcome:
    options: dict[str, Any] = {"max_attempts": 1, **kw}
    outcome = await sender(sb.dns, sb.smtp_port, **options).send(
        "bob@example.net", "alice@example.test", make_message()
    )
    assert (outcome.status, outcome.host) == ("delivered", "mx2.example.test"), outcome.log
    return outcome


async def test_a_sender_that_skips_a_refusing_primary_is_caught(mx_sandbox: MxSandbox) -> None:
    sb = await mx_sandbox(world("refuse"))
    assert sb.sees_connection_attempts
    await send(sb, SkipsThePrimary)
    with pytest.raises(AssertionError, match=r"observed: mx2\.example\.test\n"):
        sb.assert_tried_in_order(BOTH)
    sb.assert_not_tried("mx1.example.test")
    sb.assert_accepted("mx2.example.test", 1)


async def test_a_sender_that_tries_the_refusing_primary_first_passes(
    mx_sandbox: MxSandbox,
) -> None:
    seen: list[ConnectionAttempt] = []
    sb = await mx_sandbox(
        world("refuse"),
        on_event=lambda e: seen.append(e) if isinstance(e, ConnectionAttempt) else None,
    )
    await send(sb)
    sb.assert_tried_in_order(BOTH)
    with pytest.raises(AssertionError, match="expected no connection attempt at mx1"):
        sb.assert_not_tried("mx1.example.test")
    # Each attempt is an event too, in the --trace / serve --json form.
    assert [e.host for e in seen] == BOTH
    record = event_to_dict(seen[0])
    assert (record["kind"], record["address"], record["behaviour"]) == (
        "connection_attempt",
        "192.0.2.10",
        "refuse",
    )


async def test_a_timed_out_attempt_counts_once_and_the_hosts_own_connections_not_at_all(
    mx_sandbox: MxSandbox,
) -> None:
    sb = await mx_sandbox(world("accept"))
    # Entering the timeout state, the host fills its accept queue with connections of its
    # own: they are no sender's attempts.
    sb.set_behaviour("mx1.example.test", "timeout")
    assert sb.connection_attempts() == []
    # A connect timeout of 1.5 s outlasts the kernel's first SYN retransmission (1 s).
    await send(sb, timeout=1.5)
    sb.assert_tried_in_order(BOTH)
    (waited,) = sb.connection_attempts("mx1.example.test")
    assert waited.behaviour == "timeout"


async def test_another_sandbox_on_the_same_port_sees_none_of_it(mx_sandbox: MxSandbox) -> None:
    other = await mx_sandbox(world("refuse"))
    sb = ServedScenario.from_source(world("refuse"), smtp_port=other.smtp_port)
    async with sb:
        assert sb.smtp_port == other.smtp_port
        await send(sb)
        sb.assert_tried_in_order(BOTH)
    assert other.tried() == []


async def test_where_attempts_cannot_be_seen_an_address_lookup_is_the_evidence() -> None:
    """Without the SYN watcher (not Linux, no CAP_NET_RAW), a refusing host counts as tried
    when the sender asked for its address while it refused; a sender that never looked at it
    is still caught."""
    correct = ServedScenario.from_source(world("refuse"), watch_connects=False)
    async with correct:
        assert not correct.sees_connection_attempts
        await send(correct)
        correct.assert_tried_in_order(BOTH)
        with pytest.raises(AssertionError, match="needs Linux and CAP_NET_RAW"):
            correct.assert_tried_in_order(["mx2.example.test", "mx1.example.test"])
    broken = ServedScenario.from_source(world("refuse"), watch_connects=False)
    async with broken:
        await send(broken, SkipsThePrimary)
        with pytest.raises(AssertionError, match=r"entry 1, mx1\.example\.test: no session there"):
            broken.assert_tried_in_order(BOTH)


async def test_a_lookup_is_no_evidence_for_a_host_that_would_have_shown_a_session() -> None:
    class LooksButSkips(SkipsThePrimary):
        async def mail_hosts(self, domain: str) -> list[str]:
            hosts = await super().mail_hosts(domain)
            await self.addresses("mx1.example.test")  # looked up, never connected
            return hosts

    sb = ServedScenario.from_source(world("accept"), watch_connects=False)
    async with sb:
        await send(sb, LooksButSkips)
        with pytest.raises(AssertionError, match="no sign of a try"):
            sb.assert_tried_in_order(BOTH)
