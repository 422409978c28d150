"""Run measurement jobs in a child process, so the caller (the Streamlit server) never freezes or dies.

A job is (what, configurations, workloads, options). ``Job`` starts ``python -m xtlens.profiling.run.child
--parent-pid PID --time-limit-s S xtlens.profiling.run.worker DIR`` with the job written to ``DIR/spec.json``:
``profiling.run.child`` (standard library only) checks and watches the parent and enforces the child's own time
limit before anything heavy is imported, then runs this module's ``main``. The child runs
``profiling.run.sweep.run_sweep`` and appends JSON lines to ``DIR/events.jsonl`` as it goes (its resolved device, progress, the rows of each finished
point, then ``done``). The parent never blocks: ``job.progress()``, ``job.done()`` and ``job.result()``
read whatever the child has written so far, so a page can poll them on every rerun.

Whatever happens, every planned point ends with at least one row:

* time limit (``time_limit_s``, wall clock from the start): a watchdog thread kills the child's whole
  process group (the child ends itself ``child.GRACE_S`` later if the parent could not: dead or frozen);
  rows of finished points are kept, the point that was running and the rest get ``status="timeout"``;
* ``job.cancel()``: the same, with ``status="error"`` and "cancelled";
* a crash of the child (segfault, killed by the operating system, an import error): the running point
  gets an ``error`` row saying how the process ended (``oom`` when it was killed by SIGKILL, which on
  Linux is almost always the out-of-memory killer), the rest say they were not run. No traceback ever
  reaches a row; the child's stderr is kept in ``job.stderr_tail()`` for logs;
* an exception or out-of-memory inside a measurement is already a row (``profiling.run.sweep``).

``JobManager`` keys jobs by (configurations, workloads, device, what and options) and by owner: submitting
the same job again returns the running or finished one, so a repeat is instant; ``fresh=True`` ("Measure
again") always starts a new one. Failed runs (timeout, cancel, crash) stay their owner's until the next
submit, which starts a new job. At most ``max_running`` jobs run at once (default 1: concurrent
jobs would distort each other's latency and memory figures); the others wait in order. ``executor``
(``profiling.run.executor``) makes the manager's jobs run elsewhere, e.g. on a Ray cluster. The same manager runs
the benefit lab's training probes (``submit_spec(benefit.jobs.ProbeSpec(...))``), with the same owners and
per-owner limit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xtlens.core.config import ModelConfig, Workload
from xtlens.profiling.errors import ProfileError
from xtlens.profiling.results.records import ProfileRecord
from xtlens.profiling.run.child import command as child_command
from xtlens.profiling.run.child import parent_pid
from xtlens.profiling.run.plan import ConfigGrid, SweepOptions, SweepPoint, check_whats, plan_sweep
from xtlens.profiling.run.sweep import failure_rows

__all__ = ["JobSpec", "Job", "JobManager", "QueueFull", "DEFAULT_TIME_LIMIT_S", "main",
           "describe_exit", "load_measure", "child_events"]

DEFAULT_TIME_LIMIT_S = 600.0


class QueueFull(ProfileError):
    """A session asked for more unfinished jobs than ``JobManager.max_per_owner``; the message says what to do."""


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """What a job measures. ``measure`` optionally names another measurement function for the child,
    as ``"package.module:function"`` or ``"/path/to/file.py:function"`` (tests inject fakes this way)."""

    what: tuple[str, ...]
    configs: tuple[tuple[str, ModelConfig], ...]
    workloads: tuple[Workload, ...]
    options: SweepOptions = dataclasses.field(default_factory=SweepOptions)
    skipped: tuple[tuple[str, dict[str, Any], str], ...] = ()
    time_limit_s: float | None = DEFAULT_TIME_LIMIT_S
    measure: str | None = None

    @classmethod
    def make(cls, what: str | Iterable[str], configs: ModelConfig | ConfigGrid | Iterable[Any],
             workloads: Iterable[Workload], options: SweepOptions | None = None, *, config_name: str = "",
             time_limit_s: float | None = DEFAULT_TIME_LIMIT_S, measure: str | None = None) -> JobSpec:
        skipped: tuple[tuple[str, dict[str, Any], str], ...] = ()
        if isinstance(configs, ModelConfig):
            named = ((config_name, configs),)
        elif isinstance(configs, ConfigGrid):
            named, skipped = configs.configs, configs.skipped
        else:
            named = tuple(("", c) if isinstance(c, ModelConfig) else (str(c[0]), c[1]) for c in configs)
        return cls(what=check_whats(what), configs=tuple(named), workloads=tuple(workloads),
                   options=options or SweepOptions(), skipped=tuple(skipped), time_limit_s=time_limit_s,
                   measure=measure)

    def points(self) -> list[SweepPoint]:
        return plan_sweep(self._grid(), self.workloads, self.what)

    def _grid(self) -> ConfigGrid:
        return ConfigGrid(configs=self.configs, skipped=self.skipped)

    def to_dict(self) -> dict[str, Any]:
        return {
            "what": list(self.what),
            "configs": [[name, cfg.to_dict()] for name, cfg in self.configs],
            "workloads": [wl.to_dict() for wl in self.workloads],
            "options": self.options.to_dict(),
            "skipped": [[name, tried, message] for name, tried, message in self.skipped],
            "time_limit_s": self.time_limit_s,
            "measure": self.measure,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        return cls(
            what=tuple(data["what"]),
            configs=tuple((name, ModelConfig.from_dict(cfg)) for name, cfg in data["configs"]),
            workloads=tuple(Workload(**wl) for wl in data["workloads"]),
            options=SweepOptions.from_dict(data["options"]),
            skipped=tuple((name, dict(tried), message) for name, tried, message in data.get("skipped", [])),
            time_limit_s=data.get("time_limit_s"),
            measure=data.get("measure"),
        )

    def key(self) -> str:
        """Stable identity: configurations, workloads, device, what and options (not the time limit)."""
        data = self.to_dict()
        data.pop("time_limit_s")
        data["options"].pop("use_cache", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _oom_kills() -> int:
    """The kernel's count of OOM kills in this process's memory cgroup (0 where it cannot be read)."""
    for path in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"):
        try:
            for line in Path(path).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return 0


def _kill_group(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads (the child and anything it started); quiet if it is gone."""
    if os.name == "posix":
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def describe_exit(returncode: int, oom_kills_before: int = 0) -> tuple[str, str]:
    """(status, words) for a child that ended without saying it was done: a SIGKILL is labelled ``oom`` only
    when the kernel recorded an OOM kill during the job, otherwise ``error`` naming the signal."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        if -returncode == signal.SIGKILL:
            if _oom_kills() > oom_kills_before:
                return "oom", (f"the measurement process was killed by {name} by the operating system's out-of-memory "
                               "killer (its memory cgroup counted an OOM kill during the job)")
            return "error", (f"the measurement process was killed by {name} from outside xtlens (a user, a process "
                             "manager, or the operating system's out-of-memory killer; no OOM kill was recorded)")
        return "error", f"the measurement process crashed ({name})"
    return "error", f"the measurement process stopped unexpectedly (exit code {returncode})"


def _with_what_does_not_fit(message: str, point: SweepPoint, options: SweepOptions) -> str:
    """An OOM kill's words and the part of the point's predicted footprint that does not fit in the machine's
    available memory (``limits.what_does_not_fit``), like every other ``oom`` row."""
    if point.cfg is None:
        return message
    from xtlens.profiling.run.limits import machine_available_bytes, measures_training, what_does_not_fit

    try:
        return f"{message}. " + what_does_not_fit(point.cfg, point.workload,
                                                  training=measures_training(point.what, options.phases),
                                                  available=machine_available_bytes())
    except Exception:  # noqa: BLE001 - advice is a courtesy; the row must still be written
        return message


class JobState:
    """The page's, the CLI's and the manager's API of a job, shared by the child-process job (``Job``) and the
    Ray job (``executor.RayJob``). A subclass keeps ``_lock``, ``_fraction``, ``_message``, ``_rows`` (point
    index -> rows), ``_final``, ``_ended``, ``_started_at`` and ``_finished_at``, says whether it ``started``,
    and brings its state up to date in ``poll`` (the child's events; a Ray job's thread needs none)."""

    key: str
    started: bool
    owner: str = ""  # who started it (``JobManager.submit_spec``); another owner that sees it only shares it

    def poll(self) -> None:
        """Bring the state up to date (nothing to do by default)."""

    def progress(self) -> tuple[float, str]:
        """``(fraction in [0, 1], message)``."""
        self.poll()
        with self._lock:
            return self._fraction, self._message

    def done(self) -> bool:
        self.poll()
        return self._final is not None

    @property
    def outcome(self) -> str:
        """``pending``, ``running``, ``finished``, ``timeout``, ``cancelled`` or ``crashed``."""
        self.poll()
        if self._ended is not None:
            return self._ended
        return "running" if self.started else "pending"

    def result(self) -> list[ProfileRecord]:
        """All rows once done; before that, the rows of the points finished so far."""
        self.poll()
        with self._lock:
            if self._final is not None:
                return list(self._final)
            return [r for i in sorted(self._rows) for r in self._rows[i]]

    def wait(self, timeout: float | None = None, *, interval: float = 0.05) -> list[ProfileRecord]:
        """Block until done (for the CLI and tests); raises ``TimeoutError`` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done():
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.key} still running after {timeout} s")
            time.sleep(interval)
        return self.result()

    @property
    def elapsed_s(self) -> float:
        if self._started_at is None:
            return 0.0
        return (self._finished_at or time.monotonic()) - self._started_at


class Job(JobState):
    """One measurement job in a child process. Non-blocking; safe to poll from several threads."""

    #: the module run as ``python -m CHILD_MODULE JOB_DIR`` (a subclass may run another child, e.g. the probes)
    child_module = "xtlens.profiling.run.worker"

    def __init__(self, spec: JobSpec, *, python: str | None = None, start: bool = True):
        self.spec = spec
        self.key = spec.key()
        self._python = python or sys.executable
        self._points = spec.points()
        self._lock = threading.RLock()
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._offset = 0
        self._buffer = b""
        self._fraction = 0.0
        self._message = "waiting to start"
        self._rows: dict[int, list[ProfileRecord]] = {}
        self._device = spec.options.device
        self._device_name = "unknown"
        self._fatal: str | None = None
        self._store_failures: list[str] = []
        self._done_event = False
        self._ended: str | None = None  # "finished", "timeout", "cancelled", "crashed"
        self._final: list[ProfileRecord] | None = None
        self._stderr_tail = ""
        self._started_at: float | None = None
        self._started_wall: float | None = None  # time.time() at start: rows stored before it came from the cache
        self._finished_at: float | None = None
        self._exit_callbacks: list[Any] = []
        self._kill_reason: str | None = None
        self._oom_kills_before = 0
        if start:
            self.start()

    # --- lifecycle ---

    @property
    def started(self) -> bool:
        return self._proc is not None

    def start(self) -> Job:
        with self._lock:
            if self._proc is not None or self._ended is not None:
                return self
            refused = self._refuse_what_does_not_fit()
            if refused and len(refused) == len(self._points):  # nothing would fit: no child at all
                self._started_at = self._finished_at = time.monotonic()
                self._started_wall = time.time()
                self._finalize(returncode=None)
                return self
            self._dir = Path(tempfile.mkdtemp(prefix="xtlens-job-"))
            (self._dir / "spec.json").write_text(json.dumps(self.spec.to_dict()))
            if refused:  # the child runs the rest (profiling.run.worker._child)
                (self._dir / "refused.json").write_text(json.dumps(sorted(refused)))
            (self._dir / "events.jsonl").touch()
            env = dict(os.environ)
            env["PYTHONUNBUFFERED"] = "1"
            self._started_at = time.monotonic()
            self._started_wall = time.time()
            self._oom_kills_before = _oom_kills()
            try:
                with open(self._dir / "stderr.txt", "wb") as err:
                    self._proc = subprocess.Popen(
                        child_command(self._python, self.child_module, self._dir, time_limit_s=self.spec.time_limit_s),
                        stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env, cwd=os.getcwd(),
                        start_new_session=(os.name == "posix"),
                    )
            except OSError as exc:
                self._fatal = f"could not start the measurement process ({self._python}): {exc.strerror or exc}"
                self._finished_at = time.monotonic()
                self._finalize(returncode=None)
                return self
            self._message = "starting the measurement process"
            threading.Thread(target=self._watch, name=f"xtlens-job-{self.key}", daemon=True).start()
        return self

    def _refuse_what_does_not_fit(self) -> set[int]:
        """Before a CPU measurement job's child starts: an ``oom`` row for each point predicted not to fit in the
        machine's available memory (``limits.refusal``: the predicted need, the available memory, the part that
        does not fit); the indices of those points, which the child never runs."""
        if not isinstance(self.spec, JobSpec):
            return set()
        from xtlens.profiling.run.device import resolve
        from xtlens.profiling.run.limits import machine_available_bytes, refusal

        try:
            device, device_name = resolve(self.spec.options.device)
        except Exception:  # noqa: BLE001 - an unusable device is the child's error row
            return set()
        available = machine_available_bytes()
        if device != "cpu" or available is None:
            return set()
        refused = set()
        for i, point in enumerate(self._points):
            if point.cfg is None or point.workload.seq_len > point.cfg.max_seq_len:
                continue  # the sweep's own error row
            message = refusal(point.cfg, point.workload, point.what, self.spec.options.phases, available=available)
            if message is not None:
                refused.add(i)
                self._rows[i] = failure_rows(point, "oom", message, device=device, device_name=device_name,
                                             options=self.spec.options)
        if refused:
            self._device, self._device_name = device, device_name
        return refused

    def _watch(self) -> None:
        """Watchdog: kill at the time limit, then record how the child ended."""
        proc = self._proc
        assert proc is not None
        limit = self.spec.time_limit_s
        try:
            proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            self._kill("timeout")
            proc.wait()
        _kill_group(proc.pid)  # whatever the child started dies with it, however the child ended
        self._finished_at = time.monotonic()
        self.poll()
        for callback in list(self._exit_callbacks):
            callback(self)

    def _kill(self, reason: str) -> None:
        with self._lock:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                return
            self._kill_reason = self._kill_reason or reason
        if os.name == "posix":
            _kill_group(proc.pid)
        else:  # pragma: no cover
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    def cancel(self) -> None:
        """Stop the job now (rows of finished points are kept, the rest say "cancelled")."""
        with self._lock:
            if self._proc is None and self._ended is None:  # never started
                self._kill_reason = "cancelled"
                self._finalize(returncode=None)
                return
        self._kill("cancelled")
        if self._proc is not None:
            self._proc.wait()
            with self._lock:
                self._finished_at = self._finished_at or time.monotonic()
        self.poll()

    @property
    def store_failures(self) -> list[str]:
        """The child's messages for rows it could not store in the result store (each names its spool file)."""
        self.poll()
        with self._lock:
            return list(self._store_failures)

    # --- polling ---

    def poll(self) -> None:
        """Read new events from the child; finalize when it has exited. Never blocks."""
        with self._lock:
            if self._final is not None:
                return
            self._read_events()
            if self._proc is not None and self._proc.poll() is not None and self._finished_at is not None:
                self._read_events()
                self._finalize(returncode=self._proc.returncode)

    def _read_events(self) -> None:
        if self._dir is None:
            return
        try:
            with open(self._dir / "events.jsonl", "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except OSError:
            return
        self._offset += len(chunk)
        data = self._buffer + chunk
        *lines, self._buffer = data.split(b"\n")
        for line in lines:
            if line.strip():
                try:
                    self._handle(json.loads(line))
                except (ValueError, TypeError, KeyError):
                    continue  # a torn line from a killed child

    def _handle(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "start":
            self._device, self._device_name = event["device"], event["device_name"]
        elif kind == "progress":
            self._fraction = max(self._fraction, float(event["fraction"]))
            self._message = str(event["message"])
        elif kind == "rows":
            self._rows[int(event["index"])] = [ProfileRecord(**row) for row in event["rows"]]
        elif kind == "fatal":
            self._fatal = str(event["message"])
        elif kind == "done":
            self._done_event = True
        elif kind == "store_failed":  # rows the child could not store: kept in the spool its message names
            self._store_failures.append(str(event["message"]))
        elif kind == "timeout":  # the child ended itself at its own time limit (profiling.run.child)
            self._kill_reason = self._kill_reason or "timeout"

    def _finalize(self, *, returncode: int | None) -> None:
        rows: list[ProfileRecord] = []
        reason = self._kill_reason
        crash: tuple[str, str] | None = None
        if reason is None and not self._done_event and self._fatal is None and returncode is not None:
            crash = describe_exit(returncode, self._oom_kills_before)
        first_missing = True
        for i, point in enumerate(self._points):
            if i in self._rows:
                rows.extend(self._rows[i])
                continue
            if self._fatal is not None:
                status, message = "error", self._fatal
            elif reason == "timeout":
                limit = self.spec.time_limit_s
                status = "timeout"
                message = (f"not finished within the job's time limit of {limit:g} s (the measurement process was "
                           "stopped)" if first_missing else f"not run: the job hit its time limit of {limit:g} s")
            elif reason == "cancelled":
                status, message = "error", "cancelled before this point finished"
            elif crash is not None:
                status, message = crash if first_missing else ("error", "not run: " + crash[1])
                if status == "oom":
                    message = _with_what_does_not_fit(message, point, self.spec.options)
            else:
                status, message = "error", "the measurement process ended without measuring this point"
            first_missing = False
            rows.extend(failure_rows(point, status, message, device=self._device, device_name=self._device_name,
                                     options=self.spec.options))
        self._final = rows
        if reason is not None:
            self._ended = reason
        else:
            self._ended = "crashed" if crash is not None or self._fatal is not None else "finished"
        self._fraction = 1.0
        self._message = {
            "finished": f"done: {len(self._points)} point(s)",
            "timeout": f"stopped at the time limit of {self.spec.time_limit_s or 0:g} s",  # None: no limit
            "cancelled": "cancelled",
            "crashed": f"failed: {self._fatal or (crash[1] if crash else '')}",
        }[self._ended]
        if self._dir is not None:
            with contextlib.suppress(OSError):
                self._stderr_tail = (self._dir / "stderr.txt").read_bytes()[-4000:].decode("utf-8", "replace")
            shutil.rmtree(self._dir, ignore_errors=True)

    # --- the page's API: JobState's, plus ---

    @property
    def started_wall(self) -> float | None:
        """Wall-clock time (``time.time()``) the job started; None while it waits in the queue."""
        return self._started_wall

    def stderr_tail(self) -> str:
        """The end of the child's stderr (for logs, never for the page's rows)."""
        self.poll()
        return self._stderr_tail

    def __repr__(self) -> str:
        return f"Job({self.key}, {self.outcome}, {len(self._points)} point(s))"


class JobManager:
    """Keeps jobs by key and by owner; a repeat submit returns the existing job. Plain class (no Streamlit). The one
    manager of measurement jobs (``JobSpec``) and training-probe jobs (``benefit.jobs.ProbeSpec``).

    Jobs are owned: ``owner`` (the dashboard passes its browser session's id; ``""`` is the anonymous
    caller of scripts and tests) names who asked, and each owner sees one job per key (``get(key, owner)``).
    A job another owner asked for too is shared, its rows are immutable and every reader builds its own table
    from them; ``job.owner`` is the owner that started it (a reader that is not that owner did not measure
    anything). ``submit_spec(..., fresh=True)`` ("Measure again", Retry) always starts a new job for that owner,
    even while another owner's job of the same key lives on. ``cancel`` stops the owner's job when nobody else
    waits for it and keeps it (outcome ``cancelled``) for that owner to see and retry; ``forget`` lets go of it.
    An owner may have at most ``max_per_owner`` unfinished jobs (``QueueFull`` beyond that).
    """

    def __init__(self, *, max_running: int = 1, python: str | None = None, executor: Any = None,
                 max_per_owner: int = 2):
        self.max_running = max_running
        self.max_per_owner = max_per_owner
        self._python = python
        self.executor = executor  # a profiling.run.executor engine; None: a child process here (Job)
        self._jobs: dict[str, Job] = {}  # key -> the latest job of that key (the one a new asker shares)
        self._owned: dict[tuple[str, str], Job] = {}  # (owner, key) -> the job that owner sees
        self._order: list[Job] = []  # every live job, oldest first
        self._queue: list[Job] = []
        self._lock = threading.RLock()

    def submit(self, what: str | Iterable[str], configs: ModelConfig | ConfigGrid | Iterable[Any],
               workloads: Sequence[Workload], options: SweepOptions | None = None, *, config_name: str = "",
               time_limit_s: float | None = DEFAULT_TIME_LIMIT_S, measure: str | None = None,
               owner: str = "") -> Job:
        return self.submit_spec(JobSpec.make(what, configs, workloads, options, config_name=config_name,
                                             time_limit_s=time_limit_s, measure=measure), owner=owner)

    def submit_spec(self, spec: Any, *, owner: str = "", fresh: bool = False) -> Job:
        """Start (or queue) the job ``spec`` describes for ``owner``; the running or finished job when it was
        submitted before (by anyone: the rows are shared, read-only), unless ``fresh`` (a new job whatever ran
        before; the owner's previous job of that key is let go). Raises ``QueueFull`` when ``owner`` already has
        ``max_per_owner`` unfinished jobs. ``spec`` is a sweep's ``JobSpec`` or a training probe's
        ``benefit.jobs.ProbeSpec`` (anything with ``key()`` and the job classes ``local_job_class`` /
        ``ray_job_class``)."""
        key = spec.key()
        with self._lock:
            mine = self._owned.get((owner, key))
            job = self._jobs.get(key)
            if job is None or job.outcome not in ("pending", "running", "finished"):
                # the newest run of this key that someone still sees and that did not end badly
                job = next((j for j in reversed(self._order) if j.key == key
                            and j.outcome in ("pending", "running", "finished")), job)
            if not fresh and job is not None and job.outcome in ("pending", "running", "finished"):
                if mine is not job:
                    if not job.done():
                        self._check_quota(owner, but=mine)
                    self._let_go(owner, key)
                    self._owned[(owner, key)] = job
                return job
            self._check_quota(owner, but=mine)
            self._let_go(owner, key)
            job = self._new_job(spec)
            job.owner = owner
            job._exit_callbacks.append(lambda _job: self._pump())
            self._jobs[key] = job
            self._owned[(owner, key)] = job
            self._order.append(job)
            self._queue.append(job)
        self._pump()
        return job

    def _new_job(self, spec: Any) -> JobState:
        """The job of ``spec``, not started: the executor's, else the spec's own child-process job class
        (``local_job_class``: ``benefit.jobs.ProbeJob`` for a probe's spec), else ``Job``."""
        if self.executor is not None:
            return self.executor.job(spec)
        cls = getattr(spec, "local_job_class", None) or Job
        return cls(spec, python=self._python, start=False)

    def _check_quota(self, owner: str, *, but: Any = None) -> None:
        mine = [j for (o, _k), j in self._owned.items() if o == owner and j is not but and not j.done()]
        if len(mine) >= self.max_per_owner:
            raise QueueFull(f"You already have {len(mine)} measurement(s) running or queued (at most "
                            f"{self.max_per_owner} per session): wait for one to finish or cancel it, then "
                            "press Measure again.")

    def _pump(self) -> None:
        with self._lock:
            self._queue = [j for j in self._queue if not j.started and j.outcome == "pending"]
            running = sum(1 for j in self._order if j.outcome == "running")
            while self._queue and running < self.max_running:
                self._queue.pop(0).start()
                running += 1

    def get(self, key: str, owner: str | None = "") -> Job | None:
        """The job ``key`` that ``owner`` asked for (``owner=None``: the latest job of that key, whoever asked)."""
        with self._lock:
            return self._jobs.get(key) if owner is None else self._owned.get((owner, key))

    def owned(self, owner: str) -> list[Job]:
        """Every job ``owner`` sees (unfinished, finished, cancelled, failed), oldest first."""
        with self._lock:
            mine = {id(j) for (o, _k), j in self._owned.items() if o == owner}
            return [j for j in self._order if id(j) in mine]

    def owners(self, job: Any) -> set[str]:
        """Who sees ``job`` now."""
        with self._lock:
            return {o for (o, _k), j in self._owned.items() if j is job}

    def queue_position(self, key: Any) -> int:
        """0 when the job (or the job of key ``key``) runs or ended, else its place (1 = next) in the queue."""
        with self._lock:
            waiting = [j for j in self._queue if not j.started and j.outcome == "pending"]
            for place, job in enumerate(waiting, 1):
                if job is key or (isinstance(key, str) and job.key == key):
                    return place
            return 0

    def jobs(self) -> list[Job]:
        """Every job someone still sees, oldest first."""
        with self._lock:
            return list(self._order)

    def _let_go(self, owner: str, key: str) -> Job | None:
        """Remove ``owner``'s job ``key``; the job when nobody else sees it now (it is dropped)."""
        with self._lock:
            job = self._owned.pop((owner, key), None)
            if job is None or any(j is job for j in self._owned.values()):
                return None
            self._order = [j for j in self._order if j is not job]
            if self._jobs.get(key) is job:
                self._jobs.pop(key)
            return job

    def cancel(self, key: str, owner: str = "") -> bool:
        """Stop ``owner``'s job ``key``: when nobody else waits for it, the job is cancelled and stays ``owner``'s
        (outcome ``cancelled``, its reason in its rows; a submit starts a new one); when another owner waits for
        it, it runs on for them and ``owner`` lets go of it. False when ``key`` is not ``owner``'s job."""
        with self._lock:
            job = self._owned.get((owner, key))
            if job is None:
                return False
            if self.owners(job) - {owner}:
                self._let_go(owner, key)
                job = None
        if job is not None and not job.done():
            job.cancel()
        self._pump()
        return True

    def forget(self, key: str, owner: str | None = "") -> None:
        """Drop ``owner``'s job ``key`` so its next submit measures again; another owner keeps its own copy
        (the job, cancelled only if nobody else owns it). ``owner=None``: drop it for everyone."""
        with self._lock:
            owners = [o for (o, k) in self._owned if k == key] if owner is None else [owner]
            dropped = [j for j in (self._let_go(o, key) for o in owners) if j is not None]
            if owner is None:
                self._jobs.pop(key, None)
        for job in dropped:
            if not job.done():
                job.cancel()
        self._pump()

    def cancel_all(self) -> None:
        for job in self.jobs():
            if not job.done():
                job.cancel()


# --- the child --------------------------------------------------------------------------------------

def load_measure(ref: str):
    """The measurement function a ``JobSpec.measure`` reference names: ``module:function`` or
    ``file.py:function`` (a test's fake measurement)."""
    module_ref, _, name = ref.rpartition(":")
    if not module_ref or not name:
        raise ValueError(f"measure {ref!r} is not 'module:function' or 'file.py:function'")
    if module_ref.endswith(".py"):
        stable = hashlib.sha256(str(Path(module_ref).resolve()).encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(f"_xtlens_measure_{stable}", module_ref)
        if spec is None or spec.loader is None:
            raise ValueError(f"cannot load {module_ref}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_ref)
    return getattr(module, name)


def _watch_parent(parent: int, job_dir: Path) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:  # the parent died: nobody will read the results
            shutil.rmtree(job_dir, ignore_errors=True)
            if os.name == "posix" and os.getpgid(0) == os.getpid():  # we lead our own group: end all of it
                os.killpg(0, signal.SIGKILL)
            os._exit(3)


def child_events(job_dir: Path):
    """The child side of a job (this worker's and the benefit lab's probe child): starts the thread that ends
    the child, its process group and its folder when the parent dies, and returns ``emit(event)``, which
    appends one JSON line to ``job_dir/events.jsonl`` (flushed, so the parent reads it at once)."""
    events = open(job_dir / "events.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - open for the child's life

    def emit(event: dict[str, Any]) -> None:
        events.write(json.dumps(event) + "\n")
        events.flush()

    # the parent's PID as the parent gave it (profiling.run.child), not as the child finds it now: a parent that
    # died while the child imported torch has already handed the child to PID 1
    parent = parent_pid() or os.getppid()
    threading.Thread(target=_watch_parent, args=(parent, job_dir), daemon=True).start()
    return emit


def _child(job_dir: Path) -> int:
    from xtlens.profiling.run.device import resolve
    from xtlens.profiling.run.measure import measure_point
    from xtlens.profiling.run.sweep import run_points

    emit = child_events(job_dir)
    spec = JobSpec.from_dict(json.loads((job_dir / "spec.json").read_text()))
    try:
        plan = spec.points()  # once: for the memory limit and the sweep
        refused = set(json.loads((job_dir / "refused.json").read_text())) if (job_dir / "refused.json").exists() \
            else set()
        index = [i for i in range(len(plan)) if i not in refused]  # the parent refused the others (limits.refusal)
        plan = [plan[i] for i in index]
        device, device_name = resolve(spec.options.device)
        limit = None
        if device == "cpu":  # bounded by the predicted peak (profiling.run.limits); CUDA maps far more address space
            from xtlens.profiling.run.limits import address_space_limit, apply_address_space_limit

            points = [(p.cfg, p.workload) for p in plan if p.cfg is not None]
            limit = apply_address_space_limit(address_space_limit(points))
        emit({"type": "start", "device": device, "device_name": device_name, "pid": os.getpid(),
              "address_space_limit_bytes": limit})
        measure = load_measure(spec.measure) if spec.measure else measure_point
    except Exception as exc:  # noqa: BLE001 - reported as rows by the parent
        emit({"type": "fatal", "message": str(exc) or type(exc).__name__})
        return 0
    run_points(plan, options=spec.options, measure=measure,
               progress=lambda f, m: emit({"type": "progress", "fraction": f, "message": m}),
               on_rows=lambda i, p, rows: emit({"type": "rows", "index": index[i], "rows": [r.to_dict() for r in rows]}),
               on_store_error=lambda exc: emit({"type": "store_failed", "message": str(exc)}))
    emit({"type": "done"})
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m xtlens.profiling.run.worker JOB_DIR (JOB_DIR/spec.json written by profiling.run.worker.Job)",
              file=sys.stderr)
        return 2
    return _child(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
