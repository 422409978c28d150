"""Closed-form cost model of the x-transformers 2.31 decoder that ``core.builder`` builds: parameters,
FLOPs and memory for a ``ModelConfig`` and a ``Workload``.

Standard library only (no torch import), so the dashboard and the CLI get predictions in microseconds.
Every formula below was read off the x-transformers 2.31.10 source
(``x_transformers/x_transformers.py``, ``x_transformers/attend.py``; line numbers refer to 2.31.10)
and is checked against the real model by ``tests/core/test_cost_model.py`` (parameters: exact, over a grid
and over hypothesis-generated configurations) and ``tests/profiling/test_flops.py`` (FLOPs: exact against
``torch.utils.flop_counter.FlopCounterMode`` and within 1% of fvcore; KV cache and ALiBi tensors: exact
against tensors captured from the model).

Symbols used in the docstrings: ``b`` batch, ``n`` sequence length, ``T = b * n`` tokens, ``d = dim``,
``L = depth`` (``L`` attention blocks and ``L`` feed-forward blocks, i.e. ``2L`` layers), ``h = heads``,
``g = kv_heads`` (1 with ``attn_one_kv_head``), ``dh = attn_dim_head``, ``f = ff_inner_dim = int(d *
ff_mult)``, ``V = num_tokens``, ``e`` bytes per element of the workload dtype, ``ha`` ALiBi heads,
``m = attn_num_mem_kv`` memory key/value slots, ``s = num_residual_streams``, ``L' = num_layers`` sub-layers
(``2L``, ``3L`` with ``macaron``).

Memory is computed by one small function per term (``weights_bytes``, ``buffers_bytes``, ``grads_bytes``,
``optimizer_state_bytes``, ``kv_bytes_per_token`` / ``kv_cache_bytes``, ``alibi_tensors``,
``rel_pos_bias_bytes``, ``inference_activation_bytes``, ``training_activation_bytes``,
``hyper_connection_saved_bytes``, ``loss_bytes``); ``memory_estimate`` adds them up.

Conventions:

* FLOPs follow ``torch.utils.flop_counter``: only matrix multiplications are counted, one multiply-add is
  2 FLOPs, element-wise work (norms, activations, softmax, rotary, ALiBi, residual adds, masking) is NOT
  counted. fvcore counts multiply-adds (``*_macs``) and also counts layer norms and einsum outer products:
  see ``profiling.flops``.
* "full square": attention over all ``n * n`` query/key pairs, what the kernels compute when they are
  given a dense mask (the ALiBi path always passes a dense float mask to SDPA with ``is_causal=False``;
  the non-flash path computes the whole ``einsum`` and masks afterwards). "causal": the ``n (n + 1) / 2``
  pairs a causal decoder actually needs (useful work; what a causal flash kernel roughly skips to).
* Bytes are integers. Allocator rounding (CUDA caching allocator blocks, CPU page granularity) is ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from xtlens.core.config import DTYPE_BYTES, ModelConfig, Workload
from xtlens.core.setup import ServingSetup, TrainingSetup, precision_bytes

__all__ = [
    "ParamCounts",
    "FlopCounts",
    "MemoryEstimate",
    "param_counts",
    "flop_counts",
    "memory_estimate",
    "estimate",
    "ADAMW_STEP_BYTES",
    "INDEX_BYTES",
    "weights_bytes",
    "buffers_bytes",
    "grads_bytes",
    "optimizer_state_bytes",
    "kv_bytes_per_token",
    "kv_cache_bytes",
    "alibi_tensors",
    "rel_pos_bias_bytes",
    "inference_activation_bytes",
    "training_activation_bytes",
    "hyper_connection_saved_bytes",
    "loss_bytes",
]

ADAMW_STEP_BYTES = 4  # torch.optim.AdamW keeps one float32 scalar ``step`` tensor per parameter tensor
INDEX_BYTES = 8  # int64 token ids / positions
BOOL_BYTES = 1
FP32_BYTES = 4


# --------------------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ParamCounts:
    """Exact parameter counts of the model ``core.builder.build_model(cfg)`` builds (x-transformers 2.31).

    Definition of "embedding": ``embedding_params`` are the lookup tables only, i.e. the token embedding
    ``V * d`` plus the learned absolute position embedding ``max_seq_len * d`` (when present). They cost
    no FLOPs. The untied output projection ``to_logits`` (``d * V``, a matmul) is NOT embedding: it is in
    ``logits_params`` and in ``non_embedding_params``. With ``tie_embedding`` the logits reuse the token
    table and ``logits_params`` is 0. ``non_embedding_params = num_params - embedding_params``.

    Per attention block (``Attention``, x_transformers.py:2040-2042, 2238-2241; the builder passes
    ``attn_project_out=True`` for ``heads == 1``): ``to_q d*h*dh + to_k d*g*dh + to_v d*g*dh +
    to_out h*dh*d``, all bias-free (``LinearNoBias``).
    Per feed-forward block (``FeedForward``, 1763ff): ``Linear(d, f) + bias`` (``Linear(d, 2f) + bias``
    with ``ff_glu``, ``GLU``) then ``Linear(f, d) + bias``.
    Norms (``LayerNorm``, 1017ff: a single ``gamma`` of size ``d``, no bias): pre-norm has one per layer
    (``2L``) plus the final norm; post-norm (``deepnorm``, i.e. ``pre_norm=False``) has one per layer
    after the residual add and no final norm (AttentionLayers 3036, 3305-3307).
    Residual scales (``Residual(scale_residual=True)``, 1189ff): ``d`` per layer with ``deepnorm``.
    Rotary (``inv_freq``, xpos ``scale``) and ALiBi (``slopes``) tables are buffers, not parameters.
    ``shift_tokens`` has no parameters.

    x-transformers 2.31 options: ``attn_gate_values`` adds ``to_v_gate`` ``d*h*dh`` per attention block
    (``attn_gate_params``, inside ``attention_params``; 2048); ``attn_num_mem_kv = m`` adds ``mem_k``,
    ``mem_v`` ``2*g*m*dh`` per block (``mem_kv_params``, inside ``attention_params``; 2190-2191);
    ``ff_no_bias`` drops the feed-forward biases except GLU's (1752, 1815, 1820); ``macaron`` doubles the
    feed-forward blocks (``2L``) and makes ``3L`` sub-layers, each with its norm(s) and residual; the norm
    kind sets the per-norm size (``norm_params_each``); ``sandwich_norm`` one more norm per sub-layer;
    ``pre_norm=False`` post-norm; ``rel_pos_bias`` one shared ``Embedding(32, h)`` (``rel_pos_bias_params``);
    ``num_residual_streams = s > 1`` a ``HyperConnection`` per sub-layer plus ``stream_emb`` ``s*d``
    (``hyper_connection_params``). ``num_params = embedding + attention + feedforward + norm +
    residual_scale + logits + rel_pos_bias + hyper_connection``.
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


REL_POS_NUM_BUCKETS = 32  # RelativePositionBias(num_buckets=rel_pos_num_buckets=32), x_transformers.py:2922


def norm_params_each(cfg: ModelConfig) -> int:
    """Parameters of one norm: ``LayerNorm`` / ``RMSNorm`` a gain of ``d`` (x_transformers.py:1017, 1076),
    ``ScaleNorm`` one scalar (1059), ``SimpleRMSNorm`` none (1114)."""
    if cfg.use_simple_rmsnorm:
        return 0
    return 1 if cfg.use_scalenorm else cfg.dim


def num_norms(cfg: ModelConfig) -> int:
    """Norm modules: per sub-layer a pre-branch norm (pre-norm) or a post-main norm (post-norm), plus a
    post-branch norm with ``sandwich_norm``; a final norm with pre-norm only (x_transformers.py:3155,
    3301-3303). ``num_layers`` sub-layers: ``2L``, ``3L`` with ``macaron``."""
    return cfg.num_layers * (2 if cfg.sandwich_norm else 1) + (1 if cfg.uses_pre_norm else 0)


def hyper_connection_params_per_layer(cfg: ModelConfig) -> int:
    """``HyperConnection`` (x_transformers.py:1376-1410) with ``s`` streams, one input view: bias-free
    ``nn.LayerNorm`` ``d``, ``static_beta`` ``s``, ``static_alpha`` ``s*(s+1)``, ``dynamic_alpha_fn``
    ``d*(s+1)``, ``dynamic_beta_fn`` ``d``, two scalar scales: ``d*(s+3) + s*(s+2) + 2``; 0 with one stream."""
    s = cfg.num_residual_streams
    return 0 if s == 1 else cfg.dim * (s + 3) + s * (s + 2) + 2


def param_counts(cfg: ModelConfig) -> ParamCounts:
    """Exact parameter counts (see ``ParamCounts``)."""
    d, L, h, g, dh, f = cfg.dim, cfg.depth, cfg.heads, cfg.kv_heads, cfg.attn_dim_head, cfg.ff_inner_dim
    n_ff, n_layers = cfg.num_ff_layers, cfg.num_layers
    token = cfg.num_tokens * d
    abs_pos = cfg.max_seq_len * d if cfg.has_abs_pos_emb else 0
    gate = d * h * dh if cfg.attn_gate_values else 0
    mem_kv = 2 * g * cfg.attn_num_mem_kv * dh
    attn_block = d * h * dh + 2 * d * g * dh + h * dh * d + gate + mem_kv
    ff_w = 2 * f if cfg.ff_glu else f
    ff_in_bias = cfg.ff_glu or not cfg.ff_no_bias  # GLU's nn.Linear always has a bias (x_transformers.py:1752)
    ff_out_bias = not cfg.ff_no_bias
    ff_block = d * ff_w + (ff_w if ff_in_bias else 0) + f * d + (d if ff_out_bias else 0)
    norms_n = num_norms(cfg)
    norm_each = norm_params_each(cfg)
    norms = norms_n * norm_each
    residual_scales = n_layers * d if cfg.deepnorm else 0
    logits = 0 if cfg.tie_embedding else d * cfg.num_tokens
    rel_pos = REL_POS_NUM_BUCKETS * h if cfg.rel_pos_bias else 0
    hyper = (n_layers * hyper_connection_params_per_layer(cfg) + cfg.num_residual_streams * d
             if cfg.num_residual_streams > 1 else 0)
    embedding = token + abs_pos
    total = embedding + L * attn_block + n_ff * ff_block + norms + residual_scales + logits + rel_pos + hyper
    tensors = (
        1  # token embedding
        + (1 if abs_pos else 0)
        + L * (4 + (1 if gate else 0) + (2 if mem_kv else 0))  # to_q, to_k, to_v, to_out (+ to_v_gate, mem_k/v)
        + n_ff * (2 + int(ff_in_bias) + int(ff_out_bias))  # proj_in / proj_out weights (+ biases)
        + (norms_n if norm_each else 0)
        + (n_layers if cfg.deepnorm else 0)
        + (0 if cfg.tie_embedding else 1)
        + (1 if rel_pos else 0)
        + ((7 * n_layers + 1) if hyper else 0)
    )
    buffers = (cfg.rotary_dim // 2) * (2 if cfg.rotary_xpos else 1) + cfg.alibi_heads
    return ParamCounts(
        token_embedding_params=token,
        abs_pos_embedding_params=abs_pos,
        attention_params=L * attn_block,
        feedforward_params=n_ff * ff_block,
        norm_params=norms,
        residual_scale_params=residual_scales,
        logits_params=logits,
        attention_params_per_block=attn_block,
        feedforward_params_per_block=ff_block,
        embedding_params=embedding,
        non_embedding_params=total - embedding,
        num_params=total,
        num_param_tensors=tensors,
        buffer_elements=buffers,
        attn_gate_params=L * gate,
        mem_kv_params=L * mem_kv,
        rel_pos_bias_params=rel_pos,
        hyper_connection_params=hyper,
    )


# --------------------------------------------------------------------------------------------------
# FLOPs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FlopCounts:
    """Forward and training FLOPs (torch ``FlopCounterMode`` convention: matmuls only, 2 per multiply-add).

    Projections (per attention block, ``T`` tokens): ``q 2*T*d*h*dh``, ``k`` and ``v 2*T*d*g*dh`` each,
    ``out 2*T*h*dh*d``. Attention (per block): scores ``Q K^T`` and values ``P V`` are
    ``2*b*h*n*n*dh`` each for the full square (what FlopCounterMode counts for SDPA and for the non-flash
    ``einsum`` path, and what the kernels compute with the dense ALiBi mask); the causal half replaces
    ``n*n`` with ``n*(n+1)/2``. K/V heads shared by ``h / g`` query heads do not reduce attention FLOPs
    (the kernels broadcast them). Feed-forward: ``2*T*d*f`` in (``2*T*d*2f`` with GLU) and ``2*T*f*d``
    out. Logits: ``2*T*d*V`` (tied or not: the tied path is ``t @ W.T``, x_transformers.py:4164).
    Not counted (element-wise, 0 in torch's convention): norms, GELU, softmax, rotary (its ``einsum``
    outer product lowers to a multiply), ALiBi, masking, residual scales, token shifting, embeddings.

    Training step (``train_step_flops``): forward + backward with the usual 2x backward for every matmul
    (input and weight gradients), no recomputation: ``3 * fwd_flops``. A flash / memory-efficient SDPA
    backward (the CPU ``_scaled_dot_product_flash_attention_for_cpu_backward``, CUDA flash / efficient /
    cuDNN) recomputes the scores ``Q K^T``, adding half the attention forward:
    ``train_step_flops_flash_recompute = 3 * fwd_flops + attn_flops / 2``. That is what FlopCounterMode
    reports for ``attn_flash=True`` (torch's SDPA backward formula counts the recompute); the non-flash
    ``einsum`` path matches ``train_step_flops``. ``*_causal`` variants use the causal half throughout.

    x-transformers 2.31 options: ``attn_gate_values`` adds ``to_v_gate``, ``2*T*d*h*dh`` per attention
    block (``gate_proj_flops``, inside ``proj_flops``; x_transformers.py:2715). ``attn_num_mem_kv = m``
    prepends ``m`` key/value slots (2510-2516): scores and values become ``2*b*h*n*(n+m)*dh`` each; the causal
    count is ``n*(n+1)/2 + n*m`` pairs. ``macaron`` runs ``2L`` feed-forward blocks. Hyper-connections
    (``s = num_residual_streams > 1``, ``HyperConnection.prepare``, 1419-1465: 1426, 1442, 1450), per sub-layer: the
    ``(T, s, d) @ (d, s+1)`` width-connection weights ``2*T*s*d*(s+1)`` (mm) and the stream mix
    ``einsum('... s t, ... s d -> ... t d')`` ``2*T*(s+1)*s*d`` (bmm): ``hyper_connection_flops =
    2L' * 4*T*s*(s+1)*d`` (``L'`` sub-layers). The ``(T, s, d) @ (d,)`` depth-connection product,
    ``2*T*s*d`` per sub-layer, lowers to ``aten.mv``, for which FlopCounterMode has no formula: it is
    reported apart (``hyper_connection_mv_flops_uncounted``) and left out of ``fwd_flops`` so that the
    closed form equals the counter. Norm kind, ``attn_qk_norm`` (``F.normalize``), ``rel_pos_bias`` (an
    embedding lookup), ``residual_attn`` (an add), activations and dropouts add no matmul.
    ``fwd_flops = proj + attn + ff + logits + hyper_connection``.
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
    """Forward / training FLOPs for ``wl.batch`` sequences of ``wl.seq_len`` tokens (see ``FlopCounts``)."""
    b, n = wl.batch, wl.seq_len
    T = b * n
    d, L, h, g, dh, f, V = cfg.dim, cfg.depth, cfg.heads, cfg.kv_heads, cfg.attn_dim_head, cfg.ff_inner_dim, cfg.num_tokens
    m, s = cfg.attn_num_mem_kv, cfg.num_residual_streams
    q = L * 2 * T * d * h * dh
    k = L * 2 * T * d * g * dh
    v = k
    out = L * 2 * T * h * dh * d
    gate = L * 2 * T * d * h * dh if cfg.attn_gate_values else 0
    proj = q + k + v + out + gate
    scores = L * 2 * b * h * n * (n + m) * dh
    values = scores
    pairs_causal = n * (n + 1) // 2 + n * m  # memory key/values are visible to every query
    scores_c = L * 2 * b * h * pairs_causal * dh
    values_c = scores_c
    attn, attn_c = scores + values, scores_c + values_c
    ff = cfg.num_ff_layers * (2 * T * d * (2 * f if cfg.ff_glu else f) + 2 * T * f * d)
    logits = 2 * T * d * V
    hyper = cfg.num_layers * 4 * T * s * (s + 1) * d if s > 1 else 0
    hyper_mv = cfg.num_layers * 2 * T * s * d if s > 1 else 0
    fwd = proj + attn + ff + logits + hyper
    fwd_c = proj + attn_c + ff + logits + hyper
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


# --------------------------------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class MemoryEstimate:
    """Memory in bytes (integers) for ``cfg`` on ``wl`` (parameters and activations in ``wl.dtype``).

    Model state:

    * ``weights_bytes = num_params * e``; ``buffers_bytes``: rotary ``inv_freq`` (+ xpos ``scale``) and
      ALiBi ``slopes`` (converted to ``wl.dtype`` with the model by ``build_model``).
    * ``grads_bytes = num_params * e``.
    * ``adamw_state_bytes``: ``torch.optim.AdamW`` (foreach/single-tensor, not fused, not capturable):
      ``exp_avg`` and ``exp_avg_sq`` like each parameter (``2 * num_params * e``) plus one float32 scalar
      ``step`` tensor per parameter tensor (``4 * num_param_tensors``).

    KV cache (``kv_cache_bytes``), for cached generation of ``wl.seq_len`` tokens: x-transformers 2.31
    caches, per attention block, ``cached_kv = (k, v)`` right after the head split and BEFORE rotary
    (``Attention.forward``, x_transformers.py:2510-2511), with the ``g`` K/V heads, not expanded to ``h``
    (the expansion to all heads happens later, in ``Attend``): ``2 * L * b * g * n * dh * e``. One K/V
    head (``g = 1``) with ``attn_one_kv_head``. (During a decode step the old and the concatenated cache
    coexist briefly; that transient is not included.) Caveat: with rotary AND ALiBi (the seed) cached
    decoding fails in x-transformers 2.31: ``forward_custom_pos(pos)`` builds the bias for all cached
    positions ``(h, n, n)`` while the step has one query row, and SDPA raises a broadcast error
    (``generate(cache_kv=True)`` fails; ``cache_kv=False`` works). For such configs the KV cache figure is
    what the cache would hold, not something 2.31 can run.

    ALiBi (``alibi_*``): what x-transformers materialises, per attention block.
    With rotary on, ``AttentionLayers.forward`` always builds ``pos = arange(n)`` (x_transformers.py:
    3468-3469) and passes it to every block, so ``Attention.forward`` calls
    ``rel_pos.forward_custom_pos(pos)`` (2597-2600) in EVERY block: an int64 ``(n, n)`` position
    difference (``einx.subtract`` then ``abs`` and negation: ``alibi_pos_diff_bytes`` each), times the
    slopes: ``(ha, n, n)`` in the slopes' dtype, zero-padded to ``(h, n, n)`` (``pad_at_dim``, 671-673),
    then padded again by ``pad_at_dim(attn_bias, (num_mem_kv=0, 0))`` (2602), which ``F.pad`` executes as
    a copy: ``(h, n, n)``. Without rotary, ``AlibiPositionalBias.forward`` builds the ``(h, n, n)`` bias once
    and keeps it as the non-persistent buffer ``rel_pos.bias`` (684-699): it survives the forward
    (``alibi_cached_buffer_bytes``); later blocks slice it, each still gets the ``(h, n, n)`` pad copy.
    With ``attn_flash`` (``Attend.flash_attn``, attend.py:318-336) the bias is expanded to ``(b, h, n, n)``
    and ``masked_fill``-ed with the causal mask (a bool ``(n, n)`` from ``create_causal_mask``) into a new
    dense ``(b, h, n, n)`` tensor (``alibi_sdpa_mask_bytes``) passed to SDPA as ``attn_mask`` with
    ``is_causal=False``. Without flash the ``(h, n, n)`` bias is added to the score matrix.
    ``alibi_bias_bytes`` is the ALiBi-derived memory live at the SDPA call of one block:
    ``(h, n, n)`` pad copy + ``(b, h, n, n)`` dense mask (flash) + the bool causal mask (flash); plus the
    cached buffer without rotary. ``alibi_bias_allocated_bytes_per_forward`` sums every ALiBi tensor the
    forward allocates (memory traffic, not peak).

    Activations, inference (``activation_bytes_inference``): estimated peak of live tensors during one
    ``torch.no_grad()`` forward, beyond weights and buffers. Counted:

    * retained until the forward returns, because ``TransformerWrapper`` always runs the layers with
      ``return_hiddens=True`` (x_transformers.py:4410): the token embeddings and every layer's input
      (``layer_hiddens``, ``2L + 1`` tensors of ``T * d``), the final hidden state, the absolute position
      embedding ``(n, d)``, each block's pre-rotary ``k`` and ``v`` (``cached_kv``, ``2 * T * g * dh``) and,
      without flash, each block's three ``(b, h, n, n)`` score tensors kept in ``Intermediates``
      (``qk_similarities``, ``pre_softmax_attn``, ``post_softmax_attn``; attend.py:592-596), the rotary
      tables ``(n, rot)`` (two with xpos) and the int64 positions;
    * plus the largest transient working set: the last attention block at its SDPA / ``P V`` call (shifted
      and normed copies of the input, rotated q and k, the ``q * scale/default_scale`` copy made by
      ``flash_attn``, GQA-expanded k/v when ``1 < g < h``, ALiBi tensors, SDPA output and float32
      log-sum-exp), the last feed-forward block after its activation (input copies, ``f`` or ``2f``-wide
      projection, activation output, GLU product), or the logits stage (``T * V``, twice with the tied
      path's ``* tie_embedding_scale`` copy).

    Not counted: allocator caching/fragmentation, SDPA kernel scratch (per-thread blocks on CPU), the
    short-lived ``(n, n)`` int64 ALiBi temporaries outside the peak, Python/framework overhead, the input
    ids.

    Activations, training (``activation_bytes_training``): tensors saved for backward by autograd after the
    forward of a training step (``model.train()``, dropout 0), i.e. what lives until ``backward()``:
    per layer its input, the linear-layer input (shift / pre-norm output), LayerNorm input, normalised
    output and float32 mean/rstd, q (scaled copy with flash), k, v (GQA-expanded when ``1 < g < h``),
    the merged-heads copy fed to ``to_out``, SDPA output + log-sum-exp and its ``attn_mask`` (the dense
    ALiBi mask: ``(b, h, n, n)`` per block), or, without flash, the float32 softmax output (and its
    ``e``-byte copy when ``e != 4``) plus the bool causal mask; rotary cos/sin tables; feed-forward
    projection (``f`` or ``2f``) and activation outputs (+ GLU product); the final hidden, the logits
    ``(T, V)`` and the int64 ids kept by the embedding. The next-token loss is counted apart, in
    ``loss_bytes_training``: ``F.cross_entropy`` keeps its ``(T, V)`` log-softmax output for backward.
    ``training_total_bytes = weights + buffers + grads + adamw_state +
    activation_bytes_training + loss_bytes_training`` (a lower bound of the step's peak: backward transients are not included).
    ``inference_total_bytes = weights + buffers + activation_bytes_inference`` (no KV cache).

    x-transformers 2.31 options: the activation terms count ``L'`` sub-layers (macaron), a second norm per
    sub-layer (sandwich), the norm kind's saved tensors, the memory slots in K/V, scores and masks, the value
    gate's tensors, the l2-normalised q/k (``attn_qk_norm``), the T5 bias (``rel_pos_bias_bytes``) and, with
    hyper-connections, ``s``-wide residual streams and what each ``HyperConnection`` saves. Measured against
    MemTracker within the tolerances in ``docs/flags.md``; dropout masks are not counted (dropout 0 assumed).
    """

    weights_bytes: int
    buffers_bytes: int
    grads_bytes: int
    adamw_state_bytes: int
    kv_cache_bytes: int
    kv_cache_bytes_per_token: int
    alibi_pos_diff_bytes: int
    alibi_bias_heads_bytes: int
    alibi_bias_padded_bytes: int
    alibi_sdpa_mask_bytes: int
    alibi_cached_buffer_bytes: int
    alibi_bias_bytes: int
    alibi_bias_allocated_bytes_per_forward: int
    alibi_blocks_rebuilding_bias: int
    causal_mask_bytes: int
    activation_bytes_inference: int
    activation_bytes_training: int
    loss_bytes_training: int
    inference_total_bytes: int
    training_total_bytes: int
    inference_breakdown_bytes: dict[str, int]
    training_breakdown_bytes: dict[str, int]
    rel_pos_bias_bytes: int = 0


# --- model state -----------------------------------------------------------------------------------


def weights_bytes(cfg: ModelConfig, wl: Workload) -> int:
    """Parameters in the workload dtype: ``num_params * e`` bytes (``param_counts``; the builder casts the
    model with ``model.to(dtype)``, core/builder.py ``build_model``)."""
    return param_counts(cfg).num_params * wl.dtype_bytes


def buffers_bytes(cfg: ModelConfig, wl: Workload) -> int:
    """Floating buffers in the workload dtype: rotary ``inv_freq`` (``rotary_dim / 2``) and xpos ``scale``
    (x_transformers.py:851, 861) and ALiBi ``slopes`` (``ha``): ``buffer_elements * e`` bytes."""
    return param_counts(cfg).buffer_elements * wl.dtype_bytes


def grads_bytes(cfg: ModelConfig, wl: Workload) -> int:
    """One gradient per parameter, in the parameter dtype (``param.grad`` as torch autograd accumulates it):
    ``num_params * e`` bytes."""
    return param_counts(cfg).num_params * wl.dtype_bytes


def optimizer_state_bytes(cfg: ModelConfig, wl: Workload) -> int:
    """``torch.optim.AdamW`` (foreach / single-tensor, not fused, not capturable): ``exp_avg`` and
    ``exp_avg_sq`` like each parameter plus one float32 ``step`` scalar per parameter tensor:
    ``2 * num_params * e + 4 * num_param_tensors`` bytes (torch/optim/adamw.py ``_init_group``)."""
    pc = param_counts(cfg)
    return 2 * pc.num_params * wl.dtype_bytes + ADAMW_STEP_BYTES * pc.num_param_tensors


# --- KV cache -------------------------------------------------------------------------------------


def kv_bytes_per_token(cfg: ModelConfig, dtype_bytes: int) -> int:
    """KV-cache bytes per cached token (per sequence), nanochat style: ``2 * L * g * dh * e``.

    x-transformers 2.31 caches, per attention block, ``cached_kv = (k, v)`` after the head split and before
    rotary, with the ``g`` K/V heads (not expanded to ``h``) and without the ``attn_num_mem_kv`` memory
    slots, which are concatenated afterwards (``Attention.forward``, x_transformers.py:2457; the slots are concatenated at 2517).
    """
    return 2 * cfg.depth * cfg.kv_heads * cfg.attn_dim_head * dtype_bytes


def kv_cache_bytes(cfg: ModelConfig, wl: Workload) -> int:
    """KV cache for ``b`` sequences of ``n`` tokens: ``kv_bytes_per_token * b * n`` bytes (what
    ``generate(cache_kv=True)`` holds: ``Intermediates.cached_kv`` of every block, x_transformers.py:2510)."""
    return kv_bytes_per_token(cfg, wl.dtype_bytes) * wl.tokens


# --- attention biases -----------------------------------------------------------------------------


def alibi_tensors(cfg: ModelConfig, wl: Workload) -> dict[str, int]:
    """ALiBi tensors in bytes (see ``MemoryEstimate``; x_transformers.py:650-699, 2584-2591; attend.py:318-336).

    ``diff`` int64 ``(n, n)`` position difference ``8*n*n``; ``heads`` the ``(ha, n, n)`` product ``ha*n*n*e``;
    ``padded`` the ``pad_at_dim`` copy for the memory slots ``(h, n, n+m)`` ``h*n*(n+m)*e``; ``mask`` the dense
    SDPA mask with flash ``(b, h, n, n+m)``; ``causal`` the bool causal mask with flash ``(n, n+m)``;
    ``cached`` the ``rel_pos.bias`` buffer kept without rotary ``(h, n, n)``; ``live`` what is live at one
    block's SDPA call; ``allocated`` every ALiBi tensor one forward allocates; ``blocks`` the number of blocks
    that rebuild the bias (all with rotary, else 1). Zeros without ALiBi.
    """
    b, n, e, h, L = wl.batch, wl.seq_len, wl.dtype_bytes, cfg.heads, cfg.depth
    if not cfg.alibi_pos_bias:
        return dict.fromkeys(("diff", "heads", "padded", "mask", "causal", "cached", "live", "allocated", "blocks"), 0)
    j = n + cfg.attn_num_mem_kv
    ha = cfg.alibi_heads
    diff = n * n * INDEX_BYTES
    heads = ha * n * n * e
    padded = h * n * j * e
    mask = b * h * n * j * e if cfg.attn_flash else 0
    causal = n * j * BOOL_BYTES if cfg.attn_flash else 0
    blocks = L if cfg.uses_rotary else 1
    cached = 0 if cfg.uses_rotary else h * n * n * e
    live = padded + mask + causal + cached
    # per rebuilding block: diff, abs, neg (3 int64), product, pad; per block: pad copy, mask (+ bool mask)
    allocated = blocks * (3 * diff + heads + padded) + L * (padded + mask + causal)
    return dict(diff=diff, heads=heads, padded=padded, mask=mask, causal=causal, cached=cached, live=live,
                allocated=allocated, blocks=blocks)


def rel_pos_bias_bytes(cfg: ModelConfig, wl: Workload) -> int:
    """T5 relative bias (``rel_pos_bias``) live at one attention block's score computation: the
    ``pad_at_dim`` copy ``(h, n, n+m)`` of ``lookup * scale`` (the lookup and the product are freed by then):
    ``h * n * (n+m) * e`` bytes, built again in every block (``RelativePositionBias.forward``,
    x_transformers.py:509-517, 2587-2591); 0 without it."""
    if not cfg.rel_pos_bias:
        return 0
    n, e, h = wl.seq_len, wl.dtype_bytes, cfg.heads
    return h * n * (n + cfg.attn_num_mem_kv) * e


# --- activations ----------------------------------------------------------------------------------


def _shapes(cfg: ModelConfig, wl: Workload) -> dict[str, int]:
    """Byte sizes of the recurring activation tensors (symbols as in the module docstring; ``m`` memory
    key/value slots, ``s`` residual streams)."""
    b, n, e = wl.batch, wl.seq_len, wl.dtype_bytes
    T = b * n
    h, g, dh, m = cfg.heads, cfg.kv_heads, cfg.attn_dim_head, cfg.attn_num_mem_kv
    return dict(
        hidden=T * cfg.dim * e,
        q=T * h * dh * e,
        kv_one=T * g * dh * e,
        kv_mem=b * g * (n + m) * dh * e if m else 0,  # k or v with the memory slots concatenated
        scores=b * h * n * (n + m) * e,
        scores_fp32=b * h * n * (n + m) * FP32_BYTES,
        lse=b * h * n * FP32_BYTES,
        causal_mask=n * (n + m) * BOOL_BYTES,
        ff_in=T * (2 * cfg.ff_inner_dim if cfg.ff_glu else cfg.ff_inner_dim) * e,
        ff_hidden=T * cfg.ff_inner_dim * e,
    )


def inference_activation_bytes(cfg: ModelConfig, wl: Workload) -> tuple[int, dict[str, int]]:
    """Peak of live activations in bytes during one ``torch.no_grad()`` forward, beyond weights and buffers, and its
    breakdown (see ``MemoryEstimate.activation_bytes_inference`` for what is counted and why).

    Formula: ``max(retained_at_stage + transient_stage)`` over three stages (the last attention block, the
    last feed-forward block, the logits), in bytes. Source: ``TransformerWrapper.forward`` always runs the
    layers with ``return_hiddens=True`` (x_transformers.py:4410), so every layer input and each block's
    ``Intermediates`` (attend.py:592-596) stay alive until the forward returns.
    """
    sh = _shapes(cfg, wl)
    b, n, e = wl.batch, wl.seq_len, wl.dtype_bytes
    T = b * n
    hidden, q_bytes, kv_one, scores = sh["hidden"], sh["q"], sh["kv_one"], sh["scores"]
    L, V, d, s = cfg.depth, cfg.num_tokens, cfg.dim, cfg.num_residual_streams
    rot, flash, g, h = cfg.rotary_dim, cfg.attn_flash, cfg.kv_heads, cfg.heads
    gqa_expand = 1 < g < h
    al = alibi_tensors(cfg, wl)
    # residual streams: with hyper-connections each stream tensor is (b * s, n, d); the attention layers'
    # stream inputs are kept in ``hiddens`` besides the branch inputs in ``layer_hiddens`` (3651, 3662)
    stream = hidden * s
    rotary_tables = (n * rot * e * (2 if cfg.rotary_xpos else 1) + n * INDEX_BYTES) if cfg.uses_rotary else 0
    retained = {
        "token_embeddings": hidden,
        # with hyper-connections each layer's branch input is a view of its (b, n, s+1, d) mix, which stays
        # alive with it
        "layer_inputs": cfg.num_layers * hidden * (s + 1 if s > 1 else 1) + (L * stream if s > 1 else 0),
        "final_hidden": hidden,
        "abs_pos_embedding": n * d * e if cfg.has_abs_pos_emb else 0,
        "cached_k_v": 2 * L * kv_one,
        "attn_score_intermediates": 0 if flash else 3 * L * scores,
        "rotary_tables": rotary_tables,
        "alibi_cached_buffer": al["cached"],
    }
    if s > 1:
        retained["residual_streams"] = stream  # the (b*s, n, d) stream entering the current layer
    # ---- transients ----
    input_copies = (hidden if cfg.shift_tokens > 0 else 0) + (hidden if cfg.uses_pre_norm else 0)
    attn_t = input_copies + q_bytes  # rotated (or plain) q
    if cfg.uses_rotary:
        attn_t += kv_one  # rotated k (the pre-rotary k is retained)
    if cfg.attn_num_mem_kv:
        # k and v with the memory slots concatenated (torch.cat copies), the repeated mem_k / mem_v, and
        # the mask SDPA gets as an additive float (n, n + m)
        attn_t += 2 * sh["kv_mem"] + 2 * b * g * cfg.attn_num_mem_kv * cfg.attn_dim_head * e + n * (n + cfg.attn_num_mem_kv) * e
    if gqa_expand:
        attn_t += 2 * b * h * (n + cfg.attn_num_mem_kv) * cfg.attn_dim_head * e  # k, v repeated to h heads
    if cfg.alibi_pos_bias:
        attn_t += al["padded"]
    attn_t += rel_pos_bias_bytes(cfg, wl)
    if flash:
        attn_t += q_bytes  # q * (scale / default_scale) copy in Attend.flash_attn
        attn_t += al["mask"] + (sh["causal_mask"] if cfg.alibi_pos_bias else 0)
        if cfg.attn_num_mem_kv and not cfg.alibi_pos_bias:
            attn_t += 2 * sh["causal_mask"]  # bool causal mask for k_len > q_len and its negation (attend.py)
        attn_t += q_bytes + sh["lse"]  # SDPA output and log-sum-exp
    else:
        attn_t += sh["causal_mask"] + q_bytes  # bool causal mask, P V output
        if e != FP32_BYTES:
            attn_t += sh["scores_fp32"]  # float32 softmax output before .type(dtype)
    if cfg.attn_gate_values:
        attn_t += 2 * q_bytes  # gate logits to_v_gate(x) and sigmoid(gate) (x_transformers.py:2715-2719)
    ff_t = input_copies + sh["ff_in"] + sh["ff_hidden"] + (sh["ff_hidden"] if cfg.ff_glu else 0)
    if cfg.ff_relu_squared:
        ff_t += sh["ff_hidden"]  # relu(x) then ** 2
    logits_t = T * V * e * (2 if cfg.tie_embedding else 1)
    # the last attention block runs before the last feed-forward input and the final hidden exist
    attn_retained = dict(retained, layer_inputs=retained["layer_inputs"] - hidden, final_hidden=0)
    ff_retained = dict(retained, final_hidden=0)
    candidates = [
        (sum(attn_retained.values()) + attn_t, attn_retained, "transient_attention", attn_t),
        (sum(ff_retained.values()) + ff_t, ff_retained, "transient_feedforward", ff_t),
        (sum(retained.values()) + logits_t, retained, "transient_logits", logits_t),
    ]
    total, kept, stage, transient = max(candidates, key=lambda c: c[0])
    breakdown = dict(kept)
    breakdown[stage] = transient
    return total, breakdown


def training_activation_bytes(cfg: ModelConfig, wl: Workload) -> dict[str, int]:
    """Bytes of the tensors autograd saves for backward in a training step's forward (``model.train()``, dropout 0), by
    part, in bytes (see ``MemoryEstimate.activation_bytes_training``). Per sub-layer (``2L``, ``3L`` with
    macaron): its norm's input, output and float32 statistics, and the linear input; per attention block
    q, k, v, the SDPA output + log-sum-exp (or the float32 softmax), masks and the merged heads; per
    feed-forward block its projections and activation outputs. Source: the autograd formulas of the ops
    ``AttentionLayers.forward`` runs (x_transformers.py:3620-3740)."""
    sh = _shapes(cfg, wl)
    b, n, e = wl.batch, wl.seq_len, wl.dtype_bytes
    T = b * n
    hidden, q_bytes, kv_one = sh["hidden"], sh["q"], sh["kv_one"]
    L, V, rot, s = cfg.depth, cfg.num_tokens, cfg.rotary_dim, cfg.num_residual_streams
    g, h = cfg.kv_heads, cfg.heads
    gqa_expand = 1 < g < h
    shift = cfg.shift_tokens > 0
    al = alibi_tensors(cfg, wl)
    # one norm (its input is the layer input, counted apart): LayerNorm saves the normalised output (for the
    # gain) and float32 mean/rstd; RMSNorm / ScaleNorm (F.normalize * sqrt(d) * g) measure the same within
    # 0.2% on CPU; SimpleRMSNorm has no gain, so no normalised output is saved
    stats = 2 * T * FP32_BYTES
    if cfg.use_simple_rmsnorm:
        norm_saved = T * FP32_BYTES  # F.normalize's norm; the scalar * sqrt(d) saves nothing
    else:
        norm_saved = hidden + stats  # normalised output (saved by * gain) + statistics (LayerNorm / F.normalize)
    if cfg.uses_pre_norm:
        # the layer input (norm input), the norm's saved tensors and the linear-layer input (the norm
        # output, or the token-shifted copy)
        per_layer_common = hidden + norm_saved + hidden
    else:
        # post-norm: the layer input, the shifted copy fed to the linears (when shifting), the post-norm's
        # input ``x + residual``, its saved tensors
        per_layer_common = hidden + (hidden if shift else 0) + hidden + norm_saved
    if cfg.sandwich_norm:
        per_layer_common += norm_saved + hidden  # post-branch norm: saved tensors and its output
    kv_saved = q_bytes * 2 if gqa_expand else (2 * sh["kv_mem"] if cfg.attn_num_mem_kv else 2 * kv_one)
    if cfg.attn_num_mem_kv and cfg.attn_flash:
        # measured on CPU: one more (b, g, n+m, dh) tensor and the bool causal mask and its negation
        kv_saved += sh["kv_mem"] + 2 * sh["causal_mask"]
    if cfg.attn_flash:
        attn_saved = (q_bytes  # scaled q
                      + kv_saved  # k, v as passed to SDPA
                      + q_bytes + sh["lse"]  # SDPA output, log-sum-exp
                      + al["mask"]  # dense ALiBi attn_mask
                      + q_bytes)  # merged-heads copy saved by to_out
    else:
        attn_saved = (q_bytes + kv_saved + sh["scores_fp32"] + (sh["scores"] if e != FP32_BYTES else 0)
                      + sh["causal_mask"] + q_bytes)
    if cfg.attn_qk_norm:
        # l2norm (F.normalize) saves q and k and their per-row norms
        attn_saved += q_bytes + kv_one + (b * h * n + b * g * n) * e
    if cfg.attn_gate_values:
        attn_saved += 2 * q_bytes  # sigmoid output and the gated product's other operand
    rotary_saved = (4 * n * rot * wl.dtype_bytes + (n * rot * e if cfg.rotary_xpos else 0)) if cfg.uses_rotary else 0
    ff_saved = sh["ff_in"] + sh["ff_hidden"] + (sh["ff_hidden"] if cfg.ff_glu else 0)
    out = {
        "layer_norm_residual": cfg.num_layers * per_layer_common,
        "attention": L * attn_saved,
        "rotary": L * rotary_saved,
        "feedforward": cfg.num_ff_layers * ff_saved,
        "final_hidden": hidden,
        "logits": T * V * e,
        "token_ids": T * INDEX_BYTES,
        "alibi_cached_buffer": al["cached"],
    }
    if cfg.rel_pos_bias:
        out["rel_pos_bias"] = L * n * n * INDEX_BYTES  # int64 bucket ids saved by the embedding lookup
    if s > 1:
        out["hyper_connections"] = cfg.num_layers * hyper_connection_saved_bytes(cfg, wl)
    return out


def hyper_connection_saved_bytes(cfg: ModelConfig, wl: Workload) -> int:
    """Per sub-layer, what a ``HyperConnection`` (x_transformers.py:1364-1465) saves for backward with ``s``
    streams, in bytes: the ``(b, n, s, d)`` stream input, its ``nn.LayerNorm`` output and float32 stats, the
    contiguous copy of the streams the mixing ``einsum`` makes, the mixed ``(b, n, s+1, d)`` streams (the
    branch input is a view of them), the branch output kept by the depth-connection outer product:
    ``T*d*e*(4s + 2) + 8*T*s``; plus the float32 Sinkhorn iterations on ``(T, s, s)`` (softmax + 10
    ``F.normalize``: ``4*T*(11*s*s + 20*s)``) and the small ``(T, s, s+1)`` weights (``16*T*s*(s+1)``), which
    matter only for small ``d``. 0 with one stream."""
    s = cfg.num_residual_streams
    if s == 1:
        return 0
    T, d, e = wl.tokens, cfg.dim, wl.dtype_bytes
    return (T * d * e * (4 * s + 2) + 2 * T * s * FP32_BYTES + FP32_BYTES * T * (11 * s * s + 20 * s)
            + 4 * FP32_BYTES * T * s * (s + 1))


def loss_bytes(cfg: ModelConfig, wl: Workload) -> int:
    """Next-token loss: ``torch.nn.functional.cross_entropy`` keeps its ``(T, V)`` log-softmax output for
    backward: ``T * V * e`` bytes (the loss of the logits ``TransformerWrapper`` returns, x_transformers.py:4164)."""
    return wl.tokens * cfg.num_tokens * wl.dtype_bytes


def memory_estimate(cfg: ModelConfig, wl: Workload) -> MemoryEstimate:
    """Memory estimate in bytes (see ``MemoryEstimate``): the sum of the term functions above."""
    weights, buffers = weights_bytes(cfg, wl), buffers_bytes(cfg, wl)
    grads, adamw = grads_bytes(cfg, wl), optimizer_state_bytes(cfg, wl)
    al = alibi_tensors(cfg, wl)
    act_inf, inference_breakdown = inference_activation_bytes(cfg, wl)
    training_breakdown = training_activation_bytes(cfg, wl)
    act_train = sum(training_breakdown.values())
    loss = loss_bytes(cfg, wl)
    return MemoryEstimate(
        weights_bytes=weights,
        buffers_bytes=buffers,
        grads_bytes=grads,
        adamw_state_bytes=adamw,
        kv_cache_bytes=kv_cache_bytes(cfg, wl),
        kv_cache_bytes_per_token=kv_bytes_per_token(cfg, wl.dtype_bytes),
        alibi_pos_diff_bytes=al["diff"],
        alibi_bias_heads_bytes=al["heads"],
        alibi_bias_padded_bytes=al["padded"],
        alibi_sdpa_mask_bytes=al["mask"],
        alibi_cached_buffer_bytes=al["cached"],
        alibi_bias_bytes=al["live"],
        alibi_bias_allocated_bytes_per_forward=al["allocated"],
        alibi_blocks_rebuilding_bias=al["blocks"],
        causal_mask_bytes=_shapes(cfg, wl)["causal_mask"],
        activation_bytes_inference=act_inf,
        activation_bytes_training=act_train,
        inference_total_bytes=weights + buffers + act_inf,
        loss_bytes_training=loss,
        training_total_bytes=weights + buffers + grads + adamw + act_train + loss,
        inference_breakdown_bytes=inference_breakdown,
        training_breakdown_bytes=training_breakdown,
        rel_pos_bias_bytes=rel_pos_bias_bytes(cfg, wl),
    )


# --------------------------------------------------------------------------------------------------
# formulas derived from the counts above (each lives here once; profiling and the dashboard call them)
# --------------------------------------------------------------------------------------------------

#: SDPA backends whose backward recomputes the attention scores (a fused kernel keeps no ``(n, n)`` matrix).
FUSED_SDPA_BACKENDS = ("flash", "efficient", "cudnn", "cpu_flash", "overrideable")


def fused_sdpa_backward(cfg: ModelConfig, backend: str | None = None) -> bool:
    """Whether the training step's attention backward recomputes ``Q K^T`` (one rule for every caller).

    ``backend`` is the SDPA kernel that ran (``profiling.sdpa``'s label) when it is known: fused for
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


# --------------------------------------------------------------------------------------------------
# predictions as tidy rows: the one vocabulary shared with the measured rows of ``profiling``
# --------------------------------------------------------------------------------------------------

#: ``phase`` values. ``model``: static (parameter counts); ``forward``, ``train_step``: FLOPs of one forward /
#: training step; ``inference``, ``train_step``: memory at the peak of a no-grad forward / of a training step.
PHASES = ("model", "forward", "train_step", "inference")

#: Memory components of each phase whose predicted bytes add up exactly to the phase's ``total`` (the
#: stacked memory chart draws these). ``other_activations`` is ``activations`` less the parts split out
#: beside it; ``alibi_bias_at_peak`` is the ALiBi memory alive at the inference peak (only the cached
#: buffer when the peak is not inside an attention block), ``alibi_bias_saved`` the dense ALiBi masks that
#: the blocks' SDPA calls keep for backward.
MEMORY_STACK: dict[str, tuple[str, ...]] = {
    "inference": ("weights", "buffers", "kv_cache_in_activations", "alibi_bias_at_peak", "other_activations"),
    "train_step": ("weights", "buffers", "gradients", "optimizer", "alibi_bias_saved", "other_activations", "loss"),
}

#: Measured components that are another measurement of a predicted component (same quantity, other method).
SAME_QUANTITY: dict[str, str] = {"total_tracked": "total", "total_rss": "total"}


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """One predicted quantity as a row.

    ``quantity`` is the unit-suffixed key of ``estimate()`` (``kv_cache_bytes``, ``fwd_flops``,
    ``num_params``); ``phase`` and ``component`` use the vocabulary of the measured rows
    (``profiling.memory`` / ``flops`` / ``latency``), so predicted-vs-measured is a join on
    ``(phase, component, unit)``. ``unit``: ``params``, ``flops``, ``bytes``, ``flops_per_token``,
    ``bytes_per_token``, ``tokens`` or ``count``. ``variant``: which counting convention (``full_square``,
    ``causal``, ``fused_backward``) for FLOPs, empty otherwise.
    """

    quantity: str
    phase: str
    component: str
    unit: str
    value: int | float
    variant: str = ""


# field -> (phase, component, unit, variant) for every field of ParamCounts, FlopCounts and MemoryEstimate
_PARAM_ROWS: dict[str, tuple[str, str, str, str]] = {
    "token_embedding_params": ("model", "token_embedding", "params", ""),
    "abs_pos_embedding_params": ("model", "abs_pos_embedding", "params", ""),
    "attention_params": ("model", "attention", "params", ""),
    "feedforward_params": ("model", "feedforward", "params", ""),
    "norm_params": ("model", "norms", "params", ""),
    "residual_scale_params": ("model", "residual_scales", "params", ""),
    "logits_params": ("model", "logits", "params", ""),
    "attention_params_per_block": ("model", "attention_per_block", "params", ""),
    "feedforward_params_per_block": ("model", "feedforward_per_block", "params", ""),
    "embedding_params": ("model", "embedding", "params", ""),
    "non_embedding_params": ("model", "non_embedding", "params", ""),
    "num_params": ("model", "total", "params", ""),
    "num_param_tensors": ("model", "param_tensors", "count", ""),
    "buffer_elements": ("model", "buffer_elements", "count", ""),
    "attn_gate_params": ("model", "attention_value_gate", "params", ""),
    "mem_kv_params": ("model", "attention_memory_kv", "params", ""),
    "rel_pos_bias_params": ("model", "rel_pos_bias", "params", ""),
    "hyper_connection_params": ("model", "hyper_connections", "params", ""),
}
_FLOP_ROWS: dict[str, tuple[str, str, str, str]] = {
    "q_proj_flops": ("forward", "q_proj", "flops", ""),
    "k_proj_flops": ("forward", "k_proj", "flops", ""),
    "v_proj_flops": ("forward", "v_proj", "flops", ""),
    "out_proj_flops": ("forward", "out_proj", "flops", ""),
    "proj_flops": ("forward", "projections", "flops", ""),
    "attn_scores_flops": ("forward", "attention_scores", "flops", "full_square"),
    "attn_values_flops": ("forward", "attention_values", "flops", "full_square"),
    "attn_flops": ("forward", "attention", "flops", "full_square"),
    "attn_scores_flops_causal": ("forward", "attention_scores", "flops", "causal"),
    "attn_values_flops_causal": ("forward", "attention_values", "flops", "causal"),
    "attn_flops_causal": ("forward", "attention", "flops", "causal"),
    "ff_flops": ("forward", "feedforward", "flops", ""),
    "logits_flops": ("forward", "logits", "flops", ""),
    "fwd_flops": ("forward", "total", "flops", "full_square"),
    "fwd_flops_causal": ("forward", "total", "flops", "causal"),
    "train_step_flops": ("train_step", "total", "flops", "full_square"),
    "train_step_flops_flash_recompute": ("train_step", "total", "flops", "fused_backward"),
    "train_step_flops_causal": ("train_step", "total", "flops", "causal"),
    "fwd_flops_per_token": ("forward", "total", "flops_per_token", "full_square"),
    "fwd_flops_causal_per_token": ("forward", "total", "flops_per_token", "causal"),
    "train_step_flops_per_token": ("train_step", "total", "flops_per_token", "full_square"),
    "tokens": ("forward", "tokens", "tokens", ""),
    "gate_proj_flops": ("forward", "value_gate_proj", "flops", ""),
    "hyper_connection_flops": ("forward", "hyper_connections", "flops", ""),
    "hyper_connection_mv_flops_uncounted": ("forward", "hyper_connections_matvec_uncounted", "flops", ""),
}
_MEMORY_ROWS: dict[str, tuple[str, str, str, str]] = {
    "weights_bytes": ("inference", "weights", "bytes", ""),
    "buffers_bytes": ("inference", "buffers", "bytes", ""),
    "grads_bytes": ("train_step", "gradients", "bytes", ""),
    "adamw_state_bytes": ("train_step", "optimizer", "bytes", ""),
    "kv_cache_bytes": ("inference", "kv_cache", "bytes", ""),
    "kv_cache_bytes_per_token": ("inference", "kv_cache", "bytes_per_token", ""),
    "alibi_pos_diff_bytes": ("inference", "alibi_pos_diff", "bytes", ""),
    "alibi_bias_heads_bytes": ("inference", "alibi_bias_heads", "bytes", ""),
    "alibi_bias_padded_bytes": ("inference", "alibi_bias_padded", "bytes", ""),
    "alibi_sdpa_mask_bytes": ("inference", "alibi_sdpa_mask", "bytes", ""),
    "alibi_cached_buffer_bytes": ("inference", "alibi_cached_buffer", "bytes", ""),
    "alibi_bias_bytes": ("inference", "alibi_bias", "bytes", ""),
    "alibi_bias_allocated_bytes_per_forward": ("inference", "alibi_bias_allocated", "bytes", ""),
    "alibi_blocks_rebuilding_bias": ("inference", "alibi_blocks_rebuilding_bias", "count", ""),
    "causal_mask_bytes": ("inference", "causal_mask", "bytes", ""),
    "activation_bytes_inference": ("inference", "activations", "bytes", ""),
    "activation_bytes_training": ("train_step", "activations", "bytes", ""),
    "loss_bytes_training": ("train_step", "loss", "bytes", ""),
    "inference_total_bytes": ("inference", "total", "bytes", ""),
    "training_total_bytes": ("train_step", "total", "bytes", ""),
    "rel_pos_bias_bytes": ("inference", "rel_pos_bias", "bytes", ""),
}
# weights and buffers live in both phases: the training phase gets its own rows of the same bytes
_BOTH_PHASES = ("weights_bytes", "buffers_bytes")


def _rows_of(obj: object, table: dict[str, tuple[str, str, str, str]]) -> list[Prediction]:
    out = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, dict):  # breakdown dicts: emitted by _activation_rows
            continue
        if f.name not in table:
            raise KeyError(f"cost_model: {type(obj).__name__}.{f.name} has no (phase, component, unit) in the "
                           f"prediction vocabulary; add it to the table in cost_model.py")
        phase, component, unit, variant = table[f.name]
        out.append(Prediction(quantity=f.name, phase=phase, component=component, unit=unit, value=value,
                              variant=variant))
    return out


def _activation_rows(mem: MemoryEstimate, depth: int) -> list[Prediction]:
    """Breakdown parts of the activations, and the stacked parts that sum exactly to each phase's total."""
    out = [Prediction(quantity=f"activation_inference_{k}_bytes", phase="inference", component=f"activations.{k}",
                      unit="bytes", value=v) for k, v in mem.inference_breakdown_bytes.items()]
    out += [Prediction(quantity=f"activation_training_{k}_bytes", phase="train_step", component=f"activations.{k}",
                       unit="bytes", value=v) for k, v in mem.training_breakdown_bytes.items()]
    kv = mem.inference_breakdown_bytes.get("cached_k_v", 0)
    at_attention = mem.inference_breakdown_bytes.get("transient_attention", 0) > 0
    alibi_peak = mem.alibi_bias_bytes if at_attention else mem.alibi_cached_buffer_bytes
    saved = depth * mem.alibi_sdpa_mask_bytes + mem.alibi_cached_buffer_bytes
    stack = {
        "inference": {"kv_cache_in_activations": kv, "alibi_bias_at_peak": alibi_peak,
                      "other_activations": mem.activation_bytes_inference - kv - alibi_peak},
        "train_step": {"alibi_bias_saved": saved, "other_activations": mem.activation_bytes_training - saved},
    }
    for phase, parts in stack.items():
        out += [Prediction(quantity=f"{phase}_{k}_bytes", phase=phase, component=k, unit="bytes", value=v)
                for k, v in parts.items()]
    return out


def _legacy_rows(cfg: ModelConfig, wl: Workload) -> list[Prediction]:
    pc, fc, mem = param_counts(cfg), flop_counts(cfg, wl), memory_estimate(cfg, wl)
    rows = _rows_of(pc, _PARAM_ROWS) + _rows_of(fc, _FLOP_ROWS) + _rows_of(mem, _MEMORY_ROWS)
    rows += [Prediction(quantity=f"training_{key}", phase="train_step", component=table_row[1], unit="bytes",
                        value=getattr(mem, key))
             for key in _BOTH_PHASES for table_row in [_MEMORY_ROWS[key]]]
    return rows + _activation_rows(mem, cfg.depth)


def predictions(cfg: ModelConfig, wl: Workload, *, training: TrainingSetup | None = None,
                serving: ServingSetup | None = None) -> list[Prediction]:
    """Every closed-form quantity for ``cfg`` on ``wl`` as a ``Prediction`` row (see ``Prediction``).

    Without setups: the single-dtype, single-device numbers (``memory_estimate``: ``training_total_bytes`` is the
    sum of every training component, all alive at once). With ``training`` (``core.setup.TrainingSetup``) the
    ``train_step`` memory rows are per device under that setup and ``training_total_bytes`` is the peak by the
    order tensors live and die (``training_memory``; the parts alive at the peak are the ``peak.<part>`` rows,
    their variant names the stage), and the training FLOPs include recomputation and tensor parallelism
    (``training_flops_for``). With ``serving`` the ``inference`` memory rows describe the served workload
    (``serving.workload(wl)``) with quantised weights and KV cache, and ``inference_total_bytes`` is the
    serving total (``serving_memory``)."""
    rows = _legacy_rows(cfg, wl)
    if training is not None:
        rows = _with_training_setup(rows, cfg, wl, training)
    if serving is not None:
        rows = _with_serving_setup(rows, cfg, wl, serving)
    return rows


#: the parts alive at the training peak under a setup (``peak.<part>`` rows; they add up to ``total``)
SETUP_PEAK_PARTS = ("weights", "buffers", "gradients", "optimizer", "activations", "loss", "transient")


def _with_training_setup(rows: list[Prediction], cfg: ModelConfig, wl: Workload, setup: TrainingSetup
                         ) -> list[Prediction]:
    setup.check_against(cfg)
    tm = training_memory(cfg, wl, setup)
    fl = training_flops_for(cfg, wl, setup)
    fc = flop_counts(cfg, wl)
    tp = setup.tp
    extra = recompute_extra_flops(cfg, wl, setup.recompute)
    extra_c = recompute_extra_flops(cfg, wl, setup.recompute, causal=True)
    flops = {"train_step_flops": _ceil_div(fc.train_step_flops + extra, tp),
             "train_step_flops_flash_recompute": _ceil_div(fc.train_step_flops_flash_recompute + extra, tp),
             "train_step_flops_causal": _ceil_div(fc.train_step_flops_causal + extra_c, tp)}
    flops["train_step_flops_per_token"] = flops["train_step_flops"] / wl.tokens
    mem = {"training_weights_bytes": tm.weights_bytes, "training_buffers_bytes": tm.buffers_bytes,
           "grads_bytes": tm.grads_bytes, "activation_bytes_training": tm.activation_bytes,
           "loss_bytes_training": tm.loss_bytes, "training_total_bytes": tm.peak_bytes}
    out = []
    for r in rows:
        if r.phase == "train_step" and r.unit == "bytes" and r.quantity not in mem:
            continue  # the single-device breakdown rows: replaced below
        if r.quantity in mem:
            r = dataclasses.replace(r, value=mem[r.quantity])
        elif r.quantity in flops:
            r = dataclasses.replace(r, value=flops[r.quantity])
        out.append(r)
    out.append(Prediction(quantity="optimizer_state_bytes", phase="train_step", component="optimizer", unit="bytes",
                          value=tm.optimizer_bytes, variant=setup.optimizer))
    out += [Prediction(quantity=f"activation_training_{k}_bytes", phase="train_step", component=f"activations.{k}",
                       unit="bytes", value=v) for k, v in tm.activation_breakdown_bytes.items()]
    out += [Prediction(quantity=f"train_step_peak_{k}_bytes", phase="train_step", component=f"peak.{k}",
                       unit="bytes", value=tm.peak_parts_bytes[k], variant=tm.peak_stage) for k in SETUP_PEAK_PARTS]
    out += [Prediction(quantity=f"train_step_stage_{k}_bytes", phase="train_step", component=f"stage.{k}",
                       unit="bytes", value=v) for k, v in tm.stages_bytes.items()]
    out += [Prediction(quantity="recompute_flops", phase="train_step", component="recompute", unit="flops",
                       value=fl["recompute_flops"], variant=setup.recompute),
            Prediction(quantity="optimizer_step_flops", phase="train_step", component="optimizer_step", unit="flops",
                       value=fl["optimizer_step_flops"], variant="full_square")]
    return out


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


def _with_serving_setup(rows: list[Prediction], cfg: ModelConfig, wl: Workload, serving: ServingSetup
                        ) -> list[Prediction]:
    serving.check_against(cfg)
    swl = serving.workload(wl)
    sm = serving_memory(cfg, wl, serving)
    served = {r.quantity: r for r in _legacy_rows(cfg, swl) if r.phase == "inference" and r.unit in ("bytes", "count",
                                                                                                        "bytes_per_token")}
    override = {"weights_bytes": sm.weights_bytes, "kv_cache_bytes": sm.kv_cache_bytes,
                "kv_cache_bytes_per_token": sm.kv_cache_bytes_per_token, "inference_total_bytes": sm.total_bytes,
                "inference_kv_cache_in_activations_bytes": sm.kv_cache_bytes}
    out = []
    for r in rows:
        if r.quantity in served:
            r = served[r.quantity]
        if r.quantity in override:
            r = dataclasses.replace(r, value=override[r.quantity])
        out.append(r)
    return out


def predicted(rows: list[Prediction], *, phase: str, component: str, unit: str, variant: str | None = None
              ) -> int | float | None:
    """The predicted value of (``phase``, ``component``, ``unit``[, ``variant``]) in ``rows`` (None when the
    model predicts no such quantity). A measured component in ``SAME_QUANTITY`` reads its quantity's row."""
    component = SAME_QUANTITY.get(component, component)
    for r in rows:
        if (r.phase, r.component, r.unit) == (phase, component, unit) and (variant is None or r.variant == variant):
            return r.value
    return None


# --------------------------------------------------------------------------------------------------
# flat view
# --------------------------------------------------------------------------------------------------


def estimate(cfg: ModelConfig, wl: Workload, *, training: TrainingSetup | None = None,
             serving: ServingSetup | None = None) -> dict[str, int | float]:
    """Every ``Prediction`` of ``predictions(cfg, wl, training=..., serving=...)`` as ``{quantity: value}``
    (unit-suffixed keys: the CLI prints it as JSON). Activation breakdowns are ``activation_inference_<part>_bytes``
    and ``activation_training_<part>_bytes``; the stacked parts ``<phase>_<part>_bytes``."""
    return {r.quantity: r.value for r in predictions(cfg, wl, training=training, serving=serving)}


# --------------------------------------------------------------------------------------------------
# training and serving setups (``core.setup``): per-device memory by the order tensors live and die
# --------------------------------------------------------------------------------------------------
#
# Symbols besides the module's: ``P`` parameters per device before ZeRO (``tp_params``), ``se`` bytes of the
# state dtype (weights, gradients, optimizer state), ``ce`` bytes of the compute dtype (matmul outputs),
# ``dp`` / ``tp`` the data- and tensor-parallel degrees, ``k`` the gradient-accumulation micro-batches.

BNB_BLOCK = 256  # bitsandbytes blockwise quantisation of 8-bit optimizer state (optim/optimizer.py, blocksize=256)
BNB_MIN_8BIT_SIZE = 4096  # bitsandbytes keeps tensors under 4096 elements in 32-bit state (min_8bit_size)


def param_shapes(cfg: ModelConfig) -> list[tuple[int, ...]]:
    """Shapes of the model's parameter tensors (one entry per tensor, tied ones once), in the layout of
    x-transformers 2.31 (``nn.Linear`` weights are ``(out, in)``). Hyper-connection parameters are listed as
    1-D tensors of their sizes (their exact shapes matter only to Adafactor's factored state). The sum of
    the sizes is ``param_counts(cfg).num_params``."""
    d, L, h, g, dh, f, V = cfg.dim, cfg.depth, cfg.heads, cfg.kv_heads, cfg.attn_dim_head, cfg.ff_inner_dim, cfg.num_tokens
    shapes: list[tuple[int, ...]] = [(V, d)]
    if cfg.has_abs_pos_emb:
        shapes.append((cfg.max_seq_len, d))
    attn = [(h * dh, d), (g * dh, d), (g * dh, d), (d, h * dh)]
    if cfg.attn_gate_values:
        attn.append((h * dh, d))
    if cfg.attn_num_mem_kv:
        attn += [(g, cfg.attn_num_mem_kv, dh)] * 2
    shapes += attn * L
    ff_w = 2 * f if cfg.ff_glu else f
    ff = [(ff_w, d), (d, f)]
    if cfg.ff_glu or not cfg.ff_no_bias:
        ff.append((ff_w,))
    if not cfg.ff_no_bias:
        ff.append((d,))
    shapes += ff * cfg.num_ff_layers
    each = norm_params_each(cfg)
    if each:
        shapes += [(each,)] * num_norms(cfg)
    if cfg.deepnorm:
        shapes += [(d,)] * cfg.num_layers
    if not cfg.tie_embedding:
        shapes.append((V, d))
    if cfg.rel_pos_bias:
        shapes.append((REL_POS_NUM_BUCKETS, h))
    if cfg.num_residual_streams > 1:
        shapes += [(hyper_connection_params_per_layer(cfg),)] * cfg.num_layers + [(cfg.num_residual_streams * d,)]
    return shapes


def _numel(shape: tuple[int, ...]) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def tp_params(cfg: ModelConfig, tp: int) -> int:
    """Parameters one tensor-parallel rank holds (Megatron-LM layout): attention and feed-forward projections,
    the token embedding and the logits (vocabulary-parallel) are split ``tp`` ways (rounded up); norms,
    residual scales, positions and biases of row-parallel layers are replicated. ``tp = 1``: all of them."""
    pc = param_counts(cfg)
    split = pc.attention_params + pc.feedforward_params + pc.token_embedding_params + pc.logits_params
    return _ceil_div(split, tp) + pc.num_params - split


def optimizer_state_bytes_for(cfg: ModelConfig, optimizer: str, state_bytes: int, tp: int = 1) -> int:
    """Optimizer state of one tensor-parallel rank, in bytes, before ZeRO sharding.

    ``adamw`` (``torch.optim.AdamW``): ``2 * P * se + 4 * tensors`` (``exp_avg``, ``exp_avg_sq`` like the
    parameters, a float32 ``step`` each; torch/optim/adamw.py). ``sgd`` (``torch.optim.SGD(momentum>0)``):
    ``P * se`` (``momentum_buffer``; torch/optim/sgd.py). ``adafactor`` (``torch.optim.Adafactor``): per tensor a
    float32 ``step`` and, for >= 2-D tensors, ``row_var`` (``numel / shape[-1]``) and ``col_var``
    (``numel / shape[-2]``) elements, for 1-D tensors ``variance`` like it (torch/optim/_adafactor.py:98-111).
    ``adamw8bit`` (bitsandbytes ``AdamW8bit``): tensors of >= 4096 elements keep two uint8 states plus a float32
    absmax per 256-element block (``2 * numel + 8 * ceil(numel / 256)``), smaller ones two float32 states
    (``8 * numel``) (bitsandbytes/optim/optimizer.py, ``Optimizer2State.init_state``). Tensor-parallel ranks
    hold ``1 / tp`` of the split tensors (the shapes are scaled, not re-split)."""
    shapes = param_shapes(cfg)
    scale = tp_params(cfg, tp) / max(1, param_counts(cfg).num_params)
    n = len(shapes)
    if optimizer == "adamw":
        return 2 * tp_params(cfg, tp) * state_bytes + ADAMW_STEP_BYTES * n
    if optimizer == "sgd":
        return tp_params(cfg, tp) * state_bytes
    if optimizer == "adafactor":
        elems = 0
        for s in shapes:
            numel = _numel(s)
            elems += numel // s[-1] + numel // s[-2] if len(s) >= 2 else numel
        return round(elems * scale) * state_bytes + ADAMW_STEP_BYTES * n
    if optimizer == "adamw8bit":
        total = 0
        for s in shapes:
            numel = _numel(s)
            total += (2 * numel + 8 * _ceil_div(numel, BNB_BLOCK)) if numel >= BNB_MIN_8BIT_SIZE else 8 * numel
        return round(total * scale)
    raise KeyError(optimizer)


def optimizer_step_transient_bytes(cfg: ModelConfig, optimizer: str, state_bytes: int, *, foreach: bool,
                                   tp: int = 1) -> int:
    """Temporaries of ``optimizer.step()`` on top of weights, gradients and state, in bytes. torch's
    single-tensor AdamW (the CPU default) makes one ``denom = exp_avg_sq.sqrt() / bc + eps`` per tensor: the
    largest tensor's size twice (``sqrt()`` and the division are both out of place; measured on the seed: the
    step of a block-recomputed 512-token step peaks at weights + gradients + state + 2 x the 20000 x 512 table);
    foreach AdamW (the CUDA default) makes it for all tensors at once: ``P * se``
    (torch/optim/adamw.py ``_single_tensor_adamw`` / ``_multi_tensor_adamw``). SGD and Adafactor update in
    place up to one tensor-sized temporary; 8-bit Adam works blockwise in its CUDA kernel (0)."""
    if optimizer == "adamw8bit":
        return 0
    largest = max(_numel(s) for s in param_shapes(cfg))
    if foreach and optimizer == "adamw":
        return tp_params(cfg, tp) * state_bytes
    return 2 * _ceil_div(largest, tp) * state_bytes if optimizer != "sgd" else 0


def _setup_dtype(precision: str, wl: Workload) -> str:
    """The dtype of the model's parameters under ``precision`` (``auto``: the workload's)."""
    return {"auto": wl.dtype, "fp32": "float32", "amp_bf16": "float32", "amp_fp16": "float32", "bf16": "bfloat16",
            "fp16": "float16"}[precision]


def autocast_weight_copy_bytes(cfg: ModelConfig, compute_bytes: int, tp: int = 1) -> int:
    """``torch.autocast`` casts every matmul weight (and bias) to 16 bits once per forward and keeps the copy in
    its cache; the linear layers save it for backward: ``(attention + feed-forward + logits) * ce`` bytes (the
    token embedding is not a matmul; with ``tie_embedding`` the logits matmul casts the embedding table)
    (torch/csrc/autograd/autocast_mode.cpp ``cached_cast``)."""
    pc = param_counts(cfg)
    logits = pc.token_embedding_params if cfg.tie_embedding else pc.logits_params
    return _ceil_div(pc.attention_params + pc.feedforward_params + logits, tp) * compute_bytes


def setup_activation_bytes(cfg: ModelConfig, wl: Workload, setup: TrainingSetup) -> dict[str, int]:
    """Bytes autograd saves in one micro-batch's forward under ``setup``, by part (``training_activation_bytes``'
    parts, re-typed and cut as the setup does), per device.

    * precision: pure / fp32 / ``auto`` use one dtype; ``amp_*`` keeps the residual stream, norms, rotary tables
      and ids in float32 (autocast runs layer norm in float32 and the residual adds promote) and the attention,
      feed-forward and logits tensors in 16 bits (matmul and SDPA outputs), plus the cast weight copies
      (``autocast_weight_copies``; measured on the seed within 0.3%).
    * ``recompute="block"``: per sub-layer only what lives outside the checkpointed block: its input, the norm's
      saved tensors and the residual (``layer_norm_residual`` less the token-shifted copy made inside the
      block); attention, feed-forward and rotary parts are recomputed in backward (``torch.utils.checkpoint``).
    * ``recompute="selective"`` (checkpoint around ``Attend``): per attention block the SDPA output and
      log-sum-exp are recomputed, and the dense ``(b, h, n, n)`` ALiBi mask is replaced by the ``(h, n, n)``
      bias ``Attend`` receives.
    * ``tp``: attention, feed-forward, rotary and logits parts split ``tp`` ways (no sequence parallelism: the
      residual stream and norms are replicated, Megatron-LM).
    """
    se, ce = precision_bytes(setup.precision, wl)
    compute = training_activation_bytes(cfg, Workload(batch=wl.batch, seq_len=wl.seq_len,
                                                      dtype="float32" if ce == 4 else _half(setup, wl)))
    if setup.mixed:
        full = training_activation_bytes(cfg, Workload(batch=wl.batch, seq_len=wl.seq_len, dtype="float32"))
        parts = dict(full)
        for key in ("attention", "feedforward", "logits"):
            parts[key] = compute[key]
        parts["autocast_weight_copies"] = 0  # set below, after the tp split
    else:
        parts = dict(compute)
    sw = Workload(batch=wl.batch, seq_len=wl.seq_len, dtype="float32" if ce == 4 else _half(setup, wl))
    sh = _shapes(cfg, sw)
    al = alibi_tensors(cfg, sw)
    if setup.recompute == "block":
        if not cfg.uses_pre_norm and cfg.shift_tokens > 0:
            per = _shapes(cfg, Workload(batch=wl.batch, seq_len=wl.seq_len,
                                        dtype="float32" if se == 4 and setup.mixed else sw.dtype))["hidden"]
            parts["layer_norm_residual"] -= cfg.num_layers * per
        for key in ("attention", "feedforward", "rotary", "rel_pos_bias"):
            if key in parts:
                parts[key] = 0
    elif setup.recompute == "selective" and cfg.attn_flash:
        swapped = (al["mask"] - al["padded"]) if cfg.alibi_pos_bias else 0
        parts["attention"] -= cfg.depth * (sh["q"] + sh["lse"] + swapped)
    if setup.tp > 1:
        for key in ("attention", "feedforward", "rotary", "logits"):
            parts[key] = _ceil_div(parts[key], setup.tp)
    if setup.mixed:
        parts["autocast_weight_copies"] = autocast_weight_copy_bytes(cfg, ce, setup.tp)
    return parts


def _half(setup: TrainingSetup, wl: Workload) -> str:
    if setup.precision in ("bf16", "amp_bf16"):
        return "bfloat16"
    if setup.precision in ("fp16", "amp_fp16"):
        return "float16"
    return wl.dtype


@dataclass(frozen=True, kw_only=True)
class TrainingMemory:
    """Per-device memory of a training step under a ``TrainingSetup``, by the order tensors live and die.

    Sizes (bytes, per device): ``weights_bytes`` (``P * se``, divided by ``dp`` with ZeRO-3), ``buffers_bytes``,
    ``grads_bytes`` (``P * se``, ``/ dp`` with ZeRO >= 2), ``optimizer_bytes`` (``optimizer_state_bytes_for``,
    its moments ``/ dp`` with ZeRO >= 1; the float32 ``step`` scalars stay on every rank), ``activation_bytes`` (``setup_activation_bytes``, logits included) and
    ``loss_bytes`` (the ``(T, V)`` log-softmax output; float32 under autocast, whose ``cross_entropy`` runs in
    float32).

    The loop assumed (``setup.loop``): ``free_logits`` is ``loss = F.cross_entropy(model(x), y)`` (the logits die
    after the loss), ``keep_logits`` a loop holding ``logits`` through ``backward()`` (one more ``(b, n, V)``
    tensor). Each step: ``k = grad_accum`` micro-batches of forward, loss, backward, then ``optimizer.step()`` and
    ``zero_grad(set_to_none=True)`` (gradients do not exist during the first micro-batch's forward).

    Stages (``stages_bytes``; the peak is their maximum, ``peak_stage`` names it):

    * ``loss``: weights, buffers, optimizer state, the gradients of earlier micro-batches (``k > 1``), saved
      activations with the logits, the loss' log-softmax output (+ the float32 copy of the logits under autocast);
    * ``backward_start``: the same without the logits (freed; kept with ``keep_logits``), plus the gradient of the
      log-softmax output and of the logits, ``2 * T * V`` in the loss dtype (``nll_loss_backward``,
      ``_log_softmax_backward_data``);
    * ``backward_block`` (block recompute only): backward of the last attention block, its activations recomputed:
      the checkpointed activations, the logits' weight gradient, one attention block's saved tensors, the bias
      tensors its re-run forward builds (padded ALiBi / T5 bias, causal mask) and two ``T * d`` gradients of the
      hidden state;
    * ``forward_attention`` (ALiBi or T5 bias): the last attention block's SDPA call in the forward
      (``_forward_attention_bytes``);
    * ``optimizer_step``: weights, buffers, gradients, state and the step's temporaries
      (``optimizer_step_transient_bytes``, two tensor-sized temporaries for single-tensor AdamW: ``sqrt`` then
      ``/ bias_correction``);
    * ``zero3_gather`` (ZeRO-3, FSDP2 ``fully_shard`` on every attention / feed-forward block and on the root):
      ``backward_start`` plus the unsharded parameters FSDP gathers beyond the local shards: the root module's
      (embeddings, logits, norms, residual scales: kept unsharded through forward and backward) and two blocks'
      (the current and the prefetched one).

    Measured on the seed (CPU, ``MemTracker`` under ``FakeTensorMode``, float32 AdamW): 737.1 / 2233.8 MB at
    512 / 2048 tokens against 737.1 / 2233.4 MB predicted (see docs/peers.md and tests/profiling/test_setups.py).
    """

    weights_bytes: int
    buffers_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    activation_bytes: int
    loss_bytes: int
    activation_breakdown_bytes: dict[str, int]
    stages_bytes: dict[str, int]
    peak_bytes: int
    peak_stage: str
    peak_parts_bytes: dict[str, int]


def _forward_attention_bytes(cfg: ModelConfig, wl: Workload, setup: TrainingSetup, acts: dict[str, int]
                             ) -> tuple[int, int]:
    """``(saved so far, transient)`` activation bytes at the last attention block's SDPA call in the forward (a bias-heavy model peaks
    there at long lengths): everything saved so far (all but the last feed-forward sub-layer, the final hidden
    state and the logits) plus the bias tensors alive at the call: the padded ``(h, n, n)`` bias (in the
    buffers' dtype, float32 under autocast), the bool causal mask and, under autocast, the float32 dense mask
    that SDPA's 16-bit cast copy (the saved one) was made from."""
    se, ce = precision_bytes(setup.precision, wl)
    bias_wl = Workload(batch=wl.batch, seq_len=wl.seq_len, dtype="float32" if setup.mixed or ce == 4 else _half(setup, wl))
    al = alibi_tensors(cfg, bias_wl)
    sh = _shapes(cfg, Workload(batch=wl.batch, seq_len=wl.seq_len, dtype="float32" if ce == 4 else _half(setup, wl)))
    last_ff = _ceil_div(acts.get("feedforward", 0), max(1, cfg.num_ff_layers))
    last_layer = _ceil_div(acts.get("layer_norm_residual", 0), max(1, cfg.num_layers))
    before = sum(acts.values()) - acts["logits"] - acts.get("final_hidden", 0) - last_ff - last_layer
    transient = al["padded"] + al["causal"] + rel_pos_bias_bytes(cfg, bias_wl)
    if (setup.mixed or setup.recompute == "block") and cfg.attn_flash:
        transient += al["mask"]  # under autocast the saved mask is SDPA's 16-bit copy; a checkpointed block saves none
    if setup.recompute == "block":  # the block runs without saving: its own working set only
        transient += sh["q"] * 3
        if setup.mixed and cfg.attn_flash:
            transient += al["mask"] * ce // FP32_BYTES  # SDPA's 16-bit copy of the mask, not saved here either
    return before, transient


def _loss_dtype_bytes(setup: TrainingSetup, wl: Workload) -> int:
    se, ce = precision_bytes(setup.precision, wl)
    return FP32_BYTES if setup.mixed else ce


def training_memory(cfg: ModelConfig, wl: Workload, setup: TrainingSetup, *, foreach: bool = False
                    ) -> TrainingMemory:
    """Per-device peak of a training step under ``setup`` (see ``TrainingMemory``), in bytes. ``foreach``: the
    optimizer's multi-tensor path (the torch default on CUDA); False is the single-tensor path torch takes on
    the CPU."""
    se, ce = precision_bytes(setup.precision, wl)
    pc = param_counts(cfg)
    P = tp_params(cfg, setup.tp)
    dp = setup.dp
    weights = _ceil_div(P * se, dp if setup.zero >= 3 else 1)
    buffers = pc.buffer_elements * DTYPE_BYTES[_setup_dtype(setup.precision, wl)]
    grads = _ceil_div(P * se, dp if setup.zero >= 2 else 1)
    # ZeRO >= 1 shards the moments; every rank keeps a float32 ``step`` per parameter (FSDP2 shards each tensor)
    steps = ADAMW_STEP_BYTES * len(param_shapes(cfg)) if setup.optimizer in ("adamw", "adafactor") else 0
    optimizer_full = optimizer_state_bytes_for(cfg, setup.optimizer, se, setup.tp)
    optimizer = _ceil_div(optimizer_full - steps, dp if setup.zero >= 1 else 1) + steps
    acts = setup_activation_bytes(cfg, wl, setup)
    act_total = sum(acts.values())
    T = wl.tokens
    V = _ceil_div(cfg.num_tokens, setup.tp)
    le = _loss_dtype_bytes(setup, wl)
    loss = T * V * le
    logits = acts["logits"]
    g_acc = grads if setup.grad_accum > 1 else 0
    state = weights + buffers + optimizer
    kept_logits = logits if setup.loop == "keep_logits" else 0
    stages = {
        "loss": state + g_acc + act_total + loss + (T * V * FP32_BYTES if setup.mixed else 0),
        "backward_start": state + g_acc + act_total - logits + kept_logits + loss + 2 * T * V * le,
        "optimizer_step": state + grads + optimizer_step_transient_bytes(cfg, setup.optimizer, se, foreach=foreach,
                                                                         tp=setup.tp),
    }
    if cfg.alibi_pos_bias or cfg.rel_pos_bias:
        fa_before, fa_transient = _forward_attention_bytes(cfg, wl, setup, acts)
        stages["forward_attention"] = state + g_acc + fa_before + fa_transient
    if setup.recompute == "block":
        full = setup_activation_bytes(cfg, wl, dataclasses.replace(setup, recompute="none"))
        bias = alibi_tensors(cfg, Workload(batch=wl.batch, seq_len=wl.seq_len,
                                           dtype="float32" if setup.mixed or ce == 4 else _half(setup, wl)))
        # the recomputed block's saved tensors and the bias tensors its re-run forward builds
        one_block = (_ceil_div(full["attention"] + full["rotary"], cfg.depth) + bias["padded"] + bias["causal"]
                     + rel_pos_bias_bytes(cfg, wl)
                     + (bias["mask"] if setup.mixed and cfg.attn_flash else 0))  # autocast: the float32 mask cast
        hidden = T * cfg.dim * (FP32_BYTES if setup.mixed else ce)
        stages["backward_block"] = (state + g_acc + act_total - logits + kept_logits
                                    + _ceil_div(pc.logits_params or pc.token_embedding_params, setup.tp) * se
                                    + one_block + 2 * hidden)
    if setup.zero >= 3:
        unit_root = P - pc.attention_params - pc.feedforward_params  # embeddings, logits, norms, scales
        per_block = max(pc.attention_params_per_block, pc.feedforward_params_per_block)
        gathered = (unit_root + 2 * per_block) * se - _ceil_div((unit_root + 2 * per_block) * se, dp)
        stages["zero3_gather"] = stages["backward_start"] + gathered
    peak_stage = max(stages, key=lambda k: stages[k])
    peak = stages[peak_stage]
    at_peak = {"weights": weights, "buffers": buffers, "optimizer": optimizer}
    if peak_stage == "optimizer_step":
        at_peak.update(gradients=grads, activations=0, loss=0, transient=peak - state - grads)
    elif peak_stage == "forward_attention":
        at_peak.update(gradients=g_acc, activations=fa_before, loss=0, transient=fa_transient)
    else:
        live_acts = act_total if peak_stage == "loss" else act_total - logits + kept_logits
        loss_live = 0 if peak_stage == "backward_block" else loss
        at_peak.update(gradients=g_acc, activations=live_acts, loss=loss_live,
                       transient=peak - state - g_acc - live_acts - loss_live)
    return TrainingMemory(weights_bytes=weights, buffers_bytes=buffers, grads_bytes=grads, optimizer_bytes=optimizer,
                          activation_bytes=act_total, loss_bytes=loss, activation_breakdown_bytes=acts,
                          stages_bytes=stages, peak_bytes=peak, peak_stage=peak_stage, peak_parts_bytes=at_peak)


def training_flops_for(cfg: ModelConfig, wl: Workload, setup: TrainingSetup) -> dict[str, int]:
    """FLOPs of one micro-batch's training step per device under ``setup`` (torch convention, full square):
    ``train_step_flops`` (``3 * fwd``, ``+ attn / 2`` when a fused SDPA backward recomputes the scores) plus the
    recomputed forward (``recompute_extra_flops``); divided by ``tp`` (every matmul is split over the tensor-parallel ranks).
    ``optimizer_step_flops`` is ``grad_accum`` micro-batches of it."""
    fc = flop_counts(cfg, wl)
    base = train_step_flops(fc, fused_backward=fused_sdpa_backward(cfg))
    extra = recompute_extra_flops(cfg, wl, setup.recompute)
    per_device = _ceil_div(base + extra, setup.tp)
    return {"train_step_flops": per_device, "recompute_flops": _ceil_div(extra, setup.tp),
            "optimizer_step_flops": per_device * setup.grad_accum}


# --- serving ----------------------------------------------------------------------------------------

#: bytes per cached element for each KV-cache precision (``None`` = the workload dtype)
KV_ELEMENT_BYTES = {"16": 2, "fp8": 1, "int8": 1}
QUANT_SCALE_BYTES = 2  # float16 scale (and zero point) per group / per cached token and K/V head


def quantised_linear_bytes(out_features: int, in_features: int, bits: int, group_size: int) -> int:
    """One ``(out, in)`` linear weight quantised in groups of ``group_size`` input features: ``out * in * bits / 8``
    bytes of codes (int4 packed two per byte) plus a float16 scale per group, and for 4 bits a float16 zero
    point per group (GPTQ / AWQ layout): ``out*in*bits/8 + out*(in/group)*2*(2 if bits == 4 else 1)`` bytes.
    Checked exactly against ``profiling.setups.quantise_weight`` on the real model."""
    groups = out_features * (in_features // group_size)
    return out_features * in_features * bits // 8 + groups * QUANT_SCALE_BYTES * (2 if bits == 4 else 1)


def serving_weight_bytes(cfg: ModelConfig, wl: Workload, serving: ServingSetup) -> int:
    """Weights as served: every parameter in the workload dtype (``weights_bits=None``), in 16 bits (16), or the
    ``nn.Linear`` weights quantised by ``quantised_linear_bytes`` (8, 4) and the rest (embeddings, norms, biases,
    residual scales, memory slots) in 16 bits, in bytes."""
    if serving.weights_bits is None:
        return param_counts(cfg).num_params * wl.dtype_bytes
    if serving.weights_bits == 16:
        return param_counts(cfg).num_params * 2
    linears = _linear_shapes(cfg)
    q = sum(quantised_linear_bytes(o, i, serving.weights_bits, serving.group_size) for o, i in linears)
    rest = param_counts(cfg).num_params - sum(o * i for o, i in linears)
    return q + rest * 2


def _linear_shapes(cfg: ModelConfig) -> list[tuple[int, int]]:
    """``(out, in)`` of every ``nn.Linear`` weight (attention projections, value gate, feed-forward, logits)."""
    d, h, g, dh, f = cfg.dim, cfg.heads, cfg.kv_heads, cfg.attn_dim_head, cfg.ff_inner_dim
    attn = [(h * dh, d), (g * dh, d), (g * dh, d), (d, h * dh)] + ([(h * dh, d)] if cfg.attn_gate_values else [])
    ff = [(2 * f if cfg.ff_glu else f, d), (d, f)]
    out = attn * cfg.depth + ff * cfg.num_ff_layers
    if not cfg.tie_embedding:
        out.append((cfg.num_tokens, d))
    return out


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


# --- what fits -------------------------------------------------------------------------------------


def largest_fitting(peak_of, budget_bytes: int, *, hi: int) -> int:
    """Largest integer ``x`` in ``1..hi`` with ``peak_of(x) <= budget_bytes`` (0 if none), by bisection; the peaks
    grow monotonically with batch and sequence length."""
    if peak_of(1) > budget_bytes:
        return 0
    lo = 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if peak_of(mid) <= budget_bytes:
            lo = mid
        else:
            hi = mid - 1
    return lo


def what_fits(cfg: ModelConfig, wl: Workload, budget_bytes: int, *, training: TrainingSetup | None = None,
              serving: ServingSetup | None = None, max_batch: int = 4096) -> dict[str, int]:
    """For a device memory ``budget_bytes``: the largest micro-batch (at ``wl.seq_len``) and the largest sequence
    length (at ``wl.batch``, up to ``max_seq_len``) whose per-device training peak (``training_memory``) and
    serving total (``serving_memory``) fit. Keys ``fits_train_batch``, ``fits_train_seq_len_tokens``,
    ``fits_serve_batch``, ``fits_serve_seq_len_tokens``; 0 when not even 1 fits."""
    training = training or TrainingSetup()
    serving = serving or ServingSetup()

    def train(b: int, n: int) -> int:
        return training_memory(cfg, Workload(batch=b, seq_len=n, dtype=wl.dtype), training).peak_bytes

    def serve(b: int, n: int) -> int:
        s = dataclasses.replace(serving, concurrent=b, context_len=n)
        return serving_memory(cfg, wl, s).total_bytes

    return {
        "fits_train_batch": largest_fitting(lambda b: train(b, wl.seq_len), budget_bytes, hi=max_batch),
        "fits_train_seq_len_tokens": largest_fitting(lambda n: train(wl.batch, n), budget_bytes, hi=cfg.max_seq_len),
        "fits_serve_batch": largest_fitting(lambda b: serve(b, serving.context_len or wl.seq_len), budget_bytes,
                                            hi=4096),
        "fits_serve_seq_len_tokens": largest_fitting(lambda n: serve(serving.concurrent or wl.batch, n),
                                                     budget_bytes, hi=cfg.max_seq_len),
    }
