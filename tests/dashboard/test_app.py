"""The dashboard driven by streamlit.testing.v1.AppTest: every view, invalid input, metric updates, the URL,
Compare deltas, exports, and a measurement job run end to end through the worker (with a fast fake measure)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from urllib.parse import parse_qsl

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from xtlens.core import cost_model
from xtlens.core.config import PRESETS, SEED_SNIPPET, Workload
from xtlens.core.setup import TrainingSetup
from xtlens.core.units import fmt_bytes, fmt_count, fmt_flops
from xtlens.dashboard import exporting, tables
from xtlens.dashboard.session import session_io
from xtlens.profiling.results.export import as_frame
from xtlens.profiling.results.records import ProfileRecord, base_fields

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
VIEWS = ["Overview", "FLOPs", "Memory", "Latency", "Trade-offs", "Setups", "Benefits", "Compare", "Export", "History"]
SEED = PRESETS["seed"]


def app(query: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120)
    if query:
        at.query_params.update(query)
    return at.run()


def metric(at: AppTest, label: str) -> str:
    values = [m.value for m in at.metric if m.label == label]
    assert values, f"no metric {label!r}: {[m.label for m in at.metric]}"
    return values[0]


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def show(at: AppTest, view: str) -> AppTest:
    at.session_state["view"] = view
    return at.run()


@pytest.fixture(scope="module")
def seed_app() -> AppTest:
    return app()


@pytest.mark.parametrize("view", VIEWS)
def test_every_view_runs_on_the_seed(seed_app: AppTest, view: str) -> None:
    at = show(seed_app, view)
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    assert at.session_state["view"] == view


def test_seed_is_the_default_and_metrics_match_the_cost_model(seed_app: AppTest) -> None:
    at = show(seed_app, "Overview")
    est = cost_model.estimate(SEED, Workload())
    assert at.number_input(key="cfg.dim").value == 512
    assert at.checkbox(key="cfg.deepnorm").value is True
    assert metric(at, "Parameters") == fmt_count(est["num_params"]) == "36,629,504"
    assert metric(at, "Non-embedding parameters") == fmt_count(est["non_embedding_params"])
    assert metric(at, "Forward FLOPs per token") == fmt_flops(est["fwd_flops_per_token"])
    # the training peak is the ordered one (core.training.training_memory), as on the Memory and Setups tabs
    assert metric(at, "Training peak (AdamW, no recomputation)") == fmt_bytes(
        cost_model.training_memory(SEED, Workload(), TrainingSetup()).peak_bytes) == "1.057 GiB"
    # the 2.31 vs 1.19.1 parameter counts of the seed, and the measured metrics say they are not measured
    assert metric(at, "x-transformers 1.19.1") == "36,655,648"
    assert metric(at, "Difference (1.19.1 - 2.31)") == "26,144"
    assert "| Forward latency (median) | not measured yet — press Measure |" in " ".join(m.value for m in at.markdown)
    text = " ".join(m.value for m in at.markdown)
    assert "12 LayerNorm biases" in text and "to_logits.bias" in text


def test_tradeoffs_states_the_current_configs_proxies(seed_app: AppTest) -> None:
    at = show(seed_app, "Trade-offs")
    est = cost_model.estimate(SEED, Workload())
    dataset_tokens = 1e9  # the default data set size, 1 B tokens
    (info,) = [i.value for i in at.info if i.value.startswith("Current configuration")]
    assert f"{dataset_tokens / est['num_params']:,.1f} tokens per parameter" in info  # D / N
    assert f"6·N·D = {fmt_flops(6 * est['non_embedding_params'] * dataset_tokens)}" in info  # Kaplan et al.


@pytest.mark.parametrize("view", VIEWS)
def test_invalid_combination_names_the_field_in_every_view(view: str) -> None:
    at = app()
    at.number_input(key="cfg.alibi_num_heads").set_value(12)
    at = show(at, view)
    no_exception(at)
    errors = [e.value for e in at.error]
    assert any("alibi_num_heads" in e and "from 1 to 8" in e for e in errors), errors
    assert not at.metric  # nothing computed from an invalid configuration


def test_sequence_longer_than_max_seq_len_is_reported_next_to_the_slider() -> None:
    at = app()
    at.number_input(key="cfg.max_seq_len").set_value(512).run()
    no_exception(at)
    errors = [e.value for e in at.sidebar.error]
    assert any("seq_len" in e and "max_seq_len = 512" in e for e in errors), errors


def test_widget_changes_update_the_metrics() -> None:
    at = app()
    at.number_input(key="cfg.dim").set_value(768).run()
    cfg = SEED.replace(dim=768)
    est = cost_model.estimate(cfg, Workload())
    assert metric(at, "Parameters") == fmt_count(est["num_params"])
    at.select_slider(key="wl.seq_len.slider").set_value(4096).run()  # the power-of-two slider sets the exact value
    assert at.number_input(key="wl.seq_len").value == 4096
    est = cost_model.estimate(cfg, Workload(seq_len=4096))
    assert metric(at, "Forward FLOPs per sequence") == fmt_flops(est["fwd_flops"])
    assert metric(at, "KV cache at this length") == fmt_bytes(est["kv_cache_bytes"])
    at.number_input(key="wl.seq_len").set_value(3000).run()  # any length in the exact box; the slider follows
    assert at.select_slider(key="wl.seq_len.slider").value == 2048
    assert metric(at, "Forward FLOPs per sequence") == fmt_flops(
        cost_model.estimate(cfg, Workload(seq_len=3000))["fwd_flops"])
    assert at.query_params["seq_len"] == "3000"
    at.select_slider(key="wl.seq_len.slider").set_value(4096).run()
    at.selectbox(key="wl.dtype").set_value("bfloat16").run()
    at.checkbox(key="cfg.attn_one_kv_head").uncheck().run()
    cfg = cfg.replace(attn_one_kv_head=False)
    est = cost_model.estimate(cfg, Workload(seq_len=4096, dtype="bfloat16"))
    assert metric(at, "Inference memory (one forward)") == fmt_bytes(est["inference_total_bytes"])
    assert metric(at, "Parameters") == fmt_count(est["num_params"])
    assert at.query_params["dim"] == "768" and at.query_params["dtype"] == "bfloat16"


def test_url_round_trips_the_configuration() -> None:
    cfg = PRESETS["gpt2-small-shape"].replace(depth=3, attn_kv_heads=4, ff_glu=True)
    query = dict(parse_qsl(cfg.to_query()))
    query.update({"seq_len": "768", "batch": "2", "dtype": "float16", "device": "cpu", "view": "Memory"})
    at = app(query)
    no_exception(at)
    assert at.number_input(key="cfg.depth").value == 3
    assert at.number_input(key="cfg.attn_kv_heads").value == 4
    assert at.checkbox(key="cfg.ff_glu").value is True
    assert at.checkbox(key="cfg.tie_embedding").value is True
    assert at.number_input(key="wl.seq_len").value == 768  # the exact value (the slider's nearest stop is 512)
    assert at.select_slider(key="wl.seq_len.slider").value == 512
    assert at.session_state["view"] == "Memory"
    assert {k: str(v) for k, v in at.query_params.items()} == query


def test_a_bad_url_value_is_reported_and_the_seed_used() -> None:
    at = app({"dim": "abc", "heads": "8"})
    no_exception(at)
    assert any("dim" in w.value for w in at.warning)
    assert at.number_input(key="cfg.dim").value == 512


def test_presets_and_pasted_code_load_into_the_widgets() -> None:
    at = app()
    at.selectbox(key="src.preset").set_value("gpt2-small-shape")
    at.button(key="src.load_preset").click().run()
    assert at.number_input(key="cfg.dim").value == 768
    assert metric(at, "Parameters") == fmt_count(cost_model.estimate(PRESETS["gpt2-small-shape"],
                                                                     Workload())["num_params"])
    at.text_area(key="src.snippet").set_value(SEED_SNIPPET.replace("depth=6", "depth=12"))
    at.button(key="src.load_snippet").click().run()
    assert at.number_input(key="cfg.depth").value == 12 and at.number_input(key="cfg.dim").value == 512
    at.text_area(key="src.snippet").set_value("TransformerWrapper(num_tokens=10, attn_layers=Decoder(dim=64, foo=1))")
    at.button(key="src.load_snippet").click().run()
    no_exception(at)
    assert any("foo" in e.value for e in at.sidebar.error)
    assert at.number_input(key="cfg.depth").value == 12  # unchanged


def _compare_table(at: AppTest) -> pd.DataFrame:
    """The comparison table with the absolute deltas (its Δ columns; the first table has them inline, in %)."""
    for df in at.dataframe:
        if "quantity" in df.value.columns and any(str(c).startswith("Δ") for c in df.value.columns):
            return df.value
    raise AssertionError("no comparison table")


def test_compare_table_has_the_right_deltas() -> None:
    at = show(app(), "Compare")
    at.selectbox(key="compare.preset").set_value("seed-mha")
    at.button(key="compare.add_preset").click().run()
    no_exception(at)
    wide = _compare_table(at).set_index("quantity")
    seed = cost_model.estimate(SEED, Workload())
    mha = cost_model.estimate(PRESETS["seed-mha"], Workload())
    assert wide.loc["parameters", "current (sidebar)"] == fmt_count(seed["num_params"])
    assert wide.loc["parameters", "seed-mha"] == fmt_count(mha["num_params"])
    delta = mha["num_params"] - seed["num_params"]
    assert wide.loc["parameters", "Δ seed-mha"].startswith("+" + fmt_count(delta))
    assert wide.loc["KV cache", "Δ seed-mha"].startswith("+" + fmt_bytes(mha["kv_cache_bytes"] - seed["kv_cache_bytes"]))
    assert wide.loc["forward FLOPs per token", "Δ seed-mha"].startswith("+")
    long = tables.compare_table([("a", seed), ("b", mha)])
    row = long[(long["metric"] == "num_params") & (long["config"] == "b")].iloc[0]
    assert row["delta"] == delta and row["delta_pct"] == pytest.approx(100 * delta / seed["num_params"])
    # a pin can be removed again
    at.button(key="compare.remove.0").click().run()
    assert not [df for df in at.dataframe if "quantity" in df.value.columns]


def _records() -> pd.DataFrame:
    rows = []
    for n in (128, 256):
        base = base_fields(SEED, Workload(seq_len=n), measurement="latency", phase="forward", device="cpu",
                           device_name="cpu x")
        rows.append(ProfileRecord(**base, latency_min_ms=1.0, latency_median_ms=1.5 * n, latency_max_ms=2.0,
                                  tokens_per_s=1e6 / 3, sdpa_backend="math", fvcore_macs=2**60 + 1))
    return as_frame(rows)


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_exports_parse_back_to_the_same_table(fmt: str) -> None:
    wl = Workload()
    memory = tables.memory_curve(SEED, wl, (128, 1024, 8192))
    sweep, _ = tables.sweep_table(cost_model.estimate, SEED, wl, "depth", [2, 6, 12], dataset_tokens=1e9)
    estimate = tables.estimate_table(cost_model.predictions(SEED, wl))
    for frame in (memory, sweep, estimate):
        back = exporting.table_from_bytes(exporting.table_bytes(frame, fmt), fmt)
        pd.testing.assert_frame_equal(back.reset_index(drop=True), frame.reset_index(drop=True), check_dtype=False)
    records = _records()
    back = exporting.table_from_bytes(exporting.table_bytes(records, fmt), fmt)
    pd.testing.assert_frame_equal(back, records)
    assert back["fvcore_macs"].iloc[0] == 2**60 + 1  # exact beyond 2**53
    md = exporting.table_bytes(memory, "md").decode()
    assert md.startswith("| seq_len_tokens | phase | component | bytes |")


def test_export_view_offers_four_formats_and_the_session_round_trips() -> None:
    at = show(app(), "Export")
    no_exception(at)
    labels = [b.proto.label for b in at.download_button]
    for label in ("CSV", "JSON", "Parquet", "Markdown", "Download session (JSON)"):
        assert label in labels
    recs = _records()  # once: two calls stamp their rows at different seconds across a clock tick
    snap = session_io.make(SEED, Workload(seq_len=256), "cpu", [("mha", PRESETS["seed-mha"])],
                           [("lat", recs)])
    back = session_io.from_json(session_io.to_json(snap))
    assert back.config == SEED and back.workload == Workload(seq_len=256)
    assert back.pins[0].name == "mha" and back.pins[0].config == PRESETS["seed-mha"]
    pd.testing.assert_frame_equal(back.results[0][1], recs)
    with pytest.raises(ValueError, match="not an xtlens session"):
        session_io.from_json(json.dumps({"hello": 1}))


def test_measure_button_runs_a_worker_job_and_shows_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """Press Measure: a real child process runs (with a fast fake measure), progress, then the numbers."""
    from xtlens.dashboard.session import jobs
    from xtlens.profiling.measure.memory import MEMORY_PHASES
    from xtlens.profiling.run.worker import JobManager

    assert MEMORY_PHASES == ("inference", "train_step")  # the memory phases fake_measure writes

    fake = str(Path(__file__).with_name("fake_measure.py")) + ":measure"
    real_spec = jobs.Request.spec
    monkeypatch.setattr(jobs.Request, "spec", lambda self: dataclasses.replace(real_spec(self), measure=fake))
    manager = JobManager()
    monkeypatch.setattr(jobs, "manager", lambda: manager)
    at = app({"seq_len": "256"})
    at.button(key="measure.overview").click().run()
    no_exception(at)
    (job,) = manager.jobs()
    job.wait(timeout=120)
    at.run()
    no_exception(at)
    assert metric(at, "Forward latency (median)") == f"{1e-6 * 256 * 256:,.2f} ms"
    assert metric(at, "Peak memory, inference (measured)") == fmt_bytes(1100 * 256)
    assert metric(at, "Peak memory, training (measured)") == fmt_bytes(1100 * 256)
    assert any("math" in m.value for m in at.markdown)


TINY_QUERY = {"num_tokens": "97", "max_seq_len": "256", "dim": "32", "depth": "2", "attn_dim_head": "16",
              "seq_len": "256"}


def test_latency_breakdown_whatif_and_roofline_from_real_measurements(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Latency tab's new sections, measured for real (tiny seed flags) in worker child processes."""
    from xtlens.dashboard.session import jobs
    from xtlens.profiling.run.worker import JobManager

    manager = JobManager()
    monkeypatch.setattr(jobs, "manager", lambda: manager)
    at = show(app(TINY_QUERY), "Latency")
    no_exception(at)
    # before measuring: the roofline of a preset is already there (closed form)
    roof = next(df.value for df in at.dataframe if "intensity_flops_per_byte" in df.value.columns)
    assert "alibi_bias" in set(roof["part"]) and set(roof["bound"]) <= {"memory", "compute"}
    at.button(key="measure.latency_breakdown").click().run()
    at.button(key="measure.latency_whatif").click().run()
    for job in manager.jobs():
        job.wait(timeout=300)
    at.run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    parts = next(df.value for df in at.dataframe if "share_%" in df.value.columns)
    assert set(parts["seq_len_tokens"]) == {128, 256}
    for _, group in parts.groupby("seq_len_tokens"):
        assert group["share_%"].sum() == pytest.approx(100, abs=1e-6)  # parts + remainder = the total
        assert {"alibi_bias", "attention", "qkv_proj", "remainder"} <= set(group["part"])
    assert any("building the ALiBi bias" in m.value for m in at.markdown)
    whatif = next(df.value for df in at.dataframe if "implementation" in df.value.columns)
    flex = whatif[(whatif["implementation"] == "flex") & (whatif["phase"] == "forward")].iloc[0]
    assert flex["status"] == "ok" and flex["logits_rel_err"] < 1e-5
    cudnn = whatif[whatif["implementation"] == "cudnn"].iloc[0]
    assert cudnn["status"] == "error" and "CUDA-only" in cudnn["note"]
    assert any("uncached" in n for n in whatif["note"])  # the seed's decode as a user gets it
    # the roofline on the measuring CPU, with predicted against measured
    assert "measuring device" in at.selectbox(key="latency.hw").options
    at.selectbox(key="latency.hw").select("measuring device").run()
    no_exception(at)
    assert any("on **measuring device: " in m.value for m in at.markdown)
    chart = json.loads(next(c for c in at.get("plotly_chart") if "Roofline" in c.proto.spec).proto.spec)
    names = [t.get("name", "") for t in chart["data"]]
    assert any(n.endswith("(measured)") for n in names) and any(n.endswith("(predicted)") for n in names)
    pvm = next(df.value for df in at.dataframe if "measured_over_predicted" in df.value.columns
               and "device" in df.value.columns)
    assert (pvm["measured_over_predicted"] > 0).all() and set(pvm["seq_len_tokens"]) == {128, 256}


def test_latency_shows_the_shipped_h200_run_of_this_configuration() -> None:
    """No GPU here, but the seed was measured on an H200: with the H200 preset chosen, the Latency tab shows that
    run's measured totals against the preset's roofline and the ALiBi share, the rows' own values; a
    configuration that run did not measure shows nothing of it."""
    from xtlens.profiling.results.reference import reference_for

    at = show(app(), "Latency")
    no_exception(at)
    assert at.selectbox(key="latency.hw").value == "H200 SXM"
    ref = next(df.value for df in at.dataframe if "measured_over_predicted" in df.value.columns
               and (df.value["device"] == "NVIDIA H200").all())
    rows = {(r.phase, r.seq_len_tokens, r.dtype): r for r in reference_for(SEED, "H200 SXM")
            if r.measurement == "breakdown" and r.component == "total"}
    assert len(ref) == len(rows) > 0
    for _, x in ref.iterrows():
        r = rows[(x["phase"], x["seq_len_tokens"], x["dtype"])]
        assert x["measured_ms"] == r.latency_median_ms and x["device"] == "NVIDIA H200"
        assert x["measured_over_predicted"] == pytest.approx(r.latency_median_ms / r.predicted_latency_ms)
    share = next(df.value for df in at.dataframe if "alibi_and_mask_share" in df.value.columns).set_index(
        ["phase", "seq_len_tokens", "dtype"])
    assert share.loc[("forward", 8192, "bfloat16"), "alibi_and_mask_share"] == pytest.approx(0.717, abs=0.005)
    assert any("reference run" in m.value for m in at.markdown)
    other = show(app({"dim": "256"}), "Latency")  # a configuration the reference run did not measure
    no_exception(other)
    assert not any("measured_over_predicted" in df.value.columns or "alibi_and_mask_share" in df.value.columns
                   for df in other.dataframe)
    assert not any("reference run" in m.value for m in other.markdown)
