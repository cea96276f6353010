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

# None so far: every difference seen is one the profiles can follow.
KNOWN: dict[Key, str] = {}

_ALL = ("status", "dsn", "relay", "attempts", "hosts", "times", "sessions")

PENDING: dict[Key, str] = {
    # --- Postfix 3.7 ---------------------------------------------------------------------
    ("postfix", "null-mx", "dsn"): "Postfix bounces a null MX with 5.1.0 (nullMX), not 5.1.10",
    ("postfix", "give-up", "relay"): "an expired message whose last try was refused: relay=none",
    **{
        ("postfix", "fifty-messages-421", f): "dead destination: 4 handshake failures from "
        "window 5 suspend the rest; cached sessions skip mx1"
        for f in ("attempts", "hosts", "skipped", "sessions")
    },
    ("postfix", "twenty-messages-equal-preference", "sessions"): "concurrency starts at 5 and "
    "sessions are reused (conn_use=N): ~10 sessions for 20 messages",
    # --- Exim 4.96 -----------------------------------------------------------------------
    **{
        ("exim", case, "dsn"): "Exim's bounces say Status: 5.0.0 whatever the reply or reason"
        for case in ("mx-ip-literal", "mx-no-address", "null-mx", "nxdomain", "rcpt-550")
    },
    ("exim", "one-of-two-rejected", "dsn"): "Exim's bounces say Status: 5.0.0",
    ("exim", "dead-primary-three-messages", "hosts"): "per-host retry data: later messages "
    "skip mx1 until its retry time",
    **{
        ("exim", "fifty-messages-421", f): "per-host retry data: after the first message fails "
        "the others skip both hosts until their retry time"
        for f in ("attempts", "hosts", "times", "skipped", "sessions")
    },
    **{
        ("exim", case, f): "hosts_max_try does not stop at 5 here: all 7 MX tried in one "
        "attempt (6 refused / 421), delivered to mx7"
        for case in ("seven-mx-six-refusing", "seven-mx-six-421")
        for f in _ALL
    },
    # --- Haraka 3.3.4 --------------------------------------------------------------------
    **{
        ("haraka", case, f): "a 4xx at this stage ends the attempt: no next MX, retry mx1 later"
        for case in ("ehlo-451", "rcpt-450", "dot-451")
        for f in _ALL
    },
    ("haraka", "greylisting", "hosts"): "a 4xx to RCPT ends the attempt: mx2 is never tried",
    ("haraka", "greylisting", "sessions"): "a 4xx to RCPT ends the attempt: mx2 is never tried",
    ("haraka", "give-up", "dsn"): "connection failures defer as 5.1.2 (Tried all MXs); the "
    "bounce keeps 5.1.2",
    ("haraka", "give-up", "relay"): "no host answered: Haraka names no remote MTA",
    ("haraka", "seven-equal-mx-refusing", "dsn"): "connection failures defer as 5.1.2 "
    "(Tried all MXs)",
    ("haraka", "give-up-421", "dsn"): "when retries run out, the last 4.x.x becomes 5.x.x "
    "(4.3.2 -> 5.3.2)",
    ("haraka", "mx-no-address", "dsn"): "no MX address: deferred as 5.1.2 (Tried all MXs), "
    "retried like any temporary failure",
    ("haraka", "nxdomain", "dsn"): "NXDOMAIN bounces with 5.1.2 (Nowhere to deliver mail to)",
    ("haraka", "servfail", "dsn"): "SERVFAIL defers with 4.1.0 (DNS lookup failure)",
    ("haraka", "one-of-two-rejected", "dsn"): "after splitting off the rejected recipient "
    "the DSN has no Status line (the fields are lost)",
    ("haraka", "one-of-two-rejected", "relay"): "after the split the bounce names no remote MTA",
}


def excused(mta: str, case: str, field: str) -> str | None:
    """Why this field may disagree, or None."""
    key = (mta, case, field)
    if key in KNOWN:
        return f"known: {KNOWN[key]}"
    if key in PENDING:
        return f"pending: {PENDING[key]}"
    return None
