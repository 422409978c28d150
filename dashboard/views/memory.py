"""Memory: stacked breakdown vs sequence length (inference and training), what a CUDA process holds (allocated,
reserved, context, cuBLAS workspace), measured vs predicted (training: the ordered peak)."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from xtlens.core import cost_model, units
from xtlens.core.config import ModelConfig, Workload
from xtlens.core.cuda_memory import min_device_bytes, process_memory
from xtlens.core.hardware import GPU_MEMORY_GIB
from xtlens.core.setup import PRECISIONS, TrainingSetup
from xtlens.dashboard import charts, data, headline, tables
from xtlens.dashboard.session import jobs, other_runs
from xtlens.dashboard.session.colours import config_colours
from xtlens.dashboard.views import Ctx
from xtlens.dashboard.views.common import chart, dataframe, table


def seq_lens(ctx: Ctx) -> tuple[int, ...]:
    return tuple(tables.seq_len_grid(ctx.cfg.max_seq_len))


def request(ctx: Ctx) -> jobs.Request:
    wls = tuple(Workload(batch=ctx.wl.batch, seq_len=n, dtype=ctx.wl.dtype) for n in seq_lens(ctx))
    return jobs.Request(label=f"peak memory at {len(wls)} sequence lengths", what=("memory",),
                        configs=((ctx.config_name, ctx.cfg),), workloads=wls, device=ctx.device)


def render(ctx: Ctx) -> None:
    curve = data.memory_curve(ctx.cfg, ctx.wl, seq_lens(ctx))
    _key_numbers(ctx)
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
                                    title="Training step (AdamW): upper bound (sum of parts) by component"),
              "mem_train")
    for note in activation_drops(curve):
        st.caption(note)
    wide = _wide(curve)
    table(wide, "predicted memory by component", "memory.curve", column_config=bytes_columns(wide),
          caption="bytes; the components of each mode sum to the cost model's total (for training: the upper bound, "
                  "every component alive at once). Downloads keep the raw integers.")

    cuda_process(ctx)

    st.subheader(f"Measured vs predicted on {ctx.device_label}")
    frame = jobs.panel(request(ctx), key="memory", button="Measure memory",
                       help="Peak memory of a forward and of a training step at each length (child process).")
    others = other_runs.for_view("memory")
    if frame is None and others.empty:
        return
    joined = ordered_training_join(tables.measured_vs_predicted_memory(frame if frame is not None
                                                                       else other_runs.as_frame([])))
    totals = joined[joined["component"] == "total"]
    word, how = measured_words(frame if frame is not None else others)  # simulated rows are never "measured"
    if word == "simulated":
        st.info(f"**Simulated, not measured:** on this device the peak comes from {how}: the sizes of the tensors "
                "a real run would allocate, without running the model. It does not see allocator overheads "
                "or fragmentation.")
    shown = totals[["seq_len_tokens", "phase", "predicted_bytes", "measured_bytes"]]
    title = f"Peak memory: {word} (dots, labelled with the difference) vs predicted (dashed; training: ordered peak)"
    if others.empty:
        fig = charts.measured_vs_predicted(shown, title=title, measured_label=word)
    else:
        st.caption(other_runs.caption(others, "memory rows", "one colour per configuration, phases by marker"))
        fig = runs_chart(ctx, shown, word, others, title=title)
    chart(fig, "mem_measured")
    err = totals.dropna(subset=["rel_err"])
    if not err.empty:
        worst = err.loc[err["rel_err"].astype(float).idxmax()]
        st.caption(f"Largest relative difference {word} vs predicted: {100 * float(worst['rel_err']):.1f}%, "
                   f"{worst['phase']} at {int(worst['seq_len_tokens']):,} tokens. The training prediction here is "
                   "the ordered peak (the number at the top of this tab: what is alive at the step's fullest "
                   "moment, for the loop `loss = f(model(x)); loss.backward()`); the table keeps the upper bound "
                   "(sum of parts, every component alive at once) beside it.")
    if frame is not None:
        shown_joined = joined.drop(columns=["config_json"])
        table(shown_joined, f"{word} vs predicted memory per component", "memory.joined",
              column_config=bytes_columns(shown_joined),
              caption="each measured component joined to the prediction of the same (phase, component, length, "
                      "batch, dtype) from core.cost_model.predictions; the training total is the ordered peak "
                      "(upper_bound_bytes: the sum of parts); rel_err = |measured - predicted| / predicted",
              expanded=True)
        table(frame, "memory measurements", "memory.measured")


def _key_numbers(ctx: Ctx) -> None:
    """The training peak (ordered: the number every tab shows), the summed upper bound and the inference peak at the
    sidebar's length, labelled with what each is."""
    train = data.training_headline(ctx.cfg, ctx.wl)
    est = data.estimate(ctx.cfg, ctx.wl)
    cols = st.columns(3)
    cols[0].metric(headline.peak_label(), units.fmt_bytes(train.peak_bytes),
                   help=f"At {ctx.wl.seq_len:,} tokens: the peak by the order tensors live and die (at: "
                        f"{train.peak_stage}); the same number as the Overview and the Setups tab's default setup.")
    cols[1].metric(headline.UPPER_BOUND_LABEL, units.fmt_bytes(train.upper_bound_bytes),
                   help="Every training component summed as if all were alive at once: the height of the training "
                        "stack below at this length.")
    cols[2].metric("Inference memory (one forward)", units.fmt_bytes(est["inference_total_bytes"]),
                   help="weights + buffers + peak activations of a no-grad forward (the inference stack below)")


def bytes_columns(frame: pd.DataFrame) -> dict:
    """Column formats that show every byte count with thousands separators (the data and the downloads keep the
    raw integers)."""
    return {c: st.column_config.NumberColumn(c, format="localized") for c in frame.columns
            if c.endswith("bytes") and pd.api.types.is_numeric_dtype(frame[c])}


def runs_chart(ctx: Ctx, own: pd.DataFrame, word: str, others: pd.DataFrame, *, title: str):
    """This session's totals (``own``: seq_len_tokens, phase, predicted_bytes, measured_bytes) and every uploaded
    or restored run's, measured vs predicted (each run's prediction from its own configuration); one colour per
    configuration, the phase by marker and dash."""
    mine = f"{ctx.config_name} (this session, {word})"
    rows = [own.assign(run=mine, measured_label=word)] if not own.empty else []
    for run, part in others.groupby("run", sort=False):  # each run joined to its own configuration's prediction
        joined = ordered_training_join(tables.measured_vs_predicted_memory(part))
        how = measured_words(part)[0]
        if how == "simulated":
            run += " (simulated)"
        rows.append(joined[joined["component"] == "total"].assign(run=run, measured_label=how)[
            ["seq_len_tokens", "phase", "predicted_bytes", "measured_bytes", "run", "measured_label"]])
    both = pd.concat(rows, ignore_index=True)
    both["phase"] = both["run"] + " / " + both["phase"].astype(str)
    keys = dict(other_runs.run_keys(others))
    colours = config_colours([(mine, ctx.cfg), *[(r, keys.get(r.removesuffix(" (simulated)"), r))
                                                          for r in both["run"].unique() if r != mine]])
    fig = charts.measured_vs_predicted(
        both[["seq_len_tokens", "phase", "predicted_bytes", "measured_bytes", "measured_label"]], title=title)
    return charts.colour_by_series(fig, colours)


def measured_words(frame: pd.DataFrame) -> tuple[str, str]:
    """("simulated" | "measured", the method in words): MemTracker under fake tensors is a simulation."""
    methods = [str(m) for m in frame.get("method", pd.Series(dtype=str)).dropna().unique()]
    fake = [m for m in methods if "FakeTensorMode" in m]
    return ("simulated", fake[0]) if fake and len(fake) == len(methods) else ("measured", "; ".join(methods))


def activation_drops(curve: pd.DataFrame, phase: str = "inference") -> list[str]:
    """Where the stacked activations shrink from one length to the next while the total grows: the peak moved
    to another stage of the forward (usually where the ALiBi / attention-mask band appears or grows)."""
    part = curve[curve["phase"] == phase].pivot_table(index="seq_len_tokens", columns="component", values="bytes",
                                                      aggfunc="sum").fillna(0).sort_index()
    act = next((c for c in ("activations", "other_activations") if c in part), None)
    if act is None:
        return []
    total = part.sum(axis=1)
    out = []
    lens = list(part.index)
    for a, b in zip(lens, lens[1:], strict=False):
        if part.loc[b, act] < part.loc[a, act] and total.loc[b] >= total.loc[a]:
            grew = [tables.COMPONENT_LABELS.get(c, c) for c in part.columns
                    if c != act and part.loc[b, c] > 2.5 * part.loc[a, c]]
            before, after = part.loc[a, act], part.loc[b, act]
            out.append(f"Why the {tables.COMPONENT_LABELS.get(act, act)} band of the {phase} stack drops from {a:,} to "
                       f"{b:,} tokens ({units.fmt_bytes(before, like=before)} to {units.fmt_bytes(after, like=before)}) "
                       f"while {' and '.join(grew) or 'the total'} grows: the stack shows what is live at the peak, and "
                       "the peak moved to another stage of the forward (the attention with its n x n tensors instead "
                       "of the feed-forward), where fewer other activations are live.")
    return out


def _wide(curve: pd.DataFrame) -> pd.DataFrame:
    wide = curve.pivot_table(index=["phase", "seq_len_tokens"], columns="component", values="bytes",
                             aggfunc="sum", sort=False).reset_index()
    wide.columns = [c if c in ("phase", "seq_len_tokens") else f"{c}_bytes" for c in wide.columns]
    parts = [c for c in wide.columns if c.endswith("_bytes")]
    wide[parts] = wide[parts].fillna(0).astype("int64")
    wide["total_bytes"] = wide[parts].sum(axis=1)
    wide["total_gib"] = (wide["total_bytes"] / units.GIB).round(4)
    return wide


def ordered_training_join(joined: pd.DataFrame) -> pd.DataFrame:
    """``joined`` (``tables.measured_vs_predicted_memory``) with the training total predicted by the ordered peak
    (``cost_model.training_headline``, what every tab shows) instead of the sum of parts, which stays in
    ``upper_bound_bytes`` (labelled "upper bound (sum of parts)"); rel_err recomputed."""
    out = joined.copy()
    out["upper_bound_bytes"] = pd.Series([None] * len(out), dtype="object")
    is_total = (out["phase"] == "train_step") & (out["component"] == "total")
    for i in out.index[is_total]:
        r = out.loc[i]
        head = cost_model.training_headline(ModelConfig.from_json(r["config_json"]), Workload(
            batch=int(r["batch"]), seq_len=int(r["seq_len_tokens"]), dtype=str(r["dtype"])))
        out.at[i, "upper_bound_bytes"] = head.upper_bound_bytes
        out.at[i, "predicted_bytes"] = head.peak_bytes
        m = out.at[i, "measured_bytes"]
        out.at[i, "rel_err"] = None if pd.isna(m) else abs(float(m) - head.peak_bytes) / head.peak_bytes
    return out


#: the GPU the CUDA process table opens with (the one the allocator model was measured on)
DEFAULT_GPU = "H200 141GB"


def cuda_process_frame(cfg: ModelConfig, wl: Workload, setup: TrainingSetup, gpu: str) -> pd.DataFrame:
    """``core.cuda_memory.process_memory`` as a table: term, bytes, GiB, formula, source."""
    pm = process_memory(cfg, wl, setup, gpu=gpu)
    rows = [{"term": r.name, "bytes": r.bytes, "gib": round(r.bytes / units.GIB, 3), "formula": r.formula,
             "source": r.source} for r in pm.rows()]
    least = min_device_bytes(cfg, wl, setup, gpu=gpu)
    rows.append({"term": "smallest_device", "bytes": least, "gib": round(least / units.GIB, 3),
                 "formula": "cuda_context + cublas_workspace + the smallest allocator cap the replayed step runs "
                            "under (the allocator frees its wholly free cached segments and retries before it fails)",
                 "source": "core.cuda_memory.min_device_bytes; the H200's 16 GiB-cap bisection within one step"})
    return pd.DataFrame(rows)


def cuda_process(ctx: Ctx) -> None:
    """What a CUDA training process of this configuration holds on a GPU: allocated and reserved peaks (the caching
    allocator's rounding and fragmentation), the CUDA context and the cuBLAS workspaces, one row per term."""
    st.subheader("CUDA process: what a training step holds on a GPU")
    left, right = st.columns(2)
    names = list(GPU_MEMORY_GIB)
    gpu = left.selectbox("GPU", names, index=names.index(DEFAULT_GPU), key="memory.cuda_gpu",
                         help="The CUDA context is measured on the H200; other GPUs use it as the typical value.")
    precisions = [p for p in PRECISIONS if p != "auto"]
    precision = right.selectbox("Precision", precisions, index=0, key="memory.cuda_precision",
                                help="fp32, pure 16-bit, or autocast (amp_*) with float32 master weights; AdamW "
                                     "(foreach, the CUDA default), no recomputation.")
    frame = cuda_process_frame(ctx.cfg, ctx.wl, TrainingSetup(precision=precision), gpu)
    total = int(frame.loc[frame["term"] == "process_total", "bytes"].iloc[0])
    device_gib = GPU_MEMORY_GIB[gpu][0]
    least = int(frame.loc[frame["term"] == "smallest_device", "bytes"].iloc[0])
    st.caption(f"Batch {ctx.wl.batch}, {ctx.wl.seq_len:,} tokens, {precision}: the process holds "
               f"{units.fmt_bytes(total)} of the {gpu}'s {device_gib:g} GiB (CUDA context + reserved) when memory is "
               f"plentiful, and runs on {units.fmt_bytes(least)} (the allocator gives back cached segments under "
               "pressure). Reserved is "
               "what the caching allocator took from the driver: the allocated peak plus segment rounding and "
               "fragmentation, from a replay of the step's allocations through a model of torch's allocator. "
               "Against an H200 (36 training steps: fp32, bf16, amp_bf16, batch 1 and 4, 512-8192 tokens, with and "
               "without ALiBi) the allocated and the reserved peak are within 5 % on every one (largest: 2.5 % and "
               "3.8 %).")
    dataframe(frame, "memory.cuda_process", title=f"CUDA process memory on {gpu}",
              column_config={"bytes": st.column_config.NumberColumn("bytes", format="localized")})
