"""A loss law fitted to runs that have not learned (above the unigram line) or that trained too few steps carries
a warning (``report.law_fit_warning``); runs that learned over enough steps carry none."""

from __future__ import annotations

import pandas as pd
from xtlens.profiling.benefit import probe_scaling, report
from xtlens.profiling.benefit.analysis import final_evals
from xtlens.profiling.benefit.records import ProbeRecord, probe_frame


def _runs(steps: int, losses: list[float], unigram: float = 6.0) -> pd.DataFrame:
    rows = []
    for i, loss in enumerate(losses):
        for step in (0, steps):  # a step-0 evaluation and the final one, as the harness writes
            rows.append(ProbeRecord(probe="scaling", run_key=f"k{i}", config_key=f"c{i}", config_name=f"dim={16 * (i + 1)}",
                                    config_json="{}", seed=0, row_kind="eval", step=step, budget_kind="tokens",
                                    val_loss_nats=7.0 if step == 0 else loss, unigram_entropy_nats=unigram))
    return final_evals(probe_frame(rows))


def test_two_step_runs_that_did_not_learn_are_named() -> None:
    final = _runs(2, [6.4, 6.2, 5.9])
    assert list(final["step"]) == [2, 2, 2]
    text = report.law_fit_warning(final)
    assert text is not None and text.startswith("Not a scaling law: ")
    assert "2 of 3 run(s) ended at or above the unigram line (6.000 nats/token) (not_learned)" in text
    assert f"3 of 3 run(s) trained fewer than {probe_scaling.MIN_STEPS} optimizer steps (the fewest: 2)" in text


def test_learned_runs_of_enough_steps_carry_no_warning() -> None:
    steps = probe_scaling.MIN_STEPS
    assert report.law_fit_warning(_runs(steps, [5.5, 5.2, 5.0])) is None
    # one step fewer: the steps are named, not the (learned) losses
    text = report.law_fit_warning(_runs(steps - 1, [5.5, 5.2, 5.0]))
    assert text is not None and "unigram" not in text and f"(the fewest: {steps - 1})" in text
    assert report.law_fit_warning(_runs(steps, [5.5, 6.0])) is not None  # at the line: not learned
