"""Measure one point of a sweep: the dispatch from ``what`` to ``profiling.measure.flops`` / ``memory`` / ``latency``.

A measurement function follows ``Measure``: ``measure(what, cfg, wl, *, device, options, config_name,
progress) -> list[ProfileRecord]``. ``measure_point`` is the real one; tests pass fakes to
``profiling.run.sweep.run_sweep`` and to the worker (as a ``"module:function"`` reference).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from xtlens.core.config import ModelConfig, Workload
from xtlens.profiling.errors import ProfileError
from xtlens.profiling.results.records import ProfileRecord
from xtlens.profiling.run.plan import WHATS, SweepOptions

__all__ = ["Progress", "Measure", "measure_point", "phases_for"]

Progress = Callable[[float, str], None]


class Measure(Protocol):
    def __call__(self, what: str, cfg: ModelConfig, wl: Workload, *, device: str, options: SweepOptions,
                 config_name: str, progress: Progress | None) -> list[ProfileRecord]: ...


def phases_for(options: SweepOptions, supported: Sequence[str]) -> tuple[str, ...] | None:
    """The requested phases this measurement knows (None: its defaults; also when none of them apply)."""
    if options.phases is None:
        return None
    chosen = tuple(p for p in options.phases if p in supported)
    return chosen or None


def measure_point(what: str, cfg: ModelConfig, wl: Workload, *, device: str, options: SweepOptions,
                  config_name: str, progress: Progress | None = None) -> list[ProfileRecord]:
    """Measure one point with the real profilers. ``options.phases`` is filtered to the phases each
    measurement knows; none left means its defaults. ``flops_breakdown`` is ``flops`` with the per-module
    and per-operator rows of the same count. ``breakdown``: the latency split into parts; ``whatif``: the
    attention implementations of ``options.attention`` (forward, training step and decode by default)."""
    if what in ("flops", "flops_breakdown"):
        from xtlens.profiling.measure.flops import FLOPS_PHASES, measure_flops

        phases = phases_for(options, FLOPS_PHASES) or ("forward",)
        return measure_flops(cfg, wl, phases=phases, breakdown=what == "flops_breakdown", config_name=config_name,
                             device=device, progress=progress)
    if what == "memory":
        from xtlens.profiling.measure import memory

        phases = phases_for(options, memory.MEMORY_PHASES)
        return list(memory.measure_memory(cfg, wl, device=device, config_name=config_name,
                                          **({"phases": phases} if phases is not None else {})))
    if what == "latency":
        from xtlens.profiling.measure import latency

        phases = phases_for(options, latency.PHASES)
        return list(latency.measure_latency(cfg, wl, device=device, warmup=options.warmup, repeats=options.repeats,
                                            sdpa_backend=options.sdpa_backend, config_name=config_name,
                                            progress=progress, **({"phases": phases} if phases is not None else {})))
    if what == "breakdown":
        from xtlens.profiling.measure import breakdown

        phases = phases_for(options, breakdown.BREAKDOWN_PHASES)
        return breakdown.measure_breakdown(cfg, wl, device=device, warmup=options.warmup, repeats=options.repeats,
                                           per_layer=options.per_layer, config_name=config_name, progress=progress,
                                           **({"phases": phases} if phases is not None else {}))
    if what == "whatif":
        from xtlens.profiling.measure import whatif

        phases = phases_for(options, whatif.WHATIF_PHASES) or whatif.WHATIF_PHASES
        return whatif.measure_whatif(cfg, wl, device=device, warmup=options.warmup, repeats=options.repeats,
                                     phases=phases, config_name=config_name, progress=progress,
                                     **({"implementations": options.attention} if options.attention else {}))
    raise ProfileError(f"Unknown measurement {what!r}: choose from {', '.join(WHATS)}.")
