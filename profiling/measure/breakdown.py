"""Where the time goes: the measured latency of a forward or a training step split into parts of the model.

Parts (``component``), in the vocabulary of ``core.roofline.LATENCY_PARTS`` so that each measured part
joins its roofline prediction: ``embedding``, ``token_shift``, ``norms``, ``qkv_proj`` (``to_q``, ``to_k``,
``to_v`` and the head split), ``rotary`` (the rotary table and ``apply_rotary_pos_emb`` on q and k),
``alibi_bias`` (x-transformers' ``AlibiPositionalBias`` building the dense bias, and the pad copy of it in
``Attention.forward``), ``mask_prep`` (``Attend`` outside the kernel: causal mask, ``masked_fill`` of the
bias into the dense SDPA mask, the ``q * scale`` copy, K/V expansion), ``attention`` (the attention kernel
itself; ``method`` names it: the SDPA op that ran, or the einsum/softmax path), ``out_proj`` (head merge
and ``to_out``), ``feedforward``, ``residual`` (the residual add, with DeepNorm its scale), ``logits``;
a training step adds ``loss`` (cross-entropy), ``backward`` (every autograd node) and ``optimizer``
(``AdamW.step`` and ``zero_grad``). Measured-only parts: ``attention_other`` (the rest of
``Attention.forward``: head bookkeeping, concatenations), ``framework_other`` (the decoder loop and the
wrapper's own work) and ``remainder`` (the measured total less every part: time outside any profiled op;
on a GPU the time the GPU sits idle between kernels, i.e. launch and Python overhead). ``total`` is the
measured total. The parts and the remainder add up to it exactly; the named parts alone within 5% on a CPU
(``tests/profiling/test_breakdown.py``).

How: forward pre/post hooks on the model's modules (a freshly built model, never a shared one) open and
close ``torch.profiler.record_function`` ranges named after the part; for the duration of the measurement
``apply_rotary_pos_emb``, ``pad_at_dim`` (when called for the ALiBi bias in ``Attention.forward``) and
``AlibiPositionalBias.forward_custom_pos`` (a method, not a module call) are wrapped in ranges too (the
module-level functions are patched in x-transformers' module and restored on exit: do not run another
model in the same process meanwhile). ``torch.profiler`` records every op; each op's *self* time goes to the
innermost part range around it (an SDPA op and everything under it to ``attention``, every op run by the
autograd engine to ``backward``). On a CPU the ops are read from the profiler's raw events and nested by one
sort and one sweep per thread (``cpu_intervals``), not through ``prof.events()``, whose full event objects cost
more than the profiled calls themselves; ``attribute_events`` decides each op's part once per enclosing range
(linear in the number of ops).

* CPU: self CPU times of the profiled calls; ``total`` is the wall time of the same profiled calls
  (``time.perf_counter``), and a ``total_unprofiled`` row holds the median of unprofiled calls
  (the difference is the profiler's overhead, which the parts include).
* CUDA: self *device* (kernel) times; ``total`` is the median of unprofiled calls timed with CUDA events,
  and ``remainder`` the part of it no kernel ran in.

Times: the parts of the profiled call with the median wall time (so that they add up to its total), with
the min and max of each part over all ``repeats`` profiled calls beside them, after ``warmup`` calls.
Each part's row also carries its closed-form FLOPs (``predicted_flops``), minimum bytes moved
(``bytes_moved``) and roofline time on this device (``predicted_latency_ms``; ``core.roofline``), and the
achieved FLOP rate and fraction of peak when the part does matrix products.
"""

from __future__ import annotations

import bisect
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch.autograd import DeviceType
from xtlens.core.config import ModelConfig, Workload
from xtlens.core.roofline import LATENCY_PARTS, TRAIN_PARTS, part_costs
from xtlens.profiling.errors import ProfileError, failure_record
from xtlens.profiling.measure.sdpa import SDPA_OPS
from xtlens.profiling.results.records import ProfileRecord, base_fields
from xtlens.profiling.run.device import synchronize, time_calls, timed_measurement_setup

__all__ = ["BREAKDOWN_PHASES", "MEASURED_ONLY_PARTS", "CpuInterval", "PartLabeller", "attribute_events",
           "cpu_intervals", "measure_breakdown", "module_part", "profiled_events"]

BREAKDOWN_PHASES = ("forward", "train_step")
MEASURED_ONLY_PARTS = ("attention_other", "framework_other", "remainder")
_PREFIX = "xtlens::"
_ROOT = _PREFIX + "total"
_KERNEL_OP_PREFIXES = ("aten::scaled_dot_product_attention", "aten::_scaled_dot_product", "aten::_flash_attention",
                       "aten::_efficient_attention", "aten::_cudnn_attention")
# the einsum path of x-transformers' Attend (attn_flash=False): the attention itself
_EINSUM_PATH_OPS = ("aten::einsum", "aten::bmm", "aten::softmax", "aten::_softmax", "aten::matmul")

_BY_CLASS = {
    "TokenEmbedding": "embedding", "AbsolutePositionalEmbedding": "embedding", "ScaledSinusoidalEmbedding": "embedding",
    "ShiftTokens": "token_shift", "LayerNorm": "norms", "RMSNorm": "norms", "ScaleNorm": "norms",
    "RotaryEmbedding": "rotary", "AlibiPositionalBias": "alibi_bias", "Attend": "mask_prep",
    "FeedForward": "feedforward", "Residual": "residual", "GRUGating": "residual",
    "Attention": "attention_other", "Decoder": "framework_other", "AttentionLayers": "framework_other",
    "TransformerWrapper": "framework_other",
}
_BY_NAME = {"to_q": "qkv_proj", "to_k": "qkv_proj", "to_v": "qkv_proj", "split_q_heads": "qkv_proj",
            "split_k_heads": "qkv_proj", "split_v_heads": "qkv_proj", "to_out": "out_proj",
            "merge_heads": "out_proj", "to_logits": "logits"}


def module_part(qualified_name: str, module: torch.nn.Module) -> str | None:
    """The part a module's own work belongs to (None: it inherits its parent's part)."""
    leaf = qualified_name.rsplit(".", 1)[-1]
    if leaf in _BY_NAME:
        return _BY_NAME[leaf]
    cls = type(module).__name__
    if cls == "LayerNorm" and leaf == "ln":  # torch's LayerNorm inside x-transformers' LayerNorm
        return None
    return _BY_CLASS.get(cls)


def _layer_of(qualified_name: str) -> int | None:
    parts = qualified_name.split(".")
    for a, b in zip(parts, parts[1:], strict=False):
        if a == "layers" and b.isdigit():
            return int(b)
    return None


class PartLabeller:
    """Context manager: record_function ranges named ``xtlens::<part>`` (``xtlens::<part>@<layer>`` with
    ``per_layer``) around every labelled module of ``model`` and around x-transformers' rotary and ALiBi
    helpers (see the module docstring). ``model`` must be one the caller owns."""

    def __init__(self, model: torch.nn.Module, *, per_layer: bool = False):
        self.model = model
        self.per_layer = per_layer
        self._handles: list = []
        self._stack: list[tuple[str, object]] = []
        self._restore: list[Callable[[], None]] = []

    def _label(self, part: str, layer: int | None) -> str:
        return f"{_PREFIX}{part}" + (f"@{layer}" if self.per_layer and layer is not None else "")

    def _enter(self, label: str) -> None:
        rf = torch.autograd.profiler.record_function(label)
        rf.__enter__()
        self._stack.append((label, rf))

    def _exit(self) -> None:
        _label, rf = self._stack.pop()
        rf.__exit__(None, None, None)

    def _current_part(self) -> str | None:
        return self._stack[-1][0].removeprefix(_PREFIX).split("@")[0] if self._stack else None

    def _current_layer(self) -> int | None:
        if not self._stack or "@" not in self._stack[-1][0]:
            return None
        return int(self._stack[-1][0].rsplit("@", 1)[1])

    def __enter__(self) -> PartLabeller:
        import x_transformers.x_transformers as xt

        for qname, module in self.model.named_modules():
            part = module_part(qname, module)
            if part is None:
                continue
            label = self._label(part, _layer_of(qname))
            self._handles.append(module.register_forward_pre_hook(lambda m, a, _l=label: self._enter(_l)))
            self._handles.append(module.register_forward_hook(lambda m, a, o: self._exit()))
            if part == "alibi_bias" and hasattr(module, "forward_custom_pos"):
                original = module.forward_custom_pos

                def custom_pos(*args, _orig=original, _l=label, **kwargs):
                    self._enter(_l)
                    try:
                        return _orig(*args, **kwargs)
                    finally:
                        self._exit()

                module.forward_custom_pos = custom_pos  # instance attribute: this model only
                self._restore.append(lambda m=module: m.__dict__.pop("forward_custom_pos", None))

        def wrap_global(name: str, part_for: Callable[[str | None], str | None]) -> None:
            original = getattr(xt, name)

            def wrapped(*args, **kwargs):
                part = part_for(self._current_part())
                if part is None:
                    return original(*args, **kwargs)
                self._enter(self._label(part, self._current_layer()))
                try:
                    return original(*args, **kwargs)
                finally:
                    self._exit()

            setattr(xt, name, wrapped)
            self._restore.append(lambda: setattr(xt, name, original))

        wrap_global("apply_rotary_pos_emb", lambda current: "rotary")
        # pad_at_dim in Attention.forward's own code is the ALiBi bias pad copy (no memory K/V here)
        wrap_global("pad_at_dim", lambda current: "alibi_bias" if current == "attention_other" else None)
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        while self._stack:  # a forward that raised left ranges open
            self._exit()
        for undo in reversed(self._restore):
            undo()
        self._restore.clear()


# --------------------------------------------------------------------------------------------------
# attribution of profiler events
# --------------------------------------------------------------------------------------------------


def _is_kernel_op(name: str) -> bool:
    return name.startswith(_KERNEL_OP_PREFIXES)


_BACKWARD_NODE = "autograd::engine::evaluate_function"


def _decides(name: str) -> bool:
    """An event whose name fixes the part of everything under it (the innermost such wins)."""
    return (name.startswith(_BACKWARD_NODE) or _is_kernel_op(name) or (name.startswith(_PREFIX) and name != _ROOT)
            or name.startswith("Optimizer."))


def attribute_events(events, *, device_time: bool, einsum_attention: bool) -> tuple[list[dict[str, float]], set[str]]:
    """Per ``xtlens::total`` range (one per profiled call, in order): ``{part: microseconds}`` of the self
    times of the events under it, and the names of the attention-kernel ops seen.

    ``events``: ``torch.profiler.profile(...).events()`` or ``cpu_intervals(...)`` (objects with ``name``,
    ``cpu_parent`` links, ``self_cpu_time_total`` / ``self_device_time_total`` in microseconds, ``device_type``,
    ``time_range``). ``device_time``: use self device (kernel) time instead of self CPU time.
    ``einsum_attention``: the model computes attention with einsum/softmax (``attn_flash=False``), whose ops
    inside ``Attend`` are the attention kernel. Each event's part is decided by the innermost deciding event
    around it (a part range, an attention-kernel op, an autograd node, the optimizer); the context of every
    event (its outermost ``xtlens::total``, whether it is under an autograd node, its deciding event) is
    computed once and shared with its children, so the attribution is linear in the number of events
    (ops of the autograd thread are matched to their call by bisection). Pure over the event objects (tests
    pass simple stand-ins).
    """
    roots: dict[int, int] = {}
    calls: list[dict[str, float]] = []
    kernels: set[str] = set()
    events = [ev for ev in events
              # GPU-side copies of user annotations: their time is counted on the CPU-side op
              if not (getattr(ev, "device_type", None) is not None and str(ev.device_type).endswith("CUDA"))]
    spans = sorted(((lo, hi, index, ev) for index, ev in enumerate(events) if ev.name == _ROOT
                    for lo, hi in (_span(ev),) if lo is not None), key=lambda s: (s[0], s[2]))
    span_starts = [s[0] for s in spans]
    # id(event) -> (outermost xtlens::total above or at it, under an autograd node?, innermost deciding event)
    context: dict[int, tuple[object, bool, object]] = {}

    def context_of(ev) -> tuple[object, bool, object]:
        path = []
        node = ev
        while node is not None and id(node) not in context:
            path.append(node)
            node = node.cpu_parent
        root, backward, decider = context[id(node)] if node is not None else (None, False, None)
        for n in reversed(path):  # outermost first
            if root is None and n.name == _ROOT:
                root = n
            backward = backward or n.name.startswith(_BACKWARD_NODE)
            if _decides(n.name):
                decider = n
            context[id(n)] = (root, backward, decider)
        return context[id(ev)]

    for ev in events:
        root, backward, decider = context_of(ev)
        if root is None and backward:
            # On CUDA the autograd engine runs the backward in its own thread: its ops have no xtlens root.
            # They belong to the call whose root range holds their start.
            start = _span(ev)[0]
            if start is not None:
                i = bisect.bisect_right(span_starts, start) - 1
                if i >= 0 and start <= spans[i][1]:
                    root = spans[i][3]
        if root is None:
            continue
        index = roots.setdefault(id(root), len(roots))
        while len(calls) <= index:
            calls.append(defaultdict(float))
        us = ev.self_device_time_total if device_time else ev.self_cpu_time_total
        if not us:
            continue
        calls[index][_part(decider, ev, kernels, einsum_attention)] += us
    return [dict(c) for c in calls], kernels


def _part(decider, ev, kernels: set[str], einsum_attention: bool) -> str:
    if decider is None:
        return "framework_other"
    name = decider.name
    if name.startswith(_BACKWARD_NODE):
        return "backward"
    if _is_kernel_op(name):
        kernels.add(name)
        return "attention"
    if name.startswith(_PREFIX):
        part = name.removeprefix(_PREFIX)
        if einsum_attention and part.split("@")[0] == "mask_prep" and ev.name in _EINSUM_PATH_OPS:
            kernels.add(ev.name)
            return part.replace("mask_prep", "attention", 1)
        return part
    return "optimizer"  # Optimizer.*


# names torch.profiler leaves out of its events (torch.autograd.profiler_util._filter_name)
_UNLISTED_OPS = frozenset({"[memory]", "[OutOfMemory]", "profiler::_record_function_enter",
                           "profiler::_record_function_enter_new", "profiler::_record_function_exit",
                           "aten::is_leaf", "aten::output_nr", "aten::_version"})


@dataclass(eq=False, slots=True)
class CpuInterval:
    """One op or range on a CPU thread, from the profiler's raw (kineto) events: what ``attribute_events``
    reads of a ``FunctionEvent``, without building one. Times in nanoseconds; ``*_total`` in microseconds."""

    name: str
    start_ns: int
    end_ns: int
    cpu_parent: CpuInterval | None = None
    children_ns: int = 0
    device_type: ClassVar[None] = None
    self_device_time_total: ClassVar[float] = 0.0

    @property
    def self_cpu_time_total(self) -> float:
        return (self.end_ns - self.start_ns - self.children_ns) / 1e3

    @property
    def time_range(self) -> _Range:
        return _Range(self.start_ns / 1e3, self.end_ns / 1e3)


@dataclass(frozen=True, slots=True)
class _Range:
    start: float
    end: float


def cpu_intervals(raw_events) -> list[CpuInterval]:
    """The synchronous CPU events of ``raw_events`` (``prof.profiler.kineto_results.events()``: objects with
    ``name()``, ``start_ns()``, ``end_ns()``, ``device_type()``, ``start_thread_id()``, ``end_thread_id()``,
    ``is_async()``) nested as ``torch.profiler`` nests them (an interval is the child of the innermost one on
    its thread that contains it), each with its parent and its direct children's total time: per thread one
    sort by (start, -end) and one sweep with a stack, O(n log n). Returned in (start, -end) order.

    ``prof.events()`` builds the same tree from full ``FunctionEvent`` objects (shapes, stacks, memory,
    several passes): for a training step of a small model on a CPU that took most of a breakdown's time."""
    by_thread: dict[int, list[CpuInterval]] = defaultdict(list)
    for ev in raw_events:
        name = ev.name()
        if (name in _UNLISTED_OPS or ev.device_type() != DeviceType.CPU or ev.is_async()
                or ev.start_thread_id() != ev.end_thread_id()):
            continue
        by_thread[ev.start_thread_id()].append(CpuInterval(name=name, start_ns=ev.start_ns(), end_ns=ev.end_ns()))
    out: list[CpuInterval] = []
    for intervals in by_thread.values():
        intervals.sort(key=lambda iv: (iv.start_ns, -iv.end_ns))
        open_: list[CpuInterval] = []
        for iv in intervals:
            while open_ and (iv.start_ns >= open_[-1].end_ns or iv.end_ns > open_[-1].end_ns):
                open_.pop()
            if open_:
                iv.cpu_parent = open_[-1]
                open_[-1].children_ns += iv.end_ns - iv.start_ns
            open_.append(iv)
        out += intervals
    out.sort(key=lambda iv: (iv.start_ns, -iv.end_ns))
    return out


def profiled_events(prof, *, device_time: bool) -> list:
    """The events ``attribute_events`` reads: ``cpu_intervals`` of the raw events for CPU times, torch's
    ``FunctionEvent`` list (with the kernels linked to their ops) for device times."""
    if device_time:
        return list(prof.events())
    return cpu_intervals(prof.profiler.kineto_results.events())


def _span(ev) -> tuple[float | None, float | None]:
    """(start, end) of an event in microseconds (``FunctionEvent.time_range``), or (None, None)."""
    tr = getattr(ev, "time_range", None)
    return (tr.start, tr.end) if tr is not None else (None, None)


def _kernel_label(kernels: set[str]) -> str:
    names = sorted({k.removeprefix("aten::") for k in kernels if k.removeprefix("aten::") in SDPA_OPS}
                   or {k.removeprefix("aten::") for k in kernels})
    return "+".join(names) or "none"


# --------------------------------------------------------------------------------------------------
# measure_breakdown
# --------------------------------------------------------------------------------------------------


def _profile_calls(call: Callable[[], None], *, dev: str, warmup: int, repeats: int) -> tuple[object, list[float]]:
    from torch.profiler import ProfilerActivity, profile, record_function

    for _ in range(warmup):
        call()
    synchronize(dev)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.startswith("cuda") else [])
    walls: list[float] = []
    with profile(activities=activities) as prof:
        for _ in range(repeats):
            synchronize(dev)
            t0 = time.perf_counter()
            with record_function(_ROOT):
                call()
            synchronize(dev)
            walls.append((time.perf_counter() - t0) * 1e3)
    return prof, walls


def measure_breakdown(
    cfg: ModelConfig,
    wl: Workload,
    *,
    device: str = "cpu",
    phases: tuple[str, ...] = BREAKDOWN_PHASES,
    warmup: int = 1,
    repeats: int = 3,
    per_layer: bool = False,
    config_name: str = "",
    progress: Callable[[float, str], None] | None = None,
) -> list[ProfileRecord]:
    """Rows ``measurement="breakdown"``: per phase a ``total`` row and one row per part (see the module
    docstring). A phase that fails becomes one ``oom``/``error`` row."""
    dev, name, provenance = timed_measurement_setup(wl, cfg, device=device, phases=tuple(phases),
                                                    allowed=BREAKDOWN_PHASES, what="breakdown", warmup=warmup,
                                                    repeats=repeats)
    report = progress or (lambda fraction, message: None)
    rows: list[ProfileRecord] = []
    for i, phase in enumerate(phases):
        report(i / len(phases), f"breakdown {phase}: building the model and profiling")
        try:
            rows += _measure_phase(phase, cfg, wl, dev=dev, name=name, warmup=warmup, repeats=repeats,
                                   per_layer=per_layer, config_name=config_name, provenance=provenance)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a row
            rows.append(failure_record(exc, cfg, wl, measurement="breakdown", phase=phase, device=dev,
                                       device_name=name, config_name=config_name,
                                       context=f"the {phase} latency breakdown", **provenance))
        report((i + 1) / len(phases), f"breakdown {phase}: done")
    return rows


def _measure_phase(phase: str, cfg: ModelConfig, wl: Workload, *, dev: str, name: str, warmup: int, repeats: int,
                   per_layer: bool, config_name: str, provenance: dict) -> list[ProfileRecord]:
    from xtlens.core.builder import build_model
    from xtlens.profiling.measure.roofline import hardware_for

    model = build_model(cfg, device=dev, dtype=wl.dtype, seed=0).model
    gen = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(0, cfg.num_tokens, (wl.batch, wl.seq_len), generator=gen).to(dev)
    cuda = dev.startswith("cuda")
    if phase == "forward":
        def call() -> None:
            with torch.no_grad():
                model(ids)
    else:
        from torch.profiler import record_function

        model.train()
        targets = torch.randint(0, cfg.num_tokens, (wl.batch * wl.seq_len,), generator=gen).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def call() -> None:
            logits = model(ids)
            with record_function(_PREFIX + "loss"):
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets)
            with record_function(_PREFIX + "backward"):
                loss.backward()
            with record_function(_PREFIX + "optimizer"):
                opt.step()
                opt.zero_grad(set_to_none=True)

    unprofiled = time_calls(call, device=dev, warmup=warmup, repeats=repeats)
    with PartLabeller(model, per_layer=per_layer):
        prof, walls = _profile_calls(call, dev=dev, warmup=0, repeats=repeats)
    calls, kernels = attribute_events(profiled_events(prof, device_time=cuda), device_time=cuda,
                                      einsum_attention=not cfg.attn_flash)
    if len(calls) != repeats:
        raise ProfileError(f"the profiler recorded {len(calls)} of {repeats} calls; cannot attribute the parts.")
    # the parts of one call, the call whose wall time is the median: its parts and the remainder add up to
    # its total exactly (medians taken part by part would not add up); min and max per part over all calls
    chosen = sorted(range(repeats), key=lambda k: walls[k])[(repeats - 1) // 2]
    total_ms = statistics.median(unprofiled) if cuda else walls[chosen]
    totals = unprofiled if cuda else walls
    parts = sorted({p for c in calls for p in c})
    per_part = {p: [c.get(p, 0.0) / 1e3 for c in calls] for p in parts}
    order = {p: i for i, p in enumerate(LATENCY_PARTS + TRAIN_PARTS + MEASURED_ONLY_PARTS)}
    parts.sort(key=lambda p: (order.get(p.split("@")[0], 99), int(p.split("@")[1]) if "@" in p else -1))
    chosen_ms = {p: per_part[p][chosen] for p in parts}
    remainder = total_ms - sum(chosen_ms.values())

    hw = hardware_for(dev, name, dtype=wl.dtype)
    costs = {c.component: c for c in part_costs(cfg, wl, phase=phase)}
    kernel = _kernel_label(kernels)
    clock = ("self device (kernel) time per part from torch.profiler; total: unprofiled calls timed with CUDA events"
             if cuda else "self CPU time per part from torch.profiler; total: wall time of the same profiled calls")
    base = base_fields(cfg, wl, config_name=config_name, measurement="breakdown", phase=phase, device=dev,
                       device_name=name)
    rows = [ProfileRecord(**base, component="total", **provenance, sdpa_backend=kernel,
                          method=f"{phase} latency breakdown; {clock}; median of {repeats}",
                          latency_min_ms=min(totals), latency_median_ms=total_ms, latency_max_ms=max(totals),
                          tokens_per_s=wl.tokens / (total_ms / 1e3),
                          predicted_latency_ms=_roofline_ms(list(costs.values()), hw, wl.dtype))]
    if not cuda:
        rows.append(ProfileRecord(**base, component="total_unprofiled", **provenance,
                                  method="the same calls without the profiler (time.perf_counter): the difference "
                                         "to total is the profiler's overhead, which the parts include",
                                  latency_min_ms=min(unprofiled), latency_median_ms=statistics.median(unprofiled),
                                  latency_max_ms=max(unprofiled)))
    for part in parts:
        values = per_part[part]
        median = chosen_ms[part]
        cost = costs.get(part.split("@")[0]) if "@" not in part else None
        what = f"attention kernel: {kernel}" if part.split("@")[0] == "attention" else _PART_TEXT.get(
            part.split("@")[0], "")
        rows.append(ProfileRecord(
            **base, component=part, **provenance, sdpa_backend=kernel if part == "attention" else None,
            method=f"{what}; {clock.split(';')[0]}; the median call of {repeats}",
            latency_min_ms=min(values), latency_median_ms=median, latency_max_ms=max(values),
            **_cost_columns(cost, median, hw, wl.dtype)))
    rows.append(ProfileRecord(
        **base, component="remainder", **provenance,
        method=("GPU idle: wall time in which no kernel ran (launch and Python overhead)" if cuda else
                "wall time outside every profiled op (total less the sum of the parts' medians)"),
        latency_median_ms=remainder))
    return rows


_PART_TEXT = {
    "embedding": "token embedding lookup", "token_shift": "ShiftTokens (token shifting, not the target shift)",
    "norms": "LayerNorms", "qkv_proj": "to_q, to_k, to_v and the head split", "rotary":
    "rotary table and its application to q and k", "alibi_bias": "x-transformers building the dense ALiBi bias "
    "(position differences, slopes, head padding, the pad copy)", "mask_prep": "Attend outside the kernel: causal "
    "mask, masked_fill of the bias into the dense SDPA mask, q scaling, K/V expansion",
    "out_proj": "head merge and to_out", "feedforward": "feed-forward block", "residual": "residual add (DeepNorm: "
    "with its scale)", "logits": "to_logits", "loss": "cross-entropy", "backward": "every autograd node of "
    "loss.backward()", "optimizer": "AdamW.step and zero_grad", "attention_other": "rest of Attention.forward "
    "(head bookkeeping, concatenations)", "framework_other": "the decoder loop's and the wrapper's own work",
}


def _roofline_ms(costs, hw, dtype: str) -> float | None:
    if hw is None or hw.peak(dtype) is None:
        return None
    return 1e3 * sum(c.time_s(hw, dtype) for c in costs)


def _cost_columns(cost, measured_ms: float, hw, dtype: str) -> dict:
    if cost is None:
        return {}
    out: dict = {"predicted_flops": cost.flops, "bytes_moved": cost.bytes}
    if hw is not None and hw.peak(dtype) is not None:
        out["predicted_latency_ms"] = 1e3 * cost.time_s(hw, dtype)
    if cost.flops and measured_ms > 0:
        out["achieved_flops_per_s"] = cost.flops / (measured_ms / 1e3)
        peak = hw.peak(dtype) if hw is not None else None
        if peak:
            out["peak_fraction"] = out["achieved_flops_per_s"] / peak
    return out

