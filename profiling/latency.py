"""Latency of the real x-transformers model: whole forward, the attention call alone, one training step,
and per-token decoding with the KV cache, plus which SDPA kernel actually ran and why.

Timing protocol (both devices): build a fresh model (never a shared one), run ``warmup`` untimed calls,
then ``repeats`` timed calls; report min / median / max in milliseconds. CUDA: a pair of
``torch.cuda.Event(enable_timing=True)`` around each call and one ``synchronize`` after the loop. CPU:
``time.perf_counter`` around each call. Nothing else runs inside the timed region (the harness adds one
Python call and two clock reads per repeat).

Phases (``phase`` column):

* ``forward``: ``model(ids)`` under ``torch.no_grad()`` in eval mode.
* ``attention``: the ``Attend`` modules (x-transformers' attention core: K/V head expansion, ALiBi mask
  preparation, the SDPA or einsum call) timed by forward pre/post hooks *inside a real forward*, summed
  over the ``depth`` blocks of that forward. Projections, rotary and the ALiBi bias construction in
  ``Attention.forward`` are outside it. On CUDA the hooks record events, so no extra synchronisation
  is added inside the forward.
* ``train_step``: ``model.train()``, forward, cross-entropy against random targets, ``backward()``,
  ``AdamW.step()`` and ``zero_grad(set_to_none=True)``.
* ``decode``: x-transformers' cached generation. The context (``decode_context_tokens``, default
  ``seq_len``) is fed once with ``return_intermediates=True``; each timed step is
  ``model(ids_plus_one, cache=prefix_cache, return_intermediates=True)`` from the same prefix cache, so
  every repeat attends over exactly ``context + 1`` keys. ``tokens_per_s`` is ``batch`` tokens per step.

FLOP rates: ``achieved_flops_per_s`` = closed-form FLOPs of the phase (``core.cost_model``; matmuls only,
2 per multiply-add) / median time. The attention pairs counted are the causal half when SDPA ran with
``is_causal=True`` (the kernel skips masked blocks), the full square otherwise (a dense ALiBi mask, or
the einsum path). A fused SDPA backward recomputes the scores: ``train_step`` then uses
``3 * fwd + attn / 2``. Decode: projections, feed-forward and logits of one token per sequence plus
``4 * b * h * (context + 1) * dh`` per block for the scores and values. ``peak_fraction`` = achieved /
the datasheet dense peak of a known GPU (``profiling.device.PEAK_FLOPS_PER_S``), None on a CPU.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from xtlens.core.config import ModelConfig, Workload
from xtlens.core.cost_model import flop_counts
from xtlens.profiling.device import device_name as _device_name
from xtlens.profiling.device import peak_flops_per_s, resolve_device, synchronize, versions
from xtlens.profiling.errors import ProfileError, failure_record
from xtlens.profiling.records import ProfileRecord, base_fields

__all__ = [
    "PHASES",
    "SDPA_OPS",
    "NO_SDPA",
    "SdpaCall",
    "SdpaProbe",
    "backend_from_ops",
    "explain_backend",
    "force_sdpa_backend",
    "time_calls",
    "decode_flops",
    "measure_latency",
]

PHASES = ("forward", "attention", "train_step", "decode")

# aten forward ops of the fused SDPA kernels -> backend label. The math backend is not a single op (it
# decomposes into bmm / _safe_softmax / ...): an SDPA call with none of these ops is "math".
SDPA_OPS: dict[str, str] = {
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_efficient_attention": "efficient",
    "_scaled_dot_product_cudnn_attention": "cudnn",
    "_scaled_dot_product_flash_attention_for_cpu": "cpu_flash",
    "_scaled_dot_product_fused_attention_overrideable": "overrideable",
}
NO_SDPA = "x-transformers einsum (no SDPA)"

_FORCEABLE = ("flash", "efficient", "cudnn", "math")


# --------------------------------------------------------------------------------------------------
# SDPA backend detection
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SdpaCall:
    """The arguments of one ``F.scaled_dot_product_attention`` call (shapes only, no tensors kept)."""

    q_shape: tuple[int, ...]
    k_shape: tuple[int, ...]
    dtype: str
    device_type: str
    mask_dtype: str | None
    mask_shape: tuple[int, ...] | None
    dropout_p: float
    is_causal: bool

    @property
    def head_dim(self) -> int:
        return self.q_shape[-1]


@dataclass
class SdpaProbe:
    """Records, during the code run inside it, every SDPA call (``TorchFunctionMode``) and the names of the
    aten ops dispatched (``TorchDispatchMode``): the fused kernel that actually ran is one of ``SDPA_OPS``.

    Works on CPU, CUDA and fake tensors. Adds Python overhead per op: use it on an untimed pass.
    """

    calls: list[SdpaCall] = field(default_factory=list)
    ops: list[str] = field(default_factory=list)

    def __enter__(self) -> SdpaProbe:
        probe = self

        class _Fn(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if func is F.scaled_dot_product_attention:
                    probe._record_call(args, kwargs)
                return func(*args, **kwargs)

        class _Dispatch(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                name = func.overloadpacket.__name__
                if name in SDPA_OPS:
                    probe.ops.append(name)
                return func(*args, **(kwargs or {}))

        self._modes = [_Fn(), _Dispatch()]
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)

    def _record_call(self, args: tuple, kwargs: dict) -> None:
        q, k = args[0], args[1]
        mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
        dropout = kwargs.get("dropout_p", args[4] if len(args) > 4 else 0.0)
        causal = kwargs.get("is_causal", args[5] if len(args) > 5 else False)
        self.calls.append(SdpaCall(
            q_shape=tuple(q.shape), k_shape=tuple(k.shape), dtype=str(q.dtype).removeprefix("torch."),
            device_type=q.device.type,
            mask_dtype=None if mask is None else str(mask.dtype).removeprefix("torch."),
            mask_shape=None if mask is None else tuple(mask.shape),
            dropout_p=float(dropout), is_causal=bool(causal),
        ))

    @property
    def backend(self) -> str:
        return backend_from_ops(self.ops, sdpa_calls=len(self.calls))


def backend_from_ops(ops: Iterable[str], *, sdpa_calls: int) -> str:
    """Backend label from the aten op names seen and the number of SDPA calls: a fused kernel's label,
    ``"math"`` for SDPA calls without a fused op, ``NO_SDPA`` when SDPA was never called. Several
    distinct kernels (e.g. different layers) are joined with ``+``."""
    names = (o.split(".")[1] if o.startswith("aten.") else o for o in ops)  # aten.<name>.<overload>
    labels = sorted({SDPA_OPS[n] for n in names if n in SDPA_OPS})
    if not sdpa_calls:
        return NO_SDPA
    if not labels:
        return "math"
    return "+".join(labels)


def explain_backend(
    backend: str,
    *,
    device_type: str,
    call: SdpaCall | None,
    attn_flash: bool = True,
    forced: str | None = None,
    gpu_capability: tuple[int, int] | None = None,
) -> str:
    """Why this SDPA backend ran (and, on CUDA, why the flash kernel did not). Pure: takes recorded facts.

    ``call`` is one recorded ``SdpaCall`` (None when SDPA was not called); ``gpu_capability`` is
    ``torch.cuda.get_device_capability()`` on CUDA.
    """
    if backend == NO_SDPA:
        if not attn_flash:
            return ("attn_flash=False: x-transformers computes attention itself (einsum q k^T, softmax, einsum "
                    "with v), materialising the (b, h, n, n) score matrices; PyTorch SDPA is not called.")
        return "x-transformers did not call scaled_dot_product_attention in this pass (its einsum path ran)."
    parts: list[str] = []
    if forced:
        parts.append(f"forced with torch.nn.attention.sdpa_kernel(SDPBackend.{_sdpa_enum_name(forced)}) on every "
                     "Attend module")
    op = {v: k for k, v in SDPA_OPS.items()}
    if backend in op:
        parts.append(f"aten.{op[backend]} ran")
    if call is not None:
        mask = ("no attn_mask" if call.mask_dtype is None
                else f"a {call.mask_dtype} attn_mask of shape {call.mask_shape}"
                + (" (additive: the ALiBi bias, causal-filled)" if call.mask_dtype != "bool" else ""))
        parts.append(f"inputs: {call.dtype}, head dim {call.head_dim}, {mask}, is_causal={call.is_causal}, "
                     f"dropout_p={call.dropout_p:g}")
    if device_type == "cpu":
        if backend == "cpu_flash":
            text = "PyTorch's fused CPU kernel (SDPBackend.FLASH_ATTENTION on CPU)"
            if call is not None and call.mask_dtype not in (None, "bool"):
                text += " accepts an additive float mask, so the ALiBi bias does not stop it on CPU"
            parts.append(text)
        elif backend == "math" and not forced:
            parts.append("no fused CPU kernel accepted these inputs, so the math fallback (bmm + softmax) ran")
    elif backend != "flash" and call is not None and not forced:
        why = _why_not_flash_cuda(call, gpu_capability)
        if why:
            parts.append("CUDA flash kernel not used because " + "; ".join(why))
        parts.append("x-transformers' Attend limits SDPA to flash, efficient and math (cuDNN is left out by its "
                     "default sdp_kwargs)")
    return ". ".join(parts) + "."


def _why_not_flash_cuda(call: SdpaCall, capability: tuple[int, int] | None) -> list[str]:
    why = []
    if call.mask_dtype is not None:
        why.append("an attn_mask is passed (the flash kernel takes none"
                   + ("; here the additive ALiBi bias" if call.mask_dtype != "bool" else "") + ")")
    if call.dtype not in ("float16", "bfloat16"):
        why.append(f"the inputs are {call.dtype} (flash needs float16 or bfloat16)")
    if call.head_dim > 256 or call.head_dim % 8:
        why.append(f"head dim {call.head_dim} (flash needs a multiple of 8, at most 256)")
    if capability is not None and capability < (8, 0):
        why.append(f"GPU compute capability {capability[0]}.{capability[1]} (flash needs sm80 or newer)")
    return why


def _sdpa_enum_name(backend: str) -> str:
    return {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION",
            "math": "MATH"}[backend]


def force_sdpa_backend(model: torch.nn.Module, backend: str) -> int:
    """Make every x-transformers ``Attend`` module of ``model`` (a model the caller owns) run SDPA under
    ``sdpa_kernel(SDPBackend.<backend>)`` only. Returns the number of modules changed.

    x-transformers wraps its SDPA call in its own ``sdpa_kernel`` context, which would override an outer
    one, so the per-module context factory is replaced instead.
    """
    if backend not in _FORCEABLE:
        raise ProfileError(f"Unknown SDPA backend {backend!r}: choose one of {', '.join(_FORCEABLE)}.")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    chosen = getattr(SDPBackend, _sdpa_enum_name(backend))
    changed = 0
    for module in _attend_modules(model):
        if hasattr(module, "sdp_context_manager"):
            module.sdp_context_manager = functools.partial(sdpa_kernel, [chosen])
            changed += 1
    return changed


def _attend_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if type(m).__name__ == "Attend"]


# --------------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------------


def time_calls(fn: Callable[[], object], *, device: str, warmup: int, repeats: int) -> list[float]:
    """Milliseconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls.

    CUDA: one start/end ``torch.cuda.Event`` pair per call, a single synchronise after the loop. CPU:
    ``time.perf_counter`` around each call.
    """
    for _ in range(warmup):
        fn()
    synchronize(device)
    if device.startswith("cuda"):
        pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
        for start, end in pairs:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        return [start.elapsed_time(end) for start, end in pairs]
    clock = time.perf_counter
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append((clock() - t0) * 1e3)
    return times


class _AttendTimer:
    """Forward pre/post hooks on the ``Attend`` modules: per forward, the summed time spent inside them."""

    def __init__(self, modules: list[torch.nn.Module], device: str):
        self.cuda = device.startswith("cuda")
        self.pending: list[tuple[object, object]] = []
        self.cpu_ms = 0.0
        self._start: object = None
        self.handles = []
        for m in modules:
            self.handles.append(m.register_forward_pre_hook(self._pre))
            self.handles.append(m.register_forward_hook(self._post))

    def _pre(self, module, args):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self._start = ev
        else:
            self._start = time.perf_counter()

    def _post(self, module, args, output):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.pending.append((self._start, ev))
        else:
            self.cpu_ms += (time.perf_counter() - self._start) * 1e3

    def take_ms(self) -> float:
        """Total of the calls since the last ``take_ms`` (synchronises on CUDA)."""
        if self.cuda:
            torch.cuda.synchronize()
            total = sum(s.elapsed_time(e) for s, e in self.pending)
            self.pending.clear()
            return total
        total, self.cpu_ms = self.cpu_ms, 0.0
        return total

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


# --------------------------------------------------------------------------------------------------
# FLOPs per phase
# --------------------------------------------------------------------------------------------------


def decode_flops(cfg: ModelConfig, *, batch: int, context_tokens: int) -> int:
    """FLOPs of one cached decoding step: one new token per sequence attending over ``context + 1`` keys.

    Projections, feed-forward and logits of ``batch`` tokens (``flop_counts`` at ``seq_len=1``, without
    its 1x1 attention), plus scores and values ``2 * 2 * b * h * (context + 1) * dh`` per block.
    """
    one = flop_counts(cfg, Workload(batch=batch, seq_len=1))
    attn = cfg.depth * 4 * batch * cfg.heads * (context_tokens + 1) * cfg.attn_dim_head
    return one.fwd_flops - one.attn_flops + attn


def _phase_flops(phase: str, cfg: ModelConfig, wl: Workload, *, fused: bool, causal: bool,
                 context_tokens: int) -> tuple[int, str]:
    if phase == "decode":
        return decode_flops(cfg, batch=wl.batch, context_tokens=context_tokens), "decode_flops (one token, cached)"
    fc = flop_counts(cfg, wl)
    attn = fc.attn_flops_causal if causal else fc.attn_flops
    fwd = fc.fwd_flops_causal if causal else fc.fwd_flops
    square = "causal half" if causal else "full square"
    if phase == "forward":
        return fwd, f"fwd_flops ({square})"
    if phase == "attention":
        return attn, f"attn_flops ({square})"
    if fused:
        return 3 * fwd + attn // 2, f"3 x fwd_flops + attn_flops / 2 (fused SDPA backward recomputes scores; {square})"
    return 3 * fwd, f"3 x fwd_flops ({square})"


# --------------------------------------------------------------------------------------------------
# measure_latency
# --------------------------------------------------------------------------------------------------


def measure_latency(
    cfg: ModelConfig,
    wl: Workload,
    *,
    device: str = "cpu",
    phases: Iterable[str] = PHASES,
    warmup: int = 1,
    repeats: int = 3,
    sdpa_backend: str | None = None,
    decode_context_tokens: int | None = None,
    config_name: str = "",
    progress: Callable[[float, str], None] | None = None,
) -> list[ProfileRecord]:
    """Time each phase of ``cfg`` on ``wl`` on a freshly built model; one ``ProfileRecord`` per phase.

    ``sdpa_backend`` (flash, efficient, cudnn, math) forces that SDPA kernel in every block (an error row
    says so when it cannot run). Failures (out of memory, an unsupported dtype, a configuration
    x-transformers cannot run in that phase) become rows with status ``oom`` or ``error``.
    ``progress(fraction, message)`` is called as phases start and finish.
    """
    phases = tuple(phases)
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        raise ProfileError(f"Unknown latency phase(s) {', '.join(map(repr, unknown))}: choose from {', '.join(PHASES)}.")
    if warmup < 0 or repeats < 1:
        raise ProfileError(f"warmup must be >= 0 and repeats >= 1 (got warmup={warmup}, repeats={repeats}).")
    if sdpa_backend is not None and sdpa_backend not in _FORCEABLE:
        raise ProfileError(f"Unknown SDPA backend {sdpa_backend!r}: choose one of {', '.join(_FORCEABLE)} (or none).")
    wl.check_against(cfg)
    dev = resolve_device(device)
    name = _device_name(dev)
    vers = versions()
    report = progress or (lambda fraction, message: None)
    provenance = dict(torch_version=vers["torch"], xtransformers_version=vers["x-transformers"],
                      warmup=warmup, repeats=repeats)
    rows: list[ProfileRecord] = []
    context = decode_context_tokens if decode_context_tokens is not None else wl.seq_len
    for i, phase in enumerate(phases):
        report(i / len(phases), f"{phase}: building the model and warming up")
        try:
            rows.append(_measure_phase(phase, cfg, wl, dev=dev, name=name, provenance=provenance, warmup=warmup,
                                       repeats=repeats, forced=sdpa_backend, context=context,
                                       config_name=config_name))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a row
            rows.append(failure_record(
                _explain_failure(exc, phase, cfg, wl, dev, sdpa_backend), cfg, wl,
                measurement="latency", phase=phase, device=dev, device_name=name, config_name=config_name,
                context=f"the {phase} latency measurement", method=_method(phase, dev, forced=sdpa_backend),
                **provenance,
            ))
        report((i + 1) / len(phases), f"{phase}: done")
    return rows


def _method(phase: str, dev: str, *, forced: str | None, flops_basis: str = "", context: int | None = None) -> str:
    clock = "torch.cuda.Event pairs" if dev.startswith("cuda") else "time.perf_counter"
    what = {
        "forward": "model(ids) under no_grad, eval mode",
        "attention": "Attend modules timed by forward hooks inside a real forward, summed over blocks",
        "train_step": "forward + cross-entropy + backward + AdamW step + zero_grad, train mode",
        "decode": f"one cached decoding step per repeat from a {context}-token prefix cache",
    }[phase]
    text = f"{what}; {clock}"
    if forced:
        text += f"; SDPA forced to {forced}"
    if flops_basis:
        text += f"; FLOPs: {flops_basis}"
    return text


def _explain_failure(exc: BaseException, phase: str, cfg: ModelConfig, wl: Workload, dev: str,
                     forced: str | None) -> BaseException:
    """Replace a raw torch error by a ProfileError with a message for the page where the cause is known."""
    text = str(exc)
    if isinstance(exc, ProfileError):
        return exc
    if forced and ("No available kernel" in text or "No viable backend" in text):
        return ProfileError(f"The forced SDPA backend '{forced}' cannot run these inputs on {dev} "
                            f"({wl.dtype}, head dim {cfg.attn_dim_head}"
                            + (", with the additive ALiBi mask" if cfg.alibi_pos_bias else "") + f"): {text.splitlines()[0]}")
    if phase == "decode" and cfg.alibi_pos_bias and cfg.uses_rotary and isinstance(exc, RuntimeError) \
            and ("must match" in text or "broadcast" in text):
        return ProfileError(
            "x-transformers cannot decode with a KV cache when ALiBi and rotary embeddings are both on: with "
            "rotary it passes positions of the whole sequence to the ALiBi module (forward_custom_pos), which "
            "builds an (n, n) bias that does not match the single new query (torch: "
            f"{text.splitlines()[0]}). Cached decoding works without ALiBi or without rotary.")
    if wl.dtype == "float16" and dev == "cpu" and isinstance(exc, RuntimeError) and "Half" in text:
        return ProfileError(f"float16 is not supported on CPU by an operation this model uses: {text.splitlines()[0]}. "
                            "Use bfloat16 or float32 on CPU.")
    return exc


def _measure_phase(phase: str, cfg: ModelConfig, wl: Workload, *, dev: str, name: str, provenance: dict,
                   warmup: int, repeats: int, forced: str | None, context: int, config_name: str) -> ProfileRecord:
    from xtlens.core.builder import build_model

    model = build_model(cfg, device=dev, dtype=wl.dtype, seed=0).model
    if forced:
        force_sdpa_backend(model, forced)
    gen = torch.Generator(device="cpu").manual_seed(0)
    probe = SdpaProbe()
    tokens = wl.tokens

    if phase in ("forward", "attention"):
        ids = torch.randint(0, cfg.num_tokens, (wl.batch, wl.seq_len), generator=gen).to(dev)

        def call() -> None:
            model(ids)

        with probe, torch.no_grad():
            call()
        if phase == "forward":
            with torch.no_grad():  # entered once, outside the timed calls
                times = time_calls(call, device=dev, warmup=max(warmup - 1, 0), repeats=repeats)
        else:
            with torch.no_grad():
                for _ in range(max(warmup - 1, 0)):
                    call()
                timer = _AttendTimer(_attend_modules(model), dev)
                try:
                    times = []
                    timer.take_ms()
                    for _ in range(repeats):
                        call()
                        times.append(timer.take_ms())
                finally:
                    timer.remove()
    elif phase == "train_step":
        model.train()
        ids = torch.randint(0, cfg.num_tokens, (wl.batch, wl.seq_len), generator=gen).to(dev)
        targets = torch.randint(0, cfg.num_tokens, (wl.batch * wl.seq_len,), generator=gen).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def call() -> None:
            logits = model(ids)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        with probe:
            call()
        times = time_calls(call, device=dev, warmup=max(warmup - 1, 0), repeats=repeats)
    else:  # decode
        if context < 1:
            raise ProfileError(f"decode_context_tokens must be at least 1 (got {context}).")
        if context + 1 > cfg.max_seq_len and not cfg.uses_rotary:
            raise ProfileError(f"A {context}-token context plus one new token exceeds max_seq_len = {cfg.max_seq_len}.")
        prefix = torch.randint(0, cfg.num_tokens, (wl.batch, context + 1), generator=gen).to(dev)
        with torch.no_grad():
            _, cache = model(prefix[:, :-1], return_intermediates=True)

        def call() -> None:
            with torch.no_grad():
                model(prefix, cache=cache, return_intermediates=True)

        with probe:
            call()
        times = time_calls(call, device=dev, warmup=max(warmup - 1, 0), repeats=repeats)
        tokens = wl.batch

    backend = probe.backend
    first = probe.calls[0] if probe.calls else None
    capability = torch.cuda.get_device_capability(torch.device(dev)) if dev.startswith("cuda") else None
    reason = explain_backend(backend, device_type=torch.device(dev).type, call=first, attn_flash=cfg.attn_flash,
                             forced=forced, gpu_capability=capability)
    fused = backend not in (NO_SDPA, "math")
    causal = bool(first and first.is_causal)
    flops, basis = _phase_flops(phase, cfg, wl, fused=fused, causal=causal, context_tokens=context)
    median_ms = statistics.median(times)
    achieved = flops / (median_ms / 1e3) if median_ms > 0 else None
    tf32 = dev.startswith("cuda") and torch.backends.cuda.matmul.allow_tf32
    peak = peak_flops_per_s(name, wl.dtype, tf32=tf32)  # None for a CPU or an unknown GPU
    method = _method(phase, dev, forced=forced, flops_basis=basis, context=context)
    if phase == "decode" and cfg.shift_tokens:
        method += ("; note: x-transformers' ShiftTokens does not carry the previous token across cached steps, so "
                   "cached outputs differ from a full forward (the work timed is the same)")
    row = base_fields(cfg, wl, config_name=config_name, measurement="latency", phase=phase, device=dev,
                      device_name=name)
    return ProfileRecord(
        **row, **provenance, method=method, sdpa_backend=backend, sdpa_backend_reason=reason,
        predicted_flops=flops,
        latency_min_ms=min(times), latency_median_ms=median_ms, latency_max_ms=max(times),
        tokens_per_s=tokens / (median_ms / 1e3) if median_ms > 0 else None,
        achieved_flops_per_s=achieved,
        peak_fraction=(achieved / peak) if (achieved is not None and peak) else None,
    )

