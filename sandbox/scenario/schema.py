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
from sandbox.core.tls import HOST_TLS
from sandbox.core.tlsrpt import RESULT_TYPES
from sandbox.scenario import load
from sandbox.scenario.model import STAGES, TLS_EXPECTATIONS, Stage

__all__ = ["scenario_schema"]

Schema = dict[str, Any]

# The spellings ``core.durations.parse_duration`` reads: seconds, or numbers with s/m/h/d.
_DURATION_PATTERN = r"^\s*\d+(\.\d+)?\s*[smhd]?\s*$|^(\d+(\.\d+)?[smhd])+$"
_STATUS_PATTERN = r"^\s*[245]\.[0-9]{1,3}\.[0-9]{1,3}\s*$"
_BOUNCE_STATUS_PATTERN = r"^\s*5\.[0-9]{1,3}\.[0-9]{1,3}\s*$"
_FAILURE_STATUS_PATTERN = r"^\s*[45]\.[0-9]{1,3}\.[0-9]{1,3}\s*$"
_DEFERRAL_STATUS_PATTERN = r"^\s*4\.[0-9]{1,3}\.[0-9]{1,3}\s*$"
# The sender's EHLO name: a host name, or an address literal (``load._helo_name``).
_HELO_PATTERN = (
    r"^\s*(([A-Za-z0-9_-]{1,63}\.)*[A-Za-z0-9_-]{1,63}\.?|\[[0-9.]+\]|\[IPv6:[0-9A-Fa-f:.]+\])\s*$"
)
# An address as the loader reads one (``load._LOCAL_PART``): words of atext joined by dots, or
# a quoted string, then @ and a domain name; in angle brackets or not.
_ATOM = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u00a0-\uffff]+"
_QUOTED = r'"(?:[ !#-\[\]-~\u00a0-\uffff]|\\[ -~])*"'
_ADDRESS_PATTERN = (
    rf"^\s*<?\s*(?:{_ATOM}(?:\.{_ATOM})*|{_QUOTED})@[A-Za-z0-9_\-.\u00a0-\uffff]+\s*>?\s*$"
)
# Text without the control characters the loader refuses (``load._NOT_TEXT``): none at all
# in a reply, a tab in a title, tabs and newlines in a description.
_REPLY_TEXT = r"[^\x00-\x1f\x7f-\x9f\u2028\u2029]*"
_LINE_PATTERN = r"^[^\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]*$"
_PARAGRAPHS_PATTERN = r"^[^\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]*$"


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


def _phases(value: Schema, value_key: str, ends: tuple[str, ...] = (load.PHASE_END_KEY,)) -> Schema:
    """A list of phases: ``[{until: 2h, VALUE_KEY: …}, {VALUE_KEY: …}]``; ``ends`` are the
    keys that may end a phase (``until``, and ``times`` for a host or a mailbox's replies)."""
    phase = _object(
        {
            load.PHASE_END_KEY: _ref("duration"),
            load.PHASE_COUNT_KEY: {"type": "integer", "minimum": 1},
            value_key: value,
        },
        (*ends, value_key),
        required=[value_key],
    )
    return {"type": "array", "minItems": 1, "items": phase}


def _limit(reply: Schema) -> Schema:
    """``2``, or ``{limit: 2, reply: "421 4.7.0 …"}`` (a refusing reply)."""
    return {
        "anyOf": [
            {"type": "integer", "minimum": 1},
            _object(
                {"limit": {"type": "integer", "minimum": 1}, "reply": reply},
                load.LIMIT_KEYS,
                required=["limit"],
            ),
        ]
    }


def _reply(stage: Stage) -> Schema:
    """A reply that can answer ``stage``: any 4xx or 5xx, or one of its positive codes
    (RFC 5321 §4.3.2, as the loader checks them)."""
    positive = load.POSITIVE_REPLIES[stage]
    codes = "|".join(["[45][0-9]{2}", *map(str, positive)])
    return {
        "description": f"an SMTP reply: a 4xx or 5xx code, or {' or '.join(map(str, positive))}"
        ", then text, such as '421 4.3.2 Shutting down'",
        "anyOf": [
            {
                "type": "string",
                "pattern": rf"^\s*({codes})([ -]{_REPLY_TEXT})?\s*$",
                "maxLength": load.MAX_REPLY_OCTETS,
            },
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
        "status": {"type": "string", "pattern": _FAILURE_STATUS_PATTERN},
        "bounce_status": {"type": "string", "pattern": _BOUNCE_STATUS_PATTERN},
        "deferral_status": {"type": "string", "pattern": _DEFERRAL_STATUS_PATTERN},
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
                "additionalProperties": {
                    "anyOf": [
                        _ref("rcptReply"),
                        _phases(
                            _ref("rcptReply"), load.BEHAVIOUR_PHASE_KEY, (load.PHASE_COUNT_KEY,)
                        ),
                    ]
                },
            },
            "disconnect": stage,
            "delay": {
                "type": "object",
                "propertyNames": stage,
                "additionalProperties": _ref("duration"),
            },
            "greylist": _ref("duration"),
            "max_recipients": {"type": "integer", "minimum": 1},
            "tls": {
                "enum": list(HOST_TLS),
                "description": "STARTTLS: the certificate the host presents (valid, expired, "
                "self-signed, wrong-name), none (STARTTLS not offered), or "
                "handshake-failure",
            },
            "max_messages": _limit(_ref("mailReply")),
            "max_connections": _limit(_ref("greetingReply")),
            "esmtp": _object(
                {
                    "size": {"anyOf": [{"type": "integer", "minimum": 1}, {"const": False}]},
                    "pipelining": {"type": "boolean"},
                    "8bitmime": {"type": "boolean"},
                    "smtputf8": {"type": "boolean"},
                },
                load.ESMTP_KEYS,
            ),
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
            "anyOf": [
                _ref("behaviour"),
                _phases(
                    _ref("behaviour"),
                    load.BEHAVIOUR_PHASE_KEY,
                    (load.PHASE_END_KEY, load.PHASE_COUNT_KEY),
                ),
            ]
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
                            "maxItems": load.MAX_RECIPIENTS,
                            "uniqueItems": True,
                            "items": {"type": "string", "pattern": _ADDRESS_PATTERN},
                        },
                    ]
                },
                "count": {"type": "integer", "minimum": 1, "maximum": load.MAX_MESSAGES},
                "at": _ref("duration"),
            },
            load.MESSAGE_KEYS,
            required=["from", "to"],
        ),
        "sender": _object(
            {
                "profile": {"enum": sorted(PROFILES)},
                **{key: _setting(kind) for key, kind in FIELD_KINDS.items()},
                "helo_name": {"type": "string", "pattern": _HELO_PATTERN, "maxLength": 253},
                "max_failures": {"type": "integer", "minimum": 1, "maximum": load.MAX_DOUBLINGS},
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
                "tls": {"enum": list(TLS_EXPECTATIONS)},
            },
            load.DELIVERY_KEYS,
            required=["message"],
        ),
        "tlsReportExpectation": _object(
            {
                "tls_report": {"type": "string"},
                "successes": {"type": "integer", "minimum": 0},
                "failures": {"type": "integer", "minimum": 0},
                "result": {"enum": list(RESULT_TYPES)},
            },
            load.TLS_REPORT_KEYS,
            required=["tls_report"],
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
            "name": {
                "type": ["string", "integer"],
                "pattern": rf"^[A-Za-z0-9][A-Za-z0-9_.-]{{0,{load.MAX_NAME_LENGTH - 1}}}$",
            },
            "title": {"type": ["string", "number"], "pattern": _LINE_PATTERN},
            "description": {"type": ["string", "number"], "pattern": _PARAGRAPHS_PATTERN},
            "seed": {
                "type": "integer",
                "minimum": -(load.MAX_SEED - 1),
                "maximum": load.MAX_SEED - 1,
            },
            "until": _ref("duration"),
            "zones": {"type": "object", "additionalProperties": _ref("zone")},
            "hosts": {"type": "object", "additionalProperties": _ref("hostBehaviour")},
            "dns": {"type": "object", "additionalProperties": _ref("dnsBehaviour")},
            "messages": {"type": "array", "items": _ref("message")},
            "sender": _ref("sender"),
            "expect": {
                "type": "array",
                "items": {
                    "oneOf": [
                        _ref("deliveryExpectation"),
                        _ref("hostExpectation"),
                        _ref("tlsReportExpectation"),
                    ]
                },
            },
            "mta_sts": {
                "type": "object",
                "description": "MTA-STS policies the sandbox serves over HTTPS: domain -> "
                "policy text (RFC 8461 §3.2)",
                "additionalProperties": {"type": "string"},
            },
            "dnssec": {
                "type": "array",
                "description": "zones answered as DNSSEC-validated (the AD bit), for DANE",
                "items": {"type": "string"},
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
