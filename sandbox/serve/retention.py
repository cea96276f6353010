"""How much a served sandbox keeps: ``mxsandbox serve --retain …`` and ``ServedScenario(retain=…)``.

A run ends; a served sandbox runs for as long as someone lets it, so what it remembers is
bounded, and the counts of everything it saw stay exact:

==========  =========  ========================================================================
key         default    what is kept
==========  =========  ========================================================================
events      10000      the last N events (``sb.events``, the control API; every event is
                       still printed or passed to ``on_event`` as it happens)
sessions    1000       per host, the last N sessions with their transcripts
messages    1000       per host, the last N accepted messages
bytes       64MiB      the message content kept, all hosts together: past it the oldest
                       messages are dropped (the newest always stays)
==========  =========  ========================================================================

Written ``events=10000,sessions=1000,messages=1000,bytes=64MiB``: any of the keys, in any
order (the others keep their defaults); a count, a size with ``B``, ``KiB``, ``MiB``, ``GiB``
(or ``KB``, ``MB``, ``GB``, powers of 1000), or ``all`` for no limit. ``all`` alone keeps
everything, as a run does.

Whatever the retention, each session's transcript keeps its first 500 and last 100 lines (cut
at 1000 characters each), with one line that says how many it left out between
(``sandbox.hosts.limits``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from sandbox.hosts.limits import UNLIMITED, HostLimits

__all__ = ["DEFAULT_RETENTION", "KEEP_ALL", "Retention", "RetentionSpec"]

_UNITS = {
    "": 1,
    "b": 1,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
}
_SIZE = re.compile(r"(\d+)\s*([a-z]*)")


@dataclass(frozen=True, slots=True)
class Retention:
    """What a served sandbox keeps; ``None``: everything (see the module docstring)."""

    events: int | None = 10_000
    sessions: int | None = 1_000
    messages: int | None = 1_000
    bytes: int | None = 64 << 20

    @classmethod
    def parse(cls, text: str) -> Retention:
        """``events=10000,bytes=64MiB`` (the keys not named keep their defaults), or ``all``.
        Raises ValueError with a sentence that says what is wrong."""
        text = text.strip()
        if text.lower() == "all":
            return KEEP_ALL
        values: dict[str, int | None] = {}
        keys = [f.name for f in fields(cls)]
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, equals, value = (p.strip() for p in item.partition("="))
            if not equals or key not in keys:
                raise ValueError(
                    f"{item!r} is not KEY=VALUE with a key among {', '.join(keys)} "
                    "(e.g. events=10000,sessions=1000,messages=1000,bytes=64MiB)"
                )
            values[key] = _amount(key, value)
        return replace(DEFAULT_RETENTION, **values)

    @classmethod
    def of(cls, spec: RetentionSpec) -> Retention:
        """A Retention from what a caller may write: a Retention, its text, a mapping of the
        same keys (counts, sizes or None), or None (the defaults)."""
        if spec is None:
            return DEFAULT_RETENTION
        if isinstance(spec, Retention):
            return spec
        if isinstance(spec, str):
            return cls.parse(spec)
        text = ",".join(f"{k}={'all' if v is None else v}" for k, v in spec.items())
        return cls.parse(text)

    def __str__(self) -> str:
        return ",".join(f"{f.name}={_text(f.name, getattr(self, f.name))}" for f in fields(self))

    def host_limits(self) -> HostLimits:
        """The bounds of each served host under this retention."""
        return HostLimits.serving(
            sessions=_or_unlimited(self.sessions),
            messages=_or_unlimited(self.messages),
            content_bytes=_or_unlimited(self.bytes),
        )


RetentionSpec = Retention | str | Mapping[str, int | str | None] | None

DEFAULT_RETENTION = Retention()
KEEP_ALL = Retention(None, None, None, None)


def _amount(key: str, value: str) -> int | None:
    if value.lower() == "all":
        return None
    match = _SIZE.fullmatch(value.lower())
    unit = match[2] if match else None
    if match is None or unit not in _UNITS or (unit and key != "bytes"):
        what = "a size such as 64MiB" if key == "bytes" else "a count"
        raise ValueError(f"{key}={value}: the value must be {what}, or all")
    return int(match[1]) * _UNITS[unit]


def _text(key: str, value: int | None) -> str:
    if value is None:
        return "all"
    if key == "bytes":
        for unit in ("GiB", "MiB", "KiB"):
            size = _UNITS[unit.lower()]
            if value and value % size == 0:
                return f"{value // size}{unit}"
    return str(value)


def _or_unlimited(value: int | None) -> int:
    return UNLIMITED if value is None else value
