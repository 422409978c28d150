"""CUDA memory of a training step as the process sees it, measured in a tight loop beside xtlens's prediction.

For each point (configuration, precision, batch, tokens) one steady-state training step of the loop xtlens
predicts (``profiling.measure.setups.train_loop``: ``loss = f(model(x))``, AdamW, ``zero_grad(set_to_none=True)``)
runs on real CUDA tensors, without MemTracker: the row holds ``torch.cuda.max_memory_allocated`` and
``max_memory_reserved`` over that step (the peak window opened after one warm-up step), the allocator's
segment statistics, and the prediction of ``core.cost_model`` (ordered peak, foreach optimizer). The process-level
terms are measured once: the CUDA context (``cudaMemGetInfo`` used minus reserved after initialisation), the
cuBLAS workspace (the allocated bytes a first matrix product leaves behind), and, for two points, the allocator's
trace (``torch.cuda.memory._record_memory_history``: every alloc/free/segment event with its size).

``--bisect``: under a cap (``torch.cuda.set_per_process_memory_fraction``) the largest batch and the longest
sequence (multiples of ``--seq-step``) for which two training steps run without an out-of-memory error. The
measuring loop, the process terms and the bisection live in ``profiling.measure.fit`` (shared with
``tests/profiling/test_fit_gpu.py``).

    python benchmarks/cuda_memory.py --out DIR [--quick] [--bisect]

Writes ``DIR/cuda_memory.json`` (everything) as it goes. CUDA only.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from xtlens.core.presets import PRESETS
from xtlens.core.setup import TrainingSetup
from xtlens.profiling.measure.fit import bisect, emulated_device, process_terms, train_step_point


def one_point(cfg, name: str, precision: str, batch: int, seq: int, *, trace: bool = False) -> dict:
    """One training-step point of ``precision`` (``profiling.measure.fit.train_step_point``)."""
    return train_step_point(cfg, TrainingSetup(precision=precision), batch, seq, name=name, trace=trace)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--bisect", action="store_true")
    ap.add_argument("--cap-gib", type=float, default=16.0)
    ap.add_argument("--seq-step", type=int, default=128)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "cuda_memory.json"
    result: dict = {"process": process_terms(), "points": [], "bisect": []}

    def save():
        path.write_text(json.dumps(result))

    save()
    lens = (512, 2048) if args.quick else (512, 2048, 8192)
    names = ("seed", "seed-no-alibi")
    traced = {("seed", "amp_bf16", 1, 2048), ("seed-no-alibi", "fp32", 1, 512)}
    for name in names:
        for precision in ("fp32", "bf16", "amp_bf16"):
            for batch in (1, 4):
                for seq in lens:
                    row = one_point(PRESETS[name], name, precision, batch, seq,
                                    trace=(name, precision, batch, seq) in traced)
                    result["points"].append(row)
                    print(name, precision, batch, seq, row.get("status"), row.get("peak_allocated_bytes"),
                          row.get("peak_reserved_bytes"), row.get("predicted_peak_bytes"), flush=True)
                    save()
    if args.bisect:
        cap = int(args.cap_gib * 2**30)
        context = result["process"]["context_after_matmul_bytes"]
        cfg = PRESETS["seed"]
        with emulated_device(cap + context, context):
            for precision, what, fixed, hi, step in (("amp_bf16", "batch", 2048, 256, 1),
                                                     ("amp_bf16", "seq", 4, 8192, args.seq_step),
                                                     ("fp32", "batch", 1024, 256, 1),
                                                     ("bf16", "seq", 8, 8192, args.seq_step)):
                t0 = time.perf_counter()
                found = bisect(cfg, precision, what=what, fixed=fixed, hi=hi, step=step)
                found.update(config="seed", precision=precision, what=what, fixed=fixed, cap_bytes=cap,
                             cap_gib=args.cap_gib, wall_s=round(time.perf_counter() - t0, 1))
                result["bisect"].append(found)
                print("bisect", found, flush=True)
                save()
    save()


if __name__ == "__main__":
    main()
