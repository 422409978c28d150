"""Forecasts of an arm's loss at a larger size, with honest intervals and their measured held-out coverage.

From the final whole-split evaluation of each run (``arm_points``: per arm, size and seed; the atlas's arms or the
scaling probe's one arm), fit a loss law in NON-EMBEDDING parameters ``N`` (Kaplan et al. 2020, "Scaling laws for
neural language models") and forecast each arm's validation loss, in bits per byte, at a size the user names, with
an 80% seed-bootstrap interval (``forecast_arms``). Which law (``Forecast.law`` says it in words):

* every arm at 4 or more sizes: ``E + A N^-alpha`` per arm (``stats.bootstrap_law``; 3 parameters and at least one
  point to spare);
* fewer sizes: one law over the arms that share the exponent (``stats.bootstrap_shared_law``): first
  ``E_arm + A_arm N^-alpha`` (alpha shared: 2K + 1 parameters for K arms; with 3 sizes, 3K points), and where that
  is not identifiable (2 sizes, or an E at a bound) ``E + A_arm N^-alpha`` (E and alpha shared, K + 2
  parameters: with 2 sizes and K >= 3 arms the arms' losses at the two sizes lie on a line whose slope fixes
  alpha); and where E is what the points cannot pin down (too few points, or the shared E at a bound: 2 sizes
  usually) ``A_arm N^-alpha`` without an irreducible loss (Kaplan et al. 2020's form, alpha shared, K + 1
  parameters; ``Forecast.law`` carries its caveat: a pure power law never flattens, so a forecast far beyond the
  runs is optimistic). The control arm (``control:...``, shuffled context: a different irreducible loss) and arms
  that did not learn (a run above the unigram line) or whose loss does not fall with size are never pooled;
* an arm trained at 2 or more token budgets (the scaling probe's IsoFLOP runs): ``E + A/N^a + B/D^b`` per arm
  (Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", approach 3; ``stats.bootstrap_law``).

When every run of an arm trained on the same tokens ``D0``, the token term is not fitted: a forecast at other
tokens is not identifiable (it says so; ``tokens=None`` forecasts at ``D0``). A forecast whose fit is not
identifiable has ``identifiable=False``, ``reason`` in words and no numbers.

``holdout`` measures how often such intervals are right: it drops the largest size actually run, fits the smaller
ones, forecasts each arm at the dropped size and reports the share of arms whose interval covered the measured seed
mean, and the median absolute error. ``law_for_budget`` is the budget explorer's fitted law (Setups tab): loss
against TOTAL parameters (``core.cost_model.param_counts(cfg).num_params``, as the explorer counts them) and tokens,
from the atlas's reference arm or the scaling probe's runs.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from xtlens.profiling.benefit.stats import Interval

__all__ = ["arm_points", "Forecast", "forecast_arms", "Holdout", "holdout", "law_for_budget", "budget_law_status",
           "FittedLaw", "POINT_COLUMNS", "HOLDOUT_COLUMNS", "LEVEL", "UNIT", "MIN_SIZES_ALONE", "REPS"]

LEVEL = 0.8
UNIT = "bits/byte"
MIN_SIZES_ALONE = 4  #: sizes an arm needs for a law of its own (3 parameters and one point to spare)
REPS = 400           #: seed-bootstrap replicates of every fit
TOKENS_RTOL = 0.02   #: token counts within 2% are one budget (a run stops at a whole step)
POINT_COLUMNS = ("arm", "size_dim", "seed", "non_embedding_params", "tokens", "val_bits_per_byte", "val_loss_nats",
                 "num_params", "learned", "probe")


# --- points -----------------------------------------------------------------------------------------------

def _num(frame: pd.DataFrame, col: str) -> pd.Series:
    if col not in frame.columns:
        return pd.Series(np.nan, index=frame.index, dtype=float)
    return pd.to_numeric(frame[col], errors="coerce").astype(float)


def _as_points(rows: pd.DataFrame, arm: pd.Series | str, probe: str) -> pd.DataFrame:
    tokens = _num(rows, "tokens_seen").fillna(_num(rows, "budget_tokens"))
    loss = _num(rows, "val_loss_nats")
    dim = _num(rows, "axis_value").where(rows.get("axis", pd.Series("dim", index=rows.index)).fillna("dim") == "dim")
    out = pd.DataFrame({
        "arm": arm if isinstance(arm, pd.Series) else pd.Series(arm, index=rows.index),
        "size_dim": dim.astype("Int64"),
        "seed": _num(rows, "seed").astype("Int64"),
        "non_embedding_params": _num(rows, "non_embedding_params"),
        "tokens": tokens,
        "val_bits_per_byte": _num(rows, "val_bits_per_byte"),
        "val_loss_nats": loss,
        "num_params": _num(rows, "num_params"),
        "learned": (loss < _num(rows, "unigram_entropy_nats")).fillna(False).astype(bool),
        "probe": probe,
    })
    need = ["non_embedding_params", "tokens", "val_bits_per_byte", "num_params"]
    return out.dropna(subset=need)


def arm_points(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per ok run (its final whole-split evaluation, ``analysis.final_evals``): ``POINT_COLUMNS``. ``arm`` is
    the atlas run's ``variant``; the scaling probe's best-learning-rate runs (``probe_scaling.best_lr_rows``, the
    equal-token and IsoFLOP points, one row per distinct (size, tokens, seed); the over-fitting epochs left out)
    are one arm, ``"reference"`` (``"scaling:reference"`` when the frame holds atlas runs too). ``tokens``: the
    tokens trained (``tokens_seen`` at the last step, else the budget); ``learned``: the run ended below the
    unigram line (``unigram_entropy_nats``; missing counts as not learned, as ``claims.learned``)."""
    from xtlens.profiling.benefit.analysis import final_evals
    from xtlens.profiling.benefit.probe_scaling import best_lr_rows

    parts = []
    if frame is not None and len(frame) and "probe" in frame.columns:
        at = frame[frame["probe"] == "atlas"]
        if len(at):
            fin = final_evals(at)
            fin = fin[(fin["status"] == "ok") & (fin["row_kind"] == "eval")]
            parts.append(_as_points(fin, fin["variant"].astype(str), "atlas"))
        if (frame["probe"] == "scaling").any():
            rows = best_lr_rows(frame)
            rows = rows[rows["budget_kind"].isin(["tokens", "flops"])]
            rows = rows.sort_values("budget_kind", ascending=False).drop_duplicates(
                ["non_embedding_params", "tokens_seen", "seed"])
            parts.append(_as_points(rows, "scaling:reference" if parts else "reference", "scaling"))
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in POINT_COLUMNS})
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values(["probe", "arm", "non_embedding_params", "seed"]).reset_index(drop=True)


# --- fits ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class _ArmFit:
    """How one arm is forecast: ``predict(n, d, level) -> Interval`` or a ``reason`` it cannot be."""

    arm: str
    law: str
    reason: str
    sizes: int
    seeds: int
    tokens: tuple[float, ...]          # the token budgets fitted (one: the token term is not fitted)
    n_max: float
    n_min: float
    joint: bool = False
    predict: Callable[[float, float | None, float], Interval | None] | None = field(default=None, repr=False)


def _cells(pts: pd.DataFrame, ncol: str) -> pd.DataFrame:
    return pts.groupby(ncol)["val_bits_per_byte"].mean().sort_index()


def _budgets(values: np.ndarray) -> tuple[float, ...]:
    """The distinct token budgets (values within ``TOKENS_RTOL`` are one)."""
    out: list[float] = []
    for v in sorted(float(x) for x in values):
        if not out or v > out[-1] * (1 + TOKENS_RTOL):
            out.append(v)
    return tuple(out)


def _arm_facts(arm: str, pts: pd.DataFrame, ncol: str) -> dict[str, Any]:
    return {"arm": arm, "sizes": int(pts[ncol].nunique()), "seeds": int(pts["seed"].nunique()),
            "tokens": _budgets(pts["tokens"].to_numpy()), "n_max": float(pts[ncol].max()),
            "n_min": float(pts[ncol].min())}


def _precheck(arm: str, pts: pd.DataFrame, ncol: str) -> str:
    """Why this arm cannot enter a fit at all ("" if it can)."""
    if not pts["learned"].all():
        bad = pts[~pts["learned"]]
        return (f"did not learn: {len(bad)} run(s) ended above the unigram line (the loss of a model that ignores "
                "context) or without one to compare: no law is fitted to an arm that learned nothing")
    means = _cells(pts, ncol)
    if len(means) < 2:
        return f"{len(means)} size: a law in size needs at least 2 (more than 3 on its own)"
    if len(_budgets(pts["tokens"].to_numpy())) < 2:
        vals = means.to_numpy()
        for i in range(len(vals) - 1):
            if not vals[i + 1] < vals[i]:
                return (f"the seed-mean loss does not fall with size (N {means.index[i]:.4g}: {vals[i]:.4f}, "
                        f"N {means.index[i + 1]:.4g}: {vals[i + 1]:.4f} {UNIT}): non-monotone points, a "
                        "decreasing law cannot fit")
    return ""


def _alone(arm: str, pts: pd.DataFrame, ncol: str, facts: dict[str, Any], reps: int) -> _ArmFit:
    """A law of the arm's own: joint in (N, D) when it trained at 2+ token budgets, else in N (4+ sizes)."""
    from xtlens.profiling.benefit.stats import bootstrap_law

    n = pts[ncol].to_numpy(float)
    y = pts["val_bits_per_byte"].to_numpy(float)
    seeds = pts["seed"].to_numpy(int)
    joint = len(facts["tokens"]) >= 2
    if joint:
        fit = bootstrap_law(n, y, seeds, d=pts["tokens"].to_numpy(float), reps=reps)
        words = "E + A/N^a + B/D^b of this arm alone (Hoffmann et al. 2022, approach 3)"
    elif facts["sizes"] < MIN_SIZES_ALONE:
        return _ArmFit(law="E + A N^-alpha of this arm alone", reason=(
            f"{facts['sizes']} sizes: a law of one arm needs at least {MIN_SIZES_ALONE} (3 parameters and one "
            "point to check them), and this arm is not pooled with others"), **facts)
    else:
        fit = bootstrap_law(n, y, seeds, reps=reps)
        words = "E + A N^-alpha of this arm alone (Kaplan et al. 2020)"
    if not fit.law.identifiable:
        return _ArmFit(law=words, reason=fit.law.reason, joint=joint, **facts)

    def predict(nn: float, d: float | None, level: float) -> Interval | None:
        return fit.forecast(nn, d if joint else None, level=level)

    words += f": E {fit.law.E:.3g}, alpha {fit.law.alpha:.3g}" + (f", beta {fit.law.beta:.3g}" if joint else "")
    return _ArmFit(law=words + f" ({UNIT}); seed bootstrap, {reps} reps", reason="", joint=joint, predict=predict,
                   **facts)


#: the shared laws ``_pooled`` tries, best first: the E-free law only when both laws with E failed for want of points
#: to pin E down (too few, or an E at its bound)
_SHARES_IN_ORDER = ("alpha", "E_alpha", "no_E")
_SHARE_WORDS = {"alpha": "alpha shared", "E_alpha": "E and alpha shared", "no_E": "alpha shared, no E"}


def _pooled(group: dict[str, pd.DataFrame], ncol: str, facts: dict[str, dict[str, Any]],
            reps: int) -> dict[str, _ArmFit]:
    """One shared-exponent law over ``group`` (arms at one token budget, each learned and decreasing)."""
    from xtlens.profiling.benefit.stats import bootstrap_shared_law

    names = sorted(group)
    allpts = pd.concat([group[a] for a in names])
    arm, n = allpts["arm"].to_numpy(str), allpts[ncol].to_numpy(float)
    y, seeds = allpts["val_bits_per_byte"].to_numpy(float), allpts["seed"].to_numpy(int)
    # the size step that runs of different arms share (their width), so that a seed is drawn for all of them
    steps = allpts["size_dim"].to_numpy(float) if allpts["size_dim"].notna().all() else n
    reasons, unpinned = [], True
    for share in _SHARES_IN_ORDER:
        if share == "no_E" and not unpinned:  # the E-free law only where E is what the points cannot pin down
            break
        fit = bootstrap_shared_law(arm, n, y, seeds, share=share, reps=reps, size_key=steps)
        if fit.law.identifiable:
            break
        unpinned = unpinned and fit.law.e_unpinned
        reasons.append(f"{_SHARE_WORDS[share]}: {fit.law.reason}")
    if not fit.law.identifiable:
        return {a: _ArmFit(law=f"a law shared by {len(names)} arms", reason="; ".join(reasons), **facts[a])
                for a in names}
    law = fit.law
    what = {"alpha": "E_arm + A_arm N^-alpha, alpha shared by",
            "E_alpha": "E + A_arm N^-alpha, E and alpha shared by",
            "no_E": ("A_arm N^-alpha with no irreducible loss (Kaplan et al. 2020's form: a straight line per arm in "
                     "log-log space), alpha shared by")}[law.share]
    caveat = ("; caveat: a pure power law never flattens, so a forecast far beyond the runs is optimistic (a lower "
              "loss than a law with a floor E would give)" if law.share == "no_E" else "")
    why_not = f" (laws with an irreducible loss were not identifiable: {'; '.join(reasons)})" if reasons else ""
    out = {}
    for a in names:
        e_words = "" if law.share == "no_E" else f", this arm's E {law.E[a]:.3g} {UNIT}"
        words = (f"{what} {len(names)} arms (fewer than {MIN_SIZES_ALONE} sizes each: an arm alone is not "
                 f"identifiable): alpha {law.alpha:.3g}{e_words}; seed bootstrap, {reps} reps{caveat}{why_not}")

        def predict(nn: float, d: float | None, level: float, a: str = a) -> Interval | None:
            return fit.forecast(a, nn, level=level)

        out[a] = _ArmFit(law=words, reason="", predict=predict, **facts[a])
    return out


_FIT_CACHE: dict[tuple[Any, ...], dict[str, _ArmFit]] = {}
_FIT_CACHE_SIZE = 8
_FIT_LOCK = threading.Lock()


def _fit_arms(points: pd.DataFrame, ncol: str = "non_embedding_params", reps: int = REPS) -> dict[str, _ArmFit]:
    """``_fit_arms_uncached``, remembered for the last few point sets (a page forecasting several sizes or budgets
    from the same runs fits once; the fits are deterministic: the bootstrap's generator is seeded)."""
    cols = [c for c in ("arm", "size_dim", "seed", ncol, "tokens", "val_bits_per_byte", "learned")
            if c in points.columns]
    digest = hashlib.sha256(pd.util.hash_pandas_object(points[cols], index=False).to_numpy().tobytes()).hexdigest()
    key = (digest, tuple(cols), ncol, reps)
    with _FIT_LOCK:
        if key in _FIT_CACHE:
            return _FIT_CACHE[key]
    fits = _fit_arms_uncached(points, ncol, reps)
    with _FIT_LOCK:
        _FIT_CACHE[key] = fits
        while len(_FIT_CACHE) > _FIT_CACHE_SIZE:
            _FIT_CACHE.pop(next(iter(_FIT_CACHE)))
    return fits


def _fit_arms_uncached(points: pd.DataFrame, ncol: str, reps: int) -> dict[str, _ArmFit]:
    """Every arm's fit (see the module docstring), the points of one probe."""
    fits: dict[str, _ArmFit] = {}
    facts, pool, alone_reason = {}, {}, {}
    for arm, pts in points.groupby("arm", sort=True):
        arm = str(arm)
        facts[arm] = _arm_facts(arm, pts, ncol)
        why = _precheck(arm, pts, ncol)
        if why:
            fits[arm] = _ArmFit(law="none fitted", reason=why, **facts[arm])
        elif len(facts[arm]["tokens"]) >= 2:
            fits[arm] = _alone(arm, pts, ncol, facts[arm], reps)
        elif facts[arm]["sizes"] >= MIN_SIZES_ALONE:
            fits[arm] = _alone(arm, pts, ncol, facts[arm], reps)
            if fits[arm].predict is None and not arm.startswith("control:"):  # try sharing the exponent
                alone_reason[arm] = fits.pop(arm).reason
                pool.setdefault(facts[arm]["tokens"][0], {})[arm] = pts
        elif arm.startswith("control:"):
            fits[arm] = _alone(arm, pts, ncol, facts[arm], reps)
            if not fits[arm].predict:
                fits[arm] = _ArmFit(law=fits[arm].law, reason=(
                    "the control arm (shuffled context) is not pooled with the others: its irreducible loss "
                    f"differs; alone, {fits[arm].reason}"), **facts[arm])
        else:
            pool.setdefault(facts[arm]["tokens"][0], {})[arm] = pts
    # arms whose budgets agree within TOKENS_RTOL are one pool
    merged: dict[float, dict[str, pd.DataFrame]] = {}
    for d0, group in sorted(pool.items()):
        key = next((k for k in merged if abs(d0 - k) <= TOKENS_RTOL * k), d0)
        merged.setdefault(key, {}).update(group)
    for _, group in sorted(merged.items()):
        if len(group) == 1:
            (arm,) = group
            fits[arm] = _ArmFit(law="E + A N^-alpha of this arm alone", reason=alone_reason.get(arm) or (
                f"{facts[arm]['sizes']} sizes: a law of one arm needs at least {MIN_SIZES_ALONE} (3 parameters and "
                "one point to check them), and no other arm at this token budget shares its exponent"),
                **facts[arm])
            continue
        for arm, fit in _pooled(group, ncol, facts, reps).items():
            if arm in alone_reason:  # an arm that failed alone says so, pooled or not
                note = f"alone: {alone_reason[arm]}"
                fit = _ArmFit(**{**fit.__dict__, "law": f"{fit.law} ({note})"} if fit.predict else
                              {**fit.__dict__, "reason": f"{fit.reason}; {note}"})
            fits[arm] = fit
    return fits


# --- forecasts ----------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Forecast:
    """One arm's forecast validation loss (``unit``, bits/byte) at ``num_params`` NON-EMBEDDING parameters and
    ``tokens`` training tokens, with its ``level`` (0.8) seed-bootstrap interval. Not identifiable: ``estimate``,
    ``low``, ``high`` are None and ``reason`` says why. ``sizes``, ``seeds``: what the arm's fit saw;
    ``extrapolation``: ``num_params`` over the arm's largest run's non-embedding parameters."""

    arm: str
    num_params: float
    tokens: float | None
    estimate: float | None
    low: float | None
    high: float | None
    level: float = LEVEL
    unit: str = UNIT
    law: str
    identifiable: bool
    reason: str = ""
    sizes: int
    seeds: int
    extrapolation: float | None


def _one(fit: _ArmFit, n: float, d: float | None, level: float) -> Forecast:
    base = {"arm": fit.arm, "num_params": float(n), "level": level, "law": fit.law, "sizes": fit.sizes,
            "seeds": fit.seeds, "extrapolation": float(n) / fit.n_max if fit.n_max > 0 else None}
    d_eff = d
    reason = fit.reason
    if not reason and not fit.joint:
        d0 = fit.tokens[0]
        if d is None:
            d_eff = d0
        elif abs(float(d) - d0) > TOKENS_RTOL * d0:
            reason = (f"every run of this arm trained on {d0:,.0f} tokens: the token term (B / D^b) is not fitted, "
                      f"so the loss at {float(d):,.0f} tokens is not forecast (tokens=None forecasts at {d0:,.0f})")
    if not reason and fit.joint and d is None:
        reason = "the arm's law is joint in size and tokens: give the training tokens"
    if reason or fit.predict is None:
        return Forecast(tokens=None if d_eff is None else float(d_eff), estimate=None, low=None, high=None,
                        identifiable=False, reason=reason or "not fitted", **base)
    iv = fit.predict(float(n), None if d_eff is None else float(d_eff), level)
    return Forecast(tokens=None if d_eff is None else float(d_eff), estimate=iv.estimate, low=iv.low, high=iv.high,
                    identifiable=True, reason="", **base)


def _level(level: float) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level={level!r}: between 0 and 1 (0.8 for an 80% interval)")
    return level


def _by_probe(points: pd.DataFrame) -> list[pd.DataFrame]:
    missing = [c for c in ("arm", "seed", "non_embedding_params", "tokens", "val_bits_per_byte", "learned")
               if c not in points.columns]
    if missing:
        raise ValueError(f"points: missing column(s) {', '.join(missing)} (make them with forecast.arm_points)")
    if "probe" not in points.columns:
        return [points]
    return [g for _, g in points.groupby("probe", sort=True)]


def _forecasts(points: pd.DataFrame, targets: Mapping[str, list[tuple[float, float | None]]], level: float,
               reps: int = REPS) -> list[Forecast]:
    """A forecast per (arm, target) of ``targets`` (arm -> [(non-embedding parameters, tokens or None)])."""
    out = []
    for group in _by_probe(points):
        fits = _fit_arms(group, reps=reps)
        out += [_one(fits[a], n, d, level) for a in sorted(fits) if a in targets for n, d in targets[a]]
    return out


def forecast_arms(points: pd.DataFrame, *, num_params: float | Mapping[str, float], tokens: float | None = None,
                  level: float = LEVEL) -> list[Forecast]:
    """Each arm's forecast at ``num_params`` NON-EMBEDDING parameters (one number for every arm, or a mapping arm ->
    parameters) and ``tokens`` training tokens (None: the tokens the arm's runs trained on), one ``Forecast`` per
    arm of ``points`` (``arm_points``), sorted by arm."""
    level = _level(level)
    arms = sorted({str(a) for a in points["arm"]}) if len(points) else []
    if isinstance(num_params, Mapping):
        targets = {a: [(float(num_params[a]), tokens)] for a in arms if a in num_params}
    else:
        if not (num_params is not None and math.isfinite(float(num_params)) and float(num_params) > 0):
            raise ValueError(f"num_params={num_params!r}: non-embedding parameters, a number above 0")
        targets = {a: [(float(num_params), tokens)] for a in arms}
    if tokens is not None and not (math.isfinite(float(tokens)) and float(tokens) > 0):
        raise ValueError(f"tokens={tokens!r}: training tokens, a number above 0 (or None: the runs' own budget)")
    return _forecasts(points, targets, level)


# --- held-out coverage --------------------------------------------------------------------------------------

HOLDOUT_COLUMNS = ("arm", "held_out_dim", "held_out_params", "held_out_tokens", "measured", "measured_seeds",
                   "estimate", "low", "high", "covered", "pred_low", "pred_high", "covered_prediction", "abs_error",
                   "identifiable", "reason", "law")


@dataclass(frozen=True, kw_only=True)
class Holdout:
    """``holdout``'s result: ``coverage`` (share of the forecast arms whose ``level`` interval covered the held-out
    measured seed mean; None when no arm could be forecast), ``arms`` (how many arms were forecast), ``level``,
    ``median_abs_error_bits`` (bits/byte, over the forecast arms), ``table`` (one row per arm and held-out token
    budget: ``HOLDOUT_COLUMNS``, ``law`` the fit in words as ``Forecast.law``; the atlas has one budget, the scaling probe's largest size several, each a row
    and each counted in the coverage) and ``reason`` (why nothing could be held out; "" otherwise).

    The forecast interval is for the arm's TRUE loss at that size; the measured mean carries its own seed noise, so
    even a perfect interval covers it less often than ``level``. ``coverage_prediction`` compares like with like:
    the share covered by the prediction interval of a new seed mean (``pred_low``, ``pred_high``: each side's
    distance widened in quadrature by ``z * s / sqrt(S)``, ``s`` the held-out runs' seed standard deviation pooled
    over the arms, ``S`` the arm's held-out seeds)."""

    coverage: float | None
    arms: int
    level: float
    median_abs_error_bits: float | None
    table: pd.DataFrame = field(repr=False, compare=False)
    reason: str = ""
    coverage_prediction: float | None = None


def holdout(points: pd.DataFrame, level: float = LEVEL, *, reps: int = REPS) -> Holdout:
    """Hold out the largest size actually run (the largest ``size_dim``; per arm its largest ``non_embedding_params``
    where there is no dim), fit the smaller sizes as ``forecast_arms`` does, forecast each arm at its held-out
    size and tokens, and compare with the measured seed mean there (bits/byte)."""
    level = _level(level)
    empty = pd.DataFrame({c: pd.Series(dtype=object) for c in HOLDOUT_COLUMNS})
    if points is None or len(points) == 0:
        return Holdout(coverage=None, arms=0, level=level, median_abs_error_bits=None, table=empty,
                       reason="no runs")
    pts = points.copy()
    has_dim = "size_dim" in pts.columns and pts["size_dim"].notna().all()
    if has_dim:
        held_mask = pts["size_dim"] == pts["size_dim"].max()
    else:
        held_mask = pts["non_embedding_params"] == pts.groupby("arm")["non_embedding_params"].transform("max")
    train, held = pts[~held_mask], pts[held_mask]
    if train.empty:
        return Holdout(coverage=None, arms=0, level=level, median_abs_error_bits=None, table=empty,
                       reason="one size only: nothing left to fit once the largest is held out")
    # one held-out cell per (arm, token budget): the atlas has one per arm, the scaling probe one per budget
    cells: dict[tuple[str, float], pd.DataFrame] = {}
    for arm, g in held.groupby("arm"):
        for d0 in _budgets(g["tokens"].to_numpy()):
            sel = (g["tokens"] - d0).abs() <= TOKENS_RTOL * d0
            cells[(str(arm), d0)] = g[sel]
    ss, dof = 0.0, 0
    for g in cells.values():
        if len(g) > 1:
            v = g["val_bits_per_byte"].to_numpy(float)
            ss, dof = ss + float(((v - v.mean()) ** 2).sum()), dof + len(v) - 1
    seed_sd = math.sqrt(ss / dof) if dof else 0.0
    from xtlens.profiling.benefit.stats import z_quantile

    z = z_quantile(0.5 + level / 2)
    targets: dict[str, list[tuple[float, float | None]]] = {}
    measured: dict[tuple[str, int], tuple[float, int | None, int, float]] = {}
    for (arm, _), g in sorted(cells.items()):
        targets.setdefault(arm, []).append((float(g["non_embedding_params"].mean()), float(g["tokens"].mean())))
        measured[(arm, len(targets[arm]) - 1)] = (float(g["val_bits_per_byte"].mean()),
                                                  int(g["size_dim"].iloc[0]) if has_dim else None, len(g),
                                                  float(g["tokens"].mean()))
    rows = []
    seen: dict[str, int] = {}
    for f in _forecasts(train, targets, level, reps=reps):
        i = seen.get(f.arm, 0)
        seen[f.arm] = i + 1
        m, dim, s_, d = measured[(f.arm, i)]
        row = {"arm": f.arm, "held_out_dim": dim, "held_out_params": f.num_params, "held_out_tokens": d,
               "measured": m, "measured_seeds": s_, "estimate": f.estimate, "low": f.low, "high": f.high,
               "covered": None, "pred_low": None, "pred_high": None, "covered_prediction": None, "abs_error": None,
               "identifiable": f.identifiable, "reason": f.reason, "law": f.law}
        if f.identifiable:
            noise = z * seed_sd / math.sqrt(s_)
            lo = f.estimate - math.hypot(f.estimate - f.low, noise)
            hi = f.estimate + math.hypot(f.high - f.estimate, noise)
            row.update(covered=bool(f.low <= m <= f.high), pred_low=lo, pred_high=hi,
                       covered_prediction=bool(lo <= m <= hi), abs_error=abs(f.estimate - m))
        rows.append(row)
    for arm in sorted(set(targets) - set(seen)):
        for i, (n, _) in enumerate(targets[arm]):
            m, dim, s_, d = measured[(arm, i)]
            rows.append({"arm": arm, "held_out_dim": dim, "held_out_params": n, "held_out_tokens": d, "measured": m,
                         "measured_seeds": s_, "identifiable": False,
                         "reason": "no run of this arm at the smaller sizes"})
    table = pd.DataFrame(rows, columns=list(HOLDOUT_COLUMNS)).sort_values(["arm", "held_out_tokens"])
    table = table.reset_index(drop=True)
    ok = table[table["identifiable"].astype(bool)]
    if ok.empty:
        return Holdout(coverage=None, arms=0, level=level, median_abs_error_bits=None, table=table,
                       reason="no arm's law was identifiable from the smaller sizes (see the table's reasons)")
    return Holdout(coverage=float(ok["covered"].astype(bool).mean()), arms=int(ok["arm"].nunique()), level=level,
                   median_abs_error_bits=float(np.median(ok["abs_error"].astype(float))), table=table,
                   coverage_prediction=float(ok["covered_prediction"].astype(bool).mean()))


# --- the budget explorer's law ------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class FittedLaw:
    """The budget explorer's measured loss law: ``predict(num_params, tokens) -> (estimate, low, high)`` in
    ``unit`` (bits/byte; the interval at ``level``), ``num_params`` counted as the explorer counts them: TOTAL
    parameters (``core.cost_model.param_counts(cfg).num_params``, embeddings included). ``label``: "fitted to your
    runs: N sizes, S seeds, corpus C"; ``law``: the fit in words; ``notes``: what a reader must know (the token
    term not fitted from one budget, how far a prediction extrapolates). ``tokens_fitted``: the token budgets of
    the runs (one: ``predict`` gives the loss at that budget whatever ``tokens`` it is asked, see ``notes``);
    ``params_range``: the smallest and largest run (total parameters)."""

    label: str
    unit: str = UNIT
    level: float = LEVEL
    law: str
    notes: tuple[str, ...]
    source: str
    sizes: int
    seeds: int
    corpus: str
    tokens_fitted: tuple[float, ...]
    params_range: tuple[float, float]
    _predict: Callable[[float, float | None, float], Interval | None] = field(repr=False, compare=False)

    @property
    def tokens_term(self) -> bool:
        """True when the law has a fitted token term (runs at 2+ token budgets)."""
        return len(self.tokens_fitted) >= 2

    def extrapolation(self, num_params: float) -> float:
        """``num_params`` over the largest run's total parameters."""
        return float(num_params) / self.params_range[1]

    def predict(self, num_params: float, tokens: float) -> tuple[float, float, float]:
        """(estimate, low, high) of the validation loss (``unit``) at ``num_params`` total parameters trained on
        ``tokens`` tokens (ignored when the token term is not fitted: the loss at ``tokens_fitted[0]``)."""
        n = float(num_params)
        if not (math.isfinite(n) and n > 0):
            raise ValueError(f"num_params={num_params!r}: total parameters, a number above 0")
        d = float(tokens) if self.tokens_term else None
        if d is not None and not (math.isfinite(d) and d > 0):
            raise ValueError(f"tokens={tokens!r}: training tokens, a number above 0")
        iv = self._predict(n, d, self.level)
        return iv.estimate, iv.low, iv.high


def _budget_points(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Candidate point sets for the explorer's law, best first: the scaling probe's runs when tokens vary (a
    token term), the atlas (its reference arm pooled with the other arms), the scaling probe at one budget."""
    pts = arm_points(frame)
    out = []
    sc = pts[pts["probe"] == "scaling"]
    at = pts[pts["probe"] == "atlas"]
    if len(sc) and len(_budgets(sc["tokens"].to_numpy())) >= 2:
        out.append(("the scaling probe's runs", sc))
    if len(at) and (at["arm"] == "reference").any():
        out.append(("the atlas's reference arm", at))
    if len(sc) and len(_budgets(sc["tokens"].to_numpy())) < 2:
        out.append(("the scaling probe's runs", sc))
    return out


def budget_law_status(frame: pd.DataFrame, corpus_label: str, *, reps: int = REPS) -> tuple[FittedLaw | None, str]:
    """``(law_for_budget(frame, corpus_label), why)``: ``why`` says why there is no law ("" when there is)."""
    if frame is None or len(frame) == 0:
        return None, "no probe runs stored"
    why = []
    for source, pts in _budget_points(frame):
        ref = next(a for a in sorted(pts["arm"].unique()) if a.endswith("reference"))
        fits = _fit_arms(pts, ncol="num_params", reps=reps)
        fit = fits[ref]
        if fit.predict is None:
            why.append(f"{source}: {fit.reason}")
            continue
        rows = pts[pts["arm"] == ref]
        seeds = int(rows["seed"].nunique())
        lo, hi = float(rows["num_params"].min()), float(rows["num_params"].max())
        notes = []
        if len(fit.tokens) < 2:
            notes.append(f"token term not fitted: every run trained on {fit.tokens[0]:,.0f} tokens (one budget), so "
                         "the loss is the fitted law's at that budget whatever tokens a configuration would get")
        else:
            notes.append(f"token term fitted from {len(fit.tokens)} budgets, {fit.tokens[0]:,.0f}-"
                         f"{fit.tokens[-1]:,.0f} tokens")
        notes.append(f"fitted on {lo:,.0f}-{hi:,.0f} parameters (total, as core.cost_model.param_counts counts "
                     f"them): a configuration of 10x {hi:,.0f} is a 10x extrapolation, and the {LEVEL:.0%} band "
                     "covers seed noise only, not a change of the law's shape beyond the runs")
        label = f"fitted to your runs: {fit.sizes} sizes, {seeds} seeds, corpus {corpus_label}"
        return FittedLaw(label=label, law=f"{source}: {fit.law}", notes=tuple(notes), source=source,
                         sizes=fit.sizes, seeds=seeds, corpus=corpus_label, tokens_fitted=fit.tokens,
                         params_range=(lo, hi), _predict=fit.predict), ""
    return None, "; ".join(why) or "no finished atlas or scaling runs"


def law_for_budget(frame: pd.DataFrame, corpus_label: str) -> FittedLaw | None:
    """The budget explorer's fitted law from the probe runs in ``frame`` (``FittedLaw``), or None when there are no
    usable runs (``budget_law_status`` says why)."""
    return budget_law_status(frame, corpus_label)[0]
