"""Overview: the headline numbers, the 2.31 vs 1.19.1 parameter counts, effective kwargs and the facts."""

from __future__ import annotations

import re

import pandas as pd
import streamlit as st
from xtlens.core.config import PRESETS
from xtlens.core.units import fmt_bytes, fmt_count, fmt_flops
from xtlens.dashboard import charts, data, facts, headline, tables
from xtlens.dashboard.session import jobs
from xtlens.dashboard.session.jobs import NOT_MEASURED
from xtlens.dashboard.views import Ctx
from xtlens.dashboard.views.common import chart, dataframe, downloads, table
from xtlens.dashboard.views.memory import measured_words
from xtlens.profiling.results.records import arrow_safe


def request(ctx: Ctx) -> jobs.Request:
    return jobs.Request(label=f"latency and memory at {ctx.wl.seq_len} tokens", what=("latency", "memory"),
                        configs=((ctx.config_name, ctx.cfg),), workloads=(ctx.wl,), device=ctx.device)


def render(ctx: Ctx) -> None:
    """Key numbers and the facts first; the measurement, charts, parity and keywords after; every long explanation
    in an expander."""
    cfg, wl = ctx.cfg, ctx.wl
    est = data.estimate(cfg, wl)
    st.subheader("Key numbers (closed form: update on every change, nothing is run)")
    st.caption(f"batch {wl.batch} x {wl.seq_len:,} tokens, {wl.dtype}. FLOPs: 1 multiply-add = 2 FLOPs, attention "
               "over the full n x n square (what the kernels compute with a dense mask). Memory: GiB = 2^30 bytes.")
    cols = st.columns(3)
    cols[0].metric("Parameters", fmt_count(est["num_params"]), help="x-transformers 2.31 model as xtlens builds it")
    cols[1].metric("Embedding parameters", fmt_count(est["embedding_params"]),
                   help="token embedding (+ learned absolute position table when present)")
    cols[2].metric("Non-embedding parameters", fmt_count(est["non_embedding_params"]),
                   help="everything else, including the output (logits) projection unless tied")
    cols = st.columns(3)
    cols[0].metric("Forward FLOPs per token", fmt_flops(est["fwd_flops_per_token"]))
    cols[1].metric("Forward FLOPs per sequence", fmt_flops(est["fwd_flops"] / wl.batch),
                   help=f"causal half instead of the full square: {fmt_flops(est['fwd_flops_causal'] / wl.batch)}")
    train = data.training_headline(cfg, wl)
    cols[2].metric(headline.flops_label(), fmt_flops(train.step_flops),
                   help="One training step of the batch: forward + backward = 3 x forward"
                        + (f", plus {fmt_flops(train.fused_score_flops)} for the scores QK^T that the fused "
                           "(attn_flash) SDPA backward recomputes" if train.fused_score_flops else "")
                        + ". No activation recomputation (the Setups tab adds it).")
    cols = st.columns(3)
    cols[0].metric("Inference memory (one forward)", fmt_bytes(est["inference_total_bytes"]),
                   help="weights + buffers + peak activations of a no-grad forward")
    cols[1].metric(headline.peak_label(), fmt_bytes(train.peak_bytes),
                   help="The peak of `loss = f(model(x)); loss.backward(); optimizer.step()` by the order tensors live "
                        f"and die (at: {train.peak_stage}); the same number as the Memory and Setups tabs. "
                        f"{headline.UPPER_BOUND_LABEL}: {fmt_bytes(train.upper_bound_bytes)}.")
    cols[2].metric("KV cache at this length", fmt_bytes(est["kv_cache_bytes"]),
                   help="2 x depth x batch x kv_heads x n x attn_dim_head x bytes per element")

    st.caption(f"{headline.UPPER_BOUND_LABEL}: {fmt_bytes(train.upper_bound_bytes)} (weights, gradients, AdamW "
               "state and saved tensors as if all were alive at once).")
    facts_box = st.container()  # drawn after the measurement: the attention-kernel fact names the kernel that ran
    st.subheader(f"Measured on {ctx.device_label}")
    frame = jobs.panel(request(ctx), key="overview", button="Measure",
                       help="Latency (forward, attention, training step, decode) and peak memory, this config and "
                            "length, on the device chosen in the sidebar.")
    _measured(frame, {**est, "training_peak_bytes": train.peak_bytes})
    with facts_box:
        _facts(ctx, _kernel_name(frame))

    left, right = st.columns(2)
    with left:
        chart(charts.params_bar(tables.params_table(est)), "params")
    with right:
        chart(charts.flops_split_bar(_flops_split(est), title=f"Forward FLOPs by part at {wl.seq_len:,} tokens"),
              "flops_split")

    _parity(ctx)
    _effective(ctx)
    table(tables.estimate_table(data.predictions(cfg, wl)), "closed-form estimate", "overview.estimate",
          caption="Every quantity core.cost_model computes for this configuration and workload (raw integers; "
                  "bytes in bytes, FLOPs with 1 multiply-add = 2 FLOPs).")


def _flops_split(est: dict) -> pd.DataFrame:
    return pd.DataFrame({
        "part": ["Q/K/V/out (+ gate) projections", "attention scores + values (n x n)", "feed-forward", "logits",
                 "hyper-connections"],
        "flops": [est["proj_flops"], est["attn_flops"], est["ff_flops"], est["logits_flops"],
                  est["hyper_connection_flops"]],
    }).query("flops > 0")


def _measured(frame: pd.DataFrame | None, est: dict) -> None:
    def ms(phase: str) -> str:
        v = jobs.measured_value(frame, measurement="latency", phase=phase, column="latency_median_ms")
        return NOT_MEASURED if v is None else f"{v:,.2f} ms"

    tok = jobs.measured_value(frame, measurement="latency", phase="forward", column="tokens_per_s")
    mem_inf = jobs.measured_value(frame, measurement="memory", phase="inference", column="measured_bytes")
    mem_train = jobs.measured_value(frame, measurement="memory", phase="train_step", column="measured_bytes")
    kernel = _kernel(frame)
    word, how = measured_words(frame) if frame is not None else ("measured", "")  # MemTracker on CPU: simulated
    inf_label, train_label = f"Peak memory, inference ({word})", f"Peak memory, training ({word})"
    shown = {
        "Forward latency (median)": ms("forward"),
        "Training-step latency (median)": ms("train_step"),
        "Decode latency per token (median)": ms("decode"),
        "Forward throughput": NOT_MEASURED if tok is None else f"{tok:,.0f} tokens/s",
        inf_label: NOT_MEASURED if mem_inf is None else fmt_bytes(mem_inf),
        train_label: NOT_MEASURED if mem_train is None else fmt_bytes(mem_train),
    }
    if frame is None:
        with st.expander("What Measure gives (nothing measured yet)"):
            st.markdown("| measured quantity | value |\n|---|---|\n"
                        + "\n".join(f"| {label} | {value} |" for label, value in shown.items()))
    else:
        predicted = {inf_label: est["inference_total_bytes"], train_label: est["training_peak_bytes"]}
        sim = f"; simulated: {how} (the tensors' sizes, no run)" if word == "simulated" else ""
        for row in (list(shown.items())[:3], list(shown.items())[3:]):
            cols = st.columns(3)
            for col, (label, value) in zip(cols, row, strict=True):
                col.metric(label, value,
                           help=f"predicted {fmt_bytes(predicted[label])}{sim}" if label in predicted else None)
    if frame is not None:
        st.markdown(f"**Attention kernel that ran:** {kernel}")
        table(frame, "measurements at this length", "overview.measured")


def _kernel_name(frame: pd.DataFrame | None) -> str | None:
    """The SDPA backend the measured forward used, or None when not measured."""
    if frame is None:
        return None
    rows = frame[(frame["measurement"] == "latency") & (frame["phase"] == "forward") & (frame["status"] == "ok")]
    return None if rows.empty or not isinstance(rows.iloc[0]["sdpa_backend"], str) else rows.iloc[0]["sdpa_backend"]


def _kernel(frame: pd.DataFrame | None) -> str:
    if frame is None:
        return NOT_MEASURED
    rows = frame[(frame["measurement"] == "latency") & (frame["phase"] == "forward") & (frame["status"] == "ok")]
    if rows.empty:
        return "unknown (the forward was not measured)"
    r = rows.iloc[0]
    reason = r["sdpa_backend_reason"]
    return f"`{r['sdpa_backend']}`" + (f" — {reason}" if isinstance(reason, str) and reason else "")


def _parity(ctx: Ctx) -> None:
    st.subheader("Parameter count: x-transformers 2.31 vs 1.19.1")
    view = data.builder_view(ctx.cfg.to_json())
    if view.error:
        st.error(view.error)
        return
    if view.xt1191_num_params is None:
        st.metric(f"x-transformers {view.xtransformers_version} (built, counted)", fmt_count(view.num_params))
        st.info(next(n for n in view.notes if n.startswith("x-transformers 1.19.1 comparison")))
        return
    diff = (view.xt1191_num_params or 0) - (view.num_params or 0)
    cols = st.columns(3)
    cols[0].metric(f"x-transformers {view.xtransformers_version} (built, counted)", fmt_count(view.num_params))
    cols[1].metric("x-transformers 1.19.1", fmt_count(view.xt1191_num_params))
    cols[2].metric("Difference (1.19.1 - 2.31)", fmt_count(diff))
    if not view.differences:
        return
    norm_biases = [d for d in view.differences if d.cause.startswith("LayerNorm")]
    parts = ([f"{len(norm_biases)} LayerNorm biases ({sum(d.count for d in norm_biases):,})"] if norm_biases else []) + [
        f"{d.role} ({d.count:,})" for d in view.differences if d not in norm_biases]
    st.markdown(f"1.19.1 has {diff:,} more: " + ", ".join(parts) + ".")
    with st.expander("Why the counts differ"):
        seed = data.builder_view(PRESETS["seed"].to_json())
        if seed.num_params is not None and seed.xt1191_num_params is not None:
            current = " (the current configuration)" if ctx.cfg == PRESETS["seed"] else ""
            st.markdown(f"**The seed{current}:** {seed.num_params:,} parameters in x-transformers "
                        f"{seed.xtransformers_version} vs {seed.xt1191_num_params:,} in 1.19.1, the version the seed "
                        f"configuration was written for ({seed.xt1191_num_params - seed.num_params:,} more in 1.19.1). "
                        "Why, for the configuration in the sidebar:")
        lines = []
        if norm_biases:
            lines.append(f"- **{len(norm_biases)} LayerNorm biases of {_shape(norm_biases[0])}** = {sum(d.count for d in norm_biases):,} parameters: "
                         "x-transformers 2.x LayerNorm has a gain only (no bias); 1.19.1 used torch.nn.LayerNorm "
                         "with weight and bias.")
        for d in view.differences:
            if d not in norm_biases:
                lines.append(f"- **{d.role}** ({_shape(d)}) = {d.count:,} parameters: {d.cause}")
        st.markdown("\n".join(lines))
        diffs = pd.DataFrame([{"role_in_1_19_1": d.role, "shape": _shape(d), "num_params": d.count, "cause": d.cause}
                              for d in view.differences])
        dataframe(arrow_safe(diffs), "df.overview.parity", title="parameters present in 1.19.1 only", raw=diffs,
                  width="stretch")
        downloads(diffs, "parameters present in 1.19.1 only", "overview.parity")


def _shape(d) -> str:
    return "x".join(map(str, d.shape))


def _effective(ctx: Ctx) -> None:
    st.subheader("Effective x-transformers keywords")
    view = data.builder_view(ctx.cfg.to_json())
    for t in view.translations:
        effective = ", ".join(f"{k}={v!r}" for k, v in t.effective.items())
        st.markdown(f"**{t.keyword}={t.requested!r}** becomes **{effective}** (x-transformers "
                    f"{view.xtransformers_version} has no `{t.keyword}`; the expander says why and how).")
    if not view.translations:
        st.caption(f"Passed to x-transformers {view.xtransformers_version} as written.")
    # drawn only while open (a rerun opens it): its code blocks load the page's syntax highlighter, most of a second
    # of a new browser session's first screen on 2 cores (benchmarks/page_speed.py)
    keywords = st.expander("The keywords as written and as passed, with every translation explained",
                           key="overview.keywords_open", on_change="rerun")
    if not keywords.open:
        return
    with keywords:
        left, right = st.columns(2)
        with left:
            st.caption("As written (x-transformers <= 1.19.1 spelling)")
            st.code(ctx.cfg.to_snippet(), language="python", wrap_lines=True)
        with right:
            st.caption(f"What xtlens passes to x-transformers {view.xtransformers_version}")
            st.code(view.code, language="python", wrap_lines=True)
        for t in view.translations:
            effective = ", ".join(f"{k}={v!r}" for k, v in t.effective.items())
            st.info(f"**{t.keyword}={t.requested!r}** becomes **{effective}**. {t.reason}")
        for note in view.notes:
            st.caption(note)


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=\.)\s+", text.strip(), maxsplit=1)[0]


def facts_table(items: list[facts.Fact]) -> str:
    """The facts as one Markdown table: the keyword, its first sentence, and where the seed's written analysis
    says otherwise, that claim (in our words) beside the correction."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    rows = ["| keyword | what it does here | the seed's written analysis said → correction |", "|---|---|---|"]
    for f in items:
        fix = f"*{cell(f.claim or '')}* → {cell(f.correction)}" if f.correction else ""
        rows.append(f"| **{cell(f.keyword)}** | {cell(_first_sentence(f.does))} | {fix} |")
    return "\n".join(rows)


def _facts(ctx: Ctx, kernel: str | None = None) -> None:
    st.subheader("What each flag really does (and where the seed's written analysis is wrong)")
    items = facts.facts(ctx.cfg, kernel)
    st.markdown(facts_table(items))
    st.caption(f"Claims in italics: {facts.CLAIM_SOURCE}, in our words.")
    with st.expander("Each flag in full"):
        for fact in items:
            st.markdown(f"**{fact.keyword}** — {fact.does}")
            if fact.correction:
                st.warning(f"**Claim** ({facts.CLAIM_SOURCE}): {fact.claim or ''}\n\n**Correction:** "
                           + fact.correction)
