"""Figures of the Setups view: the training step's memory by stage against the device memory, and the budget
explorer's map and Pareto chart. Pure functions ``frame -> plotly Figure`` (testable without a browser)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from xtlens.core import units

STAGE_LABELS = {  # in the order they happen in a training step (the chart's order)
    "forward_attention": "forward, last attention block",
    "loss": "forward done, at the loss",
    "backward_start": "start of backward",
    "zero3_gather": "ZeRO-3 gathered params",
    "backward_block": "backward, recomputed block",
    "optimizer_step": "optimizer step",
}


def in_step_order(stages_bytes: dict[str, int]) -> dict[str, int]:
    """``stages_bytes`` in the order the stages happen in a training step (``STAGE_LABELS``); a stage this
    module does not know goes last, in its own order."""
    order = list(STAGE_LABELS)
    return dict(sorted(stages_bytes.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))


PART_COLORS = {"weights": "#4C78A8", "buffers": "#9D755D", "gradients": "#F58518", "optimizer": "#E45756",
               "activations": "#54A24B", "loss": "#B279A2", "transient": "#BAB0AC"}


def stages_figure(stages_bytes: dict[str, int], peak_parts_bytes: dict[str, int], peak_stage: str,
                  device_memory_bytes: int | None, *, title: str,
                  memory_label: str = "device memory") -> go.Figure:
    """Left: each stage's live memory (GiB), the peak stage in red; right bar: what is alive at the peak, stacked.
    A dashed line marks the device memory. The stages are drawn in time order (``in_step_order``)."""
    stages_bytes = in_step_order(stages_bytes)
    fig = go.Figure()
    names = [STAGE_LABELS.get(s, s) for s in stages_bytes]
    fig.add_bar(x=names, y=[v / units.GIB for v in stages_bytes.values()], name="live at the stage",
                marker_color=["#D62728" if s == peak_stage else "#7F7F7F" for s in stages_bytes],
                hovertemplate="%{x}: %{y:.3f} GiB<extra></extra>")
    label = f"alive at the peak ({STAGE_LABELS.get(peak_stage, peak_stage)})"
    for part, value in peak_parts_bytes.items():
        if value:
            fig.add_bar(x=[label], y=[value / units.GIB], name=part, marker_color=PART_COLORS.get(part),
                        hovertemplate=f"{part}: %{{y:.3f}} GiB<extra></extra>")
    fig.update_layout(barmode="stack", title=title, yaxis_title="memory per device (GiB, 2^30 bytes)",
                      legend_title="component", height=420, margin=dict(t=60, b=40))
    peak = max(stages_bytes.values())
    if device_memory_bytes and device_memory_bytes > 3 * peak:  # a line far above the bars would flatten them
        fig.update_layout(title=f"{title} ({memory_label} {device_memory_bytes / units.GIB:.1f} GiB: "
                                f"{device_memory_bytes / peak:.0f}x the peak, off the scale)")
    elif device_memory_bytes:
        fig.add_hline(y=device_memory_bytes / units.GIB, line_dash="dash", line_color="black",
                      annotation_text=f"{memory_label} {device_memory_bytes / units.GIB:.1f} GiB",
                      annotation_position="top left")
    return fig


def _matrix(frame: pd.DataFrame, x: str, y: str, value: str) -> tuple[list, list, np.ndarray]:
    wide = frame.pivot_table(index=y, columns=x, values=value, aggfunc="first").sort_index().sort_index(axis=1)
    return list(wide.columns), list(wide.index), wide.to_numpy(dtype=float)


def budget_map(frame: pd.DataFrame, *, x: str, y: str, device_memory_bytes: int, current: tuple[float, float],
               title: str) -> go.Figure:
    """Heat map of the per-device training peak (GiB) over the two axes; iso-memory contour at the device memory
    (black), iso-FLOP contours of the forward FLOPs per token (white, labelled); infeasible points crossed,
    Pareto-front points circled, the current configuration as a star."""
    xs, ys, mem = _matrix(frame, x, y, "train_peak_bytes")
    _, _, flops = _matrix(frame, x, y, "fwd_flops_per_token")
    xi, yi = list(range(len(xs))), list(range(len(ys)))  # category positions: the axes are not evenly spaced
    fig = go.Figure()
    fig.add_heatmap(x=xi, y=yi, z=mem / units.GIB, colorscale="Viridis", colorbar=dict(title="training peak<br>GiB"),
                    hovertemplate=f"{x}=%{{customdata[0]}}, {y}=%{{customdata[1]}}<br>training peak %{{z:.2f}} GiB"
                                  "<extra></extra>",
                    customdata=np.dstack(np.meshgrid(xs, ys)))
    fig.add_contour(x=xi, y=yi, z=mem / units.GIB, contours=dict(start=device_memory_bytes / units.GIB,
                                                                    end=device_memory_bytes / units.GIB, size=1,
                                                                    coloring="none", showlabels=True),
                    line=dict(color="black", width=3, dash="dash"), showscale=False, name="iso-memory: device memory",
                    hoverinfo="skip", showlegend=True)
    fig.add_contour(x=xi, y=yi, z=np.log10(flops), contours=dict(coloring="none", showlabels=True,
                                                                  labelfont=dict(color="white")),
                    line=dict(color="white", width=1), showscale=False, name="iso-FLOP: log10 forward FLOPs/token",
                    hoverinfo="skip", showlegend=True)
    pos_x = {v: i for i, v in enumerate(xs)}
    pos_y = {v: i for i, v in enumerate(ys)}
    bad = frame[~frame["feasible"]]
    fig.add_scatter(x=[pos_x[v] for v in bad[x]], y=[pos_y[v] for v in bad[y]], mode="markers",
                    marker=dict(symbol="x", color="#D62728", size=9), name="does not fit the budget",
                    hoverinfo="skip")
    front = frame[frame["pareto"]]
    fig.add_scatter(x=[pos_x[v] for v in front[x]], y=[pos_y[v] for v in front[y]], mode="markers",
                    marker=dict(symbol="circle-open", color="#FF4B4B", size=16, line=dict(width=3)),
                    name="Pareto front (loss vs training FLOPs)", hoverinfo="skip")
    if current[0] in pos_x and current[1] in pos_y:
        fig.add_scatter(x=[pos_x[current[0]]], y=[pos_y[current[1]]], mode="markers",
                        marker=dict(symbol="star", color="gold", size=20, line=dict(color="black", width=1)),
                        name="current configuration", hoverinfo="skip")
    fig.update_layout(title=title, height=520, legend=dict(orientation="h", y=-0.18),
                      xaxis=dict(title=x, tickmode="array", tickvals=xi, ticktext=[f"{v:g}" for v in xs]),
                      yaxis=dict(title=y, tickmode="array", tickvals=yi, ticktext=[f"{v:g}" for v in ys]))
    return fig


def pareto_figure(frame: pd.DataFrame, *, x: str, y: str, current: tuple[float, float], benefit: str,
                  title: str, unit: str = "nats/token") -> go.Figure:
    """Training FLOPs for the token budget (log) against the predicted loss (in ``unit``, from the law named
    ``benefit``): feasible points blue, infeasible grey, the Pareto front as a line with its interval as a shaded
    band and error bars (``loss_low`` / ``loss_high``, when the law gives one), the current configuration as a
    star."""
    fig = go.Figure()
    hover = (f"{x}=%{{customdata[0]}}, {y}=%{{customdata[1]}}<br>%{{x:.3g}} FLOPs, loss %{{y:.4f}} {unit}"
             f"<br>loss from: {benefit}<extra></extra>")
    for feasible, color, name in ((False, "#BBBBBB", "does not fit"), (True, "#4C78A8", "fits the budget")):
        part = frame[frame["feasible"] == feasible]
        fig.add_scatter(x=part["train_flops"], y=part["loss"], mode="markers", marker=dict(color=color, size=8),
                        name=name, customdata=part[[x, y]].to_numpy(), hovertemplate=hover)
    front = frame[frame["pareto"]].sort_values("train_flops")
    banded = "loss_low" in front and bool((front["loss_high"] > front["loss_low"]).any())
    if banded:
        fig.add_scatter(x=front["train_flops"], y=front["loss_high"], mode="lines", line=dict(width=0),
                        showlegend=False, hoverinfo="skip")
        fig.add_scatter(x=front["train_flops"], y=front["loss_low"], mode="lines", line=dict(width=0),
                        fill="tonexty", fillcolor="rgba(214, 39, 40, 0.18)", name="front: the law's interval",
                        hoverinfo="skip")
    error_y = (dict(type="data", symmetric=False, array=(front["loss_high"] - front["loss"]).to_numpy(),
                    arrayminus=(front["loss"] - front["loss_low"]).to_numpy(), color="#D62728", thickness=1)
               if banded else None)
    fig.add_scatter(x=front["train_flops"], y=front["loss"], mode="lines+markers", line=dict(color="#D62728"),
                    name="Pareto front", customdata=front[[x, y]].to_numpy(), hovertemplate=hover, error_y=error_y)
    cur = frame[(frame[x] == current[0]) & (frame[y] == current[1])]
    if not cur.empty:
        fig.add_scatter(x=cur["train_flops"], y=cur["loss"], mode="markers", name="current configuration",
                        marker=dict(symbol="star", color="gold", size=18, line=dict(color="black", width=1)))
    fig.update_layout(title=title, height=420, xaxis=dict(type="log", title="training FLOPs for the token budget"),
                      yaxis_title=f"predicted loss ({unit})", legend=dict(orientation="h", y=-0.25))
    return fig
