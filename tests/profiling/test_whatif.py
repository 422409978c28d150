"""profiling.measure.whatif: FlexAttention with ALiBi as a score_mod gives the as-built logits; the implementations
a CPU cannot run say so in their rows; the CUDA-only rules checked as logic."""

from __future__ import annotations

import pytest
import torch
from xtlens.core.config import PRESETS, ConfigError, Workload
from xtlens.profiling.measure import whatif as pwi

TINY_SEED = PRESETS["seed"].replace(num_tokens=97, max_seq_len=64, dim=32, depth=2, attn_dim_head=16)
WL = Workload(batch=2, seq_len=24)
CONFIGS = {
    "seed flags": TINY_SEED,  # ALiBi on 4 of 8 heads, xpos rotary, one K/V head, deepnorm, token shift
    "no ALiBi": TINY_SEED.replace(alibi_pos_bias=False, alibi_num_heads=None),
    "ALiBi on every head": TINY_SEED.replace(alibi_num_heads=None),
    "ALiBi without rotary": TINY_SEED.replace(rotary_xpos=False),
    "2 K/V heads": TINY_SEED.replace(attn_one_kv_head=False, attn_kv_heads=2),
    "8 K/V heads": TINY_SEED.replace(attn_one_kv_head=False),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_flex_gives_the_as_built_logits(name):
    cfg = CONFIGS[name]
    rows = pwi.measure_whatif(cfg, WL, implementations=("flex",), phases=("forward",), warmup=0, repeats=1)
    by = {r.component: r for r in rows}
    assert by["asbuilt"].status == "ok" and by["asbuilt"].logits_rel_err == 0 and by["asbuilt"].speedup_vs_asbuilt == 1
    flex = by["flex"]
    assert flex.status == "ok", flex.error
    assert flex.logits_rel_err < 1e-5
    assert flex.measurement == "whatif" and pwi.WHATIF_LABEL in flex.method
    assert flex.speedup_vs_asbuilt == pytest.approx(by["asbuilt"].latency_median_ms / flex.latency_median_ms)


def test_flex_replaces_the_dense_bias_on_that_instance_only():
    from xtlens.core.builder import build_model

    model = build_model(TINY_SEED).model
    other = build_model(TINY_SEED).model
    slopes = pwi.alibi_slopes(TINY_SEED, model)
    assert slopes.shape == (8,) and (slopes[4:] == 0).all() and (slopes[:4] > 0).all()
    assert pwi.install_flex_attention(model, TINY_SEED, compiled=False) == TINY_SEED.depth
    assert model.attn_layers.rel_pos is None and other.attn_layers.rel_pos is not None
    assert "forward" in model.attn_layers.layers[0][1].fn.attend.__dict__
    assert "forward" not in other.attn_layers.layers[0][1].fn.attend.__dict__


def test_a_wrong_kernel_fails_the_same_model_check(monkeypatch):
    """Proof that the check can fail: flex without the ALiBi slopes is another model."""
    real = pwi.alibi_slopes
    monkeypatch.setattr(pwi, "alibi_slopes", lambda cfg, model: None if real(cfg, model) is None else
                        real(cfg, model) * 0)
    rows = pwi.measure_whatif(TINY_SEED, WL, implementations=("flex",), phases=("forward",), warmup=0, repeats=1)
    flex = next(r for r in rows if r.component == "flex")
    assert flex.status == "error" and "failed the same-model check" in flex.error and flex.logits_rel_err > 1e-3


def test_rows_that_cannot_run_on_a_cpu_say_why():
    rows = pwi.measure_whatif(TINY_SEED, WL, implementations=("flex", "cudnn", "cudagraphs"),
                              phases=("forward", "train_step"), warmup=0, repeats=1)
    by = {(r.phase, r.component): r for r in rows}
    if torch.cuda.is_available():
        pytest.skip("checks the CPU rows")
    for impl in ("cudnn", "cudagraphs"):
        assert by[("forward", impl)].status == "error" and "CUDA-only" in by[("forward", impl)].error
    assert by[("train_step", "flex")].status == "error" and "no backward on the CPU" in by[("train_step", "flex")].error
    assert by[("train_step", "asbuilt")].status == "ok"


def test_decode_for_the_seed_is_a_full_forward_per_token():
    rows = pwi.measure_whatif(TINY_SEED, WL, implementations=("flex",), phases=("decode",), warmup=0, repeats=1)
    by = {r.component: r for r in rows}
    assert by["asbuilt"].status == "ok" and "uncached" in by["asbuilt"].method
    assert by["asbuilt"].tokens_per_s == pytest.approx(WL.batch / (by["asbuilt"].latency_median_ms / 1e3))
    # flex decodes with the cache; x-transformers' cache path ignores the token shift, so the logits differ
    # from the full forward and the row says why
    assert by["flex"].status == "error" and "cached step" in by["flex"].method
    assert "does not carry the token shift" in by["flex"].error
    no_shift = TINY_SEED.replace(shift_tokens=0)
    rows = pwi.measure_whatif(no_shift, WL, implementations=("flex",), phases=("decode",), warmup=0, repeats=1)
    flex = next(r for r in rows if r.component == "flex")
    assert flex.status == "ok" and flex.logits_rel_err < 1e-5  # cached flex = full forward of x-transformers


def test_cuda_rules_and_names():
    cfg = TINY_SEED
    assert pwi.unsupported_reason("cudnn", "forward", device="cuda", cfg=cfg) is None
    assert pwi.unsupported_reason("cudagraphs", "forward", device="cuda:0", cfg=cfg) is None
    assert "only the forward" in pwi.unsupported_reason("cudagraphs", "train_step", device="cuda", cfg=cfg)
    assert pwi.unsupported_reason("flex", "train_step", device="cuda", cfg=cfg) is None
    assert "einsum" in pwi.unsupported_reason("cudnn", "forward", device="cuda", cfg=cfg.replace(attn_flash=False))
    assert pwi.check_implementations("flex,compile") == ("asbuilt", "flex", "compile")
    with pytest.raises(ConfigError, match="attention"):
        pwi.check_implementations("flash3")
    assert pwi.logits_rel_err(torch.ones(3), torch.ones(3)) == 0
    assert pwi.logits_rel_err(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])) == pytest.approx(2**0.5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_whatif_implementations():
    wl = Workload(batch=1, seq_len=256, dtype="bfloat16")
    rows = pwi.measure_whatif(TINY_SEED.replace(max_seq_len=256), wl, device="cuda", implementations=("flex", "cudnn", "cudagraphs"),
                              phases=("forward", "train_step"), warmup=1, repeats=2)
    by = {(r.phase, r.component): r for r in rows}
    for impl in ("asbuilt", "flex", "cudnn", "cudagraphs"):
        row = by[("forward", impl)]
        assert row.status == "ok", (impl, row.error)
        assert row.logits_rel_err < pwi.TOLERANCE["bfloat16"]
    assert by[("train_step", "flex")].status == "ok"  # FlexAttention has a backward on CUDA
    assert by[("train_step", "cudagraphs")].status == "error" and "only the forward" in by[("train_step", "cudagraphs")].error


def test_compiled_flex_is_allowed_a_graph_per_shape_of_a_whole_table():
    """dynamo runs a function eagerly once it has compiled 8 graphs of it (its default limit); a what-if table
    compiles FlexAttention once per length, phase and configuration, so the what-if raises the limit (on an H200
    the 1024-token rows measured after 8 compiled shapes ran eager, 3.5x slow)."""
    import torch._dynamo

    name = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    before = getattr(torch._dynamo.config, name)
    try:
        setattr(torch._dynamo.config, name, 8)
        pwi._allow_recompiles()
        assert getattr(torch._dynamo.config, name) >= 2 * 4 * 3 * 2  # 2 configs x 4 lengths x 3 phases x 2 dtypes
    finally:
        setattr(torch._dynamo.config, name, before)
