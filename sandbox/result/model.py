"""What a run produced: one row per (message, recipient), the hosts, the DSNs sent back, the
expectations checked; and the ``--json`` object of the output contract, built from them.

These are plain frozen records. ``sandbox.run`` builds them after a run; the output sinks,
the expectation checks and the report only read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sandbox.core.delivery import FinalStatus, reported_reply
from sandbox.core.dsn import DsnAction, DsnVia
from sandbox.core.policy import Profile
from sandbox.events import Event, RecipientFinal
from sandbox.scenario.model import Scenario

__all__ = ["DeliveryRow", "ExpectationResult", "HostStats", "ReturnedRow", "RunResult"]


@dataclass(frozen=True, slots=True)
class ExpectationResult:
    text: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    message: int
    recipient: str
    status: FinalStatus
    host: str | None
    address: str | None
    at: float
    attempts: int
    dsn: str
    reply: str
    # The TLS of the session that delivered (or gave the last answer): the protocol
    # version ("" in plain text) and whether the certificate authenticated the host.
    tls: str = ""
    tls_verified: bool = False

    @classmethod
    def of(cls, final: RecipientFinal) -> DeliveryRow:
        """The row for a recipient's final event, with the reply as the run reports it."""
        return cls(
            final.message,
            final.recipient,
            final.status,
            final.host,
            final.address,
            final.t,
            final.attempts,
            final.dsn,
            reported_reply(final.reply, expired=final.expired),
            final.tls,
            final.tls_verified,
        )

    def tls_json(self) -> dict[str, object] | None:
        """``--json``'s ``tls``: null in plain text, else the version and the verdict."""
        if not self.tls:
            return None
        return {"version": self.tls, "verified": self.tls_verified}


@dataclass(frozen=True, slots=True)
class HostStats:
    name: str
    addresses: tuple[str, ...]
    connections: int
    accepted: int
    behaviour: str


@dataclass(frozen=True, slots=True)
class ReturnedRow:
    """A delivery status notification sent back to a message's envelope sender."""

    message: int
    action: DsnAction
    to: str
    recipients: tuple[str, ...]
    at: float
    via: DsnVia
    dsn_message: int | None
    # The DSN's own fate: delivered (to the sender's MX host, or into the returned-mail
    # mailbox when ``via`` is "returned_mailbox"), bounced or deferred.
    status: str
    data: bytes = field(repr=False, default=b"")


@dataclass(frozen=True, slots=True)
class RunResult:
    scenario: Scenario
    seed: int
    profile: Profile
    deliveries: tuple[DeliveryRow, ...]
    hosts: tuple[HostStats, ...]
    expectations: tuple[ExpectationResult, ...]
    events: tuple[Event, ...] = field(repr=False)
    ended_at: float = 0.0
    returned: tuple[ReturnedRow, ...] = ()
    # message number -> copies found in the hosts' mailboxes, for messages that arrived twice
    duplicates: dict[int, int] = field(default_factory=dict)
    # The run was stopped from outside (SIGINT, Sandbox.interrupt()) before it settled.
    interrupted: bool = False
    # RFC 8460 TLS-RPT reports, one per policy domain (MTA-STS or DANE), as JSON objects.
    tls_reports: tuple[dict[str, Any], ...] = ()

    @property
    def ok(self) -> bool:
        return all(e.ok for e in self.expectations)

    def host(self, name: str) -> HostStats | None:
        return next((h for h in self.hosts if h.name == name), None)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object of the output contract."""
        return {
            "scenario": self.scenario.name,
            "seed": self.seed,
            "ok": self.ok,
            "deliveries": [
                {
                    "message": d.message,
                    "recipient": d.recipient,
                    "status": d.status,
                    "host": d.host,
                    "address": d.address,
                    "at": round(d.at, 6),
                    "attempts": d.attempts,
                    "dsn": d.dsn,
                    "reply": d.reply,
                    "tls": d.tls_json(),
                }
                for d in self.deliveries
            ],
            "hosts": {
                h.name: {"connections": h.connections, "accepted": h.accepted} for h in self.hosts
            },
            "expectations": [
                {"expect": e.text, "ok": e.ok, "detail": e.detail} for e in self.expectations
            ],
            # Extensions of the v1 contract: DSNs sent back, and messages that arrived twice.
            "returned": [
                {
                    "message": r.message,
                    "action": r.action,
                    "to": r.to,
                    "recipients": list(r.recipients),
                    "at": round(r.at, 6),
                    "via": r.via,
                    "status": r.status,
                }
                for r in self.returned
            ],
            "duplicates": [{"message": m, "copies": n} for m, n in sorted(self.duplicates.items())],
            # Issue 14: the TLS-RPT reports (RFC 8460) of the sessions under a TLS policy.
            "tls_reports": list(self.tls_reports),
            # Only when it happened, so that a finished run's JSON stays as it was.
            **({"interrupted": True} if self.interrupted else {}),
        }
