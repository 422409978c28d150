"""Export in Chromium: after opening Setups and Latency, Export lists their tables (the per-device memory, the
budget grid, the roofline, the predicted phases; the Latency tab offers "Calibrate this device"), and the budget grid's CSV downloads with its raw column names (units in them) and the
numbers of ``dashboard.budget.grid`` for the default setups."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from playwright.sync_api import expect
from xtlens.core.config import PRESETS, Workload
from xtlens.core.setup import GPU_PRESETS_GIB, ServingSetup, TrainingSetup
from xtlens.core.units import GIB

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_kit import TIMEOUT_MS, chromium, no_exception, open_tab, settle, shot, streamlit_server  # noqa: E402

pytestmark = pytest.mark.browser


def test_export_lists_setups_roofline_and_budget_grid(tmp_path) -> None:
    env = {"XTLENS_CACHE_DIR": str(tmp_path / "cache"), "XTLENS_DB": str(tmp_path / "results.sqlite")}
    with streamlit_server(env=env, log_name="browser_export") as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page.goto(url)
        settle(page)
        open_tab(page, "Setups")
        expect(page.get_by_text("Table: budget grid")).to_be_visible(timeout=TIMEOUT_MS)
        open_tab(page, "Latency")
        # issue 19: the calibrate button, and the uncalibrated preset's prediction labelled as such
        expect(page.get_by_role("button", name="Calibrate this device")).to_be_visible(timeout=TIMEOUT_MS)
        expect(page.get_by_text("uncalibrated: roofline + typical overheads (H200 SXM").first).to_be_visible(
            timeout=TIMEOUT_MS)
        open_tab(page, "Export")
        no_exception(page)
        for line in ("Setups: per-device memory by component", "Setups: budget grid",
                     "Latency: roofline: predicted forward on", "Latency: predicted per phase on H200 SXM"):
            expect(page.get_by_text(line).first).to_be_visible(timeout=TIMEOUT_MS)
        shot(page, "export_tables")
        button = page.locator(".st-key-dl-export-shown-setups-grid-csv")
        button.scroll_into_view_if_needed()
        with page.expect_download(timeout=20_000) as info:
            button.locator("button").click()
        assert info.value.suggested_filename == "setups-budget-grid.csv"
        path = tmp_path / "grid.csv"
        info.value.save_as(path)
        page.close()
    grid = pd.read_csv(path)
    assert {"train_peak_bytes", "serve_total_bytes", "train_flops", "feasible"} <= set(grid.columns), list(grid.columns)
    # the same grid, computed here: the default setups, the first device preset, the literature law
    from xtlens.dashboard import budget

    cfg, wl = PRESETS["seed"], Workload()
    x, y = next(iter(budget.AXIS_PAIRS.values()))
    mine = budget.grid(cfg, wl, x=x, y=y, xs=sorted(set(budget.AXIS_VALUES[x]) | {getattr(cfg, x)}),
                       ys=sorted(set(budget.AXIS_VALUES[y]) | {getattr(cfg, y)}), training=TrainingSetup(),
                       serving=ServingSetup(), law=budget.CHINCHILLA,
                       budget=budget.Budget(device_memory_bytes=int(next(iter(GPU_PRESETS_GIB.values())) * GIB),
                                            train_tokens=10.0 * 1e9))
    assert len(grid) == len(mine)
    assert grid["train_peak_bytes"].tolist() == mine["train_peak_bytes"].tolist()
