"""Chart builders: pure functions ``DataFrame -> plotly Figure`` (no Streamlit, no I/O).

Every axis title carries its unit: bytes are shown in GiB (2**30 bytes), FLOPs count one
multiply-add as 2 FLOPs, latencies are in milliseconds. Sequence-length axes are logarithmic.

This module holds the house style (axes, palette, one colour per configuration, layout) and the figures that
several views share; the figures of one view sit beside it: ``charts.latency`` (breakdown, roofline),
``charts.setups`` (memory by stage, budget explorer), ``charts.benefits`` (the probes). Nothing here imports
Streamlit or ``dashboard.session`` (``tests/dashboard/test_layout.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
from xtlens.core.units import GIB
from xtlens.dashboard.tables import COMPONENT_LABELS, COMPONENT_ORDER, loglog_slope, regime

FLOPS_AXIS = "FLOPs (1 multiply-add = 2 FLOPs)"
GIB_AXIS = "memory (GiB = 2^30 bytes)"
SEQ_AXIS = "sequence length (tokens, log scale)"
MS_AXIS = "latency (ms, log scale)"
PALETTE = {
    "weights": "#4C78A8", "gradients": "#72B7B2", "AdamW state": "#54A24B", "activations": "#F58518",
    "KV cache": "#B279A2", "loss (log-softmax)": "#EECA3B", "ALiBi bias": "#E45756", "other": "#9D9D9D",
}
SERIES = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#B279A2", "#72B7B2", "#EECA3B", "#9D755D"]
NEUTRAL = "#5F6B7A"  # lines that are not one configuration (a sweep over an axis)
PHASE_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "star")
END_POSITIONS = ("top left", "bottom left", "middle left")  # curves that end at one length: labels apart
PHASE_DASHES = ("dash", "dot", "dashdot", "longdash", "longdashdot", "solid")


# --- one colour per configuration ---------------------------------------------------------------------

def assign_colours(seen: list[str], keys: Sequence[str]) -> dict[str, str]:
    """The colour of each configuration key: its place in ``seen`` (the keys in the order the session first
    drew them; new keys are appended to ``seen``). Every chart asks with the same ``seen`` list, so a
    configuration keeps one colour in Trade-offs, Compare and the measured charts."""
    out = {}
    for key in keys:
        if key not in seen:
            seen.append(key)
        out[key] = SERIES[seen.index(key) % len(SERIES)]
    return out


def colour_by_series(fig: go.Figure, colours: dict[str, str], *, keep_symbols: bool = False) -> go.Figure:
    """Recolour the traces of ``fig`` by series: a trace whose name starts with a key of ``colours`` takes that
    colour; what follows the key in its name (a phase, ``/ forward``) picks the marker symbol and the dash, so
    the phases of one series differ by shape, not colour (``keep_symbols``: a marker symbol the chart set stays).
    The legend is always shown."""
    shapes: dict[str, int] = {}
    names = sorted(colours, key=len, reverse=True)  # the longest matching key wins ("a (2)" before "a")
    for trace in fig.data:
        name = str(trace.name or "")
        key = next((k for k in names if name.startswith(k)), None)
        if key is None:
            continue
        rest = name[len(key):].split(":")[0].strip(" /·")
        k = shapes.setdefault(rest, len(shapes)) if rest and not rest.startswith("—") else 0
        if trace.line is not None:
            trace.line.color = colours[key]
            if trace.line.dash is not None:
                trace.line.dash = PHASE_DASHES[k % len(PHASE_DASHES)]
        if trace.marker is not None:
            trace.marker.color = colours[key]
            if trace.mode and "markers" in trace.mode and not (keep_symbols and trace.marker.symbol):
                trace.marker.symbol = PHASE_SYMBOLS[k % len(PHASE_SYMBOLS)]
        if getattr(trace, "textfont", None) is not None and trace.text is not None:
            trace.textfont.color = colours[key]
    fig.update_layout(showlegend=True)
    return fig


def figure_layout(fig: go.Figure, title: str, *, x: str, y: str, height: int = 420) -> go.Figure:
    """The house style of every chart (left-aligned title, axis titles, legend below), applied to ``fig``."""
    fig.update_layout(
        title={"text": title, "x": 0.0, "xanchor": "left"},
        xaxis_title=x,
        yaxis_title=y,
        height=height,
        margin={"l": 60, "r": 20, "t": 50, "b": 40},
        legend={"orientation": "h", "yanchor": "top", "y": -0.2, "xanchor": "left", "x": 0.0},
        hovermode="closest",
    )
    # SI prefixes on every axis (k, M, G, T): the page writes GFLOPs, so an axis must not say "B" for 10^9
    fig.update_xaxes(exponentformat="SI")
    fig.update_yaxes(exponentformat="SI")
    return fig


def _seq_xaxis(fig: go.Figure, xs: Sequence[float]) -> None:
    """Log x axis with ticks at powers of two (sequence lengths)."""
    xs = [float(v) for v in xs if v and v > 0]
    if xs:
        ticks = nice_ticks(xs)
        fig.update_xaxes(type="log", tickvals=ticks, ticktext=[f"{int(t):,}" for t in ticks])
    else:
        fig.update_xaxes(type="log")


def log_ticks(values: Sequence[float]) -> list[float]:
    """Clean tick positions for a log axis: 1-2-5 in each decade when the values span up to 2 decades,
    1-3 up to 4, powers of ten beyond (never Plotly's unlabelled-magnitude minor ticks "2, 3, 4")."""
    vals = [float(v) for v in values if v is not None and v == v and v > 0]
    if not vals:
        return []
    lo, hi = min(vals), max(vals)
    k0, k1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    steps = (1, 2, 5) if k1 - k0 <= 2 else (1, 3) if k1 - k0 <= 4 else (1,)
    ticks = [m * 10.0**k for k in range(k0, k1 + 1) for m in steps]
    inside = [t for t in ticks if lo / 1.5 <= t <= hi * 1.5]
    return inside if len(inside) >= 2 else [t for t in ticks if lo / 10 <= t <= hi * 10]


def tick_text(v: float) -> str:
    """``0.05``, ``2``, ``500``, ``2k``, ``10M``: short, with the magnitude in every label."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= scale:
            return f"{v / scale:g}{suffix}"
    return f"{v:g}"


MIN_TICKS = 3  # a log axis shows at least this many labelled ticks, whatever its values (2 points, 1 point)
DENSE_MANTISSAS = (1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 6, 7, 8, 9)  # ticks per decade of a narrow log axis


def log_axis(values: Sequence[float]) -> tuple[list[float], list[float]]:
    """Tick positions and the range (log10 units, for ``range=``) of a log axis over ``values`` that shows at
    least ``MIN_TICKS`` labelled ticks: ``log_ticks`` when that many fall near the values, else
    ``DENSE_MANTISSAS`` per decade from the tick at or below the smallest value to the one at or above the
    largest (one more on the nearer side while too few). The range spans the values and the ticks with a small margin. ``([], [])`` without a
    positive value."""
    vals = [float(v) for v in values if v is not None and v == v and v > 0 and math.isfinite(v)]
    if not vals:
        return [], []
    lo, hi = min(vals), max(vals)
    ticks = [t for t in log_ticks(vals) if lo / 1.5 <= t <= hi * 1.5]
    if len(ticks) < MIN_TICKS:
        k0, k1 = math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1
        dense = [float(f"{m * 10.0**k:.12g}") for k in range(k0, k1 + 1) for m in DENSE_MANTISSAS]
        below = max(t for t in dense if t <= lo * (1 + 1e-9))
        above = min(t for t in dense if t >= hi * (1 - 1e-9))
        ticks = [t for t in dense if below <= t <= above]
        while len(ticks) < MIN_TICKS:  # one more tick on the side that widens the axis less
            down, up = dense[dense.index(ticks[0]) - 1], dense[dense.index(ticks[-1]) + 1]
            if ticks[0] / down <= up / ticks[-1]:
                ticks.insert(0, down)
            else:
                ticks.append(up)
    a, b = math.log10(min(lo, ticks[0])), math.log10(max(hi, ticks[-1]))
    pad = max(0.04 * (b - a), 0.02)
    return ticks, [a - pad, b + pad]


def _log_yaxis(fig: go.Figure, values: Sequence[float]) -> None:
    ticks, span = log_axis(values)
    if ticks:
        fig.update_yaxes(type="log", tickvals=ticks, ticktext=[tick_text(t) for t in ticks], range=span)
    else:
        fig.update_yaxes(type="log")


TITLE_WRAP_CHARS = 50  # a chart title wraps at spaces to lines of this many characters (Plotly does not wrap)


def wrap_title(title: str, width: int = TITLE_WRAP_CHARS) -> str:
    """``title`` with ``<br>`` at spaces so that no line is longer than ``width`` characters (a longer word stays
    whole); a title that has its own ``<br>`` is left as it is."""
    if "<br>" in title or len(title) <= width:
        return title
    lines = [""]
    for word in title.split(" "):
        if lines[-1] and len(lines[-1]) + 1 + len(word) > width:
            lines.append(word)
        else:
            lines[-1] = f"{lines[-1]} {word}" if lines[-1] else word
    return "<br>".join(lines)


TITLE_LINE_PX = 17  # how far Plotly moves a title up per line after its first
TOOLBAR_PX = 36  # the Plotly toolbar (modebar: 26 px, 7 px below the chart top) over its top right, and Streamlit's own above it


def toolbar_room(fig: go.Figure) -> go.Figure:
    """Move the title of ``fig`` below the strip the chart toolbars take at its top (``TOOLBAR_PX``), growing the
    top margin and the height by that strip, so a toolbar never covers the title (a long title reaches under the
    toolbar at the right); a long title wraps (``wrap_title``) instead of running off a narrow chart. A figure
    without a title is left alone."""
    title = fig.layout.title.text if fig.layout.title is not None else None
    if not title:
        return fig
    top = fig.layout.margin.t if fig.layout.margin.t is not None else 100  # Plotly's default top margin
    text = wrap_title(str(title))
    lines = text.count("<br>") + 1
    height = (fig.layout.height or 450) + TOOLBAR_PX
    # the title's top TOOLBAR_PX below the figure's top, as a fraction of the container: Plotly anchors a title of
    # several lines at its first line, which it then moves up by TITLE_LINE_PX per further line (measured in Chromium)
    below = TOOLBAR_PX + TITLE_LINE_PX * (lines - 1)
    fig.update_layout(title={"text": text, "yref": "container", "y": 1.0 - below / height, "yanchor": "top",
                             "pad": {"t": 0}},
                      margin={"t": max(top, TOOLBAR_PX + 24 * lines + 10)}, height=height)
    return fig


def empty_figure(title: str, message: str) -> go.Figure:
    """A chart with no data: ``title`` and ``message`` in its middle (what to do to fill it)."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return figure_layout(fig, title, x="", y="", height=240)


# --- overview ----------------------------------------------------------------------------------------

def params_bar(frame: pd.DataFrame, *, title: str = "Parameters: embedding vs non-embedding (count)") -> go.Figure:
    """``frame``: part, num_params."""
    fig = go.Figure(go.Bar(
        x=frame["num_params"].tolist(), y=frame["part"].tolist(), orientation="h",
        text=[f"{int(v):,}" for v in frame["num_params"]], textposition="auto",
        marker_color=SERIES[: len(frame)],
        hovertemplate="%{y}: %{x:,} parameters<extra></extra>",
    ))
    return figure_layout(fig, title, x="parameters (count)", y="", height=220)


def flops_split_bar(frame: pd.DataFrame, *, title: str) -> go.Figure:
    """``frame``: part, flops (FLOPs of one forward, by matmul family)."""
    total = float(frame["flops"].sum()) or 1.0
    fig = go.Figure(go.Bar(
        x=frame["flops"].tolist(), y=frame["part"].tolist(), orientation="h",
        text=[f"{v / total:.0%}" for v in frame["flops"]], textposition="outside", cliponaxis=False,
        marker_color=SERIES[0],
        hovertemplate="%{y}: %{x:.4s} FLOPs<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed")
    return figure_layout(fig, title, x=FLOPS_AXIS, y="", height=300)


# --- FLOPs ---------------------------------------------------------------------------------------------

def flops_vs_seq(frame: pd.DataFrame, *, title: str = "Closed-form FLOPs vs sequence length (log-log)") -> go.Figure:
    """``frame``: seq_len_tokens, fwd_flops, fwd_flops_causal, train_step_flops."""
    fig = go.Figure()
    series = (("fwd_flops", "forward, full n x n attention"), ("fwd_flops_causal", "forward, causal half"),
              ("train_step_flops", "training step (no recomputation)"))
    for i, (col, name) in enumerate(series):
        fig.add_trace(go.Scatter(x=frame["seq_len_tokens"].tolist(), y=frame[col].tolist(), mode="lines+markers",
                                 name=name, line={"color": SERIES[i]},
                                 hovertemplate="n=%{x}: %{y:.4s} FLOPs<extra>" + name + "</extra>"))
    _seq_xaxis(fig, frame["seq_len_tokens"].tolist())
    _log_yaxis(fig, [float(v) for c, _ in series for v in frame[c]])
    return figure_layout(fig, title, x=SEQ_AXIS, y=FLOPS_AXIS + ", log scale")


COUNTER_COLUMNS = (("torch_counter_flops", "torch FlopCounterMode"), ("fvcore_flops", "fvcore (2 x MACs)"))


def flops_counted_vs_predicted(frame: pd.DataFrame, *, title: str) -> go.Figure:
    """Per ``series`` (a run and phase, ``"<run> / <phase>"``): the closed form as a dashed line and each
    counter's total as markers labelled with its difference from the closed form, vs sequence length (log-log).

    ``frame``: series, seq_len_tokens, predicted_flops, torch_counter_flops, fvcore_flops (FLOPs: 1 multiply-add
    = 2 FLOPs). Trace names are ``"<series>: closed form"`` / ``"<series>: <counter>"``."""
    if frame.empty:
        return empty_figure(title, "no FLOP rows")
    fig = go.Figure()
    values: list[float] = []
    for i, (name, group) in enumerate(frame.groupby("series", sort=False)):
        group = group.sort_values("seq_len_tokens")
        colour = SERIES[i % len(SERIES)]
        xs = group["seq_len_tokens"].astype(float).tolist()
        pred = [float(v) if pd.notna(v) else None for v in group["predicted_flops"]]
        fig.add_trace(go.Scatter(x=xs, y=pred, name=f"{name}: closed form", mode="lines",
                                 line={"dash": "dash", "color": colour},
                                 hovertemplate="n=%{x}: %{y:.6s} FLOPs<extra>closed form</extra>"))
        values += [v for v in pred if v]
        for j, (col, label) in enumerate(COUNTER_COLUMNS):
            if col not in group or group[col].isna().all():
                continue
            ys = [float(v) if pd.notna(v) else None for v in group[col]]
            diff = [f"{100 * (y - p) / p:+.3f}%" if y is not None and p else "" for y, p in zip(ys, pred, strict=True)]
            fig.add_trace(go.Scatter(x=xs, y=ys, name=f"{name}: {label}", mode="markers+text", text=diff,
                                     textposition="bottom center" if j else "top center",
                                     textfont={"color": colour, "size": 10},
                                     marker={"size": 10 - 3 * j, "color": colour, "symbol": PHASE_SYMBOLS[j]},
                                     hovertemplate="n=%{x}: %{y:.6s} FLOPs (%{text} vs closed form)<extra>"
                                                   + label + "</extra>"))
            values += [v for v in ys if v]
    _seq_xaxis(fig, frame["seq_len_tokens"].tolist())
    _log_yaxis(fig, values)
    return figure_layout(fig, title, x=SEQ_AXIS, y=FLOPS_AXIS + ", log scale")


def breakdown_bar(frame: pd.DataFrame, *, label: str, value: str, title: str, x_title: str,
                  top: int = 25) -> go.Figure:
    """Horizontal bars of the ``top`` largest ``value`` per ``label`` (per-module / per-operator breakdowns)."""
    if frame.empty:
        return empty_figure(title, "no rows")
    data = frame[[label, value]].dropna().sort_values(value, ascending=False).head(top)
    fig = go.Figure(go.Bar(x=data[value].astype(float).tolist(), y=data[label].astype(str).tolist(), orientation="h",
                           marker_color=SERIES[0], hovertemplate="%{y}: %{x:.4s}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    return figure_layout(fig, title, x=x_title, y="", height=max(260, 24 * len(data) + 100))


def crosscheck_bar(frame: pd.DataFrame, *, title: str) -> go.Figure:
    """Grouped bars, one group per ``phase``: ``frame`` columns phase, method, flops."""
    if frame.empty:
        return empty_figure(title, "no rows")
    fig = go.Figure()
    reference = frame.groupby("phase", sort=False)["flops"].first()  # the first method is the reference
    for i, (method, group) in enumerate(frame.groupby("method", sort=False)):
        ys = group["flops"].astype(float).tolist()
        rel = [y / reference[p] - 1 if reference[p] else 0.0 for p, y in zip(group["phase"], ys, strict=True)]
        fig.add_trace(go.Bar(x=group["phase"].tolist(), y=ys, name=str(method),
                             text=[f"{y / 1e9:,.3f} G" + (f" ({r:+.2%})" if i else "") for y, r in zip(ys, rel, strict=True)],
                             textposition="inside", textangle=-90,
                             marker_color=SERIES[i % len(SERIES)],
                             hovertemplate="%{x}: %{y:.5s} FLOPs<extra>" + str(method) + "</extra>"))
    fig.update_layout(barmode="group")
    return figure_layout(fig, title, x="phase", y=FLOPS_AXIS)


# --- memory --------------------------------------------------------------------------------------------

def memory_stacked(frame: pd.DataFrame, *, phase: str, title: str | None = None) -> go.Figure:
    """Stacked areas of memory by component vs sequence length for one ``phase`` (inference or train_step).

    ``frame``: seq_len_tokens, phase, component, bytes (long format, ``tables.memory_curve``); components
    are drawn under their ``tables.COMPONENT_LABELS`` (weights and buffers as one band).
    """
    data = frame[frame["phase"] == phase].assign(component=lambda f: f["component"].map(COMPONENT_LABELS))
    data = data.groupby(["component", "seq_len_tokens"], sort=False)["bytes"].sum().reset_index()
    title = title or f"Predicted {phase} memory by component (stacked)"
    fig = go.Figure()
    present = [c for c in COMPONENT_ORDER if c in set(data["component"])]
    for comp in present:
        part = data[data["component"] == comp].sort_values("seq_len_tokens")
        if not (part["bytes"] != 0).any():
            continue
        fig.add_trace(go.Scatter(
            x=part["seq_len_tokens"].tolist(), y=(part["bytes"].astype(float) / GIB).tolist(), name=comp,
            stackgroup="one", mode="lines", line={"width": 0.5, "color": PALETTE.get(comp)},
            hovertemplate="n=%{x}: %{y:.3f} GiB<extra>" + comp + "</extra>",
        ))
    _seq_xaxis(fig, frame["seq_len_tokens"].tolist())
    return figure_layout(fig, title, x=SEQ_AXIS, y=GIB_AXIS)


def measured_vs_predicted(frame: pd.DataFrame, *, title: str, measured_label: str = "measured") -> go.Figure:
    """Per phase: predicted (dashed line) and measured (markers, labelled with the relative error) in GiB vs
    sequence length, on log-log axes (a 16 GiB point would flatten the rest on a linear axis).

    ``frame``: seq_len_tokens, phase, predicted_bytes, measured_bytes. ``measured_label`` names the method
    (``simulated`` for MemTracker under fake tensors); an optional ``measured_label`` column names it per phase
    (a chart of several runs, some simulated and some measured).
    """
    if frame.empty:
        return empty_figure(title, "not measured yet — press Measure")
    fig = go.Figure()
    for i, (phase, group) in enumerate(frame.groupby("phase", sort=False)):
        group = group.sort_values("seq_len_tokens")
        color = SERIES[i % len(SERIES)]
        pred = group["predicted_bytes"].astype(float)
        meas = group["measured_bytes"].astype(float)
        label = str(group["measured_label"].iloc[0]) if "measured_label" in group else measured_label
        err = [f"{100 * (m - p) / p:+.1f}%" if p == p and p and m == m else "" for m, p in zip(meas, pred, strict=True)]
        fig.add_trace(go.Scatter(x=group["seq_len_tokens"].tolist(), y=(pred / GIB).tolist(),
                                 name=f"{phase}: predicted", mode="lines", line={"dash": "dash", "color": color},
                                 hovertemplate="n=%{x}: %{y:.4g} GiB<extra>predicted</extra>"))
        fig.add_trace(go.Scatter(x=group["seq_len_tokens"].tolist(), y=(meas / GIB).tolist(), text=err,
                                 name=f"{phase}: {label}", mode="markers+text",
                                 textposition="top center", textfont={"color": color, "size": 10},
                                 marker={"size": 9, "color": color},
                                 hovertemplate="n=%{x}: %{y:.4g} GiB (%{text} vs predicted)<extra>"
                                               + label + "</extra>"))
    _seq_xaxis(fig, frame["seq_len_tokens"].tolist())
    _log_yaxis(fig, [v / GIB for v in pd.concat([frame["predicted_bytes"], frame["measured_bytes"]]).dropna()])
    return figure_layout(fig, title, x=SEQ_AXIS, y=GIB_AXIS + ", log scale")


# --- latency -------------------------------------------------------------------------------------------

def latency_loglog(frame: pd.DataFrame, *, title: str, y: str = "latency_median_ms",
                   y_title: str = MS_AXIS, series: str = "series",
                   colours: dict[str, str] | None = None, dashes: dict[str, str] | None = None) -> go.Figure:
    """Log-log latency vs sequence length, one line per ``series`` with its fitted slope in the legend.

    ``frame``: seq_len_tokens, ``series``, ``y``, optional latency_min_ms / latency_max_ms (error bars) and
    sdpa_backend (the kernel that ran, shown as the point label and in the hover). ``colours`` /
    ``dashes``: series -> colour / dash, so a configuration keeps its colour in every chart.
    """
    data = frame.dropna(subset=[y])
    if data.empty:
        return empty_figure(title, "not measured yet — press Measure")
    fig = go.Figure()
    for i, (name, group) in enumerate(data.groupby(series, sort=False)):
        group = group.sort_values("seq_len_tokens")
        xs = group["seq_len_tokens"].astype(float).tolist()
        ys = group[y].astype(float).tolist()
        slope = loglog_slope(xs, ys)
        words = regime(slope, "throughput" if y == "tokens_per_s" else "latency")
        label = f"{name} — slope {slope:.2f} ({words})" if slope is not None else str(name)
        kernels = group["sdpa_backend"].fillna("n/a").astype(str).tolist() if "sdpa_backend" in group else None
        err = None
        if y == "latency_median_ms" and {"latency_min_ms", "latency_max_ms"} <= set(group.columns):
            err = {"type": "data", "symmetric": False,
                   "array": (group["latency_max_ms"].astype(float) - group[y].astype(float)).tolist(),
                   "arrayminus": (group[y].astype(float) - group["latency_min_ms"].astype(float)).tolist(),
                   "thickness": 1}
        fig.add_trace(go.Scatter(
            x=xs, y=ys, name=label, mode="lines+markers",
            line={"color": (colours or {}).get(str(name), SERIES[i % len(SERIES)]),
                  "dash": (dashes or {}).get(str(name), "solid")},
            error_y=err, customdata=kernels,
            hovertemplate="n=%{x}: %{y:.4g}<br>kernel: %{customdata}<extra>" + str(name) + "</extra>"
            if kernels else "n=%{x}: %{y:.4g}<extra>" + str(name) + "</extra>",
        ))
    _seq_xaxis(fig, data["seq_len_tokens"].tolist())
    values = data[y].astype(float).tolist()
    if y == "latency_median_ms" and {"latency_min_ms", "latency_max_ms"} <= set(data.columns):
        values += data["latency_min_ms"].dropna().astype(float).tolist() + data["latency_max_ms"].dropna().tolist()
    _log_yaxis(fig, values)
    fig.update_layout(showlegend=True)  # the slope and its words are in the legend, also for a single line
    return figure_layout(fig, title, x=SEQ_AXIS, y=y_title, height=460)


# --- trade-offs ------------------------------------------------------------------------------------------

def sweep_metric(frame: pd.DataFrame, *, axis: str, metric: str, title: str, y_title: str,
                 scale: float = 1.0, log_y: bool = False, reference: float | None = None,
                 reference_label: str = "", current_colour: str = SERIES[0]) -> go.Figure:
    """``metric`` against the swept ``axis`` value (a neutral line: the sweep is many configurations); the current
    configuration is a larger diamond in its own colour (``current_colour``, the one it has in every chart)."""
    if frame.empty:
        return empty_figure(title, "no valid configuration on this axis")
    data = frame.sort_values("axis_value")
    xs = data["axis_value"].astype(float).tolist()
    ys = (data[metric].astype(float) / scale).tolist()
    fig = go.Figure(go.Scatter(x=xs, y=ys, mode="lines+markers", name=metric, line={"color": NEUTRAL},
                               hovertemplate=axis + "=%{x}: %{y:.4g}<extra></extra>"))
    cur = data[data["is_current"]]
    if not cur.empty:
        fig.add_trace(go.Scatter(x=cur["axis_value"].astype(float).tolist(), y=(cur[metric].astype(float) / scale).tolist(),
                                 mode="markers", name="current config",
                                 marker={"size": 14, "color": current_colour, "symbol": "diamond",
                                         "line": {"width": 1, "color": "#222222"}},
                                 hovertemplate=axis + "=%{x}: %{y:.4g}<extra>current</extra>"))
    if reference is not None:  # a trace, not a shape: shapes on a log axis take log10 coordinates
        fig.add_trace(go.Scatter(x=[min(xs), max(xs)], y=[reference / scale] * 2, mode="lines+text",
                                 name=reference_label, line={"dash": "dot", "color": "#888888"},
                                 text=[reference_label, ""], textposition="top right", hoverinfo="skip"))
    fig.update_xaxes(type="log", tickvals=xs, ticktext=[f"{int(v):,}" for v in xs])
    if log_y:
        _log_yaxis(fig, ys + ([reference / scale] if reference is not None else []))
    fig.update_layout(showlegend=False)
    return figure_layout(fig, title, x=f"{axis} (log scale)", y=y_title, height=320)


# --- compare ------------------------------------------------------------------------------------------

def compare_bars(long: pd.DataFrame, *, metric: str, title: str, y_title: str, scale: float = 1.0,
                 colours: dict[str, str] | None = None) -> go.Figure:
    """One bar per configuration for ``metric`` (rows of ``tables.compare_table``); ``colours``: configuration ->
    colour (``assign_colours``), else by order."""
    data = long[long["metric"] == metric]
    if data.empty:
        return empty_figure(title, "nothing to compare")
    names = data["config"].astype(str).tolist()
    fig = go.Figure(go.Bar(x=names, y=(data["value"].astype(float) / scale).tolist(),
                           marker_color=[(colours or {}).get(n, SERIES[i % len(SERIES)]) for i, n in enumerate(names)],
                           hovertemplate="%{x}: %{y:.4g}<extra></extra>"))
    return figure_layout(fig, title, x="configuration", y=y_title, height=320)


DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "star")
END_POSITIONS = ("top left", "bottom left", "middle left")  # curves that end at one length: labels apart


def overlay_lines(frame: pd.DataFrame, *, x: str, y: str, series: str, title: str, x_title: str, y_title: str,
                  scale: float = 1.0, log_x: bool = True, log_y: bool = False,
                  ends: dict[str, str] | None = None, colours: dict[str, str] | None = None) -> go.Figure:
    """One line per ``series`` value (e.g. configuration) of ``y`` against ``x``.

    Each series has its own colour (``colours``: series -> colour, else by order), dash and marker, so identical
    curves stay visible on top of each other. ``ends``: series -> why its curve stops early; its last
    point gets an X marker and that reason next to it.
    """
    if frame.empty:
        return empty_figure(title, "nothing to show")
    fig = go.Figure()
    for i, (name, group) in enumerate(frame.groupby(series, sort=False)):
        group = group.sort_values(x)
        xs, ys = group[x].astype(float).tolist(), (group[y].astype(float) / scale).tolist()
        colour = (colours or {}).get(str(name), SERIES[i % len(SERIES)])
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=str(name),
                                 line={"color": colour, "dash": DASHES[i % len(DASHES)], "width": 2 + (i == 0)},
                                 marker={"symbol": SYMBOLS[i % len(SYMBOLS)], "size": 8 - i % 3},
                                 hovertemplate="%{x}: %{y:.4g}<extra>" + str(name) + "</extra>"))
        reason = (ends or {}).get(str(name))
        if reason and xs:  # a short label in the curve's colour (the name is in the legend and the hover)
            placed = sum(1 for t in fig.data if t.marker.symbol == "x" and t.x and t.x[0] == xs[-1])
            fig.add_trace(go.Scatter(x=[xs[-1]], y=[ys[-1]], mode="markers+text", showlegend=False,
                                     marker={"symbol": "x", "size": 14, "color": colour},
                                     text=[f"ends: {reason}"], textposition=END_POSITIONS[placed % len(END_POSITIONS)],
                                     textfont={"color": colour}, cliponaxis=False,
                                     hovertext=[f"{name}: ends, {reason}"], hoverinfo="text"))
    if log_x:
        _seq_xaxis(fig, frame[x].astype(float).tolist())
    if log_y:
        _log_yaxis(fig, (frame[y].astype(float) / scale).tolist())
    return figure_layout(fig, title, x=x_title, y=y_title)


def nice_ticks(values: Sequence[float]) -> list[float]:
    """Powers of two covering ``values`` (tick positions for log axes of sequence lengths)."""
    lo, hi = min(values), max(values)
    return [2.0**k for k in range(int(math.floor(math.log2(lo))), int(math.ceil(math.log2(hi))) + 1)]
