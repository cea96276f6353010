"""Delivery status notifications: the bounce (and "delayed") messages, per RFC 3464.

A DSN is a real message: ``multipart/report; report-type=delivery-status`` with three parts —
a few sentences for the person, the machine-readable ``message/delivery-status`` (one block
of per-message fields, then one block per recipient), and the original message's headers.
It goes back to the envelope sender from the null reverse-path ``<>`` (RFC 5321 §4.5.5), so
that a bounce can never cause another bounce.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email import message_from_bytes, policy
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime
from typing import Literal

__all__ = ["DsnAction", "DsnRecipient", "DsnVia", "build_dsn"]

REPORTING_MTA = "sender.sandbox.test"

# What a DSN reports: recipients that failed for good (a bounce), or that are still being
# retried (a delay warning, RFC 3464 §2.3.3).
DsnAction = Literal["failed", "delayed"]
# Where the shell sends it: through the scenario's MX hosts when the envelope sender's domain
# is in the scenario, otherwise into the returned-mail mailbox.
DsnVia = Literal["mx", "returned_mailbox"]


@dataclass(frozen=True, slots=True)
class DsnRecipient:
    recipient: str
    action: DsnAction
    status: str  # RFC 3463, e.g. "5.1.1" or "4.4.1"
    diagnostic: str  # the last reply or error
    remote_mta: str | None  # the host that gave the diagnostic, if any
    last_attempt: datetime


def build_dsn(
    *,
    original: bytes,
    original_sender: str,
    arrival: datetime,
    recipients: tuple[DsnRecipient, ...],
    message_id: str,
    date: datetime,
    will_retry_until: datetime | None = None,
) -> bytes:
    delayed = all(r.action == "delayed" for r in recipients)
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{REPORTING_MTA}>"
    report["To"] = original_sender
    report["Subject"] = (
        "Delayed Mail (still being retried)" if delayed else "Undelivered Mail Returned to Sender"
    )
    report["Date"] = format_datetime(date)
    report["Message-ID"] = message_id
    report["Auto-Submitted"] = "auto-replied"  # RFC 3834: never answer this automatically
    report.attach(MIMEText(_explanation(recipients, delayed, will_retry_until), "plain"))
    report.attach(_delivery_status(arrival, recipients, will_retry_until))
    report.attach(MIMEText(_headers_of(original), "rfc822-headers"))
    return report.as_bytes()


def _explanation(
    recipients: tuple[DsnRecipient, ...], delayed: bool, until: datetime | None
) -> str:
    if delayed:
        lines = ["Your message has not been delivered yet. The mail system keeps trying"]
        if until is not None:
            lines[0] += f" until {format_datetime(until)}"
        lines[0] += "; you do not need to send it again."
    else:
        lines = [
            "Your message could not be delivered to one or more recipients.",
            "It has been returned to you with the reasons below.",
        ]
    lines.append("")
    for r in recipients:
        lines.append(f"<{r.recipient}>: {r.diagnostic}")
    return "\n".join(lines) + "\n"


def _delivery_status(
    arrival: datetime, recipients: tuple[DsnRecipient, ...], until: datetime | None
) -> Message:
    part = Message()
    part.set_type("message/delivery-status")
    per_message = Message()
    per_message["Reporting-MTA"] = f"dns; {REPORTING_MTA}"
    per_message["Arrival-Date"] = format_datetime(arrival)
    blocks = [per_message]
    for r in recipients:
        block = Message()
        block["Final-Recipient"] = f"rfc822; {r.recipient}"
        block["Action"] = r.action
        block["Status"] = r.status
        if r.remote_mta:
            block["Remote-MTA"] = f"dns; {r.remote_mta}"
        block["Diagnostic-Code"] = f"smtp; {r.diagnostic}"
        block["Last-Attempt-Date"] = format_datetime(r.last_attempt)
        if r.action == "delayed" and until is not None:
            block["Will-Retry-Until"] = format_datetime(until)
        blocks.append(block)
    part.set_payload(blocks)  # type: ignore[arg-type]  # a delivery-status payload is a list
    return part


def _headers_of(original: bytes) -> str:
    parsed = message_from_bytes(original, policy=policy.compat32)
    return "".join(f"{name}: {value}\n" for name, value in parsed.items())
