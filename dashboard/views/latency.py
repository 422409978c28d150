"""Latency: forward, attention, training step and per-token decode vs sequence length (log-log), tokens/s,
the SDPA kernel per point, with and without the ALiBi bias; then where the time goes (breakdown by part),
what other attention implementations would cost (what-if), the calibrated prediction (calibrate this device in a
job, the stored calibration, predicted per phase and per part beside what was measured) and the roofline
prediction for any device."""

from __future__ import annotations

import functools
import re

import pandas as pd
import streamlit as st
from xtlens.core.calibration import Calibration
from xtlens.core.config import Workload
from xtlens.core.hardware import GPU_PRESETS, gpu_family
from xtlens.core.presets import config_label
from xtlens.dashboard import charts, data, tables
from xtlens.dashboard import latency_parts as lp
from xtlens.dashboard.charts import latency as latency_charts
from xtlens.dashboard.session import jobs, other_runs, store, tab_settings
from xtlens.dashboard.session.colours import config_colours
from xtlens.dashboard.views import Ctx
from xtlens.dashboard.views.common import chart, dataframe, table
from xtlens.profiling.errors import ProfileError
from xtlens.profiling.results.records import arrow_safe

PHASES = tables.LATENCY_PHASES
PHASE_TITLES = {
    "forward": "Forward latency (whole model, no grad)",
    "attention": "Attention-core latency (SDPA / einsum, summed over blocks)",
    "train_step": "Training-step latency (forward + backward + AdamW)",
    "decode": "Decode latency per generated token (KV cache of n tokens)",
}


def variants(ctx: Ctx) -> tuple[tuple[str, object], ...]:
    """The configuration as it is, and the same with the ALiBi bias switched the other way, each under its own
    readable name (``core.presets.config_label``: the rows are stored under it, e.g. ``seed`` and
    ``seed-no-alibi``)."""
    cfg = ctx.cfg
    flipped = cfg.replace(alibi_pos_bias=False, alibi_num_heads=None) if cfg.alibi_pos_bias \
        else cfg.replace(alibi_pos_bias=True)
    name = config_label(flipped)
    if name == ctx.config_name:  # two configurations differing in more than 4 fields can share the short name
        name += f" · alibi_pos_bias={flipped.alibi_pos_bias}"
    return ((ctx.config_name, cfg), (name, flipped))


def request(ctx: Ctx, *, max_len: int, phases: tuple[str, ...], with_variant: bool, repeats: int) -> jobs.Request:
    lens = [n for n in tables.seq_len_grid(ctx.cfg.max_seq_len) if n <= max_len]
    wls = tuple(Workload(batch=ctx.wl.batch, seq_len=n, dtype=ctx.wl.dtype) for n in lens)
    configs = variants(ctx) if with_variant else variants(ctx)[:1]
    return jobs.Request(label=f"latency sweep {lens[0]}..{lens[-1]} tokens", what=("latency",), configs=configs,
                        workloads=wls, device=ctx.device, phases=phases, repeats=repeats, warmup=1)


def render(ctx: Ctx) -> None:
    gpu = ctx.device.startswith("cuda")
    lens = tables.seq_len_grid(ctx.cfg.max_seq_len)
    cols = st.columns([2, 3, 2, 1])
    default_max = lens[-1] if gpu else min(lens[-1], 2048)
    kept_max = tab_settings.tab_setting("latency.max_len", default_max, lambda v: v in lens)
    kept_phases = tab_settings.tab_setting("latency.phases", list(PHASES))
    kept_variant = tab_settings.tab_setting("latency.variant", True)
    kept_repeats = tab_settings.tab_setting("latency.repeats", 3 if not gpu else 10)  # allowed: session.setting_values
    max_len = cols[0].select_slider("longest sequence to time (tokens)", options=lens, value=kept_max,
                                    key="latency.max_len",
                                    help="On a CPU, 8192 tokens with the dense ALiBi mask takes minutes per point.")
    phases = tuple(cols[1].multiselect("phases", PHASES, default=kept_phases, key="latency.phases")) or ("forward",)
    with_variant = cols[2].toggle("also time the other ALiBi setting", value=kept_variant, key="latency.variant",
                                  help="Same configuration with alibi_pos_bias flipped: the cost of the bias.")
    repeats = int(cols[3].number_input("repeats", 1, 50, value=kept_repeats, key="latency.repeats"))
    req = request(ctx, max_len=max_len, phases=phases, with_variant=with_variant, repeats=repeats)
    frame = jobs.panel(req, key="latency", button="Measure latency",
                       help="Times every phase at every length in a child process; progress below.")
    others = other_runs.for_view("latency")
    others = others[others["phase"].isin(PHASES)]
    if frame is None and others.empty:
        st.info("Charts appear here once measured: latency vs sequence length on log-log axes, with the fitted "
                "slope (1 = linear, 2 = quadratic in length) and the attention kernel at each point. Result tables "
                "uploaded on the Export tab (or restored from a session file) are drawn here too.")
    else:
        _totals(ctx, frame, others)
    breakdown_frame = _breakdown(ctx, gpu)
    _whatif(ctx)
    _calibrated(ctx, frame, breakdown_frame)
    _roofline(ctx, breakdown_frame)


def _totals(ctx: Ctx, frame: pd.DataFrame | None, others: pd.DataFrame | None = None) -> None:
    """Per-phase log-log charts and throughput of this session's sweep (``frame``) and of uploaded or restored
    runs (``others``, ``other_runs.for_view``: drawn dashed, labelled by run)."""
    own = frame if frame is not None else other_runs.as_frame([])
    ok = own[(own["measurement"] == "latency") & (own["status"] == "ok")].copy()
    ok["series"] = ok["config_name"].astype(str)
    colours = config_colours(list(variants(ctx)))  # one colour per configuration, as in every chart
    dashes: dict[str, str] = {}
    if others is not None and not others.empty:
        colours.update(config_colours(other_runs.run_keys(others)))
        dashes = {run: "dash" for run in others["run"]}
        ok = pd.concat([ok, others.assign(series=others["run"])], ignore_index=True)
        st.caption(other_runs.caption(others, "latency rows", "dashed lines"))
    for phase in [p for p in PHASES if p in set(ok["phase"])]:
        part = ok[ok["phase"] == phase]
        chart(charts.latency_loglog(part, title=f"{PHASE_TITLES[phase]}: median with min-max bars",
                                    colours=colours, dashes=dashes), f"lat_{phase}")
    fwd = ok[ok["phase"].isin(["forward", "decode"])].copy()
    if not fwd.empty:
        base = fwd["series"].astype(str)
        fwd["series"] = base + " / " + fwd["phase"].astype(str)
        names = dict(zip(fwd["series"], base, strict=False))
        phase_of = dict(zip(fwd["series"], fwd["phase"], strict=False))
        chart(charts.latency_loglog(fwd, y="tokens_per_s", y_title="throughput (tokens/s, log scale)",
                                    title="Throughput: forward tokens/s and decode tokens/s",
                                    colours={label: colours.get(n, charts.SERIES[0]) for label, n in names.items()},
                                    dashes={label: "dot" if p == "decode" else dashes.get(names[label], "solid")
                                            for label, p in phase_of.items()}),
              "lat_tps")
    kernels = _kernels(ok)
    if len(kernels.columns) > 1:  # uploaded tables may not record the kernel
        st.markdown("**Attention kernel that ran at each point** (SDPA backend; `math` / `einsum` when no fused kernel "
                    "ran)")
        dataframe(arrow_safe(kernels), "df.latency.kernels", title="attention kernel at each point", raw=kernels,
                  width="stretch")
    if frame is not None:
        table(frame, "latency measurements", "latency.measured")


BREAKDOWN_PHASES = {"forward": "forward (no grad)", "train_step": "training step (forward, loss, backward, AdamW)"}
IMPLEMENTATIONS = ("flex", "cudnn", "compile", "cudagraphs", "flex_compiled")
IMPL_HELP = ("flex: FlexAttention, ALiBi as a score_mod + causal block mask (compiled on CUDA, eager on CPU); "
             "cudnn: SDPA with cuDNN allowed; compile: torch.compile of the whole model; cudagraphs: the forward "
             "replayed from a CUDA graph; flex_compiled: FlexAttention compiled also on CPU (about 30 s per shape).")


def _breakdown(ctx: Ctx, gpu: bool) -> pd.DataFrame | None:
    st.subheader("Where the time goes")
    st.caption("The measured latency split into parts that map onto the model (torch.profiler: kernel times on a "
               "GPU, self CPU times on a CPU, attributed to modules by hooks). The parts add up to the measured "
               "total; what no part explains is shown as the remainder.")
    lens = [n for n in tables.seq_len_grid(ctx.cfg.max_seq_len)]
    cols = st.columns([3, 3, 1, 1])
    default = lens if gpu else [n for n in lens if n <= 512]
    chosen = cols[0].multiselect("sequence lengths (tokens)", lens, default=default or lens[:1], key="latency.bd_lens")
    phase = cols[1].radio("phase", list(BREAKDOWN_PHASES), format_func=BREAKDOWN_PHASES.get, horizontal=True,
                          key="latency.bd_phase")
    repeats = int(cols[2].number_input("breakdown repeats", 1, 20, 3, key="latency.bd_repeats"))
    per_layer = cols[3].toggle("per layer", value=False, key="latency.bd_per_layer",
                               help="Also split every part by block (block 0 is the first attention block).")
    wls = tuple(Workload(batch=ctx.wl.batch, seq_len=n, dtype=ctx.wl.dtype) for n in sorted(chosen or lens[:1]))
    req = jobs.Request(label=f"latency breakdown ({phase}) at {', '.join(str(w.seq_len) for w in wls)} tokens",
                       what=("breakdown",), configs=((ctx.config_name, ctx.cfg),), workloads=wls, device=ctx.device,
                       phases=(phase,), repeats=repeats, warmup=1, per_layer=per_layer)
    frame = jobs.panel(req, key="latency_breakdown", button="Measure breakdown",
                       help="Profiles the real model at each length in a child process.")
    if frame is None:
        return None
    tbl = lp.breakdown_table(frame, phase)
    chart(latency_charts.breakdown_stacked(tbl, title=f"{BREAKDOWN_PHASES[phase]}: measured time per part (ms)"
                               + (", per block" if per_layer else "")), "lat_breakdown")
    base = tbl["part"].str.split("@").str[0]  # per layer: qkv_proj@0 -> qkv_proj
    alibi = tbl[base == "alibi_bias"]
    mask = tbl[base == "mask_prep"]
    if not alibi.empty:
        longest = int(tbl["seq_len_tokens"].max())
        share = float(alibi[alibi["seq_len_tokens"] == longest]["share_%"].sum()
                      + mask[mask["seq_len_tokens"] == longest]["share_%"].sum())
        kernel = tbl[(base == "attention") & (tbl["seq_len_tokens"] == longest)]["share_%"].sum()
        st.markdown(f"At **{longest:,} tokens**, building the ALiBi bias and preparing the dense mask take "
                    f"**{share:.0f} %** of this {phase.replace('_', ' ')}; the attention kernel itself "
                    f"**{kernel:.0f} %**.")
    dataframe(arrow_safe(tbl), "df.latency.breakdown", title=f"latency breakdown by part ({phase})", raw=tbl, width="stretch",
                 column_config={"share_%": st.column_config.NumberColumn(format="%.1f"),
                                "measured_ms": st.column_config.NumberColumn(format="%.4g"),
                                "predicted_ms": st.column_config.NumberColumn(format="%.4g")})
    table(frame, "latency breakdown rows", "latency.breakdown_rows")
    return frame


def _whatif(ctx: Ctx) -> None:
    st.subheader("What-if: the same model with another attention implementation")
    st.caption("What-if: not what x-transformers runs. Each implementation runs on its own freshly built copy of "
               "the model (same weights); its logits are checked against the as-built model.")
    c = st.columns([4, 3])
    impls = tuple(c[0].multiselect("implementations", IMPLEMENTATIONS, default=["flex", "cudnn"],
                                   key="latency.wi_impls", help=IMPL_HELP))
    phases = tuple(c[1].multiselect("phases", ["forward", "train_step", "decode"], default=["forward", "decode"],
                                    key="latency.wi_phases")) or ("forward",)
    req = jobs.Request(label=f"what-if attention at {ctx.wl.seq_len} tokens", what=("whatif",),
                       configs=((ctx.config_name, ctx.cfg),), workloads=(ctx.wl,), device=ctx.device, phases=phases,
                       repeats=3, warmup=1, attention=("asbuilt", *impls))
    frame = jobs.panel(req, key="latency_whatif", button="Measure what-if",
                       help="Builds one fresh model per implementation in a child process and times it.")
    if frame is None:
        return
    dataframe(arrow_safe(lp.whatif_table(frame)), "df.latency.whatif", title="what-if implementations", width="stretch",
                 column_config={"speedup_vs_asbuilt": st.column_config.NumberColumn(format="%.2fx"),
                                "logits_rel_err": st.column_config.NumberColumn(format="%.1e"),
                                "median_ms": st.column_config.NumberColumn(format="%.4g")})
    if ctx.cfg.alibi_pos_bias and ctx.cfg.uses_rotary:
        st.caption("Decode, as built: x-transformers 2.31 cannot use its KV cache with ALiBi and rotary together, "
                   "so a user of this configuration gets a whole forward of the context per new token.")


# --- the calibrated prediction ---------------------------------------------------------------------------------

def _norm(name: str) -> str:
    return re.sub(r"\s+", "", str(name)).lower()


def device_name_of(ctx: Ctx) -> str:
    """The measuring device's name as the sidebar lists it (``CPU: <model>`` / ``GPU 0: <name>``), without the
    prefix: the name calibrations are stored under."""
    return ctx.device_label.split(": ", 1)[1] if ": " in ctx.device_label else ctx.device_label


def _store_stamp() -> tuple:
    """What changes when the result store is written (its file and SQLite's write-ahead log)."""
    from xtlens.profiling.results.store import db_path

    path = db_path()
    out: list = [str(path)]
    for p in (path, path.with_name(path.name + "-wal")):
        try:
            st_ = p.stat()
            out += [st_.st_mtime_ns, st_.st_size]
        except OSError:
            out += [0, 0]
    return tuple(out)


@functools.lru_cache(maxsize=16)
def _stored(stamp: tuple) -> tuple[Calibration, ...]:
    from xtlens.profiling.results.calibrations import stored_calibrations

    return tuple(stored_calibrations())


def stored_calibrations() -> tuple[Calibration, ...]:
    """Every stored calibration, newest first: read from the store once per change of its file (one ``stat`` per
    run otherwise)."""
    return _stored(_store_stamp())


def calibration_for(name: str, calibrations: tuple[Calibration, ...]) -> Calibration | None:
    """The newest calibration of the device ``name`` (case and spaces ignored; a GPU preset's name matches a
    calibration of that GPU family, ``core.hardware.gpu_family``)."""
    for cal in calibrations:
        if _norm(cal.device_name) == _norm(name) or (cal.device.startswith("cuda")
                                                     and gpu_family(cal.device_name) == name):
            return cal
    return None


def slow_sentence(slow, cal: Calibration) -> str:
    """The plain headline of a slow dtype: "bfloat16 is 250x slower than float32 on this CPU"."""
    return (f"{slow.dtype} is {slow.slowdown_vs_float32:,.0f}x slower than float32 on this "
            f"{'CPU' if cal.device == 'cpu' else 'GPU'}")


def _calibrated(ctx: Ctx, sweep: pd.DataFrame | None, breakdown: pd.DataFrame | None) -> None:
    st.subheader("Calibrated prediction")
    st.caption("A roofline is a lower bound: it leaves out how fast each kernel class really runs at each shape, "
               "kernel launches and Python overhead. A calibration measures them on a device (matrix products on a "
               "grid of shapes per dtype, the attention kernel per backend, element-wise bandwidth, the launch cost "
               "of a kernel and the overhead of a module call); the prediction adds, per part, compute on the "
               "calibrated throughput, bytes on the calibrated bandwidth, kernels x launch cost and module calls x "
               "overhead, with kernel and module counts taken from the model's structure.")
    here = device_name_of(ctx)
    try:
        stored = stored_calibrations()
    except ProfileError as exc:
        st.warning(str(exc))
        stored = ()
    mine = calibration_for(here, stored)
    job = jobs.calibrate_panel(jobs.calibrate_spec(ctx.device), device_label=ctx.device_label,
                               has_stored=mine is not None)
    fresh = job.calibration if job is not None and job.outcome == "finished" else None
    if fresh is not None and (mine is None or fresh.measured_at >= mine.measured_at):
        mine = fresh  # also when the store could not keep it
    if mine is None:
        st.info(f"{here} is not calibrated yet: press **{jobs.CALIBRATE_BUTTON}** for a calibrated prediction of "
                "this device (the GPU presets below are predicted uncalibrated meanwhile).")
    else:
        ours = job is not None and fresh is not None and fresh.key == mine.key
        shared = ours and getattr(job, "owner", jobs.owner()) != jobs.owner()
        _show_calibration(mine, "measured now" if ours and not shared else "shared" if shared else "stored",
                          ctx.wl.dtype)
    _predictions(ctx, mine, stored, sweep, breakdown)


def _show_calibration(cal: Calibration, origin: str, dtype: str) -> None:
    """The calibration's identity and provenance (``origin``: ``measured now`` by this session's job, ``shared``:
    another session's job, ``stored``: read from the result store), the slow-dtype sentences, its tables."""
    when = cal.measured_at.replace("T", " ")[:19]
    origin = {"measured now": "**measured now** by this session's job on this machine",
              "shared": f"**from cache** (measured {when} UTC by this machine; another browser session's run, shared)",
              }.get(origin, f"**from cache** (measured {when} UTC by this machine; read from the result store)")
    st.markdown(f"Calibration of **{cal.device_name}**: {origin}; torch {cal.torch_version}, x-transformers "
                f"{cal.xtransformers_version}, {cal.threads} thread(s), took {cal.wall_s:.1f} s. "
                f"Key: `{cal.key}`.")
    for slow in cal.slow_dtypes:
        said = f"**{slow_sentence(slow, cal)}**" + (" — the workload's dtype: measure in float32 here, or expect "
                                              "every timing to be that much slower." if slow.dtype == dtype else ".")
        st.warning(f"{said} {slow.message()}")
    if cal.notes:
        st.caption("What the calibration noted: " + "; ".join(cal.notes) + ".")
    if not cal.slow_dtypes:
        st.caption(f"No dtype runs on a slow emulation path here: {', '.join(cal.dtypes()) or 'float32'} were "
                   "measured at full size.")
    from xtlens.profiling.results.calibrations import calibration_rows

    summary = lp.calibration_summary(cal)
    with st.expander(f"Calibration summary: {len(summary)} terms (device, versions, overheads, ceilings)"):
        dataframe(summary, "df.latency.calibration_summary", title=f"calibration of {cal.device_name}: summary",
                  width="stretch", column_config={"item": st.column_config.TextColumn(width="large"),
                                                  "value": st.column_config.TextColumn(width="large")})
    table(calibration_rows(cal), f"calibration of {cal.device_name}: every measured point", "latency.calibration",
          caption=f"Key: {cal.key}. Seconds are medians; FLOP/s count a multiply-add as 2.")


def _source_label(source: Calibration | object) -> str:
    """``calibrated on <key>``, or "uncalibrated: roofline + typical overheads" with the error band measured on
    calibrated devices (``core.latency_model.prediction_label``)."""
    from xtlens.core import latency_model

    return latency_model.prediction_label(source)


_SEEN_CAL = "_xtlens_latency_seen_calibration"  # the key of the newest calibration of this device shown so far


def _predictions(ctx: Ctx, mine: Calibration | None, stored: tuple[Calibration, ...], sweep: pd.DataFrame | None,
                 breakdown: pd.DataFrame | None) -> None:
    """Predicted per phase and per part on a calibrated device or a GPU preset, beside what was measured."""
    here = device_name_of(ctx)
    options: dict[str, Calibration | object] = {}
    if mine is not None:
        options[f"this device: {mine.device_name} (calibrated)"] = mine
    for cal in stored:  # other devices calibrated into this store (e.g. a GPU's calibration file imported)
        name = f"{cal.device_name} (calibrated)"
        if cal is not mine and _norm(cal.device_name) != _norm(here) and name not in options:
            options[name] = cal
    for preset, hw in GPU_PRESETS.items():
        cal = calibration_for(preset, stored)
        options[preset + (" (calibrated)" if cal is not None else " (uncalibrated)")] = cal or hw
    names = list(options)
    if mine is not None and store.get(_SEEN_CAL) != mine.key:  # a new calibration of this device: show it
        store.put(_SEEN_CAL, mine.key)
        store.put("latency.pred_hw", names[0])
    cols = st.columns([3, 2])
    choice = cols[0].selectbox("predict for", names, index=0 if mine is not None else
                               next(i for i, n in enumerate(names) if n.startswith("H200 SXM")), key="latency.pred_hw",
                               help="This device once calibrated; GPU presets use a stored calibration of that GPU "
                                    "when there is one, else their datasheet roofline plus typical overheads.")
    phase = cols[1].radio("parts of", ["forward", "train_step"], horizontal=True, key="latency.pred_phase",
                          format_func=lp.PHASE_WORDS.get)
    source = options[choice]
    label = _source_label(source)
    cal_dtypes = source.dtypes() if isinstance(source, Calibration) else ()
    if isinstance(source, Calibration) and ctx.wl.dtype not in cal_dtypes:
        st.warning(f"The calibration of {source.device_name} has no {ctx.wl.dtype} matrix products (it has "
                   f"{', '.join(cal_dtypes) or 'none'}): choose one of those dtypes in the sidebar, or calibrate again.")
        return
    try:
        measured = _measured(ctx, source, sweep, breakdown)
        phases = lp.predicted_phases(ctx.cfg, ctx.wl, source, measured)
        parts = lp.predicted_parts(ctx.cfg, ctx.wl, source, phase)
    except (ProfileError, ValueError, KeyError) as exc:
        st.warning(f"No prediction for {choice}: {exc}")
        return
    st.markdown(f"**{label}**")
    where = choice.removesuffix(" (calibrated)").removesuffix(" (uncalibrated)")
    chart(latency_charts.phases_chart(phases, title=f"Predicted per phase on {where}, {ctx.wl.dtype}, batch "
                                      f"{ctx.wl.batch} x {ctx.wl.seq_len:,} tokens (decode: one token after "
                                      f"{ctx.wl.seq_len:,})"), "lat_pred_phases")
    dataframe(arrow_safe(phases), "df.latency.predicted_phases", width="stretch",
              title=f"predicted per phase on {where} ({label})", raw=phases,
              column_config={**{t: st.column_config.NumberColumn(format="%.4g") for t in (*lp.TERMS, "predicted_ms",
                                                                                          "measured_ms")},
                             "measured_over_prediction": st.column_config.NumberColumn(format="%.2fx")})
    if ctx.cfg.alibi_pos_bias and ctx.cfg.uses_rotary:
        st.caption("Decode with the KV cache is what a cache would give: x-transformers 2.31 cannot use its cache "
                   "with ALiBi and rotary together, so a user of this configuration gets the uncached decode.")
    tbl = lp.breakdown_table(breakdown, phase) if breakdown is not None and _same_device(breakdown, source) \
        else pd.DataFrame()
    joined = lp.parts_vs_measured(parts, tbl, config=ctx.config_name, seq_len=ctx.wl.seq_len)
    chart(latency_charts.parts_terms_chart(joined, title=f"{lp.PHASE_WORDS[phase]}: predicted per part on {where} "
                                           f"at {ctx.wl.seq_len:,} tokens (ms), by term"), "lat_pred_parts")
    dataframe(arrow_safe(joined), "df.latency.predicted_parts", width="stretch", raw=joined,
              title=f"predicted {phase.replace('_', ' ')} per part on {where} ({label})",
              column_config={**{t: st.column_config.NumberColumn(format="%.4g") for t in (*lp.TERMS, "total_ms",
                                                                                          "measured_ms")},
                             "measured_over_prediction": st.column_config.NumberColumn(format="%.2fx")})
    if not measured.empty:
        lengths = lp.predicted_vs_measured_lengths(ctx.cfg, ctx.wl, source, measured)
        if not lengths.empty:
            st.markdown(f"**Predicted against measured at every measured length** ({ctx.config_name} on {where}, "
                        f"{ctx.wl.dtype}, batch {ctx.wl.batch}"
                        + ("; measured: xtlens's reference run on that GPU, its rows ship with xtlens)"
                           if not isinstance(source, Calibration) and not _reference_frame(ctx.cfg, where).empty
                           else ")"))
            dataframe(arrow_safe(lengths), "df.latency.predicted_vs_measured", width="stretch", raw=lengths,
                      title=f"calibrated prediction vs measured on {where}",
                      column_config={"measured_over_prediction": st.column_config.NumberColumn(format="%.2fx")})
    st.caption("Measured values appear beside the prediction when this configuration was measured on the same device "
               "(the sweep and the breakdown above; for the H200 preset, xtlens's shipped reference run). Closed form: "
               "each answer is computed once per question.")


def _same_device(frame: pd.DataFrame, source: Calibration | object) -> bool:
    names = frame["device_name"].dropna().astype(str) if "device_name" in frame else pd.Series(dtype=str)
    if names.empty:
        return False
    if isinstance(source, Calibration):
        return any(_norm(n) == _norm(source.device_name) for n in names)
    return any(gpu_family(n) == getattr(source, "name", None) for n in names)


@functools.lru_cache(maxsize=32)
def _reference_frame(cfg, preset: str) -> pd.DataFrame:
    """The shipped reference run's latency and breakdown rows of exactly this configuration on ``preset``'s GPU
    (``profiling.results.reference``; empty when it has none). Read once per configuration."""
    from xtlens.profiling.results.records import to_frame
    from xtlens.profiling.results.reference import REFERENCE_RUNS, reference_for

    if preset not in REFERENCE_RUNS:
        return pd.DataFrame()
    rows = [r for r in reference_for(cfg, preset) if r.measurement in ("latency", "breakdown")]
    return to_frame(rows) if rows else pd.DataFrame()


def _measured(ctx: Ctx, source: Calibration | object, sweep: pd.DataFrame | None,
              breakdown: pd.DataFrame | None) -> pd.DataFrame:
    """Measured whole-phase medians of this configuration on the predicted device: this session's sweep first, then
    its breakdown, then (a GPU preset) xtlens's shipped reference run on that GPU."""
    frames = [f for f in (sweep, breakdown) if f is not None and not f.empty and _same_device(f, source)]
    if not isinstance(source, Calibration):
        ref = _reference_frame(ctx.cfg, getattr(source, "name", ""))
        if not ref.empty:
            frames.append(ref.assign(config_name=ctx.config_name))
    if not frames:
        return lp.measured_totals(None, config=ctx.config_name, batch=ctx.wl.batch, dtype=ctx.wl.dtype)
    return lp.measured_totals(pd.concat(frames, ignore_index=True), config=ctx.config_name, batch=ctx.wl.batch,
                              dtype=ctx.wl.dtype)


MEASURING = "measuring device"


def _roofline(ctx: Ctx, measured: pd.DataFrame | None) -> None:
    st.subheader("Predicted latency and roofline")
    st.caption("Closed form: each part's FLOPs and the minimum bytes its kernels move against a device's compute "
               "and bandwidth ceilings (datasheet presets; the measuring CPU is calibrated in the measurement). "
               "A lower bound: launch and Python overhead are not in it. Checked on an NVIDIA H200 "
               "(xtlens's reference run of 2026-11-26, bf16, whose rows ship with xtlens): the seed's measured forward was 3.0x this bound at 8192 tokens (its dense "
               "ALiBi bias moves far more than the minimum bytes) and 62x at 1024 tokens, where kernel launches, not "
               "the GPU, set the time; without ALiBi, 9x at 8192 tokens.")
    names = list(GPU_PRESETS)
    cols = st.columns([2, 2, 2])
    phase = cols[2].radio("phase", ["forward", "train_step"], horizontal=True, key="latency.rf_phase")
    own = lp.ceilings_of(measured, phase)
    if own is not None:
        names = [MEASURING, *names]
    hw_name = cols[0].selectbox("hardware", names, index=0 if own is not None else names.index("H200 SXM"),
                                key="latency.hw", help="GPU presets from datasheets; after a breakdown, the measuring "
                                "device with the ceilings its measurement used (a CPU is calibrated there).")
    variant = cols[1].radio("attention", ["asbuilt", "fused"], horizontal=True, key="latency.rf_variant",
                            format_func={"asbuilt": "as built", "fused": "ALiBi inside the kernel (what-if)"}.get)
    hw = own if hw_name == MEASURING else GPU_PRESETS[hw_name]
    if hw.peak(ctx.wl.dtype) is None:
        st.warning(f"{hw.name} has no {ctx.wl.dtype} units; choose another dtype or device.")
        return
    tbl = lp.breakdown_table(measured, phase) if measured is not None else pd.DataFrame()
    seq = ctx.wl.seq_len
    if not tbl.empty and not (tbl["seq_len_tokens"] == seq).any():
        seq = int(tbl["seq_len_tokens"].max())  # the measured length closest to the question asked
    wl = Workload(batch=ctx.wl.batch, seq_len=seq, dtype=ctx.wl.dtype)
    pts = lp.roofline_points(ctx.cfg, wl, hw, phase=phase, attention=variant)
    on_device = pd.DataFrame()
    if not tbl.empty and measured is not None and variant == "asbuilt":
        names_measured = measured["device_name"].dropna().astype(str)
        if hw_name == MEASURING or any(gpu_family(n) == hw.name for n in names_measured):
            on_device = lp.measured_on_roofline(tbl, pts, config=ctx.config_name, seq_len=seq)
    chart(latency_charts.roofline_chart(pts, hw, ctx.wl.dtype, measured=on_device,
                            title=f"Roofline: {hw.name.removeprefix('measuring device: ')}, {ctx.wl.dtype}, "
                                  f"{phase.replace('_', ' ')} at {seq:,} tokens"),
          "lat_roofline")
    notes = ["Parts without matrix products (ALiBi bias construction, mask preparation, norms, token shift, "
             "residual, rotary) only move bytes: intensity 0 is off a log axis, so they appear in the table "
             "(bound = memory) and not as points."]
    if own is not None and hw_name != MEASURING:
        notes.append("Measured points: choose 'measuring device' under hardware (the breakdown above ran on "
                     f"{own.name.removeprefix('measuring device: ')}).")
    st.caption(" ".join(notes))
    total = float(pts["predicted_ms"].sum()) if not pts.empty else 0.0
    st.markdown(f"Predicted {phase.replace('_', ' ')} at {seq:,} tokens on **{hw.name}**: **{total:.3g} ms** "
                f"(sum of the parts' roofline times; {hw.source}).")
    dataframe(arrow_safe(pts.drop(columns=["attainable_flops_per_s"])), "df.latency.roofline", width="stretch",
              title=f"roofline: predicted {phase.replace('_', ' ')} on {hw.name} at {seq} tokens", raw=pts,
                 column_config={"predicted_ms": st.column_config.NumberColumn(format="%.4g"),
                                "flops": st.column_config.NumberColumn("FLOPs", format="%.3e"),
                                "bytes_moved": st.column_config.NumberColumn("bytes moved", format="%.3e"),
                                "attainable_TFLOP_per_s": st.column_config.NumberColumn(format="%.3g"),
                                "intensity_flops_per_byte": st.column_config.NumberColumn(format="%.3g")})
    pvm = lp.predicted_vs_measured(measured) if measured is not None else pd.DataFrame()
    if not pvm.empty:
        st.markdown("**Predicted against measured** (roofline of the measuring device: the calibrated CPU or the "
                    "GPU's datasheet preset)")
        dataframe(arrow_safe(pvm), "df.latency.pvm", title="roofline predicted vs measured", raw=pvm, width="stretch",
                     column_config={"measured_over_predicted": st.column_config.NumberColumn(format="%.2fx")})
    _reference(ctx, hw_name)


def _reference(ctx: Ctx, hw_name: str) -> None:
    """A GPU run shipped with xtlens, when it measured this very configuration on the chosen preset's GPU."""
    from xtlens.profiling.results.reference import REFERENCE_RUNS

    if hw_name not in REFERENCE_RUNS:
        return
    pvm, share = data.reference(ctx.cfg, hw_name)
    if pvm.empty:
        return
    what = REFERENCE_RUNS[hw_name][1]
    st.markdown(f"**Measured on that GPU: this configuration in xtlens's reference run** ({what}; its rows ship "
                "with xtlens). Kernel times per part from torch.profiler; the total from CUDA events.")
    dataframe(arrow_safe(pvm), "df.latency.reference", title=f"reference run on {hw_name}: predicted vs measured",
              raw=pvm, width="stretch",
                 column_config={"measured_over_predicted": st.column_config.NumberColumn(format="%.2fx"),
                                "measured_ms": st.column_config.NumberColumn(format="%.4g"),
                                "predicted_ms": st.column_config.NumberColumn(format="%.4g")})
    if ctx.cfg.alibi_pos_bias and not share.empty:
        st.caption("Where that run's time went: ALiBi bias construction + mask preparation, and the attention kernel, "
                   "as shares of the measured total (the rest: the other parts and time in which no kernel ran).")
        dataframe(arrow_safe(share), "df.latency.reference_share", title=f"reference run on {hw_name}: time shares",
                  raw=share, width="stretch",
                     column_config={"alibi_and_mask_share": st.column_config.NumberColumn(format="percent"),
                                    "attention_kernel_share": st.column_config.NumberColumn(format="percent"),
                                    "total_ms": st.column_config.NumberColumn(format="%.4g"),
                                    "alibi_and_mask_ms": st.column_config.NumberColumn(format="%.4g"),
                                    "attention_kernel_ms": st.column_config.NumberColumn(format="%.4g")})


def _kernels(ok: pd.DataFrame) -> pd.DataFrame:
    rows = ok[ok["phase"] == "forward"] if (ok["phase"] == "forward").any() else ok
    if rows.empty:
        return pd.DataFrame()
    pivot = rows.pivot_table(index="seq_len_tokens", columns="series", values="sdpa_backend",
                             aggfunc="first").reset_index()
    pivot.columns.name = None
    return pivot
