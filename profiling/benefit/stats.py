"""Statistics of the benefit lab: bootstrap intervals over seeds and windows, the minimum detectable effect,
verdicts, loss-law fits with seed-bootstrap intervals and the IsoFLOP minimum. Pure numpy (no scipy, no torch).

Intervals (``Interval``)
    ``bootstrap_mean`` takes a ``(seeds, windows)`` array (every seed evaluated on the same validation windows)
    and resamples seeds with replacement and window indices with replacement, the same window indices for every
    seed: the two-way ("pigeonhole") bootstrap of a crossed design (Efron & Tibshirani 1993, *An Introduction to
    the Bootstrap*; Owen 2007, "The pigeonhole bootstrap", Ann. Appl. Stat. 1(2)). Seeds and data sampling are
    both sources of variance that a benchmark must randomise (Bouthillier et al. 2021, "Accounting for variance in
    machine learning benchmarks", MLSys). The interval is the percentile interval of the replicates, with two
    small-sample corrections, because a probe has 3-5 seeds and the plain percentile interval covers a 95%
    mean only 89% of the time with 5 seeds and 81% with 3 where seeds weigh (``benchmarks/stats_coverage.py``):

    * the seed-mean deviations are scaled by ``sqrt(S / (S - 1))`` in each replicate (the plain bootstrap's
      variance of a mean over S seeds is (S - 1) / S of the unbiased one), and the within-seed window part by
      ``sqrt(W / (W - 1))``;
    * the percentile distances from the estimate are widened by ``t_nu / z`` (Student's t over the normal
      quantile at the interval's level) with Satterthwaite's degrees of freedom ``nu`` from the seed and window
      variance components (``nu = S - 1`` where seeds dominate, ``W - 1`` where windows do).

    ``se`` is the standard deviation of the (scaled) replicates. The resampled interaction (seed x window) term
    makes the interval conservative where that term dominates (Owen 2007: up to 3x its variance).

``paired_difference(a, b)`` is ``bootstrap_mean(a - b)``: arms evaluated on the same windows with the same seed
numbers, so shared window difficulty cancels before resampling.

``min_detectable_effect(se)`` is ``(z_{1-alpha/2} + z_power) * se`` (2.80 se at alpha 0.05, power 0.8): the true
difference a two-sided test at level alpha detects with probability ``power``.

``verdict`` turns an interval into ``supported`` / ``contradicted`` / ``not_detectable`` / ``not_learned``.

Loss laws (``LossLaw``, ``LawFit``)
    ``fit_loss_law``: ``L(N) = E + A N^-alpha`` (Kaplan et al. 2020, "Scaling laws for neural language models",
    with the irreducible term of Hoffmann et al. 2022); ``fit_joint_law``: ``L(N, D) = E + A / N^alpha +
    B / D^beta`` (Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", approach 3). Both fit
    the seed-mean loss of each size (or size x tokens cell) by least squares in loss space with variable
    projection: for fixed exponents the model is linear in (E, A[, B]), solved in closed form with E constrained
    to ``[0, min(loss)]``; the exponents are found on a grid (alpha, beta in (0, 3]) and refined (golden section
    in 1-D, a zoomed grid in 2-D). Hoffmann et al. minimise a Huber loss (delta 1e-3) of log-loss residuals with
    L-BFGS from a grid of starts; here the points are seed means (few, with small Gaussian noise), where plain
    least squares is the maximum-likelihood fit and the grid makes the exponent search global. A law is not
    identifiable (``identifiable=False`` with the reason, no numbers) with fewer than 3 sizes (for the joint law:
    5 cells, 3 distinct sizes and 3 distinct token counts), seed means that do not decrease with size, E at a
    bound, an exponent at the edge of its grid.
    ``bootstrap_law`` resamples seeds per size (the seed-mean of each size recomputed from seeds drawn with
    replacement, the deviation scaled by ``sqrt(S / (S - 1))``) and refits; ``LawFit.forecast`` is the
    percentile interval of the replicates' predictions. These intervals are widened by ``t_nu / z`` too, ``nu``
    by Satterthwaite from each size's share of the variance (the replicates regressed on the resampled seed means)
    and its ``S - 1`` degrees of freedom: without it 3 seeds per size gave 89% coverage for a 95% interval of
    alpha and 74% for an 80% forecast; with it 95% and 82% (300 simulated data sets).

A law shared across arms (``fit_shared_law``, ``bootstrap_shared_law``, ``SharedLaw``)
    ``L_k(N) = E_k + A_k N^-alpha`` over arms ``k`` with one exponent (``share="alpha"``) or one exponent and one
    irreducible loss (``share="E_alpha"``), by the same variable projection (for a fixed alpha every E and A in
    closed form). Pooling the exponent is what identifies a law from 3 sizes (2K + 1 parameters for 3K points) or
    2 sizes (K + 2 for 2K, K >= 3 arms) where one arm's points cannot (Kaplan et al. 2020 report one exponent per
    model family). Its seed bootstrap draws each size's seeds ONCE for all arms run with those seed numbers (they
    share a data order, so their noise is correlated: with half the seed variance shared, an 80% forecast at 10x the
    largest run covered the truth 47% of the time drawing each arm apart, 89% drawing once; 75% and 79% with
    independent noise; ``benchmarks/forecast_coverage.py``), and counts S - 1 degrees of freedom per such draw in
    the t widening.

IsoFLOP (``isoflop_fit``, ``isoflop_minimum``)
    One FLOP budget: a parabola of the seed-mean loss in ``log10 N``; its vertex is the compute-optimal size
    (Hoffmann et al. 2022, approach 2), its interval a seed bootstrap widened as the laws' are. ``isoflop_fit``
    returns an ``IsoFlop`` (the interval, or None and the reason); ``isoflop_minimum`` returns just its
    ``minimum`` (an ``Interval`` in log10 N, or None).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

__all__ = ["Interval", "bootstrap_mean", "paired_difference", "min_detectable_effect", "verdict", "LossLaw",
           "fit_loss_law", "fit_joint_law", "LawFit", "bootstrap_law", "IsoFlop", "isoflop_fit", "isoflop_minimum",
           "t_quantile", "z_quantile", "ALPHA_RANGE", "VERDICT_NAMES", "SHARES", "SharedLaw", "fit_shared_law",
           "SharedLawFit", "bootstrap_shared_law"]

VERDICT_NAMES = ("supported", "contradicted", "not_detectable", "not_learned")
ALPHA_RANGE = (0.01, 3.0)  #: the exponent grid of the loss laws (both ends count as "at the edge")
_CHUNK_CELLS = 4_000_000   # bootstrap work arrays are chunked to about this many float64 cells (32 MB)


# --- quantiles --------------------------------------------------------------------------------------------

def z_quantile(p: float) -> float:
    """The standard normal quantile (``statistics.NormalDist``)."""
    return NormalDist().inv_cdf(p)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz; Press et al.,
    Numerical Recipes, 6.4)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(a * math.log(x) + b * math.log1p(-x) + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile with ``df`` (> 0, may be fractional; ``inf`` gives the normal quantile), by bisection
    on the CDF ``1 - I_{df/(df+t^2)}(df/2, 1/2) / 2``."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p={p!r}: a probability strictly between 0 and 1")
    if not df > 0:
        raise ValueError(f"df={df!r}: degrees of freedom above 0")
    if math.isinf(df) or df > 1e7:
        return z_quantile(p)
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


# --- intervals --------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Interval:
    """A mean (or a difference, or a fitted quantity) with its bootstrap interval at ``level``.

    ``seeds`` and ``windows``: the array's shape (``windows`` 0 where windows were not resampled: one value per
    seed). ``method`` says how the interval was made, in words a reader can check."""

    estimate: float
    low: float
    high: float
    se: float
    level: float
    seeds: int
    windows: int
    method: str

    def __post_init__(self) -> None:
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"level={self.level!r}: between 0 and 1 (0.95 for a 95% interval)")
        if not self.low <= self.high:
            raise ValueError(f"interval low {self.low!r} above high {self.high!r}")

    def excludes_zero(self) -> bool:
        return self.low > 0.0 or self.high < 0.0

    def describe(self, digits: int = 3) -> str:
        return (f"{self.estimate:+.{digits}g} [{self.low:+.{digits}g}, {self.high:+.{digits}g}] "
                f"({self.level:.0%}; {self.method})")


def _level(level: float) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level!r}: between 0 and 1 (0.95 for a 95% interval)")
    return level


def _reps(reps: int, least: int = 50) -> int:
    if isinstance(reps, bool) or not isinstance(reps, (int, np.integer)) or not least <= reps <= 1_000_000:
        raise ValueError(f"reps={reps!r}: a whole number of bootstrap replicates in [{least}, 1000000]")
    return int(reps)


def _values(values: Any, name: str = "values") -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2 or v.shape[0] < 1 or v.shape[1] < 1:
        raise ValueError(f"{name}: an array of shape (seeds, windows) (1-D: one seed), got shape {np.shape(values)}")
    if not np.all(np.isfinite(v)):
        bad = int(np.count_nonzero(~np.isfinite(v)))
        raise ValueError(f"{name}: {bad} entr{'y is' if bad == 1 else 'ies are'} NaN or infinite; every seed must "
                         "be evaluated on every window (drop the seed or the window first)")
    return v


def _satterthwaite(v: np.ndarray) -> float:
    """Degrees of freedom of the mean of ``v`` (seeds, windows) from its seed and window variance components."""
    s, w = v.shape
    parts = []
    if s > 1:
        parts.append((float(np.var(v.mean(1), ddof=1)) / s, s - 1))
    if w > 1:
        parts.append((float(np.var(v.mean(0), ddof=1)) / w, w - 1))
    total = sum(p for p, _ in parts)
    denom = sum(p * p / df for p, df in parts)
    if not parts or denom <= 0.0:
        return math.inf
    return total * total / denom


def bootstrap_mean(values: Any, *, level: float = 0.95, reps: int = 2000, rng_seed: int = 0) -> Interval:
    """The mean of ``values`` ((seeds, windows); 1-D = one seed) with its hierarchical bootstrap interval.

    Each replicate draws S seeds with replacement (multinomial counts) and W window indices with replacement (the
    same window indices for every seed), and takes the mean over the drawn cells; the small-sample corrections
    of the module docstring apply. ``numpy.random.default_rng(rng_seed)``: the same call gives the same interval.
    NaN or infinite entries are refused."""
    v = _values(values)
    level, reps = _level(level), _reps(reps)
    s, w = v.shape
    est = float(v.mean())
    rows = v.mean(1)
    dev = rows - est                       # seed-mean deviations
    within = v - rows[:, None]             # the rest: window and interaction parts, zero mean per seed
    k_s = math.sqrt(s / (s - 1)) if s > 1 else 0.0
    k_w = math.sqrt(w / (w - 1)) if w > 1 else 0.0
    rng = np.random.default_rng(rng_seed)
    out = np.empty(reps)
    chunk = max(1, _CHUNK_CELLS // max(s, w))
    for start in range(0, reps, chunk):
        r = min(chunk, reps - start)
        cs = rng.multinomial(s, np.full(s, 1.0 / s), size=r) / s if s > 1 else np.ones((r, 1))
        seed_part = cs @ dev
        if w > 1:  # the drawn seeds' mean at each drawn window index (a gather: cheaper than window counts)
            drawn = rng.integers(0, w, size=(r, w))
            window_part = np.take_along_axis(cs @ within, drawn, axis=1).mean(1)
        else:
            window_part = np.zeros(r)
        out[start:start + r] = est + k_s * seed_part + k_w * window_part
    se = float(np.std(out, ddof=1))
    q = (1.0 - level) / 2.0
    p_lo, p_hi = np.quantile(out, [q, 1.0 - q])
    nu = _satterthwaite(v)
    widen = t_quantile(1.0 - q, nu) / z_quantile(1.0 - q) if math.isfinite(nu) else 1.0
    low, high = est - widen * (est - float(p_lo)), est + widen * (float(p_hi) - est)
    what = (f"{s} seed(s) x {w} window(s)" if s > 1 and w > 1 else
            f"{s} seeds (one value each)" if s > 1 else
            f"1 seed x {w} windows (window sampling only: no seed variance)")
    method = (f"two-way bootstrap over {what}, {reps} reps, percentile interval widened to Student t "
              f"(df {nu:.1f})" if math.isfinite(nu) else f"two-way bootstrap over {what}, {reps} reps, no variance")
    if s == 1 and w == 1:
        method = "a single value: no interval"
    return Interval(estimate=est, low=min(low, est), high=max(high, est), se=se, level=level, seeds=s, windows=w,
                    method=method)


def paired_difference(a: Any, b: Any, **kw: Any) -> Interval:
    """``mean(a - b)`` with its interval: ``a`` and ``b`` are (seeds, windows) arrays of two arms on the same
    windows and seed numbers (``bootstrap_mean(a - b, **kw)``): shared window difficulty cancels per window."""
    va, vb = _values(a, "a"), _values(b, "b")
    if va.shape != vb.shape:
        raise ValueError(f"paired arrays differ in shape: a {va.shape}, b {vb.shape} (the same seeds and windows)")
    iv = bootstrap_mean(va - vb, **kw)
    return Interval(estimate=iv.estimate, low=iv.low, high=iv.high, se=iv.se, level=iv.level, seeds=iv.seeds,
                    windows=iv.windows, method="paired per window: " + iv.method)


def min_detectable_effect(se: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """``(z_{1-alpha/2} + z_power) * se``: the smallest true difference a two-sided test at level ``alpha`` finds
    with probability ``power`` (2.8016 se at the defaults)."""
    if not (se is not None and math.isfinite(se) and se >= 0):
        raise ValueError(f"se={se!r}: a standard error, finite and >= 0")
    if not 0.0 < alpha < 1.0 or not 0.0 < power < 1.0:
        raise ValueError(f"alpha={alpha!r}, power={power!r}: each strictly between 0 and 1")
    return (z_quantile(1.0 - alpha / 2.0) + z_quantile(power)) * float(se)


def verdict(iv: Interval | None, *, expected_sign: int, mde: float | None, learned: bool,
            margin: float | None = None) -> str:
    """The claim's verdict from its interval (``VERDICT_NAMES``).

    ``not_learned`` when the runs did not get below the unigram line (the conclusion is withheld); ``not_detectable``
    when there is no interval. A difference inside the minimum detectable effect is never a win: with ``mde`` given,
    ``supported`` and ``contradicted`` (of a signed claim) need ``|estimate| >= mde`` as well as an interval that
    excludes 0 (an estimate between the interval's bound and the MDE is significant at this budget but smaller
    than what the probe can reliably see: ``not_detectable``). ``expected_sign`` +1 / -1 (the claim says the
    difference is above / below 0): ``supported`` if the interval excludes 0 on that side, ``contradicted`` if it
    excludes 0 on the other side. ``expected_sign`` 0 (the claim says "no difference"): ``supported`` iff the
    interval lies inside ``[-margin, +margin]`` (``margin`` defaults to ``mde``; an equivalence test, Schuirmann
    1987), ``contradicted`` iff it excludes 0 with ``|estimate| >= mde``, else ``not_detectable``."""
    if expected_sign not in (-1, 0, 1):
        raise ValueError(f"expected_sign={expected_sign!r}: +1, -1 or 0 (no difference)")
    if not learned:
        return "not_learned"
    if iv is None:
        return "not_detectable"
    detectable = mde is None or abs(iv.estimate) >= mde
    if expected_sign == 0:
        bound = margin if margin is not None else mde
        if bound is not None and -bound <= iv.low and iv.high <= bound:
            return "supported"
        return "contradicted" if iv.excludes_zero() and detectable else "not_detectable"
    if not (iv.excludes_zero() and detectable):
        return "not_detectable"
    return "supported" if (iv.low > 0.0) == (expected_sign > 0) else "contradicted"


# --- loss laws --------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class LossLaw:
    """``L = E + A n^-alpha`` (``kind="power"``) or ``E + A n^-alpha + B d^-beta`` (``"joint"``), fitted to the
    seed-mean loss per size (per size x tokens cell). ``points``: the (size[, tokens], loss) points given (every
    seed); ``cells``: the distinct sizes (cells) fitted. Not identifiable: the numbers are None and ``reason``
    says why; ``predict`` refuses."""

    kind: str
    E: float | None
    A: float | None
    alpha: float | None
    B: float | None = None
    beta: float | None = None
    points: int
    cells: int = 0
    identifiable: bool
    reason: str = ""
    sse: float | None = None  # sum of squared residuals of the seed means (nats^2)

    def predict(self, n: Any, d: Any = None) -> Any:
        """The law's loss at size ``n`` (and tokens ``d`` for the joint law); a float for scalars."""
        if not self.identifiable:
            raise ValueError(f"the {self.kind} law is not identifiable: {self.reason}")
        n_arr = np.asarray(n, dtype=float)
        out = self.E + self.A * n_arr ** (-self.alpha)
        if self.kind == "joint":
            if d is None:
                raise ValueError("the joint law needs the training tokens d as well as the size n")
            out = out + self.B * np.asarray(d, dtype=float) ** (-self.beta)
        return float(out) if np.ndim(out) == 0 else out

    def describe(self) -> str:
        if not self.identifiable:
            return f"{self.kind} law not identifiable: {self.reason}"
        text = f"L = {self.E:.3g} + {self.A:.3g} N^-{self.alpha:.3g}"
        if self.kind == "joint":
            text += f" + {self.B:.3g} D^-{self.beta:.3g}"
        return text + f" nats ({self.cells} seed-mean points of {self.points})"


def _points(n: Any, loss: Any, d: Any = None, seeds: Any = None) -> tuple[np.ndarray, ...]:
    n_arr, y = np.asarray(n, dtype=float).ravel(), np.asarray(loss, dtype=float).ravel()
    arrays = [n_arr, y]
    names = ["n", "loss"]
    if d is not None:
        arrays.append(np.asarray(d, dtype=float).ravel())
        names.append("d")
    if seeds is not None:
        arrays.append(np.asarray(seeds).ravel())
        names.append("seeds")
    lengths = {name: len(a) for name, a in zip(names, arrays, strict=True)}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{', '.join(names)} must have one entry per point, got lengths {lengths}")
    if len(n_arr) == 0:
        raise ValueError("no points to fit")
    for name, a in zip(names[:3] if d is not None else names[:2], arrays, strict=False):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name}: every value finite (drop diverged or missing runs first)")
    if np.any(n_arr <= 0) or (d is not None and np.any(arrays[2] <= 0)):
        raise ValueError("n (parameters) and d (tokens) must be above 0")
    return tuple(arrays)


def _cells(keys: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The distinct rows of ``keys`` (sorted) and the loss values of each."""
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).ravel()
    return uniq, [y[inverse == i] for i in range(len(uniq))]


def _decreasing_reason(x: np.ndarray, means: np.ndarray, what: str) -> str:
    order = np.argsort(x)
    xs, ms = x[order], means[order]
    for i in range(len(xs) - 1):
        if not ms[i + 1] < ms[i]:
            return (f"the seed-mean loss does not decrease with {what} ({xs[i]:.4g}: {ms[i]:.4f} nats, "
                    f"{xs[i + 1]:.4g}: {ms[i + 1]:.4f} nats): a decreasing law cannot fit")
    return ""


def _at_bound(e: np.ndarray, ymin: np.ndarray) -> np.ndarray:
    """E on (or within 1e-9 of the loss scale of) its bound 0 or min(loss)."""
    tol = 1e-9 * np.abs(ymin)
    return (e <= tol) | (e >= ymin - tol)


def _fit_ea(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Least squares ``y ~ E + A x`` over the last axis (broadcast), E clipped to [0, min(y)] (the profiled sum
    of squares is a convex quadratic in E, so the clip is the constrained optimum). Returns E, A, SSE, at_bound."""
    ymin = y.min(-1)
    xm, ym = x.mean(-1), y.mean(-1)
    xc = x - xm[..., None]
    sxx = np.maximum((xc * xc).sum(-1), 1e-300)
    a = (xc * y).sum(-1) / sxx
    e = ym - a * xm
    x2 = np.maximum((x * x).sum(-1), 1e-300)
    xy, xs = (x * y).sum(-1), x.sum(-1)
    lo = e < 0.0
    e = np.where(lo, 0.0, e)
    a = np.where(lo, xy / x2, a)
    hi = e >= ymin
    e = np.where(hi, ymin, e)
    a = np.where(hi, (xy - ymin * xs) / x2, a)
    resid = y - e[..., None] - a[..., None] * x
    return e, a, (resid * resid).sum(-1), _at_bound(e, ymin)


_GOLD = (math.sqrt(5.0) - 1.0) / 2.0


def _power_batch(u: np.ndarray, y: np.ndarray, grid: np.ndarray) -> dict[str, np.ndarray]:
    """Fit ``y[r] ~ E + A exp(-alpha u)`` for every row r: grid over alpha, golden section in the bracket of the
    best grid point. ``u = log(n / n0)``."""
    r = y.shape[0]
    best_i = np.empty(r, dtype=int)
    chunk = max(1, _CHUNK_CELLS // (len(grid) * y.shape[1]))
    xg = np.exp(-grid[:, None] * u[None, :])              # (G, K)
    for s in range(0, r, chunk):
        _, _, sse, _ = _fit_ea(y[s:s + chunk, None, :], xg[None, :, :])
        best_i[s:s + chunk] = np.argmin(sse, axis=1)
    lo = grid[np.maximum(best_i - 1, 0)]
    hi = grid[np.minimum(best_i + 1, len(grid) - 1)]

    def sse_at(alpha: np.ndarray) -> np.ndarray:
        return _fit_ea(y, np.exp(-alpha[:, None] * u[None, :]))[2]

    c = hi - _GOLD * (hi - lo)
    d = lo + _GOLD * (hi - lo)
    fc, fd = sse_at(c), sse_at(d)
    for _ in range(60):
        left = fc < fd                                     # the minimum lies in [lo, d]
        hi = np.where(left, d, hi)
        lo = np.where(left, lo, c)
        new_c = hi - _GOLD * (hi - lo)
        new_d = lo + _GOLD * (hi - lo)
        c_old, d_old, fc_old, fd_old = c, d, fc, fd
        c = np.where(left, new_c, d_old)
        d = np.where(left, c_old, new_d)
        f_new = sse_at(np.where(left, c, d))
        fc = np.where(left, f_new, fd_old)
        fd = np.where(left, fc_old, f_new)
    alpha = np.where(fc < fd, c, d)
    e, a, sse, bound = _fit_ea(y, np.exp(-alpha[:, None] * u[None, :]))
    edge = (best_i == 0) | (best_i == len(grid) - 1)
    return {"E": e, "A": a, "alpha": alpha, "sse": sse, "bound": bound, "edge": edge}


def _alpha_grid() -> np.ndarray:
    return np.round(np.arange(ALPHA_RANGE[0], ALPHA_RANGE[1] + 1e-9, 0.01), 10)


def _not_identifiable(kind: str, points: int, cells: int, reason: str) -> LossLaw:
    return LossLaw(kind=kind, E=None, A=None, alpha=None, points=points, cells=cells, identifiable=False,
                   reason=reason)


def _power_reason(fit: dict[str, np.ndarray], i: int, ymin: float) -> str:
    e, alpha, a = float(fit["E"][i]), float(fit["alpha"][i]), float(fit["A"][i])
    reasons = []
    if fit["edge"][i]:
        reasons.append(f"alpha at the edge of its range {ALPHA_RANGE[0]}..{ALPHA_RANGE[1]} ({alpha:.3g}): the "
                       "curvature of the points does not fix the exponent")
    if fit["bound"][i]:
        side = "lower bound 0" if e < ymin / 2 else f"upper bound min(loss) = {ymin:.4f} nats"
        reasons.append(f"E at its {side} (best fit alpha = {alpha:.3g}): the points do not pin down the "
                       "irreducible loss; more sizes or a wider size range are needed")
    if not reasons and not a > 0.0:
        reasons.append("the fitted amplitude A is not above 0: the loss does not fall with size")
    return "; ".join(reasons)


def fit_loss_law(n: Any, loss: Any) -> LossLaw:
    """``loss = E + A n^-alpha`` (``0 <= E < min(loss)``, ``alpha`` in (0, 3]) fitted to the seed-mean loss of each
    distinct ``n`` (variable projection; see the module docstring). ``n``: parameters (non-embedding, as Kaplan et
    al. 2020 fit), one entry per point (seeds repeat a size)."""
    n_arr, y = _points(n, loss)
    sizes, groups = _cells(n_arr[:, None], y)
    sizes = sizes[:, 0]
    means = np.array([g.mean() for g in groups])
    k = len(sizes)
    if k < 3:
        return _not_identifiable("power", len(y), k, f"{k} size{'s' if k != 1 else ''}: a 3-parameter law needs "
                                 "at least 3")
    reason = _decreasing_reason(sizes, means, "size")
    if reason:
        return _not_identifiable("power", len(y), k, reason)
    n0 = math.exp(float(np.mean(np.log(sizes))))
    u = np.log(sizes / n0)
    fit = _power_batch(u, means[None, :], _alpha_grid())
    reason = _power_reason(fit, 0, float(means.min()))
    if reason:
        return _not_identifiable("power", len(y), k, reason)
    alpha = float(fit["alpha"][0])
    return LossLaw(kind="power", E=float(fit["E"][0]), A=float(fit["A"][0]) * n0 ** alpha, alpha=alpha,
                   points=len(y), cells=k, identifiable=True, sse=float(fit["sse"][0]))


# --- the joint law ----------------------------------------------------------------------------------------

def _fit_eab(y: np.ndarray, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, ...]:
    """Least squares ``y ~ E + A x + B z`` over the last axis (broadcast), E clipped to [0, min(y)] (convex in E
    after profiling A and B, so the clip is the constrained optimum). Returns E, A, B, SSE, at_bound."""
    def solve2(yy: np.ndarray, xx: np.ndarray, zz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sxx, szz, sxz = (xx * xx).sum(-1), (zz * zz).sum(-1), (xx * zz).sum(-1)
        sxy, szy = (xx * yy).sum(-1), (zz * yy).sum(-1)
        det = sxx * szz - sxz * sxz
        det = np.where(np.abs(det) > 1e-300, det, 1e-300)
        return (sxy * szz - szy * sxz) / det, (szy * sxx - sxy * sxz) / det

    ymin = y.min(-1)
    xm, zm, ym = x.mean(-1), z.mean(-1), y.mean(-1)
    a, b = solve2(y - ym[..., None], x - xm[..., None], z - zm[..., None])
    e = ym - a * xm - b * zm
    lo = e < 0.0
    hi = e >= ymin
    if lo.any():
        a0, b0 = solve2(y, x, z)
        e, a, b = np.where(lo, 0.0, e), np.where(lo, a0, a), np.where(lo, b0, b)
    if hi.any():
        a1, b1 = solve2(y - ymin[..., None], x, z)
        e, a, b = np.where(hi, ymin, e), np.where(hi, a1, a), np.where(hi, b1, b)
    resid = y - e[..., None] - a[..., None] * x - b[..., None] * z
    return e, a, b, (resid * resid).sum(-1), _at_bound(e, ymin)


_JOINT_GRID = np.round(np.arange(0.05, ALPHA_RANGE[1] + 1e-9, 0.05), 10)  # alpha and beta, 60 x 60


def _joint_batch(u: np.ndarray, v: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Fit ``y[r] ~ E + A exp(-alpha u) + B exp(-beta v)`` for every row r: a 2-D grid, then ten zoomed 9 x 9
    grids around the best point (each a quarter of the last's width). ``u = log(n / n0)``, ``v = log(d / d0)``."""
    g = _JOINT_GRID
    ga, gb = np.meshgrid(g, g, indexing="ij")
    ga, gb = ga.ravel(), gb.ravel()
    xg, zg = np.exp(-ga[:, None] * u[None, :]), np.exp(-gb[:, None] * v[None, :])
    r = y.shape[0]
    best = np.empty(r, dtype=int)
    chunk = max(1, _CHUNK_CELLS // (len(ga) * y.shape[1] * 4))
    for s in range(0, r, chunk):
        sse = _fit_eab(y[s:s + chunk, None, :], xg[None], zg[None])[3]
        best[s:s + chunk] = np.argmin(sse, axis=1)
    alpha, beta = ga[best], gb[best]
    ia, ib = best // len(g), best % len(g)
    edge = (ia == 0) | (ia == len(g) - 1) | (ib == 0) | (ib == len(g) - 1)
    step = g[1] - g[0]
    offsets = np.linspace(-1.0, 1.0, 9)
    oa, ob = np.meshgrid(offsets, offsets, indexing="ij")
    oa, ob = oa.ravel(), ob.ravel()
    for _ in range(10):
        ca = np.clip(alpha[:, None] + step * oa[None, :], 1e-3, ALPHA_RANGE[1])   # (R, 81)
        cb = np.clip(beta[:, None] + step * ob[None, :], 1e-3, ALPHA_RANGE[1])
        x = np.exp(-ca[..., None] * u[None, None, :])
        z = np.exp(-cb[..., None] * v[None, None, :])
        sse = _fit_eab(y[:, None, :], x, z)[3]
        j = np.argmin(sse, axis=1)
        alpha, beta = ca[np.arange(r), j], cb[np.arange(r), j]
        step /= 4.0
    e, a, b, sse, bound = _fit_eab(y, np.exp(-alpha[:, None] * u[None, :]), np.exp(-beta[:, None] * v[None, :]))
    return {"E": e, "A": a, "B": b, "alpha": alpha, "beta": beta, "sse": sse, "bound": bound, "edge": edge}


def _joint_prep(n_arr: np.ndarray, d_arr: np.ndarray, y: np.ndarray) -> tuple[Any, ...]:
    keys, groups = _cells(np.stack([n_arr, d_arr], axis=1), y)
    means = np.array([g_.mean() for g_ in groups])
    return keys, groups, means


def _joint_checks(keys: np.ndarray, means: np.ndarray) -> str:
    k = len(keys)
    sizes, tokens = np.unique(keys[:, 0]), np.unique(keys[:, 1])
    if k < 5:
        return f"{k} (size, tokens) cell{'s' if k != 1 else ''}: a 5-parameter law needs at least 5"
    if len(sizes) < 2 or len(tokens) < 2:
        return (f"{len(sizes)} size(s) x {len(tokens)} token count(s): the joint law needs both to vary "
                "(fit_loss_law for one token count)")
    if len(sizes) < 3 or len(tokens) < 3:
        return (f"{len(sizes)} sizes x {len(tokens)} token counts: each exponent needs at least 3 distinct values "
                "of its variable")
    for dv in tokens:
        sel = keys[:, 1] == dv
        if sel.sum() >= 2:
            reason = _decreasing_reason(keys[sel, 0], means[sel], f"size at {dv:.4g} tokens")
            if reason:
                return reason
    for nv in sizes:
        sel = keys[:, 0] == nv
        if sel.sum() >= 2:
            reason = _decreasing_reason(keys[sel, 1], means[sel], f"tokens at size {nv:.4g}")
            if reason:
                return reason
    return ""


def _joint_reason(fit: dict[str, np.ndarray], i: int, ymin: float) -> str:
    reasons = []
    if fit["edge"][i]:
        reasons.append(f"an exponent at the edge of its range (alpha {float(fit['alpha'][i]):.3g}, beta "
                       f"{float(fit['beta'][i]):.3g}; grid {_JOINT_GRID[0]}..{_JOINT_GRID[-1]}): the points do not "
                       "fix it")
    if fit["bound"][i]:
        side = "lower bound 0" if float(fit["E"][i]) < ymin / 2 else f"upper bound min(loss) = {ymin:.4f} nats"
        reasons.append(f"E at its {side}: the points do not pin down the irreducible loss")
    if not reasons and not (fit["A"][i] > 0 and fit["B"][i] > 0):
        reasons.append("a fitted amplitude (A or B) is not above 0: the loss does not fall with both size and tokens")
    return "; ".join(reasons)


def fit_joint_law(n: Any, d: Any, loss: Any) -> LossLaw:
    """``loss = E + A / n^alpha + B / d^beta`` (Hoffmann et al. 2022, approach 3) fitted to the seed-mean loss of
    each distinct (n, d) cell by variable projection over a 2-D exponent grid (see the module docstring)."""
    n_arr, y, d_arr = _points(n, loss, d)
    keys, _, means = _joint_prep(n_arr, d_arr, y)
    reason = _joint_checks(keys, means)
    if reason:
        return _not_identifiable("joint", len(y), len(keys), reason)
    n0, d0 = (math.exp(float(np.mean(np.log(np.unique(keys[:, c]))))) for c in (0, 1))
    fit = _joint_batch(np.log(keys[:, 0] / n0), np.log(keys[:, 1] / d0), means[None, :])
    reason = _joint_reason(fit, 0, float(means.min()))
    if reason:
        return _not_identifiable("joint", len(y), len(keys), reason)
    alpha, beta = float(fit["alpha"][0]), float(fit["beta"][0])
    return LossLaw(kind="joint", E=float(fit["E"][0]), A=float(fit["A"][0]) * n0 ** alpha, alpha=alpha,
                   B=float(fit["B"][0]) * d0 ** beta, beta=beta, points=len(y), cells=len(keys), identifiable=True,
                   sse=float(fit["sse"][0]))


# --- seed bootstrap of a law ------------------------------------------------------------------------------

def _seed_resampled_means(groups: Sequence[np.ndarray], reps: int, rng: np.random.Generator) -> np.ndarray:
    """(reps, cells): each cell's mean over its seeds drawn with replacement, the deviation from the cell's mean
    scaled by sqrt(S / (S - 1)) (S: the cell's seeds; a one-seed cell stays at its value)."""
    out = np.empty((reps, len(groups)))
    for c, vals in enumerate(groups):
        s = len(vals)
        m = float(vals.mean())
        if s == 1:
            out[:, c] = m
            continue
        counts = rng.multinomial(s, np.full(s, 1.0 / s), size=reps)
        out[:, c] = m + math.sqrt(s / (s - 1)) * (counts @ vals / s - m)
    return out


def _cell_df(samples: np.ndarray, cell_means: np.ndarray, cell_seeds: Sequence[int]) -> float:
    """Satterthwaite degrees of freedom of a statistic of the cell means: its replicates regressed on the
    replicates' cell means give each cell's share of the variance (g_c^2 var_c), each share estimated from that
    cell's S_c seeds (S_c - 1 degrees of freedom)."""
    ok = np.isfinite(samples)
    x = cell_means[ok] - cell_means[ok].mean(0)
    y = samples[ok] - samples[ok].mean()
    if len(y) < cell_means.shape[1] + 2:
        return math.inf
    g, *_ = np.linalg.lstsq(x, y, rcond=None)
    share = g * g * x.var(0)
    df = np.array([s_ - 1 for s_ in cell_seeds], dtype=float)
    total = float(share[df > 0].sum())
    denom = float((share[df > 0] ** 2 / df[df > 0]).sum())
    return total * total / denom if denom > 0 else math.inf


def _percentile_interval(samples: np.ndarray, estimate: float, level: float, seeds: int, method: str,
                         df: float = math.inf) -> Interval:
    """The percentile interval of ``samples`` at ``level``, its distances from ``estimate`` widened by
    ``t_df / z`` (``df`` inf: not widened)."""
    q = (1.0 - level) / 2.0
    lo, hi = (float(x) for x in np.quantile(samples, [q, 1.0 - q]))
    widen = t_quantile(1.0 - q, df) / z_quantile(1.0 - q) if math.isfinite(df) else 1.0
    lo, hi = estimate - widen * (estimate - lo), estimate + widen * (hi - estimate)
    if math.isfinite(df):
        method += f", widened to Student t (df {df:.1f})"
    return Interval(estimate=float(estimate), low=min(lo, estimate), high=max(hi, estimate),
                    se=float(np.std(samples, ddof=1)), level=level, seeds=seeds, windows=0, method=method)


@dataclass(frozen=True, kw_only=True)
class LawFit:
    """A loss law with seed-bootstrap intervals of ``E`` and ``alpha`` (95%, percentile) and the replicates'
    parameters (``samples``: rows of E, A, alpha, B, beta in the original units) for ``forecast``."""

    law: LossLaw
    E: Interval | None
    alpha: Interval | None
    reps: int
    beta: Interval | None = None
    samples: np.ndarray | None = field(default=None, repr=False, compare=False)
    cell_means: np.ndarray | None = field(default=None, repr=False, compare=False)  # (reps, cells) resampled
    cell_seeds: tuple[int, ...] = ()
    method: str = ""

    def _df(self, values: np.ndarray) -> float:
        if self.cell_means is None:
            return math.inf
        return _cell_df(values, self.cell_means, self.cell_seeds)

    def forecast(self, n: float, d: float | None = None, level: float = 0.8) -> Interval | None:
        """The law's loss at ``n`` (and ``d``) with the percentile interval of the bootstrap replicates' predictions
        (``level`` 0.8 by default); None when the law is not identifiable."""
        level = _level(level)
        if not self.law.identifiable or self.samples is None:
            return None
        s = self.samples
        pred = s[:, 0] + s[:, 1] * float(n) ** (-s[:, 2])
        if self.law.kind == "joint":
            if d is None:
                raise ValueError("the joint law needs the training tokens d as well as the size n")
            pred = pred + s[:, 3] * float(d) ** (-s[:, 4])
        seeds = self.E.seeds if self.E is not None else 0
        where = f"n={float(n):.4g}" + (f", d={float(d):.4g}" if d is not None else "")
        return _percentile_interval(pred, self.law.predict(n, d), level, seeds,
                                    f"{self.law.kind} law at {where}: " + self.method, self._df(pred))


def bootstrap_law(n: Any, loss: Any, seeds: Any, *, d: Any = None, reps: int = 500, rng_seed: int = 0) -> LawFit:
    """Fit the law (``fit_loss_law``, or ``fit_joint_law`` when ``d`` is given) and its seed bootstrap: ``reps``
    replicates, each refitting the seed-resampled mean of every size (cell). Not identifiable: ``law`` says why
    and the intervals are None."""
    reps = _reps(reps, least=20)
    n_arr, y, *rest = _points(n, loss, d, seeds)
    d_arr = rest[0] if d is not None else None
    seed_arr = rest[-1]
    law = fit_loss_law(n_arr, y) if d_arr is None else fit_joint_law(n_arr, d_arr, y)
    if not law.identifiable:
        return LawFit(law=law, E=None, alpha=None, reps=reps, method="not identifiable: " + law.reason)
    keys = n_arr[:, None] if d_arr is None else np.stack([n_arr, d_arr], axis=1)
    uniq, groups = _cells(keys, y)
    _, seed_groups = _cells(keys, seed_arr.astype(float) if seed_arr.dtype.kind in "iuf" else
                            np.unique(seed_arr, return_inverse=True)[1].astype(float))
    for vals in seed_groups:
        if len(np.unique(vals)) != len(vals):
            raise ValueError("a seed appears twice at one size: one point per (size[, tokens], seed)")
    rng = np.random.default_rng(rng_seed)
    ys = _seed_resampled_means(groups, reps, rng)
    n0 = math.exp(float(np.mean(np.log(np.unique(uniq[:, 0])))))
    u = np.log(uniq[:, 0] / n0)
    samples = np.full((reps, 5), np.nan)
    if d_arr is None:
        fit = _power_batch(u, ys, _alpha_grid())
        samples[:, 0], samples[:, 2] = fit["E"], fit["alpha"]
        samples[:, 1] = fit["A"] * n0 ** fit["alpha"]
    else:
        d0 = math.exp(float(np.mean(np.log(np.unique(uniq[:, 1])))))
        fit = _joint_batch(u, np.log(uniq[:, 1] / d0), ys)
        samples[:, 0], samples[:, 2], samples[:, 4] = fit["E"], fit["alpha"], fit["beta"]
        samples[:, 1] = fit["A"] * n0 ** fit["alpha"]
        samples[:, 3] = fit["B"] * d0 ** fit["beta"]
    at_bound = int(np.count_nonzero(fit["bound"] | fit["edge"]))
    min_seeds = min(len(g_) for g_ in groups)
    method = (f"seed bootstrap ({reps} reps; seeds resampled per {'size' if d_arr is None else 'cell'}, "
              f"{min_seeds}-{max(len(g_) for g_ in groups)} seeds each), refit by variable projection, percentile"
              + (f"; {at_bound} replicate(s) with E or an exponent at a bound" if at_bound else ""))
    cell_seeds = tuple(len(g_) for g_ in groups)

    def interval(col: int, estimate: float, name: str) -> Interval:
        df = _cell_df(samples[:, col], ys, cell_seeds)
        return _percentile_interval(samples[:, col], estimate, 0.95, min_seeds, f"{name}: " + method, df)

    return LawFit(law=law, E=interval(0, law.E, "E"), alpha=interval(2, law.alpha, "alpha"),
                  beta=interval(4, law.beta, "beta") if d_arr is not None else None, reps=reps, samples=samples,
                  cell_means=ys, cell_seeds=cell_seeds, method=method)


# --- IsoFLOP ----------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class IsoFlop:
    """One FLOP budget's parabola ``loss = a (log10 n)^2 + b log10 n + c`` through the seed means, and its
    minimiser ``minimum`` (an Interval of log10 n: the vertex, 95% seed-bootstrap percentile interval) or None
    with ``reason`` (fewer than 3 sizes, curvature not above 0, vertex outside the sampled sizes)."""

    minimum: Interval | None
    reason: str
    a: float | None
    b: float | None
    c: float | None
    log10_n_range: tuple[float, float] | None

    @property
    def n_opt(self) -> float | None:
        return None if self.minimum is None else 10.0 ** self.minimum.estimate


def _parabola(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares (a, b, c) of ``y ~ a x^2 + b x + c`` for each row of y (R, K)."""
    design = np.stack([x * x, x, np.ones_like(x)], axis=1)
    coef, *_ = np.linalg.lstsq(design, y.T, rcond=None)
    return coef.T


def isoflop_fit(n: Any, loss: Any, seeds: Any, *, level: float = 0.95, reps: int = 2000,
                rng_seed: int = 0) -> IsoFlop:
    """The compute-optimal size of one FLOP budget (see ``IsoFlop``): a parabola in ``log10 n`` fitted to the
    seed-mean loss per size; the interval from a seed bootstrap (seeds resampled per size, deviations scaled by
    sqrt(S / (S - 1))); a replicate's minimiser is taken over the sampled range (its vertex, or the better end
    where the vertex falls outside or the curvature is not above 0), so the interval never leaves the data."""
    level, reps = _level(level), _reps(reps)
    n_arr, y, seed_arr = _points(n, loss, None, seeds)
    x_all = np.log10(n_arr)
    uniq, groups = _cells(x_all[:, None], y)
    x = uniq[:, 0]
    means = np.array([g_.mean() for g_ in groups])
    k = len(x)
    rng_text = (float(x.min()), float(x.max()))
    if k < 3:
        return IsoFlop(minimum=None, reason=f"{k} size{'s' if k != 1 else ''}: a parabola needs at least 3",
                       a=None, b=None, c=None, log10_n_range=rng_text)
    a, b, c = (float(t) for t in _parabola(x, means[None, :])[0])
    if not a > 0.0:
        return IsoFlop(minimum=None, reason=f"the parabola's curvature is not above 0 (a = {a:.3g}): the loss has "
                       "no minimum among these sizes", a=a, b=b, c=c, log10_n_range=rng_text)
    vertex = -b / (2.0 * a)
    if not x.min() <= vertex <= x.max():
        return IsoFlop(minimum=None, reason=f"the vertex (n = {10 ** vertex:.3g}) lies outside the sampled sizes "
                       f"({10 ** x.min():.3g}..{10 ** x.max():.3g}): extend the size range toward it",
                       a=a, b=b, c=c, log10_n_range=rng_text)
    rng = np.random.default_rng(rng_seed)
    ys = _seed_resampled_means(groups, reps, rng)
    coef = _parabola(x, ys)
    ra, rb = coef[:, 0], coef[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        vx = np.where(ra > 0, -rb / (2.0 * ra), np.nan)
    lo_end, hi_end = float(x.min()), float(x.max())
    f_lo = ra * lo_end ** 2 + rb * lo_end
    f_hi = ra * hi_end ** 2 + rb * hi_end
    end = np.where(f_lo <= f_hi, lo_end, hi_end)
    inside = np.isfinite(vx) & (vx >= lo_end) & (vx <= hi_end)
    mins = np.where(inside, vx, end)
    outside = int(np.count_nonzero(~inside))
    min_seeds = min(len(g_) for g_ in groups)
    method = (f"log10 n of the parabola's vertex; seed bootstrap ({reps} reps, {min_seeds}+ seeds per size), "
              "percentile" + (f"; {outside} replicate(s) with the minimum at an end of the range" if outside else ""))
    df = _cell_df(mins, ys, [len(g_) for g_ in groups])
    return IsoFlop(minimum=_percentile_interval(mins, vertex, level, min_seeds, method, df), reason="", a=a, b=b, c=c,
                   log10_n_range=rng_text)


def isoflop_minimum(n: Any, loss: Any, seeds: Any, **kw: Any) -> Interval | None:
    """``isoflop_fit(n, loss, seeds, **kw).minimum``: the fitted minimising log10 n with its interval, or None when
    not identifiable (``isoflop_fit(...).reason`` says why)."""
    return isoflop_fit(n, loss, seeds, **kw).minimum


# --- a law shared across arms -----------------------------------------------------------------------------

SHARES = ("alpha", "E_alpha", "no_E")  #: what a shared law shares across arms (``fit_shared_law``)


def _shared_params(k: int, share: str) -> int:
    """Free parameters of the shared law over ``k`` arms."""
    return {"alpha": 2 * k + 1, "E_alpha": k + 2, "no_E": k + 1}[share]


@dataclass(frozen=True, kw_only=True)
class SharedLaw:
    """``L_k(n) = E_k + A_k n^-alpha`` over arms ``k`` with one exponent ``alpha`` (``share="alpha"``: ``E_k`` and
    ``A_k`` per arm), one exponent and one irreducible loss (``share="E_alpha"``: ``E_k = E`` for every arm, ``A_k``
    per arm), or one exponent and no irreducible loss (``share="no_E"``: ``E_k = 0``, Kaplan et al. 2020's
    ``L = (N_c / N)^alpha``: a straight line per arm in log-log space, one slope), fitted to the seed-mean loss of
    each (arm, size) cell. ``params``: the law's free parameters; ``cells``: the (arm, size) cells fitted (more cells
    than parameters, or it is not identifiable). Not identifiable: the numbers are None and ``reason`` says why;
    ``e_unpinned`` is True when that is because the points cannot pin down an irreducible loss (no more points than
    parameters, or an E at its bound 0 or the least loss): the case where ``share="no_E"`` is the fallback."""

    share: str
    arms: tuple[str, ...]
    E: dict[str, float] | None
    A: dict[str, float] | None
    alpha: float | None
    points: int
    cells: int
    params: int
    identifiable: bool
    reason: str = ""
    sse: float | None = None
    e_unpinned: bool = False

    def predict(self, arm: str, n: Any) -> Any:
        if not self.identifiable:
            raise ValueError(f"the shared law is not identifiable: {self.reason}")
        if arm not in self.arms:
            raise ValueError(f"arm {arm!r} was not fitted (arms: {', '.join(self.arms)})")
        out = self.E[arm] + self.A[arm] * np.asarray(n, dtype=float) ** (-self.alpha)
        return float(out) if np.ndim(out) == 0 else out

    def describe(self) -> str:
        if not self.identifiable:
            return f"shared law not identifiable: {self.reason}"
        what = {"alpha": "one exponent alpha for every arm, E and A per arm",
                "E_alpha": "one exponent alpha and one irreducible loss E for every arm, A per arm",
                "no_E": "one exponent alpha for every arm, A per arm, no irreducible loss"}[self.share]
        head = "A_arm" if self.share == "no_E" else "E + A_arm"
        return (f"L_arm = {head} N^-{self.alpha:.3g} ({what}; {len(self.arms)} arms, {self.cells} seed-mean "
                f"points, {self.params} parameters)")


def _shared_fit_at(y: np.ndarray, w: np.ndarray, x: np.ndarray, share: str,
                   ymin_arm: np.ndarray) -> tuple[np.ndarray, ...]:
    """Least squares of the shared law for fixed exponents: y (R, K, C) cell means, w (K, C) 1 where the cell
    was run, x (R or 1, G, K, C) = (n_kc / n0)^-alpha per candidate alpha, ``ymin_arm`` (R, K) each arm's least
    mean (the bound on E). Returns E (R, G, K), A (R, G, K), SSE (R, G), E at a bound (R, G, K)."""
    wx = w[None, None] * x                                                     # (Rx, G, K, C)
    n = w.sum(-1)[None, None]                                                  # (1, 1, K)
    s1, sxx = wx.sum(-1), np.maximum((wx * x).sum(-1), 1e-300)                 # (Rx, G, K)
    yw = (y * w[None])[:, None]                                                # (R, 1, K, C)
    sy, syy = yw.sum(-1), (yw * y[:, None]).sum(-1)                            # (R, 1, K)
    sxy = (yw * x).sum(-1)                                                     # (R, G, K)
    if share == "no_E":                                                        # E = 0: A = <x, y> / <x, x>
        a = sxy / sxx
        sse = (syy - sxy * sxy / sxx).sum(-1)
        return np.zeros_like(a), a, sse, np.zeros(a.shape, dtype=bool)
    if share == "E_alpha":
        ymin = ymin_arm.min(-1)[:, None]                                       # (R, 1)
        den = np.maximum((n - s1 * s1 / sxx).sum(-1), 1e-300)
        e = np.clip((sy - s1 * sxy / sxx).sum(-1) / den, 0.0, ymin)            # (R, G)
        bound = (e <= 1e-9 * np.abs(ymin)) | (e >= ymin - 1e-9 * np.abs(ymin))
        e = e[..., None]
        a = (sxy - e * s1) / sxx
        sse = (syy - 2 * e * sy + e * e * n - (sxy - e * s1) ** 2 / sxx).sum(-1)
        return np.broadcast_to(e, a.shape), a, sse, np.broadcast_to(bound[..., None], a.shape)
    ymin = ymin_arm[:, None, :]                                                # (R, 1, K)
    xm, ym = s1 / n, sy / n
    a = (sxy - n * xm * ym) / np.maximum(sxx - n * xm * xm, 1e-300)
    e = ym - a * xm
    lo, hi = e < 0.0, e >= ymin
    e = np.where(lo, 0.0, np.where(hi, ymin, e))
    a = np.where(lo, sxy / sxx, np.where(hi, (sxy - ymin * s1) / sxx, a))
    bound = (e <= 1e-9 * np.abs(ymin)) | (e >= ymin - 1e-9 * np.abs(ymin))
    sse = (syy - 2 * e * sy - 2 * a * sxy + e * e * n + 2 * e * a * s1 + a * a * sxx).sum(-1)
    return e, a, sse, bound


def _shared_batch(u: np.ndarray, y: np.ndarray, w: np.ndarray, share: str) -> dict[str, np.ndarray]:
    """Fit the shared law to every replicate y[r] (R, K, C): alpha on ``_alpha_grid``, then golden section in the
    bracket of the best grid point (as ``_power_batch``). ``u`` (K, C): ``log(n / n0)`` of each arm's sizes."""
    grid = _alpha_grid()
    ymin_arm = np.where(w[None] > 0, y, np.inf).min(-1)                        # (R, K)
    r, k, c = y.shape
    best_i = np.empty(r, dtype=int)
    chunk = max(1, _CHUNK_CELLS // (len(grid) * k * c))
    xg = np.exp(-grid[:, None, None] * u[None])[None]                          # (1, G, K, C)
    for s in range(0, r, chunk):
        sse = _shared_fit_at(y[s:s + chunk], w, xg, share, ymin_arm[s:s + chunk])[2]
        best_i[s:s + chunk] = np.argmin(sse, axis=1)
    lo = grid[np.maximum(best_i - 1, 0)]
    hi = grid[np.minimum(best_i + 1, len(grid) - 1)]

    def at(alpha: np.ndarray) -> tuple[np.ndarray, ...]:  # one alpha per replicate
        e, a, sse, bound = _shared_fit_at(y, w, np.exp(-alpha[:, None, None] * u[None])[:, None], share, ymin_arm)
        return e[:, 0], a[:, 0], sse[:, 0], bound[:, 0]

    cc = hi - _GOLD * (hi - lo)
    dd = lo + _GOLD * (hi - lo)
    fc, fd = at(cc)[2], at(dd)[2]
    for _ in range(50):
        left = fc < fd
        hi = np.where(left, dd, hi)
        lo = np.where(left, lo, cc)
        c_old, d_old, fc_old, fd_old = cc, dd, fc, fd
        cc = np.where(left, hi - _GOLD * (hi - lo), d_old)
        dd = np.where(left, c_old, lo + _GOLD * (hi - lo))
        f_new = at(np.where(left, cc, dd))[2]
        fc = np.where(left, f_new, fd_old)
        fd = np.where(left, fc_old, f_new)
    alpha = np.where(fc < fd, cc, dd)
    e, a, sse, bound = at(alpha)
    edge = (best_i == 0) | (best_i == len(grid) - 1)
    return {"E": e, "A": a, "alpha": alpha, "sse": sse, "bound": bound, "edge": edge}


def _shared_prep(arm: Any, n: Any, loss: Any, seeds: Any = None) -> tuple[Any, ...]:
    arm_arr = np.asarray(arm).astype(str).ravel()
    n_arr, y, *rest = _points(n, loss, None, seeds)
    if len(arm_arr) != len(n_arr):
        raise ValueError(f"arm must have one entry per point: {len(arm_arr)} arms for {len(n_arr)} points")
    arms = tuple(sorted(set(arm_arr.tolist())))
    ki = np.searchsorted(np.array(arms), arm_arr)
    # column c of arm k: the arm's c-th smallest size (arms need not share sizes: options change the count)
    per_arm = [np.unique(n_arr[ki == a_]) for a_ in range(len(arms))]
    k, c = len(arms), max(len(v) for v in per_arm)
    sizes = np.full((k, c), np.nan)
    ci = np.empty(len(n_arr), dtype=int)
    for a_, v in enumerate(per_arm):
        sizes[a_, :len(v)] = v
        ci[ki == a_] = np.searchsorted(v, n_arr[ki == a_])
    groups: list[list[np.ndarray]] = [[np.empty(0)] * c for _ in range(k)]
    seed_groups: list[list[np.ndarray]] = [[np.empty(0)] * c for _ in range(k)]
    w = np.zeros((k, c))
    means = np.zeros((k, c))
    for a_ in range(k):
        for s_ in range(c):
            sel = (ki == a_) & (ci == s_)
            if sel.any():
                groups[a_][s_] = y[sel]
                w[a_, s_] = 1.0
                means[a_, s_] = y[sel].mean()
                if rest:
                    seed_groups[a_][s_] = rest[0][sel]
    return arms, sizes, w, means, groups, seed_groups, len(y)


def _shared_reason(arms: Sequence[str], sizes: np.ndarray, w: np.ndarray, means: np.ndarray, share: str) -> str:
    """Why the shared law cannot be fitted ("" if it can); ``sizes`` (K, C): each arm's sizes, NaN where none."""
    k = len(arms)
    cells = int(w.sum())
    params = _shared_params(k, share)
    few = [a for a, row in zip(arms, w, strict=True) if row.sum() < 2]
    if few:
        return f"arm(s) {', '.join(few)} ran at fewer than 2 sizes: a law in size needs at least 2 per arm"
    if cells <= params:
        what = {"alpha": "E, A per arm and one alpha", "E_alpha": "A per arm, one E and one alpha",
                "no_E": "A per arm and one alpha"}[share]
        return (f"{cells} (arm, size) points for {params} parameters ({what}): the fit needs more points than "
                f"parameters ({k} arm(s) x {sizes.shape[1]} size(s))")
    for a_, name in enumerate(arms):
        sel = w[a_] > 0
        reason = _decreasing_reason(sizes[a_, sel], means[a_, sel], f"size for arm {name}")
        if reason:
            return reason
    return ""


def fit_shared_law(arm: Any, n: Any, loss: Any, *, share: str = "alpha") -> SharedLaw:
    """``loss = E_k + A_k n^-alpha`` over arms ``k`` (``SharedLaw``; ``share`` one of ``SHARES``) fitted to the
    seed-mean loss of each (arm, size) cell by variable projection: for a fixed alpha the law is linear in the E's
    and A's (closed form, E clipped to [0, the arm's least mean], or for one shared E to [0, the least mean]),
    alpha on the grid of ``fit_loss_law`` then golden section. Pooling the exponent across arms is what lets 3
    sizes (``share="alpha"``, 2K + 1 parameters for 3K points) or even 2 sizes (``share="E_alpha"``, K + 2
    parameters for 2K points, K >= 3 arms: the arms' losses at the two sizes lie on a line whose slope fixes
    alpha) identify a law that one arm's points cannot (Kaplan et al. 2020 fit one exponent per architecture
    family). ``share="no_E"`` drops the irreducible loss (Kaplan et al. 2020's ``L = (N_c / N)^alpha``; K + 1
    parameters, so 2 sizes and K >= 2 arms): for fixed alpha each ``A_k`` is a closed form, still least squares on
    the loss. It never flattens, so beyond the runs it forecasts a lower loss than a law with a floor would.
    Not identifiable (reason, no numbers): an arm with fewer than 2 sizes, no more points than
    parameters, an arm whose seed means do not decrease with size, E at a bound, alpha at the edge of its grid,
    an amplitude A not above 0."""
    if share not in SHARES:
        raise ValueError(f"share={share!r}: one of {', '.join(SHARES)}")
    arms, sizes, w, means, _, _, npts = _shared_prep(arm, n, loss)
    k = len(arms)
    cells = int(w.sum())
    params = _shared_params(k, share)

    def bad(reason: str, e_unpinned: bool = False) -> SharedLaw:
        return SharedLaw(share=share, arms=arms, E=None, A=None, alpha=None, points=npts, cells=cells, params=params,
                         identifiable=False, reason=reason, e_unpinned=e_unpinned)

    reason = _shared_reason(arms, sizes, w, means, share)
    if reason:
        # too few points for the law's E's (every arm does have 2+ sizes): an E-free law has fewer parameters
        return bad(reason, e_unpinned=share != "no_E" and cells <= params and bool((w.sum(-1) >= 2).all()))
    n0 = math.exp(float(np.mean(np.log(sizes[w > 0]))))
    fit = _shared_batch(np.where(w > 0, np.log(np.where(w > 0, sizes, n0) / n0), 0.0), means[None], w, share)
    reason = _shared_fit_reason(fit, 0, arms, share)
    if reason:
        return bad(reason, e_unpinned=bool(fit["bound"][0].any()))
    alpha = float(fit["alpha"][0])
    return SharedLaw(share=share, arms=arms, E={a: float(fit["E"][0, i]) for i, a in enumerate(arms)},
                     A={a: float(fit["A"][0, i]) * n0 ** alpha for i, a in enumerate(arms)}, alpha=alpha,
                     points=npts, cells=cells, params=params, identifiable=True, sse=float(fit["sse"][0]))


def _shared_fit_reason(fit: dict[str, np.ndarray], i: int, arms: Sequence[str], share: str) -> str:
    reasons = []
    if fit["edge"][i]:
        reasons.append(f"alpha at the edge of its range {ALPHA_RANGE[0]}..{ALPHA_RANGE[1]} "
                       f"({float(fit['alpha'][i]):.3g}): the points do not fix the exponent")
    bound = fit["bound"][i]
    if bound.any():
        which = "the shared E" if share == "E_alpha" else "E of arm(s) " + ", ".join(
            a for a, b in zip(arms, bound, strict=True) if b)
        reasons.append(f"{which} at a bound (0 or the least loss): the points do not pin down the irreducible loss")
    flat = [a for a, v in zip(arms, fit["A"][i], strict=True) if not v > 0]
    if not reasons and flat:
        reasons.append(f"amplitude A not above 0 for arm(s) {', '.join(flat)}: the loss does not fall with size")
    return "; ".join(reasons)


def _grouped_df(samples: np.ndarray, cell_means: np.ndarray, groups: Sequence[Sequence[int]],
                group_seeds: Sequence[int]) -> float:
    """``_cell_df`` where cells resampled with the same seed draw form one group (its cells' means are functions of
    one draw of S seeds: S - 1 degrees of freedom for the group, however many cells it holds). Each group's share
    of the variance is the variance of its part of the replicates' linear fit on the cell means."""
    ok = np.isfinite(samples)
    x = cell_means[ok] - cell_means[ok].mean(0)
    y = samples[ok] - samples[ok].mean()
    if len(y) < 3:
        return math.inf
    g, *_ = np.linalg.lstsq(x, y, rcond=None)
    share = np.array([float(np.var(x[:, list(cols)] @ g[list(cols)])) for cols in groups])
    df = np.array([s_ - 1 for s_ in group_seeds], dtype=float)
    keep = df > 0
    total = float(share[keep].sum())
    denom = float((share[keep] ** 2 / df[keep]).sum())
    return total * total / denom if denom > 0 else math.inf


@dataclass(frozen=True, kw_only=True)
class SharedLawFit:
    """A ``SharedLaw`` with its seed bootstrap (``bootstrap_shared_law``): ``alpha`` (95% interval) and the
    replicates for ``forecast``."""

    law: SharedLaw
    alpha: Interval | None
    reps: int
    samples_E: np.ndarray | None = field(default=None, repr=False, compare=False)      # (reps, K)
    samples_A: np.ndarray | None = field(default=None, repr=False, compare=False)      # (reps, K)
    samples_alpha: np.ndarray | None = field(default=None, repr=False, compare=False)  # (reps,)
    cell_means: np.ndarray | None = field(default=None, repr=False, compare=False)     # (reps, cells)
    cell_seeds: tuple[int, ...] = ()
    cell_groups: tuple[tuple[int, ...], ...] = ()   # cells resampled with one seed draw (paired seeds)
    group_seeds: tuple[int, ...] = ()
    method: str = ""

    def _df(self, values: np.ndarray) -> float:
        if self.cell_means is None:
            return math.inf
        if self.cell_groups:
            return _grouped_df(values, self.cell_means, self.cell_groups, self.group_seeds)
        return _cell_df(values, self.cell_means, self.cell_seeds)

    def forecast(self, arm: str, n: float, level: float = 0.8) -> Interval | None:
        """Arm ``arm``'s loss at size ``n`` with the percentile interval of the replicates' predictions (widened to
        Student t as ``LawFit.forecast``); None when the law is not identifiable."""
        level = _level(level)
        if not self.law.identifiable or self.samples_alpha is None:
            return None
        i = self.law.arms.index(arm) if arm in self.law.arms else -1
        if i < 0:
            raise ValueError(f"arm {arm!r} was not fitted (arms: {', '.join(self.law.arms)})")
        pred = self.samples_E[:, i] + self.samples_A[:, i] * float(n) ** (-self.samples_alpha)
        df = self._df(pred)
        return _percentile_interval(pred, self.law.predict(arm, n), level, min(self.cell_seeds or (0,)),
                                    f"shared law ({self.law.share}), arm {arm} at n={float(n):.4g}: " + self.method,
                                    df)


def _paired_resampled_means(groups: list[list[np.ndarray]], seed_groups: list[list[np.ndarray]],
                            flat: list[tuple[int, int]], reps: int, rng: np.random.Generator,
                            step_of: dict[tuple[int, int], Any]) -> tuple[np.ndarray, tuple[tuple[int, ...], ...],
                                                                          tuple[int, ...]]:
    """(reps, cells) like ``_seed_resampled_means``, but at each size the seed numbers are drawn once for every arm
    run with the same seeds there (runs with one seed number share its data order: their noise is correlated, and
    drawing the seeds of each arm apart would count it as independent); other arms draw their own. Also returns the
    groups of cells that share a draw and each group's seeds (for the degrees of freedom)."""
    out = np.empty((reps, len(flat)))
    counts: dict[tuple[Any, ...], np.ndarray] = {}
    members: dict[tuple[Any, ...], list[int]] = {}
    for j, (a_, s_) in enumerate(flat):
        vals, labels = groups[a_][s_], seed_groups[a_][s_]
        m, s = float(vals.mean()), len(vals)
        order = np.argsort(labels, kind="stable")
        key = (step_of[(a_, s_)], tuple(np.asarray(labels)[order].tolist()))
        members.setdefault(key, []).append(j)
        if s == 1:
            out[:, j] = m
            continue
        if key not in counts:
            counts[key] = rng.multinomial(s, np.full(s, 1.0 / s), size=reps)
        out[:, j] = m + math.sqrt(s / (s - 1)) * (counts[key] @ vals[order] / s - m)
    cell_groups = tuple(tuple(v) for v in members.values())
    return out, cell_groups, tuple(len(k[1]) for k in members)


def bootstrap_shared_law(arm: Any, n: Any, loss: Any, seeds: Any, *, share: str = "alpha", reps: int = 400,
                         rng_seed: int = 0, paired_seeds: bool = True, size_key: Any = None) -> SharedLawFit:
    """``fit_shared_law`` and its seed bootstrap: each replicate redraws the seeds of every size with replacement
    (``paired_seeds``: the same seed numbers for every arm run with the same seeds at that size step; False: every
    (arm, size) cell apart; ``size_key``, one entry per point, says which points are one size step, e.g. the
    model width, where options change an arm's parameter count; default: ``n``), deviations scaled by sqrt(S / (S - 1)) as ``bootstrap_law``, and refits; intervals
    are the replicates' percentiles widened by ``t_nu / z`` (Satterthwaite ``nu`` from the cells' seeds)."""
    reps = _reps(reps, least=20)
    law = fit_shared_law(arm, n, loss, share=share)
    if not law.identifiable:
        return SharedLawFit(law=law, alpha=None, reps=reps, method="not identifiable: " + law.reason)
    arms, sizes, w, means, groups, seed_groups, _ = _shared_prep(arm, n, loss, seeds)
    n_arr = np.asarray(n, dtype=float).ravel()
    flat = [(a_, s_) for a_ in range(len(arms)) for s_ in range(sizes.shape[1]) if w[a_, s_] > 0]
    for a_, s_ in flat:
        sv = seed_groups[a_][s_]
        if len(np.unique(sv)) != len(sv):
            raise ValueError(f"a seed appears twice for arm {arms[a_]} at one size: one point per (arm, size, seed)")
    rng = np.random.default_rng(rng_seed)
    if paired_seeds:
        steps = n_arr if size_key is None else np.asarray(size_key).ravel()
        if len(steps) != len(n_arr):
            raise ValueError(f"size_key: one entry per point, got {len(steps)} for {len(n_arr)} points")
        step_of = {}
        for a_, s_ in flat:
            sel = (np.asarray(arm).astype(str).ravel() == arms[a_]) & (n_arr == sizes[a_, s_])
            vals = np.unique(steps[sel])
            if len(vals) != 1:
                raise ValueError(f"size_key: arm {arms[a_]} has {len(vals)} size steps at one size n={sizes[a_, s_]:.4g}")
            step_of[(a_, s_)] = vals[0]
        cm, cell_groups, group_seeds = _paired_resampled_means(groups, seed_groups, flat, reps, rng, step_of)
    else:
        cm = _seed_resampled_means([groups[a_][s_] for a_, s_ in flat], reps, rng)   # (reps, cells)
        cell_groups = tuple((j,) for j in range(len(flat)))
        group_seeds = tuple(len(groups[a_][s_]) for a_, s_ in flat)
    ys = np.zeros((reps, len(arms), sizes.shape[1]))
    for j, (a_, s_) in enumerate(flat):
        ys[:, a_, s_] = cm[:, j]
    n0 = math.exp(float(np.mean(np.log(sizes[w > 0]))))
    fit = _shared_batch(np.where(w > 0, np.log(np.where(w > 0, sizes, n0) / n0), 0.0), ys, w, share)
    cell_seeds = tuple(len(groups[a_][s_]) for a_, s_ in flat)
    at_bound = int(np.count_nonzero(fit["bound"].any(-1) | fit["edge"]))
    per = "size, the same seeds for every arm" if paired_seeds else "(arm, size)"
    method = (f"seed bootstrap ({reps} reps; seeds resampled per {per}, {min(cell_seeds)}-{max(cell_seeds)} "
              "seeds each), refit by variable projection, percentile"
              + (f"; {at_bound} replicate(s) with an E or alpha at a bound" if at_bound else ""))
    samples_alpha = fit["alpha"]
    alpha_iv = _percentile_interval(samples_alpha, law.alpha, 0.95, min(cell_seeds), "alpha: " + method,
                                    _grouped_df(samples_alpha, cm, cell_groups, group_seeds))
    return SharedLawFit(law=law, alpha=alpha_iv, reps=reps, samples_E=fit["E"],
                        samples_A=fit["A"] * n0 ** samples_alpha[:, None], samples_alpha=samples_alpha,
                        cell_means=cm, cell_seeds=cell_seeds, cell_groups=cell_groups, group_seeds=group_seeds,
                        method=method)
