"""Issue 9, a page people trust: settings and running jobs survive tab switches, Compare keeps every pin and
marks where a curve ends, out-of-range values are named under their control, slope words follow the
exponent, cached results say so with their original time, and "Measure again" really measures."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from test_app import _compare_table, app, no_exception, show  # the AppTest helpers of the dashboard tests
from xtlens.core.config import PRESETS
from xtlens.dashboard import charts, tables
from xtlens.dashboard.session import jobs, provenance
from xtlens.profiling.run.worker import JobManager


def captions(at: AppTest) -> str:
    return " ".join(c.value for c in at.caption)


def fake_jobs(monkeypatch: pytest.MonkeyPatch, fn: str = "measure") -> JobManager:
    """Jobs run the test's fake measure (a real child process, real result store) on a fresh manager."""
    fake = str(Path(__file__).with_name("fake_measure.py")) + ":" + fn
    real_spec = jobs.Request.spec
    monkeypatch.setattr(jobs.Request, "spec", lambda self: dataclasses.replace(real_spec(self), measure=fake))
    manager = JobManager()
    monkeypatch.setattr(jobs, "manager", lambda address=None: manager)
    return manager


# --- state that survives a tab switch -----------------------------------------------------------------------

def test_tab_switch_keeps_every_setting_and_the_running_job(monkeypatch: pytest.MonkeyPatch) -> None:
    manager = fake_jobs(monkeypatch, "slow_measure")  # 2 s per point: 4 points still run while we switch tabs
    at = show(app(), "Latency")
    at.select_slider(key="latency.max_len").set_value(1024)
    at.multiselect(key="latency.phases").set_value(["forward", "train_step"])
    at.toggle(key="latency.variant").set_value(False)
    at.number_input(key="latency.repeats").set_value(2)
    at.run()
    at.button(key="measure.latency").click().run()
    no_exception(at)
    (job,) = manager.jobs()
    try:
        at = show(at, "Trade-offs")
        at.radio(key="tradeoffs.axis").set_value("depth")
        at.number_input(key="tradeoffs.dataset_btokens").set_value(50.0)
        at.run()
        at = show(at, "Latency")
        no_exception(at)
        assert at.select_slider(key="latency.max_len").value == 1024
        assert at.multiselect(key="latency.phases").value == ["forward", "train_step"]
        assert at.toggle(key="latency.variant").value is False
        assert at.number_input(key="latency.repeats").value == 2
        assert not job.done(), "the fake job should still run: the test lost its point"
        # the running sweep is shown, not "press Measure" (the breakdown and what-if panels below have their own)
        assert not [c.value for c in at.caption if c.value.startswith(f"{jobs.NOT_MEASURED}. latency sweep")]
        assert not [b for b in at.button if b.key == "measure.latency"]
        assert [b for b in at.button if b.key == f"cancel.{job.key}"]
        # the settings that change what is shown are in the URL
        assert at.query_params["lat_max"] == "1024" and at.query_params["lat_rep"] == "2"
        at = show(at, "Trade-offs")
        assert at.radio(key="tradeoffs.axis").value == "depth"
        assert at.number_input(key="tradeoffs.dataset_btokens").value == 50.0
        assert at.query_params["axis"] == "depth"
        # the sidebar's job tray lists it, whatever tab is open
        assert any("latency sweep" in m.value and "running" in m.value for m in at.sidebar.markdown)
    finally:
        job.cancel()
        job.wait(timeout=60)


def test_tab_settings_come_back_from_the_url() -> None:
    at = app({"view": "Trade-offs", "axis": "heads", "data_bt": "20"})
    no_exception(at)
    assert at.radio(key="tradeoffs.axis").value == "heads"
    assert at.number_input(key="tradeoffs.dataset_btokens").value == 20.0
    assert not at.warning or all("does not know" not in w.value for w in at.warning)


def test_job_tray_says_queue_position_and_why_a_job_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    # 30 s per point: the first job still runs when the second is queued, however loaded the machine (at 2 s a
    # load of 7 let it finish first); both are cancelled at the end
    monkeypatch.setenv("XTLENS_TEST_PAUSE_S", "30")
    manager = fake_jobs(monkeypatch, "slow_measure")
    at = show(app({"seq_len": "128"}), "Overview")
    at.button(key="measure.overview").click().run()
    at = show(at, "Latency")
    at.select_slider(key="latency.max_len").set_value(128)
    at.run()
    at.button(key="measure.latency").click().run()
    no_exception(at)
    first, second = manager.jobs()
    try:
        states = [m.value for m in at.sidebar.markdown if "—" in m.value]
        assert any("running" in s for s in states), states
        assert any("queued #1" in s and "waits for" in s for s in states), states
    finally:
        for job in (second, first):
            job.cancel()
            job.wait(timeout=60)


# --- Compare ------------------------------------------------------------------------------------------------

def test_four_pins_and_the_live_configuration_make_five_columns() -> None:
    at = show(app(), "Compare")
    for preset in ("seed-no-alibi", "seed-mha", "plain-prenorm", "seed"):
        at.selectbox(key="compare.preset").set_value(preset)
        at.button(key="compare.add_preset").click().run()
    no_exception(at)
    wide = _compare_table(at)
    values = [c for c in wide.columns if c != "quantity" and not c.startswith("Δ")]
    assert values == ["current (sidebar)", "seed-no-alibi", "seed-mha", "plain-prenorm", "seed"]
    assert len([c for c in wide.columns if c.startswith("Δ")]) == 4
    # identical configurations (the live seed and the pinned seed) stay distinguishable in the charts
    fig = charts.overlay_lines(pd.DataFrame({"x": [1, 2, 1, 2], "y": [3, 4, 3, 4], "c": ["a", "a", "b", "b"]}),
                               x="x", y="y", series="c", title="t", x_title="x", y_title="y")
    a, b = fig.data
    assert (a.line.dash, a.marker.symbol) != (b.line.dash, b.marker.symbol)


def test_a_shorter_max_seq_len_in_compare_is_marked_not_truncated() -> None:
    at = show(app({"seq_len": "8192"}), "Compare")
    at.selectbox(key="compare.preset").set_value("gpt2-small-shape")
    at.button(key="compare.add_preset").click().run()
    no_exception(at)
    warnings = " ".join(w.value for w in at.warning)
    assert "gpt2-small-shape" in warnings and "max_seq_len 1,024" in warnings and "8,192" in warnings
    columns = list(_compare_table(at).columns)
    assert "gpt2-small-shape ⚠ at 1,024 tokens" in columns
    # the curves: the seed's goes to 8192, gpt2's ends at 1024 with an X and the reason
    curves = next(df.value for df in at.dataframe if "config" in df.value.columns and "bytes" in df.value.columns)
    top = curves.groupby("config")["seq_len_tokens"].max()
    assert top["current (sidebar)"] == 8192 and top["gpt2-small-shape ⚠ at 1,024 tokens"] == 1024
    fig = charts.overlay_lines(curves[curves["phase"] == "inference"], x="seq_len_tokens", y="bytes",
                               series="config", title="t", x_title="n", y_title="GiB",
                               ends={"gpt2-small-shape ⚠ at 1,024 tokens": "max_seq_len 1,024"})
    marks = [t for t in fig.data if t.marker.symbol == "x"]
    assert len(marks) == 1 and marks[0].x == (1024.0,) and "max_seq_len 1,024" in marks[0].text[0]


def test_compare_rows_use_one_unit() -> None:
    seed = PRESETS["seed"]
    small = seed.replace(dim=64, depth=1, num_tokens=256, max_seq_len=1024)
    from xtlens.core import cost_model
    from xtlens.core.config import Workload

    wl = Workload(seq_len=1024)
    long = tables.compare_table([(n, cost_model.estimate(c, wl)) for n, c in (("seed", seed), ("small", small))])
    assert cost_model.estimate(small, wl)["training_total_bytes"] < 2**30 / 10  # alone it would be shown in MiB
    wide = tables.compare_wide(long).set_index("quantity")
    row = wide.loc["training upper bound (sum of parts, AdamW)"]
    units = {str(v).split()[1] for k, v in row.items()}
    assert units == {"GiB"}, row.to_dict()


# --- inputs ---------------------------------------------------------------------------------------------------

def test_dim_5_is_named_under_its_control_with_the_range() -> None:
    at = app()
    at.number_input(key="cfg.dim").set_value(5).run()
    no_exception(at)
    errors = [e.value for e in at.sidebar.error]
    assert any("dim" in e and "8..32768" in e for e in errors), errors
    assert not at.metric  # no stale numbers: nothing is shown until the value is valid
    at.number_input(key="cfg.dim").set_value(1024).run()
    assert at.select_slider(key="cfg.dim.slider").value == 1024
    assert [m.value for m in at.metric if m.label == "Parameters"]


def test_the_dim_slider_steps_in_powers_of_two_and_sets_the_exact_box() -> None:
    at = app()
    slider = at.select_slider(key="cfg.dim.slider")
    assert slider.options == [str(2**k) for k in range(3, 16)]
    slider.set_value(2048).run()
    assert at.number_input(key="cfg.dim").value == 2048


# --- words ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("slope", "words"), [
    (-0.6, "falls as length grows"),
    (0.05, "about constant in length"),
    (1.0, "about linear in length"),
    (1.65, "between linear and quadratic"),
    (2.0, "about quadratic in length"),
])
def test_slope_words_follow_the_exponent(slope: float, words: str) -> None:
    assert tables.regime(slope).startswith(words)
    assert "linear" not in tables.regime(slope) or 0.8 <= slope < 1.75


def test_throughput_slope_is_not_worded_as_a_latency() -> None:
    # forward latency n^1.65 means tokens/s grows as n^-0.65: time per token grows, slower than linear
    assert tables.regime(-0.65, "throughput") == ("tokens/s falls with length: time per token grows slower than "
                                                  "linear in length")
    assert tables.regime(0.05, "throughput").startswith("tokens/s about constant")
    frame = pd.DataFrame({"seq_len_tokens": [128, 256, 512], "series": "s", "tokens_per_s": [1000.0, 640.0, 410.0]})
    fig = charts.latency_loglog(frame, y="tokens_per_s", title="t")
    assert "tokens/s falls" in fig.data[0].name


def test_failures_are_named_by_kind_once_each() -> None:
    bad = pd.DataFrame([
        {"phase": "all", "seq_len_tokens": 8192, "config_name": "current", "status": "error",
         "error": "cancelled before this point finished"},
        {"phase": "all", "seq_len_tokens": 8192, "config_name": "current", "status": "error",
         "error": "cancelled before this point finished"},
        {"phase": "decode", "seq_len_tokens": 1024, "config_name": "current", "status": "oom", "error": "CUDA OOM"},
    ])
    assert provenance.failure_summary(bad) == ["cancelled: at 8,192 tokens (current)",
                                               "out of memory: decode at 1,024 tokens (current)"]


def test_spread_and_phase_order_warnings() -> None:
    rows = pd.DataFrame([
        {"measurement": "latency", "status": "ok", "phase": "forward", "seq_len_tokens": 1024, "config_name": "c",
         "latency_min_ms": 900.0, "latency_median_ms": 1000.0, "latency_max_ms": 5561.0},
        {"measurement": "latency", "status": "ok", "phase": "train_step", "seq_len_tokens": 1024, "config_name": "c",
         "latency_min_ms": 700.0, "latency_median_ms": 800.0, "latency_max_ms": 900.0},
    ])
    text = " ".join(provenance.spread_warnings(rows))
    assert "vary by more than 2x" in text and "max 5561 ms" in text
    assert "training step (800 ms) came out faster than the forward (1000 ms)" in text
    calm = rows.assign(latency_max_ms=rows["latency_min_ms"] * 1.2,
                       latency_median_ms=[1000.0, 3000.0])
    assert provenance.spread_warnings(calm) == []


# --- from cache, and Measure again ------------------------------------------------------------------------------

def test_a_cached_result_says_so_with_its_time_and_measure_again_measures(monkeypatch: pytest.MonkeyPatch) -> None:
    manager = fake_jobs(monkeypatch)
    at = app({"seq_len": "256"})
    at.button(key="measure.overview").click().run()
    (job,) = manager.jobs()
    job.wait(timeout=120)
    first = jobs.frame_of(job)
    first_time = provenance.provenance(first, None).first_measured
    at.run()
    assert "measured now" in captions(at)
    time.sleep(provenance.CACHE_SLACK_S + 1.5)
    # a new server (or another session after the job was dropped) asks again: the rows come from the store
    manager.forget(job.key, owner=None)  # dropped for every session (jobs are owned: issue 8)
    at.run()
    at.button(key="measure.overview").click().run()
    (cached_job,) = manager.jobs()
    cached_job.wait(timeout=120)
    at.run()
    no_exception(at)
    words = captions(at)
    shown = provenance._show(first_time)
    assert "from cache" in words and shown in words, words
    assert set(jobs.frame_of(cached_job)["timestamp"]) == set(first["timestamp"])
    # Measure again: a new job that bypasses the cache; its rows are new
    at.button(key="remeasure.overview").click().run()
    (again,) = manager.jobs()
    assert again is not cached_job and again.spec.options.use_cache is False
    again.wait(timeout=120)
    at.run()
    no_exception(at)
    fresh = jobs.frame_of(again)
    assert min(fresh["timestamp"]) > max(first["timestamp"])
    assert "measured now" in captions(at) and "from cache" not in captions(at)


# --- charts that show their point ---------------------------------------------------------------------------------

def test_log_ticks_are_clean_and_carry_their_magnitude() -> None:
    ticks = charts.log_ticks([900.0, 5561.0])
    assert ticks == [1000.0, 2000.0, 5000.0]
    assert [charts.tick_text(t) for t in ticks] == ["1k", "2k", "5k"]
    assert charts.log_ticks([1.0, 1e6]) == [10.0**k for k in range(0, 7)]


def test_memory_chart_shows_the_error_per_point_and_says_simulated() -> None:
    from xtlens.dashboard.views import memory

    frame = pd.DataFrame({"seq_len_tokens": [1024, 8192], "phase": "train_step",
                          "predicted_bytes": [2**30, 16 * 2**30], "measured_bytes": [1.1 * 2**30, 15 * 2**30]})
    fig = charts.measured_vs_predicted(frame, title="t", measured_label="simulated")
    dots = fig.data[1]
    assert dots.text == ("+10.0%", "-6.2%") and dots.name == "train_step: simulated"
    assert fig.layout.yaxis.type == "log"
    rows = pd.DataFrame({"method": ["torch MemTracker under FakeTensorMode (tensor sizes; no memory used)"]})
    assert memory.measured_words(rows)[0] == "simulated"
    assert memory.measured_words(pd.DataFrame({"method": ["torch.cuda.max_memory_allocated growth"]}))[0] == "measured"


def test_the_inference_activation_drop_is_explained_where_it_happens() -> None:
    from xtlens.core.config import Workload
    from xtlens.dashboard.views import memory

    curve = tables.memory_curve(PRESETS["seed"], Workload(), tuple(tables.seq_len_grid(8192)))
    (note,) = memory.activation_drops(curve)
    assert "from 1,024 to 2,048 tokens" in note and "ALiBi bias" in note
    no_alibi = PRESETS["seed"].replace(alibi_pos_bias=False, alibi_num_heads=None)
    assert memory.activation_drops(tables.memory_curve(no_alibi, Workload(), (1024, 2048))) == []


def test_flop_counters_are_a_table_with_their_differences() -> None:
    from xtlens.dashboard.views import flops

    totals = pd.DataFrame([{"phase": "forward", "predicted_flops": 1_000_000, "torch_counter_flops": 1_000_300,
                            "fvcore_flops": 999_200}])
    table = flops.counter_table(totals).set_index("counter")
    assert table.loc["torch FlopCounterMode", "vs closed form"] == "+0.030%"
    assert table.loc["fvcore (2 x its MACs)", "vs closed form"] == "-0.080%"
    assert table.loc["closed form (core.cost_model)", "vs closed form"] == "reference"


def test_facts_follow_the_flags_and_the_kernel_that_ran() -> None:
    from xtlens.dashboard import facts

    seed = PRESETS["seed"]
    by_kw = {f.keyword: f for f in facts.facts(seed, "cpu_flash")}
    assert "`cpu_flash`" in by_kw["attn_flash"].does and "measured here: `cpu_flash`" in by_kw["attn_flash"].correction
    off = {f.keyword: f for f in facts.facts(seed.replace(attn_one_kv_head=False, deepnorm=False))}
    assert off["attn_one_kv_head"].does.startswith("attn_one_kv_head = False: 8 K/V head(s)")
    assert "multi-query" not in off["attn_one_kv_head"].does
    assert off["deepnorm"].does.startswith("deepnorm = False") and off["deepnorm"].correction is None
    for f in facts.facts(seed):
        assert "seed-analysis" not in f.does + (f.claim or "") + (f.correction or "")
        assert (f.claim is None) == (f.correction is None)  # a correction always states the claim it corrects


def test_the_session_file_keeps_the_tab_settings_and_older_files_still_load() -> None:
    import json

    from xtlens.core.config import Workload
    from xtlens.dashboard.session import session_io

    settings = {"latency.max_len": 2048, "latency.phases": ["forward"], "tradeoffs.axis": "depth",
                "tradeoffs.dataset_btokens": 50.0}
    snap = session_io.make(PRESETS["seed"], Workload(), "cpu", [], [], settings=settings)
    back = session_io.from_json(session_io.to_json(snap))
    assert dict(back.settings) == settings
    old = json.loads(session_io.to_json(snap))
    del old["settings"]
    assert session_io.from_json(json.dumps(old)).settings == ()


def test_restoring_a_session_brings_its_tab_settings_back() -> None:
    from xtlens.core.config import Workload
    from xtlens.dashboard.session import session_io

    snap = session_io.make(PRESETS["seed"], Workload(), "cpu", [], [], settings={"tradeoffs.axis": "heads"})
    at = show(app(), "Trade-offs")
    assert at.radio(key="tradeoffs.axis").value == "dim"
    from xtlens.dashboard.session import store, tab_settings

    at.session_state["_xtlens_kept"] = {}
    with store.use(at.session_state):
        tab_settings.restore_settings(dict(snap.settings))
    at.run()
    assert at.radio(key="tradeoffs.axis").value == "heads"
