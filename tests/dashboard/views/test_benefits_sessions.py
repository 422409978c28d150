"""Issue 22: probe jobs on the Benefits tab are owned like measurement jobs. Two real sessions (two AppTests on
one job manager) with the same probe settings: B sees neither A's progress nor its Cancel (on the tab or in the
sidebar's job tray), B's Cancel of the shared run withdraws only B, and a session may hold at most
``max_per_owner`` unfinished probe jobs. A's probe is a real child process training the seed's family."""

from __future__ import annotations

import os
from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[3] / "dashboard" / "app.py"


def _benefits() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    at.session_state["view"] = "Benefits"
    return at.run()


def _keys(at: AppTest, prefix: str) -> list[str]:
    return [b.key for b in at.button if b.key and b.key.startswith(prefix)]


def _progress_texts(at: AppTest) -> list[str]:
    return [str(getattr(e.proto, "text", "")) for e in at.get("progress")]


def _tray(at: AppTest) -> str:
    return " ".join(m.value for m in at.sidebar.markdown)


def test_two_sessions_probe_jobs_are_isolated(monkeypatch, tmp_path) -> None:
    from xtlens.dashboard.session import jobs
    from xtlens.profiling.run.worker import JobManager

    monkeypatch.setenv("XTLENS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("XTLENS_DB", str(tmp_path / "results.sqlite"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    manager = JobManager(max_running=1, max_per_owner=2)
    monkeypatch.setattr(jobs, "manager", lambda address=None: manager)
    try:
        a, b = _benefits(), _benefits()
        assert not a.exception and not b.exception
        a.button(key="benefits.run.scaling").click().run()
        (job,) = manager.jobs()
        cancel = f"benefits.cancel.{job.key}"
        assert job.outcome == "running" and _keys(a, cancel) and any("scaling probe" in t for t in _progress_texts(a))
        assert "scaling probe" in _tray(a)
        # the probe's child is guarded like a measurement's: it knows the server's PID and its own time limit
        argv = Path(f"/proc/{job._proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"xtlens.profiling.run.child" in argv and argv[argv.index(b"--parent-pid") + 1] == str(os.getpid()).encode()
        assert b"xtlens.profiling.benefit.jobs" in argv
        # B, same settings, has not asked: no progress, no Cancel, nothing in its tray; its own Run probe button
        b.run()
        assert not b.exception
        assert not _keys(b, "benefits.cancel.") and not _progress_texts(b) and _keys(b, "benefits.run.scaling")
        assert "scaling probe" not in _tray(b)
        # B asks for the same probe: one shared run; B's Cancel withdraws B only
        b.button(key="benefits.run.scaling").click().run()
        assert manager.jobs() == [job] and _keys(b, cancel)
        b.button(key=cancel).click().run()
        assert job.outcome == "running" and not job.done()
        assert _keys(a.run(), cancel) and any("scaling probe" in t for t in _progress_texts(a))
        b.run()
        assert not _keys(b, "benefits.cancel.") and not _progress_texts(b) and _keys(b, "benefits.run.scaling")
        assert "scaling probe" not in _tray(b), _tray(b)  # B let go: A's progress is not B's to see
        # the per-session limit holds for probes: A's second probe queues, a third gets the message
        a.radio(key="benefits.probe").set_value("stability").run()
        a.button(key="benefits.run.stability").click().run()
        assert len(manager.jobs()) == 2 and any("queued" in t for t in _progress_texts(a))
        a.radio(key="benefits.probe").set_value("heads").run()
        a.button(key="benefits.run.heads").click().run()
        assert len(manager.jobs()) == 2
        assert any("at most 2 per session" in w.value for w in a.warning), [w.value for w in a.warning]
        # A's Cancel (the last owner) ends the run
        a.radio(key="benefits.probe").set_value("scaling").run()
        a.button(key=cancel).click().run()
        assert job.wait(timeout=60) is not None and job.outcome == "cancelled"
        assert not a.exception and not b.exception
    finally:
        manager.cancel_all()
