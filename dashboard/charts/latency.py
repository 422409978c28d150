"""Figures of the Latency tab's breakdown, calibrated-prediction and roofline sections: pure functions ``frame ->
plotly Figure`` over the frames of ``dashboard.latency_parts``. Milliseconds everywhere; FLOPs count a multiply-add as 2.
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from xtlens.core.hardware import Hardware
from xtlens.dashboard.latency_parts import PART_ORDER, TERM_WORDS, TERMS

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
    parts = sorted(table["part"].unique(), key=lambda c: (PART_ORDER.index(c.split("@")[0]) if c.split("@")[0] in PART_ORDER
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


def roofline_chart(points: pd.DataFrame, hw: Hardware, dtype: str, *, measured: pd.DataFrame | None = None,
                   title: str) -> go.Figure:
    """Log-log roofline: attainable FLOP/s against arithmetic intensity, the two ceilings and the ridge,
    each part where the closed form puts it (hollow) and, where measured on this hardware, where it ran
    (filled: closed-form FLOPs / measured time). Parts without matrix products (0 FLOPs) have no point on a
    log axis: they are memory-bound by definition and listed in the table."""
    fig = go.Figure()
    peak = hw.peak(dtype)
    bandwidth = hw.mem_bandwidth_bytes_per_s
    pts = points[(points["flops"] > 0)] if not points.empty else points
    x_lo, x_hi = 0.1, 1e4
    if not pts.empty:
        x_lo = min(x_lo, float(pts["intensity_flops_per_byte"].min()) / 2)
        x_hi = max(x_hi, float(pts["intensity_flops_per_byte"].max()) * 2)
    if peak:
        ridge = peak / bandwidth
        xs = [x_lo, ridge, x_hi]
        fig.add_trace(go.Scatter(x=xs, y=[min(peak, x * bandwidth) for x in xs], mode="lines", name=f"{hw.name} roof",
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
        achieved = measured[(measured["flops"] > 0) & (measured["measured_ms"] > 0)]
        for part, group in achieved.groupby("part", sort=False):
            fig.add_trace(go.Scatter(
                x=group["intensity_flops_per_byte"], y=group["flops"] / (group["measured_ms"] / 1e3), mode="markers",
                marker={"symbol": "circle", "size": 9, "color": PART_COLORS.get(part, "#999")},
                name=f"{PART_LABELS.get(part, part)} (measured)",
                hovertemplate="%{x:.3g} FLOP/byte, %{y:.3s}FLOP/s achieved<extra>" + part + "</extra>"))
    ys = [min(peak or bandwidth * x_hi, x_lo * bandwidth)] + ([] if pts.empty else pts["attainable_flops_per_s"].astype(float).tolist())
    if measured is not None and not measured.empty:
        achieved = measured[(measured["flops"] > 0) & (measured["measured_ms"] > 0)]
        ys += (achieved["flops"] / (achieved["measured_ms"] / 1e3)).astype(float).tolist()
    y_lo = min(y for y in ys if y > 0) / 3
    y_hi = (peak or max(ys)) * 3
    fig.update_xaxes(type="log", title="arithmetic intensity (FLOP per byte moved, log scale)",
                     range=[math.log10(x_lo), math.log10(x_hi)], dtick=1)
    fig.update_yaxes(type="log", title="FLOP/s (1 multiply-add = 2 FLOPs, log scale)", tickformat="~s",
                     range=[math.log10(y_lo), math.log10(y_hi)], dtick=1)
    fig.update_layout(title={"text": title, "x": 0}, height=480, margin={"l": 60, "r": 20, "t": 50, "b": 40},
                      legend={"orientation": "v", "x": 1.02, "y": 1})
    return fig


TERM_COLORS = {"compute_ms": "#4C78A8", "memory_ms": "#72B7B2", "launch_ms": "#F58518", "framework_ms": "#E45756"}
PHASE_LABELS = {"forward": "forward", "train_step": "training step", "decode_cached": "decode (KV cache)",
                "decode_uncached": "decode (no cache)"}


def _ms(v: float) -> str:
    """A bar's label: ``3,211 ms``, ``9.29 ms``, ``0.0412 ms``; '' for a missing value."""
    if v != v:
        return ""
    return f"{v:,.0f} ms" if v >= 100 else f"{v:.3g} ms"


def phases_chart(phases: pd.DataFrame, *, title: str) -> go.Figure:
    """Per phase: the predicted total (bars) and, where measured at the same length, the measured median (bars
    beside them), log y axis (a decode step and a training step differ by orders of magnitude)."""
    fig = go.Figure()
    xs = [PHASE_LABELS.get(p, p) for p in phases["phase"]]
    fig.add_trace(go.Bar(x=xs, y=phases["predicted_ms"], name="predicted", marker_color="#4C78A8",
                         text=[_ms(v) for v in phases["predicted_ms"]], textposition="outside",
                         hovertemplate="%{x}: %{y:.4g} ms predicted<extra></extra>"))
    if phases["measured_ms"].notna().any():
        fig.add_trace(go.Bar(x=xs, y=phases["measured_ms"], name="measured (median)", marker_color="#F58518",
                             text=[_ms(v) for v in phases["measured_ms"]],
                             textposition="outside", hovertemplate="%{x}: %{y:.4g} ms measured<extra></extra>"))
    fig.update_yaxes(type="log", title="latency (ms, log scale)")
    fig.update_xaxes(title="phase")
    fig.update_layout(barmode="group", title={"text": title, "x": 0}, height=420,
                      margin={"l": 60, "r": 20, "t": 50, "b": 40}, legend={"orientation": "v", "x": 1.02, "y": 1})
    return fig


def parts_terms_chart(parts: pd.DataFrame, *, title: str) -> go.Figure:
    """Per part (one row each): the predicted time split into its terms (stacked: compute, memory, kernel
    launches, framework) and the measured time of that part where a breakdown measured it (a diamond)."""
    fig = go.Figure()
    ys = [PART_LABELS.get(p, p) for p in parts["part"]]
    for term in TERMS:
        fig.add_trace(go.Bar(y=ys, x=parts[term], orientation="h", name=TERM_WORDS[term],
                             marker_color=TERM_COLORS[term],
                             hovertemplate="%{y}: %{x:.4g} ms<extra>" + term.removesuffix("_ms") + "</extra>"))
    if "measured_ms" in parts and parts["measured_ms"].notna().any():
        sel = parts[parts["measured_ms"].notna()]
        fig.add_trace(go.Scatter(y=[PART_LABELS.get(p, p) for p in sel["part"]], x=sel["measured_ms"], mode="markers",
                                 name="measured (breakdown)", marker={"symbol": "diamond", "size": 11,
                                                                      "color": "#222222"},
                                 hovertemplate="%{y}: %{x:.4g} ms measured<extra></extra>"))
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=list(reversed(ys)), title="part")
    fig.update_xaxes(title="latency (ms)")
    fig.update_layout(barmode="stack", title={"text": title, "x": 0}, height=max(320, 40 + 28 * len(ys)),
                      margin={"l": 60, "r": 20, "t": 50, "b": 40}, legend={"orientation": "v", "x": 1.02, "y": 1})
    return fig
