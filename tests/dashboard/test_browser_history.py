"""History in a real browser: a server whose own result store holds rows an older page stored as "current" (the
sidebar's seed at dim 80 and at dim 96, FLOP counts and simulated CPU memory). History names its series by the
configuration itself (``core.presets.config_label``: ``seed · dim=80``), one per configuration, never "current";
the simulated memory is a series of its own that says simulated, in the picked series and in the chart legends.
Screenshot: artifacts/history-names.png. Fails (never skips) when /usr/bin/chromium is missing."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from xtlens.core.config import PRESETS, Workload
from xtlens.core.cost_model import flop_counts
from xtlens.profiling.results.records import ProfileRecord, base_fields

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_kit import TIMEOUT_MS, chromium, no_exception, open_tab, settle, shot, streamlit_server  # noqa: E402

pytestmark = pytest.mark.browser

CPU = "Test CPU (2 logical CPUs)"
FAKE = "torch MemTracker under FakeTensorMode (tensor sizes; no memory used)"
DIMS = (80, 96)


def _rows() -> list[ProfileRecord]:
    """What the page stored before this fix: every sidebar configuration as "current"."""
    out = []
    for dim in DIMS:
        cfg = PRESETS["seed"].replace(dim=dim)
        for n in (128, 256, 512):
            wl = Workload(seq_len=n)
            ident = dict(config_name="current", device="cpu", device_name=CPU, phase="forward")
            fwd = flop_counts(cfg, wl).fwd_flops
            out.append(ProfileRecord(**base_fields(cfg, wl, measurement="flops", **ident), predicted_flops=fwd,
                                     torch_counter_flops=fwd, method="FlopCounterMode"))
            if dim == 80:
                mem = base_fields(cfg, wl, measurement="memory", **{**ident, "phase": "inference"})
                out.append(ProfileRecord(**mem, method=FAKE, predicted_bytes=2**20 * n, measured_bytes=2**20 * n + 4096))
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cache = tmp_path_factory.mktemp("history-cache")
    with pytest.MonkeyPatch.context() as mp:  # the store the server reads, filled here with the real store API
        mp.setenv("XTLENS_CACHE_DIR", str(cache))
        mp.delenv("XTLENS_DB", raising=False)
        from xtlens.profiling.results.store import ResultStore, db_path

        ResultStore(db_path()).add(_rows(), source="local", host="old-page")
    with streamlit_server(env={"XTLENS_DB": None, "XTLENS_CACHE_DIR": str(cache)}, log_name="streamlit-history") as url:
        yield url


def test_history_series_are_named_by_their_configuration(server: str) -> None:
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server)
        settle(page)
        open_tab(page, "History")
        no_exception(page)
        picker = page.locator('[data-testid="stMultiSelect"]').filter(has_text="series to compare")
        # the picked series: the multiselect's chosen values, one per line under its label
        tags = [t.strip() for t in picker.inner_text().splitlines() if t.strip() and t.strip() != "series to compare"]
        expected = {f"seed · dim=80 · {CPU} · float32", f"seed · dim=96 · {CPU} · float32",
                    f"seed · dim=80 · {CPU} · float32 · simulated"}
        assert set(tags) == expected, tags
        page.locator(".js-plotly-plot .legendtext").first.wait_for()
        legends = page.locator(".js-plotly-plot .legendtext").all_text_contents()
        assert not any("current" in t for t in legends + tags), legends
        # the FLOPs chart: one line per configuration (no line jumping between dims)
        for dim in DIMS:
            assert f"seed · dim={dim} · {CPU} · float32 / forward" in legends, legends
        # the memory chart: the simulated series says simulated, and nothing in it is called measured
        mem = [t for t in legends if "inference" in t]
        assert f"seed · dim=80 · {CPU} · float32 · simulated / inference: simulated" in mem, legends
        assert not any("measured" in t for t in mem), mem
        titles = page.locator(".js-plotly-plot .gtitle").all_text_contents()
        assert any(t.startswith("Peak memory by series and phase: simulated") for t in titles), titles
        shot(page, "history-names")
