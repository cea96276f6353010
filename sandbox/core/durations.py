"""Durations as people write them in scenario files: ``90``, ``30s``, ``5m``, ``2h``, ``5d``,
and compounds such as ``1h30m`` (the form ``format_duration`` prints)."""

from __future__ import annotations

import re

__all__ = ["format_duration", "parse_duration"]

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
