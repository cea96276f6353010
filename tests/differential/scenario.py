"""A case file, and the two copies of it that the comparison plays.

A case is an ordinary scenario file (tests/differential/cases/*.yaml, the format of
docs/scenario-format.md, read by ``mxsandbox`` itself). From it the harness writes:

- the **serve copy**, for the real MTA in real time: every time in the scenario (phase
  ``until``, ``greylist``, ``delay``, a message's ``at``, the top-level ``until``) divided by
  the MTA's scale factor S, because the MTA's own timers were divided by S too;
- the **run copy**, for ``mxsandbox run --profile NAME``: the scenario unchanged, with the
  profile values overridden under ``sender:`` to S times what the MTA was configured with
  (the "unscaled equivalents"), so that run mode's virtual times divided by S are what the
  real MTA should do.

Nothing here imports the sandbox: the command line is the contract (the lead moves modules).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Case", "Message", "format_seconds", "load_case", "parse_duration", "scaled"]

CASES = Path(__file__).parent / "cases"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PLAIN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(value: object) -> float:
    """Seconds, read as scenario files write durations: ``90``, ``30s``, ``2h``, ``1h30m``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        plain = _PLAIN.match(value)
        if plain:
            return float(plain.group(1)) * _UNITS[plain.group(2) or "s"]
        parts = _PART.findall(value)
        if parts and "".join(n + u for n, u in parts) == value.strip():
            return sum(float(n) * _UNITS[u] for n, u in parts)
    raise ValueError(f"{value!r} is not a duration")


def format_seconds(seconds: float) -> str:
    """A duration for a scenario file: whole seconds stay whole, the rest keep 3 decimals."""
    if abs(seconds - round(seconds)) < 1e-9:
        return f"{round(seconds)}s"
    return f"{seconds:.3f}s"


@dataclass(frozen=True)
class Message:
    """One message of the case, numbered like ``mxsandbox run`` numbers them."""

    number: int
    sender: str
    recipients: tuple[str, ...]
    at: float


@dataclass
class Case:
    name: str
    path: Path
    data: dict[str, Any]
    messages: list[Message] = field(default_factory=list)

    @property
    def until(self) -> float | None:
        value = self.data.get("until")
        return None if value is None else parse_duration(value)

    @property
    def domains(self) -> set[str]:
        return {r.rpartition("@")[2].lower() for m in self.messages for r in m.recipients}


def load_case(path: Path | str) -> Case:
    path = Path(path)
    if not path.exists():
        path = CASES / f"{path}.yaml"
    data = yaml.safe_load(path.read_text())
    messages: list[Message] = []
    for item in data.get("messages") or []:
        recipients = item["to"] if isinstance(item["to"], list) else [item["to"]]
        at = parse_duration(item.get("at", 0))
        for _ in range(int(item.get("count", 1))):
            messages.append(
                Message(len(messages) + 1, str(item["from"]), tuple(map(str, recipients)), at)
            )
    return Case(str(data["name"]), path, data, messages)


def _scale_behaviour(value: Any, factor: float) -> Any:
    """A host or DNS behaviour with its times divided by ``factor``; phases included."""
    if isinstance(value, list):
        phases = []
        for phase in value:
            phase = dict(phase)
            if "until" in phase:
                phase["until"] = format_seconds(parse_duration(phase["until"]) / factor)
            if "do" in phase:
                phase["do"] = _scale_behaviour(phase["do"], factor)
            phases.append(phase)
        return phases
    if isinstance(value, dict):
        value = dict(value)
        if "greylist" in value:
            value["greylist"] = format_seconds(parse_duration(value["greylist"]) / factor)
        if isinstance(value.get("delay"), dict):
            value["delay"] = {
                stage: format_seconds(parse_duration(d) / factor)
                for stage, d in value["delay"].items()
            }
        return value
    return value


def _scale_zones(zones: dict[str, Any], factor: float) -> dict[str, Any]:
    scaled_zones: dict[str, Any] = {}
    for apex, text in zones.items():
        if isinstance(text, list):
            text = [
                {**p, "until": format_seconds(parse_duration(p["until"]) / factor)}
                if "until" in p
                else dict(p)
                for p in text
            ]
        scaled_zones[apex] = text
    return scaled_zones


def scaled(case: Case, factor: float) -> dict[str, Any]:
    """The serve copy: every scenario time divided by ``factor``; no messages, no expect."""
    data = copy.deepcopy(case.data)
    data["name"] = f"{case.name}-served"
    for key in ("messages", "expect", "sender"):
        data.pop(key, None)
    if data.get("until") is not None:
        data["until"] = format_seconds(parse_duration(data["until"]) / factor)
    data["zones"] = _scale_zones(data.get("zones") or {}, factor)
    for section in ("hosts", "dns"):
        if data.get(section):
            data[section] = {k: _scale_behaviour(v, factor) for k, v in data[section].items()}
    return data


def run_copy(
    case: Case,
    overrides: dict[str, Any],
    arrivals: dict[int, float] | None = None,
    shift: float = 0.0,
) -> dict[str, Any]:
    """The run copy: the case as written, its sender overridden with the MTA's equivalents
    (the case's own ``sender:`` keys win: a case may pin something on purpose; the profile
    comes from ``--profile``).

    With ``arrivals`` (message number → unscaled seconds) every message arrives when the real
    MTA logged it, and ``shift`` (unscaled seconds) moves every phase end and the case's end,
    so that time 0 of the run is the real MTA's own time origin."""
    data = copy.deepcopy(case.data)
    sender = dict(overrides)
    sender.update({k: v for k, v in (data.get("sender") or {}).items() if k != "profile"})
    data["sender"] = sender
    data.pop("expect", None)
    if arrivals is not None:
        data["messages"] = [
            {
                "from": m.sender,
                "to": list(m.recipients),
                "at": format_seconds(max(0.0, round(arrivals[m.number], 3))),
            }
            for m in case.messages
        ]
    if shift:
        if data.get("until") is not None:
            data["until"] = format_seconds(parse_duration(data["until"]) + shift)
        data["zones"] = _shift_zones(data.get("zones") or {}, shift)
        for section in ("hosts", "dns"):
            if data.get(section):
                data[section] = {k: _shift_phases(v, shift) for k, v in data[section].items()}
    return data


def _shift_phases(value: Any, shift: float) -> Any:
    if not isinstance(value, list):
        return value
    return [
        {**p, "until": format_seconds(parse_duration(p["until"]) + shift)} if "until" in p else p
        for p in value
    ]


def _shift_zones(zones: dict[str, Any], shift: float) -> dict[str, Any]:
    return {apex: _shift_phases(text, shift) for apex, text in zones.items()}


def write_yaml(data: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000))
    return path
