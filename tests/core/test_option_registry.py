"""core.options: every ModelConfig field has its entry; the rules agree with ModelConfig's validation; enable
fixes conflicts; a field without metadata or entry fails naming it; and for every option the closed form's
parameter change equals the real model's (tests/profiling/test_option_costs.py does FLOPs and memory)."""

from __future__ import annotations

import dataclasses
import itertools
import sys
from pathlib import Path

import pytest
from xtlens.core import cost_model, options
from xtlens.core.builder import build_model
from xtlens.core.config import PRESETS, ConfigError, ModelConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from options_strategies import OPTION_NAMES  # noqa: E402

SEED = PRESETS["seed"]
#: the tiny model every per-option difference is measured on (x-transformers' defaults otherwise)
TINY = ModelConfig(num_tokens=50, max_seq_len=32, dim=32, depth=2, heads=4, attn_dim_head=8)
SIZES = {"num_tokens", "max_seq_len", "dim", "depth", "heads", "attn_dim_head", "ff_mult"}


def test_every_field_has_one_entry_in_field_order():
    names = [f.name for f in dataclasses.fields(ModelConfig)]
    assert list(options.OPTIONS) == names
    assert {n for n, o in options.OPTIONS.items() if o.kind == "size"} == SIZES
    assert {o.kind for o in options.OPTIONS.values()} == {"size", "option"}
    assert all(o.changes <= {options.PARAMS, options.FLOPS, options.MEMORY} for o in options.OPTIONS.values())


def test_metadata_cost_neutral_fields_are_neutral_in_the_registry():
    marked = {f.name for f in dataclasses.fields(ModelConfig) if f.metadata.get("cost_neutral")}
    assert marked == {"emb_dropout", "attn_dropout", "ff_dropout", "layer_dropout"}
    assert all(options.OPTIONS[n].cost_neutral and options.OPTIONS[n].training_assumption for n in marked)
    assert {n for n, o in options.OPTIONS.items() if o.cost_neutral} == marked | {
        "use_rmsnorm", "ff_swish", "residual_attn"}


@pytest.mark.parametrize("name", list(options.OPTIONS))
def test_value_switches_the_option_on_a_tiny_and_the_seed_model(name):
    for base in (TINY, SEED):
        off, on = options.switched(base, name)
        assert getattr(on, name) == options.OPTIONS[name].value != getattr(off, name)
        if name not in SIZES:
            assert options.is_on(on, name) and not options.is_on(off, name)
        assert options.conflicts(on.replace(**{name: getattr(off, name)}), name) is None, (base, name)


def _rejected(cfg: ModelConfig, name: str, value: object) -> bool:
    try:
        cfg.replace(**{name: value})
    except ConfigError:
        return True
    return False


@pytest.mark.parametrize("base", [TINY, SEED], ids=["tiny", "seed"])
def test_rules_agree_with_modelconfig_validation_for_every_pair(base):
    """For every option a switched on, and every option b: ModelConfig rejects b in enable(base, a) exactly when
    a rejecting rule of b applies (or ``conflicts`` reports ModelConfig's message), and enable(.., b) gives a
    valid configuration with b on whose fixes lifted every rule."""
    names = list(options.OPTIONS)
    checked = 0
    for a, b in itertools.product(names, names):
        cfg = options.enable(base, a)
        opt = options.OPTIONS[b]
        applying = [r for r in opt.rules if r.applies(cfg, opt.value)]
        reason = options.conflicts(cfg, b)
        if _rejected(cfg, b, opt.value):
            assert reason is not None, (a, b)
        if any(r.rejected for r in applying):
            assert _rejected(cfg, b, opt.value), (a, b, [r.reason for r in applying])
        if not applying:
            assert reason is None or _rejected(cfg, b, opt.value), (a, b, reason)
        on = options.enable(cfg, b)
        assert getattr(on, b) == opt.value
        assert not [r.reason for r in opt.rules if r.fix and r.applies(on.replace(**{b: getattr(cfg, b)}), opt.value)]
        checked += 1
    assert checked == len(names) ** 2


def test_enable_fixes_x_transformers_conflicts():
    assert options.enable(SEED, "rel_pos_bias") == SEED.replace(
        rel_pos_bias=True, alibi_pos_bias=False, attn_flash=False, rotary_xpos=False)
    assert options.enable(SEED, "sandwich_norm") == SEED.replace(sandwich_norm=True, deepnorm=False)
    assert options.enable(SEED, "num_residual_streams") == SEED.replace(num_residual_streams=2, deepnorm=False)
    assert options.enable(SEED, "attn_kv_heads") == SEED.replace(attn_kv_heads=2, attn_one_kv_head=False)
    assert options.enable(TINY, "alibi_num_heads") == TINY.replace(alibi_pos_bias=True, alibi_num_heads=1)
    assert options.enable(TINY, "rotary_emb_dim") == TINY.replace(rotary_pos_emb=True, rotary_emb_dim=6)
    assert options.enable(TINY.replace(use_rmsnorm=True), "use_scalenorm") == TINY.replace(use_scalenorm=True)
    assert options.enable(TINY.replace(ff_relu_squared=True), "ff_swish") == TINY.replace(ff_swish=True)
    assert options.enable(SEED.replace(attn_flash=False, residual_attn=True), "attn_flash") == SEED
    assert options.enable(TINY.replace(shift_tokens=30), "dim") == TINY.replace(dim=24)
    with pytest.raises(ConfigError, match="attn_kv_heads = 3 is not allowed: a divisor of heads = 8"):
        options.enable(SEED, "attn_kv_heads", 3)


def test_conflicts_name_the_reason():
    assert "deepnorm already means post-norm" in options.conflicts(SEED, "pre_norm")
    assert "pre-norm" in options.conflicts(SEED, "sandwich_norm")
    assert "rotary" in options.conflicts(PRESETS["plain-prenorm"].replace(attn_flash=False), "rel_pos_bias")
    assert "at most one of use_rmsnorm" in options.conflicts(TINY.replace(use_rmsnorm=True), "use_simple_rmsnorm")
    assert "one or the other" in options.conflicts(SEED, "attn_kv_heads")
    assert "needs alibi_pos_bias" in options.conflicts(TINY, "alibi_num_heads")
    assert "needs rotary" in options.conflicts(TINY, "rotary_emb_dim")
    assert "ff_relu_squared is on" in options.conflicts(TINY.replace(ff_relu_squared=True), "ff_swish")
    assert "divide heads" in options.conflicts(SEED.replace(attn_one_kv_head=False), "attn_kv_heads", 3)
    assert options.conflicts(SEED, "macaron") is None and options.conflicts(TINY, "rel_pos_bias") is None
    with pytest.raises(ConfigError, match="attn_head_scale"):
        options.option("attn_head_scale")


def test_resolve_keeps_what_combines_and_drops_the_later_conflict():
    sizes = {"num_tokens": 50, "max_seq_len": 32, "dim": 32, "depth": 2, "heads": 4, "attn_dim_head": 8}
    cfg = options.resolve({**sizes, "attn_flash": True, "rel_pos_bias": True, "use_rmsnorm": True,
                           "use_scalenorm": True, "deepnorm": True, "num_residual_streams": 3, "attn_kv_heads": 3})
    assert cfg == TINY.replace(attn_flash=True, use_rmsnorm=True, deepnorm=True)


# --- a field without metadata or without an entry fails naming it -----------------------------------------

def _field(name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(ModelConfig) if f.name == name)


def _with_field(field_name: str, field: dataclasses.Field) -> type:
    return dataclasses.make_dataclass("Extended", [(field_name, bool, field)], bases=(ModelConfig,), frozen=True,
                                      kw_only=True)


def test_a_bare_field_fails_naming_it():
    bare = _with_field("attn_head_scale", dataclasses.field(default=False))
    with pytest.raises(options.OptionRegistryError, match="'attn_head_scale' has no metadata kind, group, "
                                                          "description"):
        options.check_fields(dataclasses.fields(bare))
    from xtlens.dashboard import schema  # what failed with KeyError: 'kind' before

    with pytest.raises(options.OptionRegistryError, match="'attn_head_scale' has no metadata"):
        schema.spec_from_field(bare, dataclasses.fields(bare)[-1])


def test_a_field_with_metadata_but_no_entry_fails_naming_it():
    meta = {**_field("attn_gate_values").metadata, "description": "A learned scale per head."}
    described = _with_field("attn_head_scale", dataclasses.field(default=False, metadata=meta))
    with pytest.raises(options.OptionRegistryError,
                       match="'attn_head_scale' has no entry in core.options.OPTIONS"):
        options.check_fields(dataclasses.fields(described))
    options.check_fields(dataclasses.fields(described), {**options.OPTIONS, "attn_head_scale": options.Option(
        name="attn_head_scale", kind="option", value=True, changes=frozenset({options.PARAMS}))})
    with pytest.raises(options.OptionRegistryError, match="entry 'gone' names no ModelConfig field"):
        options.check_fields(None, {**options.OPTIONS, "gone": options.OPTIONS["macaron"]})


# --- parameters: the closed form's change equals the real model's, per option ------------------------------

def _real_params(cfg: ModelConfig) -> tuple[int, int, int]:
    model = build_model(cfg).model
    params = list(model.parameters())
    return sum(p.numel() for p in params), len(params), sum(b.numel() for b in model.buffers())


def _closed_params(cfg: ModelConfig) -> tuple[int, int, int]:
    pc = cost_model.param_counts(cfg)
    return pc.num_params, pc.num_param_tensors, pc.buffer_elements


@pytest.mark.parametrize("name", list(options.OPTIONS))
def test_parameter_change_of_each_option_equals_the_real_models(name):
    """Parameters, parameter tensors and buffer elements: (closed form with - without) == (real with - without)."""
    off, on = options.switched(TINY, name)
    closed = [a - b for a, b in zip(_closed_params(on), _closed_params(off), strict=True)]
    real = [a - b for a, b in zip(_real_params(on), _real_params(off), strict=True)]
    assert closed == real, (f"{name}: (parameters, tensors, buffer elements) closed form {closed}, "
                            f"real model {real}")
    changes_params = closed[0] != 0 or closed[1] != 0
    assert changes_params == (options.PARAMS in options.OPTIONS[name].changes), (
        f"{name}: the registry says it {'changes' if not changes_params else 'does not change'} parameters, "
        f"the closed form's change is {closed[:2]}")


@pytest.mark.parametrize("name", [n for n in OPTION_NAMES if options.OPTIONS[n].cost_neutral])
def test_cost_neutral_option_changes_no_parameter_of_the_real_model(name):
    off, on = options.switched(TINY, name)
    assert _real_params(on) == _real_params(off)
    assert cost_model.param_counts(on) == cost_model.param_counts(off)


@pytest.mark.parametrize("name", list(options.OPTIONS))
def test_every_option_reaches_x_transformers_verbatim_or_through_a_translation(name):
    from xtlens.core.builder import effective_kwargs

    cfg = options.enable(TINY, name)
    kw = effective_kwargs(cfg)
    passed = {**kw.wrapper, **kw.decoder}
    translated = {t.keyword for t in kw.translations}
    assert passed.get(name, None) == getattr(cfg, name) or name in translated, (name, passed.get(name))
