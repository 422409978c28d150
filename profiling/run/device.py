"""Where a measurement runs: device resolution, names, versions, peak throughput, synchronisation.

The provenance columns of every measured ``ProfileRecord`` (``device``, ``device_name``,
``torch_version``, ``xtransformers_version``) come from here, as does the peak rate that turns an
achieved FLOP rate into a ``peak_fraction``.

Peak rates and the GPU family of a device name live in ``core.hardware`` (the one table of datasheet
ceilings); they are re-exported here.
"""

from __future__ import annotations

import importlib.metadata
import os
import time
from collections.abc import Callable

from xtlens.core.hardware import PEAK_FLOPS_PER_S, gpu_family, peak_flops_per_s

__all__ = [
    "PEAK_FLOPS_PER_S",
    "resolve_device",  # noqa: F822 - provided by the module __getattr__ below (imports torch on first use)
    "resolve",
    "device_name",
    "cpu_name",
    "versions",
    "gpu_family",
    "peak_flops_per_s",
    "synchronize",
    "timed_measurement_setup",
    "time_calls",
]


# torch (and core.builder, which imports it) load on first use: the page imports this module for the job tray and
# the device list, and its first screen needs no torch (``python -X importtime``: torch is seconds of it).

def __getattr__(name: str):
    """``resolve_device`` is ``core.builder.resolve_device`` (the one resolver), imported on first use."""
    if name == "resolve_device":
        from xtlens.core.builder import resolve_device

        return resolve_device
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve(device: str = "auto") -> tuple[str, str]:
    """``(device, device_name)``: ``core.builder.resolve_device`` (the one resolver) and the device's name."""
    from xtlens.core.builder import resolve_device

    resolved = resolve_device(device)
    return resolved, device_name(resolved)


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (or the platform) with the logical CPUs this process may use."""
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if not model:
        import platform

        model = platform.processor() or platform.machine() or "CPU"
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return f"{model} ({cores} logical CPU{'s' if cores != 1 else ''})"


def device_name(device: str) -> str:
    """Human name of ``device``: the GPU name for CUDA, the CPU model and core count for ``"cpu"``."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return cpu_name()


def versions() -> dict[str, str]:
    """Versions for provenance: ``{"torch": ..., "x-transformers": ...}`` ("not installed" if missing)."""
    try:
        xt = importlib.metadata.version("x-transformers")
    except importlib.metadata.PackageNotFoundError:
        xt = "not installed"
    import torch

    return {"torch": torch.__version__, "x-transformers": xt}


def synchronize(device: str) -> None:
    """Wait for queued GPU work on ``device`` (no-op on CPU)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(torch.device(device))


def timed_measurement_setup(wl, cfg, *, device: str, phases: tuple[str, ...], allowed: tuple[str, ...], what: str,
                            warmup: int, repeats: int) -> tuple[str, str, dict]:
    """The checks and provenance every timed measurement starts with: known ``phases``, ``warmup >= 0`` and
    ``repeats >= 1``, the workload against the configuration, the resolved device. Returns ``(device,
    device_name, provenance columns)``; raises ``ProfileError`` (or ``ConfigError``) with a message for the page."""
    from xtlens.profiling.errors import ProfileError

    unknown = [p for p in phases if p not in allowed]
    if unknown:
        raise ProfileError(f"Unknown {what} phase(s) {', '.join(map(repr, unknown))}: choose from {', '.join(allowed)}.")
    if warmup < 0 or repeats < 1:
        raise ProfileError(f"warmup must be >= 0 and repeats >= 1 (got warmup={warmup}, repeats={repeats}).")
    wl.check_against(cfg)
    from xtlens.core.builder import resolve_device

    dev = resolve_device(device)
    vers = versions()
    return dev, device_name(dev), dict(torch_version=vers["torch"], xtransformers_version=vers["x-transformers"],
                                       warmup=warmup, repeats=repeats)


def time_calls(fn: Callable[[], object], *, device: str, warmup: int, repeats: int) -> list[float]:
    """Milliseconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls.

    CUDA: one start/end ``torch.cuda.Event`` pair per call, a single synchronise after the loop. CPU:
    ``time.perf_counter`` around each call.
    """
    for _ in range(warmup):
        fn()
    synchronize(device)
    if device.startswith("cuda"):
        import torch

        pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
        for start, end in pairs:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        return [start.elapsed_time(end) for start, end in pairs]
    clock = time.perf_counter
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append((clock() - t0) * 1e3)
    return times
