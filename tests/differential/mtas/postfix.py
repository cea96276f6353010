"""Debian's Postfix (3.7) as a private instance: ``postfix -c DIR``, its own queue and
``maillog_file``, every service out of chroot, no smtpd (``sendmail -C DIR`` submits through
postdrop and pickup). Its timers are the defaults divided by S = 30, rounded to whole
seconds where Postfix needs them whole; the run copy gets S times the configured value.

STARTTLS at Debian's level, ``may`` (or the case's ``sender: {tls: …}``), with the sandbox's
CA as ``smtp_tls_CAfile`` and ``smtp_tls_loglevel = 1``, whose "… TLS connection
established" lines say which deliveries went over TLS.

Postfix logs to the second only; :class:`~tests.differential.served.LogTail` stamps each line
when it appears, which puts it on the serve clock to within a few tens of milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from tests.differential.model import Attempt, Observed
from tests.differential.mtas import MESSAGE_ID, MTA, Knob, compose, run_command
from tests.differential.scenario import Message
from tests.differential.served import Served

__all__ = ["Postfix"]

POSTFIX = "/usr/sbin/postfix"
SENDMAIL = "/usr/sbin/sendmail"
POSTCONF = "/usr/sbin/postconf"

# Only what delivery needs: no smtpd listening, and every service out of chroot.
MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
"""

LINE = re.compile(
    r"^(?P<month>\w{3}) +(?P<day>\d+) (?P<clock>\d\d:\d\d:\d\d) \S+ "
    r"postfix/(?P<proc>[\w/-]+)\[(?P<pid>\d+)\]: (?P<text>.*)$"
)
STATUS = re.compile(
    r"^(?P<qid>[0-9A-F]+): to=<(?P<rcpt>[^>]*)>, (?:orig_to=<[^>]*>, )?relay=(?P<relay>[^,]+), "
    r"(?:conn_use=(?P<conn_use>\d+), )?delay=(?P<delay>[\d.]+), delays=(?P<delays>[\d./]+), "
    r"dsn=(?P<dsn>[\d.]+), status=(?P<status>\w+)(?P<returned>, returned to sender)? "
    r"\((?P<why>.*)\)$"
)
QUEUED = re.compile(r"^(?P<qid>[0-9A-F]+): from=<(?P<sender>[^>]*)>, .*\(queue active\)$")
# smtp_tls_loglevel = 1: one line per TLS session that completed its handshake.
TLS_UP = re.compile(r"^(?:Anonymous|Untrusted|Trusted|Verified) TLS connection established to ")
MESSAGE = re.compile(r"^(?P<qid>[0-9A-F]+): message-id=(?P<id>\S+)$")
# The queue manager gives up on a message (maximal_queue_lifetime): every recipient still
# deferred bounces with the status of its last deferral.
EXPIRED = re.compile(r"^(?P<qid>[0-9A-F]+): from=<[^>]*>, status=expired, returned to sender$")
NOTIFICATION = re.compile(
    r"^(?P<qid>[0-9A-F]+): sender non-delivery notification: (?P<bounce>[0-9A-F]+)$"
)
REMOVED = re.compile(r"^(?P<qid>[0-9A-F]+): removed$")
HOST = re.compile(r"(?<![\w.-])([A-Za-z0-9][\w.-]*)\[(\d+\.\d+\.\d+\.\d+)\]")

S = 30.0


class Postfix(MTA):
    name: ClassVar[str] = "postfix"
    profile: ClassVar[str] = "postfix"
    scale: ClassVar[float] = S
    tolerance: ClassVar[float] = 1.0
    log_format: ClassVar[str | None] = "postfix"
    knobs: ClassVar[tuple[Knob, ...]] = (
        Knob("connect_timeout", "smtp_connect_timeout", "30s", 1),
        Knob("greeting_timeout", "smtp_helo_timeout", "300s", 10),
        Knob("ehlo_timeout", "smtp_helo_timeout", "300s", 10),
        Knob("mail_timeout", "smtp_mail_timeout", "300s", 10),
        Knob("rcpt_timeout", "smtp_rcpt_timeout", "300s", 10),
        Knob("data_timeout", "smtp_data_init_timeout", "120s", 4),
        Knob("data_transfer_timeout", "smtp_data_xfer_timeout", "180s", 6),
        Knob("dot_timeout", "smtp_data_done_timeout", "600s", 20),
        Knob("min_backoff", "minimal_backoff_time", "300s", 10),
        Knob("max_backoff", "maximal_backoff_time", "4000s", 133),  # 133.3 s: whole seconds
        Knob("queue_run_delay", "queue_run_delay", "300s", 10),
        Knob("max_lifetime", "maximal_queue_lifetime", "5d", 5 * 86400 / S),
        Knob("starttls_timeout", "smtp_starttls_timeout", "300s", 10),
    )
    # Postfix timers the profile has no field for, scaled the same way (S = 30).
    fixed: ClassVar[dict[str, str]] = {
        "bounce_queue_lifetime": "14400s",  # 5d / S (the lifetime of DSNs in the queue)
        "smtp_quit_timeout": "10s",  # 300s / S
        "smtp_rset_timeout": "1s",  # 20s / S would be 0.67 s: the shortest Postfix takes
        "smtp_connection_reuse_time_limit": "10s",  # 300s / S
        # smtp_connection_cache_time_limit stays 2s (its default): 0.07 s cannot be written.
    }

    @classmethod
    def unavailable(cls) -> str | None:
        if not Path(POSTFIX).exists():
            return "Postfix is not installed (scripts/setup-differential)"
        return None

    @property
    def config(self) -> Path:
        return self.home / "etc"

    @property
    def log_path(self) -> Path:
        return self.home / "maillog"

    def main_cf(self) -> str:
        seconds = {knob.setting: self.setting(knob.field) for knob in self.knobs}
        seconds.update(self._give_up_timers())
        for setting, value in seconds.items():
            if value < 1 or abs(value - round(value)) > 1e-6:
                raise ValueError(
                    f"{self.case.name}: Postfix's {setting} must be whole seconds, and "
                    f"{value * S:g}s / {S:g} = {value:g}s is not"
                )
        timers = "\n".join(f"{k} = {round(v)}s" for k, v in seconds.items())
        settings = {"smtputf8_enable": "no", **self.fixed, **self._submission()}
        fixed = "\n".join(f"{k} = {v}" for k, v in settings.items())
        tls = self.tls_settings()
        return f"""\
compatibility_level = 3.6
queue_directory = {self.home}/queue
data_directory = {self.home}/data
meta_directory = /etc/postfix
maillog_file = {self.log_path}
maillog_file_prefixes = {self.home}
myhostname = sender.postfix.test
mydomain = postfix.test
myorigin = $myhostname
mydestination =
relayhost =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
alias_maps =
alias_database =
{tls}
{timers}
{fixed}
"""

    @property
    def level(self) -> str:
        """The case's TLS level (``sender: {tls: …}``), else Debian's default, "may"."""
        sender = self.case.data.get("sender") or {}
        return str(sender.get("tls", "may"))

    def tls_settings(self) -> str:
        """STARTTLS as Debian ships it (``may``) or as the case asks, trusting the sandbox's
        CA (its file is copied here once serve has printed it: ``served``). DANE needs
        DNSSEC answers, which the namespace's resolv.conf trusts (``options trust-ad``)."""
        lines = [
            f"smtp_tls_security_level = {self.level}",
            f"smtp_tls_CAfile = {self.home}/ca.pem",
            "smtp_tls_loglevel = 1",
        ]
        if self.level == "dane":
            lines.append("smtp_dns_support_level = dnssec")
        return "\n".join(lines)

    async def served(self, served: Served) -> None:
        shutil.copy(served.ready["ca_file"], self.home / "ca.pem")
        (self.home / "ca.pem").chmod(0o644)

    def _give_up_timers(self) -> dict[str, float]:
        """With ``Submission.give_up_scale``: the 5-day lifetime divided by it, and a retry
        every 3 s until then. Not every second: the queue manager may then take the deferred
        message while the smtp process that deferred it still holds it, and a message "skipped,
        still being delivered" waits 60 s, a delay Postfix does not let us shorten."""
        scale = self.submission.give_up_scale if self.submission else None
        if scale is None:
            return {}
        return {
            "maximal_queue_lifetime": 5 * 86400 / scale,
            "minimal_backoff_time": 3,
            "maximal_backoff_time": 3,
            "queue_run_delay": 1,
        }

    def _submission(self) -> dict[str, str]:
        """With a ``Submission``: smtpd relays for loopback (its listener is in master.cf),
        and the own address counts as one of Postfix's interfaces (the self-MX cases)."""
        if self.submission is None:
            return {}
        settings = {
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            # Postfix's own default: it takes an internationalised address, and must then
            # decide what to do with a host that does not offer SMTPUTF8 (conform's case).
            "smtputf8_enable": "yes",
        }
        if self.submission.own_address:
            settings["proxy_interfaces"] = self.submission.own_address
        if self.submission.give_up_scale:
            settings["bounce_queue_lifetime"] = (
                f"{round(5 * 86400 / self.submission.give_up_scale)}s"
            )
        return settings

    def master_cf(self) -> str:
        if self.submission is None:
            return MASTER_CF
        host, port = self.submission.listen
        return MASTER_CF + f"{host}:{port}  inet  n  -  n  -  -  smtpd\n"

    async def start(self, namespace: str) -> None:
        self.namespace = namespace
        self.config.mkdir()
        (self.home / "queue").mkdir()
        data = self.home / "data"
        data.mkdir()
        shutil.chown(data, user="postfix")
        (self.config / "main.cf").write_text(self.main_cf())
        (self.config / "master.cf").write_text(self.master_cf())
        version = (await run_command(POSTCONF, "-h", "-d", "mail_version")).strip()
        self.version = f"Postfix {version}"
        await run_command(
            "ip", "netns", "exec", namespace, POSTFIX, "-c", str(self.config), "start"
        )

    async def submit(self, message: Message) -> None:
        await run_command(
            "ip",
            "netns",
            "exec",
            self.namespace,
            SENDMAIL,
            "-C",
            str(self.config),
            "-f",
            message.sender,
            "--",
            *message.recipients,
            stdin=compose(self.case, message),
        )

    async def stop(self) -> None:
        if not self.namespace or not (self.home / "queue" / "pid" / "master.pid").exists():
            return
        # If it will not stop, the namespace's teardown kills what is left.
        with contextlib.suppress(RuntimeError, TimeoutError):
            await run_command(
                "ip", "netns", "exec", self.namespace, POSTFIX, "-c", str(self.config), "stop"
            )

    def first_arrival(self, lines: list[tuple[float, str]], served: Served) -> float:
        """Three seconds after the queue manager started. Postfix computes a retry time in
        whole seconds (the failure's second plus the backoff) and takes a deferred message
        when that time is at most one second ahead, so it retries up to 2 s early. Unscaled,
        2 s in 300 s never moves a retry to another queue scan; scaled by 30, 2 s is 60 s, and
        a message that arrived less than 2 s after a scan would be retried one scan early.
        Real Postfix meets arrivals at any point between its scans; three seconds after one
        keeps the scaled retries where the unscaled ones would be."""
        return self.observe(lines, served).origin + 3.0

    def observe(self, lines: list[tuple[float, str]], served: Served) -> Observed:
        observed = Observed()
        for message in self.case.messages:
            for recipient in message.recipients:
                observed.delivery(message.number, recipient)
        message_of: dict[str, int] = {}
        bounces: dict[str, str] = {}  # bounce QID -> the QID it reports on
        bounce_done: dict[str, bool] = {}
        started: dict[str, float] = {}
        pids: dict[str, dict[str, object]] = {}
        arrived: dict[str, float] = {}
        warnings: list[str] = []
        # A TLS session's "TLS connection established" line names no queue ID: it belongs to
        # the message whose status lines the same smtp process logs next, every one of them
        # (a 550 to one recipient and the other's "sent" alike), until that process logs
        # anything else or the message starts another attempt.
        tls_up: dict[str, bool] = {}  # smtp pid -> TLS came up, no status logged yet
        tls_delivery: dict[str, str] = {}  # smtp pid -> the QID its TLS session delivers
        origin = 0.0
        for seen, line in lines:
            match = LINE.match(line)
            if not match:
                continue
            t = _on_serve_clock(match, seen, served)
            text = match["text"]
            pid = match["pid"]
            proc = match["proc"]
            if proc == "master" and text.startswith("daemon started"):
                origin = t  # the queue manager starts with the master: its scans count from here
                continue
            if found := MESSAGE.match(text):
                arrived[found["qid"]] = t
                id_match = MESSAGE_ID.fullmatch(found["id"])
                if id_match and id_match[2] == self.case.name:
                    message_of[found["qid"]] = int(id_match[1])
                continue
            if found := QUEUED.match(text):
                started[found["qid"]] = t
                for smtp_pid in [p for p, q in tls_delivery.items() if q == found["qid"]]:
                    del tls_delivery[smtp_pid]
                for state in pids.values():  # a new attempt: the last one's hosts are done
                    if state["qid"] == found["qid"] and state["done"]:
                        state.update(hosts=[], qid=None, done=False)
                if found["sender"] == "":
                    bounce_done.setdefault(found["qid"], False)
                continue
            if (found := EXPIRED.match(text)) and found["qid"] in message_of:
                for delivery in observed.deliveries.values():
                    if delivery.message == message_of[found["qid"]] and (
                        delivery.status == "deferred"
                    ):
                        delivery.status = "bounced"
                        delivery.at = t
                        delivery.log.append(line)
                        if delivery.attempts:
                            delivery.attempts[-1].outcome = "bounced"
                            # the relay of the last deferral (none if nothing answered)
                            last = re.search(r"relay=([^,]+),", delivery.attempts[-1].detail)
                            if last and last[1] != "none":
                                delivery.relay = last[1].rsplit(":", 1)[0].lower()
                continue
            if found := NOTIFICATION.match(text):
                bounces[found["bounce"]] = found["qid"]
                bounce_done.setdefault(found["bounce"], False)
                number = message_of.get(found["qid"])
                if number is not None:
                    for delivery in observed.deliveries.values():
                        if delivery.message == number and delivery.status == "bounced":
                            delivery.returned = True
                            delivery.returned_status = delivery.dsn
                            delivery.log.append(line)
                continue
            if proc == "smtp" and TLS_UP.match(text):
                tls_up[pid] = True  # this process's current session went over TLS
                tls_delivery.pop(pid, None)
                continue
            if found := STATUS.match(text):
                self._status(found, line, t, proc, pid, pids, started, message_of, observed)
                if proc == "smtp":
                    if tls_up.pop(pid, False):
                        tls_delivery[pid] = found["qid"]
                    over_tls = tls_delivery.get(pid) == found["qid"]
                    if found["qid"] in message_of and found["status"] == "sent":
                        delivery = observed.delivery(message_of[found["qid"]], found["rcpt"])
                        delivery.tls = "TLS" if over_tls else "plain"
                if found["qid"] in bounce_done and found["status"] != "deferred":
                    bounce_done[found["qid"]] = True
                continue
            if proc == "smtp":
                # Another line: the TLS session's statuses ended, or it ended without one
                # (a certificate not verified, and the next host).
                tls_delivery.pop(pid, None)
                tls_up.pop(pid, None)
                state = pids.setdefault(pid, {"hosts": [], "qid": None, "done": False})
                if state["done"]:
                    state.update(hosts=[], qid=None, done=False)
                hosts = state["hosts"]
                assert isinstance(hosts, list)
                for host, address in HOST.findall(text):
                    named = f"{host.lower()}[{address}]"
                    if not hosts or hosts[-1] != named:
                        hosts.append(named)
                qid = text.split(":", 1)[0]
                if qid in message_of:
                    number = message_of[qid]
                    for delivery in observed.deliveries.values():
                        if delivery.message == number:
                            delivery.log.append(line)
                elif "warning" in text:
                    warnings.append(line)
        # Every message with a bounced recipient has its notification, delivered or bounced.
        bounced = {
            q
            for q, n in message_of.items()
            if any(d.message == n and d.status == "bounced" for d in observed.deliveries.values())
        }
        self.extra["bounces_settled"] = bounced <= set(bounces.values()) and all(
            bounce_done.values()
        )
        self.extra["warnings"] = warnings
        if len(self.case.messages) == 1:  # Postfix's warnings name no queue ID
            for delivery in observed.deliveries.values():
                delivery.log[:0] = warnings
        observed.arrivals = {n: arrived[q] for q, n in message_of.items() if q in arrived}
        observed.log = [line for _, line in lines]
        # Its queue scans count from the queue manager's start: from /proc when we found the
        # process (to 10 ms), else from the master's "daemon started" line (postlogd may write
        # that line late).
        started = getattr(self, "qmgr_started", None)
        observed.origin = served.at_wall(started) if started is not None else origin
        self.extra["queue_ids"] = message_of
        return observed

    def _status(
        self,
        found: re.Match[str],
        line: str,
        t: float,
        proc: str,
        pid: str,
        pids: dict[str, dict[str, object]],
        started: dict[str, float],
        message_of: dict[str, int],
        observed: Observed,
    ) -> None:
        qid = found["qid"]
        relay = None if found["relay"] == "none" else found["relay"].rsplit(":", 1)[0].lower()
        hosts: list[str] = []
        if proc == "smtp":
            state = pids.setdefault(pid, {"hosts": [], "qid": None, "done": False})
            if state["done"] and state["qid"] != qid:
                state["hosts"] = []
            hosts = state["hosts"]  # type: ignore[assignment]
            if relay is not None and (not hosts or hosts[-1] != relay):
                hosts.append(relay)
            state.update(qid=qid, done=True)
        if qid not in message_of:
            return  # a bounce, or another case's message
        delivery = observed.delivery(message_of[qid], found["rcpt"])
        status = {"sent": "delivered", "deferred": "deferred"}.get(found["status"], "bounced")
        suspended = found["why"].startswith("delivery temporarily suspended")
        delivery.attempts.append(
            Attempt(
                t=started.get(qid, t),
                hosts=list(hosts),
                outcome=status,
                dsn=found["dsn"],
                skipped=suspended and proc != "smtp",
                detail=line.split(": ", 1)[1] if ": " in line else line,
            )
        )
        delivery.log.append(line)
        delivery.status = status
        delivery.dsn = found["dsn"]
        delivery.relay = relay if status != "deferred" else None
        delivery.at = t if status != "deferred" else None

    def settled(self, observed: Observed) -> bool:
        every = all(d.status != "deferred" for d in observed.deliveries.values())
        submitted = len(self.extra.get("queue_ids", {})) == len(self.case.messages)
        return every and submitted and bool(self.extra.get("bounces_settled", True))


def _on_serve_clock(match: re.Match[str], seen: float, served: Served) -> float:
    """The line's time: when the tail saw it, kept inside the second Postfix logged."""
    now = datetime.now()
    logged = datetime.strptime(
        f"{now.year} {match['month']} {match['day']} {match['clock']}", "%Y %b %d %H:%M:%S"
    )
    second = time.mktime(logged.timetuple())
    return served.at_wall(min(max(seen, second), second + 0.999))


def _qmgr_started(master_pid_file: Path) -> float | None:
    """When the queue manager (the master's child named qmgr) started, in epoch seconds."""
    try:
        master = int(master_pid_file.read_text().split()[0])
        ticks = os.sysconf("SC_CLK_TCK")
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            if name == "qmgr" and int(fields[1]) == master:
                return boot + int(fields[19]) / ticks
    except (OSError, ValueError, StopIteration):
        return None
    return None
