"""Will it fit: what a job needs of a device's memory, the largest batch and sequence length that fit, and a one-line
answer with its margin and, when it does not fit, the first remedy that makes it fit with its compute cost.

Standard library only. What must fit a device (``training_need_bytes``):

* a CUDA GPU (``FitDevice.kind == "cuda"``): the whole process, the CUDA context + what the caching allocator must be
  allowed to reserve. ``core.cuda_memory.process_memory`` gives the allocated peak (the ordered peak of
  ``core.training`` plus the cuBLAS workspaces) and the reserved peak when memory is plentiful (``process_bytes`` =
  context + reserved); at the device's end torch's allocator releases its cached free segments and retries before
  an out-of-memory error, so a step runs in less: the need is ``core.cuda_memory.min_device_bytes``, the context +
  the cuBLAS workspaces + the smallest allocator cap under which the step's replayed allocation sequence
  (``core.cuda_memory.replay_training`` with ``limit_bytes``) runs, between the two peaks (``training_need_bytes``). Checked against the largest batch and
  sequence that ran on an H200 under a 16 GiB cap (docs/gpu/cuda-memory-h200.json ``bisect``: all 4 within one step,
  1 equal; ``tests/core/test_fits.py``) and by bisection on an emulated device (``tests/profiling/test_fit_gpu.py``);
* the CPU (``kind == "cpu"``): the ordered peak of ``core.training.training_memory`` (single-tensor optimizer, the
  CPU default; no context, no allocator rounding: glibc's allocator returns large blocks with ``mmap``).

Serving needs ``core.serving.serving_memory(...).total_bytes``, plus the CUDA context on a GPU.

``fit_answer`` says ``fits with 3.1 GiB to spare`` or ``needs 2.4 GiB more: try block recomputation (fits, +31%
compute)``: the remedies of ``core.setup`` are tried in a fixed order (``REMEDY_ORDER``), each re-predicted, and the
first that fits is named with its compute cost, the change of the training FLOPs per optimizer step at the same
tokens (``core.flops.training_flops_for``). When no single remedy fits, they are combined in the same order.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

from xtlens.core.config import ConfigError, ModelConfig, Workload
from xtlens.core.flops import training_flops_for
from xtlens.core.serving import serving_memory
from xtlens.core.setup import GPU_PRESETS_GIB, ServingSetup, TrainingSetup
from xtlens.core.training import training_memory

__all__ = [
    "DEVICE_KINDS",
    "REMEDY_ORDER",
    "FitDevice",
    "Remedy",
    "FitAnswer",
    "device_from_text",
    "largest_fitting",
    "training_need_bytes",
    "cuda_need_parts",
    "serving_need_bytes",
    "what_fits",
    "fit_answer",
    "margin_text",
]

DEVICE_KINDS = ("cuda", "cpu")
GIB = 2**30
MIB = 2**20
#: Largest micro-batch ``what_fits`` searches.
MAX_BATCH = 4096
#: Most micro-batches a ``TrainingSetup`` accepts (``grad_accum``): a smaller micro-batch stays within it.
MAX_GRAD_ACCUM = 65_536

#: The remedies ``fit_answer`` tries, in this order (each one alone, then combined in this order): recomputation
#: first (same numerics, costs compute), then 16-bit precision (costs nothing in FLOPs, changes numerics), then a
#: smaller micro-batch with gradient accumulation (same tokens per optimizer step), then the 8-bit optimizer
#: (bitsandbytes, CUDA only).
REMEDY_ORDER = ("selective recomputation", "block recomputation", "autocast bf16 (amp_bf16)", "pure bf16",
                "smaller micro-batch + gradient accumulation", "8-bit AdamW")


@dataclass(frozen=True, kw_only=True)
class FitDevice:
    """A device a job must fit: ``memory_bytes`` of device memory, ``kind`` ``cuda`` (need: CUDA context + the
    allocator's reserved peak) or ``cpu`` (need: the ordered peak), ``gpu`` the GPU's name (a
    ``core.hardware.GPU_MEMORY_GIB`` key or a device name such as ``NVIDIA H200``: sets the CUDA context size;
    None: a typical context), ``label`` how the answer names it."""

    memory_bytes: int
    kind: str = "cuda"
    gpu: str | None = None
    label: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.memory_bytes, bool) or not isinstance(self.memory_bytes, int) or not (
                0 < self.memory_bytes <= 1_000_000 * GIB):
            raise ConfigError("device memory", self.memory_bytes, "a positive number of bytes up to 1,000,000 GiB")
        if self.kind not in DEVICE_KINDS:
            raise ConfigError("device kind", self.kind, "one of " + ", ".join(DEVICE_KINDS))


def device_from_text(text: str, *, kind: str = "cuda") -> FitDevice:
    """``--device-memory-gib``: a GPU preset (``core.setup.GPU_PRESETS_GIB``: ``H100 80GB``, case and spaces
    ignored; its usable memory and its CUDA context) or a positive number of GiB (2**30 bytes) of a device of
    ``kind``. Raises ``ConfigError`` naming ``--device-memory-gib``."""
    key = str(text).lower().replace(" ", "")
    for name, gib in GPU_PRESETS_GIB.items():
        if name.lower().replace(" ", "") == key:
            return FitDevice(memory_bytes=int(gib * GIB), kind="cuda", gpu=name, label=f"{name} ({gib} GiB usable)")
    try:
        gib = float(text)
    except (TypeError, ValueError):
        gib = -1.0
    if not 0 < gib <= 1_000_000:
        raise ConfigError("--device-memory-gib", text, "a positive number of GiB (2**30 bytes, at most 1,000,000) or "
                          "one of " + ", ".join(GPU_PRESETS_GIB))
    return FitDevice(memory_bytes=int(gib * GIB), kind=kind,
                     label=f"{gib:g} GiB of {'GPU' if kind == 'cuda' else 'CPU'} memory")


def largest_fitting(peak_of, budget_bytes: int, *, hi: int) -> int:
    """Largest integer ``x`` in ``1..hi`` with ``peak_of(x) <= budget_bytes`` (0 if none), by bisection; the peaks
    grow monotonically with batch and sequence length."""
    if peak_of(1) > budget_bytes:
        return 0
    lo = 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if peak_of(mid) <= budget_bytes:
            lo = mid
        else:
            hi = mid - 1
    return lo


@functools.lru_cache(maxsize=4096)
def _process(cfg: ModelConfig, wl: Workload, setup: TrainingSetup, gpu: str | None):
    from xtlens.core.cuda_memory import process_memory

    return process_memory(cfg, wl, setup, phase="train_step", gpu=gpu)


@functools.lru_cache(maxsize=65536)
def _runs_within(cfg: ModelConfig, wl: Workload, setup: TrainingSetup, gpu: str | None, device_bytes: int) -> bool:
    """Whether the replayed training step (``core.cuda_memory.replay_training``: the model built, a warm-up step, a
    step) runs on a device of ``device_bytes``: the allocator capped at the device less the CUDA context and the cuBLAS
    workspaces (``limit_bytes``; past it the model allocator releases its free cached segments, then fails)."""
    from xtlens.core.allocator import AllocatorOutOfMemory
    from xtlens.core.cuda_memory import replay_training

    pm = _process(cfg, wl, setup, gpu)
    limit = device_bytes - pm.context_bytes - pm.cublas_workspace_bytes
    if limit <= 0:
        return False
    try:
        replay_training(cfg, wl, setup, limit_bytes=limit)
    except AllocatorOutOfMemory:
        return False
    return True


@functools.lru_cache(maxsize=4096)
def _cuda_need(cfg: ModelConfig, wl: Workload, setup: TrainingSetup, gpu: str | None,
               device_bytes: int | None = None) -> int:
    """Bytes of device memory a CUDA training step needs: the CUDA context + the cuBLAS workspaces + the smallest
    allocator cap under which the replayed step runs (``core.cuda_memory.min_device_bytes``: bisection in 2 MiB steps
    between the replayed tensors' own peak, which does not run, and the unconstrained process, which does). The
    replay is not monotone in the cap everywhere (releasing cached segments earlier can pack the step tighter: the seed
    without ALiBi, amp_bf16 with block recomputation at batch 8 x 2048 runs under a 6 GiB device and not under some
    larger ones), so with ``device_bytes`` the search starts from that device's own answer: the need is at most the
    device exactly when the step runs on it (``_cuda_fits``). ``process_bytes`` for a setup the replay does not lay
    out (tensor or data parallelism, selective recomputation, Adafactor, 8-bit Adam), and for a device below the
    step's own tensors (the shortfall then overstates by what the allocator would release: a few percent).
    Resolution: 2 MiB, or 1/8192 of the process when coarser (``search_resolution_bytes``)."""
    from xtlens.core.cuda_memory import min_device_bytes, replayable, search_resolution_bytes

    pm = _process(cfg, wl, setup, gpu)
    if not replayable(setup):
        return pm.process_bytes
    if device_bytes is None:
        return min_device_bytes(cfg, wl, setup, gpu=gpu)
    lo = pm.context_bytes + pm.replayed_allocated_peak_bytes - 1  # below the tensors' own peak: does not run
    hi = pm.process_bytes  # never releases anything: runs
    if device_bytes <= lo:
        # the device cannot hold even the step's tensors: what the allocator would release under a cap changes the
        # shortfall by a few percent at most, not the answer; the need is the unconstrained process (no replays)
        return hi
    if lo < device_bytes < hi:
        if _runs_within(cfg, wl, setup, gpu, device_bytes):
            hi = device_bytes
        else:
            lo = device_bytes
    step = search_resolution_bytes(hi, 2 * MIB)
    while hi - lo > step:
        mid = (lo + hi) // 2
        if _runs_within(cfg, wl, setup, gpu, mid):
            hi = mid
        else:
            lo = mid
    return hi


def cuda_need_parts(cfg: ModelConfig, wl: Workload, setup: TrainingSetup, gpu: str | None = None,
                    device_bytes: int | None = None) -> dict[str, object]:
    """The CUDA need in parts, for display: ``context_bytes``, ``limit_bytes`` (what the allocator must be allowed,
    cuBLAS workspaces included), ``allocated_peak_bytes``, ``reserved_peak_bytes`` (without a limit), ``need_bytes``
    (context + limit; searched from ``device_bytes``' answer when given, as ``training_need_bytes``) and ``method``:
    ``replayed`` (the step's allocation sequence replayed under the limit) or ``scaled`` (a setup the replay does not
    lay out: its reserved peak, scaled by ``core.cuda_memory.process_memory``)."""
    from xtlens.core.cuda_memory import replayable

    pm = _process(cfg, wl, setup, gpu)
    need = _cuda_need(cfg, wl, setup, gpu, device_bytes)
    return {"context_bytes": pm.context_bytes, "limit_bytes": need - pm.context_bytes,
            "allocated_peak_bytes": pm.allocated_peak_bytes, "reserved_peak_bytes": pm.reserved_peak_bytes,
            "need_bytes": need, "method": "replayed" if replayable(setup) else "scaled"}


def _cuda_fits(cfg: ModelConfig, wl: Workload, setup: TrainingSetup, device: FitDevice) -> bool:
    """Whether a CUDA training step fits ``device`` (exactly when ``_cuda_need(..., device)`` <= its memory) with one
    limited replay at most: the quick answers first (the whole unconstrained process fits; the replayed
    tensors' own peak does not, the lower end of ``min_device_bytes``' search)."""
    from xtlens.core.cuda_memory import replayable

    pm = _process(cfg, wl, setup, device.gpu)
    if pm.process_bytes <= device.memory_bytes:
        return True
    if not replayable(setup) or pm.context_bytes + pm.replayed_allocated_peak_bytes > device.memory_bytes:
        return False  # not replayable: its need is process_bytes, already over
    return _runs_within(cfg, wl, setup, device.gpu, device.memory_bytes)


def training_need_bytes(cfg: ModelConfig, wl: Workload, setup: TrainingSetup, device: FitDevice | None = None) -> int:
    """Bytes a training step under ``setup`` needs of ``device``. On a GPU: the CUDA context + what the caching
    allocator must reserve (``_cuda_need``): at most ``core.cuda_memory.process_memory(...).process_bytes`` (the
    reserved peak when memory is plentiful), less when the allocator, at the device's end, releases its cached free
    segments and retries, as torch's does before an out-of-memory error. On the CPU the ordered peak
    (``training_memory``, single-tensor optimizer). ``device`` None: the CPU rule."""
    if device is None or device.kind == "cpu":
        return training_memory(cfg, wl, setup).peak_bytes
    return _cuda_need(cfg, wl, setup, device.gpu, device.memory_bytes)


def _fits(cfg: ModelConfig, wl: Workload, setup: TrainingSetup, device: FitDevice | None, budget: int) -> bool:
    if device is None or device.kind == "cpu":
        return training_memory(cfg, wl, setup).peak_bytes <= budget
    return _cuda_fits(cfg, wl, setup, device)


def serving_need_bytes(cfg: ModelConfig, wl: Workload, serving: ServingSetup, device: FitDevice | None = None) -> int:
    """Bytes serving needs of ``device``: ``serving_memory(...).total_bytes`` (weights, buffers, KV cache, the
    prefill's activations), plus the CUDA context on a GPU (``process_memory(...).context_bytes``)."""
    total = serving_memory(cfg, wl, serving).total_bytes
    if device is None or device.kind == "cpu":
        return total
    from xtlens.core.cuda_memory import context_bytes_for

    return total + context_bytes_for(device.gpu)[0]


def what_fits(cfg: ModelConfig, wl: Workload, device: FitDevice | int, *, training: TrainingSetup | None = None,
              serving: ServingSetup | None = None, max_batch: int = MAX_BATCH, seq_step: int = 1) -> dict[str, int]:
    """For ``device`` (a ``FitDevice``; a bare int is a memory budget in bytes for the ordered peak, the CPU rule):
    the largest micro-batch (at ``wl.seq_len``) and the longest sequence (a multiple of ``seq_step``, at ``wl.batch``,
    up to the model's ``max_seq_len``) whose training step fits (need ``training_need_bytes``; on a GPU decided by one
    limited replay per candidate) and whose serving need (``serving_need_bytes``) fits. Keys ``fits_train_batch``, ``fits_train_seq_len_tokens``, ``fits_serve_batch``,
    ``fits_serve_seq_len_tokens``; 0 when not even the smallest fits."""
    if isinstance(device, int) and not isinstance(device, bool):
        dev, budget = None, device
    else:
        dev, budget = device, device.memory_bytes
    training = training or TrainingSetup()
    serving = serving or ServingSetup()
    step = max(1, int(seq_step))
    top = cfg.max_seq_len // step

    def train(b: int, n: int) -> int:  # 0 fits, 1 does not (largest_fitting against a budget of 0)
        return 0 if _fits(cfg, Workload(batch=b, seq_len=n, dtype=wl.dtype), training, dev, budget) else 1

    def serve(b: int, n: int) -> int:
        return serving_need_bytes(cfg, wl, dataclasses.replace(serving, concurrent=b, context_len=n), dev)

    return {
        "fits_train_batch": largest_fitting(lambda b: train(b, wl.seq_len), 0, hi=max_batch),
        "fits_train_seq_len_tokens": step * largest_fitting(lambda u: train(wl.batch, u * step), 0, hi=top),
        "fits_serve_batch": largest_fitting(lambda b: serve(b, serving.context_len or wl.seq_len), budget,
                                            hi=MAX_BATCH),
        "fits_serve_seq_len_tokens": step * largest_fitting(lambda u: serve(serving.concurrent or wl.batch, u * step),
                                                            budget, hi=top),
    }


@dataclass(frozen=True, kw_only=True)
class Remedy:
    """One remedy tried: ``name`` (``REMEDY_ORDER``; several joined by `` + `` when combined), the setup and
    workload it runs (a smaller micro-batch changes ``wl.batch`` and ``setup.grad_accum``), its need in bytes,
    whether that fits, and ``compute_change`` the relative change of the training FLOPs per optimizer step at the
    same tokens (``0.31``: +31%)."""

    name: str
    setup: TrainingSetup
    wl: Workload
    need_bytes: int
    fits: bool
    compute_change: float

    def text(self) -> str:
        """``block recomputation (fits, +31% compute)``."""
        return f"{self.name} ({'fits' if self.fits else 'does not fit'}, {_pct(self.compute_change)} compute)"


@dataclass(frozen=True, kw_only=True)
class FitAnswer:
    """Whether a training step fits a device: ``need_bytes`` against ``device_bytes``, ``margin_bytes`` = device -
    need (negative: that much is missing), the remedies tried when it does not fit (``tried``, in order: every single
    remedy, then, when none fits alone, the combinations up to the first that fits) and ``remedy`` the first that
    fits (None: none), ``text`` the one-line answer."""

    fits: bool
    need_bytes: int
    device_bytes: int
    margin_bytes: int
    kind: str
    remedy: Remedy | None
    tried: tuple[Remedy, ...]
    text: str


def _amount(nbytes: int) -> str:
    """``3.1 GiB`` (one decimal) from 0.1 GiB up, ``42 MiB`` below."""
    n = abs(nbytes)
    return f"{n / GIB:,.1f} GiB" if n >= GIB / 10 else f"{n / MIB:,.0f} MiB"


def _pct(change: float) -> str:
    return f"{100 * change:+.0f}%"


def margin_text(margin_bytes: int) -> str:
    """``fits with 3.1 GiB to spare`` / ``needs 2.4 GiB more``."""
    return f"fits with {_amount(margin_bytes)} to spare" if margin_bytes >= 0 else f"needs {_amount(margin_bytes)} more"


def _candidates(cfg: ModelConfig, wl: Workload, setup: TrainingSetup, kind: str
                ) -> list[tuple[str, TrainingSetup, Workload]]:
    """The remedies that change this setup, in ``REMEDY_ORDER``: ``(name, setup, workload)``."""
    out: list[tuple[str, TrainingSetup, Workload]] = []
    if setup.recompute == "none" and cfg.attn_flash:
        out.append((REMEDY_ORDER[0], dataclasses.replace(setup, recompute="selective"), wl))
    if setup.recompute != "block":
        out.append((REMEDY_ORDER[1], dataclasses.replace(setup, recompute="block"), wl))
    full = setup.precision == "fp32" or (setup.precision == "auto" and wl.dtype_bytes == 4)
    if full:
        out.append((REMEDY_ORDER[2], dataclasses.replace(setup, precision="amp_bf16"), wl))
    if full or setup.mixed:
        out.append((REMEDY_ORDER[3], dataclasses.replace(setup, precision="bf16"), wl))
    if wl.batch > 1:
        # the largest micro-batch that divides the batch (same tokens per optimizer step), down to 1: the first that
        # fits is chosen in ``fit_answer``; here the divisors below the batch, largest first
        for m in sorted((m for m in range(1, wl.batch) if wl.batch % m == 0), reverse=True):
            k = wl.batch // m
            if setup.grad_accum * k > MAX_GRAD_ACCUM:
                continue
            out.append((f"micro-batch {m} x {setup.grad_accum * k} accumulation steps",
                        dataclasses.replace(setup, grad_accum=setup.grad_accum * k),
                        Workload(batch=m, seq_len=wl.seq_len, dtype=wl.dtype)))
    if setup.optimizer == "adamw" and kind == "cuda":
        out.append((REMEDY_ORDER[5], dataclasses.replace(setup, optimizer="adamw8bit"), wl))
    return out


def _combined(cfg: ModelConfig, wl: Workload, setup: TrainingSetup, kind: str
              ) -> list[tuple[str, TrainingSetup, Workload]]:
    """The remedies added one after another in ``REMEDY_ORDER`` (block recomputation rather than selective, pure bf16
    rather than autocast, micro-batch 1): each prefix of the list, from two remedies on."""
    steps: list[tuple[str, object]] = [("block recomputation", lambda s, w: (dataclasses.replace(s, recompute="block"), w))]
    if setup.precision == "fp32" or setup.mixed or (setup.precision == "auto" and wl.dtype_bytes == 4):
        steps.append(("pure bf16", lambda s, w: (dataclasses.replace(s, precision="bf16"), w)))
    if 1 < wl.batch and setup.grad_accum * wl.batch <= MAX_GRAD_ACCUM:
        steps.append((f"micro-batch 1 x {setup.grad_accum * wl.batch} accumulation steps",
                      lambda s, w: (dataclasses.replace(s, grad_accum=s.grad_accum * w.batch),
                                    Workload(batch=1, seq_len=w.seq_len, dtype=w.dtype))))
    if setup.optimizer == "adamw" and kind == "cuda":
        steps.append(("8-bit AdamW", lambda s, w: (dataclasses.replace(s, optimizer="adamw8bit"), w)))
    if setup.recompute == "block":
        steps = steps[1:]
    out = []
    s, w, names = setup, wl, []
    for name, apply in steps:
        s, w = apply(s, w)  # type: ignore[operator]
        names.append(name)
        if len(names) >= 2:
            out.append((" + ".join(names), s, w))
    return out


def _step_flops(cfg: ModelConfig, wl: Workload, setup: TrainingSetup) -> int:
    return training_flops_for(cfg, wl, setup)["optimizer_step_flops"]


def fit_answer(cfg: ModelConfig, wl: Workload, setup: TrainingSetup | None, device: FitDevice | int) -> FitAnswer:
    """Does a training step of ``cfg`` at ``wl`` under ``setup`` fit ``device`` (a ``FitDevice``; a bare int: that
    many bytes of a CUDA device of typical context)? The one-line ``text``: ``fits with 3.1 GiB to spare``, or
    ``needs 2.4 GiB more: try block recomputation (fits, +31% compute)`` naming the first remedy that fits
    (``REMEDY_ORDER``, then combined), or ``needs 2.4 GiB more: no remedy tried fits (with all of them: 1.2 GiB
    more)``. Compute: training FLOPs per optimizer step at the same tokens, remedy against the setup as given."""
    setup = setup or TrainingSetup()
    if isinstance(device, int) and not isinstance(device, bool):
        device = FitDevice(memory_bytes=device)
    need = training_need_bytes(cfg, wl, setup, device)
    margin = device.memory_bytes - need
    if margin >= 0:
        return FitAnswer(fits=True, need_bytes=need, device_bytes=device.memory_bytes, margin_bytes=margin,
                         kind=device.kind, remedy=None, tried=(), text=margin_text(margin))
    base_flops = _step_flops(cfg, wl, setup)
    tried: list[Remedy] = []
    chosen = None
    for group in (_candidates, _combined):  # every single remedy (the page lists those that fit); combined: until one fits
        for name, s, w in group(cfg, wl, setup, device.kind):
            n = training_need_bytes(cfg, w, s, device)
            r = Remedy(name=name, setup=s, wl=w, need_bytes=n, fits=n <= device.memory_bytes,
                       compute_change=_step_flops(cfg, w, s) / base_flops - 1)
            tried.append(r)
            if r.fits and chosen is None:
                chosen = r
                if group is _combined:
                    break
        if chosen is not None:
            break
    head = margin_text(margin)
    if chosen is not None:
        text = f"{head}: try {chosen.text()}"
    elif tried:
        best = min(tried, key=lambda r: r.need_bytes)
        text = (f"{head}: no remedy tried fits (the closest, {best.name}, "
                f"{margin_text(device.memory_bytes - best.need_bytes)}); a device with more memory or sharding "
                "(ZeRO, tensor parallelism) is needed")
    else:
        text = f"{head}: a device with more memory or sharding (ZeRO, tensor parallelism) is needed"
    return FitAnswer(fits=False, need_bytes=need, device_bytes=device.memory_bytes, margin_bytes=margin,
                     kind=device.kind, remedy=chosen, tried=tuple(tried), text=text)
