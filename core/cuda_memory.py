"""What a CUDA training process holds on the device, beyond the tensors: the caching allocator's reserved memory,
the CUDA context, the cuBLAS workspaces, autocast's weight cache and the optimizer's temporaries
(``process_memory``).

Standard library only. ``allocated_peak_bytes`` is ``torch.cuda.max_memory_allocated`` over a steady-state
training step; ``reserved_peak_bytes`` is ``torch.cuda.max_memory_reserved`` (the segments the caching allocator
took from the driver, which only grow); ``process_bytes`` = context + reserved is what must fit the device
(``nvidia-smi`` shows it). How each is computed:

* The allocated peak is core.training's ordered peak (``training_memory(..., foreach=True)``: the weights,
  gradients, optimizer state, saved activations, autocast's cast weights and the foreach optimizer temporaries
  are already there) plus the cuBLAS / cuBLASLt workspaces (not tensors of the model, but allocated through the
  caching allocator, so ``memory_allocated`` counts them).
* The reserved peak replays the step's allocation sequence (``training_tape``: the large tensors of the forward,
  loss, backward and ``optimizer.step()``, in the order x-transformers and autograd make and free them) through a
  model of the caching allocator (``core.allocator.CachingAllocatorModel``): the model is built, one warm-up step
  creates the optimizer state, and the second step's peak is read, as ``benchmarks/cuda_memory.py`` measures it.
  What reserved adds over allocated is segment rounding (2 MiB / 20 MiB segments) and fragmentation: blocks freed
  by one step and split by the optimizer state or the gradients are too small for the next step's tensors.
* The CUDA context is measured (``cudaMemGetInfo`` used minus reserved), per GPU family where known.
* ``min_device_bytes``: the smallest device the step runs on. Under a cap the allocator releases its wholly free
  cached segments and retries before it fails, so a job needs less than the unconstrained reserved peak; the replay
  under a cap, bisected, predicts the H200's 16 GiB-cap bisection within one step (docs/cuda-memory.md).

Measured on an H200 (docs/gpu/cuda-memory-h200.json, 36 points: seed / seed-no-alibi, fp32 / bf16 / amp_bf16,
batch 1 and 4, 512-8192 tokens); tests/core/test_cuda_memory.py holds every point within 5 % for allocated and
reserved (and 24 more: block recomputation, seed-mha, plain-prenorm; reserved misses by 8-17 % on block
recomputation with ALiBi at 2048 tokens, stated there).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field

from xtlens.core.allocator import AllocatorOutOfMemory, CachingAllocatorModel, cuda_block_bytes
from xtlens.core.config import ConfigError, ModelConfig, Workload
from xtlens.core.memory import FP32_BYTES, INDEX_BYTES, alibi_tensors
from xtlens.core.setup import TrainingSetup, precision_bytes
from xtlens.core.tensors import param_tensors
from xtlens.core.training import TrainingMemory, training_memory

__all__ = ["ProcessMemory", "ProcessMemoryRow", "process_memory", "training_tape", "replay_training",
           "CUDA_CONTEXT_BYTES", "CUBLAS_WORKSPACE_BYTES", "CUBLASLT_WORKSPACE_BYTES", "PHASES",
           "context_bytes_for", "cublas_workspace_bytes_for", "replayable", "min_device_bytes"]

PHASES = ("train_step",)

# CUDA context (driver state, loaded kernel modules, the primary context's heap) per GPU family: what
# ``cudaMemGetInfo`` reports used beyond the allocator's reserved memory after the first matrix product
# (cuBLAS loaded). Measured: H200, torch 2.11.0+cu130, driver 580 (docs/gpu/cuda-memory-h200.json ``process``:
# 648,871,936 B after ``torch.cuda.init()``, 718,077,952 B after the first matmul).
CUDA_CONTEXT_BYTES: dict[str, tuple[int, str]] = {
    "H200": (718_077_952, "measured on an H200 (torch 2.11, CUDA 13.0; xtlens's H200 CUDA memory run)"),
}
TYPICAL_CONTEXT_BYTES = 718_077_952
TYPICAL_CONTEXT_SOURCE = ("typical: the H200's measured context (torch 2.11, CUDA 13.0); other GPUs and CUDA "
                          "versions differ by up to a few hundred MB (lazy module loading, driver)")

# cuBLAS workspace: one per (cuBLAS handle, stream); handles are per thread, and autograd runs backward on its
# own device thread, so a training step holds two. Size: ``CUBLAS_WORKSPACE_CONFIG`` default ``:4096:8`` = 32 MiB
# on Hopper / Blackwell (compute capability 9, 10, 12), ``:4096:2:16:8`` = 8 MiB + 128 KiB before
# (aten/src/ATen/cuda/CublasHandlePool.cpp ``parseChosenWorkspaceSize``). The cuBLASLt workspace (bias
# epilogue of ``nn.Linear``'s addmm in the forward) is ``CUBLASLT_WORKSPACE_SIZE``, default 1024 KiB
# (``parseCUDABlasLtWorkspaceSize``). Measured on the H200: 33,554,432 B after the first float32 matmul
# (one handle), 68,157,440 B (= 2 x 32 MiB + 1 MiB) after a training step.
CUBLAS_WORKSPACE_BYTES = {"hopper": 32 << 20, "older": (8 << 20) + (128 << 10)}
CUBLASLT_WORKSPACE_BYTES = 1 << 20
_HOPPER_OR_NEWER = ("H100", "H200", "H20", "GH200", "B200", "B100", "GB200", "RTX 50", "5090", "5080")


def context_bytes_for(gpu: str | None) -> tuple[int, str]:
    """``(bytes, source)`` of the CUDA context on ``gpu`` (a name such as ``"H200 141GB"`` or ``"NVIDIA H200"``):
    the measured value of its family, else the typical one (the H200's), labelled so."""
    name = (gpu or "").upper()
    for family, (nbytes, source) in CUDA_CONTEXT_BYTES.items():
        if family in name:
            return nbytes, source
    return TYPICAL_CONTEXT_BYTES, TYPICAL_CONTEXT_SOURCE


def cublas_workspace_bytes_for(gpu: str | None, *, handles: int = 2, linear_bias: bool = True) -> int:
    """cuBLAS workspaces of a process: ``handles`` x the per-handle workspace (32 MiB on Hopper and newer, 8 MiB +
    128 KiB before; unknown GPU: Hopper's) + the 1 MiB cuBLASLt workspace when a biased ``nn.Linear`` runs."""
    name = (gpu or "H200").upper()
    newer = any(k.upper() in name for k in _HOPPER_OR_NEWER) or not gpu
    per = CUBLAS_WORKSPACE_BYTES["hopper" if newer else "older"]
    return handles * per + (CUBLASLT_WORKSPACE_BYTES if linear_bias else 0)


@dataclass(frozen=True, kw_only=True)
class ProcessMemoryRow:
    """One term of ``ProcessMemory``: ``name``, ``bytes``, the ``formula`` it is computed by and its ``source``."""

    name: str
    bytes: int
    formula: str
    source: str


@dataclass(frozen=True, kw_only=True)
class ProcessMemory:
    """Device memory of a CUDA training process, in bytes (see the module docstring).

    ``ordered_peak_bytes``: core.training's ordered peak of the step's tensors (``training_memory``, foreach
    optimizer); ``allocated_peak_bytes`` = it + ``cublas_workspace_bytes``; ``reserved_peak_bytes``: the caching
    allocator's segments at the step's peak (replayed); ``context_bytes``: the CUDA context; ``process_bytes`` =
    context + reserved: what must fit the device. ``autocast_cache_bytes`` and ``optimizer_temporary_bytes`` are
    parts of the ordered peak's step (stated apart, not added again); ``replayed_allocated_peak_bytes`` is the
    replay's own allocated peak (a cross-check of the ordered peak, workspaces included)."""

    phase: str
    gpu: str | None
    ordered_peak_bytes: int
    peak_stage: str
    allocated_peak_bytes: int
    reserved_peak_bytes: int
    replayed_allocated_peak_bytes: int
    context_bytes: int
    context_source: str
    cublas_workspace_bytes: int
    autocast_cache_bytes: int
    optimizer_temporary_bytes: int
    process_bytes: int
    segments: int
    terms: tuple[ProcessMemoryRow, ...] = field(default=())

    def rows(self) -> list[ProcessMemoryRow]:
        """One row per term: name, bytes, formula, source."""
        return list(self.terms)


# --- the allocation sequence of a training step -------------------------------------------------------------


class _Tape:
    """Events ``("a", key, bytes)`` / ``("f", key, 0)`` in program order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object, int]] = []
        self.size_of: dict[object, int] = {}
        self._n = 0

    def alloc(self, nbytes: int, key: object = None) -> object:
        if key is None:
            self._n += 1
            key = ("t", self._n)
        if nbytes > 0:
            self.events.append(("a", key, nbytes))
            self.size_of[key] = nbytes
        return key

    def free(self, *keys: object) -> None:
        for k in keys:
            self.events.append(("f", k, 0))


def _layer_params(cfg: ModelConfig, se: int, ce: int
                  ) -> tuple[dict[int, list[tuple[str, int, int]]], list[tuple[str, int, int]]]:
    """Parameter tensors ``(name, bytes, autocast copy bytes)`` by layer index (``attn_layers.layers.<i>.``) and
    the rest."""
    by_layer: dict[int, list[tuple[str, int, int]]] = {}
    rest: list[tuple[str, int, int]] = []
    for t in param_tensors(cfg):
        parts = t.name.split(".")
        row = (t.name, t.numel * se, t.numel * ce if t.cast_by_autocast else 0)
        if len(parts) > 2 and parts[0] == "attn_layers" and parts[1] == "layers" and parts[2].isdigit():
            by_layer.setdefault(int(parts[2]), []).append(row)
        else:
            rest.append(row)
    return by_layer, rest


#: Micro-batches of a gradient-accumulation step the tape lays out: from the second on each one allocates and frees
#: the same tensors on the same cached blocks (the gradients exist; every other tensor dies within its micro-batch), so
#: the step's peaks are those of two (checked: the seed and seed-no-alibi, fp32 and amp_bf16, 2 x 1024 tokens give the
#: same allocated and reserved peaks at 2, 3, 4 and 8 micro-batches, tests/core/test_cuda_memory.py).
REPLAYED_MICRO_BATCHES = 2


def training_tape(cfg: ModelConfig, wl: Workload, setup: TrainingSetup, *, first_step: bool = False
                  ) -> tuple[tuple[str, object, int], ...]:
    """``_training_tape``, kept per question (a pure function of its arguments; the searches replay one tape many
    times)."""
    return _training_tape(cfg, wl, setup, first_step)


@functools.lru_cache(maxsize=64)
def _training_tape(cfg: ModelConfig, wl: Workload, setup: TrainingSetup, first_step: bool
                   ) -> tuple[tuple[str, object, int], ...]:
    """The large allocations and frees of one training step (forward, loss, backward, ``optimizer.step()``,
    ``zero_grad(set_to_none=True)``) of x-transformers' decoder under ``setup`` (one micro-batch, AdamW foreach),
    in program order, as ``("a", key, bytes)`` / ``("f", key, 0)``. Sizes are the tensors of ``core.memory``
    (``hidden`` ``T*d``, q ``T*h*dh``, k / v ``T*g*dh``, feed-forward ``T*f``, logits ``T*V``, the ALiBi tensors of
    ``alibi_tensors``); the order and lifetimes follow the allocator traces of the seed on an H200 (torch 2.11,
    x-transformers 2.31): per sub-layer the token-shift copy, the projections, rotary and (ALiBi) bias tensors,
    SDPA's output, the residual and norm outputs; the logits, the loss' log-softmax and its gradients; per
    sub-layer in reverse the input gradients, the freed saved tensors and the parameter gradients; the optimizer
    state (``first_step``: created by ``zeros_like``, two per parameter), ``_foreach_sqrt``'s temporaries (one per
    parameter), then the gradients freed. Parameter tensors and optimizer state use the setup's state dtype."""
    se, ce = precision_bytes(setup.precision, wl)
    mixed = setup.mixed
    er = FP32_BYTES if (mixed or ce == FP32_BYTES) else ce  # residual stream / norms
    b, n = wl.batch, wl.seq_len
    T = b * n
    d, h, g, dh = cfg.dim, cfg.heads, cfg.kv_heads, cfg.attn_dim_head
    V = cfg.num_tokens
    f_in = (2 if cfg.ff_glu else 1) * cfg.ff_inner_dim
    H_r, H_c = T * d * er, T * d * ce
    q_b, kv_b = T * h * dh * ce, T * g * dh * ce
    lse_b = b * h * n * FP32_BYTES
    bias_e = FP32_BYTES if mixed else ce
    al = alibi_tensors(cfg, Workload(batch=b, seq_len=n, dtype={4: "float32", 2: "bfloat16"}[bias_e]))
    shift = cfg.shift_tokens
    # SDPA picks the flash kernel for 16-bit inputs without a mask (the ALiBi mask forces the efficient kernel);
    # then the merged heads are a copy to_out keeps, else the copy dies with the next sub-layer (H200 traces)
    flash_kernel = ce != FP32_BYTES and not al["mask"]
    pad_b = T * (d // (shift + 1)) * er * shift if shift else 0
    by_layer, rest = _layer_params(cfg, se, ce)
    tp = _Tape()
    block = setup.recompute == "block"
    grads: list[object] = []
    made: set[object] = set()

    def grad_alloc(params: list[tuple[str, int, int]]) -> None:
        for name, nbytes, _ in params:
            key = ("grad", name)
            if key not in made:
                tp.alloc(nbytes, key)
                grads.append(key)
                made.add(key)

    for _micro in range(min(setup.grad_accum, REPLAYED_MICRO_BATCHES)):
        # forward -------------------------------------------------------------------------------------------------
        emb = tp.alloc(H_r)  # token embedding output (kept to the end of the forward)
        x = tp.alloc(H_r)  # the layer input stream
        saved: list[list[object]] = []
        recomputed: list[list[tuple[str, object, int]]] = []
        backward_layer = 0
        kinds = ["a" if i % 2 == 0 else "f" for i in range(cfg.num_layers)] if cfg.num_ff_layers else ["a"] * cfg.num_layers
        merged_prev = None
        first_attention = True
        for layer, kind in enumerate(kinds):
            block_start = len(tp.events)
            keep: list[object] = []
            if mixed:  # autocast's 16-bit weight copies, cached for the forward and saved for backward
                keep += [tp.alloc(c) for _, _, c in by_layer.get(layer, []) if c]
            if cfg.uses_pre_norm:
                # x-transformers' LayerNorm: F.layer_norm without affine (saved by the gain's product), then
                # times the gain (the linear input)
                keep += [tp.alloc(H_r), tp.alloc(H_r)]
            pad = tp.alloc(pad_b) if shift else None
            shifted = tp.alloc(H_r) if shift else None
            lin_in = shifted
            if mixed:
                # autocast casts the linear input for every projection that reads it (to_q, to_k, to_v; the
                # feed-forward's first linear): 16-bit copies, each saved by its op
                for _ in range(3 if kind == "a" else 1):
                    keep.append(tp.alloc(H_c))
            elif shifted is not None:
                keep.append(shifted)
            if kind == "a":
                q = tp.alloc(q_b)
                k_ = tp.alloc(kv_b)
                v_ = tp.alloc(kv_b)
                keep += [k_, v_]
                late: list[object] = []  # freed when the (shift-wrapped) sub-layer returns
                if cfg.uses_rotary:
                    # apply_rotary_pos_emb on q's rotated part (float32 under autocast: the tables are float32):
                    # the products and rotate_half's halves, then the concatenated q (cast back under autocast)
                    re = FP32_BYTES if mixed else ce
                    rt = T * h * cfg.rotary_dim * re
                    t1, t2 = tp.alloc(rt), tp.alloc(rt)
                    tp.free(t1)
                    half = tp.alloc(rt // 2)
                    t3 = tp.alloc(rt)
                    tp.free(half)
                    t4 = tp.alloc(rt)
                    tp.free(t3)
                    t5 = tp.alloc(rt)
                    tp.free(t2, t4)
                    q_rot = tp.alloc(T * h * dh * re)
                    if mixed:
                        q_back = tp.alloc(q_b)
                        tp.free(t5, q_rot)
                        q_rot = q_back
                    else:
                        tp.free(t5)
                    tp.free(q)
                    q = q_rot
                if cfg.attn_flash:
                    q_s = tp.alloc(q_b)  # q * scale copy (Attend.flash_attn), saved by SDPA
                    late.append(q)
                    keep.append(q_s)
                else:
                    keep.append(q)
                bias_live: list[object] = []  # freed after SDPA
                bias_late = late  # the padded bias too
                if al["padded"]:
                    if al["blocks"] > 1 or first_attention:  # without rotary the bias is built once and cached
                        d1 = tp.alloc(al["diff"])
                        d2 = tp.alloc(al["diff"])
                        tp.free(d1)
                        d3 = tp.alloc(al["diff"])
                        tp.free(d2)
                        heads = tp.alloc(al["heads"])
                        tp.free(d3)
                        p1 = tp.alloc(al["padded"])
                        tp.free(heads)
                        if al["cached"]:
                            tp.alloc(al["cached"])  # rel_pos.bias, a buffer kept from now on
                    p2 = tp.alloc(al["padded"])  # pad_at_dim's copy, in every block
                    if al["blocks"] > 1 or first_attention:
                        tp.free(p1)
                    bias_late.append(p2)
                if al["mask"]:
                    c1 = tp.alloc(al["causal"])
                    c2 = tp.alloc(al["causal"])
                    tp.free(c1)
                    mask = tp.alloc(al["mask"])
                    bias_live.append(c2)
                    if mixed:
                        mask16 = tp.alloc(al["mask"] * ce // FP32_BYTES)  # SDPA's 16-bit copy (saved)
                        keep.append(mask16)
                        bias_live.append(mask)
                    else:
                        keep.append(mask)
                first_attention = False
                if not cfg.attn_flash:
                    # the einsum path (attend.py): q k^T, the bias added, the causal fill, a float32 softmax (saved;
                    # and its cast back when 16-bit), then P V
                    sc = b * h * n * (n + cfg.attn_num_mem_kv)
                    sim = tp.alloc(sc * ce)
                    if al["padded"]:
                        biased = tp.alloc(sc * ce)
                        tp.free(sim)
                        sim = biased
                    causal = tp.alloc(n * (n + cfg.attn_num_mem_kv))
                    masked = tp.alloc(sc * ce)
                    tp.free(sim)
                    keep += [tp.alloc(sc * FP32_BYTES), causal]
                    if ce != FP32_BYTES:
                        keep.append(tp.alloc(sc * ce))
                    tp.free(masked)
                out = tp.alloc(q_b)
                lse = tp.alloc(lse_b)
                keep += [out, lse]
                tp.free(*bias_live)
                merged = tp.alloc(q_b) if (cfg.uses_rotary or cfg.attn_num_mem_kv) else None
                o1 = tp.alloc(H_c)
                tp.free(*bias_late)
                if mixed and shifted is not None:
                    tp.free(shifted)
                if pad is not None:
                    tp.free(pad)
                if merged is not None and flash_kernel:
                    keep.append(merged)  # SDPA's flash kernel (16-bit, no mask): to_out saves the merged heads
                elif merged is not None:
                    if merged_prev is not None:
                        tp.free(merged_prev)
                    merged_prev = merged
            else:
                ff1 = tp.alloc(T * f_in * ce)
                ff2 = tp.alloc(T * cfg.ff_inner_dim * ce)
                keep += [ff1, ff2]
                o1 = tp.alloc(H_c)
                if mixed and shifted is not None:
                    tp.free(shifted)
                if pad is not None:
                    tp.free(pad)
                if merged_prev is not None:
                    tp.free(merged_prev)
                    merged_prev = None
            del lin_in
            block_events = tp.events[block_start:]  # what the (checkpointable) block did, in order
            # residual (x * residual_scale + branch) and, post-norm, the norm output and its gain product
            o2 = tp.alloc(H_r)
            tp.free(o1)
            o3 = tp.alloc(H_r)
            tp.free(o2)
            keep.append(o3)
            if not cfg.uses_pre_norm:
                ln = tp.alloc(H_r)
                x_new = tp.alloc(H_r)
                keep += [ln]
            else:
                x_new = o3
            keep.append(x)
            x = x_new
            if block:
                # torch.utils.checkpoint around the block (entry[1]: the shift-wrapped attention / feed-forward):
                # what the block made is freed and made again in backward; the norm and residual outside it and
                # the layer input stay (the ALiBi bias passed in is not kept: H200 traces)
                outside = {o3, x, *keep[keep.index(o3):]}
                inside = [k for k in keep if k not in outside]
                tp.free(*inside)
                recomputed.append(block_events)
                keep = [k for k in keep if k in outside]
            else:
                recomputed.append([])
            saved.append(keep)
        if merged_prev is not None:
            tp.free(merged_prev)
        final = []
        if cfg.uses_pre_norm:
            final += [tp.alloc(H_r), tp.alloc(H_r)]  # the final norm, the same two
        logits_cast = [tp.alloc(c) for _, _, c in rest if c] if mixed else []
        logits = tp.alloc(T * V * ce)
        tp.free(emb)
        # loss: cross_entropy in float32 (autocast) or the compute dtype; log_softmax output saved
        le = FP32_BYTES if mixed else ce
        copy = tp.alloc(T * V * ce) if mixed else None  # autocast: a (T, V) compute-dtype copy kept by the loss
        logp = tp.alloc(T * V * le)
        if setup.loop == "free_logits":
            tp.free(logits)  # ``del logits``: cross_entropy keeps only its log-softmax
        # backward ------------------------------------------------------------------------------------------------
        g1 = tp.alloc(T * V * le)  # nll_loss_backward
        if mixed:
            tp.free(logp)
            g2 = tp.alloc(T * V * ce)  # _log_softmax_backward_data, in the input's dtype
            tp.free(g1)
            g3 = tp.alloc(T * V * ce)  # through the copy
            tp.free(g2, copy)
            g2 = g3
        else:
            g2 = tp.alloc(T * V * le)  # _log_softmax_backward_data
            tp.free(g1, logp)
        grad_alloc([p for p in rest if "logits" in p[0]])
        gx = tp.alloc(H_r)
        tp.free(g2, *logits_cast)
        if setup.loop == "keep_logits":
            tp.free(logits)
        for keep, kind, again in zip(reversed(saved), reversed(kinds), reversed(recomputed), strict=True):
            # the checkpointed block's forward, re-run: the same allocations and frees in the same order; what it
            # leaves alive is freed with the layer's saved tensors
            fresh: dict[object, object] = {}
            for op, key, nbytes in again:
                if op == "a":
                    fresh[key] = tp.alloc(nbytes)
                elif key in fresh:
                    tp.free(fresh.pop(key))
            keep = keep + list(fresh.values())
            t1 = tp.alloc(H_r)
            t2 = tp.alloc(H_r)
            t3 = tp.alloc(2 * H_r)
            tp.free(t3, t2)
            if kind == "f":
                ga = tp.alloc(T * cfg.ff_inner_dim * ce)
                gb = tp.alloc(T * f_in * ce)
                tp.free(ga)
                tp.free(gb)
            else:
                gq = tp.alloc(q_b)
                gk = tp.alloc(kv_b)
                gv = tp.alloc(kv_b)
                gqr = tp.alloc(q_b)
                tp.free(gq, gk, gv, gqr)
            layer = len(saved) - 1 - backward_layer
            backward_layer += 1
            grad_alloc(by_layer.get(layer, []))
            g_new = tp.alloc(H_r)
            tp.free(*keep)
            tp.free(t1, gx)
            gx = g_new
        grad_alloc(rest)
        tp.free(gx, *final, x)  # x: the last block's output, the logits' (or the final norm's) saved input
    # optimizer.step() (foreach AdamW) and zero_grad(set_to_none=True) -----------------------------------------
    all_params = [p for i in sorted(by_layer) for p in by_layer[i]] + rest
    if first_step:  # AdamW: exp_avg, exp_avg_sq; SGD: momentum_buffer (a clone of the gradient)
        for name, nbytes, _ in all_params:
            for state in (("exp_avg", "exp_avg_sq") if setup.optimizer == "adamw" else ("momentum_buffer",)):
                tp.alloc(nbytes, (state, name))
    if setup.optimizer == "adamw":
        tmp = [tp.alloc(nbytes) for _, nbytes, _ in all_params]  # torch._foreach_sqrt(exp_avg_sq)
        tp.free(*tmp)
    tp.free(*grads)
    return tuple(tp.events)


@dataclass(frozen=True, kw_only=True)
class Replay:
    """Allocated and reserved peaks of a replayed step (bytes), the allocator's segment count."""

    allocated_peak_bytes: int
    reserved_peak_bytes: int
    segments: int


def replay_training(cfg: ModelConfig, wl: Workload, setup: TrainingSetup, *, workspace_bytes: int = 0,
                    limit_bytes: int | None = None) -> Replay:
    """Build the model's parameters, run one warm-up step (creating the optimizer state) and a second step through
    ``CachingAllocatorModel``; the second step's peaks (``benchmarks/cuda_memory.py``'s window) plus the
    workspaces (allocated through the allocator in segments of their own: reserved = allocated). ``limit_bytes``:
    an allocator cap for the tensors (workspaces excluded); past it ``AllocatorOutOfMemory`` is raised."""
    se, _ = precision_bytes(setup.precision, wl)
    alloc = CachingAllocatorModel(limit_bytes)
    live: dict[object, object] = {}
    for t in param_tensors(cfg):
        live[("param", t.name)] = alloc.malloc(t.numel * se)
    for step in (1, 2):
        if step == 2:
            alloc.reset_peaks()
        for op, key, nbytes in training_tape(cfg, wl, setup, first_step=step == 1):
            if op == "a":
                live[key] = alloc.malloc(nbytes)
            else:
                blk = live.pop(key, None)
                if blk is not None:
                    alloc.free(blk)
    return Replay(allocated_peak_bytes=alloc.peak_allocated_bytes + workspace_bytes,
                  reserved_peak_bytes=alloc.peak_reserved_bytes + workspace_bytes, segments=alloc.segments)


def search_resolution_bytes(hi_bytes: int, step_bytes: int = 2 << 20) -> int:
    """The resolution of a search for a cap below ``hi_bytes``: ``step_bytes`` (2 MiB, the allocator's rounding of
    large blocks), or 1/8192 of ``hi_bytes`` when that is coarser (above 16 GiB), so a search takes about 10-13
    replays at any model size
    (a replay of a 70B-class model at 4096 x 8192 tokens takes a quarter of a second)."""
    return max(step_bytes, hi_bytes // SEARCH_STEPS_FRACTION)


SEARCH_STEPS_FRACTION = 8192


def min_device_bytes(cfg: ModelConfig, wl: Workload, setup: TrainingSetup | None = None, *, gpu: str | None = None,
                     step_bytes: int = 2 << 20) -> int:
    """The smallest device memory on which the training step runs: CUDA context + cuBLAS workspaces + the smallest
    allocator cap under which the replayed build, warm-up step and step complete, in bytes. Under a cap the caching
    allocator releases its wholly free cached segments and retries before it fails, so the step needs less than
    its unconstrained reserved peak (``ProcessMemory.reserved_peak_bytes``: what ``nvidia-smi`` shows when memory
    is plentiful) and at least its allocated peak. Found by bisection on the cap (``step_bytes`` resolution);
    setups the replay does not lay out fall back to ``process_memory(...).process_bytes``. About 10 replays: 0.1-0.3 s.
    """
    setup = setup or TrainingSetup()
    pm = process_memory(cfg, wl, setup, gpu=gpu)
    if not replayable(setup):
        return pm.process_bytes
    ws = pm.cublas_workspace_bytes
    lo = pm.replayed_allocated_peak_bytes - ws - 1  # fails (below the tensors' own peak)
    hi = pm.reserved_peak_bytes - ws  # runs (never released anything)
    step = search_resolution_bytes(hi, step_bytes)
    while hi - lo > step:
        mid = (lo + hi) // 2
        try:
            replay_training(cfg, wl, setup, limit_bytes=mid)
        except AllocatorOutOfMemory:
            lo = mid
        else:
            hi = mid
    return pm.context_bytes + ws + hi


def replayable(setup: TrainingSetup) -> bool:
    """Whether ``training_tape`` lays out ``setup``'s step: one device (no tensor / data parallelism), AdamW or
    SGD, no or block recomputation (any precision, loop and gradient accumulation)."""
    return (setup.tp == 1 and setup.dp == 1 and setup.optimizer in ("adamw", "sgd")
            and setup.recompute in ("none", "block"))


def process_memory(cfg: ModelConfig, wl: Workload, setup: TrainingSetup | None = None, *, phase: str = "train_step",
                   gpu: str | None = None) -> ProcessMemory:
    """Device memory of a CUDA process training ``cfg`` on ``wl`` under ``setup`` (default ``TrainingSetup()``) on
    ``gpu`` (a name; ``None``: an H200-like Hopper GPU), in bytes: see ``ProcessMemory``. ``phase``: only
    ``"train_step"`` (one optimizer step, the loop of ``setup``)."""
    if phase not in PHASES:
        raise ConfigError("phase", phase, "one of " + ", ".join(PHASES))
    setup = setup or TrainingSetup()
    tm: TrainingMemory = training_memory(cfg, wl, setup, foreach=True, device="cuda")
    se, ce = precision_bytes(setup.precision, wl)
    linear_bias = any(t.name.endswith(".bias") and t.cast_by_autocast for t in param_tensors(cfg))
    ws = cublas_workspace_bytes_for(gpu, linear_bias=linear_bias)
    ctx, ctx_src = context_bytes_for(gpu)
    allocated = tm.peak_bytes + ws
    if replayable(setup):
        rep = replay_training(cfg, wl, setup, workspace_bytes=ws)
        reserved = max(rep.reserved_peak_bytes, allocated)
        how = "replayed"
    else:
        # a setup the replay does not lay out (tensor / data parallel, ZeRO, selective recomputation, Adafactor,
        # 8-bit Adam): the ordered peak times the reserved / allocated ratio of the replayed plain step
        base = dataclasses.replace(setup, recompute="block" if setup.recompute == "block" else "none",
                                   optimizer="adamw", tp=1, dp=1, zero=0)
        rep = replay_training(cfg, wl, base)
        ratio = rep.reserved_peak_bytes / max(1, rep.allocated_peak_bytes)
        reserved = max(allocated, math.ceil(tm.peak_bytes * ratio) + ws)
        how = f"scaled: ordered peak x {ratio:.3f} (reserved / allocated of the replayed single-device AdamW step)"
    autocast = tm.activation_breakdown_bytes.get("autocast_weight_copies", 0)
    opt_tmp = tm.stages_bytes["optimizer_step"] - tm.weights_bytes - tm.buffers_bytes - tm.grads_bytes - tm.optimizer_bytes
    gib = "see core.training.training_memory"
    terms = (
        ProcessMemoryRow(name="ordered_peak", bytes=tm.peak_bytes,
                         formula=f"max over the step's stages (peak at '{tm.peak_stage}') of weights + buffers + "
                                 "optimizer state + gradients + saved activations + transients",
                         source=gib + " (foreach AdamW, the CUDA default)"),
        ProcessMemoryRow(name="autocast_cache", bytes=autocast,
                         formula="elements of the tensors autocast casts (Linear weights and biases, logits table) "
                                 "x compute bytes; inside the ordered peak's activations",
                         source="torch/csrc/autograd/autocast_mode.cpp cached_cast (0 without autocast)"),
        ProcessMemoryRow(name="optimizer_temporaries", bytes=opt_tmp,
                         formula="foreach AdamW: torch._foreach_sqrt(exp_avg_sq), P x state bytes; inside the "
                                 "ordered peak's optimizer_step stage",
                         source="torch/optim/adamw.py _multi_tensor_adamw"),
        ProcessMemoryRow(name="cublas_workspace", bytes=ws,
                         formula="2 handles (main thread, autograd thread) x 32 MiB (Hopper+; 8 MiB + 128 KiB "
                                 "before) + 1 MiB cuBLASLt (biased Linear)",
                         source="aten/src/ATen/cuda/CublasHandlePool.cpp; measured 68,157,440 B on an H200"),
        ProcessMemoryRow(name="allocated_peak", bytes=allocated, formula="ordered_peak + cublas_workspace",
                         source="what torch.cuda.max_memory_allocated reports (within 5 % on 36 H200 points)"),
        ProcessMemoryRow(name="reserved_peak", bytes=reserved,
                         formula="the caching allocator's segments after build, a warm-up step and a step, "
                                 "replayed (512 B blocks; 2 MiB small segments for <= 1 MiB, 20 MiB for 1-10 MiB, "
                                 "else rounded to 2 MiB; best-fit reuse and splitting) + workspaces"
                                 + ("" if how == "replayed" else f"; this setup {how}"),
                         source="c10/cuda/CUDACachingAllocator.cpp; core.allocator.CachingAllocatorModel"),
        ProcessMemoryRow(name="cuda_context", bytes=ctx, formula="cudaMemGetInfo used - reserved, after the "
                         "first matmul", source=ctx_src),
        ProcessMemoryRow(name="process_total", bytes=ctx + reserved, formula="cuda_context + reserved_peak",
                         source="what nvidia-smi shows for the process; what must fit the device"),
    )
    return ProcessMemory(phase=phase, gpu=gpu, ordered_peak_bytes=tm.peak_bytes, peak_stage=tm.peak_stage,
                         allocated_peak_bytes=allocated, reserved_peak_bytes=reserved,
                         replayed_allocated_peak_bytes=rep.allocated_peak_bytes, context_bytes=ctx,
                         context_source=ctx_src, cublas_workspace_bytes=ws, autocast_cache_bytes=autocast,
                         optimizer_temporary_bytes=opt_tmp, process_bytes=ctx + reserved, segments=rep.segments,
                         terms=terms)


_ = (INDEX_BYTES, cuda_block_bytes)
