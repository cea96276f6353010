"""The outcome table, row by row."""

from __future__ import annotations

import pytest

from sandbox import Profile
from sandbox.core.classify import (
    CONNECT_FAILURES,
    ConnectFailure,
    NoReply,
    Outcome,
    ServerReply,
    SessionEnd,
    SessionStage,
    classify,
    dsn_of,
    probe_passed,
    session_end,
)

POSTFIX = Profile()


@pytest.mark.parametrize(
    ("stage", "code", "verdict"),
    [
        ("greeting", 220, "continue"),
        ("greeting", 421, "next_host"),
        ("greeting", 554, "next_host"),
        ("ehlo", 250, "continue"),
        ("ehlo", 421, "next_host"),
        ("helo", 550, "bounce"),
        ("mail", 451, "next_host"),
        ("mail", 553, "bounce"),
        ("rcpt", 250, "continue"),
        ("rcpt", 451, "next_host"),
        ("rcpt", 550, "bounce"),
        ("data", 354, "continue"),
        ("data", 451, "next_host"),
        ("data", 554, "bounce"),
        ("message", 250, "delivered"),
        ("message", 452, "next_host"),
        ("message", 552, "bounce"),
    ],
)
def test_replies(stage: str, code: int, verdict: str) -> None:
    assert classify(stage, ServerReply(code, "x"), POSTFIX).verdict == verdict  # type: ignore[arg-type]


@pytest.mark.parametrize("reason", ["refused", "timeout"])
def test_a_failed_connect_moves_on_with_4_4_1(reason: str) -> None:
    result = classify("connect", NoReply(reason), POSTFIX)  # type: ignore[arg-type]
    assert (result.verdict, result.dsn) == ("next_host", "4.4.1")


@pytest.mark.parametrize("stage", ["greeting", "ehlo", "mail", "rcpt", "data", "message"])
@pytest.mark.parametrize("reason", ["timeout", "lost"])
def test_no_reply_in_a_session_moves_on_with_4_4_2(stage: str, reason: str) -> None:
    result = classify(stage, NoReply(reason), POSTFIX)  # type: ignore[arg-type]
    assert (result.verdict, result.dsn) == ("next_host", "4.4.2")


def test_no_reply_after_the_dot_warns_of_a_duplicate() -> None:
    assert "twice" in classify("message", NoReply("timeout"), POSTFIX).why


def test_5xx_greeting_bounces_when_the_profile_does_not_skip_it() -> None:
    strict = Profile(skip_5xx_greeting=False)
    assert classify("greeting", ServerReply(554, "no"), strict).verdict == "bounce"


@pytest.mark.parametrize(
    ("code", "text", "dsn"),
    [
        (451, "4.7.1 Greylisted", "4.7.1"),
        (550, "5.1.1 No such user", "5.1.1"),
        (250, "2.0.0 Ok", "2.0.0"),
        (451, "try later", "4.0.0"),
        (550, "4.1.1 mismatch", "5.0.0"),
        (554, "5.7.1", "5.7.1"),
    ],
)
def test_dsn_from_the_enhanced_code_or_the_class(code: int, text: str, dsn: str) -> None:
    assert dsn_of(ServerReply(code, text)) == dsn


def test_a_skipped_5xx_greeting_is_reported_as_temporary() -> None:
    result = classify("greeting", ServerReply(554, "5.7.1 go away"), POSTFIX)
    assert (result.verdict, result.dsn) == ("next_host", "4.7.1")


# --- what a step says of its session (the report's marks) ---------------------------------


@pytest.mark.parametrize(
    ("stage", "outcome", "end"),
    [
        ("greeting", ServerReply(220, "hi"), None),
        ("greeting", ServerReply(421, "4.3.2 busy"), "tempfail"),
        ("greeting", ServerReply(554, "5.7.1 go away"), "rejected"),  # skipped, yet a 5xx
        ("ehlo", ServerReply(502, "5.5.1 no EHLO"), None),  # the fallback to HELO goes on
        ("helo", ServerReply(550, "5.7.1 no"), "rejected"),
        ("rcpt", ServerReply(451, "4.7.1 greylisted"), "tempfail"),
        ("data", ServerReply(354, "go ahead"), None),
        ("message", ServerReply(250, "2.0.0 Ok"), "accepted"),
        ("message", NoReply("lost", "Connection lost"), "lost"),
        ("mail", NoReply("timeout"), "timeout"),
        ("connect", NoReply("refused"), "refused"),
        ("connect", NoReply("error", "No route to host"), "error"),
        ("rset", ServerReply(250, "2.0.0 Ok"), None),
        ("rset", ServerReply(421, "4.3.2 closing"), "tempfail"),
        ("rset", NoReply("lost"), "lost"),
    ],
)
def test_session_end_follows_the_verdicts(
    stage: SessionStage, outcome: Outcome, end: SessionEnd | None
) -> None:
    assert session_end(stage, outcome, POSTFIX) == end


def test_only_a_250_to_the_probe_reuses_a_session() -> None:
    assert probe_passed(ServerReply(250, "2.0.0 Ok"))
    assert not probe_passed(ServerReply(451, "4.3.0 try later"))
    assert not probe_passed(NoReply("lost"))


@pytest.mark.parametrize("reason", ["refused", "timeout", "error"])
def test_a_failed_connect_is_worded_from_one_table(reason: ConnectFailure) -> None:
    why = CONNECT_FAILURES[reason].why
    # The attempt adds what it does next (core.delivery), which the table cannot know.
    assert classify("connect", NoReply(reason), POSTFIX).why == why
