"""The test messages the sender carries: small, real RFC 5322 messages, the same on every run.

The Date header is virtual (the run starts at a fixed instant), and the Message-ID is built
from the scenario, the seed and the message number, so two runs with one seed send the same
bytes and a host's mailbox can be matched to the scenario's messages.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime

from sandbox.scenario.model import MessageSpec

__all__ = ["RUN_EPOCH", "compose", "message_id"]

# The instant virtual time 0 stands for in headers and logs.
RUN_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def message_id(scenario: str, seed: int, number: int) -> str:
    return f"<{number}.{seed}.{scenario or 'sandbox'}@sender.sandbox.test>"


def compose(spec: MessageSpec, scenario: str, seed: int) -> bytes:
    message = EmailMessage()
    message["From"] = spec.sender or "MAILER-DAEMON@sender.sandbox.test"
    message["To"] = ", ".join(spec.recipients)
    message["Subject"] = f"Message {spec.number}" + (f" of {scenario}" if scenario else "")
    message["Date"] = format_datetime(RUN_EPOCH + timedelta(seconds=spec.at))
    message["Message-ID"] = message_id(scenario, seed, spec.number)
    message.set_content(f"This is message {spec.number}, sent by the MX Sandbox sender.\n")
    return message.as_bytes()
