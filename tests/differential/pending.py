"""Differences between a real MTA and ``mxsandbox run --profile`` that do not fail the suite.

``KNOWN``: the differences we keep on purpose, at most two per MTA, each with a one-line
reason: the sandbox cannot or should not do what the MTA does. An entry is keyed by (MTA,
case, field); one difference may show in several fields of its case, each listed with the
same reason (tests/unit/test_differential_lists.py holds the list to these rules).

``PENDING``: TEMPORARY, and empty: every difference the differential tests found has been
followed by the profiles (tests/differential/FINDINGS.md, section 5). When a new case or a
new MTA version finds one that the profiles will follow, it goes here, with a one-line
reason, until they do; an entry that agrees again is reported as stale in the agreement
table, so the list only shrinks.

Every other disagreement fails the test of its (MTA, case), and so does any failure of the
harness itself (an MTA that would not start, a log the harness could not read).
"""

from __future__ import annotations

__all__ = ["KNOWN", "PENDING", "excused"]

Key = tuple[str, str, str]

_SPLIT = (
    "Haraka 3.3.4 loses the DSN fields of a recipient it splits off after a 5xx at RCPT "
    "(split_to_new_recipients): its DSN has no Status and no Remote-MTA; the profile reports "
    "them, as RFC 3464 asks"
)

_RACE = (
    "Postfix's connection cache and dead-destination rule race in real time (which delivery "
    "finds a parked session, which is in flight when the destination dies; two real runs "
    "differ); run mode's SMTP exchanges take no virtual time"
)

_FIRST_FAILURE = (
    "Exim's immediate deliveries of a batch race the first failure's retry record (13 to 49 "
    "of 50 skipped the hosts over four real runs); run mode's first failure always comes first"
)

KNOWN: dict[Key, str] = {
    ("haraka", "one-of-two-rejected", "dsn"): _SPLIT,
    ("haraka", "one-of-two-rejected", "relay"): _SPLIT,
    **{
        ("postfix", "fifty-messages-421", field): _RACE
        for field in ("attempts", "hosts", "skipped", "sessions", "log")
    },
    **{
        ("exim", "twelve-messages-421", field): _FIRST_FAILURE
        for field in ("attempts", "hosts", "skipped", "sessions")
    },
    ("postfix", "twenty-messages-equal-preference", "sessions"): _RACE,
    ("postfix", "twenty-messages-equal-preference", "log"): _RACE,
}

PENDING: dict[Key, str] = {}


def excused(mta: str, case: str, field: str) -> str | None:
    """Why this field may disagree, or None."""
    key = (mta, case, field)
    if key in KNOWN:
        return f"known: {KNOWN[key]}"
    if key in PENDING:
        return f"pending: {PENDING[key]}"
    return None
