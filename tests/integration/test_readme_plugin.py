"""The README's first plugin example, run as a user runs it: copied into an empty directory
with no pytest configuration, beside a ``my_sender.py``, under a pytest of its own. It must
pass for a sender that tries the refusing primary first, and fail for one that skips it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import readme_example

SENDER = Path(__file__).with_name("readme_sender.py")


def write_example(folder: Path, *, skip_primary: bool) -> None:
    """The README's test and a ``my_sender.py`` (correct, or skipping the primary)."""
    (folder / "test_failover.py").write_text(readme_example("### The pytest plugin"))
    sender = SENDER.read_text()
    if skip_primary:
        sender = sender.replace("\nSKIP_PRIMARY = False\n", "\nSKIP_PRIMARY = True\n")
        assert "SKIP_PRIMARY = True" in sender
    (folder / "my_sender.py").write_text(sender)


def run_pytest(folder: Path, python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_failover.py"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_readme_example_passes_for_a_sender_that_tries_the_primary_first(
    tmp_path: Path,
) -> None:
    write_example(tmp_path, skip_primary=False)
    done = run_pytest(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_the_readme_example_fails_for_a_sender_that_skips_the_primary(tmp_path: Path) -> None:
    write_example(tmp_path, skip_primary=True)
    done = run_pytest(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed" in done.stdout
    assert "expected the hosts to be tried in this order: mx1.example.test → mx2.example.test" in (
        done.stdout
    )
    assert "observed: mx2.example.test\n" in done.stdout
