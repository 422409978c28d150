"""The atlas panel in a real browser: a server whose result store holds synthetic runs of the seed's default atlas
(``tests/atlas_rows.py``), Debian's chromium driven by Playwright. The Benefits tab opens on the atlas; the chart is
drawn with its quadrants named and its axes titled with units; another cost redraws it; a screenshot goes to
artifacts/benefits-atlas.png. Fails (never skips) when /usr/bin/chromium is missing."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from xtlens.core.config import PRESETS
from xtlens.profiling.benefit.probes import ProbeOptions

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from atlas_rows import stored_atlas_runs  # noqa: E402

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = "/usr/bin/chromium"
TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cache = tmp_path_factory.mktemp("atlas-cache")
    with pytest.MonkeyPatch.context() as mp:  # the store the server reads, filled here
        mp.setenv("XTLENS_CACHE_DIR", str(cache))
        mp.delenv("XTLENS_DB", raising=False)
        stored_atlas_runs(ProbeOptions(probe="atlas", base=PRESETS["seed"]))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ARTIFACTS.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "XTLENS_DB"} | {"XTLENS_CACHE_DIR": str(cache)}
    log = open(ARTIFACTS / "streamlit-atlas.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not start (see {ARTIFACTS / 'streamlit-atlas.log'})")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _settle(page) -> None:
    page.wait_for_timeout(500)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=TIMEOUT_MS)
    page.wait_for_timeout(800)


def test_browser_atlas_panel(server: str) -> None:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
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
            height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
            page.set_viewport_size({"width": 1400, "height": min(max(int(height) + 100, 1000), 12000)})
            page.wait_for_timeout(1500)
            page.screenshot(path=str(ARTIFACTS / "benefits-atlas.png"), full_page=True)
        finally:
            browser.close()
