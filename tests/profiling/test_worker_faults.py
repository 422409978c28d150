"""Issue 8: nothing a job started survives a cancel, a kill of the child or the death of the parent; its
temporary folder is removed; a kill is labelled by its cause; jobs belong to the session that asked.

The fake measurement runs in the real child (loaded by path) and starts a grandchild (``sleep``), writing
both pids to ``$XTLENS_TEST_MARKS``, so the test can count what is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from xtlens.core.config import ModelConfig
from xtlens.profiling.run.plan import SweepOptions, seq_len_workloads
from xtlens.profiling.run.worker import Job, JobManager, JobSpec, QueueFull

TINY = ModelConfig(num_tokens=64, max_seq_len=256, dim=32, depth=1, heads=2, attn_dim_head=16)
CPU = SweepOptions(device="cpu", use_cache=False)


def fake_spawning(what, cfg, wl, *, device, options, config_name, progress):
    """Starts a grandchild that would sleep for 5 minutes, records both pids, then hangs."""
    marks = Path(os.environ["XTLENS_TEST_MARKS"])
    grandchild = subprocess.Popen(["sleep", "300"])
    (marks / "pids").write_text(f"{os.getpid()} {grandchild.pid}")
    time.sleep(300)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose (its parent has not reaped it yet)
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _pids(marks: Path) -> list[int]:
    assert _wait_for(lambda: (marks / "pids").exists()), "the fake measurement never started"
    return [int(p) for p in (marks / "pids").read_text().split()]


def _spec(seq_lens=(32,)) -> JobSpec:
    return JobSpec.make("flops", TINY, seq_len_workloads(list(seq_lens)), CPU, config_name="tiny",
                        measure=f"{__file__}:fake_spawning", time_limit_s=120)


@pytest.fixture
def marks(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XTLENS_TEST_MARKS", str(tmp_path))
    return tmp_path


def test_sigkill_of_the_child_ends_its_group_removes_its_folder_and_is_not_called_oom(marks) -> None:
    job = Job(_spec())
    child, grandchild = _pids(marks)
    job_dir = job._dir
    assert job_dir is not None and job_dir.exists() and _alive(grandchild)
    os.kill(child, signal.SIGKILL)  # from outside xtlens
    rows = job.wait(timeout=30)
    assert job.outcome == "crashed"
    assert [r.status for r in rows] == ["error"]
    assert "killed by SIGKILL from outside xtlens" in rows[0].error
    assert _wait_for(lambda: not _alive(grandchild)), "the grandchild survived the child's kill"
    assert not job_dir.exists()
    assert [p for p in (child, grandchild) if _alive(p)] == []


def test_cancel_ends_the_whole_group(marks) -> None:
    job = Job(_spec())
    child, grandchild = _pids(marks)
    job.cancel()
    assert job.outcome == "cancelled"
    assert _wait_for(lambda: not _alive(grandchild) and not _alive(child))
    assert job._dir is not None and not job._dir.exists()


def test_death_of_the_parent_leaves_no_process_and_no_folder(marks, tmp_path) -> None:
    parent_script = textwrap.dedent("""
        import sys, time
        from xtlens.profiling.run.worker import Job, JobSpec
        spec = JobSpec.from_dict(__import__("json").loads(sys.argv[1]))
        job = Job(spec)
        print(job._dir, flush=True)
        time.sleep(300)
    """)
    import json
    parent = subprocess.Popen([sys.executable, "-c", parent_script, json.dumps(_spec().to_dict())],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        job_dir = Path(parent.stdout.readline().strip())
        child, grandchild = _pids(marks)
        assert job_dir.exists()
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert _wait_for(lambda: not _alive(child) and not _alive(grandchild)), "the job outlived its parent"
        assert _wait_for(lambda: not job_dir.exists()), f"{job_dir} was left behind"
    finally:
        with __import__("contextlib").suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)


def test_jobs_belong_to_their_session(marks) -> None:
    """Session B can neither see, cancel nor forget A's job; asking for the same measurement shares the run;
    B's 'measure again' leaves A's job and rows alone; the per-session limit gives a message."""
    manager = JobManager(max_running=1, max_per_owner=1)
    spec = _spec()
    a_job = manager.submit_spec(spec, owner="A")
    assert manager.get(spec.key(), "A") is a_job
    assert manager.get(spec.key(), "B") is None  # B does not see A's progress bar or Cancel
    assert manager.cancel(spec.key(), "B") is False
    manager.forget(spec.key(), "B")
    assert a_job.outcome == "running"
    shared = manager.submit_spec(spec, owner="B")  # B asks for the same measurement: one run, shared
    assert shared is a_job
    manager.forget(spec.key(), "B")  # B's "measure again": A keeps its job
    assert manager.get(spec.key(), "A") is a_job and a_job.outcome == "running"
    with pytest.raises(QueueFull, match="at most 1 per session"):
        manager.submit_spec(_spec([48]), owner="A")
    b_other = manager.submit_spec(_spec([48]), owner="B")  # B's own job is queued behind A's
    assert b_other.outcome == "pending" and manager.queue_position(b_other.key) == 1
    assert manager.cancel(spec.key(), "A") is True
    assert a_job.outcome == "cancelled"
    assert _wait_for(lambda: b_other.outcome == "running")
    manager.cancel(b_other.key, "B")
    assert b_other.done()
