"""The command line's new views: check with lint findings, the zone check before the story,
--quiet, --report, and colour only on a terminal. Real processes, exit codes."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, mxsandbox

ANSI = re.compile(r"\x1b\[[0-9;]*[mK]")

BROKEN_ZONE = """\
name: broken-zone
zones:
  example.test: |
    $TTL 3600
    @     IN MX 10 mx1
    @     IN MX 20 mx2.example.test
    mx1   IN A  192.0.2.10
    mx2   IN A  192.0.2.11
messages:
  - {from: bob@example.net, to: alice@example.test}
"""


def test_check_reports_a_lint_error_at_its_file_line_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN_ZONE)
    done = mxsandbox("check", str(path))
    assert done.returncode == 1, done.stdout + done.stderr
    first, mend, verdict = done.stdout.splitlines()
    assert first.startswith(
        f"{path}:6: error: zone example.test line 3: the MX names mx2.example.test.example.test."
    )
    assert first.endswith("[mx-missing-dot; RFC 1035 §5.1]")
    assert (
        mend
        == "    mend: end the name with a dot ('mx2.example.test.') or write it relative ('mx2')"
    )
    assert verdict.startswith(f"{path}: 1 error — broken-zone:")


WARNED_ZONE = """\
name: warned-zone
zones:
  example.test: |
    $TTL 3600
    @     IN MX 10 mx1
    @     IN MX 20 mx2
    mx1   IN A  192.0.2.10
    mx2   IN A  192.0.2.10
messages:
  - {from: bob@example.net, to: alice@example.test}
"""


def test_check_prints_warnings_and_still_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "warned.yaml"
    path.write_text(WARNED_ZONE)
    done = mxsandbox("check", str(path))
    assert done.returncode == 0, done.stdout
    assert f"{path}:6: warning: zone example.test line 3:" in done.stdout
    assert "[mx-same-address; RFC 5321 §5.1]" in done.stdout
    assert done.stdout.splitlines()[-1].endswith("; 1 warning")
    assert "\x1b[" not in done.stdout  # a pipe gets plain text


def test_check_on_an_unreadable_file_exits_2() -> None:
    done = mxsandbox("check", "no-such-file.yaml")
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_run_prints_the_zone_check_before_the_story() -> None:
    done = mxsandbox("run", "mx-points-at-cname")
    assert done.returncode == 0
    out = done.stdout
    assert out.index("Zone check") < out.index("Message 1:")
    assert "  scenarios/mx-points-at-cname.yaml:15: error:" in out


def test_run_of_a_zone_with_a_lint_error_still_runs_and_shows_it(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN_ZONE)
    done = mxsandbox("run", str(path))
    assert done.returncode == 0  # no expectation failed: the lint informs, it does not judge
    assert f"{path}:6: error:" in done.stdout


def test_quiet_prints_only_the_summary() -> None:
    done = mxsandbox("run", "primary-down", "--quiet")
    assert done.returncode == 0
    assert done.stdout.startswith("Summary\n-------\n")
    assert "Message 1:" not in done.stdout and "Zone check" not in done.stdout
    assert done.stderr == ""


def test_quiet_balancing_summary_has_the_chi_square_line() -> None:
    done = mxsandbox("run", "equal-preference-balancing", "--quiet")
    assert "Balancing: example.test, preference 10 (2 hosts, 200 messages)" in done.stdout
    # Every message is a session of its own: the postfix profile goes over TLS, and Postfix
    # keeps no TLS session for the next message (smtp_tls_connection_reuse = no).
    assert "chi-square 0.72 with 1 degree of freedom: p = 0.396" in done.stdout
    assert "consistent with an even split" in done.stdout


def test_report_writes_one_html_file(tmp_path: Path) -> None:
    out = tmp_path / "out.html"
    done = mxsandbox("run", "all-down-then-recovered", "--quiet", "--report", str(out))
    assert done.returncode == 0, done.stderr
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>") and 'data-lanes="2"' in text


def test_a_report_path_that_cannot_be_written_exits_2_in_one_line(tmp_path: Path) -> None:
    done = mxsandbox("run", "primary-down", "--report", str(tmp_path / "no" / "such" / "x.html"))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "cannot write the report" in done.stderr


def on_a_terminal(*args: str, env: dict[str, str]) -> str:
    """Run the command with a pseudo-terminal for stdout and stderr; return all it wrote."""
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "sandbox", *args],
            cwd=ROOT,
            stdout=follower,
            stderr=follower,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "TERM": "xterm", **env},
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.wait(timeout=120) == 0
    finally:
        os.close(leader)
    return b"".join(chunks).decode("utf-8")


def test_a_terminal_gets_colour_and_drawn_tables() -> None:
    env = {key: value for key, value in os.environ.items() if key != "NO_COLOR"}
    out = on_a_terminal("run", "primary-down", env={**env, "NO_COLOR": ""})
    assert "\x1b[" in out
    assert "┌" in out and "│" in out
    plain = ANSI.sub("", out).replace("\r\n", "\n")
    assert "connect to mx1.example.test[192.0.2.10]:25 … refused" in plain


def test_no_color_keeps_a_terminal_plain() -> None:
    out = on_a_terminal("run", "primary-down", env={"NO_COLOR": "1"})
    assert "\x1b[" not in out and "┌" not in out
    piped = mxsandbox("run", "primary-down").stdout
    assert out.replace("\r\n", "\n") == piped
