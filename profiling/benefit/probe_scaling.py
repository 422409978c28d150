"""The scaling probe: loss against model size and training tokens, with a learning-rate sweep at every point.

Method (small-scale versions of the two papers' methods; cite them with the numbers):

* Kaplan et al. 2020, "Scaling Laws for Neural Language Models" (arXiv:2001.08361): size counted in
  NON-EMBEDDING parameters ``N`` (the cost model's ``non_embedding_params``), and the fit
  ``L(N) = E + A * N^-alpha`` at an equal token budget (with the irreducible term ``E``, Hoffmann et al.'s form);
* Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models" (arXiv:2203.15556): IsoFLOP profiles
  (approach 2: at each of at least three training-FLOP budgets, a parabola of loss in ``log N``; its minimum is the
  compute-optimal size for that budget) and the joint law ``L(N, D) = E + A / N^a + B / D^b`` (approach 3) over
  every point where both ``N`` and the training tokens ``D`` vary.

The plan (``plan``), a full grid so that it runs as independent runs (locally or as Ray tasks):

* sizes: ``values`` of ``axis`` (default ``dim``). Along ``dim`` the attention width grows with it the way the
  seed's family does (the seed has ``heads x attn_dim_head = 8 x 64 = 512 = dim``): ``attn_dim_head`` is kept and
  ``heads = dim / attn_dim_head`` (ALiBi and K/V heads scaled with it by ``probes.family``);
* the main budget: every size at the same ``tokens`` (``budget_kind="tokens"``, the equal-token points);
* IsoFLOP: ``isoflop_budgets`` budgets (default 3), the training FLOPs of the ``isoflop_values`` sizes at the
  main token budget (so each budget shares one run with the main points); at each budget every size that gets
  at least ``MIN_STEPS`` steps (``budget_kind="flops"``);
* a learning-rate sweep at EVERY point: ``lrs`` (default 1.5e-2, 3e-2, 6e-2) x ``seeds`` (default 3). The best
  learning rate of a point is the one with the lowest seed-mean validation loss (the final evaluation); the
  rows at that rate are the point's "main" rows (``role="best lr"``), the others are the sweep
  (``role="lr sweep"``): both are in the table, and every fit, IsoFLOP and claim uses the best-lr rows only.
  The selection is made on the same validation split the results are reported on (as in the scaling papers'
  sweeps); the table says when the best rate is at an edge of the sweep (then widen ``lrs``). ``--lr`` fixes one
  rate (no sweep).
* optional over-fitting check (``extra["overfit_tokens"]`` > 0; off by default): each size trained on the first
  ``overfit_tokens`` training tokens for ``overfit_epochs`` epochs, seed 0, the middle learning rate: the
  train / validation gap.

Every point carries its tokens per parameter (total and non-embedding). ``claims(frame)`` turns the seed
analysis's scaling claims into ``claims.Claim`` rows with verdicts from the intervals (``stats``).
"""

from __future__ import annotations

import math
import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from xtlens.core.config import ConfigError, ModelConfig
from xtlens.profiling.benefit.harness import Budget, BudgetError, RunSpec, step_flops, steps_for

if TYPE_CHECKING:
    import pandas as pd
    from xtlens.profiling.benefit.claims import Claim
    from xtlens.profiling.benefit.probe_options import ProbeOptions

__all__ = ["plan", "claims", "points_table", "lr_sweep_table", "law_table", "isoflop_table", "equal_token_points",
           "best_lr_rows", "DEFAULT_LRS", "MIN_STEPS", "METHOD", "lr_label"]

DEFAULT_LRS = (1.5e-2, 3e-2, 6e-2)
MIN_STEPS = 8  # an IsoFLOP point with fewer optimizer steps is left out (warm-up alone would be most of it)
METHOD = ("Kaplan et al. 2020 (non-embedding parameters; L = E + A N^-alpha) and Hoffmann et al. 2022 "
          "(IsoFLOP parabolas; joint L = E + A/N^a + B/D^b); learning rate swept per point, best on validation")


def lr_label(lr: float) -> str:
    return f"lr {lr:.3g}"


def _sizes(opt: ProbeOptions, axis: str) -> tuple[int, ...]:
    if opt.values is None and opt.full_size and axis == "dim":  # the configuration's own sizes: around its dim
        dh = opt.base.attn_dim_head
        return tuple(sorted({max(dh, round(opt.base.dim * f / dh) * dh) for f in (0.5, 1.0, 1.5, 2.0)}))
    values = opt.values or opt.default("values")
    if isinstance(values, dict):
        values = values[axis]
    return tuple(sorted(set(int(v) for v in values)))


def _size_cfg(base: ModelConfig, axis: str, value: int) -> ModelConfig:
    """``base`` at ``axis = value``; along ``dim`` the attention width follows (``heads = dim / attn_dim_head``)."""
    from xtlens.profiling.benefit.probe_options import ProbeInputError, axis_config, family

    if axis != "dim":
        return axis_config(base, axis, value)
    dh = base.attn_dim_head
    if value % dh:
        raise ProbeInputError("--values", value, f"dims divisible by attn_dim_head = {dh} (the attention width "
                              f"heads x {dh} grows with dim, as in the seed's family: 8 x 64 = 512)")
    try:
        return family(base, dim=value, depth=base.depth, heads=value // dh, attn_dim_head=dh,
                      num_tokens=base.num_tokens, max_seq_len=base.max_seq_len)
    except ConfigError as exc:  # pragma: no cover - family() already names the option
        raise ProbeInputError("--values", value, str(exc)) from None


def _lrs(opt: ProbeOptions) -> tuple[float, ...]:
    from xtlens.profiling.benefit.probe_options import ProbeInputError

    if opt.lr is not None:
        return (float(opt.lr),)
    lrs = tuple(float(x) for x in opt.extra.get("lrs", opt.defaults.get("lrs", DEFAULT_LRS)))
    if not lrs or any(not (0 < x <= 1) for x in lrs):
        raise ProbeInputError("lrs", lrs, "peak learning rates in (0, 1], e.g. 1e-3,3e-3,1e-2")
    return tuple(sorted(set(lrs)))


def plan(opt: ProbeOptions) -> list[RunSpec]:
    """The scaling probe's runs (see the module docstring), validated: bad input raises ``ProbeInputError`` /
    ``BudgetError`` naming the option."""
    from xtlens.profiling.benefit.probe_options import ProbeInputError, budget_for, member, train_settings

    axis = opt.axis or opt.default("axis")
    sizes = _sizes(opt, axis)
    s = train_settings(opt)
    base = member(opt, s)
    main = budget_for(opt, base, s)
    current = getattr(base, axis)
    cfgs = {v: _size_cfg(base, axis, v) for v in sizes}
    lrs = _lrs(opt)
    iso_n = int(opt.extra.get("isoflop_budgets", opt.defaults.get("isoflop_budgets", 3)))
    if iso_n < 0:
        raise ProbeInputError("isoflop_budgets", iso_n, "0 (no IsoFLOP runs) or more")
    iso_n = min(iso_n, len(sizes))  # one budget per size at most

    def name(v: int, lr: float, extra: str = "") -> str:
        return f"{axis}={v}{' (current)' if v == current else ''}, {lr_label(lr)}{extra}"

    # the equal-token (or, with --train-flops, equal-FLOP) points
    points: list[tuple[int, ModelConfig, Budget, str]] = [(v, cfg, main, main.kind) for v, cfg in cfgs.items()]
    for cfg in cfgs.values():
        steps_for(cfg, main, s)  # every size must get its 2 steps (raises naming --tokens / --train-flops)
    if main.kind == "tokens" and iso_n:
        main_steps = steps_for(base, main, s)
        iso_sizes = _iso_sizes(opt, sizes, iso_n)
        for bv in iso_sizes:
            c = Budget(kind="flops", value=main_steps * step_flops(cfgs[bv], s))
            for v, cfg in cfgs.items():
                try:
                    if steps_for(cfg, c, s) < MIN_STEPS:
                        continue
                except BudgetError:
                    continue
                points.append((v, cfg, c, "flops"))
    runs: list[RunSpec] = []
    for seed in opt.seed_list:
        for lr in lrs:
            sl = replace(s, lr=lr)
            for v, cfg, budget, kind in points:
                runs.append(RunSpec(probe="scaling", cfg=cfg, budget=budget, seed=seed, settings=sl,
                                    variant=f"{axis}={v}", axis=axis, axis_value=v, config_name=name(v, lr),
                                    budget_kind_label=kind))
    sub = int(opt.extra.get("overfit_tokens", opt.defaults.get("overfit_tokens", 0)))
    epochs = int(opt.extra.get("overfit_epochs", opt.defaults.get("overfit_epochs", 16)))
    if sub > 0 and epochs > 0:
        lr = lrs[len(lrs) // 2]
        so = replace(s, train_subset_tokens=sub, lr=lr)
        for v, cfg in cfgs.items():
            runs.append(RunSpec(probe="scaling", cfg=cfg, budget=Budget(kind="tokens", value=sub * epochs),
                                seed=opt.seed_list[0], settings=so, variant=f"{axis}={v}", axis=axis, axis_value=v,
                                config_name=name(v, lr, f", {sub:,}-token subset x {epochs} epochs"),
                                budget_kind_label="epochs"))
    return runs


def _iso_sizes(opt: ProbeOptions, sizes: tuple[int, ...], n: int) -> tuple[int, ...]:
    """The sizes whose main-budget FLOPs define the IsoFLOP budgets: ``isoflop_values`` if given, else the ``n``
    sizes around the middle of the sweep (an optimum inside the sampled sizes needs sizes on both sides)."""
    from xtlens.profiling.benefit.probe_options import ProbeInputError

    given = opt.extra.get("isoflop_values", opt.defaults.get("isoflop_values"))
    if given:
        bad = [v for v in given if v not in sizes]
        if bad:
            raise ProbeInputError("isoflop_values", bad, f"values among the swept sizes {sizes}")
        return tuple(sorted(set(int(v) for v in given)))
    lo = max(0, (len(sizes) - n) // 2)
    return sizes[lo:lo + n]


# --- tables -----------------------------------------------------------------------------------------

_LR_RE = None


def _lr_of(row: Any) -> float | None:
    """A run's peak learning rate: ``peak_lr`` when the row has it, else the ``lr ...`` in its label."""
    import re

    global _LR_RE
    v = getattr(row, "peak_lr", None)
    if v is not None and not (isinstance(v, float) and math.isnan(v)):
        try:
            return float(v)
        except (TypeError, ValueError):
            pass
    _LR_RE = _LR_RE or re.compile(r"\blr ([0-9.]+(?:e[+-]?[0-9]+)?)")
    m = _LR_RE.search(str(getattr(row, "config_name", "")))
    return float(m.group(1)) if m else None


def _finals(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per labelled scaling run (the final evaluation), with ``peak_lr``, the point's budget and the
    tokens per parameter (total and non-embedding) filled in."""
    return _cached(frame, "_finals", lambda: _finals_uncached(frame)).copy()


def _finals_uncached(frame: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd
    from xtlens.profiling.benefit.analysis import final_evals

    sc = frame[frame["probe"] == "scaling"]
    if sc.empty:
        return sc.assign(budget=None, train_tokens=None, tokens_per_non_embedding_param=None)
    fin = final_evals(sc).copy()
    fin = fin[fin["budget_kind"].isin(["tokens", "flops", "epochs"])]
    fin["peak_lr"] = [_lr_of(r) for r in fin.itertuples(index=False)]
    fin["budget"] = [int(t) if k != "flops" and pd.notna(t) else (int(f) if pd.notna(f) else None)
                     for k, t, f in zip(fin["budget_kind"], fin["budget_tokens"], fin["budget_flops"], strict=True)]
    num = pd.to_numeric(fin["num_params"], errors="coerce")
    ne = pd.to_numeric(fin["non_embedding_params"], errors="coerce")
    seen = pd.to_numeric(fin["tokens_seen"], errors="coerce")
    fin["train_tokens"] = seen
    fin["tokens_per_param"] = seen / num
    fin["tokens_per_non_embedding_param"] = seen / ne
    fin["val_loss_nats"] = pd.to_numeric(fin["val_loss_nats"], errors="coerce").astype(float)
    return fin


_LOCAL = threading.local()


def _cached(frame: pd.DataFrame, key: str, compute: Any) -> Any:
    """``compute()`` once per frame object (a one-frame cache per thread: the tables, charts and claims of one
    frame share the sweep's selection, the bootstrap intervals and the fits instead of redoing them)."""
    if getattr(_LOCAL, "frame", None) is not frame or getattr(_LOCAL, "shape", None) != frame.shape:
        _LOCAL.frame, _LOCAL.shape, _LOCAL.values = frame, frame.shape, {}
    if key not in _LOCAL.values:
        _LOCAL.values[key] = compute()
    return _LOCAL.values[key]


def _windows(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """run_key -> validation loss per window index (``window`` rows at the training length)."""
    import pandas as pd

    if "window_index" not in frame.columns:
        return {}
    w = frame.loc[frame["row_kind"] == "window", ["run_key", "window_index", "val_loss_nats", "eval_seq_len_tokens",
                                                   "train_seq_len_tokens"]]
    w = w[w["eval_seq_len_tokens"].astype(float) == w["train_seq_len_tokens"].astype(float)]
    out = {}
    for k, g in w.groupby("run_key", sort=False):
        out[str(k)] = pd.Series(g["val_loss_nats"].to_numpy(dtype=float, na_value=math.nan),
                                index=g["window_index"].to_numpy(dtype=int)).groupby(level=0).first()
    return out


def _window_matrix(frame: pd.DataFrame, runs: pd.DataFrame) -> tuple[Any, list[int]]:
    """``(seeds, windows)`` validation losses of ``runs`` (one per seed) from their ``window`` rows at the
    training length (the windows common to every seed); ``(seeds, 1)`` final losses when no window rows."""
    import numpy as np

    runs = runs.sort_values("seed")
    seeds = [int(s) for s in runs["seed"]]
    per = _cached(frame, "windows", lambda: _windows(frame))
    keys = [str(k) for k in runs["run_key"]]
    if keys and all(k in per for k in keys):
        common = sorted(set.intersection(*(set(per[k].index) for k in keys)))
        if common:
            return np.array([per[k].loc[common].to_numpy() for k in keys]), seeds
    return runs["val_loss_nats"].to_numpy(dtype=float)[:, None], seeds


def points_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Every (size, budget, learning rate) of the probe: seed-mean final validation loss with its 95% bootstrap
    interval (seeds x windows, ``stats.bootstrap_mean``), parameters (total and non-embedding), training tokens
    and tokens per parameter, and ``role``: ``best lr`` (the rate with the lowest seed-mean loss at that size and
    budget: the point's result) or ``lr sweep``. ``lr_at_edge``: the best rate is the smallest or largest swept."""
    return _cached(frame, "points_table", lambda: _points_table_uncached(frame)).copy()


def _points_table_uncached(frame: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd
    from xtlens.profiling.benefit.stats import bootstrap_mean

    fin = _finals(frame)
    cols = ["axis", "axis_value", "budget_kind", "budget", "peak_lr", "role", "lr_at_edge", "seeds", "num_params",
            "non_embedding_params", "train_tokens", "train_flops", "tokens_per_param",
            "tokens_per_non_embedding_param", "val_loss_nats", "ci95_low", "ci95_high", "windows",
            "unigram_entropy_nats", "learned", "diverged", "config_name"]
    if fin.empty:
        return pd.DataFrame(columns=cols)
    out = []
    for (axis, v, kind, budget, lr), g in fin.groupby(["axis", "axis_value", "budget_kind", "budget", "peak_lr"],
                                                    dropna=False):
        ok = g[g["status"] == "ok"].drop_duplicates("seed")
        iv = None
        windows = None
        if len(ok) and ok["val_loss_nats"].notna().all():
            mat, _ = _window_matrix(frame, ok)
            windows = int(mat.shape[1])
            iv = bootstrap_mean(mat)
        uni = pd.to_numeric(g["unigram_entropy_nats"], errors="coerce").dropna()
        mean = float(ok["val_loss_nats"].mean()) if len(ok) else math.nan
        first = g.iloc[0]
        out.append({"axis": axis, "axis_value": int(v), "budget_kind": kind, "budget": budget, "peak_lr": lr,
                    "seeds": len(ok), "num_params": first["num_params"],
                    "non_embedding_params": first["non_embedding_params"],
                    "train_tokens": float(ok["train_tokens"].mean()) if len(ok) else math.nan,
                    "train_flops": float(pd.to_numeric(ok["train_flops"]).mean()) if len(ok) else math.nan,
                    "tokens_per_param": float(ok["tokens_per_param"].mean()) if len(ok) else math.nan,
                    "tokens_per_non_embedding_param": float(ok["tokens_per_non_embedding_param"].mean())
                    if len(ok) else math.nan,
                    "val_loss_nats": iv.estimate if iv is not None else mean,
                    "ci95_low": iv.low if iv is not None else math.nan,
                    "ci95_high": iv.high if iv is not None else math.nan, "windows": windows,
                    "unigram_entropy_nats": float(uni.iloc[0]) if len(uni) else math.nan,
                    "learned": bool(len(uni) and len(ok) and mean < float(uni.iloc[0])),
                    "diverged": int((g["status"] == "diverged").sum()),
                    "config_name": str(first["config_name"]).split(", lr")[0]})
    t = pd.DataFrame(out)
    t["role"] = "lr sweep"
    t["lr_at_edge"] = False
    # a rate where a seed diverged or failed cannot be the best: its mean is taken as +inf
    score = t["val_loss_nats"].where((t["diverged"] == 0) & (t["seeds"] > 0), math.inf)
    for _, g in t.assign(_score=score).groupby(["axis", "axis_value", "budget_kind", "budget"], dropna=False):
        if g["_score"].notna().any() and math.isfinite(g["_score"].min()):
            best = g["_score"].idxmin()
            t.loc[best, "role"] = "best lr"
            lrs = g["peak_lr"].dropna()
            t.loc[best, "lr_at_edge"] = bool(len(lrs) > 1 and t.loc[best, "peak_lr"] in (lrs.min(), lrs.max()))
    t.loc[t["budget_kind"] == "epochs", "role"] = "over-fitting check"
    return t[cols].sort_values(["budget_kind", "budget", "axis_value", "peak_lr"]).reset_index(drop=True)


def best_lr_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The final rows (one per seed) of each point's best learning rate (``points_table``'s ``best lr``)."""
    return _cached(frame, "best_lr_rows", lambda: _best_lr_rows_uncached(frame)).copy()


def _best_lr_rows_uncached(frame: pd.DataFrame) -> pd.DataFrame:
    fin = _finals(frame)
    pts = points_table(frame)
    best = pts[pts["role"] == "best lr"][["axis_value", "budget_kind", "budget", "peak_lr"]]
    if fin.empty or best.empty:
        return fin.iloc[0:0]
    rows = fin.merge(best, on=["axis_value", "budget_kind", "budget", "peak_lr"], how="inner")
    return rows[rows["status"] == "ok"].drop_duplicates(["axis_value", "budget_kind", "budget", "seed"])


def lr_sweep_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Seed-mean validation loss per size (rows) and learning rate (columns) at each budget: the sweep."""
    pts = points_table(frame)
    pts = pts[pts["budget_kind"] != "epochs"]
    if pts.empty:
        return pts
    t = pts.pivot_table(index=["budget_kind", "budget", "axis_value"], columns="peak_lr", values="val_loss_nats")
    t.columns = [f"val loss @ {lr_label(c)} (nats/token)" for c in t.columns]
    best = pts[pts["role"] == "best lr"].set_index(["budget_kind", "budget", "axis_value"])
    t["best lr"] = best["peak_lr"]
    t["best lr at the sweep's edge"] = best["lr_at_edge"]
    return t.reset_index()


def equal_token_points(frame: pd.DataFrame) -> pd.DataFrame:
    """The best-lr final rows at the main budget (every size at equal tokens), one per seed."""
    rows = best_lr_rows(frame)
    kinds = rows["budget_kind"]
    main = "tokens" if (kinds == "tokens").any() else "flops"
    rows = rows[kinds == main]
    if main == "flops" and rows["budget"].nunique() > 1:  # --train-flops: the main budget is the given one
        rows = rows[rows["budget"] == rows["budget"].mode().iloc[0]]
    return rows.sort_values(["axis_value", "seed"])


def _law_fit(rows: pd.DataFrame, *, joint: bool):
    from xtlens.profiling.benefit.stats import bootstrap_law

    n = rows["non_embedding_params"].astype(float).to_numpy()
    loss = rows["val_loss_nats"].astype(float).to_numpy()
    seeds = rows["seed"].astype(int).to_numpy()
    d = rows["train_tokens"].astype(float).to_numpy() if joint else None
    return bootstrap_law(n, loss, seeds, d=d)


def laws(frame: pd.DataFrame) -> dict[str, Any]:
    """``{"power": LawFit | None, "joint": LawFit | None}``: ``E + A N^-alpha`` on the equal-token points and
    ``E + A/N^a + B/D^b`` on every best-lr point (both N and D vary there), N = non-embedding parameters."""
    return _cached(frame, "laws", lambda: _laws_uncached(frame))


def _laws_uncached(frame: pd.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {"power": None, "joint": None}
    eq = equal_token_points(frame)
    if eq["axis_value"].nunique() >= 2:
        out["power"] = _law_fit(eq, joint=False)
    rows = best_lr_rows(frame)
    rows = rows[rows["budget_kind"].isin(["tokens", "flops"])]
    # a run shared by an equal-token and an equal-FLOP point (the same steps) is one observation
    rows = rows.sort_values("budget_kind", ascending=False).drop_duplicates(
        ["non_embedding_params", "train_tokens", "seed"])
    if len(rows) and rows["train_tokens"].nunique() > 1 and rows["axis_value"].nunique() > 1:
        out["joint"] = _law_fit(rows, joint=True)
    return out


def law_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The fitted laws: ``E``, ``alpha`` with their seed-bootstrap 95% intervals, ``A`` (and ``B``, ``beta`` for
    the joint law), the points fitted, and why a law is not identifiable when it is not."""
    import pandas as pd

    rows = []
    for kind, fit in laws(frame).items():
        if fit is None:
            continue
        law = fit.law
        rows.append({"law": "L = E + A N^-alpha (equal tokens)" if kind == "power" else
                     "L = E + A/N^alpha + B/D^beta (all best-lr points)", "points": law.points,
                     "identifiable": law.identifiable,
                     "E_nats": law.E if law.identifiable else None,
                     "E_ci95_low": fit.E.low if fit.E is not None else None,
                     "E_ci95_high": fit.E.high if fit.E is not None else None,
                     "alpha": law.alpha if law.identifiable else None,
                     "alpha_ci95_low": fit.alpha.low if fit.alpha is not None else None,
                     "alpha_ci95_high": fit.alpha.high if fit.alpha is not None else None,
                     "A": law.A if law.identifiable else None, "B": law.B if law.identifiable else None,
                     "beta": law.beta if law.identifiable else None, "bootstrap_reps": fit.reps,
                     "reason": law.reason, "method": METHOD})
    return pd.DataFrame(rows)


def isoflop_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per training-FLOP budget (Hoffmann et al. 2022, approach 2): the sizes run (best lr each), the lowest
    seed-mean loss seen, and the fitted compute-optimal non-embedding size (``stats.isoflop_fit``, i.e.
    ``isoflop_minimum`` with its reason: the minimum of a parabola of loss in log10 N, seed-bootstrap 95%
    interval), or why it is not identifiable."""
    import pandas as pd
    from xtlens.profiling.benefit.stats import isoflop_fit

    rows = best_lr_rows(frame)
    rows = rows[rows["budget_kind"] == "flops"]
    out = []
    for budget, g in rows.groupby("budget"):
        mean = g.groupby("axis_value")["val_loss_nats"].mean()
        n_of = g.groupby("axis_value")["non_embedding_params"].first().astype(float)
        fit = isoflop_fit(g["non_embedding_params"].astype(float).to_numpy(),
                          g["val_loss_nats"].astype(float).to_numpy(), g["seed"].astype(int).to_numpy())
        iv = fit.minimum
        best_v = int(mean.idxmin())
        out.append({"budget_flops": int(budget), "sizes": ", ".join(str(int(v)) for v in mean.index),
                    "seeds": int(g["seed"].nunique()), "lowest_loss_size": best_v,
                    "lowest_loss_nats": float(mean.min()),
                    "lowest_at_edge": best_v in (mean.index.min(), mean.index.max()),
                    "n_opt_non_embedding": 10 ** iv.estimate if iv is not None else None,
                    "n_opt_ci95_low": 10 ** iv.low if iv is not None else None,
                    "n_opt_ci95_high": 10 ** iv.high if iv is not None else None,
                    "n_opt_smallest_sampled": float(n_of.min()), "n_opt_largest_sampled": float(n_of.max()),
                    "identifiable": iv is not None,
                    "note": fit.reason})
    return pd.DataFrame(out)


# --- claims -----------------------------------------------------------------------------------------

SEED_EXPONENT = 0.15  # the seed analysis's fitted exponent: loss ~ N^-0.15 (total parameters, no irreducible term)
EXPONENT_MARGIN = 0.05  # "the exponent is 0.15" holds when alpha's interval lies within 0.15 +- this
NEAR_OPTIMAL_FACTOR = 2.0  # "near the compute-optimal size": within this factor of the fitted optimum


def scale_of(rows: pd.DataFrame) -> dict[str, Any]:
    from xtlens.profiling.benefit.claims import scale_line

    n = rows["num_params"].dropna().astype(int)
    ne = rows["non_embedding_params"].dropna().astype(int)
    tok = rows["train_tokens"].dropna()
    return {"num_params": int(n.max()) if len(n) else None,
            "non_embedding_params": int(ne.max()) if len(ne) else None,
            "train_tokens": int(tok.max()) if len(tok) else None,
            "tokens_per_param": float(rows["tokens_per_param"].min()) if len(rows) else None,
            "corpus": str(rows["corpus_name"].dropna().iloc[0]) if rows["corpus_name"].notna().any() else "",
            "scale": scale_line(rows)}


def _learned(rows: pd.DataFrame) -> bool:
    from xtlens.profiling.benefit.claims import learned

    return bool(learned(rows))


def _arm(eq: pd.DataFrame, v: int) -> pd.DataFrame:
    return eq[eq["axis_value"] == v].drop_duplicates("seed").sort_values("seed")


def claims(frame: pd.DataFrame) -> list[Claim]:
    """The seed analysis's scaling claims, each a ``claims.Claim`` with its verdict from a 95% interval:

    * "a larger <axis> gives a lower loss at equal tokens": widest minus narrowest size, and the current size minus
      the next smaller one (paired per validation window, seeds resampled: ``stats.paired_difference``);
    * "at equal training FLOPs the current <axis> is near the compute-optimal size": per IsoFLOP budget, log10 of
      the fitted optimum over the current size's non-embedding parameters, "near" = within a factor 2;
    * "loss follows a power law in parameters with exponent 0.15": alpha of ``E + A N^-alpha`` minus 0.15.

    A claim over runs that end above the unigram line is ``not_learned``."""
    from xtlens.profiling.benefit.claims import Claim
    from xtlens.profiling.benefit.stats import min_detectable_effect, paired_difference, verdict

    eq = equal_token_points(frame)
    if eq.empty:
        return []
    axis = str(eq["axis"].iloc[0])
    sizes = sorted(int(v) for v in eq["axis_value"].unique())
    current = _current(frame)
    out: list[Claim] = []
    budget_kind = str(eq["budget_kind"].iloc[0])
    budget_word = "tokens" if budget_kind == "tokens" else "training FLOPs"

    def diff_claim(big: int, small: int, text: str) -> None:
        a, b = _arm(eq, big), _arm(eq, small)
        common = sorted(set(a["seed"]) & set(b["seed"]))
        a, b = a[a["seed"].isin(common)], b[b["seed"].isin(common)]
        both = eq[eq["axis_value"].isin([big, small])]
        ma, _ = _window_matrix(frame, a)
        mb, _ = _window_matrix(frame, b)
        iv = paired_difference(ma, mb) if len(common) and ma.shape == mb.shape else None
        mde = min_detectable_effect(iv.se) if iv is not None else None
        lr_a, lr_b = a["peak_lr"].iloc[0] if len(a) else None, b["peak_lr"].iloc[0] if len(b) else None
        out.append(Claim(
            probe="scaling", claim=text,
            metric=f"val loss at {axis}={big} minus at {axis}={small}, equal {budget_word}, best lr each "
                   f"({lr_a:.3g} / {lr_b:.3g})" if lr_a and lr_b else f"val loss at {axis}={big} minus {axis}={small}",
            unit="nats/token", estimate=iv.estimate if iv else None, ci95_low=iv.low if iv else None,
            ci95_high=iv.high if iv else None, seeds=len(common), windows=int(ma.shape[1]) if iv else None,
            min_detectable_effect=mde,
            verdict=verdict(iv, expected_sign=-1, mde=mde, learned=_learned(both)) if iv is not None else (
                "not_learned" if not _learned(both) else "not_detectable"),
            **scale_of(both), method=f"{METHOD}; {iv.method if iv else 'no paired runs'}",
            note="negative = the larger size is better"))

    if len(sizes) >= 2:
        diff_claim(sizes[-1], sizes[0], f"a larger {axis} gives a lower validation loss at equal {budget_word} "
                   "('better representation')")
        if current in sizes and sizes.index(current) > 0 and (current, sizes[sizes.index(current) - 1]) != (
                sizes[-1], sizes[0]):
            smaller = sizes[sizes.index(current) - 1]
            diff_claim(current, smaller, f"the current {axis} ({current}) beats the next smaller ({smaller}) at "
                       f"equal {budget_word}")

    # the power law and the seed's exponent
    fit = laws(frame)["power"]
    if fit is not None:
        rows = eq
        iv = fit.alpha
        if fit.law.identifiable and iv is not None:
            from dataclasses import replace as dc_replace

            shifted = dc_replace(iv, estimate=iv.estimate - SEED_EXPONENT, low=iv.low - SEED_EXPONENT,
                                 high=iv.high - SEED_EXPONENT)
            v = verdict(shifted, expected_sign=0, mde=None, learned=_learned(rows), margin=EXPONENT_MARGIN)
            est, lo, hi = iv.estimate, iv.low, iv.high
            note = (f"E = {fit.law.E:.3g} nats (95% {fit.E.low:.3g}..{fit.E.high:.3g})" if fit.E is not None else
                    f"E = {fit.law.E:.3g} nats") + f"; supported iff alpha's interval lies in 0.15 +- {EXPONENT_MARGIN}"
        else:
            v = "not_learned" if not _learned(rows) else "not_detectable"
            est = lo = hi = None
            note = f"law not identifiable: {fit.law.reason}"
        out.append(Claim(
            probe="scaling", claim=f"validation loss follows a power law in parameters with exponent {SEED_EXPONENT} "
                                   f"(seed analysis: loss ~ N^-{SEED_EXPONENT}, total parameters, no irreducible term)",
            metric=f"alpha of L = E + A N^-alpha, N = non-embedding parameters, equal {budget_word}, best lr per size",
            unit="exponent (dimensionless)", estimate=est, ci95_low=lo, ci95_high=hi,
            seeds=int(rows["seed"].nunique()), windows=None, min_detectable_effect=None, verdict=v, **scale_of(rows),
            method=f"{METHOD}; seed bootstrap ({fit.reps} reps) of the fit", note=note))

    # IsoFLOP: is the current size near the compute-optimal one?
    best = best_lr_rows(frame)
    iso = best[best["budget_kind"] == "flops"]
    if current is not None and not iso.empty and budget_kind == "tokens":
        from xtlens.profiling.benefit.stats import isoflop_fit

        for budget, g in iso.groupby("budget"):
            if current not in set(g["axis_value"]):
                continue
            n_cur = float(g.loc[g["axis_value"] == current, "non_embedding_params"].iloc[0])
            fit = isoflop_fit(g["non_embedding_params"].astype(float).to_numpy(),
                              g["val_loss_nats"].astype(float).to_numpy(), g["seed"].astype(int).to_numpy())
            iv = fit.minimum
            margin = math.log10(NEAR_OPTIMAL_FACTOR)
            if iv is not None:
                from dataclasses import replace as dc_replace

                rel = dc_replace(iv, estimate=iv.estimate - math.log10(n_cur), low=iv.low - math.log10(n_cur),
                                 high=iv.high - math.log10(n_cur))
                v = verdict(rel, expected_sign=0, mde=None, learned=_learned(g), margin=margin)
                est, lo, hi, note = rel.estimate, rel.low, rel.high, (
                    f"fitted optimum {10 ** iv.estimate:,.0f} non-embedding parameters "
                    f"(95% {10 ** iv.low:,.0f}..{10 ** iv.high:,.0f}); current {n_cur:,.0f}")
            else:
                mean = g.groupby("axis_value")["val_loss_nats"].mean()
                v = "not_learned" if not _learned(g) else "not_detectable"
                est = lo = hi = None
                note = (f"no fitted minimum: {fit.reason} (lowest seed-mean loss at {axis}={int(mean.idxmin())} of "
                        f"{', '.join(str(int(x)) for x in mean.index)})")
            out.append(Claim(
                probe="scaling", claim=f"at equal training FLOPs the current {axis} ({current}) is near the "
                                       f"compute-optimal size (budget {int(budget):.3g} FLOPs)",
                metric="log10(fitted compute-optimal N / current N), N = non-embedding parameters, best lr per size",
                unit="log10 (dimensionless)", estimate=est, ci95_low=lo, ci95_high=hi,
                seeds=int(g["seed"].nunique()), windows=None, min_detectable_effect=None, verdict=v, **scale_of(g),
                method=f"Hoffmann et al. 2022 approach 2 (IsoFLOP parabola in log N), seed bootstrap; "
                       f"'near' = within a factor {NEAR_OPTIMAL_FACTOR:g}", note=note))
    return out


def _current(frame: pd.DataFrame) -> int | None:
    sc = frame[(frame["probe"] == "scaling") & frame["config_name"].astype(str).str.contains("(current)",
                                                                                            regex=False)]
    return int(sc["axis_value"].dropna().iloc[0]) if len(sc) and sc["axis_value"].notna().any() else None
