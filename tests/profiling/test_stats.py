"""profiling.benefit.stats: bootstrap intervals over seeds x windows, pairing, the detectable effect, verdicts,
loss-law fits (planted parameters recovered, non-identifiable cases named), the IsoFLOP vertex, forecasts.

Tolerances of the noisy fits come from the spread of the estimator itself (a Monte Carlo over fresh noise), not
from a guess: the planted value must lie within 4 Monte Carlo standard deviations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from xtlens.profiling.benefit.stats import (
    Interval,
    bootstrap_law,
    bootstrap_mean,
    fit_joint_law,
    fit_loss_law,
    isoflop_fit,
    isoflop_minimum,
    min_detectable_effect,
    paired_difference,
    t_quantile,
    verdict,
)


def _toy(rng: np.random.Generator, seeds: int, windows: int, *, mu: float = 3.0, seed_sd: float = 0.07,
         window_sd: float = 0.3, noise_sd: float = 0.3) -> np.ndarray:
    """(seeds, windows) normal draws: a seed effect, a window effect (shared by every seed) and noise."""
    return (mu + rng.normal(0, seed_sd, (seeds, 1)) + rng.normal(0, window_sd, (1, windows))
            + rng.normal(0, noise_sd, (seeds, windows)))


# --- quantiles --------------------------------------------------------------------------------------------

def test_t_quantile_matches_the_printed_table():
    # Student t, two-sided 95% (upper 0.975) from any statistics table
    for df, want in ((1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (30, 2.0423)):
        assert t_quantile(0.975, df) == pytest.approx(want, abs=1e-4)
    assert t_quantile(0.9, 5) == pytest.approx(1.4759, abs=1e-4)
    assert t_quantile(0.025, 4) == pytest.approx(-2.7764, abs=1e-4)
    assert t_quantile(0.975, math.inf) == pytest.approx(1.959964, abs=1e-6)
    with pytest.raises(ValueError, match="df"):
        t_quantile(0.9, 0)


# --- bootstrap_mean ---------------------------------------------------------------------------------------

def test_interval_of_a_known_variance_toy_covers_the_true_mean_about_95_percent():
    """400 independent toys (5 seeds x 100 windows; seed and window variance of equal weight in the mean): the
    95% interval covers the true mean in 90-98% of them (binomial sd at 95% and 400 draws: 1.1 points)."""
    rng = np.random.default_rng(2026)
    hits = 0
    for i in range(400):
        iv = bootstrap_mean(_toy(rng, 5, 100), reps=1000, rng_seed=i)
        hits += iv.low <= 3.0 <= iv.high
    assert 0.90 <= hits / 400 <= 0.98


def test_bootstrap_se_agrees_with_the_textbook_formula_at_each_level():
    rng = np.random.default_rng(1)
    one_seed = rng.normal(2.0, 0.5, 400)  # one seed: windows only -> sd / sqrt(W)
    iv = bootstrap_mean(one_seed, reps=4000)
    assert iv.seeds == 1 and iv.windows == 400
    assert iv.estimate == pytest.approx(one_seed.mean(), abs=1e-12)
    assert iv.se == pytest.approx(one_seed.std(ddof=1) / math.sqrt(400), rel=0.05)
    per_seed = rng.normal(2.0, 0.5, (12, 1))  # one value per seed: seeds only -> sd / sqrt(S)
    iv = bootstrap_mean(per_seed, reps=4000)
    assert iv.se == pytest.approx(per_seed.std(ddof=1) / math.sqrt(12), rel=0.05)
    # the interval is widened to Student t with S - 1 = 11 degrees of freedom: half-width ~ t_11 se
    assert (iv.high - iv.low) / 2 == pytest.approx(t_quantile(0.975, 11) * iv.se, rel=0.1)


def test_bootstrap_is_reproducible_and_refuses_nan():
    v = _toy(np.random.default_rng(3), 3, 50)
    assert bootstrap_mean(v, rng_seed=7) == bootstrap_mean(v, rng_seed=7)
    assert bootstrap_mean(v, rng_seed=7).low != bootstrap_mean(v, rng_seed=8).low
    v[1, 4] = np.nan
    with pytest.raises(ValueError, match="1 entry is NaN"):
        bootstrap_mean(v)
    with pytest.raises(ValueError, match="reps"):
        bootstrap_mean(v[:1, :4], reps=3)
    with pytest.raises(ValueError, match="level"):
        bootstrap_mean(v[:1, :4], level=95)


def test_paired_difference_removes_a_shared_window_effect():
    rng = np.random.default_rng(4)
    windows = rng.normal(0, 1.0, (1, 200))            # window difficulty, the same for both arms
    a = 3.0 + windows + rng.normal(0, 0.05, (5, 200)) + rng.normal(0, 0.01, (5, 1))
    b = 2.9 + windows + rng.normal(0, 0.05, (5, 200)) + rng.normal(0, 0.01, (5, 1))
    paired = paired_difference(a, b)
    ia, ib = bootstrap_mean(a), bootstrap_mean(b)
    unpaired_se = math.hypot(ia.se, ib.se)
    assert paired.estimate == pytest.approx(a.mean() - b.mean(), abs=1e-12)
    assert paired.se < 0.1 * unpaired_se
    assert paired.high - paired.low < 0.1 * 1.96 * 2 * unpaired_se
    assert paired.low <= 0.1 <= paired.high and paired.low > 0
    assert paired.method.startswith("paired")
    with pytest.raises(ValueError, match="shape"):
        paired_difference(a, b[:, :10])


def test_min_detectable_effect_is_2_80_standard_errors():
    # z_0.975 = 1.959964 and z_0.80 = 0.841621 from the normal table: 2.801585 (the "2.8 se" rule)
    assert min_detectable_effect(0.01) == pytest.approx(0.02801585, abs=1e-7)
    assert min_detectable_effect(1.0) == pytest.approx(2.80, abs=2e-3)
    assert min_detectable_effect(0.5) / 0.5 == pytest.approx(2.80, abs=2e-3)
    assert min_detectable_effect(1.0, power=0.9) == pytest.approx(1.959964 + 1.281552, abs=1e-5)
    with pytest.raises(ValueError, match="se"):
        min_detectable_effect(float("nan"))


def _iv(lo: float, hi: float) -> Interval:
    return Interval(estimate=(lo + hi) / 2, low=lo, high=hi, se=(hi - lo) / 4, level=0.95, seeds=3, windows=10,
                    method="test")


def test_verdicts():
    assert verdict(_iv(0.1, 0.3), expected_sign=+1, mde=0.05, learned=True) == "supported"
    assert verdict(_iv(-0.3, -0.1), expected_sign=-1, mde=0.05, learned=True) == "supported"
    assert verdict(_iv(-0.3, -0.1), expected_sign=+1, mde=0.05, learned=True) == "contradicted"
    assert verdict(_iv(0.1, 0.3), expected_sign=-1, mde=0.05, learned=True) == "contradicted"
    assert verdict(_iv(-0.1, 0.3), expected_sign=+1, mde=0.05, learned=True) == "not_detectable"
    assert verdict(None, expected_sign=+1, mde=None, learned=True) == "not_detectable"
    assert verdict(_iv(0.1, 0.3), expected_sign=+1, mde=0.05, learned=False) == "not_learned"
    # "no difference": inside [-margin, margin] (margin = mde by default) supports it; excluding 0 contradicts it
    assert verdict(_iv(-0.02, 0.03), expected_sign=0, mde=0.05, learned=True) == "supported"
    assert verdict(_iv(-0.02, 0.03), expected_sign=0, mde=0.05, margin=0.025, learned=True) == "not_detectable"
    assert verdict(_iv(-0.2, 0.3), expected_sign=0, mde=0.05, learned=True) == "not_detectable"
    # a nonzero difference inside the margin is equivalence, not a contradiction (Schuirmann's two one-sided tests);
    # a difference beyond the margin and the MDE contradicts "no difference"
    assert verdict(_iv(0.01, 0.03), expected_sign=0, mde=0.05, learned=True) == "supported"
    assert verdict(_iv(0.06, 0.12), expected_sign=0, mde=0.05, learned=True) == "contradicted"
    assert verdict(_iv(0.01, 0.07), expected_sign=0, mde=0.05, learned=True) == "not_detectable"  # estimate 0.04 < MDE
    # a difference inside the minimum detectable effect is not_detectable, never a win (nor a loss), even when its
    # interval excludes 0
    assert verdict(_iv(0.01, 0.05), expected_sign=+1, mde=0.05, learned=True) == "not_detectable"  # estimate 0.03
    assert verdict(_iv(-0.05, -0.01), expected_sign=+1, mde=0.05, learned=True) == "not_detectable"
    assert verdict(_iv(0.01, 0.05), expected_sign=+1, mde=0.03, learned=True) == "supported"
    assert verdict(_iv(-0.02, 0.03), expected_sign=0, mde=None, learned=True) == "not_detectable"
    with pytest.raises(ValueError, match="expected_sign"):
        verdict(_iv(0, 1), expected_sign=2, mde=None, learned=True)


# --- loss laws --------------------------------------------------------------------------------------------

SIZES = np.array([1e4, 3e4, 1e5, 3e5, 1e6])
E0, A0, ALPHA0 = 2.0, 50.0, 0.4


def _law(n: np.ndarray) -> np.ndarray:
    return E0 + A0 * n ** -ALPHA0


def test_power_law_recovers_planted_parameters_without_noise():
    law = fit_loss_law(SIZES, _law(SIZES))
    assert law.identifiable, law.reason
    assert (law.E, law.A, law.alpha) == pytest.approx((E0, A0, ALPHA0), rel=1e-6)
    assert law.predict(1e7) == pytest.approx(float(_law(np.array(1e7))), rel=1e-9)
    # repeated sizes (seeds) fit their means: the same law
    again = fit_loss_law(np.repeat(SIZES, 2), np.repeat(_law(SIZES), 2) + np.tile([0.01, -0.01], 5))
    assert again.alpha == pytest.approx(ALPHA0, rel=1e-6) and again.points == 10 and again.cells == 5


def _noisy(rng: np.random.Generator, seeds: int = 5, sd: float = 0.02) -> tuple[np.ndarray, ...]:
    n = np.repeat(SIZES, seeds)
    return n, _law(n) + rng.normal(0, sd, n.size), np.tile(np.arange(seeds), len(SIZES))


def test_noisy_power_law_recovers_planted_parameters_and_its_bootstrap_se_matches_monte_carlo():
    """The estimator's spread measured two ways: the seed bootstrap's se on one data set, and the sd of the
    estimate over 40 fresh data sets. They agree within a factor 1.6; the planted values lie within 4 Monte Carlo
    sd of the estimates."""
    rng = np.random.default_rng(11)
    alphas, es = [], []
    for _ in range(40):
        law = fit_loss_law(*_noisy(rng)[:2])
        assert law.identifiable, law.reason
        alphas.append(law.alpha)
        es.append(law.E)
    mc_alpha, mc_e = float(np.std(alphas, ddof=1)), float(np.std(es, ddof=1))
    fit = bootstrap_law(*_noisy(rng), reps=300)
    assert fit.law.identifiable
    assert abs(fit.law.alpha - ALPHA0) < 4 * mc_alpha and abs(fit.law.E - E0) < 4 * mc_e
    assert 1 / 1.6 < fit.alpha.se / mc_alpha < 1.6
    assert 1 / 1.6 < fit.E.se / mc_e < 1.6
    assert fit.alpha.low <= fit.law.alpha <= fit.alpha.high and fit.alpha.level == 0.95
    assert fit.E.seeds == 5 and fit.reps == 300
    assert abs(float(np.mean(alphas)) - ALPHA0) < 3 * mc_alpha / math.sqrt(40) + 0.01  # nearly unbiased


def test_forecast_interval_covers_the_true_loss_about_80_percent():
    """100 noisy data sets; each 80% forecast at 3x the largest size: coverage 0.68-0.92 (binomial sd 4 points)."""
    rng = np.random.default_rng(12)
    truth = float(_law(np.array(3e6)))
    hits = 0
    for i in range(100):
        f = bootstrap_law(*_noisy(rng), reps=200, rng_seed=i).forecast(3e6)
        assert f.level == 0.8
        hits += f.low <= truth <= f.high
    assert 0.68 <= hits / 100 <= 0.92


def test_non_identifiable_laws_say_why():
    two = fit_loss_law([1e4, 1e4, 1e5], [3.0, 3.1, 2.5])
    assert not two.identifiable and two.reason == "2 sizes: a 3-parameter law needs at least 3"
    assert two.E is None and two.alpha is None
    with pytest.raises(ValueError, match="not identifiable"):
        two.predict(1e6)
    bumpy = fit_loss_law(SIZES, [3.0, 2.8, 2.9, 2.6, 2.5])
    assert not bumpy.identifiable and "does not decrease" in bumpy.reason
    pure = fit_loss_law(SIZES, 40.0 * SIZES ** -0.3)  # no irreducible term: E is pushed to its bound 0
    assert not pure.identifiable and "E at its lower bound 0" in pure.reason
    steep = fit_loss_law(SIZES, 2.0 + 1e25 * SIZES ** -5.0)  # beyond the exponent grid
    assert not steep.identifiable and "alpha at the edge" in steep.reason
    fit = bootstrap_law(*_noisy(np.random.default_rng(0))[:1], np.full(25, 2.0), np.tile(np.arange(5), 5))
    assert fit.law.reason.startswith("the seed-mean loss does not decrease") and fit.E is None
    assert fit.forecast(1e6) is None
    with pytest.raises(ValueError, match="finite"):
        fit_loss_law(SIZES, [3.0, 2.8, np.nan, 2.6, 2.5])


JN = np.array([1e4, 3e4, 1e5, 3e5])
JD = np.array([1e5, 1e6, 1e7, 1e8])
# Hoffmann et al. (2022)'s fitted law (their eq. 10): E 1.69, A 406.4, B 410.7, alpha 0.34, beta 0.28
CHIN = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


def _chin(n: np.ndarray, d: np.ndarray) -> np.ndarray:
    return CHIN["E"] + CHIN["A"] * n ** -CHIN["alpha"] + CHIN["B"] * d ** -CHIN["beta"]


def test_joint_law_recovers_planted_parameters():
    n, d = (a.ravel() for a in np.meshgrid(JN, JD, indexing="ij"))
    law = fit_joint_law(n, d, _chin(n, d))
    assert law.identifiable and law.kind == "joint", law.reason
    got = dict(E=law.E, A=law.A, B=law.B, alpha=law.alpha, beta=law.beta)
    assert got == pytest.approx(CHIN, rel=1e-3)
    assert law.predict(1e7, 1e9) == pytest.approx(float(_chin(np.array(1e7), np.array(1e9))), rel=1e-5)
    # with seed noise (3 seeds, sd 0.01 nats on losses of 6-40 nats) and its bootstrap
    rng = np.random.default_rng(5)
    nn, dd = np.repeat(n, 3), np.repeat(d, 3)
    fit = bootstrap_law(nn, _chin(nn, dd) + rng.normal(0, 0.01, nn.size), np.tile(np.arange(3), 16), d=dd,
                        reps=60)
    assert fit.law.identifiable, fit.law.reason
    assert fit.alpha.low - 0.01 <= CHIN["alpha"] <= fit.alpha.high + 0.01
    assert fit.beta.low - 0.01 <= CHIN["beta"] <= fit.beta.high + 0.01
    assert abs(fit.law.E - CHIN["E"]) < 0.1
    f = fit.forecast(1e6, 1e9)
    assert f.low <= float(_chin(np.array(1e6), np.array(1e9))) + 0.02 and f.high >= f.low
    few = fit_joint_law(n[:4], d[:4], _chin(n[:4], d[:4]))
    assert not few.identifiable and few.reason == "4 (size, tokens) cells: a 5-parameter law needs at least 5"
    six = np.geomspace(1e4, 1e6, 6)
    one_budget = fit_joint_law(six, np.full(6, 1e6), _chin(six, np.full(6, 1e6)))
    assert not one_budget.identifiable and "both to vary" in one_budget.reason
    n6, d6 = (a.ravel() for a in np.meshgrid(JN[:3], JD[:2], indexing="ij"))  # 3 sizes x 2 token counts
    two_tokens = fit_joint_law(n6, d6, _chin(n6, d6))
    assert two_tokens.reason == ("3 sizes x 2 token counts: each exponent needs at least 3 distinct values of its "
                                 "variable")


# --- IsoFLOP ----------------------------------------------------------------------------------------------

def test_isoflop_recovers_a_planted_vertex():
    x = np.array([4.0, 4.5, 5.0, 5.5, 6.0])
    rng = np.random.default_rng(6)
    n = np.repeat(10 ** x, 3)
    loss = 3.0 + 0.2 * (np.log10(n) - 5.2) ** 2 + rng.normal(0, 0.005, n.size)
    seeds = np.tile(np.arange(3), 5)
    iv = isoflop_minimum(n, loss, seeds)
    assert iv is not None and iv.level == 0.95 and iv.seeds == 3 and iv.windows == 0
    assert iv.low <= 5.2 <= iv.high and abs(iv.estimate - 5.2) < 0.05
    # noiseless: the vertex exactly
    exact = isoflop_fit(10 ** x, 3.0 + 0.2 * (x - 5.2) ** 2, [0] * 5)
    assert exact.minimum.estimate == pytest.approx(5.2, abs=1e-9) and exact.n_opt == pytest.approx(10 ** 5.2)
    outside = isoflop_fit(10 ** x, 3.0 + 0.2 * (x - 6.5) ** 2, [0] * 5)
    assert outside.minimum is None and "outside the sampled sizes" in outside.reason
    assert isoflop_minimum(10 ** x, 3.0 + 0.2 * (x - 6.5) ** 2, [0] * 5) is None
    concave = isoflop_fit(10 ** x, 3.0 - 0.2 * (x - 5.0) ** 2, [0] * 5)
    assert concave.minimum is None and "curvature is not above 0" in concave.reason
    assert isoflop_fit(10 ** x[:2], [3.0, 2.9], [0, 0]).reason == "2 sizes: a parabola needs at least 3"



def test_law_intervals_take_their_degrees_of_freedom_from_the_sizes_that_carry_the_variance():
    """Satterthwaite's df of a statistic of cell means: the mean of 5 equally noisy cells of 3 seeds has 5 x 2 = 10;
    a statistic of one cell alone has that cell's 3 - 1 = 2 (its t quantile is then 4.30, not 2.23)."""
    from xtlens.profiling.benefit.stats import _cell_df

    ys = np.random.default_rng(8).normal(0, 1, (20000, 5))
    assert _cell_df(ys.mean(1), ys, [3] * 5) == pytest.approx(10, rel=0.05)
    assert _cell_df(ys[:, 2] * 2.0, ys, [3] * 5) == pytest.approx(2, rel=0.01)
    assert _cell_df(ys.mean(1), ys, [1] * 5) == math.inf  # one seed per size: nothing to widen by
    fit = bootstrap_law(*_noisy(np.random.default_rng(2), seeds=3), reps=200)
    assert "widened to Student t (df" in fit.alpha.method and fit.cell_seeds == (3,) * 5
