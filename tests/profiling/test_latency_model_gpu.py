"""The calibrated latency predictor on a real GPU (``@pytest.mark.gpu``; run by the lead on an H200): calibrate
CUDA within a short budget, then predict and measure the seed-no-alibi and seed forwards in bf16 at 1024 and
4096 tokens. A loose bound (within 2x either way) so the check is about the method, not the last 20 %: the
uncalibrated roofline was 62x off at 1024 tokens (launch-bound) on the same GPU."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
CUDA = torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_calibrated_prediction_within_2x_on_cuda():
    from xtlens.core.config import PRESETS, Workload
    from xtlens.core.latency_model import phase_ms, prediction_label
    from xtlens.profiling.measure.calibrate import calibrate
    from xtlens.profiling.measure.latency import measure_latency

    cal = calibrate("cuda", time_budget_s=40, dtypes=("bfloat16",))
    assert cal.device.startswith("cuda") and cal.launch_s > 0
    ratios = []
    for preset in ("seed-no-alibi", "seed"):
        for n in (1024, 4096):
            cfg, wl = PRESETS[preset], Workload(batch=1, seq_len=n, dtype="bfloat16")
            predicted = phase_ms(cfg, wl, cal, phase="forward")
            row = measure_latency(cfg, wl, device="cuda", phases=("forward",), warmup=2, repeats=5)[0]
            assert row.status == "ok", row.error
            ratios.append((preset, n, predicted, row.latency_median_ms, predicted / row.latency_median_ms))
    print(prediction_label(cal))
    for preset, n, predicted, measured, ratio in ratios:
        print(f"{preset:14s} n={n:5d} predicted {predicted:8.2f} ms measured {measured:8.2f} ms ratio {ratio:.2f}")
    assert all(0.5 <= r[-1] <= 2.0 for r in ratios), ratios
