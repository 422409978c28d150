"""The budget explorer's frames: a 2-D grid of configurations under a training setup, each point's cost
(per-device memory, FLOPs) from ``core.cost_model`` and its benefit (a predicted loss), the feasible region,
and the Pareto front. Pure functions (no Streamlit), closed form only: a 12 x 12 grid takes ~50 ms.

Benefit: ``BENEFITS`` maps a name to ``f(cfg, tokens) -> loss`` (lower is better). Today it holds Chinchilla's
fit (``dashboard.proxies.chinchilla_loss``). The benefit lab's measured loss plugs in here: register a function
under a new name (``BENEFITS["measured"] = ...``) and the view offers it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
from xtlens.core import cost_model
from xtlens.core.config import ConfigError, ModelConfig, Workload
from xtlens.core.setup import ServingSetup, TrainingSetup
from xtlens.dashboard import proxies

#: axis pairs offered by the explorer: (x field, y field)
AXIS_PAIRS: dict[str, tuple[str, str]] = {
    "dim x depth": ("dim", "depth"),
    "heads x attn_dim_head": ("heads", "attn_dim_head"),
    "dim x heads": ("dim", "heads"),
    "depth x ff_mult": ("depth", "ff_mult"),
}

#: default values along each axis
AXIS_VALUES: dict[str, tuple[float, ...]] = {
    "dim": (128, 256, 384, 512, 640, 768, 1024, 1280, 1536, 2048),
    "depth": (2, 4, 6, 8, 12, 16, 24, 32),
    "heads": (1, 2, 4, 8, 12, 16, 32),
    "attn_dim_head": (16, 32, 64, 96, 128),
    "ff_mult": (1, 2, 3, 4, 6, 8),
}


def chinchilla_benefit(cfg: ModelConfig, tokens: float) -> float:
    """Chinchilla's fitted loss for ``cfg``'s parameter count trained on ``tokens`` tokens (nats per token)."""
    return proxies.chinchilla_loss(cost_model.param_counts(cfg).num_params, tokens)


BENEFITS: dict[str, Callable[[ModelConfig, float], float]] = {"Chinchilla fit L(N, D)": chinchilla_benefit}


@dataclass(frozen=True, kw_only=True)
class Budget:
    """The constraints: per-device memory in bytes (training peak and serving total under the setups), and
    optional caps on forward FLOPs per token and on training FLOPs for ``train_tokens`` tokens."""

    device_memory_bytes: int
    train_tokens: float = 1e10
    max_fwd_flops_per_token: float | None = None
    max_train_flops: float | None = None


def _config_at(cfg: ModelConfig, x: str, xv: float, y: str, yv: float) -> ModelConfig | None:
    values = {x: xv, y: yv}
    for name in (x, y):
        if name != "ff_mult":
            values[name] = int(values[name])
    if "heads" in values and cfg.alibi_pos_bias and cfg.alibi_num_heads and cfg.alibi_num_heads > values["heads"]:
        values["alibi_num_heads"] = values["heads"]
    if "heads" in values and cfg.attn_kv_heads and values["heads"] % cfg.attn_kv_heads:
        values["attn_kv_heads"] = None
    try:
        return cfg.replace(**values)
    except ConfigError:
        return None


def grid(cfg: ModelConfig, wl: Workload, *, x: str, y: str, xs: Sequence[float], ys: Sequence[float],
         training: TrainingSetup, serving: ServingSetup, budget: Budget,
         benefit: str = "Chinchilla fit L(N, D)") -> pd.DataFrame:
    """One row per grid point: the axes, parameters, per-device training peak and serving total (bytes), forward
    FLOPs per token, training FLOPs for the token budget (``6``-free: the closed-form train step per token x tokens,
    recomputation included), the benefit, which constraints hold (``feasible``) and ``pareto`` (feasible and no
    other feasible point has both lower training FLOPs and lower loss). Invalid points (a rule of ``ModelConfig``
    or of the setup) are left out."""
    rows = []
    for xv in xs:
        for yv in ys:
            c = _config_at(cfg, x, xv, y, yv)
            if c is None:
                continue
            try:
                training.check_against(c)
                serving.check_against(c)
            except ConfigError:
                continue
            tm = cost_model.training_memory(c, wl, training)
            sm = cost_model.serving_memory(c, wl, serving)
            fc = cost_model.flop_counts(c, wl)
            step = cost_model.training_flops_for(c, wl, training)["train_step_flops"] * training.tp
            train_flops = step / wl.tokens * budget.train_tokens
            rows.append({x: xv, y: yv, "num_params": cost_model.param_counts(c).num_params,
                         "train_peak_bytes": tm.peak_bytes, "peak_stage": tm.peak_stage,
                         "serve_total_bytes": sm.total_bytes, "fwd_flops_per_token": fc.fwd_flops_per_token,
                         "train_flops": train_flops, "loss": BENEFITS[benefit](c, budget.train_tokens)})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    ok = (frame["train_peak_bytes"] <= budget.device_memory_bytes) & (frame["serve_total_bytes"]
                                                                      <= budget.device_memory_bytes)
    if budget.max_fwd_flops_per_token is not None:
        ok &= frame["fwd_flops_per_token"] <= budget.max_fwd_flops_per_token
    if budget.max_train_flops is not None:
        ok &= frame["train_flops"] <= budget.max_train_flops
    frame["feasible"] = ok
    frame["pareto"] = pareto_front(frame, cost="train_flops", benefit="loss", among=ok)
    return frame


def pareto_front(frame: pd.DataFrame, *, cost: str, benefit: str, among: pd.Series) -> pd.Series:
    """True for rows in ``among`` that no other row in ``among`` dominates (cost <= and loss <=, one strictly)."""
    out = pd.Series(False, index=frame.index)
    best = float("inf")
    for idx in frame[among].sort_values([cost, benefit]).index:
        loss = frame.at[idx, benefit]
        if loss < best:
            out[idx] = True
            best = loss
    return out
