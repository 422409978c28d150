"""Probe jobs and probe tables for the Benefits view: one ``ProbeJobManager`` per server, uploads, corpora.

A probe runs in a child process (``profiling.benefit.jobs``): the page polls it, shows step and loss, and can
cancel it; submitting the same probe again (this or another browser session) returns the running or
finished job, and finished runs are cached on disk. No model lives in the server process.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import streamlit as st
from xtlens.dashboard.session import ownership, uploads
from xtlens.profiling.benefit.corpus import cache_dir, corpus_from_bytes
from xtlens.profiling.benefit.jobs import DEFAULT_PROBE_TIME_LIMIT_S, ProbeJob, ProbeJobManager, ProbeSpec
from xtlens.profiling.benefit.probes import ProbeOptions
from xtlens.profiling.benefit.records import probe_frame

TIME_LIMIT_S = DEFAULT_PROBE_TIME_LIMIT_S


@st.cache_resource(show_spinner=False)
def manager() -> ProbeJobManager:
    return ProbeJobManager()


def key_of(options: ProbeOptions) -> str:
    return ProbeSpec(options=options).key()


def find(options: ProbeOptions) -> ProbeJob | None:
    """The probe job of ``options``, whoever started it; a job the page shows is remembered as this session's, so
    its table is on the Export tab too."""
    job = manager().get(key_of(options))
    if job is not None and job.key not in ownership.session_probes():
        ownership.remember_probe(job.key, options.probe, f"{options.probe} probe")
    return job


def submit(options: ProbeOptions, label: str) -> ProbeJob:
    job = manager().submit(options, time_limit_s=TIME_LIMIT_S)
    ownership.remember_probe(job.key, options.probe, label)
    return job


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
        job = manager().get(key)
        if name == probe and job is not None and job.done():
            out.append((label, frame_of(job)))
    for name, frame in uploads.probe_uploads():
        sel = frame[frame["probe"] == probe]
        if not sel.empty:
            out.append((f"uploaded: {name}", sel))
    return out
