"""Bounds of a measurement child: its address space is limited to the cost model's predicted peak plus a margin.

``address_space_limit`` is what ``profiling.run.worker`` gives each CPU job's child (``RLIMIT_AS``): the largest
predicted training peak over the job's points (``core.cost_model.memory_estimate``: weights, buffers,
gradients, AdamW state and activations), plus the float32 copy of the weights the builder initialises first,
times ``PEAK_MARGIN``, plus ``BASE_BYTES`` for the interpreter, torch, its thread pools and the profilers. An
allocation beyond it fails in the child as ``MemoryError`` (an ``oom`` row that names the part that does not
fit, ``profiling.errors.failure_message``) instead of pushing the machine into swap or the kernel's OOM
killer. CUDA jobs get no ``RLIMIT_AS`` (the CUDA driver reserves address space far beyond device memory).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from xtlens.core.config import ModelConfig, Workload

__all__ = ["BASE_BYTES", "PEAK_MARGIN", "address_space_limit", "apply_address_space_limit", "what_does_not_fit"]

#: Address space of a child before it measures anything: Python, torch, x-transformers, fvcore, thread
#: stacks and malloc arenas (a child that imported everything maps ~0.8 GiB; arenas and OpenMP add more).
BASE_BYTES = 6 * 2**30
#: Predicted peak times this: allocator slack, profiler bookkeeping, the transient copies the model omits.
PEAK_MARGIN = 1.5


def predicted_peak_bytes(cfg: ModelConfig, wl: Workload) -> int:
    """The largest predicted footprint of measuring ``cfg`` on ``wl``: the training peak (it includes the
    inference one's weights and buffers) plus the float32 weights ``build_model`` initialises before the cast."""
    from xtlens.core.cost_model import memory_estimate, param_counts

    est = memory_estimate(cfg, wl)
    return max(est.training_total_bytes, est.inference_total_bytes) + param_counts(cfg).num_params * 4


def address_space_limit(points: Iterable[tuple[ModelConfig, Workload]]) -> int:
    """``BASE_BYTES + PEAK_MARGIN * max(predicted_peak_bytes)`` over ``points`` (bytes)."""
    peak = max((predicted_peak_bytes(cfg, wl) for cfg, wl in points), default=0)
    return BASE_BYTES + int(PEAK_MARGIN * peak)


def apply_address_space_limit(limit: int) -> int | None:
    """Lower this process's ``RLIMIT_AS`` soft limit to ``limit`` (never raise it); the limit now in force,
    or None where the platform has none."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    new = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
    if soft == resource.RLIM_INFINITY or new < soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (new, hard))
    got = resource.getrlimit(resource.RLIMIT_AS)[0]
    return None if got == resource.RLIM_INFINITY else got


def available_bytes() -> int | None:
    """What this process may still allocate on the CPU: MemAvailable, lowered by an address-space limit."""
    avail = None
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/status") as fh:
                used = next((int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:")), 0)
            room = max(soft - used, 0)
            avail = room if avail is None else min(avail, room)
    except (ImportError, OSError, ValueError):
        pass
    return avail


def what_does_not_fit(cfg: ModelConfig, wl: Workload, *, training: bool, available: int | None) -> str:
    """Advice that names the part of the predicted footprint that does not fit in ``available`` bytes."""
    from xtlens.core.cost_model import memory_estimate

    est = memory_estimate(cfg, wl)
    gib = 2**30
    state = est.weights_bytes + est.buffers_bytes + (est.grads_bytes + est.adamw_state_bytes if training else 0)
    total = est.training_total_bytes if training else est.inference_total_bytes
    room = f" (about {available / gib:.2f} GiB was available)" if available is not None else ""
    what_state = "weights, gradients and AdamW state" if training else "weights"
    if available is not None and state > available:
        return (f"The model's {what_state} alone are predicted to need {state / gib:.2f} GiB{room}: the model is "
                "too big for this machine; a shorter sequence will not help. Try a smaller dim, depth or num_tokens, "
                "or a 2-byte dtype.")
    return (f"The activations at this shape are the part that does not fit: {(total - state) / gib:.2f} GiB predicted "
            f"on top of {state / gib:.2f} GiB of {what_state}{room}. Try a shorter sequence, a smaller batch or a "
            "2-byte dtype.")
