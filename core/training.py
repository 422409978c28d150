"""Per-device memory of a training step under a ``core.setup.TrainingSetup`` (precision, optimizer,
recomputation, gradient accumulation, ZeRO data parallelism, tensor parallelism, the loop), by the order
tensors live and die: optimizer state, the step's temporaries, autocast's weight copies, the saved activations
re-typed and cut as the setup does, and the peak over the step's stages (``training_memory``).

Symbols besides ``core.memory``'s: ``P`` parameters per device before ZeRO (``tp_params``), ``se`` bytes of the
state dtype (weights, gradients, optimizer state), ``ce`` bytes of the compute dtype (matmul outputs), ``dp`` /
``tp`` the data- and tensor-parallel degrees, ``k`` the gradient-accumulation micro-batches. Measured by
``profiling.measure.setups`` (``tests/profiling/test_setups.py``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from xtlens.core.config import DTYPE_BYTES, ConfigError, ModelConfig, Workload
from xtlens.core.memory import (
    ADAMW_STEP_BYTES,
    FP32_BYTES,
    activation_tensor_bytes,
    alibi_tensors,
    rel_pos_bias_bytes,
    training_activation_bytes,
)
from xtlens.core.params import ceil_div, param_counts, tp_elements, tp_params
from xtlens.core.setup import TrainingSetup, precision_bytes
from xtlens.core.tensors import numel, param_tensors

__all__ = ["TrainingMemory", "training_memory", "setup_activation_bytes", "optimizer_state_bytes_for",
           "optimizer_step_transient_bytes", "autocast_weight_copy_bytes", "BNB_BLOCK", "BNB_MIN_8BIT_SIZE"]

BNB_BLOCK = 256  # bitsandbytes blockwise quantisation of 8-bit optimizer state (optim/optimizer.py, blocksize=256)
BNB_MIN_8BIT_SIZE = 4096  # bitsandbytes keeps tensors under 4096 elements in 32-bit state (min_8bit_size)


def optimizer_state_bytes_for(cfg: ModelConfig, optimizer: str, state_bytes: int, tp: int = 1) -> int:
    """Optimizer state of one tensor-parallel rank, in bytes, before ZeRO sharding, over the model's tensors
    (``core.tensors.param_tensors``). Tensor-parallel ranks hold ``1 / tp`` of the split tensors (the per-tensor
    sizes are scaled, not re-split)."""
    shapes = [t.shape for t in param_tensors(cfg)]
    scale = tp_params(cfg, tp) / max(1, param_counts(cfg).num_params)
    n = len(shapes)
    if optimizer == "adamw":
        # (1) ``torch.optim.AdamW``: ``exp_avg``, ``exp_avg_sq`` like the parameters, a float32 ``step`` each
        #     (torch/optim/adamw.py): ``2 * P * se + 4 * tensors``
        return 2 * tp_params(cfg, tp) * state_bytes + ADAMW_STEP_BYTES * n
    if optimizer == "sgd":
        # (2) ``torch.optim.SGD(momentum>0)``: one ``momentum_buffer``, ``P * se`` (torch/optim/sgd.py)
        return tp_params(cfg, tp) * state_bytes
    if optimizer == "adafactor":
        # (3) ``torch.optim.Adafactor``: per tensor a float32 ``step`` and, for >= 2-D tensors, ``row_var``
        #     (``numel / shape[-1]``) and ``col_var`` (``numel / shape[-2]``) elements, for 0-D and 1-D tensors
        #     ``variance`` like it (torch/optim/_adafactor.py:98-111)
        elems = 0
        for s in shapes:
            size = numel(s)
            elems += size // s[-1] + size // s[-2] if len(s) >= 2 else size
        return round(elems * scale) * state_bytes + ADAMW_STEP_BYTES * n
    if optimizer == "adamw8bit":
        # (4) bitsandbytes ``AdamW8bit``: tensors of >= 4096 elements keep two uint8 states plus a float32 absmax
        #     per 256-element block (``2 * numel + 8 * ceil(numel / 256)``), smaller ones two float32 states
        #     (``8 * numel``) (bitsandbytes/optim/optimizer.py, ``Optimizer2State.init_state``)
        total = 0
        for s in shapes:
            size = numel(s)
            total += (2 * size + 8 * ceil_div(size, BNB_BLOCK)) if size >= BNB_MIN_8BIT_SIZE else 8 * size
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
    largest = max(t.numel for t in param_tensors(cfg))
    if foreach and optimizer == "adamw":
        return tp_params(cfg, tp) * state_bytes
    return 2 * ceil_div(largest, tp) * state_bytes if optimizer != "sgd" else 0


def _setup_dtype(precision: str, wl: Workload) -> str:
    """The dtype of the model's parameters under ``precision`` (``auto``: the workload's)."""
    return {"auto": wl.dtype, "fp32": "float32", "amp_bf16": "float32", "amp_fp16": "float32", "bf16": "bfloat16",
            "fp16": "float16"}[precision]


def autocast_weight_copy_bytes(cfg: ModelConfig, compute_bytes: int, tp: int = 1) -> int:
    """``torch.autocast`` casts every tensor that enters a matmul-class op (``nn.Linear`` weights and biases, the
    tied token table in the logits matmul, the hyper-connections' ``dynamic_*_fn``; ``ParamTensor.cast_by_autocast``)
    to 16 bits once per forward and keeps the copy in its cache; the ops save it for backward: their elements
    times ``ce`` bytes (torch/csrc/autograd/autocast_mode.cpp ``cached_cast``)."""
    return tp_elements([t for t in param_tensors(cfg) if t.cast_by_autocast], tp) * compute_bytes


def _half(setup: TrainingSetup, wl: Workload) -> str:
    if setup.precision in ("bf16", "amp_bf16"):
        return "bfloat16"
    if setup.precision in ("fp16", "amp_fp16"):
        return "float16"
    return wl.dtype


def setup_activation_bytes(cfg: ModelConfig, wl: Workload, setup: TrainingSetup) -> dict[str, int]:
    """Bytes autograd saves in one micro-batch's forward under ``setup``, by part (``training_activation_bytes``'
    parts, re-typed and cut as the setup does), per device."""
    se, ce = precision_bytes(setup.precision, wl)
    compute = training_activation_bytes(cfg, Workload(batch=wl.batch, seq_len=wl.seq_len,
                                                      dtype="float32" if ce == 4 else _half(setup, wl)))
    if setup.mixed:
        # (1) ``amp_*`` keeps the residual stream, norms, rotary tables and ids in float32 (autocast runs layer
        #     norm in float32 and the residual adds promote) and the attention, feed-forward and logits tensors in
        #     16 bits (matmul and SDPA outputs), plus the cast weight copies (measured on the seed within 0.3%);
        #     pure / fp32 / ``auto`` use one dtype
        full = training_activation_bytes(cfg, Workload(batch=wl.batch, seq_len=wl.seq_len, dtype="float32"))
        parts = dict(full)
        for key in ("attention", "feedforward", "logits"):
            parts[key] = compute[key]
        parts["autocast_weight_copies"] = 0  # set below, after the tp split
    else:
        parts = dict(compute)
    sw = Workload(batch=wl.batch, seq_len=wl.seq_len, dtype="float32" if ce == 4 else _half(setup, wl))
    sh = activation_tensor_bytes(cfg, sw)
    al = alibi_tensors(cfg, sw)
    if setup.recompute == "block":
        # (2) ``recompute="block"``: per sub-layer only what lives outside the checkpointed block: its input, the
        #     norm's saved tensors and the residual (``layer_norm_residual`` less the token-shifted copy made inside
        #     the block); attention, feed-forward and rotary parts are recomputed in backward
        #     (``torch.utils.checkpoint``)
        if not cfg.uses_pre_norm and cfg.shift_tokens > 0:
            per = activation_tensor_bytes(cfg, Workload(batch=wl.batch, seq_len=wl.seq_len,
                                                        dtype="float32" if se == 4 and setup.mixed else sw.dtype))["hidden"]
            parts["layer_norm_residual"] -= cfg.num_layers * per
        for key in ("attention", "feedforward", "rotary", "rel_pos_bias"):
            if key in parts:
                parts[key] = 0
    elif setup.recompute == "selective" and cfg.attn_flash:
        # (3) ``recompute="selective"`` (checkpoint around ``Attend``): per attention block the SDPA output and
        #     log-sum-exp are recomputed, and the dense ``(b, h, n, n)`` ALiBi mask is replaced by the ``(h, n, n)``
        #     bias ``Attend`` receives
        swapped = (al["mask"] - al["padded"]) if cfg.alibi_pos_bias else 0
        parts["attention"] -= cfg.depth * (sh["q"] + sh["lse"] + swapped)
    if setup.tp > 1:
        # (4) ``tp``: attention, feed-forward, rotary and logits parts split ``tp`` ways (no sequence parallelism:
        #     the residual stream and norms are replicated, Megatron-LM)
        for key in ("attention", "feedforward", "rotary", "logits"):
            parts[key] = ceil_div(parts[key], setup.tp)
    if setup.mixed:
        parts["autocast_weight_copies"] = autocast_weight_copy_bytes(cfg, ce, setup.tp)
    return parts


@dataclass(frozen=True, kw_only=True)
class TrainingMemory:
    """Per-device memory of a training step under a ``TrainingSetup``, in bytes, by the order tensors live and die
    (each size and stage is derived beside its term in ``training_memory``). ``stages_bytes`` holds every stage,
    ``peak_bytes`` their maximum, ``peak_stage`` its name and ``peak_parts_bytes`` the parts alive at it.

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
    sh = activation_tensor_bytes(cfg, Workload(batch=wl.batch, seq_len=wl.seq_len,
                                               dtype="float32" if ce == 4 else _half(setup, wl)))
    last_ff = ceil_div(acts.get("feedforward", 0), max(1, cfg.num_ff_layers))
    last_layer = ceil_div(acts.get("layer_norm_residual", 0), max(1, cfg.num_layers))
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


def training_memory(cfg: ModelConfig, wl: Workload, setup: TrainingSetup, *, foreach: bool = False,
                    device: str = "cpu") -> TrainingMemory:
    """Per-device peak of a training step under ``setup`` (see ``TrainingMemory``), in bytes. ``foreach``: the
    optimizer's multi-tensor path (the torch default on CUDA); False is the single-tensor path torch takes on
    the CPU. ``device``: ``"cpu"`` or ``"cuda"``, where the loss under autocast differs (see (4)).

    The loop assumed (``setup.loop``): ``free_logits`` is ``loss = F.cross_entropy(model(x), y)`` (the logits die
    after the loss), ``keep_logits`` a loop holding ``logits`` through ``backward()`` (one more ``(b, n, V)``
    tensor). Each step: ``k = grad_accum`` micro-batches of forward, loss, backward, then ``optimizer.step()`` and
    ``zero_grad(set_to_none=True)`` (gradients do not exist during the first micro-batch's forward).
    """
    se, ce = precision_bytes(setup.precision, wl)
    pc = param_counts(cfg)
    P = tp_params(cfg, setup.tp)
    dp = setup.dp
    # (1) weights ``P * se``, divided by ``dp`` with ZeRO-3; gradients ``P * se``, ``/ dp`` with ZeRO >= 2
    weights = ceil_div(P * se, dp if setup.zero >= 3 else 1)
    buffers = pc.buffer_elements * DTYPE_BYTES[_setup_dtype(setup.precision, wl)]
    grads = ceil_div(P * se, dp if setup.zero >= 2 else 1)
    # (2) optimizer state (``optimizer_state_bytes_for``): ZeRO >= 1 shards the moments; every rank keeps a
    #     float32 ``step`` per parameter tensor (FSDP2 shards each tensor)
    steps = ADAMW_STEP_BYTES * len(param_tensors(cfg)) if setup.optimizer in ("adamw", "adafactor") else 0
    optimizer_full = optimizer_state_bytes_for(cfg, setup.optimizer, se, setup.tp)
    optimizer = ceil_div(optimizer_full - steps, dp if setup.zero >= 1 else 1) + steps
    # (3) saved activations, logits included (``setup_activation_bytes``); the loss' ``(T, V)`` log-softmax output
    #     in the loss dtype (float32 under autocast, whose ``cross_entropy`` runs in float32)
    acts = setup_activation_bytes(cfg, wl, setup)
    act_total = sum(acts.values())
    T = wl.tokens
    V = ceil_div(cfg.num_tokens, setup.tp)
    le = _loss_dtype_bytes(setup, wl)
    loss = T * V * le
    logits = acts["logits"]
    g_acc = grads if setup.grad_accum > 1 else 0
    state = weights + buffers + optimizer
    kept_logits = logits if setup.loop == "keep_logits" else 0
    if device not in ("cpu", "cuda"):
        raise ConfigError("device", device, "'cpu' or 'cuda'")
    # (4') under CUDA autocast ``cross_entropy`` keeps a ``(T, V)`` copy of the logits in the compute dtype beside
    #      its float32 log-softmax until its backward, and the log-softmax output is freed before the second
    #      ``(T, V)`` gradient is made (H200 allocator trace, torch 2.11: peak at ``nll_loss_backward``'s float32
    #      output); on the CPU the copy is float32 and both gradients meet (MemTracker, tests/profiling/test_setups.py)
    cuda_amp = setup.mixed and device == "cuda"
    loss_copy = (T * V * ce if cuda_amp else T * V * FP32_BYTES) if setup.mixed else 0
    stages = {
        # (4) ``loss``: weights, buffers, optimizer state, the gradients of earlier micro-batches (``k > 1``),
        #     saved activations with the logits, the loss' log-softmax output (+ the copy of the logits under
        #     autocast, (4'))
        "loss": state + g_acc + act_total + loss + loss_copy,
        # (5) ``backward_start``: the same without the logits (freed; kept with ``keep_logits``), plus the
        #     gradient of the log-softmax output and of the logits, ``2 * T * V`` in the loss dtype
        #     (``nll_loss_backward``, ``_log_softmax_backward_data``); CUDA autocast: the copy and one gradient
        "backward_start": state + g_acc + act_total - logits + kept_logits + loss
        + (loss_copy + T * V * le if cuda_amp else 2 * T * V * le),
        # (6) ``optimizer_step``: weights, buffers, gradients, state and the step's temporaries
        #     (``optimizer_step_transient_bytes``)
        "optimizer_step": state + grads + optimizer_step_transient_bytes(cfg, setup.optimizer, se, foreach=foreach,
                                                                         tp=setup.tp),
    }
    if cfg.alibi_pos_bias or cfg.rel_pos_bias:
        # (7) ``forward_attention`` (ALiBi or T5 bias): the last attention block's SDPA call in the forward
        fa_before, fa_transient = _forward_attention_bytes(cfg, wl, setup, acts)
        stages["forward_attention"] = state + g_acc + fa_before + fa_transient
    if setup.recompute == "block":
        # (8) ``backward_block`` (block recompute only): backward of the last attention block, its activations
        #     recomputed: the checkpointed activations, the logits' weight gradient, one attention block's saved
        #     tensors, the bias tensors its re-run forward builds (padded ALiBi / T5 bias, causal mask; under
        #     autocast the float32 mask cast) and two ``T * d`` gradients of the hidden state
        full = setup_activation_bytes(cfg, wl, dataclasses.replace(setup, recompute="none"))
        bias = alibi_tensors(cfg, Workload(batch=wl.batch, seq_len=wl.seq_len,
                                           dtype="float32" if setup.mixed or ce == 4 else _half(setup, wl)))
        one_block = (ceil_div(full["attention"] + full["rotary"], cfg.depth) + bias["padded"] + bias["causal"]
                     + rel_pos_bias_bytes(cfg, wl)
                     + (bias["mask"] if setup.mixed and cfg.attn_flash else 0))
        hidden = T * cfg.dim * (FP32_BYTES if setup.mixed else ce)
        stages["backward_block"] = (state + g_acc + act_total - logits + kept_logits
                                    + ceil_div(pc.logits_params or pc.token_embedding_params, setup.tp) * se
                                    + one_block + 2 * hidden)
    if setup.zero >= 3:
        # (9) ``zero3_gather`` (ZeRO-3, FSDP2 ``fully_shard`` on every attention / feed-forward block and on the
        #     root): ``backward_start`` plus the unsharded parameters FSDP gathers beyond the local shards: the root
        #     module's (embeddings, logits, norms, residual scales: kept unsharded through forward and backward)
        #     and two blocks' (the current and the prefetched one)
        unit_root = P - pc.attention_params - pc.feedforward_params
        per_block = max(pc.attention_params_per_block, pc.feedforward_params_per_block)
        gathered = (unit_root + 2 * per_block) * se - ceil_div((unit_root + 2 * per_block) * se, dp)
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
