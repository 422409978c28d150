"""Latency: forward, attention, training step and per-token decode vs sequence length (log-log), tokens/s,
the SDPA kernel per point, with and without the ALiBi bias."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from xtlens.core.config import Workload
from xtlens.dashboard import charts, jobs, tables
from xtlens.dashboard.views import Ctx
from xtlens.dashboard.views.common import chart, table
from xtlens.profiling.records import arrow_safe

PHASES = ("forward", "attention", "train_step", "decode")
PHASE_TITLES = {
    "forward": "Forward latency (whole model, no grad)",
    "attention": "Attention-core latency (SDPA / einsum, summed over blocks)",
    "train_step": "Training-step latency (forward + backward + AdamW)",
    "decode": "Decode latency per generated token (KV cache of n tokens)",
}


def variants(ctx: Ctx) -> tuple[tuple[str, object], ...]:
    """The configuration as it is, and the same with the ALiBi bias switched the other way."""
    cfg = ctx.cfg
    if cfg.alibi_pos_bias:
        other = ("without ALiBi", cfg.replace(alibi_pos_bias=False, alibi_num_heads=None))
        return (("with ALiBi (current)", cfg), other)
    other = ("with ALiBi", cfg.replace(alibi_pos_bias=True))
    return (("without ALiBi (current)", cfg), other)


def request(ctx: Ctx, *, max_len: int, phases: tuple[str, ...], with_variant: bool, repeats: int) -> jobs.Request:
    lens = [n for n in tables.seq_len_grid(ctx.cfg.max_seq_len) if n <= max_len]
    wls = tuple(Workload(batch=ctx.wl.batch, seq_len=n, dtype=ctx.wl.dtype) for n in lens)
    configs = variants(ctx) if with_variant else variants(ctx)[:1]
    return jobs.Request(label=f"latency sweep {lens[0]}..{lens[-1]} tokens", what=("latency",), configs=configs,
                        workloads=wls, device=ctx.device, phases=phases, repeats=repeats, warmup=1)


def render(ctx: Ctx) -> None:
    gpu = ctx.device.startswith("cuda")
    lens = tables.seq_len_grid(ctx.cfg.max_seq_len)
    c = st.columns([2, 3, 2, 1])
    default_max = lens[-1] if gpu else min(lens[-1], 2048)
    max_len = c[0].select_slider("longest sequence to time (tokens)", options=lens, value=default_max,
                                 key="latency.max_len",
                                 help="On a CPU, 8192 tokens with the dense ALiBi mask takes minutes per point.")
    phases = tuple(c[1].multiselect("phases", PHASES, default=list(PHASES), key="latency.phases")) or ("forward",)
    with_variant = c[2].toggle("also time the other ALiBi setting", value=True, key="latency.variant",
                               help="Same configuration with alibi_pos_bias flipped: the cost of the bias.")
    repeats = int(c[3].number_input("repeats", 1, 50, 3 if not gpu else 10, key="latency.repeats"))
    req = request(ctx, max_len=max_len, phases=phases, with_variant=with_variant, repeats=repeats)
    frame = jobs.panel(req, key="latency", button="Measure latency",
                       help="Times every phase at every length in a child process; progress below.")
    if frame is None:
        st.info("Charts appear here once measured: latency vs sequence length on log-log axes, with the fitted "
                "slope (1 = linear, 2 = quadratic in length) and the attention kernel at each point.")
        return
    ok = frame[(frame["measurement"] == "latency") & (frame["status"] == "ok")].copy()
    ok["series"] = ok["config_name"].astype(str)
    for phase in [p for p in PHASES if p in set(ok["phase"])]:
        part = ok[ok["phase"] == phase]
        chart(charts.latency_loglog(part, title=f"{PHASE_TITLES[phase]}: median with min-max bars"),
              f"lat_{phase}")
    fwd = ok[ok["phase"].isin(["forward", "decode"])].copy()
    if not fwd.empty:
        fwd["series"] = fwd["config_name"].astype(str) + " / " + fwd["phase"].astype(str)
        chart(charts.latency_loglog(fwd, y="tokens_per_s", y_title="throughput (tokens/s, log scale)",
                                    title="Throughput: forward tokens/s and decode tokens/s", tickformat="~s"),
              "lat_tps")
    st.markdown("**Attention kernel that ran at each point** (SDPA backend; `math` / `einsum` when no fused kernel ran)")
    st.dataframe(arrow_safe(_kernels(ok)), hide_index=True, width="stretch", key="df.latency.kernels")
    table(frame, "latency measurements", "latency.measured")


def _kernels(ok: pd.DataFrame) -> pd.DataFrame:
    rows = ok[ok["phase"] == "forward"] if (ok["phase"] == "forward").any() else ok
    if rows.empty:
        return pd.DataFrame()
    pivot = rows.pivot_table(index="seq_len_tokens", columns="config_name", values="sdpa_backend",
                             aggfunc="first").reset_index()
    pivot.columns.name = None
    return pivot
