"""The terminal: colour and drawn tables when a person is watching, plain text otherwise.

The narrative and the summary are built as plain text first: that text is what a pipe, a
file, a test or a reader with ``NO_COLOR`` gets, byte for byte. On a terminal the same text
is then painted line by line: the story's vocabulary is small and regular (``… refused``,
``S: 451``, ``⇒ defer``, ``✔ delivered``), so a few patterns colour it without the
narrative having to know about colour at all. Tables are the one exception: drawn with box
characters, they are laid out differently, so ``table()`` takes the style.

``Progress`` is a sink for the run's events. A long run (over about a second of wall time)
shows on stderr how far virtual time has come and how many messages have settled, on one
line that it rewrites, and clears it at the end.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

from sandbox.events import Event, RecipientFinal

__all__ = ["PLAIN", "RICH", "Progress", "Style", "is_terminal", "style_for", "table"]

_RESET = "\x1b[0m"
_CODES = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
}
# The widest a table may grow before its middle rows are elided.
MAX_TABLE_ROWS = 60


@dataclass(frozen=True, slots=True)
class Style:
    """How output is dressed: ``rich`` means colours and drawn tables (a terminal)."""

    rich: bool = False

    def paint(self, text: str, *styles: str) -> str:
        if not self.rich or not text:
            return text
        codes = ";".join(_CODES[s] for s in styles)
        return f"\x1b[{codes}m{text}{_RESET}"

    def text(self, plain: str) -> str:
        """The narrative's plain text, painted line by line when rich."""
        if not self.rich:
            return plain
        return "\n".join(_paint_line(self, line) for line in plain.split("\n"))


PLAIN = Style(False)
RICH = Style(True)


def is_terminal(stream: IO[str], environ: Mapping[str, str] | None = None) -> bool:
    """A terminal that understands escape sequences (TERM=dumb does not)."""
    env = os.environ if environ is None else environ
    try:
        is_tty = stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream: plain, never a crash
        is_tty = False
    return is_tty and env.get("TERM", "") != "dumb"


def style_for(stream: IO[str], environ: Mapping[str, str] | None = None) -> Style:
    """Rich on a terminal, unless NO_COLOR is set (https://no-color.org) or TERM is dumb."""
    env = os.environ if environ is None else environ
    return RICH if is_terminal(stream, env) and not env.get("NO_COLOR") else PLAIN


# --- tables ------------------------------------------------------------------------------------


def table(rows: Sequence[Sequence[str]], style: Style = PLAIN) -> list[str]:
    """Rows (the first is the header) as aligned text; drawn with box characters when rich."""
    shown = [tuple(r) for r in rows]
    if len(shown) > MAX_TABLE_ROWS:
        shown = [*shown[:51], ("…",) * len(shown[0]), *shown[-5:]]
    widths = [max(len(r[i]) for r in shown) for i in range(len(shown[0]))]
    if not style.rich:
        return [
            "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in shown
        ]

    def rule(left: str, middle: str, right: str) -> str:
        return style.paint(left + middle.join("─" * (w + 2) for w in widths) + right, "dim")

    bar = style.paint("│", "dim")

    def line(row: tuple[str, ...], header: bool = False) -> str:
        cells = [
            style.paint(cell.ljust(w), "bold") if header else _paint_cell(style, cell, w)
            for cell, w in zip(row, widths, strict=True)
        ]
        return f"  {bar} " + f" {bar} ".join(cells) + f" {bar}"

    return [
        "  " + rule("┌", "┬", "┐"),
        line(shown[0], header=True),
        "  " + rule("├", "┼", "┤"),
        *(line(row) for row in shown[1:]),
        "  " + rule("└", "┴", "┘"),
    ]


_CELL_STYLES = {
    "delivered": ("green",),
    "bounced": ("red",),
    "deferred": ("yellow",),
    "error": ("red", "bold"),
    "warning": ("yellow",),
    "info": ("cyan",),
}


def _paint_cell(style: Style, cell: str, width: int) -> str:
    styles = _CELL_STYLES.get(cell)
    padded = cell.ljust(width)
    return style.paint(cell, *styles) + padded[len(cell) :] if styles else padded


# --- painting the story -----------------------------------------------------------------------

_Paint = Callable[[Style, re.Match[str]], str]


@dataclass(frozen=True, slots=True)
class _Rule:
    pattern: re.Pattern[str]
    paint: _Paint
    final: bool = False  # the line is done: no later rule looks at it


def _wrap(*styles: str) -> _Paint:
    return lambda style, m: style.paint(m.group(0), *styles)


def _reply(style: Style, match: re.Match[str]) -> str:
    code = match.group(1)
    colour = {"2": "green", "3": "green", "4": "yellow", "5": "red"}[code[0]]
    return "S: " + style.paint(code, colour, "bold")


# In order; each paints the first match on a line, unless that text is painted already.
_RULES: tuple[_Rule, ...] = (
    _Rule(re.compile(r"✔ .*|All expectations hold\."), _wrap("green", "bold"), final=True),
    _Rule(re.compile(r"✘ .*|\d+ of \d+ expectations failed\."), _wrap("red", "bold"), final=True),
    _Rule(re.compile(r"^… still deferred.*"), _wrap("yellow", "bold"), final=True),
    _Rule(re.compile(r"^warning: .*"), _wrap("yellow"), final=True),
    _Rule(re.compile(r"(?<=:25 )… connected$"), _wrap("green"), final=True),
    _Rule(re.compile(r"(?<=:25 )… .*"), _wrap("red"), final=True),
    _Rule(re.compile(r"⇒ defer\b.*|^\s*try again at .*"), _wrap("yellow"), final=True),
    _Rule(re.compile(r"⇒ bounce\b.*"), _wrap("red"), final=True),
    _Rule(re.compile(r"⇒ .*"), _wrap("cyan"), final=True),
    _Rule(re.compile(r"^(order|route): .*"), _wrap("bold"), final=True),
    _Rule(re.compile(r"S: ([2-5]\d\d)"), _reply),
    _Rule(re.compile(r"^C: \S+(?: \S+)?"), _wrap("cyan")),
)
_HEADINGS = ("Summary", "Expectations", "Zone check", "Balancing")
_CLOCK = re.compile(r"^  (\s*(?:\d+d )?\d+:\d\d:\d\d(?:\.\d+)?)  ")
_MESSAGE = re.compile(r"^Message \d+:")


def _paint_line(style: Style, line: str) -> str:
    if line and set(line) <= {"=", "-"}:
        return style.paint(line, "dim")
    if line.startswith(_HEADINGS) or _MESSAGE.match(line):
        return style.paint(line, "bold")
    if "│" in line:  # a drawn table's row: painted cell by cell already
        return line
    prefix = ""
    clock = _CLOCK.match(line)
    if clock:
        prefix = "  " + style.paint(clock.group(1), "dim") + "  "
        line = line[clock.end() :]
    for rule in _RULES:
        match = rule.pattern.search(line)
        if match is None or "\x1b" in match.group(0):
            continue
        line = line[: match.start()] + rule.paint(style, match) + line[match.end() :]
        if rule.final:
            break
    return prefix + line


# --- progress ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Progress:
    """A sink that shows a long run's progress on one rewritten line of ``stream``.

    Nothing is written during the first ``after`` seconds of wall time (a short run stays
    silent), and then at most ``every`` seconds apart, so the run is not slowed by it.
    """

    stream: IO[str]
    total: int  # recipients to settle
    show_time: Callable[[float], str]  # virtual seconds -> the narrative's clock
    after: float = 1.0
    every: float = 0.1
    wall: Callable[[], float] = time.monotonic
    _started: float = field(init=False, default=0.0)
    _last: float = field(init=False, default=float("-inf"))
    _settled: int = field(init=False, default=0)
    _shown: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self._started = self.wall()

    def __call__(self, event: Event) -> None:
        if isinstance(event, RecipientFinal):
            self._settled += 1
        now = self.wall()
        if now - self._started < self.after or now - self._last < self.every:
            return
        self._last = now
        self._shown = True
        self.stream.write(
            f"\r\x1b[K  virtual time {self.show_time(event.t)} · "
            f"{self._settled}/{self.total} settled"
        )
        self.stream.flush()

    def close(self) -> None:
        """Clear the line, so that what follows starts clean."""
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
