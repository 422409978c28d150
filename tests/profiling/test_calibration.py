"""profiling.measure.roofline: the CPU calibration measures only the dtypes asked for, and a slow product stops it small."""

from __future__ import annotations

import time

from xtlens.profiling.measure import roofline


def test_a_slow_product_stops_the_matrix_small():
    """A dtype the CPU has no fast unit for (bfloat16 without native support took ~77 s per 2048 x 2048 product,
    four of them in every breakdown's calibration): the first size already takes GROW_BELOW_S, so the products
    stay at 256 x 256: one warm-up and ``repeats`` timed, never a larger one."""
    sizes = []

    def slow(a, b):
        sizes.append(a.shape[0])
        time.sleep(roofline.GROW_BELOW_S)
        return a @ b

    flops_per_s, n = roofline.matmul_flops_per_s("bfloat16", repeats=2, product=slow)
    assert n == 256 and sizes == [256, 256, 256]
    assert 0 < flops_per_s <= 2 * 256**3 / roofline.GROW_BELOW_S


def test_a_fast_product_grows_to_the_largest_size():
    sizes = []

    def instant(a, b):
        sizes.append(a.shape[0])
        return None

    assert roofline.matmul_flops_per_s("float32", repeats=1, product=instant)[1] == 2048
    assert sizes == [256, 512, 1024, 2048, 2048]


def test_a_float32_breakdown_calibrates_float32_only(monkeypatch):
    measured = []
    real = roofline.matmul_flops_per_s

    def spy(dtype, **kw):
        measured.append(dtype)
        return real(dtype, **kw)

    monkeypatch.setattr(roofline, "matmul_flops_per_s", spy)
    roofline._cpu_peak.cache_clear()
    roofline.calibrate_cpu.cache_clear()
    hw = roofline.hardware_for("cpu", "CPU", dtype="float32")
    assert measured == ["float32"] and set(hw.peak_flops_per_s) == {"float32"} and hw.peak("float32") > 0
    assert hw.peak("bfloat16") is None  # its roofline columns stay empty rather than cost a calibration
    roofline.hardware_for("cpu", "CPU", dtype="float32")
    assert measured == ["float32"]  # cached per process
    full = roofline.calibrate_cpu()  # every dtype (``xtlens estimate --hardware cpu``): float32 not measured again
    assert measured == ["float32", "bfloat16"] and set(full.peak_flops_per_s) == {"float32", "bfloat16"}
    assert full.peak("float32") == hw.peak("float32")
