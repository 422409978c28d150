"""A fast stand-in for ``profiling.run.sweep.measure_point`` used by the dashboard tests (run in the worker's child).

Rows are plainly synthetic (``method="fake measure for tests"``); the latency grows with the square of
the sequence length so slopes are known: forward median = 1e-6 * n^2 ms.
"""

from __future__ import annotations

from xtlens.core.config import ModelConfig, Workload
from xtlens.profiling.results.records import ProfileRecord, base_fields


def measure(what: str, cfg: ModelConfig, wl: Workload, *, device: str, options, config_name: str,
            progress=None) -> list[ProfileRecord]:
    n = wl.seq_len
    rows = []
    if what == "latency":
        for phase in options.phases or ("forward", "attention", "train_step", "decode"):
            base = base_fields(cfg, wl, config_name=config_name, measurement="latency", phase=phase, device=device,
                               device_name="Fake CPU")
            ms = 1e-6 * n * n * (3 if phase == "train_step" else 1)
            rows.append(ProfileRecord(**base, latency_min_ms=ms * 0.9, latency_median_ms=ms, latency_max_ms=ms * 1.1,
                                      tokens_per_s=wl.tokens / (ms / 1000), sdpa_backend="math",
                                      sdpa_backend_reason="fake", method="fake measure for tests", repeats=3, warmup=1))
    elif what == "memory":
        for phase in ("inference", "train_step"):  # profiling.measure.memory.MEMORY_PHASES
            base = base_fields(cfg, wl, config_name=config_name, measurement="memory", phase=phase, device=device,
                               device_name="Fake CPU")
            rows.append(ProfileRecord(**base, predicted_bytes=1000 * n, measured_bytes=1100 * n,
                                      memory_rel_err=0.1, method="fake measure for tests"))
    return rows


def slow_measure(what: str, cfg: ModelConfig, wl: Workload, *, device: str, options, config_name: str,
                 progress=None) -> list[ProfileRecord]:
    """``measure`` after a pause per point (2 s, or ``$XTLENS_TEST_PAUSE_S``): a job that is still running while the
    test switches tabs."""
    import os
    import time

    time.sleep(float(os.environ.get("XTLENS_TEST_PAUSE_S", "2")))
    return measure(what, cfg, wl, device=device, options=options, config_name=config_name, progress=progress)
