"""CUDA memory of a training step as the process sees it, measured in a tight loop beside xtlens's prediction.

For each point (configuration, precision, batch, tokens) one steady-state training step of the loop xtlens
predicts (``profiling.measure.setups._loop``: ``loss = f(model(x))``, AdamW, ``zero_grad(set_to_none=True)``)
runs on real CUDA tensors, without MemTracker: the row holds ``torch.cuda.max_memory_allocated`` and
``max_memory_reserved`` over that step (the peak window opened after one warm-up step), the allocator's
segment statistics, and the prediction of ``core.cost_model`` (ordered peak, foreach optimizer). The process-level
terms are measured once: the CUDA context (``cudaMemGetInfo`` used minus reserved after initialisation), the
cuBLAS workspace (the allocated bytes a first matrix product leaves behind), and, for two points, the allocator's
trace (``torch.cuda.memory._record_memory_history``: every alloc/free/segment event with its size).

``--bisect``: under a cap (``torch.cuda.set_per_process_memory_fraction``) the largest batch and the longest
sequence (multiples of ``--seq-step``) for which two training steps run without an out-of-memory error.

    python benchmarks/cuda_memory.py --out DIR [--quick] [--bisect]

Writes ``DIR/cuda_memory.json`` (everything) as it goes. CUDA only.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import time
from pathlib import Path

import torch
from xtlens.core.config import Workload
from xtlens.core.cost_model import training_memory
from xtlens.core.presets import PRESETS
from xtlens.core.setup import TrainingSetup

STAT_KEYS = ("allocated_bytes.all.peak", "reserved_bytes.all.peak", "segment.all.peak",
             "segment.large_pool.peak", "segment.small_pool.peak", "reserved_bytes.large_pool.peak",
             "reserved_bytes.small_pool.peak", "allocated_bytes.large_pool.peak", "allocated_bytes.small_pool.peak",
             "inactive_split_bytes.all.peak", "num_alloc_retries", "num_ooms", "allocation.all.peak")


def _clean() -> None:
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


def process_terms() -> dict:
    """CUDA context and cuBLAS workspace of this process (measured before anything else is allocated)."""
    torch.cuda.init()
    x = torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    reserved0 = torch.cuda.memory_reserved()
    context = total - free - reserved0
    out = {"device_name": torch.cuda.get_device_name(), "total_bytes": total, "context_bytes": context,
           "reserved_after_init_bytes": reserved0, "torch": torch.__version__, "cuda": torch.version.cuda}
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        a = torch.randn(256, 256, device="cuda", dtype=dtype)
        before = torch.cuda.memory_allocated()
        c = a @ a
        torch.cuda.synchronize()
        out[f"workspace_after_{str(dtype).split('.')[-1]}_bytes"] = torch.cuda.memory_allocated() - before - c.numel() * c.element_size()
        del a, c
    free2, _ = torch.cuda.mem_get_info()
    out["context_after_matmul_bytes"] = total - free2 - torch.cuda.memory_reserved()
    del x
    return out


def one_point(cfg, name: str, precision: str, batch: int, seq: int, *, trace: bool = False) -> dict:
    from xtlens.core.builder import build_model
    from xtlens.profiling.measure.setups import _loop, make_optimizer

    setup = TrainingSetup(precision=precision)
    dtype = {"fp32": "float32", "bf16": "bfloat16", "amp_bf16": "float32"}[precision]
    wl = Workload(batch=batch, seq_len=seq, dtype="bfloat16" if precision != "fp32" else "float32")
    row = {"config": name, "precision": precision, "batch": batch, "seq_len_tokens": seq}
    try:
        row["predicted_peak_bytes"] = training_memory(cfg, wl, setup, foreach=True).peak_bytes
    except Exception as exc:  # noqa: BLE001
        row["predicted_error"] = repr(exc)
    _clean()
    base_alloc = torch.cuda.memory_allocated()
    base_reserved = torch.cuda.memory_reserved()
    row["base_allocated_bytes"] = base_alloc
    row["base_reserved_bytes"] = base_reserved
    t0 = time.perf_counter()
    try:
        model = build_model(cfg, device="cuda", dtype=dtype, seed=0).model
        model.train()
        ids = torch.randint(0, cfg.num_tokens, (batch, seq), device="cuda")
        targets = torch.randint(0, cfg.num_tokens, (batch * seq,), device="cuda")
        opt = make_optimizer("adamw", model.parameters())
        _loop(model, opt, ids, targets, setup, steps=1)  # warm-up: creates the optimizer state
        torch.cuda.synchronize()
        row["after_warmup_allocated_bytes"] = torch.cuda.memory_allocated()
        row["after_warmup_reserved_bytes"] = torch.cuda.memory_reserved()
        torch.cuda.reset_peak_memory_stats()
        if trace:
            torch.cuda.memory._record_memory_history(max_entries=200000)
        _loop(model, opt, ids, targets, setup, steps=1)
        torch.cuda.synchronize()
        row["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
        row["peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
        stats = torch.cuda.memory_stats()
        row["stats"] = {k: stats.get(k) for k in STAT_KEYS}
        if trace:
            snap = torch.cuda.memory._snapshot()
            torch.cuda.memory._record_memory_history(enabled=None)
            events = []
            for dev_trace in snap.get("device_traces", []):
                for ev in dev_trace:
                    events.append((ev["action"], int(ev["addr"]), int(ev["size"])))
            row["trace"] = events
        row["status"] = "ok"
        del model, opt, ids, targets
    except torch.OutOfMemoryError as exc:
        row["status"] = "oom"
        row["error"] = str(exc).splitlines()[0][:300]
    except Exception as exc:  # noqa: BLE001
        row["status"] = "error"
        row["error"] = repr(exc)[:300]
    row["wall_s"] = round(time.perf_counter() - t0, 2)
    _clean()
    return row


def runs_ok(cfg, precision: str, batch: int, seq: int) -> bool:
    r = one_point(cfg, "bisect", precision, batch, seq)
    return r["status"] == "ok"


def bisect(cfg, precision: str, *, what: str, fixed: int, hi: int, step: int = 1) -> dict:
    """Largest value (multiple of ``step``) of ``what`` ('batch' or 'seq') whose training step runs."""
    tries = []

    def ok(v: int) -> bool:
        b, n = (v, fixed) if what == "batch" else (fixed, v)
        good = runs_ok(cfg, precision, b, n)
        tries.append((v, good))
        return good

    lo_u, hi_u = 1, hi // step
    if not ok(step):
        return {"max": 0, "tries": tries}
    while lo_u < hi_u:
        mid = (lo_u + hi_u + 1) // 2
        if ok(mid * step):
            lo_u = mid
        else:
            hi_u = mid - 1
    return {"max": lo_u * step, "tries": tries}


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
        total = torch.cuda.mem_get_info()[1]
        frac = args.cap_gib * 2**30 / total
        torch.cuda.set_per_process_memory_fraction(frac)
        cfg = PRESETS["seed"]
        for precision, what, fixed, hi, step in (("amp_bf16", "batch", 2048, 256, 1), ("amp_bf16", "seq", 4, 8192, args.seq_step),
                                                 ("fp32", "batch", 1024, 256, 1), ("bf16", "seq", 8, 8192, args.seq_step)):
            t0 = time.perf_counter()
            found = bisect(cfg, precision, what=what, fixed=fixed, hi=hi, step=step)
            found.update(config="seed", precision=precision, what=what, fixed=fixed, cap_bytes=int(frac * total),
                         cap_gib=args.cap_gib, wall_s=round(time.perf_counter() - t0, 1))
            result["bisect"].append(found)
            print("bisect", found, flush=True)
            save()
        with contextlib.suppress(Exception):
            torch.cuda.set_per_process_memory_fraction(1.0)
    save()


if __name__ == "__main__":
    main()
