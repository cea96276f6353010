"""The scenarios that come with the package, and finding a scenario by its name.

The files live in the repository's top-level ``scenarios/`` folder. A wheel carries them as
``sandbox/scenarios/`` (pyproject.toml's ``force-include``); an editable install or a source
checkout has no such copy inside the package, and reads the folder beside it. So
``mxsandbox run null-mx`` and ``mx_sandbox("null-mx")`` work from any directory, installed
either way.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = ["find_scenario", "scenario_files", "shipped_folder", "shipped_scenarios"]

_PACKAGE = Path(__file__).resolve().parents[1]  # sandbox/
_SUFFIXES = (".yaml", ".yml")


def shipped_folder() -> Path:
    """Where the shipped scenario files are: inside the installed package (a wheel), else the
    source tree's ``scenarios/`` beside the package (an editable install, a checkout)."""
    inside = _PACKAGE / "scenarios"
    if inside.is_dir():
        return inside
    return _PACKAGE.parent / "scenarios"


def shipped_scenarios() -> list[Path]:
    """Every shipped scenario file, by name."""
    return scenario_files(shipped_folder())


def scenario_files(folder: Path) -> list[Path]:
    """The scenario files of a folder, by name (``.yaml`` and ``.yml``)."""
    return sorted(
        (path for suffix in _SUFFIXES for path in folder.glob(f"*{suffix}")),
        key=lambda path: path.name,
    )


def find_scenario(name: str | Path, *, folders: Iterable[Path] = ()) -> Path:
    """The file a scenario name stands for.

    A path that exists is itself. Otherwise a bare name (``null-mx``, or ``null-mx.yaml``) is
    looked up in ``folders`` first (such as ``./scenarios``), then among the shipped
    scenarios. When nothing matches, the path is returned as it was written, so that loading
    it reports the missing file.
    """
    path = Path(name)
    if path.exists() or len(path.parts) != 1:
        return path
    stem = path.stem if path.suffix in _SUFFIXES else path.name
    for folder in (*folders, shipped_folder()):
        for suffix in _SUFFIXES:
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return path
