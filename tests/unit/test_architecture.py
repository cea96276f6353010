"""The tree keeps the shape of the architecture: no import cycles, a light core, few loose
modules.

The import graph is read from the source with ``ast``: every ``import`` and ``from … import``
of a sandbox module counts, at the top of a module, inside a function or under
``TYPE_CHECKING`` alike, because each of them is a dependency a reader has to follow.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

PACKAGE = ROOT / "sandbox"
# The seven jobs of the architecture, each a package (DESIGN.md, "Layout").
JOBS = ("core", "scenario", "dns", "hosts", "sender", "output", "serve")
MAX_LOOSE_MODULES = 8
HEAVY = ("asyncio", "aiosmtpd", "aiosmtplib", "dnslib", "looptime")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The sandbox modules that ``name`` imports, anywhere in its source."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}".rstrip(".")
            # `from sandbox.x import y` is module sandbox.x.y when y is a module, else sandbox.x
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            if target in known and target != name:
                found.add(target)
                break
    return found


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_there_is_no_import_cycle_between_sandbox_modules() -> None:
    # The package's own __init__ is lazy (PEP 562) and names modules only as strings, but its
    # TYPE_CHECKING block imports the public API: leave it out, as nothing imports it back.
    graph = {k: {v for v in vs if v != "sandbox"} for k, vs in import_graph().items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_core_imports_nothing_outside_the_core_but_errors() -> None:
    graph = import_graph()
    for name, targets in graph.items():
        if name.startswith("sandbox.core"):
            outside = {t for t in targets if not t.startswith("sandbox.core")} - {"sandbox.errors"}
            assert not outside, f"{name} imports {outside}"


def test_each_job_has_its_package_and_few_modules_stay_loose() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert set(JOBS) <= packages
    loose = sorted(
        p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")
    )
    assert len(loose) <= MAX_LOOSE_MODULES, loose


def test_the_readme_tree_names_every_module_and_package() -> None:
    # The README's "The tree" is the map a newcomer reads first: a module it leaves out is
    # one nobody finds. A package's modules are named in its own row (or as `package/module`).
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    tree = readme.split("### The tree", 1)[1].split("\n## ", 1)[0]
    rows = {row.split("`", 2)[1]: row for row in tree.splitlines() if row.startswith("| `")}
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        relative = path.relative_to(PACKAGE)
        if len(relative.parts) == 1:
            found = f"`{path.name}`" in tree
        else:
            row = rows.get(f"{relative.parts[0]}/", "")
            found = f"`{path.stem}`" in row or f"`{path.stem}/`" in row
            found = found or f"`{relative.with_suffix('').as_posix()}`" in tree
        if not found:
            missing.append(relative.as_posix())
    packages = [p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()]
    missing += [f"{name}/" for name in packages if f"{name}/" not in rows]
    assert missing == [], "add each to its package's row of the README's tree"


def loaded_after(statement: str) -> list[str]:
    """The heavy modules a fresh interpreter has loaded after running ``statement``."""
    program = (
        f"import sys, json\n{statement}\n"
        f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded: list[str] = json.loads(done.stdout)
    return loaded


def test_importing_the_core_loads_no_event_loop_smtp_or_dns_library() -> None:
    core = ", ".join(sorted(n for n in modules() if n.startswith("sandbox.core.")))
    assert loaded_after(f"import {core}") == []
    # The public API is lazy: naming what it offers loads nothing either.
    assert loaded_after("import sandbox; sandbox.__all__") == []


def test_the_check_finds_heavy_imports() -> None:
    assert loaded_after("import sandbox.run") == list(HEAVY)
