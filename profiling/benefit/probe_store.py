"""Probe runs in the result store: the SQLite database of every measurement (``profiling.results.store``).

A probe's training runs are cached like every other measurement: in the same file as the sweep rows
(``$XTLENS_DB`` or ``<cache folder>/results.sqlite``), in a table of their own, ``probe_results``, because a
probe row (``ProbeRecord``) has other columns than a profile row. One database row per ``ProbeRecord``:

* ``id`` (increasing), ``stored_at`` (UTC ISO time it was written), ``source`` (``local``: this machine, in
  process or in the probe's child; ``ray``: a Ray task, stored by the driver), ``host`` (the machine that
  trained it), ``write_id`` (one per stored run);
* ``run_key``: the run's cache key (``probes.run_key``: the configuration and how it is built, the optimizer
  steps its budget buys, the seed, the training settings, the corpus's SHA-256, the device name and the torch
  and x-transformers versions); indexed, with ``probe``, ``config_key``, ``seed``, ``corpus_sha256``,
  ``device_name``, the versions, ``status`` and the measurement ``timestamp``;
* ``row_json``: the whole row as JSON (exact integers, every column, columns added later included; on reading,
  a key that is not a ``ProbeRecord`` column is dropped: ``records.PROBE_ROWS.known``).

A run whose latest stored rows are all ``ok`` or ``diverged`` (a divergence is a result) is served from
here; ``error`` / ``timeout`` / ``cancelled`` rows are stored as history but never served. Rows served
from here say so: ``source = "cache"`` and ``stored_at`` = when they were stored; their ``timestamp`` is
still the time they were measured.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Sequence
from dataclasses import replace

from xtlens.profiling.benefit.records import PROBE_ROWS, ProbeRecord
from xtlens.profiling.results.records import now_iso
from xtlens.profiling.results.store import ResultStore, open_store, with_schema

__all__ = ["ready", "store_run", "cached_run", "rows_count", "stored_rows", "stored_version", "describe_sources", "SERVED_STATUSES"]

SERVED_STATUSES = ("ok", "diverged")
_INDEXED = ("probe", "config_key", "seed", "corpus_sha256", "device_name", "torch_version", "xtransformers_version",
            "status", "timestamp")
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS probe_results (id INTEGER PRIMARY KEY AUTOINCREMENT, stored_at TEXT NOT NULL, "
    "source TEXT NOT NULL, host TEXT, write_id TEXT NOT NULL, run_key TEXT, probe TEXT, config_key TEXT, "
    "seed INTEGER, corpus_sha256 TEXT, device_name TEXT, torch_version TEXT, xtransformers_version TEXT, "
    "status TEXT, timestamp TEXT, row_json TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS probe_results_run ON probe_results (run_key)",
    "CREATE INDEX IF NOT EXISTS probe_results_config ON probe_results (config_key, probe, seed)",
    "CREATE INDEX IF NOT EXISTS probe_results_corpus ON probe_results (corpus_sha256)",
    "CREATE INDEX IF NOT EXISTS probe_results_device ON probe_results (device_name, torch_version, "
    "xtransformers_version)",
    # which runs are stored, answered from the index alone (``derived_store.latest_runs``: the rows are kilobytes of
    # JSON each; reading them to learn a run's latest write took 0.15 s for the default atlas's runs)
    "CREATE INDEX IF NOT EXISTS probe_results_latest ON probe_results (run_key, write_id, status, id)",
    # tables derived from stored runs, kept beside them (``derived_store``)
    "CREATE TABLE IF NOT EXISTS probe_derived (name TEXT NOT NULL, digest TEXT NOT NULL, stored_at TEXT NOT NULL, "
    "table_parquet BLOB NOT NULL, PRIMARY KEY (name, digest))",
)


def ready(store: ResultStore | None = None) -> ResultStore:
    """``store`` (default: ``open_store()``) with the probe tables and their indexes created (once per file and
    process)."""
    store = store if store is not None else open_store()
    return with_schema(store, _SCHEMA)


def store_run(run_key: str | None, rows: Sequence[ProbeRecord], *, source: str = "local", host: str | None = None,
              store: ResultStore | None = None) -> str:
    """Store one run's rows in one transaction; returns the ``stored_at`` time written."""
    if source not in ("local", "ray"):
        raise ValueError(f"source = {source!r} is not allowed: local or ray")
    rows = list(rows)
    stamp = now_iso()
    if not rows:
        return stamp
    host = socket.gethostname() if host is None else host
    write_id = uuid.uuid4().hex
    sql = ("INSERT INTO probe_results (stored_at, source, host, write_id, run_key, " + ", ".join(_INDEXED)
           + ", row_json) VALUES (" + ", ".join("?" * (6 + len(_INDEXED))) + ")")
    with ready(store).transaction() as con:
        for row in rows:
            data = row.to_dict()
            data.update(source="", stored_at="")  # provenance is the table's, not the row's
            con.execute(sql, [stamp, source, host, write_id, run_key or None, *(PROBE_ROWS.sql_value(c, data[c]) for c in _INDEXED),
                              json.dumps(data, sort_keys=True)])
    return stamp


def cached_run(run_key: str, *, store: ResultStore | None = None) -> list[ProbeRecord] | None:
    """The rows of the latest stored run ``run_key`` when all are ``ok`` / ``diverged`` (labelled
    ``source="cache"`` with their ``stored_at``), else None."""
    con = ready(store).connection()
    try:
        last = con.execute("SELECT write_id FROM probe_results WHERE run_key = ? ORDER BY id DESC LIMIT 1",
                           (run_key,)).fetchone()
        if last is None:
            return None
        got = con.execute("SELECT stored_at, row_json FROM probe_results WHERE write_id = ? ORDER BY id",
                          (last[0],)).fetchall()
    finally:
        con.close()
    rows = []
    for stored_at, text in got:
        rows.append(replace(ProbeRecord(**PROBE_ROWS.known(json.loads(text))), source="cache", stored_at=stored_at))
    if not rows or any(r.status not in SERVED_STATUSES for r in rows):
        return None
    return rows


def rows_count(store: ResultStore | None = None) -> int:
    """How many probe rows the store holds (every stored run, served or not)."""
    con = ready(store).connection()
    try:
        return int(con.execute("SELECT COUNT(*) FROM probe_results").fetchone()[0])
    finally:
        con.close()


def stored_version(store: ResultStore | None = None) -> tuple[int, int]:
    """(rows, largest id) of the probe table: changes whenever a run is stored (a cache key for readers)."""
    con = ready(store).connection()
    try:
        count, last = con.execute("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM probe_results").fetchone()
        return int(count), int(last)
    finally:
        con.close()


def stored_rows(probe: str, *, variant: str | None = None, row_kinds: Sequence[str] | None = None,
                store: ResultStore | None = None) -> list[ProbeRecord]:
    """Every run of ``probe`` the store would serve (its latest write, all rows ``ok`` / ``diverged``), optionally
    only ``variant``'s runs and only rows of ``row_kinds``, labelled ``source="cache"`` like ``cached_run``. No
    training; runs stored without a run key (never served) are left out."""
    sql = ("SELECT p.write_id, p.stored_at, p.status, p.row_json FROM probe_results p JOIN (SELECT run_key, MAX(id) "
           "AS last FROM probe_results WHERE probe = ? AND run_key IS NOT NULL GROUP BY run_key) l "
           "ON p.run_key = l.run_key JOIN probe_results w ON w.id = l.last AND p.write_id = w.write_id "
           "WHERE p.probe = ?")
    args: list = [probe, probe]
    if variant is not None:
        sql += " AND json_extract(p.row_json, '$.variant') = ?"
        args.append(variant)
    if row_kinds is not None:  # filtered by SQLite: an atlas is ~80,000 rows of JSON, a few thousand of them evals
        kinds_sql = sorted(set(row_kinds))
        sql += f" AND (p.status NOT IN ({','.join('?' * len(SERVED_STATUSES))}) OR " \
               f"json_extract(p.row_json, '$.row_kind') IN ({','.join('?' * len(kinds_sql))}))"
        args += [*SERVED_STATUSES, *kinds_sql]
    con = ready(store).connection()
    try:
        got = con.execute(sql + " ORDER BY p.id", args).fetchall()
    finally:
        con.close()
    bad = {write_id for write_id, _, status, _ in got if status not in SERVED_STATUSES}
    kinds = None if row_kinds is None else set(row_kinds)
    rows = []
    for write_id, stored_at, _, text in got:
        if write_id in bad:
            continue
        data = json.loads(text)
        if kinds is None or data.get("row_kind") in kinds:
            rows.append(replace(ProbeRecord(**PROBE_ROWS.known(data)), source="cache", stored_at=stored_at))
    return rows



def _utc(stamp: str) -> str:
    return stamp.replace("T", " ").replace("+00:00", " UTC")


def describe_sources(rows: Sequence[ProbeRecord]) -> str:
    """``1 run(s) measured now; 3 from the result store (measured 2026-11-26 05:12:03 – 05:14:40 UTC)``: which
    runs of a probe were trained by this call and which were served from the store, and when those were
    measured."""
    runs: dict[tuple, tuple[str, str]] = {}
    for i, r in enumerate(rows):
        runs.setdefault((r.run_key or i, r.config_name, r.budget_kind, r.seed), (r.source, r.timestamp))
    cached = sorted(v[1] for v in runs.values() if v[0] == "cache" and v[1])
    text = f"{sum(1 for v in runs.values() if v[0] == 'measured')} run(s) measured now"
    if cached:
        first, last = _utc(cached[0]), _utc(cached[-1])
        if last == first:
            when = first
        elif last[:10] == first[:10]:  # the same day: 2026-11-26 05:40:55 – 05:41:30 UTC
            when = f"{first.removesuffix(' UTC')} – {last[11:]}"
        else:
            when = f"{first} – {last}"
        text += f"; {len(cached)} from the result store (measured {when})"
    return text
