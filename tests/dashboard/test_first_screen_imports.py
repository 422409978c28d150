"""The first screen's imports: what ``dashboard/app.py`` imports and the Overview's view load no torch (nor
x-transformers, Ray or another tab's view); torch is seconds of a new server's first screen (issue 21, point 6).
Each check runs in a fresh interpreter, since this test session has imported torch already."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
HEAVY = ("torch", "x_transformers", "ray", "xtlens.core.builder", "xtlens.profiling.benefit.harness")


def app_imports() -> list[str]:
    """The import statements at ``app.py``'s top level, as written (read from its source)."""
    return [ast.unparse(node) for node in ast.parse(APP.read_text()).body
            if isinstance(node, ast.Import | ast.ImportFrom) and getattr(node, "module", "") != "__future__"]


def loaded_after(code: str) -> dict[str, bool]:
    probe = code + f"\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_app_and_overview_imports_load_no_torch() -> None:
    statements = app_imports() + ["from xtlens.dashboard.views import overview"]
    assert "import streamlit as st" in statements  # the scan sees the real imports
    assert any("jobs" in s for s in statements) and any("data" in s for s in statements)
    loaded = loaded_after("\n".join(statements))
    assert not any(loaded.values()), loaded


def test_the_control_imports_torch() -> None:
    # the probe can see a heavy import: the Benefits tab's view does import torch (through its probes)
    assert loaded_after("import xtlens.dashboard.views.benefits")["torch"]


def test_device_list_without_a_gpu_driver_needs_no_torch() -> None:
    code = ("from xtlens.dashboard import data\n"
            "assert data.no_gpu_driver(), 'this machine has a GPU driver: the check does not apply'\n"
            "devices = data.devices()\n"
            "assert [d for d, _ in devices] == ['cpu'], devices\n")
    from xtlens.dashboard import data

    if not data.no_gpu_driver():  # a GPU machine: the list comes from torch, as it must
        import torch

        assert [d for d, _ in data.devices()][-1] == "cpu" and torch.cuda.device_count() >= 0
        return
    assert not loaded_after(code)["torch"]


def test_overview_draws_no_code_block_until_the_keywords_expander_opens() -> None:
    # the expander's two code blocks load the page's syntax highlighter: drawn only when a user opens it
    from streamlit.testing.v1 import AppTest
    from xtlens.core.config import PRESETS

    at = AppTest.from_file(str(APP), default_timeout=300).run()
    assert not at.exception
    assert "The keywords as written and as passed, with every translation explained" in [e.label for e in at.expander]
    assert len(at.code) == 0
    at.session_state["overview.keywords_open"] = True
    at.run()
    assert [c.value for c in at.code][0] == PRESETS["seed"].to_snippet()
