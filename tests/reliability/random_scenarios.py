"""A Hypothesis strategy for whole scenarios, written as the inline mappings of the pytest plugin.

A drawn scenario has one to three recipient domains, each a zone with one to three MX hosts
(sometimes an implicit MX, a null MX, or an MX naming a host with no address), one or two
addresses per host (IPv4 and IPv6), host behaviours from the whole v1 vocabulary, often as
phases over time, DNS faults on the names the sender asks about, several messages with several
recipients (one of them sometimes in a domain that does not exist), and sometimes an ``until``.

Every message line of the file gets its own envelope sender (``s1@sender.test`` for the first,
and so on), so that a copy in a host's mailbox can be traced back to the message it belongs
to: the host sees the envelope, not our message numbers. Sometimes the senders live in one of
the scenario's domains, so that their bounces travel back through its MX hosts by SMTP.

Times are drawn from small sets so that phase boundaries, retries and timeouts meet each other
often, and the sender's lifetime is kept to hours or a day so that a run stays short in wall
time.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from sandbox.core.tls import HOST_TLS
from sandbox.scenario.model import STAGES

__all__ = ["DOMAINS", "scenarios"]

DOMAINS = ("alpha.test", "beta.test", "gamma.test")
MISSING_DOMAIN = "nowhere.test"  # in no zone: NXDOMAIN, a permanent failure
SENDER_DOMAIN = "sender.test"  # the usual senders' domain, outside the scenario
LOCAL_PARTS = ("alice", "carol", "dave")

# Times in seconds, chosen to collide with the postfix profile's timeouts (30 s connect, 300 s
# commands, 120 s DATA, 600 s after the dot) and its backoff (300 s … 4000 s).
PHASE_ENDS = (300, 600, 1800, 3600, 7200, 14400)
DELAYS = (10, 200, 400, 700)  # 700 outlasts every timeout of the profile
GREYLIST = (60, 600, 3600)
ARRIVALS = (0, 0, 0, 60, 3600)
LIFETIMES = ("2h", "12h", "1d")
UNTILS = (None, None, "30m", "3h", "2d")

FAILURES = (
    "421 4.3.2 Service shutting down",
    "450 4.2.0 Try again later",
    "451 4.3.0 Local error",
    "452 4.2.2 Mailbox full",
    "550 5.7.1 Rejected",
    "554 5.0.0 Transaction failed",
)
# A positive reply must be one its stage can give (RFC 5321 §4.3.2; the loader refuses others).
SUCCESSES = {
    "greeting": "220 mx.example.test ready",
    "ehlo": "250 2.0.0 Fine",
    "starttls": "220 2.0.0 Go ahead",
    "mail": "250 2.0.0 Fine",
    "rcpt": "250 2.0.0 Fine",
    "data": "354 2.0.0 Go ahead",
    "message": "250 2.0.0 Fine",
}
RECIPIENT_REPLIES = ("550 5.1.1 No such user", "452 4.2.2 Mailbox full", "250 2.1.5 Hello")
CONNECTIONS = ("accept", "refuse", "timeout", "silent")
DNS_FAULTS = ("servfail", "timeout", "nxdomain")


def _recipients_of(domains: tuple[str, ...]) -> list[str]:
    return [f"{local}@{domain}" for domain in domains for local in LOCAL_PARTS]


def _scripted(recipients: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """One scripted SMTP behaviour: a reply, a recipient reply, a disconnect, a delay or
    greylisting, sometimes two of them together."""
    one = st.one_of(
        st.sampled_from(STAGES).flatmap(
            lambda s: st.sampled_from((*FAILURES, SUCCESSES[s])).map(lambda r: {s: r})
        ),
        st.builds(
            lambda who, r: {"recipients": {who: r}},
            st.sampled_from(recipients),
            st.sampled_from(RECIPIENT_REPLIES),
        ),
        st.builds(lambda s: {"disconnect": s}, st.sampled_from(STAGES)),
        st.builds(lambda s, d: {"delay": {s: d}}, st.sampled_from(STAGES), st.sampled_from(DELAYS)),
        st.builds(lambda d: {"greylist": d}, st.sampled_from(GREYLIST)),
        st.builds(lambda t: {"tls": t}, st.sampled_from(HOST_TLS)),
    )
    return st.lists(one, min_size=1, max_size=2).map(_merged)


def _merged(parts: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    return merged


def _behaviour(recipients: list[str]) -> st.SearchStrategy[object]:
    return st.one_of(st.sampled_from(CONNECTIONS), _scripted(recipients))


def _phased(value: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """A single value, or a list of phases with increasing ``until``s."""
    phases = st.tuples(
        st.lists(st.sampled_from(PHASE_ENDS), min_size=1, max_size=2, unique=True).map(sorted),
        st.lists(value, min_size=3, max_size=3),
    ).map(lambda drawn: _phase_list(*drawn))
    return st.one_of(value, phases)


def _phase_list(ends: list[int], values: list[object]) -> list[dict[str, object]]:
    phases: list[dict[str, object]] = [
        {"until": end, "do": value} for end, value in zip(ends, values, strict=False)
    ]
    phases.append({"do": values[len(ends)]})
    return phases


class _Addresses:
    """Hands out distinct documentation addresses, IPv4 and IPv6."""

    def __init__(self) -> None:
        self._next = 10

    def take(self, v6: bool) -> str:
        self._next += 1
        return f"2001:db8::{self._next:x}" if v6 else f"192.0.2.{self._next}"


@st.composite
def _zone(draw: st.DrawFn, apex: str, addresses: _Addresses) -> tuple[str, list[str]]:
    """Zone text for ``apex`` and the names of its mail hosts (which have addresses)."""
    ttl = draw(st.sampled_from((60, 300, 3600)))
    lines = [f"$TTL {ttl}"]
    kind = draw(st.sampled_from(("mx", "mx", "mx", "mx", "implicit", "null")))
    if kind == "null":
        lines += ["@ IN MX 0 .", f"@ IN A {addresses.take(False)}"]
        return "\n".join(lines) + "\n", []
    if kind == "implicit":
        for v6 in draw(st.lists(st.booleans(), min_size=1, max_size=2, unique=True)):
            lines.append(f"@ IN {'AAAA' if v6 else 'A'} {addresses.take(v6)}")
        return "\n".join(lines) + "\n", [apex]
    hosts: list[str] = []
    for index in range(1, draw(st.integers(1, 3)) + 1):
        name = f"mx{index}"
        preference = draw(st.sampled_from((10, 10, 20, 30)))
        lines.append(f"@ IN MX {preference} {name}")
        for v6 in draw(st.lists(st.booleans(), min_size=1, max_size=2, unique=True)):
            lines.append(f"{name} IN {'AAAA' if v6 else 'A'} {addresses.take(v6)}")
        hosts.append(f"{name}.{apex}")
    if draw(st.integers(0, 5)) == 0:  # an MX naming a host that has no address
        lines.append(f"@ IN MX {draw(st.sampled_from((5, 40)))} ghost")
    return "\n".join(lines) + "\n", hosts


@st.composite
def _messages(
    draw: st.DrawFn, recipients: list[str], domains: tuple[str, ...]
) -> list[dict[str, object]]:
    # A sender in one of the scenario's domains gets its bounces by SMTP through that
    # domain's MX hosts; any other sender's bounces go to the returned-mail mailbox.
    sender_domain = draw(st.sampled_from((SENDER_DOMAIN, SENDER_DOMAIN, *domains)))
    messages: list[dict[str, object]] = []
    for index in range(1, draw(st.integers(1, 4)) + 1):
        to = draw(st.lists(st.sampled_from(recipients), min_size=1, max_size=3, unique=True))
        message: dict[str, object] = {"from": f"s{index}@{sender_domain}", "to": to}
        count = draw(st.sampled_from((1, 1, 1, 2, 3)))
        if count > 1:
            message["count"] = count
        at = draw(st.sampled_from(ARRIVALS))
        if at:
            message["at"] = at
        messages.append(message)
    return messages


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    """A scenario as an inline mapping for ``scenario_from_mapping``."""
    domains = tuple(DOMAINS[: draw(st.integers(1, len(DOMAINS)))])
    addresses = _Addresses()
    zones: dict[str, str] = {}
    mail_hosts: list[str] = []
    for apex in domains:
        text, hosts = draw(_zone(apex, addresses))
        zones[apex] = text
        mail_hosts += hosts
    recipients = _recipients_of(domains)
    if draw(st.integers(0, 4)) == 0:
        recipients.append(f"alice@{MISSING_DOMAIN}")

    scripted = draw(st.lists(st.sampled_from(mail_hosts), unique=True)) if mail_hosts else []
    behaviour = _phased(_behaviour(recipients))
    hosts = {name: draw(behaviour) for name in sorted(scripted)}

    dns_names = list(domains) + mail_hosts
    faulty = draw(st.lists(st.sampled_from(dns_names), max_size=2, unique=True))
    fault = _phased(st.sampled_from((*DNS_FAULTS, "answer")))
    dns = {name: draw(fault) for name in sorted(faulty)}

    data: dict[str, Any] = {
        "name": "random",
        "seed": draw(st.integers(0, 2**16)),
        "zones": zones,
        "messages": draw(_messages(recipients, domains)),
        "sender": {
            "max_lifetime": draw(st.sampled_from(LIFETIMES)),
            # Postfix's TLS levels (the hosts' tls: decide what each one meets).
            "tls": draw(st.sampled_from(("may", "may", "none", "encrypt", "verify"))),
        },
    }
    _put(data, "hosts", hosts)
    _put(data, "dns", dns)
    _put(data, "until", draw(st.sampled_from(UNTILS)))
    return data


def _put(data: dict[str, Any], key: str, value: object) -> None:
    """Leave out what is empty, as a person writing the file would."""
    if value:
        data[key] = value
