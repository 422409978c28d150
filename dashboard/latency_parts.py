"""Frames of the Latency tab's breakdown, what-if and roofline sections (pure pandas: no Streamlit).

Frames come from measured rows (``measurement`` ``breakdown`` / ``whatif``), from ``core.roofline`` and from the
calibrated predictor ``core.latency_model`` (answers kept per question: the page asks again on every rerun); their
figures are in ``dashboard.charts.latency``. Milliseconds everywhere; FLOPs count a multiply-add as 2.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import pandas as pd
from xtlens.core.calibration import Calibration
from xtlens.core.config import ModelConfig, Workload
from xtlens.core.hardware import Hardware
from xtlens.core.roofline import LATENCY_PARTS, TRAIN_PARTS, part_costs

PART_ORDER = list(LATENCY_PARTS) + list(TRAIN_PARTS) + ["attention_other", "framework_other", "remainder"]
_NOT_PARTS = ("total", "total_unprofiled")


def _ok(frame: pd.DataFrame, measurement: str) -> pd.DataFrame:
    if frame is None or frame.empty:
        return pd.DataFrame(columns=list(frame.columns) if frame is not None else [])
    return frame[(frame["measurement"] == measurement) & (frame["status"] == "ok")].copy()


def breakdown_table(frame: pd.DataFrame, phase: str) -> pd.DataFrame:
    """One row per (config, length, part): measured ms, share of the total (%), predicted ms (roofline of the
    measuring device), achieved TFLOP/s and fraction of peak where the part does matrix products."""
    ok = _ok(frame, "breakdown")
    ok = ok[ok["phase"] == phase]
    if ok.empty:
        return pd.DataFrame(columns=["config", "seq_len_tokens", "part", "measured_ms", "share_%", "predicted_ms",
                                     "measured_over_predicted", "achieved_TFLOP_per_s", "peak_%", "what"])
    totals = ok[ok["component"] == "total"].set_index(["config_name", "seq_len_tokens"])["latency_median_ms"]
    parts = ok[~ok["component"].isin(_NOT_PARTS)].copy()
    parts["order"] = parts["component"].map(lambda c: PART_ORDER.index(c.split("@")[0]) if c.split("@")[0] in PART_ORDER else 99)
    parts = parts.sort_values(["config_name", "seq_len_tokens", "order"])
    out = pd.DataFrame({
        "config": parts["config_name"].astype(str),
        "seq_len_tokens": parts["seq_len_tokens"].astype(int),
        "part": parts["component"].astype(str),
        "measured_ms": parts["latency_median_ms"].astype(float),
    })
    keys = list(zip(parts["config_name"], parts["seq_len_tokens"], strict=True))
    out["share_%"] = [100 * m / float(totals.get(k, math.nan)) for m, k in zip(out["measured_ms"], keys, strict=True)]
    out["predicted_ms"] = parts["predicted_latency_ms"].astype(float).to_numpy()
    out["measured_over_predicted"] = out["measured_ms"] / out["predicted_ms"]
    out["achieved_TFLOP_per_s"] = (parts["achieved_flops_per_s"].astype(float) / 1e12).to_numpy()
    out["peak_%"] = (100 * parts["peak_fraction"].astype(float)).to_numpy()
    out["what"] = parts["method"].astype(str).str.split(";").str[0].to_numpy()
    return out.reset_index(drop=True)


def whatif_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (config, length, phase, implementation), failures included with their reason."""
    rows = frame[frame["measurement"] == "whatif"] if frame is not None and not frame.empty else pd.DataFrame()
    cols = ["config", "seq_len_tokens", "phase", "implementation", "status", "median_ms", "speedup_vs_asbuilt",
            "logits_rel_err", "compile_s", "note"]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    note = rows["error"].fillna(rows["method"]).astype(str)
    return pd.DataFrame({
        "config": rows["config_name"].astype(str), "seq_len_tokens": rows["seq_len_tokens"].astype(int),
        "phase": rows["phase"].astype(str), "implementation": rows["component"].astype(str),
        "status": rows["status"].astype(str), "median_ms": rows["latency_median_ms"].astype(float),
        "speedup_vs_asbuilt": rows["speedup_vs_asbuilt"].astype(float),
        "logits_rel_err": rows["logits_rel_err"].astype(float), "compile_s": rows["compile_s"].astype(float),
        "note": note,
    }, columns=cols).reset_index(drop=True)


def roofline_points(cfg: ModelConfig, wl: Workload, hw: Hardware, *, phase: str = "forward",
                    attention: str = "asbuilt") -> pd.DataFrame:
    """Per part: FLOPs, bytes, intensity (FLOP/byte), predicted ms on ``hw``, attainable FLOP/s, bound."""
    rows = []
    for p in part_costs(cfg, wl, phase=phase, attention=attention):
        if not p.bytes and not p.flops:
            continue
        t = p.time_s(hw, wl.dtype)
        rows.append({"part": p.component, "flops": p.flops, "bytes_moved": p.bytes,
                     "intensity_flops_per_byte": p.flops / p.bytes if p.bytes else math.inf,
                     "predicted_ms": 1e3 * t, "attainable_flops_per_s": p.flops / t if t else 0.0,
                     "attainable_TFLOP_per_s": p.flops / t / 1e12 if t else 0.0,
                     "bound": p.bound(hw, wl.dtype)})
    return pd.DataFrame(rows)


def measured_on_roofline(table: pd.DataFrame, points: pd.DataFrame, *, config: str, seq_len: int) -> pd.DataFrame:
    """The measured parts of one (config, length) joined to their closed-form FLOPs and intensity."""
    if table.empty or points.empty:
        return pd.DataFrame(columns=["part", "flops", "intensity_flops_per_byte", "measured_ms"])
    sel = table[(table["config"] == config) & (table["seq_len_tokens"] == seq_len)][["part", "measured_ms"]]
    return sel.merge(points[["part", "flops", "intensity_flops_per_byte"]], on="part", how="inner")


def predicted_vs_measured(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (config, phase, length, dtype): measured total, roofline prediction on the measuring device, ratio."""
    ok = _ok(frame, "breakdown")
    tot = ok[ok["component"] == "total"]
    if tot.empty:
        return pd.DataFrame(columns=["config", "phase", "seq_len_tokens", "measured_ms", "predicted_ms",
                                     "measured_over_predicted", "device", "dtype"])
    out = pd.DataFrame({
        "config": tot["config_name"].astype(str), "phase": tot["phase"].astype(str),
        "seq_len_tokens": tot["seq_len_tokens"].astype(int), "measured_ms": tot["latency_median_ms"].astype(float),
        "predicted_ms": tot["predicted_latency_ms"].astype(float), "device": tot["device_name"].astype(str),
        "dtype": tot["dtype"].astype(str)})
    out.insert(5, "measured_over_predicted", out["measured_ms"] / out["predicted_ms"])
    return out.sort_values(["config", "dtype", "phase", "seq_len_tokens"]).reset_index(drop=True)


def alibi_share(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (phase, length, dtype) of a breakdown: the total and the share of ALiBi bias construction + mask
    preparation and of the attention kernel (the two numbers that say where an ALiBi model's time goes)."""
    ok = _ok(frame, "breakdown")
    rows = []
    for (phase, n, dtype), g in ok.groupby(["phase", "seq_len_tokens", "dtype"]):
        ms = dict(zip(g["component"].astype(str), g["latency_median_ms"].astype(float), strict=True))
        total = ms.get("total")
        if not total:
            continue
        alibi = ms.get("alibi_bias", 0.0) + ms.get("mask_prep", 0.0)
        rows.append({"phase": phase, "seq_len_tokens": int(n), "dtype": dtype, "total_ms": total,
                     "alibi_and_mask_ms": alibi, "alibi_and_mask_share": alibi / total,
                     "attention_kernel_ms": ms.get("attention", 0.0), "attention_kernel_share": ms.get("attention", 0.0) / total})
    out = pd.DataFrame(rows)
    return out.sort_values(["dtype", "phase", "seq_len_tokens"]).reset_index(drop=True) if rows else out


def ceilings_of(frame: pd.DataFrame | None, phase: str) -> Hardware | None:
    """The ceilings the measurement's roofline used on the measuring device (the calibrated CPU or a GPU
    preset), recovered exactly from its rows: a part without FLOPs took ``bytes / bandwidth``, and the
    compute ceiling is the largest ``flops / predicted time`` (that of a compute-bound part). None when the
    rows hold no prediction or no part reached the compute roof."""
    ok = _ok(frame, "breakdown") if frame is not None else pd.DataFrame()
    if ok.empty:
        return None
    ok = ok[(ok["phase"] == phase) & ok["predicted_latency_ms"].notna() & ok["bytes_moved"].notna()
            & ~ok["component"].isin(_NOT_PARTS)]
    ok = ok[ok["predicted_latency_ms"] > 0]
    if ok.empty:
        return None
    seconds = ok["predicted_latency_ms"].astype(float) / 1e3
    flops = ok["predicted_flops"].fillna(0).astype(float)
    memory_only = flops == 0
    if not memory_only.any():
        return None
    bandwidth = float((ok["bytes_moved"].astype(float)[memory_only] / seconds[memory_only]).median())
    compute = flops[~memory_only] / seconds[~memory_only]
    ridge_bound = ok["bytes_moved"].astype(float)[~memory_only] / bandwidth
    compute = compute[(seconds[~memory_only] - ridge_bound) > 1e-12 * seconds[~memory_only]]
    if compute.empty:
        return None
    dtype = str(ok["dtype"].iloc[0])
    name = str(ok["device_name"].iloc[0])
    return Hardware(name=f"measuring device: {name}", peak_flops_per_s={dtype: float(compute.max())},
                    mem_bandwidth_bytes_per_s=bandwidth,
                    source="the ceilings the measurement's own prediction used (CPU: calibrated in the measurement)")


# --- the calibrated predictor (core.latency_model) ------------------------------------------------------------

#: the phases ``core.latency_model.predict_latency`` predicts, in the page's order, and their words
PREDICTED_PHASES = ("forward", "train_step", "decode_cached", "decode_uncached")
PHASE_WORDS = {"forward": "forward (no grad)", "train_step": "training step (forward, loss, backward, AdamW)",
               "decode_cached": "decode, one token with the KV cache", "decode_uncached":
               "decode, one token without a cache (a whole forward of the context)"}
#: the measured latency phase (``profiling.measure.latency``) a predicted phase is compared with; the measured
#: ``decode`` is x-transformers' cached step
MEASURED_PHASE = {"forward": "forward", "train_step": "train_step", "decode_cached": "decode"}
TERMS = ("compute_ms", "memory_ms", "launch_ms", "framework_ms")
TERM_WORDS = {"compute_ms": "compute (calibrated matrix-product / attention time)",
              "memory_ms": "memory (bytes / calibrated bandwidth)", "launch_ms": "kernel launches (kernels x launch)",
              "framework_ms": "framework (module calls x Python overhead)"}


#: the calibrations asked about, by key (``source_key``): the cached answers name a calibration by its key
_CALIBRATIONS: dict[str, Calibration] = {}


def source_key(source: Calibration | Hardware) -> tuple[str, str]:
    """A hashable stand-in for a predictor's source: ("calibration", its key: device, versions, date) or ("preset",
    the preset's name). A calibration is kept by its key, so the cached answers find it again."""
    if isinstance(source, Calibration):
        key = f"{source.key} | {source.wall_s!r} s"  # two calibrations within one second differ in their wall time
        _CALIBRATIONS.setdefault(key, source)
        return "calibration", key
    return "preset", source.name


def _source(kind: str, value: str) -> Calibration | Hardware:
    from xtlens.core.hardware import GPU_PRESETS

    return _CALIBRATIONS[value] if kind == "calibration" else GPU_PRESETS[value]


@functools.lru_cache(maxsize=256)
def _predict(cfg: ModelConfig, wl: Workload, kind: str, value: str, phase: str) -> tuple[tuple[dict, ...], float]:
    """(one dict per part, the phase's total ms): ``core.latency_model`` is closed form, but the page asks the same
    question on every rerun, so each answer is kept."""
    from xtlens.core import latency_model

    source = _source(kind, value)
    # a decode step after ``wl.seq_len`` cached tokens, as ``profiling.measure.latency`` measures it
    context = {"decode_context_tokens": wl.seq_len} if phase.startswith("decode") else {}
    parts = latency_model.predict_latency(cfg, wl, source, phase=phase, **context)
    total = latency_model.phase_ms(cfg, wl, source, phase=phase, **context)
    return tuple(dataclasses.asdict(p) for p in parts), float(total)


def predicted_parts(cfg: ModelConfig, wl: Workload, source: Calibration | Hardware, phase: str) -> pd.DataFrame:
    """Per part of ``phase``: kernels, module calls, the four terms (ms), the part's total (ms), bound."""
    parts, _total = _predict(cfg, wl, *source_key(source), phase)
    cols = ["phase", "part", "kernels", "module_calls", *TERMS, "total_ms", "bound"]
    out = pd.DataFrame(list(parts))
    if out.empty:
        return pd.DataFrame(columns=cols)
    out = out.rename(columns={"component": "part"})
    out["order"] = out["part"].map(lambda c: PART_ORDER.index(c) if c in PART_ORDER else 99)
    return out.sort_values("order", kind="stable")[cols].reset_index(drop=True)


def measured_totals(frame: pd.DataFrame | None, *, config: str, batch: int, dtype: str) -> pd.DataFrame:
    """Measured medians of whole phases for one configuration: the latency sweep's rows (``measurement`` latency;
    not those with the SDPA backend forced), and a breakdown's totals (timed under the profiler) where the sweep has
    none; columns phase (measured), seq_len_tokens, measured_ms."""
    cols = ["phase", "seq_len_tokens", "measured_ms"]
    if frame is None or frame.empty:
        return pd.DataFrame(columns=cols)
    ok = frame[(frame["status"] == "ok") & (frame["config_name"].astype(str) == config)]
    for col, want in (("batch", batch), ("dtype", dtype)):
        if col in ok:
            ok = ok[ok[col] == want]
    sweep = ok[(ok["measurement"] == "latency") & (ok["component"] == "total")]
    if "method" in sweep:  # a run with the SDPA backend forced is a what-if, not the model as built
        sweep = sweep[~sweep["method"].astype(str).str.contains("SDPA forced", regex=False)]
    bd = ok[(ok["measurement"] == "breakdown") & (ok["component"] == "total")]
    rows = pd.concat([sweep, bd], ignore_index=True)
    if rows.empty:
        return pd.DataFrame(columns=cols)
    rows = rows.assign(pref=(rows["measurement"] != "latency").astype(int)).sort_values("pref", kind="stable")
    rows = rows.drop_duplicates(["phase", "seq_len_tokens"])
    return pd.DataFrame({"phase": rows["phase"].astype(str), "seq_len_tokens": rows["seq_len_tokens"].astype(int),
                         "measured_ms": rows["latency_median_ms"].astype(float)}).reset_index(drop=True)


def predicted_phases(cfg: ModelConfig, wl: Workload, source: Calibration | Hardware,
                     measured: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per predicted phase at ``wl``: the four terms summed over the parts, kernels, module calls, the
    phase's total (``core.latency_model.phase_ms``) and, where ``measured`` (``measured_totals``) has that phase at
    ``wl.seq_len``, the measured median and measured / predicted."""
    rows = []
    for phase in PREDICTED_PHASES:
        parts, total = _predict(cfg, wl, *source_key(source), phase)
        row: dict = {"phase": phase, "seq_len_tokens": wl.seq_len,
                     "kernels": int(sum(p["kernels"] for p in parts)),
                     "module_calls": int(sum(p["module_calls"] for p in parts))}
        for term in TERMS:
            row[term] = float(sum(p[term] for p in parts))
        row["predicted_ms"] = total
        row["measured_ms"] = math.nan
        if measured is not None and not measured.empty and phase in MEASURED_PHASE:
            hit = measured[(measured["phase"] == MEASURED_PHASE[phase]) & (measured["seq_len_tokens"] == wl.seq_len)]
            if not hit.empty:
                row["measured_ms"] = float(hit["measured_ms"].iloc[0])
        rows.append(row)
    out = pd.DataFrame(rows)
    out["measured_over_prediction"] = out["measured_ms"] / out["predicted_ms"]
    return out


def predicted_vs_measured_lengths(cfg: ModelConfig, wl: Workload, source: Calibration | Hardware,
                                  measured: pd.DataFrame) -> pd.DataFrame:
    """Every measured (phase, length) of this configuration against its prediction at that length."""
    cols = ["phase", "seq_len_tokens", "measured_ms", "predicted_ms", "measured_over_prediction"]
    back = {m: p for p, m in MEASURED_PHASE.items()}
    rows = []
    for _, m in measured.iterrows():
        phase = back.get(str(m["phase"]))
        n = int(m["seq_len_tokens"])
        if phase is None or n > cfg.max_seq_len:
            continue
        _parts, total = _predict(cfg, Workload(batch=wl.batch, seq_len=n, dtype=wl.dtype), *source_key(source), phase)
        rows.append({"phase": phase, "seq_len_tokens": n, "measured_ms": float(m["measured_ms"]),
                     "predicted_ms": total, "measured_over_prediction": float(m["measured_ms"]) / total
                     if total else math.nan})
    if not rows:
        return pd.DataFrame(columns=cols)
    return pd.DataFrame(rows, columns=cols).sort_values(["phase", "seq_len_tokens"]).reset_index(drop=True)


def parts_vs_measured(parts: pd.DataFrame, breakdown: pd.DataFrame, *, config: str, seq_len: int) -> pd.DataFrame:
    """The predicted parts beside a breakdown's measured parts (``breakdown_table``) of the same configuration and
    length: measured_ms and measured / predicted (NaN where the part was not measured)."""
    out = parts.copy()
    out["measured_ms"] = math.nan
    if breakdown is not None and not breakdown.empty:
        sel = breakdown[(breakdown["config"] == config) & (breakdown["seq_len_tokens"] == seq_len)]
        measured = dict(zip(sel["part"].astype(str), sel["measured_ms"].astype(float), strict=True))
        out["measured_ms"] = [measured.get(p, math.nan) for p in out["part"]]
    out["measured_over_prediction"] = out["measured_ms"] / out["total_ms"]
    return out


def calibration_summary(cal: Calibration) -> pd.DataFrame:
    """The calibration's identity and scalar terms, one row per item (name, value, unit) for the page."""
    rows = [("device", cal.device_name, ""), ("device kind", cal.device, ""), ("torch", cal.torch_version, ""),
            ("x-transformers", cal.xtransformers_version, ""), ("threads", str(cal.threads), ""),
            ("measured at", cal.measured_at, "UTC"), ("wall time", f"{cal.wall_s:.1f}", "s"),
            ("launch cost per kernel", f"{1e6 * cal.launch_s:.3g}", "us"),
            ("Python overhead per module call", f"{1e6 * cal.module_overhead_s:.3g}", "us")]
    for dtype, bw in cal.elementwise_bytes_per_s.items():
        rows.append((f"element-wise bandwidth, {dtype}", f"{bw / 1e9:.3g}", "GB/s"))
    for dtype in cal.dtypes():
        best = max((p.flops_per_s for p in cal.matmul if p.dtype == dtype), default=0.0)
        rows.append((f"best matrix-product throughput, {dtype}", f"{best / 1e9:.3g}", "GFLOP/s"))
    rows.append(("matrix-product points", str(len(cal.matmul)), ""))
    rows.append(("attention points", str(len(cal.attention)), ""))
    return pd.DataFrame(rows, columns=["item", "value", "unit"])
