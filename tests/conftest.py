"""Every test gets its own cache folder and result database (never the developer's .xtlens-cache)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _own_result_store(tmp_path, monkeypatch):
    monkeypatch.setenv("XTLENS_CACHE_DIR", str(tmp_path / "xtlens-cache"))
    monkeypatch.delenv("XTLENS_DB", raising=False)
