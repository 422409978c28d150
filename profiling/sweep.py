"""Sweeps: run flops / memory / latency measurements over sequence lengths, batch sizes and config grids.

A sweep is a plan of points, one per (configuration, what, workload), run in that order (for each
configuration and measurement, batch sizes then sequence lengths ascending). Every point gives at
least one ``ProfileRecord`` row, whatever happens:

* a configuration of a grid that does not validate gives rows with ``status="error"`` and the
  validation message (``config_json`` then holds the keywords that were tried, not a valid config);
* a workload the model cannot take (``seq_len > max_seq_len``) gives an ``error`` row;
* out-of-memory anywhere in a measurement gives an ``oom`` row, the memory is freed (``gc`` and the
  CUDA caching allocator) and the sweep continues; with ``skip_after_oom`` the larger workloads of the
  same configuration and measurement are recorded as ``oom`` without being tried;
* any other exception gives an ``error`` row with its message (no traceback).

Every measured point's rows (failures too) are stored in the SQLite result store
(``profiling.store``: ``$XTLENS_DB`` or ``results.sqlite`` in the ``.xtlens-cache`` folder, which is
``$XTLENS_CACHE_DIR`` when set), under a cache key made of the configuration, the workload, the device
(and its name), the measurement, the torch and x-transformers versions and the measurement options
(warm-up, repeats, phases, SDPA backend) and, for a measurement function other than ``measure_point``
(a test fake), that function's name. A repeated sweep reads a point back instead of measuring when its
latest stored rows are all ``ok`` (``use_cache=False`` measures again; the rows are stored anyway).
The pre-SQLite cache (one JSON file per point under ``.xtlens-cache/results/``) is imported into the
store once, then left alone.

The measurement itself is a function ``measure(what, cfg, wl, *, device, options, config_name,
progress) -> list[ProfileRecord]``; the default, ``measure_point``, calls ``profiling.flops``,
``profiling.memory`` and ``profiling.latency``. Tests and the worker may pass another.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from xtlens.core.config import ConfigError, ModelConfig, Workload
from xtlens.profiling.records import (
    ProfileRecord,
    base_fields,
    config_key,
    rel_err,
)

__all__ = [
    "WHATS",
    "DEFAULT_SEQ_LENS",
    "SweepOptions",
    "ConfigGrid",
    "SweepPoint",
    "Progress",
    "Measure",
    "seq_len_workloads",
    "workload_grid",
    "config_grid",
    "plan_sweep",
    "run_sweep",
    "run_point",
    "measure_point",
    "measure_flops_rows",
    "FLOPS_PHASES",
    "failure_rows",
    "resolve_device_name",
    "cache_root",
    "cache_path",
    "cache_key",
    "cache_read",
    "cache_write",
    "clear_cache",
]

WHATS: tuple[str, ...] = ("flops", "memory", "latency")
DEFAULT_SEQ_LENS: tuple[int, ...] = tuple(2**k for k in range(7, 14))  # 128 .. 8192

Progress = Callable[[float, str], None]


class Measure(Protocol):
    def __call__(self, what: str, cfg: ModelConfig, wl: Workload, *, device: str, options: SweepOptions,
                 config_name: str, progress: Progress | None) -> list[ProfileRecord]: ...


@dataclass(frozen=True, kw_only=True)
class SweepOptions:
    """How each point is measured. ``device`` is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    ``phases=None`` lets each measurement use its default phases. ``warmup`` and ``repeats`` and
    ``sdpa_backend`` concern latency only (but are part of every cache key, so keep them at their
    defaults for other measurements if you want to share cache entries).
    """

    device: str = "auto"
    warmup: int = 2
    repeats: int = 5
    phases: tuple[str, ...] | None = None
    sdpa_backend: str | None = None
    skip_after_oom: bool = True
    use_cache: bool = True

    def __post_init__(self) -> None:
        if self.phases is not None:
            object.__setattr__(self, "phases", tuple(self.phases))
        if self.warmup < 0 or self.repeats < 1:
            raise ConfigError("repeats" if self.repeats < 1 else "warmup",
                              self.repeats if self.repeats < 1 else self.warmup,
                              "repeats >= 1 and warmup >= 0")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["phases"] = list(self.phases) if self.phases is not None else None
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepOptions:
        data = dict(data)
        if data.get("phases") is not None:
            data["phases"] = tuple(data["phases"])
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
    whats = _check_whats(what)
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


def _check_whats(what: Iterable[str] | str) -> tuple[str, ...]:
    items = [w.strip() for w in (what.split(",") if isinstance(what, str) else what) if w.strip()]
    bad = [w for w in items if w not in WHATS]
    if bad or not items:
        raise ConfigError("what", bad[0] if bad else "", f"one or more of {', '.join(WHATS)}")
    return tuple(dict.fromkeys(items))


# --- devices -------------------------------------------------------------------------------------

def resolve_device_name(device: str) -> tuple[str, str]:
    """``(device, device_name)`` for ``auto``/``cpu``/``cuda``/``cuda:N`` via ``profiling.device``."""
    from xtlens.profiling.device import device_name, resolve_device

    resolved = str(resolve_device(device))
    return resolved, str(device_name(resolved))


# --- the cache -------------------------------------------------------------------------------------

def cache_root() -> Path:
    """``$XTLENS_CACHE_DIR/results`` or ``./.xtlens-cache/results``."""
    return Path(os.environ.get("XTLENS_CACHE_DIR") or ".xtlens-cache") / "results"


def cache_key(point: SweepPoint, device: str, device_name: str, options: SweepOptions,
              measure: Measure | None = None) -> str:
    """The store's cache key of ``point`` measured on (device, device_name) with ``options`` by ``measure``
    (default ``measure_point``)."""
    return _cache_key(point, device, device_name, options, None if measure is None else _measure_id(measure))


def _cache_key(point: SweepPoint, device: str, device_name: str, options: SweepOptions,
               measure_id: str | None = None) -> str:
    from xtlens.profiling.device import versions

    wl = point.workload
    payload = {
        "config": json.loads(point.config_json),
        "workload": wl.to_dict(),
        "device": device,
        "device_name": device_name,
        "what": point.what,
        "versions": versions(),
        "warmup": options.warmup,
        "repeats": options.repeats,
        "phases": list(options.phases) if options.phases is not None else None,
        "sdpa_backend": options.sdpa_backend,
    }
    if measure_id is not None:  # another measurement function (a test fake): never share its entries
        payload["measure"] = measure_id
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def cache_path(point: SweepPoint, device: str, device_name: str, options: SweepOptions,
               measure_id: str | None = None) -> Path:
    """Where the pre-SQLite cache kept this point (read once by ``profiling.store``, never written now)."""
    return cache_root() / point.what / f"{_cache_key(point, device, device_name, options, measure_id)}.json"


def _measure_id(measure: Measure) -> str | None:
    if measure is measure_point:
        return None
    module = getattr(measure, "__module__", None) or type(measure).__module__
    name = getattr(measure, "__qualname__", None) or type(measure).__qualname__
    return f"{module}.{name}"


def _store():
    """The result store, after importing the old JSON cache folder once (``profiling.store``)."""
    from xtlens.profiling.store import open_store

    store = open_store()
    store.import_json_cache(cache_root())
    return store


def cache_read(key: str) -> list[ProfileRecord] | None:
    """The stored rows of the point ``key`` when its latest run is all ``ok`` (else None)."""
    try:
        return _store().cached(key)
    except Exception:  # noqa: BLE001 - an unusable store (StoreError: the CLI and page say why) must not fail a measurement
        return None


def cache_write(key: str | None, rows: list[ProfileRecord], *, source: str = "local", host: str | None = None,
                attempts: int = 1) -> None:
    """Store the rows of one point (failures too: they are history, never served as cache)."""
    _store().add(rows, source=source, host=host, attempts=attempts, cache_key=key)


def clear_cache() -> int:
    """Measure every point again from now on (the stored rows stay as history); returns rows affected."""
    return _store().forget_cache()


# --- rows for points that produced no measurement ----------------------------------------------

def failure_rows(point: SweepPoint, status: str, message: str, *, device: str, device_name: str,
                 options: SweepOptions | None = None) -> list[ProfileRecord]:
    """The single row recording that ``point`` ended with ``status`` (oom, error, timeout) and why."""
    from xtlens.profiling.device import versions

    options = options or SweepOptions()
    vers = versions()
    wl = point.workload
    if point.cfg is not None:
        fields_ = base_fields(point.cfg, wl, config_name=point.config_name, measurement=point.what,
                              phase=_phase_label(options), device=device, device_name=device_name)
    else:
        fields_ = {
            "config_name": point.config_name, "config_json": point.config_json,
            "config_key": config_key(point.config_json),
            "measurement": point.what, "phase": _phase_label(options), "batch": wl.batch,
            "seq_len_tokens": wl.seq_len, "dtype": wl.dtype, "device": device, "device_name": device_name,
        }
    latency = point.what == "latency"
    return [ProfileRecord(
        **fields_, status=status, error=message, torch_version=vers["torch"],
        xtransformers_version=vers["x-transformers"], warmup=options.warmup if latency else None,
        repeats=options.repeats if latency else None, sdpa_backend=options.sdpa_backend if latency else None,
    )]


def _phase_label(options: SweepOptions) -> str:
    return ",".join(options.phases) if options.phases else "all"


# --- measuring -----------------------------------------------------------------------------------

FLOPS_PHASES: tuple[str, ...] = ("forward", "train_step")


def _phases_for(options: SweepOptions, supported: Sequence[str]) -> tuple[str, ...] | None:
    """The requested phases this measurement knows (None: its defaults; also when none of them apply)."""
    if options.phases is None:
        return None
    chosen = tuple(p for p in options.phases if p in supported)
    return chosen or None


def measure_flops_rows(cfg: ModelConfig, wl: Workload, *, phases: Sequence[str] = ("forward",),
                       config_name: str = "", device: str = "cpu",
                       progress: Progress | None = None) -> list[ProfileRecord]:
    """FLOP rows from ``profiling.flops``: one per phase (``forward``, ``train_step``).

    ``forward``: ``predicted_flops`` is ``core.cost_model``'s full-square forward; ``torch_counter_flops``
    is ``FlopCounterMode`` on the fake model; ``fvcore_macs`` / ``fvcore_flops`` are fvcore's totals (a
    traced forward up to 256 tokens, exact extrapolation from short traces beyond, see
    ``profiling.flops.cross_check``), which include layer norms and the rotary outer product;
    ``flops_rel_err`` is the largest relative disagreement of the two against the prediction.
    ``train_step``: ``FlopCounterMode`` over forward + backward of ``logits.sum()`` against
    ``train_step_flops_flash_recompute`` with SDPA (``attn_flash``), ``train_step_flops`` without (no fvcore: it traces forwards only). Counts do not depend on the device; the
    row records the device the sweep targets.
    """
    from xtlens.core.cost_model import flop_counts
    from xtlens.profiling.device import versions
    from xtlens.profiling.flops import cross_check, torch_flop_count

    vers = versions()
    provenance = {"torch_version": vers["torch"], "xtransformers_version": vers["x-transformers"]}
    name = resolve_device_name(device)[1]
    rows = []
    for i, phase in enumerate(phases):
        if progress is not None:
            progress(i / len(phases), f"counting {phase} FLOPs")
        fields_ = base_fields(cfg, wl, config_name=config_name, measurement="flops", phase=phase, device=device,
                              device_name=name)
        if phase == "forward":
            check = cross_check(cfg, wl)
            rows.append(ProfileRecord(
                **fields_, **provenance, predicted_flops=check.closed_form_flops,
                torch_counter_flops=check.torch_counter_flops, fvcore_macs=check.fvcore_macs,
                fvcore_flops=check.fvcore_flops, flops_rel_err=check.max_rel_err,
                method=(f"core.cost_model full square; FlopCounterMode under FakeTensorMode ({check.torch_elapsed_s:.2f} s); "
                        f"fvcore {check.fvcore_method} ({check.fvcore_elapsed_s:.2f} s, includes "
                        f"{check.fvcore_extra_flops:,} FLOPs of norms and rotary outer products)"),
            ))
        elif phase == "train_step":
            # SDPA's fused backward recomputes the attention scores (+0.5x the attention forward);
            # x-transformers' einsum path (attn_flash=False) does not
            counts = flop_counts(cfg, wl)
            variant = "train_step_flops_flash_recompute" if cfg.attn_flash else "train_step_flops"
            predicted = getattr(counts, variant)
            count = torch_flop_count(cfg, wl, train_step=True)
            rows.append(ProfileRecord(
                **fields_, **provenance, predicted_flops=predicted, torch_counter_flops=count.total_flops,
                flops_rel_err=rel_err(count.total_flops, predicted),
                method=(f"core.cost_model {variant}; FlopCounterMode under FakeTensorMode over forward + "
                        f"backward of logits.sum() ({count.elapsed_s:.2f} s)"),
            ))
        else:
            raise ConfigError("phases", phase, f"a FLOP phase: one of {', '.join(FLOPS_PHASES)}")
    return rows


def measure_point(what: str, cfg: ModelConfig, wl: Workload, *, device: str, options: SweepOptions,
                  config_name: str, progress: Progress | None = None) -> list[ProfileRecord]:
    """Measure one point with the real profilers (``profiling.flops`` / ``memory`` / ``latency``).

    ``options.phases`` is filtered to the phases each measurement knows; none left means its defaults.
    """
    if what == "flops":
        phases = _phases_for(options, FLOPS_PHASES) or ("forward",)
        return measure_flops_rows(cfg, wl, phases=phases, config_name=config_name, device=device, progress=progress)
    if what == "memory":
        from xtlens.profiling import memory

        kw = {}
        phases = _phases_for(options, memory.MEMORY_PHASES)
        if phases is not None:
            kw["phases"] = phases
        return list(memory.measure_memory(cfg, wl, device=device, config_name=config_name, **kw))
    if what == "latency":
        from xtlens.profiling import latency

        kw = {}
        phases = _phases_for(options, latency.PHASES)
        if phases is not None:
            kw["phases"] = phases
        return list(latency.measure_latency(cfg, wl, device=device, warmup=options.warmup, repeats=options.repeats,
                                            sdpa_backend=options.sdpa_backend, config_name=config_name,
                                            progress=progress, **kw))
    raise ConfigError("what", what, f"one of {', '.join(WHATS)}")


def run_point(point: SweepPoint, *, device: str, device_name: str, options: SweepOptions,
              measure: Measure = measure_point, progress: Progress | None = None,
              store: bool = True) -> tuple[list[ProfileRecord], bool]:
    """Measure one point, never raising: ``(rows, from_cache)``; failures become one status row.

    ``store=False`` neither reads nor writes the result store (a Ray task: its driver does both)."""
    from xtlens.profiling.errors import free_memory, is_oom

    if point.cfg is None:
        return failure_rows(point, "error", point.invalid or "invalid configuration", device=device,
                            device_name=device_name, options=options), False
    try:
        point.workload.check_against(point.cfg)
    except ConfigError as exc:
        return failure_rows(point, "error", str(exc), device=device, device_name=device_name, options=options), False
    key = _cache_key(point, device, device_name, options, _measure_id(measure)) if store else None
    if key is not None and options.use_cache:
        cached = cache_read(key)
        if cached:
            return cached, True
    status, message = "ok", ""
    rows: list[ProfileRecord] = []
    try:
        rows = list(measure(point.what, point.cfg, point.workload, device=device, options=options,
                            config_name=point.config_name, progress=progress))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a row; SystemExit from a profiler too
        status = "oom" if is_oom(exc) else "error"
        message = _message(exc, status)
        if exc.__traceback__ is not None:  # the frames hold the tensors of the failed attempt
            traceback.clear_frames(exc.__traceback__)
    if status != "ok":
        rows = []
        free_memory(device)
        rows = failure_rows(point, status, message, device=device, device_name=device_name, options=options)
    elif not rows:
        rows = failure_rows(point, "error", "the measurement returned no rows", device=device,
                            device_name=device_name, options=options)
    elif any(r.status == "oom" for r in rows):
        free_memory(device)
    if key is not None:
        from xtlens.profiling.store import StoreError

        try:
            cache_write(key, rows)
        except (StoreError, OSError):  # the CLI and the page report an unusable store; the rows are still returned
            pass
    return rows, False


def _message(exc: BaseException, status: str) -> str:
    from xtlens.profiling.errors import ProfileError, short_message

    if status == "oom":
        return f"Out of memory: {short_message(exc)}"
    if isinstance(exc, (ProfileError, ConfigError)):
        return str(exc)
    return f"{type(exc).__name__}: {short_message(exc)}"


@dataclass(kw_only=True)
class _OomTracker:
    hit: dict[tuple[str, str, str], list[Workload]] = field(default_factory=dict)

    def blocked_by(self, point: SweepPoint) -> Workload | None:
        for wl in self.hit.get((point.config_json, point.what, point.workload.dtype), []):
            if point.workload.batch >= wl.batch and point.workload.seq_len >= wl.seq_len:
                return wl
        return None

    def add(self, point: SweepPoint) -> None:
        self.hit.setdefault((point.config_json, point.what, point.workload.dtype), []).append(point.workload)


def run_sweep(configs: ModelConfig | ConfigGrid | Iterable[ModelConfig | tuple[str, ModelConfig]],
              workloads: Iterable[Workload] | None = None, *, what: Iterable[str] | str = ("flops",),
              options: SweepOptions | None = None, progress: Progress | None = None,
              measure: Measure = measure_point,
              on_rows: Callable[[int, SweepPoint, list[ProfileRecord]], None] | None = None) -> list[ProfileRecord]:
    """Run every point of the sweep; returns all rows (see the module docstring for failures).

    ``workloads`` defaults to batch 1, float32, sequence lengths 128..8192 (clipped to nothing: a length
    above a model's ``max_seq_len`` gives an error row). ``progress(fraction, message)`` is called before
    each point, during latency repeats and with 1.0 at the end; ``on_rows(index, point, rows)`` after
    each point (the worker streams rows with it).
    """
    options = options or SweepOptions()
    wls = list(workloads) if workloads is not None else seq_len_workloads()
    points = plan_sweep(configs, wls, what)
    total = max(len(points), 1)
    device, device_name = resolve_device_name(options.device)  # once per sweep: auto becomes cuda or cpu
    oom = _OomTracker()
    out: list[ProfileRecord] = []
    for i, point in enumerate(points):
        if progress is not None:
            progress(i / total, f"{i + 1}/{len(points)} {point.describe()}")

        def inner(fraction: float, message: str, _i: int = i) -> None:
            if progress is not None:
                progress((_i + min(max(fraction, 0.0), 1.0)) / total, f"{_i + 1}/{len(points)} {message}")

        runnable = point.cfg is not None and point.workload.seq_len <= point.cfg.max_seq_len
        blocker = oom.blocked_by(point) if options.skip_after_oom and runnable else None
        if blocker is not None:
            rows = failure_rows(point, "oom", f"skipped: batch={blocker.batch} seq_len={blocker.seq_len} already ran "
                                "out of memory", device=device, device_name=device_name, options=options)
        else:
            rows, _cached = run_point(point, device=device, device_name=device_name, options=options,
                                      measure=measure, progress=inner)
            if any(r.status == "oom" for r in rows):
                oom.add(point)
        out.extend(rows)
        if on_rows is not None:
            on_rows(i, point, rows)
    if progress is not None:
        progress(1.0, f"done: {len(points)} point(s), {sum(r.status != 'ok' for r in out)} failed row(s)")
    return out

