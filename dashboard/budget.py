"""The budget explorer's frames: a 2-D grid of configurations under a training setup, each point's cost
(per-device memory, FLOPs) from ``core.cost_model`` and its benefit (a predicted loss with its interval), the
feasible region, the Pareto front, and the sentence that answers the tab's question. Pure functions (no
Streamlit), closed form plus one law evaluation per point (the default 80-point dim x depth grid: ~0.25 s closed
form on this project's shared 2-core CPU at load ~1.5, the fitted law's 80 evaluations ~60 ms more; both about
twice that at load 5.7).

Benefit: a loss law (``LossLaw``: ``predict(num_params, tokens) -> (estimate, low, high)``, ``label``, ``unit``,
``notes``). When the user has probe runs (the scaling probe, or the atlas's reference arm), the view passes the
law fitted to them (``profiling.benefit.forecast.law_for_budget``: "fitted to your runs: N sizes, S seeds,
corpus C", in the probe's own unit, bits/byte or nats/token of the probe's tokenizer, with its bootstrap
interval). Otherwise ``CHINCHILLA``: Hoffmann et al. 2022's published fit (``dashboard.proxies.chinchilla_loss``,
nats/token of their tokenizer, no interval). Both are fed total parameters. The two units are not comparable in
absolute terms: only the ranking of configurations under one law is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import pandas as pd
from xtlens.core import cost_model, units
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


class LossLaw(Protocol):
    """What the explorer needs of a loss law (``profiling.benefit.forecast.FittedLaw`` has it): ``predict`` returns
    (estimate, low, high) in ``unit`` for ``num_params`` total parameters (``core.cost_model.param_counts(cfg)
    .num_params``, embeddings included) trained on ``tokens`` tokens; ``label`` says where the law comes from;
    ``notes`` its caveats (a string or several)."""

    @property
    def label(self) -> str: ...

    @property
    def unit(self) -> str: ...

    @property
    def notes(self) -> object: ...

    def predict(self, num_params: float, tokens: float) -> tuple[float, float, float]: ...


LITERATURE_LABEL = "literature fit (Hoffmann et al. 2022, their data)"


@dataclass(frozen=True, kw_only=True)
class ChinchillaLaw:
    """Hoffmann et al. 2022's parametric fit L(N, D) = E + A/N^alpha + B/D^beta (eq. 10, approach 3), N = all
    parameters. A point estimate: low = high = the estimate (no interval of theirs applies to this model)."""

    level: float | None = None
    label: str = LITERATURE_LABEL
    unit: str = "nats/token (Chinchilla's tokenizer)"
    notes: tuple[str, ...] = ("Fitted on MassiveText with their tokenizer, not on this model or your data: read the "
                              "ranking of configurations, not the absolute loss; no interval.",)

    def predict(self, num_params: float, tokens: float) -> tuple[float, float, float]:
        loss = proxies.chinchilla_loss(num_params, tokens)
        return loss, loss, loss


CHINCHILLA = ChinchillaLaw()


def law_notes(law: LossLaw) -> list[str]:
    """``law.notes`` as a list of sentences (a law may give one string or several)."""
    notes = law.notes
    if not notes:
        return []
    if isinstance(notes, str):
        return [notes]
    return [str(n) for n in notes]  # type: ignore[attr-defined]


@dataclass(frozen=True, kw_only=True)
class Budget:
    """The constraints: per-device memory in bytes (training peak and serving total under the setups), and
    optional caps on forward FLOPs per token and on training FLOPs for ``train_tokens`` tokens.
    ``process_overhead_bytes``: what the device holds besides the tensors (a GPU: the CUDA context and the cuBLAS
    workspaces, ``core.cuda_memory``), taken off the memory the grid's points may use; the caching allocator's
    rounding is left out of the grid (the What-fits answer counts it for the current configuration)."""

    device_memory_bytes: int
    process_overhead_bytes: int = 0
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
         training: TrainingSetup, serving: ServingSetup, budget: Budget, law: LossLaw = CHINCHILLA) -> pd.DataFrame:
    """One row per grid point: the axes, parameters (all and non-embedding), per-device training peak and serving
    total (bytes), forward FLOPs per token, training FLOPs for the token budget (``6``-free: the closed-form train
    step per token x tokens, recomputation included), the loss ``law`` predicts at the token budget with its
    interval (``loss``, ``loss_low``, ``loss_high``, in ``law.unit``), which constraints hold (``feasible``) and
    ``pareto`` (feasible and no other feasible point has both lower training FLOPs and lower loss). Invalid points
    (a rule of ``ModelConfig`` or of the setup) are left out."""
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
            pc = cost_model.param_counts(c)
            loss, low, high = law.predict(float(pc.num_params), float(budget.train_tokens))
            rows.append({x: xv, y: yv, "num_params": pc.num_params, "non_embedding_params": pc.non_embedding_params,
                         "train_peak_bytes": tm.peak_bytes, "peak_stage": tm.peak_stage,
                         "serve_total_bytes": sm.total_bytes, "fwd_flops_per_token": fc.fwd_flops_per_token,
                         "train_flops": train_flops, "loss": loss, "loss_low": low, "loss_high": high})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    usable = budget.device_memory_bytes - budget.process_overhead_bytes
    ok = (frame["train_peak_bytes"] <= usable) & (frame["serve_total_bytes"] <= usable)
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


def _num(v: float) -> str:
    return f"{v:g}"


def front_sentence(frame: pd.DataFrame, *, x: str, y: str, budget: Budget, law: LossLaw, max_listed: int = 6) -> str:
    """The tab's answer in one sentence: "Under <memory> per device and <compute> training FLOPs, for <tokens>
    training tokens, the configurations on the front are: <x> a x <y> b (FLOPs, loss [low, high] unit); ... (loss
    from <label>)." Read from ``frame``'s ``pareto`` rows, cheapest first; a front of more than ``max_listed``
    configurations is named by ``max_listed`` of them evenly spaced along it (the cheapest and the lowest loss
    included) and the count of the others. Says so when nothing fits."""
    compute = ("no cap on training FLOPs" if budget.max_train_flops is None
               else f"{budget.max_train_flops:.3g} training FLOPs")
    head = f"Under {units.fmt_bytes(budget.device_memory_bytes)} per device and {compute}"
    if budget.max_fwd_flops_per_token is not None:
        head += f" (forward FLOPs per token at most {budget.max_fwd_flops_per_token:.3g})"
    head += f", for {budget.train_tokens:.3g} training tokens"
    front = frame[frame["pareto"]].sort_values("train_flops") if not frame.empty else frame
    if front.empty:
        return f"{head}, no configuration of this grid fits: there is no front (loss from {law.label})."
    listed = front
    if len(front) > max_listed:
        picks = sorted({round(i * (len(front) - 1) / (max_listed - 1)) for i in range(max_listed)})
        listed = front.iloc[picks]
    parts = []
    for _, r in listed.iterrows():
        loss = f"{r['loss']:.3f}"
        if r["loss_low"] != r["loss_high"]:
            loss += f" [{r['loss_low']:.3f}, {r['loss_high']:.3f}]"
        parts.append(f"{x} {_num(r[x])} x {y} {_num(r[y])} ({r['train_flops']:.3g} FLOPs, loss {loss} {law.unit})")
    which = ("" if len(listed) == len(front)
             else f" ({len(listed)} of {len(front)}, from the cheapest to the lowest loss)")
    rest = ("" if len(listed) == len(front)
            else f"; the other {len(front) - len(listed)} lie between them (the grid table's pareto column)")
    return (f"{head}, the configurations on the front{which} are: {'; '.join(parts)}{rest} "
            f"(loss from {law.label}).")


def _times(ratio: float) -> str:
    return f"{ratio:,.0f}x" if ratio >= 10 else f"{ratio:.2g}x"


def extrapolation_note(frame: pd.DataFrame, law: LossLaw) -> str:
    """How far the front's configurations lie beyond the runs a fitted law was fitted to ("the front's
    configurations are 1,200x-15,000x the largest run's parameters: extrapolated"), from the law's
    ``extrapolation(num_params)`` (a ``forecast.FittedLaw`` has it; "" for a law without it or an empty front)."""
    ratio = getattr(law, "extrapolation", None)
    front = frame[frame["pareto"]] if not frame.empty else frame
    if ratio is None or front.empty:
        return ""
    lo, hi = (ratio(float(n)) for n in (front["num_params"].min(), front["num_params"].max()))
    span = f"{_times(lo)}" if _times(lo) == _times(hi) else f"{_times(lo)}-{_times(hi)}"
    if hi <= 1:
        return f"the front's configurations are {span} the largest run's parameters: not beyond the runs"
    return f"the front's configurations are {span} the largest run's parameters: extrapolated beyond the runs"
