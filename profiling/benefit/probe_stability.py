"""The stability probe, as DeepNet states it (Wang et al. 2022, "DeepNet: Scaling Transformers to 1,000 Layers").

DeepNet's claim is about trainability: deep post-norm Transformers diverge (or never leave the start of training)
at learning rates where DeepNorm (post-norm with the residual scale ``alpha`` and the scaled initialisation
``beta``) and pre-norm still train. So the probe sweeps the learning rate with gradient clipping OFF
(``TrainSettings(grad_clip=None)``: clipping would hide the instability DeepNet is about) for each norm scheme

* ``deepnorm``: the seed's DeepNorm, as x-transformers 1.19.1 built it (``core.builder``),
* ``pre_norm``: x-transformers' default (a norm before each block),
* ``post_norm``: plain post-norm (``probes.build_post_norm``: ``pre_norm=False``, no residual scale, default init),

at each depth in ``values`` and each seed, and reports per (norm, depth):

* the **largest stable learning rate**: the largest swept peak learning rate at which every seed *trains*:
  the run neither diverged (the harness's rule: a non-finite loss or gradient, or a training loss more than
  ``diverge_nats`` above ``max(ln V, first loss)``; a ``diverged`` row, never a crash) nor ended at or above the
  unigram line (``unigram_entropy_nats``: the validation cross-entropy of a unigram fitted on training, what a
  model that learned nothing from context reaches). A run stuck on the unigram plateau is post-norm's usual
  failure at this scale (it does not blow up, it stops learning), so "stable" here means "trains";
* the **gradient ratio**: the gradient norm of the first block (``layers.0``) over that of the last block, at
  initialisation (before any update: the same for every learning rate of a seed) and at the last evaluation
  step, as a geometric mean over seeds with a seed-bootstrap interval (``stats.bootstrap_mean`` of log10 ratios);
* the **plateau**: the first evaluation step at which validation loss went below the unigram line, per run.
  The old default (60 steps, one lr, clipping on) never left the plateau (every run ended at 5.18-5.26 nats,
  unigram 5.22). Measured on the default corpus (dim 32, 8 x 64-token batches, clipping off, 1 thread): with a
  150-step schedule, depth 2 at lr 3e-2 crosses the unigram line by step 30 (3.6-3.8 nats at step 150), depth 8 at
  lr 3e-3 by step 45-60 (4.8-4.9 nats), DeepNorm at depth 8 and lr 1e-2 by step 45 (4.2), while post-norm at depth 8
  and lr >= 1e-2 stays on the plateau (5.23-5.24) for all 150 steps; at depth 24 nothing crossed it within 150
  steps at lr 1e-2 or 3e-2 (pre-norm barely, after 105). Hence the default: depths 2 and 8, 128 steps, lr 3e-3 to
  1e-1 in half-decades, 3 seeds (about 7 minutes with 1 thread on an idle core).

Claims (``claims``): per deep depth D, "DeepNorm allows a larger stable lr than post-norm" and "pre-norm allows
a larger stable lr than post-norm" (the difference of log10 largest stable lr, per seed, bootstrapped over
seeds; a grid quantity: a seed with no stable lr counts one grid step below the smallest, a seed stable at the
largest lr counts at it, a lower bound: both said in the note), and the seed analysis's "DeepNorm holds the
first/last gradient ratio steady across depth" (log10 ratio at the deepest minus the shallowest depth, at
initialisation, paired by seed; "no difference" within a factor of 2: margin log10 2).
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from xtlens.profiling.benefit.claims import Claim
    from xtlens.profiling.benefit.harness import RunSpec
    from xtlens.profiling.benefit.probe_options import ProbeOptions

__all__ = ["NORMS", "LRS", "RATIO_MARGIN_LOG10", "plan", "run_outcomes", "largest_stable_lr", "per_seed_largest",
           "grad_ratios", "grad_ratio_table", "stability_table", "claims", "peak_lrs"]

NORMS = ("deepnorm", "pre_norm", "post_norm")
#: the default learning-rate sweep (peak learning rates, half-decade steps)
LRS = (1e-3, 3e-3, 1e-2, 3e-2)
#: "the gradient ratio holds steady across depth": within a factor of 2 (log10 2)
RATIO_MARGIN_LOG10 = math.log10(2.0)
_LR_IN_NAME = re.compile(r"lr ([0-9.]+(?:e[-+]?[0-9]+)?)")


def _lrs(opt: ProbeOptions) -> tuple[float, ...]:
    from xtlens.profiling.benefit.probe_options import ProbeInputError

    if opt.lr is not None:
        lrs: Any = (opt.lr,)
    else:
        lrs = opt.extra.get("lrs", opt.default("lrs"))
    lrs = tuple(sorted({float(v) for v in lrs}))
    if not lrs or any(not (0 < v <= 10) or not math.isfinite(v) for v in lrs):
        raise ProbeInputError("--lr", lrs, "peak learning rates above 0 and at most 10")
    return lrs


def plan(opt: ProbeOptions) -> list[RunSpec]:
    """Seeds x depths x norms x learning rates, clipping off, ``axis="depth"``, ``variant`` = the norm."""
    from xtlens.profiling.benefit.harness import RunSpec
    from xtlens.profiling.benefit.probe_options import budget_for, member, train_settings

    depths = sorted(set(opt.values or opt.default("values")))
    lrs = _lrs(opt)
    runs = []
    for seed in opt.seed_list:
        for depth in depths:
            for lr in lrs:
                s = train_settings(opt, lr=lr, grad_clip=None)
                base = member(opt, s, depth=depth)
                budget = budget_for(opt, base, s)
                for norm in NORMS:
                    cfg = replace(base, deepnorm=norm == "deepnorm")
                    runs.append(RunSpec(probe="stability", cfg=cfg, budget=budget, seed=seed, settings=s,
                                        variant=norm, axis="depth", axis_value=depth,
                                        config_name=f"{norm}, depth {depth}, lr {lr:g}",
                                        build="post_norm" if norm == "post_norm" else "builder"))
    return runs


# --- tables -------------------------------------------------------------------------------------------

def peak_lrs(frame: pd.DataFrame) -> pd.Series:
    """Each row's peak learning rate: ``peak_lr`` where the harness wrote it, else read from ``config_name``."""
    parsed = frame["config_name"].astype("string").str.extract(_LR_IN_NAME, expand=False).astype(float)
    if "peak_lr" in frame.columns:
        return frame["peak_lr"].astype("Float64").astype(float).fillna(parsed)
    return parsed


def _stab(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["probe"] == "stability"]


def run_outcomes(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run: ``norm``, ``depth``, ``lr``, ``seed``, ``status``, ``outcome`` (``trained``: ended below the
    unigram line; ``not_learned``: ended at or above it; ``diverged``; ``error`` for a run that failed otherwise),
    ``final_val_loss_nats``, ``unigram_entropy_nats``, ``steps_done``, ``steps_total``, ``first_step_below_unigram``
    (None if never), ``num_params``."""
    from xtlens.profiling.benefit.analysis import final_evals

    st = _stab(frame)
    cols = ["norm", "depth", "lr", "seed", "status", "outcome", "final_val_loss_nats", "unigram_entropy_nats",
            "steps_done", "steps_total", "first_step_below_unigram", "num_params", "error"]
    if st.empty:
        return pd.DataFrame(columns=cols)
    fin = final_evals(st).copy()
    fin["lr"] = peak_lrs(fin)
    ev = st[(st["row_kind"] == "eval") & (st["status"] == "ok")].copy()
    ev["lr"] = peak_lrs(ev)
    ev["_v"] = ev["val_loss_nats"].astype("Float64").astype(float)
    ev["_u"] = ev["unigram_entropy_nats"].astype("Float64").astype(float)
    below = ev[(ev["_v"] < ev["_u"]) & (ev["step"].astype("Int64") > 0)]
    first = below.groupby(["variant", "axis_value", "lr", "seed"])["step"].min()
    out = []
    for _, r in fin.iterrows():
        loss = None if pd.isna(r["val_loss_nats"]) else float(r["val_loss_nats"])
        uni = None if pd.isna(r["unigram_entropy_nats"]) else float(r["unigram_entropy_nats"])
        if r["status"] == "diverged":
            outcome = "diverged"
        elif r["status"] != "ok" or loss is None:
            outcome = "error"
        elif uni is not None and loss < uni:
            outcome = "trained"
        else:
            outcome = "not_learned"
        key = (r["variant"], r["axis_value"], r["lr"], r["seed"])
        fs = first.get(key)
        out.append({"norm": r["variant"], "depth": None if pd.isna(r["axis_value"]) else int(r["axis_value"]),
                    "lr": r["lr"], "seed": int(r["seed"]), "status": r["status"], "outcome": outcome,
                    "final_val_loss_nats": loss, "unigram_entropy_nats": uni,
                    "steps_done": None if pd.isna(r["step"]) else int(r["step"]),
                    "steps_total": None if pd.isna(r["steps_total"]) else int(r["steps_total"]),
                    "first_step_below_unigram": None if fs is None or pd.isna(fs) else int(fs),
                    "num_params": None if pd.isna(r["num_params"]) else int(r["num_params"]),
                    "error": None if pd.isna(r["error"]) else str(r["error"])})
    return pd.DataFrame(out, columns=cols).sort_values(["norm", "depth", "lr", "seed"]).reset_index(drop=True)


def largest_stable_lr(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Per (norm, depth): ``largest_stable_lr`` (the largest swept lr at which every seed trained; None if none),
    ``lrs_swept``, ``seeds``, and per outcome the lrs where any seed ``diverged`` / ended ``not_learned``."""
    rows = []
    for (norm, depth), g in outcomes.groupby(["norm", "depth"], sort=True):
        per_lr = g.groupby("lr")["outcome"].agg(list)
        stable = [lr for lr, outs in per_lr.items() if all(o == "trained" for o in outs)]
        rows.append({"norm": norm, "depth": int(depth),
                     "largest_stable_lr": max(stable) if stable else None,
                     "lrs_swept": ", ".join(f"{v:g}" for v in sorted(per_lr.index)),
                     "diverged_at_lrs": ", ".join(f"{v:g}" for v, outs in per_lr.items() if "diverged" in outs),
                     "not_learned_at_lrs": ", ".join(f"{v:g}" for v, outs in per_lr.items() if "not_learned" in outs),
                     "runs": int(len(g)), "diverged_runs": int((g["outcome"] == "diverged").sum()),
                     "seeds": int(g["seed"].nunique())})
    return pd.DataFrame(rows, columns=["norm", "depth", "largest_stable_lr", "lrs_swept", "diverged_at_lrs",
                                       "not_learned_at_lrs", "runs", "diverged_runs", "seeds"])


def per_seed_largest(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Per (norm, depth, seed): the largest lr that seed trained at (``log10_lr``), censored on the grid: no stable
    lr -> one grid step below the smallest (``censored="below"``); stable at the largest -> ``"at_top"``."""
    rows = []
    for (norm, depth, seed), g in outcomes.groupby(["norm", "depth", "seed"], sort=True):
        grid = sorted(outcomes.loc[(outcomes["norm"] == norm) & (outcomes["depth"] == depth), "lr"].unique())
        ok = sorted(g.loc[g["outcome"] == "trained", "lr"])
        logs = np.log10(grid)
        step = float(np.diff(logs).mean()) if len(logs) > 1 else 0.5
        if ok:
            v, cens = math.log10(ok[-1]), ("at_top" if ok[-1] == grid[-1] else "")
        else:
            v, cens = float(logs[0]) - step, "below"
        rows.append({"norm": norm, "depth": int(depth), "seed": int(seed), "log10_lr": v, "censored": cens})
    return pd.DataFrame(rows, columns=["norm", "depth", "seed", "log10_lr", "censored"])


def _layer_index(name: str) -> int | None:
    m = re.match(r"layers\.(\d+) ", str(name))
    return int(m.group(1)) if m else None


def grad_ratios(frame: pd.DataFrame) -> pd.DataFrame:
    """Per run and moment (``when`` = ``init``: step 0, before any update; ``final``: the last evaluation step):
    ``first_grad_norm`` (block ``layers.0``), ``last_grad_norm`` (the last block) and ``ratio`` = first / last."""
    st = _stab(frame)
    lay = st[(st["row_kind"] == "layer") & (st["status"] == "ok")].copy()
    cols = ["norm", "depth", "lr", "seed", "when", "step", "first_grad_norm", "last_grad_norm", "ratio"]
    if lay.empty:
        return pd.DataFrame(columns=cols)
    lay["lr"] = peak_lrs(lay)
    lay["_i"] = lay["layer"].map(_layer_index)
    lay = lay[lay["_i"].notna()]
    out = []
    for (norm, depth, lr, seed, _rk), g in lay.groupby(["variant", "axis_value", "lr", "seed", "run_key"], sort=True):
        steps = sorted(int(s) for s in g["step"].dropna().unique())
        for when, step in (("init", steps[0]), ("final", steps[-1])):
            if when == "final" and step == 0:
                continue
            at = g[g["step"] == step]
            first = at.loc[at["_i"] == at["_i"].min(), "grad_norm"].astype(float).iloc[0]
            last = at.loc[at["_i"] == at["_i"].max(), "grad_norm"].astype(float).iloc[0]
            out.append({"norm": norm, "depth": int(depth), "lr": lr, "seed": int(seed), "when": when, "step": step,
                        "first_grad_norm": first, "last_grad_norm": last,
                        "ratio": first / last if last > 0 else float("nan")})
    return pd.DataFrame(out, columns=cols).drop_duplicates(["norm", "depth", "lr", "seed", "when"])


def _log_interval(values: np.ndarray) -> Any:
    from xtlens.profiling.benefit.stats import bootstrap_mean

    return bootstrap_mean(np.asarray(values, dtype=float).reshape(-1, 1))


def grad_ratio_table(ratios: pd.DataFrame) -> pd.DataFrame:
    """Per (norm, depth, when[, lr]): geometric mean of ``ratio`` over seeds with its 95% seed-bootstrap interval
    (``ratio``, ``ratio_ci95_low``, ``ratio_ci95_high``). At ``init`` the learning rate plays no part (one row per
    seed); at ``final`` one row per lr."""
    rows = []
    r = ratios[np.isfinite(ratios["ratio"].astype(float)) & (ratios["ratio"].astype(float) > 0)]
    init = r[r["when"] == "init"].drop_duplicates(["norm", "depth", "seed"]).assign(lr=float("nan"))
    for (norm, depth, when, lr), g in pd.concat([init, r[r["when"] == "final"]]).groupby(
            ["norm", "depth", "when", "lr"], sort=True, dropna=False):
        iv = _log_interval(np.log10(g["ratio"].astype(float).to_numpy()))
        rows.append({"norm": norm, "depth": int(depth), "when": when, "lr": None if pd.isna(lr) else float(lr),
                     "ratio": 10 ** iv.estimate, "ratio_ci95_low": 10 ** iv.low, "ratio_ci95_high": 10 ** iv.high,
                     "seeds": int(g["seed"].nunique())})
    return pd.DataFrame(rows, columns=["norm", "depth", "when", "lr", "ratio", "ratio_ci95_low", "ratio_ci95_high",
                                       "seeds"])


def stability_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The probe's summary per (norm, depth): largest stable lr, divergences, the gradient ratio at initialisation
    (with interval), and the mean first step below the unigram line at the largest stable lr."""
    out = run_outcomes(frame)
    if out.empty:
        return pd.DataFrame()
    table = largest_stable_lr(out)
    gr = grad_ratio_table(grad_ratios(frame))
    init = gr[gr["when"] == "init"][["norm", "depth", "ratio", "ratio_ci95_low", "ratio_ci95_high"]].rename(
        columns={"ratio": "init_grad_ratio", "ratio_ci95_low": "init_grad_ratio_ci95_low",
                 "ratio_ci95_high": "init_grad_ratio_ci95_high"})
    table = table.merge(init, on=["norm", "depth"], how="left")
    steps, losses = [], []
    for _, t in table.iterrows():
        at = out[(out["norm"] == t["norm"]) & (out["depth"] == t["depth"]) & (out["lr"] == t["largest_stable_lr"])]
        fs = at["first_step_below_unigram"].dropna()
        steps.append(float(fs.mean()) if len(fs) else None)
        losses.append(float(at["final_val_loss_nats"].mean()) if len(at) else None)
    table["first_step_below_unigram"] = steps
    table["val_loss_nats_at_largest_stable_lr"] = losses
    table["unigram_entropy_nats"] = float(out["unigram_entropy_nats"].dropna().iloc[0]) \
        if out["unigram_entropy_nats"].notna().any() else None
    return table


# --- claims -------------------------------------------------------------------------------------------

def scale_of(frame: pd.DataFrame) -> dict[str, Any]:
    from xtlens.profiling.benefit.claims import scale_line

    ev = frame[frame["row_kind"] == "eval"]
    n = ev["num_params"].dropna().astype(int)
    ne = ev["non_embedding_params"].dropna().astype(int) if "non_embedding_params" in ev else pd.Series(dtype=int)
    tok = ev["budget_tokens"].dropna().astype(int)
    corpus = str(ev["corpus_name"].dropna().iloc[0]) if ev["corpus_name"].notna().any() else ""
    return {"num_params": int(n.max()) if len(n) else None,
            "non_embedding_params": int(ne.max()) if len(ne) else None,
            "train_tokens": int(tok.max()) if len(tok) else None,
            "tokens_per_param": float(tok.max() / n.max()) if len(tok) and len(n) else None,
            "corpus": corpus, "scale": scale_line(frame)}


def claims(frame: pd.DataFrame) -> list[Claim]:
    """The stability claims (see the module docstring) with verdicts from seed-bootstrap intervals."""
    from xtlens.profiling.benefit.claims import Claim
    from xtlens.profiling.benefit.stats import min_detectable_effect, verdict

    st = _stab(frame)
    out = run_outcomes(st)
    if out.empty:
        return []
    sc = scale_of(st)
    learned_any = bool((out["outcome"] == "trained").any())
    per_seed = per_seed_largest(out)
    depths = sorted(out["depth"].dropna().unique())
    result: list[Claim] = []
    deep = int(depths[-1])
    for better in ("deepnorm", "pre_norm"):
        a = per_seed[(per_seed["norm"] == better) & (per_seed["depth"] == deep)].set_index("seed")
        b = per_seed[(per_seed["norm"] == "post_norm") & (per_seed["depth"] == deep)].set_index("seed")
        seeds = sorted(set(a.index) & set(b.index))
        text = (f"{'DeepNorm' if better == 'deepnorm' else 'Pre-norm'} allows a larger stable learning rate than "
                f"post-norm at depth {deep}")
        method = ("DeepNet (Wang et al. 2022): lr sweep with gradient clipping off; per seed the largest swept lr at "
                  "which the run trained (no divergence, ended below the unigram line); bootstrap over "
                  f"{len(seeds)} seed(s) of the per-seed difference of log10 lr")
        # a run that failed (error, time limit) says nothing about stability: its seed is left out at that depth
        failed = set(out.loc[(out["depth"] == deep) & out["norm"].isin([better, "post_norm"])
                             & (out["outcome"] == "error"), "seed"])
        seeds = [x for x in seeds if x not in failed]
        metric = f"log10 largest stable lr, {better} - post_norm, depth {deep}"
        if not seeds or not learned_any:
            result.append(Claim(probe="stability", claim=text, metric=metric, unit="decades of learning rate (log10)",
                                estimate=None, ci95_low=None, ci95_high=None, seeds=len(seeds), windows=None,
                                min_detectable_effect=None, verdict="not_learned" if not learned_any else
                                "not_detectable", method=method, note="no run trained (none ended below the "
                                "unigram line)" if not learned_any else "no seed finished every run", **sc))
            continue
        diff = a.loc[seeds, "log10_lr"].to_numpy() - b.loc[seeds, "log10_lr"].to_numpy()
        iv = _log_interval(diff)
        mde = min_detectable_effect(iv.se)
        cens = sorted({c for c in list(a.loc[seeds, "censored"]) + list(b.loc[seeds, "censored"]) if c})
        note = ("a grid quantity: the lr grid is " + ", ".join(f"{v:g}" for v in sorted(out["lr"].unique())) +
                ("; censored: " + ", ".join({"below": "a seed with no stable lr counts one grid step below the "
                                             "smallest", "at_top": "a seed stable at the largest lr counts at it "
                                             "(a lower bound)"}[c] for c in cens) if cens else ""))
        result.append(Claim(probe="stability", claim=text, metric=metric, unit="decades of learning rate (log10)",
                            estimate=iv.estimate,
                            ci95_low=iv.low, ci95_high=iv.high, seeds=iv.seeds, windows=None,
                            min_detectable_effect=mde,
                            verdict=verdict(iv, expected_sign=+1, mde=mde, learned=learned_any), method=method,
                            note=note, **sc))
    # the seed analysis: "DeepNorm holds the first/last gradient ratio at 0.1-0.2 at every depth"
    gr = grad_ratios(st)
    init = gr[(gr["when"] == "init") & (gr["norm"] == "deepnorm")].drop_duplicates(["depth", "seed"])
    if len(depths) >= 2 and not init.empty:
        shallow = int(depths[0])
        a = init[init["depth"] == deep].set_index("seed")["ratio"].astype(float)
        b = init[init["depth"] == shallow].set_index("seed")["ratio"].astype(float)
        seeds = sorted(set(a.index) & set(b.index))
        if seeds:
            diff = np.log10(a.loc[seeds].to_numpy()) - np.log10(b.loc[seeds].to_numpy())
            iv = _log_interval(diff)
            mde = min_detectable_effect(iv.se)
            result.append(Claim(
                probe="stability", claim="DeepNorm holds the first/last-layer gradient ratio steady across depth",
                metric=f"log10 (first/last block gradient norm) at initialisation, depth {deep} - depth {shallow}, "
                       "DeepNorm", unit="decades (log10 ratio)", estimate=iv.estimate, ci95_low=iv.low,
                ci95_high=iv.high, seeds=iv.seeds, windows=None, min_detectable_effect=mde,
                verdict=verdict(iv, expected_sign=0, mde=mde, learned=True, margin=RATIO_MARGIN_LOG10),
                method=f"paired by seed (the same seed at both depths), bootstrap over {iv.seeds} seed(s); step 0 "
                       "gradients (before any update, independent of the learning rate)",
                note=f"'no difference' means within a factor of 2 (margin log10 2 = {RATIO_MARGIN_LOG10:.3f}); "
                     f"geometric-mean ratios: depth {shallow} {10 ** float(np.log10(b.loc[seeds]).mean()):.3g}, "
                     f"depth {deep} {10 ** float(np.log10(a.loc[seeds]).mean()):.3g}", **sc))
    return result
