"""How fast is xtlens' FLOP counting? ``profiling.flops`` at 8192 tokens vs fvcore tracing a real forward.

Three counts of one forward of the seed at ``--seq-len`` tokens (default 8192), each timed once:

1. ours, torch: ``profiling.flops.torch_flop_count`` (``FlopCounterMode`` on the real model built
   under ``FakeTensorMode``: shapes only, no arithmetic, no memory);
2. ours, fvcore: ``profiling.flops.fvcore_flop_count_extrapolated`` (fvcore traces at 8, 16, 24 tokens,
   checked at 32, interpolated exactly per operator);
3. the reference: ``profiling.flops.fvcore_flop_count``, fvcore's ``FlopCountAnalysis`` tracing a real
   float32 CPU forward at the full length (with the SDPA handle fvcore lacks).

Reported: the speed-up of 1 and 2 over 3 (target for 1: >= 10x) and whether the counts are identical:
torch's total against fvcore's matmul part (``2 * matmul_macs``: fvcore also counts layer norms and the
rotary outer product, which torch's convention leaves out; that difference is printed) and the
extrapolated fvcore per-operator counts against the traced ones. The closed form
(``core.cost_model``) is printed beside them.

    .venv/bin/python benchmarks/flop_count_speed.py           # 8192 tokens: the reference takes minutes, ~6 GiB
    .venv/bin/python benchmarks/flop_count_speed.py --quick   # 1024 tokens
"""

from __future__ import annotations

import argparse
import sys
import time

from xtlens.core.config import PRESETS, Workload
from xtlens.core.cost_model import flop_counts
from xtlens.profiling.flops import fvcore_flop_count, fvcore_flop_count_extrapolated, torch_flop_count


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="seed")
    p.add_argument("--seq-len", type=int, default=8192)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="1024 tokens")
    args = p.parse_args(argv)
    if args.quick:
        args.seq_len = 1024
    import torch

    cfg = PRESETS[args.preset]
    wl = Workload(batch=args.batch, seq_len=args.seq_len)
    print(f"{args.preset} batch={wl.batch} seq_len={wl.seq_len}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    torch_flop_count(cfg, Workload(batch=1, seq_len=16))  # imports and first-use costs out of the timing
    closed = flop_counts(cfg, wl).fwd_flops

    t0 = time.perf_counter()
    ours = torch_flop_count(cfg, wl)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    extra = fvcore_flop_count_extrapolated(cfg, wl)
    t_extra = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = fvcore_flop_count(cfg, wl)
    t_ref = time.perf_counter() - t0

    ref_matmul = 2 * ref.matmul_macs
    print(f"closed form (core.cost_model)          {closed:>20,} FLOPs")
    print(f"ours: FlopCounterMode on fake tensors  {ours.total_flops:>20,} FLOPs   {t_ours:8.2f} s")
    print(f"ours: fvcore extrapolated              {extra.total_flops:>20,} FLOPs   {t_extra:8.2f} s "
          f"(matmul part {2 * extra.matmul_macs:,})")
    print(f"fvcore tracing a real forward          {ref.total_flops:>20,} FLOPs   {t_ref:8.2f} s "
          f"(matmul part {ref_matmul:,}; norms and rotary outer product {2 * ref.extra_macs:,})")
    same_torch = ours.total_flops == ref_matmul
    differing = {k: (extra.by_operator_macs.get(k), ref.by_operator_macs.get(k))
                 for k in set(extra.by_operator_macs) | set(ref.by_operator_macs)
                 if extra.by_operator_macs.get(k) != ref.by_operator_macs.get(k)}
    print(f"speed-up, FlopCounterMode vs fvcore trace: {t_ref / t_ours:.1f}x; identical count "
          f"(torch total == fvcore matmul part): {same_torch}")
    print(f"speed-up, fvcore extrapolated vs fvcore trace: {t_ref / t_extra:.1f}x; identical per-operator counts: "
          + ("True" if not differing else "False, " + ", ".join(f"{k}: extrapolated {a:,} vs traced {b:,} MACs"
                                                           for k, (a, b) in sorted(differing.items()))))
    met = t_ref / t_ours >= 10 and same_torch
    print(f"target (FlopCounterMode path >= 10x faster than the fvcore trace, identical count): "
          f"{'met' if met else 'NOT met'}")
    return 0 if same_torch else 1

if __name__ == "__main__":
    sys.exit(main())
