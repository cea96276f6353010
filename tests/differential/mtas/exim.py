"""Debian's Exim 4 (4.96), unpacked with ``dpkg -x`` into .cache/exim (never installed: it
conflicts with Postfix), run as ``exim4 -C CONFIG`` with a configuration of our own:

- one ``dnslookup`` router without Debian's ``ignore_target_hosts`` (which drops 127.0.0.0/8,
  where every sandbox host lives) and one ``smtp`` transport;
- Exim's default retry rule ``F,2h,15m; G,16h,1h,1.5; F,4d,6h`` and its transport timeouts,
  divided by S = 150 (every one comes out in whole seconds);
- no daemon: a new message is delivered at once by the submitting process (Exim's default,
  in the background), and retries only happen in queue runs, which the harness starts every
  12 s of the serve clock (``exim -q``; Debian's QUEUEINTERVAL of 30 minutes divided by S,
  what the daemon's ``-q12s`` does, but aligned with serve's start);
- a system filter that saves a copy of every bounce (envelope sender <>) before it goes out,
  so the DSN's own ``Status:`` can be read;
- ``log_selector`` with milliseconds and pids: Exim's own timestamps are precise enough.

The binary re-executes itself for each delivery; it then drops its privilege to Debian-exim
("exim user lost privilege for using -C option" in the panic log), which is all a remote
delivery needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from tests.differential.model import UNSEEN, Attempt, Observed
from tests.differential.mtas import CACHE, MESSAGE_ID, MTA, Knob, compose, run_command
from tests.differential.scenario import Message
from tests.differential.served import Served

__all__ = ["Exim"]

EXIM = CACHE / "exim" / "root" / "usr" / "sbin" / "exim4"
USER = "Debian-exim"
S = 150.0
QUEUE_INTERVAL = 12  # seconds: Debian's QUEUEINTERVAL=30m / S

LINE = re.compile(
    r"^(?P<stamp>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) \[(?P<pid>\d+)\] (?P<text>.*)$"
)
QID = r"(?P<qid>[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2})"
ARRIVAL = re.compile(QID + r" <= (?P<sender>\S+) (?P<rest>.*)$")
RESULT = re.compile(
    QID + r" (?P<flag>=>|->|\*\*|==) (?P<rcpt>[^\s:]+):?(?: <[^>]*>)? (?P<rest>.*)$"
)
HOST_LINE = re.compile(QID + r" H=(?P<host>\S+) \[(?P<ip>[\d.:a-f]+)\](?::\d+)?:? (?P<why>.*)$")
HOST_FIELD = re.compile(r"\bH=(?P<host>\S+) \[(?P<ip>[\d.:a-f]+)\]")
COMPLETED = re.compile(QID + r" Completed$")
MSGID = re.compile(r"\bid=(?P<id>\S+)")
BOUNCE_OF = re.compile(r"\bR=" + QID.replace("qid", "orig"))

CONFIG = """\
exim_path = {exim}
spool_directory = {home}/spool
log_file_path = {home}/log/%slog
pid_file_path = {home}/exim.pid
primary_hostname = sender.exim.test
qualify_domain = sender.exim.test
domainlist local_domains =
keep_environment =
daemon_smtp_ports = {ports}
local_interfaces = {interfaces}
log_selector = +pid +millisec +deliver_time +queue_time +received_recipients +outgoing_port \\
  +delivery_size +return_path_on_delivery
trusted_users = root
system_filter = {home}/filter
system_filter_user = {user}
system_filter_file_transport = save_bounce
# Exim's own defaults, divided by S = {scale:g}:
delay_warning = {delay_warning}s
retry_data_expire = {retry_data_expire}s
retry_interval_max = {retry_interval_max}s
ignore_bounce_errors_after = {ignore_bounce_errors_after}s
{submission}
begin routers

# Debian's dnslookup router without its ignore_target_hosts (which drops 127.0.0.0/8).
dnslookup:
  driver = dnslookup
  transport = remote_smtp
  no_more

begin transports

remote_smtp:
  driver = smtp
  connect_timeout = {connect_timeout}s
  command_timeout = {command_timeout}s
  data_timeout = {data_timeout}s
  final_timeout = {final_timeout}s

save_bounce:
  driver = appendfile
  mode = 0644

begin retry

# Debian's rule, F,2h,15m; G,16h,1h,1.5; F,4d,6h, divided by S.
*   *   {retry}
{acl}"""

# With a Submission (mxsandbox conform --smtp): the daemon takes mail from loopback for any
# domain, and counts the own address as one of its interfaces (the self-MX cases).
SUBMISSION = """\
acl_smtp_rcpt = accept_from_loopback
{own}
"""
SUBMISSION_ACL = """
begin acl

accept_from_loopback:
  accept hosts = 127.0.0.0/8
  deny
"""

FILTER = """\
# Exim filter
if $sender_address is "" then
  unseen save {home}/bounces/$message_exim_id
endif
"""


def _rule_text() -> str:
    hour = 3600 / S
    return (
        f"F,{round(2 * hour)}s,{round(900 / S)}s; "
        f"G,{round(16 * hour)}s,{round(hour)}s,1.5; "
        f"F,{round(96 * hour)}s,{round(6 * hour)}s"
    )


class Exim(MTA):
    name: ClassVar[str] = "exim"
    profile: ClassVar[str] = "exim"
    scale: ClassVar[float] = S
    tolerance: ClassVar[float] = 1.0
    knobs: ClassVar[tuple[Knob, ...]] = (
        Knob("connect_timeout", "connect_timeout (smtp transport)", "5m", 2),
        Knob("greeting_timeout", "command_timeout (smtp transport)", "5m", 2),
        Knob("ehlo_timeout", "command_timeout (smtp transport)", "5m", 2),
        Knob("mail_timeout", "command_timeout (smtp transport)", "5m", 2),
        Knob("rcpt_timeout", "command_timeout (smtp transport)", "5m", 2),
        Knob("data_timeout", "command_timeout (smtp transport)", "5m", 2),
        Knob("data_transfer_timeout", "data_timeout (smtp transport)", "5m", 2),
        Knob("dot_timeout", "final_timeout (smtp transport)", "10m", 4),
        Knob("queue_run_delay", "-q interval (Debian QUEUEINTERVAL)", "30m", QUEUE_INTERVAL),
    )

    @classmethod
    def unavailable(cls) -> str | None:
        if not EXIM.exists():
            return "Exim is not unpacked in .cache/exim (scripts/setup-differential)"
        try:
            import pwd

            pwd.getpwnam(USER)
        except KeyError:
            return f"the user {USER} is missing (scripts/setup-differential)"
        return None

    @property
    def config(self) -> Path:
        return self.home / "exim.conf"

    @property
    def log_path(self) -> Path:
        return self.home / "log" / "mainlog"

    def config_text(self) -> str:
        return CONFIG.format(
            exim=EXIM,
            home=self.home,
            user=USER,
            scale=S,
            delay_warning=round(86400 / S),
            retry_data_expire=round(7 * 86400 / S),
            retry_interval_max=round(86400 / S),
            ignore_bounce_errors_after=round(2 * 86400 / S),
            connect_timeout=round(self.setting("connect_timeout")),
            command_timeout=round(self.setting("rcpt_timeout")),
            data_timeout=round(self.setting("data_transfer_timeout")),
            final_timeout=round(self.setting("dot_timeout")),
            retry=self._retry_rule(),
            **self._submission_text(),
        )

    def _retry_rule(self) -> str:
        """Debian's rule divided by S; with ``Submission.give_up_scale``, only its 4-day
        cutoff, divided by that, with a try every second until then."""
        scale = self.submission.give_up_scale if self.submission else None
        return _rule_text() if scale is None else f"F,{round(4 * 86400 / scale)}s,1s"

    @property
    def queue_interval(self) -> int:
        """Seconds between queue runs: Debian's 30 minutes / S (1 s for the give-up run)."""
        return 1 if self.submission and self.submission.give_up_scale else QUEUE_INTERVAL

    def _submission_text(self) -> dict[str, str]:
        if self.submission is None:
            return {"ports": "", "interfaces": "", "submission": "", "acl": ""}
        host, port = self.submission.listen
        own = self.submission.own_address
        return {
            "ports": str(port),
            "interfaces": host,
            "submission": SUBMISSION.format(own=f"extra_local_interfaces = {own}" if own else ""),
            "acl": SUBMISSION_ACL,
        }

    async def start(self, namespace: str) -> None:
        self.namespace = namespace
        for name in ("spool", "log", "bounces"):
            (self.home / name).mkdir()
            shutil.chown(self.home / name, user=USER, group=USER)
        self.config.write_text(self.config_text())
        (self.home / "filter").write_text(FILTER.format(home=self.home))
        version = re.search(
            r"Exim version (\S+)", await run_command(str(EXIM), "-C", "/dev/null", "-bV")
        )
        self.version = f"Exim {version[1]}" if version else "Exim"
        self.runs: list[asyncio.subprocess.Process] = []
        if self.submission is not None:
            # The daemon: it listens, and starts a queue run every queue_interval seconds
            # (what Debian's init script does with -q30m); stop() ends it with the runs.
            self.runs.append(
                await asyncio.create_subprocess_exec(
                    "ip", "netns", "exec", namespace, str(EXIM), "-C", str(self.config),
                    "-bdf", f"-q{self.queue_interval}s",
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            )  # fmt: skip

    async def queue_runner(self, now: Callable[[], float]) -> None:
        """A queue run every 12 s of the serve clock, as ``exim -q12s`` would start them, but
        aligned with serve's t = 0 (run mode's queue scans are at multiples of the interval):
        each run is ``exim -q``, a process that goes through the queue once and exits."""
        run = 1
        while True:
            wait = run * QUEUE_INTERVAL - now()
            if wait > 0:
                await asyncio.sleep(wait)  # a schedule, not a wait for readiness
            self.runs.append(
                await asyncio.create_subprocess_exec(
                    "ip",
                    "netns",
                    "exec",
                    self.namespace,
                    str(EXIM),
                    "-C",
                    str(self.config),
                    "-q",
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            )
            run += 1

    async def submit(self, message: Message) -> None:
        await run_command(
            "ip",
            "netns",
            "exec",
            self.namespace,
            str(EXIM),
            "-C",
            str(self.config),
            "-f",
            message.sender,
            "--",
            *message.recipients,
            stdin=compose(self.case, message),
        )

    async def stop(self) -> None:
        for process in getattr(self, "runs", []):
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await process.wait()

    def observe(self, lines: list[tuple[float, str]], served: Served) -> Observed:
        observed = Observed()
        for message in self.case.messages:
            for recipient in message.recipients:
                observed.delivery(message.number, recipient)
        message_of: dict[str, int] = {}
        self._began: dict[str, float] = {}  # QID -> when its latest attempt began
        bounce_of: dict[str, str] = {}  # bounce QID -> original QID
        done: dict[str, bool] = {}  # every QID seen -> Completed
        # Per QID, the attempt being read: its first line's time, hosts, recipients seen.
        current: dict[str, dict[str, Any]] = {}
        last_line: dict[str, float] = {}
        for _, line in lines:
            match = LINE.match(line)
            if not match:
                continue
            t = served.at_wall(_epoch(match["stamp"]))
            text = match["text"]
            if found := ARRIVAL.match(text):
                qid = found["qid"]
                done.setdefault(qid, False)
                last_line[qid] = t
                if found["sender"] == "<>":
                    if orig := BOUNCE_OF.search(found["rest"]):
                        bounce_of[qid] = orig["orig"]
                    continue
                ident = MSGID.search(found["rest"])
                id_match = MESSAGE_ID.fullmatch(f"<{ident['id']}>") if ident else None
                if id_match and id_match[2] == self.case.name:
                    message_of[qid] = int(id_match[1])
                    observed.arrivals[int(id_match[1])] = t
                continue
            if found := COMPLETED.match(text):
                done[found["qid"]] = True
                current.pop(found["qid"], None)
                continue
            if found := HOST_LINE.match(text):
                qid = found["qid"]
                attempt = current.get(qid)
                if attempt is None or attempt["results"]:
                    attempt = current[qid] = self._new_attempt(qid, t, last_line, served)
                _add_host(attempt["hosts"], f"{found['host']}[{found['ip']}]")
                attempt["lines"].append(text)
                last_line[qid] = t
                continue
            if found := RESULT.match(text):
                qid = found["qid"]
                rcpt = found["rcpt"].lower()
                attempt = current.get(qid)
                if attempt is None or rcpt in attempt["results"]:
                    attempt = current[qid] = self._new_attempt(qid, t, last_line, served)
                attempt["results"][rcpt] = found["flag"]
                if host := HOST_FIELD.search(found["rest"]):
                    _add_host(attempt["hosts"], f"{host['host']}[{host['ip']}]")
                attempt["lines"].append(text)
                last_line[qid] = t
                if qid in message_of:
                    self._result(found, attempt, line, t, message_of[qid], observed)
        self._read_bounces(observed, message_of, bounce_of)
        self.extra["queue_ids"] = message_of
        # Every message with a bounced recipient has its bounce queued and completed.
        bounced = {
            q
            for q, n in message_of.items()
            if any(d.message == n and d.status == "bounced" for d in observed.deliveries.values())
        }
        self.extra["bounces_settled"] = bounced <= set(bounce_of.values()) and all(
            done.get(b, False) for b in bounce_of
        )
        self.extra["all_completed"] = all(done.get(q, False) for q in message_of)
        return observed

    def _new_attempt(
        self, qid: str, t: float, last_line: dict[str, float], served: Served
    ) -> dict[str, Any]:
        """A new attempt; it began at the first MX query for the message's domain since the
        message's previous line, if serve saw one, else at this line."""
        # Exim may write a line a few milliseconds after the delivery process it forked has
        # already asked DNS: look a little before the previous line, but never at or before
        # the query that began the previous attempt.
        since = last_line.get(qid, t - 1.0) - 0.25
        since = max(since, self._began.get(qid, since - 1.0) + 0.001)
        start = _first_query(served, self.case.domains, since, t)
        self._began[qid] = start
        return {"t": start, "hosts": [], "results": {}, "lines": []}

    def _result(
        self,
        found: re.Match[str],
        attempt: dict[str, Any],
        line: str,
        t: float,
        number: int,
        observed: Observed,
    ) -> None:
        delivery = observed.delivery(number, found["rcpt"])
        flag = found["flag"]
        rest = found["rest"]
        status = {"=>": "delivered", "->": "delivered", "**": "bounced"}.get(flag, "deferred")
        skipped = "retry time not reached" in rest and not attempt["hosts"]
        relay = HOST_FIELD.search(rest)
        dsn: str | None = UNSEEN
        if status == "delivered":
            dsn = "2.0.0"
        code = re.search(r'C="(\d{3})(?: (\d\.\d{1,3}\.\d{1,3}))?', rest)
        if status == "delivered" and code and code[2]:
            dsn = code[2]
        delivery.attempts.append(
            Attempt(
                t=attempt["t"],
                hosts=list(attempt["hosts"]),
                outcome=status,
                dsn=None if dsn == UNSEEN else dsn,
                skipped=skipped,
                detail=line,
            )
        )
        delivery.log.extend(attempt["lines"][-3:] if status != "deferred" else [line])
        delivery.status = status
        delivery.dsn = dsn
        delivery.relay = (
            f"{relay['host']}[{relay['ip']}]".lower() if relay and status != "deferred" else None
        )
        delivery.at = t if status != "deferred" else None

    def _read_bounces(
        self, observed: Observed, message_of: dict[str, int], bounce_of: dict[str, str]
    ) -> None:
        """The DSNs Exim sent: their Status per Final-Recipient, from the saved copies."""
        for bounce, original in bounce_of.items():
            number = message_of.get(original)
            if number is None:
                continue
            copy = self.home / "bounces" / bounce
            text = _text(copy)
            for recipient, status in re.findall(
                r"^Final-Recipient: rfc822;\s*(\S+)\s*\n(?:.*\n)*?Status: (\S+)", text, re.M
            ):
                delivery = observed.delivery(number, recipient)
                delivery.returned = True
                delivery.returned_status = status
                if delivery.status == "bounced":
                    delivery.dsn = status
            if not text:
                for delivery in observed.deliveries.values():
                    if delivery.message == number and delivery.status == "bounced":
                        delivery.returned = True

    def settled(self, observed: Observed) -> bool:
        every = all(d.status != "deferred" for d in observed.deliveries.values())
        submitted = len(self.extra.get("queue_ids", {})) == len(self.case.messages)
        return every and submitted and bool(self.extra.get("bounces_settled", True))


def _add_host(hosts: list[str], host: str) -> None:
    host = host.lower()
    if not hosts or hosts[-1] != host:
        hosts.append(host)


def _epoch(stamp: str) -> float:
    when = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f")
    return time.mktime(when.timetuple()) + when.microsecond / 1e6


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _first_query(served: Served, domains: set[str], since: float, until: float) -> float:
    """The first MX query for one of ``domains`` that serve answered in (since, until]."""
    for event in served.events:
        if (
            event.get("kind") == "dns_served"
            and event.get("rdtype") == "MX"
            and event.get("name", "").rstrip(".").lower() in domains
            and since < event["t"] <= until + 0.01
        ):
            return float(event["t"])
    return until
