"""Calibrated latency prediction: per phase and per part, what a roofline leaves out added back.

Standard library only. ``predict_latency(cfg, wl, source, phase=...)`` returns one ``PartPrediction`` per part
of ``phase`` (``forward``, ``train_step``, ``decode_cached``, ``decode_uncached``; parts named as in
``core.roofline.LATENCY_PARTS`` + ``TRAIN_PARTS``, plus ``attention_other`` and ``framework_other``, the
measured-only parts of ``profiling.measure.breakdown``, which here get their launch and Python costs).
``source`` is a ``core.calibration.Calibration`` (a device measured by ``xtlens calibrate``) or a
``core.hardware.Hardware`` preset (uncalibrated: roofline + typical overheads, see ``UNCALIBRATED_LABEL``).

Every part's predicted time, milliseconds (``total_ms``), is the sum of four terms:

* ``compute_ms``: its matrix products and its attention kernel. A product ``(m, k) @ (k, n)`` takes
  ``2 m n k / R(m, n, k)`` seconds, ``R`` the FLOP rate interpolated on the calibration's shape grid
  (inverse-distance weighting of ``log R`` over the 4 grid points nearest in ``(log2 m, log2 n, log2 k)``;
  on a CPU each point's own launch ``launch_s`` taken out of its wall time first, since launches are counted
  below; CUDA event times are the kernel's alone). The
  parts' real GEMM shapes: ``qkv_proj`` ``(T, d) @ (d, h dh)`` and twice ``(d, g dh)``; ``out_proj`` ``(T, h dh)
  @ (h dh, d)``; ``feedforward`` ``(T, d) @ (d, f)`` (``2f`` with GLU) and ``(T, f) @ (f, d)``; ``logits``
  ``(T, d) @ (d, V)`` (``T = b n``). Backward: per forward product the input gradient ``(m, n) @ (n, k)`` and the
  weight gradient ``(k, m) @ (m, n)``. Attention: the calibration's SDPA time per unit of work
  ``batch x heads x n^2 x dh`` of the same backend, mask (``causal``, or ``dense`` when ALiBi is on: x-transformers
  passes a dense float mask) and dtype, interpolated in ``log n`` between the measured lengths (the nearest
  measured length's rate outside them), times this model's work; backward from ``backward_seconds - seconds``.
  A dense mask on a CPU: the full square at twice the causal rate, plus the dense points' excess scaled by the
  model's share of scores in ``exp``'s float32 denormal band (``alibi_denormal_fraction``, ``DENORMAL_EXP_BAND``).
  On a ``Hardware`` preset: ``flops / peak`` (the roofline).
* ``memory_ms``: the element-wise bytes of the part (``core.roofline`` bytes for the element-wise parts; for the
  matrix-product parts only what is not a product: the activation, the head merge copy) / the calibrated
  element-wise bandwidth (a preset: its datasheet bandwidth). Backward: the forward's element-wise time again (``BACKWARD_ELEMENTWISE_SHARE``; the ALiBi
  bias and the mask excepted: no gradient); ``loss``: ``3 T V e``; ``optimizer``: AdamW's single-tensor update
  (``torch.optim.AdamW`` on a CPU) passes over ``21 P e`` bytes (decay ``2``, ``lerp_`` ``3``, ``mul_`` ``2``,
  ``addcmul_`` ``4``, ``sqrt``/``div`` ``4``, ``add_`` ``2``, ``addcdiv_`` ``4`` passes of ``P e``), 16 effective
  (``ADAMW_BYTES_PER_PARAM_ELEMENT``).
* ``launch_ms = kernels x launch_s``: ``kernels`` are the aten operators the part dispatches (views included:
  each costs a dispatch), counted in closed form from the model's structure (``part_kernels``, x-transformers
  2.31.10; checked against a ``TorchDispatchMode`` count on the real model in
  ``tests/core/test_latency_model.py``).
* ``framework_ms = module_calls x (module_overhead_s + XT_PYTHON_LAUNCHES_PER_MODULE x launch_s)``: the
  ``nn.Module`` calls of the part (``part_module_calls``, checked by forward hooks on the real model) times the
  calibrated module-call overhead plus the Python x-transformers runs inside each module's ``forward``
  (einops, argument handling), expressed in launches: a constant measured on tiny models that are not in the
  held-out grid (source at the constant). Optimizer: one Python iteration per parameter tensor.

On a CPU the four add up (one thread of control does everything). On a GPU kernels run asynchronously while
the host launches the next ones, so a part costs ``max(compute + memory, launch + framework)``.
``bound`` says which term is largest: ``compute``, ``memory``, ``launch`` or ``framework``.

Uncalibrated GPU presets use the roofline for the first two terms and ``TYPICAL_LAUNCH_S`` /
``TYPICAL_MODULE_OVERHEAD_S`` (measured on an H200 host, sources at the constants); their error band
``ERROR_BAND`` is what that gives on the H200 reference rows, where measurements exist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xtlens.core.allocator import param_tensor_numels
from xtlens.core.calibration import AttentionPoint, Calibration
from xtlens.core.config import ModelConfig, Workload
from xtlens.core.errors import ConfigError
from xtlens.core.hardware import Hardware
from xtlens.core.roofline import LATENCY_PARTS, TRAIN_PARTS, part_costs

__all__ = [
    "PHASES",
    "PARTS",
    "PartPrediction",
    "predict_latency",
    "phase_ms",
    "phase_totals_ms",
    "part_kernels",
    "part_module_calls",
    "backward_kernels",
    "param_tensor_count",
    "gemm_shapes",
    "prediction_label",
    "UNCALIBRATED_LABEL",
    "ERROR_BAND",
    "TYPICAL_LAUNCH_S",
    "TYPICAL_MODULE_OVERHEAD_S",
    "XT_PYTHON_LAUNCHES_PER_MODULE",
    "ADAMW_BYTES_PER_PARAM_ELEMENT",
    "BACKWARD_ELEMENTWISE_SHARE",
    "CPU_ELEMENTWISE_FACTOR",
    "CPU_GEMM_FACTOR",
    "DENORMAL_EXP_BAND",
    "alibi_denormal_fraction",
]

PHASES = ("forward", "train_step", "decode_cached", "decode_uncached")
#: Parts predicted: the roofline's forward parts, the measured-only framework parts, the training parts.
PARTS: tuple[str, ...] = (*LATENCY_PARTS, "attention_other", "framework_other", *TRAIN_PARTS)
_GEMM_PARTS = ("qkv_proj", "out_proj", "feedforward", "logits")

#: x-transformers' own Python per module call (argument handling, einops, the decoder loop's bookkeeping), in
#: units of ``launch_s``. Source: forward of tiny models (dim 32, 8 tokens, depth 2 and 8, rotary and no
#: rotary; not in the held-out grid) on the 2-core AMD EPYC of this project, torch 2.13 CPU: 300-470 us per
#: block against 46-80 aten ops x 0.9 us (launch_s) and 22-23 module calls x 1-2.5 us (module_overhead_s),
#: leaving ~9 us = 8-10 launches per module call (8 taken: the ops' own cost above a tiny add is part of the gap);
#: the torch profiler on the same forward puts 45 % of the wall time outside any aten op.
XT_PYTHON_LAUNCHES_PER_MODULE = 8.0
#: CPU only (a calibrated CPU): element-wise kernels of the model take this many times their bytes / the calibrated
#: ``torch.add`` bandwidth (extra passes: layer norm's statistics, sin/cos and integer ALiBi ops, masked_fill, the
#: rotary products; the roofline bytes count each tensor once), and matrix products inside the model this many times
#: their isolated grid time (cold weights, the activations' layouts). Source: ``measure_breakdown`` of five fit
#: configurations that are NOT in the held-out grid (``benchmarks/latency_heldout.py FIT``: dim 64-512, depth 1-4,
#: 256-1536 tokens, forward and training step), measured / predicted per class on this project's 2-core AMD EPYC
#: (torch 2.13, 1 thread, load ~3): element-wise 2.2-3.2 (3.2 over all five), products 1.14-1.42 (1.14 over all).
CPU_ELEMENTWISE_FACTOR = 3.2
CPU_GEMM_FACTOR = 1.15
#: The backward's element-wise time as a multiple of the forward's (the ALiBi bias and the mask excepted). Every
#: forward read has a gradient write and every write a gradient read (2x the bytes), but each element-wise op's
#: gradient is one fused kernel where the forward ran several (layer norm, the rotary products): on the FIT
#: configurations (see ``CPU_ELEMENTWISE_FACTOR``) the measured backward matched 1x, not 2x (0.58 measured /
#: predicted with 2x and the in-model product factor).
BACKWARD_ELEMENTWISE_SHARE = 1.0
#: float32 ``exp`` underflows into denormals for arguments in (-103.28, -87.34): ``exp(-87.34)`` is the smallest
#: normal float32 (1.18e-38), ``exp(-103.28)`` the smallest denormal (1.4e-45). A CPU computes denormals in
#: microcode, tens of times slower. Measured here (1 thread, dim 64 x 2 heads, 1024 tokens, dense ALiBi-like
#: mask): forward + backward 24.1 ms with x-transformers' slopes for 2 heads (1/16, 1/256: no score reaches the
#: band), 110.6 ms with slopes 1/2 and 1/4 (distances 175-207 and 349-413 land in it), 37.6 ms for the latter
#: with ``torch.set_flush_denormal(True)``. The calibration's dense points use 8 heads with slopes 1/2 ... 1/256.
DENORMAL_EXP_BAND = (87.34, 103.28)
#: Bytes AdamW's single-tensor update moves per parameter element, in units of ``P e``: 21 element passes counted
#: (see the module docstring), 16 effective: the FIT configurations measured 0.73x the prediction with 21 (small
#: tensors stay in cache between the passes).
ADAMW_BYTES_PER_PARAM_ELEMENT = 16
#: aten ops ``torch.optim.AdamW`` (single-tensor, the CPU default) dispatches per parameter tensor, counted on
#: the real optimizer (tests/core/test_latency_model.py).
ADAMW_OPS_PER_TENSOR = 10
#: Foreach AdamW (the CUDA default): ops per step for the whole parameter list (``_foreach_*`` calls).
ADAMW_FOREACH_OPS = 12

#: Host cost of one kernel on an H200 machine (launch + dispatch + x-transformers Python per op), seconds.
#: Source: docs/gpu-results.md, seed-no-alibi bf16 forward at 1024 tokens, 8.4-10.0 ms wall (about 9.5 ms) with
#: 0.9 ms of kernels (launch-bound), over its closed-form 634 kernels and 160 module calls (``part_kernels``,
#: ``part_module_calls``), a module call costing as much as 10 kernels: 9.5 ms / (634 + 10 x 160) = 4.25 us.
TYPICAL_LAUNCH_S = 4.25e-6
#: Host cost of one module call on the same machine (10 kernels' worth, as above), seconds.
TYPICAL_MODULE_OVERHEAD_S = 42.5e-6
#: Error band of an uncalibrated preset's prediction: (median, 90th percentile) of |predicted / measured - 1|
#: on the 55 ok latency rows (forward, train_step; seed and seed-no-alibi, bf16 and fp32, 512-8192 tokens) of the
#: shipped H200 reference run (``xtlens.profiling.results.reference``): ``benchmarks/latency_heldout.py --reference
#: H200 --uncalibrated`` gives 23.5 % and 48.0 % (rounded up here).
ERROR_BAND = (0.24, 0.48)
UNCALIBRATED_LABEL = "uncalibrated: roofline + typical overheads"


@dataclass(frozen=True, kw_only=True)
class PartPrediction:
    """Predicted milliseconds of one part in one phase (terms in the module docstring)."""

    phase: str
    component: str
    kernels: int
    module_calls: int
    compute_ms: float
    memory_ms: float
    launch_ms: float
    framework_ms: float
    total_ms: float
    bound: str


# --------------------------------------------------------------------------------------------------
# structure: kernels and module calls per part (x-transformers 2.31.10, attn_flash path)
# --------------------------------------------------------------------------------------------------


def param_tensor_count(cfg: ModelConfig) -> int:
    """Number of parameter tensors (``core.allocator.param_tensor_numels``)."""
    return len(param_tensor_numels(cfg))


def part_kernels(cfg: ModelConfig, *, train: bool = False) -> dict[str, int]:
    """aten ops each forward part dispatches (``TorchDispatchMode`` count; views included), in steady state
    (after a first call: x-transformers caches the ALiBi bias of a model without rotary).

    Per block (``L`` of them) unless said: ``qkv_proj`` 18 (three bias-free linears, ``t, view, mm,
    _unsafe_view``, and three head splits, ``view, permute``); ``out_proj`` 6 (head merge ``permute, clone,
    _unsafe_view`` and the linear), 7 with rotary (one more reshape copy); ``feedforward`` 9 (two linears with
    bias ``t, view, addmm, view`` and the activation), 12 with GLU (chunk, gate product); ``norms`` 3 per norm
    (``native_layer_norm``, the gamma ``add`` and ``mul``; ``2L + 1`` norms with pre-norm, ``2L`` with DeepNorm);
    ``residual`` 1 per sub-layer (``2L`` adds), 3 with DeepNorm (scale); ``token_shift`` 3 per sub-layer;
    ``rotary`` 34 per block + 13 per forward (the table: ``arange``, ``einsum``, ``cat``; applied to q and k),
    xPos 38 + 20; ``alibi_bias`` 8 with rotary (rebuilt from positions every block), 3 without (cached bias
    sliced and padded); ``mask_prep`` 1 (``q * scale``), + 1 in training, + 4 with the ALiBi bias on the flash
    path (causal mask ``ones, triu``, ``expand``, ``masked_fill``), + 6 with one K/V head, + 8 with grouped K/V
    heads (expansion); ``attention`` 1 (the SDPA op); einsum path (``attn_flash=False``) 29 (30 with ALiBi);
    ``attention_other`` 2 (3 with xPos); per forward: ``embedding`` 1 (+ 4 absolute positions),
    ``framework_other`` 1 (+ 2 with rotary: positions), ``logits`` 4.
    """
    L = cfg.depth
    g, h = cfg.kv_heads, cfg.heads
    rot = cfg.uses_rotary
    xpos = bool(cfg.rotary_xpos)
    flash = cfg.attn_flash
    norms = 2 * L + (0 if cfg.deepnorm else 1)
    mask = 1 + (1 if train else 0)
    if cfg.alibi_pos_bias and flash:
        mask += 4
    if g == 1 and h > 1:
        mask += 6
    elif 1 < g < h:
        mask += 8
    if not flash:
        mask = 1 + (1 if train else 0)
        attn = 29 + (1 if cfg.alibi_pos_bias else 0)
    else:
        attn = 1
    return {
        "embedding": 1 + (4 if cfg.has_abs_pos_emb else 0),
        "token_shift": 3 * 2 * L if cfg.shift_tokens > 0 else 0,
        "norms": 3 * norms,
        "qkv_proj": 18 * L,
        "rotary": ((38 * L + 20) if xpos else (34 * L + 13)) if rot else 0,
        "alibi_bias": (8 if rot else 3) * L if cfg.alibi_pos_bias else 0,
        "mask_prep": mask * L,
        "attention": attn * L,
        "out_proj": (7 if rot else 6) * L,
        "feedforward": (12 if cfg.ff_glu else 9) * L,
        "residual": (3 if cfg.deepnorm else 1) * 2 * L,
        "logits": 4,
        "attention_other": (3 if xpos else 2) * L,
        "framework_other": 1 + (2 if rot else 0),
    }


def backward_kernels(cfg: ModelConfig) -> int:
    """aten ops the autograd engine dispatches for one backward (counted on the real model): 22 per model
    (embedding, final norm, logits, loss) + 88 per block, + 34 per block with rotary (the rotary products' and
    cats' gradients), + 5 with one K/V head, + 7 with grouped K/V heads, + 12 per block and - 6 per model with
    DeepNorm, + 8 per block with token shift, + 4 per block with GLU, + 32 per block on the einsum path, + 5
    with absolute positions."""
    L = cfg.depth
    g, h = cfg.kv_heads, cfg.heads
    per_block = 88 + (34 if cfg.uses_rotary else 0)
    per_block += 5 if (g == 1 and h > 1) else (7 if 1 < g < h else 0)
    per_block += 12 if cfg.deepnorm else 0
    per_block += 8 if cfg.shift_tokens > 0 else 0
    per_block += 4 if cfg.ff_glu else 0
    per_block += 0 if cfg.attn_flash else 32
    return 22 - (6 if cfg.deepnorm else 0) + (5 if cfg.has_abs_pos_emb else 0) + per_block * L


def part_module_calls(cfg: ModelConfig) -> dict[str, int]:
    """``nn.Module`` calls per forward part (forward hooks on the real model; a module counts to its own part
    or, unlabelled, to the innermost labelled module around it, as ``profiling.measure.breakdown`` labels).

    Per block: ``qkv_proj`` 6 (three ``Linear``, three ``Rearrange``), ``out_proj`` 2, ``feedforward`` 7
    (``FeedForward``, two ``Sequential``, two ``Linear``, the activation, the dropout), ``norms`` 2 per norm (x-transformers'
    norm and torch's inside it), ``residual`` 1 per sub-layer, ``token_shift`` 1 per sub-layer,
    ``mask_prep`` 1 (``Attend``; 2 on the einsum path: its dropout), ``attention_other`` 1 (``Attention``), ``alibi_bias`` 1 without
    rotary (the ``AlibiPositionalBias`` call); per forward: ``embedding`` 2 (+ 2 absolute positions),
    ``rotary`` 1, ``logits`` 1, ``framework_other`` 5 (wrapper, decoder, two identities, embedding dropout).
    """
    L = cfg.depth
    norms = 2 * L + (0 if cfg.deepnorm else 1)
    return {
        "embedding": 2 + (2 if cfg.has_abs_pos_emb else 0),
        "token_shift": 2 * L if cfg.shift_tokens > 0 else 0,
        "norms": 2 * norms,
        "qkv_proj": 6 * L,
        "rotary": 1 if cfg.uses_rotary else 0,
        "alibi_bias": L if (cfg.alibi_pos_bias and not cfg.uses_rotary) else 0,
        "mask_prep": L * (1 if cfg.attn_flash else 2),
        "attention": 0,
        "out_proj": 2 * L,
        "feedforward": 7 * L,
        "residual": 2 * L,
        "logits": 1,
        "attention_other": L,
        "framework_other": 5 + (1 if cfg.deepnorm else 0),
    }


def gemm_shapes(cfg: ModelConfig, tokens: int) -> dict[str, list[tuple[int, int, int]]]:
    """The ``(m, n, k)`` matrix products of each forward part for ``tokens`` rows (each listed once per block)."""
    d, L, h, g, dh, f, V = cfg.dim, cfg.depth, cfg.heads, cfg.kv_heads, cfg.attn_dim_head, cfg.ff_inner_dim, cfg.num_tokens
    T = tokens
    width = 2 * f if cfg.ff_glu else f
    return {
        "qkv_proj": [(T, h * dh, d), (T, g * dh, d), (T, g * dh, d)] * L,
        "out_proj": [(T, d, h * dh)] * L,
        "feedforward": [(T, width, d), (T, d, f)] * L,
        "logits": [(T, V, d)],
    }


# --------------------------------------------------------------------------------------------------
# the device terms: calibrated or preset
# --------------------------------------------------------------------------------------------------


def _alibi_slopes(heads: int) -> list[float]:
    """x-transformers' ALiBi slopes (``AlibiPositionalBias._get_slopes``): ``2^(-8/h)``, its powers, for a power
    of two ``h``; otherwise those of the power below, then every other slope of the power above."""
    def power_of_2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start ** i for i in range(n)]

    if math.log2(heads).is_integer():
        return power_of_2(heads)
    closest = 2 ** math.floor(math.log2(heads))
    return power_of_2(closest) + power_of_2(2 * closest)[0::2][: heads - closest]


def alibi_denormal_fraction(slopes: list[float], heads: int, seq_len: int) -> float:
    """Fraction of the causal ``(query, key)`` pairs, over ``heads`` heads (those beyond ``slopes`` have no bias),
    whose ALiBi bias ``-slope x distance`` lies in ``DENORMAL_EXP_BAND``: ``sum over d in band of (n - d)`` pairs
    per head, over ``heads x n (n + 1) / 2``."""
    lo, hi = DENORMAL_EXP_BAND
    n = seq_len
    pairs = 0
    for s in slopes[:heads]:
        d0, d1 = math.ceil(lo / s), min(math.floor(hi / s), n - 1)
        if d0 <= d1:
            pairs += sum(n - d for d in range(d0, d1 + 1))
    return pairs / (heads * n * (n + 1) / 2)


def _model_denormal_fraction(cfg: ModelConfig, seq_len: int) -> float:
    if not cfg.alibi_pos_bias:
        return 0.0
    return alibi_denormal_fraction(_alibi_slopes(cfg.alibi_heads), cfg.heads, seq_len)


class _Terms:
    """Timing functions of one source (a Calibration or a Hardware preset) for one dtype."""

    def __init__(self, source: Calibration | Hardware, dtype: str):
        self.dtype = dtype
        self.calibrated = isinstance(source, Calibration)
        self.gpu = source.device.startswith("cuda") if self.calibrated else not source.name.upper().startswith("CPU")
        self.ew_factor = CPU_ELEMENTWISE_FACTOR if not self.gpu else 1.0
        self.gemm_factor = CPU_GEMM_FACTOR if not self.gpu else 1.0
        if self.calibrated:
            cal = source
            self.launch_s = cal.launch_s
            self.module_s = cal.module_overhead_s + XT_PYTHON_LAUNCHES_PER_MODULE * cal.launch_s
            slow = cal.slow(dtype)
            pts = [p for p in cal.matmul if p.dtype == dtype]
            self.scale = 1.0
            if not pts or (slow is not None and len(pts) < 3):
                pts = [p for p in cal.matmul if p.dtype == "float32"]
                self.scale = slow.slowdown_vs_float32 if slow is not None else 1.0
            if not pts:
                raise ConfigError("calibration", cal.key, f"matrix-product points for {dtype} or float32")
            # a CPU point's wall time includes its dispatch (counted as a launch below); CUDA event times do not
            self._own = cal.launch_s if not self.gpu else 0.0
            self._mm = [(math.log2(p.m), math.log2(p.n), math.log2(p.k),
                         math.log(p.flops / max(p.seconds - self._own, 0.1 * p.seconds))) for p in pts]
            bw = cal.elementwise_bytes_per_s
            self.bandwidth = bw.get(dtype) or bw.get("float32") or next(iter(bw.values()), None)
            if not self.bandwidth:
                raise ConfigError("calibration", cal.key, "an element-wise bandwidth")
            self._att = list(cal.attention)
        else:
            hw = source
            peak = hw.peak(dtype)
            if peak is None:
                raise ConfigError("dtype", dtype, f"a precision {hw.name} has units for: {', '.join(hw.peak_flops_per_s)}")
            self.peak = peak
            self.bandwidth = hw.mem_bandwidth_bytes_per_s
            self.launch_s = TYPICAL_LAUNCH_S
            self.module_s = TYPICAL_MODULE_OVERHEAD_S

    def gemm_s(self, m: int, n: int, k: int) -> float:
        """Seconds of one ``(m, k) @ (k, n)`` product, launch excluded."""
        flops = 2.0 * m * n * k
        if not self.calibrated:
            return max(flops / self.peak, 4.0 * (m * k + k * n + m * n) / self.bandwidth)
        x = (math.log2(max(m, 1)), math.log2(max(n, 1)), math.log2(max(k, 1)))
        dist = sorted(((x[0] - a) ** 2 + (x[1] - b) ** 2 + (x[2] - c) ** 2, r) for a, b, c, r in self._mm)
        if dist[0][0] < 1e-12:
            log_rate = dist[0][1]
        else:
            near = dist[:4]
            w = [1.0 / d2 for d2, _ in near]
            log_rate = sum(wi * r for wi, (_, r) in zip(w, near, strict=True)) / sum(w)
        return self.gemm_factor * self.scale * flops / math.exp(log_rate)

    def attention_s(self, *, batch: int, heads: int, seq_len: int, head_dim: int, dense: bool,
                    backward: bool, denormal_fraction: float = 0.0) -> float:
        """Seconds of the attention kernel (forward, or the backward's extra when ``backward``), launch excluded.

        ``dense`` on a CPU: ``2 x`` the causal points' time per unit of the full square (a dense mask makes the
        kernel compute every pair) plus the dense points' excess over that, scaled by ``denormal_fraction`` over
        the calibration's own fraction (``alibi_denormal_fraction``): that excess is the float32 denormal
        arithmetic of scores whose ALiBi bias lies in the denormal band of ``exp``."""
        work = batch * heads * seq_len * seq_len * head_dim
        if not self.calibrated:
            flops = 4.0 * work * (1.0 if dense else 0.5) * (2.5 if backward else 1.0)
            return flops / self.peak
        if dense and not self.gpu:
            clean = 2.0 * self._per_unit("causal", seq_len, backward)
            pts = self._attention_points("dense")
            if not pts:
                return self.scale * clean * work
            near = min(pts, key=lambda p: abs(math.log(p.seq_len / seq_len)))
            cal_fraction = alibi_denormal_fraction(_alibi_slopes(near.heads), near.heads, near.seq_len)
            excess = max(self._per_unit("dense", seq_len, backward) - clean, 0.0)
            scaled = excess * (denormal_fraction / cal_fraction) if cal_fraction > 0 else 0.0
            return self.scale * (clean + scaled) * work
        return self.scale * self._per_unit("dense" if dense else "causal", seq_len, backward) * work

    def _per_unit(self, mask: str, seq_len: int, backward: bool) -> float:
        """Seconds per unit of ``batch x heads x n^2 x dh`` at ``seq_len``, interpolated in ``log n``."""
        pts = self._attention_points(mask)
        if not pts:
            raise ConfigError("calibration", "attention", f"SDPA points with a {mask} mask")

        def per_unit(p: AttentionPoint) -> float:
            fwd = max(p.seconds - self._own, 0.1 * p.seconds)
            if backward:  # (forward + backward) - forward: the launches cancel; unmeasured: twice the forward
                bwd = p.backward_seconds - p.seconds if p.backward_seconds is not None else 0.0
                s = bwd if bwd > 0 else 2.0 * fwd
            else:
                s = fwd
            return s / (p.batch * p.heads * p.seq_len ** 2 * p.head_dim)

        by_len = sorted({p.seq_len: per_unit(p) for p in pts}.items())
        x = math.log(seq_len)
        if seq_len <= by_len[0][0]:
            return by_len[0][1]
        if seq_len >= by_len[-1][0]:
            return by_len[-1][1]
        for (n0, u0), (n1, u1) in zip(by_len, by_len[1:], strict=False):
            if n0 <= seq_len <= n1:
                t = (x - math.log(n0)) / (math.log(n1) - math.log(n0))
                return math.exp((1 - t) * math.log(u0) + t * math.log(u1))
        raise AssertionError("unreachable")

    def _attention_points(self, mask: str) -> list[AttentionPoint]:
        pts = [p for p in self._att if p.mask == mask]
        for dtype in (self.dtype, "float32"):
            same = [p for p in pts if p.dtype == dtype]
            if same:
                pts = same
                break
        if self.gpu and pts:  # the backend SDPA picks: flash (cudnn) for causal, efficient for a dense mask
            order = ("flash", "cudnn", "efficient", "math") if mask == "causal" else ("efficient", "cudnn", "math")
            for backend in order:
                chosen = [p for p in pts if p.backend == backend]
                if chosen:
                    return chosen
        return pts


def _label(source: Calibration | Hardware) -> str:
    if isinstance(source, Calibration):
        return f"calibrated on {source.key}"
    lo, hi = ERROR_BAND
    return (f"{UNCALIBRATED_LABEL} ({source.name}; error band on calibrated devices: median {lo:.0%} / "
            f"90th percentile {hi:.0%})")


def prediction_label(source: Calibration | Hardware) -> str:
    """What the page and the CLI print beside a prediction: ``calibrated on <key>`` or the uncalibrated label."""
    return _label(source)


# --------------------------------------------------------------------------------------------------
# prediction
# --------------------------------------------------------------------------------------------------


def _row(phase: str, component: str, terms: _Terms, *, kernels: int, module_calls: int, compute_s: float,
         memory_s: float) -> PartPrediction:
    launch_s = kernels * terms.launch_s
    framework_s = module_calls * terms.module_s
    device_s, host_s = compute_s + memory_s, launch_s + framework_s
    total_s = max(device_s, host_s) if terms.gpu else device_s + host_s
    named = {"compute": compute_s, "memory": memory_s, "launch": launch_s, "framework": framework_s}
    return PartPrediction(phase=phase, component=component, kernels=kernels, module_calls=module_calls,
                          compute_ms=1e3 * compute_s, memory_ms=1e3 * memory_s, launch_ms=1e3 * launch_s,
                          framework_ms=1e3 * framework_s, total_ms=1e3 * total_s,
                          bound=max(named, key=named.get))


def _elementwise_bytes(cfg: ModelConfig, wl: Workload) -> dict[str, int]:
    """Bytes per forward part moved outside matrix products and the attention kernel."""
    rows = {p.component: p.bytes for p in part_costs(cfg, wl)}
    T, e = wl.tokens, wl.dtype_bytes
    f = cfg.ff_inner_dim
    width = 2 * f if cfg.ff_glu else f
    q_bytes = T * cfg.heads * cfg.attn_dim_head * e
    rows["qkv_proj"] = 0
    rows["out_proj"] = cfg.depth * 2 * q_bytes
    rows["feedforward"] = cfg.depth * (2 * T * width * e + (T * f * e if cfg.ff_glu else 0))
    rows["logits"] = 0
    rows["attention"] = 0
    kv_bytes = T * cfg.kv_heads * cfg.attn_dim_head * e
    # Attention.forward's own ops (outside its sub-modules) copy q, k, v once (read + write); the decoder loop
    # keeps each sub-layer's input (one copy of the hidden state per sub-layer)
    rows["attention_other"] = cfg.depth * 2 * (q_bytes + 2 * kv_bytes)
    rows["framework_other"] = 2 * cfg.depth * 2 * T * cfg.dim * e
    return rows


def _forward_rows(cfg: ModelConfig, wl: Workload, terms: _Terms, phase: str, *, train: bool
                  ) -> list[PartPrediction]:
    kernels = part_kernels(cfg, train=train)
    calls = part_module_calls(cfg)
    gemms = gemm_shapes(cfg, wl.tokens)
    ew = _elementwise_bytes(cfg, wl)
    dense = cfg.alibi_pos_bias and cfg.attn_flash
    rows = []
    for part in PARTS:
        if part in TRAIN_PARTS:
            continue
        compute = sum(terms.gemm_s(m, n, k) for m, n, k in gemms.get(part, ()))
        if part == "attention":
            if cfg.attn_flash:
                compute = cfg.depth * terms.attention_s(batch=wl.batch, heads=cfg.heads, seq_len=wl.seq_len,
                                                        head_dim=cfg.attn_dim_head, dense=dense, backward=False,
                                                        denormal_fraction=_model_denormal_fraction(cfg, wl.seq_len))
            else:  # einsum path: scores and values as batched products, the (b, h, n, n) scores element-wise
                n, bh = wl.seq_len, wl.batch * cfg.heads
                compute = cfg.depth * bh * (terms.gemm_s(n, n, cfg.attn_dim_head) + terms.gemm_s(n, cfg.attn_dim_head, n))
                ew[part] = cfg.depth * (4 + (2 if cfg.alibi_pos_bias else 0)) * bh * n * n * wl.dtype_bytes
        rows.append(_row(phase, part, terms, kernels=kernels[part], module_calls=calls[part], compute_s=compute,
                         memory_s=terms.ew_factor * ew.get(part, 0) / terms.bandwidth))
    return rows


def _train_rows(cfg: ModelConfig, wl: Workload, terms: _Terms) -> list[PartPrediction]:
    rows = _forward_rows(cfg, wl, terms, "train_step", train=True)
    T, V, e = wl.tokens, cfg.num_tokens, wl.dtype_bytes
    rows.append(_row("train_step", "loss", terms, kernels=5, module_calls=0, compute_s=0.0,
                     memory_s=terms.ew_factor * 3 * T * V * e / terms.bandwidth))
    # the backward's operands were just produced (hot in cache): no in-model factor on its products
    gemm_bw = sum(terms.gemm_s(m, k, n) + terms.gemm_s(k, n, m)
                  for shapes in gemm_shapes(cfg, T).values() for m, n, k in shapes) / terms.gemm_factor
    if cfg.attn_flash:
        attn_bw = cfg.depth * terms.attention_s(batch=wl.batch, heads=cfg.heads, seq_len=wl.seq_len,
                                                head_dim=cfg.attn_dim_head, dense=cfg.alibi_pos_bias, backward=True,
                                                denormal_fraction=_model_denormal_fraction(cfg, wl.seq_len))
    else:
        n, bh, dh = wl.seq_len, wl.batch * cfg.heads, cfg.attn_dim_head
        attn_bw = 2 * cfg.depth * bh * (terms.gemm_s(n, n, dh) + terms.gemm_s(n, dh, n))
    # the ALiBi bias and the SDPA mask carry no gradient: no backward traffic for them
    ew = sum(r.memory_ms for r in rows if r.component not in ("alibi_bias", "mask_prep")) / 1e3
    rows.append(_row("train_step", "backward", terms, kernels=backward_kernels(cfg), module_calls=0,
                     compute_s=gemm_bw + attn_bw, memory_s=BACKWARD_ELEMENTWISE_SHARE * ew))
    P = sum(param_tensor_numels(cfg))
    n_tensors = param_tensor_count(cfg)
    opt_kernels = ADAMW_FOREACH_OPS if terms.gpu else ADAMW_OPS_PER_TENSOR * n_tensors
    rows.append(_row("train_step", "optimizer", terms, kernels=opt_kernels, module_calls=n_tensors, compute_s=0.0,
                     memory_s=ADAMW_BYTES_PER_PARAM_ELEMENT * P * e / terms.bandwidth))
    return rows


def _decode_cached_rows(cfg: ModelConfig, batch: int, context: int, terms: _Terms, dtype: str
                        ) -> list[PartPrediction]:
    """One cached decoding step: the forward's kernels and module calls (+ 2 cache concatenations per block),
    the products of ``batch`` rows, the KV cache and every weight read once."""
    wl = Workload(batch=batch, seq_len=1, dtype=dtype)
    rows = _forward_rows(cfg, wl, terms, "decode_cached", train=False)
    e = wl.dtype_bytes
    kv = 2 * cfg.depth * batch * cfg.kv_heads * (context + 1) * cfg.attn_dim_head * e
    out = []
    for r in rows:
        if r.component == "attention":
            extra = kv / terms.bandwidth
            r = _row("decode_cached", "attention", terms, kernels=r.kernels + 2 * cfg.depth,
                     module_calls=r.module_calls, compute_s=r.compute_ms / 1e3, memory_s=r.memory_ms / 1e3 + extra)
        out.append(r)
    return out


def predict_latency(cfg: ModelConfig, wl: Workload, source: Calibration | Hardware, *, phase: str = "forward",
                    decode_context_tokens: int | None = None) -> list[PartPrediction]:
    """Predicted milliseconds per part of ``phase`` for ``cfg`` on ``wl`` (see the module docstring).

    ``decode_cached`` / ``decode_uncached``: one new token per sequence after ``decode_context_tokens``
    (default ``wl.seq_len - 1``) tokens; uncached is a whole forward of ``context + 1`` tokens."""
    if phase not in PHASES:
        raise ConfigError("phase", phase, f"one of {', '.join(PHASES)}")
    terms = _Terms(source, wl.dtype)
    if phase == "forward":
        return _forward_rows(cfg, wl, terms, phase, train=False)
    if phase == "train_step":
        return _train_rows(cfg, wl, terms)
    context = decode_context_tokens if decode_context_tokens is not None else max(wl.seq_len - 1, 1)
    if context < 1:
        raise ConfigError("decode_context_tokens", context, "at least 1")
    if phase == "decode_uncached":
        wl1 = Workload(batch=wl.batch, seq_len=context + 1, dtype=wl.dtype)
        return _forward_rows(cfg, wl1, terms, phase, train=False)
    return _decode_cached_rows(cfg, wl.batch, context, terms, wl.dtype)


def phase_ms(cfg: ModelConfig, wl: Workload, source: Calibration | Hardware, *, phase: str = "forward",
             decode_context_tokens: int | None = None) -> float:
    """Predicted milliseconds of the whole phase: the sum of its parts."""
    return sum(p.total_ms for p in predict_latency(cfg, wl, source, phase=phase,
                                                   decode_context_tokens=decode_context_tokens))


def phase_totals_ms(cfg: ModelConfig, wl: Workload, source: Calibration | Hardware) -> dict[str, float]:
    """``phase -> predicted ms`` for every phase of ``PHASES``."""
    return {phase: phase_ms(cfg, wl, source, phase=phase) for phase in PHASES}
