"""FLOP rows with per-module and per-operator breakdowns (the dashboard's FLOPs view runs it in the worker's child).

``measure`` follows ``profiling.sweep.Measure`` and is passed to the worker as
``"profiling.flops_breakdown:measure"``. It returns the cross-check totals of
``profiling.sweep.measure_flops_rows`` (component ``total``) plus one row per module and per operator
from torch's ``FlopCounterMode`` and from fvcore, fvcore's unsupported operators and uncalled modules.
``method`` names the breakdown a row belongs to. No Streamlit here.
"""

from __future__ import annotations

from xtlens.core.config import ModelConfig, Workload
from xtlens.profiling.records import ProfileRecord, base_fields

TORCH_MODULE = "torch FlopCounterMode, by module"
TORCH_OPERATOR = "torch FlopCounterMode, by operator"
FVCORE_MODULE = "fvcore, by module"
FVCORE_OPERATOR = "fvcore, by operator"
FVCORE_UNSUPPORTED = "fvcore: unsupported operator (not counted)"
FVCORE_UNCALLED = "fvcore: module never called"
FVCORE_TRACE_MAX = 256


def leaves(by_module: dict[str, int]) -> dict[str, int]:
    """Modules with a nonzero count none of whose sub-modules has a count (no double counting)."""
    names = [k for k, v in by_module.items() if k and v]
    return {k: by_module[k] for k in names if not any(o != k and o.startswith(k + ".") for o in names)}


def measure(what: str, cfg: ModelConfig, wl: Workload, *, device: str, options, config_name: str,
            progress=None) -> list[ProfileRecord]:
    from xtlens.profiling.flops import fvcore_flop_count, fvcore_flop_count_extrapolated, torch_flop_count
    from xtlens.profiling.sweep import measure_flops_rows, resolve_device_name

    if what != "flops":
        from xtlens.profiling.sweep import measure_point

        return measure_point(what, cfg, wl, device=device, options=options, config_name=config_name,
                             progress=progress)
    rows = list(measure_flops_rows(cfg, wl, phases=("forward",), config_name=config_name, device=device,
                                   progress=progress))
    name = resolve_device_name(device)[1]
    base = base_fields(cfg, wl, config_name=config_name, measurement="flops", phase="forward", device=device,
                       device_name=name)
    if progress is not None:
        progress(0.6, "per-module counts")
    tc = torch_flop_count(cfg, wl)
    for path, v in sorted(leaves(tc.by_module_flops).items()):
        rows.append(ProfileRecord(**base, component=path.removeprefix("TransformerWrapper."), method=TORCH_MODULE,
                                  torch_counter_flops=int(v)))
    for op, v in sorted(tc.by_operator_flops.items()):
        rows.append(ProfileRecord(**base, component=op, method=TORCH_OPERATOR, torch_counter_flops=int(v)))
    fv = fvcore_flop_count(cfg, wl) if wl.seq_len <= FVCORE_TRACE_MAX else fvcore_flop_count_extrapolated(cfg, wl)
    for path, v in sorted(leaves(fv.by_module_macs).items()):
        rows.append(ProfileRecord(**base, component=path, method=FVCORE_MODULE, fvcore_macs=int(v),
                                  fvcore_flops=2 * int(v)))
    for op, v in sorted(fv.by_operator_macs.items()):
        rows.append(ProfileRecord(**base, component=op, method=FVCORE_OPERATOR, fvcore_macs=int(v),
                                  fvcore_flops=2 * int(v)))
    for op, n in sorted(fv.unsupported_ops.items()):
        rows.append(ProfileRecord(**base, component=op, method=FVCORE_UNSUPPORTED,
                                  error=f"{n} call(s) skipped by fvcore (element-wise; torch counts them as 0 too)"))
    for path in fv.uncalled_modules:
        rows.append(ProfileRecord(**base, component=path, method=FVCORE_UNCALLED))
    return rows
