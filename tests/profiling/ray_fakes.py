"""Measurements that misbehave, run inside Ray workers (loaded by path: ``JobSpec.measure``).

Each test names its configuration uniquely; the fakes keep their marker files in ``/tmp/<config_name>``.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from xtlens.profiling.results.records import ProfileRecord, base_fields


def _dir(config_name: str) -> Path:
    path = Path("/tmp") / config_name
    path.mkdir(exist_ok=True)
    return path


def _row(what, cfg, wl, device, config_name) -> ProfileRecord:
    fields = base_fields(cfg, wl, config_name=config_name, measurement=what, phase="forward", device=device,
                         device_name="fake")
    return ProfileRecord(**fields, predicted_flops=7 * wl.tokens, method="fake")


def killed_then_dying(what, cfg, wl, *, device, options, config_name, progress):
    """48 tokens: the first attempt writes its pid and waits to be killed (the test kills it); the retry works.
    64 tokens: the worker kills itself, every time. Others: a row after a short pause."""
    marks = _dir(config_name)
    if wl.seq_len == 48 and not (marks / "48.first").exists():
        (marks / "48.first").write_text(str(os.getpid()))
        time.sleep(120)
    if wl.seq_len == 64:
        (marks / f"64.{os.getpid()}").write_text("")
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.5)
    return [_row(what, cfg, wl, device, config_name)]


def slow(what, cfg, wl, *, device, options, config_name, progress):
    """Writes its pid, then takes 120 s (to be cancelled)."""
    (_dir(config_name) / f"{wl.seq_len}.{os.getpid()}").write_text("")
    time.sleep(120)
    return [_row(what, cfg, wl, device, config_name)]
