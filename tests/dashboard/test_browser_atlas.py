"""The atlas panel in a real browser: a server whose result store holds synthetic runs of the seed's default atlas
(``tests/atlas_rows.py``), Debian's chromium driven by Playwright. The Benefits tab opens on the atlas; the chart is
drawn with its quadrants named and its axes titled with units; another cost redraws it; a screenshot goes to
artifacts/benefits-atlas.png. Fails (never skips) when /usr/bin/chromium is missing."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from xtlens.core.config import PRESETS
from xtlens.profiling.benefit.probes import ProbeOptions

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from atlas_rows import stored_atlas_runs  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_kit import chromium, settle, shot, streamlit_server  # noqa: E402

pytestmark = pytest.mark.browser

TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cache = tmp_path_factory.mktemp("atlas-cache")
    with pytest.MonkeyPatch.context() as mp:  # the store the server reads, filled here
        mp.setenv("XTLENS_CACHE_DIR", str(cache))
        mp.delenv("XTLENS_DB", raising=False)
        stored_atlas_runs(ProbeOptions(probe="atlas", base=PRESETS["seed"]))
    with streamlit_server(env={"XTLENS_DB": None, "XTLENS_CACHE_DIR": str(cache)}, log_name="streamlit-atlas") as url:
        yield url


def _settle(page) -> None:
    settle(page, TIMEOUT_MS)


def test_browser_atlas_panel(server: str) -> None:
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server)
        _settle(page)
        t0 = time.perf_counter()
        page.get_by_role("tab", name="Benefits", exact=True).click()
        chart = page.locator(".js-plotly-plot").filter(has_text="What each option buys")
        chart.first.wait_for(timeout=TIMEOUT_MS)
        print(f"\natlas chart drawn {time.perf_counter() - t0:.2f} s after the Benefits tab was clicked "
              "(first visit of a new server; the tables are derived from the stored runs on it)")
        _settle(page)
        assert page.locator('[data-testid="stException"]').count() == 0
        text = chart.first.inner_text()
        for words in ("free lunch", "not worth it", "better, costs more", "cheaper, worse",
                      "Δ training FLOPs vs the reference (%)", "bits/byte", "3 seeds", "SwiGLU on",
                      "token shift off", "lowers the loss (supported)"):
            assert words in text, (words, text[:500])
        page.get_by_text("measured training speed (tokens/s, %)", exact=True).click()
        _settle(page)
        assert "axis reversed: faster is left" in page.locator(".js-plotly-plot").filter(
            has_text="What each option buys").first.inner_text()
        page.get_by_text("training FLOPs (%)", exact=True).click()
        _settle(page)
        shot(page, "benefits-atlas")
