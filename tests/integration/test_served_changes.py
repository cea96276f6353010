"""Changing a served world while it runs, from Python (``ServedScenario``): reset, DNS
behaviours, new zone text, the DNS queries served. The control API drives the same
operations over HTTP (test_control_api.py)."""

from __future__ import annotations

import dns.asyncresolver
import dns.exception
import dns.resolver
import pytest

from sandbox import ControlChanged, ScenarioError, ServedScenario
from sandbox.serve.plugin import MxSandbox
from tests.integration.test_plugin import world
from tests.integration.user_sender import SimpleSender, make_message


def resolver_for(sb: ServedScenario) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers, resolver.port = [sb.dns[0]], sb.dns[1]
    resolver.timeout = resolver.lifetime = 2.0
    return resolver


async def mx_of(sb: ServedScenario, domain: str = "example.test") -> list[str]:
    answer = await resolver_for(sb).resolve(domain, "MX")
    return sorted(f"{r.preference} {r.exchange}" for r in answer)


async def send(sb: ServedScenario, to: str = "alice@example.test") -> str:
    outcome = await SimpleSender(sb.dns, sb.smtp_port, max_attempts=1).send(
        "bob@example.net", to, make_message()
    )
    return f"{outcome.status} {outcome.host}"


async def test_reset_forgets_sessions_mail_greylisting_and_queries(mx_sandbox: MxSandbox) -> None:
    sb = await mx_sandbox(
        world({"mx1.example.test": {"greylist": "1h"}, "mx2.example.test": "refuse"})
    )
    assert await send(sb) == "deferred None"  # 451 at RCPT: the triple is new
    sb.set_behaviour("mx2.example.test", "accept")
    assert await send(sb) == "delivered mx2.example.test"
    assert sb.dns_queries() and sb.sessions() and sb.mailbox()

    sb.reset()
    assert sb.sessions() == [] and sb.mailbox() == [] and sb.dns_queries() == []
    assert [e.kind for e in sb.events] == ["control"]
    # The behaviours stay; the greylisting table is new again, so mx1 still says 451.
    sb.set_behaviour("mx2.example.test", "refuse")
    assert await send(sb) == "deferred None"
    (session,) = sb.sessions("mx1.example.test")
    assert "451" in session.outline


async def test_dns_queries_come_in_order_with_what_was_answered(mx_sandbox: MxSandbox) -> None:
    sb = await mx_sandbox(world({}))
    await mx_of(sb)
    with pytest.raises(dns.resolver.NXDOMAIN):
        await resolver_for(sb).resolve("nowhere.test", "A")
    first, second = sb.dns_queries()
    assert (first.name, first.rdtype, first.rcode, first.answers) == (
        "example.test",
        "MX",
        "NOERROR",
        2,
    )
    assert (second.name, second.rcode) == ("nowhere.test", "NXDOMAIN")


async def test_a_dns_behaviour_changes_and_its_phases_count_from_the_call(
    mx_sandbox: MxSandbox,
) -> None:
    sb = await mx_sandbox(world({}))
    sb.set_dns_behaviour("example.test", "servfail")
    with pytest.raises(dns.resolver.NoNameservers):
        await mx_of(sb)
    sb.set_dns_behaviour("example.test.", [{"until": "1h", "do": "nxdomain"}, {"do": "answer"}])
    with pytest.raises(dns.resolver.NXDOMAIN):
        await mx_of(sb)
    sb.set_dns_behaviour("example.test", "answer")
    assert await mx_of(sb) == ["10 mx1.example.test.", "20 mx2.example.test."]
    changes = [e for e in sb.events if isinstance(e, ControlChanged)]
    assert [(c.action, c.target, c.value) for c in changes] == [
        ("dns", "example.test", "servfail"),
        ("dns", "example.test", "nxdomain for 1h, then answer"),
        ("dns", "example.test", "answer"),
    ]
    with pytest.raises(ScenarioError, match="'sometimes' is not a DNS behaviour"):
        sb.set_dns_behaviour("example.test", "sometimes")


async def test_new_zone_text_is_served_and_a_new_address_gets_a_host(
    mx_sandbox: MxSandbox,
) -> None:
    sb = await mx_sandbox(world({"mx1.example.test": "refuse"}))
    findings = await sb.set_zone(
        "example.test",
        "$TTL 60\n@ IN MX 5 mx3\n@ IN MX 10 mx1\nmx1 IN A 192.0.2.10\nmx3 IN A 192.0.2.30\n",
    )
    assert [f.rule for f in findings] == []
    assert await mx_of(sb) == ["10 mx1.example.test.", "5 mx3.example.test."]
    assert sb.hosts == ("mx1.example.test", "mx2.example.test", "mx3.example.test")
    mx3 = sb.address_of("mx3.example.test")
    answer = await resolver_for(sb).resolve("mx3.example.test", "A")
    assert [r.address for r in answer] == [mx3]
    assert await send(sb) == "delivered mx3.example.test"
    sb.assert_tried_in_order(["mx3.example.test"])


async def test_zone_text_that_does_not_parse_changes_nothing(mx_sandbox: MxSandbox) -> None:
    sb = await mx_sandbox(world({}))
    with pytest.raises(ScenarioError, match=r"zone line 2"):
        await sb.set_zone("example.test", "@ IN MX 10 mx1\n@ IN MX banana mx2\n")
    assert await mx_of(sb) == ["10 mx1.example.test.", "20 mx2.example.test."]
    assert not [e for e in sb.events if isinstance(e, ControlChanged)]


async def test_the_lint_reports_a_zone_it_still_serves(mx_sandbox: MxSandbox) -> None:
    sb = await mx_sandbox(world({}))
    findings = await sb.set_zone(
        "example.test", "$TTL 60\n@ IN MX 10 mx1.example.test\nmx1 IN A 192.0.2.10\n"
    )
    assert {(f.severity, f.rule, f.zone_line) for f in findings} >= {("error", "mx-missing-dot", 2)}
    assert await mx_of(sb) == ["10 mx1.example.test.example.test."]


async def test_a_zone_can_be_added_and_changes_over_phases(mx_sandbox: MxSandbox) -> None:
    sb = await mx_sandbox(world({}))
    await sb.set_zone(
        "other.test",
        [
            {"until": "1h", "zone": "@ IN MX 10 mx.example.test.\n"},
            {"zone": "@ IN MX 0 .\n"},
        ],
    )
    assert await mx_of(sb, "other.test") == ["10 mx.example.test."]
    changes = [e for e in sb.events if isinstance(e, ControlChanged)]
    assert [(c.action, c.target, c.value) for c in changes] == [
        ("zone", "other.test", "1 record(s) for 1h, then 1 record(s)")
    ]
