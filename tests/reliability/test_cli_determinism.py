"""Deterministic from the outside: two ``mxsandbox run FILE --json`` processes with one seed
print the same bytes, and write the same trace.

``tests/scenarios`` already runs every file twice in one process; separate processes add what
one process cannot vary: hash randomisation (``PYTHONHASHSEED``), fresh ports for every
socket, and a fresh interpreter's caches.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

# The equal-preference shuffle (randomness from the seed) and five days of timeouts and
# retries (virtual time).
FILES = ("equal-preference-balancing", "give-up-after-5-days")


def run_json(name: str, trace: Path, hash_seed: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "sandbox", "run", f"scenarios/{name}.yaml", "--json",
         "--trace", str(trace)],
        cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": hash_seed},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("name", FILES)
def test_two_processes_print_the_same_json_and_trace(name: str, tmp_path: Path) -> None:
    first = run_json(name, tmp_path / "first.jsonl", "1")
    second = run_json(name, tmp_path / "second.jsonl", "2")
    assert first == second
    assert (tmp_path / "first.jsonl").read_bytes() == (tmp_path / "second.jsonl").read_bytes()
