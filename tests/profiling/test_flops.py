"""profiling.measure.flops: torch FlopCounterMode (fake tensors) and fvcore against the closed form."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from xtlens.core import cost_model
from xtlens.core.config import PRESETS, ModelConfig, Workload
from xtlens.profiling.measure import flops

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from options_strategies import model_configs, option_grid  # noqa: E402

SEED = PRESETS["seed"]
SMALL_SEED = SEED.replace(num_tokens=512, max_seq_len=256, dim=128, depth=2)  # heads 8, dh 64 like the seed


def test_seed_fake_count_at_8192_is_exact():
    wl = Workload(seq_len=8192)
    count = flops.torch_flop_count(SEED, wl)
    closed = cost_model.flop_counts(SEED, wl)
    assert count.total_flops == closed.fwd_flops == 1_256_546_369_536
    assert count.by_operator_flops["_scaled_dot_product_flash_attention_for_cpu"] == closed.attn_flops
    assert count.attention_flops == closed.attn_flops
    assert count.by_operator_flops["mm"] + count.by_operator_flops["addmm"] == (
        closed.proj_flops + closed.ff_flops + closed.logits_flops)
    assert count.by_module_flops["TransformerWrapper.to_logits"] == closed.logits_flops
    assert count.by_module_flops["TransformerWrapper.attn_layers.layers.0.1.fn.to_q"] == closed.q_proj_flops // SEED.depth


def test_bare_flop_counter_misses_cpu_sdpa():
    """Without SDPA_FLOP_FORMULAS torch counts the CPU flash SDPA as 0: the gap the formulas close."""
    wl = Workload(seq_len=64)
    closed = cost_model.flop_counts(SEED, wl)
    with flops.fake_model(SEED) as (model, _):
        ids = torch.randint(0, SEED.num_tokens, (1, 64))
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(ids)
    registered = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu in torch.utils.flop_counter.flop_registry
    expected = closed.fwd_flops if registered else closed.fwd_flops - closed.attn_flops
    assert counter.get_total_flops() == expected


class _Attn(nn.Module):
    def forward(self, q, k, v, mask=None, is_causal=False):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)


_SDPA_CASES = {
    "plain": dict(),
    "causal": dict(is_causal=True),
    "float_mask": dict(mask="float"),
    "bool_mask": dict(mask="bool"),
}


def _sdpa_inputs(case: str, b=2, h=3, nq=5, nk=7, d=8, dv=8):
    q, k, v = torch.randn(b, h, nq, d), torch.randn(b, h, nk, d), torch.randn(b, h, nk, dv)
    kind = _SDPA_CASES[case].get("mask")
    mask = None
    if kind == "float":
        mask = torch.randn(b, h, nq, nk)
    elif kind == "bool":
        mask = torch.rand(b, 1, nq, nk) > 0.3
        mask[..., 0] = True
    causal = _SDPA_CASES[case].get("is_causal", False)
    if causal:
        k, v = k[:, :, :nq], v[:, :, :nq]
    expected_fwd = 2 * b * h * nq * k.shape[2] * (d + dv)
    return (q, k, v, mask, causal), expected_fwd


@pytest.mark.parametrize("case", list(_SDPA_CASES))
def test_sdpa_formula_on_tiny_model(case):
    (q, k, v, mask, causal), expected = _sdpa_inputs(case)
    for t in (q, k, v):
        t.requires_grad_(True)
    with FlopCounterMode(display=False, custom_mapping=flops.SDPA_FLOP_FORMULAS) as fwd_counter:
        out = _Attn()(q, k, v, mask, causal)
    # the CPU flash op ran (the one torch has no formula for), and our formula counted it
    assert {str(op) for op in fwd_counter.get_flop_counts()["Global"]} == {
        "aten._scaled_dot_product_flash_attention_for_cpu"}
    assert fwd_counter.get_total_flops() == expected
    with FlopCounterMode(display=False, custom_mapping=flops.SDPA_FLOP_FORMULAS) as bwd_counter:
        out.sum().backward()
    assert {str(op) for op in bwd_counter.get_flop_counts()["Global"]} == {
        "aten._scaled_dot_product_flash_attention_for_cpu_backward"}
    assert bwd_counter.get_total_flops() == expected * 5 // 2  # recomputes Q K^T: 5 matmuls


def test_sdpa_math_fallback_counts_the_same():
    """Different head widths for V send CPU SDPA to the math path (bmm), counted by torch itself."""
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 4)
    with FlopCounterMode(display=False, custom_mapping=flops.SDPA_FLOP_FORMULAS) as counter:
        _Attn()(q, k, v)
    assert counter.get_total_flops() == flops._sdpa_shapes_flops(q.shape, k.shape, v.shape) == 2 * 2 * 3 * 5 * 7 * 12


@pytest.mark.parametrize("case", list(_SDPA_CASES))
def test_fvcore_sdpa_handle_on_tiny_model(case):
    from fvcore.nn import FlopCountAnalysis

    (q, k, v, mask, causal), expected = _sdpa_inputs(case)

    class Wrapped(nn.Module):
        def forward(self, q, k, v):
            return _Attn()(q, k, v, mask, causal)

    analysis = FlopCountAnalysis(Wrapped(), (q, k, v))
    analysis.unsupported_ops_warnings(False)
    assert analysis.total() == 0 and "aten::scaled_dot_product_attention" in analysis.unsupported_ops()
    analysis = FlopCountAnalysis(Wrapped(), (q, k, v)).set_op_handle(**flops.FVCORE_EXTRA_HANDLES)
    analysis.unsupported_ops_warnings(False)
    assert 2 * analysis.total() == expected


def test_register_sdpa_flop_formulas_is_idempotent():
    flops.register_sdpa_flop_formulas()
    assert flops.register_sdpa_flop_formulas() == ()
    for op in flops.SDPA_FLOP_FORMULAS:
        assert op in torch.utils.flop_counter.flop_registry


def test_fvcore_small_seed_against_closed_form():
    wl = Workload(seq_len=64, batch=2)
    closed = cost_model.flop_counts(SMALL_SEED, wl)
    model = flops._build_real(SMALL_SEED)
    with_handle = flops.fvcore_flop_count(SMALL_SEED, wl, model=model)
    without = flops.fvcore_flop_count(SMALL_SEED, wl, model=model, with_sdpa_handle=False)
    # after the handle: matmul work exactly the closed form, total within 1% (layer norms, rotary einsum)
    assert 2 * with_handle.matmul_macs == closed.fwd_flops
    assert abs(with_handle.total_flops - closed.fwd_flops) / closed.fwd_flops < 0.01
    num_norms = 2 * SMALL_SEED.depth  # post-norm (DeepNorm): one LayerNorm per layer, no final norm
    layer_norm_macs = 4 * wl.tokens * SMALL_SEED.dim * num_norms  # fvcore: 4 per element without affine
    rotary_einsum_macs = wl.seq_len * (SMALL_SEED.rotary_dim // 2) // 2  # np.einsum_path count / 2
    assert with_handle.by_operator_macs["layer_norm"] == layer_norm_macs
    assert with_handle.by_operator_macs["einsum"] == rotary_einsum_macs
    assert with_handle.extra_macs == layer_norm_macs + rotary_einsum_macs
    assert "aten::scaled_dot_product_attention" not in with_handle.unsupported_ops
    assert with_handle.uncalled_modules  # fvcore's own report is returned, not hidden
    # without the handle attention is missing entirely
    assert "aten::scaled_dot_product_attention" in without.unsupported_ops
    assert 2 * without.matmul_macs == closed.fwd_flops - closed.attn_flops
    assert abs(without.total_flops - closed.fwd_flops) / closed.fwd_flops > 0.1
    # per module: the logits projection
    assert 2 * with_handle.by_module_macs["to_logits"] == closed.logits_flops


def test_fvcore_extrapolation_equals_direct_trace():
    wl = Workload(seq_len=96)
    model = flops._build_real(SMALL_SEED)
    direct = flops.fvcore_flop_count(SMALL_SEED, wl, model=model)
    extrapolated = flops.fvcore_flop_count_extrapolated(SMALL_SEED, wl, model=model)
    assert extrapolated.by_operator_macs == direct.by_operator_macs
    assert extrapolated.by_module_macs == {k: v for k, v in direct.by_module_macs.items()}
    assert extrapolated.method == "extrapolated" and extrapolated.probe_seq_lens == (8, 16, 24, 32)


def test_fvcore_extrapolated_seed_at_8192():
    wl = Workload(seq_len=8192)
    fv = flops.fvcore_flop_count_extrapolated(SEED, wl)
    closed = cost_model.flop_counts(SEED, wl).fwd_flops
    assert 2 * fv.matmul_macs == closed
    assert 0 < fv.total_flops - closed < 0.01 * closed


def test_extrapolated_counts_equal_direct_counts_at_a_held_out_length():
    """Both counters fitted from traces at 8, 16, 24 (checked at 32) tokens of the zero-weight model equal
    direct counts at 96 tokens: torch's under fake tensors, fvcore's on a traced seeded real model; every
    table (per operator, per module, fvcore's skipped calls and uncalled modules)."""
    wl = Workload(seq_len=96, batch=2)
    flops.flop_polynomials.cache_clear()
    torch_fit = flops.torch_flop_count_extrapolated(SMALL_SEED, wl)
    torch_direct = flops.torch_flop_count(SMALL_SEED, wl)
    assert torch_fit.total_flops == torch_direct.total_flops == cost_model.flop_counts(SMALL_SEED, wl).fwd_flops
    assert torch_fit.by_operator_flops == torch_direct.by_operator_flops
    assert torch_fit.by_module_flops == torch_direct.by_module_flops
    assert torch_fit.attention_flops == torch_direct.attention_flops > 0
    fv_fit = flops.fvcore_flop_count_extrapolated(SMALL_SEED, wl)
    fv_direct = flops.fvcore_flop_count(SMALL_SEED, wl)
    assert fv_fit.by_operator_macs == fv_direct.by_operator_macs
    assert fv_fit.by_module_macs == fv_direct.by_module_macs
    assert fv_fit.unsupported_ops == fv_direct.unsupported_ops and fv_fit.unsupported_ops
    assert fv_fit.uncalled_modules == fv_direct.uncalled_modules
    # one fit served both counters (the second call was a cache hit), and a second length costs no trace
    info = flops.flop_polynomials.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    assert flops.fvcore_flop_count_extrapolated(SMALL_SEED, Workload(seq_len=200, batch=2)).total_macs == (
        flops.fvcore_flop_count(SMALL_SEED, Workload(seq_len=200, batch=2)).total_macs)
    assert flops.flop_polynomials.cache_info().misses == 1
    with pytest.raises(ValueError, match="batch 2, not 1"):
        flops.flop_polynomials(SMALL_SEED, 2).torch_count(Workload(seq_len=96))
    # however spelled, the same configuration, batch and lengths are the same entry
    flops.cross_check(SMALL_SEED, Workload(seq_len=160, batch=2), fvcore_method="extrapolated")
    flops.flop_polynomials(SMALL_SEED, batch=2, probe_seq_lens=[8, 16, 24])
    assert flops.flop_polynomials.cache_info().misses == 1


def test_counting_model_has_the_real_shapes_and_buffers_and_zero_weights():
    real = flops._build_real(SMALL_SEED)
    zero = flops.counting_model(SMALL_SEED)
    real_params, zero_params = dict(real.named_parameters()), dict(zero.named_parameters())
    assert {k: p.shape for k, p in zero_params.items()} == {k: p.shape for k, p in real_params.items()}
    for name, buf in real.named_buffers():  # rotary frequencies, xpos scale, ALiBi slopes: computed, kept
        assert torch.equal(dict(zero.named_buffers())[name], buf), name
    drawn = [k for k, p in real_params.items() if p.dim() == 2]  # matrices are drawn at random
    assert drawn and all(not zero_params[k].any() for k in drawn)
    assert not zero.training


class _CubicModel(nn.Module):
    """(n, 1) @ (1, n) then (n, n) @ (n, n): n**2 + n**3 multiply-adds, which no quadratic fits."""

    def forward(self, ids):
        x = ids.float().transpose(0, 1) @ torch.ones(1, ids.shape[1])
        return x @ x


def test_fit_refuses_a_count_that_is_not_quadratic():
    # the quadratic through n = 8, 16, 24 misses n**3 by (n - 8)(n - 16)(n - 24): 24 * 16 * 8 = 3072 at n = 32
    # (torch's counter, checked first, counts 2 FLOPs per multiply-add)
    predicted, traced = 2 * (32**3 + 32**2 - 3072), 2 * (32**3 + 32**2)
    wl = Workload(seq_len=64)
    with pytest.raises(ValueError, match=rf"torch operator 'mm' is not quadratic.*predicted {predicted} at n=32, "
                                         rf"traced {traced}"):
        flops.torch_flop_count_extrapolated(SMALL_SEED, wl, model=_CubicModel())
    with pytest.raises(ValueError, match=r"torch operator 'mm' is not quadratic"):
        flops.fvcore_flop_count_extrapolated(SMALL_SEED, wl, model=_CubicModel())


def test_fvcore_einsum_estimates_are_refused_and_torch_still_extrapolates():
    """fvcore's einsum handle reports numpy's einsum_path estimate rounded to four digits (here the relative
    position bias): not a polynomial in n, so fvcore's extrapolation refuses, while torch's counter, exact,
    still extrapolates to a direct count."""
    cfg = _FLOP_BASE.replace(rel_pos_bias=True, attn_flash=False)
    wl = Workload(seq_len=40, batch=2)
    poly = flops.flop_polynomials(cfg, 2)
    assert poly.fvcore_error is not None and "'einsum' is not quadratic" in poly.fvcore_error
    with pytest.raises(ValueError, match="'einsum' is not quadratic"):
        flops.fvcore_flop_count_extrapolated(cfg, wl)
    fitted, direct = flops.torch_flop_count_extrapolated(cfg, wl), flops.torch_flop_count(cfg, wl)
    assert fitted.by_module_flops == direct.by_module_flops and fitted.by_operator_flops == direct.by_operator_flops
    assert fitted.total_flops == cost_model.flop_counts(cfg, wl).fwd_flops


def test_cross_check_small():
    check = flops.cross_check(SMALL_SEED, Workload(seq_len=48))
    assert check.fvcore_method == "trace"
    assert check.torch_counter_flops == check.closed_form_flops == check.fvcore_matmul_flops
    assert check.fvcore_flops == check.closed_form_flops + check.fvcore_extra_flops
    assert check.agree_within_1pct and check.max_rel_err == check.fvcore_rel_err > 0


@pytest.mark.parametrize("cfg", [SMALL_SEED, SMALL_SEED.replace(attn_flash=False)], ids=["flash", "einsum"])
def test_train_step_count(cfg):
    wl = Workload(seq_len=32, batch=2)
    closed = cost_model.flop_counts(cfg, wl)
    count = flops.torch_flop_count(cfg, wl, train_step=True)
    expected = closed.train_step_flops_flash_recompute if cfg.attn_flash else closed.train_step_flops
    assert count.total_flops == expected


def test_bfloat16_fake_count():
    wl = Workload(seq_len=128, dtype="bfloat16")
    assert flops.torch_flop_count(SMALL_SEED, wl).total_flops == cost_model.flop_counts(SMALL_SEED, wl).fwd_flops


# every modelled option on (core.options.enable: ``rel_pos_bias`` and ``residual_attn`` turn flash off), and
# combinations
COMBINATIONS: dict[str, dict[str, object]] = {
    "mem+alibi+flash": {"attn_num_mem_kv": 2, "alibi_pos_bias": True, "alibi_num_heads": 1},
    "streams+macaron+gate+glu": {"num_residual_streams": 2, "macaron": True, "attn_gate_values": True,
                                 "ff_glu": True, "attn_kv_heads": 1},
}
_FLOP_BASE = ModelConfig(num_tokens=50, max_seq_len=64, dim=16, depth=2, heads=2, attn_dim_head=8, attn_flash=True)
XT231_OPTIONS: dict[str, ModelConfig] = {**option_grid(_FLOP_BASE),
                                         **{k: _FLOP_BASE.replace(**kw) for k, kw in COMBINATIONS.items()}}


@pytest.mark.parametrize("option", list(XT231_OPTIONS))
@pytest.mark.parametrize("train_step", [False, True], ids=["forward", "train_step"])
def test_new_options_flops_exact(option, train_step):
    """FlopCounterMode on the real (fake-tensor) model equals the closed form with each option on."""
    cfg = XT231_OPTIONS[option]
    if train_step and cfg.layer_dropout:
        cfg = cfg.replace(layer_dropout=0.0)  # stochastic depth skips random layers: see the next test
    wl = Workload(seq_len=12, batch=2)
    closed = cost_model.flop_counts(cfg, wl)
    count = flops.torch_flop_count(cfg, wl, train_step=train_step).total_flops
    if not train_step:
        assert count == closed.fwd_flops
    else:
        # CPU SDPA with dropout_p > 0 (attn_dropout in training) runs the math path: bmm, no recompute
        recompute = cfg.attn_flash and not cfg.attn_dropout
        assert count == (closed.train_step_flops_flash_recompute if recompute else closed.train_step_flops)


def test_layer_dropout_skips_whole_layers_in_training():
    """The closed form assumes no layer is skipped; with layer_dropout=1 training skips every sub-layer
    (x_transformers.py:3646) and only the logits remain, while a forward in eval mode skips none."""
    cfg = _FLOP_BASE.replace(layer_dropout=1.0, attn_dropout=0.5, ff_dropout=0.5, emb_dropout=0.5)
    wl = Workload(seq_len=12, batch=2)
    closed = cost_model.flop_counts(cfg, wl)
    assert closed == cost_model.flop_counts(_FLOP_BASE, wl)  # dropouts change no closed-form count
    assert flops.torch_flop_count(cfg, wl, train_step=True).total_flops == 3 * closed.logits_flops
    assert flops.torch_flop_count(cfg, wl).total_flops == closed.fwd_flops


def test_new_options_flops_known_values():
    """By hand from the source: T = 24 tokens, d = 16, L = 2, h = 2, dh = 8, f = 64, n = 12, b = 2."""
    wl = Workload(seq_len=12, batch=2)
    base = cost_model.flop_counts(_FLOP_BASE, wl)

    def fc(**kw):
        return cost_model.flop_counts(_FLOP_BASE.replace(**kw), wl)

    T, d, L, h, dh, f, n, b = 24, 16, 2, 2, 8, 64, 12, 2
    assert fc(attn_gate_values=True).fwd_flops - base.fwd_flops == L * 2 * T * d * h * dh
    assert fc(attn_num_mem_kv=3).attn_flops == L * 2 * 2 * b * h * n * (n + 3) * dh
    assert fc(attn_num_mem_kv=3).attn_flops_causal == L * 2 * 2 * b * h * (n * (n + 1) // 2 + n * 3) * dh
    assert fc(macaron=True).ff_flops == 2 * base.ff_flops == 2 * L * 4 * T * d * f
    s = 3
    hyper = fc(num_residual_streams=s)
    assert hyper.hyper_connection_flops == 2 * L * (2 * T * s * d * (s + 1) + 2 * T * (s + 1) * s * d)
    assert hyper.fwd_flops - base.fwd_flops == hyper.hyper_connection_flops
    assert hyper.hyper_connection_mv_flops_uncounted == 2 * L * 2 * T * s * d
    for kw in ({"use_rmsnorm": True}, {"use_scalenorm": True}, {"ff_swish": True}, {"attn_qk_norm": True},
               {"ff_no_bias": True}, {"sandwich_norm": True}, {"pre_norm": False}, {"ff_dropout": 0.5}):
        assert fc(**kw) == base, kw


@st.composite
def _small_sizes(draw) -> dict[str, object]:
    return {"num_tokens": draw(st.integers(2, 100)), "max_seq_len": 64, "dim": draw(st.sampled_from([16, 24, 32])),
            "depth": draw(st.integers(1, 2)), "heads": draw(st.integers(1, 4)),
            "attn_dim_head": draw(st.sampled_from([8, 16])), "ff_mult": draw(st.sampled_from([1, 1.5, 4]))}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=model_configs(_small_sizes()), n=st.integers(2, 40), b=st.integers(1, 2))
def test_fake_count_matches_closed_form_hypothesis(cfg, n, b):
    """Every registered option drawn together (tests/options_strategies.py); a forward in eval mode."""
    wl = Workload(seq_len=n, batch=b)
    assert flops.torch_flop_count(cfg, wl).total_flops == cost_model.flop_counts(cfg, wl).fwd_flops


def test_fvcore_counts_hyper_connections_matrix_vector_products():
    """fvcore 0.1.5's matmul handle fails on hyper-connections' (b, n, s, d) @ (d,); ours counts it: the
    difference between fvcore with and without the (d,) products is exactly the closed form's
    ``hyper_connection_mv_flops_uncounted`` (which torch's counter, and so ``fwd_flops``, leaves out)."""
    from fvcore.nn.jit_handles import matmul_flop_jit

    cfg = _FLOP_BASE.replace(num_residual_streams=3)
    wl = Workload(seq_len=12, batch=2)
    closed = cost_model.flop_counts(cfg, wl)
    fv = flops.fvcore_flop_count(cfg, wl, model=flops._build_real(cfg))
    assert fv.by_operator_macs["matmul"] * 2 == closed.hyper_connection_flops // 2 + closed.hyper_connection_mv_flops_uncounted
    with pytest.raises(IndexError):  # fvcore's own handle on a 1-D right operand
        matmul_flop_jit([_FakeValue((2, 12, 3, 16)), _FakeValue((16,))], [_FakeValue((2, 12, 3))])
    assert flops.torch_flop_count(cfg, wl).total_flops == closed.fwd_flops


class _FakeValue:
    """Stands in for a TorchScript value in fvcore's handles (``type().sizes()``)."""

    def __init__(self, shape):
        self._shape = list(shape)

    def type(self):
        return self

    def sizes(self):
        return self._shape

    def isCompleteTensor(self):  # noqa: N802 (TorchScript's name)
        return True
