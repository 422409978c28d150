"""Probes run like every other measurement: their runs are cached in the SQLite result store, and
``xtlens probe --ray`` trains them as Ray tasks on a real cluster the test starts on 127.0.0.1.

Tiny configurations (4 optimizer steps per run) keep these short. The Ray test fails, never skips, when
Ray is missing.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest
from xtlens.core.config import PRESETS
from xtlens.profiling.benefit import probe_store
from xtlens.profiling.benefit.jobs import ProbeJob, ProbeRayJob, ProbeSpec
from xtlens.profiling.benefit.probes import ProbeOptions, plan, run_probe
from xtlens.profiling.benefit.records import read_probe_table
from xtlens.profiling.cli import main
from xtlens.profiling.results.store import db_path, open_store
from xtlens.profiling.run.executor import LocalExecutor, RayExecutor, executor_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ray_cluster import LocalRayCluster  # noqa: E402

SEED = PRESETS["seed"]
SAME = ("run_key", "config_name", "config_key", "variant", "seed", "row_kind", "layer", "step", "tokens_seen",
        "train_flops", "train_loss_nats", "val_loss_nats", "val_bits_per_byte", "grad_norm", "clip_fraction",
        "update_to_weight_ratio", "num_params", "corpus_sha256", "status")
TINY_ARGS = ["--values", "2", "--tokens", "1024", "--seq-len", "32", "--batch", "8", "--evals", "2",
             "--eval-tokens", "512", "--seeds", "0"]


def tiny(**kw) -> ProbeOptions:
    kw.setdefault("seeds", (0,))
    return ProbeOptions(probe="heads", base=SEED, values=(2,), tokens=1024, seq_len=32, batch=8, evals=2,
                        extra={"eval_tokens": 512}, **kw)


def same(rows) -> list[tuple]:
    return [tuple(getattr(r, c) for c in SAME) for r in rows]


def test_a_second_identical_probe_is_served_from_the_result_store_unless_fresh() -> None:
    first = run_probe(tiny())
    # 2 heads (fixed rotary width) and 2 heads (x-transformers' rotary rule), 1, 2 and 4 K/V heads, the
    # shuffled-context control = 6 runs, 6 distinct trainings
    n_runs = len(plan(tiny()))
    assert n_runs == 6 and {r.source for r in first} == {"measured"} and all(r.stored_at == "" for r in first)
    stored = probe_store.rows_count()
    assert stored == len(first)
    # the rows are in the same SQLite file as every other measurement, keyed by the run
    with sqlite3.connect(db_path()) as con:
        keys = {k for (k,) in con.execute("SELECT DISTINCT run_key FROM probe_results")}
        tables = {t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert keys == {r.run_key for r in first} and len(keys) == n_runs and {"results", "probe_results"} <= tables
    open_store().count()  # the sweep side of the file is untouched and still opens

    second = run_probe(tiny())
    assert probe_store.rows_count() == stored  # nothing trained, nothing stored
    assert {r.source for r in second} == {"cache"} and all(r.stored_at for r in second)
    assert same(second) == same(first)
    assert [r.timestamp for r in second] == [r.timestamp for r in first]  # the original measurement time
    assert all(r.stored_at >= r.timestamp for r in second)  # stored when the run ended

    again = run_probe(tiny(), use_cache=False)  # --fresh / Measure again
    assert {r.source for r in again} == {"measured"} and probe_store.rows_count() == 2 * stored
    assert min(r.timestamp for r in again) >= max(r.timestamp for r in first)
    assert [r.val_loss_nats for r in again] == [r.val_loss_nats for r in first]  # deterministic on CPU
    served = run_probe(tiny())
    assert [r.timestamp for r in served] == [r.timestamp for r in again]  # the latest stored run is served

    other_seed = run_probe(tiny(seeds=(1,)))  # the seed is part of the key
    assert {r.source for r in other_seed} == {"measured"}


def test_failed_runs_are_stored_but_never_served(tmp_path) -> None:
    run = plan(tiny())[0]
    from xtlens.profiling.benefit.probes import failure_rows_for

    probe_store.store_run("k-error", failure_rows_for(run, "error", "boom"), source="local")
    assert probe_store.cached_run("k-error") is None and probe_store.rows_count() == 1


def test_cli_says_where_rows_came_from_and_fresh_trains_again(tmp_path, capsys) -> None:
    out = tmp_path / "heads.csv"
    assert main(["probe", "heads", *TINY_ARGS, "--out", str(out)]) == 0
    assert "6 run(s) measured now" in capsys.readouterr().err
    assert main(["probe", "heads", *TINY_ARGS, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "0 run(s) measured now; 6 from the result store (measured 20" in err and "--fresh" in err
    assert set(read_probe_table(out)["source"]) == {"cache"}
    assert main(["probe", "heads", *TINY_ARGS, "--fresh", "--out", str(out)]) == 0
    assert "6 run(s) measured now" in capsys.readouterr().err
    assert set(read_probe_table(out)["source"]) == {"measured"}


def test_executors_build_the_probe_jobs() -> None:
    spec = ProbeSpec(options=tiny())
    assert type(LocalExecutor().job(spec)) is ProbeJob
    assert type(executor_for("127.0.0.1:1").job(spec)) is ProbeRayJob


@pytest.mark.ray
@pytest.mark.slow
def test_a_probe_on_a_real_ray_cluster_equals_the_local_run_and_is_cached(tmp_path, capsys) -> None:
    import ray  # noqa: F401 - fails (never skips) when Ray is missing

    local = run_probe(tiny(), use_cache=False)
    probe_store_rows = probe_store.rows_count()
    with LocalRayCluster(num_cpus=2) as head:
        try:
            job = RayExecutor(address=head.address).job(ProbeSpec(options=tiny(), use_cache=False, time_limit_s=300))
            rows = job.start().wait(300)
            assert job.outcome == "finished", job.progress()
            assert job.hosts and len(rows) == len(local)
            assert same(rows) == same(local)  # one task per run, same seed, same losses, same FLOPs
            assert {r.source for r in rows} == {"measured"}
            assert probe_store.rows_count() == probe_store_rows + len(rows)  # the driver stored them
            with sqlite3.connect(db_path()) as con:
                sources = {s for (s,) in con.execute("SELECT DISTINCT source FROM probe_results WHERE id > ?",
                                                     (probe_store_rows,))}
            assert sources == {"ray"}
            # the CLI on the cluster: every run is in the store now, so nothing is trained
            out = tmp_path / "heads.json"
            assert main(["probe", "heads", *TINY_ARGS, "--ray", head.address, "--out", str(out)]) == 0
            err = capsys.readouterr().err
            assert "hosts: none (every run came from the result store)" in err
            assert "0 run(s) measured now; 6 from the result store" in err
            table = read_probe_table(out)
            assert set(table["source"]) == {"cache"}
            assert table["val_loss_nats"].dropna().tolist() == [r.val_loss_nats for r in rows
                                                                if r.val_loss_nats is not None]
        finally:
            import ray

            ray.shutdown()
    assert head.processes() == []
