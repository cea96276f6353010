"""Differences between a real MTA and ``mxsandbox run --profile`` that do not fail the suite.

Two lists, each entry keyed by (MTA, case, field) with a one-line reason:

- ``KNOWN``: differences we keep on purpose (at most two per MTA): the sandbox cannot or
  should not do what the MTA does.
- ``PENDING``: TEMPORARY. The profile is wrong here and is being fixed (FINDINGS.md says what
  the MTA does). Each entry is removed when the profile matches; an entry that agrees again is
  reported as stale in the agreement table, so the list only shrinks.

Every other disagreement fails the test of its (MTA, case), and so does any failure of the
harness itself (an MTA that would not start, a log the harness could not read).
"""

from __future__ import annotations

__all__ = ["KNOWN", "PENDING", "excused"]

Key = tuple[str, str, str]

KNOWN: dict[Key, str] = {}

PENDING: dict[Key, str] = {}


def excused(mta: str, case: str, field: str) -> str | None:
    """Why this field may disagree, or None."""
    key = (mta, case, field)
    if key in KNOWN:
        return f"known: {KNOWN[key]}"
    if key in PENDING:
        return f"pending: {PENDING[key]}"
    return None
