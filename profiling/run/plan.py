"""What a sweep measures: options, workloads, configuration grids and the ordered plan of points.

A sweep is a plan of points, one per (configuration, what, workload), in this order: per configuration,
per measurement, workloads ascending (dtype, batch, then sequence length). A grid combination that does
not validate stays in the plan as a point without a configuration (``invalid`` says why), so that it
still gives a row. ``what`` is one of ``WHATS``: ``flops`` (the three-way count), ``flops_breakdown``
(the same count with its per-module and per-operator rows), ``memory``, ``latency``, ``breakdown`` (the
latency split into parts of the model, ``profiling.measure.breakdown``), ``whatif`` (other attention
implementations on the same weights, ``profiling.measure.whatif``).

No measurement here: ``profiling.run.measure`` measures a point, ``profiling.run.sweep`` runs the plan.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from xtlens.core.config import ConfigError, ModelConfig, Workload
from xtlens.profiling.results.records import config_key

__all__ = [
    "WHATS",
    "DEFAULT_SEQ_LENS",
    "SweepOptions",
    "ConfigGrid",
    "SweepPoint",
    "seq_len_workloads",
    "workload_grid",
    "config_grid",
    "plan_sweep",
    "check_whats",
    "phase_label",
]

WHATS: tuple[str, ...] = ("flops", "flops_breakdown", "memory", "latency", "breakdown", "whatif")
DEFAULT_SEQ_LENS: tuple[int, ...] = tuple(2**k for k in range(7, 14))  # 128 .. 8192


@dataclass(frozen=True, kw_only=True)
class SweepOptions:
    """How each point is measured. ``device`` is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    ``phases=None`` lets each measurement use its default phases. ``attention`` names the what-if
    implementations (``profiling.measure.whatif.IMPLEMENTATIONS``; None: its defaults); ``per_layer`` splits the
    latency breakdown by block too. ``warmup`` and ``repeats`` and
    ``sdpa_backend`` concern latency only (but are part of every cache key, so keep them at their
    defaults for other measurements if you want to share cache entries).
    """

    device: str = "auto"
    warmup: int = 2
    repeats: int = 5
    phases: tuple[str, ...] | None = None
    sdpa_backend: str | None = None
    attention: tuple[str, ...] | None = None
    per_layer: bool = False
    skip_after_oom: bool = True
    use_cache: bool = True

    def __post_init__(self) -> None:
        if self.phases is not None:
            object.__setattr__(self, "phases", tuple(self.phases))
        if self.attention is not None:
            object.__setattr__(self, "attention", tuple(self.attention))
        if self.warmup < 0 or self.repeats < 1:
            raise ConfigError("repeats" if self.repeats < 1 else "warmup",
                              self.repeats if self.repeats < 1 else self.warmup,
                              "repeats >= 1 and warmup >= 0")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["phases"] = list(self.phases) if self.phases is not None else None
        if not self.per_layer:  # absent unless set, like attention
            out.pop("per_layer")
        if self.attention is None:  # absent from the dict (and so from cache keys) unless set
            out.pop("attention")
        else:
            out["attention"] = list(self.attention)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepOptions:
        data = dict(data)
        if data.get("phases") is not None:
            data["phases"] = tuple(data["phases"])
        if data.get("attention") is not None:
            data["attention"] = tuple(data["attention"])
        return cls(**data)


# --- workloads and config grids ----------------------------------------------------------------

def seq_len_workloads(seq_lens: Iterable[int] = DEFAULT_SEQ_LENS, *, batch: int = 1,
                      dtype: str = "float32") -> list[Workload]:
    """One ``Workload`` per sequence length (default: powers of two from 128 to 8192)."""
    return [Workload(batch=batch, seq_len=s, dtype=dtype) for s in seq_lens]


def workload_grid(seq_lens: Iterable[int] = DEFAULT_SEQ_LENS, batches: Iterable[int] = (1,), *,
                  dtype: str = "float32") -> list[Workload]:
    """Every (batch, seq_len) pair, batch-major, each ascending."""
    return [Workload(batch=b, seq_len=s, dtype=dtype) for b in sorted(set(batches)) for s in sorted(set(seq_lens))]


@dataclass(frozen=True, kw_only=True)
class ConfigGrid:
    """The valid configurations of a grid (``(name, cfg)``) and the skipped combinations.

    ``skipped`` holds ``(name, keywords tried, validation message)`` for each invalid combination.
    """

    configs: tuple[tuple[str, ModelConfig], ...]
    skipped: tuple[tuple[str, dict[str, Any], str], ...] = ()

    def __iter__(self):
        return iter(self.configs)

    def __len__(self) -> int:
        return len(self.configs)


def config_grid(base: ModelConfig, *, name: str = "", **axes: Sequence[Any]) -> ConfigGrid:
    """Every combination of the given field values on top of ``base`` (e.g. ``dim=[256, 512], depth=[2, 4]``).

    Combinations that ``ModelConfig`` rejects are skipped, their message kept in ``skipped``. Names are
    ``"<name> dim=256 depth=2"`` (``name`` defaults to empty). Duplicates are kept once.
    """
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    for key, values in axes.items():
        if key not in known:
            raise ConfigError(key, None, f"a ModelConfig field to sweep over; known: {', '.join(sorted(known))}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise ConfigError(key, values, "a list of values")
    keys = list(axes)
    configs: list[tuple[str, ModelConfig]] = []
    skipped: list[tuple[str, dict[str, Any], str]] = []
    seen: set[str] = set()
    for combo in itertools.product(*(list(axes[k]) for k in keys)):
        changes = dict(zip(keys, combo, strict=True))
        label = " ".join([name] * bool(name) + [f"{k}={v}" for k, v in changes.items()]) or name or "base"
        try:
            cfg = base.replace(**changes)
        except ConfigError as exc:
            skipped.append((label, {**base.to_dict(), **changes}, str(exc)))
            continue
        if cfg.to_json() in seen:
            continue
        seen.add(cfg.to_json())
        configs.append((label, cfg))
    return ConfigGrid(configs=tuple(configs), skipped=tuple(skipped))


# --- the plan ------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class SweepPoint:
    """One measurement to make: ``cfg`` is None for an invalid grid combination (``invalid`` says why)."""

    config_name: str
    config_json: str
    cfg: ModelConfig | None
    workload: Workload
    what: str
    invalid: str | None = None

    def describe(self) -> str:
        wl = self.workload
        return f"{self.what} {self.config_name} batch={wl.batch} seq_len={wl.seq_len} {wl.dtype}"


def _named(configs: ModelConfig | ConfigGrid | Iterable[Any]) -> tuple[list[tuple[str, ModelConfig]],
                                                                        list[tuple[str, dict[str, Any], str]]]:
    if isinstance(configs, ModelConfig):
        return [("", configs)], []
    if isinstance(configs, ConfigGrid):
        return list(configs.configs), list(configs.skipped)
    out = []
    for item in configs:
        out.append(("", item) if isinstance(item, ModelConfig) else (str(item[0]), item[1]))
    return out, []


def plan_sweep(configs: ModelConfig | ConfigGrid | Iterable[ModelConfig | tuple[str, ModelConfig]],
               workloads: Iterable[Workload], what: Iterable[str] = ("flops",)) -> list[SweepPoint]:
    """The ordered points of a sweep: per configuration, per measurement, workloads ascending."""
    whats = check_whats(what)
    wls = sorted(workloads, key=lambda w: (w.dtype, w.batch, w.seq_len))
    named, skipped = _named(configs)
    points: list[SweepPoint] = []
    for label, cfg in named:
        name = label or config_key(cfg)
        for w in whats:
            points.extend(SweepPoint(config_name=name, config_json=cfg.to_json(), cfg=cfg, workload=wl, what=w)
                          for wl in wls)
    for label, tried, message in skipped:
        tried_json = json.dumps(tried, sort_keys=True)
        for w in whats:
            points.extend(SweepPoint(config_name=label, config_json=tried_json, cfg=None, workload=wl, what=w,
                                     invalid=message) for wl in wls)
    return points


def check_whats(what: Iterable[str] | str) -> tuple[str, ...]:
    items = [w.strip() for w in (what.split(",") if isinstance(what, str) else what) if w.strip()]
    bad = [w for w in items if w not in WHATS]
    if bad or not items:
        raise ConfigError("what", bad[0] if bad else "", f"one or more of {', '.join(WHATS)}")
    return tuple(dict.fromkeys(items))


def phase_label(options: SweepOptions) -> str:
    """The ``phase`` column of a row that stands for a whole point (a failure): the requested phases or ``all``."""
    return ",".join(options.phases) if options.phases else "all"
