"""Issue 21, points 4-6 in a real Chromium: one number per quantity across tabs.

Reads the training FLOPs and the training memory off Overview, FLOPs, Memory and Setups for the seed: the same
quantity under the same setup is the same text on every tab and equals the core function's value formatted
(``core.cost_model.training_flops_for`` / ``training_memory`` with the default ``TrainingSetup``); where a tab shows
another setup (the summed upper bound; Setups with block recomputation) the label says so and the number differs.
No metric value or label is cut (its text fits its box) at 1400 and 800 px. The sidebar's pre_norm checkbox is
disabled under deepnorm with the reason written beside it. Screenshots: artifacts/consistency_*.png.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from xtlens.core import cost_model
from xtlens.core.config import PRESETS, Workload
from xtlens.core.setup import TrainingSetup
from xtlens.core.units import fmt_bytes, fmt_flops

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_kit import TIMEOUT_MS, chromium, metric, no_exception, open_tab, settle, shot, streamlit_server  # noqa: E402

pytestmark = pytest.mark.browser

SEED, WL = PRESETS["seed"], Workload()
PEAK = "Training peak (AdamW, no recomputation)"
UPPER = "Training upper bound (sum of parts, AdamW)"
FLOPS = "Training-step FLOPs (no recomputation)"
SETUP_PEAK = "Training peak per device (AdamW, no recomputation)"
SETUP_FLOPS = "Training-step FLOPs per device (no recomputation)"
SETUP_FLOPS_BLOCK = "Training-step FLOPs per device (with block recomputation)"

# the metrics' value and label boxes whose text is wider than the box (cut with "..." or hidden)
CUT_JS = """() => [...document.querySelectorAll('[data-testid="stMetricValue"], [data-testid="stMetricLabel"]')]
  .filter(e => e.offsetParent !== null)
  .flatMap(e => [e, ...e.querySelectorAll('*')])
  .filter(e => e.scrollWidth > e.clientWidth + 1 && e.clientWidth > 0)
  .map(e => e.innerText.trim()).filter(t => t)"""


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with streamlit_server(log_name="streamlit_consistency") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def _text(page, label: str) -> str:
    value = metric(page, label)
    value.wait_for(state="visible", timeout=TIMEOUT_MS)
    return value.inner_text().strip()


def _not_cut(page, where: str) -> None:
    cut = page.evaluate(CUT_JS)
    assert not cut, f"{where}: metric text cut: {cut}"


def test_one_number_per_quantity_across_tabs(server: str, browser) -> None:
    peak = fmt_bytes(cost_model.training_memory(SEED, WL, TrainingSetup()).peak_bytes)
    upper = fmt_bytes(cost_model.memory_estimate(SEED, WL).training_total_bytes)
    flops = fmt_flops(cost_model.training_flops_for(SEED, WL, TrainingSetup())["train_step_flops"])
    block = fmt_flops(cost_model.training_flops_for(SEED, WL, TrainingSetup(recompute="block"))["train_step_flops"])
    assert (peak, upper, flops) == ("1.057 GiB", "1.117 GiB", "207.064 GFLOPs")  # the audit's numbers, now labelled

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server)
    settle(page)
    no_exception(page)
    seen: dict[str, dict[str, str]] = {"Overview": {PEAK: _text(page, PEAK), FLOPS: _text(page, FLOPS)}}
    _not_cut(page, "Overview")

    # the sidebar: pre_norm is disabled under deepnorm and the reason is written beside it
    sidebar = page.locator('[data-testid="stSidebar"]')
    box = sidebar.locator('[data-testid="stCheckbox"]').filter(has_text="pre_norm").first.locator("input")
    assert box.is_disabled() and box.is_checked()
    reason = sidebar.get_by_text("has no effect here: deepnorm is on", exact=False)
    assert reason.first.is_visible()
    assert "pre_norm" in reason.first.inner_text()
    assert not sidebar.locator('[data-testid="stCheckbox"]').filter(has_text="deepnorm").first.locator(
        "input").is_disabled()

    open_tab(page, "FLOPs")
    seen["FLOPs"] = {FLOPS: _text(page, FLOPS)}
    _not_cut(page, "FLOPs")
    open_tab(page, "Memory")
    seen["Memory"] = {PEAK: _text(page, PEAK), UPPER: _text(page, UPPER)}
    _not_cut(page, "Memory")
    shot(page, "consistency_memory")
    open_tab(page, "Setups")
    seen["Setups"] = {SETUP_PEAK: _text(page, SETUP_PEAK), SETUP_FLOPS: _text(page, SETUP_FLOPS)}
    _not_cut(page, "Setups")
    no_exception(page)

    # the same quantity, the same setup: the same text everywhere, equal to the core function's value
    assert seen["Overview"][PEAK] == seen["Memory"][PEAK] == seen["Setups"][SETUP_PEAK] == peak, seen
    assert seen["Overview"][FLOPS] == seen["FLOPs"][FLOPS] == seen["Setups"][SETUP_FLOPS] == flops, seen
    # another setup: another label, another number
    assert seen["Memory"][UPPER] == upper != peak

    # Setups with block recomputation: its label says so, its number differs from the Overview's
    page.locator('[data-testid="stSelectbox"]').filter(has_text="activation recomputation").first.click()
    page.get_by_role("option", name="block", exact=False).first.click()
    settle(page)
    assert _text(page, SETUP_FLOPS_BLOCK) == block != flops
    assert metric(page, SETUP_FLOPS).count() == 0
    _not_cut(page, "Setups, block recomputation")
    no_exception(page)

    # 800 px wide: nothing cut either (the values wrap or shrink)
    page.set_viewport_size({"width": 800, "height": 1000})
    page.wait_for_timeout(1000)
    _not_cut(page, "Setups at 800 px")
    shot(page, "consistency_setups_800", width=800)
    open_tab(page, "Overview")
    _not_cut(page, "Overview at 800 px")
    shot(page, "consistency_overview_800", width=800)
    page.close()
