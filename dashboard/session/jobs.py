"""Measurements on request: one ``profiling.run.worker.JobManager`` per server, jobs polled from fragments.

A job runs in a child process (``profiling.run.worker``), so a long CPU sweep never blocks the page and
never takes the server down; or, when the sidebar says "Ray cluster", as Ray tasks on that cluster
(``profiling.run.executor``; one manager per place). The manager keys jobs by (configurations, workloads, device, what,
options) and by owner, the browser session that pressed Measure: a session sees, cancels and replaces only
its own jobs; when two sessions ask for the same measurement they share one run and its immutable rows
(each builds its own table from them, and the one that did not start it reads "from cache"), "Measure again"
always starts a new job, and Cancel in one session never removes the other's result. A cancelled, failed or
timed-out job stays in its view and in the tray with its reason and a Retry. A session may have
``JobManager.max_per_owner`` unfinished jobs. No model lives in this process.

The Latency tab's "Calibrate this device" is a job of its own kind (``calibrate_panel``:
``profiling.run.calibrate_job``, the same manager, owners, queue, Cancel, time limit and tray), always on this machine.

A job belongs to the page, not to its tab: the view finds it again from its request (the tab's settings, kept
by ``tab_settings``) whenever the tab is drawn, so a result that ended while another tab was open is there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import streamlit as st
from xtlens.core.config import ModelConfig, Workload
from xtlens.dashboard.session import ownership, provenance, run_on
from xtlens.profiling.results.export import as_frame
from xtlens.profiling.run.calibrate_job import DEFAULT_BUDGET_S, CalibrateJob, CalibrateSpec
from xtlens.profiling.run.executor import executor_for
from xtlens.profiling.run.plan import SweepOptions
from xtlens.profiling.run.worker import Job, JobManager, JobSpec, QueueFull

TIME_LIMIT_S = 600.0
POLL_S = 1.0
NOT_MEASURED = "not measured yet — press Measure"


@st.cache_resource(show_spinner=False)
def _managers() -> dict[str, JobManager]:
    return {}


def manager(address: str | None = None) -> JobManager:
    """The server's job manager for this machine (None) or the Ray cluster at ``address``."""
    registry = _managers()
    if (address or "") not in registry:
        registry[address or ""] = JobManager(max_running=1, executor=executor_for(address) if address else None)
    return registry[address or ""]


def _where(req: Request) -> tuple[JobManager, Request]:
    """The manager of the page's "run on" choice and the request as it runs there (the cluster's device)."""
    address, device = run_on.run_on()
    if address is None:
        return manager(), req
    return manager(address), dataclasses.replace(req, device=device or "auto")


@dataclass(frozen=True, kw_only=True)
class Request:
    """A measurement the page can ask for; ``label`` says what it is in words."""

    label: str
    what: tuple[str, ...]
    configs: tuple[tuple[str, ModelConfig], ...]
    workloads: tuple[Workload, ...]
    device: str
    phases: tuple[str, ...] | None = None
    repeats: int = 5
    warmup: int = 2
    attention: tuple[str, ...] | None = None  # what-if implementations (what="whatif")
    per_layer: bool = False  # latency breakdown by block (what="breakdown")
    use_cache: bool = True  # False: "Measure again" (the job key is the same; the results database is bypassed)

    def options(self) -> SweepOptions:
        return SweepOptions(device=self.device, phases=self.phases, repeats=self.repeats, warmup=self.warmup,
                            attention=self.attention, per_layer=self.per_layer, use_cache=self.use_cache)

    def spec(self) -> JobSpec:
        return JobSpec.make(self.what, list(self.configs), self.workloads, self.options(), time_limit_s=TIME_LIMIT_S)

    def key(self) -> str:
        return self.spec().key()

    @property
    def points(self) -> int:
        return len(self.configs) * len(self.workloads) * len(self.what)


def owner() -> str:
    """This browser session's id (``ownership.session_owner``): the owner of the jobs it submits."""
    return ownership.session_owner()


def find(req: Request) -> Job | None:
    mgr, req = _where(req)
    return mgr.get(req.key(), owner())


def submit(req: Request, *, fresh: bool = False) -> Job:
    """Submit for this session; raises ``QueueFull`` (a ProfileError with the message) past the session's limit.
    ``fresh``: a new job even when one of this request ran or runs (``JobManager.submit_spec``)."""
    mgr, req = _where(req)
    job = mgr.submit_spec(req.spec(), owner=owner(), fresh=fresh)
    ownership.remember_job(job.key, req.label)
    return job


def measure_again(req: Request, job: Job) -> Job:
    """Drop ``job`` and measure ``req`` afresh, bypassing the results database (its rows stay as history)."""
    return submit(dataclasses.replace(req, use_cache=False), fresh=True)


def place_words(address: str | None) -> str:
    """Where a manager's jobs run, in the words of the provenance line."""
    return "this machine" if not address else f"the Ray cluster at {address}"


def retry(job: Job, place: str = "") -> Job:
    """A new job of ``job``'s spec for this session (Retry of a cancelled, failed or timed-out job)."""
    return manager(place or None).submit_spec(job.spec, owner=owner(), fresh=True)


ENDED_BADLY = ("cancelled", "timeout", "crashed")


def ended_words(job: Job) -> str:
    """Why a job ended without all its numbers: cancelled, the time limit, or the failure's message."""
    message = job.progress()[1]
    return {"cancelled": f"cancelled after {job.elapsed_s:.0f} s",
            "timeout": message}.get(job.outcome, message)


def frame_of(job: Job) -> pd.DataFrame:
    return as_frame(job.result())


def results(job_keys: Sequence[str]) -> list[tuple[str, pd.DataFrame]]:
    """(key, table) of every finished measurement job among ``job_keys`` (for the session export). A calibration
    job has no measurement rows: its table is exported as the Latency tab draws it (``views.common.table``)."""
    out = []
    for key in job_keys:
        for mgr in [manager(), *_managers().values()]:
            job = mgr.get(key, owner())
            if isinstance(job, CalibrateJob):
                break
            if job is not None and job.done():
                out.append((key, frame_of(job)))
                break
    return out


def panel(req: Request, *, key: str, button: str = "Measure", help: str | None = None) -> pd.DataFrame | None:
    """The Measure button, then a live progress bar, then the rows (a DataFrame) once the job is done.

    Returns None until the job has finished. The progress bar is a fragment re-run every second: it
    polls the child process and reruns the whole page once, when the job ends.
    """
    job = find(req)
    if job is None:
        head = st.empty()  # the button and "not measured yet": cleared once the press submitted the job
        with head.container():
            cols = st.columns([1, 3])
            with cols[0]:
                pressed = st.button(button, key=f"measure.{key}", type="primary", help=help, width="stretch")
            with cols[1]:
                address, device = run_on.run_on()
                where = (f"{req.device}; runs in a separate process" if address is None else
                         f"device {device} of the Ray cluster at {address}; one Ray task per point")
                if pressed:  # the job's progress (or its result) follows: "not measured yet" goes at once
                    st.caption(f"{req.label}: starting, progress below.")
                else:
                    st.caption(f"{NOT_MEASURED}. {req.label}: {req.points} point(s) on {where} (time limit "
                               f"{TIME_LIMIT_S:g} s), the page stays usable.")
        if not pressed:
            return None
        try:
            job = submit(req)
        except QueueFull as exc:
            st.warning(str(exc))
            return None
        head.empty()
    if not job.done():
        _progress(job.key, req.label)
        return None
    frame = frame_of(job)
    bad = frame[frame["status"] != "ok"]
    address = run_on.run_on()[0]
    ok = frame[frame["status"] == "ok"]  # a failure row's time is when it failed, not when a number was measured
    prov = provenance.provenance(ok, getattr(job, "started_wall", None),
                                 shared=getattr(job, "owner", owner()) != owner(), by=place_words(address))
    names = frame["device_name"].dropna()
    device_name = names.iloc[0] if not names.empty else req.device
    if job.outcome in ENDED_BADLY:
        st.warning(f"{req.label}: {ended_words(job)}. The points it finished are shown; press Retry to measure "
                   "again with the same settings.")
    with st.container(horizontal=True, vertical_alignment="center"):
        said = (f"**{prov.source}**{prov.words()[len(prov.source):]}" if len(ok) else "**no number measured**")
        st.caption(f"{req.label} on {device_name}: {said}; job took "
                   f"{job.elapsed_s:.1f} s; {len(frame)} row(s)" + (f", {len(bad)} not ok" if len(bad) else "") + ".")
        again = "Retry" if job.outcome in ENDED_BADLY else "Measure again"
        if st.button(again, key=f"remeasure.{key}", type="secondary", icon=":material/refresh:",
                     help="Start a new job that measures every point now, not from the results database (the old "
                          "rows stay as history)."):
            try:
                measure_again(req, job)
            except QueueFull as exc:
                st.warning(str(exc))
                return frame
            st.rerun()
    machine = provenance.machine_state(frame)
    if machine:
        st.caption(f"Machine while timing: {machine}.")
    for warning in [provenance.load_warning(frame), *provenance.spread_warnings(frame)]:
        if warning is None:
            continue
        st.warning(warning)
    summary = provenance.failure_summary(bad)
    if summary:
        messages = [m for m in bad["error"].dropna().unique() if "cancelled" not in m and not m.startswith("not run")]
        again = (" A point with a failed row is never served from the results database, so it is measured again "
                 "on every request (the other points came from the cache)." if prov.cached_rows and prov.fresh_rows
                 and not prov.shared else "")
        st.warning(f"{len(bad)} point(s) have no number — " + "; ".join(summary) + "."
                   + (f" First reason: {messages[0]}" if messages else "") + again)
        if len(messages) > 1:
            with st.expander("all failure messages"):
                st.markdown("\n".join(f"- {m}" for m in messages))
    return frame


def _progress(job_key: str, label: str, mgr: JobManager | None = None) -> None:
    mgr = mgr or _where_manager()
    me = owner()

    @st.fragment(run_every=POLL_S)
    def poll() -> None:
        job = mgr.get(job_key, me)
        if job is None:
            return
        fraction, message = job.progress()
        place = mgr.queue_position(job_key)
        if place:
            message = (f"queued, place {place}: another measurement on this server runs first (one at a time); "
                       "this one starts when it ends")
        st.progress(min(max(fraction, 0.0), 1.0), text=f"{label} — {message} ({job.elapsed_s:.0f} s)")
        cols = st.columns([1, 4])
        if cols[0].button("Cancel", key=f"cancel.{job_key}"):
            mgr.cancel(job_key, me)
            st.rerun(scope="app")
        if job.done():
            st.rerun(scope="app")

    poll()


def _where_manager() -> JobManager:
    address = run_on.run_on()[0]
    return manager() if address is None else manager(address)


def measured_value(frame: pd.DataFrame | None, *, measurement: str, phase: str, column: str,
                   component: str = "total") -> float | None:
    """One value from a measurement table (None when absent or failed)."""
    if frame is None or frame.empty:
        return None
    sel = frame[(frame["measurement"] == measurement) & (frame["phase"] == phase)
                & (frame["component"] == component) & (frame["status"] == "ok")]
    values = sel[column].dropna()
    return None if values.empty else float(values.iloc[0])




def _session_labels() -> dict[str, str]:
    """Job key -> label of every job this session asked for: measurements and training probes (the Benefits view
    submits probes to the same manager, ``dashboard.benefit_data``)."""
    return {**{key: label for key, (_probe, label) in ownership.session_probes().items()}, **ownership.session_jobs()}


def tray_rows() -> list[dict[str, str]]:
    """This session's jobs (those it asked for and still owns) with their state: queued (position, and the job it
    waits for), running, done, cancelled, timed out, failed (with the reason). Every place (this machine, each Ray
    cluster) runs one job at a time. ``place`` and ``key`` name the job for ``retry``; ``retry`` is "yes" for a
    job that ended without all its numbers."""
    labels = _session_labels()
    rows = []
    places = {"": manager(), **{a: m for a, m in _managers().items() if a}}
    me = owner()
    for place, mgr in places.items():
        all_jobs = mgr.jobs()
        running = [j for j in all_jobs if j.outcome == "running"]
        # only the jobs this session still owns: a job it asked for once and let go of ("Measure again", Cancel of a
        # shared run) may run on for another session, whose progress this session must not see
        for job in mgr.owned(me):
            if job.key not in labels:
                continue
            outcome = job.outcome
            if outcome == "pending":
                pos = mgr.queue_position(job)
                ahead = running[0] if running else None
                why = (f"waits for {labels.get(ahead.key, 'a job of another session')}" if ahead is not None
                       else "about to start")
                words = f"queued #{pos} — {why} (one job at a time on {place or 'this machine'})"
            elif outcome == "running":
                fraction, message = job.progress()
                words = f"running {fraction:.0%} — {message}"
            elif outcome == "finished":
                words = "done" if getattr(job, "owner", me) == me else "done (another session's run, shared)"
            else:
                words = {"cancelled": "cancelled", "timeout": "timed out", "crashed": "failed"}[outcome]
                words += f" — {ended_words(job)}" if outcome != "cancelled" else f" after {job.elapsed_s:.0f} s"
            rows.append({"job": labels[job.key], "state": words, "time": f"{job.elapsed_s:.0f} s", "place": place,
                         "key": job.key, "retry": "yes" if outcome in ENDED_BADLY else ""})
    return rows


def tray() -> None:
    """The sidebar's job tray: every measurement and probe this session asked for, wherever its tab is; a
    cancelled, failed or timed-out job stays with its reason and a Retry."""
    if not _session_labels():
        return
    busy = any(r["state"].startswith(("running", "queued")) for r in tray_rows())

    @st.fragment(run_every=2.0 if busy else None)
    def draw() -> None:
        rows = tray_rows()
        active = sum(1 for r in rows if r["state"].startswith(("running", "queued")))
        with st.expander(f"Measurement jobs ({active} active, {len(rows)} in all)", expanded=active > 0 or any(
                r["retry"] for r in rows)):
            for r in rows:
                st.markdown(f"**{r['job']}** — {r['state']} ({r['time']})")
                if r["retry"] and st.button("Retry", key=f"tray.retry.{r['place']}.{r['key']}", type="secondary",
                                            icon=":material/refresh:", help="Run this job again with the same "
                                            "settings (a new job; the finished points come from the results "
                                            "database)."):
                    job = manager(r["place"] or None).get(r["key"], owner())
                    if job is not None:
                        try:
                            retry(job, r["place"])
                        except QueueFull as exc:
                            st.warning(str(exc))
                            return
                    st.rerun(scope="app")
        if busy and not active:  # the last job just ended: redraw the page so its view shows the result
            st.rerun(scope="app")

    draw()


# --- the calibrate job kind (the Latency tab's "Calibrate this device") --------------------------------------

CALIBRATE_BUTTON = "Calibrate this device"


def calibrate_spec(device: str, time_budget_s: float = DEFAULT_BUDGET_S) -> CalibrateSpec:
    """The calibration of ``device`` (``cpu`` / ``cuda:0``) the page asks for (``profiling.run.calibrate_job``)."""
    return CalibrateSpec(device=device, time_budget_s=time_budget_s)


def calibration_job(spec: CalibrateSpec) -> CalibrateJob | None:
    """This session's calibration job of ``spec`` (running, finished, cancelled or failed), or None."""
    job = manager().get(spec.key(), owner())
    return job if isinstance(job, CalibrateJob) else None


def calibrate_panel(spec: CalibrateSpec, *, device_label: str, key: str = "calibrate",
                    has_stored: bool = False) -> CalibrateJob | None:
    """The "Calibrate this device" button, the job's live progress with Cancel, then how it ended (with "Calibrate
    again" / Retry). The calibration always runs in a child process on this machine (the server's device, not a Ray
    cluster's: the page predicts the device it can see), one job at a time with the measurements. Returns this
    session's job once it has ended (None before it started or while it runs)."""
    mgr = manager()
    label = f"calibration of {device_label}"
    job = calibration_job(spec)
    if job is None:
        head = st.empty()
        with head.container():
            cols = st.columns([1, 3])
            with cols[0]:
                pressed = st.button(CALIBRATE_BUTTON if not has_stored else "Calibrate again", key=f"measure.{key}",
                                    type="primary" if not has_stored else "secondary", width="stretch",
                                    help="Measures matrix-product throughput against shape, attention kernels, "
                                         "element-wise bandwidth, the per-kernel launch cost and the per-module "
                                         "Python overhead, in a separate process; stored in the result store.")
            with cols[1]:
                if pressed:
                    st.caption(f"{label}: starting, progress below.")
                else:
                    st.caption(f"{label}: at most {spec.time_budget_s:g} s of measuring in a separate process on "
                               f"this machine (time limit {spec.time_limit_s:g} s with start-up); the page stays "
                               "usable.")
        if not pressed:
            return None
        try:
            job = mgr.submit_spec(spec, owner=owner(), fresh=has_stored)
        except QueueFull as exc:
            st.warning(str(exc))
            return None
        ownership.remember_job(job.key, label)
        head.empty()
    if not job.done():
        _progress(job.key, label, mgr)
        return None
    if job.outcome in ENDED_BADLY:
        st.warning(f"{label}: {ended_words(job)}. Nothing was stored; press Retry to calibrate again.")
    elif job.store_failures:
        st.warning(f"{label}: measured, but not stored in the result store: {job.store_failures[0]}")
    with st.container(horizontal=True, vertical_alignment="center"):
        shared = getattr(job, "owner", owner()) != owner()
        words = ("another browser session's run, shared" if shared else "this session's run")
        if job.outcome == "finished":
            st.caption(f"{label}: job took {job.elapsed_s:.1f} s ({words}).")
        again = "Retry" if job.outcome in ENDED_BADLY else "Calibrate again"
        if st.button(again, key=f"remeasure.{key}", type="secondary", icon=":material/refresh:",
                     help="Start a new calibration now (the stored ones stay as history)."):
            try:
                new = mgr.submit_spec(spec, owner=owner(), fresh=True)
            except QueueFull as exc:
                st.warning(str(exc))
                return job
            ownership.remember_job(new.key, label)
            st.rerun()
    return job
