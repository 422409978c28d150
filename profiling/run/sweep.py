"""Sweeps: run flops / memory / latency measurements over sequence lengths, batch sizes and config grids.

A sweep is a plan of points, one per (configuration, what, workload), run in that order (for each
configuration and measurement, batch sizes then sequence lengths ascending). Every point gives at
least one ``ProfileRecord`` row, whatever happens:

* a configuration of a grid that does not validate gives rows with ``status="error"`` and the
  validation message (``config_json`` then holds the keywords that were tried, not a valid config);
* a workload the model cannot take (``seq_len > max_seq_len``) gives an ``error`` row;
* on the CPU, a point predicted to need more than the machine's available memory is not tried: an ``oom``
  row gives the predicted need, the available memory and the part that does not fit
  (``profiling.run.limits.refusal``; the worker's parent refuses such points before it starts the child);
* out-of-memory anywhere in a measurement gives an ``oom`` row, the memory is freed (``gc`` and the
  CUDA caching allocator) and the sweep continues; with ``skip_after_oom`` the larger workloads of the
  same configuration and measurement are recorded as ``oom`` without being tried;
* any other exception gives an ``error`` row with its message (no traceback).

Every measured point's rows (failures too) are stored in the SQLite result store
(``profiling.results.store``: ``$XTLENS_DB`` or ``results.sqlite`` in the ``.xtlens-cache`` folder, which is
``$XTLENS_CACHE_DIR`` when set), under a cache key made of the configuration, the workload, the device
(and its name), the measurement, the torch and x-transformers versions and the measurement options
(warm-up, repeats, phases, SDPA backend) and, for a measurement function other than ``measure_point``
(a test fake), that function's name. A repeated sweep reads a point back instead of measuring when its
latest stored rows are all ``ok`` (``use_cache=False`` measures again; the rows are stored anyway).
The pre-SQLite cache (one JSON file per point under ``.xtlens-cache/results/``) is imported into the
store once, then left alone.

The measurement itself is a function ``measure(what, cfg, wl, *, device, options, config_name,
progress) -> list[ProfileRecord]``; the default, ``measure_point``, calls ``profiling.measure.flops``,
``profiling.measure.memory`` and ``profiling.measure.latency``. Tests and the worker may pass another.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from xtlens.core.config import ConfigError, ModelConfig, Workload
from xtlens.profiling.errors import failure_message, failure_row, free_memory, release
from xtlens.profiling.results.records import (
    ProfileRecord,
    base_fields,
    config_key,
    measurement_of,
)
from xtlens.profiling.run.device import resolve, versions
from xtlens.profiling.run.limits import machine_available_bytes, refusal
from xtlens.profiling.run.measure import Measure, Progress, measure_point
from xtlens.profiling.run.plan import (
    ConfigGrid,
    SweepOptions,
    SweepPoint,
    phase_label,
    plan_sweep,
    seq_len_workloads,
)

__all__ = [
    "run_sweep",
    "run_points",
    "run_point",
    "failure_rows",
    "cache_root",
    "cache_path",
    "cache_key",
    "cache_read",
    "cache_write",
    "clear_cache",
]


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
    from xtlens.profiling.run.device import versions

    wl = point.workload
    payload = {
        "config": json.loads(point.config_json),
        "workload": wl.to_dict(),
        "device": device,
        "device_name": device_name,
        "what": point.what,
        "config_name": point.config_name,  # rows carry the name: --name B must not get rows labelled A
        "versions": versions(),
        "warmup": options.warmup,
        "repeats": options.repeats,
        "phases": list(options.phases) if options.phases is not None else None,
        "sdpa_backend": options.sdpa_backend,
    }
    if options.attention is not None:  # what-if implementations (absent otherwise: older keys stay valid)
        payload["attention"] = list(options.attention)
    if options.per_layer:
        payload["per_layer"] = True
    if measure_id is not None:  # another measurement function (a test fake): never share its entries
        payload["measure"] = measure_id
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def cache_path(point: SweepPoint, device: str, device_name: str, options: SweepOptions,
               measure_id: str | None = None) -> Path:
    """Where the pre-SQLite cache kept this point (read once by ``profiling.results.store``, never written now)."""
    return cache_root() / point.what / f"{_cache_key(point, device, device_name, options, measure_id)}.json"


def _measure_id(measure: Measure) -> str | None:
    if measure is measure_point:
        return None
    module = getattr(measure, "__module__", None) or type(measure).__module__
    name = getattr(measure, "__qualname__", None) or type(measure).__qualname__
    return f"{module}.{name}"


def _store():
    """The result store, after importing the old JSON cache folder once (``profiling.results.store``)."""
    from xtlens.profiling.results.store import open_store

    store = open_store()
    store.import_json_cache(cache_root())
    return store


class _SweepStore:
    """The result store of one sweep: opened (and the old JSON cache looked for) at its first use, then the
    same object for every point; an unusable store is tried again at the next use."""

    def __init__(self) -> None:
        self._store = None

    def __call__(self):
        if self._store is None:
            self._store = _store()
        return self._store


def cache_read(key: str, *, store=None) -> list[ProfileRecord] | None:
    """The stored rows of the point ``key`` when its latest run is all ``ok`` (else None). ``store``: a
    callable giving the result store (default: open it)."""
    try:
        return (store or _store)().cached(key)
    except Exception:  # noqa: BLE001 - an unusable store (StoreError: the CLI and page say why) must not fail a measurement
        return None


def cache_write(key: str | None, rows: list[ProfileRecord], *, source: str = "local", host: str | None = None,
                attempts: int = 1, store=None) -> None:
    """Store the rows of one point (failures too: they are history, never served as cache). ``store``: as
    for ``cache_read``. When the store cannot take them (``StoreError``: disk full, read-only, locked), the
    rows are kept in the spool (``profiling.results.store.spool_rows``) and a ``StoreError`` naming the
    spool file is raised."""
    from xtlens.profiling.results.store import StoreError, db_path, spool_rows

    opened = None
    try:
        opened = (store or _store)()
        opened.add(rows, source=source, host=host, attempts=attempts, cache_key=key)
    except StoreError as exc:
        raise spool_rows(rows, exc, store_path=opened.path if opened is not None else db_path(), source=source,
                         host=host, attempts=attempts, cache_key=key) from None


def clear_cache() -> int:
    """Measure every point again from now on (the stored rows stay as history); returns rows affected."""
    return _store().forget_cache()


# --- rows for points that produced no measurement ----------------------------------------------

def failure_rows(point: SweepPoint, status: str, message: str, *, device: str, device_name: str,
                 options: SweepOptions | None = None) -> list[ProfileRecord]:
    """The single row recording that ``point`` ended with ``status`` (oom, error, timeout) and why."""
    options = options or SweepOptions()
    vers = versions()
    wl = point.workload
    measurement = measurement_of(point.what)
    if point.cfg is not None:
        identity = base_fields(point.cfg, wl, config_name=point.config_name, measurement=measurement,
                               phase=phase_label(options), device=device, device_name=device_name)
    else:  # an invalid grid combination: its keywords, not a valid config
        identity = {
            "config_name": point.config_name, "config_json": point.config_json,
            "config_key": config_key(point.config_json),
            "measurement": measurement, "phase": phase_label(options), "batch": wl.batch,
            "seq_len_tokens": wl.seq_len, "dtype": wl.dtype, "device": device, "device_name": device_name,
        }
    latency = point.what == "latency"
    return [failure_row(
        identity=identity, status=status, message=message, torch_version=vers["torch"],
        xtransformers_version=vers["x-transformers"], warmup=options.warmup if latency else None,
        repeats=options.repeats if latency else None, sdpa_backend=options.sdpa_backend if latency else None,
    )]


# --- running -------------------------------------------------------------------------------------

def run_point(point: SweepPoint, *, device: str, device_name: str, options: SweepOptions,
              measure: Measure = measure_point, progress: Progress | None = None,
              store: bool = True, results=None,
              on_store_error: Callable[[Exception], None] | None = None) -> tuple[list[ProfileRecord], bool]:
    """Measure one point, never raising: ``(rows, from_cache)``; failures become one status row.

    ``store=False`` neither reads nor writes the result store (a Ray task: its driver does both).
    ``results``: a callable giving the result store (a sweep opens it once for all its points).
    ``on_store_error(error)``: called when the rows could not be stored (they are in the spool, the error's
    message says where); by default a warning is logged."""
    if point.cfg is None:
        return failure_rows(point, "error", point.invalid or "invalid configuration", device=device,
                            device_name=device_name, options=options), False
    try:
        point.workload.check_against(point.cfg)
    except ConfigError as exc:
        return failure_rows(point, "error", str(exc), device=device, device_name=device_name, options=options), False
    key = _cache_key(point, device, device_name, options, _measure_id(measure)) if store else None
    if key is not None and options.use_cache:
        cached = cache_read(key, store=results)
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
        status, message = failure_message(exc, what=f"the {point.what} measurement", device_name=device_name, cfg=point.cfg,
                                          wl=point.workload)
        release(exc, device)  # the frames hold the tensors of the failed attempt
        rows = failure_rows(point, status, message, device=device, device_name=device_name, options=options)
    if not rows:
        rows = failure_rows(point, "error", "the measurement returned no rows", device=device,
                            device_name=device_name, options=options)
    elif status == "ok" and any(r.status == "oom" for r in rows):
        free_memory(device)
    if key is not None:
        from xtlens.profiling.results.store import StoreError

        try:
            cache_write(key, rows, store=results)
        except StoreError as exc:  # kept in the spool; the caller says so (the CLI exits 2 after writing --out)
            if on_store_error is not None:
                on_store_error(exc)
            else:
                import logging

                logging.getLogger(__name__).warning("%s", exc)
        except (OSError, ValueError, TypeError, OverflowError):
            pass  # a row the store cannot hold: nothing is cached, the rows are still returned
    return rows, False


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
              on_rows: Callable[[int, SweepPoint, list[ProfileRecord]], None] | None = None,
              on_store_error: Callable[[Exception], None] | None = None) -> list[ProfileRecord]:
    """Run every point of the sweep; returns all rows (see the module docstring for failures).
    ``on_store_error``: see ``run_point``.

    ``workloads`` defaults to batch 1, float32, sequence lengths 128..8192 (clipped to nothing: a length
    above a model's ``max_seq_len`` gives an error row). ``progress(fraction, message)`` is called before
    each point, during latency repeats and with 1.0 at the end; ``on_rows(index, point, rows)`` after
    each point (the worker streams rows with it).
    """
    wls = list(workloads) if workloads is not None else seq_len_workloads()
    return run_points(plan_sweep(configs, wls, what), options=options, progress=progress, measure=measure,
                      on_rows=on_rows, on_store_error=on_store_error)


def run_points(points: list[SweepPoint], *, options: SweepOptions | None = None, progress: Progress | None = None,
               measure: Measure = measure_point,
               on_rows: Callable[[int, SweepPoint, list[ProfileRecord]], None] | None = None,
               on_store_error: Callable[[Exception], None] | None = None) -> list[ProfileRecord]:
    """``run_sweep`` on a plan already made (``plan.plan_sweep``; the worker's child makes it once, for its
    memory limit and for the sweep). The result store is opened once for all the points."""
    options = options or SweepOptions()
    total = max(len(points), 1)
    device, device_name = resolve(options.device)  # once per sweep: auto becomes cuda or cpu
    results = _SweepStore()
    oom = _OomTracker()
    out: list[ProfileRecord] = []
    available = machine_available_bytes() if device == "cpu" else None  # for the refusal (profiling.run.limits)
    for i, point in enumerate(points):
        if progress is not None:
            progress(i / total, f"{i + 1}/{len(points)} {point.describe()}")

        def inner(fraction: float, message: str, _i: int = i) -> None:
            if progress is not None:
                progress((_i + min(max(fraction, 0.0), 1.0)) / total, f"{_i + 1}/{len(points)} {message}")

        runnable = point.cfg is not None and point.workload.seq_len <= point.cfg.max_seq_len
        blocker = oom.blocked_by(point) if options.skip_after_oom and runnable else None
        refused = refusal(point.cfg, point.workload, point.what, options.phases, available=available) \
            if runnable and point.cfg is not None else None
        if blocker is not None:
            rows = failure_rows(point, "oom", f"skipped: batch={blocker.batch} seq_len={blocker.seq_len} already ran "
                                "out of memory", device=device, device_name=device_name, options=options)
        elif refused is not None:  # predicted not to fit in this machine's memory: never tried
            rows = failure_rows(point, "oom", refused, device=device, device_name=device_name, options=options)
        else:
            rows, _cached = run_point(point, device=device, device_name=device_name, options=options,
                                      measure=measure, progress=inner, results=results,
                                      on_store_error=on_store_error)
            if any(r.status == "oom" for r in rows):
                oom.add(point)
        out.extend(rows)
        if on_rows is not None:
            on_rows(i, point, rows)
    if progress is not None:
        progress(1.0, f"done: {len(points)} point(s), {sum(r.status != 'ok' for r in out)} failed row(s)")
    return out

