"""What fits in a device's memory: the largest batch and sequence length whose per-device training peak
(``core.training.training_memory``) and serving total (``core.serving.serving_memory``) stay within a budget."""

from __future__ import annotations

import dataclasses

from xtlens.core.config import ModelConfig, Workload
from xtlens.core.serving import serving_memory
from xtlens.core.setup import ServingSetup, TrainingSetup
from xtlens.core.training import training_memory

__all__ = ["largest_fitting", "what_fits"]


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
