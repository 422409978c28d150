"""The History view (AppTest): stored results from two machines, filters, the compared series, a corrupt file."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from xtlens.core.config import ModelConfig, Workload
from xtlens.core.presets import config_label
from xtlens.dashboard.views import history
from xtlens.profiling.results.records import ProfileRecord, base_fields, config_key
from xtlens.profiling.results.store import ResultStore

APP = Path(__file__).resolve().parents[3] / "dashboard" / "app.py"
TINY = ModelConfig(num_tokens=64, max_seq_len=256, dim=32, depth=1, heads=2, attn_dim_head=16)
CPU = "AMD EPYC (2 logical CPUs)"
GPU = "NVIDIA H100 80GB HBM3"
# stored as "tiny", shown by its configuration: more than 4 differences to the nearest preset, so with its key
NAME = f"{config_label(TINY)} [{config_key(TINY)}]"


def _rows(device_name: str, *, scale: float, day: str, dtype: str = "float32") -> list[ProfileRecord]:
    out = []
    for n in (64, 128, 256):
        wl = Workload(seq_len=n, dtype=dtype)
        lat = base_fields(TINY, wl, config_name="tiny", measurement="latency", phase="forward",
                          device="cuda" if device_name == GPU else "cpu", device_name=device_name)
        ms = scale * n * n
        out.append(ProfileRecord(**lat, latency_median_ms=ms, latency_min_ms=ms * 0.9, latency_max_ms=ms * 1.1,
                                 timestamp=f"{day}T12:00:00+00:00"))
        mem = {**lat, "measurement": "memory", "phase": "inference"}
        out.append(ProfileRecord(**mem, predicted_bytes=1000 * n, measured_bytes=int(1000 * n * (1 + scale)),
                                 timestamp=f"{day}T12:00:00+00:00"))
    return out


@pytest.fixture
def db(tmp_path, monkeypatch) -> ResultStore:
    path = tmp_path / "history.sqlite"
    monkeypatch.setenv("XTLENS_DB", str(path))
    store = ResultStore(path)
    store.add(_rows(CPU, scale=1e-3, day="2026-11-20"), source="local", host="laptop")
    store.add(_rows(GPU, scale=1e-5, day="2026-11-24", dtype="bfloat16"), source="ray", host="gpu-node-7", attempts=1)
    store.add([ProfileRecord(**{**base_fields(TINY, Workload(seq_len=256), config_name="tiny", measurement="latency",
                                              phase="forward", device="cuda", device_name=GPU), "dtype": "bfloat16"},
                             status="oom", error="Out of memory: fake", timestamp="2026-11-24T13:00:00+00:00")],
              source="ray", host="gpu-node-7", attempts=2)
    return store


def _history(at: AppTest) -> AppTest:
    at.session_state["view"] = "History"
    return at.run()


def _chart_traces(at: AppTest) -> list[list[str]]:
    return [[t.get("name", "") for t in json.loads(c.proto.spec)["data"]] for c in at.get("plotly_chart")]


def test_history_shows_both_machines_and_compares_them(db) -> None:
    at = _history(AppTest.from_file(str(APP), default_timeout=120).run())
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert any("13 row(s)" in c.value for c in at.caption)
    series = at.multiselect(key="history.series")
    assert set(series.value) == {f"{NAME} · {CPU} · float32", f"{NAME} · {GPU} · bfloat16"}
    traces = _chart_traces(at)
    latency = next(t for t in traces if any("slope" in name for name in t))
    # one line per machine, with the fitted slope: both latencies grow as n^2 here
    assert sorted(latency) == sorted([f"{NAME} · {CPU} · float32 — slope 2.00 (about quadratic in length)",
                                      f"{NAME} · {GPU} · bfloat16 — slope 2.00 (about quadratic in length)"])
    memory = next(t for t in traces if any("measured" in name for name in t))
    assert f"{NAME} · {GPU} · bfloat16 / inference: measured" in memory
    # filter: the GPU only, then a date range that holds only the CPU rows
    at.multiselect(key="history.device").set_value([GPU]).run()
    assert at.multiselect(key="history.series").options == [f"{NAME} · {GPU} · bfloat16"]
    at.multiselect(key="history.device").set_value([]).run()
    at.date_input(key="history.dates").set_value((dt.date(2026, 11, 20), dt.date(2026, 11, 21))).run()
    assert at.multiselect(key="history.series").options == [f"{NAME} · {CPU} · float32"]
    assert not at.exception


def test_the_failed_row_is_listed_but_not_drawn(db) -> None:
    frame = db.query()
    points = history.newest_per_point(frame)
    assert (points["status"] == "ok").all() and len(points) == 12
    summary = history.series_summary(frame)
    gpu = summary[summary["series"].str.contains("H100")].iloc[0]
    assert gpu["failed"] == 1 and gpu["rows"] == 7 and gpu["measured_on"] == "Ray cluster" and gpu["hosts"] == "gpu-node-7"
    only = history.filter_rows(frame, seq_lens=[256], only_ok=True)
    assert sorted(only["device_name"]) == sorted([CPU, CPU, GPU, GPU])


def test_empty_and_corrupt_databases(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XTLENS_DB", str(tmp_path / "empty.sqlite"))
    at = _history(AppTest.from_file(str(APP), default_timeout=120).run())
    assert not at.exception and any("No stored results yet" in i.value for i in at.info)
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"\x00" * 5000)
    monkeypatch.setenv("XTLENS_DB", str(bad))
    at = _history(AppTest.from_file(str(APP), default_timeout=120).run())
    assert not at.exception
    assert any("is not an SQLite database" in e.value and "has not changed it" in e.value for e in at.error)
    assert bad.read_bytes() == b"\x00" * 5000


def test_run_on_ray_setting_shows_the_cluster_problem(tmp_path, monkeypatch) -> None:
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    at.radio(key="run.on").set_value("Ray cluster").run()
    at.text_input(key="run.ray_address").set_value("127.0.0.1:9").run()  # nothing listens there
    assert not at.exception
    assert any("could not connect to the Ray cluster at 127.0.0.1:9" in e.value for e in at.error), \
        [e.value for e in at.error]
