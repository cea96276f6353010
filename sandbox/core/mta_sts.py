"""MTA-STS (RFC 8461): the ``_mta-sts`` TXT record, the policy text and MX matching, sans I/O.

A domain announces a policy with a TXT record at ``_mta-sts.<domain>`` (§3.1) and serves the
policy itself over HTTPS at ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` (§3.3). This
module reads both and answers the one question the sender asks of each MX host: does the
policy list it (§4.1)? What a failed check does to the delivery is ``core.tls``'s table.

The policy text (§3.2) is key/value lines, ended by LF or CRLF::

    version: STSv1
    mode: enforce            (enforce | testing | none)
    mx: mx1.example.test     (one line per MX pattern; "*." may lead: one label)
    max_age: 86400           (seconds, at most 31557600)

Reading rules, from the §3.2 ABNF: keys are case-sensitive; white space may follow the colon
and end a line; the text may end with one line end, not more; ``version``, ``mode`` and
``max_age`` are required and ``mx`` is required unless the mode is ``none``; unknown keys are
ignored (§3.2: "unknown fields SHALL be ignored"). A key given twice keeps its first value, as
the MTA-STS drafts said (the RFC's grammar only says "required once").

Every problem is reported as a :class:`PolicyProblem` with its line, so that the same reader
serves the sender (an invalid policy is the TLS-RPT result ``sts-policy-invalid``) and the
scenario checks (``mxsandbox check`` points at the line).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "MAX_AGE_LIMIT",
    "PolicyProblem",
    "StsMode",
    "StsPolicy",
    "StsRecord",
    "choose_record",
    "matches_mx",
    "parse_policy",
    "parse_record",
]

StsMode = Literal["enforce", "testing", "none"]
_MODES: tuple[StsMode, ...] = ("enforce", "testing", "none")
MAX_AGE_LIMIT = 31_557_600  # §3.2: one year

_LINE_END = re.compile(r"\r?\n")
_FIELD = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]{0,31}):[ \t]*(.*?)[ \t]*")
_EXTENSION_VALUE = re.compile(r"[^\x00-\x1f\x7f ](?:[^\x00-\x1f\x7f]*[^\x00-\x1f\x7f ])?")
# RFC 5321 Domain: sub-domain *("." sub-domain), sub-domain = Let-dig [Ldh-str]
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_MX_PATTERN = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")
_MAX_AGE = re.compile(r"[0-9]{1,10}")


@dataclass(frozen=True, slots=True)
class PolicyProblem:
    """Why a policy (or TXT record) cannot be used: ``line`` 1-based, 0 for the whole text."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclass(frozen=True, slots=True)
class StsPolicy:
    """A valid policy. ``lines`` is the text as read, for TLS-RPT's ``policy-string``."""

    mode: StsMode
    max_age: int
    mx: tuple[str, ...]
    lines: tuple[str, ...] = ()

    def lists(self, host: str) -> bool:
        """True when one of the policy's ``mx`` patterns matches the MX host ``host``."""
        return any(matches_mx(pattern, host) for pattern in self.mx)


@dataclass(frozen=True, slots=True)
class StsRecord:
    """The ``_mta-sts`` TXT record: ``v=STSv1; id=...;``. A new ``id`` means a new policy."""

    id: str


# --- the policy ------------------------------------------------------------------------------


def parse_policy(text: str) -> StsPolicy | PolicyProblem:
    """The policy in ``text`` (§3.2), or the first problem found."""
    lines = _LINE_END.split(text)
    if lines and lines[-1] == "":
        lines.pop()  # one final line end is allowed
    if not lines:
        return PolicyProblem(0, "the policy is empty: it needs version, mode, mx and max_age")
    first: dict[str, tuple[int, str]] = {}
    mx: list[str] = []
    for number, line in enumerate(lines, start=1):
        field = _FIELD.fullmatch(line)
        if field is None:
            return PolicyProblem(number, _bad_line(line))
        key, value = field.groups()
        if key == "mx":
            if not _MX_PATTERN.fullmatch(value):
                return PolicyProblem(
                    number,
                    f"'{value}' is not an MX pattern: write a host name, or '*.' and a domain "
                    "('*.example.test' matches one label)",
                )
            mx.append(value.lower())
        elif key not in first:
            if key not in ("version", "mode", "max_age") and not _EXTENSION_VALUE.fullmatch(value):
                return PolicyProblem(number, f"the value of '{key}' is empty or not printable")
            first[key] = (number, value)
    return _policy_from(first, tuple(mx), tuple(lines))


def _bad_line(line: str) -> str:
    if not line.strip():
        return "an empty line: the policy is one 'key: value' per line, with no blank lines"
    if ":" not in line:
        return f"'{line}' is not a 'key: value' line"
    return f"'{line}' is not a 'key: value' line (keys are letters, digits, '_', '-', '.')"


def _policy_from(
    fields: dict[str, tuple[int, str]], mx: tuple[str, ...], lines: tuple[str, ...]
) -> StsPolicy | PolicyProblem:
    for required in ("version", "mode", "max_age"):
        if required not in fields:
            return PolicyProblem(0, f"the policy has no '{required}' line")
    line, version = fields["version"]
    if version != "STSv1":
        return PolicyProblem(line, f"the version is '{version}': MTA-STS policies say 'STSv1'")
    line, mode = fields["mode"]
    if mode not in _MODES:
        return PolicyProblem(line, f"the mode is '{mode}': write enforce, testing or none")
    line, max_age = fields["max_age"]
    if not _MAX_AGE.fullmatch(max_age) or int(max_age) > MAX_AGE_LIMIT:
        return PolicyProblem(
            line, f"max_age '{max_age}' is not a number of seconds from 0 to {MAX_AGE_LIMIT}"
        )
    checked_mode: StsMode = "enforce" if mode == "enforce" else "testing"
    if mode == "none":
        checked_mode = "none"
    elif not mx:
        return PolicyProblem(0, f"a policy in {mode} mode needs at least one 'mx:' line")
    return StsPolicy(checked_mode, int(max_age), mx, lines)


def matches_mx(pattern: str, host: str) -> bool:
    """§4.1: ``pattern`` names ``host`` exactly, or is ``*.`` and a domain that ``host`` is one
    label below (``*.example.test`` matches ``mx1.example.test``, not ``example.test`` nor
    ``a.mx1.example.test``). Names compare without case and without a final dot."""
    pattern = pattern.lower().rstrip(".")
    host = host.lower().rstrip(".")
    if not pattern.startswith("*."):
        return pattern == host
    label, dot, parent = host.partition(".")
    return bool(label and dot) and parent == pattern[2:]


# --- the TXT record --------------------------------------------------------------------------

_TXT_FIELD = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]{0,31})=([\x21-\x3a\x3c\x3e-\x7e]+)")
_ID = re.compile(r"[A-Za-z0-9]{1,32}")


def parse_record(text: str) -> StsRecord | PolicyProblem:
    """The ``_mta-sts`` TXT record (§3.1): ``v=STSv1`` first, then ``id``, separated by
    ``;``."""
    parts = [p.strip(" \t") for p in text.split(";")]
    if parts and parts[-1] == "":
        parts.pop()  # a final ";" is allowed
    if not parts or parts[0] != "v=STSv1":
        return PolicyProblem(0, "an MTA-STS record starts with 'v=STSv1;'")
    found_id: str | None = None
    for part in parts[1:]:
        field = _TXT_FIELD.fullmatch(part)
        if field is None:
            return PolicyProblem(0, f"'{part}' is not a 'key=value' field of an MTA-STS record")
        key, value = field.groups()
        if key == "id" and found_id is None:
            if not _ID.fullmatch(value):
                return PolicyProblem(0, f"id '{value}' must be 1 to 32 letters and digits")
            found_id = value
    if found_id is None:
        return PolicyProblem(0, "the MTA-STS record has no 'id=' field")
    return StsRecord(found_id)


def choose_record(texts: Iterable[str]) -> StsRecord | PolicyProblem:
    """§3.1: of the TXT records at ``_mta-sts.<domain>``, those that start with ``v=STSv1``
    count; unless exactly one does, the domain has no policy."""
    candidates = [t for t in texts if t.startswith("v=STSv1")]
    if len(candidates) != 1:
        return PolicyProblem(
            0, f"{len(candidates)} TXT records start with 'v=STSv1': there must be exactly one"
        )
    return parse_record(candidates[0])
