"""Which SDPA kernel ran, and why: x-transformers' attention core observed from the aten ops it dispatches.

``SdpaProbe`` records every ``F.scaled_dot_product_attention`` call (shapes, mask, ``is_causal``) and the
fused kernel ops dispatched below it; ``backend_from_ops`` names the kernel; ``explain_backend`` says in
words why that kernel (and not flash) ran; ``force_sdpa_backend`` makes one model instance use a given
backend. Used by ``profiling.measure.latency`` and ``profiling.measure.memory`` (their rows' ``sdpa_backend`` and
``sdpa_backend_reason`` columns).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from xtlens.profiling.errors import ProfileError

__all__ = [
    "SDPA_OPS",
    "NO_SDPA",
    "FORCEABLE",
    "SdpaCall",
    "SdpaProbe",
    "backend_from_ops",
    "explain_backend",
    "force_sdpa_backend",
    "attend_modules",
]

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

FORCEABLE = ("flash", "efficient", "cudnn", "math")


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
    if backend not in FORCEABLE:
        raise ProfileError(f"Unknown SDPA backend {backend!r}: choose one of {', '.join(FORCEABLE)}.")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    chosen = getattr(SDPBackend, _sdpa_enum_name(backend))
    changed = 0
    for module in attend_modules(model):
        if hasattr(module, "sdp_context_manager"):
            module.sdp_context_manager = functools.partial(sdpa_kernel, [chosen])
            changed += 1
    return changed


def attend_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if type(m).__name__ == "Attend"]
