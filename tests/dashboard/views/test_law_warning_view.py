"""A law fitted to runs of a few steps is drawn under a warning that names them, on the Benefits tab's scaling
section and the Trade-offs tab's measured panel (a real tiny scaling probe: 4 optimizer steps per run)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from xtlens.core.config import PRESETS
from xtlens.profiling.benefit import analysis, report
from xtlens.profiling.benefit.probe_scaling import MIN_STEPS
from xtlens.profiling.benefit.probes import ProbeOptions, run_probe
from xtlens.profiling.benefit.records import probe_frame

APP = Path(__file__).resolve().parents[3] / "dashboard" / "app.py"


@pytest.mark.slow
def test_a_law_fitted_to_four_step_runs_carries_the_warning() -> None:
    opt = ProbeOptions(probe="scaling", base=PRESETS["seed"], values=(16, 32), tokens=1024, seq_len=32, batch=8,
                       evals=1, seeds=(0, 1), extra={"dim": 32, "depth": 1, "heads": 2, "eval_tokens": 256})
    frame = probe_frame(run_probe(opt))
    final = analysis.final_evals(frame)
    steps = sorted({int(s) for s in final["step"].dropna()})
    assert steps and steps[0] == 4 < MIN_STEPS, steps  # equal tokens: 1,024 tokens / (8 x 32) per step
    # learned or not, too few steps: the page must say so (the line raised above the losses: "learned")
    frame = frame.assign(unigram_entropy_nats=float(frame["val_loss_nats"].astype(float).max()) + 0.5)
    expected = report.law_fit_warning(analysis.final_evals(frame))
    assert expected is not None and f"trained fewer than {MIN_STEPS} optimizer steps (the fewest: 4)" in expected
    at = AppTest.from_file(str(APP), default_timeout=180).run()
    at.session_state["_xtlens_probe_uploads"] = [("scaling.parquet", frame)]
    at.session_state["benefits.probe"] = "scaling"
    at.session_state["view"] = "Benefits"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    warnings = [w.value for w in at.warning]
    assert any(w.endswith(expected) and "fitted anyway" in w for w in warnings), warnings
    at.session_state["view"] = "Trade-offs"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(w.endswith(expected) for w in (w.value for w in at.warning)), [w.value for w in at.warning]
    assert any("Your fit (not a scaling law: see the warning above)" in c.value for c in at.caption)
