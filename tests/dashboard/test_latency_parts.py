"""dashboard.latency_parts (frames) and dashboard.charts.latency (figures): the breakdown, what-if and roofline sections."""

from __future__ import annotations

import pytest
from xtlens.core.config import PRESETS, Workload
from xtlens.core.hardware import hardware_preset
from xtlens.core.roofline import part_costs
from xtlens.dashboard import latency_parts as lp
from xtlens.dashboard.charts import latency as latency_charts
from xtlens.profiling.results.export import as_frame
from xtlens.profiling.results.records import ProfileRecord, base_fields

SEED = PRESETS["seed"]
WL = Workload(seq_len=1024, dtype="bfloat16")
A100 = hardware_preset("a100")


def _rows(hw):
    base = base_fields(SEED, WL, config_name="current", measurement="breakdown", phase="forward", device="cuda",
                       device_name="NVIDIA A100-SXM4-80GB")
    costs = part_costs(SEED, WL)
    rows = [ProfileRecord(**base, component="total", latency_median_ms=10.0, predicted_latency_ms=2.0)]
    for c in costs:
        if c.bytes:
            rows.append(ProfileRecord(**base, component=c.component, latency_median_ms=0.5, predicted_flops=c.flops,
                                      bytes_moved=c.bytes, predicted_latency_ms=1e3 * c.time_s(hw, "bfloat16"),
                                      method=f"{c.component}; x"))
    measured = 0.5 * (len(rows) - 1)
    rows.append(ProfileRecord(**base, component="remainder", latency_median_ms=10.0 - measured))
    return as_frame(rows)


def test_the_ceilings_a_measurement_used_are_recovered_exactly():
    hw = lp.ceilings_of(_rows(A100), "forward")
    assert hw.peak("bfloat16") == pytest.approx(A100.peak("bfloat16"))
    assert hw.mem_bandwidth_bytes_per_s == pytest.approx(A100.mem_bandwidth_bytes_per_s)
    assert "NVIDIA A100" in hw.name
    assert lp.ceilings_of(_rows(A100), "train_step") is None


def test_breakdown_table_shares_and_prediction_ratio():
    frame = _rows(A100)
    table = lp.breakdown_table(frame, "forward")
    assert table["share_%"].sum() == pytest.approx(100)
    qkv = table[table["part"] == "qkv_proj"].iloc[0]
    assert qkv["measured_over_predicted"] == pytest.approx(qkv["measured_ms"] / qkv["predicted_ms"])
    assert list(table["part"])[-1] == "remainder"
    fig = latency_charts.breakdown_stacked(table, title="t")
    assert fig.layout.barmode == "stack" and "ALiBi bias construction" in [t.name for t in fig.data]
    pvm = lp.predicted_vs_measured(frame)
    assert pvm.loc[0, "measured_over_predicted"] == pytest.approx(5.0)


def test_roofline_points_and_chart():
    pts = lp.roofline_points(SEED, WL, A100)
    alibi = pts[pts["part"] == "alibi_bias"].iloc[0]
    assert alibi["flops"] == 0 and alibi["bound"] == "memory"
    logits = pts[pts["part"] == "logits"].iloc[0]
    assert logits["attainable_flops_per_s"] == pytest.approx(
        min(A100.peak("bfloat16"), logits["intensity_flops_per_byte"] * A100.mem_bandwidth_bytes_per_s))
    fig = latency_charts.roofline_chart(pts, A100, "bfloat16", title="r")
    assert fig.layout.xaxis.type == "log" and fig.data[0].name == "A100 roof"
    assert max(fig.data[0].y) == pytest.approx(A100.peak("bfloat16"))
