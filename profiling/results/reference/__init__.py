"""Reference measurements shipped with xtlens: rows of real GPU runs, for users who do not have that GPU.

``h200-rows.parquet``: the NVIDIA H200 run of docs/gpu-results.md (2026-11-26; torch 2.11.0+cu130, CUDA 13.0,
x-transformers 2.31.10; the seed and seed-no-alibi presets, bf16 and fp32, 512-8192 tokens): latency, memory,
the latency breakdown by part and the what-if table, as ``ProfileRecord`` rows. The Latency view shows them
beside the roofline of the same GPU's preset when the current configuration is one that was measured.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from xtlens.core.config import ModelConfig
from xtlens.profiling.results.records import ProfileRecord, config_key

__all__ = ["REFERENCE_RUNS", "reference_rows", "reference_for"]

#: GPU preset (``core.hardware.GPU_PRESETS`` key) -> (file in this package, what the run was)
REFERENCE_RUNS: dict[str, tuple[str, str]] = {
    "H200 SXM": ("h200-rows.parquet", "NVIDIA H200, 2026-11-26, torch 2.11.0+cu130, x-transformers 2.31.10, batch 1"),
}


@cache
def reference_rows(preset: str) -> tuple[ProfileRecord, ...]:
    """Every row of the reference run on ``preset`` (empty when there is none)."""
    from xtlens.profiling.results.export import read_records

    if preset not in REFERENCE_RUNS:
        return ()
    with resources.as_file(resources.files(__name__) / REFERENCE_RUNS[preset][0]) as path:
        return tuple(read_records(path))


def reference_for(cfg: ModelConfig, preset: str) -> list[ProfileRecord]:
    """The reference rows of ``preset`` measured on exactly this configuration (same ``config_key``)."""
    key = config_key(cfg)
    return [r for r in reference_rows(preset) if r.config_key == key]
