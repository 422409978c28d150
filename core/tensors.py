"""The one table of the model's parameter tensors: for a ``ModelConfig``, every tensor of the model
``core.builder.build_model(cfg)`` builds (x-transformers 2.31), with its ``named_parameters()`` name, shape and
what it is. Parameter counts, shapes, linear layers, tensor-parallel shares, quantised sizes and optimizer state
(``core.params``, ``core.training``, ``core.serving``) all derive from it; ``tests/core/test_tensors.py`` compares
it tensor by tensor with the real model for every option.

Standard library only. Module paths (x_transformers.py 2.31.10 line numbers):

* ``token_emb.emb.weight`` (``TokenEmbedding``, 398), ``pos_emb.emb.weight`` (``AbsolutePositionalEmbedding``,
  416; only without rotary and T5 bias, ``disable_abs_pos_emb`` 2892), ``to_logits.weight`` (untied, 4162);
* ``attn_layers.stream_emb`` (hyper-connections, 2878), then ``attn_layers.layers.<i>``, one per sub-layer
  (``a, f`` per block, ``f, a, f`` with ``macaron``): ``.0.<k>`` its norms (``k`` = 0 pre-branch with pre-norm,
  1 post-branch with ``sandwich_norm``, 2 post-main with post-norm; 3301-3319), ``.1`` the block (wrapped in
  ``ShiftTokens`` ``.fn`` with ``shift_tokens``, and a macaron feed-forward in ``Scale`` ``.fn``; 3237-3245), ``.2``
  the residual (``Residual.residual_scale`` with DeepNorm, 1189; ``HyperConnection`` with several streams, 1376);
* ``attn_layers.rel_pos.relative_attention_bias.weight`` (T5 bias, 474), ``attn_layers.final_norm`` (pre-norm, 3157).

Norms: ``LayerNorm.gamma`` ``(d,)`` (1017), ``RMSNorm.g`` ``(d,)`` (1076), ``ScaleNorm.g`` ``(1,)`` (1059),
``SimpleRMSNorm`` none (1114). The rotary, xpos and ALiBi tables are buffers, not parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xtlens.core.config import ModelConfig

__all__ = ["ParamTensor", "param_tensors", "BufferTensor", "buffer_tensors", "ROLES", "TP_SPLITS", "REL_POS_NUM_BUCKETS", "numel", "norm_params_each",
           "num_norms"]

#: what a tensor is; ``ParamCounts`` sums the tensors by role
ROLES = ("token_embedding", "abs_pos_embedding", "attention", "attn_gate", "mem_kv", "feedforward", "norm",
         "residual_scale", "logits", "rel_pos_bias", "hyper_connection")

#: how Megatron-style tensor parallelism splits a tensor: ``column`` (output features / heads split), ``row``
#: (input features split), ``vocab`` (vocabulary-parallel rows), ``replicated`` (every rank holds all of it)
TP_SPLITS = ("column", "row", "vocab", "replicated")

REL_POS_NUM_BUCKETS = 32  # RelativePositionBias(num_buckets=rel_pos_num_buckets=32), x_transformers.py:2922


@dataclass(frozen=True, kw_only=True)
class ParamTensor:
    """One parameter tensor of the built model (tied tensors appear once, under their first name).

    ``is_matmul_weight``: an ``nn.Linear`` weight ``(out, in)`` used in a matrix product (what weight-only
    quantisation replaces). ``cast_by_autocast``: an argument of an op ``torch.autocast`` runs in 16 bits
    (``nn.Linear`` weights and biases, the tied token table in the logits matmul, the hyper-connections
    ``dynamic_*_fn`` in theirs; not ``mem_k`` / ``mem_v``, which are concatenated), of which autocast keeps a
    16-bit copy per forward. ``tp_split``: one of ``TP_SPLITS``.
    """

    name: str
    shape: tuple[int, ...]
    role: str
    is_matmul_weight: bool = False
    cast_by_autocast: bool = False
    tp_split: str = "replicated"

    @property
    def numel(self) -> int:
        return numel(self.shape)


def numel(shape: tuple[int, ...]) -> int:
    """Elements of a tensor of ``shape`` (1 for a scalar ``()``)."""
    return math.prod(shape)


def norm_params_each(cfg: ModelConfig) -> int:
    """Parameters of one norm: ``LayerNorm`` / ``RMSNorm`` a gain of ``d`` (x_transformers.py:1017, 1076),
    ``ScaleNorm`` one scalar (1059), ``SimpleRMSNorm`` none (1114)."""
    if cfg.use_simple_rmsnorm:
        return 0
    return 1 if cfg.use_scalenorm else cfg.dim


def num_norms(cfg: ModelConfig) -> int:
    """Norm modules (with or without parameters): per sub-layer a pre-branch norm (pre-norm) or a post-main norm
    (post-norm), plus a post-branch norm with ``sandwich_norm``; a final norm with pre-norm only
    (x_transformers.py:3155, 3301-3303). ``num_layers`` sub-layers: ``2L``, ``3L`` with ``macaron``."""
    return cfg.num_layers * (2 if cfg.sandwich_norm else 1) + (1 if cfg.uses_pre_norm else 0)


def _norm(cfg: ModelConfig, prefix: str) -> list[ParamTensor]:
    each = norm_params_each(cfg)
    if not each:
        return []
    gain = "g" if cfg.use_rmsnorm or cfg.use_scalenorm else "gamma"
    return [ParamTensor(name=f"{prefix}.{gain}", shape=(each,), role="norm")]


def _linear(name: str, out_features: int, in_features: int, role: str, split: str, *, bias: bool,
            bias_split: str | None = None) -> list[ParamTensor]:
    """An ``nn.Linear``: its ``(out, in)`` weight and, with ``bias``, its ``(out,)`` bias. A column-parallel
    layer splits its bias with its outputs; a row-parallel layer's bias is added after the all-reduce, whole on
    every rank (Megatron-LM ``RowParallelLinear``)."""
    out = [ParamTensor(name=f"{name}.weight", shape=(out_features, in_features), role=role, is_matmul_weight=True,
                       cast_by_autocast=True, tp_split=split)]
    if bias:
        out.append(ParamTensor(name=f"{name}.bias", shape=(out_features,), role=role, cast_by_autocast=True,
                               tp_split=bias_split or ("column" if split == "column" else "replicated")))
    return out


def _attention(cfg: ModelConfig, prefix: str) -> list[ParamTensor]:
    """``Attention`` (x_transformers.py:2013-2242): its own parameters first (``mem_k``, ``mem_v``
    ``(g, m, dh)``, 2190), then ``to_q``, ``to_k``, ``to_v``, ``to_v_gate`` (2048), ``to_out`` in the order they are
    registered, all bias-free. Heads do not split ``dim``: ``to_q`` is ``(h*dh, d)``."""
    d, h, g, dh, m = cfg.dim, cfg.heads, cfg.kv_heads, cfg.attn_dim_head, cfg.attn_num_mem_kv
    out: list[ParamTensor] = []
    if m:
        # memory slots are per K/V head: a head-split rank holds its heads' slots
        out += [ParamTensor(name=f"{prefix}.mem_{kv}", shape=(g, m, dh), role="mem_kv", tp_split="column")
                for kv in ("k", "v")]
    out += _linear(f"{prefix}.to_q", h * dh, d, "attention", "column", bias=False)
    out += _linear(f"{prefix}.to_k", g * dh, d, "attention", "column", bias=False)
    out += _linear(f"{prefix}.to_v", g * dh, d, "attention", "column", bias=False)
    if cfg.attn_gate_values:
        out += _linear(f"{prefix}.to_v_gate", h * dh, d, "attn_gate", "column", bias=False)
    out += _linear(f"{prefix}.to_out", d, h * dh, "attention", "row", bias=False)
    return out


def _feedforward(cfg: ModelConfig, prefix: str) -> list[ParamTensor]:
    """``FeedForward`` (x_transformers.py:1763-1830): ``ff.0`` the input projection (``Sequential(Linear,
    activation)``: ``ff.0.0``; with GLU ``GLU.proj`` ``(2f, d)``, which keeps its bias even with ``ff_no_bias``,
    1752), ``ff.1`` the dropout, ``ff.2`` the output projection ``(d, f)``."""
    d, f = cfg.dim, cfg.ff_inner_dim
    proj_in = f"{prefix}.ff.0.proj" if cfg.ff_glu else f"{prefix}.ff.0.0"
    width = 2 * f if cfg.ff_glu else f
    return (_linear(proj_in, width, d, "feedforward", "column", bias=cfg.ff_glu or not cfg.ff_no_bias)
            + _linear(f"{prefix}.ff.2", d, f, "feedforward", "row", bias=not cfg.ff_no_bias))


def _hyper_connection(cfg: ModelConfig, prefix: str) -> list[ParamTensor]:
    """``HyperConnection`` with ``s`` streams and one input view (x_transformers.py:1376-1410): its own parameters
    in order, then the bias-free ``nn.LayerNorm`` ``norm.weight``."""
    d, s = cfg.dim, cfg.num_residual_streams
    shapes = (("static_beta", (s,)), ("static_alpha", (s, s + 1)), ("dynamic_alpha_fn", (d, s + 1)),
              ("dynamic_alpha_scale", ()), ("dynamic_beta_fn", (d,)), ("dynamic_beta_scale", ()), ("norm.weight", (d,)))
    # the two ``dynamic_*_fn`` weights enter ``normed @ fn`` products (1426, 1442), which autocast runs in 16 bits
    return [ParamTensor(name=f"{prefix}.{name}", shape=shape, role="hyper_connection",
                        cast_by_autocast=name.startswith("dynamic_") and name.endswith("_fn"))
            for name, shape in shapes]


def _layer_types(cfg: ModelConfig) -> list[str]:
    """``a`` attention / ``f`` feed-forward, one per sub-layer (``AttentionLayers.layer_types``, 3088)."""
    return list(("f", "a", "f") if cfg.macaron else ("a", "f")) * cfg.depth


def param_tensors(cfg: ModelConfig) -> list[ParamTensor]:
    """Every parameter tensor of the model, in ``named_parameters()`` order (see the module docstring)."""
    d, V = cfg.dim, cfg.num_tokens
    out = [ParamTensor(name="token_emb.emb.weight", shape=(V, d), role="token_embedding", tp_split="vocab",
                       cast_by_autocast=cfg.tie_embedding)]  # tied: the logits matmul casts the table
    if cfg.has_abs_pos_emb:
        out.append(ParamTensor(name="pos_emb.emb.weight", shape=(cfg.max_seq_len, d), role="abs_pos_embedding"))
    streams = cfg.num_residual_streams > 1
    if streams:
        out.append(ParamTensor(name="attn_layers.stream_emb", shape=(cfg.num_residual_streams, d),
                               role="hyper_connection"))
    for i, kind in enumerate(_layer_types(cfg)):
        layer = f"attn_layers.layers.{i}"
        if cfg.uses_pre_norm:
            out += _norm(cfg, f"{layer}.0.0")
        if cfg.sandwich_norm:
            out += _norm(cfg, f"{layer}.0.1")
        if not cfg.uses_pre_norm:
            out += _norm(cfg, f"{layer}.0.2")
        block = f"{layer}.1" + (".fn" if cfg.shift_tokens > 0 else "") + (".fn" if cfg.macaron and kind == "f" else "")
        out += _attention(cfg, block) if kind == "a" else _feedforward(cfg, block)
        if streams:
            out += _hyper_connection(cfg, f"{layer}.2")
        elif cfg.deepnorm:
            out.append(ParamTensor(name=f"{layer}.2.residual_scale", shape=(d,), role="residual_scale"))
    if cfg.rel_pos_bias:
        out.append(ParamTensor(name="attn_layers.rel_pos.relative_attention_bias.weight",
                               shape=(REL_POS_NUM_BUCKETS, cfg.heads), role="rel_pos_bias"))
    if cfg.uses_pre_norm:
        out += _norm(cfg, "attn_layers.final_norm")
    if not cfg.tie_embedding:
        out += _linear("to_logits", V, d, "logits", "vocab", bias=False)
    return out


@dataclass(frozen=True, kw_only=True)
class BufferTensor:
    """One floating buffer of the built model (moved to the model's dtype with it): ``role`` is ``rotary`` or
    ``alibi_slopes``."""

    name: str
    shape: tuple[int, ...]
    role: str

    @property
    def numel(self) -> int:
        return numel(self.shape)


def buffer_tensors(cfg: ModelConfig) -> list[BufferTensor]:
    """The model's buffers after construction, in ``named_buffers()`` order: rotary ``inv_freq`` ``(rot / 2,)`` and
    the xpos ``scale`` as many (``RotaryEmbedding``, x_transformers.py:852, 864), ALiBi ``slopes`` ``(ha, 1, 1)``
    (``AlibiPositionalBias``, 646). Not listed: ALiBi's non-persistent ``bias`` cache, which exists only after a
    forward without rotary (``core.memory.alibi_tensors``' ``cached``)."""
    out = []
    if cfg.uses_rotary:
        half = (cfg.rotary_dim // 2,)
        out.append(BufferTensor(name="attn_layers.rotary_pos_emb.inv_freq", shape=half, role="rotary"))
        if cfg.rotary_xpos:
            out.append(BufferTensor(name="attn_layers.rotary_pos_emb.scale", shape=half, role="rotary"))
    if cfg.alibi_pos_bias:
        out.append(BufferTensor(name="attn_layers.rel_pos.slopes", shape=(cfg.alibi_heads, 1, 1), role="alibi_slopes"))
    return out
