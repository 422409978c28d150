"""What the same model costs with another attention implementation: what-if rows, NOT what x-transformers runs.

Each implementation is measured on its own freshly built model (same seed, so the same weights; never a
shared instance) whose attention core is replaced in that instance only:

* ``asbuilt``: what x-transformers 2.31 runs (the reference of every other row).
* ``flex``: FlexAttention (``torch.nn.attention.flex_attention``). The instance's ALiBi module is detached
  (``attn_layers.rel_pos = None``), so no dense ``(h, n, n)`` bias is built; each ``Attend`` computes
  ``score + slope[h] * -(q_pos - k_pos)`` as a ``score_mod`` (slopes 0 for the heads without ALiBi) under a
  causal block mask (queries right-aligned to the keys, so cached decoding works), with one K/V head
  shared by ``enable_gqa`` (grouped K/V heads are repeated in x-transformers' order, head ``i`` using K/V
  head ``i % kv_heads``, which is not FlexAttention's grouping). Compiled (``torch.compile(flex_attention)``) on CUDA; eager on the CPU, where
  torch 2.13 runs FlexAttention forward unfused (it materialises the scores) and has no backward at all
  (``flex_compiled`` compiles on the CPU too: it works there, at about 30 s of compile per shape).
* ``cudnn``: x-transformers' own SDPA call with cuDNN attention allowed first
  (``sdpa_kernel([CUDNN, FLASH, EFFICIENT, MATH], set_priority=True)``; x-transformers' default context
  leaves cuDNN out). CUDA only.
* ``compile``: ``torch.compile`` of the whole as-built model (default mode).
* ``cudagraphs``: the as-built forward captured once in a CUDA graph with static input, then replayed.
  CUDA only; forward only.

Per implementation and phase (``forward``, ``train_step``, ``decode``) one row, ``measurement="whatif"``,
``component`` = the implementation: median/min/max latency, ``speedup_vs_asbuilt`` (as-built median / this
median), ``logits_rel_err`` (``||logits - logits_asbuilt|| / ||logits_asbuilt||`` on the same ids; a row
whose error exceeds ``TOLERANCE[dtype]`` gets status ``error`` saying so), ``compile_s`` (first call less a
steady call: compilation, graph capture, block-mask construction). The training step row compares the
loss-free logits of the first step. ``decode``: one new token after ``seq_len - 1`` context tokens: for
as-built ALiBi + rotary, which x-transformers cannot decode with a KV cache, a whole forward of the
context per token (what its user gets: generation without a cache), labelled so; otherwise and for
``flex`` a cached step. An implementation that cannot run on this device gives a row with status ``error``
and the reason, never an exception.
"""

from __future__ import annotations

import functools
import statistics
import time
import warnings
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from xtlens.core.config import ModelConfig, Workload
from xtlens.profiling.errors import ProfileError, failure_record
from xtlens.profiling.measure.sdpa import attend_modules
from xtlens.profiling.results.records import ProfileRecord, base_fields
from xtlens.profiling.run.device import synchronize, time_calls, timed_measurement_setup

__all__ = ["IMPLEMENTATIONS", "WHATIF_PHASES", "TOLERANCE", "WHATIF_LABEL", "measure_whatif", "build_variant",
           "install_flex_attention", "logits_rel_err", "check_implementations", "unsupported_reason",
           "alibi_slopes"]

IMPLEMENTATIONS = ("asbuilt", "flex", "flex_compiled", "cudnn", "compile", "cudagraphs")
DEFAULT_IMPLEMENTATIONS = ("asbuilt", "flex", "cudnn", "compile", "cudagraphs")
WHATIF_PHASES = ("forward", "train_step", "decode")
#: largest relative error of the logits (Frobenius norm) accepted as "the same model" per dtype
TOLERANCE = {"float32": 1e-4, "bfloat16": 3e-2, "float16": 5e-3}
WHATIF_LABEL = "what-if: not what x-transformers runs"


def check_implementations(names: Iterable[str] | str) -> tuple[str, ...]:
    """Validated implementation names (comma-separated text or a list); ``asbuilt`` is always first."""
    items = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    bad = [n for n in items if n not in IMPLEMENTATIONS]
    if bad:
        from xtlens.core.config import ConfigError

        raise ConfigError("attention", bad[0], f"one or more of {', '.join(IMPLEMENTATIONS)}")
    return tuple(dict.fromkeys(["asbuilt", *items]))


def unsupported_reason(impl: str, phase: str, *, device: str, cfg: ModelConfig) -> str | None:
    """Why ``impl`` cannot run ``phase`` on ``device`` (None when it can). Pure: the rules of this module."""
    cuda = device.startswith("cuda")
    if impl in ("cudnn", "cudagraphs") and not cuda:
        return f"{impl}: a CUDA-only implementation (cuDNN attention / CUDA graphs); this device is {device}."
    if impl == "cudnn" and not cfg.attn_flash:
        return "cudnn: attn_flash=False, so x-transformers does not call SDPA at all (einsum path)."
    if impl == "cudagraphs" and phase != "forward":
        return "cudagraphs: only the forward is captured (a training step or a growing decode cache is not static)."
    if impl.startswith("flex") and phase == "train_step" and not cuda:
        return ("flex: torch's FlexAttention has no backward on the CPU (NotImplementedError: 'FlexAttention does "
                "not support backward on CPU'), so no training step here.")
    return None


def alibi_slopes(cfg: ModelConfig, model: torch.nn.Module) -> torch.Tensor | None:
    """The per-head ALiBi slopes of the built model, zero for heads without ALiBi, shape ``(heads,)``."""
    rel_pos = getattr(model.attn_layers, "rel_pos", None)
    if not cfg.alibi_pos_bias or rel_pos is None:
        return None
    slopes = rel_pos.slopes.reshape(-1)
    return F.pad(slopes, (0, cfg.heads - slopes.numel()))


def install_flex_attention(model: torch.nn.Module, cfg: ModelConfig, *, compiled: bool) -> int:
    """Replace every ``Attend`` of ``model`` (a model the caller owns) by FlexAttention and detach the
    instance's ALiBi module (see the module docstring). Returns the number of ``Attend`` modules changed."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    slopes = alibi_slopes(cfg, model)
    if slopes is not None:
        model.attn_layers.rel_pos = None  # this instance only: no dense bias is built any more
    if compiled:
        _allow_recompiles()
    kernel = torch.compile(flex_attention, dynamic=False) if compiled else flex_attention
    masks: dict[tuple, object] = {}
    cast: dict[tuple, torch.Tensor] = {}

    def slopes_as(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The slopes on the call's device and dtype, cast once (not one cast kernel per layer and call)."""
        key = (str(device), dtype)
        if key not in cast:
            cast[key] = slopes.to(device=device, dtype=dtype)
        return cast[key]

    def block_mask(q_len: int, k_len: int, device: torch.device):
        key = (q_len, k_len, str(device))
        if key not in masks:
            offset = k_len - q_len

            def causal(b, h, q_idx, kv_idx):
                return q_idx + offset >= kv_idx

            masks[key] = create_block_mask(causal, None, None, q_len, k_len, device=device)
        return masks[key]

    changed = 0
    for attend in attend_modules(model):
        scale = attend.scale

        def forward(q, k, v, mask=None, attn_bias=None, prev_attn=None, attn_delta=None, row_mask=None,
                    flash_pack_seq_kwargs=None, causal=None, _scale=scale):
            del prev_attn, attn_delta, row_mask, flash_pack_seq_kwargs  # Attend.forward's keywords, unused here
            from x_transformers.attend import Intermediates

            if mask is not None or attn_bias is not None:
                raise ProfileError("the FlexAttention what-if supports the causal decoder without padding masks "
                                   "or other attention biases")
            heads, kv_heads = q.shape[1], k.shape[1]
            if 1 < kv_heads < heads:  # x-transformers' order: query head i uses K/V head i % kv_heads
                k, v = (t.repeat(1, heads // kv_heads, 1, 1) for t in (k, v))
            q_len, k_len = q.shape[-2], k.shape[-2]
            offset = k_len - q_len
            if slopes is not None:
                head_slopes = slopes_as(q.device, q.dtype)

                def score_mod(score, b, h, q_idx, kv_idx):
                    return score - head_slopes[h] * (q_idx + offset - kv_idx)
            else:
                score_mod = None
            call = functools.partial(kernel, q, k, v, score_mod=score_mod, block_mask=block_mask(q_len, k_len, q.device),
                                     scale=_scale, enable_gqa=k.shape[1] != q.shape[1])
            if compiled:
                out = call()
            else:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
                    out = call()
            return out, Intermediates()

        attend.forward = forward  # instance attribute: this model only
        changed += 1
    return changed


def _allow_recompiles(limit: int = 64) -> None:
    """FlexAttention is compiled once per shape (``dynamic=False``): a what-if table over several lengths,
    phases (the decode step is another shape) and configurations passes dynamo's default limit of 8 graphs per
    function, after which dynamo silently runs the kernel eagerly (seen on an H200: the 1024-token forward
    3.5x slower than at 8192). Raise the limit so that every point runs compiled."""
    import torch._dynamo

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), limit))


def _allow_cudnn(model: torch.nn.Module) -> int:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    changed = 0
    for module in attend_modules(model):
        if hasattr(module, "sdp_context_manager"):
            module.sdp_context_manager = functools.partial(sdpa_kernel, order, set_priority=True)
            changed += 1
    return changed


def build_variant(impl: str, cfg: ModelConfig, *, device: str, dtype: str) -> tuple[torch.nn.Module, Callable]:
    """A fresh model for ``impl`` and the callable to run it (``model`` itself or its compiled form)."""
    from xtlens.core.builder import build_model

    model = build_model(cfg, device=device, dtype=dtype, seed=0).model
    runner: Callable = model
    if impl in ("flex", "flex_compiled"):
        install_flex_attention(model, cfg, compiled=impl == "flex_compiled" or device.startswith("cuda"))
    elif impl == "cudnn":
        _allow_cudnn(model)
    elif impl == "compile":
        runner = torch.compile(model)
    elif impl not in ("asbuilt", "cudagraphs"):
        raise ProfileError(f"Unknown attention implementation {impl!r}: one of {', '.join(IMPLEMENTATIONS)}.")
    return model, runner


def logits_rel_err(logits: torch.Tensor, reference: torch.Tensor) -> float:
    """``||logits - reference|| / ||reference||`` (Frobenius, computed in float64)."""
    a, b = logits.detach().double(), reference.detach().double()
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def _cuda_graph(model: torch.nn.Module, ids: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    static = ids.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        for _ in range(2):
            model(static)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        out = model(static)

    def replay(x: torch.Tensor) -> torch.Tensor:
        static.copy_(x)
        graph.replay()
        return out

    return replay


def _timed(fn: Callable[[], object], *, dev: str, warmup: int, repeats: int) -> tuple[float, list[float]]:
    """``(first_call_s, steady_ms)``: the first call (compilation, capture) and ``repeats`` timed calls."""

    synchronize(dev)
    t0 = time.perf_counter()
    fn()
    synchronize(dev)
    first = time.perf_counter() - t0
    return first, time_calls(fn, device=dev, warmup=max(warmup - 1, 0), repeats=repeats)


def _run_phase(impl: str, phase: str, cfg: ModelConfig, wl: Workload, *, dev: str, warmup: int, repeats: int
               ) -> tuple[torch.Tensor, list[float], float, str]:
    """``(logits, times_ms, compile_s, how)`` of ``impl`` in ``phase``."""
    model, runner = build_variant(impl, cfg, device=dev, dtype=wl.dtype)
    gen = torch.Generator(device="cpu").manual_seed(0)
    if phase == "decode":
        context = wl.seq_len - 1
        if context < 1:
            raise ProfileError("the decode what-if needs seq_len >= 2 (a context and one new token).")
        ids = torch.randint(0, cfg.num_tokens, (wl.batch, wl.seq_len), generator=gen).to(dev)
        if impl not in ("flex", "flex_compiled") and cfg.alibi_pos_bias and cfg.uses_rotary:
            def step():
                return runner(ids)[:, -1]

            how = ("uncached, no KV cache: a whole forward of context + 1 tokens per new token (x-transformers 2.31 cannot "
                   "decode ALiBi + rotary with its cache, so this is what generation gives this configuration)")
        else:
            with torch.no_grad():
                _, cache = runner(ids[:, :-1], return_intermediates=True)

            def step():
                return runner(ids, cache=cache, return_intermediates=True)[0][:, -1]

            how = "cached step: one new token attending over the KV cache of the context"
        with torch.no_grad():
            first, times = _timed(step, dev=dev, warmup=warmup, repeats=repeats)
            logits = step()
        return logits, times, max(first - statistics.median(times) / 1e3, 0.0), how
    ids = torch.randint(0, cfg.num_tokens, (wl.batch, wl.seq_len), generator=gen).to(dev)
    if phase == "forward":
        if impl == "cudagraphs":
            t0 = time.perf_counter()
            replay = _cuda_graph(model, ids)
            synchronize(dev)
            capture = time.perf_counter() - t0

            def call():
                return replay(ids)

            with torch.no_grad():
                _, times = _timed(call, dev=dev, warmup=warmup, repeats=repeats)
                logits = call().clone()
            return logits, times, capture, "CUDA graph replay of the captured forward"

        def call():
            return runner(ids)

        with torch.no_grad():
            first, times = _timed(call, dev=dev, warmup=warmup, repeats=repeats)
            logits = call()
        return logits, times, max(first - statistics.median(times) / 1e3, 0.0), "model(ids) under no_grad, eval mode"
    # train_step
    model.train()
    targets = torch.randint(0, cfg.num_tokens, (wl.batch * wl.seq_len,), generator=gen).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    first_logits: list[torch.Tensor] = []

    def step():
        logits = runner(ids)
        if not first_logits:
            first_logits.append(logits.detach().clone())
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    first, times = _timed(step, dev=dev, warmup=warmup, repeats=repeats)
    return first_logits[0], times, max(first - statistics.median(times) / 1e3, 0.0), \
        "forward + cross-entropy + backward + AdamW step + zero_grad, train mode"


def measure_whatif(
    cfg: ModelConfig,
    wl: Workload,
    *,
    device: str = "cpu",
    implementations: Iterable[str] = DEFAULT_IMPLEMENTATIONS,
    phases: Iterable[str] = ("forward",),
    warmup: int = 1,
    repeats: int = 3,
    config_name: str = "",
    progress: Callable[[float, str], None] | None = None,
) -> list[ProfileRecord]:
    """One ``whatif`` row per (phase, implementation) (see the module docstring)."""
    impls = check_implementations(implementations)
    phases = tuple(phases)
    dev, name, provenance = timed_measurement_setup(wl, cfg, device=device, phases=phases, allowed=WHATIF_PHASES,
                                                    what="what-if", warmup=warmup, repeats=repeats)
    report = progress or (lambda fraction, message: None)
    tol = TOLERANCE.get(wl.dtype, 1e-4)
    rows: list[ProfileRecord] = []
    steps = len(phases) * len(impls)
    for pi, phase in enumerate(phases):
        reference: torch.Tensor | None = None
        base_ms: float | None = None
        ref_uncached = False
        for ii, impl in enumerate(impls):
            report((pi * len(impls) + ii) / steps, f"what-if {phase}: {impl}")
            label = WHATIF_LABEL if impl != "asbuilt" else "as built: what x-transformers 2.31 runs"
            base = base_fields(cfg, wl, config_name=config_name, measurement="whatif", phase=phase, device=dev,
                               device_name=name)
            reason = unsupported_reason(impl, phase, device=dev, cfg=cfg)
            if reason is not None:
                rows.append(ProfileRecord(**base, component=impl, status="error", error=reason, method=label,
                                          **provenance))
                continue
            try:
                logits, times, compile_s, how = _run_phase(impl, phase, cfg, wl, dev=dev, warmup=warmup,
                                                           repeats=repeats)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a row
                rows.append(failure_record(exc, cfg, wl, measurement="whatif", phase=phase, device=dev,
                                           device_name=name, config_name=config_name, component=impl,
                                           context=f"the {impl} what-if ({phase})", method=label, **provenance))
                continue
            median = statistics.median(times)
            if impl == "asbuilt":
                reference, base_ms, ref_uncached = logits, median, how.startswith("uncached")
            err = logits_rel_err(logits, reference) if reference is not None else None
            status, error = "ok", None
            if err is not None and err > tol:
                status, error = "error", (f"logits differ from as-built: relative error {err:.2e} > {tol:g} "
                                          f"({wl.dtype} tolerance): failed the same-model check")
                if phase == "decode" and cfg.shift_tokens > 0 and ref_uncached and "cached step" in how:
                    error += (". Cause: x-transformers 2.31's KV-cache path does not carry the token shift "
                              f"(shift_tokens={cfg.shift_tokens}): its own cached step differs from the full "
                              "forward by as much without FlexAttention (seed-no-alibi as built, toy size: 9e-2)")
            rows.append(ProfileRecord(
                **base, component=impl, status=status, error=error, **provenance,
                method=f"{label}; {how}; median of {repeats}",
                latency_min_ms=min(times), latency_median_ms=median, latency_max_ms=max(times),
                tokens_per_s=(wl.batch if phase == "decode" else wl.tokens) / (median / 1e3),
                logits_rel_err=err, speedup_vs_asbuilt=(base_ms / median) if base_ms else None,
                compile_s=compile_s if impl not in ("asbuilt", "cudnn") else None))
            del logits
    report(1.0, "what-if: done")
    return rows
