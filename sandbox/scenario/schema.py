"""A JSON Schema (draft 2020-12) of the scenario format, for editors: ``mxsandbox schema``.

It is built from the loader's own lists (``scenario.load``: the keys each mapping allows, the
stages, the behaviours, the sender settings of ``core.policy.FIELD_KINDS``), so that it names
the same keys as the loader. It checks shapes and words; the loader checks the rest (a host
that no zone names, an expectation about a message that does not exist, an ``until`` that is
not later than the one before, zone text) and says how to mend it at its line. The YAML
language server (VS Code, Neovim, JetBrains …) reads it from a comment at the top of a file:

    # yaml-language-server: $schema=scenario.schema.json
"""

from __future__ import annotations

from typing import Any

from sandbox.core.policy import FIELD_KINDS, PROFILES
from sandbox.scenario import load
from sandbox.scenario.model import STAGES, Stage

__all__ = ["scenario_schema"]

Schema = dict[str, Any]

# The spellings ``core.durations.parse_duration`` reads: seconds, or numbers with s/m/h/d.
_DURATION_PATTERN = r"^\s*\d+(\.\d+)?\s*[smhd]?\s*$|^(\d+(\.\d+)?[smhd])+$"
_STATUS_PATTERN = r"^\s*[245]\.[0-9]{1,3}\.[0-9]{1,3}\s*$"
_ADDRESS_PATTERN = r"^[^@\s]+@[^@\s]+$"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/$defs/{name}"}


def _object(properties: dict[str, Schema], keys: tuple[str, ...], **extra: Any) -> Schema:
    """A mapping that allows exactly ``keys`` (the loader's list), described by ``properties``."""
    missing = set(keys) - set(properties)
    if missing:
        raise AssertionError(f"the schema does not describe {sorted(missing)}")
    return {
        "type": "object",
        "properties": {key: properties[key] for key in keys},
        "additionalProperties": False,
        **extra,
    }


def _phases(value: Schema, value_key: str) -> Schema:
    """A list of phases: ``[{until: 2h, VALUE_KEY: …}, {VALUE_KEY: …}]``."""
    phase = _object(
        {load.PHASE_END_KEY: _ref("duration"), value_key: value},
        (load.PHASE_END_KEY, value_key),
        required=[value_key],
    )
    return {"type": "array", "minItems": 1, "items": phase}


def _reply(stage: Stage) -> Schema:
    """A reply that can answer ``stage``: any 4xx or 5xx, or one of its positive codes
    (RFC 5321 §4.3.2, as the loader checks them)."""
    positive = load.POSITIVE_REPLIES[stage]
    codes = "|".join(["[45][0-9]{2}", *map(str, positive)])
    return {
        "description": f"an SMTP reply: a 4xx or 5xx code, or {' or '.join(map(str, positive))}"
        ", then text, such as '421 4.3.2 Shutting down'",
        "anyOf": [
            {"type": "string", "pattern": rf"^\s*({codes})([ -].*)?$"},
            {
                "type": "integer",
                "anyOf": [{"minimum": 400, "maximum": 599}, {"enum": list(positive)}],
            },
        ],
    }


def _setting(kind: str | tuple[str, ...]) -> Schema:
    """One sender setting, read the way ``policy.FIELD_KINDS`` says."""
    if isinstance(kind, tuple):
        return {"enum": list(kind)}
    return {
        "duration": _ref("duration"),
        "count": {"type": "integer", "minimum": 1},
        "flag": {"type": "boolean"},
        "text": {"type": ["string", "number"]},
        "address": {"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
        "status": {"type": "string", "pattern": _STATUS_PATTERN},
        "stages": {"type": "array", "items": {"enum": [*STAGES, "helo"]}, "uniqueItems": True},
    }.get(kind, {})


def _definitions() -> dict[str, Schema]:
    stage = {"enum": list(STAGES)}
    behaviour_properties: dict[str, Schema] = {name: _ref(f"{name}Reply") for name in STAGES}
    behaviour_properties.update(
        {
            "recipients": {
                "type": "object",
                "propertyNames": {"pattern": _ADDRESS_PATTERN},
                "additionalProperties": _ref("rcptReply"),
            },
            "disconnect": stage,
            "delay": {
                "type": "object",
                "propertyNames": stage,
                "additionalProperties": _ref("duration"),
            },
            "greylist": _ref("duration"),
            "max_recipients": {"type": "integer", "minimum": 1},
        }
    )
    one_behaviour = {
        "anyOf": [
            {"enum": list(load.CONNECTIONS)},
            _object(behaviour_properties, load.BEHAVIOUR_KEYS),
        ]
    }
    return {
        "duration": {
            "description": "seconds, or a number with s, m, h or d: 30s, 5m, 2h, 5d, 1h30m",
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": _DURATION_PATTERN},
            ],
        },
        **{f"{name}Reply": _reply(name) for name in STAGES},
        "behaviour": one_behaviour,
        "hostBehaviour": {
            "anyOf": [_ref("behaviour"), _phases(_ref("behaviour"), load.BEHAVIOUR_PHASE_KEY)]
        },
        "dnsBehaviour": {
            "anyOf": [
                {"enum": list(load.DNS_KINDS)},
                _phases({"enum": list(load.DNS_KINDS)}, load.BEHAVIOUR_PHASE_KEY),
            ]
        },
        "zone": {
            "anyOf": [
                {"type": "string", "description": "zone-file text"},
                _phases({"type": "string"}, load.ZONE_PHASE_KEY),
            ]
        },
        "message": _object(
            {
                "from": {"type": "string"},
                "to": {
                    "anyOf": [
                        {"type": "string", "pattern": _ADDRESS_PATTERN},
                        {
                            "type": "array",
                            "minItems": 1,
                            "items": {"type": "string", "pattern": _ADDRESS_PATTERN},
                        },
                    ]
                },
                "count": {"type": "integer", "minimum": 1},
                "at": _ref("duration"),
            },
            load.MESSAGE_KEYS,
            required=["from", "to"],
        ),
        "sender": _object(
            {
                "profile": {"enum": sorted(PROFILES)},
                **{key: _setting(kind) for key, kind in FIELD_KINDS.items()},
            },
            load.SENDER_KEYS,
        ),
        "deliveryExpectation": _object(
            {
                "message": {
                    "anyOf": [{"type": "integer", "minimum": 1}, {"const": "all"}],
                },
                "recipient": {"type": "string", "pattern": _ADDRESS_PATTERN},
                "status": {"enum": list(load.STATUSES)},
                "host": {"type": "string"},
                "dsn": {"type": "string", "pattern": _STATUS_PATTERN},
                "attempts": {"type": "integer", "minimum": 0},
                "after": _ref("duration"),
                "before": _ref("duration"),
            },
            load.DELIVERY_KEYS,
            required=["message"],
        ),
        "hostExpectation": _object(
            {
                "host": {"type": "string"},
                "accepted": {"type": "integer", "minimum": 0},
                "connections": {"type": "integer", "minimum": 0},
                "share": {"type": "number", "minimum": 0, "maximum": 1},
                "tolerance": {"type": "number", "minimum": 0, "maximum": 1},
            },
            load.HOST_EXPECTATION_KEYS,
            required=["host"],
        ),
    }


def scenario_schema() -> Schema:
    """The whole schema, as a JSON-ready dict."""
    top = _object(
        {
            "name": {"type": ["string", "integer"], "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"},
            "title": {"type": ["string", "number"]},
            "description": {"type": ["string", "number"]},
            "seed": {"type": "integer"},
            "until": _ref("duration"),
            "zones": {"type": "object", "additionalProperties": _ref("zone")},
            "hosts": {"type": "object", "additionalProperties": _ref("hostBehaviour")},
            "dns": {"type": "object", "additionalProperties": _ref("dnsBehaviour")},
            "messages": {"type": "array", "items": _ref("message")},
            "sender": _ref("sender"),
            "expect": {
                "type": "array",
                "items": {"oneOf": [_ref("deliveryExpectation"), _ref("hostExpectation")]},
            },
        },
        load.TOP_LEVEL_KEYS,
        required=["name"],
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "MX Sandbox scenario (format v1)",
        "description": "A scenario file for mxsandbox run, check and serve. The reference: "
        "docs/scenario-format.md.",
        **top,
        "$defs": _definitions(),
    }
