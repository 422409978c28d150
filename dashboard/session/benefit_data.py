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
from pathlib import Path

import pandas as pd
import streamlit as st
from xtlens.dashboard.session import jobs, ownership, uploads
from xtlens.profiling.benefit.corpus import cache_dir, corpus_from_bytes
from xtlens.profiling.benefit.jobs import DEFAULT_PROBE_TIME_LIMIT_S, ProbeJob, ProbeSpec
from xtlens.profiling.benefit.probes import ProbeOptions
from xtlens.profiling.benefit.records import probe_frame
from xtlens.profiling.run.worker import JobManager

TIME_LIMIT_S = DEFAULT_PROBE_TIME_LIMIT_S


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
    spec = ProbeSpec(options=options, time_limit_s=TIME_LIMIT_S, use_cache=not fresh)
    job = manager().submit_spec(spec, owner=jobs.owner())
    ownership.remember_probe(job.key, options.probe, label)
    return job


def measure_again(options: ProbeOptions, job: ProbeJob, label: str) -> ProbeJob:
    """Drop this session's ``job`` and train ``options`` afresh (another session keeps its own copy)."""
    manager().forget(job.key, jobs.owner())
    return submit(options, label, fresh=True)


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
