"""Sender profiles: the timeouts, limits and retry schedule of a real MTA, as plain data.

A profile is what makes our sender behave like Postfix (the default) or another MTA. Every
field can be overridden under ``sender:`` in a scenario; ``FIELD_KINDS`` tells the scenario
loader how to read each one. The retry arithmetic lives here too, as pure functions of the
message's arrival time and the current time, so it is tested without a clock.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "FIELD_KINDS",
    "PROFILES",
    "Profile",
    "next_retry",
    "should_give_up",
]

DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Profile:
    """One MTA's behaviour. Times are seconds; the defaults are Postfix's documented ones."""

    name: str = "postfix"
    # Per-stage timeouts (Postfix: smtp_connect_timeout, smtp_helo_timeout, smtp_mail_timeout,
    # smtp_rcpt_timeout, smtp_data_init_timeout, smtp_data_xfer_timeout, smtp_data_done_timeout).
    connect_timeout: float = 30.0
    greeting_timeout: float = 300.0
    ehlo_timeout: float = 300.0
    mail_timeout: float = 300.0
    rcpt_timeout: float = 300.0
    data_timeout: float = 120.0
    data_transfer_timeout: float = 180.0
    dot_timeout: float = 600.0
    # smtp_mx_address_limit and smtp_mx_session_limit: how far one attempt walks the MX list.
    max_addresses: int = 5
    max_sessions: int = 2
    # Postfix's queue manager: a deferred message waits its own age, clamped to
    # [minimal_backoff_time, maximal_backoff_time]; the queue is scanned every queue_run_delay;
    # after maximal_queue_lifetime the next failure returns the message to its sender.
    min_backoff: float = 300.0
    max_backoff: float = 4000.0
    queue_run_delay: float = 300.0
    max_lifetime: float = 5 * DAY
    # smtp_skip_5xx_greeting: a 5xx greeting moves on to the next MX instead of bouncing.
    skip_5xx_greeting: bool = True
    # What to do with an MX that names a CNAME (RFC 2181 §10.3 forbids it) or an IP literal.
    cname: Literal["follow", "reject"] = "follow"
    ip_literal: Literal["use", "reject"] = "use"
    # The name our sender gives in EHLO.
    helo_name: str = "sender.sandbox.test"
    # The sender's own address, when it is itself one of the MX hosts (RFC 5321 §5.1: it
    # must discard the records at its own preference and worse).
    address: str | None = None
    # Postfix's destination concurrency: how many sessions to one domain run at once.
    concurrency: int = 20

    def with_overrides(self, overrides: dict[str, object]) -> Profile:
        return dataclasses.replace(self, **overrides)  # type: ignore[arg-type]


# How the scenario loader reads each overridable field: "duration", "count", "flag", "text",
# "address" (an IP address), or a tuple of the allowed words.
FIELD_KINDS: dict[str, str | tuple[str, ...]] = {
    "connect_timeout": "duration",
    "greeting_timeout": "duration",
    "ehlo_timeout": "duration",
    "mail_timeout": "duration",
    "rcpt_timeout": "duration",
    "data_timeout": "duration",
    "data_transfer_timeout": "duration",
    "dot_timeout": "duration",
    "max_addresses": "count",
    "max_sessions": "count",
    "min_backoff": "duration",
    "max_backoff": "duration",
    "queue_run_delay": "duration",
    "max_lifetime": "duration",
    "skip_5xx_greeting": "flag",
    "cname": ("follow", "reject"),
    "ip_literal": ("use", "reject"),
    "helo_name": "text",
    "address": "address",
    "concurrency": "count",
}

PROFILES: dict[str, Profile] = {
    "postfix": Profile(),
}


def next_retry(profile: Profile, arrived: float, now: float) -> float:
    """When a message deferred at ``now`` is next tried.

    Postfix waits the message's age, clamped to [min_backoff, max_backoff], and then the queue
    manager picks it up at its next scan (every ``queue_run_delay`` from the start).
    """
    age = now - arrived
    eligible = now + min(max(age, profile.min_backoff), profile.max_backoff)
    scan = profile.queue_run_delay
    if scan <= 0:
        return eligible
    return math.ceil(eligible / scan - 1e-9) * scan


def should_give_up(profile: Profile, arrived: float, now: float) -> bool:
    """A message that fails at or after its maximal lifetime goes back to its sender."""
    return now - arrived >= profile.max_lifetime
