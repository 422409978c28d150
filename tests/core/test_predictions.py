"""core.cost_model.predictions: every closed-form quantity as a row in the vocabulary of the measured rows.

The rows are checked against the dataclasses they come from (every field, once), the stacked memory parts
against the totals, the shared FLOP formulas against the fields they replace, and the join with measured
memory rows against the predicted column the measurement wrote itself (two independent paths)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
from xtlens.core import cost_model, units
from xtlens.core.config import PRESETS, Workload

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from options_strategies import option_grid  # noqa: E402

LENGTHS = (1, 64, 1024, 8192)
CASES = [(name, n) for name in PRESETS for n in LENGTHS if n <= PRESETS[name].max_seq_len]


@pytest.mark.parametrize(("name", "n"), CASES)
def test_rows_cover_every_field_once_and_estimate_is_their_dict(name: str, n: int) -> None:
    cfg, wl = PRESETS[name], Workload(seq_len=n, batch=2)
    rows = cost_model.predictions(cfg, wl)
    quantities = [r.quantity for r in rows]
    assert len(quantities) == len(set(quantities))
    est = cost_model.estimate(cfg, wl)
    assert est == {r.quantity: r.value for r in rows}
    scalars = {}
    for part in (cost_model.param_counts(cfg), cost_model.flop_counts(cfg, wl), cost_model.memory_estimate(cfg, wl)):
        scalars.update({f.name: getattr(part, f.name) for f in dataclasses.fields(part)
                        if not isinstance(getattr(part, f.name), dict)})
    assert {k: est[k] for k in scalars} == scalars
    for r in rows:
        assert r.phase in cost_model.PHASES and r.unit in (
            "params", "flops", "bytes", "flops_per_token", "bytes_per_token", "tokens", "count")
        if r.unit in ("params", "flops", "bytes"):  # the unit the name carries is the row's unit
            assert units.unit_of(r.quantity) == r.unit, r


@pytest.mark.parametrize(("name", "n"), CASES)
def test_memory_stack_parts_sum_to_each_phase_total(name: str, n: int) -> None:
    cfg, wl = PRESETS[name], Workload(seq_len=n)
    rows = cost_model.predictions(cfg, wl)
    mem = cost_model.memory_estimate(cfg, wl)
    totals = {"inference": mem.inference_total_bytes, "train_step": mem.training_total_bytes}
    for phase, parts in cost_model.MEMORY_STACK.items():
        values = [cost_model.predicted(rows, phase=phase, component=c, unit="bytes") for c in parts]
        assert all(v is not None and v >= 0 for v in values), (phase, dict(zip(parts, values, strict=True)))
        assert sum(values) == totals[phase]


def test_predicted_reads_the_vocabulary() -> None:
    cfg, wl = PRESETS["seed"], Workload(seq_len=8192)
    rows = cost_model.predictions(cfg, wl)
    fc, mem = cost_model.flop_counts(cfg, wl), cost_model.memory_estimate(cfg, wl)
    assert cost_model.predicted(rows, phase="forward", component="total", unit="flops", variant="full_square") \
        == fc.fwd_flops == 1_256_546_369_536
    assert cost_model.predicted(rows, phase="forward", component="total", unit="flops", variant="causal") \
        == fc.fwd_flops_causal
    assert cost_model.predicted(rows, phase="inference", component="kv_cache", unit="bytes") == mem.kv_cache_bytes
    # 2 x depth x kv_heads x dh x 4 bytes per token: 2 * 6 * 1 * 64 * 4
    assert cost_model.predicted(rows, phase="inference", component="kv_cache", unit="bytes_per_token") == 3072
    # a measured component that is the total measured another way reads the total
    assert cost_model.predicted(rows, phase="train_step", component="total_rss", unit="bytes") \
        == mem.training_total_bytes
    assert cost_model.predicted(rows, phase="train_step", component="weights", unit="bytes") == mem.weights_bytes
    assert cost_model.predicted(rows, phase="inference", component="no_such_part", unit="bytes") is None


@pytest.mark.parametrize("name", list(PRESETS))
def test_shared_flop_formulas_equal_the_fields_they_replace(name: str) -> None:
    cfg, wl = PRESETS[name], Workload(seq_len=min(512, PRESETS[name].max_seq_len), batch=3)
    fc = cost_model.flop_counts(cfg, wl)
    assert cost_model.train_step_flops(fc, fused_backward=False) == fc.train_step_flops
    assert cost_model.train_step_flops(fc, fused_backward=True) == fc.train_step_flops_flash_recompute
    assert cost_model.train_step_flops(fc, fused_backward=False, causal=True) == fc.train_step_flops_causal
    # decode at a 0-token context is the forward of one token per sequence
    one = cost_model.flop_counts(cfg, Workload(seq_len=1, batch=3))
    assert cost_model.decode_flops(cfg, batch=3, context_tokens=0) == one.fwd_flops


def test_one_fused_backward_rule() -> None:
    seed, einsum = PRESETS["seed"], PRESETS["seed"].replace(attn_flash=False)
    assert cost_model.fused_sdpa_backward(seed) is True and cost_model.fused_sdpa_backward(einsum) is False
    for backend in ("flash", "efficient", "cudnn", "cpu_flash"):
        assert cost_model.fused_sdpa_backward(seed, backend) is True
    for backend in ("math", "x-transformers einsum (no SDPA)"):
        assert cost_model.fused_sdpa_backward(seed, backend) is False


def test_every_field_needs_a_place_in_the_vocabulary() -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Extended(cost_model.ParamCounts):
        new_widget_params: int = 7

    pc = cost_model.param_counts(PRESETS["seed"])
    extended = Extended(**dataclasses.asdict(pc))
    with pytest.raises(KeyError, match="new_widget_params has no"):
        cost_model.rows_of(extended, cost_model.PARAM_ROWS)


# the seed with each registered option switched on (core.options.enable fixes what conflicts with the seed)
OPTIONS = option_grid(PRESETS["seed"])


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("n", [64, 2048])
def test_every_modelled_option_emits_rows_whose_stack_sums(option: str, n: int) -> None:
    cfg = OPTIONS[option]
    wl = Workload(seq_len=n, batch=2)
    rows = cost_model.predictions(cfg, wl)
    mem = cost_model.memory_estimate(cfg, wl)
    totals = {"inference": mem.inference_total_bytes, "train_step": mem.training_total_bytes}
    for phase, parts in cost_model.MEMORY_STACK.items():
        values = [cost_model.predicted(rows, phase=phase, component=c, unit="bytes") for c in parts]
        assert all(v >= 0 for v in values) and sum(values) == totals[phase]
    assert cost_model.estimate(cfg, wl)["num_params"] == cost_model.param_counts(cfg).num_params
