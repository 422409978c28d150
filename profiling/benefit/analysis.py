"""Summaries of probe rows: final losses per run, the seed spread, a power-law fit with its uncertainty.

Pure functions of a probe DataFrame (``records.probe_frame``); the dashboard, the CLI and the docs use them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

__all__ = ["final_evals", "seed_spread", "PowerLaw", "fit_power_law", "overfit_gaps", "divergences",
           "extrapolation_table", "heads_table", "describe_scope"]


def final_evals(frame: pd.DataFrame) -> pd.DataFrame:
    """The last ``eval`` row of every run (its status says ok / diverged), one row per run."""
    # a run that never trained (timeout, cancel, crash): one row with no run key and no step
    unrun = (frame["run_key"].fillna("") == "") & frame["step"].isna()
    ev = frame[(frame["row_kind"] == "eval") & ~unrun]
    failed = frame[unrun & (frame["status"] != "ok")]
    if ev.empty:
        return failed
    # one training can serve two labelled runs (equal-FLOP and equal-token budgets buying the same steps)
    idx = ev.groupby(["run_key", "variant", "config_name", "budget_kind"], dropna=False)["step"].idxmax()
    return pd.concat([ev.loc[idx.values], failed]).sort_values(["probe", "config_name", "budget_kind", "seed"])


def seed_spread(final: pd.DataFrame, by: Sequence[str], value: str = "val_loss_nats") -> pd.DataFrame:
    """Mean, min, max and count of ``value`` over seeds for each group ``by`` (ok runs only)."""
    ok = final[final["status"] == "ok"].copy()
    ok[value] = ok[value].astype(float)
    g = ok.groupby(list(by), dropna=False)[value]
    out = g.agg(["mean", "min", "max", "count"]).reset_index()
    return out.rename(columns={"mean": f"{value}_mean", "min": f"{value}_min", "max": f"{value}_max",
                               "count": "seeds"})


@dataclass(frozen=True, kw_only=True)
class PowerLaw:
    """``loss = a * x ** (-b)``, fitted by least squares on ``log loss`` against ``log x``."""

    a: float
    b: float
    b_stderr: float | None  # standard error of the exponent (None with 2 distinct x)
    points: int
    x_name: str

    def __call__(self, x: float) -> float:
        return self.a * x ** (-self.b)

    def describe(self) -> str:
        err = f" ± {self.b_stderr:.2g}" if self.b_stderr is not None else " (no uncertainty: 2 sizes)"
        return (f"val loss ≈ {self.a:.3g} · {self.x_name}^({-self.b:.3g}{err}) — least squares in log-log over "
                f"{self.points} point(s) (every seed and size)")


def fit_power_law(x: Sequence[float], y: Sequence[float], x_name: str = "N") -> PowerLaw | None:
    """Fit ``y = a x^-b`` over all points (seeds included, so the error reflects the seed spread)."""
    pts = [(math.log(float(a)), math.log(float(b))) for a, b in zip(x, y, strict=True)
           if a is not None and b is not None and float(a) > 0 and float(b) > 0]
    if len({p[0] for p in pts}) < 2:
        return None
    n = len(pts)
    mx = sum(p[0] for p in pts) / n
    my = sum(p[1] for p in pts) / n
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    slope = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
    intercept = my - slope * mx
    se = None
    if n > 2:
        resid = sum((p[1] - (intercept + slope * p[0])) ** 2 for p in pts)
        se = math.sqrt(resid / (n - 2) / sxx)
    return PowerLaw(a=math.exp(intercept), b=-slope, b_stderr=se, points=n, x_name=x_name)


def overfit_gaps(final: pd.DataFrame) -> pd.DataFrame:
    """Scaling probe's epochs runs: final train loss, validation loss and their gap per size."""
    ep = final[(final["probe"] == "scaling") & (final["budget_kind"] == "epochs") & (final["status"] == "ok")]
    out = ep[["axis", "axis_value", "num_params", "train_loss_nats", "val_loss_nats"]].copy()
    out["gap_nats"] = out["val_loss_nats"].astype(float) - out["train_loss_nats"].astype(float)
    return out.sort_values("axis_value").reset_index(drop=True)


def divergences(frame: pd.DataFrame) -> pd.DataFrame:
    """Stability probe: runs, divergences and the final validation loss per (norm, depth)."""
    fin = final_evals(frame[frame["probe"] == "stability"])
    g = fin.groupby(["variant", "axis_value"], dropna=False)
    out = g.agg(runs=("run_key", "count"), diverged=("status", lambda s: int((s == "diverged").sum())),
                val_loss_nats=("val_loss_nats", "mean")).reset_index()
    return out.rename(columns={"variant": "norm", "axis_value": "depth"})


def extrapolation_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Validation loss (mean over seeds) per position variant, token-shift setting (``shift_tokens``, the runs'
    ``axis_value``) and evaluation length."""
    ev = frame[(frame["probe"] == "extrapolation") & (frame["row_kind"] == "eval_length")].copy()
    if ev.empty:
        return ev
    ev["val_loss_nats"] = ev["val_loss_nats"].astype(float)
    ev["delta"] = ev["loss_change_vs_train_len_nats"].astype(float)
    ev["shift_tokens"] = ev["axis_value"]
    keys = ["variant", "shift_tokens", "eval_seq_len_tokens"]
    t = ev.groupby(keys, dropna=False)["val_loss_nats"].mean().unstack("eval_seq_len_tokens")
    t.columns = [f"val loss @ {int(c)} tokens (nats)" for c in t.columns]
    train_len = int(ev["train_seq_len_tokens"].dropna().iloc[0])
    d = ev[ev["eval_seq_len_tokens"] > train_len].groupby(keys, dropna=False)["delta"].mean()
    if d.notna().any():
        d = d.unstack("eval_seq_len_tokens")
        d.columns = [f"change vs {train_len}-token windows @ {int(c)} (nats)" for c in d.columns]
        t = t.join(d)
    return t.reset_index()


def heads_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Heads probe: per run group, parameters, KV-cache bytes per token and validation loss (seed mean)."""
    fin = final_evals(frame[frame["probe"] == "heads"])
    ok = fin[fin["status"] == "ok"].copy()
    ok["val_loss_nats"] = ok["val_loss_nats"].astype(float)
    ok["val_bits_per_byte"] = ok["val_bits_per_byte"].astype(float)
    g = ok.groupby(["variant", "axis", "axis_value", "config_name"], dropna=False)
    out = g.agg(num_params=("num_params", "first"), kv_cache_bytes_per_token=("kv_cache_bytes_per_token", "first"),
                val_loss_nats=("val_loss_nats", "mean"), val_bits_per_byte=("val_bits_per_byte", "mean"),
                seeds=("seed", "count")).reset_index()
    return out.sort_values(["variant", "axis_value"]).reset_index(drop=True)


def describe_scope(frame: pd.DataFrame) -> str:
    """One line: what was measured (corpus, scale, seeds, budget, device) — every chart's caption."""
    if frame.empty:
        return ""
    ok = frame[frame["row_kind"] == "eval"]
    corpus = ok["corpus_name"].dropna().iloc[0] if ok["corpus_name"].notna().any() else "?"
    sha = (ok["corpus_sha256"].dropna().iloc[0] or "")[:12] if ok["corpus_sha256"].notna().any() else ""
    params = ok["num_params"].dropna().astype(int)
    seeds = sorted(int(s) for s in frame["seed"].dropna().unique())
    budgets = []
    for kind, col in (("tokens", "budget_tokens"), ("flops", "budget_flops")):
        vals = sorted({int(v) for v in frame.loc[frame["budget_kind"] == kind, col].dropna()})
        if vals:
            budgets.append(f"{', '.join(f'{v:,}' for v in vals)} training {'tokens' if kind == 'tokens' else 'FLOPs'}")
    if (frame["budget_kind"] == "epochs").any():
        budgets.append("repeated epochs on a subset")
    dev = ok["device_name"].dropna().iloc[0] if ok["device_name"].notna().any() else "?"
    seq = sorted({int(v) for v in ok["train_seq_len_tokens"].dropna()})
    batch = sorted({int(v) for v in ok["batch"].dropna()})
    vocab = sorted({int(v) for v in ok["vocab_size"].dropna()})
    scale = (f"{params.min():,}–{params.max():,} parameters" if not params.empty else "? parameters")
    return (f"Corpus: {corpus} (sha256 {sha}…), byte-level BPE vocabulary {', '.join(map(str, vocab))}. Scale: {scale}, "
            f"batch {', '.join(map(str, batch))} × {', '.join(map(str, seq))} tokens. Seeds: "
            f"{', '.join(map(str, seeds))}. Budget: {'; '.join(budgets) or '?'}. Device: {dev}.")
