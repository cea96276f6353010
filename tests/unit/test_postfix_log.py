"""The Postfix-style log, fed hand-made events."""

from __future__ import annotations

from sandbox.events import Event, MessageQueued, RecipientFinal, SmtpFailure
from sandbox.output.postfix_log import PostfixLog

LAST = "connect to mx2.example.test[192.0.2.11]:25: Connection timed out"


def log(*events: Event) -> list[str]:
    lines: list[str] = []
    sink = PostfixLog(lines.append)
    for event in events:
        sink(event)
    return [line.split(": ", 1)[1] for line in lines]


def queued() -> MessageQueued:
    return MessageQueued(t=0, message=1, sender="bob@example.net", recipients=("a@example.test",))


def test_an_expired_recipient_logs_its_last_error_then_returns_the_message() -> None:
    final = RecipientFinal(
        t=3600,
        message=1,
        recipient="a@example.test",
        status="bounced",
        host=None,
        address=None,
        dsn="4.4.1",
        reply=LAST,
        attempts=9,
        expired=True,
        relay="mx2.example.test[192.0.2.11]",
    )
    lines = log(queued(), final)
    assert lines[-3].endswith(f"dsn=4.4.1, status=deferred ({LAST})")
    assert lines[-2] == "10A0001: from=<bob@example.net>, status=expired, returned to sender"


def test_a_dead_kept_session_is_worded_as_postfix_words_its_rset_probe() -> None:
    lost = SmtpFailure(
        t=5,
        message=1,
        attempt=2,
        host="mx1.example.test",
        address="192.0.2.10",
        stage="rset",
        command="RSET",
        reason="lost",
    )
    assert log(queued(), lost)[-1] == (
        "10A0001: lost connection with mx1.example.test[192.0.2.10] while sending RSET probe"
    )
