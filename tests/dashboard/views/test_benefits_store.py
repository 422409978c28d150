"""The Benefits page says which probe runs came from the result store, and Measure again trains them again."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from xtlens.core.config import PRESETS
from xtlens.profiling.benefit import probe_store
from xtlens.profiling.benefit.probes import ProbeOptions, plan, run_probe

APP = Path(__file__).resolve().parents[3] / "dashboard" / "app.py"


def _wait_for(at: AppTest, text: str, timeout_s: float = 240) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        found = [c.value for c in at.caption if text in c.value]
        if found:
            return found[0]
        assert time.monotonic() < deadline, [c.value for c in at.caption]
        time.sleep(1)
        at.run()


@pytest.mark.slow
def test_the_page_serves_stored_runs_says_so_and_measure_again_trains_again(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XTLENS_CACHE_DIR", str(tmp_path))
    # what the page builds from these widgets: the heads probe of the seed's family, 3 steps per run
    options = ProbeOptions(probe="heads", base=PRESETS["seed"], values=(4,), tokens=6144, seeds=(0,))
    first = run_probe(options)
    # 4 heads (fixed rotary width) = full K/V, x-transformers' rotary rule, 1 and 2 K/V heads, the control
    assert len(plan(options)) == 5
    stored = probe_store.rows_count()
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    at.session_state["view"] = "Benefits"
    for k, v in {"benefits.probe": "heads", "benefits.heads.values": "4", "benefits.heads.tokens": 6144,
                 "benefits.heads.seeds": "0"}.items():
        at.session_state[k] = v
    at.run()
    (run,) = [b for b in at.button if b.label == "Run probe"]
    run.click().run()
    caption = _wait_for(at, "heads probe: finished")
    when = min(r.timestamp for r in first).replace("T", " ").removesuffix("+00:00")  # 2026-11-26 05:40:55
    assert f"0 run(s) measured now; 5 from the result store (measured {when}" in caption, caption
    assert probe_store.rows_count() == stored  # nothing trained
    (again,) = [b for b in at.button if b.label == "Measure again"]
    again.click().run()
    caption = _wait_for(at, "heads probe: finished")
    assert "5 run(s) measured now" in caption and "result store" not in caption, caption
    assert probe_store.rows_count() == 2 * stored
    assert not at.exception
