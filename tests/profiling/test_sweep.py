"""Sweeps: plans, config grids, OOM/error rows, progress and the on-disk cache (with injected measurements)."""

from __future__ import annotations

import json

import pytest
from xtlens.core.config import PRESETS, ConfigError, ModelConfig, Workload
from xtlens.profiling.results.records import ProfileRecord, base_fields, records_to_json
from xtlens.profiling.results.store import open_store
from xtlens.profiling.run.device import resolve as resolve_device_name
from xtlens.profiling.run.device import versions
from xtlens.profiling.run.plan import (
    DEFAULT_SEQ_LENS,
    SweepOptions,
    config_grid,
    plan_sweep,
    seq_len_workloads,
    workload_grid,
)
from xtlens.profiling.run.sweep import _measure_id, cache_path, cache_root, clear_cache, run_sweep

SEED = PRESETS["seed"]
TINY = ModelConfig(num_tokens=64, max_seq_len=256, dim=32, depth=1, heads=2, attn_dim_head=16)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XTLENS_CACHE_DIR", str(tmp_path / "cache"))


class FakeMeasure:
    """Returns one row per call with predicted_flops = 1000 * tokens; OOM from ``oom_from`` tokens on."""

    def __init__(self, *, oom_from: int | None = None, fail_on: int | None = None):
        self.calls: list[tuple[str, int, int]] = []
        self.oom_from = oom_from
        self.fail_on = fail_on

    def __call__(self, what, cfg, wl, *, device, options, config_name, progress):
        self.calls.append((what, wl.batch, wl.seq_len))
        if progress is not None:
            progress(0.5, "half way")
        if self.fail_on == wl.seq_len:
            raise ValueError("shape mismatch in fake")
        if self.oom_from is not None and wl.tokens >= self.oom_from:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)\nmore text")
        fields = base_fields(cfg, wl, config_name=config_name, measurement=what, phase="forward", device=device,
                             device_name="fake device")
        return [ProfileRecord(**fields, predicted_flops=1000 * wl.tokens, repeats=options.repeats)]


def test_default_workloads_and_grid() -> None:
    assert DEFAULT_SEQ_LENS == (128, 256, 512, 1024, 2048, 4096, 8192)
    assert [w.seq_len for w in seq_len_workloads()] == list(DEFAULT_SEQ_LENS)
    grid = workload_grid([256, 128], [2, 1], dtype="bfloat16")
    assert [(w.batch, w.seq_len, w.dtype) for w in grid] == [(1, 128, "bfloat16"), (1, 256, "bfloat16"),
                                                            (2, 128, "bfloat16"), (2, 256, "bfloat16")]


def test_config_grid_skips_invalid_combinations_with_the_message() -> None:
    grid = config_grid(SEED, dim=[256, 512], heads=[2, 8])  # seed has alibi_num_heads=4: heads=2 is invalid
    assert [name for name, _ in grid.configs] == ["dim=256 heads=8", "dim=512 heads=8"]
    assert [cfg.dim for _, cfg in grid.configs] == [256, 512]
    assert len(grid.skipped) == 2
    name, tried, message = grid.skipped[0]
    assert name == "dim=256 heads=2" and tried["heads"] == 2 and tried["dim"] == 256
    assert "alibi_num_heads = 4" in message and "from 1 to 2" in message
    with pytest.raises(ConfigError, match="widht"):
        config_grid(SEED, widht=[1])


def test_plan_order_and_what_validation() -> None:
    points = plan_sweep([("a", TINY)], seq_len_workloads([64, 32]), what="latency,flops")
    assert [(p.what, p.workload.seq_len) for p in points] == [("latency", 32), ("latency", 64),
                                                              ("flops", 32), ("flops", 64)]
    with pytest.raises(ConfigError, match="what"):
        plan_sweep(TINY, seq_len_workloads([32]), what=["flops", "speed"])


def test_sweep_rows_progress_and_failures() -> None:
    fake = FakeMeasure(oom_from=128, fail_on=48)
    grid = config_grid(TINY, dim=[32, 64], heads=[2, 4])
    seen: list[tuple[float, str]] = []
    streamed: list[int] = []
    wls = seq_len_workloads([32, 48, 64, 128, 256, 512])  # 512 > max_seq_len = 256
    rows = run_sweep(grid, wls, what=["flops"], options=SweepOptions(device="cpu"),
                     progress=lambda f, m: seen.append((f, m)), measure=fake,
                     on_rows=lambda i, p, r: streamed.append(i))
    assert len(grid.configs) == 4
    by = {(r.config_name, r.seq_len_tokens): r for r in rows}
    assert len(rows) == 4 * 6 and streamed == list(range(24))
    ok = by[("dim=32 heads=2", 64)]
    assert ok.status == "ok" and ok.predicted_flops == 64_000 and ok.device == "cpu"
    err = by[("dim=32 heads=2", 48)]
    # one wording for every failure row (profiling.errors.failure_message): the type, what, where, the shape
    assert err.status == "error" and err.error.startswith("ValueError during the flops measurement on ")
    assert err.error.endswith("(batch 1 x 48 tokens in float32): shape mismatch in fake")
    oom = by[("dim=32 heads=2", 128)]
    assert oom.status == "oom" and oom.error.startswith("Out of memory on ")
    assert "Details: CUDA out of memory. Tried to allocate 2.00 GiB" in oom.error
    assert "more text" not in oom.error
    skipped = by[("dim=32 heads=2", 256)]
    assert skipped.status == "oom" and "seq_len=128 already ran out of memory" in skipped.error
    too_long = by[("dim=32 heads=2", 512)]
    assert too_long.status == "error" and "seq_len = 512" in too_long.error and "max_seq_len = 256" in too_long.error
    vers = versions()  # failure rows carry the same provenance as measured rows
    assert (oom.torch_version, oom.xtransformers_version) == (vers["torch"], vers["x-transformers"])
    # 256 was skipped and 512 rejected without calling the measurement
    assert ("flops", 1, 256) not in fake.calls[:6] and len(fake.calls) == 4 * 4
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and fractions[0] == 0.0
    assert any(m.endswith("half way") for _, m in seen)
    assert seen[-1][1] == "done: 24 point(s), 16 failed row(s)"
    assert sum(r.status == "ok" for r in rows) == 8


def test_invalid_grid_combinations_become_error_rows() -> None:
    grid = config_grid(SEED, heads=[2])
    rows = run_sweep(grid, seq_len_workloads([128]), what=["flops", "memory"], options=SweepOptions(device="cpu"),
                     measure=FakeMeasure())
    assert [(r.measurement, r.status) for r in rows] == [("flops", "error"), ("memory", "error")]
    assert "alibi_num_heads = 4" in rows[0].error
    assert json.loads(rows[0].config_json)["heads"] == 2 and rows[0].config_name == "heads=2"


def test_results_are_cached_in_the_store(tmp_path) -> None:
    fake = FakeMeasure(oom_from=200)
    opts = SweepOptions(device="cpu", repeats=3)
    wls = seq_len_workloads([32, 64, 256])
    first = run_sweep([("tiny", TINY)], wls, what="latency", options=opts, measure=fake)
    assert len(fake.calls) == 3 and [r.status for r in first] == ["ok", "ok", "oom"]
    assert cache_root() == tmp_path / "cache" / "results"
    stored = open_store(tmp_path / "cache" / "results.sqlite").query()
    assert sorted(stored["status"]) == ["ok", "ok", "oom"]  # every measured row is stored, failures too
    assert set(stored["source"]) == {"local"} and stored["cache_key"].notna().all()
    again = run_sweep([("tiny", TINY)], wls, what="latency", options=opts, measure=fake)
    assert len(fake.calls) == 4  # only the OOM point ran again
    assert again[:2] == first[:2]  # same rows, timestamps included
    run_sweep([("tiny", TINY)], wls[:1], what="latency", options=SweepOptions(device="cpu", repeats=4), measure=fake)
    assert len(fake.calls) == 5  # other repeats: another key
    run_sweep([("tiny", TINY)], wls[:1], what="latency", options=SweepOptions(device="cpu", repeats=3, use_cache=False),
              measure=fake)
    assert len(fake.calls) == 6
    # a different measurement function never reads these entries
    other = FakeMeasure()
    run_sweep([("tiny", TINY)], wls[:1], what="latency", options=opts, measure=lambda *a, **k: other(*a, **k))
    assert len(other.calls) == 1
    assert clear_cache() == len(open_store().query())  # rows stay as history, none served as cache
    run_sweep([("tiny", TINY)], wls[:1], what="latency", options=opts, measure=fake)
    assert len(fake.calls) == 7


def test_the_old_json_cache_is_imported_once_and_left(tmp_path) -> None:
    fake = FakeMeasure()
    opts = SweepOptions(device="cpu", repeats=3)
    point = plan_sweep([("tiny", TINY)], seq_len_workloads([32]), "latency")[0]
    row = fake("latency", TINY, point.workload, device="cpu", options=opts, config_name="tiny", progress=None)
    old = cache_path(point, *resolve_device_name("cpu"), opts, _measure_id(fake))
    old.parent.mkdir(parents=True)
    old.write_text(records_to_json(row))
    fake.calls.clear()
    rows = run_sweep([("tiny", TINY)], [point.workload], what="latency", options=opts, measure=fake)
    assert fake.calls == [] and rows == row  # served from the imported entry
    assert old.exists()  # left in place
    store = open_store()
    assert list(store.query()["source"]) == ["json-cache"]
    assert store.import_json_cache(cache_root()) == 0  # once


def test_workload_validation_message() -> None:
    with pytest.raises(ConfigError, match="batch"):
        Workload(batch=0)
    with pytest.raises(ConfigError, match="repeats"):
        SweepOptions(repeats=0)


def test_real_flops_sweep_matches_the_cost_model() -> None:
    from xtlens.core.cost_model import flop_counts

    opts = SweepOptions(device="cpu", phases=("forward", "train_step", "decode"))  # decode: not a FLOP phase
    rows = run_sweep([("tiny", TINY)], seq_len_workloads([16, 32]), what="flops", options=opts)
    assert [(r.seq_len_tokens, r.phase, r.status) for r in rows] == [
        (16, "forward", "ok"), (16, "train_step", "ok"), (32, "forward", "ok"), (32, "train_step", "ok")]
    fwd = rows[2]
    expected = flop_counts(TINY, Workload(seq_len=32)).fwd_flops
    assert fwd.predicted_flops == expected == fwd.torch_counter_flops
    assert fwd.fvcore_flops == 2 * fwd.fvcore_macs and fwd.fvcore_flops > expected  # fvcore adds layer norms
    assert fwd.flops_rel_err == (fwd.fvcore_flops - expected) / expected
    assert fwd.device == "cpu" and fwd.torch_version and fwd.xtransformers_version == "2.31.10"
    assert rows[3].predicted_flops == flop_counts(TINY, Workload(seq_len=32)).train_step_flops
    assert rows[3].torch_counter_flops > 0 and rows[3].fvcore_flops is None


def test_real_memory_and_latency_points() -> None:
    from xtlens.core.cost_model import estimate

    opts = SweepOptions(device="cpu", phases=("inference", "forward"), warmup=1, repeats=2, use_cache=False)
    rows = run_sweep([("tiny", TINY)], seq_len_workloads([32]), what=["memory", "latency"], options=opts)
    assert all(r.status == "ok" for r in rows), [r.error for r in rows]
    assert {r.phase for r in rows if r.measurement == "memory"} == {"inference"}
    weights = next(r for r in rows if r.measurement == "memory" and r.component == "weights")
    assert weights.measured_bytes == weights.predicted_bytes == estimate(TINY, Workload(seq_len=32))["weights_bytes"]
    (lat,) = [r for r in rows if r.measurement == "latency"]
    assert lat.phase == "forward" and lat.repeats == 2 and lat.warmup == 1
    assert 0 < lat.latency_min_ms <= lat.latency_median_ms <= lat.latency_max_ms
