"""The core must stay free of I/O: no asyncio, sockets or network library imports.

So must the mail hosts' scripting rules (``sandbox/hosts/script.py``): the sessions are the
I/O shell around them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SANDBOX = Path(__file__).resolve().parents[2] / "sandbox"
SANS_IO = [*sorted((SANDBOX / "core").glob("*.py")), SANDBOX / "hosts" / "script.py"]
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


@pytest.mark.parametrize("path", SANS_IO, ids=lambda p: str(p.relative_to(SANDBOX)))
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
        "heapq",
        "email",
        "datetime",
        "idna",  # pure: the IDNA 2008 tables and Punycode (core.idn)
    }
