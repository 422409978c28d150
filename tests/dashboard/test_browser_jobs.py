"""Issue 21, points 1-3 in a real Chromium: a job is the page's, not the tab's (also across a reload of the session's
link); provenance that cannot lie; a
cancelled job stays in the tray with a Retry.

One real measurement (a tiny configuration, several lengths and repeats, so it still runs while the test switches
through every tab) with settings that are none of the widgets' own defaults (the audit's reset went to
lat_max=128, lat_rep=1, the ALiBi toggle off). A second browser context (another session, same configuration)
gets the result "from cache" with the first session's time, and its "Measure again" starts a new job in its tray,
which it cancels: the tray keeps it, "cancelled", with a Retry.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_kit import TIMEOUT_MS, chromium, no_exception, open_tab, settle, shot, streamlit_server  # noqa: E402

pytestmark = pytest.mark.browser

TINY = ("dim=64&depth=1&heads=2&attn_dim_head=32&num_tokens=256&max_seq_len=1024&alibi_num_heads=2&seq_len=128"
        "&view=Latency")
TABS = ("Overview", "FLOPs", "Memory", "Trade-offs", "Benefits", "Setups", "Compare", "Export", "History")
LABEL = "latency sweep 128..512 tokens"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cache = tmp_path_factory.mktemp("jobs-cache")  # an empty result store: the first measurement is really measured
    with streamlit_server(env={"XTLENS_CACHE_DIR": str(cache), "XTLENS_DB": None, "OMP_NUM_THREADS": "1"},
                          log_name="streamlit_jobs") as url:
        yield url


def _latency_settings(page) -> dict[str, str]:
    return {"repeats": page.get_by_role("spinbutton", name="repeats", exact=True).input_value(),
            "longest": page.locator('[data-testid="stSlider"]').filter(has_text="longest sequence").locator(
                'input[type="range"]').first.get_attribute("aria-valuetext") or "",
            "variant": str(page.get_by_role("switch", name="also time the other ALiBi setting").is_checked())}


def _sweep_caption(page):
    return page.locator('[data-testid="stCaptionContainer"]').filter(has_text=f"{LABEL} on ").first


def test_a_job_survives_every_tab_and_a_second_session_reads_it_from_cache(server: str) -> None:
    from playwright.sync_api import expect

    with chromium() as browser:
        first = browser.new_context(viewport={"width": 1400, "height": 1000})
        page = first.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"{server}/?{TINY}")
        expect(page.get_by_role("button", name="Measure latency")).to_be_visible(timeout=TIMEOUT_MS)
        settle(page)
        repeats = page.get_by_role("spinbutton", name="repeats", exact=True)
        repeats.fill("5")
        repeats.press("Enter")
        settle(page)
        longest = page.locator('[data-testid="stSlider"]').filter(has_text="longest sequence").locator(
            'input[type="range"], [role="slider"]').first
        longest.focus()
        longest.press("End")
        longest.press("ArrowLeft")  # 512 of 128, 256, 512, 1024
        settle(page)
        wanted = {"repeats": "5", "longest": "512", "variant": "True"}  # none is the widget's own default
        assert _latency_settings(page) == wanted
        page.get_by_role("button", name="Measure latency").click()
        expect(page.get_by_role("button", name="Cancel")).to_be_visible(timeout=TIMEOUT_MS)
        # the press starts the job: the "not measured yet" line of this sweep is gone
        settle(page)
        assert page.get_by_text(f"not measured yet — press Measure. {LABEL}").count() == 0

        # a reload of the session's link (it now carries the session's id) finds the job and its settings
        assert "sid=" in page.url
        page.reload()
        settle(page)
        assert _latency_settings(page) == wanted
        expect(page.get_by_role("button", name="Measure latency")).to_have_count(0)  # the job, not a new button
        expect(page.locator('[data-testid="stSidebar"]').get_by_text(re.compile(rf"{LABEL} — "))).to_be_visible(
            timeout=TIMEOUT_MS)  # the tray still names it

        for name in TABS:  # every other tab while the job runs (and perhaps ends)
            open_tab(page, name)
            no_exception(page)
        open_tab(page, "Latency")
        assert _latency_settings(page) == wanted
        assert "lat_max=512" in page.url and "lat_rep=5" in page.url
        caption = _sweep_caption(page)
        expect(caption).to_contain_text("measured now (", timeout=TIMEOUT_MS)  # its result, whenever it ended
        settle(page)
        assert _latency_settings(page) == wanted
        assert page.get_by_text(f"not measured yet — press Measure. {LABEL}").count() == 0
        first_words = caption.inner_text()
        when = re.search(r"measured now \((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC)", first_words).group(1)
        assert "by this machine" in first_words
        no_exception(page)
        shot(page, "jobs_first_session_after_tabs")

        # another session, same configuration and settings (the link): the result is from cache, with its time
        second = browser.new_context(viewport={"width": 1400, "height": 1000})
        other = second.new_page()
        other.set_default_timeout(TIMEOUT_MS)
        other.goto(re.sub(r"&?sid=[0-9a-f]+", "", page.url))  # the link without the first session's id
        other.get_by_role("button", name="Measure latency").click()
        caption = _sweep_caption(other)
        expect(caption).to_contain_text("from cache (measured", timeout=TIMEOUT_MS)
        words = caption.inner_text()
        assert f"from cache (measured {when}" in words and "another browser session's run" in words, words
        assert "measured now" not in words
        settle(other)  # the result replaced the button and its "not measured yet" line
        expect(other.get_by_role("button", name="Measure latency")).to_have_count(0)
        assert other.get_by_text(f"not measured yet — press Measure. {LABEL}").count() == 0
        again = other.get_by_role("button", name="Measure again", exact=True)
        expect(again).to_be_visible()
        shot(other, "jobs_second_session_from_cache")
        again.click()
        expect(other.get_by_role("button", name="Cancel")).to_be_visible(timeout=TIMEOUT_MS)
        tray = other.locator('[data-testid="stSidebar"]')
        expect(tray.get_by_text(re.compile(rf"{LABEL} — (running|queued)"))).to_be_visible(timeout=TIMEOUT_MS)
        other.get_by_role("button", name="Cancel").click()
        expect(tray.get_by_text(re.compile(rf"{LABEL} — cancelled after \d+ s"))).to_be_visible(timeout=TIMEOUT_MS)
        settle(other)
        shot(other, "jobs_second_session_cancelled")
        expect(tray.get_by_role("button", name="Retry", exact=True)).to_have_count(1)
        expect(other.get_by_text(re.compile(rf"{LABEL}: cancelled after \d+ s"))).to_be_visible()
        no_exception(other)
        shot(other, "jobs_second_session_cancelled")
        # the first session keeps its own result, also after a reload of its link
        page.reload()
        expect(_sweep_caption(page)).to_contain_text(f"measured now ({when}", timeout=TIMEOUT_MS)
        first.close()
        second.close()
