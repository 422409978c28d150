"""Which jobs this browser session owns: its random id (the owner ``profiling.run.worker.JobManager`` keys jobs
by) and the measurement and probe jobs it submitted, with the labels the page shows."""

from __future__ import annotations

import uuid

from xtlens.dashboard.session import store

_OWNER = "_xtlens_job_owner"
_JOBS = "_xtlens_jobs"
_PROBE_JOBS = "_xtlens_probe_jobs"


def session_owner() -> str:
    """A random id of this browser session, made on first use: the owner of the jobs it submits."""
    return str(store.setdefault(_OWNER, uuid.uuid4().hex))


def remember_job(job_id: str, label: str) -> None:
    store.put(_JOBS, {**store.get(_JOBS, {}), job_id: label})


def session_jobs() -> dict[str, str]:
    """Measurement jobs this session started: job key -> label, oldest first."""
    return dict(store.get(_JOBS, {}))


def remember_probe(job_key: str, probe: str, label: str) -> None:
    store.put(_PROBE_JOBS, {**store.get(_PROBE_JOBS, {}), job_key: (probe, label)})


def session_probes() -> dict[str, tuple[str, str]]:
    """Probe jobs this session started: job key -> (probe, label), oldest first."""
    return dict(store.get(_PROBE_JOBS, {}))
