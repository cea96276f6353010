"""The Postfix-style log, fed hand-made events."""

from __future__ import annotations

import pytest

from sandbox.events import (
    AttemptFinished,
    AttemptStarted,
    ConnectFailed,
    Event,
    MessageQueued,
    RecipientDeferred,
    RecipientFinal,
    RunFinished,
    SmtpFailure,
)
from sandbox.output.postfix_log import PostfixLog, format_tv

LAST = "connect to mx2.example.test[192.0.2.11]:25: Connection timed out"


def log(*events: Event) -> list[str]:
    lines: list[str] = []
    sink = PostfixLog(lines.append)
    for event in events:
        sink(event)
    sink(RunFinished(t=events[-1].t, reason="settled"))
    return [line.split(" sender ", 1)[1] for line in lines]


def queued() -> MessageQueued:
    return MessageQueued(
        t=0, message=1, sender="bob@example.net", recipients=("a@example.test",), size=300
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0"),
        (0.004, "0"),
        (0.005, "0.01"),
        (0.14, "0.14"),
        (0.13, "0.13"),
        (1.234, "1.2"),
        (9.96, "10"),
        (16.3, "16"),
        (76.4, "76"),
        (99.7, "100"),
        (1103.2, "1103"),
    ],
)
def test_delays_are_written_as_postfix_format_tv_writes_them(seconds: float, text: str) -> None:
    # Two significant digits, two decimals at most, whole seconds from 10 s (log_adhoc.c).
    assert format_tv(seconds) == text


def test_an_expired_recipient_logs_its_last_error_then_returns_the_message() -> None:
    started = AttemptStarted(
        t=3000, message=1, domain="example.test", attempt=9, recipients=("a@example.test",)
    )
    refused = ConnectFailed(
        t=3000,
        message=1,
        attempt=9,
        host="mx2.example.test",
        address="192.0.2.11",
        reason="timeout",
    )
    final = RecipientFinal(
        t=3030,
        message=1,
        recipient="a@example.test",
        status="bounced",
        host=None,
        address=None,
        dsn="4.4.1",
        reply=LAST,
        attempts=9,
        expired=True,
        relay=None,
    )
    done = AttemptFinished(t=3030, message=1, domain="example.test", attempt=9)
    lines = log(queued(), started, refused, final, done)
    assert lines[-5:] == [
        "postfix/qmgr[1002]: 10A0001: from=<bob@example.net>, size=300, nrcpt=1 (queue active)",
        f"postfix/smtp[2001]: {LAST}",
        # No session was made: relay=none. The wait before the try is a, the connect is c.
        "postfix/smtp[2001]: 10A0001: to=<a@example.test>, relay=none, delay=3030, "
        f"delays=3000/0/30/0, dsn=4.4.1, status=deferred ({LAST})",
        "postfix/qmgr[1002]: 10A0001: from=<bob@example.net>, status=expired, returned to sender",
        "postfix/qmgr[1002]: 10A0001: removed",
    ]


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
        "postfix/smtp[2001]: 10A0001: lost connection with mx1.example.test[192.0.2.10] while "
        "sending RSET probe"
    )


def test_a_suspended_deferral_is_the_error_transports() -> None:
    deferred = RecipientDeferred(
        t=12,
        message=1,
        recipient="a@example.test",
        attempt=1,
        host="mx2.example.test",
        address="192.0.2.11",
        dsn="4.3.2",
        reply="delivery temporarily suspended: host mx2.example.test[192.0.2.11] refused to "
        "talk to me: 421 4.3.2 Too busy",
        retry_at=600,
        suspended=True,
    )
    lines = log(queued(), deferred)
    assert lines[-2] == (
        "postfix/qmgr[1002]: 10A0001: from=<bob@example.net>, size=300, nrcpt=1 (queue active)"
    )
    assert lines[-1] == (
        "postfix/error[1005]: 10A0001: to=<a@example.test>, relay=none, delay=12, "
        "delays=12/0/0/0, dsn=4.3.2, status=deferred (delivery temporarily suspended: host "
        "mx2.example.test[192.0.2.11] refused to talk to me: 421 4.3.2 Too busy)"
    )
