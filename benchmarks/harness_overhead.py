"""How much does xtlens' latency harness add? ``measure_latency``'s forward median vs a bare timing loop.

Both time the same thing: ``model(ids)`` under ``torch.no_grad()`` on a model built by
``core.builder.build_model`` (same seed, device and dtype), ``warmup`` untimed calls, then ``repeats``
calls timed one by one (CPU: ``time.perf_counter``; CUDA: event pairs, one synchronise). The two are
interleaved over ``--rounds`` rounds (alternating which goes first) so that drift of a shared machine
hits both. The ratio reported is min(harness medians) / min(bare medians): on a shared machine other
processes only ever add time, so the smallest per-round median is the least disturbed figure; the ratio
of the medians over rounds is printed too. Target: within 3% (ratio 0.97 .. 1.03).

    .venv/bin/python benchmarks/harness_overhead.py            # seed, 1024 tokens, float32, 5 rounds
    .venv/bin/python benchmarks/harness_overhead.py --quick    # seed, 256 tokens, 3 rounds
    .venv/bin/python benchmarks/harness_overhead.py --threads 1  # steadier on a shared CPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from xtlens.core.builder import build_model
from xtlens.core.config import PRESETS, Workload
from xtlens.profiling.measure.latency import measure_latency
from xtlens.profiling.run.device import device_name, resolve_device, synchronize


def bare_forward_ms(model, ids, *, device: str, warmup: int, repeats: int) -> list[float]:
    """The hand-written loop: nothing but the forward between the clock reads."""
    with torch.no_grad():
        for _ in range(warmup):
            model(ids)
        synchronize(device)
        if device.startswith("cuda"):
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(repeats)]
            for start, end in events:
                start.record()
                model(ids)
                end.record()
            torch.cuda.synchronize()
            return [s.elapsed_time(e) for s, e in events]
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(ids)
            out.append((time.perf_counter() - t0) * 1e3)
        return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="seed")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="auto")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (1 is steadier on a machine shared with other work)")
    p.add_argument("--quick", action="store_true", help="256 tokens, 3 rounds of 3 repeats")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.seq_len, args.rounds, args.repeats = 256, 3, 3
    cfg = PRESETS[args.preset]
    wl = Workload(batch=args.batch, seq_len=args.seq_len, dtype=args.dtype)
    dev = resolve_device(args.device)
    print(f"{args.preset} batch={wl.batch} seq_len={wl.seq_len} {wl.dtype} on {device_name(dev)}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; warmup={args.warmup} repeats={args.repeats} "
          f"rounds={args.rounds}")
    model = build_model(cfg, device=dev, dtype=wl.dtype, seed=0).model
    ids = torch.randint(0, cfg.num_tokens, (wl.batch, wl.seq_len), generator=torch.Generator().manual_seed(0)).to(dev)
    harness, bare = [], []
    for r in range(args.rounds):
        def run_harness() -> float:
            (row,) = measure_latency(cfg, wl, device=dev, phases=("forward",), warmup=args.warmup,
                                     repeats=args.repeats)
            if row.status != "ok":
                raise SystemExit(f"harness failed: {row.status}: {row.error}")
            return row.latency_median_ms

        def run_bare() -> float:
            return statistics.median(bare_forward_ms(model, ids, device=dev, warmup=args.warmup, repeats=args.repeats))

        if r % 2 == 0:
            h, b = run_harness(), run_bare()
        else:
            b, h = run_bare(), run_harness()
        harness.append(h)
        bare.append(b)
        print(f"round {r + 1}: harness median {h:9.3f} ms   bare median {b:9.3f} ms   ratio {h / b:.4f}")
    ratio = min(harness) / min(bare)
    ratio_median = statistics.median(harness) / statistics.median(bare)
    print(f"harness {min(harness):.3f} ms / bare {min(bare):.3f} ms = ratio {ratio:.4f} ({100 * (ratio - 1):+.2f}%) "
          f"[ratio of medians over rounds: {ratio_median:.4f}]; target within 3%: "
          f"{'met' if abs(ratio - 1) <= 0.03 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
