"""What many tests share: where the project is, and the command line run as a user runs it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest

    from sandbox import RunResult

__all__ = [
    "ROOT",
    "SCENARIOS",
    "TWO_MX_ZONE",
    "claim_shared_run",
    "mxsandbox",
    "readme_example",
    "run_two_mx",
    "shared_directory",
    "tail",
    "wait_for_file",
]

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))

# example.test with two MX hosts: mx1 (preference 10) and its backup mx2 (20).
TWO_MX_ZONE = """\
$TTL 3600
@     IN MX 10 mx1
@     IN MX 20 mx2
mx1   IN A  192.0.2.10
mx2   IN A  192.0.2.11
"""


def run_two_mx(hosts: dict[str, Any], **extra: Any) -> RunResult:
    """Run one message from bob@example.net to alice@example.test, whose zone is
    ``TWO_MX_ZONE``, with the hosts scripted as ``hosts`` and any other top-level keys."""
    from sandbox import run_scenario, scenario_from_mapping

    data: dict[str, Any] = {
        "name": "two-mx",
        "zones": {"example.test": TWO_MX_ZONE},
        "hosts": hosts,
        "messages": [{"from": "bob@example.net", "to": "alice@example.test"}],
        **extra,
    }
    return run_scenario(scenario_from_mapping(data))


def mxsandbox(
    *args: str,
    cwd: Path = ROOT,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    stdout_to: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``mxsandbox ARGS`` in a fresh process (as ``python -m sandbox``), its output captured;
    with ``stdout_to``, its stdout goes to that file instead (``stdout`` is then empty)."""
    with contextlib.ExitStack() as stack:
        stdout = stack.enter_context(open(stdout_to, "w")) if stdout_to else subprocess.PIPE
        return subprocess.run(
            [sys.executable, "-m", "sandbox", *args],
            cwd=cwd,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, **(env or {})},
        )


def readme_example(heading: str) -> str:
    """The first fenced Python block under ``heading`` in the README, as the README has it:
    tests run the README's own examples, so that the README cannot drift from what works."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(heading + "\n") :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```\n", start)]


# --- one run per pytest session, shared by the xdist workers -------------------------------------
# The real MTAs' suites run once per session in a background process; the first worker that
# needs its results starts it, and every worker reads the files it writes.


def shared_directory(factory: pytest.TempPathFactory, name: str) -> Path:
    """A directory every xdist worker of this pytest session sees (made if missing)."""
    base = factory.getbasetemp()
    directory = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def claim_shared_run(directory: Path) -> bool:
    """True in exactly one process of the session: the one that starts the shared run."""
    try:
        os.close(os.open(directory / "runner.lock", os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


def wait_for_file(
    path: Path, timeout: float, *, failed: Callable[[], str | None], late: Callable[[], str]
) -> None:
    """Until another process writes ``path``; AssertionError with ``failed()`` as soon as it
    says the run went wrong, or with ``late()`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if (why := failed()) is not None:
            raise AssertionError(why)
        if time.monotonic() > deadline:
            raise AssertionError(late())
        time.sleep(1.0)  # another process writes it: polled, with a deadline


def tail(path: Path, size: int = 4000) -> str:
    """The end of a log file, or "" when there is none yet."""
    return path.read_text(errors="replace")[-size:] if path.exists() else ""
