"""Memory of the model on one device in one dtype, in bytes (integers), one small function per term:
``weights_bytes``, ``buffers_bytes``, ``grads_bytes``, ``optimizer_state_bytes``, ``kv_bytes_per_token`` /
``kv_cache_bytes``, ``alibi_tensors``, ``rel_pos_bias_bytes``, ``shift_copies_bytes``,
``inference_activation_bytes``, ``training_activation_bytes``, ``hyper_connection_saved_bytes``, ``loss_bytes``;
``memory_estimate`` adds them up.

Symbols: ``b`` batch, ``n`` length, ``T = b * n``, ``d`` dim, ``L`` depth, ``h`` heads, ``g`` K/V heads, ``dh``
head width, ``f`` feed-forward width, ``V`` vocabulary, ``e`` bytes per element of the workload dtype, ``ha``
ALiBi heads, ``m`` memory slots, ``s`` residual streams, ``L'`` sub-layers. Line numbers are x-transformers
2.31.10's (``x_transformers.py``, ``attend.py``). Allocator rounding, SDPA kernel scratch, Python overhead,
the input ids and dropout masks (dropout 0 assumed) are not counted. Measured against MemTracker within the
tolerances in ``docs/flags.md`` (``tests/profiling/test_memory.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from xtlens.core.config import ModelConfig, Workload
from xtlens.core.params import param_counts

__all__ = ["MemoryEstimate", "memory_estimate", "ADAMW_STEP_BYTES", "INDEX_BYTES", "BOOL_BYTES", "FP32_BYTES",
           "weights_bytes", "buffers_bytes", "grads_bytes", "optimizer_state_bytes", "kv_bytes_per_token",
           "kv_cache_bytes", "alibi_tensors", "rel_pos_bias_bytes", "activation_tensor_bytes", "shift_copies_bytes",
           "inference_activation_bytes", "training_activation_bytes", "hyper_connection_saved_bytes", "loss_bytes"]

ADAMW_STEP_BYTES = 4  # torch.optim.AdamW keeps one float32 scalar ``step`` tensor per parameter tensor
INDEX_BYTES = 8  # int64 token ids / positions
BOOL_BYTES = 1
FP32_BYTES = 4


@dataclass(frozen=True, kw_only=True)
class MemoryEstimate:
    """Memory in bytes for ``cfg`` on ``wl`` (parameters and activations in ``wl.dtype``), each field the term
    function of the same name (its derivation is written beside it).

    ``inference_total_bytes = weights + buffers + activation_bytes_inference`` (no KV cache);
    ``training_total_bytes = weights + buffers + grads + adamw_state + activation_bytes_training +
    loss_bytes_training``, a lower bound of the step's peak (backward transients are not included; the
    per-device peak by stages under a setup is ``core.training.training_memory``).
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
    rotary, with the ``g`` K/V heads (not expanded to ``h``; that happens later, in ``Attend``) and without the
    ``attn_num_mem_kv`` memory slots, which are concatenated afterwards (``Attention.forward``,
    x_transformers.py:2457; the slots are concatenated at 2517).
    """
    return 2 * cfg.depth * cfg.kv_heads * cfg.attn_dim_head * dtype_bytes


def kv_cache_bytes(cfg: ModelConfig, wl: Workload) -> int:
    """KV cache for ``b`` sequences of ``n`` tokens: ``kv_bytes_per_token * b * n`` bytes (what
    ``generate(cache_kv=True)`` holds: ``Intermediates.cached_kv`` of every block, x_transformers.py:2510).

    Not included: the old and the concatenated cache coexisting briefly during a decode step. Caveat: with
    rotary AND ALiBi (the seed) cached decoding fails in x-transformers 2.31 (``forward_custom_pos(pos)`` builds
    the bias for all cached positions ``(h, n, n)`` while the step has one query row, and SDPA raises a
    broadcast error); for such configurations this is what the cache would hold.
    """
    return kv_bytes_per_token(cfg, wl.dtype_bytes) * wl.tokens


# --- attention biases -----------------------------------------------------------------------------


def alibi_tensors(cfg: ModelConfig, wl: Workload) -> dict[str, int]:
    """ALiBi tensors x-transformers materialises, in bytes (x_transformers.py:650-699, 2584-2602; attend.py:318-336).

    ``diff``, ``heads``, ``padded``, ``mask``, ``causal``, ``cached``: the tensors below; ``live`` what is live at
    one block's SDPA call; ``allocated`` every ALiBi tensor one forward allocates (memory traffic, not peak);
    ``blocks`` the number of blocks that rebuild the bias. Zeros without ALiBi.
    """
    b, n, e, h, L = wl.batch, wl.seq_len, wl.dtype_bytes, cfg.heads, cfg.depth
    if not cfg.alibi_pos_bias:
        return dict.fromkeys(("diff", "heads", "padded", "mask", "causal", "cached", "live", "allocated", "blocks"), 0)
    j = n + cfg.attn_num_mem_kv
    ha = cfg.alibi_heads
    # (1) with rotary, ``AttentionLayers.forward`` builds ``pos = arange(n)`` (3468-3469) and every block calls
    #     ``rel_pos.forward_custom_pos(pos)`` (2597-2600): an int64 ``(n, n)`` position difference
    #     (``einx.subtract``, then ``abs`` and negation: three of them)
    diff = n * n * INDEX_BYTES
    # (2) times the slopes: ``(ha, n, n)`` in the slopes' dtype, zero-padded to ``(h, n, n)`` (671-673)
    heads = ha * n * n * e
    # (3) padded again by ``pad_at_dim(attn_bias, (num_mem_kv, 0))`` (2602), which ``F.pad`` executes as a copy:
    #     ``(h, n, n+m)``, in every block
    padded = h * n * j * e
    # (4) with ``attn_flash`` (``Attend.flash_attn``, attend.py:318-336) the bias is expanded to ``(b, h, n, n+m)``
    #     and ``masked_fill``-ed with the bool causal mask ``(n, n+m)`` (``create_causal_mask``) into a new dense
    #     tensor passed to SDPA as ``attn_mask`` with ``is_causal=False``; without flash the bias is added to the
    #     score matrix
    mask = b * h * n * j * e if cfg.attn_flash else 0
    causal = n * j * BOOL_BYTES if cfg.attn_flash else 0
    # (5) without rotary, ``AlibiPositionalBias.forward`` builds the ``(h, n, n)`` bias once and keeps it as the
    #     non-persistent buffer ``rel_pos.bias`` (684-699), alive after the forward; later blocks slice it
    blocks = L if cfg.uses_rotary else 1
    cached = 0 if cfg.uses_rotary else h * n * n * e
    live = padded + mask + causal + cached
    # (6) per rebuilding block: diff, abs, neg (3 int64), product, pad; per block: pad copy, mask (+ bool mask)
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


def activation_tensor_bytes(cfg: ModelConfig, wl: Workload) -> dict[str, int]:
    """Byte sizes of the recurring activation tensors: ``hidden`` ``(T, d)``, ``q`` ``(T, h*dh)``, ``kv_one`` one
    of k / v ``(T, g*dh)``, ``kv_mem`` k or v with the memory slots concatenated, ``scores`` ``(b, h, n, n+m)``
    (``scores_fp32`` in float32), ``lse`` the float32 log-sum-exp, ``causal_mask`` the bool ``(n, n+m)``, ``ff_in``
    the first feed-forward projection (``f`` or ``2f`` wide), ``ff_hidden`` ``(T, f)``."""
    b, n, e = wl.batch, wl.seq_len, wl.dtype_bytes
    T = b * n
    h, g, dh, m = cfg.heads, cfg.kv_heads, cfg.attn_dim_head, cfg.attn_num_mem_kv
    return dict(
        hidden=T * cfg.dim * e,
        q=T * h * dh * e,
        kv_one=T * g * dh * e,
        kv_mem=b * g * (n + m) * dh * e if m else 0,
        scores=b * h * n * (n + m) * e,
        scores_fp32=b * h * n * (n + m) * FP32_BYTES,
        lse=b * h * n * FP32_BYTES,
        causal_mask=n * (n + m) * BOOL_BYTES,
        ff_in=T * (2 * cfg.ff_inner_dim if cfg.ff_glu else cfg.ff_inner_dim) * e,
        ff_hidden=T * cfg.ff_inner_dim * e,
    )


def shift_copies_bytes(cfg: ModelConfig, wl: Workload) -> int:
    """Token-shift tensors alive while a shifted sub-layer runs (0 without ``shift_tokens``): the concatenated
    ``(T, d)`` input and the ``k`` padded segments of ``d // (k+1)`` features each, ``k = shift_tokens``
    (causal shifts ``0..k``, x_transformers.py:3243-3245; ``ShiftTokens.forward``, 1608-1617):
    ``T * (d + k * (d // (k+1))) * e`` bytes."""
    k = cfg.shift_tokens
    if k <= 0:
        return 0
    return wl.tokens * (cfg.dim + k * (cfg.dim // (k + 1))) * wl.dtype_bytes


def inference_activation_bytes(cfg: ModelConfig, wl: Workload) -> tuple[int, dict[str, int]]:
    """Peak of live activations in bytes during one ``torch.no_grad()`` forward, beyond weights and buffers, and its
    breakdown: ``max(retained_at_stage + transient_stage)`` over three stages (the last attention block at its
    SDPA / ``P V`` call, the last feed-forward block after its activation, the logits; with hyper-connections a
    fourth: the last layer's stream mixing)."""
    sh = activation_tensor_bytes(cfg, wl)
    b, n, e = wl.batch, wl.seq_len, wl.dtype_bytes
    T = b * n
    hidden, q_bytes, kv_one, scores = sh["hidden"], sh["q"], sh["kv_one"], sh["scores"]
    L, V, d, s = cfg.depth, cfg.num_tokens, cfg.dim, cfg.num_residual_streams
    rot, flash, g, h = cfg.rotary_dim, cfg.attn_flash, cfg.kv_heads, cfg.heads
    gqa_expand = 1 < g < h
    al = alibi_tensors(cfg, wl)
    # (1) retained until the forward returns: ``TransformerWrapper`` always runs the layers with
    #     ``return_hiddens=True`` (4410), so the token embeddings, every layer's input (``layer_hiddens``), the
    #     final hidden state, the absolute position embedding ``(n, d)``, each block's pre-rotary k and v
    #     (``cached_kv``) and, without flash, each block's three ``(b, h, n, n)`` score tensors kept in
    #     ``Intermediates`` (``qk_similarities``, ``pre_softmax_attn``, ``post_softmax_attn``; attend.py:592-596)
    #     stay alive, with the rotary tables ``(n, rot)`` (two with xpos) and the int64 positions
    # (2) hyper-connections: each stream tensor is ``(b * s, n, d)``; each branch input kept in ``layer_hiddens``
    #     (3662) is a view of its ``(b, n, s+1, d)`` mix, which stays alive with it. After the layers, the
    #     attention layers' stream inputs (``hiddens``, 3651) and the last stream (``layer_hiddens``, 3735) are
    #     returned; ``TransformerWrapper`` keeps its ``(b, n, d)`` input ``x`` (4418) beside the streams
    #     expanded from it (3534). See (12) for the streams alive while the layers run
    stream = hidden * s
    N = cfg.num_layers
    rotary_tables = (n * rot * e * (2 if cfg.rotary_xpos else 1) + n * INDEX_BYTES) if cfg.uses_rotary else 0
    retained = {
        "token_embeddings": hidden,
        "layer_inputs": N * hidden * (s + 1 if s > 1 else 1),
        "final_hidden": hidden,
        "abs_pos_embedding": n * d * e if cfg.has_abs_pos_emb else 0,
        "cached_k_v": 2 * L * kv_one,
        "attn_score_intermediates": 0 if flash else 3 * L * scores,
        "rotary_tables": rotary_tables,
        "alibi_cached_buffer": al["cached"],
    }
    if s > 1:
        retained["residual_streams"] = (L + 1) * stream
        retained["stream_input"] = hidden
    # (3) attention transient: shifted and normed copies of the input, rotated q (and k; the pre-rotary k is
    #     retained). Token shifting (``ShiftTokens.forward``, x_transformers.py:1608-1617) splits the input into
    #     ``k+1`` segments of ``d // (k+1)`` features, pads the ``k`` shifted ones into copies (``shift``, 1600)
    #     and concatenates them into the ``(T, d)`` input; the list of padded copies stays referenced while the
    #     wrapped sub-layer runs (1617), so both are alive through it
    input_copies = shift_copies_bytes(cfg, wl) + (hidden if cfg.uses_pre_norm else 0)
    attn_t = input_copies + q_bytes
    if cfg.uses_rotary:
        attn_t += kv_one
    if cfg.attn_num_mem_kv:
        # (4) k and v with the memory slots concatenated (torch.cat copies), the repeated mem_k / mem_v, and
        #     the mask SDPA gets as an additive float (n, n + m)
        attn_t += 2 * sh["kv_mem"] + 2 * b * g * cfg.attn_num_mem_kv * cfg.attn_dim_head * e + n * (n + cfg.attn_num_mem_kv) * e
    if gqa_expand:
        attn_t += 2 * b * h * (n + cfg.attn_num_mem_kv) * cfg.attn_dim_head * e  # (5) k, v repeated to h heads
    if cfg.alibi_pos_bias:
        attn_t += al["padded"]  # (6) the padded ALiBi bias (``alibi_tensors`` (3))
    attn_t += rel_pos_bias_bytes(cfg, wl)
    if flash:
        attn_t += q_bytes  # (7) q * (scale / default_scale) copy in Attend.flash_attn
        attn_t += al["mask"] + (sh["causal_mask"] if cfg.alibi_pos_bias else 0)
        if cfg.attn_num_mem_kv and not cfg.alibi_pos_bias:
            attn_t += 2 * sh["causal_mask"]  # bool causal mask for k_len > q_len and its negation (attend.py)
        attn_t += q_bytes + sh["lse"]  # (8) SDPA output and float32 log-sum-exp
    else:
        attn_t += sh["causal_mask"] + q_bytes  # (8') bool causal mask, P V output
        if e != FP32_BYTES:
            attn_t += sh["scores_fp32"]  # float32 softmax output before .type(dtype)
    if cfg.attn_gate_values:
        attn_t += 2 * q_bytes  # (9) gate logits to_v_gate(x) and sigmoid(gate) (x_transformers.py:2715-2719)
    # (10) feed-forward transient: input copies, the ``f`` or ``2f``-wide projection, the activation output, the
    #      GLU product; ReLU squared makes relu(x) then ** 2
    ff_t = input_copies + sh["ff_in"] + sh["ff_hidden"] + (sh["ff_hidden"] if cfg.ff_glu else 0)
    if cfg.ff_relu_squared:
        ff_t += sh["ff_hidden"]
    # (11) logits ``T * V``, twice with the tied path's ``* tie_embedding_scale`` copy
    logits_t = T * V * e * (2 if cfg.tie_embedding else 1)
    # (12) the last attention block runs before the last feed-forward input and the final hidden exist. With
    #      hyper-connections, while the layers run every layer's stream input is kept in ``skip_hiddens``
    #      (``skip_hiddens.append(x)``, 3638), and the current layer's ``(b, n, s)`` ``beta`` from
    #      ``HyperConnection.prepare`` (1446) waits in ``residual_kwargs`` for the residual (3717)
    attn_retained = dict(retained, layer_inputs=retained["layer_inputs"] - (hidden * (s + 1) if s > 1 else hidden),
                         final_hidden=0)
    ff_retained = dict(retained, final_hidden=0)
    candidates = []
    if s > 1:
        beta = T * s * e
        attn_retained["residual_streams"] = (N - 1) * stream + beta
        ff_retained["residual_streams"] = N * stream + beta
        # (13) hyper-connections: the last layer's ``HyperConnection.prepare`` (1417-1452) at its mixing ``einsum``
        #      (1450): the stream's ``nn.LayerNorm`` output and the contiguous copy of the streams the einsum
        #      makes (``2 * stream``), beside its locals ``wc_weight``, ``dynamic_alpha`` and the concatenated
        #      ``alpha`` ``(T, s, s+1)``, the Sinkhorn output ``(T, s, s)``, ``alpha_input``, ``dc_weight``,
        #      ``dynamic_beta``, ``beta`` ``(T, s)`` and the previous layer's ``beta``, still in ``residual_kwargs``;
        #      the new mix (in ``layer_inputs``) is being written
        hc_retained = dict(ff_retained, residual_streams=N * stream)
        hc_t = 2 * stream + T * e * (3 * s * (s + 1) + s * s + 5 * s)
        candidates.append((sum(hc_retained.values()) + hc_t, hc_retained, "transient_hyper_connection", hc_t))
    candidates += [
        (sum(attn_retained.values()) + attn_t, attn_retained, "transient_attention", attn_t),
        (sum(ff_retained.values()) + ff_t, ff_retained, "transient_feedforward", ff_t),
        (sum(retained.values()) + logits_t, retained, "transient_logits", logits_t),
    ]
    total, kept, stage, transient = max(candidates, key=lambda c: c[0])
    breakdown = dict(kept)
    breakdown[stage] = transient
    return total, breakdown


def training_activation_bytes(cfg: ModelConfig, wl: Workload) -> dict[str, int]:
    """Bytes of the tensors autograd saves for backward in a training step's forward (``model.train()``, dropout 0),
    by part: what lives until ``backward()``. Source: the autograd formulas of the ops ``AttentionLayers.forward``
    runs (x_transformers.py:3620-3740). The next-token loss is apart (``loss_bytes``)."""
    sh = activation_tensor_bytes(cfg, wl)
    b, n, e = wl.batch, wl.seq_len, wl.dtype_bytes
    T = b * n
    hidden, q_bytes, kv_one = sh["hidden"], sh["q"], sh["kv_one"]
    L, V, rot, s = cfg.depth, cfg.num_tokens, cfg.rotary_dim, cfg.num_residual_streams
    g, h = cfg.kv_heads, cfg.heads
    gqa_expand = 1 < g < h
    shift = cfg.shift_tokens > 0
    al = alibi_tensors(cfg, wl)
    # (1) one norm (its input is the layer input, counted apart): LayerNorm saves the normalised output (for the
    #     gain) and float32 mean/rstd; RMSNorm / ScaleNorm (F.normalize * sqrt(d) * g) measure the same within
    #     0.2% on CPU; SimpleRMSNorm has no gain, so no normalised output is saved, only F.normalize's norm
    stats = 2 * T * FP32_BYTES
    if cfg.use_simple_rmsnorm:
        norm_saved = T * FP32_BYTES
    else:
        norm_saved = hidden + stats
    if cfg.uses_pre_norm:
        # (2) pre-norm, per sub-layer: the layer input (norm input), the norm's saved tensors and the
        #     linear-layer input (the norm output, or the token-shifted copy)
        per_layer_common = hidden + norm_saved + hidden
    else:
        # (2') post-norm: the layer input, the shifted copy fed to the linears (when shifting), the post-norm's
        #      input ``x + residual``, its saved tensors
        per_layer_common = hidden + (hidden if shift else 0) + hidden + norm_saved
    if cfg.sandwich_norm:
        per_layer_common += norm_saved + hidden  # (3) post-branch norm: saved tensors and its output
    # (4) attention, per block: q (the scaled copy with flash), k and v as passed on (GQA-expanded when
    #     ``1 < g < h``, with the memory slots concatenated)
    kv_saved = q_bytes * 2 if gqa_expand else (2 * sh["kv_mem"] if cfg.attn_num_mem_kv else 2 * kv_one)
    if cfg.attn_num_mem_kv and cfg.attn_flash:
        # with memory slots SDPA saves its ``attn_mask``, the causal mask as an additive float ``(n, n+m)``
        # (k_len > q_len, attend.py:408-414), and an ``(n, 1)`` bool (measured on CPU)
        kv_saved += n * (n + cfg.attn_num_mem_kv) * e + n * BOOL_BYTES
    if cfg.attn_flash:
        # (5) SDPA: its output and log-sum-exp, its ``attn_mask`` (the dense ALiBi mask, ``(b, h, n, n)`` per
        #     block), and the merged-heads input of ``to_out`` (x_transformers.py:2745). The CPU SDPA kernel
        #     returns its output in the memory layout of q: when q reaches it as the ``(b, n, h, dh)``-strided
        #     view of ``to_q``'s output (``split_q_heads``, 2019, 2401), ``merge_heads`` (2023, 2699) is a view
        #     and ``to_out`` saves the SDPA output itself; rotary writes q afresh in the contiguous
        #     ``(b, h, n, dh)`` layout (``apply_rotary_pos_emb``), and the merge is then a copy, as it is with
        #     memory slots (measured, torch 2.13 CPU; with value gating ``to_out`` saves the gated product,
        #     counted in (7))
        merged_copy = q_bytes if (cfg.uses_rotary or cfg.attn_num_mem_kv) else 0
        attn_saved = (q_bytes + kv_saved + q_bytes + sh["lse"] + al["mask"] + merged_copy)
    else:
        # (5') einsum path: the float32 softmax output (and its ``e``-byte copy when ``e != 4``) and the bool
        #      causal mask
        attn_saved = (q_bytes + kv_saved + sh["scores_fp32"] + (sh["scores"] if e != FP32_BYTES else 0)
                      + sh["causal_mask"] + q_bytes)
    if cfg.attn_qk_norm:
        # (6) l2norm (F.normalize) saves q and k and their per-row norms
        attn_saved += q_bytes + kv_one + (b * h * n + b * g * n) * e
    if cfg.attn_gate_values:
        attn_saved += 2 * q_bytes  # (7) sigmoid output and the gated product's other operand
    # (8) rotary cos/sin tables per block (and the xpos scale)
    rotary_saved = (4 * n * rot * wl.dtype_bytes + (n * rot * e if cfg.rotary_xpos else 0)) if cfg.uses_rotary else 0
    # (9) feed-forward: its projection (``f`` or ``2f``) and activation outputs (+ GLU product)
    ff_saved = sh["ff_in"] + sh["ff_hidden"] + (sh["ff_hidden"] if cfg.ff_glu else 0)
    out = {
        "layer_norm_residual": cfg.num_layers * per_layer_common,
        "attention": L * attn_saved,
        "rotary": L * rotary_saved,
        "feedforward": cfg.num_ff_layers * ff_saved,
        "final_hidden": hidden,
        # (10) pre-norm only: the final norm (``final_norm``, x_transformers.py:3155-3157, applied at 3750) saves
        #      its input, the last residual sum (no other op saves it), and its own tensors; post-norm
        #      (``deepnorm``, ``pre_norm=False``) ends with the last sub-layer's norm and no final one
        "final_norm": hidden + norm_saved if cfg.uses_pre_norm else 0,
        "logits": T * V * e,  # (11) the logits ``(T, V)`` and the int64 ids kept by the embedding
        "token_ids": T * INDEX_BYTES,
        "alibi_cached_buffer": al["cached"],
    }
    if cfg.rel_pos_bias:
        out["rel_pos_bias"] = L * n * n * INDEX_BYTES  # (12) int64 bucket ids saved by the embedding lookup
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
        causal_mask_bytes=activation_tensor_bytes(cfg, wl)["causal_mask"],
        activation_bytes_inference=act_inf,
        activation_bytes_training=act_train,
        inference_total_bytes=weights + buffers + act_inf,
        loss_bytes_training=loss,
        training_total_bytes=weights + buffers + grads + adamw + act_train + loss,
        inference_breakdown_bytes=inference_breakdown,
        training_breakdown_bytes=training_breakdown,
        rel_pos_bias_bytes=rel_pos_bias_bytes(cfg, wl),
    )
