"""ProfileRecord: validation of status/measurement and an exact DataFrame round-trip."""

from __future__ import annotations

import pytest
from xtlens.core.config import PRESETS, Workload
from xtlens.profiling.results.records import (
    COLUMNS,
    ProfileRecord,
    base_fields,
    config_key,
    from_frame,
    records_from_json,
    records_to_json,
    rel_err,
    to_frame,
)

SEED = PRESETS["seed"]


def _rows() -> list[ProfileRecord]:
    wl = Workload(seq_len=8192, dtype="bfloat16")
    base = dict(config_name="seed", device="cpu", device_name="test cpu")
    return [
        ProfileRecord(**base_fields(SEED, wl, measurement="flops", phase="forward", **base),
                      predicted_flops=1_256_546_369_536, torch_counter_flops=1_256_546_369_536, flops_rel_err=0.0),
        ProfileRecord(**base_fields(SEED, wl, measurement="memory", phase="train_step", **base), component="activations",
                      predicted_bytes=2**34 + 3, measured_bytes=None, status="oom", error="CUDA out of memory"),
        ProfileRecord(**base_fields(SEED, wl, measurement="latency", phase="forward", **base), latency_min_ms=0.1,
                      latency_median_ms=1 / 3, latency_max_ms=2.5, repeats=5, warmup=1, sdpa_backend="math"),
    ]


def test_frame_round_trip_is_exact_including_big_ints_and_missing_values():
    rows = _rows()
    frame = to_frame(rows)
    assert list(frame.columns) == list(COLUMNS)
    assert frame.loc[0, "predicted_flops"] == 1_256_546_369_536
    assert frame["measured_bytes"].isna().tolist() == [True, True, True]
    assert from_frame(frame) == rows
    assert records_from_json(records_to_json(rows)) == rows


def test_rows_share_a_stable_config_key():
    rows = _rows()
    assert {r.config_key for r in rows} == {config_key(SEED)}
    assert config_key(SEED) != config_key(SEED.replace(depth=7))
    assert config_key(SEED.to_json()) == config_key(SEED)  # the JSON text of an unvalidated grid point keys alike
    assert rows[0].config == SEED


def test_invalid_status_and_measurement_are_rejected():
    base = base_fields(SEED, Workload(), measurement="latency", phase="forward", device="cpu", device_name="x")
    with pytest.raises(ValueError, match="status"):
        ProfileRecord(**base, status="fine")
    with pytest.raises(ValueError, match="measurement"):
        ProfileRecord(**{**base, "measurement": "vibes"})


def test_rel_err():
    assert rel_err(110, 100) == pytest.approx(0.1)
    assert rel_err(None, 100) is None and rel_err(1, 0) is None


def test_integers_beyond_2_pow_53_survive_the_frame():
    row = _rows()[0]
    big = ProfileRecord(**{**row.to_dict(), "predicted_flops": 2**62 + 1, "torch_counter_flops": 2**53 + 1})
    frame = to_frame([big])
    assert int(frame.loc[0, "predicted_flops"]) == 2**62 + 1
    assert from_frame(frame) == [big]
    assert from_frame(to_frame(frame)) == [big]  # a frame in, the same frame out


def test_estimate_records_are_the_predictions_as_rows():
    from xtlens.core import cost_model
    from xtlens.core.config import PRESETS, Workload
    from xtlens.profiling.results.records import estimate_records, from_frame, to_frame

    cfg, wl = PRESETS["seed"], Workload(seq_len=8192, batch=2)
    rows = estimate_records(cfg, wl, config_name="seed")
    est = cost_model.estimate(cfg, wl)
    assert {r.measurement for r in rows} == {"estimate"} and {r.device for r in rows} == {"closed form"}
    for r in rows:
        value = r.predicted_params if r.predicted_params is not None else (
            r.predicted_flops if r.predicted_flops is not None else r.predicted_bytes)
        assert value == est[r.quantity]
    by = {r.quantity: r for r in rows}
    assert (by["num_params"].phase, by["num_params"].component, by["num_params"].predicted_params) == (
        "model", "total", 36_629_504)
    assert by["train_step_flops_flash_recompute"].method == "fused_backward"
    assert from_frame(to_frame(rows)) == rows  # exact round trip through the canonical frame


def test_tables_without_the_later_columns_still_read():
    import pandas as pd
    from xtlens.profiling.results.records import LATER_COLUMNS, to_frame

    frame = to_frame(_rows())
    old = frame.drop(columns=list(LATER_COLUMNS))
    back = to_frame(old)
    assert list(back.columns) == list(frame.columns)
    pd.testing.assert_frame_equal(back, frame)
