"""The Memory tab's CUDA process table (``core.cuda_memory.process_memory`` per term, formula and source) and its
measured-vs-predicted join on the ordered training peak (the summed total kept as the upper bound)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from streamlit.testing.v1 import AppTest
from xtlens.core import cost_model
from xtlens.core.config import PRESETS, Workload
from xtlens.core.cuda_memory import process_memory
from xtlens.core.setup import TrainingSetup
from xtlens.dashboard.views.memory import cuda_process_frame, ordered_training_join

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
SEED = PRESETS["seed"]


def test_memory_tab_shows_the_cuda_process_table() -> None:
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    at.session_state["view"] = "Memory"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("CUDA process" in s.value for s in at.subheader)
    frames = [d.value for d in at.dataframe if "term" in d.value.columns]
    assert frames, "no CUDA process table"
    shown = frames[0].set_index("term")
    wl = Workload()  # the page's default workload
    pm = process_memory(SEED, wl, TrainingSetup(precision="fp32"), gpu="H200 141GB")
    assert int(shown.loc["process_total", "bytes"]) == pm.process_bytes
    assert int(shown.loc["reserved_peak", "bytes"]) == pm.reserved_peak_bytes
    assert shown["formula"].str.len().min() > 0 and shown["source"].str.len().min() > 0
    assert pm.allocated_peak_bytes + pm.context_bytes <= int(shown.loc["smallest_device", "bytes"]) <= pm.process_bytes


def test_cuda_process_frame_follows_precision_and_gpu() -> None:
    wl = Workload(seq_len=2048)
    amp = cuda_process_frame(SEED, wl, TrainingSetup(precision="amp_bf16"), "H200 141GB").set_index("term")
    a100 = cuda_process_frame(SEED, wl, TrainingSetup(precision="amp_bf16"), "A100 80GB").set_index("term")
    assert amp.loc["autocast_cache", "bytes"] > 0
    assert amp.loc["cublas_workspace", "bytes"] == 68_157_440
    assert a100.loc["cublas_workspace", "bytes"] < amp.loc["cublas_workspace", "bytes"]  # 8 MiB + 128 KiB per handle
    assert "typical" in a100.loc["cuda_context", "source"]


def test_measured_vs_predicted_uses_the_ordered_training_peak() -> None:
    wl = Workload(seq_len=512)
    head = cost_model.training_headline(SEED, wl)
    joined = pd.DataFrame([
        {"phase": "train_step", "component": "total", "seq_len_tokens": 512, "batch": 1, "dtype": "float32",
         "config_json": SEED.to_json(), "measured_bytes": head.peak_bytes * 1.02, "predicted_bytes": 1,
         "rel_err": 0.5, "method": "m"},
        {"phase": "inference", "component": "total", "seq_len_tokens": 512, "batch": 1, "dtype": "float32",
         "config_json": SEED.to_json(), "measured_bytes": 10, "predicted_bytes": 11, "rel_err": 1 / 11, "method": "m"},
    ])
    out = ordered_training_join(joined)
    train = out.iloc[0]
    assert train["predicted_bytes"] == head.peak_bytes
    assert train["upper_bound_bytes"] == head.upper_bound_bytes > head.peak_bytes
    assert abs(float(train["rel_err"]) - 0.02) < 1e-9
    assert out.iloc[1]["predicted_bytes"] == 11 and pd.isna(out.iloc[1]["upper_bound_bytes"])
