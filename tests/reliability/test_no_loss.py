"""The no-loss invariant: whatever the world does, no message is lost and none is invented.

Hypothesis draws whole scenarios (``random_scenarios``) and each one runs through the real
sandbox: the DNS server, the mail hosts and the sender on loopback, on a virtual clock. After
every run:

- every (message, recipient) ends in exactly one final state, in the result and in the events;
- a delivered one is in the mailbox of the host that the result names, and a copy is in a
  mailbox only when the result says delivered, except the announced duplicate: the host
  stored the message but the sender could not know (``disconnect: message``, a reply after
  the dot slower than the sender's ``dot_timeout``, or the run's ``until`` falling between
  the store and the reply);
- a bounced one has a DSN status (class 4 or 5) and the reply that caused it, and its sender
  gets a "failed" DSN;
- ``duplicates`` reports exactly the messages that reached one recipient more than once;
- ``deferred`` appears only when the run was cut short by ``until``;
- events are in time order;
- nothing raised, and nothing was logged as an error (an exception in a callback or a task
  goes to the loop's handler, which logs it instead of raising).

The number of scenarios comes from the Hypothesis profile (``tests/conftest.py``): 300 in CI.
"""

from __future__ import annotations

import logging
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from hypothesis import given

from sandbox import (
    DeliveryRow,
    DsnCreated,
    Event,
    HostAccepted,
    RecipientFinal,
    RunResult,
    Scenario,
    run_scenario,
    scenario_from_mapping,
)
from sandbox.core.addresses import canonical
from sandbox.scenario.model import ACCEPT, Behaviour
from tests.reliability.random_scenarios import scenarios

_DSN = re.compile(r"[45]\.\d{1,3}\.\d{1,3}")


class _ErrorLog(logging.Handler):
    """Keeps every record at ERROR or above, from any logger (asyncio's included)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def errors_logged() -> Iterator[list[logging.LogRecord]]:
    handler = _ErrorLog()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)


@dataclass(frozen=True, slots=True)
class Copy:
    """One recipient's copy in one host's mailbox."""

    address: str
    t: float
    host: str


def final_keys_are_exact(scenario: Scenario, result: RunResult) -> None:
    expected = Counter((m.number, r) for m in scenario.messages for r in m.recipients)
    rows = Counter((d.message, d.recipient) for d in result.deliveries)
    assert rows == expected, f"rows {sorted(rows)} for (message, recipient)s {sorted(expected)}"
    dsn_numbers = {e.dsn_message for e in result.events if isinstance(e, DsnCreated)}
    finals = [
        e for e in result.events if isinstance(e, RecipientFinal) and e.message not in dsn_numbers
    ]
    assert Counter((e.message, e.recipient) for e in finals) == expected
    by_key = {(e.message, e.recipient): e for e in finals}
    for row in result.deliveries:
        final = by_key[(row.message, row.recipient)]
        assert (row.status, row.host, row.address, row.dsn) == (
            final.status,
            final.host,
            final.address,
            final.dsn,
        )


def statuses_make_sense(scenario: Scenario, result: RunResult) -> None:
    for row in result.deliveries:
        assert row.status in ("delivered", "bounced", "deferred"), row
        if row.status == "delivered":
            assert row.host and row.address, row
            assert row.dsn.startswith("2."), row
            assert row.attempts >= 1, row
        elif row.status == "bounced":
            assert _DSN.fullmatch(row.dsn), f"a bounce without a DSN status: {row}"
            assert row.reply, f"a bounce without the reason: {row}"
            assert row.attempts >= 1, row
        else:
            assert scenario.until is not None, f"deferred although the run had no until: {row}"
            assert row.dsn.startswith("4."), row
    assert result.ended_at >= 0


def bounces_are_reported(scenario: Scenario, result: RunResult) -> None:
    """Every bounced recipient of a message with a sender is in a "failed" DSN to it."""
    reported = {
        (e.message, r)
        for e in result.events
        if isinstance(e, DsnCreated) and e.action == "failed"
        for r in e.recipients
    }
    sender_of = {m.number: m.sender for m in scenario.messages}
    for row in result.deliveries:
        if row.status == "bounced" and sender_of[row.message]:
            assert (row.message, row.recipient) in reported, f"a bounce without a DSN: {row}"
    for returned in result.returned:
        assert returned.to == sender_of[returned.message], returned
        if returned.via == "returned_mailbox":
            assert b"multipart/report" in returned.data, returned


def events_in_time_order(events: tuple[Event, ...]) -> None:
    times = [e.t for e in events]
    late = next((i for i in range(1, len(times)) if times[i] < times[i - 1]), None)
    assert late is None, f"event {late} ({events[late]}) comes before the one it follows"


def copies_by_envelope(scenario: Scenario, result: RunResult) -> dict[tuple[str, str], list[Copy]]:
    """(envelope sender, recipient) -> every copy of it in every mailbox."""
    copies: dict[tuple[str, str], list[Copy]] = defaultdict(list)
    for event in result.events:
        if isinstance(event, HostAccepted):
            for recipient in event.recipients:
                copy = Copy(canonical(event.address), event.t, event.host)
                # The host keeps the reverse-path as aiosmtpd reads it: "<>" when null.
                sender = "" if event.sender == "<>" else event.sender
                copies[(sender, recipient)].append(copy)
    accepted = Counter(e.host for e in result.events if isinstance(e, HostAccepted))
    for host in result.hosts:
        assert host.accepted == accepted[host.name], host
    return copies


def behaviour_of(scenario: Scenario, copy: Copy) -> Behaviour:
    """The behaviour in force at the host when it stored ``copy`` (as the runner picks it)."""
    for key in (copy.address, copy.host):
        if key in scenario.hosts:
            return scenario.hosts[key].at(copy.t)
    return ACCEPT


def announced_duplicate(scenario: Scenario, result: RunResult, copy: Copy) -> bool:
    """The host stored ``copy`` but its reply could not reach the sender as a success."""
    behaviour = behaviour_of(scenario, copy)
    delay = behaviour.delays.get("message", 0.0)
    if behaviour.disconnect == "message" or delay >= result.profile.dot_timeout:
        return True
    return scenario.until is not None and copy.t + delay >= scenario.until


def every_copy_accounted_for(scenario: Scenario, result: RunResult) -> None:
    copies = copies_by_envelope(scenario, result)
    rows: dict[tuple[str, str], list[DeliveryRow]] = defaultdict(list)
    sender_of = {m.number: m.sender for m in scenario.messages}
    for row in result.deliveries:
        rows[(sender_of[row.message], row.recipient)].append(row)
    dsn_copies = {envelope: c for envelope, c in copies.items() if not envelope[0]}
    for envelope in dsn_copies:
        del copies[envelope]
    dsns_accounted_for(scenario, result, dsn_copies)
    for envelope in set(rows) | set(copies):
        unmatched = sorted(copies.get(envelope, []), key=lambda c: c.t)
        delivered = sorted(
            (r for r in rows.get(envelope, []) if r.status == "delivered"), key=lambda r: r.at
        )
        for row in delivered:
            # The host stored it at or before the sender read the 250: the latest such copy.
            assert row.address is not None
            address = canonical(row.address)
            match = [c for c in unmatched if c.address == address and c.t <= row.at]
            assert match, f"lost: {row} is delivered but no mailbox at {address} holds it"
            unmatched.remove(match[-1])
        for copy in unmatched:
            assert announced_duplicate(scenario, result, copy), (
                f"invented: a copy for {envelope} stored by {copy.host}[{copy.address}] at "
                f"t={copy.t} matches no delivery, and the sender was not left unsure"
            )


def dsns_accounted_for(
    scenario: Scenario, result: RunResult, copies: dict[tuple[str, str], list[Copy]]
) -> None:
    """DSNs sent by SMTP (from ``<>``): one copy in a mailbox for each one delivered.

    A DSN's own row carries no host, so copies are counted rather than matched."""
    delivered = Counter(r.to for r in result.returned if r.via == "mx" and r.status == "delivered")
    for to in set(delivered) | {recipient for _, recipient in copies}:
        found = copies.get(("", to), [])
        sure = [c for c in found if not announced_duplicate(scenario, result, c)]
        assert len(found) >= delivered[to], (
            f"lost: {delivered[to]} DSNs to {to} delivered, {len(found)} found"
        )
        assert len(sure) <= delivered[to], f"invented: {len(sure)} DSNs to {to} in mailboxes"


def duplicates_are_reported(scenario: Scenario, result: RunResult) -> None:
    """``duplicates`` names the messages that reached one recipient more than once, with the
    most copies any recipient got; a message to two domains (a copy each) is not one."""
    copies = copies_by_envelope(scenario, result)
    lines = Counter(m.sender for m in scenario.messages)  # > 1: a line with a count
    for message in scenario.messages:
        most = max(len(copies.get((message.sender, r), [])) for r in message.recipients)
        reported = result.duplicates.get(message.number)
        if lines[message.sender] == 1:  # every copy of this envelope is this message's
            assert reported == (most if most > 1 else None), (message.number, most, reported)
        elif reported is not None:
            assert most >= reported, (message.number, most, reported)


def check_no_loss(scenario: Scenario, result: RunResult) -> None:
    final_keys_are_exact(scenario, result)
    statuses_make_sense(scenario, result)
    bounces_are_reported(scenario, result)
    events_in_time_order(result.events)
    every_copy_accounted_for(scenario, result)
    duplicates_are_reported(scenario, result)


@given(scenarios())
def test_no_message_is_lost_or_invented(data: dict[str, Any]) -> None:
    scenario = scenario_from_mapping(data)
    with errors_logged() as logged:
        result = run_scenario(scenario)
    assert not logged, [record.getMessage() for record in logged]
    check_no_loss(scenario, result)
