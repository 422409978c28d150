"""What every browser test shares: a real ``streamlit run dashboard/app.py`` on 127.0.0.1, Debian's chromium driven
by Playwright (``executable_path``; never ``playwright install``), and the few page helpers the tests use.

``streamlit_server(env=..., log_name=...)`` starts a server (its own result store when ``env`` names one) and yields
its URL; ``chromium()`` yields a launched browser and fails, never skips, when /usr/bin/chromium is missing.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
TIMEOUT_MS = 90_000
START_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(*, env: Mapping[str, str] | None = None, log_name: str = "streamlit") -> Iterator[str]:
    """``streamlit run dashboard/app.py`` on a free port of 127.0.0.1 with ``os.environ`` updated by ``env`` (a value
    of None removes the variable); yields ``http://127.0.0.1:PORT`` once ``/_stcore/health`` answers. The log goes to
    ``artifacts/<log_name>.log``."""
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    merged = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    log_path = ARTIFACTS / f"{log_name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=merged, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                try:
                    with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"streamlit did not start (see {log_path})")
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextlib.contextmanager
def chromium() -> Iterator[object]:
    """A launched headless chromium (Playwright's sync API); fails when Debian's chromium is missing."""
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def metric(page, label: str):
    """The value element of the ``st.metric`` labelled ``label``."""
    return page.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]', has_text=label)).first.locator(
        '[data-testid="stMetricValue"]')


def settle(page, timeout_ms: int = TIMEOUT_MS) -> None:
    """Wait until the script has finished its run and charts are drawn: the app's script state (Streamlit's
    ``data-test-script-state`` on ``stApp``) is past its first run and not running, and the running indicator
    is hidden. (The indicator alone is hidden too before a slow first run has started.)"""
    page.wait_for_timeout(500)
    page.locator('[data-testid="stApp"]:not([data-test-script-state="initial"])'
                 ':not([data-test-script-state="running"])'
                 ':not([data-test-script-state="rerunRequested"])').wait_for(state="attached", timeout=timeout_ms)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="hidden", timeout=timeout_ms)
    page.wait_for_timeout(800)


def no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator(
        '[data-testid="stException"]').first.inner_text()


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()
    settle(page)


def shot(page, name: str, *, width: int = 1400) -> Path:
    """Screenshot of the whole view into artifacts/<name>.png: the app scrolls inside its main container, so the
    viewport grows to fit, then returns to ``width`` x 1000."""
    ARTIFACTS.mkdir(exist_ok=True)
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": width, "height": min(max(int(height) + 100, 1000), 12000)})
    page.wait_for_timeout(1500)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": width, "height": 1000})
    return path
