"""Predicted latency from a roofline: per part of the model, closed-form FLOPs and the minimum bytes the
part's kernels move, against a device's compute and bandwidth ceilings (``core.hardware.Hardware``).

Standard library only. One row per (phase, part) in the vocabulary of the measured latency breakdown
(``profiling.measure.breakdown``): ``phase`` is ``forward``, ``train_step`` or ``decode``, ``component`` one of
``LATENCY_PARTS``. The predicted time of a part is ``max(flops / peak, bytes / bandwidth)``, the time of a
phase the sum of its parts: a lower bound that assumes every kernel runs at a ceiling and nothing else
costs time. It ignores kernel-launch and Python overhead (which dominate small models on a GPU: the
measured / predicted ratio shows by how much), caches (bytes are DRAM traffic of each kernel's own
inputs and outputs, read once and written once), and overlap between kernels.

Symbols as in ``core.cost_model``: ``b`` batch, ``n`` tokens per sequence, ``T = b n``, ``d`` dim, ``L``
depth, ``h`` heads, ``g`` K/V heads, ``dh`` head width, ``f`` feed-forward width, ``V`` vocabulary, ``e``
bytes per element, ``P`` parameters. FLOPs are 2 per multiply-add (``core.cost_model.flop_counts``; the
element-wise parts count 0 FLOPs there, so they sit on the bandwidth roof at intensity 0).

Bytes per part of one forward (each a sum over the kernels x-transformers 2.31 runs for it):

* ``embedding``: read ``T`` rows of the table and write them, read the ids: ``2 T d e + 8 T``.
* ``token_shift`` (``shift_tokens > 0``): read and write the layer input, ``2 T d e`` per layer (``2L``).
* ``norms``: read and write ``T d e`` per LayerNorm (``2L``, plus the final norm with pre-norm).
* ``qkv_proj``: three linear kernels, each reading the input ``T d e`` and its weight, writing its output:
  ``3 T d e + d (h + 2g) dh e + T (h + 2g) dh e`` per block.
* ``rotary`` (rotary on): read and write q and k, ``2 T (h + g) dh e`` per block.
* ``alibi_bias`` (ALiBi on): what x-transformers materialises to build the bias, from
  ``core.cost_model.memory_estimate``: per rebuilding block (every block with rotary, one without) the
  int64 ``(n, n)`` position difference written, then read and written by ``abs`` and by the negation,
  read by the slope product (``6 * alibi_pos_diff_bytes``), the ``(ha, n, n)`` product written and read
  (``2 * alibi_bias_heads_bytes``), the head padding written (``alibi_bias_padded_bytes``); in every block
  the pad copy in ``Attention.forward`` read and written (``2 * alibi_bias_padded_bytes``). Memory-bound:
  0 FLOPs.
* ``mask_prep``: ``Attend.flash_attn`` outside the kernel: the ``q * scale`` copy (``2 T h dh e``); with
  the ALiBi bias on the flash path the bool causal mask written (``causal_mask_bytes``) and the
  ``masked_fill`` reading the bias and the mask and writing the dense ``(b, h, n, n)`` mask
  (``alibi_bias_padded_bytes + causal_mask_bytes + alibi_sdpa_mask_bytes``); GQA expansion when
  ``1 < g < h`` (``2 T h dh e`` written).
* ``attention``: the attention kernel. SDPA: read q, k, v, write the output (``2 T h dh e + 2 T g dh e``)
  plus, with a dense mask, the mask read (``alibi_sdpa_mask_bytes``); FLOPs of the full square with a
  dense mask, the causal half with ``is_causal=True``. The einsum path (``attn_flash=False``) writes and
  reads the ``(b, h, n, n)`` scores four times (similarities, scaled/masked, softmax, ``P V``) and the
  ALiBi add twice more: ``(4 + 2 [ALiBi]) b h n n e`` on top.
* ``out_proj``: merging the heads (read and write ``T h dh e``) and ``to_out`` (read ``T h dh e`` and
  the weight, write ``T d e``).
* ``feedforward``: both linears (inputs, weights, outputs) and the activation (read and write ``T f e``;
  GLU doubles the first width and adds the product).
* ``residual``: per layer read the branch output and the residual, write the sum (``3 T d e``); with the
  DeepNorm residual scale two more (``5 T d e``).
* ``logits``: read the final hidden state and the ``d x V`` weight, write ``T V e``.

Training step (``phase="train_step"``): the forward parts as above, plus ``loss`` (``F.cross_entropy``:
read the logits, write and read the log-softmax: ``3 T V e``), ``backward`` (FLOPs:
``core.cost_model.train_step_flops`` minus the forward; bytes: twice the forward's, since every forward
read has a gradient write and every write a gradient read), ``optimizer`` (``torch.optim.AdamW``,
foreach: read parameter, gradient and both moments, write parameter and both moments: ``7 P e``).

Decode, per new token (``phase="decode"``, ``batch`` sequences, ``context`` tokens already seen):
``cached`` (``decode_cached``): ``core.cost_model.decode_flops``, and every weight read once plus the KV
cache read (``P e + 2 L b g context dh e``); ``uncached`` (``decode_uncached``, what x-transformers 2.31
gives a user of ALiBi + rotary, which cannot use the cache): one whole forward of ``context + 1`` tokens.

``attention="fused"`` predicts the what-if implementation instead of what x-transformers runs: ALiBi
computed inside the kernel (FlexAttention's ``score_mod``), a causal block mask: no ``alibi_bias``, no
dense mask, the causal half of the FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass

from xtlens.core.config import ModelConfig, Workload
from xtlens.core.cost_model import (
    decode_flops,
    flop_counts,
    fused_sdpa_backward,
    memory_estimate,
    param_counts,
    train_step_flops,
)
from xtlens.core.hardware import Hardware

__all__ = [
    "LATENCY_PARTS",
    "TRAIN_PARTS",
    "ATTENTION_VARIANTS",
    "PartCost",
    "part_costs",
    "decode_costs",
    "predict",
    "predicted_ms",
    "phase_totals_ms",
]

#: Parts of one forward, in model order (the measured breakdown uses the same names).
LATENCY_PARTS: tuple[str, ...] = (
    "embedding", "token_shift", "norms", "qkv_proj", "rotary", "alibi_bias", "mask_prep", "attention",
    "out_proj", "feedforward", "residual", "logits",
)
#: Parts a training step adds after the forward parts.
TRAIN_PARTS: tuple[str, ...] = ("loss", "backward", "optimizer")
#: ``asbuilt``: what x-transformers 2.31 runs; ``fused``: ALiBi inside a causal attention kernel (what-if).
ATTENTION_VARIANTS = ("asbuilt", "fused")
INDEX_BYTES = 8


@dataclass(frozen=True, kw_only=True)
class PartCost:
    """Closed-form work of one part in one phase: FLOPs (2 per multiply-add) and minimum bytes moved."""

    phase: str
    component: str
    flops: int
    bytes: int

    @property
    def intensity_flops_per_byte(self) -> float:
        return self.flops / self.bytes if self.bytes else float("inf")

    def time_s(self, hw: Hardware, dtype: str) -> float:
        """``max(flops / peak, bytes / bandwidth)``: the roofline time of this part on ``hw``."""
        peak = hw.peak(dtype)
        compute = self.flops / peak if (peak and self.flops) else 0.0
        return max(compute, self.bytes / hw.mem_bandwidth_bytes_per_s)

    def bound(self, hw: Hardware, dtype: str) -> str:
        """``compute`` or ``memory``: which ceiling sets the predicted time."""
        ridge = hw.ridge_flops_per_byte(dtype)
        return "compute" if ridge is not None and self.intensity_flops_per_byte >= ridge else "memory"


def _check_variant(attention: str) -> None:
    if attention not in ATTENTION_VARIANTS:
        raise ValueError(f"attention = {attention!r}: one of {', '.join(ATTENTION_VARIANTS)}")


def _forward(cfg: ModelConfig, wl: Workload, attention: str) -> dict[str, tuple[int, int]]:
    _check_variant(attention)
    b, n, e = wl.batch, wl.seq_len, wl.dtype_bytes
    T = b * n
    d, L, h, g, dh, f, V = cfg.dim, cfg.depth, cfg.heads, cfg.kv_heads, cfg.attn_dim_head, cfg.ff_inner_dim, cfg.num_tokens
    fc, mem = flop_counts(cfg, wl), memory_estimate(cfg, wl)
    fused = attention == "fused"
    alibi = cfg.alibi_pos_bias and not fused
    dense_mask = alibi and cfg.attn_flash
    causal_kernel = fused or (cfg.attn_flash and not alibi)
    layers = 2 * L
    norms = 2 * L + (0 if cfg.deepnorm else 1)
    hidden = T * d * e
    q_bytes = T * h * dh * e
    kv_bytes = T * g * dh * e
    parts: dict[str, tuple[int, int]] = {}
    parts["embedding"] = (0, 2 * hidden + INDEX_BYTES * T)
    parts["token_shift"] = (0, layers * 2 * hidden if cfg.shift_tokens > 0 else 0)
    parts["norms"] = (0, norms * 2 * hidden)
    w_qkv = d * (h + 2 * g) * dh * e
    parts["qkv_proj"] = (fc.q_proj_flops + fc.k_proj_flops + fc.v_proj_flops,
                         L * (3 * hidden + w_qkv + q_bytes + 2 * kv_bytes))
    parts["rotary"] = (0, L * 2 * (q_bytes + kv_bytes) if cfg.uses_rotary else 0)
    if alibi:
        per_rebuild = 6 * mem.alibi_pos_diff_bytes + 2 * mem.alibi_bias_heads_bytes + mem.alibi_bias_padded_bytes
        alibi_bytes = mem.alibi_blocks_rebuilding_bias * per_rebuild + L * 2 * mem.alibi_bias_padded_bytes
    else:
        alibi_bytes = 0
    parts["alibi_bias"] = (0, alibi_bytes)
    prep = 2 * q_bytes if cfg.attn_flash and not fused else 0
    if dense_mask:
        prep += mem.alibi_bias_padded_bytes + 2 * mem.causal_mask_bytes + mem.alibi_sdpa_mask_bytes
    if 1 < g < h and not fused:
        prep += 2 * q_bytes
    parts["mask_prep"] = (0, L * prep)
    attn_flops = fc.attn_flops_causal if causal_kernel else fc.attn_flops
    attn_bytes = 2 * q_bytes + 2 * kv_bytes
    if dense_mask:
        attn_bytes += mem.alibi_sdpa_mask_bytes
    if not cfg.attn_flash and not fused:
        attn_bytes += (4 + (2 if cfg.alibi_pos_bias else 0)) * b * h * n * n * e
    parts["attention"] = (attn_flops, L * attn_bytes)
    parts["out_proj"] = (fc.out_proj_flops, L * (2 * q_bytes + q_bytes + h * dh * d * e + hidden))
    width = 2 * f if cfg.ff_glu else f
    ff_bytes = (hidden + d * width * e + T * width * e) + (2 * T * width * e + (T * f * e if cfg.ff_glu else 0)) \
        + (T * f * e + f * d * e + hidden)
    parts["feedforward"] = (fc.ff_flops, L * ff_bytes)
    parts["residual"] = (0, layers * (5 if cfg.deepnorm else 3) * hidden)
    parts["logits"] = (fc.logits_flops, hidden + d * V * e + T * V * e)
    return parts


def part_costs(cfg: ModelConfig, wl: Workload, *, phase: str = "forward", attention: str = "asbuilt"
               ) -> list[PartCost]:
    """The ``PartCost`` of every part of ``phase`` (``forward`` or ``train_step``; see the module docstring).
    Parts a configuration does not have (no rotary, no ALiBi) are kept with 0 FLOPs and 0 bytes."""
    fwd = _forward(cfg, wl, attention)
    rows = [PartCost(phase=phase, component=k, flops=v[0], bytes=v[1]) for k, v in fwd.items()]
    if phase == "forward":
        return rows
    if phase != "train_step":
        raise ValueError(f"phase = {phase!r}: forward or train_step (decode: decode_costs)")
    T, V, e = wl.tokens, cfg.num_tokens, wl.dtype_bytes
    fc = flop_counts(cfg, wl)
    fused = attention == "fused"
    causal = fused or (cfg.attn_flash and not cfg.alibi_pos_bias)
    total_train = train_step_flops(fc, fused_backward=fused or fused_sdpa_backward(cfg), causal=causal)
    fwd_flops = sum(v[0] for v in fwd.values())
    fwd_bytes = sum(v[1] for v in fwd.values())
    P = param_counts(cfg).num_params
    rows += [
        PartCost(phase=phase, component="loss", flops=0, bytes=3 * T * V * e),
        PartCost(phase=phase, component="backward", flops=total_train - fwd_flops, bytes=2 * fwd_bytes),
        PartCost(phase=phase, component="optimizer", flops=0, bytes=7 * P * e),
    ]
    return rows


def decode_costs(cfg: ModelConfig, *, batch: int, context_tokens: int, dtype: str = "float32",
                 cached: bool = True, attention: str = "asbuilt") -> list[PartCost]:
    """Work of one decoding step (one new token per sequence after ``context_tokens``).

    ``cached``: one ``PartCost`` (component ``decode_cached``): ``decode_flops`` and every weight plus the
    KV cache read once. ``cached=False``: the parts of a whole forward of ``context_tokens + 1`` tokens
    (what generation without a KV cache runs per token), each with ``phase="decode"``."""
    wl = Workload(batch=batch, seq_len=context_tokens + 1, dtype=dtype)
    if not cached:
        return [PartCost(phase="decode", component=p.component, flops=p.flops, bytes=p.bytes)
                for p in part_costs(cfg, wl, attention=attention)]
    e = wl.dtype_bytes
    kv = 2 * cfg.depth * batch * cfg.kv_heads * context_tokens * cfg.attn_dim_head * e
    weights = param_counts(cfg).num_params * e
    return [PartCost(phase="decode", component="decode_cached",
                     flops=decode_flops(cfg, batch=batch, context_tokens=context_tokens), bytes=weights + kv)]


def predicted_ms(parts: list[PartCost], hw: Hardware, dtype: str) -> float:
    """Sum of the parts' roofline times in milliseconds."""
    return 1e3 * sum(p.time_s(hw, dtype) for p in parts)


def predict(cfg: ModelConfig, wl: Workload, hw: Hardware, *, attention: str = "asbuilt",
            decode_cached: bool | None = None) -> dict[str, float]:
    """The three headline predictions in milliseconds: ``predicted_forward_ms``, ``predicted_train_step_ms``
    and ``predicted_decode_ms_per_token`` (context ``wl.seq_len - 1``; cached when x-transformers can
    decode this configuration with a KV cache, i.e. not ALiBi with rotary, unless ``decode_cached`` says)."""
    cached = decode_cached if decode_cached is not None else not (
        cfg.alibi_pos_bias and cfg.uses_rotary and attention == "asbuilt")
    return {
        "predicted_forward_ms": predicted_ms(part_costs(cfg, wl, attention=attention), hw, wl.dtype),
        "predicted_train_step_ms": predicted_ms(part_costs(cfg, wl, phase="train_step", attention=attention), hw,
                                                wl.dtype),
        "predicted_decode_ms_per_token": predicted_ms(
            decode_costs(cfg, batch=wl.batch, context_tokens=max(wl.seq_len - 1, 1), dtype=wl.dtype, cached=cached,
                         attention=attention), hw, wl.dtype),
    }


def phase_totals_ms(parts: list[PartCost], hw: Hardware, dtype: str) -> dict[str, float]:
    """Predicted milliseconds per part (``component -> ms``)."""
    return {p.component: 1e3 * p.time_s(hw, dtype) for p in parts}
