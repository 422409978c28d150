"""The seams between xtlens's modules, read from the source with ``ast`` (nothing is imported or run).

* No module imports a ``_private`` name of another xtlens module: what one module needs of another is a
  public, documented name of the module that owns it. (Importing a public name under a private alias,
  ``from x import device_name as _device_name``, is fine.)
* The import graph of xtlens's modules has no cycle, counting every import, also those inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"core": "xtlens.core", "profiling": "xtlens.profiling", "dashboard": "xtlens.dashboard"}


def _modules() -> dict[str, Path]:
    """xtlens module name -> its source file, for every ``.py`` under the three package folders."""
    out = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


MODULES = _modules()


def _absolute(module: str, node: ast.ImportFrom, path: Path) -> str | None:
    """The absolute module name ``from ... import`` names (relative imports resolved)."""
    if node.level == 0:
        return node.module
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(module: str) -> list[tuple[str, str | None, int]]:
    """(imported xtlens module, imported name or None, line) for every import in ``module``'s source."""
    path = MODULES[module]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name in MODULES]
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, node, path)
            if target is None or not target.startswith("xtlens"):
                continue
            for alias in node.names:
                if f"{target}.{alias.name}" in MODULES:  # ``from package import module``
                    out.append((f"{target}.{alias.name}", None, node.lineno))
                elif target in MODULES:
                    out.append((target, alias.name, node.lineno))
    return out


def private_imports() -> list[str]:
    """``file:line imports _name from module`` for each import of a private name across modules."""
    found = []
    for module, path in MODULES.items():
        for target, name, line in imports_of(module):
            if name is not None and name.startswith("_") and not name.startswith("__") and target != module:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {name} from {target}")
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle of ``graph`` as one shortest loop per strongly connected component (Tarjan), e.g.
    ``[a, b, a]``; empty when the graph is acyclic."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    loops = []
    for comp in components:  # the shortest path from the first member back to itself, inside the component
        start, members = comp[0], set(comp)
        paths = {start: [start]}
        frontier = [start]
        loop = None
        while frontier and loop is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & members):
                    if w == start:
                        loop = [*paths[v], start]
                        break
                    if w not in paths:
                        paths[w] = [*paths[v], w]
                        nxt.append(w)
                if loop:
                    break
            frontier = nxt
        loops.append(loop or comp)
    return loops


def import_graph() -> dict[str, set[str]]:
    return {m: {t for t, _, _ in imports_of(m) if t != m} for m in MODULES}


def test_the_scan_sees_every_package_and_the_imports_it_should() -> None:
    # the scan is not vacuous: it finds the modules and a known import of each kind
    assert {"xtlens.core.config", "xtlens.profiling.results.records", "xtlens.profiling.benefit.records",
            "xtlens.dashboard.charts"} <= set(MODULES)
    graph = import_graph()
    assert "xtlens.profiling.results.records" in graph["xtlens.profiling.results.export"]  # module level
    assert "xtlens.profiling.benefit.cli" in graph["xtlens.profiling.cli"]  # inside a function


def test_no_module_imports_a_private_name_of_another() -> None:
    found = private_imports()
    assert not found, "private names imported across modules (make them public in their module):\n" + "\n".join(found)


def test_no_import_cycle_among_xtlens_modules() -> None:
    cycles = import_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c", "a"]]),
    ({"a": {"b"}, "b": set(), "c": {"c"}}, [["c", "c"]]),
    ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, []),
])
def test_the_cycle_finder_finds_cycles_and_only_cycles(graph, expected) -> None:
    assert import_cycles(graph) == expected


def test_the_private_import_check_names_file_and_name(tmp_path, monkeypatch) -> None:
    # a module that imports a private name, and one that aliases a public name as private (allowed)
    (tmp_path / "profiling").mkdir()
    (tmp_path / "profiling" / "a.py").write_text("def _hidden():\n    pass\n\ndef shown():\n    pass\n")
    (tmp_path / "profiling" / "b.py").write_text("def f():\n    from xtlens.profiling.a import _hidden\n"
                                                 "from xtlens.profiling.a import shown as _shown\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    monkeypatch.setitem(globals(), "MODULES", {"xtlens.profiling.a": tmp_path / "profiling" / "a.py",
                                               "xtlens.profiling.b": tmp_path / "profiling" / "b.py"})
    assert private_imports() == ["profiling/b.py:2 imports _hidden from xtlens.profiling.a"]
