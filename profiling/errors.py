"""The profiling layer's one exception type, out-of-memory detection, and failure rows.

A measurement that fails (out of memory, an unsupported dtype, a configuration x-transformers cannot
run) becomes a ``ProfileRecord`` with ``status="oom"`` or ``"error"`` and a message written for the page,
after the memory the failed attempt held is released: the traceback's frames are cleared (they
reference the big tensors), then ``gc.collect()`` and, on CUDA, ``torch.cuda.empty_cache()``.
"""

from __future__ import annotations

import gc
import sys
import traceback
from typing import Any

from xtlens.core.config import ConfigError, ModelConfig, Workload, XtlensError
from xtlens.profiling.results.records import ProfileRecord, base_fields

__all__ = ["ProfileError", "is_oom", "free_memory", "failure_message", "failure_row", "failure_record", "release",
           "short_message"]

_OOM_MARKERS = (
    "out of memory",
    "can't allocate memory",
    "cannot allocate memory",
    "defaultcpuallocator",
    "failed to allocate",
)


class ProfileError(XtlensError, RuntimeError):
    """A measurement could not be made. The message says why, in words meant for the page."""


def is_oom(exc: BaseException) -> bool:
    """True for an allocation failure: ``torch.cuda.OutOfMemoryError``, ``MemoryError``, or a
    ``RuntimeError`` whose text says out of memory / can't allocate / ``DefaultCPUAllocator``."""
    torch = sys.modules.get("torch")  # not imported: no torch error can exist (the page imports this without torch)
    oom_type = None if torch is None else (getattr(torch, "OutOfMemoryError", None)
                                           or getattr(torch.cuda, "OutOfMemoryError", None))
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        return any(marker in text for marker in _OOM_MARKERS)
    return False


def free_memory(device: str) -> None:
    """Collect garbage and, on CUDA, return cached blocks to the driver."""
    gc.collect()
    torch = sys.modules.get("torch")  # nothing on CUDA without torch imported
    if torch is not None and device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()


def short_message(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's text, shortened (CUDA OOM messages run to many lines)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def failure_message(exc: BaseException, *, what: str, device_name: str, wl: Workload,
                    cfg: ModelConfig | None = None, training: bool | None = None) -> tuple[str, str]:
    """``(status, message)`` for an exception raised while measuring ``what`` (e.g. "the training step"):
    ``oom`` with the shape and, given the configuration ``cfg``, the part that does not fit (the model's state
    or the activations, ``limits.what_does_not_fit``; ``training``: whether gradients and AdamW state count,
    guessed from ``what`` when None), the page-ready text of a ``ProfileError`` / ``ConfigError`` /
    ``BuildError``, or ``error`` with the exception type and its first line. The one wording of every
    failure row."""
    from xtlens.core.builder import BuildError

    detail = short_message(exc)
    shape = f"batch {wl.batch} x {wl.seq_len} tokens in {wl.dtype}"
    if is_oom(exc):
        advice = "Try a shorter sequence, a smaller batch or a 2-byte dtype."
        if cfg is not None:  # name the part that does not fit: the model itself, or the activations
            from xtlens.profiling.run.limits import available_bytes, what_does_not_fit

            try:
                advice = what_does_not_fit(cfg, wl, training=("train" in what or "memory" in what) if training is None
                                           else training, available=available_bytes())
            except Exception:  # noqa: BLE001 - advice is a courtesy; the OOM row must still be written
                pass
        return "oom", f"Out of memory on {device_name} during {what} ({shape}). {advice} Details: {detail}"
    if isinstance(exc, (ProfileError, ConfigError, BuildError)):
        return "error", str(exc)
    return "error", f"{type(exc).__name__} during {what} on {device_name} ({shape}): {detail}"


def failure_row(*, identity: dict[str, Any], status: str, message: str, **columns: Any) -> ProfileRecord:
    """The one failure-row builder: ``identity`` holds the identity, workload and device columns
    (``records.base_fields`` or a point's own), ``columns`` any provenance to keep."""
    return ProfileRecord(**identity, status=status, error=message, **columns)


def failure_record(
    exc: BaseException,
    cfg: ModelConfig,
    wl: Workload,
    *,
    measurement: str,
    phase: str,
    device: str,
    device_name: str,
    config_name: str = "",
    component: str = "total",
    context: str = "",
    **columns: Any,
) -> ProfileRecord:
    """Turn an exception raised during a measurement into a row with status ``oom`` or ``error``.

    Frees memory first: clears the frames of the exception's traceback (so the tensors they hold die),
    runs ``gc.collect()`` and, on CUDA, ``torch.cuda.empty_cache()``. ``context`` names what was being
    measured (e.g. "the training step"); an out-of-memory row names the part of ``cfg``'s predicted footprint
    that does not fit (``failure_message``); extra keyword ``columns`` (provenance: versions, method, warmup,
    repeats, sdpa_backend, predicted_bytes, ...) are copied into the row.
    """
    status, message = failure_message(exc, what=context or f"the {phase} {measurement} measurement",
                                      device_name=device_name, wl=wl, cfg=cfg, training="train" in phase)
    release(exc, device)
    identity = base_fields(cfg, wl, config_name=config_name, measurement=measurement, phase=phase,
                           device=device, device_name=device_name)
    return failure_row(identity={**identity, "component": component}, status=status, message=message, **columns)


def release(exc: BaseException, device: str) -> None:
    """Free what a failed attempt held: the traceback's frames (they reference its tensors), then memory."""
    if exc.__traceback__ is not None:
        traceback.clear_frames(exc.__traceback__)
    free_memory(device)
