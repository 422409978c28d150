"""How fast the dashboard's first screen comes (issue 21, point 6): the real ``xtlens dashboard`` server and Debian's
chromium driven by Playwright (never ``playwright install``).

    .venv/bin/python benchmarks/page_speed.py [--quick] [--sessions 3] [--changes 5] [--json artifacts/page_speed.json]

Measures, in one run:
- ``start_to_first_chart_s``: from starting ``xtlens dashboard`` (a new process, like ``make dashboard`` on a warm
  venv) to the first Plotly chart drawn in a browser that opens the page as soon as the server answers;
- ``new_session_first_chart_s``: on that running server, a new browser context's ``goto`` to its first chart
  (``--sessions`` of them; median), and to the end of that script run (``..._done_s``);
- ``slider_redraw_s``: a key press on the sequence-length slider (Overview open) to the end of the script run it
  starts, with "Forward FLOPs per sequence" changed (``--changes`` of them, alternating right/left; median);
- ``open_tab_s``: a click on each tab to the end of the script run it starts (first visit in one session).
The server runs on a fresh result store (a temporary ``XTLENS_DB`` and ``XTLENS_CACHE_DIR``) unless ``--store``
names one. "End of a script run": ``stApp``'s ``data-test-script-state`` back at ``notRunning`` after it left it.
Prints a table and writes the figures as JSON with ``/proc/loadavg`` before and after, the CPU count and versions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
TABS = ("FLOPs", "Memory", "Latency", "Trade-offs", "Benefits", "Setups", "Compare", "Export", "History", "Overview")
CHART = '[data-testid="stPlotlyChart"] .js-plotly-plot .main-svg'
METRIC = "Forward FLOPs per sequence"
TIMEOUT_MS = 180_000

# a MutationObserver on stApp: window.__xtRan becomes true once the script state leaves "notRunning"
_ARM = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  window.__xtRan = false;
  if (window.__xtObs) window.__xtObs.disconnect();
  window.__xtObs = new MutationObserver(() => {
    if (app.getAttribute('data-test-script-state') !== 'notRunning') window.__xtRan = true;
  });
  window.__xtObs.observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
}"""
_RAN_AND_DONE = """() => window.__xtRan === true &&
  document.querySelector('[data-testid="stApp"]').getAttribute('data-test-script-state') === 'notRunning'"""
_DONE = """() => { const a = document.querySelector('[data-testid="stApp"]');
  return a !== null && a.getAttribute('data-test-script-state') === 'notRunning'; }"""
_METRIC_TEXT = """(label) => { const m = [...document.querySelectorAll('[data-testid="stMetric"]')].find(
  e => (e.querySelector('[data-testid="stMetricLabel"]') || {}).innerText === label);
  return m ? m.querySelector('[data-testid="stMetricValue"]').innerText : null; }"""


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def xtlens_command(port: int) -> list[str]:
    """``xtlens dashboard`` as ``make dashboard`` runs it (the venv's console script), headless."""
    script = Path(sys.executable).parent / "xtlens"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "xtlens.profiling.cli"]
    return head + ["dashboard", "--port", str(port), "--headless"]


@contextlib.contextmanager
def server(env: dict[str, str], log_path: Path) -> Iterator[tuple[str, float]]:
    """Start the server; yields (url, monotonic start time) once ``/_stcore/health`` answers (polled every 50 ms)."""
    port = free_port()
    with open(log_path, "wb") as log:
        t0 = time.monotonic()
        proc = subprocess.Popen(xtlens_command(port), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            while True:
                with contextlib.suppress(OSError):
                    with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                        if r.status == 200:
                            break
                if proc.poll() is not None or time.monotonic() - t0 > 180:
                    raise RuntimeError(f"the dashboard did not start (see {log_path})")
                time.sleep(0.05)
            yield url, t0
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def first_screen(browser, url: str, t0: float) -> dict[str, float]:
    """A new context opens ``url``: seconds from ``t0`` to the first chart drawn and to the end of the script run."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(url)
        page.locator(CHART).first.wait_for(state="visible")
        chart = time.monotonic() - t0
        page.wait_for_function(_DONE, polling="raf")
        done = time.monotonic() - t0
        errors = page.locator('[data-testid="stException"]').count()
    finally:
        context.close()
    return {"first_chart_s": chart, "done_s": done, "exceptions": errors}


def timed_rerun(page, action: Callable[[], None]) -> float:
    """Seconds from ``action`` (a click or key press) to the end of the script run it starts."""
    page.evaluate(_ARM)
    t = time.monotonic()
    action()
    page.wait_for_function(_RAN_AND_DONE, polling="raf")
    return time.monotonic() - t


@contextlib.contextmanager
def drawn_page(browser, url: str) -> Iterator[object]:
    """A new browser session (context) on ``url``, its first script run ended and its first chart drawn."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(url)
        page.wait_for_function(_DONE, polling="raf")
        page.locator(CHART).first.wait_for(state="visible")
        yield page
    finally:
        context.close()


def slider_changes(browser, url: str, n: int) -> list[float]:
    with drawn_page(browser, url) as page:
        thumb = page.locator('[data-testid="stSlider"]').filter(has_text="sequence length").locator(
            'input[type="range"], [role="slider"]').first
        out = []
        for i in range(n):
            before = page.evaluate(_METRIC_TEXT, METRIC)
            thumb.focus()
            out.append(timed_rerun(page, lambda i=i: thumb.press("ArrowRight" if i % 2 == 0 else "ArrowLeft")))
            after = page.evaluate(_METRIC_TEXT, METRIC)
            if after == before:
                raise RuntimeError(f"the slider change did not change {METRIC!r} ({before})")
            page.wait_for_timeout(300)
    return out


def open_tabs(browser, url: str) -> dict[str, float]:
    with drawn_page(browser, url) as page:
        out = {}
        for name in TABS:
            tab = page.get_by_role("tab", name=name, exact=True)
            out[name] = timed_rerun(page, tab.click)
            page.wait_for_timeout(300)
    return out


def versions(browser) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "chromium": browser.version}
    for name in ("streamlit", "plotly", "pandas", "torch", "x-transformers", "playwright"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=3, help="new browser sessions on the running server")
    p.add_argument("--changes", type=int, default=5, help="slider changes")
    p.add_argument("--no-tabs", action="store_true", help="skip opening each tab")
    p.add_argument("--quick", action="store_true", help="1 new session, 2 slider changes, no tabs")
    p.add_argument("--store", type=Path, help="result store (XTLENS_DB) to serve; default: a fresh one")
    p.add_argument("--json", type=Path, default=ROOT / "artifacts" / "page_speed.json")
    args = p.parse_args()
    if args.quick:
        args.sessions, args.changes, args.no_tabs = 1, 2, True
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)"
    args.json.parent.mkdir(parents=True, exist_ok=True)
    result: dict = {"cpus": os.cpu_count(), "loadavg_before": loadavg(),
                    "when_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with tempfile.TemporaryDirectory(prefix="xtlens-page-speed-") as tmp, sync_playwright() as pw:
        env = dict(os.environ)
        env["XTLENS_DB"] = str(args.store or Path(tmp) / "results.sqlite")
        env["XTLENS_CACHE_DIR"] = str(Path(tmp) / "cache")
        env["STREAMLIT_SERVER_ADDRESS"] = "127.0.0.1"  # streamlit's own setting, read from the environment
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            result["versions"] = versions(browser)
            with server(env, args.json.with_suffix(".server.log")) as (url, t0):
                result["server_answers_s"] = time.monotonic() - t0
                first = first_screen(browser, url, t0)
                print(f"first screen: {first}", flush=True)
                result["start_to_first_chart_s"] = first["first_chart_s"]
                result["start_to_first_screen_done_s"] = first["done_s"]
                sessions = []
                for _ in range(args.sessions):
                    sessions.append(first_screen(browser, url, time.monotonic()))
                    print(f"new session: {sessions[-1]}", flush=True)
                result["new_session_first_chart_s"] = [s["first_chart_s"] for s in sessions]
                result["new_session_done_s"] = [s["done_s"] for s in sessions]
                result["exceptions"] = first["exceptions"] + sum(s["exceptions"] for s in sessions)
                result["slider_redraw_s"] = slider_changes(browser, url, args.changes)
                print(f"slider: {result['slider_redraw_s']}", flush=True)
                if not args.no_tabs:
                    result["open_tab_s"] = open_tabs(browser, url)
        finally:
            browser.close()
    result["loadavg_after"] = loadavg()
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"written: {args.json}")
    return 0


def print_table(r: dict) -> None:
    def row(what: str, values: list[float] | float) -> None:
        vals = values if isinstance(values, list) else [values]
        med = statistics.median(vals)
        print(f"{what:<48} {med:8.2f}   " + " ".join(f"{v:.2f}" for v in vals))

    print(f"cpus {r['cpus']}, load before: {r['loadavg_before']}, after: {r['loadavg_after']}")
    print(f"{'what (seconds)':<48} {'median':>8}   each")
    row("server answers (xtlens dashboard started)", r["server_answers_s"])
    row("xtlens dashboard start -> first chart", r["start_to_first_chart_s"])
    row("xtlens dashboard start -> first run done", r["start_to_first_screen_done_s"])
    row("new session goto -> first chart", r["new_session_first_chart_s"])
    row("new session goto -> run done", r["new_session_done_s"])
    row("sequence-length slider -> redrawn", r["slider_redraw_s"])
    for name, secs in r.get("open_tab_s", {}).items():
        row(f"open tab {name}", secs)
    if r["exceptions"]:
        print(f"exceptions on the page: {r['exceptions']}")


if __name__ == "__main__":
    sys.exit(main())
