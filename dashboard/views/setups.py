"""Setups: how the model is trained and served (precision, optimizer, recomputation, sharding, quantised weights
and KV cache), the per-device memory that follows, what fits a device, and the budget explorer. Closed form
(``core.cost_model``), instant; the controls live in the URL (``t_*`` / ``s_*`` parameters)."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from xtlens.core import cost_model, units
from xtlens.core.config import ConfigError, ModelConfig, Workload
from xtlens.core.fits import FitAnswer, FitDevice, cuda_need_parts, fit_answer, what_fits
from xtlens.core.setup import (
    GPU_PRESETS_GIB,
    KV_CACHE,
    LOOP_TEXT,
    OPTIMIZER_TEXT,
    PRECISION_TEXT,
    RECOMPUTE_TEXT,
    ServingSetup,
    TrainingSetup,
)
from xtlens.dashboard import budget, headline
from xtlens.dashboard.charts import setups as setup_charts
from xtlens.dashboard.session import budget_data, url
from xtlens.dashboard.views import Ctx
from xtlens.dashboard.views.common import chart, table

CUSTOM = "a number (GiB) of GPU memory"
CUSTOM_CPU = "a number (GiB) of CPU memory"
WEIGHTS = {"workload dtype": None, "16-bit": 16, "int8": 8, "int4": 4}
KV = {"workload dtype": None, **{k if k != "16" else "16-bit": k for k in KV_CACHE}}


def _index(options: list, value) -> int:
    return options.index(value) if value in options else 0


def controls(ctx: Ctx) -> tuple[TrainingSetup | None, ServingSetup | None, FitDevice, list[ConfigError]]:
    """The setup widgets, seeded from the URL; returns the setups (None where invalid), the device (its memory in
    bytes, GPU or CPU) and the errors (each names its field)."""
    params = url.setup_params()
    errors: list[ConfigError] = []
    try:
        linked_training = TrainingSetup.from_query(params)
    except ConfigError as exc:
        linked_training, _ = TrainingSetup(), errors.append(exc)
    try:
        linked_serving = ServingSetup.from_query(params)
    except ConfigError as exc:
        linked_serving, _ = ServingSetup(), errors.append(exc)
    st.markdown("**Training setup** (per device; the sidebar's batch is the micro-batch)")
    cols = st.columns(4)
    precision = cols[0].selectbox("precision", list(PRECISION_TEXT), index=_index(list(PRECISION_TEXT), linked_training.precision),
                                  format_func=lambda p: f"{p}: {PRECISION_TEXT[p]}", key="setups.precision")
    optimizer = cols[1].selectbox("optimizer", list(OPTIMIZER_TEXT), index=_index(list(OPTIMIZER_TEXT), linked_training.optimizer),
                                  format_func=lambda o: OPTIMIZER_TEXT[o], key="setups.optimizer")
    recompute = cols[2].selectbox("activation recomputation", list(RECOMPUTE_TEXT),
                                  index=_index(list(RECOMPUTE_TEXT), linked_training.recompute),
                                  format_func=lambda r: f"{r}: {RECOMPUTE_TEXT[r]}", key="setups.recompute")
    loop = cols[3].selectbox("training loop", list(LOOP_TEXT), index=_index(list(LOOP_TEXT), linked_training.loop),
                             format_func=lambda x: LOOP_TEXT[x], key="setups.loop",
                             help="Whether your loop keeps the logits alive through backward(): one more "
                               "(batch, n, vocab) tensor at the peak.")
    cols = st.columns(4)
    grad_accum = cols[0].number_input("gradient accumulation (micro-batches)", 1, 65536, linked_training.grad_accum,
                                      key="setups.grad_accum")
    dp = cols[1].number_input("data-parallel degree", 1, 65536, linked_training.dp, key="setups.dp")
    zero = cols[2].selectbox("ZeRO stage (FSDP sharding)", [0, 1, 2, 3], index=linked_training.zero, key="setups.zero",
                             help="1: optimizer state sharded over the data-parallel ranks, 2: + gradients, "
                               "3: + weights (FSDP FULL_SHARD). Needs data-parallel degree >= 2.")
    tp = cols[3].number_input("tensor-parallel degree", 1, 512, linked_training.tp, key="setups.tp",
                              help="Megatron-style: heads, feed-forward width and vocabulary split over the ranks.")
    st.markdown("**Serving setup** (one device)")
    cols = st.columns(5)
    wkeys = list(WEIGHTS)
    weights = cols[0].selectbox("weights", wkeys, index=_index(list(WEIGHTS.values()), linked_serving.weights_bits),
                                key="setups.weights")
    group = cols[1].number_input("quantisation group (input features)", 1, 1 << 20, linked_serving.group_size,
                                 key="setups.group_size", help="int8 / int4 weights: one float16 scale (and zero point "
                                                            "for int4) per group of input features.")
    kv = cols[2].selectbox("KV cache", list(KV), index=_index(list(KV.values()), linked_serving.kv_cache), key="setups.kv")
    concurrent = cols[3].number_input("concurrent sequences", 1, 4096, linked_serving.concurrent or ctx.wl.batch,
                                      key="setups.concurrent")
    context = cols[4].number_input("context length (tokens)", 1, ctx.cfg.max_seq_len,
                                   min(linked_serving.context_len or ctx.wl.seq_len, ctx.cfg.max_seq_len), key="setups.context")
    cols = st.columns([2, 1, 3])
    gpus = [*GPU_PRESETS_GIB, CUSTOM, CUSTOM_CPU]
    gpu = cols[0].selectbox("device memory", gpus, index=0, key="setups.gpu",
                            format_func=lambda g: g if g in (CUSTOM, CUSTOM_CPU) else f"{g} ({GPU_PRESETS_GIB[g]} GiB usable)",
                            help="A GPU must hold the whole process: the CUDA context and what the caching allocator "
                                 "reserves (the ordered peak rounded to its blocks and segments, plus the cuBLAS "
                                 "workspace). CPU memory holds the ordered peak.")
    gib = cols[1].number_input("GiB", 0.1, 1e6, 80.0, key="setups.gib", disabled=gpu not in (CUSTOM, CUSTOM_CPU))
    if gpu in (CUSTOM, CUSTOM_CPU):
        kind = "cpu" if gpu == CUSTOM_CPU else "cuda"
        device = FitDevice(memory_bytes=int(gib * units.GIB), kind=kind, label=f"{gib:g} GiB of {kind.upper()} memory")
    else:
        device = FitDevice(memory_bytes=int(GPU_PRESETS_GIB[gpu] * units.GIB), kind="cuda", gpu=gpu,
                           label=f"{gpu} ({GPU_PRESETS_GIB[gpu]} GiB usable)")
    training = serving = None
    try:
        training = TrainingSetup(precision=precision, optimizer=optimizer, recompute=recompute, grad_accum=int(grad_accum),
                                 dp=int(dp), zero=int(zero), tp=int(tp), loop=loop).check_against(ctx.cfg)
    except ConfigError as exc:
        errors.append(exc)
    try:
        serving = ServingSetup(weights_bits=WEIGHTS[weights], group_size=int(group), kv_cache=KV[kv],
                               concurrent=int(concurrent) if concurrent != ctx.wl.batch else None,
                               context_len=int(context) if context != ctx.wl.seq_len else None).check_against(ctx.cfg)
    except ConfigError as exc:
        errors.append(exc)
    if training is not None and serving is not None:
        url.remember_setups({**training.to_query_params(), **serving.to_query_params()})
    return training, serving, device, errors


def _fits_line(fits: dict[str, int], what: str, wl: Workload, cfg: ModelConfig) -> str:
    b, n = fits[f"fits_{what}_batch"], fits[f"fits_{what}_seq_len_tokens"]
    batch = "nothing fits" if b == 0 else f"batch up to **{b:,}**" + (" (the limit searched)" if b == 4096 else "")
    seq = "nothing fits" if n == 0 else f"up to **{n:,}** tokens" + (" (max_seq_len)" if n == cfg.max_seq_len else "")
    return f"{batch} at {wl.seq_len:,} tokens; sequence length {seq} at batch {wl.batch}"


def render(ctx: Ctx) -> None:
    training, serving, device, errors = controls(ctx)
    budget_bytes = device.memory_bytes
    for exc in errors:
        st.error(f"**{exc.field}**: {exc}")
    if training is None or serving is None:
        return
    cfg, wl = ctx.cfg, ctx.wl
    train_memory = cost_model.training_memory(cfg, wl, training)
    serve_memory = cost_model.serving_memory(cfg, wl, serving)
    train_flops = cost_model.training_flops_for(cfg, wl, training)
    legacy = cost_model.memory_estimate(cfg, wl)
    st.caption(f"Training: {training.describe()}. Serving: {serving.describe()}. Closed form; GiB = 2^30 bytes; "
               "FLOPs: one multiply-add = 2 FLOPs, full n x n attention square.")
    metrics = st.columns(4)
    metrics[0].metric(headline.peak_label(training, per_device=True), units.fmt_bytes(train_memory.peak_bytes),
                      help=f"At: {setup_charts.STAGE_LABELS.get(train_memory.peak_stage, train_memory.peak_stage)}. "
                     "The peak by the order tensors live and die; with the default setup it is the Overview's and "
                     f"the Memory tab's training peak. {headline.UPPER_BOUND_LABEL}, one device, the workload dtype: "
                     f"{units.fmt_bytes(legacy.training_total_bytes)}.")
    metrics[1].metric("Serving memory per device", units.fmt_bytes(serve_memory.total_bytes),
                      help="weights + buffers + KV cache of the concurrent sequences + the prefill's other activations")
    metrics[2].metric("KV cache per token", f"{serve_memory.kv_cache_bytes_per_token:,} bytes",
                      help="per sequence, all blocks, K and V (+ int8 scales)")
    metrics[3].metric(headline.flops_label(training, per_device=True), units.fmt_flops(train_flops["train_step_flops"]),
                      help=f"One micro-batch (the sidebar's batch). Recomputation adds "
                     f"{units.fmt_flops(train_flops['recompute_flops'])}; one optimizer step = "
                     f"{training.grad_accum} micro-batches")
    _what_fits(cfg, wl, training, serving, device)
    chart(setup_charts.stages_figure(train_memory.stages_bytes, train_memory.peak_parts_bytes, train_memory.peak_stage,
                                     budget_bytes - _process_overhead_bytes(device),
                                     memory_label="device memory" if device.kind == "cpu" else
                                     "device memory less CUDA context and workspaces",
                                     title="Training step: live memory per device at each stage"), "setups_stages")
    table(_sizes(train_memory, serve_memory), "per-device memory by component", "setups.sizes",
          caption="bytes per device under the setups; at_peak_bytes is what is alive at the peak stage")
    st.caption(_measured_note(training, serving) + " Loop assumed: " + LOOP_TEXT[training.loop] + ". Each step: forward, loss, backward per micro-batch, "
               "optimizer.step(), zero_grad(set_to_none=True). `xtlens.profiling.measure.setups` runs such a step on this "
               "model's real code under torch's memory tracker, to check these sizes.")
    _explorer(ctx, training, serving, device)


def _what_fits(cfg: ModelConfig, wl: Workload, training: TrainingSetup, serving: ServingSetup, device: FitDevice) -> None:
    """What fits: the one-line answer for this training step on the device, with its margin and, when it does not
    fit, the first remedy that does (``core.fits.fit_answer``); what the device must hold; the largest batch and
    sequence length for training and serving (``core.fits.what_fits``); the remedies tried, as a table."""
    answer = fit_answer(cfg, wl, training, device)
    fits = what_fits(cfg, wl, device, training=training, serving=serving)
    text = answer.text[:1].upper() + answer.text[1:]
    (st.success if answer.fits else st.warning)(
        f"**What fits {device.label}** — a training step at batch {wl.batch} x {wl.seq_len:,} tokens: **{text}**.")
    st.caption(_need_note(cfg, wl, training, device, answer))
    st.markdown(f"Training: {_fits_line(fits, 'train', wl, cfg)}. Serving: "
                f"{_fits_line(fits, 'serve', serving.workload(wl), cfg)}.")
    if answer.tried:
        table(_remedies(answer), "will it fit: remedies tried", "setups.remedies",
              caption="each remedy re-predicted on this device, in the order tried; compute_change: training FLOPs "
                      "per optimizer step at the same tokens against the setup above (torch convention)")


def _need_note(cfg: ModelConfig, wl: Workload, training: TrainingSetup, device: FitDevice, answer: FitAnswer) -> str:
    """What the device must hold, in words and bytes."""
    head = f"Needs {units.fmt_bytes(answer.need_bytes)} of {units.fmt_bytes(device.memory_bytes)}"
    if device.kind == "cpu":
        return (f"{head}: the training step's ordered peak (tensors by the order they live and die; single-tensor "
                "optimizer, the CPU default).")
    parts = cuda_need_parts(cfg, wl, training, device.gpu, device.memory_bytes)
    how = ("releasing its cached free segments at the device's end as torch does before an out-of-memory error"
           if parts["method"] == "replayed" else
           "its reserved peak scaled from the plain step's: the allocation sequence of this setup is not replayed")
    return (f"{head}: the CUDA context ({units.fmt_bytes(parts['context_bytes'])}) + what the caching allocator must "
            f"be allowed to reserve ({units.fmt_bytes(parts['limit_bytes'])}: the allocated peak of "
            f"{units.fmt_bytes(parts['allocated_peak_bytes'])}, cuBLAS workspaces included, in its blocks and segments, "
            f"{how}; with memory to spare it keeps {units.fmt_bytes(parts['reserved_peak_bytes'])}). Checked against "
            "the largest batch and sequence that ran on an H200 under a 16 GiB allocator cap: all within one step.")


def _remedies(answer: FitAnswer) -> pd.DataFrame:
    rows = [{"remedy": r.name, "fits": r.fits, "need_bytes": r.need_bytes,
             "margin_bytes": answer.device_bytes - r.need_bytes, "compute_change": round(r.compute_change, 4),
             "micro_batch": r.wl.batch, "grad_accum": r.setup.grad_accum, "precision": r.setup.precision,
             "recompute": r.setup.recompute, "optimizer": r.setup.optimizer} for r in answer.tried]
    frame = pd.DataFrame(rows)
    frame["need_GiB"] = (frame["need_bytes"] / units.GIB).round(3)
    return frame


def _measured_note(training: TrainingSetup, serving: ServingSetup) -> str:
    """Which parts of the setup the project measured on the real model, and which are predicted only."""
    unmeasured = []
    if training.tp > 1:
        unmeasured.append("tensor parallelism")
    if training.optimizer == "adamw8bit":
        unmeasured.append("8-bit AdamW (bitsandbytes needs CUDA)")
    if training.dp > 1 and training.zero in (1, 2):
        unmeasured.append(f"ZeRO-{training.zero} (ZeRO-3 is measured over 2 CPU processes)")
    if training.precision == "amp_fp16" or training.precision == "fp16":
        unmeasured.append("float16 (bfloat16 is measured; the sizes are the same)")
    if not unmeasured:
        return ("Measured: setups like this one were run on the real model under torch's memory tracker when xtlens "
                "was tested (the seed, CPU, float32 AdamW: 737.1 / 2233.8 MB at 512 / 2048 tokens against 737.1 / "
                "2233.4 MB predicted).")
    return "Predicted only (not measured here): " + ", ".join(unmeasured) + "."


def _sizes(tm: cost_model.TrainingMemory, sm: cost_model.ServingMemory) -> pd.DataFrame:
    rows = [{"phase": "train_step", "component": k, "bytes": v, "at_peak_bytes": tm.peak_parts_bytes.get(k)}
            for k, v in (("weights", tm.weights_bytes), ("buffers", tm.buffers_bytes), ("gradients", tm.grads_bytes),
                         ("optimizer", tm.optimizer_bytes), ("activations", tm.activation_bytes),
                         ("loss", tm.loss_bytes))]
    rows.append({"phase": "train_step", "component": "transient", "bytes": None,
                 "at_peak_bytes": tm.peak_parts_bytes["transient"]})
    rows += [{"phase": "inference", "component": k, "bytes": v, "at_peak_bytes": v}
             for k, v in (("weights", sm.weights_bytes), ("buffers", sm.buffers_bytes), ("kv_cache", sm.kv_cache_bytes),
                          ("activations", sm.activation_bytes))]
    frame = pd.DataFrame(rows)
    frame["GiB"] = (frame["bytes"] / units.GIB).round(4)
    return frame


def _laws() -> tuple[list[tuple[str, budget.LossLaw]], list[str], dict[str, budget_data.Source]]:
    """(choice text, law): a law fitted to each (probe, corpus) of the user's probe runs that can be fitted, the
    one with the most runs first, then the literature fit; why the other runs give none; the runs of each fitted
    law's choice."""
    out: list[tuple[str, budget.LossLaw]] = []
    runs_of: dict[str, budget_data.Source] = {}
    found, problem = budget_data.sources()
    why = [f"The result store could not be read ({problem}): only this session's probe tables are used."] if problem else []
    for source in found:
        law, reason = budget_data.fit(source)
        if law is not None:
            text = f"{law.label} ({source.probe} probe, {source.runs} runs; {source.origin})"
            out.append((text, law))
            runs_of[text] = source
        else:
            why.append(f"{source.runs} run(s) of the {source.probe} probe on {source.corpus_name or 'an unnamed corpus'} "
                       f"({source.origin}) give no law: {reason}.")
    return [*out, (budget.LITERATURE_LABEL, budget.CHINCHILLA)], why, runs_of


def _process_overhead_bytes(device: FitDevice) -> int:
    """What a GPU holds besides the tensors: the CUDA context and the cuBLAS workspaces (``core.cuda_memory``); 0 on
    a CPU."""
    if device.kind == "cpu":
        return 0
    from xtlens.core.cuda_memory import context_bytes_for, cublas_workspace_bytes_for

    return context_bytes_for(device.gpu)[0] + cublas_workspace_bytes_for(device.gpu)


def _explorer(ctx: Ctx, training: TrainingSetup, serving: ServingSetup, device: FitDevice) -> None:
    st.subheader("Budget explorer")
    answer = st.empty()  # the tab's answer, filled once the grid is known
    cols = st.columns([2, 2, 2, 2])
    pair = cols[0].selectbox("axes", list(budget.AXIS_PAIRS), key="setups.axes")
    x, y = budget.AXIS_PAIRS[pair]
    btokens = cols[1].number_input("training tokens (billions)", 0.001, 1e6, 10.0, key="setups.btokens",
                                   help="The token budget: sets the training FLOPs and the loss prediction.")
    max_fwd = cols[2].number_input("max forward GFLOPs per token (0 = no limit)", 0.0, 1e9, 0.0, key="setups.max_fwd")
    max_train = cols[3].number_input("max training FLOPs, 10^x (0 = no limit)", 0.0, 40.0, 0.0, key="setups.max_train")
    offered, unfitted, runs_of = _laws()
    laws = dict(offered)
    budget_data.follow_new_laws(list(laws), "setups.law")
    choice = st.selectbox("loss from", list(laws), key="setups.law",
                          help="A law fitted to your probe runs (the scaling probe, or the atlas's reference arm, "
                               "on the Benefits tab) when you have some; otherwise Chinchilla's literature fit.")
    law = laws[choice]
    overhead = _process_overhead_bytes(device)
    explorer_budget = budget.Budget(device_memory_bytes=device.memory_bytes, process_overhead_bytes=overhead,
                                    train_tokens=btokens * 1e9,
                                    max_fwd_flops_per_token=max_fwd * 1e9 or None, max_train_flops=10 ** max_train if max_train else None)
    usable = device.memory_bytes - overhead
    xs = sorted(set(budget.AXIS_VALUES[x]) | {getattr(ctx.cfg, x)})
    ys = sorted(set(budget.AXIS_VALUES[y]) | {getattr(ctx.cfg, y)})
    frame = budget.grid(ctx.cfg, ctx.wl, x=x, y=y, xs=xs, ys=ys, training=training, serving=serving, budget=explorer_budget,
                        law=law)
    if frame.empty:
        answer.info("No valid configuration on this grid.")
        return
    answer.markdown(f"**{budget.front_sentence(frame, x=x, y=y, budget=explorer_budget, law=law)}**")
    fitted = law is not budget.CHINCHILLA
    level = getattr(law, "level", None)
    band = f"the law's {level:.0%} interval" if level else "the law's interval"
    st.caption(f"Loss from: **{law.label}**, in {law.unit}, fed total parameters and the token budget. "
               + ("Fitted to the probe's tokenizer and corpus: not comparable in absolute terms with Chinchilla's "
                  "nats/token (or with another corpus); read the ranking and the interval. "
                  if fitted else "Probe runs (Benefits tab: the scaling probe or the atlas) replace it with a law "
                                 "fitted to your runs. " if len(laws) == 1 else "Chosen instead of your fitted law. ")
               + (f"The fit: {law.law}. " if getattr(law, "law", "") else "")
               + " ".join(f"{n[:1].upper()}{n[1:].rstrip('.')}." for n in
                          [*budget.law_notes(law), budget.extrapolation_note(frame, law)] if n)
               + "".join(f" {w}" for w in unfitted))
    if choice in runs_of:
        held, why_not = budget_data.holdout(runs_of[choice])
        if held is not None:
            _held_out(held)
        else:
            st.caption(f"Held-out check of this kind of law: not possible, {why_not}.")
    current = (getattr(ctx.cfg, x), getattr(ctx.cfg, y))
    st.caption(f"Each cell: the current configuration with {x} and {y} changed, at batch {ctx.wl.batch} x "
               f"{ctx.wl.seq_len:,} tokens under the setups above. Feasible: training peak and serving memory per device "
               f"within {units.fmt_bytes(usable)}"
               + (f" ({units.fmt_bytes(device.memory_bytes)} less {units.fmt_bytes(overhead)} of CUDA context and cuBLAS "
                  "workspaces; the caching allocator's rounding is counted only in the What-fits answer above)"
                  if overhead else "")
               + f" and the FLOP caps. {int(frame['feasible'].sum())} of {len(frame)} fit.")
    left, right = st.columns([3, 2])
    with left:
        chart(setup_charts.budget_map(frame, x=x, y=y, device_memory_bytes=usable, current=current,
                                      title=f"Training peak per device over {x} x {y}"), "setups_map")
    with right:
        chart(setup_charts.pareto_figure(frame, x=x, y=y, current=current, benefit=law.label, unit=law.unit,
                                         title="Benefit against training compute"), "setups_pareto")
        st.caption(f"Loss: {law.label} at the token budget (lower is better; "
                   + (f"shaded band and bars: {band}" if fitted else "a point estimate, no interval")
                   + "). Training FLOPs: the closed-form training step per token (torch convention, recomputation "
                   "included) x the token budget. Pareto front: feasible points that no other feasible point beats "
                   "on both.")
    table(frame.assign(loss_unit=law.unit), "budget grid", "setups.grid",
          caption=f"bytes, FLOPs (torch convention), loss / loss_low / loss_high in {law.unit} ({law.label})")


def _held_out(h) -> None:
    """How far the fitted law's band can be trusted: the held-out check of the same kind of law on the same runs
    (the largest size forecast from the smaller ones), in the atlas panel's words, with its warning when the
    intervals covered far less than promised."""
    from xtlens.dashboard.views.atlas import coverage_line

    line = coverage_line(h)
    (st.warning if "not to be trusted" in line else st.caption)(
        "Held-out check of this kind of law on these runs: " + line)
