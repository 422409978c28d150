"""Chart builders for the flag atlas (``profiling.benefit.probe_atlas``) and its forecasts
(``profiling.benefit.forecast``): pure functions ``DataFrame -> plotly Figure`` (no Streamlit).

* ``quality_vs_cost``: one point per (option, size) of the atlas table (``probe_atlas.ATLAS_COLUMNS``): y = the
  change in validation bits/byte against the reference at the same size (paired per validation window, 95%
  interval bars: seeds and windows resampled), x = the chosen change in cost (``COSTS``). Marker symbol = size,
  colour AND legend words = verdict (never colour alone); the four quadrants named ("free lunch" = lower loss at
  lower cost, "not worth it" = higher loss at higher cost).
* ``forecast_chart``: per option, the forecast validation bits/byte at the user's size with its 80% interval
  (loss law fitted to the small sizes); a forecast that is not identifiable is a row that says why, not a point.
* ``holdout_chart``: the largest size actually run, forecast from the smaller ones: each option's interval
  against the measured value (inside / outside the interval said in words).

Units: bits/byte = validation cross-entropy per UTF-8 byte of the validation text (tokenizer-independent);
training FLOPs count one multiply-add as 2 FLOPs; memory in MiB (2^20 bytes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
from xtlens.dashboard.charts import SERIES, empty_figure, figure_layout

__all__ = ["Cost", "COSTS", "DEFAULT_COST", "VERDICT_STYLE", "SIZE_SYMBOLS", "QUADRANTS", "Y_AXIS",
           "cost_values", "chart_rows", "scale_words", "quality_vs_cost", "forecast_chart", "holdout_chart"]

MIB = 2**20
Y_AXIS = "Δ validation loss vs the reference (bits/byte)<br>below 0 = the option lowers the loss"


@dataclass(frozen=True, kw_only=True)
class Cost:
    """One choice of the x axis: ``label`` (the selector's words), ``axis`` (the axis title, with its unit),
    ``unit`` (after a number in the hover), ``reversed_axis`` (True for a measured speed: faster = cheaper, drawn
    on the left like every other saving)."""

    key: str
    label: str
    axis: str
    unit: str
    reversed_axis: bool = False


COSTS: dict[str, Cost] = {c.key: c for c in (
    Cost(key="d_train_flops_pct", label="training FLOPs (%)",
         axis="Δ training FLOPs vs the reference (%)<br>cost model, 2 FLOPs per multiply-add", unit="%"),
    Cost(key="d_num_params_pct", label="parameters (%)",
         axis="Δ parameters vs the reference (% of its count)", unit="%"),
    Cost(key="d_num_params", label="parameters (count)", axis="Δ parameters vs the reference (count)",
         unit="parameters"),
    Cost(key="d_tokens_per_s_pct", label="measured training speed (tokens/s, %)",
         axis="Δ measured training speed vs the reference (tokens/s, %)<br>axis reversed: faster is left, with the other savings", unit="%",
         reversed_axis=True),
    Cost(key="d_train_peak_bytes", label="training peak memory, measured (MiB)",
         axis="Δ training peak memory, measured (MiB = 2^20 bytes)", unit="MiB"),
    Cost(key="d_train_peak_predicted_bytes", label="training peak memory, predicted (MiB)",
         axis="Δ training peak memory, predicted (MiB = 2^20 bytes)<br>closed form, ordered peak of one AdamW step", unit="MiB"),
    Cost(key="d_kv_cache_bytes_per_token", label="KV cache (bytes/token)",
         axis="Δ KV cache per generated token (bytes/token, all layers)", unit="bytes/token"),
)}
DEFAULT_COST = "d_train_flops_pct"

#: verdict -> (legend words, colour); the atlas's verdicts are ``stats.verdict`` with expected sign -1
#: ("the option lowers the loss"): supported = it lowers the loss, contradicted = it raises it
VERDICT_STYLE: dict[str, tuple[str, str]] = {
    "supported": ("lowers the loss (supported)", "#2E8B57"),
    "contradicted": ("raises the loss (contradicted)", "#C0392B"),
    "not_detectable": ("no detectable change (not_detectable)", "#8C8C8C"),
    "not_learned": ("runs learned nothing (not_learned): not judged", "#D4A017"),
}
SIZE_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "star", "hexagon")
#: the four quadrants (x: cost change, y: loss change), named where the chart shows them
QUADRANTS = {
    "free lunch": "lower loss, lower cost",
    "not worth it": "higher loss, higher cost",
    "better, costs more": "lower loss, higher cost: worth it?",
    "cheaper, worse": "higher loss, lower cost: a trade",
}


def _num(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s, errors="coerce").astype(float)


def cost_values(table: pd.DataFrame, cost: str) -> pd.Series:
    """The x values of ``cost`` (a ``COSTS`` key) for each row of an atlas table, in the axis's unit: the table's
    column (memory in MiB), or, for a cost the table holds only as absolute values, the change computed from the
    reference row of the same size (so pass the whole table, reference included) (``d_train_peak_predicted_bytes``; ``d_num_params_pct`` = d_num_params over
    the reference's count)."""
    if cost not in COSTS:
        raise ValueError(f"cost = {cost!r} is not allowed: one of {', '.join(COSTS)}")
    if cost == "d_num_params_pct":
        d = _num(table["d_num_params"])
        ref = _num(table["num_params"]) - d
        return (100.0 * d / ref.where(ref > 0)).rename(cost)
    if cost == "d_train_peak_predicted_bytes" and cost not in table:
        pred = _num(table["train_peak_predicted_bytes"])
        ref = table.assign(_p=pred)[table["arm"] == "reference"].groupby("size_dim")["_p"].first()
        d = pred - table["size_dim"].map(ref).astype(float)
        return (d / MIB).rename(cost)
    v = _num(table[cost])
    return (v / MIB if cost.endswith("_bytes") else v).rename(cost)


def chart_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows ``quality_vs_cost`` draws: every option at every size, without the reference (0 by definition)
    and the detectability control (a loss of context order, not an option: said beside the chart)."""
    arm = table["arm"].astype(str)
    return table[(arm != "reference") & ~arm.str.startswith("control")]


def _span(values: list[float]) -> str:
    def si(v: float) -> str:
        for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(v) >= scale:
                return f"{v / scale:.3g}{suffix}"
        return f"{v:.3g}"

    lo, hi = min(values), max(values)
    return si(lo) if math.isclose(lo, hi, rel_tol=1e-9) else f"{si(lo)}–{si(hi)}"


def scale_words(table: pd.DataFrame) -> str:
    """``3 sizes (dim 16–64: 12.3k–180k non-embedding parameters), 131k training tokens (0.7–10.6 tokens per
    parameter), 3 seeds``: the scale of an atlas table, for titles (parameters of the reference at each size, the
    options change them a little)."""
    ref = table[table["arm"] == "reference"]
    table = ref if len(ref) else table
    sizes = sorted({int(v) for v in _num(table["size_dim"]).dropna()})
    parts = [f"{len(sizes)} size(s) (dim {_span([float(s) for s in sizes])}"]
    ne = _num(table["non_embedding_params"]).dropna().tolist()
    parts[0] += f": {_span(ne)} non-embedding parameters)" if ne else ")"
    tok = _num(table["tokens"]).dropna().tolist()
    if tok:
        tpp = _num(table["tokens_per_param"]).dropna().tolist()
        parts.append(f"{_span(tok)} training tokens" + (f" ({_span(tpp)} tokens per parameter)" if tpp else ""))
    seeds = _num(table["seeds"]).dropna()
    if len(seeds):
        parts.append(f"{int(seeds.max())} seeds")
    return ", ".join(parts)


def _two_lines(text: str) -> str:
    """``scale_words`` broken after the sizes (a chart half the page wide shows it whole)."""
    head, sep, rest = text.partition("), ")
    return f"{head}){sep and ','}<br>{rest}" if sep else text


def _fmt(v: float, unit: str) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    if unit == "%":
        return f"{v:+.1f}%"
    if unit == "MiB":
        return f"{v:+,.2f} MiB"
    return f"{v:+,.0f} {unit}"


def _hover(r: pd.Series, x: float, cost: Cost) -> str:
    def f(col: str, fmt: str, unit: str = "") -> str:
        v = pd.to_numeric(pd.Series([r.get(col)]), errors="coerce").iloc[0]
        return "n/a" if pd.isna(v) else format(float(v), fmt) + unit

    words = VERDICT_STYLE.get(str(r.get("verdict") or ""), (str(r.get("verdict") or "—"), ""))[0]
    lines = [f"<b>{r['label']}</b> (option {r['arm']})",
             f"size: dim {int(r['size_dim'])}, {f('non_embedding_params', ',.0f')} non-embedding parameters",
             f"Δ validation: {f('d_bits_per_byte', '+.4f')} bits/byte [95%: {f('ci95_low', '+.4f')}, "
             f"{f('ci95_high', '+.4f')}]",
             f"min detectable effect: {f('min_detectable_effect_bits', '.4f')} bits/byte; verdict: {words}",
             f"x = {cost.label}: {_fmt(x, cost.unit)}",
             f"Δ training FLOPs {f('d_train_flops_pct', '+.1f', '%')}, Δ parameters {f('d_num_params', '+,.0f')}, "
             f"Δ tokens/s {f('d_tokens_per_s_pct', '+.1f', '%')}",
             f"Δ training peak (measured) {f('d_train_peak_bytes', '+,.0f', ' bytes')}, Δ KV cache "
             f"{f('d_kv_cache_bytes_per_token', '+,.0f', ' bytes/token')}",
             f"seeds {f('seeds', '.0f')} x windows {f('windows', '.0f')}"]
    note = str(r.get("note") or "")
    if note and note != "nan":
        lines.append(f"note: {note}")
    return "<br>".join(lines)


def _padded(values: list[float], frac: float = 0.08) -> tuple[float, float]:
    """A range that holds ``values`` and 0 (the zero lines bound the quadrants), padded on both sides."""
    vals = [v for v in values if v is not None and math.isfinite(v)] + [0.0]
    lo, hi = min(vals), max(vals)
    span = hi - lo or max(abs(hi), 1.0)
    pad = frac * span
    # room on each side of 0 for the quadrant names, even when every point lies on one side
    return min(lo - pad, -0.25 * span), max(hi + pad, 0.25 * span)


def _labelled(rows: pd.DataFrame) -> set[tuple[str, int]]:
    """The points that carry their option's name: each option with a detectable change (supported or
    contradicted), at the largest size where it has one (the others are in the hover and the table)."""
    out = set()
    hits = rows[rows["verdict"].astype(str).isin(["supported", "contradicted"])]
    for arm, g in hits.groupby(hits["arm"].astype(str)):
        out.add((arm, int(g["size_dim"].astype(int).max())))
    return out


def quality_vs_cost(table: pd.DataFrame, cost: str = DEFAULT_COST, *, title: str | None = None) -> go.Figure:
    """The atlas as one chart: each option at each size (``chart_rows``) at (change in ``cost``, change in
    validation bits/byte) with its 95% interval as the y bar; the marker symbol says the size, the colour and the
    legend the verdict; options with a detectable change are named beside their point (``_labelled``). The
    quadrants are named in their corners; both zero lines are drawn; the title's second line states the scale."""
    c = COSTS.get(cost)
    if c is None:
        raise ValueError(f"cost = {cost!r} is not allowed: one of {', '.join(COSTS)}")
    head = title or f"What each option buys: quality vs {c.label}"
    rows = chart_rows(table) if not table.empty else table
    if rows.empty:
        return empty_figure(head, "no atlas rows yet: run the atlas probe (or load its table)")
    rows = rows.assign(_x=cost_values(table, cost).loc[rows.index], _y=_num(rows["d_bits_per_byte"]),
                       _lo=_num(rows["ci95_low"]), _hi=_num(rows["ci95_high"]))
    sizes = sorted({int(v) for v in rows["size_dim"]})
    named = _labelled(rows)
    symbol = {s: SIZE_SYMBOLS[i % len(SIZE_SYMBOLS)] for i, s in enumerate(sizes)}
    fig = go.Figure()
    order = list(VERDICT_STYLE) + sorted(set(rows["verdict"].astype(str)) - set(VERDICT_STYLE))
    for size in sizes:
        for verdict in order:
            g = rows[(rows["size_dim"].astype(int) == size) & (rows["verdict"].astype(str) == verdict)]
            if g.empty:
                continue
            words, colour = VERDICT_STYLE.get(verdict, (verdict or "no verdict", SERIES[0]))
            known = g["_x"].notna()
            g = g[known]
            if g.empty:
                continue
            text = [str(lab) if (str(a), size) in named else "" for a, lab in zip(g["arm"], g["label"], strict=True)]
            fig.add_trace(go.Scatter(
                x=g["_x"].tolist(), y=g["_y"].tolist(), mode="markers+text" if any(text) else "markers",
                text=text if any(text) else None, textposition="middle right",
                textfont={"size": 10, "color": "#333"},
                name=f"{words}, dim {size}", legendgroup=verdict, showlegend=False,
                marker={"symbol": symbol[size], "size": 11, "color": colour, "line": {"width": 1, "color": "#222"}},
                error_y={"type": "data", "symmetric": False, "array": (g["_hi"] - g["_y"]).fillna(0).tolist(),
                         "arrayminus": (g["_y"] - g["_lo"]).fillna(0).tolist(), "color": colour, "thickness": 1.2},
                customdata=[[str(a), int(s)] for a, s in zip(g["arm"], g["size_dim"], strict=True)],
                hovertext=[_hover(r, x, c) for (_, r), x in zip(g.iterrows(), g["_x"], strict=True)],
                hoverinfo="text"))
    # the legend: verdicts by colour and words, sizes by symbol (key entries, no data)
    present = [v for v in order if (rows["verdict"].astype(str) == v).any()]
    for verdict in present:
        words, colour = VERDICT_STYLE.get(verdict, (verdict or "no verdict", SERIES[0]))
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=words, legendgroup=verdict,
                                 marker={"symbol": "circle", "size": 11, "color": colour}, hoverinfo="skip"))
    ne = rows.groupby(rows["size_dim"].astype(int))["non_embedding_params"].first()
    for size in sizes:
        n = pd.to_numeric(pd.Series([ne.get(size)]), errors="coerce").iloc[0]
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", hoverinfo="skip",
                                 name=f"dim {size}" + ("" if pd.isna(n) else f" ({int(n):,} non-embedding params)"),
                                 marker={"symbol": symbol[size], "size": 11, "color": "#FFFFFF",
                                         "line": {"width": 1.5, "color": "#222"}}))
    xs = rows["_x"].dropna().tolist()
    ys = rows[["_y", "_lo", "_hi"]].stack().dropna().tolist()
    x0, x1 = _padded(xs)
    # room on the screen's right for the names printed beside the largest size's points
    if c.reversed_axis:
        x0 -= 0.25 * (x1 - x0)
    else:
        x1 += 0.25 * (x1 - x0)
    y0, y1 = _padded(ys, frac=0.3)  # head- and footroom: the quadrant names sit in the corners, clear of points
    fig.add_hline(y=0, line_color="#444", line_width=1)
    fig.add_vline(x=0, line_color="#444", line_width=1)
    fig = figure_layout(fig, f"{head}<br><sup>{_two_lines(scale_words(table))}</sup>", x=c.axis, y=Y_AXIS)
    fig.update_layout(margin={"t": 90})
    fig.update_xaxes(range=[x1, x0] if c.reversed_axis else [x0, x1], zeroline=False)
    fig.update_yaxes(range=[y0, y1], zeroline=False)
    # the quadrants: cheaper is left (a reversed speed axis puts the faster side left too), lower loss is down
    corners = {"free lunch": (0.01, 0.02, "left", "bottom"), "better, costs more": (0.99, 0.02, "right", "bottom"),
               "cheaper, worse": (0.01, 0.98, "left", "top"), "not worth it": (0.99, 0.98, "right", "top")}
    tints = {"free lunch": "rgba(46,139,87,0.07)", "not worth it": "rgba(192,57,43,0.07)"}
    for name, (px, py, xa, ya) in corners.items():
        fig.add_annotation(text=f"<b>{name}</b><br>{QUADRANTS[name]}", x=px, y=py, xref="x domain", yref="y domain",
                           xanchor=xa, yanchor=ya, showarrow=False, align=xa, font={"size": 11, "color": "#555"},
                           bgcolor="rgba(255,255,255,0.7)", name=f"quadrant: {name}")
    cheap_lo, cheap_hi = (0, x1) if c.reversed_axis else (x0, 0)
    dear_lo, dear_hi = (x0, 0) if c.reversed_axis else (0, x1)
    fig.add_shape(type="rect", x0=cheap_lo, x1=cheap_hi, y0=y0, y1=0, fillcolor=tints["free lunch"], line_width=0,
                  layer="below", name="quadrant: free lunch")
    fig.add_shape(type="rect", x0=dear_lo, x1=dear_hi, y0=0, y1=y1, fillcolor=tints["not worth it"], line_width=0,
                  layer="below", name="quadrant: not worth it")
    # the legend below the x axis's two-line title, never on it
    fig.update_layout(legend={"title": {"text": "colour = verdict, symbol = size "}, "y": -0.3, "yanchor": "top"},
                      margin={"b": 200}, height=720)
    return fig


# --- forecasts ----------------------------------------------------------------------------------------

def _label(labels: dict[str, str] | None, arm: str) -> str:
    return (labels or {}).get(arm, arm)


def forecast_chart(forecasts: pd.DataFrame, *, labels: dict[str, str] | None = None,
                   title: str | None = None) -> go.Figure:
    """``forecasts``: one row per option (``forecast.Forecast``'s fields: arm, num_params, tokens, estimate, low,
    high, level, unit, identifiable, reason, extrapolation). Each identifiable forecast is a point with its
    interval; a forecast that is not identifiable is its row with the reason written in place of a point. The
    reference's forecast is the dashed vertical line."""
    if forecasts.empty:
        return empty_figure(title or "Forecast", "no forecast: the atlas needs runs at 2 or more sizes")
    f = forecasts.reset_index(drop=True)
    level = float(_num(f["level"]).dropna().iloc[0]) if _num(f["level"]).notna().any() else 0.8
    n = _num(f["num_params"]).dropna()
    d = _num(f["tokens"]).dropna()
    ext = _num(f["extrapolation"]).dropna() if "extrapolation" in f else pd.Series(dtype=float)
    head = title or (f"Forecast at {int(n.iloc[0]):,} non-embedding parameters, {int(d.iloc[0]):,} tokens"
                     if len(n) and len(d) else "Forecast")
    if len(ext):
        head += f" ({float(ext.iloc[0]):,.0f}x the largest run)"
    ok = f[f["identifiable"].astype(bool)]
    ok = ok.assign(_e=_num(ok["estimate"]), _lo=_num(ok["low"]), _hi=_num(ok["high"]))
    ok = ok.sort_values("_e", ascending=False)
    bad = f[~f["identifiable"].astype(bool)]
    cats = [_label(labels, a) for a in bad["arm"]] + [_label(labels, a) for a in ok["arm"]]
    unit = str(f["unit"].dropna().iloc[0]) if f["unit"].notna().any() else "bits/byte"
    fig = go.Figure()
    if not ok.empty:
        fig.add_trace(go.Scatter(
            x=ok["_e"].tolist(), y=[_label(labels, a) for a in ok["arm"]], mode="markers",
            name=f"forecast with its {level:.0%} interval", marker={"size": 10, "color": SERIES[0]},
            error_x={"type": "data", "symmetric": False, "array": (ok["_hi"] - ok["_e"]).tolist(),
                     "arrayminus": (ok["_e"] - ok["_lo"]).tolist()},
            hovertext=[f"<b>{_label(labels, r['arm'])}</b><br>forecast {r['_e']:.4f} {unit} "
                       f"[{level:.0%}: {r['_lo']:.4f}, {r['_hi']:.4f}]<br>law: {r.get('law', '')}"
                       for _, r in ok.iterrows()], hoverinfo="text"))
        ref = ok[ok["arm"] == "reference"]
        if len(ref):
            fig.add_vline(x=float(ref["_e"].iloc[0]), line_dash="dash", line_color="#444",
                          annotation_text="reference's forecast", annotation_position="top")
    if not bad.empty:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="not identifiable: the reason instead "
                                 "of a number", marker={"size": 10, "symbol": "x-thin-open", "color": "#888"}))
        for _, r in bad.iterrows():
            fig.add_annotation(text=f"not identifiable: {r['reason']}", x=0.0, xref="x domain",
                               y=_label(labels, r["arm"]), yref="y", xanchor="left", showarrow=False,
                               font={"size": 11, "color": "#7A4B00"}, name=f"not identifiable: {r['arm']}")
    fig = figure_layout(fig, head, x=f"forecast validation loss ({unit}; {level:.0%} interval)", y="option",
                        height=max(320, 26 * len(cats) + 160))
    fig.update_yaxes(categoryorder="array", categoryarray=cats, type="category")
    if not ok.empty:
        lo, hi = float(ok["_lo"].min()), float(ok["_hi"].max())
        pad = 0.05 * (hi - lo or 1.0)
        fig.update_xaxes(range=[lo - pad - (0.6 * (hi - lo or 1.0) if not bad.empty else 0), hi + pad])
    return fig


def holdout_chart(table: pd.DataFrame, *, level: float = 0.8, labels: dict[str, str] | None = None,
                  title: str | None = None) -> go.Figure:
    """``table``: ``forecast.Holdout.table`` (arm, held_out_dim, measured, estimate, low, high, covered,
    identifiable, reason). Per option: the forecast of the held-out size from the smaller ones with its interval
    (hollow diamond and bar), and the measured value (filled: inside the interval; x: outside)."""
    if table.empty:
        return empty_figure(title or "Held-out check", "no held-out check: it needs runs at 3 or more sizes")
    t = table.assign(_m=_num(table["measured"]), _e=_num(table["estimate"]), _lo=_num(table["low"]),
                     _hi=_num(table["high"]))
    ok = t[t["identifiable"].astype(bool) & t["_e"].notna()]
    dim = ", ".join(str(int(v)) for v in sorted(set(_num(t["held_out_dim"]).dropna())))
    covered = int(ok["covered"].astype(bool).sum())
    head = title or (f"Held-out check: dim {dim} forecast from the smaller sizes; {level:.0%} intervals covered "
                     f"{covered} of {len(ok)} option(s)")
    fig = go.Figure()
    ys = [_label(labels, a) for a in ok["arm"]]
    fig.add_trace(go.Scatter(x=ok["_e"].tolist(), y=ys, mode="markers", name=f"forecast, {level:.0%} interval",
                             marker={"symbol": "diamond-open", "size": 10, "color": SERIES[0]},
                             error_x={"type": "data", "symmetric": False, "array": (ok["_hi"] - ok["_e"]).tolist(),
                                      "arrayminus": (ok["_e"] - ok["_lo"]).tolist()}))
    for hit, name, sym, colour in ((True, "measured: inside the interval", "circle", "#2E8B57"),
                                   (False, "measured: outside the interval", "x", "#C0392B")):
        g = ok[ok["covered"].astype(bool) == hit]
        if g.empty:
            continue
        fig.add_trace(go.Scatter(x=g["_m"].tolist(), y=[_label(labels, a) for a in g["arm"]], mode="markers",
                                 name=name, marker={"symbol": sym, "size": 10, "color": colour},
                                 hovertext=[f"{_label(labels, r['arm'])}: measured {r['_m']:.4f}, forecast "
                                            f"{r['_e']:.4f} [{r['_lo']:.4f}, {r['_hi']:.4f}] bits/byte"
                                            for _, r in g.iterrows()], hoverinfo="text"))
    fig = figure_layout(fig, head, x=f"validation loss at the held-out size (bits/byte; {level:.0%} interval)",
                        y="option", height=max(320, 26 * len(ys) + 160))
    fig.update_yaxes(type="category")
    return fig
