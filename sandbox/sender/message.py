"""The test messages the sender carries: small, real RFC 5322 messages, the same on every run.

The Date header is virtual (the run starts at a fixed instant), and the Message-ID is built
from the scenario, the seed and the message number, so two runs with one seed send the same
bytes and a host's mailbox can be matched to the scenario's messages.

The message is written from a template rather than with ``email.message.EmailMessage``: a
profile of 1,000 messages showed the email package's header machinery taking over a third of
the run, for a message whose shape never changes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from sandbox.scenario.model import MessageSpec

__all__ = ["RUN_EPOCH", "compose", "message_id"]

# The instant virtual time 0 stands for in headers and logs.
RUN_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def message_id(scenario: str, seed: int, number: int) -> str:
    return f"<{number}.{seed}.{scenario or 'sandbox'}@sender.sandbox.test>"


def compose(spec: MessageSpec, scenario: str, seed: int) -> bytes:
    subject = f"Message {spec.number}" + (f" of {scenario}" if scenario else "")
    headers = [
        f"From: {spec.sender or 'MAILER-DAEMON@sender.sandbox.test'}",
        _folded("To", spec.recipients),
        f"Subject: {subject}",
        f"Date: {format_datetime(RUN_EPOCH + timedelta(seconds=spec.at))}",
        f"Message-ID: {message_id(scenario, seed, spec.number)}",
        'Content-Type: text/plain; charset="utf-8"',
        "Content-Transfer-Encoding: 7bit",
        "MIME-Version: 1.0",
    ]
    body = f"This is message {spec.number}, sent by the MX Sandbox sender.\n"
    return ("\n".join(headers) + "\n\n" + body).encode()


def _folded(name: str, addresses: tuple[str, ...]) -> str:
    """``To: a, b, …`` folded before 78 characters (RFC 5322 §2.2.3), one address a line at most."""
    lines = [f"{name}:"]
    for index, address in enumerate(addresses):
        piece = f" {address}" + ("," if index + 1 < len(addresses) else "")
        if len(lines[-1]) + len(piece) > 78 and lines[-1] != f"{name}:":
            lines.append("")
        lines[-1] += piece
    return "\n".join(lines)
