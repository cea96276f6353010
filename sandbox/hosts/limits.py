"""What a mail host keeps and allows: per session, per host, and the message content of all.

A run is finite and its only client is the sandbox's own sender, so run mode keeps everything
(``HostLimits()``, the defaults). ``serve`` runs for as long as someone lets it, for clients
nobody vouches for, so it bounds every record and buffer (``HostLimits.serving``):

- a session's transcript keeps its first ``transcript_head`` and last ``transcript_tail``
  lines, each cut at ``line_chars`` characters, and says how many lines it left out between;
- a host keeps its last ``sessions_kept`` sessions and ``messages_kept`` messages (the counts
  of all of them stay exact);
- all hosts of a world together keep at most ``content_bytes`` of message content
  (``ContentBudget``: the oldest messages go first, the newest always stays);
- at most ``concurrent_sessions`` connections per host are served at once; the next gets
  ``421 4.7.0`` and is closed;
- an SMTP session that says nothing for ``idle_timeout`` seconds is closed (RFC 5321
  §4.5.3.2.7: a server should wait at least five minutes), a silent host's after
  ``silent_timeout`` (None: never);
- with ``reclaim_port``, a refusing port that had to be bound shared is made the host's alone
  again as soon as it can be (``sockets``);
- a session reads at most ``read_size`` bytes at a time (None: asyncio's 256 KiB), so that a
  client that pipelines thousands of commands cannot hold the event loop for long.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from sandbox.hosts.transcript import StoredMessage

__all__ = [
    "RUN_LIMITS",
    "SERVE_CONCURRENT_SESSIONS",
    "SERVE_IDLE_TIMEOUT",
    "SERVE_SILENT_TIMEOUT",
    "UNLIMITED",
    "ContentBudget",
    "HostLimits",
]

UNLIMITED = sys.maxsize
# aiosmtpd's default idle timeout, which run mode keeps (like Postfix's smtpd_timeout, a
# session that says nothing for this long ends).
RUN_IDLE_TIMEOUT = 600.0
# RFC 5321 §4.5.3.2.7: "at least 5 minutes".
SERVE_IDLE_TIMEOUT = 300.0
# A silent host never greets, so a sender waits for its own greeting timeout (5 minutes in
# Postfix, Exim and the RFC) and hangs up; only a client that never does is cut, much later.
SERVE_SILENT_TIMEOUT = 3600.0
# Postfix's default_process_limit: at most 100 smtpd processes serve at once.
SERVE_CONCURRENT_SESSIONS = 100


@dataclass(frozen=True, slots=True)
class HostLimits:
    """The bounds of one mail host (see the module docstring); the defaults keep everything."""

    sessions_kept: int = UNLIMITED
    messages_kept: int = UNLIMITED
    content_bytes: int = UNLIMITED
    transcript_head: int = UNLIMITED
    transcript_tail: int = 0
    line_chars: int = UNLIMITED
    concurrent_sessions: int = UNLIMITED
    idle_timeout: float = RUN_IDLE_TIMEOUT
    silent_timeout: float | None = None
    reclaim_port: bool = False
    read_size: int | None = None

    @classmethod
    def serving(cls, *, sessions: int, messages: int, content_bytes: int) -> HostLimits:
        """The bounds of a served host, with the retention the user chose."""
        return cls(
            sessions_kept=sessions,
            messages_kept=messages,
            content_bytes=content_bytes,
            transcript_head=500,
            transcript_tail=100,
            line_chars=1000,  # RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets
            concurrent_sessions=SERVE_CONCURRENT_SESSIONS,
            idle_timeout=SERVE_IDLE_TIMEOUT,
            silent_timeout=SERVE_SILENT_TIMEOUT,
            reclaim_port=True,
            read_size=16 * 1024,
        )


RUN_LIMITS = HostLimits()


class ContentBudget:
    """The bytes of message content that the hosts of one world keep, all together.

    Each host hands over every message it stores, with a way to drop it; past ``limit``
    bytes the oldest messages, of any host, are dropped until the rest fit (the newest always
    stays, whatever its size). A host that drops a message on its own (its count limit)
    gives it back with :meth:`forget`.
    """

    def __init__(self, limit: int = UNLIMITED) -> None:
        self.limit = limit
        self.kept = 0
        # Insertion-ordered: the first entry is the oldest message kept.
        self._messages: dict[int, tuple[StoredMessage, Callable[[StoredMessage], None]]] = {}

    def add(self, message: StoredMessage, drop: Callable[[StoredMessage], None]) -> None:
        if self.limit == UNLIMITED:
            return
        self._messages[id(message)] = (message, drop)
        self.kept += len(message.data)
        while self.kept > self.limit and len(self._messages) > 1:
            oldest, drop_oldest = self._messages.pop(next(iter(self._messages)))
            self.kept -= len(oldest.data)
            drop_oldest(oldest)

    def forget(self, message: StoredMessage) -> None:
        if self._messages.pop(id(message), None) is not None:
            self.kept -= len(message.data)
