"""Will it fit, measured: one CUDA training step in a tight loop (allocated and reserved peaks, allocator statistics),
the process-level terms (CUDA context, cuBLAS workspace), an emulated device of a given memory size and the
largest batch / longest sequence that runs on it, found by bisection.

The loop is ``profiling.measure.setups.train_loop`` (``loss = f(model(x))``, the setup's optimizer and precision,
``torch.utils.checkpoint`` for recomputation, ``zero_grad(set_to_none=True)``), run on real CUDA tensors without
MemTracker: a warm-up step that creates the optimizer state, then one measured step, i.e. two training steps. A device of
``X`` bytes is emulated with ``torch.cuda.set_per_process_memory_fraction((X - context) / total)``: the caching
allocator refuses to reserve beyond the cap (after freeing its cached blocks and retrying), the context lives outside
it. Used by ``benchmarks/cuda_memory.py`` and ``tests/profiling/test_fit_gpu.py``. CUDA only.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator

import torch
from xtlens.core.config import ModelConfig, Workload
from xtlens.core.setup import TrainingSetup
from xtlens.core.training import training_memory
from xtlens.profiling.errors import ProfileError

__all__ = ["STAT_KEYS", "clean", "process_terms", "train_step_point", "runs_ok", "largest_running", "bisect",
           "emulated_device"]

STAT_KEYS = ("allocated_bytes.all.peak", "reserved_bytes.all.peak", "segment.all.peak",
             "segment.large_pool.peak", "segment.small_pool.peak", "reserved_bytes.large_pool.peak",
             "reserved_bytes.small_pool.peak", "allocated_bytes.large_pool.peak", "allocated_bytes.small_pool.peak",
             "inactive_split_bytes.all.peak", "num_alloc_retries", "num_ooms", "allocation.all.peak")

_MODEL_DTYPE = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "amp_bf16": "float32", "amp_fp16": "float32"}


def _need_cuda() -> None:
    if not torch.cuda.is_available():
        raise ProfileError("the fit measurement runs on a CUDA GPU; none is available here (torch.cuda.is_available() "
                           "is False).")


def clean() -> None:
    """Collect garbage, wait for the device and hand cached blocks back to the driver."""
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()


def process_terms() -> dict:
    """CUDA context and cuBLAS workspace of this process: ``context_bytes`` (``cudaMemGetInfo``'s used memory minus
    the allocator's reserved bytes after initialisation), ``context_after_matmul_bytes`` (the same after the first
    matrix products, which load cuBLAS), ``workspace_after_<dtype>_bytes`` (allocated bytes a first 256 x 256 product
    of that dtype leaves behind beyond its output), the device name and total memory, torch and CUDA versions."""
    _need_cuda()
    torch.cuda.init()
    x = torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    reserved0 = torch.cuda.memory_reserved()
    out = {"device_name": torch.cuda.get_device_name(), "total_bytes": total, "context_bytes": total - free - reserved0,
           "reserved_after_init_bytes": reserved0, "torch": torch.__version__, "cuda": torch.version.cuda}
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        a = torch.randn(256, 256, device="cuda", dtype=dtype)
        before = torch.cuda.memory_allocated()
        c = a @ a
        torch.cuda.synchronize()
        out[f"workspace_after_{str(dtype).split('.')[-1]}_bytes"] = (torch.cuda.memory_allocated() - before
                                                                     - c.numel() * c.element_size())
        del a, c
    free2, _ = torch.cuda.mem_get_info()
    out["context_after_matmul_bytes"] = total - free2 - torch.cuda.memory_reserved()
    del x
    return out


def train_step_point(cfg: ModelConfig, setup: TrainingSetup, batch: int, seq: int, *, name: str = "",
                     trace: bool = False) -> dict:
    """One point: build the model on CUDA (the setup's parameter dtype, recomputation wrappers), one warm-up training
    step (creates the optimizer state), then one measured step. The row: ``status`` (``ok`` / ``oom`` / ``error``),
    ``peak_allocated_bytes`` / ``peak_reserved_bytes`` of the measured step, the allocated / reserved bytes before the
    point and after the warm-up, allocator ``stats`` (``STAT_KEYS``; counters such as ``num_alloc_retries`` count the
    measured step alone), ``predicted_peak_bytes`` (the ordered peak,
    foreach optimizer), ``wall_s``; with ``trace`` the allocator's events ``(action, addr, size)``."""
    from xtlens.core.builder import build_model
    from xtlens.profiling.measure.setups import apply_recompute, make_optimizer, train_loop

    _need_cuda()
    dtype = _MODEL_DTYPE[setup.precision] if setup.precision in _MODEL_DTYPE else "float32"
    wl = Workload(batch=batch, seq_len=seq, dtype="float32" if setup.precision == "fp32" else "bfloat16")
    row = {"config": name, "precision": setup.precision, "recompute": setup.recompute, "optimizer": setup.optimizer,
           "grad_accum": setup.grad_accum, "batch": batch, "seq_len_tokens": seq}
    try:
        row["predicted_peak_bytes"] = training_memory(cfg, wl, setup, foreach=True).peak_bytes
    except Exception as exc:  # noqa: BLE001 - the row says why there is no prediction
        row["predicted_error"] = repr(exc)
    clean()
    row["base_allocated_bytes"] = torch.cuda.memory_allocated()
    row["base_reserved_bytes"] = torch.cuda.memory_reserved()
    t0 = time.perf_counter()
    model = opt = ids = targets = None
    try:
        model = build_model(cfg, device="cuda", dtype=dtype, seed=0).model
        model.train()
        apply_recompute(model, setup.recompute)
        ids = torch.randint(0, cfg.num_tokens, (batch, seq), device="cuda")
        targets = torch.randint(0, cfg.num_tokens, (batch * seq,), device="cuda")
        opt = make_optimizer(setup.optimizer, model.parameters())
        train_loop(model, opt, ids, targets, setup, steps=1)  # warm-up: creates the optimizer state
        torch.cuda.synchronize()
        row["after_warmup_allocated_bytes"] = torch.cuda.memory_allocated()
        row["after_warmup_reserved_bytes"] = torch.cuda.memory_reserved()
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.reset_accumulated_memory_stats()  # retries and out-of-memory counts of the measured step alone
        if trace:
            torch.cuda.memory._record_memory_history(max_entries=200000)
        train_loop(model, opt, ids, targets, setup, steps=1)
        torch.cuda.synchronize()
        row["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
        row["peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
        stats = torch.cuda.memory_stats()
        row["stats"] = {k: stats.get(k) for k in STAT_KEYS}
        if trace:
            snap = torch.cuda.memory._snapshot()
            torch.cuda.memory._record_memory_history(enabled=None)
            row["trace"] = [(ev["action"], int(ev["addr"]), int(ev["size"]))
                            for dev_trace in snap.get("device_traces", []) for ev in dev_trace]
        row["status"] = "ok"
    except torch.OutOfMemoryError as exc:
        row["status"] = "oom"
        row["error"] = str(exc).splitlines()[0][:300]
    except Exception as exc:  # noqa: BLE001 - every failure becomes a row
        text = str(exc)
        # an allocation that failed outside the caching allocator's own check (cuBLAS, a kernel's workspace) is
        # out of memory too
        row["status"] = "oom" if ("out of memory" in text.lower() or "ALLOC_FAILED" in text) else "error"
        row["error"] = repr(exc)[:300]
    finally:
        del model, opt, ids, targets
    row["wall_s"] = round(time.perf_counter() - t0, 2)
    clean()
    return row


def runs_ok(cfg: ModelConfig, setup: TrainingSetup, batch: int, seq: int) -> bool:
    """Whether two training steps of ``setup`` at ``batch`` x ``seq`` run (an error other than out-of-memory
    raises ``ProfileError``: it is not a memory answer)."""
    row = train_step_point(cfg, setup, batch, seq, name="bisect")
    if row["status"] == "error":
        raise ProfileError(f"the training step at batch {batch} x {seq} tokens failed for a reason other than memory: "
                           f"{row['error']}")
    return row["status"] == "ok"


def largest_running(ok: Callable[[int], bool], *, hi: int, step: int = 1, start: int | None = None
                    ) -> dict:
    """Largest multiple of ``step`` in ``step..hi`` for which ``ok`` holds (0: not even ``step``), assuming ``ok``
    holds below some value and fails above it. Without ``start``: plain bisection of ``1..hi // step`` units. With
    ``start`` (e.g. the predicted maximum): galloping search from it (``start``, then strides of 1, 1, 2, 4, ...
    units until the answer changes, then bisection inside the last stride): two or three runs when the prediction
    is within one step. Returns ``{"max": value, "tries": [(value, ok), ...]}``."""
    tries: list[tuple[int, bool]] = []
    top = hi // step

    def test(u: int) -> bool:
        good = ok(u * step)
        tries.append((u * step, good))
        return good

    if start is None:
        if not test(1):
            return {"max": 0, "tries": tries}
        lo, up = 1, top
    else:
        s = min(max(1, start // step), top)
        strides = [1, 1, *(2**i for i in range(1, 64))]  # one unit twice (a close prediction), then doubling
        if test(s):  # gallop up: lo holds, find a failing value
            lo = s
            for stride in strides:
                probe = min(lo + stride, top)
                if probe == lo:
                    return {"max": lo * step, "tries": tries}
                if not test(probe):
                    up = probe - 1
                    break
                lo = probe
        else:  # gallop down: s fails, find a holding value
            up = s - 1
            for stride in strides:
                probe = up - stride + 1
                if probe < 1:
                    if up < 1 or not test(1):
                        return {"max": 0, "tries": tries}
                    lo = 1
                    break
                if test(probe):
                    lo = probe
                    break
                up = probe - 1
    while lo < up:
        mid = (lo + up + 1) // 2
        if test(mid):
            lo = mid
        else:
            up = mid - 1
    return {"max": lo * step, "tries": tries}


def bisect(cfg: ModelConfig, setup: TrainingSetup | str, *, what: str, fixed: int, hi: int, step: int = 1,
           start: int | None = None) -> dict:
    """Largest value (a multiple of ``step``) of ``what`` (``batch``, at ``fixed`` tokens, or ``seq``, at batch
    ``fixed``) whose two training steps run (``largest_running``). ``setup``: a ``TrainingSetup`` or a precision."""
    if what not in ("batch", "seq"):
        raise ProfileError(f"what = {what!r}: 'batch' or 'seq'")
    s = TrainingSetup(precision=setup) if isinstance(setup, str) else setup

    def ok(v: int) -> bool:
        b, n = (v, fixed) if what == "batch" else (fixed, v)
        return runs_ok(cfg, s, b, n)

    return largest_running(ok, hi=hi, step=step, start=start)


@contextlib.contextmanager
def emulated_device(device_bytes: int, context_bytes: int) -> Iterator[int]:
    """Within the block, the process may reserve at most ``device_bytes - context_bytes`` through the caching
    allocator (``torch.cuda.set_per_process_memory_fraction``), as on a device of ``device_bytes`` whose CUDA context
    takes ``context_bytes``; yields that cap in bytes. The fraction is reset to 1 afterwards."""
    _need_cuda()
    total = torch.cuda.mem_get_info()[1]
    cap = device_bytes - context_bytes
    if not 0 < cap <= total:
        raise ProfileError(f"an emulated device of {device_bytes:,} bytes with a {context_bytes:,}-byte context needs "
                           f"a cap between 0 and the GPU's {total:,} bytes")
    clean()
    torch.cuda.set_per_process_memory_fraction(cap / total)
    try:
        yield int(cap / total * total)
    finally:
        clean()
        torch.cuda.set_per_process_memory_fraction(1.0)
