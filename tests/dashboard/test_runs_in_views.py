"""Issue 9, results and inputs: uploaded and restored result tables are drawn in the views they belong to (labelled
by run) and listed on Export; one colour per configuration across charts; the sequence-length slider has
power-of-two stops up to max_seq_len with the exact box beside it."""

from __future__ import annotations

import json

import pandas as pd
from streamlit.testing.v1 import AppTest
from test_app import app, no_exception, show  # the AppTest helpers of the dashboard tests
from xtlens.core import cost_model
from xtlens.core.config import PRESETS, Workload
from xtlens.dashboard import charts, exporting
from xtlens.dashboard.session import other_runs, session_io
from xtlens.profiling.results.export import as_frame
from xtlens.profiling.results.records import ProfileRecord, base_fields, config_key

SEED = PRESETS["seed"]
MHA = PRESETS["seed-mha"]


def figure(at: AppTest, key: str) -> dict:
    """The plotly figure drawn under ``chart.<key>``."""
    for c in at.get("plotly_chart"):
        if c.proto.id.endswith(f"chart.{key}") or f"chart.{key}" in c.proto.id:
            return json.loads(c.proto.spec)
    raise AssertionError(f"no chart {key!r}")


def traces(fig: dict) -> dict[str, dict]:
    return {t.get("name"): t for t in fig["data"] if t.get("name")}


def _rows() -> pd.DataFrame:
    """A result table as `xtlens profile` writes it: seed-mha latency, memory and FLOP totals at 128 and 256."""
    rows = []
    for n in (128, 256):
        wl = Workload(seq_len=n)
        kw = dict(device="cuda:0", device_name="NVIDIA H100 80GB HBM3", config_name="seed-mha")
        rows.append(ProfileRecord(**base_fields(MHA, wl, measurement="latency", phase="forward", **kw),
                                  latency_min_ms=0.01 * n, latency_median_ms=0.02 * n, latency_max_ms=0.03 * n,
                                  tokens_per_s=1000.0 * n))
        mem = cost_model.memory_estimate(MHA, wl)
        train = cost_model.training_headline(MHA, wl).peak_bytes  # the ordered peak: what every tab calls training
        for phase, pred in (("inference", mem.inference_total_bytes), ("train_step", train)):
            rows.append(ProfileRecord(**base_fields(MHA, wl, measurement="memory", phase=phase, **kw),
                                      component="total", measured_bytes=int(pred * 1.25)))
        fwd = cost_model.flop_counts(MHA, wl).fwd_flops
        rows.append(ProfileRecord(**base_fields(MHA, wl, measurement="flops", phase="forward", **kw),
                                  component="total", predicted_flops=fwd, torch_counter_flops=fwd + 1000,
                                  fvcore_macs=fwd // 2, fvcore_flops=fwd))
    return as_frame(rows)


def test_runs_frame_labels_rows_by_run_and_keeps_one_row_per_point() -> None:
    table = _rows()
    runs = other_runs.runs_frame([("uploaded gpu.csv", table), ("uploaded gpu.csv", table)], "latency")
    assert list(runs["run"]) == ["seed-mha · uploaded gpu.csv"] * 2  # the same file twice: each point once
    assert list(runs["latency_median_ms"]) == [0.02 * 128, 0.02 * 256]
    both = other_runs.runs_frame([("uploaded gpu.csv", table), ("restored session", table)], "memory")
    assert set(both["run"]) == {"seed-mha · uploaded gpu.csv", "seed-mha · restored session"} and len(both) == 8
    assert other_runs.run_keys(both) == [("seed-mha · uploaded gpu.csv", config_key(MHA)),
                                         ("seed-mha · restored session", config_key(MHA))]


def test_uploaded_results_are_drawn_in_latency_memory_and_flops_and_listed_on_export() -> None:
    table = _rows()
    at = show(app({"seq_len": "256"}), "Export")
    at.file_uploader(key="export.results_upload").set_value(
        ("gpu.csv", exporting.table_bytes(table, "csv"), "text/csv")).run()
    no_exception(at)
    text = " ".join(m.value for m in at.markdown)
    assert "**uploaded gpu.csv** — 8 rows; drawn in the Latency view, the Memory view, the FLOPs view" in text

    at = show(at, "Latency")
    no_exception(at)
    lat = traces(figure(at, "lat_forward"))
    (name,) = [n for n in lat if n.startswith("seed-mha · uploaded gpu.csv")]
    assert lat[name]["y"] == [0.02 * 128, 0.02 * 256] and lat[name]["line"]["dash"] == "dash"
    assert "slope 1.00" in name  # 2x the length, 2x the time

    at = show(at, "Memory")
    no_exception(at)
    mem = traces(figure(at, "mem_measured"))
    run = "seed-mha · uploaded gpu.csv / train_step"
    predicted = [cost_model.training_headline(MHA, Workload(seq_len=n)).peak_bytes / 2**30 for n in (128, 256)]
    assert mem[f"{run}: predicted"]["y"] == predicted  # seed-mha's own ordered peak, not the sidebar's, not the sum
    assert mem[f"{run}: measured"]["y"] == [int(p * 2**30 * 1.25) / 2**30 for p in predicted]
    assert mem[f"{run}: measured"]["text"] == ["+25.0%", "+25.0%"]

    at = show(at, "FLOPs")
    no_exception(at)
    fl = traces(figure(at, "flops_runs"))
    series = "seed-mha · uploaded gpu.csv / forward"
    fwd = [cost_model.flop_counts(MHA, Workload(seq_len=n)).fwd_flops for n in (128, 256)]
    assert fl[f"{series}: closed form"]["y"] == fwd
    assert fl[f"{series}: torch FlopCounterMode"]["y"] == [f + 1000 for f in fwd]
    runs = next(df.value for df in at.dataframe if "run" in df.value.columns and "counter" in df.value.columns)
    assert set(runs["run"]) == {"seed-mha · uploaded gpu.csv"} and set(runs["tokens"]) == {128, 256}
    # one colour per configuration: seed-mha has the same colour in the latency, memory and FLOP charts
    colour = fl[f"{series}: closed form"]["line"]["color"]
    assert mem[f"{run}: predicted"]["line"]["color"] == colour == lat[name]["line"]["color"]
    assert colour != charts.SERIES[0]  # the first colour is the sidebar's configuration (the seed)
    # "Forget uploaded tables" forgets them, although the file is still in the upload box
    at = show(at, "Export")
    at.button(key="export.clear_uploads").click().run()
    at.run()
    assert "uploaded gpu.csv" not in " ".join(m.value for m in at.markdown)
    at = show(at, "FLOPs")
    assert not [c for c in at.get("plotly_chart") if "chart.flops_runs" in c.proto.id]


def test_a_restored_sessions_results_come_back_into_the_views_and_export() -> None:
    snap = session_io.make(SEED, Workload(seq_len=256), "cpu", [], [("latency sweep", _rows())])
    at = show(app(), "Export")
    at.file_uploader(key="export.session_upload").set_value(
        ("s.json", session_io.to_json(snap).encode(), "application/json")).run()
    at.button(key="export.restore").click().run()
    no_exception(at)
    text = " ".join(m.value for m in at.markdown)
    assert "**restored session: latency sweep** — 8 rows" in text
    at = show(at, "Latency")
    lat = traces(figure(at, "lat_forward"))
    assert [n for n in lat if n.startswith("seed-mha · restored session — slope")]
    at = show(at, "FLOPs")
    assert "seed-mha · restored session / forward: closed form" in traces(figure(at, "flops_runs"))


def test_one_colour_per_configuration_in_compare_tradeoffs_and_latency() -> None:
    at = show(app(), "Compare")
    at.selectbox(key="compare.preset").set_value("seed-mha").run()
    at.button(key="compare.add_preset").click().run()
    no_exception(at)
    bars = figure(at, "cmp_params")["data"][0]
    colours = dict(zip(bars["x"], bars["marker"]["color"], strict=True))
    assert colours == {"current (sidebar)": charts.SERIES[0], "seed-mha": charts.SERIES[1]}
    lines = traces(figure(at, "cmp_mem_training"))
    assert lines["seed-mha"]["line"]["color"] == charts.SERIES[1]
    assert lines["current (sidebar)"]["line"]["color"] == charts.SERIES[0]
    at = show(at, "Trade-offs")
    current = traces(figure(at, "sweep_num_params"))["current config"]
    assert current["marker"]["color"] == charts.SERIES[0]
    from xtlens.dashboard.views import compare

    assert compare.identical([("a", SEED, 1), ("b", MHA, 1), ("c", SEED, 1)]) == [("c", "a")]  # said in a caption
    # the same seed-mha uploaded later is drawn in seed-mha's colour (not the next free one)
    assert charts.assign_colours([config_key(SEED), config_key(MHA)], [config_key(MHA)]) == {
        config_key(MHA): charts.SERIES[1]}


def test_sequence_length_slider_stops_are_powers_of_two_up_to_max_seq_len() -> None:
    at = app()
    slider = at.select_slider(key="wl.seq_len.slider")
    assert slider.options == [str(2**k) for k in range(14)] and slider.value == 1024  # 1..8192
    at.number_input(key="cfg.max_seq_len").set_value(2048).run()
    assert at.select_slider(key="wl.seq_len.slider").options == [str(2**k) for k in range(12)]  # 1..2048
    at.select_slider(key="wl.seq_len.slider").set_value(32).run()
    assert at.number_input(key="wl.seq_len").value == 32 and at.query_params["seq_len"] == "32"
    for bad in (0, 9000):
        at.number_input(key="wl.seq_len").set_value(bad).run()
        no_exception(at)
        errors = [e.value for e in at.sidebar.error]
        assert any(e.startswith("**seq_len** (allowed 1..8192)") for e in errors), errors
        assert not at.metric  # stale numbers are not shown


def test_overview_puts_key_numbers_and_facts_first_and_long_text_in_expanders() -> None:
    from xtlens.dashboard import facts
    from xtlens.dashboard.views import overview

    at = show(app(), "Overview")
    heads = [h.value for h in at.subheader]
    assert heads[:3] == ["Key numbers (closed form: update on every change, nothing is run)",
                         "What each flag really does (and where the seed's written analysis is wrong)",
                         "Measured on CPU: " + heads[2].removeprefix("Measured on CPU: ")]
    table = overview.facts_table(facts.facts(SEED))
    rows = {line.split(" | ")[0].strip("| *"): line for line in table.splitlines()[2:]}
    assert len(rows) == len(facts.facts(SEED))
    assert "*heads split the model's representation (dim) between them.* → in x-transformers" in rows["heads"]
    assert rows["rotary_xpos"].endswith("|  |")  # no claim to correct
    assert table in [m.value for m in at.markdown]
    labels = [e.label for e in at.expander]
    assert {"Each flag in full", "Why the counts differ",
            "The keywords as written and as passed, with every translation explained"} <= set(labels)


def test_head_width_and_max_seq_len_are_power_of_two_sliders_with_exact_boxes() -> None:
    at = app()
    head = at.select_slider(key="cfg.attn_dim_head.slider")
    assert head.options == [str(2**k) for k in range(2, 11)] and head.value == 64  # 4..1024
    longest = at.select_slider(key="cfg.max_seq_len.slider")
    assert longest.options == [str(2**k) for k in range(21)] and longest.value == 8192  # 1..1048576
    longest.set_value(4096).run()
    assert at.number_input(key="cfg.max_seq_len").value == 4096
    assert at.select_slider(key="wl.seq_len.slider").options[-1] == "4096"  # the workload slider ends there too
    at.number_input(key="cfg.attn_dim_head").set_value(48).run()  # any width in the exact box
    assert at.select_slider(key="cfg.attn_dim_head.slider").value == 32  # nearest stop (ties go down)
    assert [m.value for m in at.metric if m.label == "Parameters"] == [
        f"{cost_model.estimate(SEED.replace(max_seq_len=4096, attn_dim_head=48), Workload())['num_params']:,}"]


def test_a_simulated_upload_is_labelled_simulated_in_the_memory_view() -> None:
    table = _rows()
    table.loc[table["measurement"] == "memory", "method"] = \
        "torch MemTracker under FakeTensorMode (tensor sizes; no memory used)"
    at = show(app({"seq_len": "256"}), "Export")
    at.file_uploader(key="export.results_upload").set_value(
        ("cpu.json", exporting.table_bytes(table, "json"), "application/json")).run()
    at = show(at, "Memory")
    no_exception(at)
    names = set(traces(figure(at, "mem_measured")))
    assert "seed-mha · uploaded cpu.json (simulated) / inference: simulated" in names, names
    assert not any(n.endswith(": measured") for n in names), names  # a simulated peak is never called measured
