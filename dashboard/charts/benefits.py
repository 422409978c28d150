"""Chart builders for the Benefits view (and the Trade-offs view's measured-benefit panel).

Pure functions ``probe DataFrame -> plotly Figure`` (no Streamlit). Losses are validation cross-entropy in
nats per token unless an axis says bits per byte; training FLOPs follow the cost model (3 x forward, 1
multiply-add = 2 FLOPs). Error bars are the min..max over seeds; markers are the seed mean.
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from xtlens.core.units import fmt_flops
from xtlens.dashboard.charts import SERIES, empty_figure, figure_layout, log_axis, log_ticks
from xtlens.profiling.benefit import analysis, report

LOSS_AXIS = "validation loss (nats/token)"
FLOPS_AXIS = "training FLOPs spent (cost model, 2 per multiply-add; log)"
PARAMS_AXIS = "parameters (count, log)"


def _float(s: pd.Series) -> pd.Series:
    return s.astype("Float64").astype(float)


def scaling_points(frame: pd.DataFrame, *, x: str, budget_kind: str, title: str, x_title: str,
                   current: int | None = None, fit: bool = True) -> go.Figure:
    """Final validation loss per swept value (seed mean, min..max bars) against ``x`` (num_params or
    train_flops), with the power law fitted to every seed's point (``fit``) and the current value ringed.
    At an equal FLOP budget use ``x="num_params"``, ``fit=False``: the IsoFLOP curve (its minimum is the
    compute-optimal size for that budget; a power law does not describe it)."""
    fin = analysis.final_evals(frame)
    fin = fin[(fin["probe"] == "scaling") & (fin["budget_kind"] == budget_kind) & (fin["status"] == "ok")]
    if fin.empty:
        return empty_figure(title, f"no finished {budget_kind}-budget runs")
    from xtlens.profiling.benefit.probe_scaling import best_lr_rows

    best = best_lr_rows(frame)  # with a learning-rate sweep: each point at its best rate
    if not best.empty:
        fin = fin[fin["run_key"].isin(set(best["run_key"]))]
    fin = fin.assign(_x=_float(fin[x]), _y=_float(fin["val_loss_nats"]))
    g = fin.groupby("axis_value").agg(x=("_x", "mean"), y=("_y", "mean"), lo=("_y", "min"), hi=("_y", "max"),
                                      seeds=("seed", "count")).reset_index()
    axis = fin["axis"].iloc[0]
    fig = go.Figure(go.Scatter(
        x=g["x"], y=g["y"], mode="markers+text", name=f"measured (mean of {int(g['seeds'].max())} seed(s))",
        text=[f"{axis}={int(v)}" for v in g["axis_value"]], textposition="top center",
        error_y={"type": "data", "symmetric": False, "array": g["hi"] - g["y"], "arrayminus": g["y"] - g["lo"]},
        marker={"size": 10, "color": SERIES[0]}))
    law = analysis.fit_power_law(fin["_x"].tolist(), fin["_y"].tolist(), x_name="N" if x == "num_params" else "C")
    if fit and law is not None:
        xs = [g["x"].min() * (g["x"].max() / g["x"].min()) ** (k / 40) for k in range(41)]
        fig.add_trace(go.Scatter(x=xs, y=[law(v) for v in xs], mode="lines", name="your fit: " + law.describe()
                                 .split(" — ")[0], line={"dash": "dash", "color": SERIES[1]}))
    if current is not None and (g["axis_value"] == current).any():
        row = g[g["axis_value"] == current].iloc[0]
        fig.add_trace(go.Scatter(x=[row["x"]], y=[row["y"]], mode="markers", name=f"current ({axis}={current})",
                                 marker={"size": 20, "symbol": "circle-open", "color": "#E45756", "line": {"width": 3}}))
    fig.update_xaxes(type="log")
    return figure_layout(fig, title, x=x_title, y=LOSS_AXIS)


def loss_curves(frame: pd.DataFrame, *, probe: str, title: str, x: str = "tokens_seen",
                budget_kind: str | None = None) -> go.Figure:
    """Validation loss against tokens seen (or training FLOPs) per configuration: seed mean line and
    min..max band; train loss dotted."""
    ev = frame[(frame["probe"] == probe) & (frame["row_kind"] == "eval") & (frame["status"] == "ok")]
    if budget_kind is not None:
        ev = ev[ev["budget_kind"] == budget_kind]
    if ev.empty:
        return empty_figure(title, "no evaluation rows")
    fig = go.Figure()
    for i, (name, grp) in enumerate(ev.groupby("config_name", sort=True)):
        if x != "tokens_seen":
            grp = grp[grp["step"] > 0]  # step 0 spent no FLOPs: no place on a log axis
        grp = grp.assign(_x=_float(grp[x]), _v=_float(grp["val_loss_nats"]), _t=_float(grp["train_loss_nats"]))
        s = grp.groupby("_x").agg(v=("_v", "mean"), lo=("_v", "min"), hi=("_v", "max"), t=("_t", "mean")).reset_index()
        color = SERIES[i % len(SERIES)]
        fig.add_trace(go.Scatter(x=list(s["_x"]) + list(s["_x"])[::-1], y=list(s["hi"]) + list(s["lo"])[::-1],
                                 fill="toself", line={"width": 0}, fillcolor=color, opacity=0.18, showlegend=False,
                                 hoverinfo="skip", name=f"{name} seed range"))
        fig.add_trace(go.Scatter(x=s["_x"], y=s["v"], mode="lines+markers", name=f"{name} (val)",
                                 line={"color": color}))
        fig.add_trace(go.Scatter(x=s["_x"], y=s["t"], mode="lines", name=f"{name} (train)",
                                 line={"color": color, "dash": "dot"}, showlegend=False))
    x_title = "training tokens seen (tokens)" if x == "tokens_seen" else FLOPS_AXIS
    if x != "tokens_seen":
        ev = ev[ev["step"] > 0]
        fig.update_xaxes(type="log")
    losses = pd.concat([_float(ev["val_loss_nats"]), _float(ev["train_loss_nats"])]).dropna()
    if not losses.empty:
        fig.update_yaxes(range=[float(losses.min()) * 0.97, float(losses.max()) * 1.03])
    fig = figure_layout(fig, title, x=x_title, y="loss (nats/token; solid val, dotted train)")
    return with_unigram_line(fig, report.unigram_nats(ev))


def grad_heatmap(frame: pd.DataFrame, *, variant: str, depth: int, title: str,
                 zrange: tuple[float, float] | None = None) -> go.Figure:
    """Per-layer gradient norm (log10, before clipping) by layer (rows, input at the bottom) and step.
    ``zrange`` fixes the colour scale (log10 units) so that heat maps side by side compare."""
    rows = frame[(frame["probe"] == "stability") & (frame["row_kind"] == "layer") & (frame["variant"] == variant)
                 & (frame["axis_value"] == depth)]
    if rows.empty:
        return empty_figure(title, "no layer rows")
    rows = rows[rows["seed"] == rows["seed"].min()]
    order = sorted(rows["layer"].unique(), key=_layer_order)
    piv = rows.assign(g=_float(rows["grad_norm"])).pivot_table(index="layer", columns="step", values="g",
                                                               aggfunc="mean").reindex(order)
    z = [[math.log10(v) if v and v > 0 and math.isfinite(v) else None for v in r] for r in piv.to_numpy().tolist()]
    scale = {"zmin": zrange[0], "zmax": zrange[1]} if zrange else {}
    fig = go.Figure(go.Heatmap(z=z, x=[str(int(c)) for c in piv.columns], y=list(piv.index), colorscale="Viridis", **scale,
                               colorbar={"title": "log10 ‖grad‖"}, hovertemplate="layer %{y}<br>step %{x}<br>"
                               "log10 grad norm %{z:.2f}<extra></extra>"))
    fig.update_xaxes(type="category")
    return figure_layout(fig, title, x="optimizer step (0 = at initialisation, before any update)",
                   y="layer (input at the bottom)", height=max(320, 14 * len(order) + 120))


def grad_range(frame: pd.DataFrame, *, depth: int) -> tuple[float, float] | None:
    """log10 range of every layer's gradient norm at ``depth`` (one colour scale for all normalisations)."""
    rows = frame[(frame["probe"] == "stability") & (frame["row_kind"] == "layer") & (frame["axis_value"] == depth)]
    g = _float(rows["grad_norm"]).dropna()
    g = g[g > 0]
    return (math.log10(float(g.min())), math.log10(float(g.max()))) if not g.empty else None


def _layer_order(name: str) -> tuple[int, int]:
    if name == "embedding":
        return (0, 0)
    if name.startswith("layers."):
        return (1, int(name.split(".")[1].split(" ")[0]))
    return (2, 0 if name == "final_norm" else 1)


def grad_profile(frame: pd.DataFrame, *, depth: int, step: int, title: str) -> go.Figure:
    """Per-layer gradient norm at one step for each normalisation, layers in order (log y)."""
    rows = frame[(frame["probe"] == "stability") & (frame["row_kind"] == "layer") & (frame["axis_value"] == depth)
                 & (frame["step"] == step)]
    if rows.empty:
        return empty_figure(title, "no layer rows at this step")
    fig = go.Figure()
    for i, (variant, grp) in enumerate(rows.groupby("variant")):
        grp = grp[grp["layer"].str.startswith("layers.")]
        grp = grp.assign(i=grp["layer"].map(lambda s: _layer_order(s)[1]), g=_float(grp["grad_norm"]))
        s = grp.groupby("i")["g"].mean().reset_index()
        fig.add_trace(go.Scatter(x=s["i"], y=s["g"], mode="lines+markers", name=variant,
                                 line={"color": SERIES[i % len(SERIES)]}))
    fig.update_yaxes(type="log")
    return figure_layout(fig, title, x="layer index (0 = first attention block; attention and feed-forward alternate)",
                   y="gradient norm (L2, before clipping; log)")


def extrapolation_curves(frame: pd.DataFrame, *, title: str) -> go.Figure:
    """Per position bucket of the longest evaluation window: the loss of those tokens in the long window minus
    their loss when the same text is cut into training-length windows (``loss_change_vs_train_len_nats``), one
    line per position scheme. 0 up to the training length by construction; below 0: the longer context helps;
    above 0: the model breaks past the length it was trained on. Rows without that column (older tables)
    fall back to the absolute loss per position."""
    pos = frame[(frame["probe"] == "extrapolation") & (frame["row_kind"] == "position")]
    if pos.empty:
        return empty_figure(title, "no position rows")
    longest = int(pos["eval_seq_len_tokens"].max())
    pos = pos[pos["eval_seq_len_tokens"] == longest]
    train_len = int(pos["train_seq_len_tokens"].dropna().iloc[0])
    col = "loss_change_vs_train_len_nats" if pos["loss_change_vs_train_len_nats"].notna().any() else "val_loss_nats"
    fig = go.Figure()
    # one colour per position scheme, the token-shift setting as the line style: no two curves look alike
    schemes = list(dict.fromkeys(str(n).split(",")[0] for n in sorted(pos["config_name"].unique())))
    for variant, grp in pos.groupby("config_name"):
        grp = grp.assign(mid=(_float(grp["position_start_tokens"]) + _float(grp["position_end_tokens"])) / 2,
                         v=_float(grp[col]))
        s = grp.groupby("mid")["v"].mean().reset_index()
        color = SERIES[schemes.index(str(variant).split(",")[0]) % len(SERIES)]
        fig.add_trace(go.Scatter(x=s["mid"], y=s["v"], mode="lines+markers", name=variant,
                                 line={"color": color, "dash": "dot" if "shift_tokens=0" not in str(variant) else None}))
    fig.add_vline(x=train_len, line_dash="dash", line_color="#9D9D9D",
                  annotation_text=f"trained at {train_len} tokens", annotation_position="top right")
    if col == "val_loss_nats":
        return figure_layout(fig, title, x=f"position in a {longest}-token window (bucket centre, tokens)",
                       y="validation loss at that position (nats/token)")
    fig.add_hline(y=0, line_color="#444", line_width=1)
    return figure_layout(fig, title, x=f"position in a {longest}-token window (bucket centre, tokens)",
                   y=f"Δ loss vs {train_len}-token windows (nats; < 0: helps)")


def extrapolation_position_loss(frame: pd.DataFrame, *, shift: int, title: str) -> go.Figure:
    """Extrapolation probe (``probe_extrapolation.position_curves``): validation loss by position in the longest
    window each position scheme was evaluated in (seed mean), at one ``shift_tokens`` setting; the training length
    marked, the unigram "learned nothing" line drawn. The learned absolute table stops at the training length (its
    rows past it were never trained). Log position axis: the first positions (the least context) are buckets of
    1, 1, 2, 4, ... tokens."""
    from xtlens.profiling.benefit import probe_extrapolation as pe

    curves = pe.position_curves(frame)
    if curves.empty or not (curves["shift_tokens"] == shift).any():
        return empty_figure(title, f"no position rows at shift_tokens={shift}")
    curves = curves[curves["shift_tokens"] == shift]
    train_len = pe.train_len_of(frame)
    fig = go.Figure()
    for i, scheme in enumerate(s for s in pe.SCHEMES if (curves["scheme"] == s).any()):
        c = curves[curves["scheme"] == scheme].sort_values("position_start_tokens")
        mid = (c["position_start_tokens"] + c["position_end_tokens"] - 1) / 2 + 1  # 1-based centre: log axis
        fig.add_trace(go.Scatter(x=mid, y=c["val_loss_nats"], mode="lines+markers", name=scheme,
                                 customdata=c[["position_start_tokens", "position_end_tokens", "seeds"]],
                                 hovertemplate="positions %{customdata[0]}-%{customdata[1]}: %{y:.3f} nats/token "
                                               "(mean of %{customdata[2]} seed(s))<extra>" + scheme + "</extra>",
                                 line={"color": SERIES[i % len(SERIES)], "dash": "dot" if scheme == "nope" else None}))
    uni = frame.loc[frame["probe"] == "extrapolation", "unigram_entropy_nats"].dropna()
    if len(uni):
        u = float(uni.astype(float).mean())  # labelled at the right, under the line: the curves are lower there
        fig.add_hline(y=u, line_dash="dash", line_color=UNIGRAM_LINE_COLOUR, annotation_position="bottom right",
                      annotation_text=f"unigram line {u:.3f} nats/token: learned nothing")
    if train_len:  # the label placed in log10 units: Plotly reads an annotation's x on a log axis as log10(x)
        fig.add_vline(x=train_len, line_dash="dash", line_color="#9D9D9D")
        fig.add_annotation(x=math.log10(train_len), xref="x", y=1.0, yref="paper", showarrow=False, xanchor="right",
                           yanchor="bottom", text=f"trained at L = {train_len:,} tokens ")  # above the plot
    # the range in log10 units, set: plotly.js autoranges a log axis with the line's x taken as a log10 value
    # (x = 64 stretched the axis to 1e64) while it draws the line at the data value
    mids = [float(x) for t in fig.data for x in t.x]
    fig.update_xaxes(type="log", range=[math.log10(min(mids)) - 0.1, math.log10(max(mids + [train_len or 1])) + 0.1])
    longest = int(curves["eval_len_tokens"].max())
    return figure_layout(fig, title, x=f"position in the window (tokens, log; windows up to {longest:,})",
                         y="validation loss at that position (nats/token)")


def kv_tradeoff(table: pd.DataFrame, *, title: str) -> go.Figure:
    """Heads probe, K/V part: validation loss against KV-cache bytes per token (float32, all layers)."""
    kv = table[table["variant"] == "kv_heads"]
    if kv.empty:
        return empty_figure(title, "no K/V-heads runs")
    fig = go.Figure(go.Scatter(x=kv["kv_cache_bytes_per_token"], y=kv["val_loss_nats"], mode="markers+text",
                               text=kv["config_name"], marker={"size": 11},  # labels alternate: never overlap
                               textposition=["top center" if i % 2 == 0 else "bottom center" for i in range(len(kv))],
                               name="measured"))
    xmax = float(kv["kv_cache_bytes_per_token"].max())
    fig.update_xaxes(range=[-0.15 * xmax, 1.25 * xmax])
    if "unigram_entropy_nats" in kv.columns and kv["unigram_entropy_nats"].notna().any():
        add_unigram_line(fig, float(kv["unigram_entropy_nats"].dropna().iloc[0]))
    return figure_layout(fig, title, x="KV cache per token (bytes, float32, all layers; closed form)", y=LOSS_AXIS)


def heads_bars(table: pd.DataFrame, *, title: str) -> go.Figure:
    """Heads probe, equal-parameter part: validation loss per head count."""
    eq = table[table["variant"] == "equal_params"]
    if eq.empty:
        return empty_figure(title, "no equal-parameter runs")
    width = _width(eq)
    # markers, not bars: the axis does not start at 0 (the differences are hundredths of a nat)
    fig = go.Figure(go.Scatter(x=[f"{int(h)} × {width // int(h)}" for h in eq["axis_value"]], y=eq["val_loss_nats"],
                               text=[f"{v:.3f}" for v in eq["val_loss_nats"]], mode="markers+text",
                               textposition="top center", marker={"size": 12, "color": SERIES[0]}))
    fig.update_xaxes(type="category")
    lo = float(eq["val_loss_nats"].min())
    fig.update_yaxes(range=[lo * 0.97, float(eq["val_loss_nats"].max()) * 1.01])
    return figure_layout(fig, title, x="heads × head width (channels; equal parameters)", y=LOSS_AXIS)


def _width(eq: pd.DataFrame) -> int:
    """heads × head width of the equal-parameter runs (the same for all), from the largest head count's name."""
    name = str(eq.sort_values("axis_value")["config_name"].iloc[0])  # "1 heads x 64 wide, full K/V"
    return int(name.split(" x ")[1].split(" ")[0]) * int(eq["axis_value"].min())


def loss_vs_cost(points: pd.DataFrame, *, x: str, x_title: str, title: str, axis: str, current: int | None,
                 log_x: bool = True) -> go.Figure:
    """Trade-offs: measured validation loss (seed mean) of each swept value against one cost column."""
    if points.empty:
        return empty_figure(title, "no measured points")
    fig = go.Figure(go.Scatter(x=points[x], y=points["val_loss_nats"], mode="markers+text",
                               text=[f"{axis}={int(v)}" for v in points["axis_value"]], textposition="top center",
                               marker={"size": 10}, name="measured"))
    if current is not None and (points["axis_value"] == current).any():
        r = points[points["axis_value"] == current].iloc[0]
        fig.add_trace(go.Scatter(x=[r[x]], y=[r["val_loss_nats"]], mode="markers", name="current",
                                 marker={"size": 20, "symbol": "circle-open", "color": "#E45756", "line": {"width": 3}}))
    if log_x:
        fig.update_xaxes(type="log", tickformat=".2s")
    fig.update_xaxes(tickangle=0, nticks=5)
    fig = figure_layout(fig, title, x=x_title, y=LOSS_AXIS, height=380)
    fig.update_layout(legend={"y": -0.32})
    return fig


# --- generic: the unigram "learned nothing" line and not_learned labels on every loss chart -----------------

#: the verdicts' colours on the claims table (each cell also says the verdict in words: never colour alone)
VERDICT_COLOURS = {"supported": "#CDEBD3", "contradicted": "#F6CFCF", "not_detectable": "#E4E4E4",
                   "not_learned": "#FBE7B5"}
UNIGRAM_LINE_COLOUR = "#7F7F7F"
_RELATIVE_WORDS = ("δ", "change", "gain", "difference", " minus ", " - ", "ratio")


def is_loss_chart(fig: go.Figure) -> bool:
    """True when the figure's y axis is an absolute loss in nats (a validation or training loss), where the
    unigram line belongs; False for differences of losses (Δ loss, context gain), gradients and others."""
    title = (fig.layout.yaxis.title.text or "").lower()
    return "loss" in title and "nats" in title and not any(w in title for w in _RELATIVE_WORDS)


def unigram_shapes(fig: go.Figure) -> list[float]:
    """The y values of the horizontal lines drawn on ``fig`` (``add_hline`` shapes)."""
    return [float(s.y0) for s in fig.layout.shapes or () if s.type == "line" and s.y0 is not None and s.y0 == s.y1
            and (s.xref or "").endswith("domain")]


def with_unigram_line(fig: go.Figure, unigram_nats: float | None) -> go.Figure:
    """Draw the unigram "learned nothing" line (the validation loss of a unigram fitted on the training split) on a
    loss chart (``is_loss_chart``), once, and widen a fixed y range to show it. Other charts are returned as they
    are."""
    if unigram_nats is None or not math.isfinite(unigram_nats) or not is_loss_chart(fig):
        return fig
    if any(abs(y - unigram_nats) <= 1e-9 * max(1.0, abs(unigram_nats)) for y in unigram_shapes(fig)):
        return fig
    fig.add_hline(y=unigram_nats, line_dash="dash", line_color=UNIGRAM_LINE_COLOUR,
                  annotation_text=f"unigram line {unigram_nats:.3f} nats/token: learned nothing",
                  annotation_position="bottom right")
    rng = fig.layout.yaxis.range
    if rng is not None:
        lo, hi = float(rng[0]), float(rng[1])
        y = math.log10(unigram_nats) if fig.layout.yaxis.type == "log" and unigram_nats > 0 else unigram_nats
        pad = 0.03 * max(hi - lo, 1e-9)
        fig.update_yaxes(range=[min(lo, y - pad), max(hi, y + pad)])
    return fig


def label_not_learned(fig: go.Figure, config_names: set[str] | frozenset[str]) -> go.Figure:
    """Append " — not_learned" to the legend name of every trace of a configuration whose runs all ended above
    the unigram line (a trace named ``config_name`` or ``config_name (...)``)."""
    if not config_names:
        return fig
    for trace in fig.data:
        name = trace.name or ""
        if "not_learned" not in name and any(name == n or name.startswith(n + " (") for n in config_names):
            trace.name = name + " — not_learned"
    return fig


# --- stability (probe_stability) and heads (probe_heads) ------------------------------------------------

NORM_COLORS = {"deepnorm": SERIES[0], "pre_norm": SERIES[1], "post_norm": SERIES[2]}
OUTCOME_SYMBOLS = {"trained": "circle", "not_learned": "circle-open", "diverged": "x", "error": "square-open"}


def stable_lr_chart(outcomes: pd.DataFrame, largest: pd.DataFrame, *, title: str) -> go.Figure:
    """Stability: every swept (depth, peak lr) cell per norm, marked by its outcome over seeds (trained by every
    seed, not every seed below the unigram line, or diverged in a seed), and the largest stable lr per norm and depth
    as a line. Log lr axis."""
    if outcomes.empty:
        return empty_figure(title, "no stability runs")
    fig = go.Figure()
    norms = [n for n in NORM_COLORS if n in set(outcomes["norm"])]
    depths = sorted(int(d) for d in outcomes["depth"].dropna().unique())
    offset = {n: (i - (len(norms) - 1) / 2) * 0.12 for i, n in enumerate(norms)}
    for n in norms:
        o = outcomes[outcomes["norm"] == n]
        cells = []
        for (d, lr), g in o.groupby(["depth", "lr"]):
            outs = set(g["outcome"])
            worst = "diverged" if "diverged" in outs else "error" if "error" in outs else \
                "not_learned" if "not_learned" in outs else "trained"
            cells.append((depths.index(int(d)) + offset[n], lr, worst, len(g)))
        for outcome, sym in OUTCOME_SYMBOLS.items():
            pts = [c for c in cells if c[2] == outcome]
            if pts:
                fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="markers",
                                         marker={"symbol": sym, "size": 11, "color": NORM_COLORS[n]},
                                         name=f"{n}: {outcome.replace('_', ' ')}", legendgroup=n,
                                         hovertemplate=f"{n}<br>peak lr %{{y:.3g}}<br>{outcome}<extra></extra>"))
        big = largest[(largest["norm"] == n) & largest["largest_stable_lr"].notna()]
        if not big.empty:
            fig.add_trace(go.Scatter(x=[depths.index(int(d)) + offset[n] for d in big["depth"]],
                                     y=big["largest_stable_lr"].astype(float), mode="lines", legendgroup=n,
                                     line={"color": NORM_COLORS[n], "width": 2}, name=f"{n}: largest stable lr"))
    lrs = sorted(float(v) for v in outcomes["lr"].dropna().unique())
    fig.update_xaxes(tickvals=list(range(len(depths))), ticktext=[str(d) for d in depths])
    fig.update_yaxes(type="log", tickvals=lrs, ticktext=[f"{v:g}" for v in lrs])  # a tick at each swept rate
    return figure_layout(fig, title, x="depth (layers)", y="peak learning rate (log; clipping off)")


def grad_ratio_chart(ratio_table: pd.DataFrame, *, when: str, title: str) -> go.Figure:
    """Stability: first-block / last-block gradient norm per norm and depth (geometric mean over seeds, bars: 95%
    seed-bootstrap interval), at ``when`` = ``init`` (step 0) or ``final``. Log y."""
    t = ratio_table[ratio_table["when"] == when]
    if t.empty:
        return empty_figure(title, "no gradient ratios")
    if when == "final" and t["lr"].notna().any():  # one lr: the smallest swept (every norm trains there)
        t = t[t["lr"] == t["lr"].min()]
    fig = go.Figure()
    for n in [n for n in NORM_COLORS if n in set(t["norm"])]:
        g = t[t["norm"] == n].sort_values("depth")
        fig.add_trace(go.Scatter(
            x=g["depth"], y=g["ratio"], mode="lines+markers", name=f"{n} ({int(g['seeds'].max())} seeds)",
            line={"color": NORM_COLORS[n]},
            error_y={"type": "data", "symmetric": False, "array": g["ratio_ci95_high"] - g["ratio"],
                     "arrayminus": g["ratio"] - g["ratio_ci95_low"]}))
    fig.add_hline(y=1.0, line_color="#9D9D9D", line_dash="dot")
    fig.update_yaxes(type="log")
    fig.update_xaxes(type="log" if t["depth"].max() / max(t["depth"].min(), 1) > 8 else "linear")
    return figure_layout(fig, title, x="depth (layers)",
                         y="‖grad‖ first / last block (ratio, log)")


def add_unigram_line(fig: go.Figure, unigram_nats: float | None, *, vertical: bool = False) -> go.Figure:
    """The "learned nothing" line: the validation loss of a unigram fitted on the training split."""
    if unigram_nats is None or not math.isfinite(float(unigram_nats)):
        return fig
    kw = {"line_dash": "dash", "line_color": UNIGRAM_LINE_COLOUR,
          "annotation_text": f"unigram line {float(unigram_nats):.3f} nats/token: learned nothing"}
    if vertical:
        fig.add_vline(x=float(unigram_nats), **kw)
    else:
        fig.add_hline(y=float(unigram_nats), annotation_position="bottom right", **kw)
    return fig


def stability_curves(frame: pd.DataFrame, *, depth: int, lr: float, title: str) -> go.Figure:
    """Stability: validation loss against tokens seen per norm at one depth and peak lr (seed mean), with the
    unigram line; a diverged run's curve stops where it diverged."""
    from xtlens.profiling.benefit.probe_stability import peak_lrs

    ev = frame[(frame["probe"] == "stability") & (frame["row_kind"] == "eval") & (frame["axis_value"] == depth)]
    ev = ev[(peak_lrs(ev) == lr) & ev["val_loss_nats"].notna()]
    if ev.empty:
        return empty_figure(title, "no evaluation rows at this depth and lr")
    fig = go.Figure()
    for n in [n for n in NORM_COLORS if n in set(ev["variant"])]:
        g = ev[ev["variant"] == n]
        s = g.assign(x=_float(g["tokens_seen"]), v=_float(g["val_loss_nats"])).groupby("x")["v"].agg(
            ["mean", "min", "max"]).reset_index()
        fig.add_trace(go.Scatter(x=s["x"], y=s["mean"], mode="lines+markers", name=n,
                                 line={"color": NORM_COLORS[n]},
                                 error_y={"type": "data", "symmetric": False, "array": s["max"] - s["mean"],
                                          "arrayminus": s["mean"] - s["min"]}))
    uni = ev["unigram_entropy_nats"].dropna()
    add_unigram_line(fig, float(uni.iloc[0]) if len(uni) else None)
    return figure_layout(fig, title, x="training tokens seen (tokens)",
                         y="validation loss (nats/token; bars: seed min..max)")


def heads_effects(table: pd.DataFrame, *, title: str) -> go.Figure:
    """Heads: each arm's loss difference against the reference (family head count, full K/V), with its 95% interval
    (paired per window, seeds and windows resampled) and the band of +- the largest minimum detectable effect, next
    to the KV-cache bytes per token each arm needs."""
    from plotly.subplots import make_subplots

    if table.empty:
        return empty_figure(title, "no heads runs")
    t = table.iloc[::-1]
    labels = [str(n) for n in t["config_name"]]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, column_widths=[0.62, 0.38], horizontal_spacing=0.03)
    est = t["diff_vs_reference_nats"].astype(float)
    lo, hi = t["ci95_low"].astype(float), t["ci95_high"].astype(float)
    colors = ["#9D9D9D" if not learned else SERIES[0] for learned in t["learned"]]
    fig.add_trace(go.Scatter(x=est, y=labels, mode="markers", marker={"size": 10, "color": colors},
                             name="difference vs reference (95% CI)",
                             error_x={"type": "data", "symmetric": False, "array": (hi - est).fillna(0),
                                      "arrayminus": (est - lo).fillna(0)}), row=1, col=1)
    mde = table["min_detectable_effect_nats"].dropna()
    if len(mde):
        m = float(mde.max())
        fig.add_vrect(x0=-m, x1=m, fillcolor="#9D9D9D", opacity=0.15, line_width=0, row=1, col=1,
                      annotation_text=f"± min detectable {m:.3f}", annotation_position="top left")
    fig.add_vline(x=0, line_color="#444", line_width=1, row=1, col=1)
    fig.add_trace(go.Bar(x=t["kv_cache_bytes_per_token"], y=labels, orientation="h", marker_color=SERIES[1],
                         name="KV cache (bytes/token)", text=[f"{int(v):,}" for v in t["kv_cache_bytes_per_token"]],
                         textposition="auto"), row=1, col=2)
    fig = figure_layout(fig, title, x="Δ val loss vs reference (nats/token; < 0: better)", y="arm",
                        height=max(360, 34 * len(t) + 140))
    fig.update_xaxes(title_text="KV cache per token (bytes, float32, all layers)", row=1, col=2)
    return fig


# --- the scaling probe (issue 17 item 4: probe_scaling) -----------------------------------------------

NON_EMB_AXIS = "non-embedding parameters N (count, log)"
UNIGRAM_TEXT = "unigram line: validation loss of a context-free model (learned nothing above it)"


def _unigram_line(fig: go.Figure, frame: pd.DataFrame) -> float | None:
    ent = _float(frame.loc[frame["probe"] == "scaling", "unigram_entropy_nats"]).dropna() \
        if "unigram_entropy_nats" in frame.columns else pd.Series(dtype=float)
    if ent.empty:
        return None
    y = float(ent.iloc[0])
    fig.add_hline(y=y, line_dash="dash", line_color="#9D9D9D", annotation_text=UNIGRAM_TEXT,
                  annotation_position="top right")
    return y


def scaling_law(frame: pd.DataFrame, *, title: str) -> go.Figure:
    """Equal-token points of the scaling probe: validation loss (best learning rate per size: seed mean with
    its 95% bootstrap interval) against non-embedding parameters, the learning-rate sweep's other rates as
    hollow markers, the fitted ``E + A N^-alpha`` with its 95% seed-bootstrap band, and the unigram line."""
    from xtlens.profiling.benefit import probe_scaling as ps

    pts = ps.points_table(frame)
    eq = ps.equal_token_points(frame)
    if pts.empty or eq.empty:
        return empty_figure(title, "no finished equal-token runs")
    kind, budget = str(eq["budget_kind"].iloc[0]), eq["budget"].iloc[0]
    at = pts[(pts["budget_kind"] == kind) & (pts["budget"] == budget)]
    fig = go.Figure()
    sweep = at[at["role"] == "lr sweep"]
    for i, (lr, g) in enumerate(sweep.groupby("peak_lr")):
        fig.add_trace(go.Scatter(x=_float(g["non_embedding_params"]), y=g["val_loss_nats"], mode="markers",
                                 name=f"lr sweep: {ps.lr_label(lr)} (not the best at these sizes)",
                                 marker={"symbol": "circle-open", "size": 8, "color": SERIES[(i + 2) % len(SERIES)]}))
    best = at[at["role"] == "best lr"].sort_values("non_embedding_params")
    fig.add_trace(go.Scatter(
        x=_float(best["non_embedding_params"]), y=best["val_loss_nats"], mode="markers+text",
        name=f"best lr per size (mean of {int(best['seeds'].max())} seeds, 95% bootstrap interval)",
        text=[f"{a}={int(v)}, {ps.lr_label(lr)}" for a, v, lr in zip(best["axis"], best["axis_value"], best["peak_lr"],
                                                                    strict=True)],
        textposition=_edge_positions(len(best)),
        error_y={"type": "data", "symmetric": False, "array": best["ci95_high"] - best["val_loss_nats"],
                 "arrayminus": best["val_loss_nats"] - best["ci95_low"]},
        marker={"size": 11, "color": SERIES[0]}))
    fit = ps.laws(frame)["power"]
    if fit is not None and fit.law.identifiable:
        lo, hi = float(best["non_embedding_params"].min()), float(best["non_embedding_params"].max())
        xs = [lo * (hi / lo) ** (k / 40) for k in range(41)]
        band = [fit.forecast(x, level=0.95) for x in xs]
        if all(b is not None for b in band):
            fig.add_trace(go.Scatter(x=xs + xs[::-1], y=[b.high for b in band] + [b.low for b in band][::-1],
                                     fill="toself", line={"width": 0}, fillcolor=SERIES[1], opacity=0.18,
                                     hoverinfo="skip", name="fit: 95% seed-bootstrap band"))
        law = fit.law
        alpha = f"{law.alpha:.3g}" + (f" (95% {fit.alpha.low:.3g}..{fit.alpha.high:.3g})" if fit.alpha else "")
        fig.add_trace(go.Scatter(x=xs, y=[law.predict(x) for x in xs], mode="lines", line={"dash": "dash",
                                 "color": SERIES[1]}, name=f"fit: L = {law.E:.3g} + {law.A:.3g} N^-alpha, alpha {alpha}"))
    elif fit is not None:
        fig.add_annotation(text=f"no law fitted: {fit.law.reason}", showarrow=False, x=0.5, y=0.95, xref="paper",
                           yref="paper")
    _unigram_line(fig, frame)
    fig.update_xaxes(type="log")
    return figure_layout(fig, title, x=NON_EMB_AXIS, y=LOSS_AXIS)


def _edge_positions(n: int) -> list[str]:
    """Point labels that stay inside the plot and apart: above and below the points in turn, the leftmost to the
    right of its point, the rightmost to the left."""
    pos = [("top" if i % 2 == 0 else "bottom") + " center" for i in range(n)]
    if n >= 2:
        pos[0], pos[-1] = pos[0].replace("center", "right"), pos[-1].replace("center", "left")
    return pos


def isoflop_curves(frame: pd.DataFrame, *, title: str) -> go.Figure:
    """IsoFLOP profiles (Hoffmann et al. 2022, approach 2): per training-FLOP budget, validation loss (best
    learning rate per size, 95% bootstrap interval) against non-embedding parameters; the fitted compute-optimal
    size of each budget (parabola in log N, seed-bootstrap 95% interval) as a star with a horizontal bar."""
    from xtlens.profiling.benefit import probe_scaling as ps

    pts = ps.points_table(frame)
    best = pts[(pts["budget_kind"] == "flops") & (pts["role"] == "best lr")]
    if best.empty:
        return empty_figure(title, "no finished equal-FLOP runs")
    iso = ps.isoflop_table(frame).set_index("budget_flops") if not best.empty else None
    fig = go.Figure()
    for i, (budget, g) in enumerate(best.groupby("budget")):
        g = g.sort_values("non_embedding_params")
        color = SERIES[i % len(SERIES)]
        fig.add_trace(go.Scatter(
            x=_float(g["non_embedding_params"]), y=g["val_loss_nats"], mode="lines+markers",
            name=f"budget {fmt_flops(float(budget))}", line={"color": color},
            error_y={"type": "data", "symmetric": False, "array": g["ci95_high"] - g["val_loss_nats"],
                     "arrayminus": g["val_loss_nats"] - g["ci95_low"]}))
        row = iso.loc[int(budget)] if iso is not None and int(budget) in iso.index else None
        if row is not None and bool(row["identifiable"]):
            n_opt = float(row["n_opt_non_embedding"])
            y = float(g["val_loss_nats"].min())
            fig.add_trace(go.Scatter(
                x=[n_opt], y=[y], mode="markers", marker={"symbol": "star", "size": 14, "color": color},
                error_x={"type": "data", "symmetric": False, "array": [float(row["n_opt_ci95_high"]) - n_opt],
                         "arrayminus": [n_opt - float(row["n_opt_ci95_low"])]},
                name=f"fitted optimum at {fmt_flops(float(budget))}: N = {n_opt:,.0f}"))
    _unigram_line(fig, frame)
    fig.update_xaxes(type="log")
    return figure_layout(fig, title, x=NON_EMB_AXIS, y=LOSS_AXIS)


# --- legibility of every chart of the tab (applied by the view's ``chart``) --------------------------------

#: the width of a half-page chart at a 1400 px window (two charts side by side): the legend is laid out for it
CHART_WIDTH_PX = 480
LEGEND_ROW_PX = 20


def _si(v: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:g}{suffix}"
    return f"{v:g}"


def _axis_values(fig: go.Figure, axis: str) -> list[float]:
    """Every finite value the traces of ``fig`` put on its first x or y axis (``axis`` "x" or "y"): their points,
    the ends of their error bars, and the lines drawn across it (``add_hline`` on y)."""
    raw: list = []
    for tr in fig.data:
        if (getattr(tr, f"{axis}axis", None) or axis) != axis:
            continue
        vals = getattr(tr, axis, None)
        vals = list(vals) if vals is not None else []
        raw += vals
        err = getattr(tr, f"error_{axis}", None)
        if err is not None and err.array is not None and len(err.array) == len(vals):
            minus = err.arrayminus if err.arrayminus is not None and len(err.arrayminus) == len(vals) else err.array
            for v, up, down in zip(vals, err.array, minus, strict=True):
                try:
                    raw += [float(v) + float(up), float(v) - float(down)]
                except (TypeError, ValueError):
                    continue
    for shape in fig.layout.shapes or ():  # add_hline: y0 = y1 in data values, yref the axis itself
        if shape[f"{axis}ref"] == axis:
            raw += [shape[f"{axis}0"], shape[f"{axis}1"]]
    out: list[float] = []
    for v in raw:
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f) and f > 0:
            out.append(f)
    return out


def clean_log_axes(fig: go.Figure) -> go.Figure:
    """Log axes with labelled ticks only (1-2-5 per decade, ``charts.log_ticks``) instead of Plotly's bare minor
    digits ("5, 2, 0.01, 5"), labelled with SI prefixes; an axis with its own ticks is left alone. An axis without
    its own range gets ``charts.log_axis``'s, which shows at least three of the ticks (a 2-point chart too)."""
    for axis in ("x", "y"):
        ax = fig.layout[f"{axis}axis"]
        if ax.type != "log" or ax.tickvals is not None:
            continue
        values = _axis_values(fig, axis)
        if ax.range is None:
            ticks, span = log_axis(values)
            if ticks:
                fig.update(layout={f"{axis}axis": {"tickvals": ticks, "ticktext": [_si(t) for t in ticks],
                                                   "range": span}})
            continue
        ticks = log_ticks(values)
        if len(ticks) >= 2:
            fig.update(layout={f"{axis}axis": {"tickvals": ticks, "ticktext": [_si(t) for t in ticks]}})
    return fig


def legend_rows(fig: go.Figure, width_px: int = CHART_WIDTH_PX) -> int:
    """How many rows the horizontal legend below the chart takes at ``width_px`` (about 6.5 px a character and
    40 px for the symbol of each entry)."""
    names = [str(tr.name) for tr in fig.data if tr.showlegend is not False and tr.name
             and (tr.showlegend or tr.type not in ("heatmap", "histogram2d", "contour"))]
    if fig.layout.showlegend is False or (len(names) < 2 and fig.layout.showlegend is None):
        return 0  # Plotly shows no legend for a single trace unless asked
    rows, used = 0, width_px
    for name in names:
        w = 40 + 6.5 * len(name)
        if used + w > width_px:
            rows, used = rows + 1, 0
        used += w
    return rows


def fit_legend(fig: go.Figure, width_px: int = CHART_WIDTH_PX) -> go.Figure:
    """Put the legend below the x-axis title, never on it: the bottom margin grows by one line per legend row and
    the figure by the same, so that the plot keeps its height."""
    rows = legend_rows(fig, width_px)
    if rows == 0 or fig.layout.showlegend is False:
        return fig
    bottom = 70 + LEGEND_ROW_PX * rows
    height = (fig.layout.height or 420) + LEGEND_ROW_PX * rows + 30
    fig.update_layout(height=height, margin={"b": bottom},
                      legend={"orientation": "h", "yref": "container", "y": 0, "yanchor": "bottom", "x": 0,
                              "xanchor": "left"})
    return fig


def legible(fig: go.Figure) -> go.Figure:
    """``clean_log_axes`` and ``fit_legend``: what every chart of the Benefits tab gets before it is drawn."""
    return fit_legend(clean_log_axes(fig))
