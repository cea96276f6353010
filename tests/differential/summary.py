"""The agreement tables at the end of a pytest session (called from tests/conftest.py: under
pytest-xdist only the root conftest is loaded in the controller, which prints the summary)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Print each MTA's agreement table and keep the tables in out/differential/."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is None:
        return
    shared = factory.getbasetemp() / "differential"
    tables = sorted(shared.glob("*-agreement.md")) if shared.exists() else []
    if not tables:
        return
    keep = ROOT / "out" / "differential"
    keep.mkdir(parents=True, exist_ok=True)
    terminalreporter.section("differential: real MTAs vs mxsandbox run --profile")
    for table in tables:
        shutil.copy(table, keep / table.name)
        results = table.with_name(table.name.replace("-agreement.md", "-results.json"))
        if results.exists():
            shutil.copy(results, keep / results.name)
        terminalreporter.write(table.read_text() + "\n")
    terminalreporter.write_line(f"(the tables and per-case verdicts are also in {keep})")
