"""Derived tables kept beside stored probe runs (``profiling.benefit.derived_store``): which runs are stored (the
latest write of each key, only when every row is ok / diverged), their rows without the per-layer ones, and a
derived table served only for the exact runs it came from."""

from __future__ import annotations

import sqlite3

import pandas as pd
from xtlens.profiling.benefit import derived_store as ds
from xtlens.profiling.benefit import probe_store
from xtlens.profiling.benefit.records import ProbeRecord
from xtlens.profiling.results.store import open_store


def _run(key: str, loss: float, *, status: str = "ok", windows: int = 3) -> list[ProbeRecord]:
    base = dict(probe="atlas", run_key=key, config_name="x (dim 16)", config_key="c", config_json="{}",
                variant="swiglu", axis="dim", axis_value=16, budget_kind="tokens", seed=1, status=status)
    rows = [ProbeRecord(**base, row_kind="eval", step=s, val_loss_nats=loss + s, val_bits_per_byte=loss / 2)
            for s in (0, 4)]
    rows += [ProbeRecord(**base, row_kind="layer", step=4, layer="layers.0 (attn)", grad_norm=1.0)]
    rows += [ProbeRecord(**base, row_kind="window", window_index=w, val_loss_nats=loss + w / 10,
                         val_bits_per_byte=(loss + w / 10) / 2, eval_seq_len_tokens=64, train_seq_len_tokens=64)
             for w in range(windows)]
    return rows


def test_latest_runs_rows_and_derived_tables() -> None:
    assert ds.latest_runs(["a"]) == {} and ds.store_state()[1] == 0
    probe_store.store_run("a", _run("a", 3.0))
    probe_store.store_run("b", _run("b", 4.0))
    probe_store.store_run("b", _run("b", 5.0))  # measured again: the latest write is served
    probe_store.store_run("c", _run("c", 6.0, status="error"))  # never served, as probe_store.cached_run
    state = ds.store_state()
    runs = ds.latest_runs(["a", "b", "c", "missing"])
    assert set(runs) == {"a", "b"}
    con = sqlite3.connect(open_store().path)  # the ground truth, read with SQLite itself
    last_b = con.execute("SELECT write_id FROM probe_results WHERE run_key = 'b' ORDER BY id DESC LIMIT 1").fetchone()
    con.close()
    assert runs["b"] == last_b[0]
    rows = ds.stored_rows(runs)
    frame = pd.DataFrame(rows)
    # no layer rows; 2 eval + 3 window rows per run; the served write of b is the second (loss 5)
    assert sorted(frame["row_kind"].value_counts().items()) == [("eval", 4), ("window", 6)]
    b = frame[(frame["run_key"] == "b") & (frame["row_kind"] == "window")]
    assert sorted(b["val_loss_nats"]) == [5.0, 5.1, 5.2] and set(b["source"]) == {"cache"}
    assert sorted(b["window_index"]) == [0, 1, 2] and set(b["eval_seq_len_tokens"]) == {64}
    # every column of the stored row with window_columns=None
    full = pd.DataFrame(ds.stored_rows(runs, window_columns=None))
    assert set(full.loc[full["row_kind"] == "window", "variant"]) == {"swiglu"}
    digest = ds.runs_digest(runs)
    assert ds.derived("t/1", digest) is None
    table = pd.DataFrame({"arm": ["swiglu"], "d_num_params": [2**40 + 1], "x": [0.25]})
    ds.store_derived("t/1", digest, table)
    back = ds.derived("t/1", digest)
    assert back.to_dict(orient="records") == [{"arm": "swiglu", "d_num_params": 2**40 + 1, "x": 0.25}]
    # a run stored again names other runs: the old table is not served for them
    probe_store.store_run("a", _run("a", 7.0))
    assert ds.store_state()[1] > state[1]
    again = ds.latest_runs(["a", "b"])
    assert again["a"] != runs["a"] and ds.derived("t/1", ds.runs_digest(again)) is None


def test_keep_atlas_only_for_exactly_its_stored_runs() -> None:
    """The CLI and the page keep an atlas's table beside its runs: served under the digest the page computes from the
    stored runs, and not kept when the stored runs are not exactly the atlas's ok runs."""
    probe_store.store_run("a", _run("a", 3.0))
    probe_store.store_run("b", _run("b", 4.0))
    table = pd.DataFrame({"arm": ["swiglu"], "d_bits_per_byte": [-0.125]})
    finals = pd.DataFrame({"run_key": ["a", "b", "c"], "status": ["ok", "ok", "error"], "seed": [0, 1, 2]})
    assert ds.keep_atlas(table, finals)
    digest = ds.runs_digest(ds.latest_runs(["a", "b", "c"]))  # as the page looks it up: the plan's stored runs
    assert ds.derived(ds.ATLAS_TABLE, digest).to_dict(orient="records") == [{"arm": "swiglu", "d_bits_per_byte": -0.125}]
    assert list(ds.derived(ds.ATLAS_FINALS, digest)["run_key"]) == ["a", "b", "c"]
    # a plan with a stored run the atlas did not train (another write of it) is not this table's
    probe_store.store_run("d", _run("d", 5.0))
    assert not ds.keep_atlas(table, finals.iloc[:2], plan_keys=["a", "b", "d"])
    # the atlas's ok runs not all stored (a run that was never written): not kept
    assert not ds.keep_atlas(table, pd.DataFrame({"run_key": ["a", "zz"], "status": ["ok", "ok"]}))


def test_keep_atlas_with_forecast_non_embedding_params_stores_what_the_page_reads_first() -> None:
    """After a CLI atlas (``forecast_non_embedding_params``: the family's own size) the held-out check and the forecasts at that size
    are in the store under the names the page looks up, equal to computing them afresh: the first visit fits nothing."""
    import sys
    from pathlib import Path

    from xtlens.core.config import PRESETS
    from xtlens.profiling.benefit import forecast
    from xtlens.profiling.benefit.analysis import final_evals
    from xtlens.profiling.benefit.probe_atlas import atlas_table
    from xtlens.profiling.benefit.probes import ProbeOptions

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from atlas_rows import stored_atlas_runs

    opt = ProbeOptions(probe="atlas", base=PRESETS["seed"], options=("swiglu", "shift_tokens"), values=(16, 32, 64),
                       seeds=(0, 1))
    frame = stored_atlas_runs(opt, windows=6)
    finals = final_evals(frame)
    assert ds.keep_atlas(atlas_table(frame), finals, forecast_non_embedding_params=2.5e6)
    digest = ds.runs_digest(ds.latest_runs(sorted(set(frame["run_key"]))))
    kept = ds.derived(f"{ds.ATLAS_FORECASTS}/{2.5e6!r}/None", digest)
    fresh = pd.DataFrame([f.__dict__ for f in forecast.forecast_arms(forecast.arm_points(finals), num_params=2.5e6)])
    assert list(kept["arm"]) == list(fresh["arm"]) and len(kept) == 4  # reference, control, 2 options
    pd.testing.assert_series_equal(kept["estimate"].astype(float), fresh["estimate"].astype(float), check_names=False)
    summary = ds.derived(ds.ATLAS_HOLDOUT + "/summary", digest)
    again = ds.atlas_holdout(finals, digest)  # served from the store: the same numbers as a fresh holdout
    assert summary is not None and again.arms == forecast.holdout(forecast.arm_points(finals)).arms
