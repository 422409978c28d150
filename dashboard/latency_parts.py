"""Frames and figures of the Latency tab's breakdown, what-if and roofline sections (pure: no Streamlit).

Frames come from measured rows (``measurement`` ``breakdown`` / ``whatif``) and from ``core.roofline``;
figures are ``DataFrame -> plotly Figure``. Milliseconds everywhere; FLOPs count a multiply-add as 2.
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from xtlens.core.config import ModelConfig, Workload
from xtlens.core.hardware import Hardware
from xtlens.core.roofline import LATENCY_PARTS, TRAIN_PARTS, part_costs

PART_LABELS = {
    "embedding": "embedding", "token_shift": "token shift", "norms": "norms", "qkv_proj": "Q/K/V projections",
    "rotary": "rotary / xpos", "alibi_bias": "ALiBi bias construction", "mask_prep": "mask preparation",
    "attention": "attention kernel", "out_proj": "output projection", "feedforward": "feed-forward",
    "residual": "residual (+ scale)", "logits": "logits", "loss": "loss", "backward": "backward",
    "optimizer": "optimizer (AdamW)", "attention_other": "other attention code", "framework_other":
    "decoder loop / wrapper", "remainder": "remainder (outside any op; GPU: idle)",
}
PART_COLORS = {
    "embedding": "#9D755D", "token_shift": "#BAB0AC", "norms": "#72B7B2", "qkv_proj": "#4C78A8",
    "rotary": "#B279A2", "alibi_bias": "#E45756", "mask_prep": "#FF9DA6", "attention": "#F58518",
    "out_proj": "#54A24B", "feedforward": "#EECA3B", "residual": "#79706E", "logits": "#1F77B4",
    "loss": "#17BECF", "backward": "#8C564B", "optimizer": "#2CA02C", "attention_other": "#D3D3D3",
    "framework_other": "#C7C7C7", "remainder": "#7F7F7F",
}
_ORDER = list(LATENCY_PARTS) + list(TRAIN_PARTS) + ["attention_other", "framework_other", "remainder"]
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
    parts["order"] = parts["component"].map(lambda c: _ORDER.index(c.split("@")[0]) if c.split("@")[0] in _ORDER else 99)
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


def breakdown_stacked(table: pd.DataFrame, *, title: str) -> go.Figure:
    """Stacked bars: per sequence length (and configuration), the measured ms of every part."""
    fig = go.Figure()
    if table.empty:
        fig.add_annotation(text="not measured yet — press Measure", showarrow=False, x=0.5, y=0.5, xref="paper",
                           yref="paper")
        fig.update_layout(title={"text": title, "x": 0}, height=240)
        return fig
    multi = table["config"].nunique() > 1
    table = table.assign(x=[f"{c} · {n:,}" if multi else f"{n:,}" for c, n in zip(table["config"],
                                                                                    table["seq_len_tokens"], strict=True)])
    xs = list(dict.fromkeys(table.sort_values(["config", "seq_len_tokens"])["x"]))
    parts = sorted(table["part"].unique(), key=lambda c: (_ORDER.index(c.split("@")[0]) if c.split("@")[0] in _ORDER
                                                          else 99, c))
    for part in parts:
        sel = table[table["part"] == part].set_index("x")
        base = part.split("@")[0]
        fig.add_trace(go.Bar(
            x=xs, y=[float(sel["measured_ms"].get(x, 0.0)) for x in xs], name=PART_LABELS.get(base, base)
            + (f" (block {part.split('@')[1]})" if "@" in part else ""),
            marker_color=PART_COLORS.get(base, "#999999"),
            customdata=[float(sel["share_%"].get(x, math.nan)) for x in xs],
            hovertemplate="%{x} tokens: %{y:.4g} ms (%{customdata:.1f} % of the total)<extra>"
            + PART_LABELS.get(base, base) + "</extra>"))
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=xs)
    fig.update_layout(barmode="stack", title={"text": title, "x": 0}, height=480,
                      xaxis_title="sequence length (tokens)" + (" per configuration" if multi else ""),
                      yaxis_title="latency (ms)", margin={"l": 60, "r": 20, "t": 50, "b": 40},
                      legend={"orientation": "v", "x": 1.02, "y": 1})
    return fig


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


def roofline_chart(points: pd.DataFrame, hw: Hardware, dtype: str, *, measured: pd.DataFrame | None = None,
                   title: str) -> go.Figure:
    """Log-log roofline: attainable FLOP/s against arithmetic intensity, the two ceilings and the ridge,
    each part where the closed form puts it (hollow) and, where measured on this hardware, where it ran
    (filled: closed-form FLOPs / measured time). Parts without matrix products (0 FLOPs) have no point on a
    log axis: they are memory-bound by definition and listed in the table."""
    fig = go.Figure()
    peak = hw.peak(dtype)
    bw = hw.mem_bandwidth_bytes_per_s
    pts = points[(points["flops"] > 0)] if not points.empty else points
    lo, hi = 0.1, 1e4
    if not pts.empty:
        lo = min(lo, float(pts["intensity_flops_per_byte"].min()) / 2)
        hi = max(hi, float(pts["intensity_flops_per_byte"].max()) * 2)
    if peak:
        ridge = peak / bw
        xs = [lo, ridge, hi]
        fig.add_trace(go.Scatter(x=xs, y=[min(peak, x * bw) for x in xs], mode="lines", name=f"{hw.name} roof",
                                 line={"color": "#333333"},
                                 hovertemplate="%{x:.3g} FLOP/byte: %{y:.3s}FLOP/s<extra>roof</extra>"))
        fig.add_vline(x=ridge, line_dash="dot", line_color="#888888",
                      annotation_text=f"ridge {ridge:.3g} FLOP/byte", annotation_position="bottom right")
    for part, group in pts.groupby("part", sort=False):
        fig.add_trace(go.Scatter(
            x=group["intensity_flops_per_byte"], y=group["attainable_flops_per_s"], mode="markers",
            marker={"symbol": "circle-open", "size": 12, "color": PART_COLORS.get(part, "#999")},
            name=f"{PART_LABELS.get(part, part)} (predicted)",
            hovertemplate="%{x:.3g} FLOP/byte, %{y:.3s}FLOP/s predicted<extra>" + part + "</extra>"))
    if measured is not None and not measured.empty:
        m = measured[(measured["flops"] > 0) & (measured["measured_ms"] > 0)]
        for part, group in m.groupby("part", sort=False):
            fig.add_trace(go.Scatter(
                x=group["intensity_flops_per_byte"], y=group["flops"] / (group["measured_ms"] / 1e3), mode="markers",
                marker={"symbol": "circle", "size": 9, "color": PART_COLORS.get(part, "#999")},
                name=f"{PART_LABELS.get(part, part)} (measured)",
                hovertemplate="%{x:.3g} FLOP/byte, %{y:.3s}FLOP/s achieved<extra>" + part + "</extra>"))
    ys = [min(peak or bw * hi, lo * bw)] + ([] if pts.empty else pts["attainable_flops_per_s"].astype(float).tolist())
    if measured is not None and not measured.empty:
        m = measured[(measured["flops"] > 0) & (measured["measured_ms"] > 0)]
        ys += (m["flops"] / (m["measured_ms"] / 1e3)).astype(float).tolist()
    y_lo = min(y for y in ys if y > 0) / 3
    y_hi = (peak or max(ys)) * 3
    fig.update_xaxes(type="log", title="arithmetic intensity (FLOP per byte moved, log scale)",
                     range=[math.log10(lo), math.log10(hi)], dtick=1)
    fig.update_yaxes(type="log", title="FLOP/s (1 multiply-add = 2 FLOPs, log scale)", tickformat="~s",
                     range=[math.log10(y_lo), math.log10(y_hi)], dtick=1)
    fig.update_layout(title={"text": title, "x": 0}, height=480, margin={"l": 60, "r": 20, "t": 50, "b": 40},
                      legend={"orientation": "v", "x": 1.02, "y": 1})
    return fig


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
