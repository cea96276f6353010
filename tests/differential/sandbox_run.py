"""The other side: ``mxsandbox run --profile NAME --json --trace FILE`` of the run copy, read
back into an :class:`~tests.differential.model.Observed` whose times are virtual seconds
divided by the scale factor."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from tests.differential.model import Attempt, Observed

__all__ = ["RunFailed", "observe_run", "read_trace"]

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 120.0


class RunFailed(RuntimeError):
    """``mxsandbox run`` could not play the run copy (exit code 2, or it crashed)."""


async def observe_run(
    scenario: Path,
    profile: str,
    scale: float,
    messages: int,
    workdir: Path,
    origin: float = 0.0,
    *,
    log: str | None = None,
) -> tuple[Observed, dict[str, Any]]:
    """Run the scenario; return what it did (times divided by ``scale``, plus ``origin``: on
    the serve clock of the real run) and its JSON. With ``log`` (``"postfix"``), the run
    prints that log instead of its JSON (both want stdout): the observation keeps its lines,
    and the JSON returned is empty."""
    trace = workdir / "run-trace.jsonl"
    output = ["--log", log] if log else ["--json"]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sandbox",
        "run",
        str(scenario),
        *output,
        "--profile",
        profile,
        "--trace",
        str(trace),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin"},
    )
    async with asyncio.timeout(RUN_TIMEOUT):
        out, err = await process.communicate()
    # Exit 1 only says an expectation failed; the cases carry none that matter here.
    if process.returncode not in (0, 1):
        raise RunFailed(
            f"mxsandbox run {scenario.name} --profile {profile} exited {process.returncode}:\n"
            f"{err.decode()}{out.decode()[-2000:]}"
        )
    events = [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]
    if log:
        (workdir / f"run-{log}.log").write_bytes(out)
        observed = read_trace(events, scale, messages, origin)
        # The log's lines, up to the summary that follows them after a blank line.
        observed.log = out.decode().split("\n\n", 1)[0].splitlines()
        return observed, {}
    (workdir / "run.json").write_bytes(out)
    result = json.loads(out)
    return read_trace(events, scale, messages, origin), result


def read_trace(
    events: list[dict[str, Any]], scale: float, messages: int, origin: float = 0.0
) -> Observed:
    """Per (message, recipient): attempts with their hosts, the final state, the DSN sent back.
    Messages numbered above ``messages`` are the sender's own DSNs: they only mark
    ``returned``."""
    observed = Observed()
    recipients_of: dict[int, list[str]] = {}
    current: dict[tuple[int, int], dict[str, Any]] = {}  # (message, attempt) -> its findings
    for event in events:
        kind = event["kind"]
        message = event.get("message")
        if kind == "message_queued" and message is not None and message <= messages:
            recipients_of[message] = [r.lower() for r in event["recipients"]]
            for recipient in recipients_of[message]:
                observed.delivery(message, recipient)
        if message is None or message > messages:
            if kind == "host_session":
                host = event["host"]
                observed.sessions[host] = observed.sessions.get(host, 0) + 1
            elif kind == "host_accepted":
                host = event["host"]
                observed.accepted[host] = observed.accepted.get(host, 0) + 1
            continue
        key = (message, event.get("attempt", 0))
        if kind == "attempt_started":
            current[key] = {
                "t": event["t"] / scale + origin,
                "hosts": [],
                "active": False,
                "recipients": [r.lower() for r in event["recipients"]],
            }
        elif kind in ("dns_asked", "dns_answered", "route_chosen") and key in current:
            current[key]["active"] = True
        elif kind in ("connected", "connect_failed") and key in current:
            found = current[key]
            found["active"] = True
            host = f"{event['host']}[{event.get('address', '')}]"
            if not found["hosts"] or found["hosts"][-1] != host:
                found["hosts"].append(host)
        elif kind == "recipient_deferred":
            # A deferral without a try (``suspended``) is skipped: one that no attempt
            # started (Postfix: its destination is dead), or whose attempt tried no host
            # (Exim: every host inside its retry time).
            found = current.get(
                key, {"t": event["t"] / scale + origin, "hosts": [], "active": False}
            )
            delivery = observed.delivery(message, event["recipient"])
            delivery.attempts.append(
                Attempt(
                    t=found["t"],
                    hosts=list(found["hosts"]),
                    outcome="deferred",
                    dsn=event.get("dsn"),
                    skipped=bool(event.get("suspended")) and not found["hosts"],
                    detail=event.get("reply") or "",
                )
            )
            delivery.dsn = event.get("dsn")
        elif kind == "recipient_final":
            delivery = observed.delivery(message, event["recipient"])
            found = current.get((message, event.get("attempts", 0)))
            if event["status"] != "deferred" and found is not None:
                delivery.attempts.append(
                    Attempt(
                        t=found["t"],
                        hosts=list(found["hosts"]),
                        outcome=event["status"],
                        dsn=event.get("dsn"),
                        detail=event.get("reply") or "",
                    )
                )
            delivery.status = event["status"]
            delivery.dsn = event.get("dsn")
            delivery.tls = "TLS" if event.get("tls") else "plain"
            relay = event.get("relay")
            delivery.relay = None if not relay or relay == "none" else relay
            delivery.at = event["t"] / scale + origin
            if event["status"] == "deferred":
                delivery.at = None
        elif kind == "dsn_created" and event.get("action") == "failed":
            for recipient in event.get("recipients", []):
                delivery = observed.delivery(message, recipient)
                delivery.returned = True
                delivery.returned_status = delivery.dsn
    return observed
