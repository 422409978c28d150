"""The Setups view (AppTest): metrics equal the cost model under the setups, the setups round-trip through the
URL, invalid setups name their field; the budget explorer's grid, feasibility and Pareto front (pure)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from xtlens.core import cost_model, units
from xtlens.core.config import PRESETS, Workload
from xtlens.core.setup import ServingSetup, TrainingSetup
from xtlens.dashboard import budget
from xtlens.dashboard.charts import setups as setup_charts

APP = Path(__file__).resolve().parents[3] / "dashboard" / "app.py"
SEED = PRESETS["seed"]


def _app(query: dict[str, str]) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params.update({"view": "Setups", **query})
    at.run()
    at.session_state["view"] = "Setups"
    return at.run()


def _metric(at: AppTest, label: str) -> str:
    values = [m.value for m in at.metric if m.label == label]
    assert values, [m.label for m in at.metric]
    return values[0]


def test_setups_view_metrics_follow_the_url_setup() -> None:
    at = _app({"seq_len": "2048", "t_precision": "amp_bf16", "t_recompute": "block", "s_kv_cache": "int8",
               "s_weights_bits": "4"})
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    wl = Workload(seq_len=2048)
    training = TrainingSetup(precision="amp_bf16", recompute="block")
    serving = ServingSetup(kv_cache="int8", weights_bits=4)
    # the label names the setup (issue 21: two setups are told apart in the label, not only in a tooltip)
    assert _metric(at, "Training peak per device (amp_bf16, AdamW, with block recomputation)") == units.fmt_bytes(
        cost_model.training_memory(SEED, wl, training).peak_bytes)
    assert _metric(at, "Training-step FLOPs per device (with block recomputation)") == units.fmt_flops(
        cost_model.training_flops_for(SEED, wl, training)["train_step_flops"])
    assert _metric(at, "Serving memory per device") == units.fmt_bytes(
        cost_model.serving_memory(SEED, wl, serving).total_bytes)
    assert _metric(at, "KV cache per token") == f"{2 * 6 * 64 + 2 * 6 * 2:,} bytes"
    assert not at.warning, [w.value for w in at.warning]  # the t_* / s_* parameters are known to the URL reader
    assert at.query_params["t_precision"] in ("amp_bf16", ["amp_bf16"]) and at.query_params["s_weights_bits"] in ("4", ["4"])
    # a control change goes into the URL and the metric
    at.selectbox(key="setups.recompute").set_value("none").run()
    assert "t_recompute" not in at.query_params
    assert _metric(at, "Training peak per device (amp_bf16, AdamW, no recomputation)") == units.fmt_bytes(
        cost_model.training_memory(SEED, wl, TrainingSetup(precision="amp_bf16")).peak_bytes)


def test_invalid_setup_names_the_field() -> None:
    at = _app({})
    at.selectbox(key="setups.zero").set_value(3).run()
    assert any("zero" in e.value and "dp >= 2" in e.value for e in at.error), [e.value for e in at.error]
    at = _app({"t_tp": "3"})
    assert any("tp" in e.value and "heads = 8" in e.value for e in at.error), [e.value for e in at.error]


def _grid(**kw) -> pd.DataFrame:
    b = budget.Budget(device_memory_bytes=kw.pop("memory", 8 * units.GIB), train_tokens=1e10, **kw)
    return budget.grid(SEED, Workload(seq_len=2048), x="dim", y="depth", xs=(256, 512, 1024, 2048),
                       ys=(2, 6, 12, 24), training=TrainingSetup(precision="amp_bf16"), serving=ServingSetup(), budget=b)


def test_budget_grid_feasibility_and_pareto_front() -> None:
    frame = _grid()
    assert len(frame) == 16
    fits = frame["train_peak_bytes"] <= 8 * units.GIB
    assert (frame["feasible"] == (fits & (frame["serve_total_bytes"] <= 8 * units.GIB))).all()
    assert 0 < frame["feasible"].sum() < 16  # the budget cuts the grid
    one = frame[(frame["dim"] == 512) & (frame["depth"] == 6)].iloc[0]
    assert one["train_peak_bytes"] == cost_model.training_memory(SEED, Workload(seq_len=2048),
                                                                 TrainingSetup(precision="amp_bf16")).peak_bytes
    front = frame[frame["pareto"]]
    assert front["feasible"].all() and len(front) >= 1
    feasible = frame[frame["feasible"]]
    for _, p in front.iterrows():  # no feasible point is both cheaper and better
        assert not ((feasible["train_flops"] < p["train_flops"]) & (feasible["loss"] < p["loss"])).any()
    # a FLOP cap shrinks the feasible set
    capped = _grid(max_fwd_flops_per_token=float(frame["fwd_flops_per_token"].median()))
    assert capped["feasible"].sum() < frame["feasible"].sum()


def test_budget_charts_mark_the_current_config() -> None:
    frame = _grid()
    fig = setup_charts.budget_map(frame, x="dim", y="depth", device_memory_bytes=8 * units.GIB, current=(512, 6),
                                  title="t")
    names = [t.name for t in fig.data]
    assert "current configuration" in names and "iso-memory: device memory" in names
    assert any(n and n.startswith("iso-FLOP") for n in names)
    pareto = setup_charts.pareto_figure(frame, x="dim", y="depth", current=(512, 6), benefit="b", title="t")
    assert "Pareto front" in [t.name for t in pareto.data]
    tm = cost_model.training_memory(SEED, Workload(seq_len=2048), TrainingSetup())
    fig = setup_charts.stages_figure(tm.stages_bytes, tm.peak_parts_bytes, tm.peak_stage, 8 * units.GIB, title="t")
    stacked = sum(t.y[0] for t in fig.data[1:])
    assert stacked == pytest.approx(tm.peak_bytes / units.GIB)
