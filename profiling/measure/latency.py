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
the datasheet dense peak of a known GPU (``profiling.run.device.PEAK_FLOPS_PER_S``), None on a CPU.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from xtlens.core.config import ModelConfig, Workload
from xtlens.core.cost_model import decode_flops, flop_counts, fused_sdpa_backward, train_step_flops
from xtlens.profiling.errors import ProfileError, failure_record
from xtlens.profiling.measure.sdpa import (
    FORCEABLE,
    SdpaProbe,
    attend_modules,
    explain_backend,
    force_sdpa_backend,
)
from xtlens.profiling.results.records import ProfileRecord, base_fields
from xtlens.profiling.run.device import device_name as _device_name
from xtlens.profiling.run.device import peak_flops_per_s, resolve_device, time_calls, versions

__all__ = ["PHASES", "time_calls", "measure_latency"]

PHASES = ("forward", "attention", "train_step", "decode")

# --------------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------------


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

    def _post(self, module, args, _output):
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


def _phase_flops(phase: str, cfg: ModelConfig, wl: Workload, *, fused: bool, causal: bool,
                 context_tokens: int) -> tuple[int, str]:
    if phase == "decode":
        return decode_flops(cfg, batch=wl.batch, context_tokens=context_tokens), "decode_flops (one token, cached)"
    fc = flop_counts(cfg, wl)
    square = "causal half" if causal else "full square"
    if phase == "forward":
        return (fc.fwd_flops_causal if causal else fc.fwd_flops), f"fwd_flops ({square})"
    if phase == "attention":
        return (fc.attn_flops_causal if causal else fc.attn_flops), f"attn_flops ({square})"
    flops = train_step_flops(fc, fused_backward=fused, causal=causal)
    if fused:
        return flops, f"3 x fwd_flops + attn_flops / 2 (fused SDPA backward recomputes scores; {square})"
    return flops, f"3 x fwd_flops ({square})"


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
    if sdpa_backend is not None and sdpa_backend not in FORCEABLE:
        raise ProfileError(f"Unknown SDPA backend {sdpa_backend!r}: choose one of {', '.join(FORCEABLE)} (or none).")
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


def _machine_state() -> str:
    """Thread count and machine load when the point was timed: a busy machine explains a noisy timing."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, load average (1 min) {load:.2f}"


def _method(phase: str, dev: str, *, forced: str | None, flops_basis: str = "", context: int | None = None) -> str:
    clock = "torch.cuda.Event pairs" if dev.startswith("cuda") else "time.perf_counter"
    what = {
        "forward": "model(ids) under no_grad, eval mode",
        "attention": "Attend modules timed by forward hooks inside a real forward, summed over blocks",
        "train_step": "forward + cross-entropy + backward + AdamW step + zero_grad, train mode",
        "decode": f"one cached decoding step per repeat from a {context}-token prefix cache",
    }[phase]
    text = f"{what}; {clock}; {_machine_state()}"
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
                timer = _AttendTimer(attend_modules(model), dev)
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
    fused = fused_sdpa_backward(cfg, backend)
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

