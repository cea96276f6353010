"""What one side of the comparison saw, per (message, recipient), in the same shape for the
real MTA (its log plus what ``mxsandbox serve`` recorded) and for ``mxsandbox run``.

Times are real seconds from the start of ``serve`` (for run mode: virtual seconds divided by
the scale factor S), so the two sides line up directly.

An **attempt** is one pass of the MTA over the message: a Postfix delivery agent run, an Exim
delivery process, a Haraka ``send_email``. An attempt that never got as far as DNS or a
connection because the MTA had already given up on the destination for now (Postfix's
"delivery temporarily suspended", Exim's "retry time not reached") is **skipped**: it is
reported, but not counted among the attempts or their times.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["UNSEEN", "Attempt", "Delivery", "Observed"]

# A value the real MTA does not make observable (e.g. Exim logs no DSN code for a deferral):
# a field whose real value is UNSEEN is not compared.
UNSEEN = "unseen"


@dataclass
class Attempt:
    t: float
    hosts: list[str] = field(default_factory=list)
    outcome: str = ""  # delivered | deferred | bounced (this recipient, after this attempt)
    dsn: str | None = None
    skipped: bool = False
    detail: str = ""  # the MTA's own words (a log line), for FINDINGS

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Delivery:
    message: int
    recipient: str
    status: str = "deferred"  # delivered | bounced | deferred (still queued at the end)
    dsn: str | None = None
    relay: str | None = None  # the host that took it or answered the final 5xx; None: none
    at: float | None = None  # when the status became final
    attempts: list[Attempt] = field(default_factory=list)
    returned: bool | str = False  # a DSN went back to the sender (UNSEEN if not observable)
    returned_status: str | None = None  # the Status: of that DSN, where observable
    log: list[str] = field(default_factory=list)  # the MTA's lines about it, verbatim
    # How the session that delivered it went: "TLS" or "plain" (UNSEEN where the MTA's log
    # does not say).
    tls: str = UNSEEN

    @property
    def tried(self) -> list[Attempt]:
        return [a for a in self.attempts if not a.skipped]

    @property
    def skipped(self) -> list[Attempt]:
        return [a for a in self.attempts if a.skipped]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["attempts"] = [a.to_json() for a in self.attempts]
        return data


@dataclass
class Observed:
    """One side: every (message, recipient), and per host the sessions that reached it."""

    deliveries: dict[tuple[int, str], Delivery] = field(default_factory=dict)
    sessions: dict[str, int] = field(default_factory=dict)  # host -> SMTP sessions it saw
    accepted: dict[str, int] = field(default_factory=dict)  # host -> messages it stored
    notes: list[str] = field(default_factory=list)
    # When each message reached the MTA (its own log), and the MTA's time origin: where its
    # periodic queue scans count from (Postfix's queue manager start; 0 = serve's start).
    arrivals: dict[int, float] = field(default_factory=dict)
    origin: float = 0.0
    # The side's Postfix-format log, where it has one (real Postfix; run mode's
    # ``--log postfix`` when compared with Postfix): compared line by line.
    log: list[str] = field(default_factory=list)

    def delivery(self, message: int, recipient: str) -> Delivery:
        key = (message, recipient.lower())
        if key not in self.deliveries:
            self.deliveries[key] = Delivery(message, recipient.lower())
        return self.deliveries[key]

    def normalize(self, names: dict[str, str]) -> None:
        """Hosts are recorded as ``name[address]``, each side naming them its own way (the MX
        name, the canonical name after a CNAME, an IP literal, the zone's address or the
        loopback one serve gave it): from here on each is the name serve gave its address."""
        for delivery in self.deliveries.values():
            for attempt in delivery.attempts:
                hosts: list[str] = []
                for host in attempt.hosts:
                    name = _named(host, names)
                    if not hosts or hosts[-1] != name:
                        hosts.append(name)
                attempt.hosts = hosts
            if delivery.relay is not None:
                delivery.relay = _named(delivery.relay, names)

    def to_json(self) -> dict[str, Any]:
        return {
            "deliveries": [d.to_json() for _, d in sorted(self.deliveries.items())],
            "sessions": self.sessions,
            "accepted": self.accepted,
            "notes": self.notes,
            "arrivals": self.arrivals,
            "origin": self.origin,
            "log": self.log,
        }


def _named(host: str, names: dict[str, str]) -> str:
    name, _, address = host.partition("[")
    address = address.split("]", 1)[0]
    return names.get(address, name).lower()
