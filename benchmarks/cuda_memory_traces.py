"""Full CUDA allocator traces of the training points of ``benchmarks/cuda_memory.py``, from model build on.

For each point (seed / seed-no-alibi x fp32 / bf16 / amp_bf16 x batch 1, 4 x 512 / 2048 / 8192 tokens) the
allocator's history (``torch.cuda.memory._record_memory_history``) is recorded while the model is built, one warm-up
step runs (creating the optimizer state) and the measured step runs, with a marker allocation after each; the
events (alloc / free_completed / segment_alloc, with address and block size) are written compactly. They are what
``tests/core/test_cuda_memory.py`` replays through ``core.allocator.CachingAllocatorModel`` (the allocator model
against the real allocator, on the real sequence) and what ``core.cuda_memory.training_tape`` was read from.

    python benchmarks/cuda_memory_traces.py --out docs/gpu/cuda-memory-h200-traces.json.gz

CUDA only; about a minute on an H200.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
from pathlib import Path

import torch
from xtlens.core.builder import build_model
from xtlens.core.presets import PRESETS
from xtlens.core.setup import TrainingSetup
from xtlens.profiling.measure.setups import make_optimizer, train_loop

CODES = {"alloc": "a", "free_completed": "f", "segment_alloc": "s"}


def _is_marker(ev: dict) -> bool:
    return any(f.get("name") == "_marker" for f in ev.get("frames") or [])


def _marker() -> torch.Tensor:
    return torch.empty(1, device="cuda")


def trace_point(name: str, precision: str, batch: int, seq: int) -> dict:
    gc.collect()
    torch.cuda.empty_cache()
    cfg, setup = PRESETS[name], TrainingSetup(precision=precision)
    torch.cuda.memory._record_memory_history(max_entries=400_000, stacks="python")
    model = build_model(cfg, device="cuda", dtype="bfloat16" if precision == "bf16" else "float32", seed=0).model
    model.train()
    ids = torch.randint(0, cfg.num_tokens, (batch, seq), device="cuda")
    targets = torch.randint(0, cfg.num_tokens, (batch * seq,), device="cuda")
    opt = make_optimizer("adamw", model.parameters())
    _marker()
    train_loop(model, opt, ids, targets, setup, steps=1)
    torch.cuda.synchronize()
    _marker()
    torch.cuda.reset_peak_memory_stats()
    train_loop(model, opt, ids, targets, setup, steps=1)
    torch.cuda.synchronize()
    _marker()
    row = {"config": name, "precision": precision, "batch": batch, "seq_len_tokens": seq,
           "peak_allocated_bytes": torch.cuda.max_memory_allocated(),
           "peak_reserved_bytes": torch.cuda.max_memory_reserved()}
    snap = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    events = []
    for trace in snap["device_traces"]:
        for ev in trace:
            if ev["action"] == "alloc" and _is_marker(ev):
                events.append(["m", 0, 0])
            elif ev["action"] in CODES:
                events.append([CODES[ev["action"]], int(ev["addr"]), int(ev["size"])])
    row["events"] = events
    del model, opt, ids, targets
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.zeros(1, device="cuda")
    out = {"about": "Full allocator traces of the points of cuda-memory-h200.json, from model build through a "
                    "warm-up step and the measured step: events [action, addr, size], action a=alloc, "
                    "f=free_completed, s=segment_alloc, m=marker (after build, after warm-up, after the step).",
           "torch": torch.__version__, "device_name": torch.cuda.get_device_name(), "points": []}
    for name in ("seed", "seed-no-alibi"):
        for precision in ("fp32", "bf16", "amp_bf16"):
            for batch in (1, 4):
                for seq in (512, 2048, 8192):
                    row = trace_point(name, precision, batch, seq)
                    out["points"].append(row)
                    print(name, precision, batch, seq, row["peak_allocated_bytes"], row["peak_reserved_bytes"],
                          flush=True)
    with gzip.open(args.out, "wt", compresslevel=9) as fh:
        json.dump(out, fh, separators=(",", ":"))


if __name__ == "__main__":
    main()
