"""The chart and table fixes for narrow screens and small charts, on pure figures and frames (no browser):
log axes with few points keep >= 3 labelled ticks, the stage chart runs in time order, the toolbar has its own
strip above the title, the "ends" labels of Compare are short and apart, Compare's table has one column per
configuration, a rising tokens/s is not called implausible. The browser half: ``test_browser_layout.py``."""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
import pytest
from xtlens.core import cost_model, units
from xtlens.core.config import PRESETS, Workload
from xtlens.core.setup import TrainingSetup
from xtlens.core.units import fmt_count
from xtlens.dashboard import charts, tables
from xtlens.dashboard.charts import setups as setup_charts

SEED = PRESETS["seed"]


def visible_ticks(fig: go.Figure, axis: str = "y") -> list[float]:
    """The tick positions of a log ``axis`` that fall inside its range (what the reader sees)."""
    ax = fig.layout[f"{axis}axis"]
    lo, hi = ax.range
    return [t for t in ax.tickvals if lo <= math.log10(t) <= hi]


@pytest.mark.parametrize("values", [[0.51, 0.62], [100.0, 100.5], [0.55], [900.0, 5561.0], [3e9, 3.3e9],
                                    [1.0, 1e6], [0.012, 0.9]])
def test_a_log_axis_shows_three_ticks_and_every_value(values: list[float]) -> None:
    ticks, span = charts.log_axis(values)
    inside = [t for t in ticks if span[0] <= math.log10(t) <= span[1]]
    assert len(inside) >= charts.MIN_TICKS, (values, ticks, span)
    assert span[0] < math.log10(min(values)) and math.log10(max(values)) < span[1]
    # the values fill a sensible part of the axis: at least a fifth of it, unless they are one value
    if max(values) / min(values) > 1.05:
        assert (math.log10(max(values)) - math.log10(min(values))) / (span[1] - span[0]) > 0.2, (values, span)


def test_two_point_latency_chart_has_three_labelled_y_ticks() -> None:
    frame = pd.DataFrame({"seq_len_tokens": [128, 256], "series": "s", "latency_median_ms": [5.1, 6.2]})
    fig = charts.latency_loglog(frame, title="t")
    ticks = visible_ticks(fig)
    assert len(ticks) >= 3 and ticks == sorted(ticks)
    assert list(fig.layout.yaxis.ticktext) == [charts.tick_text(t) for t in fig.layout.yaxis.tickvals]
    # the old axis (log_ticks only, Plotly's own range) showed one tick, 5, between 5.1 and 6.2
    assert [t for t in charts.log_ticks([5.1, 6.2]) if 5.1 <= t <= 6.2] == []


def test_sweep_and_overlay_log_axes_keep_three_ticks() -> None:
    sweep = pd.DataFrame({"axis_value": [256, 512], "m": [2.0e9, 2.6e9], "is_current": [True, False]})
    fig = charts.sweep_metric(sweep, axis="dim", metric="m", title="t", y_title="y", log_y=True)
    assert len(visible_ticks(fig)) >= 3
    over = pd.DataFrame({"n": [128, 256, 128, 256], "b": [1.0, 1.1, 1.05, 1.2], "c": ["a", "a", "b", "b"]})
    fig = charts.overlay_lines(over, x="n", y="b", series="c", title="t", x_title="n", y_title="y", log_y=True)
    assert len(visible_ticks(fig)) >= 3


def test_the_stage_chart_runs_in_training_step_order() -> None:
    setup = TrainingSetup(recompute="block", zero=3, dp=2)
    tm = cost_model.training_memory(SEED, Workload(seq_len=2048), setup)
    assert set(tm.stages_bytes) == set(setup_charts.STAGE_LABELS)  # the seed (ALiBi) with all six stages
    assert list(tm.stages_bytes)[0] == "loss"  # the model's own order is not the time order
    fig = setup_charts.stages_figure(tm.stages_bytes, tm.peak_parts_bytes, tm.peak_stage, 8 * units.GIB, title="t")
    assert list(fig.data[0].x) == ["forward, last attention block", "forward done, at the loss", "start of backward",
                                   "ZeRO-3 gathered params", "backward, recomputed block", "optimizer step"]
    assert list(fig.data[0].y) == [tm.stages_bytes[s] / units.GIB for s in
                                   ("forward_attention", "loss", "backward_start", "zero3_gather", "backward_block",
                                    "optimizer_step")]
    assert list(setup_charts.in_step_order({"new": 1, "optimizer_step": 2, "loss": 3})) == ["loss", "optimizer_step",
                                                                                            "new"]


def test_the_toolbar_has_its_own_strip_above_the_title() -> None:
    fig = charts.figure_layout(go.Figure(go.Scatter(x=[1, 2], y=[1, 2])), "A title", x="x", y="y", height=300)
    charts.toolbar_room(fig)
    assert fig.layout.title.yref == "container" and fig.layout.title.yanchor == "top"
    assert fig.layout.title.y * fig.layout.height == pytest.approx(fig.layout.height - charts.TOOLBAR_PX)  # one line
    assert fig.layout.margin.t >= charts.TOOLBAR_PX + 24  # the title's line fits between the strip and the plot
    assert fig.layout.height == 300 + charts.TOOLBAR_PX  # the plot keeps its height
    long = charts.toolbar_room(charts.figure_layout(go.Figure(), "Training step: live memory per device at each "
                                                    "stage (device memory 79.6 GiB: 75x the peak, off the scale)",
                                                    x="x", y="y"))
    lines = long.layout.title.text.split("<br>")
    assert len(lines) == 3 and max(map(len, lines)) <= charts.TITLE_WRAP_CHARS
    assert " ".join(lines).startswith("Training step: live memory per device at each stage (device memory")
    assert long.layout.margin.t >= charts.TOOLBAR_PX + 3 * 24  # room for every line
    bare = go.Figure()
    assert charts.toolbar_room(bare).layout.height is None  # no title: nothing moved
    from xtlens.dashboard.views.common import CHART_CONFIG

    assert CHART_CONFIG["displayModeBar"] == "hover" and CHART_CONFIG["displaylogo"] is False


def test_curves_that_end_early_have_short_labels_apart() -> None:
    frame = pd.DataFrame({"n": [128, 1024, 8192] + [128, 1024] * 2, "b": [1.0, 2.0, 3.0, 1.1, 2.1, 1.2, 2.2],
                          "c": ["long"] * 3 + ["pin a ⚠ at 1,024 tokens"] * 2 + ["pin b ⚠ at 1,024 tokens"] * 2})
    ends = {"pin a ⚠ at 1,024 tokens": "max_seq_len 1,024", "pin b ⚠ at 1,024 tokens": "max_seq_len 1,024"}
    fig = charts.overlay_lines(frame, x="n", y="b", series="c", title="t", x_title="n", y_title="y", ends=ends)
    marks = [t for t in fig.data if t.marker.symbol == "x"]
    assert [m.text[0] for m in marks] == ["ends: max_seq_len 1,024"] * 2  # the name is in the hover and legend
    assert marks[0].textposition != marks[1].textposition  # same length: one label above, one below
    assert all(m.cliponaxis is False for m in marks)
    assert marks[1].hovertext[0] == "pin b ⚠ at 1,024 tokens: ends, max_seq_len 1,024"


def test_compare_table_has_one_column_per_configuration() -> None:
    wl = Workload()
    seed, mha = cost_model.estimate(SEED, wl), cost_model.estimate(PRESETS["seed-mha"], wl)
    long = tables.compare_table([("a", seed), ("b", mha), ("c", seed)])
    compact = tables.compare_wide(long, deltas_inline=True).set_index("quantity")
    assert list(compact.columns) == ["a", "b", "c"]
    pct = 100 * (mha["num_params"] - seed["num_params"]) / seed["num_params"]
    assert compact.loc["parameters", "b"] == f"{fmt_count(mha['num_params'])} (+{pct:.1f}%)"
    assert compact.loc["parameters", "c"] == f"{fmt_count(seed['num_params'])} (same)"
    assert compact.loc["parameters", "a"] == fmt_count(seed["num_params"])
    full = tables.compare_wide(long)
    assert len(full.columns) == 1 + 3 + 2  # the full table keeps its Δ columns


@pytest.mark.parametrize(("slope", "flagged"), [(0.5, False), (1.0, False), (-0.65, False), (1.6, True)])
def test_a_rising_throughput_is_not_called_implausible(slope: float, flagged: bool) -> None:
    words = tables.regime(slope, "throughput")
    assert ("implausible" in words) is flagged, words
    if 0.2 < slope <= 1.2:
        assert words.startswith("tokens/s rises with length: time per token falls")
    assert "implausible" in tables.regime(-0.6)  # a time that falls with length is still flagged


def test_benefits_log_axes_of_two_points_keep_three_ticks_and_their_lines() -> None:
    from xtlens.dashboard.charts import benefits as bc

    fig = go.Figure(go.Scatter(x=[2, 4], y=[1.3, 1.5], error_y={"type": "data", "array": [0.2, 0.1],
                                                                   "arrayminus": [0.05, 0.1]}))
    fig.add_hline(y=1.0)
    fig.update_yaxes(type="log")
    bc.clean_log_axes(fig)
    lo, hi = fig.layout.yaxis.range
    assert len(visible_ticks(fig)) >= 3
    assert lo < math.log10(1.0) and math.log10(1.5 + 0.1) < hi  # the reference line and the error bars are in view
