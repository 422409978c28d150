"""Frames of the Latency tab's breakdown, what-if and roofline sections (pure pandas: no Streamlit).

Frames come from measured rows (``measurement`` ``breakdown`` / ``whatif``) and from ``core.roofline``; their
figures are in ``dashboard.charts.latency``. Milliseconds everywhere; FLOPs count a multiply-add as 2.
"""

from __future__ import annotations

import math

import pandas as pd
from xtlens.core.config import ModelConfig, Workload
from xtlens.core.hardware import Hardware
from xtlens.core.roofline import LATENCY_PARTS, TRAIN_PARTS, part_costs

PART_ORDER = list(LATENCY_PARTS) + list(TRAIN_PARTS) + ["attention_other", "framework_other", "remainder"]
_NOT_PARTS = ("total", "total_unprofiled")


def _ok(frame: pd.DataFrame, measurement: str) -> pd.DataFrame:
    if frame is None or frame.empty:
        return pd.DataFrame(columns=list(frame.columns) if frame is not None else [])
    return frame[(frame["measurement"] == measurement) & (frame["status"] == "ok")].copy()


def breakdown_table(frame: pd.DataFrame, phase: str) -> pd.DataFrame:
    """One row per (config, length, part): measured ms, share of the total (%), predicted ms (roofline of the
    measuring device), achieved TFLOP/s and fraction of peak where the part does matrix products."""
    ok = _ok(frame, "breakdown")
    ok = ok[ok["phase"] == phase]
    if ok.empty:
        return pd.DataFrame(columns=["config", "seq_len_tokens", "part", "measured_ms", "share_%", "predicted_ms",
                                     "measured_over_predicted", "achieved_TFLOP_per_s", "peak_%", "what"])
    totals = ok[ok["component"] == "total"].set_index(["config_name", "seq_len_tokens"])["latency_median_ms"]
    parts = ok[~ok["component"].isin(_NOT_PARTS)].copy()
    parts["order"] = parts["component"].map(lambda c: PART_ORDER.index(c.split("@")[0]) if c.split("@")[0] in PART_ORDER else 99)
    parts = parts.sort_values(["config_name", "seq_len_tokens", "order"])
    out = pd.DataFrame({
        "config": parts["config_name"].astype(str),
        "seq_len_tokens": parts["seq_len_tokens"].astype(int),
        "part": parts["component"].astype(str),
        "measured_ms": parts["latency_median_ms"].astype(float),
    })
    keys = list(zip(parts["config_name"], parts["seq_len_tokens"], strict=True))
    out["share_%"] = [100 * m / float(totals.get(k, math.nan)) for m, k in zip(out["measured_ms"], keys, strict=True)]
    out["predicted_ms"] = parts["predicted_latency_ms"].astype(float).to_numpy()
    out["measured_over_predicted"] = out["measured_ms"] / out["predicted_ms"]
    out["achieved_TFLOP_per_s"] = (parts["achieved_flops_per_s"].astype(float) / 1e12).to_numpy()
    out["peak_%"] = (100 * parts["peak_fraction"].astype(float)).to_numpy()
    out["what"] = parts["method"].astype(str).str.split(";").str[0].to_numpy()
    return out.reset_index(drop=True)


def whatif_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (config, length, phase, implementation), failures included with their reason."""
    rows = frame[frame["measurement"] == "whatif"] if frame is not None and not frame.empty else pd.DataFrame()
    cols = ["config", "seq_len_tokens", "phase", "implementation", "status", "median_ms", "speedup_vs_asbuilt",
            "logits_rel_err", "compile_s", "note"]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    note = rows["error"].fillna(rows["method"]).astype(str)
    return pd.DataFrame({
        "config": rows["config_name"].astype(str), "seq_len_tokens": rows["seq_len_tokens"].astype(int),
        "phase": rows["phase"].astype(str), "implementation": rows["component"].astype(str),
        "status": rows["status"].astype(str), "median_ms": rows["latency_median_ms"].astype(float),
        "speedup_vs_asbuilt": rows["speedup_vs_asbuilt"].astype(float),
        "logits_rel_err": rows["logits_rel_err"].astype(float), "compile_s": rows["compile_s"].astype(float),
        "note": note,
    }, columns=cols).reset_index(drop=True)


def roofline_points(cfg: ModelConfig, wl: Workload, hw: Hardware, *, phase: str = "forward",
                    attention: str = "asbuilt") -> pd.DataFrame:
    """Per part: FLOPs, bytes, intensity (FLOP/byte), predicted ms on ``hw``, attainable FLOP/s, bound."""
    rows = []
    for p in part_costs(cfg, wl, phase=phase, attention=attention):
        if not p.bytes and not p.flops:
            continue
        t = p.time_s(hw, wl.dtype)
        rows.append({"part": p.component, "flops": p.flops, "bytes_moved": p.bytes,
                     "intensity_flops_per_byte": p.flops / p.bytes if p.bytes else math.inf,
                     "predicted_ms": 1e3 * t, "attainable_flops_per_s": p.flops / t if t else 0.0,
                     "attainable_TFLOP_per_s": p.flops / t / 1e12 if t else 0.0,
                     "bound": p.bound(hw, wl.dtype)})
    return pd.DataFrame(rows)


def measured_on_roofline(table: pd.DataFrame, points: pd.DataFrame, *, config: str, seq_len: int) -> pd.DataFrame:
    """The measured parts of one (config, length) joined to their closed-form FLOPs and intensity."""
    if table.empty or points.empty:
        return pd.DataFrame(columns=["part", "flops", "intensity_flops_per_byte", "measured_ms"])
    sel = table[(table["config"] == config) & (table["seq_len_tokens"] == seq_len)][["part", "measured_ms"]]
    return sel.merge(points[["part", "flops", "intensity_flops_per_byte"]], on="part", how="inner")


def predicted_vs_measured(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (config, phase, length, dtype): measured total, roofline prediction on the measuring device, ratio."""
    ok = _ok(frame, "breakdown")
    tot = ok[ok["component"] == "total"]
    if tot.empty:
        return pd.DataFrame(columns=["config", "phase", "seq_len_tokens", "measured_ms", "predicted_ms",
                                     "measured_over_predicted", "device", "dtype"])
    out = pd.DataFrame({
        "config": tot["config_name"].astype(str), "phase": tot["phase"].astype(str),
        "seq_len_tokens": tot["seq_len_tokens"].astype(int), "measured_ms": tot["latency_median_ms"].astype(float),
        "predicted_ms": tot["predicted_latency_ms"].astype(float), "device": tot["device_name"].astype(str),
        "dtype": tot["dtype"].astype(str)})
    out.insert(5, "measured_over_predicted", out["measured_ms"] / out["predicted_ms"])
    return out.sort_values(["config", "dtype", "phase", "seq_len_tokens"]).reset_index(drop=True)


def alibi_share(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (phase, length, dtype) of a breakdown: the total and the share of ALiBi bias construction + mask
    preparation and of the attention kernel (the two numbers that say where an ALiBi model's time goes)."""
    ok = _ok(frame, "breakdown")
    rows = []
    for (phase, n, dtype), g in ok.groupby(["phase", "seq_len_tokens", "dtype"]):
        ms = dict(zip(g["component"].astype(str), g["latency_median_ms"].astype(float), strict=True))
        total = ms.get("total")
        if not total:
            continue
        alibi = ms.get("alibi_bias", 0.0) + ms.get("mask_prep", 0.0)
        rows.append({"phase": phase, "seq_len_tokens": int(n), "dtype": dtype, "total_ms": total,
                     "alibi_and_mask_ms": alibi, "alibi_and_mask_share": alibi / total,
                     "attention_kernel_ms": ms.get("attention", 0.0), "attention_kernel_share": ms.get("attention", 0.0) / total})
    out = pd.DataFrame(rows)
    return out.sort_values(["dtype", "phase", "seq_len_tokens"]).reset_index(drop=True) if rows else out


def ceilings_of(frame: pd.DataFrame | None, phase: str) -> Hardware | None:
    """The ceilings the measurement's roofline used on the measuring device (the calibrated CPU or a GPU
    preset), recovered exactly from its rows: a part without FLOPs took ``bytes / bandwidth``, and the
    compute ceiling is the largest ``flops / predicted time`` (that of a compute-bound part). None when the
    rows hold no prediction or no part reached the compute roof."""
    ok = _ok(frame, "breakdown") if frame is not None else pd.DataFrame()
    if ok.empty:
        return None
    ok = ok[(ok["phase"] == phase) & ok["predicted_latency_ms"].notna() & ok["bytes_moved"].notna()
            & ~ok["component"].isin(_NOT_PARTS)]
    ok = ok[ok["predicted_latency_ms"] > 0]
    if ok.empty:
        return None
    seconds = ok["predicted_latency_ms"].astype(float) / 1e3
    flops = ok["predicted_flops"].fillna(0).astype(float)
    memory_only = flops == 0
    if not memory_only.any():
        return None
    bandwidth = float((ok["bytes_moved"].astype(float)[memory_only] / seconds[memory_only]).median())
    compute = flops[~memory_only] / seconds[~memory_only]
    ridge_bound = ok["bytes_moved"].astype(float)[~memory_only] / bandwidth
    compute = compute[(seconds[~memory_only] - ridge_bound) > 1e-12 * seconds[~memory_only]]
    if compute.empty:
        return None
    dtype = str(ok["dtype"].iloc[0])
    name = str(ok["device_name"].iloc[0])
    return Hardware(name=f"measuring device: {name}", peak_flops_per_s={dtype: float(compute.max())},
                    mem_bandwidth_bytes_per_s=bandwidth,
                    source="the ceilings the measurement's own prediction used (CPU: calibrated in the measurement)")
