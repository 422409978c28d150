"""Chart builders are pure DataFrame -> Figure functions: check the figure data, axis types and titles."""

from __future__ import annotations

import pandas as pd
import pytest
from xtlens.core import cost_model
from xtlens.core.config import PRESETS, Workload
from xtlens.dashboard import charts, proxies, tables

SEED = PRESETS["seed"]
LENS = (128, 256, 512, 1024, 2048, 4096, 8192)


@pytest.fixture(scope="module")
def curve() -> pd.DataFrame:
    return tables.memory_curve(SEED, Workload(), LENS)


def test_memory_components_sum_to_the_cost_model_totals() -> None:
    for n in LENS:
        rows = cost_model.predictions(SEED, Workload(seq_len=n))
        est = cost_model.estimate(SEED, Workload(seq_len=n))
        for phase, key in (("inference", "inference_total_bytes"), ("train_step", "training_total_bytes")):
            parts = dict(tables.memory_components(rows, phase))
            assert sum(parts.values()) == est[key]
            assert "other" not in parts and all(v >= 0 for v in parts.values())
        train = dict(tables.memory_components(rows, "train_step"))
        assert train["alibi_bias_saved"] == SEED.depth * 8 * n * n * 4  # the dense (1, 8, n, n) fp32 mask per block


def test_memory_stacked_is_a_log_x_stack_in_gib(curve: pd.DataFrame) -> None:
    fig = charts.memory_stacked(curve, phase="train_step")
    names = [t.name for t in fig.data]
    assert names == ["weights", "gradients", "AdamW state", "activations", "loss (log-softmax)", "ALiBi bias"]
    assert all(t.stackgroup == "one" for t in fig.data)
    assert fig.layout.xaxis.type == "log"
    assert list(fig.data[0].x) == list(LENS)
    alibi = next(t for t in fig.data if t.name == "ALiBi bias")
    assert alibi.y[-1] == pytest.approx(6 * 8 * 8192 * 8192 * 4 / 2**30)
    assert "GiB" in fig.layout.yaxis.title.text and "2^30" in fig.layout.yaxis.title.text
    assert "sequence length" in fig.layout.xaxis.title.text and "train_step" in fig.layout.title.text
    assert list(fig.layout.xaxis.tickvals) == [float(n) for n in LENS]
    # without ALiBi the band disappears
    no_alibi = tables.memory_curve(PRESETS["seed-no-alibi"], Workload(), LENS)
    assert "ALiBi bias" not in [t.name for t in charts.memory_stacked(no_alibi, phase="train_step").data]


def test_latency_loglog_fits_the_slope_and_shows_the_kernel() -> None:
    rows = []
    for n in LENS:
        rows.append({"seq_len_tokens": n, "series": "quadratic", "latency_median_ms": 1e-6 * n**2,
                     "latency_min_ms": 0.9e-6 * n**2, "latency_max_ms": 1.2e-6 * n**2, "sdpa_backend": "math"})
        rows.append({"seq_len_tokens": n, "series": "linear", "latency_median_ms": 0.01 * n,
                     "latency_min_ms": 0.01 * n, "latency_max_ms": 0.01 * n, "sdpa_backend": "flash"})
    fig = charts.latency_loglog(pd.DataFrame(rows), title="Forward latency")
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    quad, lin = fig.data
    assert quad.name.startswith("quadratic — slope 2.00") and "quadratic in length" in quad.name
    assert lin.name.startswith("linear — slope 1.00") and "linear" in lin.name
    assert list(quad.customdata) == ["math"] * len(LENS) and "kernel" in quad.hovertemplate
    assert list(quad.error_y.array) == pytest.approx([0.2e-6 * n**2 for n in LENS])
    assert "ms" in fig.layout.yaxis.title.text


def test_latency_loglog_without_data_says_not_measured() -> None:
    fig = charts.latency_loglog(pd.DataFrame(columns=["seq_len_tokens", "series", "latency_median_ms"]), title="t")
    assert not fig.data and "not measured yet" in fig.layout.annotations[0].text


def test_loglog_slope_and_regime() -> None:
    assert tables.loglog_slope([1, 2, 4], [3, 12, 48]) == pytest.approx(2.0)
    assert tables.loglog_slope([1], [1]) is None
    assert tables.regime(1.05) == "about linear in length" and tables.regime(1.95) == "about quadratic in length"


def test_flops_vs_seq_log_log_with_units() -> None:
    frame = tables.flops_curve(SEED, Workload(), LENS)
    fig = charts.flops_vs_seq(frame)
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    assert "2 FLOPs" in fig.layout.yaxis.title.text
    full, causal, train = fig.data
    assert list(full.y) == [cost_model.flop_counts(SEED, Workload(seq_len=n)).fwd_flops for n in LENS]
    assert all(c < f for c, f in zip(causal.y, full.y, strict=True))
    # the tabs' training-step number: 3 x forward + the scores the fused (attn_flash) SDPA backward recomputes
    assert list(train.y) == [cost_model.training_headline(SEED, Workload(seq_len=n)).step_flops for n in LENS]
    assert all(t == 3 * f + cost_model.flop_counts(SEED, Workload(seq_len=n)).attn_flops // 2
               for t, f, n in zip(train.y, full.y, LENS, strict=True))


def test_sweep_metric_marks_the_current_config_and_reference_line() -> None:
    frame, skipped = tables.sweep_table(cost_model.estimate, SEED, Workload(), "heads",
                                        tables.sweep_values("heads", 8), dataset_tokens=1e9)
    assert any("alibi_num_heads" in s for s in skipped)  # heads < alibi_num_heads = 4 are invalid
    fig = charts.sweep_metric(frame, axis="heads", metric="tokens_per_param", title="t", y_title="tokens per parameter",
                              log_y=True, reference=20, reference_label="Chinchilla ~20")
    line, current, reference = fig.data
    assert list(line.x) == [float(v) for v in frame.sort_values("axis_value")["axis_value"]]
    assert list(current.x) == [8.0]
    assert current.y[0] == pytest.approx(1e9 / cost_model.param_counts(SEED).num_params)
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    assert list(reference.y) == [20, 20] and reference.name == "Chinchilla ~20"
    assert list(fig.layout.xaxis.tickvals) == list(line.x)


def test_proxies_follow_their_published_formulas() -> None:
    assert proxies.compute_optimal_tokens(1_000_000) == 20_000_000
    assert proxies.train_compute_flops(10, 100) == 6000
    assert proxies.chinchilla_loss(10**9, 2 * 10**10) == pytest.approx(1.69 + 406.4 / 1e9**0.34 + 410.7 / 2e10**0.28)
    assert "over-fitting" in proxies.data_regime(1e6, 10**7)
    assert "larger model" in proxies.data_regime(1e12, 10**7)


def test_breakdown_and_crosscheck_bars() -> None:
    frame = pd.DataFrame({"component": ["a", "b", "c"], "flops": [1.0, 5.0, 3.0]})
    fig = charts.breakdown_bar(frame, label="component", value="flops", title="per op", x_title=charts.FLOPS_AXIS)
    assert list(fig.data[0].y) == ["b", "c", "a"] and fig.data[0].orientation == "h"
    assert fig.layout.xaxis.title.text == charts.FLOPS_AXIS
    long = pd.DataFrame({"phase": ["forward"] * 3, "method": ["closed form", "torch", "fvcore"],
                         "flops": [10.0, 10.0, 10.5]})
    fig = charts.crosscheck_bar(long, title="t")
    assert [t.name for t in fig.data] == ["closed form", "torch", "fvcore"] and fig.layout.barmode == "group"
    assert list(fig.data[2].text) == ["0.000 G (+5.00%)"]  # fvcore 10.5 against the reference 10


def test_module_roles_sum_over_blocks() -> None:
    frame = pd.DataFrame({"component": ["attn_layers.layers.0.1.fn.to_q", "attn_layers.layers.2.1.fn.to_q", "to_logits"],
                          "v": [2, 3, 10]})
    out = tables.module_roles(frame, "v")
    assert out.to_dict("records") == [{"component": "to_logits", "v": 10, "modules": 1},
                                      {"component": "attn_layers.layers.*.1.fn.to_q", "v": 5, "modules": 2}]


def test_compare_bars_and_overlay() -> None:
    seed = cost_model.estimate(SEED, Workload())
    mha = cost_model.estimate(PRESETS["seed-mha"], Workload())
    long = tables.compare_table([("seed", seed), ("mha", mha)])
    fig = charts.compare_bars(long, metric="num_params", title="Parameters (count)", y_title="parameters")
    assert list(fig.data[0].x) == ["seed", "mha"] and list(fig.data[0].y) == [seed["num_params"], mha["num_params"]]
    frame = pd.DataFrame({"n": [1, 2, 1, 2], "y": [2**30, 2**31, 2**31, 2**32], "config": ["a", "a", "b", "b"]})
    fig = charts.overlay_lines(frame, x="n", y="y", series="config", title="t", x_title="x", y_title=charts.GIB_AXIS,
                               scale=float(2**30))
    assert [list(t.y) for t in fig.data] == [[1.0, 2.0], [2.0, 4.0]] and fig.layout.xaxis.type == "log"


def test_params_bar_and_measured_vs_predicted() -> None:
    fig = charts.params_bar(tables.params_table(cost_model.estimate(SEED, Workload())))
    assert list(fig.data[0].x) == [10_240_000, 26_389_504] and "count" in fig.layout.title.text
    frame = pd.DataFrame({"seq_len_tokens": [128, 256], "phase": ["training", "training"],
                          "predicted_bytes": [2**30, 2**31], "measured_bytes": [2**30, 3 * 2**30]})
    fig = charts.measured_vs_predicted(frame, title="t")
    predicted, measured = fig.data
    assert list(predicted.y) == [1.0, 2.0] and list(measured.y) == [1.0, 3.0] and predicted.line.dash == "dash"
    assert charts.measured_vs_predicted(frame.iloc[0:0], title="t").layout.annotations[0].text.startswith("not measured")
