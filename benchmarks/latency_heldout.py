"""Held-out accuracy of the calibrated latency predictor (``core.latency_model``): calibrate this device
(``profiling.measure.calibrate.calibrate``), then, interleaved in one run, predict and measure a grid of
configurations the calibration never ran (dim 64-1024, depth 1-12, heads 1-16, one / grouped / full K/V heads,
ALiBi on and off, 128-4096 tokens; forward and training step).

Per configuration: the prediction first (stdlib, milliseconds), then the measurement right after it on a freshly
built model (``profiling.run.device.time_calls``: ``--warmup`` untimed calls, the median of ``--repeats``), the
load average beside it. Reported: median and 90th percentile of ``|predicted / measured - 1|``, the fraction of
pairs of configurations (same phase, all pairs) whose faster one the prediction picks, the load average before,
during and after, and the spread of the repeats. Writes ``docs/latency/heldout-<device>.csv`` and the error chart
``docs/latency/heldout-<device>.svg`` (and ``.png`` when kaleido can draw it).

``--reference H200 --calibration FILE``: no measuring; predict the configurations of the shipped H200 reference
rows (``xtlens.profiling.results.reference``) from an H200 calibration JSON (``xtlens calibrate --format json``)
and print the errors against the reference measurements; ``--uncalibrated`` uses the H200 SXM preset instead
(the error band of ``core.latency_model.ERROR_BAND``).

    .venv/bin/python benchmarks/latency_heldout.py                 # CPU: calibrate + 24 configurations
    .venv/bin/python benchmarks/latency_heldout.py --quick         # 20 small configurations, fewer repeats
    .venv/bin/python benchmarks/latency_heldout.py --device cuda   # on a GPU
    .venv/bin/python benchmarks/latency_heldout.py --reference H200 --calibration h200.json
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "docs" / "latency"

# (name, dim, depth, heads, kv: "full" | "one" | int, alibi, seq_len, phase); vocabulary 1024, head width 64,
# rotary on, attn_flash on, batch 1. Large dims only at short lengths / low depth (CPU cost).
GRID: tuple[tuple, ...] = (
    ("d64-L1-h1", 64, 1, 1, "full", False, 128, "forward"),
    ("d64-L2-h2-alibi", 64, 2, 2, "full", True, 512, "forward"),
    ("d96-L4-h4-mqa", 96, 4, 4, "one", False, 1024, "forward"),
    ("d128-L3-h4-gqa2", 128, 3, 4, "2", True, 256, "train_step"),
    ("d128-L6-h8-mqa-alibi", 128, 6, 8, "one", True, 2048, "forward"),
    ("d192-L2-h6-gqa3", 192, 2, 6, "3", False, 4096, "forward"),
    ("d256-L1-h4", 256, 1, 4, "full", False, 2048, "train_step"),
    ("d256-L8-h8-gqa2-alibi", 256, 8, 8, "2", True, 128, "forward"),
    ("d256-L12-h4-mqa", 256, 12, 4, "one", False, 256, "train_step"),
    ("d320-L2-h16-gqa4", 320, 2, 16, "4", False, 512, "train_step"),
    ("d384-L4-h6-alibi", 384, 4, 6, "full", True, 1024, "forward"),
    ("d384-L1-h12-mqa", 384, 1, 12, "one", False, 4096, "forward"),
    ("d512-L6-h8-mqa-alibi", 512, 6, 8, "one", True, 512, "forward"),
    ("d512-L2-h8-gqa4", 512, 2, 8, "4", False, 1024, "train_step"),
    ("d512-L3-h16", 512, 3, 16, "full", False, 256, "forward"),
    ("d640-L1-h10-alibi", 640, 1, 10, "full", True, 2048, "forward"),
    ("d768-L2-h12-gqa3-alibi", 768, 2, 12, "3", True, 256, "train_step"),
    ("d768-L4-h12-mqa", 768, 4, 12, "one", False, 128, "train_step"),
    ("d1024-L1-h16-gqa8", 1024, 1, 16, "8", False, 512, "forward"),
    ("d1024-L2-h16-alibi", 1024, 2, 16, "full", True, 128, "forward"),
    ("d96-L8-h2-alibi", 96, 8, 2, "full", True, 1024, "train_step"),
    ("d160-L10-h8-gqa4", 160, 10, 8, "4", False, 512, "forward"),
    ("d448-L3-h7-alibi", 448, 3, 7, "full", True, 512, "train_step"),
    ("d128-L2-h16-mqa", 128, 2, 16, "one", False, 4096, "train_step"),
)
QUICK = tuple(g for g in GRID if g[6] <= 2048)[:20]
# Where core.latency_model's CPU_ELEMENTWISE_FACTOR and CPU_GEMM_FACTOR come from (``--fit``): configurations that
# are NOT in GRID, measured part by part (profiling.measure.breakdown) against the model's terms.
FIT: tuple[tuple, ...] = (
    ("fit1", 192, 3, 4, "full", True, 768, "forward"),
    ("fit2", 128, 2, 2, "one", False, 384, "train_step"),
    ("fit3", 512, 1, 8, "2", True, 1536, "forward"),
    ("fit4", 64, 4, 4, "full", False, 256, "forward"),
    ("fit5", 320, 2, 5, "full", False, 1024, "train_step"),
)
_EW_PARTS = ("embedding", "token_shift", "norms", "rotary", "alibi_bias", "mask_prep", "residual", "loss")
_GEMM_PARTS = ("qkv_proj", "out_proj", "feedforward", "logits")
VOCAB = 1024


def config_of(spec: tuple):
    from xtlens.core.config import ModelConfig

    _name, dim, depth, heads, kv, alibi, seq_len, _phase = spec
    kw = dict(num_tokens=VOCAB, max_seq_len=max(4096, seq_len), use_abs_pos_emb=False, dim=dim, depth=depth,
              heads=heads, attn_dim_head=64, rotary_pos_emb=True, attn_flash=True)
    if kv == "one":
        kw["attn_one_kv_head"] = heads > 1
    elif kv != "full":
        kw["attn_kv_heads"] = int(kv)
    if alibi:
        kw["alibi_pos_bias"] = True
    return ModelConfig(**kw)


def _load() -> float:
    return os.getloadavg()[0]


def measure_ms(cfg, wl, phase: str, *, device: str, warmup: int, repeats: int) -> tuple[float, float, float]:
    """``(median, min, max)`` milliseconds of ``phase`` on a freshly built model."""
    import torch
    import torch.nn.functional as F
    from xtlens.core.builder import build_model
    from xtlens.profiling.run.device import time_calls

    model = build_model(cfg, device=device, dtype=wl.dtype, seed=0).model
    gen = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(0, cfg.num_tokens, (wl.batch, wl.seq_len), generator=gen).to(device)
    if phase == "forward":
        model.eval()

        def call() -> None:
            with torch.no_grad():
                model(ids)
    else:
        model.train()
        targets = torch.randint(0, cfg.num_tokens, (wl.tokens,), generator=gen).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def call() -> None:
            logits = model(ids)
            F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    times = time_calls(call, device=device, warmup=warmup, repeats=repeats)
    return statistics.median(times), min(times), max(times)


def summarise(rows: list[dict]) -> dict:
    errs = sorted(abs(r["predicted_ms"] / r["measured_ms"] - 1) for r in rows)
    p90 = errs[min(len(errs) - 1, max(0, round(0.9 * len(errs)) - 1))]
    right = total = 0
    for a, b in itertools.combinations(rows, 2):
        if a["phase"] != b["phase"] or a["measured_ms"] == b["measured_ms"]:
            continue
        total += 1
        right += (a["predicted_ms"] < b["predicted_ms"]) == (a["measured_ms"] < b["measured_ms"])
    return {"n": len(rows), "median_abs_err": statistics.median(errs), "p90_abs_err": p90,
            "pairs_right": right, "pairs": total, "pair_accuracy": right / total if total else float("nan")}


def write_chart(rows: list[dict], path: Path, title: str) -> list[Path]:
    """An SVG (always; hand-written) and a PNG (plotly + kaleido, when available) of predicted / measured."""
    rows = sorted(rows, key=lambda r: r["predicted_ms"] / r["measured_ms"])
    w, h, left, top, bar = 900, 60 + 22 * len(rows), 230, 40, 16
    lo, hi = 0.25, 4.0

    def x(ratio: float) -> float:
        import math

        r = min(max(ratio, lo), hi)
        return left + (w - left - 30) * (math.log(r) - math.log(lo)) / (math.log(hi) - math.log(lo))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h + 40}" font-family="sans-serif" '
           f'font-size="12"><text x="10" y="20" font-size="14">{title}</text>']
    for ratio, label in ((0.5, "0.5x"), (0.8, "0.8x"), (1.0, "1x"), (1.2, "1.2x"), (1.5, "1.5x"), (2.0, "2x")):
        out.append(f'<line x1="{x(ratio):.1f}" y1="{top - 5}" x2="{x(ratio):.1f}" y2="{h}" stroke="#bbb" '
                   f'stroke-dasharray="{"0" if ratio == 1 else "3,3"}"/><text x="{x(ratio) - 12:.1f}" y="{h + 15}">{label}'
                   '</text>')
    for i, r in enumerate(rows):
        y = top + 22 * i
        ratio = r["predicted_ms"] / r["measured_ms"]
        colour = "#1f77b4" if r["phase"] == "forward" else "#d62728"
        x0, x1 = sorted((x(1.0), x(ratio)))
        out.append(f'<text x="5" y="{y + 12}">{r["name"]} {r["seq_len"]} ({r["phase"]})</text>'
                   f'<rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 1):.1f}" height="{bar}" fill="{colour}"/>')
    out.append(f'<text x="{left}" y="{h + 32}">predicted / measured (log scale; blue forward, red training step)'
               '</text></svg>')
    path.write_text("\n".join(out))
    written = [path]
    try:
        import plotly.graph_objects as go

        fig = go.Figure(go.Bar(
            x=[r["predicted_ms"] / r["measured_ms"] for r in rows],
            y=[f'{r["name"]} n={r["seq_len"]} ({r["phase"]})' for r in rows], orientation="h",
            marker_color=["#1f77b4" if r["phase"] == "forward" else "#d62728" for r in rows], base=0))
        fig.add_vline(x=1.0, line_dash="dash")
        fig.update_layout(title=title, xaxis_title="predicted / measured", xaxis_type="log", height=120 + 24 * len(rows),
                          width=1000, margin=dict(l=320, t=70), showlegend=False)
        png = path.with_suffix(".png")
        fig.write_image(str(png))
        written.append(png)
    except Exception as exc:  # noqa: BLE001 - the SVG is the chart; the PNG is a convenience
        print(f"(no PNG: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})", file=sys.stderr)
    return written


def chart_title(rows: list[dict], s: dict, device: str, dtype: str) -> str:
    loads = [float(r["load_1min"]) for r in rows]
    return (f"Calibrated latency, held out ({device}, {dtype}, load {min(loads):.1f}-{max(loads):.1f}): median error "
            f"{s['median_abs_err']:.0%}, p90 {s['p90_abs_err']:.0%}, pairs {s['pair_accuracy']:.0%}")


def run_heldout(args: argparse.Namespace) -> int:
    import torch
    from xtlens.core.calibration import Calibration
    from xtlens.core.config import Workload
    from xtlens.core.latency_model import phase_ms

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    print(f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, load average {load_before[0]:.2f}")
    if args.calibration:
        cal = Calibration.from_json(Path(args.calibration).read_text())
        print(f"calibration loaded from {args.calibration}: {cal.key}")
    else:
        from xtlens.profiling.measure.calibrate import calibrate

        t0 = time.perf_counter()
        cal = calibrate(args.device, time_budget_s=args.time_budget, dtypes=(args.dtype,))
        print(f"calibrated {cal.key} in {time.perf_counter() - t0:.1f} s (load {_load():.2f})")
        if args.save_calibration:
            Path(args.save_calibration).write_text(cal.to_json())
    if args.fit:
        return run_fit(args, cal)
    grid = QUICK if args.quick else GRID
    warmup, repeats = (1, 3) if args.quick else (args.warmup, args.repeats)
    rows = []
    t_start = time.perf_counter()
    for spec in grid:
        name, *_rest, seq_len, phase = spec
        cfg = config_of(spec)
        wl = Workload(batch=1, seq_len=seq_len, dtype=args.dtype)
        predicted = phase_ms(cfg, wl, cal, phase=phase)
        load = _load()
        med, lo, hi = measure_ms(cfg, wl, phase, device=args.device, warmup=warmup, repeats=repeats)
        rows.append({"name": name, "phase": phase, "dim": cfg.dim, "depth": cfg.depth, "heads": cfg.heads,
                     "kv_heads": cfg.kv_heads, "alibi": cfg.alibi_pos_bias, "seq_len": seq_len, "dtype": args.dtype,
                     "predicted_ms": round(predicted, 4), "measured_ms": round(med, 4), "measured_min_ms": round(lo, 4),
                     "measured_max_ms": round(hi, 4), "ratio": round(predicted / med, 4), "load_1min": round(load, 2)})
        print(f"{name:26s} n={seq_len:5d} {phase:10s} predicted {predicted:9.2f} ms  measured {med:9.2f} ms "
              f"[{lo:.2f}-{hi:.2f}]  ratio {predicted / med:5.2f}  load {load:.2f}", flush=True)
    s = summarise(rows)
    load_after = os.getloadavg()
    spreads = [(r["measured_max_ms"] - r["measured_min_ms"]) / r["measured_ms"] for r in rows]
    print(f"\n{s['n']} configurations, {time.perf_counter() - t_start:.0f} s: median |pred/meas - 1| = "
          f"{s['median_abs_err']:.1%} (target <= 20 %), 90th percentile {s['p90_abs_err']:.1%} (<= 50 %), "
          f"faster of two picked in {s['pairs_right']}/{s['pairs']} pairs = {s['pair_accuracy']:.1%} (>= 90 %)")
    print(f"load average before {load_before[0]:.2f}/{load_before[1]:.2f}, after {load_after[0]:.2f}/"
          f"{load_after[1]:.2f} (1/5 min); median spread (max-min)/median of the repeats {statistics.median(spreads):.1%}")
    if not args.no_write:
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        stem = OUT_DIR / f"heldout-{args.device}"
        with open(stem.with_suffix(".csv"), "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        title = chart_title(rows, s, args.device, args.dtype)
        for p in write_chart(rows, stem.with_suffix(".svg"), title):
            print(f"wrote {p.relative_to(ROOT)}")
        print(f"wrote {stem.with_suffix('.csv').relative_to(ROOT)}")
    ok = s["median_abs_err"] <= 0.20 and s["p90_abs_err"] <= 0.50 and s["pair_accuracy"] >= 0.90
    print("targets met" if ok else "targets NOT met")
    return 0 if ok else 1


def run_fit(args: argparse.Namespace, cal) -> int:
    """Measured / predicted per class of term (element-wise, matrix products, attention) on the FIT
    configurations, part by part (the breakdown's profiled parts, scaled to the unprofiled total): the source
    of core.latency_model's CPU factors. Predictions here are made with both factors set to 1."""
    from xtlens.core import latency_model as lm
    from xtlens.core.config import Workload
    from xtlens.profiling.measure.breakdown import measure_breakdown

    if not args.keep_factors:
        lm.CPU_ELEMENTWISE_FACTOR = lm.CPU_GEMM_FACTOR = 1.0
    acc = {k: [0.0, 0.0] for k in ("elementwise", "gemm", "attention", "backward", "optimizer", "total")}
    for spec in FIT:
        cfg, wl, phase = config_of(spec), Workload(batch=1, seq_len=spec[6], dtype=args.dtype), spec[7]
        pred = {p.component: p for p in lm.predict_latency(cfg, wl, cal, phase=phase)}
        meas = {r.component: r.latency_median_ms for r in measure_breakdown(cfg, wl, device=args.device, phases=(phase,),
                                                                             warmup=1, repeats=3)}
        scale = meas["total_unprofiled"] / meas["total"]
        for k in _EW_PARTS:
            if k in pred and pred[k].memory_ms:
                acc["elementwise"][0] += scale * (meas.get(k) or 0) - pred[k].launch_ms - pred[k].framework_ms
                acc["elementwise"][1] += pred[k].memory_ms
        for k in _GEMM_PARTS:
            p = pred[k]
            acc["gemm"][0] += scale * (meas.get(k) or 0) - p.launch_ms - p.framework_ms - p.memory_ms
            acc["gemm"][1] += p.compute_ms
        acc["attention"][0] += scale * (meas.get("attention") or 0) - pred["attention"].launch_ms
        acc["attention"][1] += pred["attention"].compute_ms
        for k in ("backward", "optimizer"):
            if k in pred:
                acc[k][0] += scale * (meas.get(k) or 0)
                acc[k][1] += pred[k].total_ms
        acc["total"][0] += meas["total_unprofiled"]
        acc["total"][1] += sum(p.total_ms for p in pred.values())
        print(f"{spec[0]} n={spec[6]} {phase}: " + ", ".join(f"{k} {a / b:.2f}" for k, (a, b) in acc.items() if b)
              + f" (cumulative measured / predicted; load {_load():.2f})", flush=True)
    return 0


def run_reference(args: argparse.Namespace) -> int:
    """Predict the shipped reference rows' configurations (forward / train_step latency) and print the errors."""
    from xtlens.core.calibration import Calibration
    from xtlens.core.hardware import hardware_preset
    from xtlens.core.latency_model import phase_ms
    from xtlens.profiling.results.reference import reference_rows

    preset = {"h200": "H200 SXM"}.get(args.reference.lower().replace(" ", ""), args.reference)
    if args.uncalibrated:
        source = hardware_preset(preset)
    elif args.calibration:
        source = Calibration.from_json(Path(args.calibration).read_text())
    else:
        print("--reference needs --calibration FILE (a calibration JSON of that GPU) or --uncalibrated", file=sys.stderr)
        return 2
    rows = []
    for r in reference_rows(preset):
        if r.measurement != "latency" or r.status != "ok" or r.phase not in ("forward", "train_step"):
            continue
        cfg, wl = _cfg_wl(r)
        pred = phase_ms(cfg, wl, source, phase=r.phase)
        rows.append({"name": r.config_name, "phase": r.phase, "seq_len": wl.seq_len, "dtype": wl.dtype,
                     "predicted_ms": pred, "measured_ms": r.latency_median_ms})
        print(f"{r.config_name:15s} {wl.dtype:9s} n={wl.seq_len:5d} {r.phase:10s} predicted {pred:8.2f} ms  "
              f"measured {r.latency_median_ms:8.2f} ms  ratio {pred / r.latency_median_ms:5.2f}")
    if not rows:
        print(f"no reference latency rows for {preset}", file=sys.stderr)
        return 2
    s = summarise(rows)
    print(f"{s['n']} reference rows: median |pred/meas - 1| = {s['median_abs_err']:.1%}, 90th percentile "
          f"{s['p90_abs_err']:.1%}, pairs {s['pairs_right']}/{s['pairs']}")
    return 0


def _cfg_wl(r):
    from xtlens.core.config import ModelConfig, Workload

    cfg = ModelConfig.from_json(r.config_json)
    return cfg, Workload(batch=r.batch, seq_len=r.seq_len_tokens, dtype=r.dtype)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--quick", action="store_true", help="20 configurations up to 2048 tokens, 3 repeats")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads for calibration and measurement (0: torch's default). On a CPU shared with "
                         "other work, 1 avoids stalls of multi-threaded kernels waiting on a descheduled thread")
    ap.add_argument("--time-budget", type=float, default=60.0, help="calibration budget, seconds")
    ap.add_argument("--calibration", help="a calibration JSON to use instead of calibrating")
    ap.add_argument("--save-calibration", help="write the calibration used to this JSON file")
    ap.add_argument("--reference", help="predict the shipped reference rows of this GPU (H200) instead")
    ap.add_argument("--uncalibrated", action="store_true", help="with --reference: the preset, no calibration")
    ap.add_argument("--fit", action="store_true", help="measure the FIT configurations part by part instead (the "
                    "source of core.latency_model's CPU factors)")
    ap.add_argument("--keep-factors", action="store_true", help="with --fit: predict with the model's factors")
    ap.add_argument("--no-write", action="store_true", help="print only (no CSV / chart under docs/latency/)")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        ap.error("--repeats must be >= 1 and --warmup >= 0")
    return run_reference(args) if args.reference else run_heldout(args)


if __name__ == "__main__":
    sys.exit(main())
