"""Scripts that count, in run mode: phases that end after a number of sessions (or connection
attempts), mailbox replies that change after a number of RCPTs, and the rate limits. Every
scenario runs through real DNS and real SMTP on the virtual clock; the assertions are about
what the sender and the hosts saw."""

from __future__ import annotations

from typing import Any

from sandbox import (
    ConnectFailed,
    HostPhase,
    HostSession,
    RunResult,
    run_scenario,
    scenario_from_mapping,
)

ONE_MX = "$TTL 3600\n@ IN MX 10 mx1\nmx1 IN A 192.0.2.10\n"
TWO_MX = ONE_MX + "@ IN MX 20 mx2\nmx2 IN A 192.0.2.11\n"


def run(hosts: dict[str, Any], zone: str = ONE_MX, **extra: Any) -> RunResult:
    scenario = scenario_from_mapping(
        {
            "name": "counting",
            "zones": {"example.test": zone},
            "hosts": hosts,
            "messages": [{"from": "bob@example.net", "to": "alice@example.test"}],
            **extra,
        }
    )
    return run_scenario(scenario)


def greetings(result: RunResult, host: str = "mx1.example.test") -> list[str]:
    return [
        e.transcript[0][2].split()[0]
        for e in result.events
        if isinstance(e, HostSession) and e.host == host
    ]


def test_a_host_that_fails_its_first_two_sessions_takes_the_third() -> None:
    result = run(
        {"mx1.example.test": [{"times": 2, "do": {"greeting": "421 4.3.2 busy"}}, {"do": "accept"}]}
    )
    (row,) = result.deliveries
    # Postfix's backoff: 0:00 and 0:05 meet the 421, 0:10 the accepting phase.
    assert (row.status, row.attempts, row.at) == ("delivered", 3, 600.0)
    assert greetings(result) == ["421", "421", "220"]
    (phase,) = [e for e in result.events if isinstance(e, HostPhase)]
    assert (phase.phase, phase.after, phase.behaviour, phase.ended) == (
        2,
        "2 sessions",
        "accept",
        "greeting→421",
    )
    assert result.hosts[0].behaviour == "greeting→421 for 2 sessions, then accept"


def test_a_refusing_phase_counts_the_senders_connection_attempts() -> None:
    result = run({"mx1.example.test": [{"times": 2, "do": "refuse"}, {"do": "accept"}]})
    (row,) = result.deliveries
    assert (row.status, row.attempts) == ("delivered", 3)
    assert result.hosts[0].connections == 3  # two refused, one session
    assert greetings(result) == ["220"]


def test_a_timed_out_phase_counts_its_attempts_too() -> None:
    result = run(
        {"mx1.example.test": [{"times": 1, "do": "timeout"}, {"do": "accept"}]},
    )
    (row,) = result.deliveries
    assert (row.status, row.attempts) == ("delivered", 2)
    failed = [e.reason for e in result.events if isinstance(e, ConnectFailed)]
    assert failed == ["timeout"]


def test_until_and_times_end_a_phase_at_whichever_comes_first() -> None:
    # The until comes first: the third attempt (0:10) is past 6 minutes.
    by_time = run(
        {"mx1.example.test": [{"times": 5, "until": "6m", "do": "refuse"}, {"do": "accept"}]}
    )
    assert (by_time.deliveries[0].attempts, by_time.deliveries[0].at) == (3, 600.0)
    assert not [e for e in by_time.events if isinstance(e, HostPhase)]
    # The count comes first: the second attempt (0:05) is well before the hour.
    by_count = run(
        {"mx1.example.test": [{"times": 1, "until": "1h", "do": "refuse"}, {"do": "accept"}]}
    )
    assert (by_count.deliveries[0].attempts, by_count.deliveries[0].at) == (2, 300.0)


def test_a_phase_whose_until_passed_while_an_earlier_one_counted_is_skipped() -> None:
    phases = [
        {"times": 3, "do": "refuse"},
        {"until": "1m", "do": {"greeting": "554 5.7.1 never seen"}},
        {"do": "accept"},
    ]
    result = run({"mx1.example.test": phases})
    # Attempts at 0:00, 0:05, 0:10 are refused; the 554 phase ended at 0:01 unseen.
    assert (result.deliveries[0].status, result.deliveries[0].attempts) == ("delivered", 4)
    assert greetings(result) == ["220"]


def test_the_sessions_of_both_messages_count_in_one_host() -> None:
    scenario = scenario_from_mapping(
        {
            "name": "counting",
            "zones": {"example.test": TWO_MX},
            "hosts": {
                "mx1.example.test": [
                    {"times": 1, "do": {"greeting": "421 4.3.2 busy"}},
                    {"do": "accept"},
                ]
            },
            "messages": [
                {"from": "bob@example.net", "to": "alice@example.test"},
                {"from": "bob@example.net", "to": "alice@example.test", "at": "1m"},
            ],
        }
    )
    first, second = run_scenario(scenario).deliveries
    assert (first.host, second.host) == ("mx2.example.test", "mx1.example.test")


def test_a_mailbox_whose_replies_count_fails_its_first_rcpt_only() -> None:
    scenario = scenario_from_mapping(
        {
            "name": "counting",
            "zones": {"example.test": ONE_MX},
            "hosts": {
                "mx1.example.test": {
                    "recipients": {
                        "carol@example.test": [
                            {"times": 1, "do": "451 4.2.0 busy"},
                            {"do": "250 2.1.5 carol is in"},
                        ]
                    }
                }
            },
            "messages": [
                {"from": "bob@example.net", "to": ["alice@example.test", "carol@example.test"]}
            ],
        }
    )
    result = run_scenario(scenario)
    rows = {row.recipient: row for row in result.deliveries}
    assert (rows["alice@example.test"].attempts, rows["alice@example.test"].at) == (1, 0.0)
    assert (rows["carol@example.test"].status, rows["carol@example.test"].attempts) == (
        "delivered",
        2,
    )
    carol = [
        line
        for e in result.events
        if isinstance(e, HostSession)
        for _, side, line in e.transcript
        if side == "S" and line.startswith(("451", "250 2.1.5 carol"))
    ]
    assert carol == ["451 4.2.0 busy", "250 2.1.5 carol is in"]


def test_at_most_one_message_a_session_sends_the_kept_session_elsewhere() -> None:
    scenario = scenario_from_mapping(
        {
            "name": "counting",
            "zones": {"example.test": TWO_MX},
            # Plain text: Postfix keeps no TLS session for the next message.
            "hosts": {
                "mx1.example.test": {"max_messages": 1, "tls": "none"},
                "mx2.example.test": {"tls": "none"},
            },
            "messages": [{"from": "bob@example.net", "to": "alice@example.test", "count": 3}],
            # One delivery at a time, so that the sender keeps its session for the next one.
            "sender": {"concurrency": 1, "initial_concurrency": 1},
        }
    )
    result = run_scenario(scenario)
    assert [row.host for row in result.deliveries] == [
        "mx1.example.test",
        "mx2.example.test",  # its MAIL on the kept session got the limit's 421
        "mx2.example.test",  # the session kept with mx2 is where the next delivery starts
    ]
    limited = [
        line
        for e in result.events
        if isinstance(e, HostSession) and e.host == "mx1.example.test"
        for _, side, line in e.transcript
        if side == "S" and line.startswith("421")
    ]
    assert limited == ["421 4.7.0 Too many messages in one session, try again later"]


def test_connections_past_the_limit_are_greeted_with_its_reply() -> None:
    scenario = scenario_from_mapping(
        {
            "name": "counting",
            "zones": {"example.test": TWO_MX},
            "hosts": {
                "mx1.example.test": {
                    "max_connections": {"limit": 1, "reply": "421 4.7.0 Too many connections"}
                }
            },
            # Three at once: mx1 serves one, the others meet the limit and go to mx2.
            "messages": [{"from": "bob@example.net", "to": "alice@example.test", "count": 3}],
        }
    )
    result = run_scenario(scenario)
    hosts = sorted(row.host or "" for row in result.deliveries)
    assert hosts == ["mx1.example.test", "mx2.example.test", "mx2.example.test"]
    assert sorted(greetings(result)) == ["220", "421", "421"]
    assert "at most 1 connection at once" in result.hosts[0].behaviour
