"""Issue 21, points 1-3 (fast): provenance words that cannot lie, "Measure again" that always starts a job, and
cancelled jobs that stay in the tray with a Retry. The browser checks are in test_browser_jobs.py."""

from __future__ import annotations

import datetime as dt
import time

import pandas as pd
import pytest
from test_app import app, no_exception, show
from test_trust import captions, fake_jobs
from xtlens.core.config import PRESETS, Workload
from xtlens.dashboard.session import provenance
from xtlens.profiling.run.plan import SweepOptions
from xtlens.profiling.run.worker import JobManager, JobSpec, QueueFull


def _stamps(*seconds_ago: float) -> pd.DataFrame:
    now = time.time()
    return pd.DataFrame({"timestamp": [dt.datetime.fromtimestamp(now - s, dt.timezone.utc).isoformat()
                                       for s in seconds_ago]})


def test_rows_of_this_sessions_job_are_measured_now_with_where() -> None:
    started = time.time() - 10
    prov = provenance.provenance(_stamps(5, 1), started, by="this machine")
    assert (prov.source, prov.cached_rows, prov.fresh_rows) == ("measured now", 0, 2)
    assert prov.words().startswith("measured now (") and prov.words().endswith("by this machine)")


def test_another_sessions_run_is_from_cache_with_its_original_time_never_measured_now() -> None:
    """The audit: a second session attaching to a 20-minute-old job read "measured now". The job's own start
    (20 min ago) is before its rows, so the start alone cannot tell: the job's owner does."""
    frame = _stamps(1200, 1190)
    started_20_min_ago = time.time() - 1205
    assert provenance.provenance(frame, started_20_min_ago).source == "measured now"  # its owner: true
    prov = provenance.provenance(frame, started_20_min_ago, shared=True, by="the Ray cluster at ray://h:10001")
    assert (prov.source, prov.cached_rows, prov.fresh_rows) == ("from cache", 2, 0)
    first = provenance._show(frame["timestamp"].min())
    assert prov.words().startswith(f"from cache (measured {first} .. ")
    assert "by the Ray cluster at ray://h:10001; another browser session's run, shared)" in prov.words()
    assert "measured now" not in prov.words()


def test_rows_stored_before_the_job_started_are_from_cache() -> None:
    prov = provenance.provenance(_stamps(600, 2), time.time() - 30)
    assert (prov.source, prov.cached_rows, prov.fresh_rows) == ("partly from cache", 1, 1)
    assert "1 row(s) stored earlier, 1 measured now" in prov.words()


def _spec(n: int = 32) -> JobSpec:
    return JobSpec.make("flops", PRESETS["seed"].replace(dim=64, depth=1, heads=2, alibi_num_heads=2, num_tokens=64,
                                                                   max_seq_len=128),
                        [Workload(seq_len=n)], SweepOptions(device="cpu"), time_limit_s=60)


def test_measure_again_always_starts_a_new_job_and_leaves_the_other_sessions_alone() -> None:
    """The audit: in a second session "Measure again" started nothing until the server restarted (the manager
    kept one job per key and handed the old one back). ``max_running=0``: the jobs stay queued, no process."""
    mgr = JobManager(max_running=0, max_per_owner=2)
    a_job = mgr.submit_spec(_spec(), owner="A")
    assert mgr.submit_spec(_spec(), owner="B") is a_job  # the same request: one shared run
    assert a_job.owner == "A" and mgr.owners(a_job) == {"A", "B"}
    b_again = mgr.submit_spec(_spec(), owner="B", fresh=True)  # B's "Measure again"
    assert b_again is not a_job and b_again.owner == "B" and b_again.outcome == "pending"
    assert mgr.get(a_job.key, "A") is a_job and mgr.get(a_job.key, "B") is b_again
    assert mgr.queue_position(a_job) == 1 and mgr.queue_position(b_again) == 2
    assert mgr.jobs() == [a_job, b_again]
    # a third session asking now shares the newest run of that request
    assert mgr.submit_spec(_spec(), owner="C") is b_again
    # a fresh job counts against the session's limit; the job it replaces does not
    mgr.submit_spec(_spec(48), owner="B")
    b_third = mgr.submit_spec(_spec(), owner="B", fresh=True)
    assert b_third is not b_again and mgr.owners(b_again) == {"C"}
    with pytest.raises(QueueFull, match="at most 2 per session"):
        mgr.submit_spec(_spec(64), owner="B")
    mgr.cancel_all()


def test_a_cancelled_job_stays_its_owners_and_the_next_submit_starts_a_new_one() -> None:
    mgr = JobManager(max_running=0)
    job = mgr.submit_spec(_spec(), owner="A")
    assert mgr.cancel(job.key, "A") is True
    assert job.outcome == "cancelled" and mgr.get(job.key, "A") is job and mgr.owned("A") == [job]
    assert {r.status for r in job.result()} == {"error"} and "cancelled" in job.result()[0].error
    retried = mgr.submit_spec(job.spec, owner="A", fresh=True)
    assert retried is not job and mgr.owned("A") == [retried] and retried.outcome == "pending"
    # a shared run cancelled by one session runs on for the other
    shared = mgr.submit_spec(_spec(), owner="B")
    assert shared is retried and mgr.cancel(shared.key, "B") is True
    assert shared.outcome == "pending" and mgr.get(shared.key, "B") is None and mgr.get(shared.key, "A") is shared
    mgr.cancel_all()


def test_cancel_keeps_the_job_in_the_view_and_the_tray_with_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The audit: after Cancel the view said "not measured yet" and the tray was empty."""
    monkeypatch.setenv("XTLENS_TEST_PAUSE_S", "30")
    manager = fake_jobs(monkeypatch, "slow_measure")
    at = show(app({"seq_len": "128"}), "Latency")
    at.select_slider(key="latency.max_len").set_value(256)
    at.run()
    at.button(key="measure.latency").click().run()
    no_exception(at)
    # the press starts the job: no stale "not measured yet" above its progress
    assert not [c.value for c in at.caption if c.value.startswith("not measured yet — press Measure. latency sweep")]
    (job,) = manager.jobs()
    at.button(key=f"cancel.{job.key}").click().run()
    job.wait(timeout=60)
    at.run()
    no_exception(at)
    assert job.outcome == "cancelled"
    assert any("latency sweep 128..256 tokens: cancelled after" in w.value for w in at.warning), \
        [w.value for w in at.warning]
    assert at.button(key="remeasure.latency").label == "Retry"
    assert not [c.value for c in at.caption if c.value.startswith("not measured yet — press Measure. latency sweep")]
    tray = [m.value for m in at.sidebar.markdown if "latency sweep" in m.value]
    assert tray and "cancelled after" in tray[0], tray
    retry = at.sidebar.button(key=f"tray.retry..{job.key}")
    assert retry.label == "Retry"
    retry.click().run()
    new = [j for j in manager.jobs() if j is not job]
    assert len(new) == 1 and new[0].key == job.key and new[0].outcome in ("pending", "running")
    assert "cancelled" not in " ".join(m.value for m in at.sidebar.markdown if "latency sweep" in m.value)
    new[0].cancel()
    new[0].wait(timeout=60)


def test_a_second_session_reads_from_cache_and_its_measure_again_measures(monkeypatch: pytest.MonkeyPatch) -> None:
    manager = fake_jobs(monkeypatch)
    first = app({"seq_len": "256"})
    first.button(key="measure.overview").click().run()
    (job,) = manager.jobs()
    job.wait(timeout=120)
    first.run()
    assert "measured now" in captions(first)
    second = app({"seq_len": "256"})  # another browser session, same configuration
    second.button(key="measure.overview").click().run()
    assert manager.jobs() == [job]  # shared: the same run
    second.run()
    words = captions(second).replace("**", "")
    assert "from cache (measured" in words and "another browser session's run" in words, words
    assert "measured now" not in words
    second.button(key="remeasure.overview").click().run()
    again = [j for j in manager.jobs() if j is not job]
    assert len(again) == 1 and again[0].spec.options.use_cache is False
    again[0].wait(timeout=120)
    second.run()
    assert "measured now" in captions(second)
    first.run()
    assert "measured now" in captions(first)  # the first session keeps its own result


def test_every_latency_setting_of_a_job_is_in_the_link_so_a_reload_keeps_it() -> None:
    """A reload (same URL) is a new session: the phases and the ALiBi toggle come back from the link too."""
    from xtlens.dashboard.session import store, tab_settings

    with store.use({}):
        notes: list[str] = []
        tab_settings.settings_from_url({"lat_max": "512", "lat_rep": "5", "lat_ph": "forward,decode",
                                        "lat_alibi": "0"}, notes)
        assert notes == []
        assert tab_settings.kept_settings() == {"latency.max_len": 512, "latency.repeats": 5,
                                                "latency.phases": ["forward", "decode"], "latency.variant": False}
        assert tab_settings.tab_url_params() == {"lat_max": "512", "lat_rep": "5", "lat_ph": "forward,decode",
                                                 "lat_alibi": "0"}
        tab_settings.settings_from_url({"lat_ph": "forward,bogus", "lat_alibi": "maybe"}, notes)
        assert [n.split(" is not allowed")[0] for n in notes] == [
            "The link's value was not used: lat_ph = ['forward', 'bogus']",
            "The link's value was not used: lat_alibi = 'maybe'"]


def _ownership_script() -> None:
    import streamlit as st
    from xtlens.dashboard.session import ownership

    taken = ownership.adopt(st.query_params.get("sid"))
    if st.query_params.get("remember"):
        ownership.remember_job("job-key-1", "latency sweep 128..512 tokens")
    st.write(f"owner={ownership.session_owner()}")
    st.write(f"taken={taken}")
    st.write(f"jobs={sorted(ownership.session_jobs().items())}")
    st.write(f"link={sorted(ownership.url_param().items())}")


def _read(at) -> dict[str, str]:
    return dict(str(m.value).split("=", 1) for m in at.markdown)


def test_a_reloaded_link_takes_back_its_session_id_and_an_unknown_id_does_not() -> None:
    from streamlit.testing.v1 import AppTest

    fresh = AppTest.from_function(_ownership_script)
    fresh.run()
    words = _read(fresh)
    assert words["taken"] == "False" and words["link"] == "[]"  # no job: the link is only its configuration

    first = AppTest.from_function(_ownership_script)
    first.query_params["remember"] = "1"
    first.run()
    words = _read(first)
    owner = words["owner"]
    assert len(owner) == 32 and words["link"] == f"[('sid', '{owner}')]"

    reloaded = AppTest.from_function(_ownership_script)  # a new browser session on the first one's link
    reloaded.query_params["sid"] = owner
    reloaded.run()
    words = _read(reloaded)
    assert words["taken"] == "True" and words["owner"] == owner
    assert words["jobs"] == "[('job-key-1', 'latency sweep 128..512 tokens')]"

    for made_up in ("f" * 32, "not-an-id"):  # an id this server never gave out, or not an id: a session of its own
        stranger = AppTest.from_function(_ownership_script)
        stranger.query_params["sid"] = made_up
        stranger.run()
        words = _read(stranger)
        assert words["taken"] == "False" and words["owner"] not in (owner, made_up) and words["jobs"] == "[]"
