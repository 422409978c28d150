"""The ceilings of the device a measurement runs on: a datasheet preset for a known GPU, a short calibration
for the CPU (``core.hardware`` holds the presets, ``core.roofline`` the predictions).

CPU calibration (``calibrate_cpu``): the best of a few timed runs of

* a ``2048 x 2048`` matrix product per dtype (``2 * 2048**3`` FLOPs): the compute ceiling, and
* a copy of a 64 MiB float32 tensor (``2 * 64 MiB`` moved: read and written): the bandwidth ceiling.

It takes about a second, runs with the threads torch uses here, and is cached per process (the numbers
describe this machine under its current load: on a shared machine they move with the neighbours' work).
"""

from __future__ import annotations

import functools
import time

import torch
from xtlens.core.builder import TORCH_DTYPES
from xtlens.core.hardware import GPU_PRESETS, Hardware, gpu_family, hardware_preset
from xtlens.profiling.errors import ProfileError

__all__ = ["calibrate_cpu", "hardware_for", "hardware_named", "CALIBRATION_DTYPES"]

CALIBRATION_DTYPES = ("float32", "bfloat16")
_MATMUL_N = 2048
_COPY_BYTES = 64 * 2**20


def _best_s(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


@functools.lru_cache(maxsize=1)
def calibrate_cpu(repeats: int = 3) -> Hardware:
    """This CPU's ceilings, measured (see the module docstring)."""
    from xtlens.profiling.device import cpu_name

    peaks: dict[str, float] = {}
    n = _MATMUL_N
    for dtype in CALIBRATION_DTYPES:
        a = torch.randn(n, n).to(TORCH_DTYPES[dtype])
        b = torch.randn(n, n).to(TORCH_DTYPES[dtype])
        peaks[dtype] = 2 * n**3 / _best_s(lambda a=a, b=b: torch.mm(a, b), repeats)
    src = torch.empty(_COPY_BYTES // 4, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    bandwidth = 2 * _COPY_BYTES / _best_s(lambda: dst.copy_(src), repeats)
    return Hardware(name=f"CPU: {cpu_name()}", peak_flops_per_s=peaks, mem_bandwidth_bytes_per_s=bandwidth,
                    source=(f"calibrated here with torch {torch.__version__} ({torch.get_num_threads()} threads): best of "
                            f"{repeats} {n}x{n} matmuls per dtype and of {repeats} copies of {_COPY_BYTES // 2**20} MiB"))


def hardware_for(device: str, device_name: str) -> Hardware | None:
    """The ceilings of the measuring device: the calibrated CPU, the preset of a known GPU, else None."""
    if device == "cpu":
        return calibrate_cpu()
    family = gpu_family(device_name)
    return GPU_PRESETS.get(family) if family else None


def hardware_named(name: str) -> Hardware:
    """``cpu`` (calibrates this machine) or a GPU preset name (``h200``, ``H100 PCIe``...); raises
    ``ProfileError`` naming the presets otherwise."""
    if name.strip().lower() == "cpu":
        return calibrate_cpu()
    hw = hardware_preset(name)
    if hw is None:
        raise ProfileError(f"Unknown hardware {name!r}: use 'cpu' (calibrates this machine) or one of "
                           f"{', '.join(GPU_PRESETS)}.")
    return hw
