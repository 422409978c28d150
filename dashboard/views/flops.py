"""FLOPs: closed form vs sequence length, the split by part, and the measured cross-check (fvcore vs torch's
FlopCounterMode vs closed form) with per-module and per-operator breakdowns."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from xtlens.core import units
from xtlens.dashboard import charts, data, headline, tables
from xtlens.dashboard.session import jobs, other_runs
from xtlens.dashboard.session.colours import config_colours
from xtlens.dashboard.views import Ctx
from xtlens.dashboard.views.common import chart, dataframe, table
from xtlens.profiling.measure import flops as fb
from xtlens.profiling.results.records import arrow_safe

COUNTERS = (
    ("predicted_flops", "closed form (core.cost_model)"),
    ("torch_counter_flops", "torch FlopCounterMode"),
    ("fvcore_flops", "fvcore (2 x its MACs)"),
)


def request(ctx: Ctx) -> jobs.Request:
    return jobs.Request(label=f"FLOP counts at {ctx.wl.seq_len} tokens", what=("flops_breakdown",),
                        configs=((ctx.config_name, ctx.cfg),), workloads=(ctx.wl,), device="cpu")


def render(ctx: Ctx) -> None:
    est = data.estimate(ctx.cfg, ctx.wl)
    st.caption("Every FLOP number here counts one multiply-add as 2 FLOPs (torch's convention). fvcore counts a "
               "multiply-add as one 'flop': its raw count is shown as MACs. Only matrix multiplications are counted "
               "(norms, softmax, rotary, ALiBi are element-wise).")
    cols = st.columns(2) + st.columns(2)
    cols[0].metric("Forward, full n x n", units.fmt_flops(est["fwd_flops"]),
                   help="what the kernels compute with ALiBi's dense mask, and what FlopCounterMode counts")
    cols[1].metric("Forward, causal half", units.fmt_flops(est["fwd_flops_causal"]),
                   help="the n(n+1)/2 query-key pairs a causal decoder needs")
    train = data.training_headline(ctx.cfg, ctx.wl)
    cols[2].metric(headline.flops_label(), units.fmt_flops(train.step_flops),
                   help="3 x forward" + (f" + {units.fmt_flops(train.fused_score_flops)} for the scores QK^T the fused "
                                         "(attn_flash) SDPA backward recomputes" if train.fused_score_flops else "")
                        + "; the Setups tab adds activation recomputation")
    cols[3].metric("Forward per token", units.fmt_flops(est["fwd_flops_per_token"]))
    curve = data.flops_curve(ctx.cfg, ctx.wl, tuple(tables.seq_len_grid(ctx.cfg.max_seq_len)))
    left, right = st.columns(2)
    with left:
        chart(charts.flops_vs_seq(curve, title=f"Closed-form FLOPs vs sequence length (batch {ctx.wl.batch})"),
              "flops_seq")
    with right:
        split = pd.DataFrame({
            "part": ["Q projection", "K projection", "V projection", "output projection", "attention scores QK^T",
                     "attention values PV", "feed-forward", "logits", "value gate (attn_gate_values)",
                     "hyper-connections"],
            "flops": [est[k] for k in ("q_proj_flops", "k_proj_flops", "v_proj_flops", "out_proj_flops",
                                       "attn_scores_flops", "attn_values_flops", "ff_flops", "logits_flops",
                                       "gate_proj_flops", "hyper_connection_flops")],
        }).query("flops > 0")  # the options' parts only when they are on
        chart(charts.flops_split_bar(split, title=f"Forward FLOPs by matmul at {ctx.wl.seq_len:,} tokens"),
              "flops_parts")
    table(curve, "closed-form FLOPs vs sequence length", "flops.curve")

    st.subheader("Counted on the real model: fvcore vs torch FlopCounterMode vs closed form")
    frame = jobs.panel(request(ctx), key="flops", button="Count FLOPs",
                       help="Builds the real x-transformers model (fake tensors for torch's counter; a traced "
                            "forward for fvcore) in a child process.")
    _other_runs(ctx, frame)
    if frame is None:
        return
    ok = frame[(frame["measurement"] == "flops") & (frame["status"] == "ok")]
    totals = ok[ok["component"] == "total"]
    if not totals.empty:
        st.markdown("**Total FLOPs by counter** (1 multiply-add = 2 FLOPs): a table, because the counters differ by "
                    "hundredths of a percent, which bars of equal height would hide.")
        dataframe(counter_table(totals), "df.flops.counters", title="total FLOPs by counter", width="stretch")
        show = totals[["phase", "predicted_flops", "torch_counter_flops", "fvcore_macs", "fvcore_flops",
                       "flops_rel_err", "method"]]
        dataframe(arrow_safe(show), "df.flops.totals", title="FLOP totals: predicted vs counted", raw=show,
                  width="stretch",
                     column_config={"fvcore_macs": st.column_config.NumberColumn("fvcore raw count (MACs)"),
                                    "flops_rel_err": st.column_config.NumberColumn("max rel. error",
                                                                                   format="percent")})
    parts = ok[ok["component"] != "total"]
    counted = {fb.TORCH_MODULE: "torch_counter_flops", fb.TORCH_OPERATOR: "torch_counter_flops",
               fb.FVCORE_MODULE: "fvcore_flops", fb.FVCORE_OPERATOR: "fvcore_flops"}
    cols = st.columns(2)
    for i, (method, value) in enumerate(counted.items()):
        group = parts[parts["method"] == method][["component", value]].dropna()
        if group.empty:
            continue
        if method in (fb.TORCH_MODULE, fb.FVCORE_MODULE):
            group = tables.module_roles(group, value)
            title = f"{method} (summed over the {ctx.cfg.depth} blocks)"
        else:
            title = method
        with cols[i % 2]:
            chart(charts.breakdown_bar(group, label="component", value=value, title=title,
                                       x_title=charts.FLOPS_AXIS), f"flops_break_{i}")
    gaps = parts[parts["method"].isin([fb.FVCORE_UNSUPPORTED, fb.FVCORE_UNCALLED])]
    if not gaps.empty:
        st.markdown("**fvcore's own gaps** (as fvcore reports them: operators it skipped, modules never called)")
        dataframe(gaps[["method", "component", "error"]].rename(columns={"error": "note"}), "df.flops.gaps",
                  title="fvcore's own gaps", width="stretch")
    table(frame, "FLOP counts", "flops.measured")


def counter_table(totals: pd.DataFrame) -> pd.DataFrame:
    """One row per (phase, counter): exact FLOPs and the difference from the closed form in percent."""
    rows = []
    for _, row in totals.iterrows():
        ref = row.get("predicted_flops")
        for col, name in COUNTERS:
            if pd.notna(row[col]):
                value = int(row[col])
                diff = 100.0 * (value - float(ref)) / float(ref) if pd.notna(ref) and ref else None
                at = {"tokens": int(row["seq_len_tokens"])} if pd.notna(row.get("seq_len_tokens")) else {}
                rows.append({**at, "phase": row["phase"], "counter": name, "FLOPs": f"{value:,}",
                             "vs closed form": "reference" if col == "predicted_flops" else
                             ("n/a" if diff is None else f"{diff:+.3f}%")})
    return pd.DataFrame(rows)


def _other_runs(ctx: Ctx, frame: pd.DataFrame | None) -> None:
    """FLOP totals of uploaded or restored runs, charted against their closed form with this session's count."""
    others = other_runs.for_view("flops")
    others = others[others["component"] == "total"]
    if others.empty:
        return
    st.markdown("**FLOP counts of uploaded and restored runs** (with this session's count when there is one)")
    st.caption(other_runs.caption(others, "FLOP totals", "one colour per configuration"))
    mine = f"{ctx.config_name} (this session)"
    parts = [others.assign(series=others["run"] + " / " + others["phase"].astype(str))]
    if frame is not None:
        own = frame[(frame["measurement"] == "flops") & (frame["status"] == "ok") & (frame["component"] == "total")]
        parts.insert(0, own.assign(series=mine + " / " + own["phase"].astype(str)))
    both = pd.concat(parts, ignore_index=True)
    colours = config_colours([(mine, ctx.cfg), *other_runs.run_keys(others)])
    chart(charts.colour_by_series(charts.flops_counted_vs_predicted(
        both, title="FLOPs counted (markers, labelled with the difference) vs closed form (dashed)"), colours,
        keep_symbols=True),
        "flops_runs")
    tbl = pd.concat([counter_table(g).assign(run=run) for run, g in others.groupby("run", sort=False)],
                    ignore_index=True)
    dataframe(tbl[["run", *[c for c in tbl.columns if c != "run"]]], "df.flops.runs", title="FLOP totals by run",
              width="stretch")
