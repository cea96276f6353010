"""What a mail host keeps of its sessions, and how a reader sees them.

``SessionLog`` grows while a session runs and freezes into a ``SessionRecord``; ``ClientLines``
turns the bytes a client sends into transcript lines; ``StoredMessage`` is a message the host
accepted; ``session_outline`` puts a whole session in one line.
"""

from __future__ import annotations

import email.policy
import sys
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Literal

__all__ = [
    "ClientLines",
    "SessionLog",
    "SessionRecord",
    "StoredMessage",
    "decode_line",
    "session_outline",
]

# A client line longer than this (with no end of line) is recorded in pieces, not buffered.
_MAX_PENDING = 8192

Line = tuple[float, str, str]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message the host accepted, as it arrived (``data`` is the raw content)."""

    t: float
    sender: str
    recipients: tuple[str, ...]
    data: bytes
    message_id: str
    client: str

    @property
    def email(self) -> EmailMessage:
        """The content parsed with ``email.policy.default``. SMTP carries CRLF line ends;
        they become ``\\n`` first, the line end that policy writes and expects."""
        text = self.data.replace(b"\r\n", b"\n")
        return BytesParser(policy=email.policy.default).parsebytes(text)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One connection as the host saw it. ``transcript`` holds ``(t, "C"|"S", line)``; the
    message content appears as one line ``<message: N bytes>``. ``closed`` is ``None`` while
    the session is open."""

    opened: float
    closed: float | None
    client: str
    behaviour: str
    transcript: tuple[tuple[float, str, str], ...]
    tls: str = ""  # the TLS version once STARTTLS completed; "" in plain text


class SessionLog:
    """The live, growing record of one session; :meth:`snapshot` freezes it.

    Bounded on request (serve mode): it keeps the first ``head`` lines and the last ``tail``,
    each cut at ``line_chars`` characters, and in place of the lines between, one line
    ``<… N more lines not kept>`` (on the client's side, like ``<message: N bytes>``)."""

    def __init__(
        self,
        clock: Callable[[], float],
        client: str,
        behaviour: str,
        *,
        head: int = sys.maxsize,
        tail: int = 0,
        line_chars: int = sys.maxsize,
    ) -> None:
        self._clock = clock
        self.opened = clock()
        self.closed: float | None = None
        self.client = client
        self.behaviour = behaviour
        self._head_lines: list[Line] = []
        self._head = head
        self._tail: deque[Line] = deque(maxlen=tail)
        self._line_chars = line_chars
        self._left_out = 0
        self._left_out_since = 0.0
        self.tls = ""  # the TLS version, once STARTTLS has completed

    def add(self, side: Literal["C", "S"], line: str) -> None:
        if len(line) > self._line_chars:
            line = line[: self._line_chars] + "…"
        entry = (self._clock(), side, line)
        if len(self._head_lines) < self._head:
            self._head_lines.append(entry)
            return
        tail = self._tail
        if len(tail) == tail.maxlen:  # the oldest line of the tail, or this one, goes
            if not self._left_out:
                self._left_out_since = tail[0][0] if tail else entry[0]
            self._left_out += 1
        if tail.maxlen:
            tail.append(entry)

    def add_raw(self, side: Literal["C", "S"], raws: list[bytes]) -> None:
        """Lines from the wire, without their LF, said at once: what :meth:`add` does with
        each, but a bounded log decodes only those it keeps, and counts the rest."""
        room = max(0, self._head - len(self._head_lines))
        for raw in raws[:room]:
            self.add(side, decode_line(raw.rstrip(b"\r\n")))
        rest = raws[room:]
        most = self._tail.maxlen or 0
        skipped = len(rest) - most  # would go through the tail and out again: only counted
        if skipped > 0:
            if not self._left_out:
                self._left_out_since = self._tail[0][0] if self._tail else self._clock()
            self._left_out += skipped
            rest = rest[skipped:]
        for raw in rest:  # add() counts what they push out of the tail
            self.add(side, decode_line(raw.rstrip(b"\r\n")))

    @property
    def lines(self) -> tuple[Line, ...]:
        """The transcript so far, as the snapshot will hold it."""
        if not self._left_out:
            return (*self._head_lines, *self._tail)
        gap = (self._left_out_since, "C", f"<… {self._left_out} more lines not kept>")
        return (*self._head_lines, gap, *self._tail)

    def close(self) -> None:
        if self.closed is None:
            self.closed = self._clock()

    def snapshot(self) -> SessionRecord:
        return SessionRecord(
            self.opened, self.closed, self.client, self.behaviour, self.lines, self.tls
        )


class ClientLines:
    """Splits what a client sends into transcript lines.

    Commands end at LF (as aiosmtpd reads them). Between a 354 and the final dot the bytes
    are message content: only counted, then logged as one ``<message: N bytes>`` line.

    A client may send its content before the 354 arrives (pipelining it behind DATA). Whether
    those bytes are content depends on the reply to DATA, so with ``hold_after_data_up_to``
    (the server's longest command: a longer DATA line is refused before it is read as DATA)
    the bytes after a DATA command are held until the session says: :meth:`start_content`
    (a 354) or :meth:`data_refused` (any other reply: they were commands after all).
    """

    def __init__(self, log: SessionLog, *, hold_after_data_up_to: int | None = None) -> None:
        self._log = log
        self._pending = bytearray()
        self._content: int | None = None  # bytes of message content so far, None outside DATA
        self._mid_line = False  # inside content, a long line was counted in pieces
        # The longest DATA command whose reply is waited for; None: never hold.
        self._hold_after_data_up_to = hold_after_data_up_to
        self._held = False  # a DATA command waits for its reply; the bytes after it wait too
        self.contents = 0  # how many times content started (354s), to tell DATAs apart

    def start_content(self) -> None:
        """DATA got its 354: what follows is content. :meth:`catch_up` reads what is held."""
        self._content = 0
        self._mid_line = False
        self._held = False
        self.contents += 1

    def data_refused(self) -> None:
        """The DATA command got no 354: the bytes held after it are commands after all."""
        if self._held:
            self._held = False
            self.catch_up()

    def never_hold(self) -> list[str]:
        """Stop holding bytes after DATA (a session that answers 503 to everything); return
        the command lines that were held."""
        self._hold_after_data_up_to = None
        self._held = False
        return self.catch_up()

    def catch_up(self) -> list[str]:
        """Log the complete lines already received; return the command lines among them."""
        return self.feed(b"")

    def feed(self, data: bytes, *, commands: bool = True) -> list[str]:
        """Log the complete lines in ``data``; return the command lines among them (none
        when ``commands`` is False: the caller does not need them, and a flood of lines is
        then logged in bulk, only those the log keeps decoded)."""
        self._pending += data
        found: list[str] = []
        if not commands and self._content is None and not self._held:
            self._bulk()
        while self._next_line(found):
            pass
        return found

    def _bulk(self) -> None:
        end = self._pending.rfind(b"\n")
        if end < 0:
            return
        block = bytes(self._pending[: end + 1])
        if self._hold_after_data_up_to is not None and b"DATA" in block.upper():
            return  # a DATA among them: line by line, to hold what follows it
        del self._pending[: end + 1]
        raws = block.split(b"\n")
        raws.pop()  # after the last end of line: nothing
        self._log.add_raw("C", raws)

    def finish(self) -> None:
        """The connection ended: log what was cut off."""
        self._held = False
        self.catch_up()
        if self._content is not None:
            self._content += len(self._pending)
            self._log.add("C", f"<message: {self._content} bytes, incomplete>")
        elif self._pending:
            self._log.add("C", decode_line(bytes(self._pending)))
        self._pending.clear()
        self._content = None

    def _next_line(self, commands: list[str]) -> bool:
        if self._content is not None:
            return self._next_content_line()
        if self._held:
            return False
        end = self._pending.find(b"\n")
        if end < 0:
            if len(self._pending) > _MAX_PENDING:
                self._log.add("C", decode_line(bytes(self._pending)) + "…")
                self._pending.clear()
            return False
        raw = bytes(self._pending[: end + 1]).rstrip(b"\r\n")
        del self._pending[: end + 1]
        line = decode_line(raw)
        self._log.add("C", line)
        commands.append(line)
        # aiosmtpd's reading of the verb: the word before the first space, in any case; a
        # longer line than a command may be is refused before it reaches smtp_DATA.
        is_data = raw.partition(b" ")[0].upper() == b"DATA"
        limit = self._hold_after_data_up_to
        if limit is not None and is_data and len(raw) <= limit:
            self._held = True
        return True

    def _next_content_line(self) -> bool:
        assert self._content is not None
        end = self._pending.find(b"\r\n")
        if end < 0:
            if len(self._pending) > _MAX_PENDING:
                # Count all but the last byte, which may be the CR of the line's end.
                self._content += len(self._pending) - 1
                del self._pending[:-1]
                self._mid_line = True
            return False
        line = bytes(self._pending[: end + 2])
        del self._pending[: end + 2]
        if line == b".\r\n" and not self._mid_line:
            self._log.add("C", f"<message: {self._content} bytes>")
            self._content = None
        else:
            self._content += len(line)
        self._mid_line = False
        return True


def decode_line(raw: bytes) -> str:
    """A line from the wire as text; bytes that are not UTF-8 show as U+FFFD."""
    return raw.decode("utf-8", errors="replace")


def session_outline(transcript: Iterable[tuple[float, str, str]]) -> str:
    """A session in one line: ``220, EHLO→250, MAIL→250, RCPT→451, QUIT→221`` (a TLS
    handshake shows as ``TLS: TLSv1.3`` or ``TLS failed``).

    Each command is paired with the code of its reply (the last line of a multi-line reply);
    a command that got no reply shows ``→…``.
    """
    parts: list[str] = []
    pending: str | None = None
    for _, side, line in transcript:
        if side == "C" and line.startswith("<TLS"):  # the handshake: "TLS TLSv1.3"
            if pending is not None:
                parts.append(f"{pending}→…")
            words = line[1:-1].split()
            parts.append(" ".join(words[:2]) if words[:1] == ["TLS:"] else "TLS failed")
            pending = None
        elif side == "C" and line.startswith("<…"):  # lines a bounded transcript left out
            if pending is not None:
                parts.append(f"{pending}→…")
            parts.append(line[1:-1])
            pending = None
        elif side == "C":
            if pending is not None:
                parts.append(f"{pending}→…")
            pending = _verb(line)
        elif line[3:4] != "-":  # the last line of a reply
            code = line[:3]
            parts.append(code if pending is None else f"{pending}→{code}")
            pending = None
    if pending is not None:
        parts.append(f"{pending}→…")
    return ", ".join(parts) or "(nothing said)"


def _verb(line: str) -> str:
    if line.startswith("<message"):
        return "<message>"
    return (line.split(maxsplit=1) or ["(empty line)"])[0].upper()
