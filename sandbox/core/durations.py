"""Durations as people write them in scenario files: ``90``, ``30s``, ``5m``, ``2h``, ``5d``,
and compounds such as ``1h30m`` (the form ``format_duration`` prints); and a moment of a run
as the story shows it, a clock from the start (``clock_text``: ``2:30:00``)."""

from __future__ import annotations

import re

__all__ = ["clock_text", "format_duration", "parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PLAIN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_COMPOUND = re.compile(r"^(?:\d+(?:\.\d+)?[smhd])+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as ``"2h"``; ``ValueError`` says what is accepted."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r} is negative")
        return float(value)
    if isinstance(value, str):
        match = _PLAIN.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2) or "s"]
        if _COMPOUND.match(value.strip()):
            return sum(float(n) * _UNITS[u] for n, u in _PART.findall(value))
    raise ValueError(f"{value!r} is not a duration")


def format_duration(seconds: float) -> str:
    """The shortest exact spelling: ``300`` → ``5m``, ``5400`` → ``1h30m``, ``0.5`` → ``0.5s``."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds != int(seconds):
        return f"{seconds:g}s"
    rest = int(seconds)
    if rest == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def clock_text(t: float) -> str:
    """Virtual time as a clock from the start of the run: ``0:05:00``, ``2d 3:00:00``."""
    whole = int(t)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{hours}:{minutes:02d}:{seconds:02d}"
    if t != whole:
        text += f".{round((t - whole) * 1000):03d}"
    return f"{days}d {text}" if days else text
