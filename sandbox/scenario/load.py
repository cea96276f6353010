"""Scenario files (format v1) -> the typed model of ``model.py``, with errors people can act on.

How errors get their lines
--------------------------
The YAML is read by ``yaml_lines.read_yaml``, which builds every mapping as a ``LineDict`` and
every sequence as a ``LineList``: an ordinary dict or list that also remembers the line of each
key and value (and where a block scalar's text begins), and the keys a mapping repeats.

The validators then walk the data with a ``_Spot``: the file, the key path
(``hosts.mx1.example.test.greeting``, ``messages[2].to``) and the line of the value being read.
Every error is raised from a spot, so each one reads ``FILE:LINE: KEY: what is wrong; how to
mend it``. Data that did not come from YAML (an inline dict given to ``scenario_from_mapping``)
is made of plain dicts and lists: the same code runs, and its errors carry the key path with no
line.

YAML's own errors become a ScenarioError at their line in ``yaml_lines``. Zone text is parsed
by ``sandbox.dns.zone``, once per phase, here: the model holds the parsed zones, and nothing
reads the text again. The reader's errors count lines within the zone, which are shifted by
the line where the zone's text starts in the file.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NoReturn, TypeVar, cast

from sandbox.core import policy
from sandbox.core.durations import format_duration, parse_duration
from sandbox.core.idn import domain_to_ascii
from sandbox.core.mta_sts import PolicyProblem, parse_policy
from sandbox.core.mx import ip_literal
from sandbox.core.tls import HOST_TLS, HostTls, rules_for
from sandbox.core.tlsrpt import RESULT_TYPES
from sandbox.dns.zone import Zone, find_zone, parse_zone
from sandbox.errors import ScenarioError, ZoneSyntaxError
from sandbox.scenario.model import (
    DEFAULT_SIZE,
    STAGES,
    TLS_EXPECTATIONS,
    Behaviour,
    DeliveryExpectation,
    DnsBehaviour,
    Esmtp,
    Expectation,
    HostExpectation,
    Limit,
    MessageSpec,
    Phase,
    Reply,
    Scenario,
    SenderSpec,
    Stage,
    Timeline,
    TlsExpectation,
    TlsReportExpectation,
    ZoneSpec,
)
from sandbox.scenario.yaml_lines import MAX_NUMBER_LENGTH, LineDict, LineList, read_yaml

__all__ = [
    "ACCEPTED_KEYS",
    "LineDict",
    "LineList",
    "dns_behaviour",
    "domain_name",
    "host_behaviour",
    "load_scenario",
    "load_scenario_text",
    "retry_schedule_problem",
    "scenario_from_mapping",
    "zone_phases",
]

_T = TypeVar("_T")

TOP_LEVEL_KEYS = (
    "name",
    "title",
    "description",
    "seed",
    "until",
    "zones",
    "hosts",
    "dns",
    "messages",
    "sender",
    "expect",
    "mta_sts",
    "dnssec",
)
CONNECTIONS = ("accept", "refuse", "timeout", "silent")
BEHAVIOUR_KEYS = (
    *STAGES,
    "recipients",
    "disconnect",
    "delay",
    "greylist",
    "max_recipients",
    "tls",
    "max_messages",
    "max_connections",
    "esmtp",
)
# The extensions a host advertises (and enforces): ``esmtp: {size: 10240, smtputf8: false}``.
ESMTP_KEYS = ("size", "pipelining", "8bitmime", "smtputf8")
# The long form of a rate limit: ``max_connections: {limit: 1, reply: "421 4.7.0 …"}``.
LIMIT_KEYS = ("limit", "reply")
TOO_MANY_MESSAGES = "421 4.7.0 Too many messages in one session, try again later"
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, try again later"
DNS_KINDS = ("answer", "servfail", "timeout", "nxdomain")
MESSAGE_KEYS = ("from", "to", "count", "at")
DELIVERY_KEYS = (
    "message",
    "recipient",
    "status",
    "host",
    "dsn",
    "attempts",
    "after",
    "before",
    "tls",
)
HOST_EXPECTATION_KEYS = ("host", "accepted", "connections", "share", "tolerance")
TLS_REPORT_KEYS = ("tls_report", "successes", "failures", "result")
# A phase of a timeline: when it ends, and what holds until then (a host's or a name's
# behaviour under "do", a zone's text under "zone").
PHASE_END_KEY = "until"
# …or after this many sessions (connection attempts, RCPTs): host phases and mailbox replies.
PHASE_COUNT_KEY = "times"
BEHAVIOUR_PHASE_KEY = "do"
ZONE_PHASE_KEY = "zone"
SENDER_KEYS = ("profile", *policy.FIELD_KINDS)
# Every key a scenario may hold, by where it goes: the reference, docs/scenario-format.md,
# names each one under a heading of the same words (tests/unit/test_format_reference.py), and
# the JSON Schema of ``scenario.schema`` is built from these same lists.
ACCEPTED_KEYS: dict[str, tuple[str, ...]] = {
    "The top level": TOP_LEVEL_KEYS,
    "Phases": (PHASE_END_KEY, PHASE_COUNT_KEY, BEHAVIOUR_PHASE_KEY, ZONE_PHASE_KEY),
    "Host behaviour": BEHAVIOUR_KEYS,
    "Rate limits": LIMIT_KEYS,
    "ESMTP extensions": ESMTP_KEYS,
    "Messages": MESSAGE_KEYS,
    "The sender": SENDER_KEYS,
    "Expectations about deliveries": DELIVERY_KEYS,
    "Expectations about hosts": HOST_EXPECTATION_KEYS,
    "Expectations about TLS reports": TLS_REPORT_KEYS,
}
STATUSES = ("delivered", "bounced", "deferred")
# Every duration (an arrival, a phase, a delay, a timeout, the lifetime) stays below this, so a
# run's virtual clock stays in the range where asyncio can still tell its timers apart, and a
# typo such as `at: 1e300` is an error rather than a run that never ends.
MAX_DURATION = 1000 * 86400.0
# Expanding `count` builds one object per message: a typo such as `count: 1000000000` must be
# an error, not an out-of-memory crash.
MAX_MESSAGES = 100_000
# The seed is written into each message's Message-ID header: a seed of 2,000 digits made a
# header line longer than RFC 5322's 998 characters, and every host refused the message.
_SEED_DIGITS = 20
MAX_SEED = 10**_SEED_DIGITS
# The name goes there too, and into the Subject: one of 2,000 characters bounced every message.
MAX_NAME_LENGTH = 100
# A run keeps a delivery, its events and a row of the result for each (message, recipient):
# 100,000 of them take a run of about 10 to 20 s and 250 MB, as 100,000 messages do.
# `count: 100000` with 10,000 recipients once passed `check`, then ran out of memory.
MAX_DELIVERIES = 100_000
# A message that keeps failing is given up on after at most about this many attempts (each
# costs a few milliseconds: half a minute for one message). A retry wait of 0s tried again at
# the same virtual instant for ever, and one of a second, with a lifetime of 5 days, 432,000
# times: half an hour.
MAX_ATTEMPTS = 10_000
RETRY_WAITS = ("min_backoff", "max_backoff", "retry_interval")
# Haraka's doubling schedule waits 2^(n+5) s after failure n: past 21 failures the bounce
# would come after the 1000 days the virtual clock covers.
MAX_DOUBLINGS = 21
# Recipients of one message: an SMTP server must take at least 100 in one transaction (RFC
# 5321 §4.5.3.1.8), and Postfix's smtpd_recipient_limit, the most a Postfix MX takes, is 1,000.
MAX_RECIPIENTS = 1_000

_REPLY = re.compile(r"(\d{3})(?:[ -](.*))?", re.DOTALL)
# What text must not hold: C0 and C1 controls (line breaks among them), Unicode's line and
# paragraph separators, and the halves of UTF-16 surrogate pairs that YAML's "\ud800" can
# write, which no output can encode. A reply with CR LF in it, sent as it is, would end early
# and start another reply that the client never asked for; an escape sequence in a title
# would be obeyed by the terminal that prints the story.
_NOT_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_LINE_BREAKS = "\r\n\x0b\x0c\x85\u2028\u2029"
# RFC 5321 §4.5.3.1.5: a reply line has at most 512 octets, its CRLF included.
MAX_REPLY_OCTETS = 512 - 2
_DSN = re.compile(r"\d\.\d{1,3}\.\d{1,3}", re.ASCII)
_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Letters, digits, '-' and '_' (SRV-style labels); '*' alone for a wildcard. International
# names are written in their ASCII (xn--) form, as in a zone file.
_LABEL = re.compile(r"[a-z0-9_-]{1,63}|\*")
_REPLY_EXAMPLE = '"421 4.3.2 Shutting down"'
# The part of an address before the @ (RFC 5321 §4.1.2): a Dot-string of atoms, or a
# Quoted-string; non-ASCII letters as RFC 6531 (SMTPUTF8) allows. Anything else an SMTP
# server answers with "501 Syntax" (a comma, a colon, an angle bracket …).
_ATOM = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u00a0-\U0010ffff]+"
_LOCAL_PART = re.compile(
    rf'{_ATOM}(?:\.{_ATOM})*|"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u00a0-\U0010ffff]|\\[\x20-\x7e])*"'
)
# RFC 5321 §4.5.3.1.3: a path, the address in angle brackets, has at most 256 octets.
MAX_ADDRESS_OCTETS = 256 - 2
# [192.0.2.1] or [IPv6:2001:db8::1] (RFC 5321 §4.1.3), for the sender's EHLO name.
_ADDRESS_LITERAL = re.compile(r"\[(IPv6:)?([0-9A-Fa-f.:]+)\]", re.IGNORECASE)
# The positive replies each stage can give (RFC 5321 §4.3.2). Any 4xx or 5xx may answer any
# stage: a client must read an unknown code by its first digit (§4.2.1, §4.3.2).
POSITIVE_REPLIES: dict[Stage, tuple[int, ...]] = {
    "greeting": (220,),
    "ehlo": (250,),
    "starttls": (220,),
    "mail": (250,),
    "rcpt": (250, 251),
    "data": (354,),
    "message": (250,),
}
_ANSWERS: dict[Stage, str] = {
    "greeting": "the connection (the greeting)",
    "ehlo": "EHLO",
    "starttls": "STARTTLS",
    "mail": "MAIL FROM",
    "rcpt": "RCPT TO",
    "data": "DATA",
    "message": "the end of the message (the final dot)",
}
# A number of MAX_NUMBER_LENGTH digits has at most this many bits.
_MAX_NUMBER_BITS = math.ceil(MAX_NUMBER_LENGTH * math.log2(10))
_DURATION_HINT = "write seconds or a number with s, m, h or d, such as 30s, 5m, 2h or 5d"


# --- where a value sits ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Spot:
    """Where a value sits: file, key path and line (None for inline data), and, for text, the
    line where the text begins."""

    file: str
    key: str
    line: int | None
    text_line: int | None = None

    def fail(self, message: str) -> NoReturn:
        raise ScenarioError(message, file=self.file, line=self.line, key=self.key)

    def child(self, name: object, line: int | None, text_line: int | None = None) -> _Spot:
        key = f"{self.key}.{name}" if self.key else str(name)
        return _Spot(self.file, key, self.line if line is None else line, text_line)

    def item(self, index: int, line: int | None, text_line: int | None = None) -> _Spot:
        return _Spot(
            self.file, f"{self.key}[{index}]", self.line if line is None else line, text_line
        )


def _value_spot(mapping: Mapping[object, object], key: object, spot: _Spot) -> _Spot:
    """The spot of the value under ``key``."""
    if isinstance(mapping, LineDict):
        return spot.child(key, mapping.value_lines.get(key), mapping.text_lines.get(key))
    return spot.child(key, None)


def _key_spot(mapping: Mapping[object, object], key: object, spot: _Spot) -> _Spot:
    """The spot of ``key`` itself (for unknown and repeated keys)."""
    line = mapping.line_of(key) if isinstance(mapping, LineDict) else None
    return spot.child(key, line)


def _item_spots(items: Sequence[object], spot: _Spot) -> Iterator[tuple[object, _Spot]]:
    for index, item in enumerate(items):
        if isinstance(items, LineList):
            yield item, spot.item(index, items.item_lines[index], items.text_lines[index])
        else:
            yield item, spot.item(index, None)


def _mapping_spot(mapping: Mapping[object, object], spot: _Spot) -> _Spot:
    """The spot of a whole mapping: the line where it starts (for keys it lacks)."""
    if isinstance(mapping, LineDict):
        return _Spot(spot.file, spot.key, mapping.line, spot.text_line)
    return spot


# --- small readers -----------------------------------------------------------------------------


def _shown(value: object) -> str:
    """A value as the user would recognise it in an error."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    if isinstance(value, int) and value.bit_length() > 64:  # from Python: any size, unprintable
        return f"a number of about {math.ceil(value.bit_length() * math.log10(2)):,} digits"
    return repr(value)


def _did_you_mean(word: object, allowed: Sequence[str]) -> str:
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word.lower(), allowed, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'? " if close else ""


def _one_of(allowed: Sequence[str]) -> str:
    return ", ".join(allowed)


def _some_of(choices: Sequence[str], most: int = 8) -> str:
    """The first few of a list that may be long (a thousand recipients), for an error."""
    if len(choices) <= most:
        return _one_of(choices)
    return f"{_one_of(choices[:most])} … ({len(choices):,} in all)"


def _check_keys(
    mapping: Mapping[object, object],
    spot: _Spot,
    allowed: Sequence[str],
    misplaced: Mapping[str, str] | None = None,
) -> None:
    """Every key must be one of ``allowed``; ``misplaced`` says where a known stray belongs."""
    for key in mapping:
        if isinstance(key, str) and key in allowed:
            continue
        key_spot = _key_spot(mapping, key, spot)
        if misplaced and isinstance(key, str) and key in misplaced:
            key_spot.fail(misplaced[key])
        key_spot.fail(
            f"unknown key {_shown(key)}; {_did_you_mean(key, allowed)}allowed: {_one_of(allowed)}"
        )


def _as_mapping(value: object, spot: _Spot, example: str) -> Mapping[object, object]:
    if not isinstance(value, Mapping):
        spot.fail(f"expected a mapping such as {example}, found {_shown(value)}")
    return cast(Mapping[object, object], value)


def _as_list(value: object, spot: _Spot, example: str) -> Sequence[object]:
    if not isinstance(value, list | tuple):
        spot.fail(f"expected a list such as {example}, found {_shown(value)}")
    return cast(Sequence[object], value)


def _require(mapping: Mapping[object, object], key: str, spot: _Spot, hint: str) -> object:
    value = mapping.get(key)
    if value is None and key in mapping:
        _value_spot(mapping, key, spot).fail(f"{key} is empty; {hint}")
    if value is None:
        _mapping_spot(mapping, spot).child(key, None).fail(f"{key} is missing; {hint}")
    return value


def _check_size(value: object, spot: _Spot) -> None:
    """A whole number given in Python (the pytest plugin's mappings) may have any size, where
    YAML's have at most MAX_NUMBER_LENGTH digits: past 4,300 digits it cannot even be printed,
    and str() raised ValueError."""
    if isinstance(value, int) and value.bit_length() > _MAX_NUMBER_BITS:
        spot.fail(
            f"{_shown(value)} is far larger than any value of a scenario can be (the longest, "
            "a seed, has 20); write a smaller number"
        )


def _text(value: object, spot: _Spot, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        spot.fail(f"{what} must be text, found {_shown(value)}; put it in quotes")
    _check_size(value, spot)
    return str(value).strip()


def _check_text(text: str, spot: _Spot, *, line_break: str, allowed: str = "") -> None:
    """``text`` holds only characters that can be printed and sent (and ``allowed``);
    ``line_break`` says why a line break is wrong here and how to mend it."""
    for found in _NOT_TEXT.finditer(text):
        char = found.group()
        if char in allowed:
            continue
        if char in _LINE_BREAKS:
            spot.fail(f"{_shown(text)} has a line break in it; {line_break}")
        if "\ud800" <= char <= "\udfff":
            spot.fail(
                f"{_shown(text)} has U+{ord(char):04X}, half of a UTF-16 surrogate pair and "
                "no character of its own; remove it, or write the whole character"
            )
        spot.fail(f"{_shown(text)} has the control character U+{ord(char):04X} in it; remove it")


def _word(value: object, spot: _Spot, allowed: Sequence[str], what: str) -> str:
    if isinstance(value, str) and value.strip().lower() in allowed:
        return value.strip().lower()
    spot.fail(
        f"{_shown(value)} is not {what}; {_did_you_mean(value, allowed)}"
        f"use one of: {_one_of(allowed)}"
    )


def _duration(value: object, spot: _Spot) -> float:
    try:
        seconds = parse_duration(value)
    except (ValueError, OverflowError):
        spot.fail(f"{_shown(value)} is not a duration; {_DURATION_HINT}")
    if not math.isfinite(seconds):
        spot.fail(f"{_shown(value)} is not a finite duration; {_DURATION_HINT}")
    if seconds > MAX_DURATION:
        spot.fail(
            f"{_shown(value)} is longer than the {format_duration(MAX_DURATION)} a run's "
            "virtual clock can cover; write a shorter duration"
        )
    return seconds


def _whole_number(value: object, spot: _Spot, minimum: int, example: str) -> int:
    _check_size(value, spot)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        spot.fail(
            f"{_shown(value)} is not a whole number of {minimum} or more; write one such as "
            f"{example}"
        )
    return value


def _fraction(value: object, spot: _Spot, example: str) -> float:
    number_ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not number_ok or not 0 <= cast(float, value) <= 1:
        spot.fail(f"{_shown(value)} is not a fraction from 0 to 1; write one such as {example}")
    return float(cast(float, value))


def _flag(value: object, spot: _Spot) -> bool:
    if not isinstance(value, bool):
        spot.fail(f"{_shown(value)} is not true or false; write true or false")
    return value


def _ip_address(value: object) -> str | None:
    """The normalised spelling of an IP address, or None when ``value`` is not one."""
    if not isinstance(value, str) or "[" in value:
        return None  # brackets belong to MX targets, not to host keys
    return ip_literal(value)


def _domain(value: object, spot: _Spot, what: str) -> str:
    """A domain name in the sandbox's spelling: lower case, without the one final dot."""
    if not isinstance(value, str):
        spot.fail(f"{what} must be a domain name such as mx1.example.test, found {_shown(value)}")
    name = value.strip().lower()
    name = name[:-1] if name.endswith(".") else name
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        spot.fail(
            f"{_shown(value)} is not a domain name; write one such as mx1.example.test, in "
            "ASCII letters, digits and '-' (international names in their xn-- form)"
        )
    return name


def _mailbox(value: object, spot: _Spot, what: str) -> str:
    """``local@domain`` as an SMTP command can carry it (RFC 5321 §4.1.2); the domain in
    lower case."""
    text = value.strip() if isinstance(value, str) else None
    if text is not None and text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    local, at, domain = (text or "").rpartition("@")
    domain = domain.lower().rstrip(".")
    if text is None or not at or not local or not domain or not text.isprintable():
        spot.fail(
            f"{_shown(value)} is not a mail address; write {what} as local@domain, "
            "such as alice@example.test (no spaces or control characters)"
        )
    if not _LOCAL_PART.fullmatch(local):
        spot.fail(
            f"{_shown(value)} is not a mail address: before the @ come words of letters, digits "
            "and !#$%&'*+-/=?^_`{|}~ joined by single dots (RFC 5321 §4.1.2); for anything "
            f'else, quote it, such as "{_quoted(local) if len(local) <= 40 else "john smith"}"'
            f"@{domain}"
        )
    if not _dns_name(domain):
        spot.fail(
            f"{_shown(value)} has no usable domain: each dot-separated part of {domain!r} must "
            "be 1 to 63 letters, digits, '-' or '_', and the whole at most 253 characters; "
            "write one such as example.test"
        )
    address = f"{local}@{domain}"
    if len(address.encode()) > MAX_ADDRESS_OCTETS:
        spot.fail(
            f"the address is {len(address.encode()):,} bytes long, and an SMTP path has at most "
            f"256 with its angle brackets (RFC 5321 §4.5.3.1.3); shorten it to "
            f"{MAX_ADDRESS_OCTETS} bytes or fewer"
        )
    return address


def _quoted(local: str) -> str:
    """A local part as a quoted string: every quote and backslash escaped."""
    return local.strip('"').replace("\\", "\\\\").replace('"', '\\"')


def _dns_name(name: str) -> bool:
    """The name can be asked in DNS: labels of 1 to 63 letters, digits, '-' or '_' (after
    IDNA 2008 for a name in Unicode, as the sender asks it: ``core.idn``), 253 in all."""
    try:
        encoded = domain_to_ascii(name) if not name.isascii() else name
    except ValueError:
        return False
    labels = encoded.split(".")
    return len(encoded) <= 253 and all(_LABEL.fullmatch(label) for label in labels)


# --- timelines ---------------------------------------------------------------------------------


# How a list of phases may end its phases: at an ``until`` only (DNS names, zones), at an
# ``until`` or after ``times`` (a host: sessions or connection attempts), or after ``times``
# only (a mailbox's replies: RCPTs).
Counting = Literal["no", "also", "only"]
_TIMES_HINT = (
    "times counts sessions, so it belongs to a host's phases (and a mailbox's replies); "
    "these phases change with until"
)
_UNTIL_IN_REPLIES = (
    "a mailbox's replies change after a number of RCPTs (times), not over time; for a change "
    "over time, give the host phases, each with its own recipients"
)


def _timeline(
    value: object,
    spot: _Spot,
    read_one: Callable[[object, _Spot], _T],
    value_key: str = BEHAVIOUR_PHASE_KEY,
    counting: Counting = "no",
) -> Timeline[_T]:
    """A single value, or a list of phases ``[{until: 2h, do: …}, {do: …}]``."""
    if isinstance(value, list | tuple):
        return _phases(cast(Sequence[object], value), spot, read_one, value_key, counting)
    return Timeline.constant(read_one(value, spot))


def _phases(
    items: Sequence[object],
    spot: _Spot,
    read_one: Callable[[object, _Spot], _T],
    value_key: str,
    counting: Counting = "no",
) -> Timeline[_T]:
    first_end = "times: 1" if counting == "only" else "until: 2h"
    example = f"[{{{first_end}, {value_key}: …}}, {{{value_key}: …}}]"
    if not items:
        spot.fail(f"the list of phases is empty; write at least one phase, such as {example}")
    allowed = {
        "no": (PHASE_END_KEY, value_key),
        "also": (PHASE_END_KEY, PHASE_COUNT_KEY, value_key),
        "only": (PHASE_COUNT_KEY, value_key),
    }[counting]
    misplaced = _misplaced_in_phase(value_key)
    if counting == "no":
        misplaced[PHASE_COUNT_KEY] = _TIMES_HINT
    if counting == "only":
        misplaced[PHASE_END_KEY] = _UNTIL_IN_REPLIES
    phases: list[Phase[_T]] = []
    previous = 0.0
    for index, (item, item_spot) in enumerate(_item_spots(items, spot)):
        phase = _as_mapping(item, item_spot, f"{{{first_end}, {value_key}: …}}")
        _check_keys(phase, item_spot, allowed, misplaced)
        hint = f"write what holds during this phase, such as {{{first_end}, {value_key}: …}}"
        value_spot = _value_spot(phase, value_key, item_spot)
        value = _require(phase, value_key, item_spot, hint)
        if isinstance(value, list | tuple):
            value_spot.fail(f"{value_key} holds one value, not another list of phases")
        is_last = index == len(items) - 1
        times = _phase_times(phase, item_spot, value_key, is_last=is_last)
        until = _phase_end(
            phase,
            item_spot,
            value_key,
            is_last=is_last,
            previous=previous,
            counted=times is not None,
            counting=counting,
        )
        phases.append(Phase(until, read_one(value, value_spot), times))
        previous = until if until is not None else previous
    return Timeline(tuple(phases))


def _misplaced_in_phase(value_key: str) -> dict[str, str]:
    """A behaviour's own keys written straight into a phase: say that they go under ``do``."""
    if value_key != BEHAVIOUR_PHASE_KEY:
        return {}
    return {
        key: f"a phase's behaviour goes under do, such as {{until: 2h, do: {{{key}: …}}}}"
        for key in BEHAVIOUR_KEYS
    }


def _phase_times(
    phase: Mapping[object, object], spot: _Spot, value_key: str, *, is_last: bool
) -> int | None:
    """A phase's ``times``: a whole number of 1 or more, never on the last phase."""
    if phase.get(PHASE_COUNT_KEY) is None:
        return None
    times_spot = _value_spot(phase, PHASE_COUNT_KEY, spot)
    if is_last:
        times_spot.fail(
            "the last phase must not have times because it lasts to the end of the run; "
            f"remove it or add a final phase such as {{{value_key}: …}}"
        )
    return _whole_number(phase[PHASE_COUNT_KEY], times_spot, 1, "times: 2")


def _phase_end(
    phase: Mapping[object, object],
    spot: _Spot,
    value_key: str,
    *,
    is_last: bool,
    previous: float,
    counted: bool = False,
    counting: Counting = "no",
) -> float | None:
    """A phase's ``until``: increasing, and required (unless the phase has ``times``) except
    on the last phase, which has none."""
    if phase.get("until") is None:
        if is_last or counted:
            return None
        if counting == "only":
            _mapping_spot(phase, spot).child(PHASE_COUNT_KEY, None).fail(
                "every phase but the last needs times; add times: N, the number of RCPTs it answers"
            )
        also = " (or times: N, after N sessions)" if counting == "also" else ""
        _mapping_spot(phase, spot).child("until", None).fail(
            f"every phase but the last needs an until; add until: DURATION, when this phase "
            f"ends{also}"
        )
    until_spot = _value_spot(phase, "until", spot)
    if is_last:
        until_spot.fail(
            "the last phase must not have an until because it lasts to the end of the run; "
            f"remove it or add a final phase such as {{{value_key}: …}}"
        )
    until = _duration(phase["until"], until_spot)
    if until <= previous:
        until_spot.fail(
            f"until {format_duration(until)} is not later than the previous phase's end "
            f"({format_duration(previous)}); list the phases in time order"
        )
    return until


# --- zones -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _World:
    """What the zones name, across all their phases: for the cross checks."""

    zones: tuple[Zone, ...]
    host_names: frozenset[str]
    addresses: frozenset[str]

    @classmethod
    def of(cls, zones: Sequence[Zone]) -> _World:
        names: set[str] = set()
        addresses: set[str] = set()
        for record in (r for zone in zones for r in zone.records):
            if record.rtype in ("A", "AAAA", "CNAME"):
                names.add(record.name)
            for candidate in (record.address, record.target):
                address = _ip_address(candidate)
                if address is not None:
                    addresses.add(address)
        return cls(tuple(zones), frozenset(names), frozenset(addresses))

    def names_host(self, name: str) -> bool:
        return name in self.host_names or name in self.addresses

    def free_address(self, version: int) -> str:
        """An address no zone uses yet, for the hint in an error message."""
        base = ipaddress.ip_address("192.0.2.0" if version == 4 else "2001:db8::")
        for offset in range(10, 255):
            candidate = str(base + offset)
            if candidate not in self.addresses:
                return candidate
        return str(base + 254)


def _zones(value: object, spot: _Spot) -> tuple[tuple[ZoneSpec, ...], _World]:
    if value is None:
        return (), _World.of(())
    mapping = _as_mapping(value, spot, "{example.test: ZONE TEXT}")
    specs: dict[str, ZoneSpec] = {}
    parsed: list[Zone] = []
    for key, text in mapping.items():
        key_spot = _key_spot(mapping, key, spot)
        apex = _domain(key, key_spot, "a zone's apex")
        if apex in specs:
            key_spot.fail(f"the zone {apex} is written twice; merge the two into one")
        phases = _timeline(
            text, _value_spot(mapping, key, spot), _zone_reader(apex), ZONE_PHASE_KEY
        )
        parsed.extend(phase.value for phase in phases.phases)
        lines = _phase_text_lines(mapping, key)
        specs[apex] = ZoneSpec(apex, phases, _first_text_line(mapping, key), lines)
    return tuple(specs.values()), _World.of(parsed)


def _first_text_line(mapping: Mapping[object, object], key: object) -> int | None:
    if not isinstance(mapping, LineDict):
        return None
    value = mapping.get(key)
    if isinstance(value, LineList) and value and isinstance(value[0], LineDict):
        return value[0].text_lines.get(ZONE_PHASE_KEY)
    return mapping.text_lines.get(key)


def _phase_text_lines(mapping: Mapping[object, object], key: object) -> tuple[int | None, ...]:
    """Where each phase's zone text starts, for a zone written as a list of phases."""
    value = mapping.get(key)
    if not isinstance(value, LineList):
        return ()
    return tuple(
        phase.text_lines.get(ZONE_PHASE_KEY) if isinstance(phase, LineDict) else None
        for phase in value
    )


def _zone_reader(apex: str) -> Callable[[object, _Spot], Zone]:
    def read(value: object, spot: _Spot) -> Zone:
        if not isinstance(value, str):
            spot.fail(
                f"the zone text must be a string, found {_shown(value)}; write it as a "
                f"block: '{apex}: |' and the records indented below"
            )
        try:
            return parse_zone(apex, value)
        except ZoneSyntaxError as error:
            start = spot.text_line
            line = None if start is None else start + error.line - 1
            raise ScenarioError(
                f"{error.message} (zone line {error.line})",
                file=spot.file,
                line=line,
                key=spot.key,
            ) from None

    return read


# --- hosts and dns -----------------------------------------------------------------------------


def _hosts(value: object, spot: _Spot, world: _World) -> dict[str, Timeline[Behaviour]]:
    if value is None:
        return {}
    mapping = _as_mapping(value, spot, "{mx1.example.test: refuse}")
    hosts: dict[str, Timeline[Behaviour]] = {}
    for key, behaviour in mapping.items():
        key_spot = _key_spot(mapping, key, spot)
        host = _ip_address(key) or _domain(key, key_spot, "a host")
        if host in hosts:
            key_spot.fail(f"the host {host} is listed twice; keep one entry for it")
        _check_named(host, key_spot, world)
        hosts[host] = _timeline(
            behaviour, _value_spot(mapping, key, spot), _behaviour, counting="also"
        )
    return hosts


def _check_named(host: str, spot: _Spot, world: _World) -> None:
    """A scripted host must be something DNS can lead the sender to."""
    if world.names_host(host):
        return
    address = _ip_address(host)
    if address is not None:
        version = ipaddress.ip_address(address).version
        rtype = "A" if version == 4 else "AAAA"
        spot.fail(
            f"the address {address} appears in no zone; add a record such as "
            f"'mx IN {rtype} {address}' to a zone, or remove this host"
        )
    zone = find_zone(world.zones, host)
    if zone is None:
        parent = host.partition(".")[2] or host
        spot.fail(
            f"host '{host}' is not named by any zone; add a zone such as {parent} with an A "
            "record for it, or remove it"
        )
    relative = host[: -len(zone.apex) - 1] if host != zone.apex else "@"
    spot.fail(
        f"host '{host}' is not named by any zone; add '{relative} IN A "
        f"{world.free_address(4)}' to {zone.apex} or remove it"
    )


def _behaviour(value: object, spot: _Spot) -> Behaviour:
    if isinstance(value, str):
        word = _word(value, spot, CONNECTIONS, "a host behaviour")
        return Behaviour(connection=cast(Literal["accept", "refuse", "timeout", "silent"], word))
    example = f"accept, refuse, timeout, silent or {{greeting: {_REPLY_EXAMPLE}}}"
    if not isinstance(value, Mapping):
        spot.fail(f"{_shown(value)} is not a host behaviour; write one such as {example}")
    mapping = cast(Mapping[object, object], value)
    phase_hint = (
        "until and do belong to phases, which go in a list; write "
        "[{until: 2h, do: refuse}, {do: accept}]"
    )
    _check_keys(mapping, spot, BEHAVIOUR_KEYS, {"until": phase_hint, "do": phase_hint})
    return _scripted_behaviour(mapping, spot)


def _scripted_behaviour(mapping: Mapping[object, object], spot: _Spot) -> Behaviour:
    """An accepting host whose SMTP conversation the mapping scripts."""
    replies = {
        stage: _reply(mapping[stage], _value_spot(mapping, stage, spot), stage)
        for stage in STAGES
        if stage in mapping
    }
    recipients, recipient_phases = _recipient_replies(
        mapping.get("recipients"), _value_spot(mapping, "recipients", spot)
    )
    disconnect = None
    if mapping.get("disconnect") is not None:
        disconnect = _stage(mapping["disconnect"], _value_spot(mapping, "disconnect", spot))
    delays = _delays(mapping.get("delay"), _value_spot(mapping, "delay", spot))
    greylist = None
    if mapping.get("greylist") is not None:
        greylist = _duration(mapping["greylist"], _value_spot(mapping, "greylist", spot))
    max_recipients = None
    if mapping.get("max_recipients") is not None:
        max_recipients = _whole_number(
            mapping["max_recipients"], _value_spot(mapping, "max_recipients", spot), 1, "100"
        )
    tls: HostTls = "valid"
    if mapping.get("tls") is not None:
        tls = _host_tls(mapping["tls"], _value_spot(mapping, "tls", spot))
    max_messages = _limit(mapping, "max_messages", spot, "mail", TOO_MANY_MESSAGES)
    max_connections = _limit(mapping, "max_connections", spot, "greeting", TOO_MANY_CONNECTIONS)
    esmtp = _esmtp(mapping.get("esmtp"), _value_spot(mapping, "esmtp", spot))
    return Behaviour(
        replies=replies,
        recipients=recipients,
        disconnect=disconnect,
        delays=delays,
        greylist=greylist,
        max_recipients=max_recipients,
        tls=tls,
        recipient_phases=recipient_phases,
        max_messages=max_messages,
        max_connections=max_connections,
        esmtp=esmtp,
    )


def _limit(
    mapping: Mapping[object, object], key: str, spot: _Spot, stage: Stage, default: str
) -> Limit | None:
    """``max_messages: 2`` or ``{limit: 2, reply: "452 4.5.3 …"}``: a count and the reply
    past it, which must refuse (4xx or 5xx)."""
    value = mapping.get(key)
    if value is None:
        return None
    here = _value_spot(mapping, key, spot)
    default_reply = _reply(default, here, stage)
    if not isinstance(value, Mapping):
        return Limit(_whole_number(value, here, 1, f"{key}: 2"), default_reply)
    long_form = cast(Mapping[object, object], value)
    _check_keys(long_form, here, LIMIT_KEYS)
    hint = f"write the most it allows, such as {{limit: 2, reply: {_REPLY_EXAMPLE}}}"
    count = _whole_number(
        _require(long_form, "limit", here, hint), _value_spot(long_form, "limit", here), 1, "2"
    )
    if long_form.get("reply") is None:
        return Limit(count, default_reply)
    reply_spot = _value_spot(long_form, "reply", here)
    reply = _reply(long_form["reply"], reply_spot, stage)
    if reply.code < 400:
        reply_spot.fail(
            f"{reply.code} accepts; the reply past a limit refuses: a 4xx or 5xx code, such "
            f'as "{default}"'
        )
    return Limit(count, reply)


def _esmtp(value: object, spot: _Spot) -> Esmtp:
    """``esmtp: {size: 10240, pipelining: false, 8bitmime: false, smtputf8: false}``."""
    if value is None:
        return Esmtp()
    mapping = _as_mapping(value, spot, "{size: 10240, smtputf8: false}")
    _check_keys(mapping, spot, ESMTP_KEYS)

    def flag(key: str, default: bool) -> bool:
        if mapping.get(key) is None:
            return default
        return _flag(mapping[key], _value_spot(mapping, key, spot))

    size: int | None = DEFAULT_SIZE
    if mapping.get("size") is not None:
        size_value = mapping["size"]
        size_spot = _value_spot(mapping, "size", spot)
        if size_value is False:
            size = None
        elif isinstance(size_value, bool) or not isinstance(size_value, int) or size_value < 1:
            size_spot.fail(
                f"{_shown(size_value)} is not a size; write the largest message the host "
                "takes, in bytes, such as size: 10240, or size: false for no SIZE at all"
            )
        else:
            size = size_value
    return Esmtp(
        size=size,
        pipelining=flag("pipelining", False),
        eightbitmime=flag("8bitmime", True),
        smtputf8=flag("smtputf8", True),
    )


def _host_tls(value: object, spot: _Spot) -> HostTls:
    # YAML reads a bare `none` as text, but `tls: null` or `tls: false` as no value at all.
    if value is False:
        value = "none"
    return cast(HostTls, _word(value, spot, HOST_TLS, "a host's TLS setting"))


def _stage(value: object, spot: _Spot) -> Stage:
    return cast(Stage, _word(value, spot, STAGES, "an SMTP stage"))


def _reply(value: object, spot: _Spot, stage: Stage) -> Reply:
    """``"421 4.3.2 Shutting down"`` -> Reply(421, "4.3.2 Shutting down"), a reply that can
    answer ``stage``."""
    _check_size(value, spot)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    match = _REPLY.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        spot.fail(
            f"{_shown(value)} does not start with a 3-digit reply code; write a reply such as "
            f"{_REPLY_EXAMPLE}"
        )
    _check_reply_line(match.group(0), spot)
    code = int(match.group(1))
    if not 200 <= code <= 599:
        spot.fail(
            f"reply code {code} is outside 200-599; use a 4xx code for a temporary failure "
            f"or a 5xx code for a permanent one, such as {_REPLY_EXAMPLE}"
        )
    allowed = POSITIVE_REPLIES[stage]
    if code < 400 and code not in allowed:
        spot.fail(
            f"{code} cannot answer {_ANSWERS[stage]}; RFC 5321 §4.3.2 gives it "
            f"{' or '.join(map(str, allowed))}; a failure is a 4xx or 5xx code, such as "
            f"{_REPLY_EXAMPLE}"
        )
    return Reply(code, (match.group(2) or "").strip())


def _check_reply_line(reply: str, spot: _Spot) -> None:
    """A reply is one line that the host can send as it is."""
    _check_text(
        reply,
        spot,
        line_break="write the reply on one line (sent as it is, a line break would end it "
        "early; the format has no multi-line replies)",
    )
    octets = len(reply.encode())
    if octets > MAX_REPLY_OCTETS:
        spot.fail(
            f"the reply is {octets:,} bytes long, and a reply line has at most 512 with its CRLF "
            f"(RFC 5321 §4.5.3.1.5); shorten it to {MAX_REPLY_OCTETS} bytes or fewer"
        )


def _recipient_replies(
    value: object, spot: _Spot
) -> tuple[dict[str, Reply], dict[str, Timeline[Reply]]]:
    """The replies for some mailboxes: one reply each, or phases that count RCPTs
    (``[{times: 1, do: "451 4.2.0 busy"}, {do: "250 2.1.5 ok"}]``)."""
    if value is None:
        return {}, {}
    example = '{"carol@example.test": "550 5.1.1 No such user"}'
    mapping = _as_mapping(value, spot, example)
    replies: dict[str, Reply] = {}
    phases: dict[str, Timeline[Reply]] = {}
    for key, reply in mapping.items():
        address = _mailbox(key, _key_spot(mapping, key, spot), "the recipient")
        here = _value_spot(mapping, key, spot)
        if isinstance(reply, list | tuple):
            phases[address] = _phases(
                cast(Sequence[object], reply),
                here,
                lambda v, s: _reply(v, s, "rcpt"),
                BEHAVIOUR_PHASE_KEY,
                counting="only",
            )
        else:
            replies[address] = _reply(reply, here, "rcpt")
    return replies, phases


def _delays(value: object, spot: _Spot) -> dict[Stage, float]:
    if value is None:
        return {}
    mapping = _as_mapping(value, spot, "{greeting: 5m}")
    delays: dict[Stage, float] = {}
    for key, duration in mapping.items():
        stage = _stage(key, _key_spot(mapping, key, spot))
        delays[stage] = _duration(duration, _value_spot(mapping, key, spot))
    return delays


def _dns(value: object, spot: _Spot) -> dict[str, Timeline[DnsBehaviour]]:
    if value is None:
        return {}
    mapping = _as_mapping(value, spot, "{example.test: servfail}")
    dns: dict[str, Timeline[DnsBehaviour]] = {}
    for key, behaviour in mapping.items():
        key_spot = _key_spot(mapping, key, spot)
        name = _domain(key, key_spot, "a DNS name")
        if name in dns:
            key_spot.fail(f"the name {name} is listed twice; keep one entry for it")
        dns[name] = _timeline(behaviour, _value_spot(mapping, key, spot), _dns_behaviour)
    return dns


def _dns_behaviour(value: object, spot: _Spot) -> DnsBehaviour:
    kind = _word(value, spot, DNS_KINDS, "a DNS behaviour")
    return DnsBehaviour(cast(Literal["answer", "servfail", "timeout", "nxdomain"], kind))


# --- messages ----------------------------------------------------------------------------------


def _messages(value: object, spot: _Spot) -> tuple[MessageSpec, ...]:
    if value is None:
        return ()
    example = "[{from: bob@example.net, to: alice@example.test}]"
    messages: list[MessageSpec] = []
    deliveries = 0
    for item, item_spot in _item_spots(_as_list(value, spot, example), spot):
        mapping = _as_mapping(item, item_spot, "{from: bob@example.net, to: alice@example.test}")
        _check_keys(mapping, item_spot, MESSAGE_KEYS)
        sender, recipients, count, at = _message_fields(mapping, item_spot)
        count_spot = _value_spot(mapping, "count", item_spot)
        if len(messages) + count > MAX_MESSAGES:
            count_spot.fail(f"this makes more than {MAX_MESSAGES:,} messages; use a smaller count")
        deliveries += count * len(recipients)
        if deliveries > MAX_DELIVERIES:
            (count_spot if "count" in mapping else _value_spot(mapping, "to", item_spot)).fail(
                f"this makes {deliveries:,} deliveries (messages x recipients, count "
                f"expanded), more than the {MAX_DELIVERIES:,} a run may have; use a smaller "
                "count or fewer recipients"
            )
        line = _mapping_spot(mapping, item_spot).line
        for _ in range(count):
            messages.append(MessageSpec(len(messages) + 1, sender, recipients, at, line))
    return tuple(messages)


def _message_fields(
    mapping: Mapping[object, object], spot: _Spot
) -> tuple[str, tuple[str, ...], int, float]:
    from_hint = 'add from: bob@example.net (or from: "" for a null reverse-path, as in a bounce)'
    sender = _reverse_path(
        _require_present(mapping, "from", spot, from_hint), _value_spot(mapping, "from", spot)
    )
    to_hint = "add to: alice@example.test (or a list of addresses)"
    to_spot = _value_spot(mapping, "to", spot)
    recipients = _recipients(_require(mapping, "to", spot, to_hint), to_spot)
    count = _whole_number(mapping.get("count", 1), _value_spot(mapping, "count", spot), 1, "3")
    at = _duration(mapping.get("at", 0), _value_spot(mapping, "at", spot))
    return sender, recipients, count, at


def _require_present(mapping: Mapping[object, object], key: str, spot: _Spot, hint: str) -> object:
    """Like ``_require``, but an explicit empty value (``from: ""``) is allowed."""
    if key not in mapping:
        _mapping_spot(mapping, spot).child(key, None).fail(f"{key} is missing; {hint}")
    return mapping[key]


def _reverse_path(value: object, spot: _Spot) -> str:
    """The envelope sender: an address, or ``""`` (also ``<>``) for the null reverse-path."""
    if isinstance(value, str) and value.strip() in ("", "<>"):
        return ""
    return _mailbox(value, spot, 'from (or "" for a null reverse-path)')


def _recipients(value: object, spot: _Spot) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        return (_mailbox(value, spot, "to"),)
    items = cast(Sequence[object], value)
    if not items:
        spot.fail("the list of recipients is empty; add at least one address")
    if len(items) > MAX_RECIPIENTS:
        spot.fail(
            f"{len(items):,} recipients are more than the {MAX_RECIPIENTS:,} one message may "
            "have; split them over several messages"
        )
    # A dict keeps the order and finds a repeat in constant time: with a list, checking
    # 100,000 recipients for repeats took a minute.
    recipients: dict[str, None] = {}
    for item, item_spot in _item_spots(items, spot):
        address = _mailbox(item, item_spot, "each recipient")
        if address in recipients:
            item_spot.fail(f"{address} is listed twice; list each recipient once")
        recipients[address] = None
    return tuple(recipients)


# --- sender ------------------------------------------------------------------------------------


def _sender(value: object, spot: _Spot) -> SenderSpec:
    if value is None:
        return SenderSpec()
    mapping = _as_mapping(value, spot, "{profile: postfix}")
    kinds = policy.FIELD_KINDS
    _check_keys(mapping, spot, SENDER_KEYS)
    profile = "postfix"
    if mapping.get("profile") is not None:
        profile_spot = _value_spot(mapping, "profile", spot)
        profile = _word(
            mapping["profile"], profile_spot, tuple(policy.PROFILES), "a known sender profile"
        )
    overrides = {
        str(key): _override(str(key), kinds[str(key)], field_value, _value_spot(mapping, key, spot))
        for key, field_value in mapping.items()
        if key != "profile"
    }
    levels = rules_for(profile).levels
    if "tls" in overrides and overrides["tls"] not in levels:
        allowed = [level for level in policy.LEVELS if level in levels]
        _value_spot(mapping, "tls", spot).fail(
            f"the {profile} profile has no TLS level {overrides['tls']} (its MTA lacks it); "
            f"use one of: {_one_of(allowed)}, or another profile"
        )
    _check_retries(policy.PROFILES[profile].with_overrides(overrides), mapping, spot)
    return SenderSpec(profile, overrides)


def _check_retries(profile: policy.Profile, mapping: Mapping[object, object], spot: _Spot) -> None:
    """A message that keeps failing must be given up on within MAX_ATTEMPTS attempts and
    the virtual clock's range: `retry_interval: 1s` with the lifetime of 5 days made 432,000
    attempts of one message, and Haraka's doubling waits with `max_failures: 100` ran the
    clock past any time it can count."""
    problem = retry_schedule_problem(profile)
    if problem is None:
        return
    if profile.retry == "doubling":
        keys: tuple[str, ...] = ("max_failures",)
    elif profile.retry == "fixed":
        keys = ("retry_interval", "max_lifetime")
    else:
        keys = ("max_backoff", "min_backoff", "max_lifetime")
    _setting_spot(mapping, keys, spot).fail(problem)


def retry_schedule_problem(profile: policy.Profile) -> str | None:
    """Why a message that keeps failing would not be given up on in a run's time, as a
    sentence that says how to mend it; None when it would be. For a profile swapped in at
    run time (``run --profile``), where the scenario's settings meet another schedule."""
    if profile.retry == "doubling":
        # Failure n waits 2^(n+5) s: the failure that bounces comes 2^(N+5) - 64 s in.
        if 2.0 ** (profile.max_failures + 5) - 64 <= MAX_DURATION:
            return None
        return (
            f"with {profile.name}'s doubling waits (2^(n+5) s after failure n), "
            f"max_failures {profile.max_failures} gives up only after "
            f"{format_duration(2.0 ** (profile.max_failures + 5) - 64)}, longer than the "
            f"{format_duration(MAX_DURATION)} a run can cover; use {MAX_DOUBLINGS} or fewer"
        )
    attempts = _attempts_at_most(profile)
    if attempts is None or attempts <= MAX_ATTEMPTS:
        return None
    return (
        f"a message that keeps failing would be tried about {attempts:,} times before it is "
        f"given up on ({format_duration(profile.max_lifetime)} of retries {_every(profile)} "
        f"with the {profile.name} profile), more than the {MAX_ATTEMPTS:,} a run allows; wait "
        "longer between retries or shorten max_lifetime"
    )


def _shortest_wait(profile: policy.Profile) -> float:
    if profile.retry == "fixed":
        return profile.retry_interval
    return min(profile.min_backoff, profile.max_backoff)


def _every(profile: policy.Profile) -> str:
    """How often a failing message is retried, in a few words."""
    low = _shortest_wait(profile)
    if profile.retry == "fixed" or low >= profile.max_backoff:
        return f"every {format_duration(low)}"
    return f"every {format_duration(low)} to {format_duration(profile.max_backoff)}"


def _attempts_at_most(profile: policy.Profile) -> int | None:
    """About how many attempts a message that always fails makes before it bounces, for the
    schedules that retry until max_lifetime (None for Exim's fixed rules)."""
    if profile.retry == "fixed":
        return math.ceil(profile.max_lifetime / profile.retry_interval) + 1
    if profile.retry == "backoff":
        # The wait is the message's age, clamped to [min_backoff, max_backoff]: it doubles
        # from min_backoff up to max_backoff, then stays there.
        low, high = _shortest_wait(profile), profile.max_backoff
        doublings = math.ceil(math.log2(high / low)) + 1 if low < high else 0
        return doublings + math.ceil(profile.max_lifetime / high) + 1
    return None


def _setting_spot(mapping: Mapping[object, object], keys: Sequence[str], spot: _Spot) -> _Spot:
    """The first of ``keys`` the sender mapping writes, or the mapping itself."""
    key = next((key for key in keys if key in mapping), None)
    return _mapping_spot(mapping, spot) if key is None else _value_spot(mapping, key, spot)


def _override(key: str, kind: str | tuple[str, ...], value: object, spot: _Spot) -> object:
    """One sender setting, read the way ``policy.FIELD_KINDS`` says."""
    if key == "helo_name":  # text, but text that goes on the wire in EHLO
        return _helo_name(value, spot)
    if isinstance(kind, tuple):
        return _word(value, spot, kind, "a choice this setting allows")
    if kind == "duration" and key in RETRY_WAITS:
        seconds = _duration(value, spot)
        if seconds <= 0:
            spot.fail(
                f"{key} {_shown(value)} would try a failing message again at the same instant, "
                "for ever; write a wait of more than 0s, such as 5m"
            )
        return seconds
    if kind == "duration":
        return _duration(value, spot)
    if kind == "count":
        return _whole_number(value, spot, 1, "5")
    if kind == "flag":
        return _flag(value, spot)
    if kind == "text":
        return _text(value, spot, "this setting")
    if kind == "bounce_status":
        return _status_of_class(value, spot, "5", "a bounce, which is permanent", "5.1.10")
    if kind == "deferral_status":
        return _status_of_class(value, spot, "4", "a deferral, which is temporary", "4.4.3")
    if kind == "address":
        address = _ip_address(value)
        if address is None:
            spot.fail(f"{_shown(value)} is not an IP address; write one such as 192.0.2.1")
        return address
    if kind == "status":
        return _status_of_class(value, spot, "45", "a failure", "5.1.2")
    if kind == "stages":
        items = _as_list(value, spot, "[greeting, mail, data]")
        return frozenset(
            _word(item, item_spot, _SENDER_STAGES, "an SMTP stage")
            for item, item_spot in _item_spots(items, spot)
        )
    return value  # a kind added to policy after this reader: passed on as written


# --- MTA-STS and DNSSEC -------------------------------------------------------------------------

_POLICY_EXAMPLE = (
    '{example.test: "version: STSv1\\nmode: enforce\\nmx: mx1.example.test\\nmax_age: 86400\\n"}'
)


def _mta_sts(value: object, spot: _Spot, world: _World) -> dict[str, str]:
    """``mta_sts: {domain: policy text}``, each text a valid policy (RFC 8461 §3.2), each
    domain in a zone of the scenario (where its ``_mta-sts`` record goes)."""
    if value is None:
        return {}
    mapping = _as_mapping(value, spot, _POLICY_EXAMPLE)
    policies: dict[str, str] = {}
    for key, text in mapping.items():
        key_spot = _key_spot(mapping, key, spot)
        domain = _domain(key, key_spot, "a policy's domain")
        if domain in policies:
            key_spot.fail(f"the policy of {domain} is written twice; keep one")
        if find_zone(world.zones, domain) is None:
            key_spot.fail(
                f"{domain} is in no zone of this scenario, so no sender can find its policy; "
                f"add a zone for it (with '_mta-sts IN TXT \"v=STSv1; id=1;\"' and an "
                "address for mta-sts), or remove the policy"
            )
        text_spot = _value_spot(mapping, key, spot)
        if not isinstance(text, str):
            text_spot.fail(
                f"the policy must be text, found {_shown(text)}; write it as a block: "
                f"'{domain}: |' and the policy's lines indented below"
            )
        problem = parse_policy(text)
        if isinstance(problem, PolicyProblem):
            _policy_spot(text_spot, problem).fail(
                f"{problem.message} (policy line {problem.line})"
                if problem.line
                else problem.message
            )
        policies[domain] = text
    return policies


def _policy_spot(spot: _Spot, problem: PolicyProblem) -> _Spot:
    """The file line of a policy's line, when the policy is a block of its own."""
    if problem.line and spot.text_line is not None:
        return _Spot(spot.file, spot.key, spot.text_line + problem.line - 1)
    return spot


def _dnssec(value: object, spot: _Spot, zones: Sequence[ZoneSpec]) -> frozenset[str]:
    """``dnssec: [apex, …]``: zones of the scenario, answered as DNSSEC-validated."""
    if value is None:
        return frozenset()
    apexes = [zone.apex for zone in zones]
    items = _as_list(value, spot, "[example.test]")
    signed: set[str] = set()
    for item, item_spot in _item_spots(items, spot):
        apex = _domain(item, item_spot, "a zone's apex")
        if apex not in apexes:
            item_spot.fail(
                f"{apex} is not a zone of this scenario; {_did_you_mean(apex, apexes)}"
                f"list zones from zones: ({_one_of(apexes) or 'none yet'})"
            )
        signed.add(apex)
    return frozenset(signed)


# The stages a sender setting may name: the hosts' stages, and HELO (after a refused EHLO).
_SENDER_STAGES = (*STAGES, "helo")


def _helo_name(value: object, spot: _Spot) -> str:
    """The name the sender gives in EHLO: a host name, or an address literal (RFC 5321
    §4.1.3). It was any text, and a space or a line break in it crashed the run."""
    text = _text(value, spot, "helo_name")
    literal = _ADDRESS_LITERAL.fullmatch(text)
    if literal is not None:
        address = _ip_address(literal.group(2))
        if address is not None and (":" in address) == bool(literal.group(1)):
            return text
    name = text[:-1] if text.endswith(".") else text
    labels = name.lower().split(".")
    if 0 < len(name) <= 253 and all(_LABEL.fullmatch(label) and label != "*" for label in labels):
        return name
    spot.fail(
        f"{_shown(value)} is not a host name; write the name the sender gives in EHLO, such as "
        "mta.example.net (letters, digits and '-'; an international name in its xn-- form), "
        "or an address literal such as [192.0.2.1] or [IPv6:2001:db8::1]"
    )


def _status_of_class(value: object, spot: _Spot, classes: str, what: str, example: str) -> str:
    """A status of the given classes (RFC 3463): 5 for a permanent failure, 4 for a temporary
    one."""
    status = _dsn(value, spot)
    if status[0] not in classes:
        allowed = " or ".join(f"{c}.x.x" for c in classes)
        spot.fail(
            f'{status} is not the status of {what}: write a {allowed} status such as "{example}"'
        )
    return status


# --- expectations ------------------------------------------------------------------------------


class _Known:
    """What expectations are checked against: the world, the messages and, gathered once on
    first use, the recipients of each message (every expectation that names a recipient
    looks it up: gathering them again for each one grew with expectations x recipients)."""

    def __init__(self, world: _World, messages: tuple[MessageSpec, ...]) -> None:
        self.world = world
        self.messages = messages
        self._recipients: dict[int | str, frozenset[str]] = {}

    def recipients_of(self, message: int | Literal["all"]) -> frozenset[str]:
        found = self._recipients.get(message)
        if found is None:
            if message == "all":
                # The copies that `count` makes share one tuple: gather each tuple once.
                distinct = {id(m.recipients): m.recipients for m in self.messages}
                found = frozenset(r for listed in distinct.values() for r in listed)
            else:
                found = frozenset(self.messages[message - 1].recipients)
            self._recipients[message] = found
        return found


def _expectations(value: object, spot: _Spot, known: _Known) -> tuple[Expectation, ...]:
    if value is None:
        return ()
    example = "[{message: 1, status: delivered}]"
    expectations: list[Expectation] = []
    for item, item_spot in _item_spots(_as_list(value, spot, example), spot):
        mapping = _as_mapping(item, item_spot, "{message: 1, status: delivered}")
        if "message" in mapping:
            expectations.append(_delivery_expectation(mapping, item_spot, known))
        elif "host" in mapping:
            expectations.append(_host_expectation(mapping, item_spot, known))
        elif "tls_report" in mapping:
            expectations.append(_tls_report_expectation(mapping, item_spot))
        else:
            item_spot.fail(
                "an expectation needs message: N (about a delivery), host: NAME (about a "
                "host) or tls_report: DOMAIN (about a TLS report); add one of them"
            )
    return tuple(expectations)


def _delivery_expectation(
    mapping: Mapping[object, object], spot: _Spot, known: _Known
) -> DeliveryExpectation:
    misplaced = {
        key: f"'{key}' belongs to an expectation about a host; move it to its own "
        f"{{host: NAME, {key}: …}}"
        for key in HOST_EXPECTATION_KEYS
        if key != "host"
    }
    _check_keys(mapping, spot, DELIVERY_KEYS, misplaced)

    def at(key: str) -> _Spot:
        return _value_spot(mapping, key, spot)

    def optional(key: str, read: Callable[[object, _Spot], _T]) -> _T | None:
        return None if mapping.get(key) is None else read(mapping[key], at(key))

    message = _message_number(mapping["message"], at("message"), len(known.messages))
    recipient = optional("recipient", lambda v, s: _mailbox(v, s, "recipient"))
    if recipient is not None:
        _check_recipient(recipient, message, at("recipient"), known)
    status = optional("status", lambda v, s: _word(v, s, STATUSES, "a delivery status"))
    after = optional("after", _duration)
    before = optional("before", _duration)
    if after is not None and before is not None and after >= before:
        at("before").fail(
            f"before ({format_duration(before)}) must be later than after "
            f"({format_duration(after)}); swap them or widen the window"
        )
    return DeliveryExpectation(
        message=message,
        recipient=recipient,
        status=cast(Literal["delivered", "bounced", "deferred"] | None, status),
        host=optional("host", lambda v, s: _expected_host(v, s, known.world)),
        dsn=optional("dsn", _dsn),
        attempts=optional("attempts", lambda v, s: _whole_number(v, s, 0, "1")),
        after=after,
        before=before,
        line=_mapping_spot(mapping, spot).line,
        tls=optional("tls", _tls_expectation),
    )


def _tls_expectation(value: object, spot: _Spot) -> TlsExpectation:
    if value is False:
        value = "plain"  # YAML's `tls: no`
    return cast(TlsExpectation, _word(value, spot, TLS_EXPECTATIONS, "what TLS to expect"))


def _tls_report_expectation(mapping: Mapping[object, object], spot: _Spot) -> TlsReportExpectation:
    misplaced = {
        key: f"'{key}' is about a message or a host; write it in an expectation of its own"
        for key in (*DELIVERY_KEYS, *HOST_EXPECTATION_KEYS)
    }
    _check_keys(mapping, spot, TLS_REPORT_KEYS, misplaced)

    def at(key: str) -> _Spot:
        return _value_spot(mapping, key, spot)

    def count(key: str) -> int | None:
        value = mapping.get(key)
        return None if value is None else _whole_number(value, at(key), 0, "1")

    result = None
    if mapping.get("result") is not None:
        result = _word(mapping["result"], at("result"), RESULT_TYPES, "a TLS-RPT result type")
    return TlsReportExpectation(
        domain=_domain(mapping["tls_report"], at("tls_report"), "tls_report"),
        successes=count("successes"),
        failures=count("failures"),
        result=result,
        line=_mapping_spot(mapping, spot).line,
    )


def _message_number(value: object, spot: _Spot, total: int) -> int | Literal["all"]:
    if isinstance(value, str) and value.strip().lower() == "all":
        return "all"
    _check_size(value, spot)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        spot.fail(f"{_shown(value)} is not a message number; write 1, 2, … or all")
    if total == 0:
        spot.fail(f"there is no message {value} because the scenario has none; add messages")
    if value > total:
        plural = "" if total == 1 else "s"
        spot.fail(
            f"there is no message {value} because the scenario has {total} message{plural} "
            f"(count expanded); use a number from 1 to {total}, or all"
        )
    return value


def _check_recipient(
    recipient: str, message: int | Literal["all"], spot: _Spot, known: _Known
) -> None:
    listed = known.recipients_of(message)
    if not listed:
        spot.fail("the scenario has no messages, so no recipients; add messages or remove this")
    if recipient not in listed:
        which = "any message" if message == "all" else f"message {message}"
        choices = sorted(listed)
        spot.fail(
            f"{recipient} is not a recipient of {which}; "
            f"{_did_you_mean(recipient, choices)}use one of: {_some_of(choices)}"
        )


def _expected_host(value: object, spot: _Spot, world: _World) -> str:
    host = _ip_address(value) or _domain(value, spot, "host")
    if not world.names_host(host):
        named = sorted(world.host_names)
        spot.fail(
            f"no zone names the host '{host}'; {_did_you_mean(host, named)}"
            f"use a host that has an A or AAAA record in a zone"
        )
    return host


def _dsn(value: object, spot: _Spot) -> str:
    if not isinstance(value, str) or not _DSN.fullmatch(value.strip()):
        spot.fail(
            f"{_shown(value)} is not a DSN status code; write it in quotes as class.subject.detail,"
            ' such as "5.1.1"'
        )
    return value.strip()


def _host_expectation(
    mapping: Mapping[object, object], spot: _Spot, known: _Known
) -> HostExpectation:
    misplaced = {
        key: f"'{key}' is about a message; add message: N (or message: all) to this expectation"
        for key in DELIVERY_KEYS
        if key != "host"
    }
    _check_keys(mapping, spot, HOST_EXPECTATION_KEYS, misplaced)

    def at(key: str) -> _Spot:
        return _value_spot(mapping, key, spot)

    def count(key: str) -> int | None:
        value = mapping.get(key)
        return None if value is None else _whole_number(value, at(key), 0, "2")

    share = mapping.get("share")
    tolerance = mapping.get("tolerance")
    return HostExpectation(
        host=_expected_host(mapping["host"], at("host"), known.world),
        accepted=count("accepted"),
        connections=count("connections"),
        share=None if share is None else _fraction(share, at("share"), "0.5"),
        tolerance=0.1 if tolerance is None else _fraction(tolerance, at("tolerance"), "0.1"),
        line=_mapping_spot(mapping, spot).line,
    )


# --- the whole scenario ------------------------------------------------------------------------


def _reject_duplicate_keys(data: object, spot: _Spot) -> None:
    """Report the earliest key that a mapping repeats, anywhere in the document."""
    found: list[tuple[int, _Spot, object, int]] = []
    seen: set[int] = set()

    def walk(value: object, here: _Spot) -> None:
        if id(value) in seen:  # anchors and aliases can make the same object appear twice
            return
        seen.add(id(value))
        if isinstance(value, LineDict):
            for key, first, repeat in value.duplicates:
                found.append((repeat, here.child(key, repeat), key, first))
            for key, child in value.items():
                walk(child, _value_spot(value, key, here))
        elif isinstance(value, LineList):
            for child, child_spot in _item_spots(value, here):
                walk(child, child_spot)

    walk(data, spot)
    if found:
        _, where, key, first = min(found, key=lambda entry: entry[0])
        where.fail(
            f"the key {_shown(key)} appears twice in this mapping (first on line {first}); "
            "keep one of them"
        )


def _name(mapping: Mapping[object, object], spot: _Spot) -> str:
    value = _require(mapping, "name", spot, "add a short slug such as 'name: primary-down'")
    name_spot = _value_spot(mapping, "name", spot)
    _check_size(value, name_spot)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _SLUG.fullmatch(value.strip()):
        name_spot.fail(
            f"{_shown(value)} is not a slug; use letters, digits and '-', such as 'primary-down'"
        )
    if len(value.strip()) > MAX_NAME_LENGTH:
        name_spot.fail(
            f"the name has {len(value.strip()):,} characters, more than the {MAX_NAME_LENGTH} a "
            "name may have (it goes into every message's Message-ID and Subject); shorten it"
        )
    return value.strip()


def _title(value: object, spot: _Spot) -> str:
    title = _text(value, spot, "title")
    _check_text(
        title,
        spot,
        allowed="\t",
        line_break="write the title on one line (the description takes paragraphs)",
    )
    return title


def _description(value: object, spot: _Spot) -> str:
    description = _text(value, spot, "description")
    _check_text(description, spot, allowed="\t\n", line_break="end lines with a plain newline")
    return description


def _seed(value: object, spot: _Spot) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        spot.fail(f"{_shown(value)} is not a whole number; write the seed as one, such as 7")
    if abs(value) >= MAX_SEED:
        spot.fail(
            f"the seed has more than {_SEED_DIGITS} digits; write a shorter one, such as 7 "
            "(it goes into every message's Message-ID, a header line of at most 998 characters)"
        )
    return value


def _build(data: object, source: str) -> Scenario:
    if not isinstance(data, Mapping):
        line = data.line if isinstance(data, LineList) else 1
        found = "an empty file" if data is None else _shown(data)
        _Spot(source, "", line).fail(
            f"expected a mapping of keys such as name, zones, hosts and messages at the top of "
            f"the file, found {found}"
        )
    mapping = cast(Mapping[object, object], data)
    root = _mapping_spot(mapping, _Spot(source, "", None))
    _reject_duplicate_keys(mapping, root)
    _check_keys(mapping, root, TOP_LEVEL_KEYS)

    def at(key: str) -> _Spot:
        return _value_spot(mapping, key, root)

    def optional(key: str, read: Callable[[object, _Spot], _T], default: _T) -> _T:
        return default if mapping.get(key) is None else read(mapping[key], at(key))

    name = _name(mapping, root)
    zones, world = _zones(mapping.get("zones"), at("zones"))
    messages = _messages(mapping.get("messages"), at("messages"))
    return Scenario(
        name=name,
        zones=zones,
        messages=messages,
        title=optional("title", _title, ""),
        description=optional("description", _description, ""),
        seed=optional("seed", _seed, 0),
        until=optional("until", _duration, None),
        hosts=_hosts(mapping.get("hosts"), at("hosts"), world),
        dns=_dns(mapping.get("dns"), at("dns")),
        sender=_sender(mapping.get("sender"), at("sender")),
        expect=_expectations(mapping.get("expect"), at("expect"), _Known(world, messages)),
        source=source,
        mta_sts=_mta_sts(mapping.get("mta_sts"), at("mta_sts"), world),
        dnssec=_dnssec(mapping.get("dnssec"), at("dnssec"), zones),
    )


def load_scenario_text(text: str, source: str = "<scenario>") -> Scenario:
    """A scenario from YAML text; ``source`` names it in error messages."""
    return _build(read_yaml(text, source), source)


def load_scenario(path: str | Path) -> Scenario:
    """A scenario from a YAML file. Every mistake, unreadable file included, is a ScenarioError."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ScenarioError("no such file; check the path", file=source) from None
    except IsADirectoryError:
        raise ScenarioError(
            "this is a directory; give the path of a scenario file", file=source
        ) from None
    except OSError as error:
        reason = error.strerror or str(error)
        raise ScenarioError(
            f"cannot read the file ({reason}); check its permissions", file=source
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise ScenarioError(
            "the file is not UTF-8 text; save it as UTF-8", file=source, line=line
        ) from None
    return load_scenario_text(text, source)


def scenario_from_mapping(data: Mapping[str, object], source: str = "<inline>") -> Scenario:
    """A scenario from a mapping built in Python (the pytest plugin); errors have no lines."""
    return _build(data, source)


def host_behaviour(value: object, source: str = "<behaviour>") -> Timeline[Behaviour]:
    """A host behaviour written as under a scenario's ``hosts``: a word (``refuse``), a mapping
    (``{greylist: 2s}``) or a list of phases. For changing a host at run time (the plugin's
    ``set_behaviour``); a mistake is a ScenarioError naming ``source``."""
    return _timeline(value, _Spot(source, "", None), _behaviour, counting="also")


def dns_behaviour(value: object, source: str = "<dns behaviour>") -> Timeline[DnsBehaviour]:
    """A DNS behaviour written as under a scenario's ``dns``: ``servfail`` or a list of
    phases. For changing a name at run time (the control API); a mistake is a ScenarioError
    naming ``source``."""
    return _timeline(value, _Spot(source, "", None), _dns_behaviour)


def domain_name(value: object, source: str, what: str) -> str:
    """A domain name as a scenario's keys take one (lower case, no final dot), or a
    ScenarioError naming ``source`` that says what ``what`` must look like."""
    return _domain(value, _Spot(source, "", None), what)


def zone_phases(apex: str, value: object, source: str = "<zone>") -> Timeline[Zone]:
    """A zone written as under a scenario's ``zones``: zone text or a list of phases
    ``[{until: 1h, zone: TEXT}, {zone: TEXT}]``, each read by the zone reader. For changing a
    zone at run time (the control API); a mistake is a ScenarioError naming ``source``."""
    apex = domain_name(apex, source, "a zone's apex")
    return _timeline(value, _Spot(source, "", None), _zone_reader(apex), "zone")
