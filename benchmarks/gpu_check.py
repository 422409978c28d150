"""GPU check: memory and latency of the seed with and without ALiBi over sequence lengths and dtypes.

On a CUDA machine, for ``PRESETS["seed"]`` and ``PRESETS["seed-no-alibi"]``, float32 and bfloat16, and
sequence lengths 512 .. 8192: ``measure_memory`` (inference and training step, measured next to the
closed form) and ``measure_latency`` (forward, attention, training step, cached decode), the SDPA backend
that ran at each point and why, and a forced-backend comparison of the forward (flash, efficient, cuDNN,
math; a backend that cannot run gives an error row). Prints Markdown tables; ``--out FILE.csv`` (or
.json/.parquet) writes every row.

    python benchmarks/gpu_check.py                              # CUDA, full grid
    python benchmarks/gpu_check.py --device cpu --quick         # tiny sizes on CPU (the tested path)
    python benchmarks/gpu_check.py --seq-lens 512,2048 --dtypes bfloat16 --out gpu.csv
"""

from __future__ import annotations

import argparse
import sys
import time

from xtlens.core.config import PRESETS, ModelConfig, Workload
from xtlens.profiling.device import device_name, resolve_device, versions
from xtlens.profiling.latency import measure_latency
from xtlens.profiling.memory import measure_memory
from xtlens.profiling.records import ProfileRecord

CONFIGS = ("seed", "seed-no-alibi")
SEQ_LENS = (512, 1024, 2048, 4096, 8192)
DTYPES = ("float32", "bfloat16")
QUICK_SEQ_LENS = (32,)


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


def errors_list(rows: list[ProfileRecord]) -> str:
    bad = [r for r in rows if r.status != "ok"]
    return "\n".join(f"- {r.config_name} {r.dtype} {r.seq_len_tokens} {r.measurement}/{r.phase}: {r.status}: {r.error}"
                     for r in bad) or "- none"


def run(*, device: str, quick: bool, seq_lens: tuple[int, ...], dtypes: tuple[str, ...], warmup: int, repeats: int,
        forced: tuple[str, ...], log=print) -> list[ProfileRecord]:
    rows: list[ProfileRecord] = []
    for name in CONFIGS:
        cfg = _quick(PRESETS[name]) if quick else PRESETS[name]
        for dtype in dtypes:
            for n in seq_lens:
                wl = Workload(batch=1, seq_len=n, dtype=dtype)
                t0 = time.perf_counter()
                rows += measure_memory(cfg, wl, device=device, config_name=name)
                rows += measure_latency(cfg, wl, device=device, warmup=warmup, repeats=repeats, config_name=name,
                                        decode_context_tokens=n - 1)
                for backend in forced:
                    rows += measure_latency(cfg, wl, device=device, phases=("forward",), warmup=warmup,
                                            repeats=repeats, sdpa_backend=backend, config_name=name)
                log(f"  {name} {dtype} {n}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto, cuda or cpu (default auto)")
    p.add_argument("--quick", action="store_true", help="toy model sizes and short sequences (CPU smoke run)")
    p.add_argument("--seq-lens", default=None, help="comma-separated sequence lengths")
    p.add_argument("--dtypes", default=None, help="comma-separated dtypes (float32, bfloat16, float16)")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--out", default=None, help="write all rows to this .csv / .json / .parquet file")
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    if device == "cpu" and not args.quick:
        print("note: full sizes on a CPU take minutes per point; --quick runs toy sizes", file=sys.stderr)
    seq_lens = tuple(int(s) for s in args.seq_lens.split(",")) if args.seq_lens else (
        QUICK_SEQ_LENS if args.quick else SEQ_LENS)
    dtypes = tuple(args.dtypes.split(",")) if args.dtypes else DTYPES
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 5)
    forced = ("flash", "efficient", "cudnn", "math") if device.startswith("cuda") else ("flash", "math")

    v = versions()
    print(f"# xtlens GPU check\n\ndevice: {device_name(device)} ({device}); torch {v['torch']}; "
          f"x-transformers {v['x-transformers']}; warmup {warmup}, repeats {repeats}"
          + ("; quick (toy sizes)" if args.quick else "") + "\n")
    rows = run(device=device, quick=args.quick, seq_lens=seq_lens, dtypes=dtypes, warmup=warmup, repeats=repeats,
               forced=forced)
    print("## Latency\n\n" + latency_table([r for r in rows if r.measurement == "latency"]) + "\n")
    print("## Memory\n\n" + memory_table([r for r in rows if r.measurement == "memory"]) + "\n")
    print("## SDPA backend per point\n\n" + reasons_table(rows) + "\n")
    print("## Failures (out of memory, unsupported)\n\n" + errors_list(rows))
    if args.out:
        from xtlens.profiling.export import write_table

        path = write_table(rows, args.out)
        print(f"\nwrote {len(rows)} rows to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
