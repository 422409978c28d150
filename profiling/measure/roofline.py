"""The ceilings of the device a measurement runs on: a datasheet preset for a known GPU, the CPU's from a
calibration (``core.hardware`` holds the presets, ``core.roofline`` the predictions).

One calibration path: every measured ceiling comes from ``profiling.measure.calibrate.calibrate`` through
``hardware_from_calibration`` (the compute ceiling of a dtype = the best FLOP/s of its matrix products, the
bandwidth ceiling = the best element-wise bytes/s), whether the calibration is a stored one (``xtlens calibrate``)
or the short one ``calibrate_cpu`` runs for a measurement's roofline columns:

* per dtype asked for, the matrix products ``CEILING_SHAPES`` (float32 beside it as the slowdown's reference); a
  dtype this CPU emulates (bfloat16 without native support: a 2048-square product can take over a minute) is found
  on a 256-square probe and never runs a large product: its ceiling is its probe's rate;
* once, the element-wise add in float32 (64 MiB operands) for the bandwidth.

Each part runs within ``CEILING_BUDGET_S`` and only when asked for (``hardware_for(..., dtype=)``: a measurement
calibrates the dtype it runs in), with the threads torch uses here, and is cached per process (the numbers
describe this machine under its current load: on a shared machine they move with the neighbours' work).
"""

from __future__ import annotations

import functools

from xtlens.core.calibration import Calibration
from xtlens.core.hardware import GPU_PRESETS, Hardware, gpu_family

__all__ = ["calibrate_cpu", "hardware_for", "hardware_from_calibration", "CALIBRATION_DTYPES", "CEILING_SHAPES",
           "CEILING_BUDGET_S"]

CALIBRATION_DTYPES = ("float32", "bfloat16")
CEILING_SHAPES = ((1024, 1024, 1024), (2048, 2048, 2048))
CEILING_BUDGET_S = 10.0


def hardware_from_calibration(cal: Calibration, *, dtypes: tuple[str, ...] | None = None) -> Hardware:
    """The roofline ceilings of a calibration: per dtype (all of ``cal``'s, or ``dtypes``) the best FLOP/s of its
    matrix products, and the best element-wise bytes/s of any dtype (the memory system's, not a dtype's)."""
    wanted = cal.dtypes() if dtypes is None else tuple(d for d in dtypes if d in cal.dtypes())
    peaks = {d: max(p.flops_per_s for p in cal.matmul if p.dtype == d) for d in wanted}
    if not cal.elementwise_bytes_per_s:
        from xtlens.profiling.errors import ProfileError

        raise ProfileError(f"the calibration {cal.key} has no element-wise bandwidth: calibrate again "
                           "(xtlens calibrate) to get the bandwidth ceiling")
    bandwidth = max(cal.elementwise_bytes_per_s.values())
    shapes = {d: sum(p.dtype == d for p in cal.matmul) for d in wanted}
    slow = "".join(f"; {s.dtype} is emulated here ({s.slowdown_vs_float32:,.0f}x float32's time)"
                   for s in cal.slow_dtypes if s.dtype in wanted)
    name = f"CPU: {cal.device_name}" if cal.device == "cpu" else cal.device_name
    return Hardware(name=name, peak_flops_per_s=peaks, mem_bandwidth_bytes_per_s=bandwidth,
                    source=(f"calibrated: {cal.key} ({cal.threads} threads): the best of "
                            + ", ".join(f"{n} {d} matrix product shape(s)" for d, n in shapes.items())
                            + f" and of the element-wise add{slow}"))


@functools.cache
def _peak_calibration(dtype: str) -> Calibration:
    from xtlens.profiling.measure.calibrate import calibrate

    return calibrate("cpu", dtypes=(dtype,), parts=("matmul",), matmul_shapes=CEILING_SHAPES,
                     time_budget_s=CEILING_BUDGET_S)


@functools.cache
def _bandwidth_calibration() -> Calibration:
    from xtlens.profiling.measure.calibrate import calibrate

    return calibrate("cpu", dtypes=("float32",), parts=("elementwise",), time_budget_s=CEILING_BUDGET_S)


@functools.cache
def calibrate_cpu(dtypes: tuple[str, ...] = CALIBRATION_DTYPES) -> Hardware:
    """This CPU's ceilings for ``dtypes`` (each measured once per process), see the module docstring."""
    from dataclasses import replace

    parts = {d: _peak_calibration(d) for d in dtypes}
    base = _bandwidth_calibration()
    merged = replace(base, matmul=tuple(p for d, cal in parts.items() for p in cal.matmul if p.dtype == d),
                     slow_dtypes=tuple(s for d, cal in parts.items() for s in cal.slow_dtypes if s.dtype == d),
                     wall_s=base.wall_s + sum(c.wall_s for c in parts.values()))
    return hardware_from_calibration(merged, dtypes=tuple(dtypes))


def hardware_for(device: str, device_name: str, *, dtype: str | None = None) -> Hardware | None:
    """The ceilings of the measuring device: the calibrated CPU (only ``dtype`` when given), the preset of a
    known GPU, else None."""
    if device == "cpu":
        return calibrate_cpu(dtypes=(dtype,) if dtype is not None else CALIBRATION_DTYPES)
    family = gpu_family(device_name)
    return GPU_PRESETS.get(family) if family else None
