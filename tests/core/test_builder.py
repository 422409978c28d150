"""core.builder: the seed builds verbatim, the DeepNorm translation is real, errors are BuildErrors."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import x_transformers
from torch import nn
from xtlens.core.builder import (
    BuildError,
    EffectiveKwargs,
    build_model,
    deepnorm_beta,
    effective_kwargs,
    installed_xtransformers_version,
    num_params,
    xt1191_num_params,
    xt1191_param_differences,
)
from xtlens.core.config import PRESETS, ModelConfig

SEED = PRESETS["seed"]
TINY = dict(num_tokens=50, max_seq_len=32, dim=32, depth=2, heads=4, attn_dim_head=8)


@pytest.fixture(scope="module")
def seed_built():
    return build_model(SEED)


def _unvalidated(**values) -> ModelConfig:
    """A ModelConfig that skips its own validation: to reach x-transformers' checks."""
    cfg = object.__new__(ModelConfig)
    for f in dataclasses.fields(ModelConfig):
        default = None if f.default is dataclasses.MISSING else f.default
        object.__setattr__(cfg, f.name, values.get(f.name, default))
    return cfg


def _seed_param_formula(cfg: ModelConfig) -> int:
    """Hand count for a DeepNorm (post-norm, residual-scaled), untied, rotary decoder as 2.31 builds it."""
    d, inner, f = cfg.dim, cfg.attn_inner_dim, cfg.ff_inner_dim
    kv = cfg.kv_heads * cfg.attn_dim_head
    attn = d * inner + 2 * d * kv + inner * d  # to_q, to_k, to_v, to_out (no biases)
    ff = d * f + f + f * d + d  # two linears with biases
    per_sublayer = d + d  # LayerNorm gamma (no bias) + residual_scale
    return cfg.num_tokens * d + cfg.depth * (attn + ff + 2 * per_sublayer) + d * cfg.num_tokens


# --- the seed ---


def test_seed_builds_verbatim_with_expected_param_count(seed_built):
    assert seed_built.num_params == 36_629_504
    assert seed_built.num_params == _seed_param_formula(SEED)
    assert num_params(SEED) == 36_629_504  # meta-device count agrees with the real build
    assert isinstance(seed_built.model, x_transformers.TransformerWrapper)
    assert isinstance(seed_built.model.attn_layers, x_transformers.Decoder)


def test_seed_is_post_norm_with_residual_scale(seed_built):
    layers = seed_built.model.attn_layers
    # DeepNorm: no final norm (x-transformers uses its own Identity class, not nn.Identity).
    assert type(layers.final_norm).__name__ == "Identity" and not list(layers.final_norm.parameters())
    assert len(layers.layers) == 2 * SEED.depth
    for norms, _block, residual in layers.layers:
        pre_branch, post_branch, post_main = norms
        assert pre_branch is None and post_branch is None
        assert post_main is not None and type(post_main).__name__ == "LayerNorm"
        assert residual.residual_scale is not None and residual.residual_scale.shape == (SEED.dim,)
        assert torch.equal(residual.residual_scale, torch.ones(SEED.dim))
        assert residual.scale_residual_constant == pytest.approx(12**0.25, rel=1e-15)
    names = [n for n, _ in seed_built.model.named_parameters() if n.endswith("residual_scale")]
    assert len(names) == 12


def test_seed_keeps_its_other_options(seed_built):
    layers = seed_built.model.attn_layers
    assert layers.rotary_pos_emb is not None and layers.rotary_pos_emb.scale is not None  # xpos
    assert layers.rel_pos.heads == 4 and layers.rel_pos.total_heads == 8  # ALiBi on 4 of 8 heads
    attn = layers.layers[0][1].fn  # ShiftTokens wraps the block
    assert layers.layers[0][1].shifts == (0, 1)
    assert attn.kv_heads == 1 and attn.attend.flash
    assert not hasattr(seed_built.model.to_logits, "bias") or seed_built.model.to_logits.bias is None


def _linears(model: nn.Module) -> dict[str, nn.Linear]:
    return {n: m for n, m in model.attn_layers.named_modules() if type(m) is nn.Linear}


def _pooled_std(mods: list[nn.Linear]) -> float:
    return torch.cat([m.weight.detach().flatten() for m in mods]).std().item()


def test_deepnorm_reinit_matches_xavier_normal_gains(seed_built):
    beta = (8 * SEED.depth) ** -0.25
    assert deepnorm_beta(SEED.depth) == pytest.approx(beta)
    lin = _linears(seed_built.model)
    groups = {
        "to_q": (1.0, 512, 512),
        "to_k": (1.0, 512, 64),
        "to_v": (beta, 512, 64),
        "to_out": (beta, 512, 512),
        "ff.0.0": (beta, 512, 2048),
        "ff.2": (beta, 2048, 512),
    }
    for key, (gain, fan_in, fan_out) in groups.items():
        mods = [m for n, m in lin.items() if n.endswith(key)]
        assert len(mods) == SEED.depth
        expected = gain * math.sqrt(2.0 / (fan_in + fan_out))
        assert _pooled_std(mods) == pytest.approx(expected, rel=0.03), key
    for m in lin.values():
        if m.bias is not None:
            assert torch.count_nonzero(m.bias) == 0


def test_without_deepnorm_the_default_init_is_kept():
    """The statistics test above can tell the two inits apart: default nn.Linear init has std 1/sqrt(3*fan_in)."""
    model = build_model(SEED.replace(deepnorm=False)).model
    lin = _linears(model)
    ff_in = [m for n, m in lin.items() if n.endswith("ff.0.0")]
    assert _pooled_std(ff_in) == pytest.approx(1 / math.sqrt(3 * 512), rel=0.03)
    beta_xavier = deepnorm_beta(6) * math.sqrt(2.0 / (512 + 2048))
    assert abs(_pooled_std(ff_in) - beta_xavier) / beta_xavier > 0.2
    assert any(torch.count_nonzero(m.bias) > 0 for m in ff_in)
    assert type(model.attn_layers.final_norm).__name__ == "LayerNorm"


# --- effective kwargs ---


def test_effective_kwargs_of_seed_contains_the_deepnorm_translation():
    kw = effective_kwargs(SEED)
    assert "deepnorm" not in kw.decoder
    assert kw.decoder["pre_norm"] is False and kw.decoder["scale_residual"] is True
    assert kw.decoder["scale_residual_constant"] == pytest.approx(12**0.25)
    (tr,) = [t for t in kw.translations if t.keyword == "deepnorm"]
    assert tr.requested is True
    assert tr.effective == {
        "pre_norm": False,
        "scale_residual": True,
        "scale_residual_constant": (2 * 6) ** 0.25,
    }
    assert "(8 * depth) ** -0.25" in tr.reason
    assert len(kw.post_init) == 1 and "xavier_normal_" in kw.post_init[0] and "0.379918" in kw.post_init[0]
    for key in (
        "attn_one_kv_head",
        "attn_flash",
        "alibi_pos_bias",
        "alibi_num_heads",
        "rotary_xpos",
        "shift_tokens",
    ):
        assert kw.decoder[key] == getattr(SEED, key)
    assert kw.wrapper == {"num_tokens": 20000, "max_seq_len": 8192, "use_abs_pos_emb": False}
    assert any("rotated the values" in n for n in kw.notes)
    assert any("26,144 more parameters" in n for n in kw.notes)


def test_as_code_is_the_call_the_builder_makes():
    """Evaluating the rendered code with 2.31's classes gives the same architecture as build_model."""
    cfg = ModelConfig(**TINY, deepnorm=True, tie_embedding=True, alibi_pos_bias=True)
    kw = effective_kwargs(cfg)
    code = kw.as_code()
    assert (
        code.startswith("TransformerWrapper(")
        and "attn_layers=Decoder(" in code
        and "# then: DeepNorm" in code
    )
    model = eval(
        code, {"TransformerWrapper": x_transformers.TransformerWrapper, "Decoder": x_transformers.Decoder}
    )
    built = build_model(cfg).model
    assert {n: p.shape for n, p in model.named_parameters()} == {
        n: p.shape for n, p in built.named_parameters()
    }
    assert repr(model) == repr(built)


def test_plain_config_needs_no_translation():
    kw = effective_kwargs(PRESETS["plain-prenorm"])
    assert kw.translations == () and kw.post_init == ()
    assert kw.decoder == {"dim": 512, "depth": 6, "attn_flash": True, "rotary_pos_emb": True}


def test_tie_embedding_is_unscaled_as_in_1191():
    cfg = ModelConfig(**TINY, tie_embedding=True)
    kw = effective_kwargs(cfg)
    assert kw.wrapper["tie_embedding_scale"] == 1.0
    assert [t.keyword for t in kw.translations] == ["tie_embedding"]
    model = build_model(cfg).model
    tokens = torch.randint(0, cfg.num_tokens, (1, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, hidden = model(tokens, return_logits_and_embeddings=True)
        expected = hidden @ model.token_emb.emb.weight.t()
    torch.testing.assert_close(logits, expected)


def test_single_head_keeps_its_output_projection():
    cfg = ModelConfig(**TINY | {"heads": 1})
    kw = effective_kwargs(cfg)
    assert kw.decoder["attn_project_out"] is True
    model = build_model(cfg).model
    assert isinstance(model.attn_layers.layers[0][1].to_out, nn.Linear)
    with torch.no_grad():
        assert model(torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, cfg.num_tokens)
    # Without the translation, x-transformers 2.31 has no projection and the forward fails.
    raw = x_transformers.TransformerWrapper(
        num_tokens=50,
        max_seq_len=32,
        attn_layers=x_transformers.Decoder(dim=32, depth=1, heads=1, attn_dim_head=8),
    )
    with pytest.raises(RuntimeError):
        raw(torch.zeros(1, 4, dtype=torch.long))


def test_rotary_width_note_for_small_heads():
    kw = effective_kwargs(ModelConfig(**TINY | {"attn_dim_head": 48}, rotary_pos_emb=True))
    (note,) = [n for n in kw.notes if n.startswith("Rotary width")]
    assert "24 channels" in note and "= 32" in note
    assert not [n for n in effective_kwargs(SEED).notes if n.startswith("Rotary width")]
    assert effective_kwargs(ModelConfig(**TINY)).notes[-1].startswith("x-transformers 1.19.1 builds")


def test_effective_kwargs_is_pure():
    a, b = effective_kwargs(SEED), effective_kwargs(SEED)
    assert a == b and a is not b and isinstance(a, EffectiveKwargs)
    a.decoder["dim"] = 1
    assert effective_kwargs(SEED).decoder["dim"] == 512


# --- errors ---


def test_xtransformers_assertion_becomes_build_error():
    cfg = _unvalidated(**TINY | {"heads": 8, "attn_kv_heads": 3})
    with pytest.raises(BuildError, match=r"rejected this configuration: .*divisible_by\(heads, kv_heads\)"):
        build_model(cfg)


def test_xtransformers_assertion_message_is_passed_on():
    cfg = _unvalidated(**TINY | {"attn_one_kv_head": True, "attn_kv_heads": 2})
    with pytest.raises(BuildError, match="either attn_one_kv_head is set to True"):
        build_model(cfg)


def test_bad_dtype_and_device():
    with pytest.raises(BuildError, match="Unknown dtype 'float64'"):
        build_model(ModelConfig(**TINY), dtype="float64")
    with pytest.raises(BuildError, match="Unknown device"):
        build_model(ModelConfig(**TINY), device="gpu0")
    missing = "cuda:99" if torch.cuda.is_available() else "cuda"
    with pytest.raises(BuildError, match="GPU"):
        build_model(ModelConfig(**TINY), device=missing)


def test_model_too_large_for_memory_is_refused_before_allocating():
    cfg = ModelConfig(num_tokens=1_048_576, max_seq_len=8, dim=32_768, depth=512, heads=8)
    with pytest.raises(BuildError, match=r"parameters and needs [\d.]+ GiB on CPU"):
        build_model(cfg)


# --- dtype, device, determinism ---


@pytest.mark.parametrize("dtype,torch_dtype", [("bfloat16", torch.bfloat16), ("float16", torch.float16)])
def test_dtype_is_honoured(dtype, torch_dtype):
    cfg = ModelConfig(**TINY, rotary_xpos=True, alibi_pos_bias=True, deepnorm=True, use_abs_pos_emb=False)
    built = build_model(cfg, dtype=dtype)
    assert built.dtype == dtype and built.device == "cpu"
    assert {p.dtype for p in built.model.parameters()} == {torch_dtype}
    assert {b.dtype for b in built.model.buffers() if b.is_floating_point()} == {torch_dtype}
    assert any(dtype in step for step in built.kwargs.post_init)
    with torch.no_grad():
        assert built.model(torch.zeros(1, 8, dtype=torch.long)).dtype == torch_dtype
    # Same seed: the low-precision weights are the float32 weights rounded.
    ref = build_model(cfg).model
    for (n, p), (_, q) in zip(built.model.named_parameters(), ref.named_parameters(), strict=True):
        assert torch.equal(p, q.to(torch_dtype)), n


def test_device_eval_mode_and_versions(seed_built):
    assert seed_built.device == "cpu" and seed_built.dtype == "float32"
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in seed_built.model.parameters())
    assert not any(m.training for m in seed_built.model.modules())
    assert seed_built.xtransformers_version == installed_xtransformers_version()
    assert installed_xtransformers_version().startswith("2.31.")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_build_has_same_weights_as_cpu():
    cfg = ModelConfig(**TINY, deepnorm=True)
    gpu, cpu = build_model(cfg, device="cuda", dtype="bfloat16"), build_model(cfg, dtype="bfloat16")
    assert gpu.device.startswith("cuda")
    for p, q in zip(gpu.model.parameters(), cpu.model.parameters(), strict=True):
        assert p.is_cuda and torch.equal(p.cpu(), q)


def test_seed_is_deterministic_and_leaves_global_rng_alone():
    cfg = ModelConfig(**TINY, deepnorm=True)
    state = torch.get_rng_state()
    a, b, c = build_model(cfg, seed=0), build_model(cfg, seed=0), build_model(cfg, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    pa, pb, pc = (dict(x.model.named_parameters()) for x in (a, b, c))
    assert all(torch.equal(pa[n], pb[n]) for n in pa)
    assert not torch.equal(pa["attn_layers.layers.0.1.to_q.weight"], pc["attn_layers.layers.0.1.to_q.weight"])
    assert a.model is not b.model
    assert pa["token_emb.emb.weight"].data_ptr() != pb["token_emb.emb.weight"].data_ptr()
    assert build_model(cfg, seed=None).num_params == a.num_params


# --- parity knowledge (checked against a real 1.19.1 build in test_parity_1191.py) ---


def test_1191_differences_for_the_seed(seed_built):
    diffs = xt1191_param_differences(SEED)
    assert sum(d.count for d in diffs) == 26_144 == 12 * 512 + 20_000
    assert xt1191_num_params(SEED) == 36_655_648
    roles = [d.role for d in diffs]
    assert roles[-1] == "to_logits.bias" and "attn_layers.final_norm.bias" not in roles
    # Every LayerNorm bias on the list sits where our build has a (bias-free) LayerNorm.
    ours = {n for n, _ in seed_built.model.named_parameters()}
    ln_roles = [r for r in roles if r != "to_logits.bias"]
    assert len(ln_roles) == 12 and all(r.removesuffix(".bias") + ".gamma" in ours for r in ln_roles)
    assert all(d.cause for d in diffs)


@pytest.mark.parametrize(
    "cfg",
    [
        PRESETS["plain-prenorm"],
        ModelConfig(**TINY, tie_embedding=True),
        ModelConfig(**TINY, deepnorm=True, tie_embedding=True),
    ],
    ids=["prenorm", "tied", "tied-deepnorm"],
)
def test_1191_differences_follow_our_layernorms(cfg):
    """One bias per LayerNorm our build has (pre-norm: 2*depth + final), plus to_logits unless tied."""
    model_names = {n for n, _ in build_model(cfg).model.named_parameters()}
    gammas = {n.removesuffix(".gamma") for n in model_names if n.endswith(".gamma")}
    diffs = xt1191_param_differences(cfg)
    assert {d.role.removesuffix(".bias") for d in diffs if d.role != "to_logits.bias"} == gammas
    assert ("to_logits.bias" in {d.role for d in diffs}) == (not cfg.tie_embedding)
    n_norms = 2 * cfg.depth + (0 if cfg.deepnorm else 1)
    assert sum(d.count for d in diffs) == n_norms * cfg.dim + (0 if cfg.tie_embedding else cfg.num_tokens)


def test_new_options_reach_the_real_modules_under_their_own_names():
    """Each 2.31 option is passed through verbatim and builds the module the description names."""
    from x_transformers.x_transformers import (
        GLU,
        HyperConnection,
        RelativePositionBias,
        ReluSquared,
        RMSNorm,
        ScaleNorm,
        SimpleRMSNorm,
    )

    cfg = ModelConfig(**TINY, use_rmsnorm=True, ff_no_bias=True, ff_glu=True, attn_gate_values=True,
                      attn_num_mem_kv=2, macaron=True, sandwich_norm=True, num_residual_streams=2,
                      ff_relu_squared=True, ff_swish=True, emb_dropout=0.1, attn_dropout=0.2, ff_dropout=0.3)
    kw = effective_kwargs(cfg)
    assert kw.wrapper["emb_dropout"] == 0.1
    for name in ("use_rmsnorm", "ff_no_bias", "attn_gate_values", "attn_num_mem_kv", "macaron", "sandwich_norm",
                 "num_residual_streams", "attn_dropout", "ff_dropout"):
        assert kw.decoder[name] == getattr(cfg, name)
    assert any("GLU input projection" in n for n in kw.notes) and any("ff_swish is ignored" in n for n in kw.notes)
    assert any("1.19.1 comparison: not made" in n and "macaron=True" in n for n in kw.notes)
    model = build_model(cfg).model
    types = {type(m) for m in model.modules()}
    assert {RMSNorm, GLU, HyperConnection, ReluSquared} <= types and nn.GELU not in types and nn.SiLU not in types
    assert model.attn_layers.layer_types == ("f", "a", "f") * 2
    glu = next(m for m in model.modules() if isinstance(m, GLU))
    assert glu.proj.bias is not None  # ff_no_bias leaves GLU's bias (x_transformers.py:1752)
    assert model.attn_layers.layers[1][1].mem_k.shape == (4, 2, 8)
    assert model.emb_dropout.p == 0.1
    for kind, cls in (("use_scalenorm", ScaleNorm), ("use_simple_rmsnorm", SimpleRMSNorm)):
        assert cls in {type(m) for m in build_model(ModelConfig(**TINY, **{kind: True})).model.modules()}
    t5 = build_model(ModelConfig(**TINY, rel_pos_bias=True)).model
    assert isinstance(t5.attn_layers.rel_pos, RelativePositionBias)
    assert not any(n.startswith("pos_emb") for n, _ in t5.named_parameters())  # T5 bias disables the table


def test_post_norm_without_deepnorm_and_deepnorm_wins_over_pre_norm():
    post = effective_kwargs(ModelConfig(**TINY, pre_norm=False))
    assert post.decoder["pre_norm"] is False and not post.translations
    deep = effective_kwargs(SEED.replace(pre_norm=True))
    assert deep.decoder["pre_norm"] is False  # deepnorm means post-norm
    model = build_model(ModelConfig(**TINY, pre_norm=False)).model
    assert type(model.attn_layers.final_norm).__name__ == "Identity"  # post-norm: no final norm


def test_no_1191_count_for_options_modelled_for_2_31_only():
    cfg = SEED.replace(use_rmsnorm=True, macaron=True)
    with pytest.raises(BuildError, match="use_rmsnorm=True, macaron=True"):
        xt1191_num_params(cfg)
    with pytest.raises(BuildError, match="1.19.1 comparison"):
        xt1191_param_differences(cfg)
    notes = effective_kwargs(cfg).notes
    assert any("1.19.1 comparison: not made" in n for n in notes)
    assert not any("more parameters" in n for n in notes)  # no LayerNorm-bias claim for an RMSNorm model
    # dropouts change no parameter: the comparison stays
    assert xt1191_num_params(SEED.replace(attn_dropout=0.1)) == xt1191_num_params(SEED)
