"""profiling.measure.roofline: the ceilings come from a Calibration (the one calibration path), only the dtypes
asked for are calibrated, and a slow dtype's ceiling is its probe's rate."""

from __future__ import annotations

import pytest
from xtlens.core.calibration import Calibration, MatmulPoint, SlowDtype
from xtlens.profiling.errors import ProfileError
from xtlens.profiling.measure import calibrate as calmod
from xtlens.profiling.measure import roofline


def _cal(**kw) -> Calibration:
    base = dict(device="cpu", device_name="Test CPU (2 logical CPUs)", torch_version="2.x", xtransformers_version="2.y",
                threads=2, measured_at="2026-12-04T10:00:00+00:00", wall_s=1.0, launch_s=1e-6, module_overhead_s=2e-6,
                elementwise_bytes_per_s={"float32": 30e9, "bfloat16": 20e9})
    return Calibration(**{**base, **kw})


def test_ceilings_are_the_best_matmul_rate_per_dtype_and_the_best_bandwidth():
    pts = (MatmulPoint(dtype="float32", m=64, n=64, k=64, seconds=1e-5),        # 2*64^3/1e-5 = 52.4 GFLOP/s
           MatmulPoint(dtype="float32", m=2048, n=1024, k=1024, seconds=0.02),  # 4294967296/0.02 = 214.7 GFLOP/s
           MatmulPoint(dtype="bfloat16", m=512, n=512, k=512, seconds=0.1))     # 268435456/0.1 = 2.68 GFLOP/s
    slow = (SlowDtype(dtype="bfloat16", size=512, seconds=0.1, float32_seconds=0.001),)
    hw = roofline.hardware_from_calibration(_cal(matmul=pts, slow_dtypes=slow))
    assert hw.peak("float32") == pytest.approx(2 * 2048 * 1024 * 1024 / 0.02)
    assert hw.peak("bfloat16") == pytest.approx(2 * 512**3 / 0.1)
    assert hw.mem_bandwidth_bytes_per_s == 30e9
    assert hw.name == "CPU: Test CPU (2 logical CPUs)"
    assert "2 float32 matrix product shape(s)" in hw.source and "bfloat16 is emulated here (100x" in hw.source
    only = roofline.hardware_from_calibration(_cal(matmul=pts), dtypes=("float32",))
    assert set(only.peak_flops_per_s) == {"float32"}


def test_a_calibration_without_bandwidth_is_a_clear_error():
    with pytest.raises(ProfileError, match="no element-wise bandwidth"):
        roofline.hardware_from_calibration(_cal(elementwise_bytes_per_s={},
                                                matmul=(MatmulPoint(dtype="float32", m=8, n=8, k=8, seconds=1.0),)))


def test_a_float32_breakdown_calibrates_float32_only(monkeypatch):
    """Each dtype's ceiling is measured once per process and only when asked for (a float32 breakdown never
    pays for a bfloat16 product), through calibrate() with the ceiling shapes."""
    calls = []

    def fake(device, *, dtypes, parts, time_budget_s, matmul_shapes=None):
        calls.append((tuple(dtypes), tuple(parts)))
        assert device == "cpu" and time_budget_s == roofline.CEILING_BUDGET_S
        if parts == ("elementwise",):
            return _cal(elementwise_bytes_per_s={"float32": 25e9})
        assert matmul_shapes == roofline.CEILING_SHAPES
        d = dtypes[0]
        rate = {"float32": 1e11, "bfloat16": 4e11}[d]
        pts = [MatmulPoint(dtype=d, m=m, n=n, k=k, seconds=2 * m * n * k / rate) for m, n, k in matmul_shapes]
        if d != "float32":  # a point of another dtype (none is returned today) never counts for this one
            pts.append(MatmulPoint(dtype="float32", m=8, n=8, k=8, seconds=1e-9))
        return _cal(matmul=tuple(pts))

    monkeypatch.setattr(calmod, "calibrate", fake)
    for f in (roofline._peak_calibration, roofline._bandwidth_calibration, roofline.calibrate_cpu):
        f.cache_clear()
    try:
        hw = roofline.hardware_for("cpu", "CPU", dtype="float32")
        assert set(hw.peak_flops_per_s) == {"float32"} and hw.peak("float32") == pytest.approx(1e11)
        assert hw.peak("bfloat16") is None and hw.mem_bandwidth_bytes_per_s == 25e9
        assert sorted(calls) == [(("float32",), ("elementwise",)), (("float32",), ("matmul",))]
        roofline.hardware_for("cpu", "CPU", dtype="float32")
        assert len(calls) == 2  # cached per process
        full = roofline.calibrate_cpu()  # every dtype (``xtlens estimate --hardware cpu``): float32 not measured again
        assert calls[2:] == [(("bfloat16",), ("matmul",))]
        assert full.peak("float32") == hw.peak("float32") and full.peak("bfloat16") == pytest.approx(4e11)
    finally:
        for f in (roofline._peak_calibration, roofline._bandwidth_calibration, roofline.calibrate_cpu):
            f.cache_clear()


def test_real_cpu_ceilings_are_measured_quickly():
    """The real path (no fake): float32's ceiling on this CPU from the two ceiling shapes, within its budget."""
    for f in (roofline._peak_calibration, roofline._bandwidth_calibration, roofline.calibrate_cpu):
        f.cache_clear()
    hw = roofline.calibrate_cpu(dtypes=("float32",))
    cal = roofline._peak_calibration("float32")
    assert {(p.m, p.n, p.k) for p in cal.matmul} <= set(roofline.CEILING_SHAPES)
    best = max(p.flops_per_s for p in cal.matmul)
    assert hw.peak("float32") == best and 1e9 < best < 1e14  # a CPU: between 1 GFLOP/s and 100 TFLOP/s
    assert 1e8 < hw.mem_bandwidth_bytes_per_s < 1e13
    assert cal.wall_s <= roofline.CEILING_BUDGET_S
