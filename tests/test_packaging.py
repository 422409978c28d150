"""Installed names: one top-level package, ``xtlens``; the repository folders core/, profiling/ and dashboard/
are its subpackages and are not importable as top-level names (they would collide with other distributions)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_subpackages_map_to_repository_folders():
    import xtlens.core.config
    import xtlens.dashboard.views
    import xtlens.profiling.results.records

    assert Path(xtlens.core.config.__file__).resolve() == REPO / "core" / "config.py"
    assert Path(xtlens.profiling.results.records.__file__).resolve() == REPO / "profiling" / "results" / "records.py"
    assert Path(xtlens.dashboard.views.__file__).resolve() == REPO / "dashboard" / "views" / "__init__.py"


def test_no_top_level_core_profiling_or_dashboard(tmp_path):
    code = ("import importlib.util as u, sys; "
            "print(*[n for n in ('core', 'profiling', 'dashboard') if u.find_spec(n) is not None]); "
            "print(u.find_spec('xtlens.core') is not None)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["", "True"]


def test_no_sys_path_edits_in_sources():
    offenders = [str(p.relative_to(REPO)) for folder in ("core", "profiling", "dashboard", "benchmarks")
                 for p in (REPO / folder).rglob("*.py") if "sys.path.insert" in p.read_text()]
    assert offenders == []
