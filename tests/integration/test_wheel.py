"""The package as a newcomer gets it: a wheel built from this repository, installed with its
``pytest`` extra into a fresh virtual environment, used from an empty directory.

This needs the network once, for what pip fetches from the package index: the build backend
(hatchling, in pip's isolated build environment) and the package's dependencies; pip's cache
serves them after the first time. Everything else stays on this machine. It takes about half
a minute, most of it pip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import ROOT, SCENARIOS
from tests.integration.test_readme_plugin import write_example

# Every step has a time limit: a hung index or a hung run fails the test instead of the suite.
BUILD_TIMEOUT = 300
STEP_TIMEOUT = 120

PLUGIN_TEST = """
async def test_a_shipped_scenario_by_name(mx_sandbox):
    sb = await mx_sandbox("primary-down")
    assert sb.hosts == ("mx1.example.test", "mx2.example.test")
    assert sb.smtp_port > 0 and sb.dns[1] > 0
"""


def _run(args: list[str], cwd: Path, timeout: float = STEP_TIMEOUT) -> str:
    # Nothing of this checkout may leak into the fresh environment.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel and its pytest extra: its bin/ folder."""
    base = tmp_path_factory.mktemp("wheel")
    wheels = base / "wheels"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), str(ROOT)],
        cwd=base,
        timeout=BUILD_TIMEOUT,
    )
    (wheel,) = wheels.glob("mxsandbox-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {f"sandbox/scenarios/{p.name}" for p in SCENARIOS} <= names
    assert "sandbox/py.typed" in names
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=base)
    bin_dir = venv / "bin"
    _run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", f"{wheel}[pytest]"],
        cwd=base,
        timeout=BUILD_TIMEOUT,
    )
    return bin_dir


def test_the_wheel_works_from_an_empty_directory(installed: Path, tmp_path: Path) -> None:
    """One test, so that the wheel is built once even when pytest-xdist spreads the suite."""
    empty = tmp_path / "empty"
    empty.mkdir()
    listed = _run([str(installed / "mxsandbox"), "list"], cwd=empty)
    assert [line.split()[0] for line in listed.splitlines()] == [p.stem for p in SCENARIOS]

    story = _run([str(installed / "mxsandbox"), "run", "primary-down"], cwd=empty)
    assert "✔ delivered to alice@example.test by mx2.example.test" in story
    assert "All expectations hold." in story

    # The fixture serves a shipped scenario by its name, with no pytest configuration at all,
    # and the README's first plugin example passes as written.
    (empty / "test_plugin.py").write_text(PLUGIN_TEST)
    write_example(empty, skip_primary=False)
    tested = _run(
        [str(installed / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"], empty
    )
    assert "2 passed" in tested
