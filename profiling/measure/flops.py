"""Measured FLOP counts of the real x-transformers model: torch's ``FlopCounterMode`` and fvcore.

Two independent counters, cross-checked against the closed form of ``core.cost_model``:

* ``torch_flop_count``: ``torch.utils.flop_counter.FlopCounterMode`` on the real model built inside a
  ``FakeTensorMode`` (parameters and activations are fake: shapes only, no memory, no arithmetic), so the
  seed at 8192 tokens counts in about a second. The meta device fails inside x-transformers; fake tensors
  work. torch has NO flop formula for ``aten._scaled_dot_product_flash_attention_for_cpu`` (what SDPA
  lowers to on CPU and under fake tensors) and would silently count attention as 0: ``SDPA_FLOP_FORMULAS``
  supplies it and its backward (and the other SDPA variants torch 2.13 lacks: the overrideable fused
  kernel and MPS math), passed to ``FlopCounterMode(custom_mapping=...)``; ``register_sdpa_flop_formulas``
  also registers them globally for other users. The CUDA flash / efficient / cuDNN variants are registered
  by torch itself. All count the full ``n * n`` square (torch's convention).
* ``fvcore_flop_count``: fvcore's ``FlopCountAnalysis`` (a ``torch.jit.trace`` of a real forward, so small
  sequence lengths only) with a handle for ``aten::scaled_dot_product_attention``, which fvcore lacks.
  The handle counts the full square (``b * h * n_q * n_k * (d_qk + d_v)`` multiply-adds, with or without a
  mask, causal or not), since that is what the kernel computes with the dense ALiBi mask; for a plain
  ``is_causal=True`` call a causal flash kernel does about half of it. fvcore's raw numbers are multiply-adds
  (``*_macs``); ``*_flops = 2 * macs``. fvcore also counts layer norms (4 or 5 per element) and einsum
  outer products (the rotary frequency table), which torch does not: ``FlopCrossCheck`` quantifies them.
* ``flop_polynomials`` / ``fvcore_flop_count_extrapolated`` / ``torch_flop_count_extrapolated``: both
  counters at long sequences without a long forward. For a fixed batch every operator, module and
  unsupported-call count is a polynomial of degree <= 2 in the sequence length ``n`` (linear layers, norms
  and the rotary outer product are linear in ``n``, attention is quadratic, nothing is constant but it is
  allowed). The model is built once with zero weights (``counting_model``: the real structure and buffers,
  every random initialiser replaced by zeros, so the full vocabulary costs no initialisation) and traced
  by fvcore at three short lengths with ``FlopCounterMode`` active during the same traced forward (one
  forward feeds both counters); every table is interpolated exactly (rational Lagrange interpolation),
  checked to reproduce an exact fourth trace (``ValueError`` otherwise), and the fit is cached per
  (configuration, batch) in the process, so a sweep over lengths traces four times in all.
  One known inexactness: fvcore's ``einsum`` handle uses numpy's ``einsum_path`` cost estimate, printed to
  four digits, which is not exactly polynomial in ``n``; for the rotary outer product at 8192 tokens the
  extrapolation gives 65,536 multiply-adds where a real trace gives 65,550 (14 of ~6.3e11 for the seed,
  below 1e-10). Where the rounding already shows at 32 tokens (einsum attention, ``rel_pos_bias``,
  hyper-connections) the check fails: fvcore's extrapolation raises ``ValueError`` (as it always did) and
  torch's, exact, still stands.

Everything returns frozen dataclasses with unit-suffixed fields; nothing prints.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from types import MappingProxyType

import torch
from torch import nn
from torch.nn import init
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import (
    FlopCounterMode,
    flop_registry,
    register_flop_formula,
    sdpa_backward_flop_count,
)
from xtlens.core import cost_model
from xtlens.core.builder import build_model, fake_model
from xtlens.core.config import ModelConfig, Workload
from xtlens.profiling.errors import ProfileError
from xtlens.profiling.results.records import ProfileRecord, base_fields, rel_err

__all__ = [
    "TorchFlopCount",
    "FvcoreFlopCount",
    "FlopCrossCheck",
    "SDPA_FLOP_FORMULAS",
    "register_sdpa_flop_formulas",
    "fake_model",
    "torch_flop_count",
    "fvcore_sdpa_flop_jit",
    "FVCORE_EXTRA_HANDLES",
    "fvcore_flop_count",
    "fvcore_flop_count_extrapolated",
    "counting_model",
    "FlopPolynomials",
    "flop_polynomials",
    "torch_flop_count_extrapolated",
    "cross_check",
    "FLOPS_PHASES",
    "leaves",
    "breakdown_records",
    "measure_flops",
]


# fvcore operators that do matrix-multiply work (the rest it counts are norms etc.)
FVCORE_MATMUL_OPS = ("linear", "matmul", "addmm", "mm", "bmm", "scaled_dot_product_attention")


# --------------------------------------------------------------------------------------------------
# SDPA formulas for torch's FlopCounterMode
# --------------------------------------------------------------------------------------------------


def _sdpa_shapes_flops(query_shape, key_shape, value_shape) -> int:
    """Full-square SDPA forward FLOPs for any number of leading (batch/head) dims and broadcast K/V heads:
    ``2 * prod(q.shape[:-2]) * n_q * n_k * (d_qk + d_v)``."""
    *lead, n_q, d_qk = query_shape
    n_k, d_v = key_shape[-2], value_shape[-1]
    return 2 * math.prod(lead) * n_q * n_k * (d_qk + d_v)


def _sdpa_fwd_flop(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    """SDPA forward on CPU / MPS / overrideable backends: scores ``Q K^T`` plus values ``P V``, full square."""
    return _sdpa_shapes_flops(query_shape, key_shape, value_shape)


def _sdpa_cpu_bwd_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    """CPU flash SDPA backward: torch's own SDPA backward count (recomputes ``Q K^T``, then dV, dP, dQ, dK:
    5 matmuls = 2.5x the forward)."""
    if len(query_shape) == 4:
        return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)
    return _sdpa_shapes_flops(query_shape, key_shape, value_shape) * 5 // 2


def _sdpa_overrideable_bwd_flop(grad_out_shape, query_shape, key_shape, value_shape, *args,
                                **kwargs) -> int:
    return _sdpa_cpu_bwd_flop(grad_out_shape, query_shape, key_shape, value_shape)


def _sdpa_targets() -> dict[object, Callable[..., int]]:
    aten = torch.ops.aten
    wanted = {
        "_scaled_dot_product_flash_attention_for_cpu": _sdpa_fwd_flop,
        "_scaled_dot_product_flash_attention_for_cpu_backward": _sdpa_cpu_bwd_flop,
        "_scaled_dot_product_fused_attention_overrideable": _sdpa_fwd_flop,
        "_scaled_dot_product_fused_attention_overrideable_backward": _sdpa_overrideable_bwd_flop,
        "_scaled_dot_product_attention_math_for_mps": _sdpa_fwd_flop,
    }
    return {getattr(aten, name): fn for name, fn in wanted.items() if hasattr(aten, name)}


SDPA_FLOP_FORMULAS: dict[object, Callable[..., int]] = _sdpa_targets()
"""Formulas for the SDPA ops torch's ``flop_registry`` lacks (keys: ``torch.ops.aten`` packets)."""


def register_sdpa_flop_formulas() -> tuple[str, ...]:
    """Register ``SDPA_FLOP_FORMULAS`` in torch's global ``flop_registry`` where missing (idempotent).

    Returns the names newly registered. The counters in this module do not depend on it (they pass the
    formulas as ``custom_mapping``); it is for code that uses a bare ``FlopCounterMode``.
    """
    added = []
    for op, fn in SDPA_FLOP_FORMULAS.items():
        if op not in flop_registry:
            register_flop_formula(op)(fn)
            added.append(str(op))
    return tuple(added)


# --------------------------------------------------------------------------------------------------
# torch FlopCounterMode on a fake model
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TorchFlopCount:
    """``FlopCounterMode`` result (2 FLOPs per multiply-add, matmuls and SDPA only).

    ``by_operator_flops``: aten op name -> FLOPs (whole model). ``by_module_flops``: module path (as
    FlopCounterMode names it, e.g. ``TransformerWrapper.attn_layers.layers.0.1``) -> FLOPs.
    ``attention_flops``: the SDPA ops plus ``bmm`` (the non-flash ``einsum`` path). ``train_step``: the
    count covers forward + backward of ``logits.sum()``.
    """

    total_flops: int
    attention_flops: int
    by_operator_flops: dict[str, int]
    by_module_flops: dict[str, int]
    train_step: bool
    batch: int
    seq_len_tokens: int
    dtype: str
    method: str
    elapsed_s: float


def _op_name(op: object) -> str:
    return str(op).removeprefix("aten.")


def torch_flop_count(cfg: ModelConfig, wl: Workload, *, train_step: bool = False) -> TorchFlopCount:
    """Count FLOPs of a forward (``no_grad``, eval) or a training step (``train()``, forward + backward of
    ``logits.sum()``) of the real model under fake tensors, with the SDPA formulas torch lacks."""
    start = time.perf_counter()
    with fake_model(cfg, wl.dtype) as (model, _mode):
        ids = torch.randint(0, cfg.num_tokens, (wl.batch, wl.seq_len))
        counter = FlopCounterMode(display=False, custom_mapping=SDPA_FLOP_FORMULAS)
        if train_step:
            model.train()
            with counter:
                model(ids).sum().backward()
        else:
            with counter, torch.no_grad():
                model(ids)
    by_op, by_module = _torch_tables(counter)
    return _torch_result(by_op, by_module, wl, train_step=train_step,
                         method="torch.utils.flop_counter.FlopCounterMode under FakeTensorMode (+ SDPA_FLOP_FORMULAS)",
                         start=start)


# FlopCounterMode names the modules of a ``torch.jit`` trace under the tracer's wrapper
_TRACED_ROOT = "ONNXTracedModule"
_TRACED_INNER = _TRACED_ROOT + ".inner"


def _torch_tables(counter: FlopCounterMode, *, traced_root: str | None = None) -> tuple[dict[str, int], dict[str, int]]:
    """``(by_operator_flops, by_module_flops)`` of a finished counter. ``traced_root``: the counter ran
    during a ``torch.jit`` trace of a model of that class; its module names are given back as a direct
    count names them (``ONNXTracedModule.inner.x`` -> ``<traced_root>.x``, the tracer's wrapper dropped)."""
    counts = counter.get_flop_counts()
    by_op = {_op_name(k): int(v) for k, v in counts.get("Global", {}).items()}
    by_module = {name: int(sum(ops.values())) for name, ops in counts.items() if name != "Global"}
    if traced_root is not None:
        if by_module and _TRACED_INNER not in by_module:
            raise ProfileError(f"FlopCounterMode named the traced modules {sorted(by_module)[:3]}, not "
                               f"{_TRACED_INNER}.*: this torch version wraps traced modules differently.")
        by_module = {traced_root + name.removeprefix(_TRACED_INNER): v for name, v in by_module.items()
                     if name.startswith(_TRACED_INNER)}
    return by_op, by_module


def _torch_result(by_op: dict[str, int], by_module: dict[str, int], wl: Workload, *, train_step: bool,
                  method: str, start: float) -> TorchFlopCount:
    attention = sum(v for k, v in by_op.items() if "scaled_dot_product" in k or k.startswith("bmm"))
    return TorchFlopCount(
        total_flops=sum(by_op.values()),
        attention_flops=attention,
        by_operator_flops=by_op,
        by_module_flops=by_module,
        train_step=train_step,
        batch=wl.batch,
        seq_len_tokens=wl.seq_len,
        dtype=wl.dtype,
        method=method,
        elapsed_s=time.perf_counter() - start,
    )


# --------------------------------------------------------------------------------------------------
# fvcore
# --------------------------------------------------------------------------------------------------


def fvcore_sdpa_flop_jit(inputs: list, outputs: list) -> int:
    """fvcore handle for ``aten::scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal,
    scale, enable_gqa)``: multiply-adds of ``Q K^T`` and ``P V`` over the full square,
    ``prod(q.shape[:-2]) * n_q * n_k * (d_qk + d_v)``, whatever the mask or ``is_causal``."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(inputs[i]) for i in range(3))
    return _sdpa_shapes_flops(q, k, v) // 2


def fvcore_matmul_flop_jit(inputs: list, outputs: list) -> int:
    """fvcore handle for ``aten::matmul`` that also takes 1-D operands (fvcore 0.1.5's own asserts 2-D and
    fails on hyper-connections' ``(b, n, s, d) @ (d,)``, x_transformers.py:1442): multiply-adds
    ``prod(output.shape) * k``, ``k`` the contracted size. torch's FlopCounterMode counts no
    matrix-vector product (``aten.mv``); ``cost_model`` reports those as
    ``hyper_connection_mv_flops_uncounted``."""
    from fvcore.nn.jit_handles import get_shape

    a, out = get_shape(inputs[0]), get_shape(outputs[0])
    k = a[-1]
    return math.prod(out) * k


FVCORE_EXTRA_HANDLES: dict[str, Callable[[list, list], int]] = {
    "aten::scaled_dot_product_attention": fvcore_sdpa_flop_jit,
    "aten::matmul": fvcore_matmul_flop_jit,
}
"""Handles added to fvcore for ops that do matmul work and that fvcore 0.1.5 lacks or miscounts."""


@dataclass(frozen=True, kw_only=True)
class FvcoreFlopCount:
    """fvcore ``FlopCountAnalysis`` result: raw multiply-adds (``*_macs``) and ``*_flops = 2 * macs``.

    ``unsupported_ops``: op -> number of calls fvcore skipped (as ``unsupported_ops()`` reports them;
    element-wise ops, embedding). ``uncalled_modules``: as ``uncalled_modules()`` reports them.
    ``matmul_macs``: the operators that do matmul work (``FVCORE_MATMUL_OPS``); ``extra_macs``: the rest
    fvcore counts (layer norms, einsum outer products), which torch's convention leaves out.
    ``method``: ``trace`` (one traced real forward) or ``extrapolated`` (see module docstring).
    """

    total_macs: int
    total_flops: int
    matmul_macs: int
    extra_macs: int
    by_operator_macs: dict[str, int]
    by_module_macs: dict[str, int]
    unsupported_ops: dict[str, int]
    uncalled_modules: tuple[str, ...]
    handles_added: tuple[str, ...]
    batch: int
    seq_len_tokens: int
    method: str
    probe_seq_lens: tuple[int, ...]
    elapsed_s: float


def _as_int(x: float | int | Fraction) -> int:
    value = Fraction(x)
    if value.denominator != 1:
        raise ValueError(f"fvcore count {x} is not an integer")
    return int(value)


def _fvcore_result(by_op: dict[str, int], by_module: dict[str, int], unsupported: dict[str, int],
                   uncalled: tuple[str, ...], handles: tuple[str, ...], wl: Workload, method: str,
                   probes: tuple[int, ...], start: float) -> FvcoreFlopCount:
    total = sum(by_op.values())
    matmul = sum(v for k, v in by_op.items() if k in FVCORE_MATMUL_OPS)
    return FvcoreFlopCount(
        total_macs=total, total_flops=2 * total, matmul_macs=matmul, extra_macs=total - matmul,
        by_operator_macs=by_op, by_module_macs=by_module, unsupported_ops=unsupported, uncalled_modules=uncalled,
        handles_added=handles, batch=wl.batch, seq_len_tokens=wl.seq_len, method=method, probe_seq_lens=probes,
        elapsed_s=time.perf_counter() - start,
    )


def _fvcore_raw(model: nn.Module, cfg: ModelConfig, batch: int, seq_len: int, with_sdpa_handle: bool):
    from fvcore.nn import FlopCountAnalysis

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.num_tokens, (batch, seq_len), generator=gen)
    analysis = FlopCountAnalysis(model, (ids,))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    handles: tuple[str, ...] = ()
    if with_sdpa_handle:
        analysis.set_op_handle(**FVCORE_EXTRA_HANDLES)
        handles = tuple(FVCORE_EXTRA_HANDLES)
    with torch.no_grad():
        by_op = {k: _as_int(v) for k, v in analysis.by_operator().items()}
        by_module = {k: _as_int(v) for k, v in analysis.by_module().items()}
        unsupported = dict(analysis.unsupported_ops())
        uncalled = tuple(sorted(analysis.uncalled_modules()))
    return by_op, by_module, unsupported, uncalled, handles


def _build_real(cfg: ModelConfig) -> nn.Module:
    from xtlens.core.builder import build_model

    return build_model(cfg, device="cpu", dtype="float32", seed=0).model.eval()


def fvcore_flop_count(cfg: ModelConfig, wl: Workload, *, with_sdpa_handle: bool = True,
                      model: nn.Module | None = None) -> FvcoreFlopCount:
    """fvcore on one traced real float32 CPU forward at ``wl`` (keep ``wl.seq_len`` small: the forward is
    real; the seed at 8192 tokens takes about a minute and ~6 GiB). ``with_sdpa_handle=False`` shows
    fvcore's own count, which misses attention entirely."""
    start = time.perf_counter()
    model = model if model is not None else _build_real(cfg)
    by_op, by_module, unsupported, uncalled, handles = _fvcore_raw(model, cfg, wl.batch, wl.seq_len, with_sdpa_handle)
    return _fvcore_result(by_op, by_module, unsupported, uncalled, handles, wl, "trace", (wl.seq_len,), start)


# --------------------------------------------------------------------------------------------------
# both counters at long sequences: exact polynomials in n fitted from short traces
# --------------------------------------------------------------------------------------------------

# in-place random initialisers (as ``torch.nn.init`` and the modules' ``reset_parameters`` call them)
_RANDOM_INITS = frozenset({
    torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.random_, torch.Tensor.bernoulli_,
    torch.Tensor.exponential_, torch.Tensor.geometric_, torch.Tensor.log_normal_, torch.Tensor.cauchy_,
    init.normal_, init.uniform_, init.trunc_normal_, init.kaiming_normal_, init.kaiming_uniform_,
    init.xavier_normal_, init.xavier_uniform_, init.orthogonal_, init.sparse_,
})


class _ZeroInit(TorchFunctionMode):
    """Every in-place random initialiser fills zeros instead: a model built under it has the real structure
    and buffers (rotary frequencies, ALiBi slopes are computed, not drawn) at a fraction of the cost."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RANDOM_INITS:
            tensor = args[0] if args else kwargs["tensor"]
            with torch.no_grad():
                return tensor.zero_()
        return func(*args, **kwargs)


def counting_model(cfg: ModelConfig) -> nn.Module:
    """The model ``build_model`` builds (float32, CPU, eval), every random initialiser replaced by zeros.

    For counting only: every count in this module depends on shapes alone, and the shapes are the real
    model's (the tests compare the counts with a seeded build). The seed's 20,000-token embedding and
    logits cost no random draws (about 0.3 s instead of 0.7 s to build)."""
    with _ZeroInit():
        return build_model(cfg, device="cpu", dtype="float32", seed=0).model


@dataclass(frozen=True, kw_only=True)
class _Trace:
    """One traced forward, counted by fvcore (its graph) and by FlopCounterMode (the aten ops as they ran)."""

    fvcore_by_operator_macs: dict[str, int]
    fvcore_by_module_macs: dict[str, int]
    unsupported_ops: dict[str, int]
    uncalled_modules: tuple[str, ...]
    handles_added: tuple[str, ...]
    torch_by_operator_flops: dict[str, int]
    torch_by_module_flops: dict[str, int]

    def tables(self) -> dict[str, dict[str, int]]:
        """The counts that are polynomials in the sequence length, by table name."""
        return {"fvcore operator": self.fvcore_by_operator_macs, "fvcore module": self.fvcore_by_module_macs,
                "fvcore unsupported": self.unsupported_ops, "torch operator": self.torch_by_operator_flops,
                "torch module": self.torch_by_module_flops}


def _trace_both(model: nn.Module, cfg: ModelConfig, batch: int, seq_len: int) -> _Trace:
    counter = FlopCounterMode(display=False, custom_mapping=SDPA_FLOP_FORMULAS)
    with counter:
        by_op, by_module, unsupported, uncalled, handles = _fvcore_raw(model, cfg, batch, seq_len, True)
    torch_by_op, torch_by_module = _torch_tables(counter, traced_root=type(model).__name__)
    return _Trace(fvcore_by_operator_macs=by_op, fvcore_by_module_macs=by_module, unsupported_ops=unsupported,
                  uncalled_modules=uncalled, handles_added=handles, torch_by_operator_flops=torch_by_op,
                  torch_by_module_flops=torch_by_module)


def _lagrange(points: list[tuple[int, int]], x: int) -> Fraction:
    total = Fraction(0)
    for i, (xi, yi) in enumerate(points):
        term = Fraction(yi)
        for j, (xj, _) in enumerate(points):
            if j != i:
                term *= Fraction(x - xj, xi - xj)
        total += term
    return total


def _evaluate(samples: Mapping[str, tuple[int, ...]], probes: tuple[int, ...], n: int) -> dict[str, int]:
    return {k: _as_int(_lagrange(list(zip(probes, ys, strict=True)), n)) for k, ys in samples.items()}


@dataclass(frozen=True, kw_only=True)
class FlopPolynomials:
    """Every count of one forward (fvcore and FlopCounterMode, per operator and per module, and fvcore's
    skipped calls) as an exact polynomial of degree <= 2 in the sequence length, for one configuration and
    batch: each held as its values at ``probe_seq_lens`` (Lagrange form), verified against a trace at
    ``check_seq_len``. ``tables``: table name -> key -> values at the probes (read-only).
    ``fvcore_error``: why fvcore's counts are not such polynomials for this configuration (None when they
    are): fvcore's generic ``einsum`` handle reports numpy's ``einsum_path`` estimate rounded to four digits
    (x-transformers' einsum attention, ``rel_pos_bias``, hyper-connections), which no polynomial reproduces;
    ``fvcore_count`` then raises and ``torch_count`` still works.
    ``fit_elapsed_s``: what the four traces cost (paid once per configuration and batch per process)."""

    batch: int
    probe_seq_lens: tuple[int, ...]
    check_seq_len: int
    tables: Mapping[str, Mapping[str, tuple[int, ...]]]
    uncalled_modules: tuple[str, ...]
    handles_added: tuple[str, ...]
    fvcore_error: str | None
    fit_elapsed_s: float

    def at(self, table: str, seq_len: int) -> dict[str, int]:
        """The table's exact counts at ``seq_len`` tokens (every key any probe trace had)."""
        return _evaluate(self.tables[table], self.probe_seq_lens, seq_len)

    def fvcore_count(self, wl: Workload, *, start: float | None = None) -> FvcoreFlopCount:
        self._check_batch(wl)
        if self.fvcore_error is not None:
            raise ValueError(self.fvcore_error)
        return _fvcore_result(self.at("fvcore operator", wl.seq_len), self.at("fvcore module", wl.seq_len),
                              self.at("fvcore unsupported", wl.seq_len), self.uncalled_modules, self.handles_added,
                              wl, "extrapolated", (*self.probe_seq_lens, self.check_seq_len),
                              time.perf_counter() if start is None else start)

    def torch_count(self, wl: Workload, *, start: float | None = None) -> TorchFlopCount:
        self._check_batch(wl)
        lens = ", ".join(map(str, self.probe_seq_lens))
        return _torch_result(
            self.at("torch operator", wl.seq_len), self.at("torch module", wl.seq_len), wl, train_step=False,
            method=(f"torch.utils.flop_counter.FlopCounterMode (+ SDPA_FLOP_FORMULAS) during fvcore's float32 "
                    f"traces at {lens} tokens, checked at {self.check_seq_len}, interpolated exactly"),
            start=time.perf_counter() if start is None else start)

    def _check_batch(self, wl: Workload) -> None:
        if wl.batch != self.batch:
            raise ValueError(f"these polynomials were fitted at batch {self.batch}, not {wl.batch}")


def _fit(model: nn.Module, cfg: ModelConfig, batch: int, probe_seq_lens: tuple[int, ...],
         check_seq_len: int) -> FlopPolynomials:
    start = time.perf_counter()
    if len(set(probe_seq_lens)) != 3 or check_seq_len in probe_seq_lens:
        raise ValueError("need three distinct probe lengths and a different check length")
    for n in (*probe_seq_lens, check_seq_len):
        if n > cfg.max_seq_len or n < 2:
            raise ValueError(f"probe length {n} outside 2..max_seq_len={cfg.max_seq_len}")
    traces = [_trace_both(model, cfg, batch, n) for n in probe_seq_lens]
    check = _trace_both(model, cfg, batch, check_seq_len)
    tables: dict[str, Mapping[str, tuple[int, ...]]] = {}
    fvcore_error = None
    for name in check.tables():
        keys = sorted(set().union(*(t.tables()[name] for t in traces)))
        tables[name] = MappingProxyType({k: tuple(t.tables()[name].get(k, 0) for t in traces) for k in keys})
        predicted = _evaluate(tables[name], probe_seq_lens, check_seq_len)
        actual = check.tables()[name]
        for key in sorted(set(predicted) | set(actual)):
            if predicted.get(key, 0) != actual.get(key, 0):
                message = (f"{name} {key!r} is not quadratic in the sequence length: predicted "
                           f"{predicted.get(key, 0)} at n={check_seq_len}, traced {actual.get(key, 0)}")
                if not name.startswith("fvcore"):
                    raise ValueError(message)
                fvcore_error = fvcore_error or message
    for t in traces:
        if t.uncalled_modules != check.uncalled_modules:
            fvcore_error = fvcore_error or (f"fvcore's uncalled modules change with the sequence length: "
                                            f"{t.uncalled_modules} vs {check.uncalled_modules} at n={check_seq_len}")
    return FlopPolynomials(batch=batch, probe_seq_lens=tuple(probe_seq_lens), check_seq_len=check_seq_len,
                           tables=MappingProxyType(tables), uncalled_modules=check.uncalled_modules,
                           handles_added=check.handles_added, fvcore_error=fvcore_error,
                           fit_elapsed_s=time.perf_counter() - start)


@functools.lru_cache(maxsize=32)
def _fitted(cfg: ModelConfig, batch: int, probe_seq_lens: tuple[int, ...], check_seq_len: int) -> FlopPolynomials:
    return _fit(counting_model(cfg), cfg, batch, probe_seq_lens, check_seq_len)


def flop_polynomials(cfg: ModelConfig, batch: int = 1, *, probe_seq_lens: tuple[int, int, int] = (8, 16, 24),
                     check_seq_len: int = 32) -> FlopPolynomials:
    """The fitted polynomials of ``cfg`` at ``batch`` (cached per process and per (configuration, batch,
    lengths), however the arguments are spelled: the configuration is frozen and hashable): four traces of
    ``counting_model(cfg)``, see the module docstring. ``flop_polynomials.cache_clear()`` /
    ``cache_info()`` reach the cache."""
    return _fitted(cfg, int(batch), tuple(probe_seq_lens), int(check_seq_len))


flop_polynomials.cache_clear = _fitted.cache_clear  # type: ignore[attr-defined]
flop_polynomials.cache_info = _fitted.cache_info  # type: ignore[attr-defined]


def fvcore_flop_count_extrapolated(cfg: ModelConfig, wl: Workload, *, probe_seq_lens: tuple[int, int, int] = (8, 16, 24),
                                   check_seq_len: int = 32, model: nn.Module | None = None) -> FvcoreFlopCount:
    """fvcore's count at ``wl.seq_len`` from exact traces at short lengths (no long forward).

    Traces at ``probe_seq_lens`` (three lengths: a degree-2 polynomial in ``n`` per operator and per
    module), verifies that the interpolant reproduces a fourth trace at ``check_seq_len`` exactly (raises
    ``ValueError`` if any operator or module count differs), then evaluates it at ``wl.seq_len``.
    ``unsupported_ops`` are interpolated (and checked) the same way; ``uncalled_modules`` are the same in
    every trace (checked). Without ``model`` the fit is ``flop_polynomials`` (cached); with one, fitted on it."""
    start = time.perf_counter()
    return _polynomials(cfg, wl, probe_seq_lens, check_seq_len, model).fvcore_count(wl, start=start)


def torch_flop_count_extrapolated(cfg: ModelConfig, wl: Workload, *, probe_seq_lens: tuple[int, int, int] = (8, 16, 24),
                                  check_seq_len: int = 32, model: nn.Module | None = None) -> TorchFlopCount:
    """``FlopCounterMode``'s forward count at ``wl.seq_len`` from the same short traces as
    ``fvcore_flop_count_extrapolated`` (float32; equal to ``torch_flop_count`` per operator and per module)."""
    start = time.perf_counter()
    return _polynomials(cfg, wl, probe_seq_lens, check_seq_len, model).torch_count(wl, start=start)


def _polynomials(cfg: ModelConfig, wl: Workload, probe_seq_lens: tuple[int, ...], check_seq_len: int,
                 model: nn.Module | None) -> FlopPolynomials:
    if model is not None:
        return _fit(model, cfg, wl.batch, tuple(probe_seq_lens), check_seq_len)
    return flop_polynomials(cfg, wl.batch, probe_seq_lens=tuple(probe_seq_lens), check_seq_len=check_seq_len)


# --------------------------------------------------------------------------------------------------
# cross-check
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FlopCrossCheck:
    """Three forward counts of the same configuration and workload (FLOPs, 2 per multiply-add).

    ``closed_form_flops``: ``core.cost_model`` full-square forward. ``torch_counter_flops``:
    FlopCounterMode during fvcore's trace(s) (``torch.method`` says how). ``fvcore_flops``: ``2 * fvcore_macs`` (fvcore total, including
    ``fvcore_extra_flops`` = layer norms and the rotary einsum outer product, which the other two leave
    out); ``fvcore_matmul_flops`` is fvcore's matmul-only part. Relative errors are
    ``|x - closed_form| / closed_form``; ``max_rel_err`` is the largest of the torch and fvcore totals.
    ``torch`` and ``fvcore`` keep both counts whole (per module and per operator), so a breakdown costs no
    second count.
    """

    closed_form_flops: int
    torch_counter_flops: int
    fvcore_macs: int
    fvcore_flops: int
    fvcore_matmul_flops: int
    fvcore_extra_flops: int
    torch_rel_err: float
    fvcore_rel_err: float
    fvcore_matmul_rel_err: float
    max_rel_err: float
    agree_within_1pct: bool
    fvcore_method: str
    torch_elapsed_s: float
    fvcore_elapsed_s: float
    torch: TorchFlopCount
    fvcore: FvcoreFlopCount


def cross_check(cfg: ModelConfig, wl: Workload, *, fvcore_method: str = "auto",
                fvcore_trace_max_seq_len: int = 256) -> FlopCrossCheck:
    """Compare fvcore, torch's counter and the closed form for one forward.

    ``fvcore_method``: ``trace`` (one forward at ``wl``), ``extrapolated`` (the cached short-trace fit,
    ``flop_polynomials``) or ``auto`` (trace up to ``fvcore_trace_max_seq_len`` tokens, extrapolate
    beyond). Both counters come from the same traced forward(s) of ``counting_model``: fvcore reads the
    graph, ``FlopCounterMode`` counts the aten ops as they run. The traced forward is float32; for another
    ``wl.dtype`` torch's count is ``torch_flop_count`` under fake tensors in that dtype."""
    start = time.perf_counter()
    closed = cost_model.flop_counts(cfg, wl).fwd_flops
    method = fvcore_method
    if method == "auto":
        method = "trace" if wl.seq_len <= fvcore_trace_max_seq_len else "extrapolated"
    if method == "trace":
        trace = _trace_both(counting_model(cfg), cfg, wl.batch, wl.seq_len)
        fv = _fvcore_result(trace.fvcore_by_operator_macs, trace.fvcore_by_module_macs, trace.unsupported_ops,
                            trace.uncalled_modules, trace.handles_added, wl, "trace", (wl.seq_len,), start)
        tc = _torch_result(trace.torch_by_operator_flops, trace.torch_by_module_flops, wl, train_step=False,
                           method="torch.utils.flop_counter.FlopCounterMode (+ SDPA_FLOP_FORMULAS) during "
                                  "fvcore's float32 trace", start=start)
    elif method == "extrapolated":
        poly = flop_polynomials(cfg, wl.batch)
        fv, tc = poly.fvcore_count(wl, start=start), poly.torch_count(wl, start=start)
    else:
        raise ValueError(f"fvcore_method must be auto, trace or extrapolated, not {fvcore_method!r}")
    if wl.dtype != "float32":
        tc = torch_flop_count(cfg, wl)

    def rel(x: int) -> float:
        return abs(x - closed) / closed

    t_err, f_err = rel(tc.total_flops), rel(fv.total_flops)
    return FlopCrossCheck(
        closed_form_flops=closed,
        torch_counter_flops=tc.total_flops,
        fvcore_macs=fv.total_macs,
        fvcore_flops=fv.total_flops,
        fvcore_matmul_flops=2 * fv.matmul_macs,
        fvcore_extra_flops=2 * fv.extra_macs,
        torch_rel_err=t_err,
        fvcore_rel_err=f_err,
        fvcore_matmul_rel_err=rel(2 * fv.matmul_macs),
        max_rel_err=max(t_err, f_err),
        agree_within_1pct=max(t_err, f_err) <= 0.01,
        fvcore_method=fv.method,
        torch_elapsed_s=tc.elapsed_s,
        fvcore_elapsed_s=fv.elapsed_s,
        torch=tc,
        fvcore=fv,
    )



# --------------------------------------------------------------------------------------------------
# rows
# --------------------------------------------------------------------------------------------------

FLOPS_PHASES: tuple[str, ...] = ("forward", "train_step")

# ``method`` of the breakdown rows (one per module / operator of each counter)
TORCH_MODULE = "torch FlopCounterMode, by module"
TORCH_OPERATOR = "torch FlopCounterMode, by operator"
FVCORE_MODULE = "fvcore, by module"
FVCORE_OPERATOR = "fvcore, by operator"
FVCORE_UNSUPPORTED = "fvcore: unsupported operator (not counted)"
FVCORE_UNCALLED = "fvcore: module never called"


def leaves(by_module: dict[str, int]) -> dict[str, int]:
    """Modules with a nonzero count none of whose sub-modules has a count (no double counting)."""
    names = [k for k, v in by_module.items() if k and v]
    return {k: by_module[k] for k in names if not any(o != k and o.startswith(k + ".") for o in names)}


def breakdown_records(check: FlopCrossCheck, base: dict) -> list[ProfileRecord]:
    """One row per module and per operator of both counters of ``check`` (no recount), fvcore's unsupported
    operators and uncalled modules. ``base``: the identity columns (``records.base_fields``)."""
    tc, fv = check.torch, check.fvcore
    rows = [ProfileRecord(**base, component=path.removeprefix("TransformerWrapper."), method=TORCH_MODULE,
                          torch_counter_flops=int(v)) for path, v in sorted(leaves(tc.by_module_flops).items())]
    rows += [ProfileRecord(**base, component=op, method=TORCH_OPERATOR, torch_counter_flops=int(v))
             for op, v in sorted(tc.by_operator_flops.items())]
    rows += [ProfileRecord(**base, component=path, method=FVCORE_MODULE, fvcore_macs=int(v), fvcore_flops=2 * int(v))
             for path, v in sorted(leaves(fv.by_module_macs).items())]
    rows += [ProfileRecord(**base, component=op, method=FVCORE_OPERATOR, fvcore_macs=int(v), fvcore_flops=2 * int(v))
             for op, v in sorted(fv.by_operator_macs.items())]
    rows += [ProfileRecord(**base, component=op, method=FVCORE_UNSUPPORTED,
                           error=f"{n} call(s) skipped by fvcore (element-wise; torch counts them as 0 too)")
             for op, n in sorted(fv.unsupported_ops.items())]
    rows += [ProfileRecord(**base, component=path, method=FVCORE_UNCALLED) for path in fv.uncalled_modules]
    return rows


def measure_flops(cfg: ModelConfig, wl: Workload, *, phases: Sequence[str] = ("forward",), breakdown: bool = False,
                  config_name: str = "", device: str = "cpu",
                  progress: Callable[[float, str], None] | None = None) -> list[ProfileRecord]:
    """FLOP rows: one per phase (``forward``, ``train_step``), plus with ``breakdown`` the forward's
    per-module and per-operator rows of both counters (from the same count).

    ``forward``: ``predicted_flops`` is ``core.cost_model``'s full-square forward; ``torch_counter_flops``
    is ``FlopCounterMode`` during fvcore's trace(s); ``fvcore_macs`` / ``fvcore_flops`` are fvcore's totals (a
    traced forward up to 256 tokens, exact extrapolation from short traces beyond, see ``cross_check``),
    which include layer norms and the rotary outer product; ``flops_rel_err`` is the largest relative
    disagreement of the two against the prediction.
    ``train_step``: ``FlopCounterMode`` over forward + backward of ``logits.sum()`` against
    ``core.cost_model.train_step_flops`` with the fused-backward rule ``fused_sdpa_backward`` (no fvcore: it
    traces forwards only). Counts do not depend on the device; the row records the device the sweep targets.
    """
    from xtlens.profiling.run.device import resolve, versions

    vers = versions()
    provenance = {"torch_version": vers["torch"], "xtransformers_version": vers["x-transformers"]}
    name = resolve(device)[1]
    rows: list[ProfileRecord] = []
    for i, phase in enumerate(phases):
        if progress is not None:
            progress(i / len(phases), f"counting {phase} FLOPs")
        base = base_fields(cfg, wl, config_name=config_name, measurement="flops", phase=phase, device=device,
                           device_name=name)
        if phase == "forward":
            check = cross_check(cfg, wl)
            rows.append(ProfileRecord(
                **base, **provenance, predicted_flops=check.closed_form_flops,
                torch_counter_flops=check.torch_counter_flops, fvcore_macs=check.fvcore_macs,
                fvcore_flops=check.fvcore_flops, flops_rel_err=check.max_rel_err,
                method=(f"core.cost_model full square; {check.torch.method} ({check.torch_elapsed_s:.2f} s); "
                        f"fvcore {check.fvcore_method} ({check.fvcore_elapsed_s:.2f} s, includes "
                        f"{check.fvcore_extra_flops:,} FLOPs of norms and rotary outer products)"),
            ))
            if breakdown:
                rows += breakdown_records(check, base)
        elif phase == "train_step":
            fused = cost_model.fused_sdpa_backward(cfg)
            predicted = cost_model.train_step_flops(cost_model.flop_counts(cfg, wl), fused_backward=fused)
            count = torch_flop_count(cfg, wl, train_step=True)
            variant = "3 x fwd_flops + attn_flops / 2 (fused SDPA backward)" if fused else "3 x fwd_flops"
            rows.append(ProfileRecord(
                **base, **provenance, predicted_flops=predicted, torch_counter_flops=count.total_flops,
                flops_rel_err=rel_err(count.total_flops, predicted),
                method=(f"core.cost_model {variant}; FlopCounterMode under FakeTensorMode over forward + "
                        f"backward of logits.sum() ({count.elapsed_s:.2f} s)"),
            ))
        else:
            raise ProfileError(f"Unknown FLOP phase {phase!r}: choose from {', '.join(FLOPS_PHASES)}.")
    return rows
