"""Where measurement jobs run: one interface, two engines.

An *executor* turns a ``profiling.run.worker.JobSpec`` (what, configurations, workloads, options) into a
*job*: an object the page and the CLI poll without blocking (``start()``, ``progress()``, ``done()``,
``outcome``, ``result()``, ``cancel()``, ``wait()``, ``elapsed_s``). Whatever happens, every planned
point ends with at least one row, and every measured row lands in the result store
(``profiling.results.store``).

* ``LocalExecutor`` (the default: nothing to install or start): ``profiling.run.worker.Job``, one child
  process on this machine that measures the points one after the other.
* ``RayExecutor(address)``: one Ray task per point, on a Ray cluster (``address`` is ``host:port``,
  ``ray://host:10001`` or ``auto`` = ``$RAY_ADDRESS`` or the cluster started on this machine by
  ``ray start``). A CUDA point asks for ``num_gpus=1`` (device ``auto`` means CUDA when the cluster has
  GPUs), so points run in parallel across the cluster's GPUs (CPU points: one CPU each). Rows carry the
  device name the worker saw and the store records the node's host name. Progress advances as points
  finish, in whatever order they finish. ``cancel()`` cancels the tasks not finished yet (their points
  say "cancelled"). A worker process that dies (killed, crashed, or stopped by Ray's out-of-memory
  monitor) is retried once; a second death gives the point an ``error`` (``oom`` for Ray's memory
  monitor) row saying so, and the other points go on. A retried point is stored with ``attempts=2``
  and its rows' ``method`` says so.

  The code reaches the workers through Ray's runtime environment: this machine's ``xtlens.core`` and
  ``xtlens.profiling`` are uploaded as ``py_modules`` with every job, so the cluster only needs Python
  with torch, x-transformers, fvcore, einops and pandas (or ``pip_deps=True`` / ``XTLENS_RAY_PIP=1``:
  Ray installs those, except torch, into the runtime environment). Ray's own automatic retries are off
  (``max_retries=0``): the driver retries, so it can record it.

  A probe (``profiling.benefit.jobs.ProbeSpec``) runs through the same engines: its spec names its job
  classes (``ProbeJob``, ``ProbeRayJob``), and on Ray each training run (configuration point and seed) is
  one task.

  Unlike the local engine, a Ray sweep does not skip the larger workloads after an out-of-memory point
  (they run at the same time); each gets its own row.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from xtlens.profiling.errors import ProfileError
from xtlens.profiling.results.records import ProfileRecord
from xtlens.profiling.run.plan import SweepOptions, SweepPoint
from xtlens.profiling.run.sweep import (
    cache_key,
    cache_read,
    cache_write,
    failure_rows,
    run_point,
)
from xtlens.profiling.run.worker import Job, JobSpec, JobState, load_measure

__all__ = ["Executor", "LocalExecutor", "RayExecutor", "RayJob", "executor_for", "describe", "RayUnavailable",
           "remote_function", "task_place"]

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds core/ and profiling/
_PIP_DEPS = ["x-transformers>=2.31,<2.32", "einops>=0.8", "fvcore>=0.1.5.post20221221", "pandas>=2.0", "pyarrow>=14"]


class RayUnavailable(ProfileError):
    """Ray is not installed, or the cluster cannot be reached (the message says which and what to do)."""


class Executor(Protocol):
    name: str

    def job(self, spec: JobSpec) -> Any:
        """A job for ``spec``, not started yet (``.start()`` runs it)."""

    def describe(self) -> str: ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class LocalExecutor:
    """A child process on this machine (``profiling.run.worker.Job``)."""

    python: str | None = None
    name: str = "local"

    def job(self, spec: JobSpec) -> Job:
        cls = getattr(spec, "local_job_class", None) or Job  # a probe's spec asks for its own (ProbeJob)
        return cls(spec, python=self.python, start=False)

    def describe(self) -> str:
        return "this machine"


@dataclasses.dataclass(frozen=True, kw_only=True)
class RayExecutor:
    """One Ray task per point on the cluster at ``address`` (see the module docstring)."""

    address: str
    pip_deps: bool = False
    name: str = "ray"

    def job(self, spec: JobSpec) -> RayJob:
        cls = getattr(spec, "ray_job_class", None) or RayJob  # a probe's spec asks for its own (ProbeRayJob)
        return cls(spec, self, start=False)

    def describe(self) -> str:
        return f"Ray cluster at {self.address}"


def executor_for(ray_address: str | None, *, python: str | None = None) -> Executor:
    """``LocalExecutor`` for None or ``""``, else ``RayExecutor(ray_address)``."""
    address = (ray_address or "").strip()
    if not address or address in ("local", "this machine"):
        return LocalExecutor(python=python)
    return RayExecutor(address=address, pip_deps=os.environ.get("XTLENS_RAY_PIP", "") not in ("", "0"))


# --- connecting ------------------------------------------------------------------------------------------

_CONNECT_LOCK = threading.Lock()
_CONNECTED: dict[str, Any] = {}


def _import_ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailable("Ray is not installed in this Python: pip install 'xtlens[ray]' (or pip install "
                             "'ray[default]')") from None
    return ray


def runtime_env(*, pip_deps: bool = False) -> dict[str, Any]:
    """Ray runtime environment that ships this checkout's ``xtlens.core`` and ``xtlens.profiling``."""
    staged = _staged_package()
    env: dict[str, Any] = {"py_modules": [str(staged)], "env_vars": {"PYTHONUNBUFFERED": "1"}}
    if pip_deps:
        env["pip"] = list(_PIP_DEPS)
    return env


_STAGED: list[Path] = []


def _staged_package() -> Path:
    """A folder ``xtlens/`` holding copies of core/ and profiling/ (the installed layout), made once."""
    if _STAGED and _STAGED[0].exists():
        return _STAGED[0]
    top = Path(tempfile.mkdtemp(prefix="xtlens-ray-")) / "xtlens"
    atexit.register(shutil.rmtree, top.parent, True)
    for name in ("core", "profiling"):
        shutil.copytree(_PACKAGE_ROOT / name, top / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _STAGED[:] = [top]
    return top


def _check_reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail in seconds, not minutes, when nothing listens at ``host:port`` (ray.init retries for long)."""
    target = address.removeprefix("ray://")
    if address == "auto" or ":" not in target:
        return
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise RayUnavailable(f"could not connect to the Ray cluster at {address}: nothing answers there ({reason}); "
                             "start it with `ray start --head` or check the address") from None


def connect(address: str, *, pip_deps: bool = False):
    """``ray`` connected to ``address`` (reconnecting when another address was in use). Thread-safe."""
    ray = _import_ray()
    with _CONNECT_LOCK:
        if not (ray.is_initialized() and _CONNECTED.get("address") == (address, pip_deps)):
            _check_reachable(address)
        if ray.is_initialized() and _CONNECTED.get("address") == (address, pip_deps):
            return ray
        if ray.is_initialized():
            ray.shutdown()
        _CONNECTED.clear()
        try:
            ray.init(address=address, runtime_env=runtime_env(pip_deps=pip_deps), namespace="xtlens",
                     log_to_driver=False, logging_level="ERROR", configure_logging=True)
        except Exception as exc:  # noqa: BLE001 - ConnectionError, ValueError, RuntimeError, ...
            raise RayUnavailable(f"could not connect to the Ray cluster at {address}: {type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")) from None
        _CONNECTED["address"] = (address, pip_deps)
        return ray


def describe(address: str) -> dict[str, Any]:
    """Nodes, CPUs and GPUs of the cluster at ``address`` (connects if needed)."""
    ray = connect(address)
    resources = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return {"address": address, "nodes": len(nodes), "cpus": float(resources.get("CPU", 0)),
            "gpus": float(resources.get("GPU", 0)),
            "hosts": sorted({str(n.get("NodeManagerHostname") or n.get("NodeManagerAddress")) for n in nodes})}


# --- the remote side -------------------------------------------------------------------------------------

def task_place(device: str) -> dict[str, Any]:
    """Where a Ray task runs: its resolved device and device name, host, process id and versions."""
    from xtlens.profiling.run.device import resolve as resolve_device_name
    from xtlens.profiling.run.device import versions

    resolved, name = resolve_device_name(device)
    return {"device": resolved, "device_name": name, "host": socket.gethostname(), "pid": str(os.getpid()),
            "versions": versions()}


def _measure_on_worker(point: SweepPoint, device: str, options: SweepOptions, measure_ref: str | None) -> dict[str, Any]:
    """Runs in a Ray worker: one point, never raising (failures are rows), nothing stored there."""
    from xtlens.profiling.run.measure import measure_point

    where = task_place(device)
    measure = load_measure(measure_ref) if measure_ref else measure_point
    rows, _ = run_point(point, device=where["device"], device_name=where["device_name"], options=options,
                        measure=measure, store=False)
    return {**where, "rows": [r.to_dict() for r in rows]}


_REMOTE: dict[str, Any] = {}


def remote_function(ray, name: str, fn: Any = None):
    """The Ray remote function ``name`` (``probe``: where a task runs; ``point``: one sweep point; another name:
    ``fn``, e.g. ``profiling.benefit.jobs``'s training run), made once per process."""
    if name not in _REMOTE:
        fn = fn or {"probe": task_place, "point": _measure_on_worker}[name]
        _REMOTE[name] = ray.remote(max_retries=0)(fn)
    return _REMOTE[name]


# --- a job on Ray ----------------------------------------------------------------------------------------

class RayJob(JobState):
    """A sweep as Ray tasks, driven by a thread of this process. Same polling API as ``worker.Job``.

    What a point is and how its rows are made, cached and stored are the hooks below (``_prepare``,
    ``_immediate``, ``_submit``, ``_accept``, ``_give_up``, ``_failure``, ``_describe``); connecting, the
    device, submitting, waiting, retrying a dead worker once, cancel and the time limit are this class's.
    ``profiling.benefit.jobs.ProbeRayJob`` runs a probe's training runs through the same driver.
    """

    def __init__(self, spec: JobSpec, executor: RayExecutor, *, start: bool = True):
        self.spec = spec
        self.executor = executor
        self.key = spec.key()
        self._points = spec.points()
        self._lock = threading.RLock()
        self._rows: dict[int, list[ProfileRecord]] = {}
        self._fraction = 0.0
        self._message = "waiting to start"
        self._started_at: float | None = None
        self._finished_at: float | None = None
        self._ended: str | None = None
        self._final: list[ProfileRecord] | None = None
        self._cancel = threading.Event()
        self._exit_callbacks: list[Any] = []
        self._stderr = ""
        self.retried: dict[int, str] = {}
        self.hosts: set[str] = set()
        self.store_failures: list[str] = []  # rows the driver could not store (kept in the spool each message names)
        if start:
            self.start()

    @property
    def started(self) -> bool:
        return self._started_at is not None

    def start(self) -> RayJob:
        with self._lock:
            if self._started_at is not None or self._ended is not None:
                return self
            self._started_at = time.monotonic()
            self._message = f"connecting to the Ray cluster at {self.executor.address}"
        threading.Thread(target=self._run, name=f"xtlens-ray-{self.key}", daemon=True).start()
        return self

    # --- the driver thread ---

    def _run(self) -> None:
        try:
            self._drive()
        except Exception as exc:  # noqa: BLE001 - every point still gets a row
            self._stderr = f"{type(exc).__name__}: {exc}"
            self._finish("crashed", f"{type(exc).__name__}: {exc}")
        for callback in list(self._exit_callbacks):
            callback(self)

    def _resources(self, ray) -> tuple[str, float]:
        """(device for the task, GPUs per task) from the asked device and the cluster's resources."""
        asked = self.spec.options.device
        gpus = float(ray.cluster_resources().get("GPU", 0))
        if asked.startswith("cuda") or (asked == "auto" and gpus > 0):
            if gpus <= 0:
                raise RayUnavailable(f"the Ray cluster at {self.executor.address} has no GPU, so device {asked!r} "
                                     "cannot run there (use device cpu or auto)")
            return "cuda", 1.0  # Ray gives the task one GPU, visible to it as cuda:0
        return "cpu", 0.0

    # --- the hooks (a sweep's points; a probe overrides them) ---

    def _prepare(self, ray, device: str) -> None:
        """Before any point is submitted: what the points share (here the measure function and options)."""
        from xtlens.profiling.run.measure import measure_point

        self._measure = load_measure(self.spec.measure) if self.spec.measure else measure_point
        self._remote_opts = dataclasses.replace(self.spec.options, device=device)

    def _immediate(self, i: int, point: Any) -> list | None:
        """Rows for a point that needs no worker (cannot run, or in the result store), else None."""
        probe = self._probe
        runnable = point.cfg is not None and point.workload.seq_len <= point.cfg.max_seq_len
        if not runnable:  # no worker needed: the failure row says why
            return run_point(point, device=probe["device"], device_name=probe["device_name"],
                             options=self._remote_opts, store=False)[0]
        if self.spec.options.use_cache:
            return cache_read(cache_key(point, probe["device"], probe["device_name"], self._remote_opts,
                                        self._measure)) or None
        return None

    def _submit(self, ray, opts: dict[str, Any], device: str, point: Any):
        return remote_function(ray, "point").options(**opts).remote(point, device, self._remote_opts, self.spec.measure)

    def _accept(self, i: int, point: Any, out: dict[str, Any], attempts: int) -> list:
        """The rows of a finished task, stored (``attempts`` 2: the point was retried once)."""
        rows = [ProfileRecord(**r) for r in out["rows"]]
        if i in self.retried:
            note = f"Ray: attempt 2 on {out['host']}; attempt 1 failed: {self.retried[i]}"
            rows = [dataclasses.replace(r, method=f"{r.method}; {note}" if r.method else note) for r in rows]
        key = cache_key(point, out["device"], out["device_name"], self._remote_opts, self._measure)
        self._store(key, rows, source="ray", host=out["host"], attempts=attempts)
        return rows

    def _store(self, key: str | None, rows: list, **provenance: Any) -> None:
        """``cache_write``; rows the store cannot take are spooled and the message kept in ``store_failures``."""
        from xtlens.profiling.results.store import StoreError

        try:
            cache_write(key, rows, **provenance)
        except StoreError as exc:
            self.store_failures.append(str(exc))

    def _give_up(self, i: int, point: Any, status: str, message: str) -> list:
        """The rows of a point whose worker died twice (stored as history, never served as cache)."""
        rows = failure_rows(point, status, message, device=self._probe["device"],
                            device_name=self._probe["device_name"], options=self._remote_opts)
        self._store(None, rows, source="ray", host="", attempts=2)
        return rows

    def _failure(self, point: Any, status: str, message: str, device: str, device_name: str) -> list:
        """A row for a point that did not finish (cancelled, time limit, the driver failed)."""
        return failure_rows(point, status, message, device=device, device_name=device_name, options=self.spec.options)

    def _describe(self, point: Any) -> str:
        return point.describe()

    # --- the driver ---

    def _drive(self) -> None:
        try:
            ray = connect(self.executor.address, pip_deps=self.executor.pip_deps)
            device, gpus = self._resources(ray)
        except RayUnavailable as exc:
            self._finish("crashed", str(exc))
            return
        opts = dict(num_gpus=gpus, num_cpus=0 if gpus else 1)
        self._set_progress(0.0, "asking the cluster which device it has")
        self._probe = ray.get(remote_function(ray, "probe").options(**opts).remote(device))
        self._prepare(ray, device)
        pending: dict[Any, int] = {}
        attempts: dict[int, int] = {}
        total = max(len(self._points), 1)
        for i, point in enumerate(self._points):
            rows = self._immediate(i, point)
            if rows is not None:
                self._rows[i] = rows
                continue
            pending[self._submit(ray, opts, device, point)] = i
            attempts[i] = 1
        self._set_progress(len(self._rows) / total, f"{len(pending)} task(s) submitted, {len(self._rows)} from the "
                           "result store")
        limit = self.spec.time_limit_s
        while pending:
            if self._cancel.is_set() or (limit is not None and time.monotonic() - self._started_at > limit):
                reason = "cancelled" if self._cancel.is_set() else "timeout"
                for ref in pending:
                    ray.cancel(ref, force=True)
                self._finish(reason, "")
                return
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.2)
            for ref in ready:
                i = pending.pop(ref)
                point = self._points[i]
                where = ""
                try:
                    out = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a dead worker, Ray's OOM killer, a lost node
                    why = _ray_failure(exc)
                    if attempts[i] == 1:
                        self.retried[i] = why
                        attempts[i] = 2
                        pending[self._submit(ray, opts, device, point)] = i
                        self._set_progress(len(self._rows) / total, f"retrying {self._describe(point)}: {why}")
                        continue
                    status = "oom" if type(exc).__name__ == "OutOfMemoryError" else "error"
                    self._rows[i] = self._give_up(i, point, status, f"the Ray worker failed twice (retried once): "
                                                  f"first {self.retried[i]}; then {why}")
                else:
                    self._rows[i] = self._accept(i, point, out, attempts[i])
                    self.hosts.add(out["host"])
                    where = f" on {out['host']}"
                self._set_progress(len(self._rows) / total,
                                   f"{len(self._rows)}/{len(self._points)} done: {self._describe(point)}{where}")
        self._finish("finished", "")

    def _set_progress(self, fraction: float, message: str) -> None:
        with self._lock:
            self._fraction = max(self._fraction, min(fraction, 1.0))
            self._message = message

    def _finish(self, outcome: str, why: str) -> None:
        with self._lock:
            if self._final is not None:
                return
            rows: list[ProfileRecord] = []
            first = True
            device = getattr(self, "_probe", {}).get("device", self.spec.options.device)
            name = getattr(self, "_probe", {}).get("device_name", f"Ray cluster at {self.executor.address}")
            for i, point in enumerate(self._points):
                if i in self._rows:
                    rows.extend(self._rows[i])
                    continue
                if outcome == "cancelled":
                    status, message = "error", "cancelled before this point finished"
                elif outcome == "timeout":
                    limit = self.spec.time_limit_s
                    status = "timeout"
                    message = (f"not finished within the job's time limit of {limit:g} s (its Ray task was cancelled)"
                               if first else f"not finished: the job hit its time limit of {limit:g} s")
                else:
                    status, message = "error", why or "the Ray driver ended without measuring this point"
                first = False
                rows.extend(self._failure(point, status, message, device, name))
            self._final = rows
            self._ended = outcome
            self._finished_at = time.monotonic()
            self._fraction = 1.0
            if outcome == "finished":
                self._message = f"done: {len(self._points)} point(s) on {self.executor.describe()}"
            elif outcome == "timeout":
                self._message = f"stopped at the time limit of {self.spec.time_limit_s:g} s"
            else:
                self._message = "cancelled" if outcome == "cancelled" else f"failed: {why}"

    # --- the page's API: profiling.run.worker.JobState's, plus ---

    def cancel(self) -> None:
        """Cancel the tasks not finished yet (finished points keep their rows)."""
        if not self.started:
            self._finish("cancelled", "")
            return
        self._cancel.set()
        deadline = time.monotonic() + 30
        while not self.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self.done():
            self._finish("cancelled", "")

    def stderr_tail(self) -> str:
        return self._stderr

    def __repr__(self) -> str:
        return f"RayJob({self.key}, {self.outcome}, {len(self._points)} point(s) on {self.executor.address})"


def _ray_failure(exc: BaseException) -> str:
    """A one-line reason for a failed Ray task (no traceback)."""
    kind = type(exc).__name__
    text = str(exc)
    if kind == "OutOfMemoryError":
        return "Ray's memory monitor stopped the worker (the node ran out of memory)"
    if kind in ("WorkerCrashedError", "ActorDiedError", "LocalRayletDiedError", "NodeDiedError"):
        return "the worker process died (killed or crashed)"
    if kind == "TaskCancelledError":
        return "the task was cancelled"
    first = next((line for line in text.splitlines() if line.strip()), "")
    return f"{kind}: {first[:200]}"
