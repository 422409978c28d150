"""Issue 21, the small items of its point 9 that a person sees, read off the page in a real Chromium: the Setups
stage chart in the order a training step goes through its stages; no chart title under the Plotly toolbar (the
toolbar's box and the title's box do not meet, with the toolbar shown by hovering); no page text that cites a
file of the repository (``docs/``, ``tests/``, ``scripts/``, ``benchmarks/``), which a user of the installed
package does not have. The other items are checked where their data lives: tests/dashboard/test_browser_jobs.py
(a job's stale "not measured yet" line, Measure again as a button), test_browser_layout.py (Compare's table),
test_browser_export.py (the Setups, roofline and budget tables in Export)."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from xtlens.dashboard.charts.setups import STAGE_LABELS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_kit import TIMEOUT_MS, chromium, no_exception, open_tab, settle, streamlit_server  # noqa: E402

pytestmark = pytest.mark.browser

TABS = ("Overview", "FLOPs", "Memory", "Latency", "Trade-offs", "Benefits", "Setups", "Compare", "Export", "History")
REPO_PATH = re.compile(r"(?<![\w/.])(docs|tests|scripts|benchmarks)/[\w./-]+")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cache = tmp_path_factory.mktemp("small-items-cache")
    with streamlit_server(env={"XTLENS_CACHE_DIR": str(cache), "XTLENS_DB": None}, log_name="streamlit_small") as url:
        yield url


def _overlaps(a: dict, b: dict) -> bool:
    return not (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
                or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])


def test_stage_order_toolbar_and_no_repository_paths(server: str) -> None:
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server)
        settle(page)
        cited = {}
        toolbar_checked = 0
        for name in TABS:
            open_tab(page, name)
            no_exception(page)
            text = page.locator('[data-testid="stMain"]').inner_text()
            found = sorted({m.group(0) for m in REPO_PATH.finditer(text)})
            if found:
                cited[name] = found
            charts = page.locator(".js-plotly-plot")
            for i in range(min(charts.count(), 3)):  # the first charts of each tab: hover shows the toolbar
                plot = charts.nth(i)
                title = plot.locator(".gtitle")
                if not title.count() or not plot.is_visible():
                    continue
                plot.scroll_into_view_if_needed()
                plot.hover()
                bar = plot.locator(".modebar")
                bar.wait_for(state="visible", timeout=5000)
                box_bar, box_title = bar.bounding_box(), title.first.bounding_box()
                assert box_bar and box_title and not _overlaps(box_bar, box_title), (name, i, box_bar, box_title)
                toolbar_checked += 1
            if name == "Setups":
                stages = charts.filter(has_text="live at the stage").first
                stages.wait_for(timeout=TIMEOUT_MS)
                ticks = [t.strip() for t in stages.locator(".xtick text").evaluate_all("els => els.map(e => e.textContent)")
                         if t and t.strip()]
                known = [label for label in STAGE_LABELS.values() if label in ticks]
                assert len(known) >= 3 and [t for t in ticks if t in known] == known, ticks
        assert cited == {}, f"page text cites repository files: {cited}"
        assert toolbar_checked >= 5, toolbar_checked
