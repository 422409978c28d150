"""Which jobs this browser session owns: its random id (the owner ``profiling.run.worker.JobManager`` keys jobs
by) and the measurement and probe jobs it submitted, with the labels the page shows.

A reload of the same session URL keeps them: once the session has asked for a job, its id goes into the link as
``sid`` (``url_param``); a new browser session opened on a link whose ``sid`` this server knows takes that id
(``adopt``), so the jobs, their progress, their results and the tray's labels come back. A link with no ``sid``
(a session that never started a job, or one whose id the server does not know: restarted, or made up) starts a
session of its own. Whoever holds a link with a ``sid`` sees and can cancel that session's jobs: remove the
``sid`` parameter from a link before sharing it if that is not wanted.
"""

from __future__ import annotations

import re
import threading
import uuid

import streamlit as st
from xtlens.dashboard.session import store

_OWNER = "_xtlens_job_owner"
_JOBS = "_xtlens_jobs"
_PROBE_JOBS = "_xtlens_probe_jobs"
SID_PARAM = "sid"
_SID = re.compile(r"^[0-9a-f]{32}$")


@st.cache_resource(show_spinner=False)
def _server_labels() -> tuple[threading.Lock, dict[str, dict[str, dict]]]:
    """Per server: owner -> {"jobs": {key: label}, "probes": {key: (probe, label)}}: what a reloaded session
    needs to label its jobs again (the job manager keeps the jobs themselves)."""
    return threading.Lock(), {}


def _remember_on_server(kind: str, key: str, value: object) -> None:
    lock, labels = _server_labels()
    with lock:
        labels.setdefault(session_owner(), {"jobs": {}, "probes": {}})[kind][key] = value


def _on_server(kind: str) -> dict:
    lock, labels = _server_labels()
    with lock:
        return dict(labels.get(session_owner(), {}).get(kind, {}))


def session_owner() -> str:
    """A random id of this browser session, made on first use: the owner of the jobs it submits."""
    return str(store.setdefault(_OWNER, uuid.uuid4().hex))


def adopt(sid: str | None) -> bool:
    """Take ``sid`` (the link's ``sid`` parameter) as this session's id when it is the id of a session this server
    has labelled jobs for and this session has no id yet; True when taken."""
    if not sid or not _SID.match(sid) or store.get(_OWNER) is not None:
        return False
    lock, labels = _server_labels()
    with lock:
        known = sid in labels
    if known:
        store.put(_OWNER, sid)
    return known


def url_param() -> dict[str, str]:
    """``{"sid": id}`` once this session has asked for a job (so a reload finds its jobs), else nothing: a session
    that never measured keeps a link that is only its configuration."""
    return {SID_PARAM: session_owner()} if session_jobs() or session_probes() else {}


def remember_job(job_id: str, label: str) -> None:
    store.put(_JOBS, {**store.get(_JOBS, {}), job_id: label})
    _remember_on_server("jobs", job_id, label)


def session_jobs() -> dict[str, str]:
    """Measurement jobs this session started (also before a reload of its link): job key -> label, oldest first."""
    return {**_on_server("jobs"), **store.get(_JOBS, {})}


def remember_probe(job_key: str, probe: str, label: str) -> None:
    store.put(_PROBE_JOBS, {**store.get(_PROBE_JOBS, {}), job_key: (probe, label)})
    _remember_on_server("probes", job_key, (probe, label))


def session_probes() -> dict[str, tuple[str, str]]:
    """Probe jobs this session started (also before a reload of its link): job key -> (probe, label), oldest first."""
    return {**_on_server("probes"), **store.get(_PROBE_JOBS, {})}
