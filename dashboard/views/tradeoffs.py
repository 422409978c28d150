"""Trade-offs: dim, depth and heads swept around the current configuration; every cost against every axis,
and capacity / benefit proxies (with their sources) so the seed analysis's claims become curves."""

from __future__ import annotations

from functools import partial

import pandas as pd
import streamlit as st
from xtlens.core import units
from xtlens.core.config import ModelConfig
from xtlens.core.presets import config_label
from xtlens.dashboard import charts, data, proxies, tables
from xtlens.dashboard.session import jobs, tab_settings
from xtlens.dashboard.session.colours import config_colours
from xtlens.dashboard.views import Ctx, benefits
from xtlens.dashboard.views.common import chart, table

COSTS = (
    ("num_params", "Parameters", "parameters (count)", 1.0, False),
    ("fwd_flops_per_token", "Forward FLOPs per token", "FLOPs per token (1 multiply-add = 2 FLOPs)", 1.0, False),
    ("inference_total_bytes", "Inference memory", "GiB (2^30 bytes)", float(units.GIB), False),
    ("training_peak_bytes", "Training peak (AdamW, no recomputation)", "GiB (2^30 bytes)", float(units.GIB), False),
)
CLAIMS = {  # what the written analysis that came with the seed says, in our words, and what the curves show
    "dim": "The seed's written analysis says a larger dim gives a better representation at the price of compute, "
           "memory and over-fitting risk: the curves below show the price.",
    "depth": "The seed's written analysis says more depth gives more hierarchical representations at the price of "
             "compute, memory and over-fitting risk: the curves below show the price.",
    "heads": "The seed's written analysis says more heads give more diverse attention at some compute and memory. "
             "Correction: in x-transformers each head is attn_dim_head wide (heads do not split dim), so heads add "
             "parameters and FLOPs in proportion.",
}


def request(ctx: Ctx, axis: str, frame: pd.DataFrame) -> jobs.Request:
    swept = [ctx.cfg.replace(**{axis: int(v)}) for v in frame["axis_value"]]
    names = [config_label(cfg) for cfg in swept]  # stored under its own name, e.g. "seed · dim=80"
    if len(set(names)) < len(names):  # more than 4 differences can hide the swept field: name it
        names = [f"{n} · {axis}={int(v)}" for n, v in zip(names, frame["axis_value"], strict=True)]
    configs = tuple(zip(names, swept, strict=True))
    return jobs.Request(label=f"forward latency across {axis} at {ctx.wl.seq_len} tokens", what=("latency",),
                        configs=configs, workloads=(ctx.wl,), device=ctx.device, phases=("forward",), repeats=3,
                        warmup=1)


def render(ctx: Ctx) -> None:
    cols = st.columns([2, 3])
    kept_axis = tab_settings.tab_setting("tradeoffs.axis", tables.SWEEP_AXES[0])  # allowed: session.setting_values
    kept_btokens = tab_settings.tab_setting("tradeoffs.dataset_btokens", 1.0)
    axis = cols[0].radio("axis to sweep", tables.SWEEP_AXES, index=tables.SWEEP_AXES.index(kept_axis), horizontal=True,
                         key="tradeoffs.axis",
                         help="Other fields stay as in the sidebar; invalid combinations are skipped and listed.")
    dataset_btokens = cols[1].number_input("your data set size (billions of tokens)", min_value=0.001, max_value=100000.0,
                                           value=float(kept_btokens), step=0.5, format="%g",
                                           key="tradeoffs.dataset_btokens",
                                           help="Used by the tokens-per-parameter indicator and the loss proxy.")
    dataset_tokens = dataset_btokens * 1e9
    (mine,) = config_colours([("current", ctx.cfg)]).values()  # its colour in every chart of the page
    sweep = partial(charts.sweep_metric, current_colour=mine)
    frame, skipped = data.sweep(ctx.cfg, ctx.wl, axis, dataset_tokens)
    st.caption(CLAIMS[axis] + f" Costs below: closed form at batch {ctx.wl.batch} x {ctx.wl.seq_len:,} tokens, "
               f"{ctx.wl.dtype}; the diamond is the current configuration, in its colour in every chart of the page.")
    st.subheader(f"Costs against {axis}")
    cols = st.columns(2)
    for i, (metric, title, y_title, scale, log_y) in enumerate(COSTS):
        with cols[i % 2]:
            chart(sweep(frame, axis=axis, metric=metric, title=f"{title} vs {axis}", y_title=y_title,
                                      scale=scale, log_y=log_y), f"sweep_{metric}")

    st.subheader(f"Measured forward latency against {axis}")
    lat = jobs.panel(request(ctx, axis, frame), key=f"tradeoffs.{axis}", button="Measure latency",
                     help="Times one forward per swept configuration in a child process.") if not frame.empty else None
    if lat is not None:
        ok = lat[(lat["status"] == "ok") & (lat["phase"] == "forward")]
        swept = ok["config_json"].map(lambda text: getattr(ModelConfig.from_json(text), axis))  # the row's own config
        merged = frame.merge(ok.assign(axis_value=swept.astype(int))[["axis_value", "latency_median_ms"]],
                             on="axis_value", how="left")
        chart(sweep(merged.dropna(subset=["latency_median_ms"]), axis=axis, metric="latency_median_ms",
                                  title=f"Forward latency vs {axis} (median, {ctx.device_label})",
                                  y_title="latency (ms)"), "sweep_latency")

    benefits.tradeoff_panel(ctx, axis)  # measured validation loss beside the costs (Benefits tab's scaling probe)

    st.subheader("Capacity and benefit proxies (literature fits and rules of thumb, not measurements of this model)")
    cols = st.columns(2)
    with cols[0]:
        chart(sweep(frame, axis=axis, metric="tokens_per_param",
                                  title=f"Your data: tokens per parameter vs {axis}",
                                  y_title="tokens per parameter (log scale)", log_y=True,
                                  reference=proxies.CHINCHILLA_TOKENS_PER_PARAM,
                                  reference_label="Chinchilla compute-optimal ~20"), "proxy_tpp")
    with cols[1]:
        chart(sweep(frame, axis=axis, metric="chinchilla_loss_nats",
                                  title=f"Literature fit (Chinchilla L(N, D), not measured) vs {axis}",
                                  y_title="predicted loss (nats/token, their data)"), "proxy_loss")
    cols = st.columns(2)
    with cols[0]:
        chart(sweep(frame, axis=axis, metric="non_embedding_params",
                                  title=f"Capacity: non-embedding parameters vs {axis}",
                                  y_title="non-embedding parameters (count)"), "proxy_ne")
    with cols[1]:
        chart(sweep(frame, axis=axis, metric="compute_optimal_tokens",
                                  title=f"Compute-optimal training tokens (20 x N) vs {axis}",
                                  y_title="tokens (log scale)", log_y=True, reference=dataset_tokens,
                                  reference_label="your data set"), "proxy_dopt")
    current = frame[frame["is_current"]]
    if not current.empty:
        row = current.iloc[0]
        st.info(f"Current configuration with {dataset_btokens:g} B tokens: {row['tokens_per_param']:,.1f} tokens per "
                f"parameter — {proxies.data_regime(dataset_tokens, int(row['num_params']))}. Training compute "
                f"6·N·D = {units.fmt_flops(row['train_compute_flops'])}.")
    st.markdown("**Sources of the proxy formulas**\n\n" + "\n".join(f"- {s}" for s in proxies.SOURCES.values()))
    for note in skipped:
        st.caption(f"Skipped: {note}")
    table(frame, f"sweep over {axis}", f"tradeoffs.{axis}")
