"""Broken scenario files, made by mutating good (and known-bad) ones.

Every mutation is a function ``(rng, text) -> text`` that does what a person does to a file
by accident: deletes a span, pastes a YAML token in the wrong place, duplicates or swaps
lines, gets the indentation wrong, writes a strange value, mangles a zone record, or saves
half the file. ``mutant(rng)`` picks a seed file and applies one to three mutations.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

__all__ = ["SEED_TEXTS", "mutant"]

_ROOT = Path(__file__).resolve().parents[2]
SEED_TEXTS: tuple[str, ...] = tuple(
    path.read_text(encoding="utf-8")
    for folder in (_ROOT / "scenarios", _ROOT / "tests" / "data" / "broken")
    for path in sorted(folder.glob("*.yaml"))
)

YAML_TOKENS = (
    ":", ": ", "- ", "-", "[", "]", "{", "}", ",", "&a ", "*a", "*nothing", "!!", "!!str ",
    "!!float ", "!!binary ", "!python/object ", "|", ">", "|-", "'", '"', "#", "%YAML 1.1\n",
    "---\n", "...\n", "? ", "<<: *a\n", "@", "`", "\t", "\n", "\r", "\x00", "\ufeff",
    "\u2028", "é", "\U0001f600", "\\",
)  # fmt: skip
VALUES = (
    "-1", "0", "1e309", "-1e309", ".nan", ".inf", "1_000", "0x10", "0o7", "99999999999999999999",
    "~", "null", "true", "yes", "2024-01-01", "5d5d", "1h30", "-5m", "0s", "1e-300", "1000000000",
    "100001", "[]", "{}", "[1, [2, [3]]]", "{a: {b: {c: d}}}", "'unterminated", '"\\x00"',
    '"\\ud800"', "x" * 300, "421", "999 nine", "550", "mx1.example.test.", "..", "-",
    "192.0.2.999", "::1", "0.0.0.0", "8.8.8.8", "2001:db8::1", "*.example.test",
    "a@b@c", "<>", '""', "@example.test",
)  # fmt: skip
ZONE_TOKENS = (
    "$ORIGIN ", "$TTL ", "$INCLUDE /etc/passwd", "$GENERATE 1-100 x A 1.2.3.$", "(", ")", ";",
    "@", "IN", "CH", "MX", "A", "AAAA", "CNAME", "TXT", "SOA", "SRV", "NS", "PTR", "CAA",
    "TYPE65534", "\\# 0", '"', "\\", "*", "..", "mx1.", "192.0.2.999", "::ffff:1.2.3.4",
    "65536", "-1", "2147483648", "4294967296", "1w2d", "xn--", "a" * 64, "b" * 300, "\t",
    "0 .", "10 mx1", "mx1 IN A 192.0.2.10", "@ IN MX 10 @", "@ IN CNAME @",
)  # fmt: skip

Mutation = Callable[[random.Random, str], str]


def _delete_span(rng: random.Random, text: str) -> str:
    start = rng.randrange(len(text) + 1)
    return text[:start] + text[start + rng.randrange(1, 40) :]


def _insert_token(rng: random.Random, text: str) -> str:
    at = rng.randrange(len(text) + 1)
    return text[:at] + rng.choice(YAML_TOKENS) + text[at:]


def _lines_op(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    op = rng.randrange(4)
    if op == 0:
        lines.insert(j, lines[i])  # duplicated
    elif op == 1:
        lines[i], lines[j] = lines[j], lines[i]  # swapped
    elif op == 2:
        lines[i] = rng.choice((" ", "  ", "    ", "\t", " \t")) + lines[i]  # indented
    else:
        lines[i] = lines[i].lstrip()  # dedented
    return "\n".join(lines)


def _replace_value(rng: random.Random, text: str) -> str:
    """The value after some ``key: `` (or list dash) becomes something strange."""
    marks = [i + 2 for i in range(len(text) - 1) if text[i : i + 2] in (": ", "- ")]
    if not marks:
        return _insert_token(rng, text)
    start = rng.choice(marks)
    end = text.find("\n", start)
    end = len(text) if end < 0 else end
    for stop in (",", "}", "]"):  # inside a flow mapping, only up to the next item
        found = text.find(stop, start, end)
        if found >= 0:
            end = found
    return text[:start] + rng.choice(VALUES) + text[end:]


def _mangle_zone(rng: random.Random, text: str) -> str:
    """Paste zone-file tokens into the indented lines under a zone's ``|``."""
    lines = text.split("\n")
    zone_lines = [
        i
        for i, line in enumerate(lines)
        if line.startswith("    ") and not line.strip().startswith("-")
    ]
    if not zone_lines:
        return _insert_token(rng, text)
    for _ in range(rng.randrange(1, 4)):
        i = rng.choice(zone_lines)
        words = lines[i].split(" ")
        at = rng.randrange(len(words) + 1)
        words.insert(at, rng.choice(ZONE_TOKENS))
        lines[i] = " ".join(words)
    return "\n".join(lines)


def _truncate(rng: random.Random, text: str) -> str:
    return text[: rng.randrange(len(text) + 1)]


def _random_chars(rng: random.Random, text: str) -> str:
    at = rng.randrange(len(text) + 1)
    junk = "".join(
        chr(rng.choice((rng.randrange(32), rng.randrange(32, 0x3000)))) for _ in range(5)
    )
    return text[:at] + junk + text[at:]


MUTATIONS: tuple[Mutation, ...] = (
    _delete_span,
    _insert_token,
    _lines_op,
    _replace_value,
    _replace_value,
    _mangle_zone,
    _mangle_zone,
    _truncate,
    _random_chars,
)


def mutant(rng: random.Random) -> str:
    text = rng.choice(SEED_TEXTS)
    for _ in range(rng.randrange(1, 4)):
        text = rng.choice(MUTATIONS)(rng, text)
    return text
