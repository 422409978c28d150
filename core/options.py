"""The registry of modelled options: one ``Option`` per ``ModelConfig`` field, the one list the tests' grids,
hypothesis strategies and conflict fixers (and later the dashboard) draw from.

Each entry says the value that turns the option on (for a number: a representative non-default value valid
on a tiny model, dim 16-32, 2-4 heads of width 8-16), which costs it changes in the closed form
(``PARAMS``, ``FLOPS``, ``MEMORY``; none: cost-neutral) and x-transformers' rules for it (as
``ModelConfig._check_combinations`` enforces them, plus the combinations where x-transformers accepts the
option but ignores it). ``enable(cfg, name)`` turns one option on and fixes what conflicts with it;
``conflicts(cfg, name)`` says why it cannot be switched on in ``cfg`` as it is.

Importing this module checks that every ``ModelConfig`` field has its metadata and its entry here
(``check_fields``): a field added without them fails with a message naming it.

Standard library only.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

from xtlens.core.errors import ConfigError, XtlensError
from xtlens.core.schema import ModelConfig, missing_metadata

__all__ = ["PARAMS", "FLOPS", "MEMORY", "Rule", "Option", "OPTIONS", "OptionRegistryError", "option",
           "is_on", "conflicts", "enable", "switched", "resolve", "check_field_metadata", "check_fields", "INERT",
           "inert_fields"]

PARAMS, FLOPS, MEMORY = "params", "flops", "memory"
_ALL = frozenset((PARAMS, FLOPS, MEMORY))
_DROPOUT_ASSUMPTION = ("the closed form assumes dropout 0 in training: a training step with dropout > 0 keeps its "
                       "masks for backward (and layer_dropout skips random sub-layers); in eval it changes nothing")


class OptionRegistryError(XtlensError):
    """A ``ModelConfig`` field without its metadata or its ``OPTIONS`` entry (a programming error, raised at
    import). The message names the field and what to add."""


@dataclass(frozen=True, kw_only=True)
class Rule:
    """One of x-transformers' rules for switching an option on: while ``applies(cfg, value)`` holds, the option
    cannot take ``value`` in ``cfg`` as it is. ``rejected``: x-transformers (and ``ModelConfig``) rejects the
    combination; otherwise it accepts it and ignores the option. ``fix``: what ``enable`` changes in ``cfg``
    to lift the rule (empty: nothing can, e.g. MQA with one head)."""

    reason: str
    applies: typing.Callable[[ModelConfig, object], bool]
    fix: typing.Mapping[str, object] = dataclasses.field(default_factory=dict)
    rejected: bool = True


@dataclass(frozen=True, kw_only=True)
class Option:
    """One ``ModelConfig`` field. ``kind``: "size" (a model dimension) or "option". ``value``: the non-default
    value that switches it (False for ``pre_norm`` and ``use_abs_pos_emb``, whose default is True).
    ``samples``: further values the tests' strategies draw (numbers only). ``changes``: what it changes in
    the closed form (empty: cost-neutral). ``training_assumption``: what the closed form assumes in training
    where the real model can differ (the dropouts)."""

    name: str
    kind: str
    value: object
    changes: frozenset[str]
    rules: tuple[Rule, ...] = ()
    samples: tuple[object, ...] = ()
    training_assumption: str = ""

    @property
    def cost_neutral(self) -> bool:
        return not self.changes


def _on(name: str) -> typing.Callable[[ModelConfig, object], bool]:
    return lambda cfg, _value: is_on(cfg, name)


def _excludes(name: str, *others: str, why: str) -> tuple[Rule, ...]:
    """``name`` cannot be on with any of ``others`` (x-transformers rejects the pair); ``enable`` turns them off."""
    return tuple(Rule(reason=f"{name} cannot be on with {other}: {why}", applies=_on(other),
                      fix={other: _FIELDS[other].default}) for other in others)


_FIELDS = {f.name: f for f in dataclasses.fields(ModelConfig)}
_NORMS = ("use_rmsnorm", "use_simple_rmsnorm", "use_scalenorm")
_NORM_WHY = "x-transformers accepts at most one of use_rmsnorm, use_simple_rmsnorm, use_scalenorm"
_REL_WHY = "x-transformers accepts one positional bias and rejects the T5 bias with flash (x_transformers.py:2910, 2921)"
_ROTARY_OFF = {"rotary_pos_emb": False, "rotary_xpos": False, "rotary_emb_dim": None}
_NO_REL_POS = Rule(reason="rel_pos_bias is on: x-transformers accepts the T5 relative bias only without ALiBi, flash "
                   "and rotary (x_transformers.py:2584, 2910, 2921)", applies=_on("rel_pos_bias"),
                   fix={"rel_pos_bias": False})


def _size(name: str, value: object, *rules: Rule) -> Option:
    return Option(name=name, kind="size", value=value, changes=_ALL, rules=rules)


def _dropout(name: str) -> Option:
    return Option(name=name, kind="option", value=0.1, changes=frozenset(), samples=(0.0, 0.1, 0.5),
                  training_assumption=_DROPOUT_ASSUMPTION)


_REGISTRY: tuple[Option, ...] = (
    _size("num_tokens", 64),
    Option(name="max_seq_len", kind="size", value=48, changes=frozenset((PARAMS, MEMORY))),
    Option(name="use_abs_pos_emb", kind="option", value=False, changes=frozenset((PARAMS, MEMORY)), rules=(
        Rule(reason="no absolute position table to drop: x-transformers builds none with rotary or rel_pos_bias "
             "(disable_abs_pos_emb, x_transformers.py:2892)", rejected=False,
             applies=lambda cfg, _v: cfg.uses_rotary or cfg.rel_pos_bias,
             fix={**_ROTARY_OFF, "rel_pos_bias": False}),)),
    Option(name="tie_embedding", kind="option", value=True, changes=frozenset((PARAMS, MEMORY))),
    _dropout("emb_dropout"),
    _size("dim", 24, Rule(reason="shift_tokens must stay below dim", applies=lambda cfg, v: cfg.shift_tokens >= v,
                          fix={"shift_tokens": 0})),
    _size("depth", 3),
    _size("heads", 2,
          Rule(reason="attn_kv_heads must divide heads", fix={"attn_kv_heads": None},
               applies=lambda cfg, v: cfg.attn_kv_heads is not None and v % cfg.attn_kv_heads != 0),
          Rule(reason="alibi_num_heads must be at most heads", fix={"alibi_num_heads": None},
               applies=lambda cfg, v: cfg.alibi_num_heads is not None and cfg.alibi_num_heads > v)),
    _size("attn_dim_head", 16, Rule(reason="rotary_emb_dim must be at most attn_dim_head", fix={"rotary_emb_dim": None},
                                    applies=lambda cfg, v: cfg.rotary_emb_dim is not None and cfg.rotary_emb_dim > v)),
    _size("ff_mult", 2),
    Option(name="ff_glu", kind="option", value=True, changes=_ALL),
    Option(name="attn_one_kv_head", kind="option", value=True, changes=_ALL, rules=(
        *_excludes("attn_one_kv_head", "attn_kv_heads", why="x-transformers accepts one or the other"),
        Rule(reason="with one query head there is already one K/V head", rejected=False,
             applies=lambda cfg, _v: cfg.heads == 1))),
    Option(name="attn_kv_heads", kind="option", value=2, changes=_ALL, samples=(1, 2), rules=(
        *_excludes("attn_kv_heads", "attn_one_kv_head", why="x-transformers accepts one or the other"),
        Rule(reason="attn_kv_heads must divide heads", applies=lambda cfg, v: isinstance(v, int) and v > 0
             and cfg.heads % v != 0),
        Rule(reason="as many K/V heads as query heads is the default (multi-head attention)", rejected=False,
             applies=lambda cfg, v: v == cfg.heads))),
    Option(name="attn_flash", kind="option", value=True, changes=frozenset((FLOPS, MEMORY)),  # FLOPs: training
           rules=_excludes("attn_flash", "rel_pos_bias", "residual_attn",
                           why="x-transformers rejects both with flash attention (x_transformers.py:2921, 2956)")),
    Option(name="alibi_pos_bias", kind="option", value=True, changes=frozenset((MEMORY,)),
           rules=_excludes("alibi_pos_bias", "rel_pos_bias", why=_REL_WHY)),
    Option(name="alibi_num_heads", kind="option", value=1, changes=frozenset((MEMORY,)), samples=(1, 2), rules=(
        Rule(reason="alibi_num_heads needs alibi_pos_bias (without ALiBi x-transformers ignores it)", rejected=False,
             applies=lambda cfg, _v: not cfg.alibi_pos_bias, fix={"alibi_pos_bias": True, "rel_pos_bias": False}),
        Rule(reason="alibi_num_heads must be at most heads", applies=lambda cfg, v: isinstance(v, int) and v > cfg.heads),
        Rule(reason="ALiBi on every head is the default (alibi_num_heads empty)", rejected=False,
             applies=lambda cfg, v: v == cfg.heads))),
    Option(name="rotary_pos_emb", kind="option", value=True, changes=frozenset((PARAMS, MEMORY)), rules=(
        _NO_REL_POS,
        Rule(reason="rotary_xpos is on: it switches rotary on by itself", rejected=False,
             applies=_on("rotary_xpos"), fix={"rotary_xpos": False}))),
    Option(name="rotary_xpos", kind="option", value=True, changes=frozenset((PARAMS, MEMORY)), rules=(_NO_REL_POS,)),
    Option(name="deepnorm", kind="option", value=True, changes=frozenset((PARAMS, MEMORY)), rules=(
        Rule(reason="sandwich_norm is on: deepnorm means post-norm and x-transformers allows sandwich norm only with "
             "pre-norm (x_transformers.py:2931)", applies=_on("sandwich_norm"), fix={"sandwich_norm": False}),
        Rule(reason="num_residual_streams > 1: x-transformers' HyperConnection drops DeepNorm's residual scale "
             "(x_transformers.py:1376ff)", applies=_on("num_residual_streams"), fix={"num_residual_streams": 1}))),
    Option(name="shift_tokens", kind="option", value=1, changes=frozenset((MEMORY,)), samples=(1, 2), rules=(
        Rule(reason="shift_tokens must stay below dim", applies=lambda cfg, v: isinstance(v, int) and v >= cfg.dim),)),
    *(Option(name=n, kind="option", value=True,
             changes=frozenset() if n == "use_rmsnorm" else frozenset((PARAMS, MEMORY)),
             rules=_excludes(n, *(m for m in _NORMS if m != n), why=_NORM_WHY)) for n in _NORMS),
    Option(name="ff_swish", kind="option", value=True, changes=frozenset(), rules=(
        Rule(reason="ff_relu_squared is on: x-transformers then ignores ff_swish (x_transformers.py:1794)",
             rejected=False, applies=_on("ff_relu_squared"), fix={"ff_relu_squared": False}),)),
    Option(name="ff_relu_squared", kind="option", value=True, changes=frozenset((MEMORY,))),
    Option(name="ff_no_bias", kind="option", value=True, changes=frozenset((PARAMS, MEMORY))),
    Option(name="attn_qk_norm", kind="option", value=True, changes=frozenset((MEMORY,))),
    Option(name="attn_gate_values", kind="option", value=True, changes=_ALL),
    Option(name="attn_num_mem_kv", kind="option", value=2, changes=_ALL, samples=(1, 3, 4)),
    Option(name="rotary_emb_dim", kind="option", value=6, changes=frozenset((MEMORY,)), samples=(4, 6, 8), rules=(
        Rule(reason="rotary_emb_dim needs rotary (rotary_pos_emb or rotary_xpos; x-transformers ignores it otherwise)",
             rejected=False, applies=lambda cfg, _v: not cfg.uses_rotary,
             fix={"rotary_pos_emb": True, "rel_pos_bias": False}),
        Rule(reason="rotary_emb_dim must be even and at most attn_dim_head",
             applies=lambda cfg, v: isinstance(v, int) and (v % 2 != 0 or v > cfg.attn_dim_head)),
        Rule(reason="the default rotary width (attn_dim_head // 2)", rejected=False,
             applies=lambda cfg, v: v == cfg.attn_dim_head // 2))),
    Option(name="rel_pos_bias", kind="option", value=True, changes=frozenset((PARAMS, MEMORY)), rules=(
        *_excludes("rel_pos_bias", "alibi_pos_bias", "attn_flash", why=_REL_WHY),
        Rule(reason="rel_pos_bias cannot be on with rotary: x-transformers 2.31 then fails at forward "
             "(x_transformers.py:2584)", applies=lambda cfg, _v: cfg.uses_rotary, fix=_ROTARY_OFF))),
    Option(name="sandwich_norm", kind="option", value=True, changes=frozenset((PARAMS, MEMORY)), rules=(
        Rule(reason="sandwich_norm needs pre-norm (pre_norm on, deepnorm off): x-transformers allows it only with "
             "pre-norm (x_transformers.py:2931)", applies=lambda cfg, _v: not cfg.uses_pre_norm,
             fix={"pre_norm": True, "deepnorm": False}),)),
    Option(name="residual_attn", kind="option", value=True, changes=frozenset(),
           rules=_excludes("residual_attn", "attn_flash", why="x-transformers rejects residual attention with flash "
                           "attention (x_transformers.py:2956)")),
    Option(name="macaron", kind="option", value=True, changes=_ALL),
    Option(name="pre_norm", kind="option", value=False, changes=frozenset((PARAMS, MEMORY)), rules=(
        Rule(reason="deepnorm is on: deepnorm already means post-norm, pre_norm is ignored", rejected=False,
             applies=_on("deepnorm"), fix={"deepnorm": False}),
        Rule(reason="sandwich_norm is on: x-transformers allows sandwich norm only with pre-norm "
             "(x_transformers.py:2931)", applies=_on("sandwich_norm"), fix={"sandwich_norm": False}))),
    Option(name="num_residual_streams", kind="option", value=2, changes=_ALL, samples=(2, 3), rules=(
        Rule(reason="deepnorm is on: x-transformers' HyperConnection drops DeepNorm's residual scale "
             "(x_transformers.py:1376ff)", applies=_on("deepnorm"), fix={"deepnorm": False}),)),
    _dropout("attn_dropout"),
    _dropout("ff_dropout"),
    _dropout("layer_dropout"),
)

#: The controls other flags make irrelevant: (field, when, why). While ``when(cfg)`` holds, x-transformers (1.19.1 and
#: the 2.31 build of ``core.builder``) accepts the field but ignores it: any value builds the same model (the same
#: tensors, the same outputs; tests/core/test_inert.py builds both). Combinations x-transformers REJECTS are not here:
#: ``ModelConfig`` names them (e.g. attn_kv_heads with attn_one_kv_head).
INERT: tuple[tuple[str, typing.Callable[[ModelConfig], bool], str | typing.Callable[[ModelConfig], str]], ...] = (
    ("pre_norm", lambda cfg: cfg.deepnorm,
     "deepnorm is on: DeepNorm is post-norm, so x-transformers sets pre_norm=False whatever this box says "
     "(1.19.1 x_transformers.py:1000; xtlens passes pre_norm=False)"),
    ("alibi_num_heads", lambda cfg: not cfg.alibi_pos_bias,
     "alibi_pos_bias is off: x-transformers reads alibi_num_heads only with ALiBi"),
    ("rotary_pos_emb", lambda cfg: cfg.rotary_xpos,
     "rotary_xpos is on: it switches rotary on by itself (rotary_pos_emb = rotary_pos_emb or rotary_xpos)"),
    ("rotary_emb_dim", lambda cfg: not cfg.uses_rotary,
     "rotary is off (rotary_pos_emb and rotary_xpos): x-transformers reads rotary_emb_dim only with rotary"),
    ("use_abs_pos_emb", lambda cfg: cfg.uses_rotary or cfg.rel_pos_bias,
     lambda cfg: f"{'rotary_xpos' if cfg.rotary_xpos else 'rotary_pos_emb' if cfg.rotary_pos_emb else 'rel_pos_bias'}"
                 " is on: x-transformers builds no absolute position table either way (disable_abs_pos_emb)"),
    ("ff_swish", lambda cfg: cfg.ff_relu_squared,
     "ff_relu_squared is on: x-transformers picks ReLU squared first and ignores ff_swish"),
    ("attn_one_kv_head", lambda cfg: cfg.heads == 1,
     "heads = 1: one query head has one K/V head either way"),
)


def inert_fields(cfg: ModelConfig) -> dict[str, str]:
    """The fields of ``cfg`` that its other flags make irrelevant, each with the reason (field -> reason, in
    ``INERT`` order): changing one of them to any valid value builds the same model. The sidebar disables
    their controls and shows the reason beside them."""
    return {name: why(cfg) if callable(why) else why for name, when, why in INERT if when(cfg)}


#: Every ``ModelConfig`` field's entry, in field order (the order ``resolve`` gives precedence by).
OPTIONS: dict[str, Option] = {o.name: o for o in _REGISTRY}


def option(name: str) -> Option:
    """The registry entry of field ``name`` (``ConfigError`` naming it if there is none)."""
    try:
        return OPTIONS[name]
    except KeyError:
        raise ConfigError(name, None, "a ModelConfig field (see core.options.OPTIONS)") from None


def is_on(cfg: ModelConfig, name: str) -> bool:
    """Whether field ``name`` differs from x-transformers' default in ``cfg`` (``deepnorm=True``,
    ``pre_norm=False``, ``attn_num_mem_kv=2``...)."""
    return getattr(cfg, name) != _FIELDS[name].default


def conflicts(cfg: ModelConfig, name: str, value: object = None) -> str | None:
    """Why option ``name`` cannot take ``value`` (its registry value when None) in ``cfg`` as it is: a rule
    x-transformers imposes (it rejects the combination, or accepts it and ignores the option) or the
    ``ConfigError`` of the configuration it would give. None when it combines."""
    opt = option(name)
    value = opt.value if value is None else value
    for rule in opt.rules:
        if rule.applies(cfg, value):
            return rule.reason
    try:
        cfg.replace(**{name: value})
    except ConfigError as exc:
        return str(exc)
    return None


def enable(cfg: ModelConfig, name: str, value: object = None) -> ModelConfig:
    """``cfg`` with option ``name`` set to ``value`` (its registry value when None) and the fields that
    conflict with it changed by its rules' fixes (the conflict fixer). Raises ``ConfigError`` naming the
    field when no fix makes the combination valid (e.g. ``attn_kv_heads=2`` with 3 heads)."""
    opt = option(name)
    value = opt.value if value is None else value
    changes: dict[str, object] = {}
    for rule in opt.rules:
        if rule.applies(cfg, value):
            changes.update(rule.fix)
    changes[name] = value
    return cfg.replace(**changes)


def switched(cfg: ModelConfig, name: str, value: object = None) -> tuple[ModelConfig, ModelConfig]:
    """The configurations without and with option ``name``: ``enable(cfg, name, value)`` and the same with
    ``name`` back at its default (a size: back at ``cfg``'s value). Both carry ``enable``'s fixes, so their
    difference is the option's own (``rotary_emb_dim`` compares two rotary configurations, not rotary
    against none)."""
    on = enable(cfg, name, value)
    off_value = getattr(cfg, name) if option(name).kind == "size" else _FIELDS[name].default
    return on.replace(**{name: off_value}), on


def resolve(settings: typing.Mapping[str, object]) -> ModelConfig:
    """A valid ``ModelConfig`` from ``settings`` (every required field plus any options), dropping the options
    x-transformers rejects with what is already set: options are taken in field order and an option whose
    value does not combine (``ModelConfig`` raises) is left at its default. The tests' strategies draw options
    independently and resolve them here."""
    required = {f.name: settings[f.name] for f in _FIELDS.values() if f.default is dataclasses.MISSING}
    cfg = ModelConfig(**required)
    for name, value in settings.items():
        if name in required or value == _FIELDS[name].default:
            continue
        try:
            cfg = cfg.replace(**{name: value})
        except ConfigError:
            continue
    return cfg


def check_field_metadata(field: dataclasses.Field) -> None:
    """Raise ``OptionRegistryError`` naming ``field`` if it lacks the metadata its control, URL parameter and
    help text come from (``core.schema.missing_metadata``)."""
    missing = missing_metadata(field)
    if missing:
        raise OptionRegistryError(
            f"ModelConfig field {field.name!r} has no metadata {', '.join(missing)}: declare it with core.schema's "
            "field helpers (_bool, _int, _opt_int, _dropout), as docs/flags.md says")


def check_fields(fields: typing.Iterable[dataclasses.Field] | None = None,
                 registry: typing.Mapping[str, Option] | None = None) -> None:
    """Raise ``OptionRegistryError`` naming the first field of ``fields`` (``ModelConfig``'s by default) that has
    no metadata (``kind``, ``group``, ``description``) or no entry in ``registry`` (``OPTIONS``), or the first
    entry that names no field."""
    fields = list(dataclasses.fields(ModelConfig) if fields is None else fields)
    registry = OPTIONS if registry is None else registry
    for f in fields:
        check_field_metadata(f)
        if f.name not in registry:
            raise OptionRegistryError(
                f"ModelConfig field {f.name!r} has no entry in core.options.OPTIONS: add one (the value that turns it "
                "on, its rules, which costs it changes), as docs/flags.md says")
    names = {f.name for f in fields}
    for name in registry:
        if name not in names:
            raise OptionRegistryError(f"core.options.OPTIONS entry {name!r} names no ModelConfig field")


check_fields()
