"""Output that cannot be written is the user's to mend, not a crash: a full disk (``/dev/full``
answers every write with ENOSPC) gives one line on stderr and exit 2, whichever output it is."""

from __future__ import annotations

import pytest

from tests.helpers import mxsandbox

FULL = "/dev/full"


@pytest.mark.parametrize(
    "args",
    [
        ["run", "primary-down", "--json"],
        ["run", "primary-down"],
        ["run", "primary-down", "--quiet"],
        ["run", "primary-down", "--log", "postfix"],
        ["check", "primary-down"],
        ["list", "scenarios"],
    ],
    ids=lambda a: " ".join(a),
)
def test_stdout_on_a_full_disk_exits_2_with_one_line(args: list[str]) -> None:
    done = mxsandbox(*args, stdout_to=FULL)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line == "error: <stdout>: cannot write the output: No space left on device"


@pytest.mark.parametrize(("option", "what"), [("--trace", "the trace"), ("--report", "the report")])
def test_a_trace_or_report_on_a_full_disk_exits_2_with_one_line(option: str, what: str) -> None:
    done = mxsandbox("run", "primary-down", "--quiet", option, FULL)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line == f"error: {FULL}: cannot write {what}: No space left on device"
    assert "All expectations hold." in done.stdout  # the run's own output is still there
