"""Probe jobs and probe tables for the Benefits view: the server's one job manager, uploads, corpora.

A probe runs in a child process (``profiling.benefit.jobs``) managed by the same ``profiling.run.worker.JobManager`` as
every measurement of this machine (``dashboard.jobs.manager()``): one job at a time, queued in order, owned by
the browser session that pressed Run (a session sees, cancels and replaces only its own jobs; two sessions asking
for the same probe share one run, which ends only when both let go), at most ``JobManager.max_per_owner``
unfinished jobs per session. The page polls the job, shows step and loss, and can cancel it; finished runs are
cached in the result store. No model lives in the server process.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st
from xtlens.dashboard.session import jobs, ownership, uploads
from xtlens.profiling.benefit.corpus import cache_dir, corpus_from_bytes
from xtlens.profiling.benefit.derived_store import ATLAS_FINALS, ATLAS_TABLE
from xtlens.profiling.benefit.jobs import ProbeJob, ProbeSpec, time_limit_for
from xtlens.profiling.benefit.probe_store import describe_sources
from xtlens.profiling.benefit.probes import ProbeOptions
from xtlens.profiling.benefit.records import probe_frame
from xtlens.profiling.run.worker import JobManager


def manager() -> JobManager:
    """The server's job manager of this machine (measurements and probes)."""
    return jobs.manager()


def key_of(options: ProbeOptions) -> str:
    return ProbeSpec(options=options).key()


def find(options: ProbeOptions) -> ProbeJob | None:
    """This session's probe job of ``options`` (None when this session has not asked for it)."""
    return manager().get(key_of(options), jobs.owner())


def submit(options: ProbeOptions, label: str, *, fresh: bool = False) -> ProbeJob:
    """Submit the probe for this session; raises ``QueueFull`` (a ProfileError with the message) past the session's
    limit. ``fresh``: train every run again instead of serving stored runs from the result store."""
    spec = ProbeSpec(options=options, time_limit_s=time_limit_for(options.probe), use_cache=not fresh)
    job = manager().submit_spec(spec, owner=jobs.owner(), fresh=fresh)
    ownership.remember_probe(job.key, options.probe, label)
    return job


def measure_again(options: ProbeOptions, job: ProbeJob, label: str) -> ProbeJob:
    """A new job for this session that trains ``options`` afresh (another session keeps its own copy of ``job``);
    raises ``QueueFull`` past the session's limit."""
    return submit(options, label, fresh=True)


def sources_words(job: ProbeJob) -> str:
    """Which runs of the job were trained now and which came from the result store, in words: a job another
    browser session started trained nothing for this one, so all its runs are "from cache" with their time."""
    rows = job.result()
    if getattr(job, "owner", jobs.owner()) == jobs.owner():
        return describe_sources(rows)
    stamps = sorted(r.timestamp for r in rows if r.timestamp)
    runs = len({(r.run_key or i, r.config_name, r.budget_kind, r.seed) for i, r in enumerate(rows)})
    when = "at an unknown time" if not stamps else (
        stamps[0].replace("T", " ")[:19] + " UTC" + ("" if stamps[-1][:19] == stamps[0][:19]
                                                     else " .. " + stamps[-1].replace("T", " ")[:19] + " UTC"))
    return (f"from cache ({runs} run(s) measured {when}, by this machine; another browser session's run, shared): "
            "not trained again; press Measure again to train them again")


def cancel(job_key: str) -> bool:
    """Stop this session's interest in the probe job: it is cancelled only when no other session waits for it."""
    return manager().cancel(job_key, jobs.owner())


def get(job_key: str) -> ProbeJob | None:
    """This session's probe job ``job_key`` (None when it is not this session's)."""
    return manager().get(job_key, jobs.owner())


def frame_of(job: ProbeJob) -> pd.DataFrame:
    return probe_frame(job.result())


def save_upload(name: str, data: bytes) -> str:
    """Check an uploaded corpus (UTF-8 text, big enough) and keep it under the cache by its content hash;
    returns the path the child process reads. Raises ``CorpusError`` naming the upload."""
    corpus_from_bytes(name, data)
    path = cache_dir("uploads") / f"{hashlib.sha256(data).hexdigest()[:20]}-{Path(name).name}"
    if not path.exists():
        path.write_bytes(data)
    return str(path)


def finished_tables(probe: str) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) of every finished probe job of this session for ``probe``, and of uploaded probe tables."""
    out = []
    for key, (name, label) in ownership.session_probes().items():
        job = get(key)
        if name == probe and job is not None and job.done():
            out.append((label, frame_of(job)))
    for name, frame in uploads.probe_uploads():
        sel = frame[frame["probe"] == probe]
        if not sel.empty:
            out.append((f"uploaded: {name}", sel))
    return out


def claims_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The claims table of probe rows (``profiling.benefit.claims``: one row per claim of the seed analysis, with
    its verdict, 95% interval, minimum detectable effect, scale and method; ``SUMMARY_COLUMNS`` in order). Cached
    per content: the bootstrap runs once per table, not on every rerun."""
    return _claims_frame(frame)


def claims_of(frame: pd.DataFrame) -> tuple[pd.DataFrame | None, str | None]:
    """``claims_frame``, or None and why it could not be made from these rows (an older or partial table: named on
    the page, not a traceback)."""
    try:
        return claims_frame(frame), None
    except (ValueError, KeyError, TypeError, ImportError) as exc:  # ImportError: claims.ClaimsUnavailable
        return None, f"not computed from these rows ({type(exc).__name__}: {str(exc)[:200]})"


@st.cache_data(max_entries=32, show_spinner="Bootstrapping the claims' intervals...")
def _claims_frame(frame: pd.DataFrame) -> pd.DataFrame:
    from xtlens.profiling.benefit.claims import claims_for, summary_frame

    return summary_frame(claims_for(frame))


# --- the atlas already in the result store -------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class StoredAtlas:
    """What the page draws of an atlas whose runs are in the result store: ``table`` (``probe_atlas.atlas_table``),
    ``finals`` (the final evaluation row of each stored run: the forecasts' points, the scale and split lines),
    how many of the plan's runs were found, and when they were measured (first, last: ISO times)."""

    table: pd.DataFrame
    finals: pd.DataFrame
    runs_found: int
    runs_planned: int
    measured: tuple[str, str]
    digest: str  # names the stored runs (``derived_store.runs_digest``): the forecasts are kept under it


def atlas_run_keys(opt: ProbeOptions) -> tuple[tuple[str, str], ...]:
    """(run key, the run's labels as JSON) of every run of ``opt``'s atlas plan, as ``probes.run_one`` keys them on
    this machine (the corpus's SHA-256, this device's name, torch and x-transformers versions). No training; bad
    input raises as ``probes.plan`` does."""

    path = opt.corpus
    stamp = Path(path).stat().st_mtime_ns if path else 0
    return _atlas_run_keys(json.dumps(opt.to_dict(), sort_keys=True, default=str), load_corpus_sha(path, stamp))


@st.cache_data(max_entries=16, show_spinner=False)
def load_corpus_sha(path: str | None, stamp: int) -> str:
    """The corpus part of its runs' keys (``Corpus.content_key``) at ``path`` (None: the default corpus); ``stamp``
    (the file's modification time) renews it when the file changes."""
    from xtlens.profiling.benefit.corpus import load_corpus

    return load_corpus(path).content_key


@st.cache_data(max_entries=16, show_spinner=False)
def _atlas_run_keys(options_json: str, corpus_sha256: str) -> tuple[tuple[str, str], ...]:
    from xtlens.profiling.benefit.probes import plan, run_key, run_labels
    from xtlens.profiling.run.device import device_name, resolve_device, versions

    opt = ProbeOptions.from_dict(json.loads(options_json))
    device = resolve_device(opt.device)
    name, vers = device_name(device), versions()
    return tuple((run_key(r, corpus_sha256, name, vers), json.dumps(run_labels(r), sort_keys=True, default=str))
                 for r in plan(opt))


def stored_atlas(opt: ProbeOptions) -> pd.DataFrame | None:
    """The atlas table (``probe_atlas.atlas_table``: one row per option and size) of the runs of ``opt``'s atlas
    plan already in the result store, without training anything; None when none of them is stored. Fast: the
    table is computed once per set of stored runs and kept in the store (``derived_store``), and this process
    keeps it too (``st.cache_data`` keyed by the store's newest row)."""
    got = stored_atlas_runs(opt)
    return None if got is None else got.table


def stored_atlas_runs(opt: ProbeOptions) -> StoredAtlas | None:
    """``stored_atlas`` with the final evaluations of the stored runs and how many of the plan's runs they are."""
    from xtlens.profiling.benefit import derived_store
    from xtlens.profiling.results.store import StoreError

    try:
        return _stored_atlas(atlas_run_keys(opt), derived_store.store_state())
    except (StoreError, sqlite3.Error, OSError):  # no readable result store: nothing stored to show
        return None


@st.cache_data(max_entries=8, show_spinner="Reading the atlas runs stored in the result store...")
def _stored_atlas(keys: tuple[tuple[str, str], ...], state: tuple[str, int]) -> StoredAtlas | None:
    from xtlens.profiling.benefit import derived_store as ds

    runs = ds.latest_runs([k for k, _ in keys])
    if not runs:
        return None
    digest = ds.runs_digest(runs)
    table, finals = ds.derived(ATLAS_TABLE, digest), ds.derived(ATLAS_FINALS, digest)
    if table is None or finals is None:
        table, finals = _atlas_from_rows(runs, dict(keys))
        _keep(ATLAS_TABLE, digest, table)
        _keep(ATLAS_FINALS, digest, finals)
    when = sorted(str(t) for t in finals["timestamp"].dropna() if str(t)) if "timestamp" in finals else []
    return StoredAtlas(table=table, finals=finals, runs_found=len(runs), runs_planned=len(keys),
                       measured=(when[0], when[-1]) if when else ("", ""), digest=digest)


def _keep(name: str, digest: str, table: pd.DataFrame) -> None:
    """``derived_store.store_derived``; a store that cannot be written (read-only) only costs the next visit time."""
    from xtlens.profiling.benefit import derived_store as ds
    from xtlens.profiling.results.store import StoreError

    try:
        ds.store_derived(name, digest, table)
    except (StoreError, sqlite3.Error, OSError):
        pass


def _atlas_from_rows(runs: dict[str, str], labels: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The atlas table and the final evaluations from the stored rows of ``runs`` (the slow path: once per set of
    stored runs), each row labelled with its run of this plan (``probes.run_labels``: a stored run may have been
    trained for another probe)."""
    from xtlens.profiling.benefit import derived_store as ds
    from xtlens.profiling.benefit.analysis import final_evals
    from xtlens.profiling.benefit.probe_atlas import atlas_table

    rows = [r | json.loads(labels[r["run_key"]]) for r in ds.stored_rows(runs)]
    frame = probe_frame(pd.DataFrame.from_records(rows))
    finals = final_evals(frame[frame["row_kind"] == "eval"])
    return atlas_table(frame), finals.reset_index(drop=True)


_ATLAS_TABLES = "_xtlens_atlas_tables"


def remember_atlas_tables(source: str, tables: dict[str, pd.DataFrame]) -> None:
    """Keep the atlas tables the Benefits tab drew from ``source`` (e.g. "runs in the result store") for the Export
    tab: the atlas table, the forecasts at the user's size, the held-out check (the latest of each source)."""
    from xtlens.dashboard.session import store

    kept = {k: v for k, v in store.get(_ATLAS_TABLES, {}).items() if k[0] != source}
    kept.update({(source, name): t for name, t in tables.items() if t is not None and not t.empty})
    store.put(_ATLAS_TABLES, kept)


def atlas_tables() -> list[tuple[str, pd.DataFrame]]:
    """(title, table) of every atlas table the Benefits tab drew in this session (``remember_atlas_tables``)."""
    from xtlens.dashboard.session import store

    return [(f"{name} ({source})", t) for (source, name), t in store.get(_ATLAS_TABLES, {}).items()]


def atlas_forecasts(finals: pd.DataFrame, num_params: float, tokens: float | None, *,
                    digest: str | None = None) -> pd.DataFrame:
    """``derived_store.atlas_forecasts`` (the forecasts of the atlas runs ``finals`` at ``num_params`` non-embedding
    parameters and ``tokens``, None: the runs' own budget; kept in the result store with ``digest``), kept in this
    process too."""
    return _atlas_forecasts(finals, float(num_params), None if tokens is None else float(tokens), digest)


@st.cache_data(max_entries=16, show_spinner="Fitting the loss laws per option (seed bootstrap)...")
def _atlas_forecasts(finals: pd.DataFrame, num_params: float, tokens: float | None,
                     digest: str | None) -> pd.DataFrame:
    from xtlens.profiling.benefit import derived_store as ds
    from xtlens.profiling.results.store import StoreError

    try:
        return ds.atlas_forecasts(finals, num_params, tokens, digest)
    except (StoreError, sqlite3.Error, OSError):  # a store that cannot be written: fitted, not kept
        return ds.atlas_forecasts(finals, num_params, tokens, None)


def atlas_holdout(finals: pd.DataFrame, *, digest: str | None = None):
    """``derived_store.atlas_holdout`` (the largest size forecast from the smaller ones), kept in this process too."""
    return _atlas_holdout(finals, digest)


@st.cache_data(max_entries=16, show_spinner="Held-out check: forecasting the largest size from the smaller ones...")
def _atlas_holdout(finals: pd.DataFrame, digest: str | None):
    from xtlens.profiling.benefit import derived_store as ds
    from xtlens.profiling.results.store import StoreError

    try:
        return ds.atlas_holdout(finals, digest)
    except (StoreError, sqlite3.Error, OSError):
        return ds.atlas_holdout(finals, None)


def keep_atlas(opt: ProbeOptions, table: pd.DataFrame, finals: pd.DataFrame) -> bool:
    """After an atlas job of this page: keep its atlas table and final evaluations beside its runs in the result
    store (``derived_store.keep_atlas``), so that the next visit, or a restarted server, draws the stored atlas
    without reading the runs' rows again. Kept only when the runs stored for ``opt``'s plan are exactly the job's
    ok runs (by run key); returns whether they were kept."""
    from xtlens.profiling.benefit import derived_store as ds
    from xtlens.profiling.results.store import StoreError

    try:
        return ds.keep_atlas(table, finals, [k for k, _ in atlas_run_keys(opt)])
    except (StoreError, sqlite3.Error, OSError):
        return False
