"""Forecasts (``profiling.benefit.forecast``) and the shared-exponent law (``stats.fit_shared_law``): synthetic
power laws with known parameters plus seed noise (no training)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from xtlens.profiling.benefit import forecast, stats

E0, A0, ALPHA0 = 1.0, 23.0, 0.3
DIMS = (16, 32, 64)


def _ne(dim: int, scale: float = 1.0) -> float:
    return (24 * dim * dim + 512 * dim) * scale


def _points(rng, *, arms=("reference", "a1", "a2", "a3"), dims=DIMS, seeds=(0, 1, 2), sigma=0.02, amp=None,
            e=None, tokens=131_072.0, learned=None, scale=None) -> pd.DataFrame:
    rows = []
    for k, arm in enumerate(arms):
        a = (amp or {}).get(arm, A0 * (1 + 0.08 * k))
        ek = (e or {}).get(arm, E0)
        sc = (scale or {}).get(arm, 1.0 + 0.05 * k)
        for dim in dims:
            ne = _ne(dim, sc)
            for s in seeds:
                y = ek + a * ne ** -ALPHA0 + rng.normal(0, sigma)
                rows.append({"arm": arm, "size_dim": dim, "seed": s, "non_embedding_params": ne, "tokens": tokens,
                             "val_bits_per_byte": y, "val_loss_nats": 2 * y, "num_params": ne + 512 * dim,
                             "learned": (learned or {}).get(arm, True), "probe": "atlas"})
    out = pd.DataFrame(rows)
    out["size_dim"] = out["size_dim"].astype("Int64")
    return out


def _truth(arm_index: int, n: float, amp: float | None = None) -> float:
    return E0 + (amp if amp is not None else A0 * (1 + 0.08 * arm_index)) * n ** -ALPHA0


# --- the shared law in stats -------------------------------------------------------------------------------

@pytest.mark.parametrize("share,dims", [("alpha", DIMS), ("E_alpha", DIMS[:2])])
def test_shared_law_recovers_planted_parameters_without_noise(share, dims):
    pts = _points(np.random.default_rng(0), dims=dims, sigma=0.0)
    law = stats.fit_shared_law(pts["arm"], pts["non_embedding_params"], pts["val_bits_per_byte"], share=share)
    assert law.identifiable, law.reason
    assert law.alpha == pytest.approx(ALPHA0, abs=1e-4)
    for k, arm in enumerate(("reference", "a1", "a2", "a3")):
        assert law.E[arm] == pytest.approx(E0, abs=1e-3)
        assert law.A[arm] == pytest.approx(A0 * (1 + 0.08 * k), rel=1e-3)
        # the same numbers a second way: the law's prediction at the largest size equals the planted loss
        assert law.predict(arm, 1e6) == pytest.approx(_truth(k, 1e6), abs=1e-4)
    assert law.params == (2 * 4 + 1 if share == "alpha" else 4 + 2)


def test_shared_law_refuses_too_few_points_and_non_monotone_arms():
    pts = _points(np.random.default_rng(0), dims=DIMS[:2], sigma=0.0)
    law = stats.fit_shared_law(pts["arm"], pts["non_embedding_params"], pts["val_bits_per_byte"], share="alpha")
    assert not law.identifiable and law.alpha is None and "8 (arm, size) points for 9 parameters" in law.reason
    flat = pts.copy()
    flat.loc[(flat["arm"] == "a2") & (flat["size_dim"] == 32), "val_bits_per_byte"] += 1.0
    law = stats.fit_shared_law(flat["arm"], flat["non_embedding_params"], flat["val_bits_per_byte"], share="E_alpha")
    assert not law.identifiable and "does not decrease with size for arm a2" in law.reason


def test_paired_seed_bootstrap_draws_one_seed_set_per_size():
    # two arms with identical runs: drawing a size's seeds once for both keeps their resampled means equal
    pts = _points(np.random.default_rng(1), arms=("a", "b", "c"), amp={"a": 20.0, "b": 20.0, "c": 26.0},
                  scale={"a": 1.0, "b": 1.0, "c": 1.0})
    pts.loc[pts["arm"] == "b", "val_bits_per_byte"] = pts.loc[pts["arm"] == "a", "val_bits_per_byte"].to_numpy()
    pts.loc[pts["arm"] == "b", "non_embedding_params"] *= 1.01  # another count at the same width
    args = (pts["arm"], pts["non_embedding_params"], pts["val_bits_per_byte"], pts["seed"])
    paired = stats.bootstrap_shared_law(*args, reps=200, size_key=pts["size_dim"])
    apart = stats.bootstrap_shared_law(*args, reps=200, size_key=pts["size_dim"], paired_seeds=False)
    assert paired.law.identifiable
    a_cols, b_cols = [0, 1, 2], [3, 4, 5]  # cells sorted by (arm, n): a's three sizes, then b's, ...
    assert np.allclose(paired.cell_means[:, a_cols], paired.cell_means[:, b_cols])
    assert not np.allclose(apart.cell_means[:, a_cols], apart.cell_means[:, b_cols])


# --- forecasts ---------------------------------------------------------------------------------------------

def test_shared_exponent_forecast_with_three_sizes_brackets_the_truth():
    rng = np.random.default_rng(3)
    pts = _points(rng, arms=("reference", "a1", "a2", "a3", "a4"))
    out = forecast.forecast_arms(pts, num_params=1e6)
    assert [f.arm for f in out] == ["a1", "a2", "a3", "a4", "reference"]
    for f in out:
        assert f.identifiable, f.reason
        assert "alpha shared by 5 arms" in f.law and f.sizes == 3 and f.seeds == 3 and f.level == 0.8
        assert f.unit == "bits/byte" and f.low < f.estimate < f.high
        largest = pts.loc[pts["arm"] == f.arm, "non_embedding_params"].max()
        assert f.extrapolation == pytest.approx(1e6 / largest)
        assert f.tokens == 131_072.0
    # the planted exponent lies in the shared fit's 95% interval
    fit = stats.bootstrap_shared_law(pts["arm"], pts["non_embedding_params"], pts["val_bits_per_byte"], pts["seed"],
                                     size_key=pts["size_dim"])
    assert fit.alpha.low <= ALPHA0 <= fit.alpha.high


def test_forecast_interval_coverage_is_near_its_level():
    # a per-arm law (5 sizes) over 40 noisy draws: the share of 80% intervals covering the true loss at 3x the
    # largest size, and the same a second way: the share of estimates within the median half-width of the truth
    # (a draw whose E lands on a bound is not identifiable: it says so, and is not counted)
    hits, errs, halves, refused = [], [], [], 0
    for i in range(40):
        rng = np.random.default_rng(100 + i)
        pts = _points(rng, arms=("reference",), dims=(16, 24, 32, 48, 64, 96), sigma=0.01,
                      scale={"reference": 1.0})
        n = 3 * _ne(96)
        (f,) = forecast.forecast_arms(pts, num_params=n)
        if not f.identifiable:
            assert f.estimate is None and "bound" in f.reason
            refused += 1
            continue
        assert "of this arm alone" in f.law and f.sizes == 6
        true = _truth(0, n)
        hits.append(f.low <= true <= f.high)
        errs.append(abs(f.estimate - true))
        halves.append((f.high - f.low) / 2)
    assert refused <= 8
    direct = float(np.mean(hits))
    second = float(np.mean(np.array(errs) <= np.median(halves)))
    assert 0.6 <= direct <= 0.97, direct
    assert 0.55 <= second <= 0.97, second
    assert abs(direct - second) < 0.2


def test_holdout_coverage_on_synthetic_atlases_is_near_the_level():
    # 3 sizes: the largest held out and forecast from 2 (E and alpha shared); the truth at the held-out size
    cov_true, cov_pred = [], []
    for i in range(8):
        rng = np.random.default_rng(200 + i)
        arms = ("reference", "a1", "a2", "a3", "a4", "a5")
        pts = _points(rng, arms=arms)
        h = forecast.holdout(pts)
        assert h.arms == 6 and h.level == 0.8 and h.reason == ""
        assert list(h.table.columns) == list(forecast.HOLDOUT_COLUMNS)
        t = h.table.set_index("arm")
        assert set(t["held_out_dim"]) == {64}
        assert h.coverage == pytest.approx(t["covered"].astype(bool).mean())
        assert h.median_abs_error_bits == pytest.approx(t["abs_error"].astype(float).median())
        assert all("E and alpha shared" in f.law for f in forecast.forecast_arms(pts[pts["size_dim"] < 64],
                                                                                  num_params=1e5))
        for k, arm in enumerate(arms):
            r = t.loc[arm]
            assert r["identifiable"]
            true = _truth(k, _ne(64, 1.0 + 0.05 * k))
            cov_true.append(r["low"] <= true <= r["high"])
            cov_pred.append(bool(r["covered_prediction"]))
            assert r["pred_low"] <= r["low"] and r["pred_high"] >= r["high"]
    assert 0.6 <= np.mean(cov_true) <= 0.98, np.mean(cov_true)
    assert 0.6 <= np.mean(cov_pred) <= 0.98, np.mean(cov_pred)


def test_not_identifiable_cases_say_why_and_give_no_number():
    rng = np.random.default_rng(5)
    # one arm, 2 sizes: no law of its own and nobody to share an exponent with
    (f,) = forecast.forecast_arms(_points(rng, arms=("reference",), dims=(16, 32)), num_params=1e6)
    assert not f.identifiable and f.estimate is None and f.low is None and f.high is None
    assert "2 sizes: a law of one arm needs at least 4" in f.reason
    # one arm, 3 sizes: a per-arm law needs 4
    (f,) = forecast.forecast_arms(_points(rng, arms=("reference",)), num_params=1e6)
    assert not f.identifiable and f.estimate is None and "3 sizes: a law of one arm needs at least 4" in f.reason
    assert "shares its exponent" in f.reason
    # a non-monotone arm and an arm that did not learn are refused; the others still forecast
    pts = _points(rng, arms=("reference", "a1", "a2", "a3", "bumpy", "flat"), learned={"flat": False})
    pts.loc[(pts["arm"] == "bumpy") & (pts["size_dim"] == 64), "val_bits_per_byte"] += 1.0
    out = {f.arm: f for f in forecast.forecast_arms(pts, num_params=1e6)}
    assert not out["bumpy"].identifiable and out["bumpy"].estimate is None
    assert "does not fall with size" in out["bumpy"].reason
    assert not out["flat"].identifiable and out["flat"].estimate is None and "did not learn" in out["flat"].reason
    assert all(out[a].identifiable for a in ("reference", "a1", "a2", "a3"))
    # the control arm is not pooled with the options
    ctl = _points(rng, arms=("reference", "a1", "a2", "control:shuffled_context"))
    out = {f.arm: f for f in forecast.forecast_arms(ctl, num_params=1e6)}
    assert not out["control:shuffled_context"].identifiable and "not pooled" in out["control:shuffled_context"].reason
    # one token budget: the loss at another is not forecast
    (f, *_) = forecast.forecast_arms(_points(rng), num_params=1e6, tokens=20e6)
    assert not f.identifiable and f.estimate is None and "token term" in f.reason and "131,072" in f.reason
    with pytest.raises(ValueError, match="num_params"):
        forecast.forecast_arms(_points(rng), num_params=-1)
    # a loss that falls linearly in log N over 5 sizes (no floor in sight): E lands on its bound 0
    rows = [{"arm": "reference", "size_dim": None, "seed": s, "non_embedding_params": n, "tokens": 1e5,
             "val_bits_per_byte": 1.0 - 0.2 * np.log10(n / 1e4) + 0.001 * s, "val_loss_nats": 2.0,
             "num_params": n, "learned": True, "probe": "atlas"} for n in (1e4, 3e4, 1e5, 3e5, 1e6) for s in (0, 1, 2)]
    (f,) = forecast.forecast_arms(pd.DataFrame(rows), num_params=1e7)
    assert not f.identifiable and f.estimate is None and "E at its lower bound 0" in f.reason
    assert f.sizes == 5 and f.extrapolation == pytest.approx(10.0)


def test_joint_law_when_tokens_vary():
    rng = np.random.default_rng(9)
    b0, beta0 = 60.0, 0.3
    rows = []
    for dim in (16, 32, 48, 64):
        for d in (3e4, 1e5, 3e5):
            for s in (0, 1, 2):
                ne = _ne(dim)
                y = E0 + A0 * ne ** -ALPHA0 + b0 * d ** -beta0 + rng.normal(0, 0.01)
                rows.append({"arm": "reference", "size_dim": dim, "seed": s, "non_embedding_params": ne, "tokens": d,
                             "val_bits_per_byte": y, "val_loss_nats": 2 * y, "num_params": ne + 512 * dim,
                             "learned": True, "probe": "scaling"})
    (f,) = forecast.forecast_arms(pd.DataFrame(rows), num_params=3e5, tokens=1e6)
    assert f.identifiable, f.reason
    assert "E + A/N^a + B/D^b" in f.law
    true = E0 + A0 * 3e5 ** -ALPHA0 + b0 * 1e6 ** -beta0
    assert f.low - 0.05 <= true <= f.high + 0.05  # a joint extrapolation in both N and D: a loose bracket
    (g,) = forecast.forecast_arms(pd.DataFrame(rows), num_params=3e5)
    assert not g.identifiable and "give the training tokens" in g.reason


# --- frames: points and the budget explorer's law ----------------------------------------------------------

def _frame(rng, *, arms=("reference", "a1", "a2", "a3"), dims=DIMS, seeds=(0, 1, 2), tokens=12_288, amp=22.0):
    """Atlas rows whose loss is a power law in TOTAL parameters (the explorer's count) for the reference."""
    rows = []
    for k, arm in enumerate(arms):
        for dim in dims:
            ne = _ne(dim, 1 + 0.05 * k)
            tot = ne + 512 * dim
            for s in seeds:
                y = E0 + amp * (1 + 0.08 * k) * tot ** -ALPHA0 + rng.normal(0, 0.015)
                for step in (5, 10):
                    rows.append({"probe": "atlas", "run_key": f"{arm}/{dim}/{s}", "config_name": f"{arm} d{dim}",
                                 "variant": arm, "axis": "dim", "axis_value": dim, "budget_kind": "tokens",
                                 "seed": s, "row_kind": "eval", "step": step, "status": "ok",
                                 "tokens_seen": tokens * step // 10, "budget_tokens": tokens,
                                 "val_bits_per_byte": y if step == 10 else y + 0.5,
                                 "val_loss_nats": 2 * y if step == 10 else 2 * y + 1, "unigram_entropy_nats": 7.0,
                                 "num_params": tot, "non_embedding_params": ne, "corpus_name": "syn"})
        rows.append({"probe": "atlas", "run_key": "", "config_name": f"{arm} d99", "variant": arm, "axis": "dim",
                     "axis_value": 99, "budget_kind": "tokens", "seed": 0, "row_kind": "eval", "step": None,
                     "status": "timeout"})
    return pd.DataFrame(rows)


def test_arm_points_take_each_runs_final_evaluation():
    fr = _frame(np.random.default_rng(0))
    pts = forecast.arm_points(fr)
    assert set(forecast.POINT_COLUMNS) <= set(pts.columns)
    assert len(pts) == 4 * 3 * 3  # the timed-out runs are left out
    fin = fr[(fr["step"] == 10)].set_index("run_key")
    for r in pts.itertuples(index=False):
        key = f"{r.arm}/{r.size_dim}/{r.seed}"
        assert r.val_bits_per_byte == pytest.approx(fin.loc[key, "val_bits_per_byte"])
        assert r.tokens == 12_288 and r.learned
    assert forecast.arm_points(fr.iloc[0:0]).empty
    assert list(forecast.arm_points(fr.iloc[0:0]).columns) == list(forecast.POINT_COLUMNS)


def test_law_for_budget_labels_counts_and_brackets_the_truth():
    hits = 0
    for i in range(6):
        fr = _frame(np.random.default_rng(50 + i))
        law = forecast.law_for_budget(fr, "syn")
        assert law is not None
        assert law.label == "fitted to your runs: 3 sizes, 3 seeds, corpus syn"
        assert law.unit == "bits/byte" and not law.tokens_term and law.tokens_fitted == (12_288.0,)
        assert any("token term not fitted" in n for n in law.notes)
        assert any("total" in n for n in law.notes)
        big = 3 * (_ne(64) + 512 * 64)
        est, lo, hi = law.predict(big, 20 * big)
        assert lo < est < hi
        assert law.predict(big, 1.0) == (est, lo, hi)  # the token term is not fitted: tokens do not move it
        assert law.extrapolation(big) == pytest.approx(3.0)
        hits += lo <= E0 + 22.0 * big ** -ALPHA0 <= hi
    assert hits >= 4
    assert forecast.law_for_budget(fr.iloc[0:0], "syn") is None
    law, why = forecast.budget_law_status(fr[fr["status"] != "ok"], "syn")
    assert law is None and why


def _scaling_frame(rng, *, iso: bool):
    """Scaling-probe rows (one learning rate, so every point's best): loss in bits/byte = a law in TOTAL
    parameters and tokens; the equal-token points, and with ``iso`` two more token budgets."""
    from xtlens.profiling.benefit.records import ProbeRecord, probe_frame

    rows, k = [], 0
    budgets = [("tokens", 131_072)] + ([("flops", 40_000), ("flops", 400_000)] if iso else [])
    for dim in (16, 32, 48, 64):
        ne = int(_ne(dim))
        tot = ne + 512 * dim
        for kind, d in budgets:
            for s in (0, 1, 2):
                k += 1
                y = E0 + 22.0 * tot ** -ALPHA0 + 40.0 * d ** -0.3 + rng.normal(0, 0.01)
                rows.append(ProbeRecord(
                    probe="scaling", run_key=f"r{k}", config_name=f"dim={dim}, lr 0.03", config_key="c",
                    config_json="{}", variant=f"dim={dim}", axis="dim", axis_value=dim, budget_kind=kind, seed=s,
                    budget_tokens=d if kind == "tokens" else None, budget_flops=6 * ne * d if kind == "flops" else None,
                    num_params=tot, non_embedding_params=ne, tokens_seen=d, train_flops=6 * ne * d, step=100, peak_lr=0.03,
                    unigram_entropy_nats=9.0, val_loss_nats=2 * y, val_bits_per_byte=y, corpus_name="toy"))
    return probe_frame(rows)


def test_scaling_probe_runs_are_one_arm_and_give_a_joint_budget_law_when_tokens_vary():
    fr = _scaling_frame(np.random.default_rng(4), iso=True)
    pts = forecast.arm_points(fr)
    assert set(pts["arm"]) == {"reference"} and len(pts) == 4 * 3 * 3
    assert sorted(pts["tokens"].unique()) == [40_000, 131_072, 400_000]
    law = forecast.law_for_budget(fr, "toy")
    assert law is not None and law.tokens_term and law.source == "the scaling probe's runs"
    assert law.label == "fitted to your runs: 4 sizes, 3 seeds, corpus toy"
    assert "E + A/N^a + B/D^b" in law.law and any("token term fitted from 3 budgets" in n for n in law.notes)
    n = 2 * (_ne(64) + 512 * 64)
    few, many = law.predict(n, 1e5), law.predict(n, 1e6)
    assert many[0] < few[0]  # more tokens, lower loss: the token term moves it
    true = E0 + 22.0 * n ** -ALPHA0 + 40.0 * 1e6 ** -0.3
    assert many[1] - 0.03 <= true <= many[2] + 0.03
    # held out: the largest width at each of its 3 token budgets, forecast by the joint law of the 3 smaller widths
    h = forecast.holdout(pts)
    assert h.arms == 1 and list(h.table["held_out_tokens"]) == [40_000, 131_072, 400_000]
    assert h.table["identifiable"].all() and set(h.table["held_out_dim"]) == {64}
    assert h.median_abs_error_bits < 0.05
    # one token budget and 4 sizes: a law of the arm alone, in N only
    law1 = forecast.law_for_budget(_scaling_frame(np.random.default_rng(4), iso=False), "toy")
    assert law1 is not None and not law1.tokens_term and "of this arm alone" in law1.law


# --- the E-free fallback (Kaplan et al. 2020's A N^-alpha, alpha shared) -------------------------------------

def _pure(rng, *, arms=("reference", "a1", "a2", "a3"), dims=(16, 32), sigma=0.005) -> pd.DataFrame:
    """Planted pure power laws: ``A_arm N^-ALPHA0`` (no irreducible loss) plus seed noise."""
    return _points(rng, arms=arms, dims=dims, sigma=sigma, e={a: 0.0 for a in arms})


def test_no_E_law_recovers_a_planted_pure_power_law():
    # noiseless: alpha and every A exactly, and the prediction equals the planted loss (two ways)
    pts = _pure(np.random.default_rng(0), sigma=0.0)
    law = stats.fit_shared_law(pts["arm"], pts["non_embedding_params"], pts["val_bits_per_byte"], share="no_E")
    assert law.identifiable, law.reason
    assert law.params == 4 + 1 and law.cells == 8
    assert law.alpha == pytest.approx(ALPHA0, abs=1e-4)
    for k, arm in enumerate(("reference", "a1", "a2", "a3")):
        assert law.E[arm] == 0.0
        assert law.A[arm] == pytest.approx(A0 * (1 + 0.08 * k), rel=1e-3)
        assert law.predict(arm, 1e6) == pytest.approx(A0 * (1 + 0.08 * k) * 1e6 ** -ALPHA0, rel=1e-4)
    assert "no irreducible loss" in law.describe()
    # with seed noise: the planted alpha lies in the bootstrap's 95% interval, and the forecast (chosen by
    # forecast_arms because E cannot be pinned down) brackets the truth at 4x the largest run
    pts = _pure(np.random.default_rng(4))
    fit = stats.bootstrap_shared_law(pts["arm"], pts["non_embedding_params"], pts["val_bits_per_byte"], pts["seed"],
                                     share="no_E", size_key=pts["size_dim"])
    assert fit.law.identifiable and fit.alpha.low <= ALPHA0 <= fit.alpha.high
    assert fit.alpha.high - fit.alpha.low < 0.1
    assert np.all(fit.samples_E == 0.0)
    out = {f.arm: f for f in forecast.forecast_arms(pts, num_params=4 * _ne(32, 1.15))}
    for k, arm in enumerate(("reference", "a1", "a2", "a3")):
        f = out[arm]
        assert f.identifiable, f.reason
        assert f.law.startswith("A_arm N^-alpha with no irreducible loss (Kaplan et al. 2020")
        assert "never flattens" in f.law and "optimistic" in f.law
        true = A0 * (1 + 0.08 * k) * f.num_params ** -ALPHA0
        assert f.low <= true <= f.high
        assert f.estimate == pytest.approx(fit.forecast(arm, f.num_params).estimate)


def test_no_E_fallback_is_chosen_exactly_when_E_cannot_be_pinned_down():
    rng = np.random.default_rng(6)
    # a floor the 2 sizes do identify (E > 0, 4 arms, no noise): the shared-E law, not the fallback
    out = forecast.forecast_arms(_points(rng, dims=(16, 32), sigma=0.0), num_params=1e6)
    assert all(f.identifiable and f.law.startswith("E + A_arm N^-alpha, E and alpha shared") for f in out)
    assert not any("no irreducible loss" in f.law for f in out)
    # the losses fall as if the floor were below 0 (the real atlas's dims 16 -> 32): the shared E lands on its
    # bound 0 -> the fallback, which says why
    below = _points(rng, dims=(16, 32), sigma=0.0, e={a: -0.1 for a in ("reference", "a1", "a2", "a3")})
    law = stats.fit_shared_law(below["arm"], below["non_embedding_params"], below["val_bits_per_byte"],
                               share="E_alpha")
    assert not law.identifiable and law.e_unpinned and "the shared E at a bound" in law.reason
    (f, *_) = forecast.forecast_arms(below, num_params=1e6)
    assert f.identifiable and "no irreducible loss" in f.law
    assert "E and alpha shared: the shared E at a bound" in f.law
    # too few points for any E: 2 arms x 2 sizes (E per arm: 4 points for 5 parameters; one E: 4 for 4)
    two = _points(rng, arms=("reference", "a1"), dims=(16, 32), sigma=0.0)
    for share in ("alpha", "E_alpha"):
        law = stats.fit_shared_law(two["arm"], two["non_embedding_params"], two["val_bits_per_byte"], share=share)
        assert not law.identifiable and law.e_unpinned and "4 (arm, size) points" in law.reason
    out = forecast.forecast_arms(two, num_params=1e6)
    assert all(f.identifiable and "no irreducible loss" in f.law and "alpha shared by 2 arms" in f.law for f in out)
    # 3 sizes with a floor: E per arm is identifiable, the fallback is never tried
    out = forecast.forecast_arms(_points(rng, sigma=0.0), num_params=1e6)
    assert all(f.law.startswith("E_arm + A_arm N^-alpha, alpha shared") for f in out)
    # an arm at one size is not "E unpinned": a law in size needs 2 sizes whatever its form
    one = _points(rng, dims=(16, 32), sigma=0.0)
    one = one[~((one["arm"] == "a3") & (one["size_dim"] == 32))]
    law = stats.fit_shared_law(one["arm"], one["non_embedding_params"], one["val_bits_per_byte"], share="alpha")
    assert not law.identifiable and not law.e_unpinned and "fewer than 2 sizes" in law.reason


def test_no_E_fallback_not_tried_when_the_E_laws_fail_for_another_reason(monkeypatch):
    # the laws with E fail for a reason other than E (say alpha at the edge of its grid): no fallback, and the
    # forecast says why with no number
    real = stats.bootstrap_shared_law
    tried = []

    def fake(*args, share="alpha", **kw):
        tried.append(share)
        fit = real(*args, share=share, **kw)
        law = stats.SharedLaw(share=share, arms=fit.law.arms, E=None, A=None, alpha=None, points=fit.law.points,
                              cells=fit.law.cells, params=fit.law.params, identifiable=False,
                              reason="alpha at the edge of its range", e_unpinned=False)
        return stats.SharedLawFit(law=law, alpha=None, reps=fit.reps)

    monkeypatch.setattr(stats, "bootstrap_shared_law", fake)
    out = forecast.forecast_arms(_pure(np.random.default_rng(8), arms=("reference", "a1", "a2", "a3", "a4")),
                                 num_params=1e6)
    assert tried == ["alpha", "E_alpha"]
    assert all(not f.identifiable and f.estimate is None and "alpha at the edge" in f.reason for f in out)


def test_no_E_law_refuses_when_it_too_is_under_determined():
    rng = np.random.default_rng(10)
    # one size: no law in size at all, whatever its form
    pts = _pure(rng, dims=(32,))
    law = stats.fit_shared_law(pts["arm"], pts["non_embedding_params"], pts["val_bits_per_byte"], share="no_E")
    assert not law.identifiable and law.alpha is None and "fewer than 2 sizes" in law.reason
    out = forecast.forecast_arms(pts, num_params=1e6)
    assert all(not f.identifiable and f.estimate is None and "1 size" in f.reason for f in out)
    h = forecast.holdout(pts)
    assert h.coverage is None and "one size only" in h.reason
    # one arm at 2 sizes: 2 points for 2 parameters (A and alpha)
    one = _pure(rng, arms=("reference",))
    law = stats.fit_shared_law(one["arm"], one["non_embedding_params"], one["val_bits_per_byte"], share="no_E")
    assert not law.identifiable and "2 (arm, size) points for 2 parameters" in law.reason


def test_holdout_uses_the_fallback_and_reports_its_coverage():
    # 3 sizes of pure power laws: dim 64 held out, forecast from dims 16 and 32 by the E-free law
    pts = _pure(np.random.default_rng(12), arms=("reference", "a1", "a2", "a3", "a4", "a5"), dims=DIMS)
    h = forecast.holdout(pts)
    assert h.arms == 6 and h.reason == ""
    t = h.table.set_index("arm")
    assert t["identifiable"].all()
    truth = [A0 * (1 + 0.08 * k) * _ne(64, 1.0 + 0.05 * k) ** -ALPHA0 for k in range(6)]
    est = t.loc[["reference", "a1", "a2", "a3", "a4", "a5"], "estimate"].astype(float).to_numpy()
    assert np.max(np.abs(est - truth)) < 0.02
    assert h.coverage == pytest.approx(t["covered"].astype(bool).mean())
    assert t["law"].str.startswith("A_arm N^-alpha with no irreducible loss").all()
