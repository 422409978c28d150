"""What does a latency breakdown cost over plain timing of the same calls? Per model size, in one run.

For each size of the seed's family (dim x depth at ``--seq-len`` tokens, default 256) and each phase (forward,
training step), interleaved ``--rounds`` times:

* plain: ``profiling.measure.latency.measure_latency`` (build the model, warm-up, timed calls);
* breakdown: ``profiling.measure.breakdown.measure_breakdown`` with the same warm-up and repeats (build, the same
  unprofiled timed calls, the profiled calls, attribution of the profiler's events to parts, the rows);
* breakdown as before: the same with the events read through torch's ``prof.events()`` (full
  ``FunctionEvent`` objects) instead of ``cpu_intervals`` of the raw events.

Reported per size and phase: wall times (min / median over rounds), the ratio breakdown / plain (target: at most
a few times) and the 1-minute load average. Once per process a breakdown also calibrates the CPU's ceilings
(``profiling.measure.roofline``) for the roofline columns: its cost is printed separately, with ``--old-calibration``
beside the calibration as it was (2048 x 2048 products in float32 and bfloat16, 1 + 3 each, whatever the
dtype measured: on a CPU without fast bfloat16 one such product took over a minute, the "5 minutes" of issue 20).

    nice .venv/bin/python benchmarks/breakdown_speed.py
    nice .venv/bin/python benchmarks/breakdown_speed.py --sizes 64x2,128x4,256x6,512x6 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from xtlens.core.config import PRESETS, Workload


def _load() -> float:
    return os.getloadavg()[0]


def _wall(fn) -> float:
    t0 = time.perf_counter()
    rows = fn()
    wall_s = time.perf_counter() - t0
    bad = [r.error for r in rows if r.status != "ok"]
    if bad:
        raise RuntimeError(f"a measurement failed: {bad[0]}")
    return wall_s


def _old_calibration_s() -> float:
    import torch

    t0 = time.perf_counter()
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(2048, 2048).to(dtype), torch.randn(2048, 2048).to(dtype)
        for _ in range(4):
            torch.mm(a, b)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="64x2,128x4,256x6", help="dim x depth of the seed's family (default 64x2,128x4,256x6)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--old-calibration", action="store_true", help="also time the calibration as it was")
    args = p.parse_args(argv)
    import torch
    from xtlens.profiling.measure import breakdown
    from xtlens.profiling.measure.latency import measure_latency
    from xtlens.profiling.measure.roofline import calibrate_cpu

    wl = Workload(batch=1, seq_len=args.seq_len)
    print(f"seed family at {wl.seq_len} tokens, batch 1, warmup {args.warmup}, repeats {args.repeats}, "
          f"{args.rounds} round(s); torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"load {_load():.2f} at the start")
    t0 = time.perf_counter()
    hw = calibrate_cpu(dtypes=(wl.dtype,))
    print(f"CPU calibration for {wl.dtype} (once per process): {time.perf_counter() - t0:.2f} s (load {_load():.1f}); "
          f"{hw.source}")
    if args.old_calibration:
        print(f"the calibration as it was (2048x2048, float32 and bfloat16, 1 + 3 each): {_old_calibration_s():.2f} s "
              f"(load {_load():.1f})")
    tiny = PRESETS["seed"].replace(dim=32, depth=1)
    breakdown.measure_breakdown(tiny, Workload(seq_len=16), repeats=1)  # imports and first use out of the timing
    measure_latency(tiny, Workload(seq_len=16), phases=("forward",), repeats=1)

    def as_before(prof, *, device_time):
        return list(prof.events())

    fast_events = breakdown.profiled_events
    print(f"{'size':>9} {'phase':>10}  {'plain s (min/med)':>18}  {'breakdown s':>14}  {'before s':>14}  "
          f"{'ratio':>6}  {'before':>6}  load")
    worst = 0.0
    for size in args.sizes.split(","):
        dim, depth = (int(x) for x in size.split("x"))
        cfg = PRESETS["seed"].replace(dim=dim, depth=depth)
        for phase in ("forward", "train_step"):
            plain, new, old, loads = [], [], [], []
            for _ in range(args.rounds):
                plain.append(_wall(lambda cfg=cfg, phase=phase: measure_latency(
                    cfg, wl, phases=(phase,), warmup=args.warmup, repeats=args.repeats)))
                new.append(_wall(lambda cfg=cfg, phase=phase: breakdown.measure_breakdown(
                    cfg, wl, phases=(phase,), warmup=args.warmup, repeats=args.repeats)))
                breakdown.profiled_events = as_before
                try:
                    old.append(_wall(lambda cfg=cfg, phase=phase: breakdown.measure_breakdown(
                        cfg, wl, phases=(phase,), warmup=args.warmup, repeats=args.repeats)))
                finally:
                    breakdown.profiled_events = fast_events
                loads.append(_load())
            ratio = statistics.median(new) / statistics.median(plain)
            worst = max(worst, ratio)
            print(f"{size:>9} {phase:>10}  {min(plain):8.2f} {statistics.median(plain):8.2f}  "
                  f"{min(new):6.2f} {statistics.median(new):6.2f}  {min(old):6.2f} {statistics.median(old):6.2f}  "
                  f"{ratio:5.1f}x  {statistics.median(old) / statistics.median(plain):5.1f}x  "
                  f"{min(loads):.1f}..{max(loads):.1f}")
    print(f"largest ratio breakdown / plain (medians): {worst:.1f}x; target at most a few times (<= 4x): "
          f"{'met' if worst <= 4 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
