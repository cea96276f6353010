"""Postfix's own log lines against ``mxsandbox run --log postfix``, line by line.

Both sides are Postfix-format logs of the same case: the real Postfix's ``maillog_file``, and
what run mode's ``--log postfix`` printed for the run copy. Only pids, queue IDs and
timestamps may differ; so before comparing, each line is **normalised**:

- the timestamp, the host name and the pid go (the process name stays: ``smtp``, ``qmgr``…);
- a queue ID becomes the message it names (``M1``; a bounce for message 1 is ``B1``);
- what differs between the two worlds by construction is masked: the addresses in brackets
  (serve's loopback addresses against the zone's), ``size=`` and ``message-id=`` (each side
  composes its own message), the hosts' own queue IDs (``queued as …``), and what a TLS
  session negotiated past its protocol version (``with cipher …``: each side's TLS library);
- where the case's equal-preference hosts are shuffled (``unordered_hosts`` in ``options.py``),
  the host names before ``[addr]`` too: which host came first is chance on both sides;
- ``delay=`` and ``delays=a/b/c/d`` are compared as numbers: the real ones (real seconds)
  times the scale factor against run mode's, within ``DELAY_TOLERANCE`` real seconds each.

Lines are then grouped **per message**, in their order: the lines with its queue ID, and the
lines without one (a refused connect, a warning) that its smtp process wrote before its
status line. The messages of a case are compared one by one, or, where which message gets
which fate is chance (``options.py``), as a multiset of line sequences. Lines that are no
delivery's (the daemons starting, configuration warnings) are left out.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["DELAY_TOLERANCE", "LogComparison", "compare_logs", "normalise", "queue_ids"]

LINE = re.compile(
    r"^\w{3} +\d+ \d\d:\d\d:\d\d \S+ postfix/(?P<proc>[\w/-]+)\[(?P<pid>\d+)\]: (?P<text>.*)$"
)
QID = re.compile(r"^(?P<qid>[0-9A-F]{6,}): ")
NOTIFICATION = re.compile(
    r"^(?P<qid>[0-9A-F]+): sender (?:non-delivery|delay) notification: (?P<dsn>[0-9A-F]+)$"
)
MESSAGE_ID = re.compile(r"message-id=<(?P<id>[^>]*)>")
DELAYS = re.compile(
    r"delay=(?P<delay>[\d.]+), delays=(?P<a>[\d.]+)/(?P<b>[\d.]+)/(?P<c>[\d.]+)/(?P<d>[\d.]+)"
)
MASKS = (
    (re.compile(r"\[(?:\d{1,3}\.){3}\d{1,3}\]"), "[addr]"),
    (re.compile(r"\bsize=\d+"), "size=*"),
    (re.compile(r"message-id=<[^>]*>"), "message-id=<*>"),
    (re.compile(r"queued as [0-9A-Za-z]+"), "queued as *"),
    # What each side's TLS library negotiated past the protocol version (cipher, key
    # exchange, signature): OpenSSL in Postfix, Python's ssl in run mode's sender.
    (re.compile(r"(TLS connection established to \S+: TLSv[\d.]+)(?: with cipher .*)?$"), r"\1 …"),
)
PROCESSES = ("pickup", "cleanup", "qmgr", "smtp", "bounce", "error")
# Real seconds either side for each delay figure: Postfix writes two significant digits and
# real processing adds hundredths that the scale factor multiplies.
DELAY_TOLERANCE = 1.5


@dataclass
class Line:
    text: str  # normalised
    delays: tuple[float, ...] = ()  # delay, a, b, c, d (seconds as logged)
    raw: str = ""


@dataclass
class LogComparison:
    agree: bool
    where: str = ""
    real: str = ""
    run: str = ""
    messages: int = 0
    lines: int = 0
    differ: list[str] = field(default_factory=list)


def queue_ids(lines: list[str], messages: int) -> dict[str, int]:
    """The queue ID of each of the case's messages (1 … ``messages``), from its cleanup line:
    both sides' Message-IDs begin with the message's number (``<3.case@…>``)."""
    found: dict[str, int] = {}
    for match in filter(None, map(LINE.match, lines)):
        if match["proc"] != "cleanup":
            continue
        if (qid := QID.match(match["text"])) and (ident := MESSAGE_ID.search(match["text"])):
            number = ident["id"].split(".", 1)[0]
            if number.isdigit() and 1 <= int(number) <= messages:
                found.setdefault(qid["qid"], int(number))
    return found


HOST_NAME = re.compile(r"[\w.-]+\[addr\]")


def normalise(
    lines: list[str], message_of: dict[str, int], *, mask_hosts: bool = False
) -> dict[str, list[Line]]:
    """Per message (``M1``, ``B1`` for its bounce…), its delivery lines, normalised.
    ``message_of`` names the queue IDs of the case's messages; a bounce's queue ID is learned
    from its ``sender non-delivery notification`` line."""
    names = {qid: f"M{n}" for qid, n in message_of.items()}
    parsed = [m for m in (LINE.match(line) for line in lines) if m is not None]
    for match in parsed:
        if found := NOTIFICATION.match(match["text"]):
            origin = names.get(found["qid"])
            if origin is not None:
                names[found["dsn"]] = "B" + origin[1:]
    grouped: dict[str, list[Line]] = {}
    waiting: dict[str, list[Line]] = {}  # smtp pid -> its lines without a queue ID
    for match in parsed:
        proc, text = match["proc"], match["text"]
        if proc not in PROCESSES:
            continue
        qid_match = QID.match(text)
        if qid_match is None:
            if proc == "smtp":  # a connect failure or a warning, before its delivery's lines
                line = _line(proc, text, names, match[0], mask_hosts)
                waiting.setdefault(match["pid"], []).append(line)
            continue
        name = names.get(qid_match["qid"])
        if name is None:
            continue  # another case's, or a message the harness did not submit
        held = waiting.pop(match["pid"], []) if proc == "smtp" else []
        line = _line(proc, text, names, match[0], mask_hosts)
        grouped.setdefault(name, []).extend([*held, line])
    return grouped


def _line(proc: str, text: str, names: dict[str, str], raw: str, mask_hosts: bool) -> Line:
    for qid, name in names.items():
        text = text.replace(qid, name)
    delays: tuple[float, ...] = ()
    if found := DELAYS.search(text):
        delays = tuple(float(found[k]) for k in ("delay", "a", "b", "c", "d"))
        text = DELAYS.sub("delay=*, delays=*", text)
    for pattern, mask in MASKS:
        text = pattern.sub(mask, text)
    if mask_hosts:
        text = HOST_NAME.sub("*[addr]", text)
    return Line(f"{proc}: {text}", delays, raw)


def _same(real: Line, run: Line, scale: float) -> bool:
    if real.text != run.text or len(real.delays) != len(run.delays):
        return False
    return all(
        abs(a * scale - b) <= DELAY_TOLERANCE * scale
        for a, b in zip(real.delays, run.delays, strict=True)
    )


def _sequences_agree(real: list[Line], run: list[Line], scale: float) -> int | None:
    """The index of the first line that differs, or None when the two agree."""
    for index in range(max(len(real), len(run))):
        if index >= len(real) or index >= len(run) or not _same(real[index], run[index], scale):
            return index
    return None


def compare_logs(
    real_lines: list[str],
    run_lines: list[str],
    messages: int,
    scale: float,
    *,
    unordered: bool = False,
    mask_hosts: bool = False,
) -> LogComparison:
    """Do the two logs say the same, message by message?"""
    real = normalise(real_lines, queue_ids(real_lines, messages), mask_hosts=mask_hosts)
    run = normalise(run_lines, queue_ids(run_lines, messages), mask_hosts=mask_hosts)
    total = sum(len(v) for v in real.values())
    if unordered:
        return _as_multisets(real, run, total)
    for name in sorted(set(real) | set(run), key=_order):
        index = _sequences_agree(real.get(name, []), run.get(name, []), scale)
        if index is not None:
            mine, theirs = real.get(name, []), run.get(name, [])
            return LogComparison(
                False,
                where=f"{name} line {index + 1}",
                real=_shown(mine, index),
                run=_shown(theirs, index),
                messages=len(real),
                lines=total,
            )
    return LogComparison(True, messages=len(real), lines=total)


def _as_multisets(
    real: dict[str, list[Line]], run: dict[str, list[Line]], total: int
) -> LogComparison:
    """Where which message met which fate is chance: the same sequences of lines, in any
    assignment to messages (delays not compared: they belong to whichever message)."""

    def bag(side: dict[str, list[Line]]) -> Counter[tuple[str, ...]]:
        return Counter((name[0], *(line.text for line in lines)) for name, lines in side.items())

    real_bag, run_bag = bag(real), bag(run)
    if real_bag == run_bag:
        return LogComparison(True, messages=len(real), lines=total)
    missing = real_bag - run_bag
    extra = run_bag - real_bag
    first_real = next(iter(missing), ())
    first_run = next(iter(extra), ())
    index = next(
        (i for i, (a, b) in enumerate(zip(first_real, first_run, strict=False)) if a != b),
        min(len(first_real), len(first_run)),
    )
    return LogComparison(
        False,
        where=f"{sum(missing.values())} of {len(real)} message(s)",
        real=first_real[index] if index < len(first_real) else "(no line)",
        run=first_run[index] if index < len(first_run) else "(no line)",
        messages=len(real),
        lines=total,
    )


def _order(name: str) -> tuple[int, str]:
    return int(name[1:]), name[0]


def _shown(lines: list[Line], index: int) -> str:
    if index >= len(lines):
        return "(no line)"
    line = lines[index]
    if line.delays:
        figures = ", ".join(f"{d:g}" for d in line.delays)
        return f"{line.text} [delay, delays: {figures}]"
    return line.text
