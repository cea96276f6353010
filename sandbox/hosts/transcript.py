"""What a mail host's sessions look like to a reader: a whole session in one line."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["session_outline"]


def session_outline(transcript: Iterable[tuple[float, str, str]]) -> str:
    """A session in one line: ``220, EHLO→250, MAIL→250, RCPT→451, QUIT→221``.

    Each command is paired with the code of its reply (the last line of a multi-line reply);
    a command that got no reply shows ``→…``.
    """
    parts: list[str] = []
    pending: str | None = None
    for _, side, line in transcript:
        if side == "C":
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
