"""GPU check: memory and latency of the seed with and without ALiBi over sequence lengths and dtypes.

On a CUDA machine, for ``PRESETS["seed"]`` and ``PRESETS["seed-no-alibi"]``, float32 and bfloat16, and
sequence lengths 512 .. 8192: ``measure_memory`` (inference and training step, measured next to the
closed form) and ``measure_latency`` (forward, attention, training step, cached decode), the SDPA backend
that ran at each point and why, and a forced-backend comparison of the forward (flash, efficient, cuDNN,
math; a backend that cannot run gives an error row). Prints Markdown tables; ``--out FILE.csv`` (or
.json/.parquet) writes every row.

With ``--latency-parts`` (on by default on CUDA) the same run adds, at 1024 .. 8192 tokens: the latency
breakdown by part (``profiling.measure.breakdown``: forward and training step) with the roofline prediction of
the GPU's preset, the what-if table (``profiling.measure.whatif``: as built, FlexAttention, cuDNN, torch.compile,
CUDA graphs; forward, training step, decode), the issue-11 criterion (the seed's FlexAttention forward
within 1.3x of the seed-no-alibi forward at the longest length in bfloat16) and the ALiBi share of the
seed's forward. With ``--pytest-gpu`` (on by default on CUDA) it runs ``pytest -m gpu`` and records the
result. ``--md-out FILE`` writes the whole report, ready for ``docs/gpu-results.md``.

    python benchmarks/gpu_check.py --out gpu.csv --md-out gpu-results.md      # CUDA: every GPU figure
    python benchmarks/gpu_check.py --device cpu --quick         # tiny sizes on CPU (the tested path)
    python benchmarks/gpu_check.py --device cpu --quick --latency-parts       # + breakdown, what-if (CPU)
    python benchmarks/gpu_check.py --seq-lens 512,2048 --dtypes bfloat16 --out gpu.csv
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import subprocess
import sys
import time
from pathlib import Path

from xtlens.core.config import PRESETS, ModelConfig, Workload
from xtlens.profiling.measure.latency import measure_latency
from xtlens.profiling.measure.memory import measure_memory
from xtlens.profiling.results.records import ProfileRecord
from xtlens.profiling.run.device import device_name, resolve_device, versions

CONFIGS = ("seed", "seed-no-alibi")
SEQ_LENS = (512, 1024, 2048, 4096, 8192)
DTYPES = ("float32", "bfloat16")
QUICK_SEQ_LENS = (32,)
PARTS_SEQ_LENS = (1024, 2048, 4096, 8192)
WHATIF_IMPLS = ("asbuilt", "flex", "cudnn", "compile", "cudagraphs")
WHATIF_PHASES = ("forward", "train_step", "decode")
FLEX_CRITERION = 1.3  # issue 11: the seed's FlexAttention forward within 1.3x of seed-no-alibi's


class Deadline:
    """A time budget for the whole run: once spent, no new point starts (each skipped point is listed)."""

    def __init__(self, seconds: float | None):
        self.end = None if seconds is None else time.monotonic() + seconds
        self.skipped: list[str] = []

    def passed(self, what: str) -> bool:
        if self.end is not None and time.monotonic() > self.end:
            self.skipped.append(what)
            return True
        return False


def _quick(cfg: ModelConfig) -> ModelConfig:
    """The same flags at toy sizes (heads and the one K/V head kept)."""
    return cfg.replace(num_tokens=128, max_seq_len=64, dim=32, depth=2, attn_dim_head=16)


def _mib(n: int | None) -> str:
    return "" if n is None else f"{n / 2**20:,.2f}"


def _fmt(x: float | None, spec: str) -> str:
    return "" if x is None else format(x, spec)


def latency_table(rows: list[ProfileRecord]) -> str:
    out = ["| config | dtype | seq | phase | forced | status | SDPA backend | median ms | min..max ms | tokens/s "
           "| TFLOP/s | peak % |",
           "|---|---|---:|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        forced = r.method.split("SDPA forced to ")[1].split(";")[0] if r.method and "SDPA forced to" in r.method else ""
        spread = f"{r.latency_min_ms:.3g}..{r.latency_max_ms:.3g}" if r.latency_min_ms is not None else ""
        out.append(
            f"| {r.config_name} | {r.dtype} | {r.seq_len_tokens} | {r.phase} | {forced} | {r.status} | "
            f"{r.sdpa_backend or ''} | {_fmt(r.latency_median_ms, '.3f')} | {spread} | {_fmt(r.tokens_per_s, ',.0f')} | "
            f"{_fmt(r.achieved_flops_per_s and r.achieved_flops_per_s / 1e12, '.3g')} | "
            f"{_fmt(r.peak_fraction and 100 * r.peak_fraction, '.1f')} |")
    return "\n".join(out)


def memory_table(rows: list[ProfileRecord]) -> str:
    out = ["| config | dtype | seq | phase | component | status | measured MiB | predicted MiB | rel err |",
           "|---|---|---:|---|---|---|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r.config_name} | {r.dtype} | {r.seq_len_tokens} | {r.phase} | {r.component} | {r.status} | "
                   f"{_mib(r.measured_bytes)} | {_mib(r.predicted_bytes)} | {_fmt(r.memory_rel_err, '.2%')} |")
    return "\n".join(out)


def reasons_table(rows: list[ProfileRecord]) -> str:
    seen: dict[tuple, str] = {}
    for r in rows:
        if r.sdpa_backend and r.measurement == "latency":
            seen.setdefault((r.config_name, r.dtype, r.phase, r.sdpa_backend), r.sdpa_backend_reason or "")
    out = ["| config | dtype | phase | backend | why |", "|---|---|---|---|---|"]
    out += [f"| {c} | {d} | {p} | {b} | {why} |" for (c, d, p, b), why in seen.items()]
    return "\n".join(out)


def breakdown_table(rows: list[ProfileRecord]) -> str:
    out = ["| config | dtype | seq | phase | part | status | measured ms | share % | predicted ms | measured / predicted "
           "| TFLOP/s | peak % |",
           "|---|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|"]
    totals = {(r.config_name, r.dtype, r.seq_len_tokens, r.phase): r.latency_median_ms for r in rows
              if r.component == "total" and r.status == "ok"}
    for r in rows:
        total = totals.get((r.config_name, r.dtype, r.seq_len_tokens, r.phase))
        share = (100 * r.latency_median_ms / total if total and r.latency_median_ms is not None
                 and r.component != "total_unprofiled" else None)
        ratio = (r.latency_median_ms / r.predicted_latency_ms
                 if r.latency_median_ms is not None and r.predicted_latency_ms else None)
        out.append(f"| {r.config_name} | {r.dtype} | {r.seq_len_tokens} | {r.phase} | {r.component} | {r.status} | "
                   f"{_fmt(r.latency_median_ms, '.4g')} | {_fmt(share, '.1f')} | {_fmt(r.predicted_latency_ms, '.4g')} | "
                   f"{_fmt(ratio, '.2f')} | {_fmt(r.achieved_flops_per_s and r.achieved_flops_per_s / 1e12, '.3g')} | "
                   f"{_fmt(r.peak_fraction and 100 * r.peak_fraction, '.1f')} |")
    return "\n".join(out)


def whatif_table(rows: list[ProfileRecord]) -> str:
    out = ["| config | dtype | seq | phase | implementation | status | median ms | speedup vs as built | logits rel err "
           "| compile s | note |",
           "|---|---|---:|---|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        note = (r.error or (r.method or "").split(";")[1 if ";" in (r.method or "") else 0]).strip().replace("|", "/")
        out.append(f"| {r.config_name} | {r.dtype} | {r.seq_len_tokens} | {r.phase} | {r.component} | {r.status} | "
                   f"{_fmt(r.latency_median_ms, '.4g')} | {_fmt(r.speedup_vs_asbuilt, '.2f')} | "
                   f"{_fmt(r.logits_rel_err, '.1e')} | {_fmt(r.compile_s, '.1f')} | {note} |")
    return "\n".join(out)


def _median_of(rows: list[ProfileRecord], *, config: str, dtype: str, n: int, phase: str, component: str,
               measurement: str) -> float | None:
    values = [r.latency_median_ms for r in rows if (r.config_name, r.dtype, r.seq_len_tokens, r.phase, r.component,
                                                    r.measurement, r.status) == (config, dtype, n, phase, component,
                                                                                 measurement, "ok")]
    return statistics.median(values) if values else None


def criteria(rows: list[ProfileRecord]) -> str:
    """The issue's GPU criteria from the rows: FlexAttention forward of the seed against the seed-no-alibi
    forward at the longest length (bfloat16 when measured), and the ALiBi share of the seed's forward."""
    whatif = [r for r in rows if r.measurement == "whatif"]
    if not whatif:
        return "- not measured (run with --latency-parts)"
    dtype = "bfloat16" if any(r.dtype == "bfloat16" for r in whatif) else whatif[0].dtype
    n = max(r.seq_len_tokens for r in whatif if r.dtype == dtype)
    flex = _median_of(rows, config="seed", dtype=dtype, n=n, phase="forward", component="flex", measurement="whatif")
    built = _median_of(rows, config="seed", dtype=dtype, n=n, phase="forward", component="asbuilt",
                       measurement="whatif")
    plain = _median_of(rows, config="seed-no-alibi", dtype=dtype, n=n, phase="forward", component="asbuilt",
                       measurement="whatif")
    lines = []
    if flex is not None and plain is not None:
        ratio = flex / plain
        verdict = "PASS" if ratio <= FLEX_CRITERION else "FAIL"
        lines.append(f"- seed, FlexAttention what-if forward at {n} tokens in {dtype}: {flex:.3f} ms; seed-no-alibi "
                     f"as built: {plain:.3f} ms; ratio {ratio:.2f} (criterion <= {FLEX_CRITERION}): **{verdict}**"
                     + (f"; seed as built: {built:.3f} ms" if built is not None else ""))
    else:
        lines.append(f"- FlexAttention criterion at {n} tokens in {dtype}: not measured (a row failed; see the table)")
    parts = [r for r in rows if r.measurement == "breakdown" and r.config_name == "seed" and r.dtype == dtype
             and r.seq_len_tokens == n and r.phase == "forward" and r.status == "ok"]
    total = next((r.latency_median_ms for r in parts if r.component == "total"), None)
    if total:
        alibi = sum(r.latency_median_ms for r in parts if r.component in ("alibi_bias", "mask_prep"))
        kernel = sum(r.latency_median_ms for r in parts if r.component == "attention")
        lines.append(f"- seed forward at {n} tokens in {dtype}: {total:.3f} ms; ALiBi bias construction + mask "
                     f"preparation {alibi:.3f} ms ({100 * alibi / total:.0f} %); attention kernel {kernel:.3f} ms "
                     f"({100 * kernel / total:.0f} %)")
    return "\n".join(lines)


INTERLEAVED = (("seed", "asbuilt"), ("seed", "flex"), ("seed-no-alibi", "asbuilt"), ("seed-no-alibi", "flex"))


def interleaved_criterion(*, device: str, n: int, dtype: str, rounds: int, calls: int, quick: bool = False) -> str:
    """The issue-11 criterion measured fairly: the four forwards (seed and seed-no-alibi, as built and with the
    FlexAttention what-if) built once, then timed in turns, round after round, so that a slow spell of the machine
    falls on all four alike; each round times ``calls`` forwards back to back. Beside the wall time: the GPU's
    kernel time of one forward (torch.profiler, CUDA activity), which no launch overhead inflates."""
    import torch
    from xtlens.profiling.measure.whatif import build_variant
    from xtlens.profiling.run.device import synchronize

    runners = {}
    for name, impl in INTERLEAVED:
        cfg = _quick(PRESETS[name]) if quick else PRESETS[name]
        model, runner = build_variant(impl, cfg, device=device, dtype=dtype)
        model.eval()
        ids = torch.randint(0, cfg.num_tokens, (1, n), generator=torch.Generator().manual_seed(0)).to(device)
        runners[(name, impl)] = (runner, ids)
    wall_ms: dict[tuple[str, str], list[float]] = {k: [] for k in runners}
    with torch.no_grad():
        for runner, ids in runners.values():  # compile, autotune, warm the allocator
            for _ in range(3):
                runner(ids)
        synchronize(device)
        for _ in range(rounds):
            for key, (runner, ids) in runners.items():
                synchronize(device)
                t0 = time.perf_counter()
                for _ in range(calls):
                    runner(ids)
                synchronize(device)
                wall_ms[key].append((time.perf_counter() - t0) * 1e3 / calls)
        kernel_ms: dict[tuple[str, str], float | None] = {}
        for key, (runner, ids) in runners.items():
            kernel_ms[key] = None
            if device.startswith("cuda"):
                from torch.profiler import ProfilerActivity, profile

                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    runner(ids)
                    synchronize(device)
                kernel_ms[key] = sum(e.self_device_time_total for e in prof.key_averages()) / 1e3
    median_ms = {k: statistics.median(v) for k, v in wall_ms.items()}
    out = [f"{rounds} rounds x {calls} forwards each, the four models in turn; batch 1, {n} tokens, {dtype}; "
           "median of the rounds (min..max); kernel ms: the GPU's kernel time of one forward (torch.profiler).\n",
           "| config | implementation | wall ms (median) | min..max | kernel ms | wall / seed-no-alibi as built |",
           "|---|---|---:|---:|---:|---:|"]
    ref = median_ms[("seed-no-alibi", "asbuilt")]
    for key in runners:
        k = kernel_ms[key]
        out.append(f"| {key[0]} | {key[1]} | {median_ms[key]:.3f} | {min(wall_ms[key]):.3f}..{max(wall_ms[key]):.3f} | "
                   f"{'' if k is None else f'{k:.3f}'} | {median_ms[key] / ref:.2f} |")
    ratio = median_ms[("seed", "flex")] / ref
    per_round = sorted(a / b for a, b in zip(wall_ms[("seed", "flex")], wall_ms[("seed-no-alibi", "asbuilt")], strict=True))
    verdict = "PASS" if ratio <= FLEX_CRITERION else "FAIL"
    out.append(f"\n- criterion: seed with the FlexAttention what-if / seed-no-alibi as built = {ratio:.2f} "
               f"(per-round ratios {per_round[0]:.2f}..{per_round[-1]:.2f}; criterion <= {FLEX_CRITERION}): **{verdict}**")
    return "\n".join(out)


def latency_parts(*, device: str, quick: bool, seq_lens: tuple[int, ...], dtypes: tuple[str, ...], warmup: int,
                  repeats: int, impls: tuple[str, ...], log=print, phases: tuple[str, ...] = WHATIF_PHASES,
                  breakdown: bool = True, on_point=None, deadline: Deadline | None = None) -> list[ProfileRecord]:
    from xtlens.profiling.measure.breakdown import measure_breakdown
    from xtlens.profiling.measure.whatif import measure_whatif

    rows: list[ProfileRecord] = []
    for name, cfg, wl in _points(quick, dtypes, seq_lens):
        if deadline is not None and deadline.passed(f"parts {name} {wl.dtype} {wl.seq_len}"):
            continue
        t0 = time.perf_counter()
        if breakdown:
            rows += measure_breakdown(cfg, wl, device=device, warmup=warmup, repeats=repeats, config_name=name)
        if impls:
            rows += measure_whatif(cfg, wl, device=device, implementations=impls, phases=phases, warmup=warmup,
                                   repeats=repeats, config_name=name)
        log(f"  parts {name} {wl.dtype} {wl.seq_len}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        if on_point is not None:
            on_point(rows)
    return rows


def gpu_test_files(root: Path) -> list[str]:
    """The test files that hold a ``@pytest.mark.gpu`` test: ``pytest -m gpu`` on these alone needs none of the
    dashboard's packages (Streamlit, Plotly, Ray, Playwright), which a bare GPU machine may lack."""
    return sorted(str(f.relative_to(root)) for f in (root / "tests").rglob("test_*.py")
                  if "@pytest.mark.gpu" in f.read_text())


def pytest_gpu() -> str:
    root = Path(__file__).resolve().parents[1]
    files = gpu_test_files(root)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *files],
                          cwd=root, capture_output=True, text=True, timeout=1800)
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
    return f"`pytest -m gpu {' '.join(files)}`: exit status {proc.returncode}\n\n```\n{tail}\n```"


def errors_list(rows: list[ProfileRecord]) -> str:
    bad = [r for r in rows if r.status != "ok"]
    return "\n".join(f"- {r.config_name} {r.dtype} {r.seq_len_tokens} {r.measurement}/{r.phase}: {r.status}: {r.error}"
                     for r in bad) or "- none"


def run(*, device: str, quick: bool, seq_lens: tuple[int, ...], dtypes: tuple[str, ...], warmup: int, repeats: int,
        forced: tuple[str, ...], log=print, on_point=None, deadline: Deadline | None = None) -> list[ProfileRecord]:
    rows: list[ProfileRecord] = []
    for name, cfg, wl in _points(quick, dtypes, seq_lens):
        if deadline is not None and deadline.passed(f"{name} {wl.dtype} {wl.seq_len}"):
            continue
        t0 = time.perf_counter()
        rows += measure_memory(cfg, wl, device=device, config_name=name)
        rows += measure_latency(cfg, wl, device=device, warmup=warmup, repeats=repeats, config_name=name,
                                decode_context_tokens=wl.seq_len - 1)
        for backend in forced:
            rows += measure_latency(cfg, wl, device=device, phases=("forward",), warmup=warmup, repeats=repeats,
                                    sdpa_backend=backend, config_name=name)
        log(f"  {name} {wl.dtype} {wl.seq_len}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        if on_point is not None:
            on_point(rows)
    return rows


def _points(quick: bool, dtypes: tuple[str, ...], seq_lens: tuple[int, ...]):
    """(name, config, workload) for both configurations, every dtype and length (batch 1), in the order given
    (dtype, then length, then configuration): under a time budget the lengths listed first are measured for both
    configurations before the next length starts."""
    for dtype in dtypes:
        for n in seq_lens:
            for name in CONFIGS:
                cfg = _quick(PRESETS[name]) if quick else PRESETS[name]
                yield name, cfg, Workload(batch=1, seq_len=n, dtype=dtype)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto, cuda or cpu (default auto)")
    p.add_argument("--quick", action="store_true", help="toy model sizes and short sequences (CPU smoke run)")
    p.add_argument("--seq-lens", default=None, help="comma-separated sequence lengths")
    p.add_argument("--dtypes", default=None, help="comma-separated dtypes (float32, bfloat16, float16)")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--out", default=None, help="write all rows to this .csv / .json / .parquet file (after every point)")
    p.add_argument("--md-out", default=None,
                   help="also write the Markdown report to this file, after every point (docs/gpu-results.md)")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="the memory and latency check with forced SDPA backends (default on)")
    p.add_argument("--latency-parts", action=argparse.BooleanOptionalAction, default=None,
                   help="latency breakdown, what-if table and the issue-11 criteria (default: on with CUDA)")
    p.add_argument("--breakdown", action=argparse.BooleanOptionalAction, default=True,
                   help="with --latency-parts: the breakdown by part (default on; off = the what-if table alone)")
    p.add_argument("--parts-seq-lens", default=None, help="lengths for the breakdown and what-if (default 1024..8192)")
    p.add_argument("--attention", default=",".join(WHATIF_IMPLS), help="what-if implementations ('' for none)")
    p.add_argument("--whatif-phases", default=",".join(WHATIF_PHASES), help="what-if phases (default all three)")
    p.add_argument("--pytest-gpu", action=argparse.BooleanOptionalAction, default=None,
                   help="run pytest -m gpu and record the result (default: on with CUDA)")
    p.add_argument("--interleaved", type=int, default=None, metavar="N",
                   help="the issue-11 criterion at N tokens, the four forwards timed in turns (see interleaved_criterion)")
    p.add_argument("--rounds", type=int, default=15, help="rounds of --interleaved (default 15)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds: once spent, no new point starts; the report lists what was skipped")
    args = p.parse_args(argv)
    report: list[str] = []
    rows: list[ProfileRecord] = []

    def emit(text: str = "") -> None:
        print(text)
        report.append(text)

    def flush(extra: str = "") -> None:
        """Write what is measured so far: a run stopped from outside still leaves every finished point."""
        if args.md_out:
            Path(args.md_out).write_text("\n".join(report) + "\n" + extra)
        if args.out and rows:
            from xtlens.profiling.results.export import write_table

            write_table(rows, args.out)

    device = resolve_device(args.device)
    if device == "cpu" and not args.quick:
        print("note: full sizes on a CPU take minutes per point; --quick runs toy sizes", file=sys.stderr)
    seq_lens = tuple(int(s) for s in args.seq_lens.split(",")) if args.seq_lens else (
        QUICK_SEQ_LENS if args.quick else SEQ_LENS)
    dtypes = tuple(args.dtypes.split(",")) if args.dtypes else DTYPES
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 5)
    forced = ("flash", "efficient", "cudnn", "math") if device.startswith("cuda") else ("flash", "math")
    deadline = Deadline(args.time_budget)

    cuda = device.startswith("cuda")
    parts_on = args.latency_parts if args.latency_parts is not None else cuda
    pytest_on = args.pytest_gpu if args.pytest_gpu is not None else cuda
    v = versions()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    emit(f"# xtlens GPU check\n\ndevice: {device_name(device)} ({device}); {date}; torch {v['torch']}; "
         f"x-transformers {v['x-transformers']}; warmup {warmup}, repeats {repeats}"
         + ("; quick (toy sizes)" if args.quick else "") + "\n")
    if args.check:
        def partial_check(done: list[ProfileRecord]) -> None:
            rows[:] = done
            flush("\n## Latency (so far)\n\n" + latency_table([r for r in done if r.measurement == "latency"]) + "\n")

        rows[:] = run(device=device, quick=args.quick, seq_lens=seq_lens, dtypes=dtypes, warmup=warmup, repeats=repeats,
                      forced=forced, on_point=partial_check, deadline=deadline)  # (partial_check filled rows too)
        emit("## Latency\n\n" + latency_table([r for r in rows if r.measurement == "latency"]) + "\n")
        emit("## Memory\n\n" + memory_table([r for r in rows if r.measurement == "memory"]) + "\n")
        emit("## SDPA backend per point\n\n" + reasons_table(rows) + "\n")
        flush()
    if parts_on:
        parts_lens = tuple(int(x) for x in args.parts_seq_lens.split(",")) if args.parts_seq_lens else (
            seq_lens if args.quick else PARTS_SEQ_LENS)
        impls = tuple(x.strip() for x in args.attention.split(",") if x.strip())
        phases = tuple(x.strip() for x in args.whatif_phases.split(",") if x.strip())
        before = list(rows)

        def partial_parts(done: list[ProfileRecord]) -> None:
            rows[:] = before + done
            flush("\n## Latency breakdown by part (so far)\n\n"
                  + breakdown_table([r for r in done if r.measurement == "breakdown"])
                  + "\n\n## What-if (so far)\n\n" + whatif_table([r for r in done if r.measurement == "whatif"]) + "\n")

        parts = latency_parts(device=device, quick=args.quick, seq_lens=parts_lens, dtypes=dtypes, warmup=warmup,
                              repeats=repeats, impls=impls, phases=phases, breakdown=args.breakdown,
                              on_point=partial_parts, deadline=deadline)
        rows[:] = before + parts
        if args.breakdown:
            emit("## Latency breakdown by part\n\n"
                 + breakdown_table([r for r in parts if r.measurement == "breakdown"]) + "\n")
        if impls:
            emit("## What-if attention implementations (what-if: not what x-transformers runs)\n\n"
                 + whatif_table([r for r in parts if r.measurement == "whatif"]) + "\n")
        emit("## Issue 11 criteria\n\n" + criteria(rows) + "\n")
        flush()
    if args.interleaved:
        for dtype in dtypes:
            emit(f"## Issue 11 criterion, interleaved ({args.interleaved} tokens, {dtype})\n\n"
                 + interleaved_criterion(device=device, n=args.interleaved, dtype=dtype, rounds=args.rounds,
                                         calls=1 if args.quick else 5, quick=args.quick) + "\n")
            flush()
    if pytest_on:
        emit("## pytest -m gpu\n\n" + pytest_gpu() + "\n")
    emit("## Failures (out of memory, unsupported)\n\n" + errors_list(rows))
    if deadline.skipped:
        emit(f"\n## Not run (the {args.time_budget:g} s time budget was spent)\n\n"
             + "\n".join(f"- {w}" for w in deadline.skipped))
    flush()
    if args.md_out:
        print(f"\nwrote the report to {args.md_out}", file=sys.stderr)
    if args.out:
        print(f"\nwrote {len(rows)} rows to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
