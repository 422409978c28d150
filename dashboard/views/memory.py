"""Memory: stacked breakdown vs sequence length (inference and training), measured vs predicted."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from xtlens.core import units
from xtlens.core.config import Workload
from xtlens.dashboard import charts, data, jobs, tables
from xtlens.dashboard.views import Ctx
from xtlens.dashboard.views.common import chart, table


def seq_lens(ctx: Ctx) -> tuple[int, ...]:
    return tuple(tables.seq_len_grid(ctx.cfg.max_seq_len))


def request(ctx: Ctx) -> jobs.Request:
    wls = tuple(Workload(batch=ctx.wl.batch, seq_len=n, dtype=ctx.wl.dtype) for n in seq_lens(ctx))
    return jobs.Request(label=f"peak memory at {len(wls)} sequence lengths", what=("memory",),
                        configs=((ctx.config_name, ctx.cfg),), workloads=wls, device=ctx.device)


def render(ctx: Ctx) -> None:
    curve = data.memory_curve(ctx.cfg, ctx.wl, seq_lens(ctx))
    st.caption(f"Closed form (core.cost_model), batch {ctx.wl.batch}, {ctx.wl.dtype}. Each band is what is live at "
               "the peak: weights (+ rotary/ALiBi buffers), gradients and AdamW state (training), activations, the "
               "K/V tensors (what a KV cache holds) and the ALiBi tensors (bias copies and, with attn_flash, the dense "
               "(batch, heads, n, n) mask passed to SDPA). GiB = 2^30 bytes.")
    left, right = st.columns(2)
    with left:
        chart(charts.memory_stacked(curve, phase="inference",
                                    title="Inference (one no-grad forward): peak memory by component"), "mem_inf")
    with right:
        chart(charts.memory_stacked(curve, phase="train_step",
                                    title="Training step (AdamW): memory by component"), "mem_train")
    table(_wide(curve), "predicted memory by component", "memory.curve",
          caption="bytes; the components of each mode sum to the cost model's total")

    st.subheader(f"Measured vs predicted on {ctx.device_label}")
    frame = jobs.panel(request(ctx), key="memory", button="Measure memory",
                       help="Peak memory of a forward and of a training step at each length (child process).")
    if frame is not None:
        joined = tables.measured_vs_predicted_memory(frame)
        totals = joined[joined["component"] == "total"]
        chart(charts.measured_vs_predicted(
            totals[["seq_len_tokens", "phase", "predicted_bytes", "measured_bytes"]],
            title="Peak memory: measured (dots) vs predicted (dashed)"), "mem_measured")
        err = totals["rel_err"].dropna()
        if not err.empty:
            st.caption(f"Largest relative difference measured vs predicted: {100 * float(err.max()):.1f}%.")
        table(joined.drop(columns=["config_json"]), "measured vs predicted memory per component", "memory.joined",
              caption="each measured component joined to the prediction of the same (phase, component, length, "
                      "batch, dtype) from core.cost_model.predictions; rel_err = |measured - predicted| / predicted",
              expanded=True)
        table(frame, "memory measurements", "memory.measured")


def _wide(curve: pd.DataFrame) -> pd.DataFrame:
    wide = curve.pivot_table(index=["phase", "seq_len_tokens"], columns="component", values="bytes",
                             aggfunc="sum", sort=False).reset_index()
    wide.columns = [c if c in ("phase", "seq_len_tokens") else f"{c}_bytes" for c in wide.columns]
    parts = [c for c in wide.columns if c.endswith("_bytes")]
    wide[parts] = wide[parts].fillna(0).astype("int64")
    wide["total_bytes"] = wide[parts].sum(axis=1)
    wide["total_gib"] = (wide["total_bytes"] / units.GIB).round(4)
    return wide
