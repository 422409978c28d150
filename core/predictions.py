"""Predictions as tidy rows: every closed-form quantity of ``core.params``, ``core.flops``, ``core.memory`` and,
under setups, ``core.training`` / ``core.serving``, as a ``Prediction`` row in the one vocabulary shared with the
measured rows of ``profiling`` (``phase``, ``component``, ``unit``), so predicted vs measured is a join."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from xtlens.core.config import ModelConfig, Workload
from xtlens.core.cuda_memory import process_memory
from xtlens.core.flops import flop_counts, recompute_extra_flops, training_flops_for
from xtlens.core.memory import MemoryEstimate, memory_estimate
from xtlens.core.params import ceil_div, param_counts
from xtlens.core.serving import serving_memory
from xtlens.core.setup import ServingSetup, TrainingSetup
from xtlens.core.training import training_memory

__all__ = ["Prediction", "cuda_process_rows", "CUDA_PROCESS_COMPONENTS", "PHASES", "MEMORY_STACK", "SAME_QUANTITY", "SETUP_PEAK_PARTS", "PARAM_ROWS", "FLOP_ROWS",
           "MEMORY_ROWS", "rows_of", "predictions", "predicted", "estimate", "TrainingHeadline", "training_headline"]

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
    (``profiling.measure.memory`` / ``flops`` / ``latency``), so predicted-vs-measured is a join on
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
PARAM_ROWS: dict[str, tuple[str, str, str, str]] = {
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
FLOP_ROWS: dict[str, tuple[str, str, str, str]] = {
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
MEMORY_ROWS: dict[str, tuple[str, str, str, str]] = {
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


def rows_of(obj: object, table: dict[str, tuple[str, str, str, str]]) -> list[Prediction]:
    out = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, dict):  # breakdown dicts: emitted by _activation_rows
            continue
        if f.name not in table:
            raise KeyError(f"core.predictions: {type(obj).__name__}.{f.name} has no (phase, component, unit) in the "
                           f"prediction vocabulary; add it to the table in core/predictions.py")
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


def _single_device_rows(cfg: ModelConfig, wl: Workload) -> list[Prediction]:
    """The rows without setups: one device, one dtype (``param_counts``, ``flop_counts``, ``memory_estimate``, the
    weights and buffers again in the ``train_step`` phase, the activation breakdowns and stacked parts). The
    training and serving setups rewrite these rows (``_with_training_setup``, ``_with_serving_setup``)."""
    pc, fc, mem = param_counts(cfg), flop_counts(cfg, wl), memory_estimate(cfg, wl)
    rows = rows_of(pc, PARAM_ROWS) + rows_of(fc, FLOP_ROWS) + rows_of(mem, MEMORY_ROWS)
    rows += [Prediction(quantity=f"training_{key}", phase="train_step", component=table_row[1], unit="bytes",
                        value=getattr(mem, key))
             for key in _BOTH_PHASES for table_row in [MEMORY_ROWS[key]]]
    return rows + _activation_rows(mem, cfg.depth)


def predictions(cfg: ModelConfig, wl: Workload, *, training: TrainingSetup | None = None,
                serving: ServingSetup | None = None, cuda_gpu: str | None = None) -> list[Prediction]:
    """Every closed-form quantity for ``cfg`` on ``wl`` as a ``Prediction`` row (see ``Prediction``).

    Without setups: the single-dtype, single-device numbers (``memory_estimate``: ``training_total_bytes`` is the
    sum of every training component, all alive at once). With ``training`` (``core.setup.TrainingSetup``) the
    ``train_step`` memory rows are per device under that setup and ``training_total_bytes`` is the peak by the
    order tensors live and die (``training_memory``; the parts alive at the peak are the ``peak.<part>`` rows,
    their variant names the stage), and the training FLOPs include recomputation and tensor parallelism
    (``training_flops_for``). With ``serving`` the ``inference`` memory rows describe the served workload
    (``serving.workload(wl)``) with quantised weights and KV cache, and ``inference_total_bytes`` is the
    serving total (``serving_memory``). With ``cuda_gpu`` (a GPU name, e.g. ``"H200 141GB"``) the CUDA process
    rows of the training step are added (``cuda_process_rows``)."""
    rows = _single_device_rows(cfg, wl)
    if training is not None:
        rows = _with_training_setup(rows, cfg, wl, training)
    if serving is not None:
        rows = _with_serving_setup(rows, cfg, wl, serving)
    if cuda_gpu is not None:
        rows += cuda_process_rows(cfg, wl, training, gpu=cuda_gpu)
    return rows


#: the CUDA process terms as prediction rows: ``ProcessMemory`` row name -> component (phase ``train_step``)
CUDA_PROCESS_COMPONENTS = {"allocated_peak": "cuda_allocated_peak", "reserved_peak": "reserved_peak",
                           "cublas_workspace": "cublas_workspace", "cuda_context": "cuda_context",
                           "autocast_cache": "autocast_cache", "optimizer_temporaries": "optimizer_temporaries",
                           "process_total": "process_total"}


def cuda_process_rows(cfg: ModelConfig, wl: Workload, training: TrainingSetup | None = None, *, gpu: str
                      ) -> list[Prediction]:
    """What a CUDA training process holds on ``gpu`` (``core.cuda_memory.process_memory``) as ``train_step`` rows:
    ``cuda_<component>_bytes`` (``cuda_context_bytes``, ``cuda_reserved_peak_bytes``, ...) for the allocated and
    reserved peaks, the cuBLAS workspace, the CUDA context,
    autocast's cache, the optimizer's temporaries and the process total (context + reserved); ``variant`` names
    the GPU."""
    pm = process_memory(cfg, wl, training, gpu=gpu)
    out = []
    for r in pm.rows():
        comp = CUDA_PROCESS_COMPONENTS.get(r.name)
        if comp is not None:
            quantity = f"{comp}_bytes" if comp.startswith("cuda_") else f"cuda_{comp}_bytes"
            out.append(Prediction(quantity=quantity, phase="train_step", component=comp, unit="bytes", value=r.bytes,
                                  variant=gpu))
    return out


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
    flops = {"train_step_flops": ceil_div(fc.train_step_flops + extra, tp),
             "train_step_flops_flash_recompute": ceil_div(fc.train_step_flops_flash_recompute + extra, tp),
             "train_step_flops_causal": ceil_div(fc.train_step_flops_causal + extra_c, tp)}
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


def _with_serving_setup(rows: list[Prediction], cfg: ModelConfig, wl: Workload, serving: ServingSetup
                        ) -> list[Prediction]:
    serving.check_against(cfg)
    swl = serving.workload(wl)
    sm = serving_memory(cfg, wl, serving)
    served = {r.quantity: r for r in _single_device_rows(cfg, swl)
              if r.phase == "inference" and r.unit in ("bytes", "count", "bytes_per_token")}
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


@dataclass(frozen=True, kw_only=True)
class TrainingHeadline:
    """The training numbers every tab shows for the default setup (``TrainingSetup()``: workload dtype, AdamW, no
    recomputation, one device): one source, so that a tab cannot show another number for the same quantity.

    ``step_flops``: one training step of the batch (``training_flops_for``): ``3 * fwd`` plus
    ``fused_score_flops``, the ``Q K^T`` a fused SDPA backward recomputes (``attn / 2`` with ``attn_flash``, else 0;
    this is not activation recomputation). ``peak_bytes``: the peak by the order tensors live and die
    (``training_memory``, at ``peak_stage``); ``upper_bound_bytes``: every component summed as if all were alive at
    once (``memory_estimate(...).training_total_bytes``), an upper bound of the same step."""

    step_flops: int
    fused_score_flops: int
    peak_bytes: int
    peak_stage: str
    upper_bound_bytes: int


def training_headline(cfg: ModelConfig, wl: Workload) -> TrainingHeadline:
    """The default training setup's step FLOPs, ordered peak and summed upper bound for ``cfg`` on ``wl``."""
    setup = TrainingSetup()
    fc = flop_counts(cfg, wl)
    flops = training_flops_for(cfg, wl, setup)["train_step_flops"]
    tm = training_memory(cfg, wl, setup)
    return TrainingHeadline(step_flops=flops, fused_score_flops=flops - fc.train_step_flops, peak_bytes=tm.peak_bytes,
                            peak_stage=tm.peak_stage, upper_bound_bytes=memory_estimate(cfg, wl).training_total_bytes)


def predicted(rows: list[Prediction], *, phase: str, component: str, unit: str, variant: str | None = None
              ) -> int | float | None:
    """The predicted value of (``phase``, ``component``, ``unit``[, ``variant``]) in ``rows`` (None when the
    model predicts no such quantity). A measured component in ``SAME_QUANTITY`` reads its quantity's row."""
    component = SAME_QUANTITY.get(component, component)
    for r in rows:
        if (r.phase, r.component, r.unit) == (phase, component, unit) and (variant is None or r.variant == variant):
            return r.value
    return None


def estimate(cfg: ModelConfig, wl: Workload, *, training: TrainingSetup | None = None,
             serving: ServingSetup | None = None) -> dict[str, int | float]:
    """Every ``Prediction`` of ``predictions(cfg, wl, training=..., serving=...)`` as ``{quantity: value}``
    (unit-suffixed keys: the CLI prints it as JSON). Activation breakdowns are ``activation_inference_<part>_bytes``
    and ``activation_training_<part>_bytes``; the stacked parts ``<phase>_<part>_bytes``."""
    return {r.quantity: r.value for r in predictions(cfg, wl, training=training, serving=serving)}
