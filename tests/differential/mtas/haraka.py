"""Haraka from npm (the version pinned in tests/differential/haraka/package-lock.json,
installed into .cache/haraka), with a configuration directory made for each case:

- ``smtp.ini``: one listener on 127.0.0.1:2525 inside the namespace, which the harness
  submits to over SMTP;
- ``outbound.ini``: ``local_mx_ok = true`` (or outbound skips MX hosts on loopback, where
  every sandbox host lives), no TLS (``enable_tls=false``; the run copy gets ``tls: none``,
  the same), and
  ``connect_timeout`` divided by S = 32. Haraka has no per-command timeouts: that one value
  is the connect timeout AND the socket's idle timeout for the whole session;
- ``temp_fail_intervals``: Haraka's own 2^(n+5) s doubling (64 s … 36 h), as many as the
  case's ``max_failures`` allows (13 failures by default); the ``differential`` plugin divides
  each delay by S in the ``deferred`` hook, because outbound.ini refuses intervals under 5 s;
- ``plugins``: only ``differential`` (tests/differential/haraka/differential.js): relaying
  for the harness, the scaled retry, and a JSON Lines record of what outbound did.

Haraka retries from a timer queue that it checks once a second, so its retries land up to
1 s (32 s unscaled) after their time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

from tests.differential.model import UNSEEN, Attempt, Observed
from tests.differential.mtas import CACHE, MESSAGE_ID, MTA, ROOT, Knob, compose
from tests.differential.scenario import Message
from tests.differential.served import Served

__all__ = ["Haraka"]

HARAKA = CACHE / "haraka" / "node_modules" / "Haraka" / "bin" / "haraka"
PLUGIN = Path(__file__).resolve().parents[1] / "haraka" / "differential.js"
LISTEN = ("127.0.0.1", 2525)
S = 32.0
DEFAULT_FAILURES = 13


class Haraka(MTA):
    name: ClassVar[str] = "haraka"
    profile: ClassVar[str] = "haraka"
    scale: ClassVar[float] = S
    # Haraka's retry timer queue is checked once a second (TimerQueue(1000)): a retry fires up
    # to 1 s after its time, whatever the scale. That second cannot be scaled down.
    tolerance: ClassVar[float] = 1.5
    times_mode: ClassVar[str] = "gaps"
    knobs: ClassVar[tuple[Knob, ...]] = (
        Knob("connect_timeout", "connect_timeout (outbound.ini)", "30", 30 / S),
        # One socket idle timeout (the same connect_timeout) for every stage of the session.
        *(
            Knob(field, "connect_timeout (the socket's idle timeout)", "30", 30 / S)
            for field in (
                "greeting_timeout",
                "ehlo_timeout",
                "mail_timeout",
                "rcpt_timeout",
                "data_timeout",
                "data_transfer_timeout",
                "dot_timeout",
            )
        ),
    )

    @classmethod
    def unavailable(cls) -> str | None:
        if not HARAKA.exists():
            return "Haraka is not installed in .cache/haraka (scripts/setup-differential)"
        if shutil.which("node") is None:
            return "node is missing"
        return None

    @property
    def log_path(self) -> Path:
        return self.home / "haraka.log"

    @property
    def listen(self) -> tuple[str, int]:
        return self.submission.listen if self.submission else LISTEN

    @property
    def retry_scale(self) -> float:
        """What the plugin divides each retry delay by: S, or ``Submission.give_up_scale``
        (Haraka gives up after its 13th failure; Haraka has no address of its own to set)."""
        scale = self.submission.give_up_scale if self.submission else None
        return scale or S

    @property
    def events_path(self) -> Path:
        return self.home / "events.jsonl"

    @property
    def failures(self) -> int:
        sender = self.case.data.get("sender") or {}
        return int(sender.get("max_failures", DEFAULT_FAILURES))

    def outbound_ini(self) -> str:
        # Haraka's doubling, 2^(n+5) s after failure n; failure number `failures` bounces.
        intervals = ",".join(f"{2 ** (n + 5)}s" for n in range(1, self.failures))
        return (
            "local_mx_ok=true\n"
            "enable_tls=false\n"
            f"connect_timeout={30 / S:g}\n"
            f"temp_fail_intervals={intervals or 'none'}\n"
        )

    async def start(self, namespace: str) -> None:
        self.namespace = namespace
        config = self.home / "config"
        (self.home / "plugins").mkdir()
        (self.home / "queue").mkdir()
        # Haraka's own defaults (connection.ini and the rest), then ours over them.
        shutil.copytree(HARAKA.parents[1] / "config", config)
        shutil.copy(PLUGIN, self.home / "plugins" / "differential.js")
        (config / "plugins").write_text("differential\n")
        (config / "smtp.ini").write_text(f"[main]\nlisten={self.listen[0]}:{self.listen[1]}\n")
        (config / "me").write_text("sender.haraka.test\n")
        (config / "host_list").write_text("")
        (config / "outbound.ini").write_text(self.outbound_ini())
        (config / "log.ini").write_text("[main]\nlevel=info\ntimestamps=true\nformat=default\n")
        package = json.loads((HARAKA.parents[1] / "package.json").read_text())
        self.version = f"Haraka {package['version']}"
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child writes to it until stop()
        self._log = log
        self.process = await asyncio.create_subprocess_exec(
            "ip",
            "netns",
            "exec",
            namespace,
            "node",
            str(HARAKA),
            "-c",
            str(self.home),
            cwd=self.home,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env={
                "PATH": "/usr/bin:/bin",
                "DIFFERENTIAL_SCALE": f"{self.retry_scale:g}",
                "DIFFERENTIAL_EVENTS": str(self.events_path),
                "NODE_NO_WARNINGS": "1",
            },
        )
        deadline = time.monotonic() + 30
        while "Listening on" not in _text(self.log_path):
            if self.process.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Haraka did not start:\n{_text(self.log_path)[-3000:]}")
            await asyncio.sleep(0.05)  # polling its log for the listener, with a deadline

    async def submit(self, message: Message) -> None:
        await self.submit_many([message])

    async def submit_many(self, messages: list[Message]) -> None:
        payload = json.dumps(
            [
                {
                    "from": m.sender,
                    "to": list(m.recipients),
                    "data": compose(self.case, m).decode(),
                }
                for m in messages
            ]
        ).encode()
        process = await asyncio.create_subprocess_exec(
            "ip",
            "netns",
            "exec",
            self.namespace,
            sys.executable,
            "-m",
            "tests.differential.submit",
            *map(str, self.listen),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(60):
            out, _ = await process.communicate(payload)
        if process.returncode != 0:
            raise RuntimeError(f"submission to Haraka failed:\n{out.decode()}")

    async def stop(self) -> None:
        process = getattr(self, "process", None)
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await process.wait()
        if getattr(self, "_log", None) is not None:
            self._log.close()

    def observe(self, lines: list[tuple[float, str]], served: Served) -> Observed:
        observed = Observed()
        for message in self.case.messages:
            for recipient in message.recipients:
                observed.delivery(message.number, recipient)
        message_of: dict[str, int] = {}  # transaction uuid -> message number
        attempts: dict[str, dict[str, Any]] = {}  # todo uuid -> the attempt in progress
        dsn_jobs: dict[str, bool] = {}  # the DSNs' own todo uuids -> settled
        dsns_made = 0
        bounces = 0  # bounces of messages with a sender: each makes one DSN
        for event in _events(self.events_path):
            kind = event["kind"]
            t = served.at_wall(event["t"])
            uuid = event.get("uuid") or ""
            if kind == "received":
                found = MESSAGE_ID.fullmatch(event["message_id"])
                if found and found[2] == self.case.name:
                    message_of[uuid] = int(found[1])
                    observed.arrivals[int(found[1])] = t
                continue
            number = message_of.get(uuid.rsplit(".", 1)[0])
            if kind == "attempt":
                attempts[uuid] = {"t": t, "hosts": []}
                if event.get("sender") == "":
                    dsn_jobs.setdefault(uuid, False)
                continue
            attempt = attempts.setdefault(uuid, {"t": t, "hosts": []})
            if kind == "connection":
                host = f"{event.get('host') or event.get('ip')}[{event.get('ip')}]".lower()
                if not attempt["hosts"] or attempt["hosts"][-1] != host:
                    attempt["hosts"].append(host)
                continue
            if kind == "dsn":
                dsns_made += 1
            if kind == "bounce" and event.get("sender"):
                bounces += 1
            if kind == "dsn" and number is not None:
                for found in event.get("statuses", []):
                    delivery = observed.delivery(number, found["recipient"])
                    delivery.returned = True
                    # "5.1.1 (550 No such user)": the DSN's Status, code first
                    status = (found.get("status") or "").split(" ", 1)[0] or None
                    delivery.returned_status = status
                    if delivery.status == "bounced":
                        delivery.dsn = status
                continue
            if uuid in dsn_jobs and kind in ("delivered", "bounce"):
                dsn_jobs[uuid] = True
                continue
            if number is None:
                continue
            if kind == "delivered":
                for recipient in event["recipients"]:
                    self._outcome(observed, number, recipient, attempt, "delivered", UNSEEN)
                    delivery = observed.delivery(number, recipient)
                    delivery.relay = f"{event.get('host')}[{event.get('ip')}]".lower()
                    delivery.at = t
                    delivery.log.append(json.dumps(event))
            elif kind in ("deferred", "bounce"):
                status = "deferred" if kind == "deferred" else "bounced"
                for rcpt in event["recipients"]:
                    delivery = observed.delivery(number, rcpt["address"])
                    if delivery.status != "deferred":
                        continue  # already final (delivered or bounced in an earlier split)
                    self._outcome(observed, number, rcpt["address"], attempt, status, rcpt)
                    delivery.log.append(json.dumps({**event, "recipients": [rcpt]}))
                    if status == "bounced":
                        delivery.at = t
                        remote = rcpt.get("dsn_remote_mta")
                        delivery.relay = f"{remote}[{remote}]" if remote else None
                        delivery.returned = bool(event.get("sender"))
                        delivery.returned_status = rcpt.get("dsn_status")
        self.extra["queue_ids"] = message_of
        # Every DSN Haraka built has been queued and delivered (or bounced itself).
        self.extra["bounces_settled"] = (
            dsns_made >= bounces and len(dsn_jobs) >= dsns_made and all(dsn_jobs.values())
        )
        return observed

    @staticmethod
    def _outcome(
        observed: Observed,
        number: int,
        recipient: str,
        attempt: dict[str, Any],
        status: str,
        rcpt: dict[str, Any] | str,
    ) -> None:
        delivery = observed.delivery(number, recipient)
        dsn = rcpt if isinstance(rcpt, str) else rcpt.get("dsn_status")
        delivery.attempts.append(
            Attempt(
                t=attempt["t"],
                hosts=list(attempt["hosts"]),
                outcome=status,
                dsn=None if dsn == UNSEEN else dsn,
                detail="" if isinstance(rcpt, str) else json.dumps(rcpt),
            )
        )
        delivery.status = status
        delivery.dsn = dsn

    def settled(self, observed: Observed) -> bool:
        every = all(d.status != "deferred" for d in observed.deliveries.values())
        submitted = len(self.extra.get("queue_ids", {})) == len(self.case.messages)
        return every and submitted and bool(self.extra.get("bounces_settled", True))

    def run_overrides(self) -> dict[str, Any]:
        overrides = super().run_overrides()
        sender = self.case.data.get("sender") or {}
        if "max_failures" not in sender:
            overrides["max_failures"] = DEFAULT_FAILURES
        overrides["tls"] = "none"  # enable_tls=false in outbound.ini
        return overrides


def _events(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except OSError:
        return []
    events = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))
    return events


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
