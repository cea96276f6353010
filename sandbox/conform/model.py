"""The conformance suite's vocabulary: a case, what was observed while it ran, its verdict.

A ``Case`` is a world (one zone, host behaviours, DNS faults), the messages to send into it,
and a ``judge``: a pure function from the ``Observation`` (what each host and the DNS server
saw, and what the sender said: its exit codes, or the bounces that came back) to a
``Judgement``. Judges never look at the clock or a socket; the tests of the catalogue feed
them hand-made observations too.

Each case names the clause it grades and its requirement level:

=========  ===============================================================================
MUST       an absolute requirement of the RFC; a failure is a bug in the sender
SHOULD     a recommendation; a failure is a departure worth knowing (real MTAs make some)
profile    where the RFCs leave a choice and MTAs differ: the verdict is always ``info``,
           and the evidence says which way the sender went
=========  ===============================================================================

A verdict is ``pass``, ``fail`` or ``info``. ``info`` also stands for a case that cannot be
graded for this sender (a one-shot command keeps no queue to retry from; a case that needs a
host feature this build lacks), and then ``detail`` says why.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

__all__ = [
    "RETURNS",
    "Case",
    "CaseResult",
    "Control",
    "DnsQuery",
    "Judge",
    "Judgement",
    "Level",
    "Mode",
    "Observation",
    "Returned",
    "Run",
    "RunStatus",
    "SeenSession",
    "Stored",
    "Verdict",
    "behaviour_text",
    "fail",
    "info",
    "passed",
    "role_order",
    "scores",
]

Level = Literal["MUST", "SHOULD", "profile"]
Verdict = Literal["pass", "fail", "info"]
# command: a one-shot command per message; queue: a command that keeps the message until it
# is delivered or given up; smtp: an MTA that takes the messages over SMTP.
Mode = Literal["command", "queue", "smtp"]
# What became of one message, as the sender told it (exit code) or, for an MTA, as the hosts
# and the bounces that came back tell it. "running": the command was still at work when the
# case ended (at its deadline, or once the verdict was settled).
RunStatus = Literal["delivered", "deferred", "failed", "running", "error"]

# The host in every case's zone that takes the bounces an MTA sends back (the envelope
# sender's domain is returns.<case domain>).
RETURNS = "returns"


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    detail: str  # one sentence or two: what was seen, and why it passes or fails


def passed(detail: str) -> Judgement:
    return Judgement("pass", detail)


def fail(detail: str) -> Judgement:
    return Judgement("fail", detail)


def info(detail: str) -> Judgement:
    return Judgement("info", detail)


Judge = Callable[["Observation"], Judgement]


class Control(Protocol):
    """What a case's script may do while the case runs: wait for sessions, change a host."""

    async def sessions_reach(self, role: str, count: int) -> None: ...

    def set_behaviour(self, role: str, behaviour: object) -> None: ...


@dataclass(frozen=True, slots=True)
class Case:
    """One conformance case. Names in ``zone``, ``hosts`` and ``dns`` are relative to the
    case's own domain (``<id>.test``); ``@`` is the domain itself. ``$SELF`` in the zone
    stands for the sender's own address. ``recipients`` are written with ``{d}`` for the
    domain."""

    id: str
    title: str
    clause: str
    level: Level
    note: str  # the one-line lesson
    zone: str
    judge: Judge
    hosts: Mapping[str, object] = field(default_factory=dict)
    dns: Mapping[str, object] = field(default_factory=dict)
    recipients: tuple[str, ...] = ("alice@{d}",)
    messages: int = 1
    # "self": the sender's own address must be known ({self}, --self); "esmtp": hosts that
    # advertise chosen ESMTP extensions (the scenario format's `esmtp:`).
    needs: frozenset[str] = frozenset()
    # Changes the world while the case runs (set_behaviour after a session, say).
    script: Callable[[Control], Awaitable[None]] | None = None
    # For senders that keep a queue: the verdict is already known, end the case early.
    settled: Callable[[Observation], bool] | None = None
    # How many of the case's messages a command sender gets to send at once.
    parallel: int = 1
    # The message's size in bytes at least (its body is padded): for the SIZE case.
    size: int = 0

    @property
    def domain(self) -> str:
        return f"{self.id}.test"


@dataclass(frozen=True, slots=True)
class Run:
    """One message: its envelope, and what the sender said about it."""

    number: int
    sender: str
    recipients: tuple[str, ...]
    message_id: str
    status: RunStatus
    exit_code: int | None = None
    started: float = 0.0
    ended: float | None = None
    output: str = ""  # the tail of what the command printed, or the submission's reply
    command: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SeenSession:
    """One SMTP session as a host saw it (times in seconds since the case began)."""

    role: str  # the host's name relative to the case domain ("mx1", "@")
    address: str  # where it listened (a loopback address)
    client: str
    opened: float
    closed: float | None
    transcript: tuple[tuple[float, str, str], ...]
    outline: str
    zone_address: str = ""  # the address the zone gives it (192.0.2.11)

    @property
    def commands(self) -> tuple[str, ...]:
        return tuple(line for _, side, line in self.transcript if side == "C")

    def said(self, verb: str) -> bool:
        """The client sent this command (``MAIL``, ``RCPT``, ``DATA``, ``<message``)."""
        return any(c.upper().startswith(verb.upper()) for c in self.commands)

    def reply_to(self, verb: str) -> str | None:
        """The last line of the reply to the first such command (None: no reply came)."""
        waiting = False
        for _, side, line in self.transcript:
            if side == "C":
                if waiting:
                    return None
                waiting = line.upper().startswith(verb.upper())
            elif waiting and line[3:4] != "-":
                return line
        return None

    @property
    def sent_message(self) -> bool:
        return self.said("<message")


@dataclass(frozen=True, slots=True)
class Stored:
    """A message a host accepted."""

    t: float
    role: str
    recipients: tuple[str, ...]
    message_id: str


@dataclass(frozen=True, slots=True)
class DnsQuery:
    t: float
    name: str
    rdtype: str
    rcode: str
    answers: int
    transport: str


@dataclass(frozen=True, slots=True)
class Returned:
    """A delivery status notification that came back to the envelope sender (MTAs)."""

    t: float
    action: str  # failed, delayed, …
    status: str
    about: tuple[str, ...]  # the Message-IDs of ours it reports on


_ROLE_ORDER = re.compile(r"(\D*)(\d*)")


@dataclass(frozen=True, slots=True)
class Observation:
    """Everything a judge may look at, for one case."""

    case: Case
    mode: Mode
    time_scale: float
    deadline: float
    runs: tuple[Run, ...]
    sessions: tuple[SeenSession, ...]
    stored: tuple[Stored, ...]
    queries: tuple[DnsQuery, ...]
    returned: tuple[Returned, ...] = ()
    ended: float = 0.0
    self_address: str | None = None

    # --- names ---------------------------------------------------------------------------

    @property
    def domain(self) -> str:
        return self.case.domain

    def name(self, role: str) -> str:
        return self.domain if role == "@" else f"{role}.{self.domain}"

    # --- what the hosts saw ----------------------------------------------------------------

    def sessions_at(self, role: str) -> list[SeenSession]:
        return [s for s in self.sessions if s.role == role]

    def tried(self) -> list[str]:
        """The host of every session, in order (the bounce host left out)."""
        return [s.role for s in self.sessions if s.role != RETURNS]

    def first_tried(self) -> str | None:
        tried = self.tried()
        return tried[0] if tried else None

    def mail_sessions(self, role: str | None = None) -> list[SeenSession]:
        """Sessions that got as far as MAIL FROM (the bounce host left out)."""
        return [
            s
            for s in self.sessions
            if s.role != RETURNS and (role is None or s.role == role) and s.said("MAIL")
        ]

    def holders(self) -> list[str]:
        """The hosts that accepted one of the case's messages, in order, with repeats."""
        ours = {run.message_id for run in self.runs}
        return [m.role for m in self.stored if m.role != RETURNS and m.message_id in ours]

    def accepted_by(self, role: str) -> int:
        return self.holders().count(role)

    def asked(self, name: str, rdtype: str | None = None) -> list[DnsQuery]:
        """Queries for ``name`` (relative to the case domain; ``@`` the domain itself)."""
        full = self.name(name)
        return [
            q
            for q in self.queries
            if q.name.rstrip(".").lower() == full and (rdtype is None or q.rdtype == rdtype)
        ]

    # --- what the sender said ----------------------------------------------------------------

    def status(self, number: int = 1) -> RunStatus:
        return self.runs[number - 1].status if number <= len(self.runs) else "error"

    @property
    def keeps_queue(self) -> bool:
        return self.mode != "command"

    def still_queued(self, number: int = 1) -> bool:
        """Deferred: a one-shot command said 75; a queue kept it until the case ended."""
        status = self.status(number)
        return status == "deferred" or (status == "running" and self.keeps_queue)

    def bounced(self, number: int = 1) -> bool:
        return self.status(number) == "failed"

    def said_delivered(self, number: int = 1) -> bool:
        return self.status(number) == "delivered"

    # --- words for details ----------------------------------------------------------------------

    def told(self, number: int = 1) -> str:
        """What the sender made of message ``number``, in words."""
        run = self.runs[number - 1] if number <= len(self.runs) else None
        if run is None:
            return "nothing was sent"
        if self.mode == "smtp":
            return {
                "delivered": "the MTA delivered it",
                "failed": "the MTA bounced it (a DSN came back)",
                "deferred": "the MTA still held it when the case ended",
                "running": "the MTA still held it when the case ended",
                "error": f"the submission failed ({run.output.strip()[:120]})",
            }[run.status]
        code = run.exit_code
        return {
            "delivered": f"the sender exited {code} (delivered)",
            "deferred": f"the sender exited {code} (deferred)",
            "failed": f"the sender exited {code} (failed)",
            "running": (
                "the sender was still running when the case ended"
                + (" (its queue kept the message)" if self.keeps_queue else "")
            ),
            "error": f"the sender could not be started ({run.output.strip()[:120]})",
        }[run.status]

    def seen(self) -> str:
        """The sessions in one short phrase: ``mx1 (220, EHLO→250, …); mx2 (…)``."""
        if not self.sessions:
            return "no session reached any host"
        # Runs of the same host saying the same thing are told once, with their count.
        runs: list[list[object]] = []
        for session in self.sessions:
            said = f"{session.role} ({session.outline})"
            if runs and runs[-1][0] == said:
                runs[-1][1] = int(str(runs[-1][1])) + 1
            else:
                runs.append([said, 1])
        shown = [f"{said} x{count}" if count != 1 else str(said) for said, count in runs[:6]]
        more = len(runs) - len(shown)
        return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


def role_order(role: str) -> tuple[str, int]:
    """mx2 before mx10."""
    match = _ROLE_ORDER.fullmatch(role)
    if match is None or not match.group(2):
        return (role, -1)
    return (match.group(1), int(match.group(2)))


@dataclass(frozen=True, slots=True)
class CaseResult:
    """A case's verdict with its evidence, as the reports show it."""

    case: Case
    judgement: Judgement
    observation: Observation | None  # None: the case was not run (pending, or no {self})
    duration: float
    pending: str | None = None  # why it was not run

    @property
    def verdict(self) -> Verdict:
        return self.judgement.verdict


def scores(results: tuple[CaseResult, ...] | list[CaseResult]) -> dict[str, dict[str, int]]:
    """Per level: how many cases passed, failed, and were informational."""
    table: dict[str, dict[str, int]] = {}
    for level in ("MUST", "SHOULD", "profile"):
        chosen = [r for r in results if r.case.level == level]
        table[level] = {
            "pass": sum(r.verdict == "pass" for r in chosen),
            "fail": sum(r.verdict == "fail" for r in chosen),
            "info": sum(r.verdict == "info" for r in chosen),
            "total": len(chosen),
        }
    return table


def behaviour_text(mapping: Mapping[str, object]) -> dict[str, str]:
    """Host or DNS behaviours as short text, for the reports."""
    return {name: _short(value) for name, value in mapping.items()}


def _short(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_short(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return " then ".join(_short(v) for v in value)
    return str(value)
