"""A long-running serve keeps what its retention limits say, and counts everything exactly.

``mxsandbox serve --retain events=500,sessions=200,messages=200,bytes=4MiB`` answers 40,000
DNS queries, takes 1,200 small messages, takes 48 of about 1 MB: each kind in a serve of its
own, in two equal halves. The first half fills every limit; over the second, serve's resident
set must stay put (without limits it grew by about 200 bytes a query, 3 kB a small message and
1.5 times each message's size). The figures are printed. The ``stopped`` record keeps the last
200 sessions and messages and 500 events, says how many it dropped, and every total in it is
exact; serve stops on SIGTERM with exit 0. ``ServedScenario`` (what the ``mx_sandbox``
fixture hands out) counts the same way, and its assertions use the exact counts.
"""

from __future__ import annotations

import asyncio
import json
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from sandbox import scenario_from_mapping
from sandbox.serve.harness import Dropped, ServedScenario, Totals
from tests.helpers import mxsandbox
from tests.reliability.budget import scaled
from tests.reliability.figures import MiB, mib, quiet, rss, show
from tests.reliability.hostile import Watched, udp_queries, watched

RETAIN = ("--retain", "events=500,sessions=200,messages=200,bytes=4MiB")
QUERIES = scaled(40_000, 400_000)
SMALL = scaled(1200, 12_000)
BIG = 48
BIG_SIZE = 1_000_000  # about 1 MB on the wire, headers included: four fit in 4 MiB
SENDERS = 8
GROWTH_ALLOWED = 5 * MiB

SCENARIO: dict[str, Any] = {
    "name": "long-running",
    "zones": {"example.test": "$TTL 60\n@ IN MX 10 mx1\nmx1 IN A 192.0.2.10\n"},
}


def message(number: int, size: int) -> EmailMessage:
    mail = EmailMessage()
    mail["From"], mail["To"] = "bob@example.net", "alice@example.test"
    mail["Subject"] = f"message {number}"
    line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab\n"
    mail.set_content(line * max(1, size // len(line)))
    return mail


async def send(address: tuple[str, int], numbers: range, size: int, senders: int) -> None:
    pending = iter(numbers)

    async def sender() -> None:
        for number in pending:
            await aiosmtplib.send(
                message(number, size),
                hostname=address[0],
                port=address[1],
                timeout=30,
                start_tls=False,
                local_hostname="sender.example.net",
            )

    await asyncio.gather(*(sender() for _ in range(senders)))


async def workload(served: Watched, kind: str, which: int) -> int:
    """Half of one kind of work (``which``: 0 or 1); returns how many DNS answers came back."""
    if kind == "dns":
        return await udp_queries(served.dns, QUERIES // 2, "mx1.example.test")
    count, size = (SMALL, 1000) if kind == "small" else (BIG, BIG_SIZE)
    numbers = range(which * count // 2, (which + 1) * count // 2)
    sessions = served.count("host_session") + len(numbers)
    # One big message at a time: eight at once make the transient peak vary by tens of MiB,
    # which a process's resident set keeps for a while, and the figures would say little.
    senders = 1 if kind == "big" else SENDERS
    await send(served.address_of("mx1.example.test"), numbers, size, senders)
    await served.wait_for("host_session", count=sessions)
    return 0


WORK = {
    "dns": (QUERIES, "DNS queries", "B per query"),
    "small": (SMALL, "small messages", "B per message"),
    "big": (BIG, "1 MB messages", "B per message"),
}


@pytest.mark.parametrize("kind", WORK)
async def test_a_long_running_serve_keeps_what_it_is_told(
    tmp_path: Path, request: pytest.FixtureRequest, kind: str
) -> None:
    scenario = tmp_path / "long.yaml"
    scenario.write_text(json.dumps(SCENARIO), encoding="utf-8")
    total, what, unit = WORK[kind]
    async with watched(scenario, *RETAIN) as served:
        start = rss(served.pid)
        answered = await workload(served, kind, 0)
        await quiet(served.pid)
        middle = rss(served.pid)
        answered += await workload(served, kind, 1)
        await quiet(served.pid)
        end = rss(served.pid)
        code, errors = await served.stop()
    show(
        request,
        f"long-running serve {' '.join(RETAIN) or '(keeping everything)'}, {total} {what}: "
        f"RSS {mib(start)} at the start, {mib(middle)} after the first half, {mib(end)} after "
        f"the second (+{mib(end - middle)}, {(end - middle) / (total // 2):.0f} {unit})",
    )
    assert code == 0, errors
    stopped = served.stopped
    assert stopped is not None
    (host,) = stopped["hosts"]
    messages = 0 if kind == "dns" else total
    assert host["sessions_total"] == host["accepted_total"] == messages
    assert len(host["sessions"]) == min(messages, 200)
    assert host["sessions_dropped"] == messages - len(host["sessions"])
    kept = host["accepted"]
    assert host["accepted_dropped"] == messages - len(kept)
    assert len(kept) == min(messages, 200 if kind == "small" else 4)
    events = stopped["events"]
    assert events["total"] == answered + 2 * messages  # dns_served; host_session, host_accepted
    assert events["kept"] == min(events["total"], 500)
    assert events["dropped"] == events["total"] - events["kept"]
    assert end - middle <= GROWTH_ALLOWED


async def test_the_harness_says_what_it_dropped_and_counts_everything() -> None:
    scenario = scenario_from_mapping(SCENARIO)
    retain = {"events": 5, "sessions": 2, "messages": 3, "bytes": "all"}
    async with ServedScenario(scenario, retain=retain) as sb:
        await send(sb.placements[0].listen, range(6), 1000, senders=1)
        await sb.wait_for(lambda: sb.totals().sessions == 6 and all(
            s.closed is not None for s in sb.sessions()
        ))  # fmt: skip
        assert sb.totals("mx1.example.test") == Totals(sessions=6, accepted=6, too_many=0)
        # host_session and host_accepted per message, and connection_attempt where the
        # sandbox watches SYNs.
        per_message = 3 if sb.sees_connection_attempts else 2
        assert sb.dropped == Dropped(events=6 * per_message - 5, sessions=4, messages=3)
        assert [m["Subject"] for m in sb.messages()] == ["message 3", "message 4", "message 5"]
        assert len(sb.sessions()) == 2 and len(sb.events) == 5
        sb.assert_accepted("mx1.example.test", 6)  # the exact count, not what is kept
        with pytest.raises(AssertionError, match="4 of the oldest were dropped"):
            sb.assert_tried_in_order(["mx1.example.test"] * 6)


def test_a_retention_that_makes_no_sense_is_refused_with_exit_2() -> None:
    done = mxsandbox("serve", "scenarios/primary-down.yaml", "--retain", "events=lots")
    assert done.returncode == 2
    assert "--retain: events=lots: the value must be a count, or all" in done.stderr
    assert "Traceback" not in done.stderr
