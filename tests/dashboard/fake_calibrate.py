"""A fast stand-in for ``profiling.measure.calibrate.calibrate`` (run in the calibrate job's child process).

The numbers are plainly synthetic (``notes`` says so) but shaped like a CPU without native bf16: float32
products at 50 GFLOP/s (under this machine's CPU name, as the real calibration stores it), bfloat16 250x slower (``slow_dtypes``), a 5 us launch and a 20 us module call.
``$XTLENS_TEST_DEVICE_NAME`` replaces the CPU's name (``Fake CPU``: the device of ``fake_measure``'s rows).
``$XTLENS_TEST_PAUSE_S`` pauses first (a calibration still running while the test switches tabs or cancels).
"""

from __future__ import annotations

import datetime as dt
import os
import time

from xtlens.core.calibration import AttentionPoint, Calibration, MatmulPoint, SlowDtype
from xtlens.profiling.run.device import cpu_name

FLOAT32_FLOPS_PER_S = 50e9
BF16_SLOWDOWN = 250.0


def calibrate(device: str = "cpu", *, time_budget_s: float = 60.0, progress=None, cancel=None) -> Calibration:
    pause = float(os.environ.get("XTLENS_TEST_PAUSE_S", "0"))
    steps = 4
    for i in range(steps):
        if progress is not None:
            progress(i / steps, f"fake calibration step {i + 1} of {steps}")
        time.sleep(pause / steps)
    matmul = tuple(MatmulPoint(dtype="float32", m=s, n=s, k=s, seconds=2 * s**3 / FLOAT32_FLOPS_PER_S)
                   for s in (64, 256, 1024))
    matmul += (MatmulPoint(dtype="bfloat16", m=64, n=64, k=64, seconds=BF16_SLOWDOWN * 2 * 64**3 / FLOAT32_FLOPS_PER_S),)
    attention = tuple(AttentionPoint(backend="cpu_flash", dtype="float32", batch=1, heads=8, kv_heads=8, seq_len=n,
                                     head_dim=64, mask=mask, seconds=4 * n * n * 64 * 8 / FLOAT32_FLOPS_PER_S,
                                     backward_seconds=12 * n * n * 64 * 8 / FLOAT32_FLOPS_PER_S)
                      for n in (128, 512) for mask in ("causal", "dense"))
    f32_s = 2 * 64**3 / FLOAT32_FLOPS_PER_S
    return Calibration(device="cpu", device_name=os.environ.get("XTLENS_TEST_DEVICE_NAME") or cpu_name(), torch_version="2.13.0",
                       xtransformers_version="2.31.0", threads=2, measured_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                       wall_s=1.5, launch_s=5e-6, module_overhead_s=20e-6,
                       elementwise_bytes_per_s={"float32": 10e9, "bfloat16": 2e9}, matmul=matmul, attention=attention,
                       slow_dtypes=(SlowDtype(dtype="bfloat16", size=64, seconds=BF16_SLOWDOWN * f32_s,
                                              float32_seconds=f32_s),),
                       notes=("fake calibration for tests", f"time_budget_s={time_budget_s!r}"))
