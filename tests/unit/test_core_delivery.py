"""The delivery attempt, driven by hand: each action answered with a made-up outcome."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sandbox import PROFILES, Profile
from sandbox.core.classify import NoReply, Outcome, ServerReply
from sandbox.core.delivery import (
    Action,
    Attempt,
    Connect,
    Disconnect,
    ReadGreeting,
    SendCommand,
    SendMessage,
    describe_outcome,
    reported_reply,
)
from sandbox.core.mx import Candidate

MX1 = Candidate("mx1.example.test", "192.0.2.10", 10)
MX2 = Candidate("mx2.example.test", "192.0.2.11", 20)
OK = ServerReply(250, "2.0.0 Ok")

Script = Callable[[Candidate, Action], Outcome | None]


def normal(candidate: Candidate, action: Action) -> Outcome | None:
    match action:
        case Connect() | Disconnect():
            return None
        case ReadGreeting():
            return ServerReply(220, f"{candidate.host} ESMTP")
        case SendCommand(stage="data"):
            return ServerReply(354, "go ahead")
        case _:
            return OK


def host_script(**by_host: Script) -> Script:
    def script(candidate: Candidate, action: Action) -> Outcome | None:
        return by_host.get(candidate.host.split(".")[0], normal)(candidate, action)

    return script


def drive(attempt: Attempt, script: Script) -> list[tuple[str, str]]:
    """Run an attempt to its end; return (host, step) for every action taken."""
    log: list[tuple[str, str]] = []
    candidate = attempt.candidates[0]
    while (action := attempt.next_action()) is not None:
        if isinstance(action, Connect):
            candidate = action.candidate
        step = getattr(action, "line", type(action).__name__)
        log.append((candidate.host.split(".")[0], step))
        attempt.receive(script(candidate, action))
    return log


def refuse(candidate: Candidate, action: Action) -> Outcome | None:
    return NoReply("refused") if isinstance(action, Connect) else normal(candidate, action)


def reply_at(stage: str, reply: ServerReply) -> Script:
    def script(candidate: Candidate, action: Action) -> Outcome | None:
        if isinstance(action, SendCommand) and action.stage == stage:
            return reply
        if stage == "greeting" and isinstance(action, ReadGreeting):
            return reply
        if stage == "message" and isinstance(action, SendMessage):
            return reply
        return normal(candidate, action)

    return script


def new(
    *recipients: str, profile: Profile | None = None, candidates: tuple[Candidate, ...] = (MX1, MX2)
) -> Attempt:
    return Attempt(
        "bob@example.net", recipients or ("alice@example.test",), candidates, profile or Profile()
    )


def test_a_normal_session_in_rfc_order() -> None:
    attempt = new()
    log = drive(attempt, normal)
    assert [step for _, step in log] == [
        "Connect",
        "ReadGreeting",
        "EHLO sender.sandbox.test",
        "MAIL FROM:<bob@example.net>",
        "RCPT TO:<alice@example.test>",
        "DATA",
        "SendMessage",
        "Disconnect",
    ]
    state = attempt.recipients["alice@example.test"]
    assert (state.status, state.host, state.dsn) == ("delivered", "mx1.example.test", "2.0.0")


def test_refused_primary_fails_over_to_the_backup_in_the_same_attempt() -> None:
    attempt = new()
    log = drive(attempt, host_script(mx1=refuse))
    assert log[0] == ("mx1", "Connect")
    assert log[1] == ("mx2", "Connect")
    assert attempt.recipients["alice@example.test"].host == "mx2.example.test"
    notes = attempt.take_notes()
    assert [n.action for n in notes] == ["next_host", "deliver"]
    # One decision says what happened and what follows, naming the host it goes to.
    assert notes[0].why == (
        "the connection was refused: try the next host, mx2.example.test[192.0.2.11]"
    )


def test_all_hosts_down_leaves_the_recipient_pending_with_the_last_error() -> None:
    attempt = new()
    drive(attempt, refuse)
    state = attempt.recipients["alice@example.test"]
    assert state.status == "pending"
    assert state.dsn == "4.4.1"
    assert state.reply == "connect to mx2.example.test[192.0.2.11]:25: Connection refused"


def test_5xx_to_rcpt_bounces_that_recipient_only_and_there_is_no_failover() -> None:
    def carol_unknown(candidate: Candidate, action: Action) -> Outcome | None:
        if isinstance(action, SendCommand) and "carol" in action.line:
            return ServerReply(550, "5.1.1 No such user")
        return normal(candidate, action)

    attempt = new("alice@example.test", "carol@example.test")
    log = drive(attempt, carol_unknown)
    assert {host for host, _ in log} == {"mx1"}
    assert attempt.recipients["alice@example.test"].status == "delivered"
    carol = attempt.recipients["carol@example.test"]
    assert (carol.status, carol.dsn) == ("bounced", "5.1.1")
    assert "(in reply to RCPT TO command)" in carol.reply


def test_4xx_to_rcpt_keeps_the_recipient_for_the_next_host() -> None:
    attempt = new()
    drive(attempt, host_script(mx1=reply_at("rcpt", ServerReply(451, "4.7.1 Greylisted"))))
    assert attempt.recipients["alice@example.test"].host == "mx2.example.test"


def test_421_greeting_moves_on_without_quit() -> None:
    attempt = new()
    log = drive(attempt, host_script(mx1=reply_at("greeting", ServerReply(421, "4.3.2 bye"))))
    assert ("mx1", "Disconnect") in log
    assert attempt.recipients["alice@example.test"].host == "mx2.example.test"


def test_5xx_greeting_at_the_last_host_defers_rather_than_bounces() -> None:
    attempt = new(candidates=(MX1,))
    drive(attempt, reply_at("greeting", ServerReply(554, "5.7.1 go away")))
    assert attempt.recipients["alice@example.test"].status == "pending"


def test_5xx_to_mail_bounces_the_message() -> None:
    attempt = new("a@example.test", "b@example.test")
    log = drive(attempt, reply_at("mail", ServerReply(553, "5.7.1 sender rejected")))
    assert {s.status for s in attempt.recipients.values()} == {"bounced"}
    assert {host for host, _ in log} == {"mx1"}


def test_ehlo_refused_falls_back_to_helo() -> None:
    attempt = new()
    log = drive(attempt, reply_at("ehlo", ServerReply(502, "5.5.1 EHLO not supported")))
    assert ("mx1", "HELO sender.sandbox.test") in log
    assert attempt.recipients["alice@example.test"].status == "delivered"


def test_lost_after_the_dot_is_unsure_and_tries_the_next_host() -> None:
    def drop_after_dot(candidate: Candidate, action: Action) -> Outcome | None:
        if isinstance(action, SendMessage):
            return NoReply("lost")
        return normal(candidate, action)

    attempt = new()
    drive(attempt, host_script(mx1=drop_after_dot))
    state = attempt.recipients["alice@example.test"]
    assert state.unsure
    assert state.host == "mx2.example.test"


def test_session_limit_stops_the_walk() -> None:
    mx3 = Candidate("mx3.example.test", "192.0.2.12", 30)
    attempt = new(candidates=(MX1, MX2, mx3))
    log = drive(attempt, reply_at("mail", ServerReply(451, "4.3.0 busy")))
    assert {host for host, _ in log} == {"mx1", "mx2"}
    assert attempt.take_notes()[-1].action == "give_up"


def test_haraka_defers_the_whole_attempt_on_a_4xx_greeting() -> None:
    haraka = PROFILES["haraka"]
    attempt = new(profile=haraka)
    log = drive(attempt, host_script(mx1=reply_at("greeting", ServerReply(421, "4.3.2 busy"))))
    assert {host for host, _ in log} == {"mx1"}
    assert attempt.recipients["alice@example.test"].status == "pending"
    assert attempt.take_notes()[-1].action == "defer"


def test_haraka_bounces_on_a_5xx_greeting() -> None:
    attempt = new(profile=PROFILES["haraka"])
    drive(attempt, reply_at("greeting", ServerReply(554, "5.7.1 no")))
    assert attempt.recipients["alice@example.test"].status == "bounced"


def test_an_expired_reply_says_so_once_for_every_reader() -> None:
    last = "connect to mx2.example.test[192.0.2.11]:25: Connection timed out"
    assert reported_reply(last, expired=False) == last
    assert reported_reply(last, expired=True) == f"{last} (message expired)"
    assert reported_reply("", expired=True) == "expired"


def test_postfix_words_every_stage_the_shell_reports() -> None:
    probe = ServerReply(421, "4.3.2 closing")
    assert describe_outcome("rset", MX1.host, MX1.address, probe) == (
        "host mx1.example.test[192.0.2.10] said: 421 4.3.2 closing (in reply to RSET probe)"
    )
    assert describe_outcome("rset", MX1.host, MX1.address, NoReply("lost")) == (
        "lost connection with mx1.example.test[192.0.2.10] while sending RSET probe"
    )
    assert describe_outcome("connect", MX1.host, MX1.address, NoReply("error", "No route")) == (
        "connect to mx1.example.test[192.0.2.10]:25: No route"
    )


# --- what the attempt reports to the queue -------------------------------------------------


def test_a_refusing_last_host_is_a_site_failure() -> None:
    attempt = new()
    drive(attempt, refuse)
    report = attempt.report()
    assert report.site_failure == "connect to mx2.example.test[192.0.2.11]:25: Connection refused"
    assert [f.address for f in report.failed_hosts] == ["192.0.2.10", "192.0.2.11"]
    assert report.good_hosts == ()


@pytest.mark.parametrize(
    ("stage", "reply", "site"),
    [
        ("greeting", ServerReply(421, "4.3.2 busy"), True),
        ("ehlo", ServerReply(451, "4.3.0 later"), True),
        ("mail", ServerReply(451, "4.3.0 later"), False),
        ("rcpt", ServerReply(451, "4.3.0 later"), False),
        ("data", ServerReply(451, "4.3.0 later"), False),
    ],
)
def test_a_handshake_failure_is_the_sites_and_a_transaction_reply_the_messages(
    stage: str, reply: ServerReply, site: bool
) -> None:
    attempt = new()
    drive(attempt, reply_at(stage, reply))
    assert attempt.pending == ("alice@example.test",)
    assert (attempt.report().site_failure is not None) is site


def test_a_lost_connection_before_the_transaction_ends_is_a_site_failure() -> None:
    def lose_at_data(candidate: Candidate, action: Action) -> Outcome | None:
        if isinstance(action, SendCommand) and action.stage == "data":
            return NoReply("lost")
        return normal(candidate, action)

    attempt = new()
    drive(attempt, lose_at_data)
    assert attempt.report().site_failure is not None


def test_a_delivered_attempt_reports_no_site_failure_and_a_good_host() -> None:
    attempt = new()
    drive(attempt, refuse_only("mx1"))
    report = attempt.report()
    assert report.site_failure is None and report.good_hosts == ("192.0.2.11",)


def refuse_only(name: str) -> Script:
    def script(candidate: Candidate, action: Action) -> Outcome | None:
        if candidate.host.startswith(name + "."):
            return refuse(candidate, action)
        return normal(candidate, action)

    return script


def test_hosts_inside_their_retry_time_are_skipped_and_not_counted() -> None:
    attempt = Attempt(
        "bob@example.net",
        ("alice@example.test",),
        (MX1, MX2),
        Profile(),
        avoid=frozenset({MX1.address}),
    )
    log = drive(attempt, normal)
    assert {host for host, _ in log} == {"mx2"}
    assert next(n.action for n in attempt.take_notes()) == "skip"


def test_no_host_due_is_reported_untried() -> None:
    attempt = Attempt(
        "bob@example.net",
        ("alice@example.test",),
        (MX1, MX2),
        Profile(),
        avoid=frozenset({MX1.address, MX2.address}),
    )
    assert drive(attempt, normal) == []
    assert attempt.report().untried == "retry time not reached for any host"


def seven_mx() -> tuple[Candidate, ...]:
    return tuple(Candidate(f"mx{i}.example.test", f"192.0.2.{i}", i * 10) for i in range(1, 8))


def test_exim_tries_past_hosts_max_try_while_a_higher_mx_remains() -> None:
    exim = PROFILES["exim"]
    attempt = new(profile=exim, candidates=seven_mx())

    def first_six_refuse(candidate: Candidate, action: Action) -> Outcome | None:
        if candidate.host != "mx7.example.test":
            return refuse(candidate, action)
        return normal(candidate, action)

    log = drive(attempt, first_six_refuse)
    assert [h for h, step in log if step == "Connect"] == [f"mx{i}" for i in range(1, 8)]
    assert attempt.recipients["alice@example.test"].status == "delivered"


def test_exim_stops_at_hosts_max_try_among_equal_preferences() -> None:
    exim = PROFILES["exim"]
    same = tuple(Candidate(f"mx{i}.example.test", f"192.0.2.{i}", 10) for i in range(1, 8))
    attempt = new(profile=exim, candidates=same)
    log = drive(attempt, refuse)
    assert len([1 for _, step in log if step == "Connect"]) == exim.hosts_max_try == 5


# --- the profiles' own rules ----------------------------------------------------------------


def test_exim_falls_back_to_helo_after_a_4xx_to_ehlo_before_it_gives_up_on_the_host() -> None:
    busy = ServerReply(451, "4.3.0 Try again later")

    def both_busy(candidate: Candidate, action: Action) -> Outcome | None:
        if isinstance(action, SendCommand) and action.stage in ("ehlo", "helo"):
            return busy
        return normal(candidate, action)

    attempt = new(profile=PROFILES["exim"])
    log = drive(attempt, host_script(mx1=both_busy))
    # EHLO 451, HELO 451, QUIT at mx1 (as Exim 4.96 did against serve), then mx2.
    assert log[:5] == [
        ("mx1", "Connect"),
        ("mx1", "ReadGreeting"),
        ("mx1", "EHLO sender.sandbox.test"),
        ("mx1", "HELO sender.sandbox.test"),
        ("mx1", "Disconnect"),
    ]
    assert attempt.recipients["alice@example.test"].host == "mx2.example.test"
    # Postfix gives up on the host at once.
    postfix = new()
    log = drive(postfix, host_script(mx1=both_busy))
    assert ("mx1", "HELO sender.sandbox.test") not in log


@pytest.mark.parametrize("stage", ["greeting", "ehlo", "mail", "rcpt", "data", "message"])
def test_haraka_ends_the_attempt_on_a_4xx_at_every_stage(stage: str) -> None:
    attempt = new(profile=PROFILES["haraka"])
    log = drive(attempt, host_script(mx1=reply_at(stage, ServerReply(451, "4.3.0 later"))))
    assert {host for host, _ in log} == {"mx1"}
    state = attempt.recipients["alice@example.test"]
    assert (state.status, state.dsn) == ("pending", "4.3.0")
    assert state.relay == "mx1.example.test[192.0.2.10]"


def test_haraka_tried_all_mxs_is_5_1_2_with_no_remote_host() -> None:
    attempt = new(profile=PROFILES["haraka"])
    drive(attempt, refuse)
    state = attempt.recipients["alice@example.test"]
    assert (state.status, state.dsn, state.reply) == ("pending", "5.1.2", "Tried all MXs")
    assert state.relay is None
    # Postfix keeps the last error, and names no relay either: the connect was refused.
    postfix = new()
    drive(postfix, refuse)
    state = postfix.recipients["alice@example.test"]
    assert (state.dsn, state.relay) == ("4.4.1", None)
    assert state.reply.endswith("Connection refused")


def test_the_relay_is_the_host_whose_session_gave_the_last_reply() -> None:
    attempt = new()
    drive(attempt, reply_at("rcpt", ServerReply(451, "4.7.1 Greylisted")))
    assert attempt.recipients["alice@example.test"].relay == "mx2.example.test[192.0.2.11]"


def test_a_handshake_refusal_is_worded_as_postfix_words_it() -> None:
    attempt = new(candidates=(MX1,))
    drive(attempt, reply_at("greeting", ServerReply(421, "4.3.2 Service shutting down")))
    assert attempt.recipients["alice@example.test"].reply == (
        "host mx1.example.test[192.0.2.10] refused to talk to me: 421 4.3.2 Service shutting down"
    )


def test_a_session_kept_for_the_destination_is_where_the_walk_starts() -> None:
    attempt = Attempt(
        "bob@example.net", ("alice@example.test",), (MX1, MX2), Profile(), kept=MX2.address
    )
    log = drive(attempt, normal)
    assert [h for h, step in log if step == "Connect"] == ["mx2"]
    skip = next(n for n in attempt.take_notes() if n.action == "skip")
    assert skip.why.startswith("mx1.example.test[192.0.2.10]: not tried: a session to mx2")
    # A session to the first host changes nothing, and one to no candidate is ignored.
    for kept in (MX1.address, "192.0.2.99"):
        attempt = Attempt("b@x.test", ("a@example.test",), (MX1, MX2), Profile(), kept=kept)
        assert [h for h, step in drive(attempt, normal) if step == "Connect"] == ["mx1"]
