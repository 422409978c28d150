"""Issue 8 in the page: the huge configurations of the audit render every view without an exception, a hostile
paste gives a message, and two real sessions (two AppTests on one job manager) cannot see, cancel or erase
each other's job; the second's own job is queued with a message."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from xtlens.core.config import PRESETS, Workload
from xtlens.profiling.results.records import ProfileRecord, base_fields

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
VIEWS = ["Overview", "FLOPs", "Memory", "Latency", "Trade-offs", "Setups", "Benefits", "Compare", "Export", "History"]
HUGE = {
    "beyond-int64": dict(dim="32768", depth="512", num_tokens="1048576", max_seq_len="1048576", batch="4096",
                         seq_len="8192"),
    "70B-class": dict(num_tokens="128000", dim="8192", depth="80", heads="64", rotary_pos_emb="true", batch="4096",
                      seq_len="8192"),
}


def slow_measure(what, cfg, wl, *, device, options, config_name, progress=None):
    """Holds until the file ``$XTLENS_TEST_RELEASE`` exists (at most 60 s), then one memory row per phase."""
    release = Path(os.environ["XTLENS_TEST_RELEASE"])
    deadline = time.monotonic() + 60
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    rows = []
    for phase in ("inference", "train_step"):
        base = base_fields(cfg, wl, config_name=config_name, measurement=what, phase=phase, device=device,
                           device_name="Fake CPU")
        rows.append(ProfileRecord(**base, predicted_bytes=1000, measured_bytes=1100, method="fake"))
    return rows


def _app(query: dict[str, str]) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=180)
    at.query_params.update(query)
    return at.run()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(HUGE))
def test_every_view_renders_the_huge_configurations(name, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("XTLENS_DB", str(tmp_path / "r.sqlite"))
    from xtlens.profiling.results.store import open_store

    row = ProfileRecord(**base_fields(PRESETS["seed"], Workload(batch=4096, seq_len=8192), config_name="big",
                                      measurement="flops", phase="forward", device="cpu", device_name="CPU"),
                        predicted_flops=3 * 10**26, torch_counter_flops=2**64 + 1)
    open_store().add([row])  # the History view shows a stored count beyond int64 too
    at = _app(HUGE[name])
    for view in VIEWS:
        at.session_state["view"] = view
        at.run()
        assert not at.exception, (view, [e.value for e in at.exception])
        assert not [e.value for e in at.error if "could not be drawn" in e.value], view


def test_a_hostile_paste_gives_a_message_not_a_traceback() -> None:
    at = _app({})
    # (a lone surrogate cannot travel through the browser protocol; tests/core/test_untrusted.py covers it)
    for text in ["TransformerWrapper(num_tokens=" + "a." * 20_000 + "a)", "x" * 200_000]:
        at.text_area(key="src.snippet").set_value(text)
        at.button(key="src.load_snippet").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert any("snippet" in e.value for e in at.sidebar.error)


def _buttons(at: AppTest, prefix: str) -> list[str]:
    return [b.key for b in at.button if b.key and b.key.startswith(prefix)]


def test_two_sessions_cannot_see_cancel_or_erase_each_others_job(monkeypatch, tmp_path) -> None:
    from xtlens.dashboard.session import jobs
    from xtlens.profiling.run.worker import JobManager

    release = tmp_path / "release"
    monkeypatch.setenv("XTLENS_TEST_RELEASE", str(release))
    real_spec = jobs.Request.spec
    monkeypatch.setattr(jobs.Request, "spec",
                        lambda self: dataclasses.replace(real_spec(self), measure=f"{__file__}:slow_measure"))
    manager = JobManager(max_running=1)
    monkeypatch.setattr(jobs, "manager", lambda address=None: manager)
    try:
        a, b, b2 = _app({"seq_len": "256"}), _app({"seq_len": "256"}), _app({"seq_len": "512"})
        a.button(key="measure.overview").click().run()
        (job,) = manager.jobs()
        assert job.outcome == "running" and _buttons(a, "cancel.")  # A sees its progress and Cancel
        b.run()
        assert not _buttons(b, "cancel.") and _buttons(b, "measure.overview")  # B sees neither
        # B asks for the same measurement: one shared run; B's Cancel only withdraws B
        b.button(key="measure.overview").click().run()
        assert len(manager.jobs()) == 1 and _buttons(b, "cancel.")
        b.button(key=_buttons(b, "cancel.")[0]).click().run()
        assert job.outcome == "running" and _buttons(a.run(), "cancel.")
        # another session's own job waits, and says so
        b2.button(key="measure.overview").click().run()
        queued = [j for j in manager.jobs() if j is not job]
        assert len(queued) == 1 and queued[0].outcome == "pending"
        texts = [str(getattr(e.proto, "text", "")) for e in b2.get("progress")]
        assert any("queued" in t for t in texts), texts
        # A's job finishes; B's "Measure again" of the shared result leaves A's table alone
        release.touch()
        job.wait(timeout=60)
        a.run()
        assert not a.exception and not _buttons(a, "cancel.")
        b.button(key="measure.overview").click().run()
        assert _buttons(b, "remeasure.")
        b.button(key="remeasure.overview").click().run()
        # "Measure again" measures at once (issue 9): B now has a job of its own, not the Measure button
        assert not _buttons(b, "measure.overview")
        a.run()
        assert _buttons(a, "remeasure.") and not a.exception  # A still has its result
        a.session_state["view"] = "Export"
        a.run()
        assert any("measured:" in m.value for m in a.markdown)  # and its Export tab still lists it
        queued[0].wait(timeout=60)
    finally:
        release.touch()
        manager.cancel_all()
