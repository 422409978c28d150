"""Tables derived from stored probe runs, kept in the result store next to the runs they come from.

Reading a whole probe back from the store is slow when it is large: the default atlas is 216 runs of about 365
rows each (a row per validation window), 80,000 rows of JSON, and its table bootstraps 60-odd paired
differences. The page must show a stored atlas in about a second, so what it draws from those runs (the atlas
table, the forecast points) is stored once, in the table ``probe_derived`` of the same SQLite file:

* ``name`` (what the table is, with its format version: ``atlas_table/1``), ``digest`` (SHA-256 of the sorted
  ``run_key:write_id`` of the stored runs it was computed from), ``stored_at``, ``table_parquet`` (the table,
  Parquet bytes: typed, exact integers).

A run stored again (``Measure again``, a run that was missing) is a new ``write_id``: the digest changes and the
table is computed again from the runs then stored; a derived table is never served for other runs than its own.

``latest_runs`` answers which runs of a plan are stored (one indexed query), ``stored_rows`` reads their rows
(without the per-layer rows, which no derived table uses), ``derived`` / ``store_derived`` read and write a table.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Sequence

import pandas as pd
from xtlens.profiling.benefit.probe_store import SERVED_STATUSES, ready
from xtlens.profiling.benefit.records import PROBE_ROWS
from xtlens.profiling.results.records import now_iso
from xtlens.profiling.results.store import ResultStore

__all__ = ["latest_runs", "runs_digest", "stored_rows", "derived", "store_derived", "store_state", "keep_atlas",
           "ATLAS_TABLE", "ATLAS_FINALS", "ATLAS_FORECASTS", "ATLAS_HOLDOUT", "atlas_forecasts", "atlas_holdout"]

#: the derived tables of a stored atlas (``probe_atlas.atlas_table`` and the runs' final evaluations)
ATLAS_TABLE = "atlas_table/1"
ATLAS_FINALS = "atlas_final_evals/1"
#: the forecasts (one table per size and token budget asked) and the held-out check of a stored atlas
ATLAS_FORECASTS = "atlas_forecasts/2"  # /2: the E-free fallback law (results kept under /1 were fitted without it)
ATLAS_HOLDOUT = "atlas_holdout/2"

_CHUNK = 500  # SQLite's limit on ? parameters is 999 on old builds
# the probe tables, their indexes and ``probe_derived`` are created by ``probe_store.ready`` (its schema)


def _chunks(keys: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(keys), _CHUNK):
        yield keys[i:i + _CHUNK]


def store_state(store: ResultStore | None = None) -> tuple[str, int]:
    """(the store's file, the id of its newest probe row): changes whenever a probe run is stored (for caches)."""
    store = ready(store)
    con = store.connection()
    try:
        last = con.execute("SELECT MAX(id) FROM probe_results").fetchone()[0]
    finally:
        con.close()
    return str(store.path.resolve()), int(last or 0)


def latest_runs(run_keys: Sequence[str], store: ResultStore | None = None) -> dict[str, str]:
    """``run_key -> write_id`` of the latest stored run of each key whose rows are all ``ok`` / ``diverged`` (the
    runs the probe would serve from the store, as ``probe_store.cached_run``); keys not stored are left out."""
    keys = sorted(set(run_keys))
    if not keys:
        return {}
    con = ready(store).connection()
    latest: dict[str, tuple[int, str, bool]] = {}
    ok = ",".join("?" * len(SERVED_STATUSES))
    try:
        for part in _chunks(keys):
            q = ",".join("?" * len(part))
            sql = (f"SELECT run_key, write_id, MAX(id), SUM(CASE WHEN status IN ({ok}) THEN 0 ELSE 1 END) FROM "
                   f"probe_results WHERE run_key IN ({q}) GROUP BY run_key, write_id")
            for key, write_id, last, bad in con.execute(sql, [*SERVED_STATUSES, *part]):
                if key not in latest or last > latest[key][0]:
                    latest[key] = (int(last), str(write_id), bool(bad))
    finally:
        con.close()
    return {k: w for k, (_, w, bad) in latest.items() if not bad}


def runs_digest(runs: dict[str, str]) -> str:
    """SHA-256 of the sorted ``run_key:write_id`` pairs: names exactly the stored runs a table comes from."""
    text = "\n".join(f"{k}:{w}" for k, w in sorted(runs.items()))
    return hashlib.sha256(text.encode()).hexdigest()


#: the columns of a per-window row that the derived tables read (``stored_rows``' default ``window_columns``)
WINDOW_COLUMNS: tuple[str, ...] = ("row_kind", "seed", "window_index", "val_loss_nats", "val_bits_per_byte",
                                   "eval_seq_len_tokens", "train_seq_len_tokens", "eval_tokens", "eval_bytes",
                                   "context_gain_nats", "status")


def stored_rows(runs: dict[str, str], store: ResultStore | None = None, *,
                window_columns: Sequence[str] | None = WINDOW_COLUMNS) -> list[dict]:
    """The rows of the stored runs ``runs`` (``run_key -> write_id``, from ``latest_runs``) as dicts of
    ``ProbeRecord`` columns, labelled ``source="cache"`` with their ``stored_at``; never the per-layer rows.
    Per-window rows (most of a run's rows) hold only ``window_columns`` (None: every column), read by SQLite
    without decoding the rest of each row (1.6 s instead of 10 s for the default atlas under load)."""
    keys = sorted(runs)
    out: list[dict] = []
    con = ready(store).connection()
    cols = [c for c in (window_columns or ()) if c in PROBE_ROWS.columns]
    try:
        for part in _chunks(keys):
            q = ",".join("?" * len(part))
            kinds = "('layer')" if window_columns is None else "('layer', 'window')"
            sql = (f"SELECT run_key, write_id, stored_at, row_json FROM probe_results WHERE run_key IN ({q}) AND "
                   f"json_extract(row_json, '$.row_kind') NOT IN {kinds} ORDER BY id")
            for key, write_id, stored_at, text in con.execute(sql, part):
                if runs.get(key) == write_id:
                    out.append(PROBE_ROWS.known(json.loads(text)) | {"source": "cache", "stored_at": stored_at})
            if window_columns is None:
                continue
            sel = ", ".join(f"json_extract(row_json, '$.{c}')" for c in cols)
            sql = (f"SELECT run_key, write_id, stored_at, {sel} FROM probe_results WHERE run_key IN ({q}) AND "
                   "json_extract(row_json, '$.row_kind') = 'window' ORDER BY id")
            for key, write_id, stored_at, *vals in con.execute(sql, part):
                if runs.get(key) == write_id:
                    out.append(dict(zip(cols, vals, strict=True)) | {"run_key": key, "source": "cache",
                                                                      "stored_at": stored_at})
    finally:
        con.close()
    return out


def derived(name: str, digest: str, store: ResultStore | None = None) -> pd.DataFrame | None:
    """The table ``name`` computed from the runs ``digest`` names, when it was stored; else None."""
    con = ready(store).connection()
    try:
        got = con.execute("SELECT table_parquet FROM probe_derived WHERE name = ? AND digest = ?",
                          (name, digest)).fetchone()
    finally:
        con.close()
    return None if got is None else pd.read_parquet(io.BytesIO(got[0]))


def store_derived(name: str, digest: str, table: pd.DataFrame, store: ResultStore | None = None) -> None:
    """Keep ``table`` as ``name`` for the runs ``digest`` names (replacing an older copy for the same runs)."""
    from xtlens.profiling.results.records import arrow_safe

    sink = io.BytesIO()
    arrow_safe(table.reset_index(drop=True)).to_parquet(sink, index=False)
    with ready(store).transaction() as con:
        con.execute("INSERT OR REPLACE INTO probe_derived (name, digest, stored_at, table_parquet) VALUES (?, ?, ?, ?)",
                    (name, digest, now_iso(), sink.getvalue()))


def keep_atlas(table: pd.DataFrame, finals: pd.DataFrame, plan_keys: Sequence[str] | None = None,
               store: ResultStore | None = None, *, forecast_non_embedding_params: float | None = None) -> bool:
    """Keep an atlas's table and final evaluations (``finals``: one row per run, with ``run_key`` and ``status``)
    beside its runs, so that the page draws the stored atlas without reading the runs' rows (the CLI and the page's
    jobs call this when an atlas finishes); with ``forecast_non_embedding_params`` (the family's own non-embedding parameters, the
    page's default "your size") the held-out check and the forecasts at that size and the runs' own token budget
    too, so that the first visit fits nothing. Kept only when the runs stored for the plan (``plan_keys``; default:
    the runs of ``finals``) are exactly its ok runs, i.e. the digest the page will compute is this table's; returns
    whether they were kept. A store that cannot be written raises (the caller says so or lets it go)."""
    ok = finals[finals["status"] == "ok"] if "status" in finals else finals
    mine = {str(k) for k in ok["run_key"].dropna() if str(k)}
    runs = latest_runs(sorted(mine) if plan_keys is None else list(plan_keys), store)
    if not runs or set(runs) != mine:
        return False
    digest = runs_digest(runs)
    if derived(ATLAS_TABLE, digest, store) is None:
        store_derived(ATLAS_TABLE, digest, table, store)
        store_derived(ATLAS_FINALS, digest, finals.reset_index(drop=True), store)
    if forecast_non_embedding_params is not None:
        atlas_holdout(finals, digest, store)
        atlas_forecasts(finals, float(forecast_non_embedding_params), None, digest, store)
    return True


def atlas_forecasts(finals: pd.DataFrame, num_params: float, tokens: float | None, digest: str | None = None,
                    store: ResultStore | None = None) -> pd.DataFrame:
    """``forecast.forecast_arms`` of the atlas runs ``finals`` at ``num_params`` non-embedding parameters and
    ``tokens`` (None: the runs' own budget), one row per arm (``Forecast``'s fields); with ``digest`` (a stored
    atlas's runs) read from and kept in the result store, so that a stored atlas opens without fitting again."""
    import dataclasses

    from xtlens.profiling.benefit import forecast

    name = f"{ATLAS_FORECASTS}/{float(num_params)!r}/{None if tokens is None else float(tokens)!r}"
    if digest is not None:
        kept = derived(name, digest, store)
        if kept is not None:
            return kept
    out = pd.DataFrame([dataclasses.asdict(f) for f in forecast.forecast_arms(
        forecast.arm_points(finals), num_params=num_params, tokens=tokens)])
    if digest is not None and not out.empty:
        store_derived(name, digest, out, store)
    return out


def atlas_holdout(finals: pd.DataFrame, digest: str | None = None, store: ResultStore | None = None):
    """``forecast.holdout`` of the atlas runs ``finals`` (the largest size forecast from the smaller ones), read
    from and kept in the result store as ``atlas_forecasts`` does."""
    from xtlens.profiling.benefit import forecast

    if digest is not None:
        table, summary = derived(ATLAS_HOLDOUT, digest, store), derived(ATLAS_HOLDOUT + "/summary", digest, store)
        if table is not None and summary is not None:
            r = summary.astype(object).where(summary.notna(), None).iloc[0].to_dict()
            return forecast.Holdout(coverage=r["coverage"], arms=int(r["arms"]), level=float(r["level"]),
                                    median_abs_error_bits=r["median_abs_error_bits"], table=table,
                                    reason=str(r["reason"] or ""), coverage_prediction=r.get("coverage_prediction"))
    h = forecast.holdout(forecast.arm_points(finals))
    if digest is not None:
        store_derived(ATLAS_HOLDOUT, digest, h.table, store)
        store_derived(ATLAS_HOLDOUT + "/summary", digest, pd.DataFrame([{
            "coverage": h.coverage, "arms": h.arms, "level": h.level,
            "median_abs_error_bits": h.median_abs_error_bits, "reason": h.reason,
            "coverage_prediction": h.coverage_prediction}]), store)
    return h
