"""The ceilings of the device a measurement runs on: a datasheet preset for a known GPU, a short calibration
for the CPU (``core.hardware`` holds the presets, ``core.roofline`` the predictions).

CPU calibration (``calibrate_cpu``): the best of a few timed runs of

* an ``n x n`` matrix product per dtype (``2 * n**3`` FLOPs): the compute ceiling. ``n`` grows 256, 512,
  1024, 2048 while one product takes under 0.1 s, so a dtype this CPU has no fast unit for (bfloat16
  without native support: a 2048 x 2048 product can take over a minute) stops small instead of costing
  minutes; and
* a copy of a 64 MiB float32 tensor (``2 * 64 MiB`` moved: read and written): the bandwidth ceiling.

Each dtype is calibrated only when asked for (``hardware_for(..., dtype=)``: a measurement calibrates the
dtype it runs in), runs with the threads torch uses here, and is cached per process (the numbers describe
this machine under its current load: on a shared machine they move with the neighbours' work).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import torch
from xtlens.core.builder import TORCH_DTYPES
from xtlens.core.hardware import GPU_PRESETS, Hardware, gpu_family

__all__ = ["calibrate_cpu", "hardware_for", "matmul_flops_per_s", "CALIBRATION_DTYPES",
           "MATMUL_SIZES", "GROW_BELOW_S"]

CALIBRATION_DTYPES = ("float32", "bfloat16")
MATMUL_SIZES = (256, 512, 1024, 2048)
GROW_BELOW_S = 0.1
_COPY_BYTES = 64 * 2**20


def _best_s(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_flops_per_s(dtype: str, *, repeats: int = 3,
                       product: Callable[[torch.Tensor, torch.Tensor], object] = torch.mm) -> tuple[float, int]:
    """``(best FLOP/s, n)`` of ``n x n`` products in ``dtype``: ``n`` is the first of ``MATMUL_SIZES`` whose
    product takes ``GROW_BELOW_S`` or more (else the largest); that first product is the warm-up, then the
    best of ``repeats``."""
    for n in MATMUL_SIZES:
        a = torch.randn(n, n).to(TORCH_DTYPES[dtype])
        b = torch.randn(n, n).to(TORCH_DTYPES[dtype])
        t0 = time.perf_counter()
        product(a, b)
        if time.perf_counter() - t0 >= GROW_BELOW_S:
            break
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        product(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best, n


@functools.cache
def _cpu_peak(dtype: str, repeats: int) -> tuple[float, int]:
    return matmul_flops_per_s(dtype, repeats=repeats)


@functools.cache
def _cpu_bandwidth(repeats: int) -> float:
    src = torch.empty(_COPY_BYTES // 4, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    return 2 * _COPY_BYTES / _best_s(lambda: dst.copy_(src), repeats)


@functools.cache
def calibrate_cpu(repeats: int = 3, dtypes: tuple[str, ...] = CALIBRATION_DTYPES) -> Hardware:
    """This CPU's ceilings for ``dtypes`` (each measured once per process), see the module docstring."""
    from xtlens.profiling.run.device import cpu_name

    peaks = {dtype: _cpu_peak(dtype, repeats) for dtype in dtypes if dtype in CALIBRATION_DTYPES}
    sizes = ", ".join(f"{n}x{n} in {dtype}" for dtype, (_, n) in peaks.items())
    return Hardware(name=f"CPU: {cpu_name()}", peak_flops_per_s={d: p for d, (p, _) in peaks.items()},
                    mem_bandwidth_bytes_per_s=_cpu_bandwidth(repeats),
                    source=(f"calibrated here with torch {torch.__version__} ({torch.get_num_threads()} threads): best of "
                            f"{repeats} matmuls ({sizes or 'no dtype'}) and of {repeats} copies of "
                            f"{_COPY_BYTES // 2**20} MiB"))


def hardware_for(device: str, device_name: str, *, dtype: str | None = None) -> Hardware | None:
    """The ceilings of the measuring device: the calibrated CPU (only ``dtype`` when given), the preset of a
    known GPU, else None."""
    if device == "cpu":
        return calibrate_cpu(dtypes=(dtype,) if dtype is not None else CALIBRATION_DTYPES)
    family = gpu_family(device_name)
    return GPU_PRESETS.get(family) if family else None
