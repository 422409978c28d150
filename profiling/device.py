"""Where a measurement runs: device resolution, names, versions, peak throughput, synchronisation.

The provenance columns of every measured ``ProfileRecord`` (``device``, ``device_name``,
``torch_version``, ``xtransformers_version``) come from here, as does the peak rate that turns an
achieved FLOP rate into a ``peak_fraction``.

Peak rates (``PEAK_FLOPS_PER_S``) are *dense* tensor-core / CUDA-core rates from NVIDIA's datasheets,
in FLOP/s (one multiply-add = 2 FLOPs). The datasheets print tensor-core figures "with sparsity"
(2:4 structured); the dense rate is half of that, and dense is what a transformer's matmuls get:

* H100 SXM5 / H100 PCIe / H100 NVL: NVIDIA H100 Tensor Core GPU datasheet
  (https://www.nvidia.com/en-us/data-center/h100/, "Technical Specifications"): FP32 67 / 51 / 60 TFLOPS,
  TF32 989 / 756 / 835 (sparse), BF16 = FP16 1,979 / 1,513 / 1,671 (sparse).
* H200 SXM / H200 NVL: NVIDIA H200 datasheet (https://www.nvidia.com/en-us/data-center/h200/): FP32 67 / 60,
  TF32 989 / 835 (sparse), BF16 = FP16 1,979 / 1,671 (sparse).
* A100 (SXM4 and PCIe, 40 and 80 GB): NVIDIA A100 datasheet (https://www.nvidia.com/en-us/data-center/a100/):
  FP32 19.5, TF32 156 (dense; 312 sparse), BF16 = FP16 312 (dense; 624 sparse).
* L4: NVIDIA L4 datasheet (https://www.nvidia.com/en-us/data-center/l4/): FP32 30.3, TF32 120 (sparse),
  BF16 = FP16 242 (sparse).
* L40S: NVIDIA L40S datasheet (https://www.nvidia.com/en-us/data-center/l40s/): FP32 91.6, TF32 366 (sparse),
  BF16 = FP16 733 (sparse).
* A10: NVIDIA A10 datasheet (https://www.nvidia.com/en-us/data-center/products/a10-gpu/): FP32 31.2,
  TF32 125 (sparse), BF16 = FP16 250 (sparse).
* V100 SXM2 / T4: V100 and T4 datasheets: FP32 15.7 / 8.1, FP16 tensor 125 / 65; no BF16 or TF32 units.

``float32`` means plain FP32 (PyTorch's default ``torch.get_float32_matmul_precision() == "highest"``);
pass ``tf32=True`` (or ask for dtype ``"tfloat32"``) when TF32 matmuls are allowed.
"""

from __future__ import annotations

import importlib.metadata
import os
import re

import torch
from xtlens.core.builder import resolve_device

__all__ = [
    "PEAK_FLOPS_PER_S",
    "resolve_device",
    "resolve",
    "device_name",
    "cpu_name",
    "versions",
    "gpu_family",
    "peak_flops_per_s",
    "synchronize",
]

_T = 1e12

# Dense peak FLOP/s by GPU family and precision ("tf32" is FP32 inputs on tensor cores).
PEAK_FLOPS_PER_S: dict[str, dict[str, float]] = {
    "H100 SXM": {"float32": 67 * _T, "tf32": 494.5 * _T, "bfloat16": 989.5 * _T, "float16": 989.5 * _T},
    "H100 PCIe": {"float32": 51 * _T, "tf32": 378 * _T, "bfloat16": 756.5 * _T, "float16": 756.5 * _T},
    "H100 NVL": {"float32": 60 * _T, "tf32": 417.5 * _T, "bfloat16": 835.5 * _T, "float16": 835.5 * _T},
    "H200 SXM": {"float32": 67 * _T, "tf32": 494.5 * _T, "bfloat16": 989.5 * _T, "float16": 989.5 * _T},
    "H200 NVL": {"float32": 60 * _T, "tf32": 417.5 * _T, "bfloat16": 835.5 * _T, "float16": 835.5 * _T},
    "A100": {"float32": 19.5 * _T, "tf32": 156 * _T, "bfloat16": 312 * _T, "float16": 312 * _T},
    "L4": {"float32": 30.3 * _T, "tf32": 60 * _T, "bfloat16": 121 * _T, "float16": 121 * _T},
    "L40S": {"float32": 91.6 * _T, "tf32": 183 * _T, "bfloat16": 366.5 * _T, "float16": 366.5 * _T},
    "A10": {"float32": 31.2 * _T, "tf32": 62.5 * _T, "bfloat16": 125 * _T, "float16": 125 * _T},
    "V100": {"float32": 15.7 * _T, "float16": 125 * _T},
    "T4": {"float32": 8.1 * _T, "float16": 65 * _T},
}

# (pattern on the CUDA device name, family); first match wins, so the specific names come first.
# Names as torch.cuda.get_device_name() prints them, e.g. "NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe",
# "NVIDIA H200", "NVIDIA A100-SXM4-80GB", "NVIDIA L4", "Tesla T4".
_FAMILY_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"H100.*PCI", "H100 PCIe"),
    (r"H100.*NVL", "H100 NVL"),
    (r"H100", "H100 SXM"),
    (r"H200.*NVL", "H200 NVL"),
    (r"H200", "H200 SXM"),
    (r"A100", "A100"),
    (r"L40S", "L40S"),
    (r"\bL4\b", "L4"),
    (r"\bA10\b", "A10"),
    (r"V100", "V100"),
    (r"\bT4\b", "T4"),
)

_DTYPE_ALIASES = {"fp32": "float32", "float": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16",
                  "tfloat32": "tf32"}


def resolve(device: str = "auto") -> tuple[str, str]:
    """``(device, device_name)``: ``core.builder.resolve_device`` (the one resolver) and the device's name."""
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
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_name()


def versions() -> dict[str, str]:
    """Versions for provenance: ``{"torch": ..., "x-transformers": ...}`` ("not installed" if missing)."""
    try:
        xt = importlib.metadata.version("x-transformers")
    except importlib.metadata.PackageNotFoundError:
        xt = "not installed"
    return {"torch": torch.__version__, "x-transformers": xt}


def gpu_family(name: str) -> str | None:
    """The ``PEAK_FLOPS_PER_S`` key for a CUDA device name, or None when the GPU is not in the table."""
    for pattern, family in _FAMILY_PATTERNS:
        if re.search(pattern, name, flags=re.IGNORECASE):
            return family
    return None


def peak_flops_per_s(device_name: str, dtype: str, *, tf32: bool = False) -> float | None:
    """Dense peak FLOP/s of a known GPU in ``dtype`` (None for a CPU, an unknown GPU or a missing precision).

    ``tf32=True`` with ``dtype="float32"`` gives the TF32 tensor-core rate (when matmuls may use TF32).
    """
    family = gpu_family(device_name)
    if family is None:
        return None
    key = _DTYPE_ALIASES.get(dtype, dtype)
    if key == "float32" and tf32:
        key = "tf32"
    return PEAK_FLOPS_PER_S[family].get(key)


def synchronize(device: str) -> None:
    """Wait for queued GPU work on ``device`` (no-op on CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))
