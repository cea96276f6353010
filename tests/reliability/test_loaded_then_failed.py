"""Scenario files that once loaded (``check`` said ok), then failed at run time: each is now
refused when it is loaded, with exit 2 and one line ``FILE:LINE: KEY: what is wrong; how to
mend it``, by ``check`` and ``run`` alike.

Each section is one finding of issue 16: too many deliveries (point 10) …
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from sandbox import ScenarioError, load_scenario_text
from sandbox.cli import main
from sandbox.scenario.load import MAX_DELIVERIES, MAX_RECIPIENTS

ZONE = "zones:\n  example.test: |\n    @ IN MX 10 mx1\n    mx1 IN A 192.0.2.10\n"


def scenario(*parts: str) -> str:
    """A scenario with one zone (mx1.example.test at 192.0.2.10) and ``parts`` after it."""
    return "name: loaded-then-failed\n" + ZONE + "".join(parts)


def refused(text: str, line: int, key: str, *words: str) -> ScenarioError:
    """Loading ``text`` fails at ``line`` and ``key`` with a message that has ``words``."""
    with pytest.raises(ScenarioError) as caught:
        load_scenario_text(text, "bad.yaml")
    error = caught.value
    assert (error.line, error.key) == (line, key), str(error)
    for word in words:
        assert word in error.message, str(error)
    return error


def commands_refuse(tmp_path: Path, text: str, line: int) -> None:
    """``check`` and ``run`` both exit 2 with one line that points at ``line``."""
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    for command in ("check", "run"):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([command, str(path)])
        assert code == 2, (command, out.getvalue())
        (said,) = err.getvalue().splitlines()
        assert said.startswith(f"error: {path}:{line}: "), said


# --- point 10: count x recipients ------------------------------------------------------------


def recipients(count: int) -> str:
    return "".join(f"      - r{i}@example.test\n" for i in range(count))


def test_count_times_recipients_past_the_limit_is_refused_at_the_count(tmp_path: Path) -> None:
    # The file: 100,000 copies of a message to 10,000 recipients passed `check`, then
    # `run` died of MemoryError after 47 s. Now the recipients alone are too many.
    text = scenario(
        "messages:\n  - from: bob@example.net\n    count: 100000\n    to:\n",
        recipients(10_000),
    )
    refused(text, 10, "messages[0].to", f"more than the {MAX_RECIPIENTS:,} one message")
    commands_refuse(tmp_path, text, 10)
    # Within the limit per message, the product is what counts.
    per_message = 101
    count = MAX_DELIVERIES // per_message + 1
    text = scenario(
        f"messages:\n  - from: bob@example.net\n    count: {count}\n    to:\n",
        recipients(per_message),
    )
    refused(text, 8, "messages[0].count", f"more than the {MAX_DELIVERIES:,} a run may have")
    commands_refuse(tmp_path, text, 8)


def test_deliveries_are_counted_across_messages() -> None:
    half = MAX_DELIVERIES // 2
    text = scenario(
        "messages:\n",
        f"  - {{from: bob@example.net, to: a@example.test, count: {half}}}\n",
        f"  - {{from: bob@example.net, to: b@example.test, count: {half - 1}}}\n",
        "  - {from: bob@example.net, to: [c@example.test, d@example.test]}\n",
    )
    refused(text, 9, "messages[2].to", f"{MAX_DELIVERIES + 1:,} deliveries")


def test_the_limits_themselves_load() -> None:
    per_message = MAX_RECIPIENTS
    count = MAX_DELIVERIES // per_message
    text = scenario(
        f"messages:\n  - from: bob@example.net\n    count: {count}\n    to:\n",
        recipients(per_message),
    )
    loaded = load_scenario_text(text)
    assert sum(len(m.recipients) for m in loaded.messages) == MAX_DELIVERIES
