"""The dashboard's folders by role, read from the sources' import statements (``ast``, nothing is run):
``charts/`` is pure (no Streamlit, nothing from ``session/`` or ``views/``), only ``views/`` and ``app.py``
import views, and only ``session/store.py`` touches ``st.session_state`` / ``st.query_params``."""

from __future__ import annotations

import ast
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboard"


def _sources() -> dict[str, ast.Module]:
    return {str(p.relative_to(DASHBOARD)): ast.parse(p.read_text(), filename=str(p))
            for p in sorted(DASHBOARD.rglob("*.py"))}


def _imports(tree: ast.Module) -> set[str]:
    """Every module a file imports (``from a import b`` counts as ``a`` and ``a.b``), at any depth."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def test_the_sources_are_where_the_layout_says() -> None:
    files = set(_sources())
    assert {"app.py", "charts/__init__.py", "session/store.py", "views/__init__.py"} <= files
    assert not {"state.py", "jobs.py", "charts.py", "benefit_charts.py", "setup_charts.py", "provenance.py"} & files


def test_charts_import_no_streamlit_no_session_and_no_views() -> None:
    charts = {name: _imports(tree) for name, tree in _sources().items() if name.startswith("charts/")}
    assert len(charts) >= 4
    bad = {name: sorted(m for m in mods if m.split(".")[0] == "streamlit"
                        or m.startswith(("xtlens.dashboard.session", "xtlens.dashboard.views", "xtlens.dashboard.state")))
           for name, mods in charts.items()}
    assert {name: mods for name, mods in bad.items() if mods} == {}


def test_only_views_and_the_app_import_views() -> None:
    upward = {name: sorted(m for m in _imports(tree) if m.startswith("xtlens.dashboard.views"))
              for name, tree in _sources().items() if not name.startswith("views/") and name != "app.py"}
    assert {name: mods for name, mods in upward.items() if mods} == {}


def test_only_the_store_touches_the_session_state_and_the_url() -> None:
    touching = set()
    for name, tree in _sources().items():
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr in ("session_state", "query_params")
                    and isinstance(node.value, ast.Name) and node.value.id in ("st", "streamlit")):
                touching.add(name)
    assert touching == {"session/store.py"}
