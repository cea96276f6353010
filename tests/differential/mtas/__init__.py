"""The real MTAs, one driver each: configure with timers divided by a scale factor, start in a
namespace, submit a case's messages, stop, and read the log back into an
:class:`~tests.differential.model.Observed`."""

from __future__ import annotations

import abc
import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tests.differential.model import Observed
from tests.differential.scenario import Case, Message
from tests.differential.served import Served

__all__ = ["MTA", "Knob", "MtaUnavailable", "Submission", "compose", "run_command"]

ROOT = Path(__file__).resolve().parents[3]
CACHE = ROOT / ".cache"
COMMAND_TIMEOUT = 30.0
MESSAGE_ID = re.compile(r"<(\d+)\.([A-Za-z0-9_.-]+)@differential\.test>")


class MtaUnavailable(RuntimeError):
    """The MTA is not installed here (scripts/setup-differential installs it)."""


@dataclass(frozen=True)
class Knob:
    """One timer: the profile field it stands for, the MTA's own setting, the MTA's default,
    what the tests configure (real seconds) and so the unscaled equivalent run mode gets."""

    field: str  # the sender-profile field (what goes under `sender:` in the run copy)
    setting: str  # the MTA's parameter
    default: str  # the MTA's default, as its documentation writes it
    real: float  # what the MTA gets here, in seconds

    def run_value(self, scale: float) -> float:
        return self.real * scale


@dataclass(frozen=True)
class Submission:
    """What ``mxsandbox conform --smtp`` needs of an MTA on top of the differential set-up
    (tests/conform/mtas.py): it takes mail over SMTP at ``listen`` from loopback, for any
    domain; it counts ``own_address`` as its own (the self-MX cases; Haraka has no such
    setting); and with ``give_up_scale`` its give-up time (queue lifetime, last retry rule,
    number of tries) is its default divided by that factor instead of S, with retries as often
    as the MTA allows in between, for the one case that waits days."""

    listen: tuple[str, int] = ("127.0.0.1", 2525)
    own_address: str | None = "127.0.0.99"
    give_up_scale: float | None = None


def compose(case: Case, message: Message) -> bytes:
    """The message text: our Message-ID tells the log's queue IDs apart."""
    return (
        f"From: <{message.sender}>\n"
        f"To: {', '.join(f'<{r}>' for r in message.recipients)}\n"
        f"Subject: {case.name} message {message.number}\n"
        f"Message-ID: <{message.number}.{case.name}@differential.test>\n"
        "Date: Thu, 01 Jan 2026 00:00:00 +0000\n"
        "\n"
        f"Differential test {case.name}, message {message.number}.\n"
    ).encode()


async def run_command(
    *command: str, stdin: bytes | None = None, timeout: float = COMMAND_TIMEOUT
) -> str:
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(timeout):
        out, _ = await process.communicate(stdin)
    text = out.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}:\n{text}")
    return text


class MTA(abc.ABC):
    """One real MTA for one case. Subclasses fill in the class attributes and the steps."""

    name: ClassVar[str]
    profile: ClassVar[str]  # the mxsandbox profile that claims to behave like it
    scale: ClassVar[float]  # S: the MTA's timers are its defaults divided by S
    tolerance: ClassVar[float]  # attempt times agree within this many real seconds
    # "absolute": retries fall on a grid (queue scans), compare start times; "gaps": retries
    # are timed from the last failure, compare the first start and the gaps between starts.
    times_mode: ClassVar[str] = "absolute"
    knobs: ClassVar[tuple[Knob, ...]]
    # The log format both sides write, when the MTA's log is compared line by line with run
    # mode's (``mxsandbox run --log FORMAT``); None: not compared.
    log_format: ClassVar[str | None] = None
    # Profile fields that the MTA's configuration cannot follow (documented in FINDINGS.md).
    version: str = ""

    def __init__(self, case: Case, home: Path, submission: Submission | None = None) -> None:
        self.case = case
        self.home = home
        self.submission = submission  # None: the differential set-up (no listener)
        self.namespace = ""
        self.extra: dict[str, Any] = {}

    @classmethod
    @abc.abstractmethod
    def unavailable(cls) -> str | None:
        """Why this MTA cannot run here, or None."""

    def setting(self, field: str) -> float:
        """What the MTA gets for a profile field in this case: the knob's value, or the case's
        own ``sender:`` override divided by S."""
        sender = self.case.data.get("sender") or {}
        if field in sender:
            from tests.differential.scenario import parse_duration

            return parse_duration(sender[field]) / self.scale
        for knob in self.knobs:
            if knob.field == field:
                return knob.real
        raise KeyError(field)

    def run_overrides(self) -> dict[str, Any]:
        """The run copy's ``sender:``: every knob's unscaled equivalent."""
        overrides: dict[str, Any] = {}
        for knob in self.knobs:
            overrides[knob.field] = _duration_text(self.setting(knob.field) * self.scale)
        return overrides

    @property
    @abc.abstractmethod
    def log_path(self) -> Path:
        """The file the harness tails."""

    @abc.abstractmethod
    async def start(self, namespace: str) -> None:
        """Configure and start the MTA in the namespace (before serve starts)."""

    async def served(self, served: Served) -> None:
        """``serve`` is ready (after ``start``, before any submission): the MTA may take what
        it needs from it (Postfix: the CA file it prints, as its smtp_tls_CAfile)."""
        return None

    def first_arrival(self, lines: list[tuple[float, str]], served: Served) -> float:
        """The earliest serve-clock time the first messages may be submitted (default: at
        once). Postfix wants a few seconds after its queue manager's start: see there."""
        return 0.0

    async def queue_runner(self, now: Callable[[], float]) -> None:
        """Run the MTA's periodic queue runs on the serve clock, if the harness does that
        (Exim); the default is the MTA's own scheduling."""
        return None

    @abc.abstractmethod
    async def submit(self, message: Message) -> None:
        """Hand one message to the MTA."""

    async def submit_many(self, messages: list[Message]) -> None:
        """Hand several messages to the MTA at once."""
        await asyncio.gather(*(self.submit(m) for m in messages))

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop the MTA (called once, even after a failed start)."""

    @abc.abstractmethod
    def observe(self, lines: list[tuple[float, str]], served: Served) -> Observed:
        """The log so far, read into per (message, recipient) records (serve-clock times)."""

    @abc.abstractmethod
    def settled(self, observed: Observed) -> bool:
        """Every message and every DSN it caused has reached a final state."""


def _duration_text(seconds: float) -> str:
    if abs(seconds - round(seconds)) < 1e-6:
        return f"{round(seconds)}s"
    return f"{seconds:.3f}s"
