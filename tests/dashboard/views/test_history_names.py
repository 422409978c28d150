"""History's series are keyed by the configuration itself (``config_key``), named by ``core.presets.config_label``,
never by the name a row was stored under ("current"); simulated memory is labelled simulated (pure helpers, no
Streamlit run)."""

from __future__ import annotations

import dataclasses
import json

from xtlens.core.config import PRESETS, Workload
from xtlens.core.cost_model import flop_counts
from xtlens.dashboard import tables
from xtlens.dashboard.views import history
from xtlens.profiling.results.records import ProfileRecord, base_fields, config_key
from xtlens.profiling.results.store import ResultStore

SEED = PRESETS["seed"]
CPU = "AMD EPYC (2 logical CPUs)"
FAKE = "torch MemTracker under FakeTensorMode (tensor sizes; no memory used)"


def _flops(cfg, n: int, name: str) -> ProfileRecord:
    wl = Workload(seq_len=n)
    fwd = flop_counts(cfg, wl).fwd_flops
    return ProfileRecord(**base_fields(cfg, wl, config_name=name, measurement="flops", phase="forward", device="cpu",
                                       device_name=CPU), predicted_flops=fwd, torch_counter_flops=fwd)


def _memory(cfg, n: int, name: str, method: str) -> ProfileRecord:
    wl = Workload(seq_len=n)
    return ProfileRecord(**base_fields(cfg, wl, config_name=name, measurement="memory", phase="inference",
                                       device="cpu", device_name=CPU), method=method, predicted_bytes=1000 * n,
                         measured_bytes=1100 * n)


def _frame(tmp_path, rows):
    store = ResultStore(tmp_path / "h.sqlite")
    store.add(rows, source="local", host="here")
    return store.query()


def test_rows_all_named_current_become_one_series_per_configuration(tmp_path):
    # what the page stored before: the sidebar's dim 72, 80 and 96 all as "current" (one line, vertical jumps)
    cfgs = {d: SEED.replace(dim=d) for d in (72, 80, 96)}
    frame = _frame(tmp_path, [_flops(cfg, n, "current") for cfg in cfgs.values() for n in (128, 256)])
    labels = history.series_label(frame)
    assert sorted(set(labels)) == [f"seed · dim={d} · {CPU} · float32" for d in (72, 80, 96)]
    assert not any("current" in label for label in labels)
    # each series holds exactly its own configuration's rows (one key per series, the FLOPs of that dim)
    for d, cfg in cfgs.items():
        rows = frame[labels == f"seed · dim={d} · {CPU} · float32"]
        assert set(rows["config_key"]) == {config_key(cfg)} and len(rows) == 2
        assert sorted(rows["torch_counter_flops"]) == sorted(flop_counts(cfg, Workload(seq_len=n)).fwd_flops
                                                             for n in (128, 256))
    summary = history.series_summary(frame)
    assert len(summary) == 3 and set(summary["stored_names"]) == {"current"}
    assert sorted(summary["config_key"]) == sorted(config_key(c) for c in cfgs.values())
    # the points drawn: newest per (series, point), so three lines of two points each
    points = history.newest_per_point(frame)
    assert points.groupby("series").size().to_dict() == {f"seed · dim={d} · {CPU} · float32": 2 for d in cfgs}


def test_old_current_rows_and_new_named_rows_of_one_configuration_are_one_series(tmp_path):
    cfg = SEED.replace(dim=80)
    frame = _frame(tmp_path, [_flops(cfg, 128, "current"), _flops(cfg, 256, "seed · dim=80"),
                              _flops(SEED, 128, "seed")])
    summary = history.series_summary(frame).set_index("series")
    assert summary.loc[f"seed · dim=80 · {CPU} · float32", "rows"] == 2
    assert summary.loc[f"seed · dim=80 · {CPU} · float32", "stored_names"] == "current, seed · dim=80"
    assert summary.loc[f"seed · {CPU} · float32", "rows"] == 1
    # the configuration filter offers name and key, and selects by key
    choice = f"seed · dim=80 ({config_key(cfg)})"
    assert choice in set(history.config_choice(frame))
    assert set(history.filter_rows(frame, configs=[choice])["config_key"]) == {config_key(cfg)}


def test_a_row_whose_configuration_cannot_be_rebuilt_keeps_its_name_and_key(tmp_path):
    row = _flops(SEED, 128, "current")
    frame = _frame(tmp_path, [row])
    broken = json.dumps({**json.loads(row.config_json), "dim": -3})  # no ModelConfig accepts it
    frame["config_json"] = broken
    assert list(history.readable_names(frame)) == [f"current [{config_key(SEED)}]"]


def test_simulated_memory_is_its_own_series_and_never_called_measured(tmp_path):
    cfg = SEED.replace(dim=80)
    frame = _frame(tmp_path, [_memory(cfg, 128, "current", FAKE), _memory(cfg, 128, "current", "torch MemTracker "
                                                                                              "on real tensors"),
                              _flops(cfg, 128, "current")])
    kinds = tables.row_kind(frame)
    assert sorted(kinds) == ["measured", "measured", "simulated"]
    labels = history.series_label(frame)
    assert sorted(set(labels)) == [f"seed · dim=80 · {CPU} · float32", f"seed · dim=80 · {CPU} · float32 · simulated"]
    sim = frame[labels.str.endswith("simulated")]
    assert list(sim["method"]) == [FAKE]
    shown = history.stored_rows(frame)
    assert list(shown.columns[:2]) == ["configuration", "kind"] and "config_json" not in shown
    assert dict(zip(shown["method"], shown["kind"], strict=True))[FAKE] == "simulated"
    summary = history.series_summary(frame).set_index("series")
    assert summary.loc[f"seed · dim=80 · {CPU} · float32 · simulated", "kind"] == "simulated"


def test_more_than_four_differences_carry_the_key(tmp_path):
    cfg = SEED.replace(dim=80, depth=2, heads=4, attn_dim_head=32, shift_tokens=0)
    frame = _frame(tmp_path, [_flops(cfg, 128, "current")])
    assert list(history.readable_names(frame)) == [
        f"seed · dim=80 · depth=2 · heads=4 · attn_dim_head=32 · +1 more [{config_key(cfg)}]"]


def test_the_memory_chart_names_each_series_by_its_kind():
    import pandas as pd
    from xtlens.dashboard import charts

    frame = pd.DataFrame({"seq_len_tokens": [128, 128], "phase": ["a · simulated / inference", "b / inference"],
                          "predicted_bytes": [1000, 1000], "measured_bytes": [1100, 1200],
                          "measured_label": ["simulated", "measured"]})
    names = [t.name for t in charts.measured_vs_predicted(frame, title="t").data]
    assert names == ["a · simulated / inference: predicted", "a · simulated / inference: simulated",
                     "b / inference: predicted", "b / inference: measured"]


def test_an_uploaded_run_stored_as_current_is_named_by_its_configuration():
    import pandas as pd
    from xtlens.dashboard.session import other_runs

    rows = [_memory(SEED.replace(dim=d), 128, "current", FAKE) for d in (72, 96)]
    rows.append(_memory(SEED, 128, "my name", FAKE))
    frame = pd.DataFrame([r.to_dict() for r in rows])
    runs = other_runs.runs_frame([("uploaded old.csv", frame)], "memory")
    assert list(runs["run"]) == ["seed · dim=72 · uploaded old.csv", "seed · dim=96 · uploaded old.csv",
                                 "my name · uploaded old.csv"]  # a name given on purpose stays


def test_the_page_stores_the_sidebars_configuration_under_its_readable_name(monkeypatch):
    """Measure on Overview with dim=80 in the sidebar (a real worker child, the tests' fast fake measure): the rows in
    the result store are named "seed · dim=80", not "current", and History shows that name."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest
    from xtlens.dashboard.session import jobs
    from xtlens.profiling.results.store import db_path
    from xtlens.profiling.run.worker import JobManager

    fake = str(Path(__file__).resolve().parents[1] / "fake_measure.py") + ":measure"
    real_spec = jobs.Request.spec
    monkeypatch.setattr(jobs.Request, "spec", lambda self: dataclasses.replace(real_spec(self), measure=fake))
    manager = JobManager()
    monkeypatch.setattr(jobs, "manager", lambda: manager)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[3] / "dashboard" / "app.py"), default_timeout=120)
    at.query_params.update({"dim": "80", "seq_len": "256"})
    at.run()
    at.button(key="measure.overview").click().run()
    (job,) = manager.jobs()
    job.wait(timeout=120)
    stored = ResultStore(db_path()).query()
    assert set(stored["config_name"]) == {"seed · dim=80"} and len(stored) == 6  # 4 latency phases + 2 memory
    assert set(stored["config_key"]) == {config_key(SEED.replace(dim=80))}
    at.session_state["view"] = "History"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.multiselect(key="history.series").value == ["seed · dim=80 · Fake CPU · float32"]


def test_exports_upload_comparison_calls_a_simulated_peak_simulated():
    from pathlib import Path

    import pandas as pd
    from streamlit.testing.v1 import AppTest
    from xtlens.dashboard import exporting

    cpu = [_memory(SEED, n, "seed", FAKE) for n in (128, 256)]
    gpu = [dataclasses.replace(r, device="cuda:0", device_name="NVIDIA H100 80GB HBM3", method="torch.cuda."
                               "max_memory_allocated growth") for r in cpu]
    table = pd.DataFrame([r.to_dict() for r in cpu + gpu])
    at = AppTest.from_file(str(Path(__file__).resolve().parents[3] / "dashboard" / "app.py"), default_timeout=120)
    at.run()
    at.session_state["view"] = "Export"
    at.run()
    at.file_uploader(key="export.results_upload").set_value(
        ("both.json", exporting.table_bytes(table, "json"), "application/json")).run()
    assert not at.exception, [e.value for e in at.exception]
    fig = next(json.loads(c.proto.spec) for c in at.get("plotly_chart") if "chart.upload_mem" in c.proto.id)
    names = {t["name"] for t in fig["data"]}
    assert f"{CPU} (simulated) / inference: simulated" in names, names
    assert "NVIDIA H100 80GB HBM3 / inference: measured" in names, names
    assert not any(n.startswith(CPU) and n.endswith("measured") for n in names), names
    assert fig["layout"]["title"]["text"].startswith("Peak memory by machine: measured or simulated")
