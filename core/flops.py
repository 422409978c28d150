"""FLOPs of the model's forward, training step and cached decode step, in torch's convention
(``torch.utils.flop_counter``: matrix multiplications only, one multiply-add = 2 FLOPs; element-wise work such as
norms, activations, softmax, rotary, ALiBi, residual adds and masking is not counted; so the norm kind,
``attn_qk_norm`` (``F.normalize``), ``rel_pos_bias`` (an embedding lookup), ``residual_attn`` (an add), token
shifting, embeddings and dropouts add nothing). fvcore counts multiply-adds (``*_macs``) and also layer norms
and einsum outer products: see ``profiling.measure.flops``.

Checked exactly against ``FlopCounterMode`` and within 1% of fvcore by ``tests/profiling/test_flops.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from xtlens.core.config import ModelConfig, Workload
from xtlens.core.params import ceil_div
from xtlens.core.setup import TrainingSetup

__all__ = ["FlopCounts", "flop_counts", "FUSED_SDPA_BACKENDS", "fused_sdpa_backward", "train_step_flops",
           "decode_flops", "recompute_extra_flops", "training_flops_for"]


@dataclass(frozen=True, kw_only=True)
class FlopCounts:
    """Forward and training FLOPs of ``wl.batch`` sequences of ``wl.seq_len`` tokens (the terms and their sources
    are numbered in ``flop_counts``).

    "Full square": attention over all ``n * n`` query/key pairs, what FlopCounterMode counts for SDPA and for the
    non-flash ``einsum`` path, and what the kernels compute with a dense mask (ALiBi). ``*_causal``: the
    ``n (n + 1) / 2`` pairs a causal decoder needs. ``fwd_flops = proj + attn + ff + logits + hyper_connection``;
    ``train_step_flops = 3 * fwd_flops`` (no recomputation); ``train_step_flops_flash_recompute`` adds the scores
    a fused SDPA backward recomputes (``attn / 2``), what FlopCounterMode reports with ``attn_flash=True``.
    """

    q_proj_flops: int
    k_proj_flops: int
    v_proj_flops: int
    out_proj_flops: int
    proj_flops: int
    attn_scores_flops: int
    attn_values_flops: int
    attn_flops: int
    attn_scores_flops_causal: int
    attn_values_flops_causal: int
    attn_flops_causal: int
    ff_flops: int
    logits_flops: int
    fwd_flops: int
    fwd_flops_causal: int
    train_step_flops: int
    train_step_flops_flash_recompute: int
    train_step_flops_causal: int
    fwd_flops_per_token: float
    fwd_flops_causal_per_token: float
    train_step_flops_per_token: float
    tokens: int
    gate_proj_flops: int = 0
    hyper_connection_flops: int = 0
    hyper_connection_mv_flops_uncounted: int = 0


def flop_counts(cfg: ModelConfig, wl: Workload) -> FlopCounts:
    """Forward / training FLOPs for ``wl.batch`` sequences of ``wl.seq_len`` tokens (see ``FlopCounts``).

    Symbols: ``b`` batch, ``n`` length, ``T = b * n``, ``d`` dim, ``L`` depth, ``h`` heads, ``g`` K/V heads,
    ``dh`` head width, ``f`` feed-forward width, ``V`` vocabulary, ``m`` memory slots, ``s`` residual streams,
    ``L'`` sub-layers (``2L``, ``3L`` with macaron). x_transformers.py line numbers are 2.31.10's.
    """
    b, n = wl.batch, wl.seq_len
    T = b * n
    d, L, h, g, dh, f, V = cfg.dim, cfg.depth, cfg.heads, cfg.kv_heads, cfg.attn_dim_head, cfg.ff_inner_dim, cfg.num_tokens
    m, s = cfg.attn_num_mem_kv, cfg.num_residual_streams
    # (1) projections per attention block (bias-free ``LinearNoBias``, 2040-2042, 2238-2241): q ``2*T*d*h*dh``,
    #     k and v ``2*T*d*g*dh`` each, out ``2*T*h*dh*d``; heads do not split d
    q = L * 2 * T * d * h * dh
    k = L * 2 * T * d * g * dh
    v = k
    out = L * 2 * T * h * dh * d
    # (2) ``attn_gate_values``: ``to_v_gate`` ``2*T*d*h*dh`` per block (2715), inside ``proj``
    gate = L * 2 * T * d * h * dh if cfg.attn_gate_values else 0
    proj = q + k + v + out + gate
    # (3) scores ``Q K^T`` and values ``P V``, ``2*b*h*n*(n+m)*dh`` each per block over the full square; the
    #     ``m`` memory slots are prepended to the keys (2510-2516). K/V heads shared by ``h / g`` query heads do
    #     not reduce them (the kernels broadcast)
    scores = L * 2 * b * h * n * (n + m) * dh
    values = scores
    # (4) causal half: ``n*(n+1)/2`` pairs, plus the memory slots every query sees
    pairs_causal = n * (n + 1) // 2 + n * m
    scores_c = L * 2 * b * h * pairs_causal * dh
    values_c = scores_c
    attn, attn_c = scores + values, scores_c + values_c
    # (5) feed-forward (1763ff): ``2*T*d*f`` in (``2*T*d*2f`` with GLU) and ``2*T*f*d`` out, per block (``2L``
    #     blocks with macaron)
    ff = cfg.num_ff_layers * (2 * T * d * (2 * f if cfg.ff_glu else f) + 2 * T * f * d)
    # (6) logits ``2*T*d*V``, tied or not (the tied path is ``t @ W.T``, 4164)
    logits = 2 * T * d * V
    # (7) hyper-connections (``HyperConnection.prepare``, 1419-1465), per sub-layer: the ``(T, s, d) @ (d, s+1)``
    #     width-connection weights ``2*T*s*d*(s+1)`` (mm, 1426) and the stream mix ``2*T*(s+1)*s*d`` (bmm, 1450)
    hyper = cfg.num_layers * 4 * T * s * (s + 1) * d if s > 1 else 0
    # (8) the ``(T, s, d) @ (d,)`` depth connection (1442), ``2*T*s*d`` per sub-layer, lowers to ``aten.mv``, for
    #     which FlopCounterMode has no formula: reported apart and left out of ``fwd``
    hyper_mv = cfg.num_layers * 2 * T * s * d if s > 1 else 0
    fwd = proj + attn + ff + logits + hyper
    fwd_c = proj + attn_c + ff + logits + hyper
    # (9) training step: forward + input and weight gradients of every matmul; a fused SDPA backward recomputes
    #     the scores, half the attention forward (see ``train_step_flops``)
    train = 3 * fwd
    return FlopCounts(
        q_proj_flops=q,
        k_proj_flops=k,
        v_proj_flops=v,
        out_proj_flops=out,
        proj_flops=proj,
        attn_scores_flops=scores,
        attn_values_flops=values,
        attn_flops=attn,
        attn_scores_flops_causal=scores_c,
        attn_values_flops_causal=values_c,
        attn_flops_causal=attn_c,
        ff_flops=ff,
        logits_flops=logits,
        fwd_flops=fwd,
        fwd_flops_causal=fwd_c,
        train_step_flops=train,
        train_step_flops_flash_recompute=train + attn // 2,
        train_step_flops_causal=3 * fwd_c,
        fwd_flops_per_token=fwd / T,
        fwd_flops_causal_per_token=fwd_c / T,
        train_step_flops_per_token=train / T,
        tokens=T,
        gate_proj_flops=gate,
        hyper_connection_flops=hyper,
        hyper_connection_mv_flops_uncounted=hyper_mv,
    )


#: SDPA backends whose backward recomputes the attention scores (a fused kernel keeps no ``(n, n)`` matrix).
FUSED_SDPA_BACKENDS = ("flash", "efficient", "cudnn", "cpu_flash", "overrideable")


def fused_sdpa_backward(cfg: ModelConfig, backend: str | None = None) -> bool:
    """Whether the training step's attention backward recomputes ``Q K^T`` (one rule for every caller).

    ``backend`` is the SDPA kernel that ran (``profiling.measure.sdpa``'s label) when it is known: fused for
    flash / efficient / cuDNN / the CPU flash kernel, not for ``math`` or x-transformers' einsum path.
    Unknown (a prediction, or a count under fake tensors): ``cfg.attn_flash``, since x-transformers then
    calls SDPA and PyTorch picks a fused kernel whenever one can run (on the CPU always
    ``_scaled_dot_product_flash_attention_for_cpu``, also with the dense ALiBi mask).
    """
    if backend is None:
        return cfg.attn_flash
    return backend in FUSED_SDPA_BACKENDS


def train_step_flops(fc: FlopCounts, *, fused_backward: bool, causal: bool = False) -> int:
    """Training-step FLOPs: ``3 * fwd`` (forward + input and weight gradients of every matmul), plus
    ``attn / 2`` when a fused SDPA backward recomputes the scores. ``causal`` uses the causal half of the
    attention pairs (what an ``is_causal=True`` kernel computes) instead of the full square."""
    fwd = fc.fwd_flops_causal if causal else fc.fwd_flops
    attn = fc.attn_flops_causal if causal else fc.attn_flops
    return 3 * fwd + (attn // 2 if fused_backward else 0)


def decode_flops(cfg: ModelConfig, *, batch: int, context_tokens: int) -> int:
    """FLOPs of one cached decoding step: one new token per sequence attending over ``context + 1`` keys.

    Projections, feed-forward and logits of ``batch`` tokens (``flop_counts`` at ``seq_len=1`` without its
    1x1 attention), plus scores and values ``2 * 2 * b * h * (context + 1) * dh`` per block.
    """
    one = flop_counts(cfg, Workload(batch=batch, seq_len=1))
    attn = cfg.depth * 4 * batch * cfg.heads * (context_tokens + 1) * cfg.attn_dim_head
    return one.fwd_flops - one.attn_flops + attn


def recompute_extra_flops(cfg: ModelConfig, wl: Workload, recompute: str, *, causal: bool = False) -> int:
    """FLOPs the recomputation adds to a training step (torch convention; full square or ``causal`` half).

    ``block``: every block's forward runs again in backward up to its last saved tensor: non-reentrant
    ``torch.utils.checkpoint`` stops early, so the output projections (``to_out``, the feed-forward's second
    linear), whose outputs nothing saves, are not re-run: ``proj - out_proj + attn + ff - ff_out``
    (torch/utils/checkpoint.py, ``_StopRecomputationError``). ``selective``: the attention core again,
    ``attn``. ``none``: 0. Checked with ``FlopCounterMode`` (tests/profiling/test_setups.py; the counter does not
    see the SDPA call re-run inside a checkpoint, which the test counts apart)."""
    if recompute == "none":
        return 0
    fc = flop_counts(cfg, wl)
    attn = fc.attn_flops_causal if causal else fc.attn_flops
    if recompute == "selective":
        return attn
    ff_out = cfg.num_ff_layers * 2 * wl.tokens * cfg.ff_inner_dim * cfg.dim
    return fc.proj_flops - fc.out_proj_flops + attn + fc.ff_flops - ff_out


def training_flops_for(cfg: ModelConfig, wl: Workload, setup: TrainingSetup) -> dict[str, int]:
    """FLOPs of one micro-batch's training step per device under ``setup`` (torch convention, full square):
    ``train_step_flops`` (``3 * fwd``, ``+ attn / 2`` when a fused SDPA backward recomputes the scores) plus the
    recomputed forward (``recompute_extra_flops``); divided by ``tp`` (every matmul is split over the tensor-parallel ranks).
    ``optimizer_step_flops`` is ``grad_accum`` micro-batches of it."""
    fc = flop_counts(cfg, wl)
    base = train_step_flops(fc, fused_backward=fused_sdpa_backward(cfg))
    extra = recompute_extra_flops(cfg, wl, setup.recompute)
    per_device = ceil_div(base + extra, setup.tp)
    return {"train_step_flops": per_device, "recompute_flops": ceil_div(extra, setup.tp),
            "optimizer_step_flops": per_device * setup.grad_accum}
