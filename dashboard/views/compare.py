"""Compare: two to four configurations side by side (the live one, pinned ones, presets, pasted code)."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from xtlens.core import units
from xtlens.core.config import PRESETS, ConfigError, Workload, parse_snippet
from xtlens.dashboard import charts, data, tables
from xtlens.dashboard.session import loading, pins, tab_settings
from xtlens.dashboard.session.colours import config_colours
from xtlens.dashboard.views import Ctx
from xtlens.dashboard.views.common import chart, dataframe, downloads, table
from xtlens.profiling.results.records import arrow_safe


def entries(ctx: Ctx, include_current: bool) -> list[tuple[str, object]]:
    """Every pinned configuration, after the live one when asked: up to ``MAX_PINS + 1``, none dropped."""
    out = [("current (sidebar)", ctx.cfg)] if include_current else []
    return out + [(p.name, p.config) for p in pins.pinned()]


def at_length(items: list[tuple[str, object]], seq_len: int) -> tuple[list[tuple[str, object, Workload]], list[str]]:
    """Each configuration with the workload it is evaluated at: ``seq_len``, or its own ``max_seq_len`` when
    that is shorter (its name then says so); and one sentence per such configuration."""
    out, notes = [], []
    for name, cfg in items:
        if cfg.max_seq_len < seq_len:
            label = f"{name} ⚠ at {cfg.max_seq_len:,} tokens"
            notes.append(f"**{name}** has max_seq_len {cfg.max_seq_len:,}, shorter than the {seq_len:,} tokens of the "
                         f"workload: its column is evaluated at {cfg.max_seq_len:,} tokens (marked ⚠) and its curves "
                         f"end there (marked X).")
            out.append((label, cfg, cfg.max_seq_len))
        else:
            out.append((name, cfg, seq_len))
    return out, notes


def identical(evaluated: list[tuple[str, object, int]]) -> list[tuple[str, str]]:
    """``(name, first name)`` for every compared entry whose configuration equals an earlier one's."""
    out, first = [], {}
    for name, cfg, _n in evaluated:
        key = cfg.to_json()
        if key in first:
            out.append((name, first[key]))
        else:
            first[key] = name
    return out


def render(ctx: Ctx) -> None:
    _pin_controls(ctx)
    kept_include = tab_settings.tab_setting("compare.include_current", True)
    include = st.toggle("include the live configuration from the sidebar", value=kept_include,
                        key="compare.include_current")
    items = entries(ctx, include)
    if len(items) < 2:
        st.info("Pin at least one more configuration to compare (the buttons above): from the sidebar, a preset or "
                f"pasted x-transformers code. Up to {pins.MAX_PINS} pins and the live configuration are compared; "
                "the first is the reference for the deltas.")
        return
    evaluated, notes = at_length(items, ctx.wl.seq_len)
    est = [(name, {**data.estimate(cfg, w), **tables.headline_keys(data.training_headline(cfg, w))})
           for name, cfg, n in evaluated for w in [Workload(batch=ctx.wl.batch, seq_len=n, dtype=ctx.wl.dtype)]]
    long = tables.compare_table(est)
    colours = config_colours([(label, cfg) for label, cfg, _n in evaluated])  # as in every other chart
    twins = identical(evaluated)
    st.subheader(f"Side by side at batch {ctx.wl.batch} x {ctx.wl.seq_len:,} tokens, {ctx.wl.dtype}")
    for note in notes:
        st.warning(note)
    st.caption(f"Deltas (Δ) are against **{items[0][0]}**: in brackets, in %; in bytes, FLOPs or counts in the "
               "table with the absolute deltas below. One unit per row (GiB = 2^30 bytes, MiB = 2^20 bytes); "
               "FLOPs with 1 multiply-add = 2 FLOPs. Each configuration keeps its colour in every chart below.")
    wide = tables.compare_wide(long, deltas_inline=True)  # one column per configuration: readable at 400 px
    dataframe(arrow_safe(wide), "df.compare.wide", title="comparison", raw=long, width="stretch",
              height=35 * (len(wide) + 1) + 3, column_config={"quantity": st.column_config.TextColumn(pinned=True)})
    downloads(long, "comparison", "compare.long")
    table(tables.compare_wide(long), "comparison with the absolute deltas", "compare.deltas",
          caption=f"Each configuration's value and its difference (Δ) from **{items[0][0]}**, in the row's unit.")
    cols = st.columns(2)
    with cols[0]:
        chart(charts.compare_bars(long, metric="num_params", title="Parameters (count)", y_title="parameters",
                                  colours=colours),
              "cmp_params")
    with cols[1]:
        chart(charts.compare_bars(long, metric="fwd_flops_per_token", title="Forward FLOPs per token",
                                  y_title=charts.FLOPS_AXIS, colours=colours), "cmp_flops")
    longest = max(c.max_seq_len for _, c in items)
    ends = {label: f"max_seq_len {cfg.max_seq_len:,}" for label, cfg, _n in evaluated if cfg.max_seq_len < longest}
    curves = []
    for (name, cfg, _n) in evaluated:
        lens = tuple(tables.seq_len_grid(cfg.max_seq_len))
        curve = data.memory_curve(cfg, ctx.wl, lens)
        totals = curve.groupby(["phase", "seq_len_tokens"], sort=False)["bytes"].sum().reset_index()
        curves.append(totals.assign(config=name))
        flops = data.flops_curve(cfg, ctx.wl, lens)
        curves[-1] = curves[-1].merge(flops[["seq_len_tokens", "fwd_flops"]], on="seq_len_tokens")
    overlay = pd.concat(curves, ignore_index=True)
    cols = st.columns(2)
    for i, (phase, words) in enumerate((("train_step", "Training"), ("inference", "Inference"))):
        with cols[i]:
            chart(charts.overlay_lines(overlay[overlay["phase"] == phase], x="seq_len_tokens", y="bytes",
                                       series="config", title=f"{words} memory vs sequence length",
                                       x_title=charts.SEQ_AXIS, y_title=charts.GIB_AXIS + ", log scale",
                                       scale=float(units.GIB), log_y=True, ends=ends, colours=colours),
                  f"cmp_mem_{'training' if phase == 'train_step' else phase}")
    chart(charts.overlay_lines(overlay[overlay["phase"] == "train_step"], x="seq_len_tokens", y="fwd_flops",
                               series="config", title="Forward FLOPs vs sequence length",
                               x_title=charts.SEQ_AXIS, y_title=charts.FLOPS_AXIS + ", log scale", log_y=True,
                               ends=ends, colours=colours),
          "cmp_flops_seq")
    for name, first in twins:
        st.caption(f"**{name}** is the same configuration as **{first}**: the same colour (one colour per "
                   "configuration), its line drawn dashed with other markers on top of the first.")
    table(overlay, "compared curves", "compare.curves")
    with st.expander("The compared configurations as x-transformers code"):
        for name, cfg in items:
            st.markdown(f"**{name}**")
            st.code(cfg.to_snippet(), language="python")


def _pin_controls(ctx: Ctx) -> None:
    pinned = pins.pinned()
    full = len(pinned) >= pins.MAX_PINS
    cols = st.columns([2, 1, 2, 1])
    cols[0].text_input("name for the pin", value=f"pin {len(pinned) + 1}", key="compare.pin_name", max_chars=200)
    cols[1].button("Pin current", key="compare.pin_current", on_click=pins.on_pin_current, args=("compare.pin_name", ctx.cfg),
                   disabled=full, width="stretch")
    cols[2].selectbox("preset", list(PRESETS), key="compare.preset")
    cols[3].button("Add preset", key="compare.add_preset", on_click=pins.on_pin_preset, args=("compare.preset",),
                   disabled=full, width="stretch")
    with st.expander("Add pasted x-transformers code"):
        text = st.text_area("TransformerWrapper(...) code", key="compare.snippet", height=140)
        try:
            parsed = parse_snippet(text) if text.strip() else None
            error = None
        except ConfigError as exc:
            parsed, error = None, str(exc)
        if error:
            st.error(error)
        st.button("Add pasted code", key="compare.add_snippet", on_click=pins.on_pin_snippet,
                  args=("compare.snippet",), disabled=parsed is None or full)
    if full:
        st.caption(f"{pins.MAX_PINS} pins at most: remove one to add another.")
    if pinned:
        cols = st.columns(len(pinned))
        for i, (col, pin) in enumerate(zip(cols, pinned, strict=True)):
            with col:
                st.markdown(f"**{pin.name}**: dim {pin.config.dim}, depth {pin.config.depth}, heads {pin.config.heads}")
                buttons = st.columns(2)
                buttons[0].button("Remove", key=f"compare.remove.{i}", on_click=pins.on_remove_pin, args=(i,))
                buttons[1].button("Load", key=f"compare.load.{i}", on_click=loading.on_load_config,
                                  args=(pin.config, f"Loaded pin {pin.name!r} into the sidebar."),
                                  help="Put this configuration into the sidebar controls")
