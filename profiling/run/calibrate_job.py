"""A latency calibration (``profiling.measure.calibrate.calibrate``) as a job in a child process: the page's
"Calibrate this device" button, with the measurement jobs' machinery (``profiling.run.worker``).

``CalibrateJob`` is a ``profiling.run.worker.Job`` whose child is this module (``python -m
xtlens.profiling.run.calibrate_job JOB_DIR``): the child runs ``calibrate(device, time_budget_s=...)`` (the job's
budget less what starting the child took: torch's import, as ``xtlens calibrate`` counts it),
stores the result in the result store (``profiling.results.calibrations.save_calibration``) and writes the
worker's events (``start``, ``progress``, ``fatal``, ``store_failed``, ``done``) plus one ``calibration`` event
holding the whole calibration. Everything else is the worker's: the watchdog kills the child's process group at
the time limit, ``cancel()`` kills it now, a dead parent ends the child. The server process never imports torch
for it. ``CalibrateSpec`` is keyed by device and time budget (and, in tests, the calibrate function), so the
page finds its job again on every rerun and after a tab switch; ``JobManager.submit_spec`` runs it like every
other job (one at a time on a machine: a calibration never runs beside a measurement).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xtlens.core.calibration import Calibration
from xtlens.profiling.errors import ProfileError
from xtlens.profiling.run.worker import Job, child_events, describe_exit, load_measure

__all__ = ["CalibrateSpec", "CalibrateJob", "CALIBRATE_REF", "DEFAULT_BUDGET_S", "time_limit_for", "main"]

#: the calibration the child runs (H19A's): ``module:function``
CALIBRATE_REF = "xtlens.profiling.measure.calibrate:calibrate"
#: the job's wall-time budget (seconds; the issue: at most 60 s), torch's import included
DEFAULT_BUDGET_S = 60.0
#: the budgets a page may ask for (``profiling.measure.calibrate`` accepts 5 s and more)
MIN_BUDGET_S, MAX_BUDGET_S = 5.0, 600.0
#: kept back from the budget for what the child does outside ``calibrate``: Python's start and the worker's imports
#: before the child's clock starts, storing the calibration (seconds)
RESERVE_S = 2.0
#: what the job may take beyond the budget before the watchdog stops it: starting Python and importing torch and
#: x-transformers (about 10 s on 2 busy cores) and storing the result
STARTUP_ALLOWANCE_S = 60.0


def time_limit_for(time_budget_s: float) -> float:
    """The job's time limit (seconds): the calibration's budget plus ``STARTUP_ALLOWANCE_S``."""
    return float(time_budget_s) + STARTUP_ALLOWANCE_S


@dataclass(frozen=True, kw_only=True)
class CalibrateSpec:
    """Calibrate ``device`` (``cpu``, ``cuda``, ``cuda:0``) within ``time_budget_s`` seconds. ``calibrate``
    names another calibrate function (``module:function`` or ``file.py:function``; tests inject fakes)."""

    device: str = "cpu"
    time_budget_s: float = DEFAULT_BUDGET_S
    time_limit_s: float | None = None
    calibrate: str = CALIBRATE_REF

    def __post_init__(self) -> None:
        if not (MIN_BUDGET_S <= float(self.time_budget_s) <= MAX_BUDGET_S):
            raise ProfileError(f"time_budget_s must be from {MIN_BUDGET_S:g} to {MAX_BUDGET_S:g} seconds (got "
                               f"{self.time_budget_s}).")
        if self.time_limit_s is None:
            object.__setattr__(self, "time_limit_s", time_limit_for(self.time_budget_s))

    def points(self) -> list[str]:
        return ["calibration"]

    @property
    def options(self) -> CalibrateSpec:
        """What the worker's ``Job`` reads of a spec's options (``options.device``): the spec itself."""
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "time_budget_s": float(self.time_budget_s), "time_limit_s": self.time_limit_s,
                "calibrate": self.calibrate}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CalibrateSpec:
        return cls(device=str(data["device"]), time_budget_s=float(data["time_budget_s"]),
                   time_limit_s=data.get("time_limit_s"), calibrate=str(data.get("calibrate") or CALIBRATE_REF))

    def key(self) -> str:
        """Stable identity: ``calibrate`` + device + budget (not the time limit)."""
        data = {"kind": "calibrate", "device": self.device, "time_budget_s": float(self.time_budget_s),
                "calibrate": self.calibrate}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def local_job_class(self) -> type:
        return CalibrateJob


class CalibrateJob(Job):
    """A calibration in a child process. ``calibration`` is the result once the child reported it; ``result()``
    is ``[calibration]`` when finished, else ``[]``."""

    child_module = "xtlens.profiling.run.calibrate_job"

    def __init__(self, spec: CalibrateSpec, *, python: str | None = None, start: bool = True):
        self._calibration: Calibration | None = None
        super().__init__(spec, python=python, start=start)

    def _handle(self, event: dict[str, Any]) -> None:
        if event["type"] == "calibration":
            self._calibration = Calibration.from_dict(event["data"])
        else:
            super()._handle(event)

    @property
    def calibration(self) -> Calibration | None:
        self.poll()
        with self._lock:
            return self._calibration

    def _finalize(self, *, returncode: int | None) -> None:
        reason = self._kill_reason
        crash = None
        if reason is None and not self._done_event and self._fatal is None and returncode is not None:
            crash = describe_exit(returncode, self._oom_kills_before)
        self._final = [self._calibration] if self._calibration is not None and reason is None else []
        self._ended = reason if reason is not None else (
            "crashed" if crash is not None or self._fatal is not None or self._calibration is None else "finished")
        self._fraction = 1.0
        why = self._fatal or (crash[1] if crash else "the calibration process ended without a result")
        self._message = {"finished": "done: calibration stored" if not self._store_failures
                         else f"done, but not stored: {self._store_failures[0]}",
                         "timeout": f"stopped at the time limit of {self.spec.time_limit_s or 0:g} s",
                         "cancelled": "cancelled",
                         "crashed": f"failed: {why}"}[self._ended]
        if self._dir is not None:
            with contextlib.suppress(OSError):
                self._stderr_tail = (self._dir / "stderr.txt").read_bytes()[-4000:].decode("utf-8", "replace")
            shutil.rmtree(self._dir, ignore_errors=True)


# --- the child ------------------------------------------------------------------------------------

def _progress_event(emit):
    """A ``progress`` callback for ``calibrate`` that accepts ``(fraction, message)`` or ``(message,)``."""

    def progress(*args: Any) -> None:
        fraction = next((float(a) for a in args if isinstance(a, int | float)), None)
        message = next((str(a) for a in args if isinstance(a, str)), "")
        event: dict[str, Any] = {"type": "progress", "message": message}
        if fraction is not None:
            event["fraction"] = min(max(fraction, 0.0), 1.0)
        else:
            event["fraction"] = 0.0
        emit(event)

    return progress


def _child(job_dir: Path) -> int:
    started = time.monotonic()
    emit = child_events(job_dir)  # also ends this child (and its folder) when the parent dies
    spec = CalibrateSpec.from_dict(json.loads((job_dir / "spec.json").read_text()))
    try:
        from xtlens.profiling.run.device import resolve

        device, name = resolve(spec.device)
        emit({"type": "start", "device": device, "device_name": name, "pid": os.getpid()})
        calibrate = load_measure(spec.calibrate)
        # the budget is the whole job's (as ``xtlens calibrate``'s): torch's import and the store come off it
        budget = max(MIN_BUDGET_S, spec.time_budget_s - (time.monotonic() - started) - RESERVE_S)
        cal = calibrate(device, time_budget_s=budget, progress=_progress_event(emit))
    except Exception as exc:  # noqa: BLE001 - reported by the parent as the job's failure
        emit({"type": "fatal", "message": str(exc) or type(exc).__name__})
        return 0
    try:
        from xtlens.profiling.results.calibrations import save_calibration

        save_calibration(cal)
    except Exception as exc:  # noqa: BLE001 - the calibration is still shown; the page says it was not stored
        emit({"type": "store_failed", "message": str(exc) or type(exc).__name__})
    emit({"type": "calibration", "data": cal.to_dict()})
    emit({"type": "done"})
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m xtlens.profiling.run.calibrate_job JOB_DIR", file=sys.stderr)
        return 2
    return _child(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
