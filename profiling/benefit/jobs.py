"""Probes run like every other measurement: in a child process through ``profiling.run.worker``'s machinery
(progress, Cancel, a time limit), or as Ray tasks through ``profiling.run.executor``'s (one task per training run).

``ProbeJob`` is a ``profiling.run.worker.Job`` whose child is this module (``python -m
xtlens.profiling.benefit.jobs JOB_DIR``): it runs ``probes.run_probe`` and writes the same events
(``start``, ``progress`` with step and loss, ``rows`` per finished run, ``fatal``, ``done``). Everything else
is the worker's: the watchdog kills the child's process group at the time limit, ``cancel()`` kills it now,
a crash becomes rows. Every planned run ends with rows: the finished runs' own, ``timeout`` / ``cancelled`` /
``error`` for the rest. Finished runs are stored in the result store (``probe_store``), so a repeat (or a
probe that a time limit cut short, restarted) is served from there (rows ``source="cache"``) unless the
spec says ``use_cache=False`` (``--fresh``, the page's Measure again).

``ProbeRayJob`` is a ``profiling.run.executor.RayJob`` whose points are the probe's training runs (one per
configuration point and seed): the driver tokenises the corpus once and puts it in Ray's object store,
serves stored runs from the result store, submits the rest as Ray tasks (``probes.run_or_failure`` on the
worker) and stores what they return (``source`` ``ray``, the worker's host). Retry of a dead worker, Cancel
and the time limit are the executor's. ``executor_for(address).job(ProbeSpec(...))`` picks the local or the
Ray job.

Probe jobs are managed like measurement jobs, by ``profiling.run.worker.JobManager`` (``submit_spec(ProbeSpec(...),
owner=...)``): keyed by the probe's options (configuration, probe, sizes, budget, seeds, corpus, device), so
submitting the same probe again returns the running or finished job; owned (only an owner sees or cancels a job,
a shared run ends when its last owner lets go); at most ``max_per_owner`` unfinished jobs per owner.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xtlens.profiling.benefit.probes import ProbeOptions, failure_rows_for, plan
from xtlens.profiling.benefit.records import STATUSES, ProbeRecord
from xtlens.profiling.run.executor import RayJob, remote_function
from xtlens.profiling.run.worker import Job, child_events, describe_exit

__all__ = ["ProbeSpec", "ProbeJob", "ProbeRayJob", "DEFAULT_PROBE_TIME_LIMIT_S", "PROBE_TIME_LIMITS_S",
           "time_limit_for", "main"]

DEFAULT_PROBE_TIME_LIMIT_S = 900.0
#: probes whose default settings take longer than the default limit on 2 CPU cores (``report.MEASURED_WALL_TIMES``):
#: the default atlas (276 runs) took 29 min there
PROBE_TIME_LIMITS_S: dict[str, float] = {"atlas": 3600.0}


def time_limit_for(probe: str) -> float:
    """The time limit of a probe job started from the page: ``PROBE_TIME_LIMITS_S`` or the default (seconds)."""
    return PROBE_TIME_LIMITS_S.get(probe, DEFAULT_PROBE_TIME_LIMIT_S)


@dataclass(frozen=True, kw_only=True)
class ProbeSpec:
    options: ProbeOptions
    time_limit_s: float | None = DEFAULT_PROBE_TIME_LIMIT_S
    use_cache: bool = True

    def points(self):
        return plan(self.options)

    def to_dict(self) -> dict[str, Any]:
        return {"options": self.options.to_dict(), "time_limit_s": self.time_limit_s, "use_cache": self.use_cache}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeSpec:
        return cls(options=ProbeOptions.from_dict(d["options"]), time_limit_s=d.get("time_limit_s"),
                   use_cache=d.get("use_cache", True))

    def key(self) -> str:
        """Stable identity: the probe's options (not the time limit, not ``use_cache``)."""
        return hashlib.sha256(json.dumps(self.options.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    # ``profiling.run.executor``'s executors build the job a spec asks for (a sweep's JobSpec: worker.Job / RayJob)
    @property
    def local_job_class(self) -> type:
        return ProbeJob

    @property
    def ray_job_class(self) -> type:
        return ProbeRayJob


class ProbeJob(Job):
    """A probe in a child process (see the module docstring). ``result()`` gives ``ProbeRecord`` rows."""

    child_module = "xtlens.profiling.benefit.jobs"

    def __init__(self, spec: ProbeSpec, *, python: str | None = None, start: bool = True):
        self._log: list[str] = []
        super().__init__(spec, python=python, start=start)

    def _handle(self, event: dict[str, Any]) -> None:
        if event["type"] == "rows":
            self._rows[int(event["index"])] = [ProbeRecord(**row) for row in event["rows"]]
        else:
            if event["type"] == "progress":
                self._log.append(str(event["message"]))
            super()._handle(event)

    def progress_log(self) -> list[str]:
        """Every progress message the child wrote so far (run, step, train and validation loss), in order."""
        self.poll()
        with self._lock:
            return list(self._log)

    def _finalize(self, *, returncode: int | None) -> None:
        rows: list[ProbeRecord] = []
        reason = self._kill_reason
        crash = None
        if reason is None and not self._done_event and self._fatal is None and returncode is not None:
            crash = describe_exit(returncode)
        first = True
        for i, run in enumerate(self._points):
            if i in self._rows:
                rows.extend(self._rows[i])
                continue
            limit = self.spec.time_limit_s
            if self._fatal is not None:
                status, message = "error", self._fatal
            elif reason == "timeout":
                status = "timeout"
                message = (f"not finished within the probe's time limit of {limit:g} s (the process was stopped)"
                           if first else f"not run: the probe hit its time limit of {limit:g} s")
            elif reason == "cancelled":
                status, message = "cancelled", "cancelled before this run finished"
            elif crash is not None:
                status, message = (crash if first else ("error", "not run: " + crash[1]))
                status = "error" if status == "oom" else status
            else:
                status, message = "error", "the probe process ended without running this run"
            first = False
            rows.extend(failure_rows_for(run, status, message, device=self._device, device_name=self._device_name))
        self._final = rows
        self._ended = reason if reason is not None else (
            "crashed" if crash is not None or self._fatal is not None else "finished")
        self._fraction = 1.0
        self._message = {"finished": f"done: {len(self._points)} run(s)",
                         "timeout": f"stopped at the time limit of {self.spec.time_limit_s:g} s",
                         "cancelled": "cancelled",
                         "crashed": f"failed: {self._fatal or (crash[1] if crash else '')}"}[self._ended]
        if self._dir is not None:
            with contextlib.suppress(OSError):
                self._stderr_tail = (self._dir / "stderr.txt").read_bytes()[-4000:].decode("utf-8", "replace")
            shutil.rmtree(self._dir, ignore_errors=True)


# --- on a Ray cluster -----------------------------------------------------------------------------

def _train_on_worker(run, data, device: str) -> dict[str, Any]:
    """Runs in a Ray worker: one training run, never raising (a failed run is an ``error`` row), nothing stored
    there (the driver stores)."""
    from xtlens.profiling.benefit.probes import run_or_failure
    from xtlens.profiling.run.executor import task_place

    where = task_place(device)
    rows = run_or_failure(run, data, device=where["device"], device_name=where["device_name"],
                          versions=where["versions"], use_cache=False, store=False)
    return {**where, "rows": [r.to_dict() for r in rows]}


class ProbeRayJob(RayJob):
    """A probe's training runs as Ray tasks (see the module docstring). ``result()`` gives ``ProbeRecord`` rows."""

    def _prepare(self, ray, device: str) -> None:
        from xtlens.profiling.benefit.probes import load_data

        self._set_progress(0.0, "tokenising the corpus")
        self._data = load_data(self.spec.options)
        self._data_ref = ray.put(self._data)

    def _immediate(self, i: int, run: Any) -> list | None:
        from xtlens.profiling.benefit.probe_store import cached_run
        from xtlens.profiling.benefit.probes import run_key, run_labels

        if not self.spec.use_cache:
            return None
        key = run_key(run, self._data.run_key_corpus, self._probe["device_name"], self._probe["versions"])
        cached = cached_run(key)
        return None if cached is None else [dataclasses.replace(r, **run_labels(run), corpus_sha256=self._data.corpus_sha256)
                                            for r in cached]

    def _submit(self, ray, opts: dict[str, Any], device: str, run: Any):
        return remote_function(ray, "probe_run", _train_on_worker).options(**opts).remote(run, self._data_ref, device)

    def _accept(self, i: int, run: Any, out: dict[str, Any], attempts: int) -> list:
        from xtlens.profiling.benefit.probe_store import store_run

        rows = [ProbeRecord(**r) for r in out["rows"]]
        store_run(rows[0].run_key if rows else None, rows, source="ray", host=out["host"])
        return rows

    def _give_up(self, i: int, run: Any, status: str, message: str) -> list:
        from xtlens.profiling.benefit.probe_store import store_run

        rows = self._failure(run, "error", message, self._probe["device"], self._probe["device_name"])
        store_run(None, rows, source="ray", host="")
        return rows

    def _failure(self, run: Any, status: str, message: str, device: str, device_name: str) -> list:
        if status == "error" and message.startswith("cancelled"):
            status = "cancelled"
        return failure_rows_for(run, status if status in STATUSES else "error", message,
                                corpus_sha256=getattr(getattr(self, "_data", None), "corpus_sha256", ""),
                                device=device, device_name=device_name)

    def _describe(self, run: Any) -> str:
        return f"{run.config_name} seed {run.seed}"


# --- the child ------------------------------------------------------------------------------------

def _child(job_dir: Path) -> int:
    from xtlens.profiling.benefit.probes import run_probe
    from xtlens.profiling.run.device import device_name, resolve_device

    emit = child_events(job_dir)  # also ends this child (and its folder) when the parent dies
    spec = ProbeSpec.from_dict(json.loads((job_dir / "spec.json").read_text()))
    try:
        device = resolve_device(spec.options.device)
        emit({"type": "start", "device": device, "device_name": device_name(device), "pid": os.getpid()})
        run_probe(spec.options, use_cache=spec.use_cache,
                  progress=lambda f, m: emit({"type": "progress", "fraction": f, "message": m}),
                  on_rows=lambda i, rows: emit({"type": "rows", "index": i, "rows": [r.to_dict() for r in rows]}))
    except Exception as exc:  # noqa: BLE001 - reported as rows by the parent
        emit({"type": "fatal", "message": str(exc) or type(exc).__name__})
        return 0
    emit({"type": "done"})
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m xtlens.profiling.benefit.jobs JOB_DIR", file=sys.stderr)
        return 2
    return _child(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
