"""The stability probe (DeepNet's method): the plan, the largest stable learning rate, gradient ratios, claims."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from xtlens.core.config import PRESETS
from xtlens.profiling.benefit import probe_stability as ps
from xtlens.profiling.benefit.probes import DEFAULTS, ProbeOptions, plan
from xtlens.profiling.benefit.records import ProbeRecord, probe_frame

SEED = PRESETS["seed"]
UNIGRAM = 5.2


def test_plan_sweeps_lr_with_clipping_off_for_every_norm_depth_and_seed() -> None:
    runs = plan(ProbeOptions(probe="stability", base=SEED))
    d = DEFAULTS["stability"]
    assert len(runs) == len(d["seeds"]) * len(d["values"]) * len(d["lrs"]) * 3
    assert all(r.settings.grad_clip is None for r in runs)
    cells = {(r.variant, r.axis_value, r.settings.lr, r.seed) for r in runs}
    assert cells == {(n, dep, lr, s) for n in ("deepnorm", "pre_norm", "post_norm") for dep in d["values"]
                     for lr in d["lrs"] for s in d["seeds"]}
    assert len(d["seeds"]) >= 3
    for r in runs:
        assert r.cfg.depth == r.axis_value and r.axis == "depth"
        assert r.cfg.deepnorm == (r.variant == "deepnorm")
        assert r.build == ("post_norm" if r.variant == "post_norm" else "builder")
        assert r.config_name == f"{r.variant}, depth {r.axis_value}, lr {r.settings.lr:g}"
    # every lr of a (depth, seed) trains the same steps (one budget)
    assert len({r.budget for r in runs}) == 1
    # --lr: a sweep of one
    one = plan(ProbeOptions(probe="stability", base=SEED, lr=2e-3, seeds=(0,), values=(2,)))
    assert [(r.variant, r.settings.lr) for r in one] == [(n, 2e-3) for n in ("deepnorm", "pre_norm", "post_norm")]


def _run_rows(norm: str, depth: int, lr: float, seed: int, *, outcome: str, loss: float = 4.0,
              ratio_init: float = 0.2, ratio_final: float = 0.1) -> list[ProbeRecord]:
    """Rows of one run: step 0 and a last eval (``outcome`` trained / not_learned / diverged), layer rows for
    blocks 0 and 2*depth-1 at both steps."""
    key = f"{norm}-{depth}-{lr:g}-{seed}"
    common = dict(probe="stability", run_key=key, config_name=f"{norm}, depth {depth}, lr {lr:g}", config_key=key,
                  config_json="{}", variant=norm, axis="depth", axis_value=depth, seed=seed, budget_kind="tokens",
                  unigram_entropy_nats=UNIGRAM, peak_lr=lr, num_params=1000, budget_tokens=4096, steps_total=10)
    last = {"trained": dict(val_loss_nats=loss), "not_learned": dict(val_loss_nats=UNIGRAM + 0.05),
            "diverged": dict(status="diverged", val_loss_nats=None)}[outcome]
    rows = [ProbeRecord(**common, row_kind="eval", step=0, val_loss_nats=6.2),
            ProbeRecord(**common, row_kind="eval", step=5, val_loss_nats=UNIGRAM - 0.1 if outcome == "trained"
                        else UNIGRAM + 0.1),
            ProbeRecord(**common, row_kind="eval", step=10, **last)]
    last_block = f"layers.{2 * depth - 1} (ff)"
    for step, r in ((0, ratio_init), (10, ratio_final)):
        if outcome == "diverged" and step == 10:
            continue
        rows += [ProbeRecord(**common, row_kind="layer", step=step, layer="layers.0 (attn)", grad_norm=r * 2.0),
                 ProbeRecord(**common, row_kind="layer", step=step, layer=last_block, grad_norm=2.0),
                 ProbeRecord(**common, row_kind="layer", step=step, layer="embedding", grad_norm=9.0)]
    return rows


def _frame(table: dict, seeds=(0, 1, 2), ratios: dict | None = None):
    """``table``: (norm, depth) -> {lr: outcome or [outcome per seed]}."""
    rows = []
    for (norm, depth), per_lr in table.items():
        for lr, out in per_lr.items():
            for i, seed in enumerate(seeds):
                o = out[i] if isinstance(out, list) else out
                r0 = (ratios or {}).get((norm, depth, seed), 0.2)
                rows += _run_rows(norm, depth, lr, seed, outcome=o, ratio_init=r0)
    return probe_frame(rows)


GRID = {
    ("deepnorm", 8): {1e-3: "trained", 1e-2: "trained", 1e-1: "diverged"},
    ("pre_norm", 8): {1e-3: "trained", 1e-2: ["trained", "trained", "not_learned"], 1e-1: "diverged"},
    ("post_norm", 8): {1e-3: "trained", 1e-2: "not_learned", 1e-1: "diverged"},
    ("post_norm", 2): {1e-3: "not_learned", 1e-2: "not_learned", 1e-1: "not_learned"},
}


def test_largest_stable_lr_is_the_largest_lr_where_every_seed_trained() -> None:
    out = ps.run_outcomes(_frame(GRID))
    assert len(out) == 4 * 3 * 3
    assert sorted(out["outcome"].unique()) == ["diverged", "not_learned", "trained"]
    t = ps.largest_stable_lr(out).set_index(["norm", "depth"])
    assert t.loc[("deepnorm", 8), "largest_stable_lr"] == 1e-2
    assert t.loc[("pre_norm", 8), "largest_stable_lr"] == 1e-3  # one seed of three stuck at 1e-2
    assert t.loc[("post_norm", 8), "largest_stable_lr"] == 1e-3
    assert pd.isna(t.loc[("post_norm", 2), "largest_stable_lr"])
    assert t.loc[("deepnorm", 8), "diverged_at_lrs"] == "0.1" and t.loc[("deepnorm", 8), "diverged_runs"] == 3
    assert t.loc[("pre_norm", 8), "not_learned_at_lrs"] == "0.01"
    # the first evaluation step below the unigram line (step 5 in every trained run)
    assert set(out.loc[out["outcome"] == "trained", "first_step_below_unigram"]) == {5}
    assert out.loc[out["outcome"] == "diverged", "first_step_below_unigram"].isna().all()


def test_per_seed_largest_lr_is_censored_on_the_grid() -> None:
    p = ps.per_seed_largest(ps.run_outcomes(_frame(GRID))).set_index(["norm", "depth", "seed"])
    assert p.loc[("pre_norm", 8, 2), "log10_lr"] == pytest.approx(-3.0)
    assert p.loc[("pre_norm", 8, 0), "log10_lr"] == pytest.approx(-2.0)
    # no stable lr: one grid step (a decade here) below the smallest
    assert p.loc[("post_norm", 2, 0), "log10_lr"] == pytest.approx(-4.0)
    assert p.loc[("post_norm", 2, 0), "censored"] == "below"
    top = ps.per_seed_largest(ps.run_outcomes(_frame({("deepnorm", 2): {1e-3: "trained", 1e-2: "trained"}})))
    assert set(top["censored"]) == {"at_top"}


def test_peak_lr_read_from_the_name_when_the_column_is_missing() -> None:
    f = _frame({("deepnorm", 2): {3e-3: "trained"}}, seeds=(0,))
    f["peak_lr"] = None
    assert set(ps.peak_lrs(f)) == {3e-3}


def test_gradient_ratio_first_over_last_block_at_init_and_final() -> None:
    ratios = {("deepnorm", 8, 0): 0.1, ("deepnorm", 8, 1): 0.4, ("deepnorm", 8, 2): 0.2}
    f = _frame({("deepnorm", 8): {1e-3: "trained", 1e-2: "trained"}}, ratios=ratios)
    g = ps.grad_ratios(f)
    init = g[g["when"] == "init"]
    assert len(init) == 6 and len(g[g["when"] == "final"]) == 6
    by_seed = init.drop_duplicates("seed").set_index("seed")["ratio"]
    assert dict(by_seed) == pytest.approx({0: 0.1, 1: 0.4, 2: 0.2})
    t = ps.grad_ratio_table(g)
    row = t[t["when"] == "init"].iloc[0]
    # the geometric mean over seeds, computed two ways
    assert row["ratio"] == pytest.approx((0.1 * 0.4 * 0.2) ** (1 / 3))
    assert row["ratio"] == pytest.approx(10 ** np.mean(np.log10([0.1, 0.4, 0.2])))
    # a seed-bootstrap interval (3 seeds: widened to Student t) around it, in ratio units (10 ** log10 bounds)
    assert row["ratio_ci95_low"] < row["ratio"] < row["ratio_ci95_high"] and row["seeds"] == 3
    assert set(t.loc[t["when"] == "final", "lr"]) == {1e-3, 1e-2}


def test_claims_from_constructed_frames() -> None:
    from xtlens.profiling.benefit.claims import VERDICTS

    ratios = {("deepnorm", 2, 0): 0.2, ("deepnorm", 2, 1): 0.25, ("deepnorm", 2, 2): 0.18,
              ("deepnorm", 8, 0): 0.21, ("deepnorm", 8, 1): 0.22, ("deepnorm", 8, 2): 0.2}
    grid = dict(GRID) | {("deepnorm", 2): {1e-3: "trained", 1e-2: "trained", 1e-1: "trained"}}
    cl = {c.claim: c for c in ps.claims(_frame(grid, ratios=ratios))}
    dn = cl["DeepNorm allows a larger stable learning rate than post-norm at depth 8"]
    assert dn.estimate == pytest.approx(1.0) and dn.verdict == "supported"  # 1e-2 vs 1e-3 at every seed
    assert dn.seeds == 3 and dn.unit.startswith("decades")
    pre = cl["Pre-norm allows a larger stable learning rate than post-norm at depth 8"]
    assert pre.estimate == pytest.approx(2 / 3)  # seeds 0, 1: a decade; seed 2: none
    assert pre.verdict in ("supported", "not_detectable")
    steady = cl["DeepNorm holds the first/last-layer gradient ratio steady across depth"]
    want = np.mean([math.log10(0.21 / 0.2), math.log10(0.22 / 0.25), math.log10(0.2 / 0.18)])  # paired by seed
    assert steady.estimate == pytest.approx(want) and steady.ci95_low < 0 < steady.ci95_high
    assert steady.verdict == "supported"  # inside +- log10 2
    assert all(c.verdict in VERDICTS and c.scale for c in cl.values())
    # the ratio falling 10-fold with depth at every seed contradicts "steady"
    falls = {("deepnorm", 2, s): 0.2 for s in (0, 1, 2)} | {("deepnorm", 8, s): r for s, r in ((0, 0.02), (1, 0.03),
                                                                                            (2, 0.015))}
    cl = {c.claim: c for c in ps.claims(_frame(grid, ratios=falls))}
    assert cl["DeepNorm holds the first/last-layer gradient ratio steady across depth"].verdict == "contradicted"
    # post-norm stable further than DeepNorm: contradicted
    swapped = {("deepnorm", 8): GRID[("post_norm", 8)], ("post_norm", 8): GRID[("deepnorm", 8)]}
    cl = {c.claim: c for c in ps.claims(_frame(swapped))}
    assert cl["DeepNorm allows a larger stable learning rate than post-norm at depth 8"].verdict == "contradicted"
    # nothing left the unigram plateau: not_learned
    flat = {k: {lr: "not_learned" for lr in v} for k, v in GRID.items()}
    cl = {c.claim: c for c in ps.claims(_frame(flat))}
    assert cl["DeepNorm allows a larger stable learning rate than post-norm at depth 8"].verdict == "not_learned"


@pytest.mark.slow
def test_quick_stability_probe_end_to_end(tmp_path, monkeypatch) -> None:
    from xtlens.profiling.benefit.claims import VERDICTS
    from xtlens.profiling.benefit.probes import QUICK, run_probe

    monkeypatch.setenv("XTLENS_CACHE_DIR", str(tmp_path))
    opt = ProbeOptions(probe="stability", base=SEED, quick=True)
    frame = probe_frame(run_probe(opt))
    q = QUICK["stability"]
    out = ps.run_outcomes(frame)
    assert len(out) == 3 * len(q["values"]) * len(q["lrs"]) * len(q["seeds"])
    assert (frame.loc[frame["row_kind"] == "eval", "grad_clip"].isna()).all()  # clipping off in every row
    # lr 3 with clipping off: no run at it trains; the divergence is a row, not an exception
    assert not (out.loc[out["lr"] == 3.0, "outcome"] == "trained").any()
    assert (out["outcome"] != "error").all(), out[out["outcome"] == "error"]["error"].tolist()
    table = ps.stability_table(frame)
    assert len(table) == 3 * len(q["values"]) and table["init_grad_ratio"].notna().all()
    assert all(c.verdict in VERDICTS for c in ps.claims(frame))


def test_runs_that_never_finished_give_no_numbers() -> None:
    from xtlens.profiling.benefit.probes import failure_rows_for

    runs = plan(ProbeOptions(probe="stability", base=SEED, quick=True))
    f = probe_frame([r for run in runs for r in failure_rows_for(run, "timeout", "stopped at the time limit")])
    assert set(ps.run_outcomes(f)["outcome"]) == {"error"}
    lr_claims = [c for c in ps.claims(f) if "learning rate" in c.claim]
    assert len(lr_claims) == 2
    assert all(c.estimate is None and c.ci95_low is None and c.verdict == "not_learned" for c in lr_claims)


def test_charts_show_the_largest_stable_lr_and_the_ratio_interval() -> None:
    from xtlens.dashboard.charts import benefits as bc

    out = ps.run_outcomes(_frame(GRID))
    largest = ps.largest_stable_lr(out)
    fig = bc.stable_lr_chart(out, largest, title="t")
    lines = {t.name: list(t.y) for t in fig.data if t.mode == "lines"}
    assert lines == {"deepnorm: largest stable lr": [1e-2], "pre_norm: largest stable lr": [1e-3],
                     "post_norm: largest stable lr": [1e-3]}
    diverged = [t for t in fig.data if t.name == "deepnorm: diverged"][0]
    assert list(diverged.y) == [1e-1] and diverged.marker.symbol == "x"
    assert fig.layout.yaxis.type == "log" and "learning rate" in fig.layout.yaxis.title.text
    t = ps.grad_ratio_table(ps.grad_ratios(_frame(GRID)))
    fig = bc.grad_ratio_chart(t, when="init", title="t")
    dn = [tr for tr in fig.data if tr.name.startswith("deepnorm")][0]
    row = t[(t["norm"] == "deepnorm") & (t["when"] == "init")].sort_values("depth")
    assert list(dn.y) == pytest.approx(list(row["ratio"]))
    assert list(dn.error_y.array) == pytest.approx(list(row["ratio_ci95_high"] - row["ratio"]))
    f = _frame(GRID)
    curves = bc.stability_curves(f, depth=8, lr=1e-3, title="t")
    assert any(s.y0 == UNIGRAM for s in curves.layout.shapes)  # the unigram line
