"""The command line as a user meets it: real processes, exit codes, output contract."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.helpers import ROOT, mxsandbox


def test_run_tells_the_story_and_exits_0() -> None:
    done = mxsandbox("run", "scenarios/primary-down.yaml")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "DNS: MX example.test? → 10 mx1.example.test., 20 mx2.example.test." in out
    assert out.index("mx1.example.test[192.0.2.10]:25 … refused") < out.index(
        "mx2.example.test[192.0.2.11]:25 … connected"
    )
    assert "✔ delivered to alice@example.test by mx2.example.test" in out
    assert "All expectations hold." in out


def test_json_follows_the_output_contract() -> None:
    done = mxsandbox("run", "scenarios/primary-down.yaml", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    # The contract's keys, plus the documented extensions.
    assert set(data) == {
        "scenario",
        "seed",
        "ok",
        "deliveries",
        "hosts",
        "expectations",
        "returned",
        "duplicates",
        "tls_reports",
    }
    assert (data["returned"], data["duplicates"], data["tls_reports"]) == ([], [], [])
    assert (data["scenario"], data["seed"], data["ok"]) == ("primary-down", 7, True)
    assert data["deliveries"] == [
        {
            "message": 1,
            "recipient": "alice@example.test",
            "status": "delivered",
            "host": "mx2.example.test",
            "address": "192.0.2.11",
            "at": 0.0,
            "attempts": 1,
            "dsn": "2.0.0",
            "reply": data["deliveries"][0]["reply"],
            # issue 14: how the session that delivered went (the backup's valid certificate)
            "tls": {"version": "TLSv1.3", "verified": True},
        }
    ]
    assert data["deliveries"][0]["reply"].startswith("250 2.0.0")
    assert data["hosts"] == {
        "mx1.example.test": {"connections": 1, "accepted": 0},
        "mx2.example.test": {"connections": 1, "accepted": 1},
    }
    assert all(e["ok"] and e["detail"] for e in data["expectations"])


def test_seed_option_changes_the_seed_in_the_json() -> None:
    data = json.loads(mxsandbox("run", "primary-down", "--json", "--seed", "99").stdout)
    assert data["seed"] == 99


def test_a_false_expectation_exits_1_and_says_which_and_why(tmp_path: Path) -> None:
    text = (ROOT / "scenarios" / "primary-down.yaml").read_text()
    wrong = text.replace(
        "{message: 1, status: delivered, host: mx2.example.test}",
        "{message: 1, status: delivered, host: mx1.example.test}",
    )
    path = tmp_path / "wrong.yaml"
    path.write_text(wrong)
    done = mxsandbox("run", str(path))
    assert done.returncode == 1
    assert "✘ {message: 1, status: delivered, host: mx1.example.test}" in done.stdout
    assert "expected host mx1.example.test, but it was delivered by mx2.example.test" in done.stdout
    assert "1 of 3 expectations failed." in done.stdout


def test_a_broken_scenario_exits_2_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nzones: {example.test: '@ IN MX 10 mx1'}\nuntil: 5 days\n")
    done = mxsandbox("run", str(path))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"{path}:3: until:" in done.stderr


def test_bad_command_line_exits_2() -> None:
    done = mxsandbox("run")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr


def test_missing_file_exits_2() -> None:
    done = mxsandbox("run", "no-such-file.yaml")
    assert done.returncode == 2
    assert "no-such-file.yaml" in done.stderr


def test_trace_writes_every_event_as_json_lines(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    assert mxsandbox("run", "primary-down", "--json", "--trace", str(trace)).returncode == 0
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert {
        "dns_served",
        "dns_answered",
        "connect_failed",
        "connected",
        "smtp",
        "host_session",
        "host_accepted",
        "recipient_final",
    } <= set(kinds)
    times = [e["t"] for e in events]
    assert times == sorted(times)


def test_list_shows_every_scenario_with_its_title() -> None:
    done = mxsandbox("list")
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert any(
        line.startswith("primary-down ") and "backup takes the mail" in line for line in lines
    )
    assert len(lines) == len(list((ROOT / "scenarios").glob("*.yaml")))


def test_list_and_run_by_name_work_from_any_directory(tmp_path: Path) -> None:
    listed = mxsandbox("list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert names == sorted(p.stem for p in (ROOT / "scenarios").glob("*.yaml"))
    ran = mxsandbox("run", "primary-down", "--quiet", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "All expectations hold." in ran.stdout


def test_an_unknown_scenario_name_says_where_names_come_from(tmp_path: Path) -> None:
    done = mxsandbox("run", "no-such-scenario", cwd=tmp_path)
    assert done.returncode == 2
    assert "no scenario of that name" in done.stderr
    assert "mxsandbox list" in done.stderr


@pytest.mark.parametrize("path", sorted((ROOT / "scenarios").glob("*.yaml")), ids=lambda p: p.stem)
def test_check_accepts_every_scenario_but_the_one_that_teaches_an_error(path: Path) -> None:
    done = mxsandbox("check", str(path))
    if path.stem == "mx-points-at-cname":
        # An MX naming a CNAME is an error (RFC 2181 §10.3 MUST NOT): the scenario shows it.
        assert done.returncode == 1, done.stdout
        assert "error: zone example.test line 2" in done.stdout
        assert "[mx-cname; RFC 2181 §10.3" in done.stdout
        # The run itself still delivers, as most senders follow the alias.
        assert mxsandbox("run", str(path), "--quiet").returncode == 0
    else:
        assert done.returncode == 0, done.stdout


@pytest.mark.parametrize(
    ("scenario", "patterns"),
    [
        (
            "primary-down",
            [
                r"^Jan  1 00:00:00 sender postfix/smtp\[\d+\]: connect to "
                r"mx1\.example\.test\[192\.0\.2\.10\]:25: Connection refused$",
                r"^Jan  1 00:00:00 sender postfix/smtp\[\d+\]: 10A0001: to=<alice@example\.test>, "
                r"relay=mx2\.example\.test\[192\.0\.2\.11\]:25, delay=0, delays=0/0/0/0, "
                r"dsn=2\.0\.0, status=sent \(250 2\.0\.0 Ok: queued as \w+\)$",
                r"postfix/qmgr\[\d+\]: 10A0001: removed$",
            ],
        ),
        (
            "greylisting",
            [
                r"10A0001: host mx1\.example\.test\[192\.0\.2\.10\] said: 451 4\.7\.1 .* "
                r"\(in reply to RCPT TO command\)$",
                r"10A0001: to=<alice@example\.test>, .* dsn=4\.7\.1, status=deferred \(",
                r"^Jan  1 00:05:00 .* status=sent \(250",
            ],
        ),
        (
            "rejected-recipient",
            [
                r"to=<carol@example\.test>, relay=mx1\.example\.test\[192\.0\.2\.10\]:25, .*"
                r"dsn=5\.1\.1, status=bounced \(host .* said: 550 5\.1\.1 No such user",
            ],
        ),
        (
            "give-up-after-5-days",
            [
                r"^Jan  6 00:55:30 sender postfix/qmgr\[\d+\]: 10A0001: from=<bob@example\.net>, "
                r"status=expired, returned to sender$",
            ],
        ),
    ],
)
def test_log_postfix_prints_postfix_log_lines(scenario: str, patterns: list[str]) -> None:
    done = mxsandbox("run", scenario, "--log", "postfix")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for pattern in patterns:
        assert any(re.search(pattern, line) for line in lines), pattern
