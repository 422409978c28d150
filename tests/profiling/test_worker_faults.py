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


# --- issue 22: the child learns its parent before any heavy import and enforces its own time limit ----------

def _children_of(parent: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    out.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``: the child leads its own, its grandchildren are in it."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(entry.name))
    return out


def test_a_parent_killed_at_once_leaves_no_process_and_no_folder(marks) -> None:
    """The reproducer: SIGKILL the parent 0, 0.2, 0.5 and 1.0 s after the worker child appears (while the child
    still imports torch). Before issue 22 the child recorded its parent only after that import, missed the
    death and ran on under PID 1 past any time limit, its folder left behind. Now, within the child's own time
    limit (3 s + grace), 0 processes of its group and 0 folders remain."""
    import json

    from xtlens.profiling.run.child import GRACE_S

    parent_script = textwrap.dedent("""
        import sys, time
        from xtlens.profiling.run.worker import Job, JobSpec
        job = Job(JobSpec.from_dict(__import__("json").loads(sys.argv[1])))
        print(job._dir, flush=True)
        time.sleep(300)
    """)
    limit_s = 3.0
    spec = JobSpec.make("flops", TINY, seq_len_workloads([32]), CPU, config_name="tiny",
                        measure=f"{__file__}:fake_spawning", time_limit_s=limit_s)
    delays_s = (0.0, 0.2, 0.5, 1.0)
    parents = [subprocess.Popen([sys.executable, "-c", parent_script, json.dumps(spec.to_dict())],
                                stdout=subprocess.PIPE, text=True, start_new_session=True) for _ in delays_s]
    seen = []
    try:
        for parent, delay_s in zip(parents, delays_s, strict=True):
            job_dir = Path(parent.stdout.readline().strip())
            assert _wait_for(lambda p=parent: bool(_children_of(p.pid)), timeout=30), "no child appeared"
            (child,) = _children_of(parent.pid)
            appeared = time.monotonic()
            time.sleep(max(appeared + delay_s - time.monotonic(), 0))
            os.kill(parent.pid, signal.SIGKILL)
            parent.wait()
            seen.append((delay_s, child, job_dir, appeared))
        # by the child's own time limit (counted from its start, before it appeared here) everything is gone
        last = max(appeared for *_, appeared in seen)
        _wait_for(lambda: not any(_group_members(c) or d.exists() for _, c, d, _ in seen),
                  timeout=max(last + limit_s + GRACE_S + 1.0 - time.monotonic(), 0.5))
        left = {delay: (_group_members(child), job_dir.exists()) for delay, child, job_dir, _ in seen}
        assert left == {delay: ([], False) for delay in delays_s}, f"(processes, folder) left per delay: {left}"
    finally:
        for parent in parents:
            with __import__("contextlib").suppress(ProcessLookupError):
                os.killpg(parent.pid, signal.SIGKILL)
        for _, child, job_dir, _ in seen:
            with __import__("contextlib").suppress(ProcessLookupError):
                os.killpg(child, signal.SIGKILL)
            __import__("shutil").rmtree(job_dir, ignore_errors=True)  # only left when the test failed


def test_the_child_ends_itself_at_its_own_time_limit_when_the_parent_does_not(marks, monkeypatch) -> None:
    """A parent whose watchdog does not fire (frozen, starved): the child stops itself GRACE_S after its own time
    limit, says so in its events, and the parent labels the rows ``timeout``. (The parent's limit here is 120 s,
    the child is told 5 s.)"""
    from xtlens.profiling.run import child as guard
    from xtlens.profiling.run import worker

    real = guard.command
    monkeypatch.setattr(worker, "child_command",
                        lambda python, module, job_dir, *, time_limit_s: real(python, module, job_dir, time_limit_s=5.0))
    start = time.monotonic()
    job = Job(_spec())
    assert job._proc is not None
    rows = job.wait(timeout=60)
    assert 5.0 <= time.monotonic() - start < 60
    assert job.outcome == "timeout" and [r.status for r in rows] == ["timeout"], [r.error for r in rows]
    assert _wait_for(lambda: not _group_members(job._proc.pid))  # the grandchild too, if it had started
    assert job._dir is not None and not job._dir.exists()


def test_the_guard_refuses_bad_arguments_and_a_parent_that_is_already_gone(tmp_path) -> None:
    """The child's first code (standard library only): a usage message for bad arguments; a parent PID that is
    not its parent (the parent died before the child looked) ends it at once and removes the folder."""
    usage = subprocess.run([sys.executable, "-m", "xtlens.profiling.run.child", "--parent-pid", "x"],
                           capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "usage: python -m xtlens.profiling.run.child" in usage.stderr
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    start = time.monotonic()
    orphan = subprocess.run([sys.executable, "-m", "xtlens.profiling.run.child", "--parent-pid", "1",
                             "--time-limit-s", "30", "xtlens.profiling.run.worker", str(job_dir)],
                            capture_output=True, text=True, timeout=60)
    assert orphan.returncode == 3 and not job_dir.exists()
    assert time.monotonic() - start < 5  # it never imported the worker (torch: several seconds)


def test_a_job_started_from_a_thread_that_ends_keeps_running(marks) -> None:
    """A server starts jobs from short-lived threads (Streamlit: one per rerun). Linux sends the parent-death
    signal when the *thread* that started the child ends; the child checks that the parent process is really
    gone before it ends itself, so the job runs on."""
    import threading

    started = []

    def server_thread() -> None:  # starts the job, stays until the child is past its guard, then ends
        started.append(Job(_spec()))
        _pids(marks)

    thread = threading.Thread(target=server_thread)
    thread.start()
    thread.join()
    (job,) = started
    child, grandchild = _pids(marks)
    time.sleep(1.0)  # the thread ended: the child got its parent-death signal and checked the parent
    assert job.outcome == "running" and _alive(child) and _alive(grandchild)
    job.cancel()
    assert job.outcome == "cancelled" and _wait_for(lambda: not _alive(child) and not _alive(grandchild))


def test_the_guard_command_passes_only_a_usable_time_limit() -> None:
    from xtlens.profiling.run.child import command, parse

    for given, passed in ((3, 3.0), (0.5, 0.5), (None, None), (float("inf"), None), (float("nan"), None), (-5, 0.0)):
        argv = command("python", "xtlens.profiling.run.worker", "/tmp/job", time_limit_s=given)
        assert argv[:3] == ["python", "-m", "xtlens.profiling.run.child"]
        assert parse(argv[3:]) == (os.getpid(), passed, "xtlens.profiling.run.worker", Path("/tmp/job")), given


def test_an_oom_kill_of_the_child_names_the_part_that_does_not_fit(marks, monkeypatch) -> None:
    """The kernel's OOM killer (its cgroup count rises during the job, here simulated) SIGKILLs the child: the
    ``oom`` row says so and, like every other ``oom`` row, which part of the prediction does not fit."""
    from xtlens.profiling.run import worker

    counts = iter([0])
    monkeypatch.setattr(worker, "_oom_kills", lambda: next(counts, 1))
    job = Job(_spec())
    child, grandchild = _pids(marks)
    os.kill(child, signal.SIGKILL)
    (row,) = job.wait(timeout=30)
    assert row.status == "oom" and "out-of-memory killer" in row.error
    assert "activations at this shape are the part that does not fit" in row.error, row.error
