"""The scenarios the benchmarks run, built in Python so that their sizes can vary.

Each builder returns a mapping in scenario format v1 (the same keys a YAML file has), turned
into a ``Scenario`` by ``sandbox.scenario.scenario_from_mapping``.
"""

from __future__ import annotations

from typing import Any

from sandbox import Scenario, scenario_from_mapping

__all__ = [
    "SCALE_FAULTS",
    "SENDER",
    "outage",
    "outage_421",
    "scale",
    "ten_hosts",
    "throughput",
    "two_mx_zone",
]

SENDER = "bob@example.net"


def two_mx_zone(index: int = 0) -> str:
    """A zone with a primary (preference 10) and a backup (20), each with its own address."""
    return (
        "$TTL 3600\n"
        "@    IN MX 10 mx1\n"
        "@    IN MX 20 mx2\n"
        f"mx1  IN A 192.0.2.{10 + 2 * index}\n"
        f"mx2  IN A 192.0.2.{11 + 2 * index}\n"
    )


def throughput(count: int, tls: str = "none") -> Scenario:
    """``count`` messages to one domain whose two MX hosts both accept: the primary takes all.
    The sender's TLS level is ``tls``: ``none`` (plain text, as the plain baseline sends) or
    the postfix profile's own ``may`` (STARTTLS in every session)."""
    return scenario_from_mapping(
        {
            "name": "bench-throughput",
            "seed": 1,
            "zones": {"example.test": two_mx_zone()},
            "sender": {"tls": tls},
            "messages": [{"from": SENDER, "to": "alice@example.test", "count": count}],
        },
        "<bench throughput>",
    )


def outage(count: int, days: int = 3) -> Scenario:
    """``count`` messages queued at once while both MX hosts refuse for ``days``; then they
    accept and the queue drains."""
    down = [{"until": f"{days}d", "do": "refuse"}, {"do": "accept"}]
    return scenario_from_mapping(
        {
            "name": "bench-outage",
            "seed": 1,
            "zones": {"example.test": two_mx_zone()},
            "hosts": {"mx1.example.test": down, "mx2.example.test": down},
            "messages": [{"from": SENDER, "to": "alice@example.test", "count": count}],
        },
        "<bench outage>",
    )


def outage_421(count: int, days: int = 3, *, last: str = "421") -> Scenario:
    """``count`` messages queued at once while the primary refuses and the backup (the last
    MX) answers ``421`` to every greeting for ``days`` (``last="refuse"``: refuses too); then
    both accept. A 421 greeting is a handshake failure: it must cost no more than a refusal."""
    fault: Any = {"greeting": "421 4.3.2 Service shutting down"} if last == "421" else "refuse"
    down = [{"until": f"{days}d", "do": "refuse"}, {"do": "accept"}]
    backup = [{"until": f"{days}d", "do": fault}, {"do": "accept"}]
    return scenario_from_mapping(
        {
            "name": f"bench-outage-{last}",
            "seed": 1,
            "zones": {"example.test": two_mx_zone()},
            "hosts": {"mx1.example.test": down, "mx2.example.test": backup},
            "messages": [{"from": SENDER, "to": "alice@example.test", "count": count}],
        },
        f"<bench outage {last}>",
    )


def ten_hosts() -> Scenario:
    """Five domains with two MX hosts each: ten mail hosts and one DNS server to start."""
    return scenario_from_mapping(
        {
            "name": "bench-ten-hosts",
            "zones": {f"d{i}.test": two_mx_zone(i) for i in range(5)},
            "messages": [{"from": SENDER, "to": "alice@d0.test"}],
        },
        "<bench ten hosts>",
    )


# The fault each domain's primary (mx1) plays in the scale world; every backup (mx2) accepts
# unless said otherwise. Ten domains: twenty hosts.
SCALE_FAULTS: dict[str, dict[str, Any]] = {
    "d0.test": {},
    "d1.test": {"mx1": "refuse"},
    "d2.test": {"mx1": "timeout"},
    "d3.test": {"mx1": {"greeting": "421 4.3.2 Shutting down"}},
    "d4.test": {"mx1": {"greylist": "5m"}},
    "d5.test": {
        "mx1": [{"until": "1h", "do": "refuse"}, {"do": "accept"}],
        "mx2": [{"until": "1h", "do": "refuse"}, {"do": "accept"}],
    },
    "d6.test": {"mx1": {"recipients": {"nobody@d6.test": "550 5.1.1 No such user"}}},
    "d7.test": {"mx1": {"message": "452 4.3.1 Insufficient system storage"}},
    "d8.test": {"mx1": {"delay": {"greeting": "20s"}}},
    "d9.test": {"mx1": {"rcpt": "450 4.2.0 Mailbox busy"}, "mx2": {"disconnect": "data"}},
}


def scale(count: int) -> Scenario:
    """``count`` messages spread over ten domains (twenty hosts) with the faults above: some
    fail over, some wait and retry, some bounce (every tenth message to d6 has no mailbox), a
    few never get through before the run ends (``until: 2h``)."""
    domains = list(SCALE_FAULTS)
    hosts: dict[str, Any] = {}
    for domain, faults in SCALE_FAULTS.items():
        for host, behaviour in faults.items():
            hosts[f"{host}.{domain}"] = behaviour
    per_domain, extra = divmod(count, len(domains))
    messages: list[dict[str, Any]] = []
    for i, domain in enumerate(domains):
        n = per_domain + (1 if i < extra else 0)
        bounced = n // 10 if domain == "d6.test" else 0
        if n - bounced:
            messages.append({"from": SENDER, "to": f"alice@{domain}", "count": n - bounced})
        if bounced:
            messages.append({"from": SENDER, "to": f"nobody@{domain}", "count": bounced})
    return scenario_from_mapping(
        {
            "name": "bench-scale",
            "seed": 3,
            "until": "2h",
            "zones": {domain: two_mx_zone(i) for i, domain in enumerate(domains)},
            "hosts": hosts,
            "messages": messages,
        },
        "<bench scale>",
    )
