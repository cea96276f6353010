"""The HTML timeline report: its structure, from real runs, and its size for 1,000 messages."""

from __future__ import annotations

import re
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from sandbox import (
    Connected,
    ConnectFailed,
    Event,
    HostStats,
    Profile,
    RecipientFinal,
    RouteChosen,
    RunResult,
    SmtpExchange,
    load_scenario,
    run_scenario,
    scenario_from_mapping,
)
from sandbox.output.report.data import build_flow
from sandbox.output.report.render import MANY_PATHS, render_report
from sandbox.scenario.lint import lint_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


class Page(HTMLParser):
    """The elements of a page, as (tag, attributes), in document order."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def with_attr(self, name: str) -> list[dict[str, str]]:
        return [attrs for _, attrs in self.elements if name in attrs]

    def ids(self) -> set[str]:
        return {attrs["id"] for _, attrs in self.elements if "id" in attrs}

    def marks(self) -> int:
        return sum(int(a["data-count"]) for a in self.with_attr("data-mark"))


def report_of(name: str) -> tuple[RunResult, str]:
    scenario = load_scenario(SCENARIOS / f"{name}.yaml")
    result = run_scenario(scenario)
    return result, render_report(result, lint_scenario(scenario))


def connection_attempts(result: RunResult) -> int:
    return sum(isinstance(e, Connected | ConnectFailed) for e in result.events)


def test_the_page_is_self_contained() -> None:
    _, text = report_of("primary-down")
    page = Page(text)
    assert text.startswith("<!doctype html>")
    assert not [a for _, a in page.elements if "src" in a or "href" in a]
    assert "@import" not in text and "url(http" not in text
    assert {tag for tag, _ in page.elements} >= {"style", "script", "svg"}
    assert {
        "timeline",
        "timeline-svg",
        "mx",
        "balance",
        "paths",
        "expectations",
        "findings",
        "selfcheck",
        "flow-data",
    } <= page.ids()


def test_failover_in_one_attempt_two_lanes_and_the_path_between_them() -> None:
    _, text = report_of("primary-down")
    page = Page(text)
    assert [a["data-lane"] for a in page.with_attr("data-lane")] == [
        "mx1.example.test",
        "mx2.example.test",
    ]
    assert [a["data-outcome"] for a in page.with_attr("data-mark")] == ["refused", "accepted"]
    (path,) = [a for a in page.with_attr("data-message")]
    assert path["class"] == "path s-delivered"
    assert [a["data-phase"] for a in page.with_attr("data-phase")] == ["refuse", "up"]
    assert "Message 1: attempt 1 at 0:00:00: mx1 ✕ refused, mx2 ● accepted" in text


def test_all_down_then_recovered_shows_phases_marks_and_the_seven_attempts() -> None:
    result, text = report_of("all-down-then-recovered")
    page = Page(text)
    (svg,) = [a for tag, a in page.elements if tag == "svg" and a.get("id") == "timeline-svg"]
    assert (svg["data-lanes"], svg["data-marks"], svg["data-axis"]) == ("2", "13", "time")
    assert page.marks() == connection_attempts(result) == 13
    outcomes = Counter(a["data-outcome"] for a in page.with_attr("data-mark"))
    assert outcomes == {"refused": 12, "accepted": 1}
    # Each lane: down (refusing) until 2h, then up.
    assert [a["data-phase"] for a in page.with_attr("data-phase")] == [
        "refuse",
        "up",
        "refuse",
        "up",
    ]
    (path,) = page.with_attr("data-message")
    assert len(path["points"].split()) == 2 * 13 - 1  # every mark, and a midpoint per hop
    assert "attempts 1 to 6 (0:00:00 to 1:20:00): mx1 ✕ refused, mx2 ✕ refused" in text
    # The MX table in the sender's order, with the zone's lines.
    rows = re.findall(r"<tr><td>(\d)</td><td>(\d+)</td><td>([a-z0-9.]+)</td>", text)
    assert rows == [("1", "10", "mx1.example.test"), ("2", "20", "mx2.example.test")]


def test_the_balancing_report_has_its_chart_and_a_histogram_per_lane() -> None:
    result, text = report_of("equal-preference-balancing")
    page = Page(text)
    assert page.marks() == connection_attempts(result) == 200
    assert all(a["class"] == "mark agg" for a in page.with_attr("data-mark"))
    assert [a["data-host"] for a in page.with_attr("data-host")] == [
        "mx1.example.test",
        "mx2.example.test",
    ]
    # One session per message (TLS sessions are not kept: smtp_tls_connection_reuse = no).
    assert "chi-square 0.72 with 1 degree of freedom: p = 0.396, consistent" in text
    assert 'data-axis="order"' in text  # the run took no virtual time: drawn in order
    # Paths are grouped: two kinds of path (mx1 took it, mx2 took it).
    assert sorted(int(a["data-paths"]) for a in page.with_attr("data-paths")) == [94, 106]


def test_the_zone_check_and_the_expectations_are_in_the_page() -> None:
    _, text = report_of("mx-points-at-cname")
    assert "mx-cname; RFC 2181 §10.3, RFC 5321 §5.1" in text
    assert text.count('<li class="ok">') == 2


def test_the_same_run_gives_the_same_page() -> None:
    assert report_of("all-down-then-recovered")[1] == report_of("all-down-then-recovered")[1]


def test_text_from_the_scenario_is_escaped() -> None:
    scenario = scenario_from_mapping(
        {
            "name": "escape",
            "title": "<script>alert(1)</script>",
            "zones": {"example.test": "$TTL 3600\n@ IN MX 10 mx1\nmx1 IN A 192.0.2.10\n"},
            "messages": [{"from": "bob@example.net", "to": "a@example.test"}],
        }
    )
    text = render_report(run_scenario(scenario))
    assert "<script>alert(1)" not in text and "&lt;script&gt;alert(1)" in text


# --- a thousand messages -------------------------------------------------------------------------


def synthetic(count: int) -> RunResult:
    """A run's result made by hand: every third message finds mx1 refusing and fails over."""
    scenario = scenario_from_mapping(
        {
            "name": "many",
            "zones": {
                "example.test": "$TTL 3600\n@ IN MX 10 mx1\n@ IN MX 10 mx2\n"
                "mx1 IN A 192.0.2.10\nmx2 IN A 192.0.2.11\n"
            },
            "messages": [{"from": "b@example.net", "to": "a@example.test", "count": count}],
        }
    )
    events: list[Event] = []
    hosts = (("mx1.example.test", "192.0.2.10"), ("mx2.example.test", "192.0.2.11"))
    accepted = Counter[str]()
    for n in range(1, count + 1):
        t = float(n)
        first, second = hosts if n % 2 else hosts[::-1]
        events.append(
            RouteChosen(
                t=t,
                message=n,
                attempt=1,
                domain="example.test",
                route="mx",
                hosts=((10, first[0], (first[1],)), (10, second[0], (second[1],))),
                why="",
            )
        )
        taker = first
        if n % 3 == 0:
            events.append(
                ConnectFailed(
                    t=t, message=n, attempt=1, host=first[0], address=first[1], reason="refused"
                )
            )
            taker = second
        events.append(Connected(t=t, message=n, attempt=1, host=taker[0], address=taker[1]))
        events.append(
            SmtpExchange(
                t=t,
                message=n,
                attempt=1,
                host=taker[0],
                address=taker[1],
                stage="message",
                command="<message> .",
                code=250,
                reply="2.0.0 Ok",
            )
        )
        events.append(
            RecipientFinal(
                t=t,
                message=n,
                recipient="a@example.test",
                status="delivered",
                host=taker[0],
                address=taker[1],
                dsn="2.0.0",
                reply="250 ok",
                attempts=1,
            )
        )
        accepted[taker[0]] += 1
    stats = tuple(
        HostStats(name, (address,), 0, accepted[name], "accept") for name, address in hosts
    )
    return RunResult(
        scenario=scenario,
        seed=0,
        profile=Profile(),
        deliveries=(),
        hosts=stats,
        expectations=(),
        events=tuple(events),
        ended_at=float(count),
    )


def test_a_thousand_messages_stay_readable_and_small() -> None:
    result = synthetic(1000)
    text = render_report(result)
    page = Page(text)
    attempts = connection_attempts(result)
    assert page.marks() == attempts == 1333
    # Marks are aggregated into a histogram; paths into weighted flows.
    assert len(page.with_attr("data-mark")) <= 2 * 80 + 2
    assert not page.with_attr("data-message")
    assert 0 < len([a for tag, a in page.elements if tag == "line" and "data-count" in a]) < 400
    assert len(text) < 400_000
    # The paths table groups: messages that took the same way are one row.
    assert len(page.with_attr("data-paths")) == 4
    assert sum(int(a["data-paths"]) for a in page.with_attr("data-paths")) == 1000
    assert len(build_flow(result).paths) > MANY_PATHS


@pytest.mark.parametrize("count", [1, 2, MANY_PATHS, MANY_PATHS + 1])
def test_paths_are_drawn_one_by_one_up_to_many_then_as_flows(count: int) -> None:
    page = Page(render_report(synthetic(count)))
    drawn = page.with_attr("data-message")
    with_hops = sum(1 for n in range(1, count + 1) if n % 3 == 0)
    assert len(drawn) == (with_hops if count <= MANY_PATHS else 0)


def test_a_finding_about_the_messages_is_listed_without_a_zone_line() -> None:
    scenario = scenario_from_mapping(
        {
            "name": "x",
            "zones": {"example.test": "@ IN MX 10 mx1\nmx1 IN A 192.0.2.10\n"},
            "messages": [{"from": "bob@example.net", "to": "carol@elsewhere.test"}],
        }
    )
    page = render_report(run_scenario(scenario), lint_scenario(scenario))
    assert "messages (&lt;inline&gt;): message 1 goes to carol@elsewhere.test" in page
    assert "zone  line 0" not in page
