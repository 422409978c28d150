"""Pure table shaping for the dashboard: closed-form estimates -> tidy DataFrames, sweeps, deltas, fits.

No Streamlit here (``dashboard.data`` caches these). Every column carries its unit in its name
(``*_bytes``, ``*_flops``, ``*_ms``, ``*_tokens``, ``num_params``). Estimates are the rows of
``core.cost_model.predictions(cfg, wl)`` (``estimate()`` is the same rows as a dict), in the ``phase`` /
``component`` vocabulary of the measured rows; FLOPs count one multiply-add as 2 FLOPs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import pandas as pd
from xtlens.core import cost_model
from xtlens.core.config import ConfigError, ModelConfig, Workload
from xtlens.core.cost_model import Prediction
from xtlens.core.units import fmt_value

EstimateFn = Callable[[ModelConfig, Workload], dict]

# how the stacked memory chart names the components of core.cost_model.MEMORY_STACK (display only)
COMPONENT_LABELS = {"weights": "weights", "buffers": "weights", "gradients": "gradients", "optimizer": "AdamW state",
                    "other_activations": "activations", "loss": "loss (log-softmax)",
                    "kv_cache_in_activations": "KV cache", "alibi_bias_at_peak": "ALiBi bias",
                    "alibi_bias_saved": "ALiBi bias"}
COMPONENT_ORDER = tuple(dict.fromkeys(COMPONENT_LABELS.values()))


@dataclass(frozen=True, kw_only=True)
class Metric:
    key: str
    label: str
    unit: str  # "params", "FLOPs", "bytes"


METRICS: tuple[Metric, ...] = (
    Metric(key="num_params", label="parameters", unit="params"),
    Metric(key="embedding_params", label="embedding parameters", unit="params"),
    Metric(key="non_embedding_params", label="non-embedding parameters", unit="params"),
    Metric(key="fwd_flops_per_token", label="forward FLOPs per token", unit="FLOPs"),
    Metric(key="fwd_flops", label="forward FLOPs per batch", unit="FLOPs"),
    # the tabs' training numbers (``cost_model.training_headline``): present when the caller adds them (Compare does)
    Metric(key="training_step_flops", label="training-step FLOPs per batch (no recomputation)", unit="FLOPs"),
    Metric(key="weights_bytes", label="weights", unit="bytes"),
    Metric(key="kv_cache_bytes", label="KV cache", unit="bytes"),
    Metric(key="alibi_bias_bytes", label="ALiBi bias", unit="bytes"),
    Metric(key="inference_total_bytes", label="inference memory", unit="bytes"),
    Metric(key="training_peak_bytes", label="training peak (AdamW, no recomputation)", unit="bytes"),
    Metric(key="training_total_bytes", label="training upper bound (sum of parts, AdamW)", unit="bytes"),
)


def seq_len_grid(max_len: int, lo: int = 128, hi: int = 8192) -> list[int]:
    """Powers of two from ``lo`` to min(``hi``, ``max_len``), plus ``max_len`` itself if it is smaller."""
    top = min(hi, max_len)
    grid = [n for n in (2**k for k in range(0, 15)) if lo <= n <= top]
    return grid or [top]


# --- closed form as rows (core.cost_model.predictions) -------------------------------------------------

def prediction_frame(rows: Sequence[Prediction]) -> pd.DataFrame:
    """The predictions as one tidy frame: quantity, phase, component, unit, variant, value (exact ints)."""
    return pd.DataFrame([{"quantity": r.quantity, "phase": r.phase, "component": r.component, "unit": r.unit,
                          "variant": r.variant or None, "value": r.value} for r in rows],
                        columns=["quantity", "phase", "component", "unit", "variant", "value"])


def estimate_table(rows: Sequence[Prediction]) -> pd.DataFrame:
    """Every closed-form quantity: the prediction rows plus ``shown`` (formatted with its unit)."""
    frame = prediction_frame(rows)
    frame["shown"] = [fmt_value(u, v) for u, v in zip(frame["unit"], frame["value"], strict=True)]
    return frame


def params_table(est: dict) -> pd.DataFrame:
    return pd.DataFrame({
        "part": ["embedding", "non-embedding"],
        "num_params": [int(est["embedding_params"]), int(est["non_embedding_params"])],
    })


# --- memory -------------------------------------------------------------------------------------------

def memory_components(rows: Sequence[Prediction], phase: str) -> list[tuple[str, int]]:
    """(component, bytes) of ``phase`` (inference or train_step) that sum exactly to its predicted total:
    ``core.cost_model.MEMORY_STACK`` read from the prediction rows."""
    return [(c, int(cost_model.predicted(rows, phase=phase, component=c, unit="bytes") or 0))
            for c in cost_model.MEMORY_STACK[phase]]


def memory_curve(cfg: ModelConfig, wl: Workload, seq_lens: Iterable[int]) -> pd.DataFrame:
    """Long table: seq_len_tokens, phase, component, bytes (the stacked-area chart's data)."""
    rows = []
    for n in seq_lens:
        preds = cost_model.predictions(cfg, Workload(batch=wl.batch, seq_len=int(n), dtype=wl.dtype))
        for phase in cost_model.MEMORY_STACK:
            for component, value in memory_components(preds, phase):
                rows.append({"seq_len_tokens": int(n), "phase": phase, "component": component, "bytes": value})
    return pd.DataFrame(rows, columns=["seq_len_tokens", "phase", "component", "bytes"])


#: the ``method`` text of memory rows that are a simulation (``profiling.measure.memory``: MemTracker under
#: FakeTensorMode, the CPU's default): tensor sizes of a run that never happened, not a measurement
SIMULATED_METHOD = "FakeTensorMode"


def row_kind(frame: pd.DataFrame) -> pd.Series:
    """Per row, what its number is: ``predicted`` (``measurement="estimate"``), ``simulated`` (a memory row whose
    ``method`` ran MemTracker under FakeTensorMode: tensor sizes, no run) or ``measured``."""
    method = frame["method"].astype("string").fillna("") if "method" in frame else pd.Series("", index=frame.index)
    sim = (frame["measurement"].astype(str) == "memory") & method.str.contains(SIMULATED_METHOD, regex=False)
    kind = pd.Series("measured", index=frame.index, dtype=object)
    kind[sim.fillna(False).astype(bool)] = "simulated"
    kind[(frame["measurement"].astype(str) == "estimate").to_numpy()] = "predicted"
    return kind


def measured_vs_predicted_memory(measured: pd.DataFrame) -> pd.DataFrame:
    """Measured memory rows joined to the predictions on (phase, component, seq_len_tokens, batch, dtype).

    One row per measured component: measured_bytes, predicted_bytes (from ``core.cost_model.predictions``,
    not from the row's own column: the join is the check), rel_err. Components the model does not predict
    keep an empty prediction."""
    ok = measured[(measured["measurement"] == "memory") & (measured["status"] == "ok")]
    cols = ["phase", "component", "seq_len_tokens", "batch", "dtype", "config_json"]
    if ok.empty:
        return pd.DataFrame(columns=[*cols, "measured_bytes", "predicted_bytes", "rel_err", "method"])
    preds = []
    for (cfg_json, n, b, dtype), _ in ok.groupby(["config_json", "seq_len_tokens", "batch", "dtype"], sort=False):
        for r in cost_model.predictions(ModelConfig.from_json(cfg_json), Workload(batch=int(b), seq_len=int(n),
                                                                                  dtype=str(dtype))):
            if r.unit == "bytes":
                preds.append({"config_json": cfg_json, "seq_len_tokens": int(n), "batch": int(b), "dtype": str(dtype),
                              "phase": r.phase, "component": r.component, "predicted_bytes": int(r.value)})
    left = ok[cols + ["measured_bytes", "method"]].copy()
    left["join_component"] = left["component"].map(lambda c: cost_model.SAME_QUANTITY.get(c, c))
    for c in ("seq_len_tokens", "batch"):
        left[c] = left[c].astype("int64")
    left["dtype"] = left["dtype"].astype(str)
    right = pd.DataFrame(preds).rename(columns={"component": "join_component"})
    joined = left.merge(right, on=["config_json", "seq_len_tokens", "batch", "dtype", "phase", "join_component"],
                        how="left").drop(columns=["join_component"])
    joined["rel_err"] = [None if pd.isna(p) or not p else abs(float(m) - float(p)) / float(p)
                         for m, p in zip(joined["measured_bytes"], joined["predicted_bytes"], strict=True)]
    return joined[[*cols, "measured_bytes", "predicted_bytes", "rel_err", "method"]]


def flops_curve(cfg: ModelConfig, wl: Workload, seq_lens: Iterable[int]) -> pd.DataFrame:
    """seq_len_tokens, fwd_flops, fwd_flops_causal, train_step_flops, fwd_flops_per_token (closed form).
    ``train_step_flops`` is the tabs' training-step number (``cost_model.training_headline``: no recomputation, plus
    the scores a fused SDPA backward recomputes)."""
    keys = ["fwd_flops", "fwd_flops_causal", "train_step_flops", "fwd_flops_per_token"]
    rows = []
    for n in seq_lens:
        at = Workload(batch=wl.batch, seq_len=int(n), dtype=wl.dtype)
        est = {**cost_model.estimate(cfg, at), "train_step_flops": cost_model.training_headline(cfg, at).step_flops}
        rows.append({"seq_len_tokens": int(n), **{k: est[k] for k in keys}})
    return pd.DataFrame(rows, columns=["seq_len_tokens", *keys])


# --- trade-off sweeps -----------------------------------------------------------------------------------

#: the phases the Latency view measures and draws, in order (profiling.measure.latency.PHASES, without its torch import)
LATENCY_PHASES = ("forward", "attention", "train_step", "decode")
SWEEP_AXES = ("dim", "depth", "heads")


def sweep_values(axis: str, current: int) -> list[int]:
    """Values of ``axis`` around ``current``: about current/4 .. current*4, always including current."""
    if axis == "dim":
        base = [current * f for f in (0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 4)]
        vals = {max(64, int(round(v / 64)) * 64) for v in base}
    elif axis == "depth":
        vals = {v for v in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48) if v <= max(4 * current, 8)}
    else:
        vals = {v for v in (1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64) if v <= max(4 * current, 8)}
    vals.add(current)
    return sorted(vals)


def sweep_table(estimate: EstimateFn, cfg: ModelConfig, wl: Workload, axis: str, values: Sequence[int],
                *, dataset_tokens: float) -> tuple[pd.DataFrame, list[str]]:
    """One row per valid value of ``axis``: closed-form costs and the capacity/benefit proxies.

    Returns (table, skipped) where ``skipped`` explains values whose configuration is invalid.
    """
    from xtlens.dashboard import proxies

    rows, skipped = [], []
    for v in values:
        try:
            c = cfg.replace(**{axis: int(v)})
        except ConfigError as exc:
            skipped.append(f"{axis} = {v}: {exc}")
            continue
        est = estimate(c, wl)
        n_all, n_ne = int(est["num_params"]), int(est["non_embedding_params"])
        rows.append({
            "axis": axis,
            "axis_value": int(v),
            "is_current": int(v) == getattr(cfg, axis),
            "num_params": n_all,
            "non_embedding_params": n_ne,
            "fwd_flops_per_token": est["fwd_flops_per_token"],
            "fwd_flops": est["fwd_flops"],
            "train_step_flops": est["train_step_flops"],
            "inference_total_bytes": int(est["inference_total_bytes"]),
            "training_total_bytes": int(est["training_total_bytes"]),
            "training_peak_bytes": cost_model.training_headline(c, wl).peak_bytes,
            "kv_cache_bytes": int(est["kv_cache_bytes"]),
            "compute_optimal_tokens": proxies.compute_optimal_tokens(n_all),
            "tokens_per_param": proxies.tokens_per_param(dataset_tokens, n_all),
            "train_compute_flops": proxies.train_compute_flops(n_ne, dataset_tokens),
            "chinchilla_loss_nats": proxies.chinchilla_loss(n_all, dataset_tokens),
        })
    return pd.DataFrame(rows), skipped


# --- compare ------------------------------------------------------------------------------------------

def compare_table(entries: Sequence[tuple[str, dict]]) -> pd.DataFrame:
    """Long table: metric, unit, config, value, delta (vs the first entry), delta_pct.

    ``entries`` is [(name, estimate dict)], the first being the reference; a metric the reference's dict lacks
    (``training_step_flops`` / ``training_peak_bytes`` of ``headline_keys``) is left out.
    """
    if not entries:
        return pd.DataFrame(columns=["metric", "label", "unit", "config", "value", "delta", "delta_pct"])
    ref = entries[0][1]
    rows = []
    for m in METRICS:
        if m.key not in ref:
            continue
        for name, est in entries:
            value, base = est[m.key], ref[m.key]
            rows.append({
                "metric": m.key, "label": m.label, "unit": m.unit, "config": name, "value": value,
                "delta": value - base, "delta_pct": (100.0 * (value - base) / base) if base else None,
            })
    return pd.DataFrame(rows)


def headline_keys(headline: cost_model.TrainingHeadline) -> dict[str, int]:
    """The training numbers every tab shows, under the keys of ``METRICS``."""
    return {"training_step_flops": headline.step_flops, "training_peak_bytes": headline.peak_bytes}


def compare_wide(long: pd.DataFrame, *, deltas_inline: bool = False) -> pd.DataFrame:
    """One row per metric, for each config its formatted value and (after the first) its delta.

    A row has one unit (GiB or MiB, one SI prefix for FLOPs), chosen by the row's largest value.
    ``deltas_inline``: no delta columns; a value after the first ends with its change in percent,
    ``"1.2 GiB (+5.1%)"`` or ``"(same)"``: one column per configuration, narrow enough for a phone."""
    if long.empty:
        return pd.DataFrame()
    configs = list(dict.fromkeys(long["config"]))
    out = []
    for _metric, group in long.groupby("metric", sort=False):
        row = {"quantity": group["label"].iloc[0]}
        unit = group["unit"].iloc[0]
        like = float(group["value"].abs().max())
        for i, name in enumerate(configs):
            r = group[group["config"] == name].iloc[0]
            row[name] = fmt_value(unit, r["value"], like=like)
            if i and deltas_inline:
                sign = "+" if r["delta"] > 0 else ""
                if not r["delta"]:
                    change = "same"
                elif r["delta_pct"] is None or pd.isna(r["delta_pct"]):  # the reference is 0
                    change = sign + fmt_value(unit, r["delta"], like=like)
                else:
                    change = f"{sign}{r['delta_pct']:.1f}%"
                row[name] += f" ({change})"
            elif i:
                sign = "+" if r["delta"] > 0 else ""
                pct = "" if r["delta_pct"] is None or pd.isna(r["delta_pct"]) else f" ({sign}{r['delta_pct']:.1f}%)"
                row[f"Δ {name}"] = (sign + fmt_value(unit, r["delta"], like=like) + pct) if r["delta"] else "same"
        out.append(row)
    return pd.DataFrame(out)


# --- latency --------------------------------------------------------------------------------------------

def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Least-squares slope of log(y) against log(x): ~1 linear regime, ~2 quadratic regime."""
    pts = [(math.log(a), math.log(b)) for a, b in zip(x, y, strict=False) if a and b and a > 0 and b > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def regime(slope: float | None, quantity: str = "latency") -> str:
    """Words for a fitted log-log exponent ``slope`` of ``quantity`` against sequence length.

    ``quantity="latency"`` (a time, or any cost): the value grows as length^slope. ``"throughput"``
    (tokens/s): time per token grows as length^(-slope), and the words say both. Only a cost that falls
    is flagged: tokens/s that rise are time per token that falls (a fixed cost per call spread over more
    tokens), implausible only when they rise faster than length (the whole call then takes less time).
    """
    if slope is None:
        return "not enough points"
    if quantity == "throughput":
        if abs(slope) <= 0.2:
            return "tokens/s about constant in length: time per token about constant"
        if slope < 0:
            return f"tokens/s falls with length: time per token {regime(-slope)}"
        if slope <= 1.2:
            return ("tokens/s rises with length: time per token falls (a fixed cost per call spread over more "
                    "tokens)")
        return ("tokens/s rises faster than length: the whole call takes less time for more tokens, implausible "
                "for a cost, suspect noise (load, too few repeats)")
    if slope < -0.2:
        return "falls as length grows: implausible for a cost, suspect noise (load, too few repeats)"
    if slope <= 0.2:
        return "about constant in length"
    if slope < 0.8:
        return "grows slower than linear in length"
    if slope < 1.3:
        return "about linear in length"
    if slope < 1.75:
        return "between linear and quadratic"
    if slope <= 2.3:
        return "about quadratic in length"
    return "faster than quadratic in length: suspect noise"


# --- FLOP breakdowns -------------------------------------------------------------------------------------

def module_roles(frame: pd.DataFrame, value: str) -> pd.DataFrame:
    """Sum ``value`` over blocks: ``attn_layers.layers.3.1.fn.to_q`` -> ``attn_layers.layers.*.1.fn.to_q``.

    ``frame``: component, ``value``. Returns component, ``value``, modules (how many were summed).
    """
    import re

    if frame.empty:
        return pd.DataFrame(columns=["component", value, "modules"])
    roles = frame["component"].astype(str).map(lambda p: re.sub(r"layers\.\d+\.", "layers.*.", p))
    out = (frame.assign(component=roles, _n=1).groupby("component", sort=False)
           .agg(**{value: (value, "sum"), "modules": ("_n", "sum")}).reset_index())
    return out.sort_values(value, ascending=False).reset_index(drop=True)
