"""Parameter counts and shapes of the model, all derived from the one table of its tensors
(``core.tensors.param_tensors``): counts by part, shapes, the ``nn.Linear`` weights, tensor-parallel shares.

Checked exactly against the real model by ``tests/core/test_cost_model.py`` (counts by part, over a grid and
hypothesis-generated configurations) and ``tests/core/test_tensors.py`` (the table, tensor by tensor).
"""

from __future__ import annotations

from dataclasses import dataclass

from xtlens.core.config import ModelConfig
from xtlens.core.tensors import (
    REL_POS_NUM_BUCKETS,
    ParamTensor,
    buffer_tensors,
    norm_params_each,
    num_norms,
    param_tensors,
)

__all__ = ["ParamCounts", "param_counts", "param_shapes", "linear_shapes", "tp_params", "tp_elements",
           "hyper_connection_params_per_layer", "buffer_elements", "ceil_div", "norm_params_each", "num_norms",
           "REL_POS_NUM_BUCKETS"]


@dataclass(frozen=True, kw_only=True)
class ParamCounts:
    """Exact parameter counts of the model ``core.builder.build_model(cfg)`` builds (x-transformers 2.31): the
    tensors of ``core.tensors.param_tensors(cfg)`` summed by role.

    ``embedding_params`` are the lookup tables only: the token embedding ``V * d`` plus the learned absolute
    position embedding ``max_seq_len * d`` (when present); they cost no FLOPs. The untied output projection
    ``to_logits`` (``d * V``, a matmul) is NOT embedding: it is ``logits_params``, inside ``non_embedding_params``
    (0 with ``tie_embedding``). ``attention_params`` includes the value gate (``attn_gate_params``) and the memory
    slots (``mem_kv_params``). ``num_params = embedding + attention + feedforward + norm + residual_scale + logits
    + rel_pos_bias + hyper_connection``; ``num_param_tensors`` counts tied tensors once; ``buffer_elements`` are
    the rotary / xpos / ALiBi tables (buffers, not parameters).
    """

    token_embedding_params: int
    abs_pos_embedding_params: int
    attention_params: int
    feedforward_params: int
    norm_params: int
    residual_scale_params: int
    logits_params: int
    attention_params_per_block: int
    feedforward_params_per_block: int
    embedding_params: int
    non_embedding_params: int
    num_params: int
    num_param_tensors: int
    buffer_elements: int
    attn_gate_params: int = 0
    mem_kv_params: int = 0
    rel_pos_bias_params: int = 0
    hyper_connection_params: int = 0


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def buffer_elements(cfg: ModelConfig) -> int:
    """Floating buffer elements (``core.tensors.buffer_tensors``): rotary ``inv_freq`` ``rotary_dim / 2`` and xpos
    ``scale`` as many, ALiBi ``slopes`` one per ALiBi head."""
    return sum(t.numel for t in buffer_tensors(cfg))


def _by_role(tensors: list[ParamTensor]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in tensors:
        out[t.role] = out.get(t.role, 0) + t.numel
    return out


def param_counts(cfg: ModelConfig) -> ParamCounts:
    """Exact parameter counts (see ``ParamCounts``)."""
    tensors = param_tensors(cfg)
    role = _by_role(tensors)
    token, abs_pos = role.get("token_embedding", 0), role.get("abs_pos_embedding", 0)
    gate, mem_kv = role.get("attn_gate", 0), role.get("mem_kv", 0)
    attention = role.get("attention", 0) + gate + mem_kv
    feedforward = role.get("feedforward", 0)
    total = sum(role.values())
    embedding = token + abs_pos
    return ParamCounts(
        token_embedding_params=token,
        abs_pos_embedding_params=abs_pos,
        attention_params=attention,
        feedforward_params=feedforward,
        norm_params=role.get("norm", 0),
        residual_scale_params=role.get("residual_scale", 0),
        logits_params=role.get("logits", 0),
        attention_params_per_block=attention // cfg.depth,
        feedforward_params_per_block=feedforward // cfg.num_ff_layers,
        embedding_params=embedding,
        non_embedding_params=total - embedding,
        num_params=total,
        num_param_tensors=len(tensors),
        buffer_elements=buffer_elements(cfg),
        attn_gate_params=gate,
        mem_kv_params=mem_kv,
        rel_pos_bias_params=role.get("rel_pos_bias", 0),
        hyper_connection_params=role.get("hyper_connection", 0),
    )


def hyper_connection_params_per_layer(cfg: ModelConfig) -> int:
    """Parameters of one sub-layer's ``HyperConnection`` (``d*(s+3) + s*(s+2) + 2`` with ``s`` streams; 0 with
    one stream)."""
    return sum(t.numel for t in param_tensors(cfg)
               if t.role == "hyper_connection" and t.name.startswith("attn_layers.layers.0."))


def param_shapes(cfg: ModelConfig) -> list[tuple[int, ...]]:
    """Shapes of the model's parameter tensors (one entry per tensor, tied ones once; ``nn.Linear`` weights are
    ``(out, in)``). Their sizes add up to ``param_counts(cfg).num_params``."""
    return [t.shape for t in param_tensors(cfg)]


def linear_shapes(cfg: ModelConfig) -> list[tuple[int, int]]:
    """``(out, in)`` of every ``nn.Linear`` weight (attention projections, value gate, feed-forward, logits)."""
    return [(t.shape[0], t.shape[1]) for t in param_tensors(cfg) if t.is_matmul_weight]


def tp_elements(tensors: list[ParamTensor], tp: int) -> int:
    """Elements one of ``tp`` tensor-parallel ranks holds of ``tensors``: the split ones (column, row, vocab)
    ``1 / tp`` of their sum, rounded up; the replicated ones whole."""
    split = sum(t.numel for t in tensors if t.tp_split != "replicated")
    return ceil_div(split, tp) + sum(t.numel for t in tensors if t.tp_split == "replicated")


def tp_params(cfg: ModelConfig, tp: int) -> int:
    """Parameters one tensor-parallel rank holds (Megatron-LM layout, ``ParamTensor.tp_split``): attention and
    feed-forward projections, the token embedding and the logits (vocabulary-parallel) are split ``tp`` ways
    (rounded up); norms, residual scales, positions, the T5 table, hyper-connections and the biases of
    row-parallel layers are replicated. ``tp = 1``: all of them."""
    return tp_elements(param_tensors(cfg), tp)
