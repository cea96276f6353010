"""The control API described in OpenAPI 3.1, served at ``/api/v1/openapi.json``.

Written by hand beside the handlers in ``control.py``, and checked by the suite twice: the
document validates (openapi-spec-validator), and every path the server routes is in it.
Behaviours and DNS behaviours are described loosely (any JSON value): the scenario loader is
their reference, and its sentence comes back with a 400 when one is wrong.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["openapi_document"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_answer(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


_ERROR = {"$ref": "#/components/responses/Error"}
_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "a mail host's name (all its addresses), or one zone or served address",
    "schema": {"type": "string"},
}


def _host_path(summary: str, schema: str, description: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": [_NAME],
            "responses": {"200": _json_answer(description, schema), "404": _ERROR},
        }
    }


_PATHS: dict[str, Any] = {
    "/api/v1/world": {
        "get": {
            "summary": "Where the DNS server, the mail hosts and this API listen, and what "
            "each host does now",
            "responses": {"200": _json_answer("the served world", "World")},
        }
    },
    "/api/v1/hosts/{name}/behaviour": {
        "get": {
            "summary": "A host's behaviour now, per address",
            "parameters": [_NAME],
            "responses": {"200": _json_answer("the host's addresses", "Hosts"), "404": _ERROR},
        },
        "put": {
            "summary": "Change what a host does, from now on",
            "description": "The body is a behaviour exactly as a scenario writes it under "
            'hosts: "accept", "refuse", "timeout", "silent", {"rcpt": "451 4.3.0 later"}, '
            '{"greylist": "2s"}, or a list of phases [{"until": "1m", "do": "refuse"}, '
            '{"do": "accept"}] whose times count from this request.',
            "parameters": [_NAME],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("Behaviour")}},
            },
            "responses": {
                "200": _json_answer("the host's addresses, changed", "Hosts"),
                "400": _ERROR,
                "404": _ERROR,
                "413": _ERROR,
            },
        },
    },
    "/api/v1/hosts/{name}/sessions": _host_path(
        "Every session the host saw, in the order they opened", "Sessions", "the sessions"
    ),
    "/api/v1/hosts/{name}/messages": _host_path(
        "Every message the host accepted, with its envelope and its RFC 5322 text",
        "Messages",
        "the messages",
    ),
    "/api/v1/dns/queries": {
        "get": {
            "summary": "Every DNS query served (since the last reset), in order",
            "responses": {"200": _json_answer("the queries", "DnsQueries")},
        }
    },
    "/api/v1/dns/{name}": {
        "put": {
            "summary": "Change how the DNS server treats queries for a name, from now on",
            "description": 'The body is a DNS behaviour as under a scenario\'s dns: "answer", '
            '"servfail", "timeout", "nxdomain", or a list of phases [{"until": "30s", "do": '
            '"servfail"}, {"do": "answer"}] whose times count from this request.',
            "parameters": [
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "description": "the DNS name, such as example.test",
                    "schema": {"type": "string"},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("DnsBehaviour")}},
            },
            "responses": {
                "200": _json_answer("the name's DNS behaviour now", "DnsBehaviourNow"),
                "400": _ERROR,
                "413": _ERROR,
            },
        }
    },
    "/api/v1/zones/{apex}": {
        "put": {
            "summary": "Serve new zone text at an apex (replacing that zone, or adding one)",
            "description": "Zone-file syntax as under a scenario's zones ($ORIGIN, $TTL, @, "
            "relative names). Send it as text/plain, or as JSON: a string, or a list of "
            'phases [{"until": "1m", "zone": "…"}, {"zone": "…"}] whose times count from '
            "this request. Text that does not parse is a 400 and changes nothing; the zone "
            "lint's findings (errors included) come back with the 200. An address that no "
            "host plays yet gets a host of its own, listed under added.",
            "parameters": [
                {
                    "name": "apex",
                    "in": "path",
                    "required": True,
                    "description": "the zone's apex, such as example.test",
                    "schema": {"type": "string"},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "text/plain": {"schema": {"type": "string"}},
                    "application/json": {"schema": _ref("ZoneBody")},
                },
            },
            "responses": {
                "200": _json_answer("the zone is served", "ZoneChanged"),
                "400": _ERROR,
                "409": _ERROR,
                "413": _ERROR,
            },
        }
    },
    "/api/v1/reset": {
        "post": {
            "summary": "Forget every session, accepted message, greylisting table and event",
            "description": "Behaviours and zones stay as they are; sessions still open carry "
            "on and are kept.",
            "responses": {"200": _json_answer("forgotten", "Reset")},
        }
    },
    "/api/v1/events": {
        "get": {
            "summary": "Server-Sent Events: every event from now on, as --trace writes it",
            "description": "Each message is `id: N` and `data: {…}` with one object of the "
            "--trace contract (`t`, `kind`, its fields). A reader that falls behind loses "
            "events; the stream then says how many with an `event: dropped` message whose "
            'data is {"kind": "events_dropped", "t", "count"}. At most a few streams are '
            "open at once (429 past that).",
            "responses": {
                "200": {
                    "description": "the stream, until the reader or the sandbox goes",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                "429": _ERROR,
            },
        }
    },
    "/api/v1/openapi.json": {
        "get": {
            "summary": "This document",
            "responses": {
                "200": {
                    "description": "the API in OpenAPI 3.1",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    },
    "/": {
        "get": {
            "summary": "The live page: a lane per host that fills in as sessions happen",
            "responses": {
                "200": {
                    "description": "an HTML page",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
        }
    },
}

_ADDRESS = {
    "type": "object",
    "required": ["host", "port"],
    "properties": {"host": {"type": "string"}, "port": {"type": "integer"}},
}
_PLACEMENT = {
    "name": {"type": "string", "description": "the host's name"},
    "zone_address": {"type": "string", "description": "the address the zone gives"},
    "address": {"type": "string", "description": "the loopback address it listens on"},
    "port": {"type": "integer", "description": "the SMTP port"},
    "answer": {"type": "string", "description": "what DNS answers for it"},
}
_HOST = {
    "type": "object",
    "required": [*_PLACEMENT, "behaviour", "sessions", "accepted"],
    "properties": {
        **_PLACEMENT,
        "behaviour": {"type": "string", "description": "what it does now, in a few words"},
        "sessions": {"type": "integer", "description": "sessions it saw"},
        "accepted": {"type": "integer", "description": "messages in its mailbox"},
    },
}
_AT = {
    "host": {"type": "string", "description": "the host's name"},
    "address": {"type": "string", "description": "the loopback address it listens on"},
    "zone_address": {"type": "string", "description": "the address the zone gives"},
}
_SESSION = {
    "type": "object",
    "required": ["host", "address", "client", "opened", "closed", "transcript"],
    "properties": {
        **_AT,
        "client": {"type": "string", "description": "the client's address and port"},
        "opened": {"type": "number", "description": "seconds since the sandbox started"},
        "closed": {"type": ["number", "null"], "description": "null while it is open"},
        "behaviour": {"type": "string", "description": "the behaviour when it opened"},
        "outline": {"type": "string", "description": "220, EHLO→250, MAIL→250, …"},
        "commands": {"type": "array", "items": {"type": "string"}},
        "replies": {"type": "array", "items": {"type": "string"}},
        "transcript": {
            "type": "array",
            "description": "[t, 'C' or 'S', line]; message content as <message: N bytes>",
            "items": {"type": "array", "prefixItems": [{"type": "number"}, {"type": "string"}]},
        },
    },
}
_MESSAGE = {
    "type": "object",
    "required": ["host", "t", "sender", "recipients", "message_id", "text"],
    "properties": {
        **_AT,
        "t": {"type": "number"},
        "sender": {"type": "string", "description": "MAIL FROM (empty for <>)"},
        "recipients": {"type": "array", "items": {"type": "string"}},
        "message_id": {"type": "string", "description": "the queue id the host gave"},
        "client": {"type": "string"},
        "size": {"type": "integer", "description": "bytes, as received"},
        "text": {"type": "string", "description": "the message as RFC 5322 text"},
    },
}
_FINDING = {
    "type": "object",
    "required": ["severity", "rule", "zone", "zone_line", "message", "mend"],
    "properties": {
        "severity": {"type": "string", "enum": ["error", "warning", "info"]},
        "rule": {"type": "string"},
        "zone": {"type": "string"},
        "zone_line": {"type": "integer"},
        "phase": {"type": "integer"},
        "message": {"type": "string"},
        "mend": {"type": "string"},
        "rfc": {"type": "string"},
    },
}
_PHASES = {"type": "array", "items": {"type": "object"}, "minItems": 1}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "one sentence: what is wrong, what to do"},
            "hosts": {
                "type": "array",
                "items": {"type": "string"},
                "description": "for an unknown host: the hosts there are",
            },
        },
    },
    "World": {
        "type": "object",
        "required": ["scenario", "dns", "smtp_port", "control", "hosts"],
        "properties": {
            "scenario": {"type": "string"},
            "title": {"type": "string"},
            "t": {"type": "number", "description": "seconds since the sandbox started"},
            "dns": _ADDRESS,
            "smtp_port": {"type": "integer"},
            "control": _ADDRESS,
            "hosts": {"type": "array", "items": _ref("Host")},
            "zones": {"type": "array", "items": {"type": "string"}},
            "dns_behaviours": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
    "Host": _HOST,
    "Hosts": {
        "type": "object",
        "required": ["hosts"],
        "properties": {"hosts": {"type": "array", "items": _ref("Host")}},
    },
    "Session": _SESSION,
    "Sessions": {
        "type": "object",
        "required": ["host", "sessions"],
        "properties": {
            "host": {"type": "string"},
            "sessions": {"type": "array", "items": _ref("Session")},
        },
    },
    "Message": _MESSAGE,
    "Messages": {
        "type": "object",
        "required": ["host", "messages"],
        "properties": {
            "host": {"type": "string"},
            "messages": {"type": "array", "items": _ref("Message")},
        },
    },
    "DnsQueries": {
        "type": "object",
        "required": ["queries"],
        "properties": {
            "queries": {
                "type": "array",
                "description": "dns_served events, as --trace writes them",
                "items": {"type": "object"},
            }
        },
    },
    "Behaviour": {
        "description": "a host behaviour as under a scenario's hosts (the scenario format "
        "is the reference)",
        "oneOf": [{"type": "string"}, {"type": "object"}, _PHASES],
    },
    "DnsBehaviour": {
        "description": "a DNS behaviour as under a scenario's dns",
        "oneOf": [
            {"type": "string", "enum": ["answer", "servfail", "timeout", "nxdomain"]},
            _PHASES,
        ],
    },
    "DnsBehaviourNow": {
        "type": "object",
        "required": ["name", "behaviour"],
        "properties": {"name": {"type": "string"}, "behaviour": {"type": "string"}},
    },
    "ZoneBody": {"oneOf": [{"type": "string"}, _PHASES]},
    "Placement": {"type": "object", "required": list(_PLACEMENT), "properties": _PLACEMENT},
    "Finding": _FINDING,
    "ZoneChanged": {
        "type": "object",
        "required": ["apex", "findings", "added"],
        "properties": {
            "apex": {"type": "string"},
            "findings": {"type": "array", "items": _ref("Finding")},
            "added": {"type": "array", "items": _ref("Placement")},
        },
    },
    "Reset": {
        "type": "object",
        "required": ["reset", "t"],
        "properties": {"reset": {"type": "boolean"}, "t": {"type": "number"}},
    },
}


def openapi_document() -> dict[str, Any]:
    """The whole document, a fresh copy each time."""
    return copy.deepcopy(_document())


def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "MX Sandbox control API",
            "version": "1",
            "description": "Drive `mxsandbox serve --control HOST:PORT` from a test in any "
            "language: change hosts, DNS and zones while a sender runs, read what every host "
            "saw. Paths are added, never broken. Every error is JSON with one sentence.",
        },
        "paths": _PATHS,
        "components": {
            "schemas": _SCHEMAS,
            "responses": {
                "Error": {
                    "description": "what is wrong, in one sentence",
                    "content": {"application/json": {"schema": _ref("Error")}},
                }
            },
        },
    }
