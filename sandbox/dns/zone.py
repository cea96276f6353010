"""Zone text -> records: the scenario's zones, read the way BIND reads a zone file.

Theory of operation
-------------------
A scenario writes each zone as zone-file text (RFC 1035 §5.1), the way people write it for
BIND or paste it from a DNS provider. Reading it takes three passes, each small:

1. **Lines -> tokens.** Each line is split into words, honouring ``;`` comments, quoted
   strings (``"v=spf1 -all"``) and the parentheses that let one record (the SOA, usually)
   span several lines. Every token keeps its line number, and a record keeps the line where
   it starts, so every finding can point at a line the user can see.
2. **Tokens -> entries.** Tokens are joined into entries: one per directive (``$ORIGIN``,
   ``$TTL``) or record. Newlines end an entry unless a ``(`` is still open. A line that
   starts with white space has no owner field: it repeats the previous record's owner.
3. **Entries -> records.** Directives update the origin and the default TTL, and are kept
   with their lines (``Zone.directives``: the lint points at a ``$TTL 0`` line); each record's
   owner, TTL, class and type are read here, and its data by a small reader per common type
   (A, AAAA, MX, CNAME, NS, PTR, SOA, TXT, TLSA) that says in plain words what is wrong and how to
   mend it. Rarer types go to dnslib's own ``fromZone`` readers. The result is a ``dnslib.RR``
   ready to pack, plus the plain fields (name, preference, target, address) that the rest
   of the sandbox reads, so that nothing else has to know dnslib.

Names are kept absolute, in lower case and without the final dot (``mx1.example.test``; the
root is ``""``): DNS compares names case-insensitively, and one spelling everywhere makes
dictionary look-ups and comparisons trivially right.

dnslib's own ``ZoneParser`` is not used for the record structure: it keeps no line numbers,
treats ``@`` in record data as a relative label, and reports mistakes as bare
``ValueError``/``KeyError`` without saying where.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import textwrap
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import dnslib

from sandbox.core.addresses import canonical
from sandbox.core.idn import domain_to_ascii
from sandbox.errors import ZoneSyntaxError

__all__ = [
    "Directive",
    "OriginDirective",
    "TtlDirective",
    "Zone",
    "ZoneIndex",
    "ZoneRecord",
    "find_zone",
    "parse_zone",
    "with_addresses",
]

MAX_TTL = 2**31 - 1  # RFC 2181 §8
# A DNS message over TCP has at most 65,535 bytes (RFC 1035 §4.2.2); besides the answer it
# holds a 12-byte header, the question (the name, then 4 bytes of type and class) and the OPT
# record of EDNS (11 bytes).
_MAX_MESSAGE = 65535
_MESSAGE_OVERHEAD = 12 + 4 + 11
_CLASSES = frozenset({"IN", "CH", "CS", "HS", "NONE", "ANY"})
# Query-only and pseudo types: they have no place in a zone's data.
_META_TYPES = frozenset({"ANY", "OPT", "AXFR", "IXFR", "TKEY", "TSIG"})
_COMMON_TYPES = "A, AAAA, MX, CNAME, NS, TXT, SOA, PTR or SRV"
_TTL_PART = re.compile(r"(\d+)([smhdw]?)", re.IGNORECASE | re.ASCII)
_TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


# --- the public model ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ZoneRecord:
    """One resource record of a zone, with the line of the zone text where it starts."""

    name: str
    rtype: str
    ttl: int
    rdata: str
    line: int
    # dnslib objects define __eq__ without __hash__: left out of comparison (and so of the
    # hash), they would otherwise make every record unhashable. The other fields already
    # say everything the RR holds.
    rr: Any = field(compare=False)
    preference: int | None = None
    target: str | None = None
    address: str | None = None


@dataclass(frozen=True, slots=True)
class OriginDirective:
    """A ``$ORIGIN`` line: from it on, relative names end in ``origin`` (absolute, our spelling)."""

    line: int
    origin: str


@dataclass(frozen=True, slots=True)
class TtlDirective:
    """A ``$TTL`` line: from it on, a record without a TTL of its own gets ``ttl`` seconds."""

    line: int
    ttl: int


Directive = OriginDirective | TtlDirective


@dataclass(frozen=True, slots=True)
class Zone:
    """A parsed zone: its apex, its records in file order, its SOA and its directives."""

    apex: str
    records: tuple[ZoneRecord, ...]
    soa: Any = field(compare=False)
    default_ttl: int
    directives: tuple[Directive, ...] = ()
    # Indexes built once: the servers look names up on every query.
    _by_name: Mapping[str, tuple[ZoneRecord, ...]] = field(init=False, repr=False, compare=False)
    _existing: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name: dict[str, list[ZoneRecord]] = {}
        for record in self.records:
            by_name.setdefault(record.name, []).append(record)
        object.__setattr__(self, "_by_name", {k: tuple(v) for k, v in by_name.items()})
        object.__setattr__(self, "_existing", _with_ancestors(self.names(), self.apex))

    @property
    def ttl_directive(self) -> bool:
        """True when the zone has a ``$TTL`` line (``default_ttl`` is then the first one's)."""
        return any(isinstance(d, TtlDirective) for d in self.directives)

    def names(self) -> frozenset[str]:
        """The owner names of the zone's records, and the apex (which always holds the SOA)."""
        return frozenset(self._by_name) | {self.apex}

    def lookup(self, name: str, rtype: str) -> tuple[ZoneRecord, ...]:
        """The records at exactly ``name`` of type ``rtype`` (``"ANY"``: all), in zone order.

        The synthesised SOA of a zone without one is not a record: see ``soa``.
        """
        records = self._by_name.get(_normalise(name), ())
        wanted = rtype.upper()
        if wanted == "ANY":
            return records
        return tuple(r for r in records if r.rtype == wanted)

    def addresses_of(self, name: str) -> tuple[str, ...]:
        """The A addresses of ``name``, then its AAAA addresses, each in zone order."""
        return tuple(r.address for r in self.lookup(name, "A") if r.address) + tuple(
            r.address for r in self.lookup(name, "AAAA") if r.address
        )

    def contains(self, name: str) -> bool:
        """True when ``name`` is at or below the apex."""
        return _is_at_or_below(_normalise(name), self.apex)

    def exists(self, name: str) -> bool:
        """True when ``name`` owns records or is an empty non-terminal (a name below it does).

        This is what separates NODATA from NXDOMAIN (RFC 8020): ``b.example.test`` exists
        when only ``a.b.example.test`` has records.
        """
        return _normalise(name) in self._existing


class ZoneIndex:
    """Zones by apex, for finding the zone that holds a name.

    A look-up walks the name's labels from the full name towards the root and stops at the
    first apex it meets, which is the longest apex containing the name: its cost follows the
    length of the name, not the number of zones. Of two zones with one apex, the first wins.
    """

    __slots__ = ("_by_apex",)

    def __init__(self, zones: Iterable[Zone]) -> None:
        by_apex: dict[str, Zone] = {}
        for zone in zones:
            by_apex.setdefault(zone.apex, zone)
        self._by_apex = by_apex

    def find(self, name: str) -> Zone | None:
        """The zone with the longest apex that contains ``name``, or None."""
        candidate = _normalise(name)
        while True:
            zone = self._by_apex.get(candidate)
            if zone is not None or not candidate:
                return zone
            candidate = candidate.partition(".")[2]

    def __iter__(self) -> Iterator[Zone]:
        return iter(self._by_apex.values())

    def __contains__(self, apex: object) -> bool:
        return apex in self._by_apex


def find_zone(zones: Iterable[Zone], name: str) -> Zone | None:
    """The zone with the longest apex that contains ``name``, or None (a one-off look-up:
    keep a ``ZoneIndex`` to look up many names)."""
    return ZoneIndex(zones).find(name)


def parse_zone(apex: str, text: str, *, default_ttl: int = 3600) -> Zone:
    """Read zone text for the zone at ``apex``. Raises ``ZoneSyntaxError`` with the line."""
    reader = _ZoneReader(_ascii(_normalise(apex), apex, line=1), default_ttl)
    # A zone pasted with a uniform indent (a Python string, say) would otherwise read as
    # "every record repeats the previous owner". Dedenting keeps the line numbers.
    for entry in _entries(textwrap.dedent(text)):
        reader.read(entry)
    return reader.zone()


# --- names -------------------------------------------------------------------------------------


def _normalise(name: str) -> str:
    """Lower case, no final dot: ``MX1.Example.TEST.`` -> ``mx1.example.test``; root -> ``""``."""
    return name.lower().rstrip(".")


def _is_at_or_below(name: str, apex: str) -> bool:
    return apex == "" or name == apex or name.endswith("." + apex)


def _with_ancestors(names: Iterable[str], apex: str) -> frozenset[str]:
    """Every name, and every name between it and the apex (the empty non-terminals)."""
    found: set[str] = set()
    for name in names:
        while _is_at_or_below(name, apex) and name not in found:
            found.add(name)
            if name == apex or not name:
                break
            name = name.partition(".")[2]
    return frozenset(found)


def _label(name: str) -> dnslib.DNSLabel:
    """A dnslib label for an absolute name in our spelling."""
    return dnslib.DNSLabel(name + "." if name else ".")


# --- pass 1 and 2: lines -> tokens -> entries ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Token:
    text: str
    quoted: bool
    line: int


@dataclass(slots=True)
class _Entry:
    line: int
    indented: bool  # the line starts with white space: no owner field
    tokens: list[_Token]


def _entries(text: str) -> Iterable[_Entry]:
    """Join the tokens of each line into entries; parentheses continue an entry."""
    entry: _Entry | None = None
    open_line = 0  # the line of the '(' still open, or 0
    line_no = 0
    # Split on "\n" only: str.splitlines() also breaks at \v, \f and other separators that
    # editors and YAML do not count, and the line numbers must match what the user sees.
    for line_no, raw in enumerate(text.split("\n"), start=1):
        tokens = _tokens(raw.removesuffix("\r"), line_no)
        if entry is None:
            if not tokens:
                continue
            entry = _Entry(line_no, raw[:1] in " \t", [])
        for token in tokens:
            open_line = _take(entry, token, open_line)
        if not open_line:
            if entry.tokens:
                yield entry
            entry = None
    if open_line:
        raise ZoneSyntaxError(
            "this '(' is never closed: add ')' after the record's last field", line=open_line
        )


def _take(entry: _Entry, token: _Token, open_line: int) -> int:
    """Add one token to the entry; return the line of the '(' still open, or 0."""
    if not token.quoted and token.text == "(":
        if open_line:
            raise ZoneSyntaxError(
                f"a second '(' while the one from line {open_line} is still open: "
                "close the first with ')'",
                line=token.line,
            )
        return token.line
    if not token.quoted and token.text == ")":
        if not open_line:
            raise ZoneSyntaxError(
                "')' without a '(' before it: remove it, or open the record with '('",
                line=token.line,
            )
        return 0
    entry.tokens.append(token)
    return open_line


def _tokens(line: str, line_no: int) -> list[_Token]:
    """Split one line into words, quoted strings and parentheses, dropping the comment."""
    tokens: list[_Token] = []
    i = 0
    while i < len(line):
        char = line[i]
        if char in " \t":
            i += 1
        elif char == ";":
            break
        elif char in "()":
            tokens.append(_Token(char, False, line_no))
            i += 1
        elif char == '"':
            text, i = _quoted(line, i + 1, line_no)
            tokens.append(_Token(text, True, line_no))
        else:
            text, i = _word(line, i)
            tokens.append(_Token(text, False, line_no))
    return tokens


def _quoted(line: str, i: int, line_no: int) -> tuple[str, int]:
    """Read a quoted string from just after its opening quote; resolve \\X and \\DDD."""
    start = i
    while i < len(line):
        if line[i] == '"':
            return _unescape(line[start:i]), i + 1
        i += 2 if line[i] == "\\" else 1
    raise ZoneSyntaxError(
        'this quoted string has no closing quote: end it with " on the same line', line=line_no
    )


def _unescape(text: str) -> str:
    """Resolve the zone-file escapes: ``\\X`` is X itself, ``\\DDD`` the character numbered DDD."""
    out: list[str] = []
    i = 0
    while i < len(text):
        digits = text[i + 1 : i + 4]
        if text[i] == "\\" and len(digits) == 3 and _is_number(digits):
            out.append(chr(int(digits)))
            i += 4
        elif text[i] == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _word(line: str, i: int) -> tuple[str, int]:
    """Read an unquoted word; a backslash keeps the next character in the word as written."""
    start = i
    while i < len(line) and line[i] not in ' \t;()"':
        i += 2 if line[i] == "\\" else 1
    return line[start:i], min(i, len(line))


# --- pass 3: entries -> records ------------------------------------------------------------------


class _ZoneReader:
    """Reads entries in order, keeping the state the zone-file format carries between them."""

    def __init__(self, apex: str, default_ttl: int) -> None:
        self.apex = apex
        self.origin = apex
        self.ttl = default_ttl
        self.default_ttl = default_ttl
        self.directives: list[Directive] = []
        self.owner: str | None = None
        self.records: list[ZoneRecord] = []
        # (owner, type) -> (records, bytes of an answer that holds them all so far)
        self.answers: dict[tuple[str, str], tuple[int, int]] = {}

    def read(self, entry: _Entry) -> None:
        first = entry.tokens[0]
        if not entry.indented and not first.quoted and first.text.startswith("$"):
            self._directive(entry)
        else:
            self.records.append(self._record(entry))

    def zone(self) -> Zone:
        soas = [r for r in self.records if r.rtype == "SOA"]
        soa = soas[0].rr if soas else self._synthesised_soa()
        return Zone(self.apex, tuple(self.records), soa, self.default_ttl, tuple(self.directives))

    def _synthesised_soa(self) -> Any:
        """An SOA for a zone that wrote none: every authoritative NODATA/NXDOMAIN needs one."""
        suffix = f".{self.apex}" if self.apex else ""
        rdata = dnslib.SOA(
            _label("ns" + suffix),
            _label("hostmaster" + suffix),
            (1, 3600, 600, 604800, self.default_ttl),
        )
        return dnslib.RR(_label(self.apex), dnslib.QTYPE.SOA, ttl=self.default_ttl, rdata=rdata)

    # -- directives --

    def _directive(self, entry: _Entry) -> None:
        name, args = entry.tokens[0].text.upper(), entry.tokens[1:]
        if name == "$ORIGIN":
            arg = _one_argument(args, "$ORIGIN needs one name, like '$ORIGIN example.test.'", entry)
            self.origin = self.absolute(arg)
            self.directives.append(OriginDirective(entry.line, self.origin))
        elif name == "$TTL":
            arg = _one_argument(args, "$TTL needs one value, like '$TTL 3600' or '$TTL 1h'", entry)
            self.ttl = _ttl(arg)
            if not any(isinstance(d, TtlDirective) for d in self.directives):
                self.default_ttl = self.ttl
            self.directives.append(TtlDirective(entry.line, self.ttl))
        elif name in ("$INCLUDE", "$GENERATE"):
            raise ZoneSyntaxError(
                f"{name} is not supported in a scenario: write the records out instead",
                line=entry.line,
            )
        else:
            raise ZoneSyntaxError(
                f"unknown directive {entry.tokens[0].text}: use $ORIGIN or $TTL", line=entry.line
            )

    # -- records --

    def _record(self, entry: _Entry) -> ZoneRecord:
        fields = list(entry.tokens)
        owner = self._owner(entry, fields)
        ttl, rtype = self._ttl_class_type(entry, fields)
        reader = _RDATA_READERS.get(rtype, _read_other)
        rdata, extras = reader(self, rtype, fields, entry.line)
        rr = dnslib.RR(_label(owner), getattr(dnslib.QTYPE, rtype), ttl=ttl, rdata=rdata)
        self._check_answer_fits(owner, rtype, _packed_length(rr, rtype, entry.line), entry.line)
        if rtype == "SOA":
            self._check_soa(owner, entry.line)
        return ZoneRecord(owner, rtype, ttl, rdata.toZone(), entry.line, rr, **extras)

    def _owner(self, entry: _Entry, fields: list[_Token]) -> str:
        if entry.indented:
            if self.owner is None:
                raise ZoneSyntaxError(
                    "this line starts with a space, so it repeats the previous record's name, "
                    "but there is none yet: start the line with the name (or @)",
                    line=entry.line,
                )
            return self.owner
        token = fields.pop(0)
        # "IN MX 10 mx1" at the start of a line reads as a record owned by a host named
        # "in": almost always an indent lost on the way, so say so instead of obeying.
        if token.text.upper() == "IN" and fields and fields[0].text.upper() in dnslib.RDMAP:
            raise ZoneSyntaxError(
                "the line starts with 'IN', which would be read as a name: start it with the "
                "name (or @), or indent it to repeat the previous record's name",
                line=entry.line,
            )
        owner = self.absolute(token)
        if not _is_at_or_below(owner, self.apex):
            raise ZoneSyntaxError(
                f"'{owner}' is outside the zone {self.apex}: write the name relative to the "
                f"zone (no final dot) or end it with '.{self.apex}.'",
                line=entry.line,
            )
        self.owner = owner
        return owner

    def _ttl_class_type(self, entry: _Entry, fields: list[_Token]) -> tuple[int, str]:
        """Read the optional TTL and class (in either order), then the type."""
        ttl: int | None = None
        while fields and not fields[0].quoted:
            word = fields[0].text
            if _is_number(word[:1]) and ttl is None:
                ttl = _ttl(fields.pop(0))
            elif word.upper() in _CLASSES:
                _check_class(fields.pop(0))
            else:
                break
        if not fields:
            raise ZoneSyntaxError(
                "the record has no type: after the name come an optional TTL and class, then "
                "the type and its data, like 'mx1 IN A 192.0.2.10'",
                line=entry.line,
            )
        return (self.ttl if ttl is None else ttl), _rtype(fields.pop(0))

    def _check_answer_fits(self, owner: str, rtype: str, packed: int, line: int) -> None:
        """The records of one name and type must fit in one answer: a DNS message has at
        most 65,535 bytes even over TCP (RFC 1035 §4.2.2). Past that the server can only
        answer TC=1 with no records, and the sender finds no address (4,100 A records at one
        name loaded, then every message bounced)."""
        name = len(owner) + 2 if owner else 1  # the name's length on the wire
        count, size = self.answers.get((owner, rtype), (0, _MESSAGE_OVERHEAD + name))
        # In the answer the owner is a 2-byte pointer to the question's copy of the name.
        count, size = count + 1, size + packed - name + 2
        if size > _MAX_MESSAGE:
            raise ZoneSyntaxError(
                f"this is {rtype} record number {count:,} of {owner or '.'}, and with it an "
                f"answer of them all no longer fits in one DNS message ({_MAX_MESSAGE:,} bytes, "
                "RFC 1035 §4.2.2): a resolver would get none of them; give this name fewer "
                f"{rtype} records",
                line=line,
            )
        self.answers[(owner, rtype)] = (count, size)

    def _check_soa(self, owner: str, line: int) -> None:
        if owner != self.apex:
            raise ZoneSyntaxError(
                f"the SOA record belongs at the zone's apex: write it as '@ IN SOA …', "
                f"not at {owner}",
                line=line,
            )
        if any(r.rtype == "SOA" for r in self.records):
            raise ZoneSyntaxError(
                "a second SOA record: a zone has exactly one, remove this one", line=line
            )

    def absolute(self, token: _Token) -> str:
        """A name field made absolute against the current origin."""
        return _absolute(token, self.origin)


def _absolute(token: _Token, origin: str) -> str:
    text = token.text
    if text == "@":
        return origin
    if "\\" in text:
        raise ZoneSyntaxError(
            f"'{text}': escapes in names are not supported; use plain letters, digits, '-' and '_'",
            line=token.line,
        )
    if text == ".":
        return ""
    name = text[:-1] if text.endswith(".") else f"{text}.{origin}" if origin else text
    name = _ascii(name.lower(), text, line=token.line)
    _check_name(name, token)
    return name


def _ascii(name: str, written: str, *, line: int) -> str:
    """The name as it goes on the wire: a Unicode name becomes its A-label (``xn--…``), by
    IDNA 2008 as the sandbox's sender asks it (``core.idn``: dnslib's own encoding is IDNA
    2003, which spells ``faß`` as ``fass``), so ``ZoneRecord.name`` equals the name a client
    asks for.
    """
    if name.isascii():
        return name
    try:
        return _normalise(domain_to_ascii(name))
    except ValueError:
        raise ZoneSyntaxError(
            f"'{written}' is not a valid international name: check its spelling, or write "
            "its xn-- form",
            line=line,
        ) from None


def _check_name(name: str, token: _Token) -> None:
    labels = name.split(".") if name else []
    if any(not label for label in labels):
        raise ZoneSyntaxError(
            f"'{token.text}' has an empty label (two dots in a row, or a leading dot): "
            "remove the extra dot",
            line=token.line,
        )
    if any(len(label) > 63 for label in labels) or len(name) > 253:
        raise ZoneSyntaxError(
            f"'{token.text}' is too long: a label has at most 63 characters and a name at most 253",
            line=token.line,
        )


def _one_argument(args: list[_Token], message: str, entry: _Entry) -> _Token:
    if len(args) != 1:
        raise ZoneSyntaxError(message, line=entry.line)
    return args[0]


def _ttl(token: _Token) -> int:
    """Seconds, or BIND's units: ``3600``, ``1h``, ``1h30m``, ``2d``, ``1w``."""
    parts = _TTL_PART.findall(token.text)
    if token.quoted or not parts or "".join(n + u for n, u in parts) != token.text:
        raise ZoneSyntaxError(
            f"'{token.text}' is not a TTL: write seconds like 3600, or 30m, 1h, 2d, 1w",
            line=token.line,
        )
    seconds = 0
    for digits, unit in parts:
        number = _number(digits, MAX_TTL)
        seconds += MAX_TTL + 1 if number is None else number * _TTL_UNITS[unit.lower()]
    if seconds > MAX_TTL:
        raise ZoneSyntaxError(
            f"the TTL {_written(token.text)} is too large: at most {MAX_TTL} seconds",
            line=token.line,
        )
    return seconds


def _is_number(text: str) -> bool:
    # ASCII only: str.isdigit() also accepts "²", which int() then refuses.
    return text.isascii() and text.isdigit()


def _number(text: str, maximum: int) -> int | None:
    """``text`` as a whole number from 0 to ``maximum``, or None when it is not one.

    A long run of digits is never converted: past 4,300 digits Python refuses with a
    ValueError (a `$TTL` of 5,000 nines was a traceback), and no number of a zone has more
    than ten digits (a 32-bit serial).
    """
    if not _is_number(text):
        return None
    significant = text.lstrip("0") or "0"
    if len(significant) > len(str(maximum)):
        return None
    number = int(significant)
    return number if number <= maximum else None


def _written(text: str, most: int = 40) -> str:
    """A word of the zone as an error message shows it: a very long one shortened."""
    return text if len(text) <= most else f"{text[: most - 1]}… ({len(text):,} characters)"


def _check_class(token: _Token) -> None:
    if token.text.upper() != "IN":
        raise ZoneSyntaxError(
            f"class {token.text} is not served: the sandbox serves class IN only "
            "(or leave the class out)",
            line=token.line,
        )


def _rtype(token: _Token) -> str:
    rtype = token.text.upper()
    known = rtype in dnslib.QTYPE.reverse and rtype not in _META_TYPES
    if token.quoted or not known:
        raise ZoneSyntaxError(
            f"unknown record type '{token.text}': write a type like {_COMMON_TYPES}",
            line=token.line,
        )
    if rtype not in dnslib.RDMAP:
        raise ZoneSyntaxError(
            f"dnslib cannot read {rtype} records: the sandbox serves {_COMMON_TYPES} "
            "(among others)",
            line=token.line,
        )
    return rtype


def _packed_length(rr: Any, rtype: str, line: int) -> int:
    """Pack the record once now, so that a record that cannot go on the wire fails here; its
    length on the wire."""
    buffer = dnslib.DNSBuffer()
    try:
        rr.pack(buffer)
    except Exception as exc:  # dnslib raises many kinds; all mean "bad data"
        raise ZoneSyntaxError(f"the {rtype} record cannot be encoded: {exc}", line=line) from exc
    return len(buffer.data)


# --- record data readers --------------------------------------------------------------------------

# Each reader takes the data fields and returns the dnslib RD and the ZoneRecord's extras.
_Extras = dict[str, Any]
_Reader = Callable[[_ZoneReader, str, list[_Token], int], tuple[Any, _Extras]]


def _fields(fields: list[_Token], count: int, message: str, line: int) -> list[_Token]:
    if len(fields) != count:
        raise ZoneSyntaxError(message, line=line)
    return fields


def _read_a(zr: _ZoneReader, rtype: str, fields: list[_Token], line: int) -> tuple[Any, _Extras]:
    example = "'mx1 IN A 192.0.2.10'" if rtype == "A" else "'mx1 IN AAAA 2001:db8::10'"
    family = "IPv4" if rtype == "A" else "IPv6"
    (token,) = _fields(fields, 1, f"{rtype} needs one {family} address, like {example}", line)
    parse = ipaddress.IPv4Address if rtype == "A" else ipaddress.IPv6Address
    try:
        address = str(parse(token.text))
    except ValueError:
        raise ZoneSyntaxError(
            f"'{token.text}' is not an {family} address: {rtype} needs one, like {example}",
            line=token.line,
        ) from None
    rdata = dnslib.A(address) if rtype == "A" else dnslib.AAAA(address)
    return rdata, {"address": address}


def _read_mx(zr: _ZoneReader, rtype: str, fields: list[_Token], line: int) -> tuple[Any, _Extras]:
    message = "MX needs a preference and a host name, like '@ IN MX 10 mx1'"
    pref_token, host_token = _fields(fields, 2, message, line)
    preference = _uint16(pref_token, "the MX preference", "'@ IN MX 10 mx1'")
    target = zr.absolute(host_token)
    return dnslib.MX(_label(target), preference), {"preference": preference, "target": target}


def _read_host(zr: _ZoneReader, rtype: str, fields: list[_Token], line: int) -> tuple[Any, _Extras]:
    example = {"CNAME": "'www IN CNAME web1'", "NS": "'@ IN NS ns1'"}.get(
        rtype, f"'name IN {rtype} host.example.test.'"
    )
    (token,) = _fields(fields, 1, f"{rtype} needs one host name, like {example}", line)
    target = zr.absolute(token)
    return dnslib.RDMAP[rtype](_label(target)), {"target": target}


def _read_soa(zr: _ZoneReader, rtype: str, fields: list[_Token], line: int) -> tuple[Any, _Extras]:
    message = (
        f"SOA needs 7 fields (it has {len(fields)}): primary server, contact, serial, refresh, "
        "retry, expire and minimum TTL, like '@ IN SOA ns1 hostmaster ( 1 1h 15m 1w 1h )'"
    )
    mname, rname, serial, *times = _fields(fields, 7, message, line)
    number = _number(serial.text, 2**32 - 1)
    if number is None:
        raise ZoneSyntaxError(
            f"'{_written(serial.text)}' is not an SOA serial: write a whole number from 0 to "
            f"{2**32 - 1}, like 2024010101",
            line=serial.line,
        )
    values = (number, *(_ttl(t) for t in times))
    rdata = dnslib.SOA(_label(zr.absolute(mname)), _label(zr.absolute(rname)), values)
    return rdata, {}


def _read_txt(zr: _ZoneReader, rtype: str, fields: list[_Token], line: int) -> tuple[Any, _Extras]:
    if not fields:
        raise ZoneSyntaxError(
            "TXT needs at least one string, like '@ IN TXT \"v=spf1 -all\"'", line=line
        )
    try:
        strings = [(t.text if t.quoted else _unescape(t.text)).encode() for t in fields]
    except UnicodeEncodeError as error:  # half a surrogate pair: YAML's "\ud800" writes one
        raise ZoneSyntaxError(
            f"the TXT data has U+{ord(error.object[error.start]):04X}, half of a UTF-16 "
            "surrogate pair and no character of its own: remove it, or write the whole character",
            line=line,
        ) from None
    if any(len(s) > 255 for s in strings):
        raise ZoneSyntaxError(
            "a TXT string is longer than 255 bytes: split it into several quoted strings "
            'on the same record, like "first part" "second part"',
            line=line,
        )
    return dnslib.TXT(strings), {}


def _read_other(
    zr: _ZoneReader, rtype: str, fields: list[_Token], line: int
) -> tuple[Any, _Extras]:
    """Any other type dnslib knows: its own reader, with names relative to the origin."""
    words = [t.text for t in fields]
    shown = _written(" ".join(words), 80)
    try:
        return dnslib.RDMAP[rtype].fromZone(words, _label(zr.origin)), {}
    except Exception as exc:  # dnslib's readers raise whatever their parsing hits
        raise ZoneSyntaxError(
            f"could not read the {rtype} data '{shown}' ({exc}): check the fields "
            f"against the {rtype} format",
            line=line,
        ) from exc


_TLSA_EXAMPLE = "'_25._tcp.mx1 IN TLSA 3 1 1 0c72ac70…'"
_TLSA_FIELDS = ("the usage", "the selector", "the matching type")


def _read_tlsa(zr: _ZoneReader, rtype: str, fields: list[_Token], line: int) -> tuple[Any, _Extras]:
    """TLSA (RFC 6698 §2.2): usage, selector and matching type (0-255 each), then the
    certificate association data in hex, which may be split by white space."""
    if len(fields) < 4:
        raise ZoneSyntaxError(
            "TLSA needs a usage, a selector, a matching type and the data in hex, like "
            f"{_TLSA_EXAMPLE} (DANE-EE, the key's SHA-256)",
            line=line,
        )
    numbers = [_uint8(token, what) for token, what in zip(fields, _TLSA_FIELDS, strict=False)]
    digits = "".join(t.text for t in fields[3:])
    if not re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", digits):
        raise ZoneSyntaxError(
            f"'{digits}' is not TLSA data: write whole bytes in hex (two digits each), like "
            f"{_TLSA_EXAMPLE}",
            line=fields[3].line,
        )
    usage, selector, matching = numbers
    return dnslib.TLSA(usage, selector, matching, bytes.fromhex(digits)), {}


def _uint8(token: _Token, what: str) -> int:
    number = _number(token.text, 255)
    if number is None:
        raise ZoneSyntaxError(
            f"'{_written(token.text)}' is not {what} of a TLSA record: write a number from 0 "
            f"to 255, like {_TLSA_EXAMPLE}",
            line=token.line,
        )
    return number


def _uint16(token: _Token, what: str, example: str) -> int:
    number = _number(token.text, 65535)
    if number is None:
        raise ZoneSyntaxError(
            f"'{_written(token.text)}' is not {what}: write a number from 0 to 65535, like "
            f"{example}",
            line=token.line,
        )
    return number


_RDATA_READERS: dict[str, _Reader] = {
    "A": _read_a,
    "AAAA": _read_a,
    "MX": _read_mx,
    "CNAME": _read_host,
    "NS": _read_host,
    "PTR": _read_host,
    "SOA": _read_soa,
    "TXT": _read_txt,
    "TLSA": _read_tlsa,
}


# --- serve mode: the same zone, answered with other addresses -----------------------------------


def with_addresses(zone: Zone, answers: Mapping[str, str]) -> Zone:
    """``zone`` with every address in ``answers`` (zone address → served address) swapped
    for the served one: A and AAAA records, and MX records that name an IP literal."""
    records = tuple(_with_address(record, answers) for record in zone.records)
    if records == zone.records:
        return zone
    return dataclasses.replace(zone, records=records)


def _with_address(record: ZoneRecord, answers: Mapping[str, str]) -> ZoneRecord:
    if record.address is not None:
        served = answers.get(canonical(record.address))
        if served is None or served == canonical(record.address):
            return record
        packed = ipaddress.ip_address(served).packed
        rdata = dnslib.A(served) if record.rtype == "A" else dnslib.AAAA(tuple(packed))
        return dataclasses.replace(_with_rdata(record, rdata), address=served)
    if record.rtype == "MX" and record.target and record.preference is not None:
        try:
            served = answers.get(canonical(record.target))
        except ValueError:  # a host name, not an IP literal
            return record
        if served is None:
            return record
        mx = dnslib.MX(served + ".", record.preference)
        return dataclasses.replace(_with_rdata(record, mx), target=served)
    return record


def _with_rdata(record: ZoneRecord, rdata: Any) -> ZoneRecord:
    rr = dnslib.RR(record.rr.rname, record.rr.rtype, record.rr.rclass, record.ttl, rdata)
    return dataclasses.replace(record, rdata=rdata.toZone(), rr=rr)
