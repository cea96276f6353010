"""The core must stay free of I/O: no asyncio, sockets or network library imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "sandbox" / "core"
FORBIDDEN = {
    "asyncio",
    "socket",
    "selectors",
    "ssl",
    "dnslib",
    "aiosmtplib",
    "aiosmtpd",
    "dns",
    "looptime",
    "smtplib",
}


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_module_imports_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{path.name} imports {imported & FORBIDDEN}"
    assert imported <= FORBIDDEN | {
        "__future__",
        "sandbox",
        "dataclasses",
        "typing",
        "random",
        "re",
        "math",
        "ipaddress",
        "itertools",
        "collections",
        "email",
        "datetime",
    }


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_module_imports_only_the_core_and_the_errors(path: Path) -> None:
    """The core knows nothing of events, sinks or the shell (they import the core's types)."""
    ours = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            ours |= {alias.name for alias in node.names if alias.name.startswith("sandbox")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sandbox"):
            ours.add(node.module)
    assert all(m.startswith("sandbox.core.") or m == "sandbox.errors" for m in ours), ours
