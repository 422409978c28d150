"""ProfileRecord: validation of status/measurement and an exact DataFrame round-trip."""

from __future__ import annotations

import pytest
from xtlens.core.config import PRESETS, Workload
from xtlens.profiling.records import (
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
