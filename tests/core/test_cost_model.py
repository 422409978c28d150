"""core.cost_model against the real x-transformers model: parameters (grid + hypothesis), KV cache and
ALiBi tensors captured from the model, and the torch-free import."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from x_transformers.x_transformers import AlibiPositionalBias
from xtlens.core import cost_model, options
from xtlens.core.builder import build_model, effective_kwargs
from xtlens.core.config import PRESETS, ModelConfig, Workload
from xtlens.core.tensors import param_tensors

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from options_strategies import OPTION_NAMES, model_configs  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SEED = PRESETS["seed"]
SMALL_SEED = SEED.replace(num_tokens=256, max_seq_len=64, dim=64, depth=2, heads=4, attn_dim_head=16)


def _meta_model(cfg: ModelConfig) -> torch.nn.Module:
    """The builder's exact constructor call, on the meta device (parameter shapes only, instant)."""
    from x_transformers import Decoder, TransformerWrapper

    kw = effective_kwargs(cfg)
    with torch.device("meta"):
        return TransformerWrapper(**kw.wrapper, attn_layers=Decoder(**kw.decoder))


# ParamCounts' parts by the role ``core.tensors.param_tensors`` gives each tensor of the real model
_PART_OF_ROLE = {"token_embedding": "token", "abs_pos_embedding": "abs_pos", "attention": "attention",
                 "attn_gate": "gate", "mem_kv": "mem_kv", "feedforward": "feedforward", "norm": "norm",
                 "residual_scale": "residual", "logits": "logits", "rel_pos_bias": "rel_pos",
                 "hyper_connection": "hyper"}


def _measured_parts(cfg: ModelConfig, model: torch.nn.Module) -> dict[str, int]:
    role_of = {t.name: t.role for t in param_tensors(cfg)}
    parts = dict.fromkeys(_PART_OF_ROLE.values(), 0)
    for name, p in model.named_parameters():
        if name not in role_of:
            raise AssertionError(f"unclassified parameter {name}: not in core.tensors.param_tensors")
        parts[_PART_OF_ROLE[role_of[name]]] += p.numel()
    # to_v_gate and mem_k / mem_v live in the Attention module: attention_params includes them
    parts["attention"] += parts["gate"] + parts["mem_kv"]
    return parts


def _assert_params_match(cfg: ModelConfig, model: torch.nn.Module) -> None:
    pc = cost_model.param_counts(cfg)
    parts = _measured_parts(cfg, model)
    assert pc.num_params == sum(p.numel() for p in model.parameters())
    assert pc.num_param_tensors == len(list(model.parameters()))
    assert parts == {
        "token": pc.token_embedding_params, "abs_pos": pc.abs_pos_embedding_params,
        "attention": pc.attention_params, "feedforward": pc.feedforward_params, "norm": pc.norm_params,
        "residual": pc.residual_scale_params, "logits": pc.logits_params, "rel_pos": pc.rel_pos_bias_params,
        "hyper": pc.hyper_connection_params, "gate": pc.attn_gate_params, "mem_kv": pc.mem_kv_params,
    }
    assert pc.embedding_params == parts["token"] + parts["abs_pos"]
    assert pc.non_embedding_params == pc.num_params - pc.embedding_params
    assert pc.buffer_elements == sum(b.numel() for b in model.buffers())


def test_import_does_not_import_torch():
    code = "import sys, core.cost_model; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_seed_params_exact_against_real_model():
    model = build_model(SEED).model
    assert cost_model.param_counts(SEED).num_params == 36_629_504
    _assert_params_match(SEED, model)


_FLAGS = ("use_abs_pos_emb", "tie_embedding", "ff_glu", "attn_flash", "alibi_pos_bias", "rotary_xpos", "deepnorm")


@pytest.mark.parametrize(
    "flags", [dict(zip(_FLAGS, bits, strict=True)) for bits in itertools.product((False, True), repeat=len(_FLAGS))][::9]
    + [dict.fromkeys(_FLAGS, True), dict.fromkeys(_FLAGS, False)],
)
@pytest.mark.parametrize("kv", [{"attn_one_kv_head": True}, {"attn_kv_heads": 2}, {}])
def test_params_grid_real_model(flags, kv):
    cfg = ModelConfig(num_tokens=97, max_seq_len=33, dim=32, depth=2, heads=4, attn_dim_head=8, ff_mult=1.5,
                      shift_tokens=1, rotary_pos_emb=not flags["rotary_xpos"] and flags["use_abs_pos_emb"],
                      **flags, **kv)
    _assert_params_match(cfg, build_model(cfg).model)


def test_params_single_head_has_output_projection():
    cfg = ModelConfig(num_tokens=50, max_seq_len=16, dim=16, depth=1, heads=1, attn_dim_head=8)
    _assert_params_match(cfg, build_model(cfg).model)


# every modelled option on (core.options.enable, conflicts fixed), compared with the same configuration without
# it (core.options.switched); and combinations
COMBINATIONS: dict[str, dict[str, object]] = {
    "ff_no_bias+glu": {"ff_no_bias": True, "ff_glu": True},
    "macaron+deepnorm+mem": {"macaron": True, "deepnorm": True, "attn_num_mem_kv": 2, "shift_tokens": 1},
    "streams+macaron+post": {"num_residual_streams": 2, "macaron": True, "pre_norm": False, "use_scalenorm": True},
    "sandwich+rms+gate+qk": {"sandwich_norm": True, "use_rmsnorm": True, "attn_gate_values": True,
                             "attn_qk_norm": True, "attn_kv_heads": 2, "ff_glu": True},
    "rel_pos+residual+mem": {"rel_pos_bias": True, "residual_attn": True, "attn_num_mem_kv": 1,
                             "use_simple_rmsnorm": True},
    "alibi+flash+mem+streams": {"alibi_pos_bias": True, "alibi_num_heads": 2, "attn_flash": True,
                                "attn_num_mem_kv": 2, "num_residual_streams": 2, "rotary_xpos": True},
}
_OPT_BASE = ModelConfig(num_tokens=97, max_seq_len=33, dim=32, depth=2, heads=4, attn_dim_head=8, ff_mult=1.5)


@pytest.mark.parametrize("option", [*OPTION_NAMES, *COMBINATIONS])
def test_params_new_options_real_model(option):
    """Each modelled option (and combinations) on, against the real model's tensors."""
    if option in COMBINATIONS:
        off, cfg = _OPT_BASE, _OPT_BASE.replace(**COMBINATIONS[option])
    else:
        off, cfg = options.switched(_OPT_BASE, option)
    model = build_model(cfg).model
    _assert_params_match(cfg, model)
    pc, off = cost_model.param_counts(cfg), cost_model.param_counts(off)
    if option in OPTION_NAMES and options.OPTIONS[option].cost_neutral:
        assert pc == off  # no parameter changes
    elif option in OPTION_NAMES and options.PARAMS not in options.OPTIONS[option].changes:
        assert dataclasses.replace(pc, buffer_elements=0) == dataclasses.replace(off, buffer_elements=0)  # buffers only
    else:
        assert pc.num_params != off.num_params


def test_params_new_options_known_values():
    """Numbers computed by hand from the x-transformers source, for the base (d=32, L=2, h=4, dh=8, f=48)."""
    base = cost_model.param_counts(_OPT_BASE).num_params
    d, L, h, dh = 32, 2, 4, 8

    def delta(**kw):
        return cost_model.param_counts(_OPT_BASE.replace(**kw)).num_params - base

    assert delta(use_simple_rmsnorm=True) == -(2 * L + 1) * d  # no gains at all
    assert delta(use_scalenorm=True) == -(2 * L + 1) * (d - 1)  # one scalar per norm
    assert delta(use_rmsnorm=True) == 0  # one gain of d, as LayerNorm
    assert delta(ff_no_bias=True) == -L * (48 + d)
    assert delta(ff_no_bias=True, ff_glu=True) - delta(ff_glu=True) == -L * d  # GLU keeps its bias
    assert delta(attn_gate_values=True) == L * d * h * dh
    assert delta(attn_num_mem_kv=3) == L * 2 * h * 3 * dh
    assert delta(rel_pos_bias=True) == 32 * h - 33 * d  # the T5 table, and no absolute position table
    assert delta(sandwich_norm=True) == 2 * L * d
    assert delta(pre_norm=False) == -d  # no final norm
    s = 3
    assert delta(num_residual_streams=s) == 2 * L * (d * (s + 3) + s * (s + 2) + 2) + s * d


@st.composite
def _sizes(draw) -> dict[str, object]:
    return {"num_tokens": draw(st.integers(2, 300)), "max_seq_len": draw(st.integers(1, 64)),
            "dim": draw(st.integers(8, 48)), "depth": draw(st.integers(1, 3)), "heads": draw(st.integers(1, 6)),
            # with rotary, ModelConfig requires attn_dim_head >= 8 and a multiple of 4 (options.resolve then
            # leaves rotary off)
            "attn_dim_head": draw(st.sampled_from([4, 8, 12, 16, 20])),
            "ff_mult": draw(st.sampled_from([0.5, 1, 1.5, 2, 3.7, 4]))}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cfg=model_configs(_sizes()))
def test_params_hypothesis_meta_model(cfg):
    """Every registered option drawn together (tests/options_strategies.py), against the meta-device model."""
    _assert_params_match(cfg, _meta_model(cfg))


def test_seed_flops_closed_form_constants():
    fc = cost_model.flop_counts(SEED, Workload(seq_len=8192))
    assert fc.fwd_flops == 1_256_546_369_536
    assert fc.fwd_flops == fc.proj_flops + fc.attn_flops + fc.ff_flops + fc.logits_flops
    # causal half: n(n+1)/2 of the n*n pairs
    assert fc.attn_flops_causal * 2 * 8192 == fc.attn_flops * 8193
    assert fc.train_step_flops == 3 * fc.fwd_flops
    assert fc.train_step_flops_flash_recompute - fc.train_step_flops == fc.attn_flops // 2
    assert fc.fwd_flops_per_token * 8192 == fc.fwd_flops


def test_estimate_is_flat_and_has_required_keys():
    est = cost_model.estimate(SEED, Workload(seq_len=1024, batch=2))
    required = {"num_params", "embedding_params", "non_embedding_params", "fwd_flops", "fwd_flops_causal",
                "train_step_flops", "fwd_flops_per_token", "weights_bytes", "grads_bytes", "adamw_state_bytes",
                "kv_cache_bytes", "alibi_bias_bytes", "activation_bytes_inference", "activation_bytes_training",
                "inference_total_bytes", "training_total_bytes"}
    assert required <= set(est)
    assert all(isinstance(v, int | float) and not isinstance(v, bool) for v in est.values())
    assert all(isinstance(est[k], int) for k in est if k.endswith("_bytes") or k.endswith("_params"))
    mem = cost_model.memory_estimate(SEED, Workload(seq_len=1024, batch=2))
    assert sum(mem.inference_breakdown_bytes.values()) == mem.activation_bytes_inference
    assert sum(mem.training_breakdown_bytes.values()) == mem.activation_bytes_training


def test_adamw_state_bytes_against_real_optimizer():
    cfg = SMALL_SEED
    model = build_model(cfg).model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randint(0, cfg.num_tokens, (1, 8))).sum().backward()
    opt.step()
    state_bytes = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values())
    mem = cost_model.memory_estimate(cfg, Workload(seq_len=8))
    assert state_bytes == mem.adamw_state_bytes
    assert sum(p.grad.numel() * p.grad.element_size() for p in model.parameters()) == mem.grads_bytes
    assert sum(p.numel() * p.element_size() for p in model.parameters()) == mem.weights_bytes


_NO_ALIBI = SMALL_SEED.replace(alibi_pos_bias=False, alibi_num_heads=None)


@pytest.mark.parametrize("cfg", [_NO_ALIBI, _NO_ALIBI.replace(attn_one_kv_head=False, attn_kv_heads=2),
                                 _NO_ALIBI.replace(attn_one_kv_head=False), SMALL_SEED.replace(rotary_xpos=False),
                                 _NO_ALIBI.replace(attn_num_mem_kv=3, macaron=True, deepnorm=False,
                                                   num_residual_streams=2)],
                         ids=["mqa", "gqa", "mha", "mqa-alibi-no-rotary", "mem-kv-macaron-streams"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_kv_cache_bytes_from_cached_generation_path(cfg, dtype):
    model = build_model(cfg, dtype=dtype).model
    n, b = 11, 2
    ids = torch.randint(0, cfg.num_tokens, (b, n + 1))
    with torch.no_grad():
        _, cache = model(ids[:, :n], return_intermediates=True)
        kvs = [t for inter in cache.attn_intermediates for t in inter.cached_kv]
        assert {t.shape[1] for t in kvs} == {cfg.kv_heads}  # K/V heads as cached, not expanded
        assert sum(t.numel() * t.element_size() for t in kvs) == cost_model.memory_estimate(
            cfg, Workload(batch=b, seq_len=n, dtype=dtype)).kv_cache_bytes
        # one cached decoding step, as AutoregressiveWrapper.generate(cache_kv=True) does
        _, cache2 = model(ids, cache=cache, return_intermediates=True)
        kvs2 = [t for inter in cache2.attn_intermediates for t in inter.cached_kv]
    assert sum(t.numel() * t.element_size() for t in kvs2) == cost_model.memory_estimate(
        cfg, Workload(batch=b, seq_len=n + 1, dtype=dtype)).kv_cache_bytes


def test_cached_decoding_fails_with_rotary_and_alibi_in_2_31():
    """Canary for the documented gap: with rotary + ALiBi (the seed) x-transformers 2.31 builds the ALiBi
    bias for all cached positions but only one query row, and the cached step raises."""
    model = build_model(SMALL_SEED).model
    ids = torch.randint(0, SMALL_SEED.num_tokens, (1, 9))
    with torch.no_grad():
        _, cache = model(ids[:, :8], return_intermediates=True)
        with pytest.raises(RuntimeError, match="broadcast shape"):
            model(ids, cache=cache, return_intermediates=True)


class _SdpaSpy:
    def __init__(self):
        self.calls: list[dict[str, object]] = []
        self._orig = F.scaled_dot_product_attention

    def __call__(self, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kw):
        self.calls.append({"mask": attn_mask, "is_causal": is_causal})
        return self._orig(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, **kw)


@pytest.mark.parametrize("rotary", [True, False], ids=["rotary+alibi", "alibi-only"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_alibi_tensors_captured_from_real_model(monkeypatch, rotary, dtype):
    cfg = SMALL_SEED.replace(rotary_xpos=rotary, use_abs_pos_emb=False)
    b, n = 2, 13
    wl = Workload(batch=b, seq_len=n, dtype=dtype)
    mem = cost_model.memory_estimate(cfg, wl)
    spy = _SdpaSpy()
    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    custom_outputs: list[torch.Tensor] = []
    orig_custom = AlibiPositionalBias.forward_custom_pos

    def custom_pos(self, *args, **kwargs):
        out = orig_custom(self, *args, **kwargs)
        custom_outputs.append(out)
        return out

    monkeypatch.setattr(AlibiPositionalBias, "forward_custom_pos", custom_pos)
    model = build_model(cfg, dtype=dtype).model
    with torch.no_grad():
        model(torch.randint(0, cfg.num_tokens, (b, n)))
    assert len(spy.calls) == cfg.depth
    for call in spy.calls:
        mask = call["mask"]
        assert call["is_causal"] is False
        assert mask is not None and mask.is_floating_point() and tuple(mask.shape) == (b, cfg.heads, n, n)
        assert mask.numel() * mask.element_size() == mem.alibi_sdpa_mask_bytes
        assert torch.isfinite(mask[..., 0, 1:]).all() and (mask[..., 0, 1:] < -1e30).all()  # causal part masked
    assert len(custom_outputs) == mem.alibi_blocks_rebuilding_bias * (1 if rotary else 0)
    for bias in custom_outputs:  # rebuilt in every block: (h, n, n) in the slopes' dtype
        assert tuple(bias.shape) == (cfg.heads, n, n)
        assert bias.numel() * bias.element_size() == mem.alibi_bias_padded_bytes
    cached = model.attn_layers.rel_pos.bias
    if rotary:
        assert cached is None and mem.alibi_cached_buffer_bytes == 0
    else:
        assert cached.numel() * cached.element_size() == mem.alibi_cached_buffer_bytes == mem.alibi_bias_padded_bytes
    assert mem.alibi_bias_bytes == (mem.alibi_bias_padded_bytes + mem.alibi_sdpa_mask_bytes + n * n
                                    + mem.alibi_cached_buffer_bytes)


def test_no_alibi_no_dense_mask(monkeypatch):
    cfg = PRESETS["seed-no-alibi"].replace(num_tokens=64, dim=32, depth=1, heads=2, attn_dim_head=16)
    spy = _SdpaSpy()
    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    with torch.no_grad():
        build_model(cfg).model(torch.randint(0, 64, (1, 9)))
    assert [c["mask"] is None and c["is_causal"] for c in spy.calls] == [True]
    mem = cost_model.memory_estimate(cfg, Workload(seq_len=9))
    assert mem.alibi_bias_bytes == mem.alibi_sdpa_mask_bytes == 0


def test_memory_scales_as_documented():
    small, big = (cost_model.memory_estimate(SEED, Workload(seq_len=n)) for n in (1024, 2048))
    assert big.alibi_sdpa_mask_bytes == 4 * small.alibi_sdpa_mask_bytes
    assert big.kv_cache_bytes == 2 * small.kv_cache_bytes
    mha = cost_model.memory_estimate(PRESETS["seed-mha"], Workload(seq_len=1024))
    assert mha.kv_cache_bytes == SEED.heads * small.kv_cache_bytes  # 8 K/V heads instead of 1
    # ALiBi dense mask dominates the training activations at long sequences: depth masks of (b, h, n, n)
    assert big.training_breakdown_bytes["attention"] > SEED.depth * big.alibi_sdpa_mask_bytes


def test_memory_estimate_is_the_sum_of_its_named_terms():
    for cfg in (SEED, SEED.replace(deepnorm=False, num_residual_streams=2, macaron=True, attn_num_mem_kv=4)):
        wl = Workload(seq_len=512, batch=3, dtype="bfloat16")
        mem = cost_model.memory_estimate(cfg, wl)
        assert mem.kv_cache_bytes_per_token == cost_model.kv_bytes_per_token(cfg, 2) == 2 * cfg.depth * cfg.kv_heads * 64 * 2
        assert mem.kv_cache_bytes == cost_model.kv_cache_bytes(cfg, wl) == mem.kv_cache_bytes_per_token * 3 * 512
        assert mem.training_total_bytes == (
            cost_model.weights_bytes(cfg, wl) + cost_model.buffers_bytes(cfg, wl) + cost_model.grads_bytes(cfg, wl)
            + cost_model.optimizer_state_bytes(cfg, wl) + sum(cost_model.training_activation_bytes(cfg, wl).values())
            + cost_model.loss_bytes(cfg, wl))
        assert mem.inference_total_bytes == (cost_model.weights_bytes(cfg, wl) + cost_model.buffers_bytes(cfg, wl)
                                             + cost_model.inference_activation_bytes(cfg, wl)[0])
        assert mem.loss_bytes_training == 3 * 512 * cfg.num_tokens * 2
    # memory slots are not cached: the KV cache does not grow with attn_num_mem_kv (checked on the model above)
    assert cost_model.kv_cache_bytes(SEED.replace(attn_num_mem_kv=8), Workload()) == cost_model.kv_cache_bytes(
        SEED, Workload())


def test_every_memory_term_states_formula_unit_and_source():
    for fn in (cost_model.weights_bytes, cost_model.buffers_bytes, cost_model.grads_bytes,
               cost_model.optimizer_state_bytes, cost_model.kv_bytes_per_token, cost_model.kv_cache_bytes,
               cost_model.alibi_tensors, cost_model.rel_pos_bias_bytes, cost_model.inference_activation_bytes,
               cost_model.training_activation_bytes, cost_model.hyper_connection_saved_bytes,
               cost_model.loss_bytes):
        doc = fn.__doc__ or ""
        assert "bytes" in doc and ("x_transformers.py" in doc or "torch" in doc or "builder" in doc), fn.__name__
