"""Device ceilings: datasheet peak FLOP/s and memory bandwidth of common GPUs (the one table of them).

Standard library only. ``profiling.run.device`` reads the peak rates from here to turn a measured FLOP rate
into a ``peak_fraction``; ``core.roofline`` predicts latency from both ceilings; ``xtlens estimate
--hardware NAME`` lists ``GPU_PRESETS``. The CPU has no preset: ``profiling.measure.roofline.calibrate_cpu``
measures its ceilings (a large matrix product and a large copy) and returns a ``Hardware`` of the same type.

Peak rates (``PEAK_FLOPS_PER_S``) are *dense* tensor-core / CUDA-core rates from NVIDIA's datasheets,
in FLOP/s (one multiply-add = 2 FLOPs). The datasheets print tensor-core figures "with sparsity"
(2:4 structured); the dense rate is half of that, and dense is what a transformer's matmuls get:

* H100 SXM5 / H100 PCIe / H100 NVL: NVIDIA H100 Tensor Core GPU datasheet
  (https://www.nvidia.com/en-us/data-center/h100/, "Technical Specifications"): FP32 67 / 51 / 60 TFLOPS,
  TF32 989 / 756 / 835 (sparse), BF16 = FP16 1,979 / 1,513 / 1,671 (sparse); memory bandwidth
  3.35 / 2.0 / 3.9 TB/s.
* H200 SXM / H200 NVL: NVIDIA H200 datasheet (https://www.nvidia.com/en-us/data-center/h200/): FP32 67 / 60,
  TF32 989 / 835 (sparse), BF16 = FP16 1,979 / 1,671 (sparse); memory bandwidth 4.8 / 4.8 TB/s.
* A100 (SXM4 and PCIe, 40 and 80 GB): NVIDIA A100 datasheet (https://www.nvidia.com/en-us/data-center/a100/):
  FP32 19.5, TF32 156 (dense; 312 sparse), BF16 = FP16 312 (dense; 624 sparse); bandwidth of the 80 GB SXM4
  2,039 GB/s (80 GB PCIe 1,935; 40 GB 1,555).
* L4: NVIDIA L4 datasheet (https://www.nvidia.com/en-us/data-center/l4/): FP32 30.3, TF32 120 (sparse),
  BF16 = FP16 242 (sparse); 300 GB/s.
* L40S: NVIDIA L40S datasheet (https://www.nvidia.com/en-us/data-center/l40s/): FP32 91.6, TF32 366 (sparse),
  BF16 = FP16 733 (sparse); 864 GB/s.
* A10: NVIDIA A10 datasheet (https://www.nvidia.com/en-us/data-center/products/a10-gpu/): FP32 31.2,
  TF32 125 (sparse), BF16 = FP16 250 (sparse); 600 GB/s.
* V100 SXM2 / T4: V100 and T4 datasheets: FP32 15.7 / 8.1, FP16 tensor 125 / 65, no BF16 or TF32 units;
  900 / 320 GB/s.

``float32`` means plain FP32 (PyTorch's default ``torch.get_float32_matmul_precision() == "highest"``);
pass ``tf32=True`` (or ask for dtype ``"tfloat32"``) when TF32 matmuls are allowed. Bandwidth is bytes per
second in SI units (1 TB/s = 1e12 B/s), as the datasheets print it.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field

__all__ = [
    "PEAK_FLOPS_PER_S",
    "MEM_BANDWIDTH_BYTES_PER_S",
    "Hardware",
    "GPU_PRESETS",
    "GPU_MEMORY_GIB",
    "hardware_preset",
    "gpu_family",
    "peak_flops_per_s",
    "dtype_key",
    "machine_available_bytes",
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

# Datasheet memory bandwidth in bytes/s (SI), same families.
MEM_BANDWIDTH_BYTES_PER_S: dict[str, float] = {
    "H100 SXM": 3.35e12,
    "H100 PCIe": 2.0e12,
    "H100 NVL": 3.9e12,
    "H200 SXM": 4.8e12,
    "H200 NVL": 4.8e12,
    "A100": 2.039e12,
    "L4": 0.300e12,
    "L40S": 0.864e12,
    "A10": 0.600e12,
    "V100": 0.900e12,
    "T4": 0.320e12,
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


def dtype_key(dtype: str, *, tf32: bool = False) -> str:
    """The precision key of the peak tables for a dtype name (``bf16`` -> ``bfloat16``; ``tf32=True`` turns
    ``float32`` into ``tf32``)."""
    key = _DTYPE_ALIASES.get(dtype, dtype)
    return "tf32" if key == "float32" and tf32 else key


@dataclass(frozen=True, kw_only=True)
class Hardware:
    """The two ceilings of a roofline: dense peak FLOP/s per precision and memory bandwidth (bytes/s).

    ``source`` says where the numbers come from (a datasheet, or a calibration on this machine).
    """

    name: str
    peak_flops_per_s: dict[str, float] = field(default_factory=dict)
    mem_bandwidth_bytes_per_s: float
    source: str

    def peak(self, dtype: str, *, tf32: bool = False) -> float | None:
        """Peak FLOP/s in ``dtype`` (None when this device has no unit for it)."""
        return self.peak_flops_per_s.get(dtype_key(dtype, tf32=tf32))

    def ridge_flops_per_byte(self, dtype: str) -> float | None:
        """Arithmetic intensity (FLOP/byte) above which a part is compute-bound: peak / bandwidth."""
        peak = self.peak(dtype)
        return None if peak is None else peak / self.mem_bandwidth_bytes_per_s


GPU_PRESETS: dict[str, Hardware] = {
    name: Hardware(name=name, peak_flops_per_s=dict(PEAK_FLOPS_PER_S[name]),
                   mem_bandwidth_bytes_per_s=MEM_BANDWIDTH_BYTES_PER_S[name],
                   source=f"NVIDIA {name} datasheet (dense peaks: half the 'with sparsity' figures)")
    for name in PEAK_FLOPS_PER_S
}


#: The GPUs a user picks by memory (Setups, ``--device-memory-gib``): device memory in GiB (2**30 bytes) as
#: ``nvidia-smi``'s memory.total shows it, and the ``GPU_PRESETS`` family of the part's ceilings (None: no preset).
#: Read off real machines: NVIDIA H200 143,771 MiB (2026-11-26, docs/gpu-results.md); H100 80GB HBM3 81,559 MiB.
GPU_MEMORY_GIB: dict[str, tuple[float, str | None]] = {
    "H100 80GB": (79.6, "H100 SXM"),
    "H200 141GB": (140.4, "H200 SXM"),
    "A100 80GB": (79.2, "A100"),
    "A100 40GB": (39.4, "A100"),
    "L40S 48GB": (44.4, "L40S"),
    "RTX 4090 24GB": (23.6, None),
    "A10G 24GB": (22.0, None),  # AWS's A10G: the A10's memory, not its datasheet ceilings
    "T4 16GB": (14.6, "T4"),
}


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def hardware_preset(name: str) -> Hardware | None:
    """The preset named ``name`` (case and spacing ignored: ``h200``, ``H200 SXM`` and ``h200-sxm`` all give
    ``H200 SXM``; a bare family like ``h100`` gives its SXM part), or None when there is none."""
    slug = _slug(name)
    for key, hw in GPU_PRESETS.items():
        if _slug(key) == slug:
            return hw
    for key, hw in GPU_PRESETS.items():  # "h200" -> "H200 SXM" (the first listed part of the family)
        if _slug(key).startswith(slug) and slug:
            return hw
    family = gpu_family(name)
    return GPU_PRESETS.get(family) if family else None


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
    return PEAK_FLOPS_PER_S[family].get(dtype_key(dtype, tf32=tf32))


def machine_available_bytes() -> int | None:
    """The machine's available memory (``MemAvailable`` of ``/proc/meminfo``, in bytes); None where unknown.

    The one reader of it: ``profiling.run.limits`` bounds a measurement child with it, ``core.builder`` says what
    is left before a model is built."""
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None
