"""What many tests share: where the project is, and the command line run as a user runs it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = ["ROOT", "SCENARIOS", "mxsandbox", "readme_example"]

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))


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
