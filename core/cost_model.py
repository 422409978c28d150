"""Closed-form cost model of the x-transformers 2.31 decoder that ``core.builder`` builds: parameters, FLOPs and
memory for a ``ModelConfig`` and a ``Workload``, standard library only (no torch import).

This module re-exports the public names of the modules that hold each concern, so that ``core.cost_model.X``
keeps working; new code may import from them directly:

* ``core.tensors``: the one table of the model's parameter tensors (``param_tensors``);
* ``core.params``: parameter counts, shapes, linear layers, tensor-parallel shares, all from that table;
* ``core.flops``: forward, training-step and decode FLOPs (torch's convention: matmuls only, 2 per multiply-add);
* ``core.memory``: memory on one device in one dtype, one function per term;
* ``core.training`` / ``core.serving``: per-device memory under a training / serving setup;
* ``core.predictions``: every quantity as a row in the vocabulary shared with the measured rows;
* ``core.fits``: the largest batch and length that fit a memory budget.
"""

from __future__ import annotations

from xtlens.core.fits import largest_fitting, what_fits
from xtlens.core.flops import (
    FUSED_SDPA_BACKENDS,
    FlopCounts,
    decode_flops,
    flop_counts,
    fused_sdpa_backward,
    recompute_extra_flops,
    train_step_flops,
    training_flops_for,
)
from xtlens.core.memory import (
    ADAMW_STEP_BYTES,
    BOOL_BYTES,
    FP32_BYTES,
    INDEX_BYTES,
    MemoryEstimate,
    activation_tensor_bytes,
    alibi_tensors,
    buffers_bytes,
    grads_bytes,
    hyper_connection_saved_bytes,
    inference_activation_bytes,
    kv_bytes_per_token,
    kv_cache_bytes,
    loss_bytes,
    memory_estimate,
    optimizer_state_bytes,
    rel_pos_bias_bytes,
    training_activation_bytes,
    weights_bytes,
)
from xtlens.core.params import (
    REL_POS_NUM_BUCKETS,
    ParamCounts,
    buffer_elements,
    ceil_div,
    hyper_connection_params_per_layer,
    linear_shapes,
    norm_params_each,
    num_norms,
    param_counts,
    param_shapes,
    tp_params,
)
from xtlens.core.predictions import (
    FLOP_ROWS,
    MEMORY_ROWS,
    MEMORY_STACK,
    PARAM_ROWS,
    PHASES,
    SAME_QUANTITY,
    SETUP_PEAK_PARTS,
    Prediction,
    TrainingHeadline,
    estimate,
    predicted,
    predictions,
    rows_of,
    training_headline,
)
from xtlens.core.serving import (
    KV_ELEMENT_BYTES,
    QUANT_SCALE_BYTES,
    ServingMemory,
    quantised_linear_bytes,
    serving_kv_bytes_per_token,
    serving_memory,
    serving_weight_bytes,
)
from xtlens.core.tensors import BufferTensor, ParamTensor, buffer_tensors, numel, param_tensors
from xtlens.core.training import (
    BNB_BLOCK,
    BNB_MIN_8BIT_SIZE,
    TrainingMemory,
    autocast_weight_copy_bytes,
    optimizer_state_bytes_for,
    optimizer_step_transient_bytes,
    setup_activation_bytes,
    training_memory,
)

__all__ = [
    # tensors and parameters
    "ParamTensor", "param_tensors", "BufferTensor", "buffer_tensors", "numel", "ParamCounts", "param_counts", "param_shapes", "linear_shapes",
    "tp_params", "buffer_elements", "ceil_div", "hyper_connection_params_per_layer", "norm_params_each", "num_norms",
    "REL_POS_NUM_BUCKETS",
    # FLOPs
    "FlopCounts", "flop_counts", "FUSED_SDPA_BACKENDS", "fused_sdpa_backward", "train_step_flops", "decode_flops",
    "recompute_extra_flops", "training_flops_for",
    # memory
    "MemoryEstimate", "memory_estimate", "ADAMW_STEP_BYTES", "INDEX_BYTES", "BOOL_BYTES", "FP32_BYTES",
    "weights_bytes", "buffers_bytes", "grads_bytes", "optimizer_state_bytes", "kv_bytes_per_token", "kv_cache_bytes",
    "alibi_tensors", "rel_pos_bias_bytes", "activation_tensor_bytes", "inference_activation_bytes",
    "training_activation_bytes", "hyper_connection_saved_bytes", "loss_bytes",
    # training and serving setups
    "TrainingMemory", "training_memory", "setup_activation_bytes", "optimizer_state_bytes_for",
    "optimizer_step_transient_bytes", "autocast_weight_copy_bytes", "BNB_BLOCK", "BNB_MIN_8BIT_SIZE",
    "ServingMemory", "serving_memory", "quantised_linear_bytes", "serving_weight_bytes", "serving_kv_bytes_per_token",
    "KV_ELEMENT_BYTES", "QUANT_SCALE_BYTES",
    # rows
    "Prediction", "PHASES", "MEMORY_STACK", "SAME_QUANTITY", "SETUP_PEAK_PARTS", "PARAM_ROWS", "FLOP_ROWS",
    "MEMORY_ROWS", "rows_of", "predictions", "predicted", "estimate", "TrainingHeadline", "training_headline",
    # what fits
    "largest_fitting", "what_fits",
]
