"""The mail host's scripting rules, table by table: hand-made behaviours, no loop, no sockets."""

from __future__ import annotations

from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox.hosts.script import (
    BAD_SEQUENCE,
    BYE,
    GREYLISTED,
    RECIPIENT_OK,
    TOO_MANY_RECIPIENTS,
    Action,
    AnswerNormally,
    Greylist,
    HangUp,
    RcptAnswer,
    Say,
    StagePlan,
    answer_rcpt,
    answer_while_rejecting,
    closes_connection,
    plan_stage,
    queued_reply,
    with_scripted_text,
)
from sandbox.scenario.model import Behaviour, Reply, Stage

STAGES: tuple[Stage, ...] = get_args(Stage)
BEFORE_MESSAGE = [stage for stage in STAGES if stage != "message"]


def reply(text: str) -> Reply:
    code, _, rest = text.partition(" ")
    return Reply(int(code), rest)


# --- one stage -----------------------------------------------------------------------------


@pytest.mark.parametrize("stage", BEFORE_MESSAGE)
def test_nothing_scripted_answers_normally_at_once(stage: Stage) -> None:
    assert plan_stage(Behaviour(), stage) == StagePlan(0.0, AnswerNormally())


@pytest.mark.parametrize(
    ("behaviour", "action"),
    [
        (Behaviour(disconnect="mail"), HangUp()),
        (Behaviour(replies={"mail": reply("451 4.3.0 Later")}), Say(reply("451 4.3.0 Later"))),
        (Behaviour(replies={"mail": reply("553 5.1.8 No")}), Say(reply("553 5.1.8 No"))),
        (
            Behaviour(replies={"mail": reply("250 2.1.0 Fine")}),
            AnswerNormally(reply("250 2.1.0 Fine")),
        ),
        # A disconnect comes before the reply at the same stage.
        (Behaviour(disconnect="mail", replies={"mail": reply("451 x")}), HangUp()),
    ],
    ids=["disconnect", "4xx", "5xx", "2xx", "disconnect-before-reply"],
)
def test_one_stage_table(behaviour: Behaviour, action: Action) -> None:
    assert plan_stage(behaviour, "mail") == StagePlan(0.0, action)


def test_a_rejecting_greeting_rejects_the_rest_but_421_closes_instead() -> None:
    rejecting = plan_stage(Behaviour(replies={"greeting": reply("554 5.7.1 Go away")}), "greeting")
    closing = plan_stage(Behaviour(replies={"greeting": reply("421 4.3.2 Bye")}), "greeting")
    temporary = plan_stage(Behaviour(replies={"greeting": reply("450 4.3.2 Busy")}), "greeting")
    assert rejecting.action == Say(reply("554 5.7.1 Go away"), reject_the_rest=True)
    assert closing.action == Say(reply("421 4.3.2 Bye"), reject_the_rest=False)
    assert temporary.action == Say(reply("450 4.3.2 Busy"), reject_the_rest=True)


def test_only_the_greeting_rejects_the_rest() -> None:
    plan = plan_stage(Behaviour(replies={"ehlo": reply("554 5.7.1 No")}), "ehlo")
    assert plan.action == Say(reply("554 5.7.1 No"), reject_the_rest=False)


def test_the_delay_comes_with_every_action() -> None:
    behaviour = Behaviour(delays={"rcpt": 30.0}, disconnect="rcpt")
    assert plan_stage(behaviour, "rcpt") == StagePlan(30.0, HangUp())
    assert plan_stage(behaviour, "mail") == StagePlan(0.0, AnswerNormally())


@pytest.mark.parametrize("stage", BEFORE_MESSAGE)
def test_a_script_for_one_stage_leaves_the_others_alone(stage: Stage) -> None:
    other: Stage = "data" if stage != "data" else "mail"
    behaviour = Behaviour(replies={other: reply("550 x")}, disconnect=other, delays={other: 5.0})
    assert plan_stage(behaviour, stage) == StagePlan(0.0, AnswerNormally())


# --- the message stage ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "plan"),
    [
        (Behaviour(), StagePlan(0.0, AnswerNormally(), store_first=True)),
        (
            Behaviour(replies={"message": reply("250 2.0.0 Thanks")}),
            StagePlan(0.0, AnswerNormally(reply("250 2.0.0 Thanks")), store_first=True),
        ),
        (
            Behaviour(replies={"message": reply("552 5.3.4 Too big")}, delays={"message": 9.0}),
            StagePlan(9.0, Say(reply("552 5.3.4 Too big")), store_first=False),
        ),
        (
            Behaviour(disconnect="message", delays={"message": 700.0}),
            StagePlan(700.0, HangUp(), store_first=True),
        ),
        # After the dot the reply comes before the disconnect, and nothing is stored.
        (
            Behaviour(disconnect="message", replies={"message": reply("451 4.3.0 Later")}),
            StagePlan(0.0, Say(reply("451 4.3.0 Later")), store_first=False),
        ),
    ],
    ids=["normal", "2xx", "5xx-after-delay", "disconnect-stores", "reply-before-disconnect"],
)
def test_message_stage_table(behaviour: Behaviour, plan: StagePlan) -> None:
    assert plan_stage(behaviour, "message") == plan


def test_the_queued_reply_names_the_message() -> None:
    assert queued_reply("0A1B2C3D0001") == "250 2.0.0 Ok: queued as 0A1B2C3D0001"


replies = st.sampled_from(["250 2.0.0 Ok", "354 Go", "421 4.3.2 Bye", "451 4.3.0 x", "554 x"])


@given(
    stage=st.sampled_from(STAGES),
    scripted=st.dictionaries(st.sampled_from(STAGES), replies.map(reply)),
    disconnect=st.none() | st.sampled_from(STAGES),
    delays=st.dictionaries(st.sampled_from(STAGES), st.floats(0, 1e6)),
)
def test_every_plan_waits_the_scripted_delay_and_stores_only_after_the_dot(
    stage: Stage,
    scripted: dict[Stage, Reply],
    disconnect: Stage | None,
    delays: dict[Stage, float],
) -> None:
    behaviour = Behaviour(replies=scripted, disconnect=disconnect, delays=delays)
    plan = plan_stage(behaviour, stage)
    assert plan.delay == delays.get(stage, 0.0)
    assert plan.store_first == (stage == "message" and not isinstance(plan.action, Say))
    if isinstance(plan.action, Say):
        assert plan.action.reply == scripted[stage] and plan.action.reply.code >= 400
    if isinstance(plan.action, HangUp):
        assert disconnect == stage


# --- one recipient -------------------------------------------------------------------------


def rcpt(
    behaviour: Behaviour,
    recipient: str = "alice@example.test",
    *,
    accepted_so_far: int = 0,
    greylist: Greylist | None = None,
    now: float = 0.0,
) -> RcptAnswer:
    return answer_rcpt(
        behaviour,
        recipient,
        sender="bob@example.net",
        client="127.0.0.1",
        accepted_so_far=accepted_so_far,
        greylist=greylist or Greylist(),
        now=now,
    )


def test_an_ordinary_recipient_is_accepted() -> None:
    assert rcpt(Behaviour()) == RcptAnswer(RECIPIENT_OK, accepted=True)


def test_a_scripted_mailbox_matches_without_case() -> None:
    behaviour = Behaviour(recipients={"Carol@Example.test": reply("550 5.1.1 No such user")})
    assert rcpt(behaviour, "carol@example.TEST") == RcptAnswer(
        "550 5.1.1 No such user", accepted=False
    )
    assert rcpt(behaviour, "alice@example.test") == RcptAnswer(RECIPIENT_OK, accepted=True)


def test_a_positive_mailbox_reply_accepts_with_its_text() -> None:
    behaviour = Behaviour(recipients={"alice@example.test": reply("251 2.1.5 Forwarded")})
    assert rcpt(behaviour) == RcptAnswer("251 2.1.5 Forwarded", accepted=True)


def test_greylisting_defers_until_the_period_is_over() -> None:
    behaviour = Behaviour(greylist=300.0)
    table = Greylist()
    assert rcpt(behaviour, greylist=table, now=10.0) == RcptAnswer(GREYLISTED, accepted=False)
    assert rcpt(behaviour, greylist=table, now=309.0).accepted is False
    assert rcpt(behaviour, greylist=table, now=310.0) == RcptAnswer(RECIPIENT_OK, accepted=True)


def test_a_refused_mailbox_is_not_greylisted_and_leaves_no_triple() -> None:
    behaviour = Behaviour(greylist=300.0, recipients={"alice@example.test": reply("550 x")})
    table = Greylist()
    assert rcpt(behaviour, greylist=table, now=0.0).reply == "550 x"
    # The triple was not recorded at t=0: first seen now, so still deferred at t=400.
    assert rcpt(Behaviour(greylist=300.0), greylist=table, now=400.0).reply == GREYLISTED


def test_past_max_recipients_comes_452() -> None:
    behaviour = Behaviour(max_recipients=2)
    assert rcpt(behaviour, accepted_so_far=1).accepted is True
    assert rcpt(behaviour, accepted_so_far=2) == RcptAnswer(TOO_MANY_RECIPIENTS, accepted=False)


def test_greylisting_comes_before_the_recipient_limit_and_records_the_triple() -> None:
    behaviour = Behaviour(greylist=60.0, max_recipients=1)
    table = Greylist()
    assert rcpt(behaviour, accepted_so_far=1, greylist=table, now=0.0).reply == GREYLISTED
    assert rcpt(behaviour, accepted_so_far=1, greylist=table, now=60.0).reply == (
        TOO_MANY_RECIPIENTS
    )


def test_the_greylist_triple_is_client_sender_and_recipient() -> None:
    table = Greylist()
    assert table.defers("127.0.0.1", "Bob@Example.net", "Alice@Example.test", 60.0, now=0.0)
    assert not table.defers("127.0.0.1", "bob@example.net", "alice@example.test", 60.0, now=60.0)
    # Another client, sender or recipient is a new triple.
    assert table.defers("127.0.0.2", "bob@example.net", "alice@example.test", 60.0, now=60.0)
    assert table.defers("127.0.0.1", "eve@example.net", "alice@example.test", 60.0, now=60.0)
    assert table.defers("127.0.0.1", "bob@example.net", "carol@example.test", 60.0, now=60.0)


def test_a_zero_greylist_period_never_defers() -> None:
    assert not Greylist().defers("127.0.0.1", "b@x", "a@y", 0.0, now=5.0)


# --- replies the host does not script ------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "closes"),
    [
        ("421 4.3.2 Shutting down", True),
        ("421", True),
        ("421-first line of several", False),
        ("4210 not a reply code", False),
        ("451 4.3.0 Later", False),
        ("250 2.0.0 Ok", False),
    ],
)
def test_a_421_closes_the_connection(line: str, closes: bool) -> None:
    assert closes_connection(line) is closes


POSITIVE = reply("250 2.1.0 Scripted")


@pytest.mark.parametrize(
    ("waiting", "line", "sent", "still_waiting"),
    [
        (None, "250 2.1.0 Ok", "250 2.1.0 Ok", None),
        (None, "550 5.1.1 No", "550 5.1.1 No", None),
        (POSITIVE, "250 2.1.0 Ok", "250 2.1.0 Scripted", None),
        (POSITIVE, "354 End data with <CR><LF>.<CR><LF>", "250 2.1.0 Scripted", None),
        (POSITIVE, "250-mx1.example.test", None, POSITIVE),
        (POSITIVE, "501 5.5.4 Syntax", "501 5.5.4 Syntax", None),
    ],
    ids=["none-success", "none-error", "success", "354", "continuation", "error-stands"],
)
def test_a_positive_script_replaces_only_the_last_line_of_a_success(
    waiting: Reply | None, line: str, sent: str | None, still_waiting: Reply | None
) -> None:
    assert with_scripted_text(waiting, line) == (sent, still_waiting)


@pytest.mark.parametrize(
    ("command", "answer"),
    [
        ("QUIT", (BYE, True)),
        (" quit \r", (BYE, True)),
        ("EHLO client.example.net", (BAD_SEQUENCE, False)),
        ("MAIL FROM:<bob@example.net>", (BAD_SEQUENCE, False)),
        ("", (BAD_SEQUENCE, False)),
    ],
)
def test_after_a_rejecting_greeting_only_quit_is_answered(
    command: str, answer: tuple[str, bool]
) -> None:
    assert answer_while_rejecting(command) == answer
