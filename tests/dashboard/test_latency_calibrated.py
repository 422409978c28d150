"""Issue 19 on the Latency tab: "Calibrate this device" runs the calibration as a job in a child process (progress,
Cancel, time limit, survives a tab switch), the stored calibration is shown with the slow-dtype sentence and is
exportable, and the calibrated predictor's answers per phase and per part stand beside what was measured,
labelled calibrated (with the calibration's key) or "uncalibrated: roofline + typical overheads".

The calibration in the child is ``fake_calibrate.calibrate`` (synthetic numbers, this machine's CPU name); the job
machinery, the result store and the predictor are the real ones."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pandas as pd
import pytest
from test_app import app, no_exception, show
from xtlens.core import latency_model
from xtlens.core.config import PRESETS, Workload
from xtlens.core.hardware import GPU_PRESETS
from xtlens.dashboard import latency_parts as lp
from xtlens.dashboard.charts import latency as latency_charts
from xtlens.dashboard.session import jobs
from xtlens.dashboard.views.common import SHOWN_KEY
from xtlens.profiling.results.calibrations import calibration_rows, latest_calibration, stored_calibrations
from xtlens.profiling.results.reference import reference_for
from xtlens.profiling.run.calibrate_job import RESERVE_S, CalibrateJob, CalibrateSpec, time_limit_for
from xtlens.profiling.run.device import cpu_name
from xtlens.profiling.run.worker import JobManager

FAKE = str(Path(__file__).with_name("fake_calibrate.py")) + ":calibrate"
SEED = PRESETS["seed"]


def _fake_spec(**kw) -> CalibrateSpec:
    return CalibrateSpec(device="cpu", calibrate=FAKE, **kw)


def fake_calibrations(monkeypatch: pytest.MonkeyPatch) -> JobManager:
    """The page's calibrate job runs the fake calibration (a real child process, the real result store)."""
    real = jobs.calibrate_spec
    monkeypatch.setattr(jobs, "calibrate_spec", lambda device, budget=60.0: dataclasses.replace(
        real(device, budget), calibrate=FAKE))
    manager = JobManager()
    monkeypatch.setattr(jobs, "manager", lambda address=None: manager)
    return manager


# --- the job -------------------------------------------------------------------------------------------------

def test_the_calibrate_job_runs_in_a_child_stores_the_calibration_and_reports_progress() -> None:
    job = JobManager().submit_spec(_fake_spec(time_budget_s=30.0), owner="A")
    assert isinstance(job, CalibrateJob)
    job.wait(timeout=120)
    assert job.outcome == "finished", (job.progress(), job.stderr_tail())
    cal = job.calibration
    assert cal is not None and job.result() == [cal]
    assert job.progress() == (1.0, "done: calibration stored")
    # stored in the result store under this machine's CPU name, identical to what the child reported
    stored = latest_calibration(cpu_name())
    assert stored is not None and stored.key == cal.key and stored.to_dict() == cal.to_dict()
    assert cal.slow("bfloat16").slowdown_vs_float32 == pytest.approx(250.0)
    # the budget is the job's: what starting the child took, and the reserve, came off it
    asked = float(cal.notes[1].removeprefix("time_budget_s="))
    assert 30.0 - 15.0 < asked <= 30.0 - RESERVE_S


def test_cancel_and_the_time_limit_stop_the_calibration_and_store_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XTLENS_TEST_PAUSE_S", "60")
    mgr = JobManager(max_running=2)
    cancelled = mgr.submit_spec(_fake_spec(), owner="A")
    limited = mgr.submit_spec(_fake_spec(time_budget_s=5.0, time_limit_s=4.0), owner="A")
    assert cancelled.key != limited.key  # keyed by the budget
    cancelled.cancel()
    limited.wait(timeout=120)
    assert (cancelled.outcome, cancelled.result(), cancelled.calibration) == ("cancelled", [], None)
    assert limited.outcome == "timeout" and limited.progress()[1] == "stopped at the time limit of 4 s"
    assert limited.result() == [] and stored_calibrations() == []


def test_the_spec_names_its_budget_and_limit_and_round_trips() -> None:
    spec = CalibrateSpec(device="cuda:0", time_budget_s=45.0)
    assert spec.time_limit_s == time_limit_for(45.0) == 105.0
    assert CalibrateSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert spec.key() == CalibrateSpec(device="cuda:0", time_budget_s=45.0, time_limit_s=300).key()
    assert spec.key() != CalibrateSpec(device="cpu", time_budget_s=45.0).key()
    with pytest.raises(Exception, match="time_budget_s must be from 5 to 600"):
        CalibrateSpec(time_budget_s=2.0)


# --- the page ------------------------------------------------------------------------------------------------

def _texts(at, kind: str) -> list[str]:
    return [e.value for e in getattr(at, kind)]


def test_calibrate_button_job_survives_a_tab_switch_then_the_calibration_is_shown_exported_and_used(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XTLENS_TEST_PAUSE_S", "4")  # still running while the test switches tabs
    manager = fake_calibrations(monkeypatch)
    at = show(app(), "Latency")
    no_exception(at)
    assert any("is not calibrated yet" in t for t in _texts(at, "info"))
    assert at.button(key="measure.calibrate").label == jobs.CALIBRATE_BUTTON
    at.button(key="measure.calibrate").click().run()
    no_exception(at)
    (job,) = manager.jobs()
    assert isinstance(job, CalibrateJob) and not job.done()
    assert [b for b in at.button if b.key == f"cancel.{job.key}"]  # progress with Cancel
    at = show(at, "Trade-offs")
    assert any("calibration of CPU" in m.value for m in at.sidebar.markdown)  # in the job tray
    job.wait(timeout=120)
    at = show(at, "Latency")
    no_exception(at)
    cal = job.calibration
    assert cal is not None and job.outcome == "finished"
    text = " ".join(_texts(at, "markdown"))
    assert f"Calibration of **{cal.device_name}**: **measured now** by this session's job on this machine" in text
    assert f"Key: `{cal.key}`" in text
    # the slow dtype, plainly
    assert any("**bfloat16 is 250x slower than float32 on this CPU**" in w for w in _texts(at, "warning"))
    # predictions on this device, labelled with the calibration's key
    assert at.selectbox(key="latency.pred_hw").value == f"this device: {cal.device_name} (calibrated)"
    assert f"**calibrated on {cal.key}**" in _texts(at, "markdown")
    phases = next(df.value for df in at.dataframe if "predicted_ms" in df.value.columns
                  and "decode_uncached" in set(df.value["phase"]))
    wl = Workload()
    for _, row in phases.iterrows():  # decode: one token after the sidebar's length, as the decode is measured
        context = {"decode_context_tokens": wl.seq_len} if row["phase"].startswith("decode") else {}
        assert row["predicted_ms"] == pytest.approx(latency_model.phase_ms(SEED, wl, cal, phase=row["phase"],
                                                                           **context))
    assert list(phases["phase"]) == list(lp.PREDICTED_PHASES)
    # exportable: the registry holds the calibration's every point and its summary
    shown = at.session_state[SHOWN_KEY]
    pd.testing.assert_frame_equal(shown["latency.calibration"].frame, calibration_rows(cal))
    assert shown["latency.calibration"].tab == "Latency"
    assert {"latency.calibration", "latency.calibration_summary", "latency.predicted_phases",
            "latency.predicted_parts"} <= set(shown)
    # Export lists the calibration's table with its downloads; the session file holds measurement tables only
    exported = show(at, "Export")
    no_exception(exported)
    title = f"calibration of {cal.device_name}: every measured point"
    assert any(m.startswith(f"**Latency: {title}** — {len(calibration_rows(cal))} rows")
               for m in _texts(exported, "markdown"))
    assert [b for b in exported.get("download_button") if "export.shown.latency.calibration" in b.proto.id]
    assert not any(m.startswith("**measured: calibration of") for m in _texts(exported, "markdown"))
    # a new session finds it in the store: "from cache", the button says "Calibrate again"
    fresh = show(app(), "Latency")
    no_exception(fresh)
    when = cal.measured_at.replace("T", " ")[:19]
    assert any(f"**from cache** (measured {when} UTC by this machine; read from the result store)" in m
               for m in _texts(fresh, "markdown"))
    assert fresh.button(key="measure.calibrate").label == "Calibrate again"


def test_cancel_on_the_page_keeps_the_job_with_its_reason_and_a_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XTLENS_TEST_PAUSE_S", "60")
    manager = fake_calibrations(monkeypatch)
    at = show(app(), "Latency")
    at.button(key="measure.calibrate").click().run()
    (job,) = manager.jobs()
    try:
        at.button(key=f"cancel.{job.key}").click().run()
        no_exception(at)
        assert job.outcome == "cancelled"
        assert any(w.startswith("calibration of CPU: ")
                   and "cancelled after" in w and "Nothing was stored" in w for w in _texts(at, "warning"))
        assert at.button(key="remeasure.calibrate").label == "Retry"
        assert stored_calibrations() == []
        assert any("is not calibrated yet" in t for t in _texts(at, "info"))
    finally:
        job.cancel()


def test_predictions_stand_beside_the_measurements_of_the_same_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """A latency sweep (``fake_measure``: forward 1e-6 n^2 ms, training step 3x that, on "Fake CPU") and a calibration
    of that same device: the per-phase table puts the measured median beside the prediction at the sidebar's length,
    and every measured length gets its prediction."""
    from test_trust import fake_jobs

    monkeypatch.setenv("XTLENS_TEST_DEVICE_NAME", "Fake CPU")
    manager = fake_jobs(monkeypatch)
    real = jobs.calibrate_spec
    monkeypatch.setattr(jobs, "calibrate_spec", lambda device, budget=60.0: dataclasses.replace(
        real(device, budget), calibrate=FAKE))
    at = show(app(), "Latency")
    at.select_slider(key="latency.max_len").set_value(1024)
    at.multiselect(key="latency.phases").set_value(["forward", "train_step"])
    at.toggle(key="latency.variant").set_value(False)
    at.run()
    at.button(key="measure.latency").click().run()
    at.button(key="measure.calibrate").click().run()
    for job in manager.jobs():
        job.wait(timeout=120)
    at.run()
    no_exception(at)
    cal = next(j for j in manager.jobs() if isinstance(j, CalibrateJob)).calibration
    assert cal is not None and cal.device_name == "Fake CPU"
    assert f"**calibrated on {cal.key}**" in _texts(at, "markdown")
    phases = next(df.value for df in at.dataframe if "predicted_ms" in df.value.columns
                  and "decode_uncached" in set(df.value["phase"])).set_index("phase")
    n = Workload().seq_len
    assert phases.loc["forward", "measured_ms"] == pytest.approx(1e-6 * n * n)
    assert phases.loc["train_step", "measured_ms"] == pytest.approx(3e-6 * n * n)
    assert math.isnan(phases.loc["decode_uncached", "measured_ms"])  # never measured: no number, no ratio
    for phase in ("forward", "train_step"):
        assert phases.loc[phase, "measured_over_prediction"] == pytest.approx(
            phases.loc[phase, "measured_ms"] / latency_model.phase_ms(SEED, Workload(), cal, phase=phase))
    lengths = next(df.value for df in at.dataframe if "measured_over_prediction" in df.value.columns
                   and "predicted_ms" in df.value.columns and "kernels" not in df.value.columns)
    assert sorted(set(lengths["seq_len_tokens"])) == [128, 256, 512, 1024]
    assert sorted(set(lengths["phase"])) == ["forward", "train_step"]
    for _, row in lengths.iterrows():
        wl = Workload(seq_len=int(row["seq_len_tokens"]))
        assert row["predicted_ms"] == pytest.approx(latency_model.phase_ms(SEED, wl, cal, phase=row["phase"]))
        assert row["measured_ms"] == pytest.approx((3 if row["phase"] == "train_step" else 1) * 1e-6
                                                   * row["seq_len_tokens"] ** 2)


def test_each_predicted_part_stands_beside_its_measured_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real breakdown of a tiny configuration on this CPU and a calibration of this CPU: the per-part table puts
    each part's measured time (the breakdown's own table) beside its prediction at the sidebar's length."""
    from test_app import TINY_QUERY

    manager = fake_calibrations(monkeypatch)
    at = show(app(TINY_QUERY), "Latency")
    at.button(key="measure.latency_breakdown").click().run()
    at.button(key="measure.calibrate").click().run()
    for job in manager.jobs():
        job.wait(timeout=300)
    at.run()
    no_exception(at)
    assert at.selectbox(key="latency.pred_hw").value.startswith("this device: ")
    measured = next(df.value for df in at.dataframe if "share_%" in df.value.columns)
    measured = measured[measured["seq_len_tokens"] == 256].set_index("part")["measured_ms"]
    parts = next(df.value for df in at.dataframe if "launch_ms" in df.value.columns and "part" in df.value.columns)
    both = parts[parts["measured_ms"].notna()].set_index("part")
    assert {"qkv_proj", "attention", "feedforward", "alibi_bias"} <= set(both.index)
    for part, row in both.iterrows():
        assert row["measured_ms"] == measured[part]
        assert row["measured_over_prediction"] == pytest.approx(measured[part] / row["total_ms"])
    assert set(both.index) == set(parts["part"]) & set(measured.index)


def test_an_uncalibrated_gpu_preset_says_so_with_the_error_band() -> None:
    at = show(app(), "Latency")
    no_exception(at)
    assert at.selectbox(key="latency.pred_hw").value == "H200 SXM (uncalibrated)"
    label = next(m for m in _texts(at, "markdown") if "uncalibrated: roofline + typical overheads" in m)
    lo, hi = latency_model.ERROR_BAND
    assert label == f"**{latency_model.prediction_label(GPU_PRESETS['H200 SXM'])}**"
    assert f"median {lo:.0%} / 90th percentile {hi:.0%}" in label
    parts = next(df.value for df in at.dataframe if "launch_ms" in df.value.columns and "part" in df.value.columns)
    want = latency_model.predict_latency(SEED, Workload(), GPU_PRESETS["H200 SXM"], phase="forward")
    assert list(parts["part"]) == [p.component for p in sorted(
        want, key=lambda p: lp.PART_ORDER.index(p.component) if p.component in lp.PART_ORDER else 99)]
    by_part = {p.component: p for p in want}
    for _, row in parts.iterrows():
        assert row["total_ms"] == pytest.approx(by_part[row["part"]].total_ms)
        assert math.isnan(row["measured_ms"])  # no breakdown on an H200 in this session
    # beside the prediction: the shipped H200 reference run of this configuration (float32: its breakdown totals)
    ref = {(r.phase, r.seq_len_tokens): r.latency_median_ms for r in reference_for(SEED, "H200 SXM")
           if r.measurement == "breakdown" and r.component == "total" and r.dtype == "float32" and r.status == "ok"}
    assert ref
    phases = next(df.value for df in at.dataframe if "decode_uncached" in set(df.value.get("phase", []))
                  ).set_index("phase")
    assert phases.loc["forward", "measured_ms"] == ref[("forward", 1024)]
    assert phases.loc["train_step", "measured_ms"] == ref[("train_step", 1024)]
    lengths = next(df.value for df in at.dataframe if "measured_over_prediction" in df.value.columns
                   and "predicted_ms" in df.value.columns and "kernels" not in df.value.columns)
    assert {(p, n): m for p, n, m in zip(lengths["phase"], lengths["seq_len_tokens"], lengths["measured_ms"],
                                         strict=True)} == ref
    for _, row in lengths.iterrows():
        assert row["predicted_ms"] == pytest.approx(latency_model.phase_ms(
            SEED, Workload(seq_len=int(row["seq_len_tokens"])), GPU_PRESETS["H200 SXM"], phase=row["phase"]))
    assert any("reference run on that GPU" in m for m in _texts(at, "markdown"))
    # the seed has ALiBi and rotary: x-transformers gives its user the uncached decode, and the page says so
    assert any("a user of this configuration gets the uncached decode" in c for c in _texts(at, "caption"))


# --- frames and charts ---------------------------------------------------------------------------------------

def _rows(**cols) -> pd.DataFrame:
    base = {"status": "ok", "config_name": "seed", "batch": 1, "dtype": "float32", "device_name": "X"}
    n = len(next(iter(cols.values())))
    return pd.DataFrame({**{k: [v] * n for k, v in base.items()}, **cols})


def test_measured_totals_prefer_the_sweep_and_keep_only_this_configuration() -> None:
    frame = pd.concat([
        _rows(measurement=["latency"] * 3, phase=["forward", "decode", "train_step"], component=["total"] * 3,
              seq_len_tokens=[256] * 3, latency_median_ms=[10.0, 1.0, 30.0]),
        _rows(measurement=["breakdown"] * 3, phase=["forward", "forward", "train_step"],
              component=["total", "qkv_proj", "total"], seq_len_tokens=[256, 256, 512],
              latency_median_ms=[11.0, 2.0, 70.0]),
        _rows(measurement=["latency"], phase=["forward"], component=["total"], seq_len_tokens=[256],
              latency_median_ms=[99.0]).assign(config_name="other"),
    ], ignore_index=True)
    got = lp.measured_totals(frame, config="seed", batch=1, dtype="float32").set_index(["phase", "seq_len_tokens"])
    assert got["measured_ms"].to_dict() == {("forward", 256): 10.0, ("decode", 256): 1.0, ("train_step", 256): 30.0,
                                            ("train_step", 512): 70.0}
    assert lp.measured_totals(frame, config="seed", batch=2, dtype="float32").empty


def test_parts_vs_measured_joins_by_part_and_divides() -> None:
    parts = pd.DataFrame({"part": ["qkv_proj", "attention", "logits"], "total_ms": [2.0, 4.0, 1.0]})
    bd = pd.DataFrame({"config": ["seed", "seed", "seed"], "seq_len_tokens": [256, 256, 512],
                       "part": ["qkv_proj", "attention", "qkv_proj"], "measured_ms": [3.0, 2.0, 50.0]})
    got = lp.parts_vs_measured(parts, bd, config="seed", seq_len=256)
    assert got["measured_ms"].tolist()[:2] == [3.0, 2.0] and math.isnan(got["measured_ms"].iloc[2])
    assert got["measured_over_prediction"].tolist()[:2] == [1.5, 0.5]


def test_the_charts_name_their_units_and_series() -> None:
    phases = pd.DataFrame({"phase": list(lp.PREDICTED_PHASES), "predicted_ms": [10.0, 30.0, 0.5, 9.0],
                           "measured_ms": [12.0, math.nan, 0.7, math.nan]})
    fig = latency_charts.phases_chart(phases, title="t")
    assert [t.name for t in fig.data] == ["predicted", "measured (median)"]
    assert fig.layout.yaxis.type == "log" and "ms" in fig.layout.yaxis.title.text
    assert list(fig.data[0].text) == ["10 ms", "30 ms", "0.5 ms", "9 ms"] and list(fig.data[1].text)[1] == ""
    assert latency_charts._ms(3211.4) == "3,211 ms" and latency_charts._ms(0.04123) == "0.0412 ms"
    parts = pd.DataFrame({"part": ["qkv_proj", "attention"], "compute_ms": [1.0, 2.0], "memory_ms": [0.5, 0.1],
                          "launch_ms": [0.1, 0.1], "framework_ms": [0.2, 0.2], "measured_ms": [2.0, math.nan]})
    fig = latency_charts.parts_terms_chart(parts, title="t")
    assert [t.name for t in fig.data] == [lp.TERM_WORDS[t] for t in lp.TERMS] + ["measured (breakdown)"]
    assert fig.layout.barmode == "stack" and fig.layout.xaxis.title.text == "latency (ms)"
    assert list(fig.data[-1].y) == ["Q/K/V projections"]


@pytest.mark.slow
def test_the_real_calibration_from_the_button(monkeypatch: pytest.MonkeyPatch) -> None:
    """The button with the real ``calibrate`` (a 20 s budget, torch's import included): stored, shown, used,
    labelled with its key."""
    real = jobs.calibrate_spec
    monkeypatch.setattr(jobs, "calibrate_spec", lambda device, budget=60.0: real(device, 20.0))
    manager = JobManager()
    monkeypatch.setattr(jobs, "manager", lambda address=None: manager)
    at = show(app(), "Latency")
    at.button(key="measure.calibrate").click().run()
    (job,) = manager.jobs()
    job.wait(timeout=300)
    at.run()
    no_exception(at)
    assert job.outcome == "finished", (job.progress(), job.stderr_tail())
    cal = latest_calibration(cpu_name())
    assert cal is not None and cal.key == job.calibration.key and cal.wall_s <= 20.0
    assert f"**calibrated on {cal.key}**" in _texts(at, "markdown"), _texts(at, "warning")
    assert at.selectbox(key="latency.pred_hw").value == f"this device: {cal.device_name} (calibrated)"
    for slow in cal.slow_dtypes:  # only where this CPU emulates a dtype
        assert any(f"{slow.dtype} is " in w and "slower than float32" in w for w in _texts(at, "warning"))


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs CUDA")
def test_the_calibrate_job_on_cuda_feeds_the_page(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU: the page's job calibrates CUDA (the real ``calibrate``, the default 60 s budget) in a child, stores
    it under the GPU's name, and the Latency tab, its device set to that GPU, predicts it labelled with the key."""
    import torch

    manager = JobManager()
    monkeypatch.setattr(jobs, "manager", lambda address=None: manager)
    at = app()
    at.selectbox(key="wl.device").select("cuda:0")
    at = show(at.run(), "Latency")
    no_exception(at)
    at.button(key="measure.calibrate").click().run()
    (job,) = manager.jobs()
    job.wait(timeout=600)
    at.run()
    no_exception(at)
    assert job.outcome == "finished", (job.progress(), job.stderr_tail())
    cal = latest_calibration("cuda")
    assert cal is not None and cal.key == job.calibration.key
    assert cal.device == "cuda" and cal.device_name == torch.cuda.get_device_name(0)
    assert job.elapsed_s <= 60.0 + 5.0  # the job's budget, torch's and CUDA's start included (5 s for the watchdog)
    assert f"**calibrated on {cal.key}**" in _texts(at, "markdown"), _texts(at, "warning")
    phases = next(df.value for df in at.dataframe if "decode_uncached" in set(df.value.get("phase", [])))
    assert (phases["predicted_ms"] > 0).all() and (phases["launch_ms"] > 0).all()
