"""The first code a job's child process runs: it learns its parent and its time limit before any heavy import.

``profiling.run.worker.Job`` starts ``python -m xtlens.profiling.run.child --parent-pid PID --time-limit-s S
MODULE JOB_DIR``. This module imports nothing but the standard library, so within milliseconds of starting
the child

* compares ``os.getppid()`` with the parent's PID it was given: a parent that died while the child started
  (the child was already handed to PID 1 or a subreaper) ends the child at once and removes its job folder;
* on Linux asks the kernel for a signal when the parent dies (``prctl(PR_SET_PDEATHSIG)``, via ctypes);
  the kernel sends it when the parent *thread* that started the child ends, which in a server (Streamlit
  starts a thread per rerun) is not a death of the parent, so the signal only wakes the check below;
* starts a watcher thread that checks the parent every ``PARENT_CHECK_S``: when it is gone, the child's
  whole process group (the child leads it) is killed and its job folder removed;
* enforces its own time limit: ``time_limit_s + GRACE_S`` after it started, the child writes a ``timeout``
  event (the parent, if alive, labels the rows ``timeout``), removes its folder when the parent is gone, and
  kills its process group. The parent's watchdog normally stops the child at ``time_limit_s``; this one
  holds when the parent cannot (dead, frozen, or its watchdog thread starved).

Then it imports ``MODULE`` (``profiling.run.worker`` or ``profiling.benefit.jobs``) and calls its
``main([JOB_DIR])``. No time limit (``--time-limit-s none``) means no own limit.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

__all__ = ["GRACE_S", "PARENT_CHECK_S", "command", "guard", "parent_pid", "parse", "main"]

#: The child's own limit is the job's time limit plus this (the parent's watchdog stops it first when alive).
GRACE_S = 2.0
#: How often the watcher thread checks that the parent is still there.
PARENT_CHECK_S = 0.2

_PR_SET_PDEATHSIG = 1
_parent: int | None = None
_started = time.monotonic()


def parent_pid() -> int | None:
    """The PID of the process that started this child (given on the command line), None outside a guarded child."""
    return _parent


def command(python: str, module: str, job_dir: Path | str, *, time_limit_s: float | None) -> list[str]:
    """The command line that starts a guarded child of this process running ``module``'s ``main([job_dir])``."""
    # the parent's own limit is checked where it is set; here only a finite, non-negative one is passed on
    finite = time_limit_s is not None and math.isfinite(float(time_limit_s))
    limit = repr(max(float(time_limit_s), 0.0)) if finite else "none"
    return [python, "-m", "xtlens.profiling.run.child", "--parent-pid", str(os.getpid()), "--time-limit-s", limit, module, str(job_dir)]


def _parent_gone(parent: int) -> bool:
    return os.getppid() != parent


def _end(job_dir: Path, *, remove: bool, code: int) -> None:
    """Remove the folder (when nobody will read it) and kill this child's whole process group, then exit."""
    if remove:
        shutil.rmtree(job_dir, ignore_errors=True)
    if os.name == "posix":
        with contextlib.suppress(OSError):
            if os.getpgid(0) == os.getpid():  # we lead our own group (start_new_session): end all of it
                os.killpg(0, signal.SIGKILL)
    os._exit(code)


def _emit_timeout(job_dir: Path, time_limit_s: float) -> None:
    with contextlib.suppress(OSError), open(job_dir / "events.jsonl", "a", encoding="utf-8") as fh:
        fh.write("\n" + json.dumps({"type": "timeout", "message": f"the child ended itself {GRACE_S:g} s after the "
                                    f"job's time limit of {time_limit_s:g} s"}) + "\n")


def _watch(parent: int, job_dir: Path, deadline: float | None, time_limit_s: float | None) -> None:
    while True:
        if _parent_gone(parent):  # nobody will read the results
            _end(job_dir, remove=True, code=3)
        if deadline is not None and time.monotonic() >= deadline:
            gone = _parent_gone(parent)
            if not gone and time_limit_s is not None:
                _emit_timeout(job_dir, time_limit_s)
            _end(job_dir, remove=gone, code=4)
        time.sleep(PARENT_CHECK_S if deadline is None else max(min(PARENT_CHECK_S, deadline - time.monotonic()), 0))


def _death_signal() -> None:
    """Ask Linux for SIGUSR1 when the parent (thread) ends; the handler checks whether the parent really died."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGUSR1), 0, 0, 0)
    except (OSError, AttributeError):  # no libc prctl: the watcher thread alone
        pass


def guard(parent: int, job_dir: Path, time_limit_s: float | None) -> None:
    """Check the parent now, then watch it (thread and death signal) and enforce the child's own time limit."""
    global _parent
    _parent = parent
    deadline = None if time_limit_s is None else _started + time_limit_s + GRACE_S

    def on_parent_signal(_signum, _frame) -> None:  # a signal handler's signature
        if _parent_gone(parent):
            _end(job_dir, remove=True, code=3)

    if os.name == "posix":
        signal.signal(signal.SIGUSR1, on_parent_signal)
        _death_signal()
    if _parent_gone(parent):  # the parent died before the death signal was set: nobody noticed it
        _end(job_dir, remove=True, code=3)
    threading.Thread(target=_watch, args=(parent, job_dir, deadline, time_limit_s), name="xtlens-child-guard",
                     daemon=True).start()


def _limit(text: str) -> float | None:
    if text == "none":
        return None
    value = float(text)
    if not value == value or value < 0:  # NaN or negative: the parent never sends these
        raise ValueError(text)
    return value


def parse(args: list[str]) -> tuple[int, float | None, str, Path]:
    """``(parent PID > 0, time limit in s or None, module, job folder)``; ``ValueError`` for anything else."""
    if len(args) != 6 or args[0] != "--parent-pid" or args[2] != "--time-limit-s" or not args[4] or not args[5]:
        raise ValueError("arguments")
    parent = int(args[1])
    if parent <= 0:
        raise ValueError(args[1])
    return parent, _limit(args[3]), args[4], Path(args[5])


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        parent, limit, module, job_dir = parse(args)
    except ValueError:
        print("usage: python -m xtlens.profiling.run.child --parent-pid PID --time-limit-s SECONDS|none MODULE "
              "JOB_DIR (started by profiling.run.worker.Job)", file=sys.stderr)
        return 2
    # run as ``-m``, this module is ``__main__``: the worker's ``from xtlens.profiling.run.child import parent_pid``
    # must find this instance (which knows the parent), not import a second one
    sys.modules.setdefault("xtlens.profiling.run.child", sys.modules[__name__])
    guard(parent, job_dir, limit)
    import importlib

    return int(importlib.import_module(module).main([str(job_dir)]) or 0)


if __name__ == "__main__":
    sys.exit(main())
