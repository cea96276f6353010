"""Broken scenario files: every one ends in one clear line and exit 2, never a traceback.

The files come from ``mutants`` (good and known-bad files, damaged the way people damage
them), from random YAML documents built of the format's own keys, and from zone text with
records torn apart. Three depths:

- in process, many: ``load_scenario_text`` returns a scenario or raises ``ScenarioError``,
  whose message is one line that points at a line of the file;
- in process through the command line's own entry point (``sandbox.cli.main``): ``check``,
  and ``run`` for the mutants that still load (they must run, not crash);
- a bounded sample as real processes (``python -m sandbox check|run``): exit 0, 1 or 2, and
  no traceback on stderr.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox import Scenario, ScenarioError, load_scenario_text
from sandbox.cli import main
from tests.helpers import mxsandbox
from tests.reliability.budget import scaled
from tests.reliability.mutants import ZONE_TOKENS, mutant

# What YAML counts as a line break besides "\n" (and so may count in an error's line number).
_BREAKS = ("\r\n", "\r", "\x85", "\u2028", "\u2029")
# A run in process only for mutants this small, so that a mutated `count` stays cheap.
_MAX_RUN_RECIPIENTS = 30


def lines_in(text: str) -> int:
    for other in _BREAKS:
        text = text.replace(other, "\n")
    return text.count("\n") + 1


def load_or_clear_error(text: str) -> Scenario | None:
    """The scenario, or None after checking that the error is one line at a real line."""
    try:
        return load_scenario_text(text, "fuzzed.yaml")
    except ScenarioError as error:
        message = str(error)
        assert "\n" not in message, message
        assert message.startswith("fuzzed.yaml"), message
        assert error.line is None or 1 <= error.line <= lines_in(text) + 1, (error.line, message)
        return None


def cli(*argv: str) -> tuple[int, str, str]:
    """``mxsandbox ARGV`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


_FILES = Path(tempfile.mkdtemp(prefix="mxsandbox-fuzz-"))


def write(text: str, name: str = "fuzzed.yaml") -> Path:
    path = _FILES / name
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return path


def invalid_exit_says_one_line(code: int, err: str) -> None:
    if code == 2:
        assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err


# --- mutants, in process -------------------------------------------------------------------


@settings(max_examples=scaled(1500))
@given(st.randoms(use_true_random=False))
def test_mutated_files_load_or_fail_with_one_clear_line(rng: random.Random) -> None:
    load_or_clear_error(mutant(rng))


@settings(max_examples=scaled(300))
@given(st.randoms(use_true_random=False))
def test_mutated_files_through_the_command_line(rng: random.Random) -> None:
    text = mutant(rng)
    path = write(text)
    code, _, err = cli("check", str(path))
    assert code in (0, 1, 2)
    invalid_exit_says_one_line(code, err)
    scenario = load_or_clear_error(text)
    if scenario is None:
        assert code == 2
        return
    if sum(len(m.recipients) for m in scenario.messages) <= _MAX_RUN_RECIPIENTS:
        code, out, err = cli("run", str(path), "--json")
        assert code in (0, 1)
        assert out.startswith("{")
        assert "Traceback" not in err


# --- random documents of the format's own words --------------------------------------------

_KEYS = st.sampled_from(
    (
        "name", "title", "seed", "until", "zones", "hosts", "dns", "messages", "sender",
        "expect", "from", "to", "count", "at", "do", "zone", "greeting", "ehlo", "mail",
        "rcpt", "data", "message", "recipients", "disconnect", "delay", "greylist",
        "profile", "max_lifetime", "connect_timeout", "status", "host", "dsn", "attempts",
        "accepted", "share", "example.test", "mx1.example.test", "192.0.2.10",
    )
)  # fmt: skip
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(("accept", "refuse", "5m", "2h", "421 4.3.2 Busy", "a@b.test", "@ IN MX 0 .")),
)


def _nested(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=5))


_DOCUMENTS = st.recursive(_SCALARS, _nested, max_leaves=25)


@settings(max_examples=scaled(500))
@given(st.dictionaries(_KEYS, _DOCUMENTS, max_size=8))
def test_random_documents_of_the_formats_words(document: dict[str, Any]) -> None:
    if "name" not in document and document:
        document["name"] = "fuzzed"
    load_or_clear_error(yaml.safe_dump(document, allow_unicode=True))


# --- zone text -----------------------------------------------------------------------------

_ZONE_WORDS = st.sampled_from((*ZONE_TOKENS, "mx1", "mx2", "www", "192.0.2.1", "3600", "10"))


@settings(max_examples=scaled(800))
@given(
    st.lists(st.lists(_ZONE_WORDS, min_size=0, max_size=7).map(" ".join), min_size=1, max_size=8),
    st.booleans(),
)
def test_fuzzed_zone_text(lines: list[str], phased: bool) -> None:
    zone = "\n".join(lines)
    block = "".join(f"    {line}\n" for line in zone.split("\n"))
    if phased:  # the same text as the second phase of a zone
        body = (
            "  example.test:\n    - until: 1h\n      zone: |\n        @ IN A 192.0.2.1\n"
            "    - zone: |\n" + "".join(f"    {line}" for line in block.splitlines(True))
        )
    else:
        body = f"  example.test: |\n{block}"
    text = (
        f"name: zone-fuzz\nzones:\n{body}"
        "messages:\n  - {from: bob@example.net, to: alice@example.test}\n"
    )
    scenario = load_or_clear_error(text)
    if scenario is not None:
        code, _, err = cli("check", str(write(text, "zone.yaml")))
        assert code in (0, 1)
        assert "Traceback" not in err


# --- as real processes ---------------------------------------------------------------------

SUBPROCESS_SAMPLE = scaled(8, 40)


def test_a_sample_of_broken_files_through_the_real_command(tmp_path: Path) -> None:
    rng = random.Random(4242)
    files: list[Path] = []
    while len(files) < SUBPROCESS_SAMPLE:
        text = mutant(rng)
        if load_or_clear_error(text) is None:  # the broken ones: exit 2 is the point
            path = tmp_path / f"broken-{len(files)}.yaml"
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
            files.append(path)
    odd = {
        "empty.yaml": b"",
        "latin1.yaml": "name: caf\xe9\n".encode("latin-1"),
        "binary.yaml": bytes(range(256)),
        "nul.yaml": b"name: x\x00\n",
    }
    for name, data in odd.items():
        (tmp_path / name).write_bytes(data)
        files.append(tmp_path / name)
    files.append(tmp_path)  # a directory
    files.append(tmp_path / "missing.yaml")
    for index, path in enumerate(files):  # each file once, check and run in turn
        command = ("check", "run")[index % 2]
        done = mxsandbox(command, str(path))
        assert done.returncode == 2, (path.name, command, done.stdout, done.stderr)
        invalid_exit_says_one_line(done.returncode, done.stderr)


# --- regressions found by these fuzzers ----------------------------------------------------


def test_a_tag_on_an_empty_value_is_a_clear_error() -> None:
    # PyYAML's float constructor indexes the empty string: an IndexError, not a ValueError.
    assert load_or_clear_error("name: x\nseed: !!float\n") is None


def test_a_duration_past_what_the_clock_can_cover_is_refused() -> None:
    text = (
        "name: far\nzones:\n  example.test: '@ IN A 192.0.2.1'\n"
        "messages:\n  - {from: a@b.test, to: c@example.test, at: 1.0e+300}\n"
    )
    try:
        load_scenario_text(text, "far.yaml")
    except ScenarioError as error:
        assert error.line == 5 and "shorter duration" in error.message
    else:
        raise AssertionError("accepted a message due in 1e300 seconds")


def test_a_run_hundreds_of_virtual_days_long_ends(tmp_path: Path) -> None:
    # Past about 200 virtual days, asyncio could no longer tell "now" from "now plus its
    # clock resolution", and a timer due exactly now never ran: the run hung for ever.
    far = tmp_path / "far.yaml"
    far.write_text(
        "name: far\nzones:\n  example.test: '@ IN A 192.0.2.1'\n"
        "messages:\n  - {from: a@b.test, to: c@example.test, at: 900d}\n",
        encoding="utf-8",
    )
    done = mxsandbox("run", str(far), "--json")
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)["deliveries"]
    assert (row["status"], row["at"]) == ("delivered", 900 * 86400)


@pytest.mark.parametrize(
    ("address", "complaint"),
    [
        ("alice\x00@example.test", "is not a mail address"),
        ("ali\x07ce@example.test", "is not a mail address"),
        ("alice@example\x1b.test", "is not a mail address"),
        ("alice@example..test", "has no usable domain"),
        ("alice@" + "a" * 64 + ".test", "has no usable domain"),
    ],
    ids=["nul", "bell", "escape-in-domain", "empty-label", "long-label"],
)
def test_an_address_that_cannot_be_sent_to_fails_at_load_with_its_line(
    address: str, complaint: str
) -> None:
    text = (
        "name: bad-address\n"
        "zones:\n  example.test: |\n    @ IN MX 10 mx1\n    mx1 IN A 192.0.2.10\n"
        f"messages:\n  - from: bob@example.net\n    to: {json.dumps(address)}\n"
    )
    path = write(text, "bad-address.yaml")
    for command in ("check", "run"):
        code, out, err = cli(command, str(path))
        assert code == 2, (command, out)
        (line,) = err.splitlines()
        assert line.startswith(f"error: {path}:8: messages[0].to:"), line
        assert complaint in line
