"""Sweeps on a real Ray cluster that the test starts on 127.0.0.1 (``ray start --head``, fresh temp dir).

Not local mode and not a mock. Ray must be installed (the ``test`` extra pulls in ``ray``): without it
these tests fail, they never skip. The cluster is stopped at the end of the module and the test checks
that none of its processes is left.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from xtlens.core.config import ModelConfig
from xtlens.profiling.results.store import open_store
from xtlens.profiling.run.executor import LocalExecutor, RayExecutor, executor_for
from xtlens.profiling.run.plan import SweepOptions, seq_len_workloads
from xtlens.profiling.run.sweep import run_sweep
from xtlens.profiling.run.worker import JobManager, JobSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ray_cluster import LocalRayCluster  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TINY = ModelConfig(num_tokens=64, max_seq_len=256, dim=32, depth=1, heads=2, attn_dim_head=16)
FAKES = Path(__file__).with_name("ray_fakes.py")
DETERMINISTIC = ("measurement", "phase", "component", "seq_len_tokens", "batch", "dtype", "config_key", "status",
                 "predicted_flops", "torch_counter_flops", "fvcore_macs", "fvcore_flops", "predicted_bytes")


@pytest.fixture(scope="module")
def cluster():
    import ray  # noqa: F401 - fails (never skips) when Ray is missing

    head = LocalRayCluster(num_cpus=2)
    try:
        yield head
    finally:
        import ray

        ray.shutdown()
        head.stop()
        assert head.processes() == [], "the Ray cluster left processes behind"


@pytest.fixture(autouse=True)
def _db(tmp_path, monkeypatch):
    monkeypatch.setenv("XTLENS_DB", str(tmp_path / "results.sqlite"))


@pytest.fixture
def name(request):
    """A unique configuration name; the fakes keep their marker files in /tmp/<name> (removed afterwards)."""
    value = f"xtlens-test-{request.node.name[5:15]}-{uuid.uuid4().hex[:8]}"
    yield value
    shutil.rmtree(Path("/tmp") / value, ignore_errors=True)


def _run(job, timeout: float = 120.0):
    seen = []
    job.start()
    deadline = time.monotonic() + timeout
    while not job.done():
        seen.append(job.progress())
        assert time.monotonic() < deadline, f"{job} still running"
        time.sleep(0.05)
    return job.result(), seen


def test_a_profile_sweep_on_ray_equals_the_local_run(cluster) -> None:
    wls = seq_len_workloads([16, 32, 64])
    spec = JobSpec.make(("flops", "memory"), TINY, wls, SweepOptions(device="auto", phases=("forward", "inference")),
                        config_name="tiny")
    rows, seen = _run(RayExecutor(address=cluster.address).job(spec))
    local = run_sweep([("tiny", TINY)], wls, what=("flops", "memory"),
                      options=SweepOptions(device="cpu", phases=("forward", "inference"), use_cache=False))
    assert all(r.status == "ok" for r in rows), [r.error for r in rows]
    key = lambda r: (r.measurement, r.seq_len_tokens, r.phase, r.component)  # noqa: E731
    ray_rows, local_rows = sorted(rows, key=key), sorted(local, key=key)
    assert [tuple(getattr(r, c) for c in DETERMINISTIC) for r in ray_rows] == \
           [tuple(getattr(r, c) for c in DETERMINISTIC) for r in local_rows]
    # parameter count: the weights' measured bytes / 4 (float32) equal on both sides
    weights = [(r.seq_len_tokens, r.measured_bytes) for r in ray_rows if r.component == "weights"]
    assert weights and weights == [(r.seq_len_tokens, r.measured_bytes) for r in local_rows if r.component == "weights"]
    assert {r.device for r in rows} == {"cpu"} and all(r.device_name for r in rows)
    # progress streamed as points finished
    fractions = sorted({f for f, _ in seen})
    assert any(0 < f < 1 for f in fractions) and any("done:" in m for _, m in seen)
    stored = open_store().query()
    ray_stored = stored[stored["source"] == "ray"]
    assert len(ray_stored) == len(rows) and set(ray_stored["host"]) == {os.uname().nodename}
    assert set(stored[stored["source"] == "local"]["config_key"]) == set(ray_stored["config_key"])
    # a second run is served from the store (the latest run of each point: the local one), no task runs
    again, _ = _run(RayExecutor(address=cluster.address).job(spec))
    assert sorted(again, key=key) == local_rows and open_store().count() == len(stored)


def test_a_killed_worker_is_retried_once_and_a_dying_one_gives_a_failure_row(cluster, name) -> None:
    marks = Path("/tmp") / name
    spec = JobSpec.make("flops", TINY, seq_len_workloads([16, 32, 48, 64, 80]), SweepOptions(device="cpu"),
                        config_name=name, measure=f"{FAKES}:killed_then_dying")
    job = RayExecutor(address=cluster.address).job(spec).start()
    deadline = time.monotonic() + 90
    while not (marks / "48.first").exists():
        assert time.monotonic() < deadline and not job.done(), job.progress()
        time.sleep(0.05)
    time.sleep(0.2)
    os.kill(int((marks / "48.first").read_text()), signal.SIGKILL)  # kill the worker mid-sweep
    rows, _ = _run(job)
    by_len = {r.seq_len_tokens: r for r in rows}
    assert [r.seq_len_tokens for r in rows] == [16, 32, 48, 64, 80]
    assert all(by_len[n].status == "ok" and by_len[n].predicted_flops == 7 * n for n in (16, 32, 48, 80))
    assert "attempt 2" in by_len[48].method and "worker process died" in by_len[48].method
    assert by_len[64].status == "error"
    assert by_len[64].error.startswith("the Ray worker failed twice (retried once): first the worker process died")
    assert len(list(marks.glob("64.*"))) == 2  # tried exactly twice
    stored = open_store().query(config=name)
    attempts = {int(r.seq_len_tokens): int(r.attempts) for r in stored.itertuples()}
    assert attempts == {16: 1, 32: 1, 48: 2, 64: 2, 80: 1}


def test_cancel_cancels_the_remaining_tasks(cluster, name) -> None:
    marks = Path("/tmp") / name
    manager = JobManager(executor=RayExecutor(address=cluster.address))
    job = manager.submit("flops", [(name, TINY)], seq_len_workloads([16, 32, 48]), SweepOptions(device="cpu"),
                         measure=f"{FAKES}:slow")
    deadline = time.monotonic() + 60
    while len(list(marks.glob("*.*"))) < 2:  # two CPUs: two tasks running, one waiting
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pids = [int(p.name.split(".")[1]) for p in marks.glob("*.*")]
    t0 = time.monotonic()
    job.cancel()
    assert job.done() and job.outcome == "cancelled" and time.monotonic() - t0 < 30
    assert [r.error for r in job.result()] == ["cancelled before this point finished"] * 3
    time.sleep(1.0)
    alive = [p for p in pids if Path(f"/proc/{p}").exists() and "State:\tZ" not in Path(f"/proc/{p}/status").read_text()]
    assert alive == []  # the running tasks' worker processes were stopped


def test_cli_profile_on_ray(cluster, tmp_path) -> None:
    out = tmp_path / "ray.csv"
    env = {**os.environ, "XTLENS_DB": str(tmp_path / "cli.sqlite")}
    (tmp_path / "tiny.json").write_text(TINY.to_json())
    run = subprocess.run([sys.executable, "-m", "xtlens.profiling.cli", "profile", "--config", str(tmp_path / "tiny.json"),
                          "--ray", cluster.address, "--what", "flops", "--seq-lens", "16,32", "--device", "cpu", "--out",
                          str(out)], capture_output=True, text=True, env=env, timeout=180)
    assert run.returncode == 0, run.stderr
    assert "on Ray cluster at 127.0.0.1" in run.stderr
    from xtlens.profiling.results.export import read_records

    rows = read_records(out)
    assert [(r.seq_len_tokens, r.status) for r in rows] == [(16, "ok"), (32, "ok")]
    listed = subprocess.run([sys.executable, "-m", "xtlens.profiling.cli", "results", "list"], capture_output=True,
                            text=True, env=env, timeout=60)
    assert listed.returncode == 0 and "ray" in listed.stdout and " 2 " in listed.stdout


def test_executor_choice() -> None:
    assert isinstance(executor_for(None), LocalExecutor) and isinstance(executor_for(""), LocalExecutor)
    ray_ex = executor_for("auto")
    assert isinstance(ray_ex, RayExecutor) and ray_ex.address == "auto"
    assert ray_ex.describe() == "Ray cluster at auto"


def test_the_page_measures_on_the_ray_cluster(cluster, monkeypatch) -> None:
    """Sidebar: Run measurements on -> Ray cluster; Measure on the Overview runs as Ray tasks (fast fake measure)."""
    import dataclasses

    from streamlit.testing.v1 import AppTest
    from xtlens.dashboard.session import jobs

    fake = str(Path(__file__).resolve().parents[1] / "dashboard" / "fake_measure.py") + ":measure"
    real_spec = jobs.Request.spec
    monkeypatch.setattr(jobs.Request, "spec", lambda self: dataclasses.replace(real_spec(self), measure=fake))
    app = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
    at = AppTest.from_file(str(app), default_timeout=120)
    at.query_params.update({"seq_len": "256"})
    at.run()
    at.radio(key="run.on").set_value("Ray cluster").run()
    at.text_input(key="run.ray_address").set_value(cluster.address).run()
    at.selectbox(key="run.ray_device").set_value("cpu").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(f"Ray cluster at {cluster.address}: 1 node(s), 2 CPU(s), 0 GPU(s)" in c.value for c in at.caption)
    assert any("one Ray task per point" in c.value for c in at.caption)
    at.button(key="measure.overview").click().run()
    (job,) = jobs.manager(cluster.address).jobs()
    assert type(job).__name__ == "RayJob"
    job.wait(timeout=120)
    at.run()
    assert not at.exception
    assert [m.value for m in at.metric if m.label == "Forward latency (median)"] == [f"{1e-6 * 256 * 256:,.2f} ms"]
    stored = open_store().query()
    assert set(stored["source"]) == {"ray"} and len(stored) == len(job.result())


def test_cuda_points_on_a_cluster_without_gpus_are_refused_with_the_reason(cluster) -> None:
    spec = JobSpec.make("flops", TINY, seq_len_workloads([16, 32]), SweepOptions(device="cuda"), config_name="tiny")
    rows, _ = _run(RayExecutor(address=cluster.address).job(spec))
    assert [r.status for r in rows] == ["error", "error"]
    assert rows[0].error == (f"the Ray cluster at {cluster.address} has no GPU, so device 'cuda' cannot run there "
                             "(use device cpu or auto)")
