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

import bisect

from xtlens.core.config import ModelConfig

__all__ = ["CUDA_BLOCK_BYTES", "allocator_rounded_bytes", "param_tensor_numels", "weights_bytes_allocated",
           "CachingAllocatorModel", "AllocatorOutOfMemory", "cuda_block_bytes", "cuda_segment_bytes"]

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


# --- the CUDA caching allocator, replayed -----------------------------------------------------------------------
# Constants of c10/cuda/CUDACachingAllocator.cpp (torch 2.x, unchanged through 2.11):
K_MIN_BLOCK_BYTES = 512  # kMinBlockSize: every request rounded up to a multiple of 512 B
K_SMALL_SIZE_BYTES = 1 << 20  # kSmallSize: requests <= 1 MiB use the small pool
K_SMALL_BUFFER_BYTES = 2 << 20  # kSmallBuffer: the small pool's segments are 2 MiB
K_LARGE_BUFFER_BYTES = 20 << 20  # kLargeBuffer: requests of 1-10 MiB get a 20 MiB segment
K_MIN_LARGE_ALLOC_BYTES = 10 << 20  # kMinLargeAlloc: from 10 MiB on a segment is the request rounded to 2 MiB
K_ROUND_LARGE_BYTES = 2 << 20  # kRoundLarge


def cuda_block_bytes(nbytes: int) -> int:
    """The block the caching allocator hands out for a request of ``nbytes``: ``max(512, ceil(n / 512) * 512)``
    bytes (``round_size``, CUDACachingAllocator.cpp)."""
    return K_MIN_BLOCK_BYTES if nbytes < K_MIN_BLOCK_BYTES else allocator_rounded_bytes(nbytes, K_MIN_BLOCK_BYTES)


def cuda_segment_bytes(block_bytes: int) -> int:
    """The segment ``cudaMalloc``-ed when no cached block fits a block of ``block_bytes``: 2 MiB for the small pool
    (<= 1 MiB), 20 MiB for 1-10 MiB, else the block rounded up to 2 MiB (``get_allocation_size``)."""
    if block_bytes <= K_SMALL_SIZE_BYTES:
        return K_SMALL_BUFFER_BYTES
    if block_bytes < K_MIN_LARGE_ALLOC_BYTES:
        return K_LARGE_BUFFER_BYTES
    return allocator_rounded_bytes(block_bytes, K_ROUND_LARGE_BYTES)


class _Block:
    __slots__ = ("addr", "size", "used", "prev", "next", "small")

    def __init__(self, addr: int, size: int, small: bool) -> None:
        self.addr, self.size, self.small = addr, size, small
        self.used = False
        self.prev: _Block | None = None
        self.next: _Block | None = None


class AllocatorOutOfMemory(Exception):
    """The replayed allocator ran past its cap (``CachingAllocatorModel(limit_bytes=...)``)."""


class CachingAllocatorModel:
    """A replay of torch's CUDA caching allocator on one stream (c10/cuda/CUDACachingAllocator.cpp): requests
    rounded by ``cuda_block_bytes``; two pools (small <= 1 MiB, large); a request takes the smallest cached free
    block of its pool that fits (best fit, lowest address on ties: ``BlockComparatorSize``, ``get_free_block``),
    else a new segment of ``cuda_segment_bytes``; the block is split when the rest is >= 512 B (small pool) or
    > 1 MiB (large pool, ``should_split``), else handed out whole (and counted whole as allocated); a freed block
    merges with free neighbours of its segment (``try_merge_blocks``). Segments are never returned (no
    ``empty_cache``), so reserved only grows, except under ``limit_bytes`` (a cap such as
    ``torch.cuda.set_per_process_memory_fraction``): a segment that would pass it first releases every wholly free
    cached segment and retries, then raises ``AllocatorOutOfMemory``. Checked against the H200 traces of
    docs/gpu/cuda-memory-h200.json (tests/core/test_cuda_memory.py)."""

    def __init__(self, limit_bytes: int | None = None) -> None:
        self.limit_bytes = limit_bytes
        self._pools: dict[bool, list] = {True: [], False: []}
        self._top = 0
        self.allocated_bytes = 0
        self.reserved_bytes = 0
        self.peak_allocated_bytes = 0
        self.peak_reserved_bytes = 0
        self.segments = 0

    def _insert(self, b: _Block) -> None:
        bisect.insort(self._pools[b.small], (b.size, b.addr, b))

    def _remove(self, b: _Block) -> None:
        pool = self._pools[b.small]
        i = bisect.bisect_left(pool, (b.size, b.addr))
        del pool[i]

    def malloc(self, nbytes: int) -> _Block:
        """Hand out a block for ``nbytes`` (a handle for ``free``)."""
        size = cuda_block_bytes(nbytes)
        small = size <= K_SMALL_SIZE_BYTES
        pool = self._pools[small]
        i = bisect.bisect_left(pool, (size, -1))
        if i < len(pool):
            b = pool.pop(i)[2]
        else:
            seg = cuda_segment_bytes(size)
            if self.limit_bytes is not None and self.reserved_bytes + seg > self.limit_bytes:
                # over the cap (set_per_process_memory_fraction): release every cached segment that is wholly free
                # and retry (release_cached_blocks, then the out-of-memory error)
                self._release_free_segments()
                if self.reserved_bytes + seg > self.limit_bytes:
                    raise AllocatorOutOfMemory(f"{size} B needs a {seg} B segment beyond the {self.limit_bytes} B cap")
            b = _Block(self._top, seg, small)
            self._top += seg + K_SMALL_BUFFER_BYTES  # segments are not adjacent: they never merge
            self.reserved_bytes += seg
            self.segments += 1
            self.peak_reserved_bytes = max(self.peak_reserved_bytes, self.reserved_bytes)
        rest = b.size - size
        if (small and rest >= K_MIN_BLOCK_BYTES) or (not small and rest > K_SMALL_SIZE_BYTES):
            r = _Block(b.addr + size, rest, small)
            r.prev, r.next = b, b.next
            if b.next is not None:
                b.next.prev = r
            b.next, b.size = r, size
            self._insert(r)
        b.used = True
        self.allocated_bytes += b.size
        self.peak_allocated_bytes = max(self.peak_allocated_bytes, self.allocated_bytes)
        return b

    def free(self, b: _Block) -> None:
        """Return a block to its pool, merged with its free neighbours."""
        b.used = False
        self.allocated_bytes -= b.size
        p = b.prev
        if p is not None and not p.used:
            self._remove(p)
            p.size += b.size
            p.next = b.next
            if b.next is not None:
                b.next.prev = p
            b = p
        n = b.next
        if n is not None and not n.used:
            self._remove(n)
            b.size += n.size
            b.next = n.next
            if n.next is not None:
                n.next.prev = b
        self._insert(b)

    def _release_free_segments(self) -> None:
        for small in (True, False):
            pool = self._pools[small]
            keep = []
            for entry in pool:
                blk = entry[2]
                if blk.prev is None and blk.next is None:  # a whole segment, free
                    self.reserved_bytes -= blk.size
                    self.segments -= 1
                else:
                    keep.append(entry)
            self._pools[small] = keep

    def reset_peaks(self) -> None:
        """``torch.cuda.reset_peak_memory_stats``: peaks restart at the current values."""
        self.peak_allocated_bytes = self.allocated_bytes
        self.peak_reserved_bytes = self.reserved_bytes
