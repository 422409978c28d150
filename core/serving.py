"""Per-device memory of serving under a ``core.setup.ServingSetup``: weights as served (16 bits, or the
``nn.Linear`` weights of ``core.tensors.param_tensors`` quantised to 8 / 4 bits), the KV cache at its precision,
and the prefill's activations beyond the cache. Quantised sizes are checked exactly against
``profiling.measure.setups.quantise_weight`` on the real model."""

from __future__ import annotations

from dataclasses import dataclass

from xtlens.core.config import ModelConfig, Workload
from xtlens.core.memory import buffers_bytes, inference_activation_bytes, kv_bytes_per_token
from xtlens.core.params import linear_shapes, param_counts
from xtlens.core.setup import ServingSetup

__all__ = ["ServingMemory", "serving_memory", "quantised_linear_bytes", "serving_weight_bytes",
           "serving_kv_bytes_per_token", "KV_ELEMENT_BYTES", "QUANT_SCALE_BYTES"]

#: bytes per cached element for each KV-cache precision (``None`` = the workload dtype)
KV_ELEMENT_BYTES = {"16": 2, "fp8": 1, "int8": 1}
QUANT_SCALE_BYTES = 2  # float16 scale (and zero point) per group / per cached token and K/V head


def quantised_linear_bytes(out_features: int, in_features: int, bits: int, group_size: int) -> int:
    """One ``(out, in)`` linear weight quantised in groups of ``group_size`` input features: ``out * in * bits / 8``
    bytes of codes (int4 packed two per byte) plus a float16 scale per group, and for 4 bits a float16 zero
    point per group (GPTQ / AWQ layout): ``out*in*bits/8 + out*(in/group)*2*(2 if bits == 4 else 1)`` bytes.
    Checked exactly against ``profiling.measure.setups.quantise_weight`` on the real model."""
    groups = out_features * (in_features // group_size)
    return out_features * in_features * bits // 8 + groups * QUANT_SCALE_BYTES * (2 if bits == 4 else 1)


def serving_weight_bytes(cfg: ModelConfig, wl: Workload, serving: ServingSetup) -> int:
    """Weights as served: every parameter in the workload dtype (``weights_bits=None``), in 16 bits (16), or the
    ``nn.Linear`` weights (``ParamTensor.is_matmul_weight``) quantised by ``quantised_linear_bytes`` (8, 4) and the
    rest (embeddings, norms, biases, residual scales, memory slots) in 16 bits, in bytes."""
    if serving.weights_bits is None:
        return param_counts(cfg).num_params * wl.dtype_bytes
    if serving.weights_bits == 16:
        return param_counts(cfg).num_params * 2
    linears = linear_shapes(cfg)
    q = sum(quantised_linear_bytes(o, i, serving.weights_bits, serving.group_size) for o, i in linears)
    rest = param_counts(cfg).num_params - sum(o * i for o, i in linears)
    return q + rest * 2


def serving_kv_bytes_per_token(cfg: ModelConfig, wl: Workload, serving: ServingSetup) -> int:
    """KV-cache bytes per cached token and sequence: ``2 * L * g * dh * e_kv`` (``kv_bytes_per_token``) plus, for
    ``int8``, one float16 scale per K/V head and block: ``2 * L * g * 2`` bytes."""
    if serving.kv_cache is None:
        return kv_bytes_per_token(cfg, wl.dtype_bytes)
    out = kv_bytes_per_token(cfg, KV_ELEMENT_BYTES[serving.kv_cache])
    if serving.kv_cache == "int8":
        out += 2 * cfg.depth * cfg.kv_heads * QUANT_SCALE_BYTES
    return out


@dataclass(frozen=True, kw_only=True)
class ServingMemory:
    """Per-device memory of serving ``concurrent`` sequences of ``context_len`` tokens, in bytes:
    ``weights_bytes`` (``serving_weight_bytes``), ``buffers_bytes``, ``kv_cache_bytes`` (``concurrent * context *
    kv_bytes_per_token``), ``activation_bytes`` (the prefill's peak activations beyond the cache, in the
    workload dtype: ``inference_activation_bytes`` less its ``cached_k_v`` part) and ``total_bytes``, their sum.
    With the default setup ``total_bytes`` is ``MemoryEstimate.inference_total_bytes``."""

    weights_bytes: int
    buffers_bytes: int
    kv_cache_bytes: int
    kv_cache_bytes_per_token: int
    activation_bytes: int
    total_bytes: int


def serving_memory(cfg: ModelConfig, wl: Workload, serving: ServingSetup) -> ServingMemory:
    """Per-device serving memory (see ``ServingMemory``), in bytes."""
    swl = serving.workload(wl)
    act, parts = inference_activation_bytes(cfg, swl)
    per_token = serving_kv_bytes_per_token(cfg, swl, serving)
    kv = per_token * swl.tokens
    weights = serving_weight_bytes(cfg, swl, serving)
    buffers = buffers_bytes(cfg, swl)
    beyond = act - parts.get("cached_k_v", 0)
    return ServingMemory(weights_bytes=weights, buffers_bytes=buffers, kv_cache_bytes=kv,
                         kv_cache_bytes_per_token=per_token, activation_bytes=beyond,
                         total_bytes=weights + buffers + kv + beyond)
