"""The page at 800 px and at a phone's 400 px, in Chromium: on every tab no sideways scroll (neither the document
nor the main area, and no element of the main area reaching past the viewport), the sidebar collapsed by default
(and still there behind its button), the Parameters metric's whole number visible (read off the page and equal to
the cost model's, not cut to "36,629,..."), no button label cut to "...". Screenshots: artifacts/layout_<w>_<tab>.png.
"""

from __future__ import annotations

import pytest
from browser_kit import chromium, metric, no_exception, open_tab, settle, shot, streamlit_server
from xtlens.core import cost_model
from xtlens.core.config import PRESETS, Workload
from xtlens.core.units import fmt_count
from xtlens.dashboard.style import SIDEBAR_COLLAPSE_BELOW_PX

pytestmark = pytest.mark.browser

TABS = ("Overview", "FLOPs", "Memory", "Latency", "Trade-offs", "Benefits", "Setups", "Compare", "Export", "History")

# What sticks out sideways: the document, the main area, and any visible element of the main area whose box
# reaches past the viewport, except inside something that scrolls on its own (the tab bar, a data grid, code) and
# Streamlit's hover toolbar of a table or chart.
OVERFLOW_JS = """() => {
  const vw = window.innerWidth, main = document.querySelector('[data-testid="stMain"]');
  const own = (el) => { for (let e = el.parentElement; e && e !== main; e = e.parentElement) {
      const s = getComputedStyle(e); if (s.overflowX === 'auto' || s.overflowX === 'scroll' || s.overflowX === 'hidden')
        return true; } return false; };
  const out = [];
  for (const el of main.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.height > 0 && (r.right > vw + 1 || r.left < -1) && !own(el)
        && !el.closest('[data-testid="stElementToolbar"]'))
      out.push((el.getAttribute('data-testid') || el.tagName) + ' ' + Math.round(r.left) + '..' + Math.round(r.right)
               + ' ' + (el.innerText || '').slice(0, 40));
  }
  return {vw, doc: document.documentElement.scrollWidth, body: document.body.scrollWidth,
          main: main.scrollWidth, mainClient: main.clientWidth, out: out.slice(0, 8)};
}"""
CUT_JS = """() => [...document.querySelectorAll('[data-testid="stMain"] button .stMarkdownEllipsis,'
                                         + ' [data-testid="stMetric"] .stMarkdownEllipsis')]
  .filter((e) => e.offsetParent !== null && e.scrollWidth > e.clientWidth + 1).map((e) => e.innerText)"""


def add_preset(page, name: str) -> None:
    """Pin the preset ``name`` on the Compare tab (its preset box, then "Add preset")."""
    page.locator('[data-testid="stMain"] [data-testid="stSelectbox"]').filter(has_text="preset").first.click()
    page.get_by_role("option", name=name, exact=True).click()
    settle(page)
    page.get_by_role("button", name="Add preset").click()
    settle(page)


def sidebar_state(page) -> tuple[str | None, float]:
    bar = page.locator('[data-testid="stSidebar"]')
    return bar.get_attribute("data-collapsed"), bar.bounding_box()["width"] if bar.is_visible() else 0.0


@pytest.mark.parametrize("width", [800, 400])
def test_narrow_page_has_no_sideways_scroll_and_readable_numbers(width: int) -> None:
    assert width < SIDEBAR_COLLAPSE_BELOW_PX
    params = fmt_count(cost_model.estimate(PRESETS["seed"], Workload())["num_params"])
    with streamlit_server(log_name=f"layout_{width}") as url, chromium() as browser:
        page = browser.new_page(viewport={"width": width, "height": 1000})
        page.goto(url)
        settle(page)
        no_exception(page)
        # the sidebar starts collapsed and opens with its button; the script's press is not stored as a choice
        collapsed, bar_px = sidebar_state(page)
        assert collapsed == "true" and bar_px < 5, (collapsed, bar_px)
        assert page.evaluate("() => Object.keys(localStorage).filter(k => k.startsWith('stSidebarCollapsed'))") == []
        # the whole number, not "36,629,...": the text equals the cost model's and nothing is hidden
        value = metric(page, "Parameters")
        assert value.inner_text().strip() == params == "36,629,504"
        assert value.evaluate("e => { const d = e.firstElementChild; return d.scrollWidth <= d.clientWidth + 1 }")
        for tab in TABS:
            open_tab(page, tab)
            no_exception(page)
            if tab == "Compare":  # two pins, one with a shorter max_seq_len: the table, the charts, the "ends" marks
                add_preset(page, "seed-mha")
                add_preset(page, "gpt2-small-shape")
                columns = page.locator('[data-testid="stDataFrame"]').first.get_by_role("columnheader")
                headers = [h.strip() for h in columns.all_inner_texts()]
                assert not any(h.startswith("Δ") for h in headers), headers  # deltas inline: one column each
            # a wide image at the top of a tab may take a moment to lay out: settle once more
            page.wait_for_timeout(300)
            sizes = page.evaluate(OVERFLOW_JS)
            shot(page, f"layout_{width}_{tab}", width=width)
            assert sizes["doc"] <= width and sizes["body"] <= width, (tab, sizes)
            assert sizes["main"] <= sizes["mainClient"] + 1, (tab, sizes)
            assert sizes["out"] == [], (tab, sizes)
            assert page.evaluate(CUT_JS) == [], (tab, page.evaluate(CUT_JS))
        # the sidebar is still one click away, and opens over or beside the page
        page.locator('[data-testid="stExpandSidebarButton"]').click()
        page.wait_for_timeout(800)
        collapsed, bar_px = sidebar_state(page)
        assert collapsed == "false" and bar_px > 200, (collapsed, bar_px)
        assert page.locator('[data-testid="stSidebar"]').get_by_text("Configuration").first.is_visible()


def test_wide_page_keeps_the_sidebar_open() -> None:
    with streamlit_server(log_name="layout_1400") as url, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        settle(page)
        collapsed, bar_px = sidebar_state(page)
        assert collapsed == "false" and bar_px > 200, (collapsed, bar_px)
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 1400
