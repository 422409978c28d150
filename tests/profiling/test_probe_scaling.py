"""The scaling probe (issue 17 item 4): its plan, its tables and its claims on frames built here with known
answers, and one quick real run end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
from xtlens.core.config import PRESETS
from xtlens.profiling.benefit import probe_scaling as ps
from xtlens.profiling.benefit.harness import step_flops, steps_for
from xtlens.profiling.benefit.probes import DEFAULTS, QUICK, ProbeInputError, ProbeOptions, plan
from xtlens.profiling.benefit.records import ProbeRecord, probe_frame

SEED = PRESETS["seed"]
LRS = (1e-3, 3e-3, 1e-2)
UNIGRAM = 6.0
WINDOWS = 40


# --- the plan -----------------------------------------------------------------------------------------

def test_default_plan_sweeps_lr_grows_attention_and_has_three_isoflop_budgets() -> None:
    opt = ProbeOptions(probe="scaling", base=SEED)
    runs = plan(opt)
    sizes = DEFAULTS["scaling"]["values"]["dim"]
    seeds = DEFAULTS["scaling"]["seeds"]
    assert len(seeds) >= 3
    # every (size, budget, seed) is run at every learning rate of the sweep
    lrs = sorted({r.settings.lr for r in runs})
    assert lrs == sorted(DEFAULTS["scaling"]["lrs"]) and len(lrs) >= 3
    points = {(r.axis_value, r.budget.kind, r.budget.value) for r in runs}
    for p in points:
        got = sorted((r.settings.lr, r.seed) for r in runs if (r.axis_value, r.budget.kind, r.budget.value) == p)
        assert got == sorted((lr, s) for lr in lrs for s in seeds), p
    # attention width grows with dim: heads x attn_dim_head == dim (the seed: 8 x 64 = 512)
    assert SEED.heads * SEED.attn_dim_head == SEED.dim
    widths = {r.axis_value: (r.cfg.heads, r.cfg.attn_dim_head) for r in runs}
    assert sorted(widths) == sorted(sizes)
    for dim, (heads, dh) in widths.items():
        assert heads * dh == dim
    assert [widths[d][0] for d in sorted(widths)] == sorted(widths[d][0] for d in widths)
    assert len({widths[d][0] for d in widths}) == len(sizes)  # strictly growing
    # every size at the equal-token budget; >= 3 FLOP budgets, each with >= 3 sizes
    main = {r.axis_value for r in runs if r.budget.kind == "tokens"}
    assert main == set(sizes)
    budgets = {}
    for r in runs:
        if r.budget.kind == "flops":
            budgets.setdefault(r.budget.value, set()).add(r.axis_value)
    assert len(budgets) >= 3 and all(len(v) >= 3 for v in budgets.values())
    # each FLOP budget is one size's FLOPs at the main token budget: that run is shared (same steps)
    tokens = DEFAULTS["scaling"]["tokens"]
    for c in budgets:
        owner = [r for r in runs if r.budget.kind == "flops" and r.budget.value == c
                 and steps_for(r.cfg, r.budget, r.settings) == tokens // (r.settings.batch * r.settings.seq_len)]
        assert owner, c
        assert c == steps_for(owner[0].cfg, owner[0].budget, owner[0].settings) * step_flops(owner[0].cfg,
                                                                                             owner[0].settings)
    # no IsoFLOP point below MIN_STEPS
    assert all(steps_for(r.cfg, r.budget, r.settings) >= ps.MIN_STEPS for r in runs if r.budget.kind == "flops")


def test_lr_option_fixes_one_rate_and_quick_is_smaller() -> None:
    runs = plan(ProbeOptions(probe="scaling", base=SEED, lr=2e-3))
    assert {r.settings.lr for r in runs} == {2e-3}
    quick = plan(ProbeOptions(probe="scaling", base=SEED, quick=True))
    assert len(quick) < len(plan(ProbeOptions(probe="scaling", base=SEED)))
    assert {r.settings.lr for r in quick} == set(QUICK["scaling"]["lrs"])
    assert len({r.budget.value for r in quick if r.budget.kind == "flops"}) >= 3


def test_bad_sizes_name_the_option() -> None:
    with pytest.raises(ProbeInputError, match="--values.*divisible by attn_dim_head = 16"):
        plan(ProbeOptions(probe="scaling", base=SEED, values=(24, 32)))
    with pytest.raises(ProbeInputError, match="lrs"):
        plan(ProbeOptions(probe="scaling", base=SEED, extra={"lrs": (0.0, 1e-3)}))


# --- frames with known answers --------------------------------------------------------------------------

def _law(n: float, d: float) -> float:
    return 1.5 + 40.0 * n ** -0.5 + 30.0 * d ** -0.3


def synthetic_frame(*, sizes=(16, 32, 48, 64), best_lr=3e-3, current=64, iso: dict | None = None,
                    loss=None, seeds=(0, 1, 2), unigram=UNIGRAM, rng_seed=0):
    """Scaling rows as the probe writes them: per (size, budget, lr, seed) an ``eval`` row (final) and
    ``WINDOWS`` ``window`` rows. Loss = ``loss(n, d)`` + 0.3 x (log10 lr / best_lr)^2 + seed and window noise
    (window difficulty shared by every run, as on one validation split)."""
    rng = np.random.default_rng(rng_seed)
    difficulty = rng.normal(0, 0.3, WINDOWS)
    loss = loss or _law
    rows = []
    n_of = {v: 1000 * v * v // 8 for v in sizes}  # non-embedding parameters
    tokens = 131_072
    points = [(v, "tokens", tokens, tokens) for v in sizes]
    for c, members in (iso or {}).items():
        points += [(v, "flops", c, c // (6 * n_of[v])) for v in members]
    k = 0
    for v, kind, budget, d in points:
        for lr in LRS:
            for s in seeds:
                k += 1
                mean = loss(n_of[v], d) + 0.3 * math.log10(lr / best_lr) ** 2 + rng.normal(0, 0.003)
                w = mean + difficulty + rng.normal(0, 0.01, WINDOWS)
                common = dict(probe="scaling", run_key=f"r{k}", config_name=f"dim={v}{' (current)' if v == current else ''}, "
                              f"{ps.lr_label(lr)}", config_key="c", config_json="{}", variant=f"dim={v}", axis="dim",
                              axis_value=v, budget_kind=kind, seed=s, budget_tokens=budget if kind == "tokens" else None,
                              budget_flops=budget if kind == "flops" else None, num_params=n_of[v] + 512 * v * 2,
                              non_embedding_params=n_of[v], tokens_seen=d, train_flops=6 * n_of[v] * d, step=100,
                              unigram_entropy_nats=unigram, peak_lr=lr, train_seq_len_tokens=64, corpus_name="toy")
                rows.append(ProbeRecord(**common, row_kind="eval", val_loss_nats=float(w.mean()),
                                        eval_seq_len_tokens=64))
                rows += [ProbeRecord(**common, row_kind="window", window_index=i, val_loss_nats=float(x),
                                     eval_seq_len_tokens=64) for i, x in enumerate(w)]
    return probe_frame(rows)


def test_best_lr_is_the_minimum_and_the_sweep_is_labelled() -> None:
    frame = synthetic_frame(best_lr=3e-3)
    t = ps.points_table(frame)
    assert len(t) == 4 * 3 and set(t["role"]) == {"best lr", "lr sweep"}
    best = t[t["role"] == "best lr"]
    assert len(best) == 4 and set(best["peak_lr"]) == {3e-3} and not best["lr_at_edge"].any()
    # the same choice computed independently: argmin of the seed-mean final loss per size
    fin = frame[frame["row_kind"] == "eval"].copy()
    fin["val"] = fin["val_loss_nats"].astype(float)
    argmin = fin.groupby(["axis_value", "peak_lr"])["val"].mean().groupby(level=0).idxmin()
    assert {k: lr for k, (_, lr) in argmin.items()} == dict(zip(best["axis_value"], best["peak_lr"], strict=True))
    # intervals hold their estimate; tokens per parameter on every point
    assert (t["ci95_low"] <= t["val_loss_nats"]).all() and (t["val_loss_nats"] <= t["ci95_high"]).all()
    assert np.allclose(t["tokens_per_param"], t["train_tokens"] / t["num_params"].astype(float))
    assert (t["tokens_per_non_embedding_param"] > t["tokens_per_param"]).all()
    # a best rate at the edge of the sweep is flagged
    edge = ps.points_table(synthetic_frame(best_lr=1e-2))
    assert edge.loc[edge["role"] == "best lr", "lr_at_edge"].all()
    assert "best lr" in ps.lr_sweep_table(frame).columns


def test_claims_from_a_frame_with_a_known_law() -> None:
    iso = {6 * 512_000 * 131_072 // 10: (16, 32, 48, 64)}
    claims = {c.claim.split(" (")[0]: c for c in ps.claims(synthetic_frame(iso=iso))}
    wider = claims["a larger dim gives a lower validation loss at equal tokens"]
    assert wider.verdict == "supported" and wider.ci95_high < 0 and wider.seeds == 3 and wider.windows == WINDOWS
    # the planted difference, computed from the law directly
    n = {v: 1000 * v * v // 8 for v in (16, 64)}
    expect = _law(n[64], 131_072) - _law(n[16], 131_072)
    assert wider.ci95_low - 0.02 <= expect <= wider.ci95_high + 0.02
    # the planted exponent is 0.5: "exponent 0.15" is contradicted
    law = next(c for k, c in claims.items() if k.startswith("validation loss follows a power law"))
    assert law.verdict == "contradicted" and law.ci95_low > 0.15
    for c in claims.values():
        assert c.probe == "scaling" and c.scale and ("Kaplan" in c.method or "Hoffmann" in c.method)


def test_a_run_above_the_unigram_line_withholds_every_claim() -> None:
    claims = ps.claims(synthetic_frame(unigram=1.0))  # every loss is above 1 nat
    assert claims and {c.verdict for c in claims} == {"not_learned"}


def test_isoflop_claims_follow_the_fitted_minimum() -> None:
    # at the budget, loss is a parabola in log10 N with its minimum at dim 32 (current) or below the sizes
    n_of = {v: 1000 * v * v // 8 for v in (16, 32, 48, 64)}

    def at(opt_n):
        return lambda n, d: 2.0 + 0.8 * (math.log10(n) - math.log10(opt_n)) ** 2

    c = 10 ** 12
    near = ps.claims(synthetic_frame(current=32, iso={c: (16, 32, 48, 64)}, loss=at(n_of[32])))
    iso_claim = next(x for x in near if x.claim.startswith("at equal training FLOPs"))
    assert iso_claim.verdict == "supported" and abs(iso_claim.estimate) < math.log10(2)
    far = ps.claims(synthetic_frame(current=64, iso={c: (16, 32, 48, 64)}, loss=at(n_of[32])))
    iso_far = next(x for x in far if x.claim.startswith("at equal training FLOPs"))
    assert iso_far.verdict == "contradicted" and iso_far.ci95_high < 0
    edge = ps.claims(synthetic_frame(current=32, iso={c: (16, 32, 48, 64)}, loss=at(n_of[16] / 10)))
    iso_edge = next(x for x in edge if x.claim.startswith("at equal training FLOPs"))
    assert iso_edge.verdict == "not_detectable" and iso_edge.estimate is None
    table = ps.isoflop_table(synthetic_frame(current=32, iso={c: (16, 32, 48, 64)}, loss=at(n_of[32])))
    assert len(table) == 1 and table["identifiable"].iloc[0]
    assert table["n_opt_ci95_low"].iloc[0] <= n_of[32] <= table["n_opt_ci95_high"].iloc[0]


# --- a real run ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_quick_probe_end_to_end() -> None:
    from xtlens.profiling.benefit.probes import run_probe

    opt = ProbeOptions(probe="scaling", base=SEED, values=(16, 32, 48), tokens=4096, seq_len=32, batch=8, evals=1,
                       seeds=(0, 1), extra={"lrs": (3e-3, 1e-2), "dim": 32, "heads": 2, "depth": 1,
                                            "eval_tokens": 256})
    frame = probe_frame(run_probe(opt, use_cache=False))
    t = ps.points_table(frame)
    assert set(t["axis_value"]) == {16, 32, 48}
    assert (t.groupby(["budget_kind", "budget", "axis_value"])["role"].apply(lambda r: (r == "best lr").sum()) == 1).all()
    claims = ps.claims(frame)
    assert any(c.claim.startswith("a larger dim") for c in claims)
    assert all(c.verdict in ("supported", "contradicted", "not_detectable", "not_learned") for c in claims)
    assert not ps.law_table(frame).empty


def test_a_frame_without_scaling_rows_gives_no_claims_and_empty_tables() -> None:
    other = synthetic_frame(sizes=(16, 32))
    other["probe"] = "heads"
    assert ps.claims(other) == []
    assert ps.points_table(other).empty and ps.law_table(other).empty and ps.isoflop_table(other).empty


def test_charts_show_the_points_the_fit_the_isoflop_minima_and_the_unigram_line() -> None:
    from xtlens.dashboard.charts import benefits as bc

    n_of = {v: 1000 * v * v // 8 for v in (16, 32, 48, 64)}
    frame = synthetic_frame(current=32, iso={10 ** 12: (16, 32, 48, 64)},
                            loss=lambda n, d: (2.0 + 0.8 * (math.log10(n) - math.log10(n_of[32])) ** 2 if d != 131_072
                                               else _law(n, d)))
    fig = bc.scaling_law(frame, title="t")
    names = [t.name for t in fig.data]
    best = next(t for t in fig.data if t.name.startswith("best lr per size"))
    pts = ps.points_table(frame)
    want = pts[(pts["role"] == "best lr") & (pts["budget_kind"] == "tokens")].sort_values("non_embedding_params")
    assert list(best.y) == pytest.approx(list(want["val_loss_nats"]))
    assert list(best.x) == [float(n_of[v]) for v in (16, 32, 48, 64)]
    assert sum(n.startswith("lr sweep") for n in names) == 2  # the two rates that lost
    assert any(n.startswith("fit: L = ") for n in names) and any("band" in n for n in names)
    assert fig.layout.shapes and fig.layout.shapes[0].y0 == UNIGRAM  # the unigram line
    assert fig.layout.xaxis.title.text == bc.NON_EMB_AXIS and "nats/token" in fig.layout.yaxis.title.text
    iso = bc.isoflop_curves(frame, title="t")
    star = next(t for t in iso.data if t.name.startswith("fitted optimum"))
    table = ps.isoflop_table(frame)
    assert star.x[0] == pytest.approx(table["n_opt_non_embedding"].iloc[0])
    assert iso.layout.shapes[0].y0 == UNIGRAM


def test_full_size_sweeps_around_the_configurations_own_dim() -> None:
    runs = plan(ProbeOptions(probe="scaling", base=SEED, full_size=True, tokens=2 ** 20, seq_len=512, batch=8))
    widths = {r.axis_value: (r.cfg.heads, r.cfg.attn_dim_head) for r in runs}
    assert sorted(widths) == [256, 512, 768, 1024] and widths[512] == (SEED.heads, SEED.attn_dim_head)
    assert all(h * dh == d for d, (h, dh) in widths.items())
