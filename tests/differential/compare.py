"""Field by field, per (message, recipient): does ``mxsandbox run --profile`` do what the real
MTA did?

========  ================================================================================
field     compared
========  ================================================================================
status    delivered / bounced / deferred (still queued when the case ended)
dsn       the last DSN status code (Exim logs none for a deferral: not compared then)
relay     the host that took the message or gave the final 5xx (final outcomes only)
attempts  how many attempts tried something (DNS, a connection); skipped ones not counted
hosts     per attempt, the hosts tried in order (connections refused or timed out included)
times     per attempt, its start: the same count, each within the MTA's tolerance (for an MTA
          whose retries are timed from the last failure, Haraka, the first start and then the
          gaps between starts: a whole-second retry timer would otherwise add up)
skipped   attempts the MTA skipped without trying (Postfix "delivery temporarily
          suspended", Exim "retry time not reached")
returned  whether a DSN (bounce) went back to the envelope sender
tls       for a delivered one: whether the session that delivered it was TLS or plain text
          (Postfix's "… TLS connection established" lines; not shown by Exim's and Haraka's
          logs as the harness reads them: n/a)
sessions  per host, the SMTP sessions it saw (serve's record; run mode's host sessions)
log       the MTA's own log against run mode's log in the same format, line by line per
          message (Postfix and ``--log postfix``: :mod:`tests.differential.postfix_lines`)
========  ================================================================================
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tests.differential.model import UNSEEN, Delivery, Observed
from tests.differential.options import options_for
from tests.differential.postfix_lines import compare_logs

if TYPE_CHECKING:
    from tests.differential.mtas import MTA
    from tests.differential.scenario import Case

__all__ = ["FIELDS", "Comparison", "FieldResult", "compare"]

FIELDS = (
    "status",
    "dsn",
    "relay",
    "attempts",
    "hosts",
    "times",
    "skipped",
    "returned",
    "tls",
    "sessions",
    "log",
)


@dataclass
class FieldResult:
    field: str
    agree: bool | None  # None: not comparable (the real MTA does not show it)
    real: Any = None
    run: Any = None
    where: str = ""  # the first (message, recipient) that disagrees
    differ: int = 0  # how many (message, recipient) disagree
    of: int = 0  # out of how many

    def cell(self) -> str:
        if self.agree is None:
            return "n/a"
        if self.agree:
            return "agree"
        many = f" ({self.differ}/{self.of})" if self.of > 1 else ""
        where = f" {self.where}:" if self.where else ""
        return f"DIFFER{many}{where} real {_short(self.real)} | run {_short(self.run)}"


@dataclass
class Comparison:
    fields: dict[str, FieldResult] = field(default_factory=dict)

    def disagreeing(self) -> list[str]:
        return [name for name, result in self.fields.items() if result.agree is False]

    def to_json(self) -> dict[str, Any]:
        return {name: asdict(result) for name, result in self.fields.items()}


def _short(value: Any, limit: int = 70) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _values(name: str, delivery: Delivery, unordered: bool, gaps: bool = False) -> Any:
    if name == "status":
        return delivery.status
    if name == "dsn":
        return delivery.dsn
    if name == "relay":
        return delivery.relay if delivery.status != "deferred" else None
    if name == "attempts":
        return len(delivery.tried)
    if name == "hosts":
        hosts = [a.hosts for a in delivery.tried]
        return [sorted(h) for h in hosts] if unordered else hosts
    if name == "times":
        times = [a.t for a in delivery.tried]
        if gaps:
            times = times[:1] + [b - a for a, b in itertools.pairwise(times)]
        return [round(t, 2) for t in times]
    if name == "skipped":
        return len(delivery.skipped)
    if name == "returned":
        return delivery.returned
    if name == "tls":
        return delivery.tls if delivery.status == "delivered" else None
    raise KeyError(name)


def _same(name: str, real: Any, run: Any, tolerance: float) -> bool | None:
    if real == UNSEEN or (isinstance(real, list) and UNSEEN in real):
        return None
    if name == "times":
        return len(real) == len(run) and all(
            abs(a - b) <= tolerance for a, b in zip(real, run, strict=True)
        )
    return bool(real == run)


def compare(mta: MTA, case: Case, real: Observed, run: Observed) -> Comparison:
    options = options_for(mta.name, case.name)
    unordered = bool(options.get("unordered_hosts"))
    tolerance = float(options.get("tolerance", mta.tolerance))
    gaps = mta.times_mode == "gaps"
    keys = sorted(set(real.deliveries) | set(run.deliveries))
    comparison = Comparison()
    for name in FIELDS:
        if name == "sessions":
            comparison.fields[name] = _sessions(real, run, options)
            continue
        if name == "log":
            comparison.fields[name] = _log(real, run, len(case.messages), mta.scale, options)
            continue
        if name in options.get("totals", ()):
            comparison.fields[name] = _totals(name, keys, real, run, unordered)
            continue
        result = FieldResult(name, True, of=len(keys))
        comparable = False
        for key in keys:
            real_value = _values(name, real.delivery(*key), unordered, gaps)
            run_value = _values(name, run.delivery(*key), unordered, gaps)
            same = _same(name, real_value, run_value, tolerance)
            if same is None:
                continue
            comparable = True
            if result.differ == 0 and (same is False or result.real is None):
                result.real, result.run = real_value, run_value
            if same is False:
                if result.differ == 0:
                    result.where = f"m{key[0]} {key[1]}" if len(keys) > 1 else ""
                    result.real, result.run = real_value, run_value
                result.differ += 1
                result.agree = False
        if not comparable:
            result.agree = None
        comparison.fields[name] = result
    return comparison


def _totals(
    name: str, keys: list[tuple[int, str]], real: Observed, run: Observed, unordered: bool
) -> FieldResult:
    """A field over all the messages together, where which message got which is chance (or
    the MTA's internal ordering): a count, or the set of values."""

    def total(side: Observed) -> Any:
        values = [_values(name, side.delivery(*key), unordered) for key in keys]
        if name in ("attempts", "skipped"):
            return sum(values)
        if name == "hosts":  # how many hosts each attempt tried, over all attempts
            return dict(sorted(Counter(len(h) for v in values for h in v).items()))
        if name == "times":  # when the messages were settled: first and last
            finals = [side.delivery(*key).at for key in keys]
            done = [t for t in finals if t is not None]
            return [round(min(done), 2), round(max(done), 2)] if done else []
        return sorted({str(v) for v in values})

    real_total, run_total = total(real), total(run)
    if name == "times":
        same = _first_and_last_agree(real_total, run_total, len(keys))
    else:
        same = real_total == run_total
    return FieldResult(name, same, real_total, run_total, where="all messages", of=1)


# Real seconds a real MTA may spend on each message of a batch it settles one after the other
# (Exim's queue runner forks a delivery per message; run mode spends no time on any): the
# last of the batch may come this much later per message, on a loaded machine too.
PER_MESSAGE = 0.15


def _first_and_last_agree(real: list[float], run: list[float], messages: int) -> bool:
    """When the messages were settled, first and last: the first within a second (real), the
    last within a second plus the real MTA's processing time for the messages before it."""
    if len(real) != len(run):
        return False
    if not real:
        return True
    (real_first, real_last), (run_first, run_last) = real, run
    late = real_last - run_last
    return abs(real_first - run_first) <= 1.0 and -1.0 <= late <= 1.0 + PER_MESSAGE * messages


def _sessions(real: Observed, run: Observed, options: dict[str, Any]) -> FieldResult:
    hosts = sorted(h for h in set(real.sessions) | set(run.sessions))
    real_counts = {h: real.sessions.get(h, 0) for h in hosts if real.sessions.get(h, 0)}
    run_counts = {h: run.sessions.get(h, 0) for h in hosts if run.sessions.get(h, 0)}
    if options.get("sessions") == "total":
        same = sum(real_counts.values()) == sum(run_counts.values())
        return FieldResult(
            "sessions", same, sum(real_counts.values()), sum(run_counts.values()), of=1
        )
    return FieldResult("sessions", real_counts == run_counts, real_counts, run_counts, of=1)


def _log(
    real: Observed, run: Observed, messages: int, scale: float, options: dict[str, Any]
) -> FieldResult:
    """Line by line, per message: the real MTA's log against run mode's (n/a when the MTA's
    log is not in a format run mode writes)."""
    if not real.log or not run.log:
        return FieldResult("log", None)
    found = compare_logs(
        real.log,
        run.log,
        messages,
        scale,
        unordered=options.get("log") == "unordered",
        mask_hosts=bool(options.get("unordered_hosts")),
    )
    return FieldResult(
        "log",
        found.agree,
        found.real,
        found.run,
        where=found.where,
        differ=0 if found.agree else 1,
        of=found.messages,
    )
