"""Measurement jobs in a real child process: progress, results, time limit, errors, OOM, crashes, the manager.

The fake measurements below run in the child (loaded from this file by path: ``JobSpec.measure``).
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from xtlens.core.config import ModelConfig, Workload
from xtlens.profiling.results.records import ProfileRecord, base_fields
from xtlens.profiling.run.plan import SweepOptions, config_grid, seq_len_workloads
from xtlens.profiling.run.worker import Job, JobManager, JobSpec

TINY = ModelConfig(num_tokens=64, max_seq_len=256, dim=32, depth=1, heads=2, attn_dim_head=16)
CPU = SweepOptions(device="cpu", use_cache=False)


def _row(what, cfg, wl, device, config_name, **extra) -> ProfileRecord:
    fields = base_fields(cfg, wl, config_name=config_name, measurement=what, phase="forward", device=device,
                         device_name="fake")
    return ProfileRecord(**fields, **extra)


def fake_mixed(what, cfg, wl, *, device, options, config_name, progress):
    """seq_len 32: ok; 48: raises; 64: CUDA-style out of memory; longer: would be ok (but are skipped)."""
    if progress is not None:
        progress(0.5, f"measuring {wl.seq_len}")
    time.sleep(0.3)  # long enough for the parent to see the progress
    if wl.seq_len == 48:
        raise ValueError("fake failure at 48 tokens")
    if wl.seq_len == 64:
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.19 GiB total capacity)")
    return [_row(what, cfg, wl, device, config_name, predicted_flops=7 * wl.tokens)]


def fake_slow(what, cfg, wl, *, device, options, config_name, progress):
    """Fast for 32 tokens, then hangs."""
    if wl.seq_len > 32:
        time.sleep(60)
    return [_row(what, cfg, wl, device, config_name, predicted_flops=wl.tokens)]


def fake_crash(what, cfg, wl, *, device, options, config_name, progress):
    if wl.seq_len > 32:
        os.kill(os.getpid(), signal.SIGSEGV)
    return [_row(what, cfg, wl, device, config_name, predicted_flops=wl.tokens)]


def _spec(measure: str, seq_lens, **kw) -> JobSpec:
    return JobSpec.make("flops", TINY, seq_len_workloads(seq_lens), CPU, config_name="tiny",
                        measure=f"{__file__}:{measure}", **kw)


def _statuses(rows):
    return [(r.seq_len_tokens, r.status) for r in rows]


def test_job_reports_rows_errors_and_oom_with_progress() -> None:
    job = Job(_spec("fake_mixed", [32, 48, 64, 96]))
    seen = []
    while not job.done():
        seen.append(job.progress())
        time.sleep(0.05)
    rows = job.result()
    assert job.outcome == "finished"
    assert _statuses(rows) == [(32, "ok"), (48, "error"), (64, "oom"), (96, "oom")]
    assert rows[0].predicted_flops == 7 * 32 and rows[0].config_name == "tiny"
    assert rows[1].error.startswith("ValueError during the flops measurement on ")
    assert rows[1].error.endswith("(batch 1 x 48 tokens in float32): fake failure at 48 tokens")
    assert rows[2].error.startswith("Out of memory on ")
    assert "Details: CUDA out of memory. Tried to allocate 20.00 GiB" in rows[2].error
    assert rows[3].error == "skipped: batch=1 seq_len=64 already ran out of memory"
    assert "Traceback" not in "".join(r.error or "" for r in rows)
    assert job.progress() == (1.0, "done: 4 point(s)")
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions)
    assert any(0 < f < 1 and " measuring " in m for f, m in seen)  # polled while the child ran
    assert ((3 - 1 + 0.5) / 4, "3/4 measuring 64") in seen or ((4 - 1 + 0.5) / 4, "4/4 measuring 96") in seen


def test_time_limit_kills_and_keeps_finished_rows() -> None:
    start = time.monotonic()
    # 8 s: the child imports torch within the limit even on 2 shared, busy cores (4 s was not always enough)
    job = Job(_spec("fake_slow", [32, 64, 128], time_limit_s=8))
    rows = job.wait(timeout=30)
    assert time.monotonic() - start < 20
    assert job.outcome == "timeout"
    assert _statuses(rows) == [(32, "ok"), (64, "timeout"), (128, "timeout")]
    assert "time limit of 8 s" in rows[1].error and rows[2].error == "not run: the job hit its time limit of 8 s"
    assert rows[0].predicted_flops == 32


def test_crashed_child_gives_error_rows_not_a_traceback() -> None:
    job = Job(_spec("fake_crash", [32, 64, 128]))
    rows = job.wait(timeout=30)
    assert job.outcome == "crashed"
    assert _statuses(rows) == [(32, "ok"), (64, "error"), (128, "error")]
    assert rows[1].error == "the measurement process crashed (SIGSEGV)"
    assert rows[2].error == "not run: the measurement process crashed (SIGSEGV)"


def test_bad_device_is_a_clear_error_row() -> None:
    spec = JobSpec.make("memory", TINY, seq_len_workloads([32]), SweepOptions(device="tpu"), config_name="tiny")
    rows = Job(spec).wait(timeout=30)
    assert [r.status for r in rows] == ["error"]
    assert rows[0].error == "Unknown device 'tpu': use 'auto', 'cpu', 'cuda' or 'cuda:N'."


def test_manager_returns_the_same_job_and_queues(tmp_path) -> None:
    manager = JobManager(max_running=1)
    wls = seq_len_workloads([32])
    first = manager.submit("flops", TINY, wls, CPU, config_name="tiny", measure=f"{__file__}:fake_slow")
    second = manager.submit("flops", TINY, seq_len_workloads([64]), CPU, config_name="tiny",
                            measure=f"{__file__}:fake_mixed")
    assert first.outcome == "running" and second.outcome == "pending"
    assert manager.submit("flops", TINY, wls, CPU, config_name="tiny", measure=f"{__file__}:fake_slow") is first
    rows = first.wait(timeout=30)
    assert _statuses(rows) == [(32, "ok")]
    assert _statuses(second.wait(timeout=30)) == [(64, "oom")]
    t0 = time.monotonic()
    again = manager.submit("flops", TINY, wls, CPU, config_name="tiny", measure=f"{__file__}:fake_slow")
    assert again is first and again.done() and time.monotonic() - t0 < 0.1
    # a cancelled job is measured again on the next submit
    slow = manager.submit("flops", TINY, seq_len_workloads([64]), CPU, measure=f"{__file__}:fake_slow")
    slow.cancel()
    assert slow.outcome == "cancelled" and [r.error for r in slow.result()] == ["cancelled before this point finished"]
    retry = manager.submit("flops", TINY, seq_len_workloads([64]), CPU, measure=f"{__file__}:fake_slow")
    assert retry is not slow
    retry.cancel()


def test_spec_round_trip_and_grid_skips() -> None:
    grid = config_grid(TINY, dim=[32, 64], heads=[2])
    spec = JobSpec.make(["flops", "memory"], grid, [Workload(batch=2, seq_len=16, dtype="bfloat16")], CPU)
    assert JobSpec.from_dict(spec.to_dict()) == spec
    assert spec.key() == JobSpec.from_dict(spec.to_dict()).key()
    assert len(spec.points()) == 4
    other = JobSpec.make(["flops", "memory"], grid, [Workload(batch=2, seq_len=16, dtype="bfloat16")],
                         SweepOptions(device="cpu", repeats=9))
    assert other.key() != spec.key()
    with pytest.raises(ValueError, match="what"):
        JobSpec.make("speed", TINY, [Workload()], CPU)


def test_real_flops_job_in_a_child_process(tmp_path, monkeypatch) -> None:
    from xtlens.core.cost_model import flop_counts

    monkeypatch.setenv("XTLENS_CACHE_DIR", str(tmp_path))
    job = Job(JobSpec.make("flops", TINY, seq_len_workloads([16, 32]), SweepOptions(device="cpu"), config_name="tiny"))
    seen = set()
    while not job.done():
        seen.add(job.progress())
        time.sleep(0.05)
    rows = job.result()
    assert job.outcome == "finished", job.stderr_tail()
    assert [(r.seq_len_tokens, r.status) for r in rows] == [(16, "ok"), (32, "ok")]
    assert [r.torch_counter_flops for r in rows] == [flop_counts(TINY, Workload(seq_len=n)).fwd_flops for n in (16, 32)]
    assert job.progress() == (1.0, "done: 2 point(s)")
    from xtlens.profiling.results.store import ResultStore

    stored = ResultStore(tmp_path / "results.sqlite").query()  # the child stored the rows (and filled the cache)
    assert sorted(stored["seq_len_tokens"]) == [16, 32] and stored["cache_key"].notna().all()


def test_a_child_that_cannot_start_gives_error_rows() -> None:
    job = Job(_spec("fake_mixed", [32, 64]), python="/nonexistent/python3")
    assert job.done() and job.outcome == "crashed"
    rows = job.result()
    assert [r.status for r in rows] == ["error", "error"]
    assert rows[0].error.startswith("could not start the measurement process (/nonexistent/python3): ")


def test_a_job_without_a_time_limit_finishes_with_its_message() -> None:
    job = Job(_spec("fake_slow", [32], time_limit_s=None))
    job.wait(timeout=60)
    assert job.outcome == "finished" and job.progress() == (1.0, "done: 1 point(s)")


def test_child_events_write_json_lines_and_watch_the_parent(tmp_path) -> None:
    """The one child-side helper (the sweep child and the probe child use it): each event is a flushed JSON
    line, and a daemon thread watches the parent (it took the job folder since issue 8; the probe child
    had passed the old arguments, so its watcher died with a TypeError)."""
    import json
    import threading

    from xtlens.profiling.benefit import jobs as probe_jobs
    from xtlens.profiling.run import worker

    assert probe_jobs.child_events is worker.child_events
    before = {t.ident for t in threading.enumerate()}
    emit = worker.child_events(tmp_path)
    emit({"type": "progress", "fraction": 0.5, "message": "half"})
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [{"type": "progress", "fraction": 0.5, "message": "half"}]
    watchers = [t for t in threading.enumerate() if t.ident not in before and t.daemon]
    assert len(watchers) == 1 and watchers[0].is_alive()  # still alive: it did not fail on its arguments


def _probe_spec(**kw):
    from xtlens.core.config import PRESETS
    from xtlens.profiling.benefit.jobs import ProbeSpec
    from xtlens.profiling.benefit.probes import ProbeOptions

    options = ProbeOptions(probe="heads", base=PRESETS["seed"], values=(2,), tokens=1024, seq_len=32, batch=8,
                           evals=2, seeds=(0,), extra={"eval_tokens": 512}, **kw)
    return ProbeSpec(options=options, time_limit_s=60)


def test_probe_jobs_have_the_measurement_jobs_owners_and_limits() -> None:
    """One manager for measurement and probe jobs: two sessions submitting the same probe share one run, but B
    never sees or cancels A's job as its own; the run is cancelled only when its last owner lets go; a session
    may hold ``max_per_owner`` unfinished probe jobs. (The jobs stay queued: ``max_running=0``; the same rules
    hold while they run, see test_worker_faults.)"""
    from xtlens.profiling.benefit.jobs import ProbeJob
    from xtlens.profiling.run.worker import QueueFull

    mgr = JobManager(max_running=0, max_per_owner=1)
    job = mgr.submit_spec(_probe_spec(), owner="A")
    assert isinstance(job, ProbeJob) and job.outcome == "pending"
    # B has not asked: it does not see A's job, and its cancel is refused without touching A's
    assert mgr.get(job.key, "B") is None and mgr.get(job.key, "A") is job
    assert mgr.cancel(job.key, "B") is False and job.outcome == "pending"
    mgr.forget(job.key, "B")
    assert mgr.get(job.key, "A") is job and job.outcome == "pending"
    # B asks for the same probe: one shared run; B letting go leaves A's run alone
    assert mgr.submit_spec(_probe_spec(), owner="B") is job
    assert mgr.cancel(job.key, "B") is True
    assert job.outcome == "pending" and mgr.get(job.key, "A") is job and mgr.get(job.key, "B") is None
    # the per-owner limit applies to probes as to measurements
    with pytest.raises(QueueFull, match="at most 1 per session"):
        mgr.submit_spec(_probe_spec(device="cpu", full_size=True), owner="A")
    # the last owner lets go: now the run is cancelled, every planned run ends with a "cancelled" row
    assert mgr.cancel(job.key, "A") is True
    assert job.outcome == "cancelled" and mgr.get(job.key, "A") is job  # kept, cancelled, for A to see and retry
    rows = job.result()
    # 2 heads (fixed and x-transformers' rotary width), 1, 2 and 4 K/V heads, the shuffled-context control
    assert len(rows) == len(_probe_spec().points()) == 6 and {r.status for r in rows} == {"cancelled"}
