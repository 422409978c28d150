"""Bounds of a measurement child: its address space is limited to the cost model's predicted peak plus a margin,
and never beyond the memory the machine has available; a point predicted not to fit is refused before it starts.

``address_space_limit`` is what ``profiling.run.worker`` gives each CPU job's child (``RLIMIT_AS``): the largest
predicted training peak over the job's points (``core.cost_model.memory_estimate``: weights, buffers,
gradients, AdamW state and activations), plus the float32 copy of the weights the builder initialises first,
times ``PEAK_MARGIN``, plus ``BASE_BYTES`` for the interpreter, torch, its thread pools and the profilers; and at
most the machine's available memory (``/proc/meminfo`` ``MemAvailable``), so the bound bounds something (the
seed at batch 64 x 8192 would otherwise get 3,563 GiB on a 23.5 GiB machine). An allocation beyond it fails in
the child as ``MemoryError`` (an ``oom`` row that names the part that does not fit,
``profiling.errors.failure_message``) instead of pushing the machine into swap or the kernel's OOM killer.

``refusal`` is the check the parent makes before it starts a CPU job's child: a point whose predicted need
(``predicted_need_bytes``: what the measurement itself allocates, without the margin) exceeds the available
memory gets an ``oom`` row naming the predicted need, the available memory and the part that does not fit,
and is never run; a job whose every point is refused starts no child. CUDA jobs get neither (the CUDA driver
reserves address space far beyond device memory; device memory is the measurement's own ``oom`` row).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from xtlens.core.config import ModelConfig, Workload
from xtlens.core.hardware import machine_available_bytes

__all__ = ["BASE_BYTES", "PEAK_MARGIN", "FLOPS_TRACE_TOKENS", "address_space_limit", "apply_address_space_limit",
           "machine_available_bytes", "measures_training", "predicted_need_bytes", "refusal", "what_does_not_fit"]

#: Address space of a child before it measures anything: Python, torch, x-transformers, fvcore, thread
#: stacks and malloc arenas (a child that imported everything maps ~0.8 GiB; arenas and OpenMP add more).
BASE_BYTES = 6 * 2**30
#: Predicted peak times this: allocator slack, profiler bookkeeping, the transient copies the model omits.
PEAK_MARGIN = 1.5
#: FLOP counts are fitted from forwards of at most this many tokens per sequence (``profiling.measure.flops``).
FLOPS_TRACE_TOKENS = 128
_GIB = 2**30


def predicted_peak_bytes(cfg: ModelConfig, wl: Workload) -> int:
    """The largest predicted footprint of measuring ``cfg`` on ``wl``: the training peak (it includes the
    inference one's weights and buffers) plus the float32 weights ``build_model`` initialises before the cast."""
    from xtlens.core.cost_model import memory_estimate, param_counts

    est = memory_estimate(cfg, wl)
    return max(est.training_total_bytes, est.inference_total_bytes) + param_counts(cfg).num_params * 4


def predicted_need_bytes(cfg: ModelConfig, wl: Workload, what: str = "memory",
                         phases: Iterable[str] | None = None) -> int:
    """What measuring ``what`` of ``cfg`` on ``wl`` is predicted to allocate at most: ``predicted_peak_bytes``
    for the measurements that run the model at the full shape (memory, latency, breakdown, what-if; the
    inference peak alone when ``phases`` name no ``train_step``); for FLOP counts, which trace forwards of at
    most ``FLOPS_TRACE_TOKENS`` tokens, the float32 weights and such a forward."""
    from xtlens.core.cost_model import memory_estimate, param_counts

    fp32_weights = param_counts(cfg).num_params * 4
    if what.startswith("flops"):
        short = Workload(batch=wl.batch, seq_len=min(wl.seq_len, FLOPS_TRACE_TOKENS), dtype="float32")
        return fp32_weights + memory_estimate(cfg, short).inference_total_bytes
    if phases is not None and "train_step" not in tuple(phases):
        return fp32_weights + memory_estimate(cfg, wl).inference_total_bytes
    return predicted_peak_bytes(cfg, wl)


_MACHINE = object()


def address_space_limit(points: Iterable[tuple[ModelConfig, Workload]], *, available: int | None | object = _MACHINE
                        ) -> int:
    """``BASE_BYTES + PEAK_MARGIN * max(predicted_peak_bytes)`` over ``points``, at most ``available`` bytes
    (default: the machine's available memory, ``machine_available_bytes``; None: no such cap)."""
    peak = max((predicted_peak_bytes(cfg, wl) for cfg, wl in points), default=0)
    bound = BASE_BYTES + int(PEAK_MARGIN * peak)
    room = machine_available_bytes() if available is _MACHINE else available
    return bound if room is None else min(bound, int(room))


def refusal(cfg: ModelConfig, wl: Workload, what: str = "memory", phases: Iterable[str] | None = None, *,
            available: int | None) -> str | None:
    """The message of a point predicted not to fit in ``available`` bytes (None: it fits, or nothing is known):
    the predicted need, the available memory and the part that does not fit (``what_does_not_fit``)."""
    if available is None:
        return None
    need = predicted_need_bytes(cfg, wl, what, phases)
    if need <= available:
        return None
    return (f"Not started: measuring {what} at batch {wl.batch} x {wl.seq_len} tokens in {wl.dtype} is predicted to "
            f"need {need / _GIB:,.2f} GiB, but this machine has {available / _GIB:,.2f} GiB of memory available. "
            + what_does_not_fit(cfg, wl, training=measures_training(what, phases), available=available))


def measures_training(what: str, phases: Iterable[str] | None = None) -> bool:
    """Whether measuring ``what`` (with ``phases``) runs a training step: gradients and AdamW state count."""
    return not what.startswith("flops") and (phases is None or "train_step" in tuple(phases))


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
    avail = machine_available_bytes()
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
