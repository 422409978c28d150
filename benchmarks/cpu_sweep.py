"""How long does a CPU sweep of the seed take? ``profiling.run.sweep.run_sweep`` over 512..8192 tokens in bf16.

Runs the real sweep the CLI and the dashboard run (FLOP counts, memory on fake tensors, forward latency),
with the on-disk cache off, on the CPU, and prints the wall time of each point and of the whole sweep,
plus the measured forward latency per length.

    .venv/bin/python benchmarks/cpu_sweep.py            # 512, 1024, 2048, 4096, 8192 (minutes on 2 cores)
    .venv/bin/python benchmarks/cpu_sweep.py --quick    # 512, 1024
"""

from __future__ import annotations

import argparse
import sys
import time

from xtlens.core.config import PRESETS
from xtlens.profiling.run.plan import SweepOptions, seq_len_workloads
from xtlens.profiling.run.sweep import run_sweep


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="seed")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--seq-lens", default="512,1024,2048,4096,8192")
    p.add_argument("--what", default="flops,memory,latency")
    p.add_argument("--phases", default="forward,inference", help="latency forward, memory inference (FLOPs: forward)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None, help="also write the rows (.csv, .json, .parquet, .md)")
    p.add_argument("--quick", action="store_true", help="512 and 1024 tokens only")
    args = p.parse_args(argv)
    if args.quick:
        args.seq_lens = "512,1024"
    import torch

    seq_lens = [int(x) for x in args.seq_lens.split(",")]
    options = SweepOptions(device="cpu", warmup=args.warmup, repeats=args.repeats, use_cache=False,
                           phases=tuple(args.phases.split(",")))
    print(f"{args.preset} {args.dtype} seq_lens={seq_lens} what={args.what} phases={args.phases} "
          f"warmup={args.warmup} repeats={args.repeats}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    marks: list[tuple[float, str]] = []
    start = time.perf_counter()
    rows = run_sweep([(args.preset, PRESETS[args.preset])], seq_len_workloads(seq_lens, dtype=args.dtype),
                     what=args.what, options=options,
                     on_rows=lambda i, point, r: marks.append((time.perf_counter(), point.describe())))
    total = time.perf_counter() - start
    prev = start
    for t, label in marks:
        print(f"  {t - prev:8.2f} s  {label}")
        prev = t
    for r in rows:
        if r.measurement == "latency":
            print(f"  forward latency at {r.seq_len_tokens:5d} tokens: median {r.latency_median_ms:10.1f} ms "
                  f"(min {r.latency_min_ms:.1f}, max {r.latency_max_ms:.1f}), {r.tokens_per_s:,.0f} tokens/s"
                  if r.status == "ok" else f"  latency at {r.seq_len_tokens}: {r.status}: {r.error}")
    failed = [r for r in rows if r.status != "ok"]
    for r in failed:
        print(f"  not ok: {r.measurement} {r.phase} {r.seq_len_tokens}: {r.status}: {r.error}")
    if args.out:
        from xtlens.profiling.results.export import write_table

        write_table(rows, args.out)
    print(f"CPU sweep of {args.preset} in {args.dtype} over {seq_lens}: {total:.1f} s wall, {len(rows)} rows, "
          f"{len(failed)} not ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
