"""What an allocator hands out for a tensor: its logical size rounded up to the allocator's block size.

Standard library only. The CUDA caching allocator rounds every allocation up to a multiple of 512 bytes
(``kMinBlockSize`` in c10/cuda/CUDACachingAllocator.cpp), and torch's ``MemTracker`` counts a CUDA storage
the same way (``_PYTORCH_MIN_ALLOCATE = 512`` in torch/distributed/_tools/mem_tracker.py, 1 when
``PYTORCH_NO_CUDA_MEMORY_CACHING=1``). So a CUDA measurement of the weights is the sum over parameter
tensors of their rounded sizes, not ``num_params * e``: for a toy model whose tensors are a few hundred
bytes the difference is several percent. ``weights_bytes_allocated`` predicts that sum from the list of
parameter tensors ``core.builder`` builds (``param_tensor_numels``: the same formulas as
``core.cost_model.param_counts``, one entry per tensor).
"""

from __future__ import annotations

from xtlens.core.config import ModelConfig

__all__ = ["CUDA_BLOCK_BYTES", "allocator_rounded_bytes", "param_tensor_numels", "weights_bytes_allocated"]

CUDA_BLOCK_BYTES = 512


def allocator_rounded_bytes(nbytes: int, block_bytes: int = CUDA_BLOCK_BYTES) -> int:
    """``nbytes`` rounded up to a multiple of ``block_bytes`` (0 stays 0; ``block_bytes=1``: unchanged)."""
    return -(-nbytes // block_bytes) * block_bytes


def param_tensor_numels(cfg: ModelConfig) -> list[int]:
    """Element count of every parameter tensor of the model ``core.builder.build_model(cfg)`` builds, in
    model order (token embedding, absolute positions, per block ``to_q, to_k, to_v, to_out`` and the
    feed-forward's two weights and biases, norms, DeepNorm residual scales, ``to_logits``)."""
    d, L, h, g, dh, f = cfg.dim, cfg.depth, cfg.heads, cfg.kv_heads, cfg.attn_dim_head, cfg.ff_inner_dim
    width = 2 * f if cfg.ff_glu else f
    out = [cfg.num_tokens * d]
    if cfg.has_abs_pos_emb:
        out.append(cfg.max_seq_len * d)
    for _ in range(L):
        out += [d * h * dh, d * g * dh, d * g * dh, h * dh * d]
        out += [d * width, width, f * d, d]
    out += [d] * (2 * L + (0 if cfg.deepnorm else 1))
    if cfg.deepnorm:
        out += [d] * (2 * L)
    if not cfg.tie_embedding:
        out.append(d * cfg.num_tokens)
    return out


def weights_bytes_allocated(cfg: ModelConfig, dtype_bytes: int, block_bytes: int = CUDA_BLOCK_BYTES) -> int:
    """Bytes the allocator holds for the parameters: each tensor's ``numel * dtype_bytes`` rounded up."""
    return sum(allocator_rounded_bytes(n * dtype_bytes, block_bytes) for n in param_tensor_numels(cfg))
