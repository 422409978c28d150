"""Calibrate this device's latency terms in at most ``time_budget_s`` of wall time (``core.calibration.Calibration``).

What a roofline leaves out, measured on the device a model will run on (``xtlens calibrate``, the Latency tab's
"Calibrate this device" button; ``core.latency_model`` predicts from it, ``profiling.measure.roofline`` derives its
ceilings from it):

1. ``launch_s``: the per-op floor: the wall time per call of ``x + x`` on 1-element tensors, issued back to back
   (kernel launch plus the framework's dispatch and allocation; on CUDA the loop is followed by one synchronise).
   ``module_overhead_s``: what calling an ``nn.Linear(8, 8)`` module adds over calling ``F.linear`` with its weights
   (``__call__``, hooks, the Python of ``forward``), per call. Median of interleaved rounds of ``OVERHEAD_CALLS``.
2. ``elementwise_bytes_per_s`` per dtype: ``torch.add(a, b, out=c)`` on ``ELEMENTWISE_BYTES`` per operand (3 operands
   moved: 2 read, 1 written) / its median time.
3. The slow-dtype probe (``detect_slow_dtypes``): one ``PROBE_SIZES[0]``-square product per dtype against float32's,
   on one thread (the fastest of its repeats: on a busy machine a multi-threaded small product waits milliseconds
   for a descheduled thread, which hides a 50x emulation gap).
   A half-precision dtype that takes ``SLOW_FACTOR`` x float32's time or more runs on an emulation path (bfloat16 /
   float16 on a CPU without native support: a 2048-square bfloat16 product took 77 s on such a CPU, 0.29 s in
   float32; with oneDNN off on the 2-core Xeon this was written on, bfloat16 and float16 products run torch's
   reference GEMM at about 2 GFLOP/s, 70-110x float32's time at 512); it is measured again at ``PROBE_SIZES[1]`` when
   that fits, recorded in ``slow_dtypes`` with its slowdown, and from then on measured only at the small sizes its
   share (``SLOW_SHARE``) allows, after the other dtypes.
4. The matrix-product grid per dtype (``MATMUL_M`` x ``MATMUL_NK``: tokens x the (out, in) features of the model's
   projections, feed-forward and logits), smallest FLOPs first. Before each point its time is predicted from the
   rate of the previous one (a smaller product runs at a lower rate, so the prediction errs long) and the point
   is skipped when it would not fit the dtype's share of the section: a slow dtype stops small by itself. The
   smallest shape is always measured.
5. ``scaled_dot_product_attention`` per SDPA backend (CPU: whichever kernel torch picks, named from the aten ops
   it dispatched, ``cpu_flash`` or ``math``; CUDA: ``flash``, ``efficient``, ``cudnn`` and ``math`` each forced with
   ``sdpa_kernel``, a backend that refuses a shape or mask is left out) for ``ATTENTION_HEADS`` heads of
   ``ATTENTION_HEAD_DIM`` at ``ATTENTION_LENGTHS``, causal (``is_causal=True``) and with a dense float mask (the
   ALiBi bias x-transformers passes: ``(1, heads, n, n)``, the causal part filled with ``-finfo.max / 2``),
   forward and forward + backward, in float32 and every dtype that is not slow. The shortest length is always
   measured (every backend, dtype and mask gets a point); a longer one only when its time, predicted from the
   previous length's by the square of the length ratio, fits.

Every timed point: one untimed warm-up call (two when it is cheap; the last one's time also picks the repeats:
enough for about ``POINT_TARGET_S``, at least ``MIN_REPEATS`` while they fit), then the median of the repeats (the
probe: the fastest). CPU: ``perf_counter`` around each call; CUDA: a start/end ``torch.cuda.Event`` pair per call and one synchronise after them. Sections
run to absolute deadlines (``SECTION_ENDS``, fractions of the budget), so time a section leaves unused goes to the
next; the overheads and element-wise bandwidth come first (cheap, always needed). ``progress(fraction, message)``
is called as it goes; ``cancel()`` returning True (or a set ``threading.Event``) stops it with
``CalibrationCancelled``.

On a CPU the times include the per-op dispatch (the op runs in the calling thread); on CUDA the event times are
the kernel's own. The numbers describe the device under its load at the time: on a shared machine they move with
the neighbours' work (``notes`` records the load average).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime, timezone

from xtlens.core.calibration import AttentionPoint, Calibration, MatmulPoint, SlowDtype
from xtlens.core.config import ConfigError
from xtlens.profiling.errors import ProfileError

__all__ = ["calibrate", "detect_slow_dtypes", "CalibrationCancelled", "DTYPES", "PARTS", "MATMUL_M", "MATMUL_NK",
           "matmul_grid", "ATTENTION_LENGTHS", "ATTENTION_HEADS", "ATTENTION_HEAD_DIM", "SLOW_FACTOR", "PROBE_SIZES",
           "SECTION_ENDS", "MIN_BUDGET_S", "MAX_BUDGET_S", "ELEMENTWISE_BYTES", "OVERHEAD_CALLS"]

DTYPES = ("float32", "bfloat16", "float16")
PARTS = ("overheads", "elementwise", "matmul", "attention")
#: tokens (rows of the activation) x (out features, in features): d x d projections, 4d feed-forward both ways
MATMUL_M = (64, 512, 2048, 8192)
MATMUL_NK = ((64, 64), (256, 256), (1024, 1024), (4096, 1024), (1024, 4096))
ATTENTION_LENGTHS = {"cpu": (128, 512, 2048, 4096), "cuda": (512, 2048, 8192)}
ATTENTION_HEADS = 8
ATTENTION_HEAD_DIM = 64
CUDA_BACKENDS = ("flash", "efficient", "cudnn", "math")
#: a half-precision dtype whose product takes this many times float32's runs on an emulation path (native half
#: precision takes 0.1-2x float32's time; the emulated bfloat16 of a CPU without it 100-270x, see the docstring)
SLOW_FACTOR = 4.0
#: a slow dtype's next product is predicted at this many times its last rate: its rate falls with the inner size
#: (the emulated bfloat16 product ran at 2.2 GFLOP/s with k = 256, 0.2 with k = 4096)
SLOW_SAFETY = 4.0
#: the most of the budget a slow dtype's matrix-product grid may take (it stops at the small shapes)
SLOW_SHARE = 0.04
#: the median / minimum of a point's repeats above which the machine counts as busy (a note says rerun)
BUSY_SPREAD = 1.3
#: a 1-minute load average above this fraction of the CPUs at the start counts as busy (a note says rerun)
BUSY_LOAD = 0.5
PROBE_SIZES = (256, 512)
#: where each section must end, as fractions of the time budget (the rest is the margin for the last point)
SECTION_ENDS = {"overheads": 0.06, "elementwise": 0.12, "probe": 0.20, "matmul": 0.55, "attention": 0.85}
MIN_REPEATS = 3
MAX_REPEATS = 25
POINT_TARGET_S = 0.1
ELEMENTWISE_BYTES = {"cpu": 64 * 2**20, "cuda": 256 * 2**20}
OVERHEAD_CALLS = {"cpu": 2000, "cuda": 1000}
OVERHEAD_ROUNDS = 7
MIN_BUDGET_S = 5.0
MAX_BUDGET_S = 3600.0

Progress = Callable[[float, str], None]


class CalibrationCancelled(ProfileError):
    """The calibration was cancelled before it finished (nothing was stored)."""


def matmul_grid(m_values: Sequence[int] = MATMUL_M,
                nk_values: Sequence[tuple[int, int]] = MATMUL_NK) -> list[tuple[int, int, int]]:
    """The ``(m, n, k)`` shapes of the grid, smallest FLOPs (``2 m n k``) first."""
    return sorted(((m, n, k) for m in m_values for n, k in nk_values), key=lambda s: (s[0] * s[1] * s[2], s))


def detect_slow_dtypes(time_product: Callable[[str, int], float], dtypes: Sequence[str], *,
                       sizes: Sequence[int] = PROBE_SIZES, factor: float = SLOW_FACTOR,
                       max_s: float = 0.5) -> tuple[dict[tuple[str, int], float], tuple[SlowDtype, ...]]:
    """Which of ``dtypes`` run on a slow path: ``time_product(dtype, size)`` is the seconds of one ``size``-square
    product (``calibrate`` passes the fastest of its repeats on one thread). Each dtype is timed at ``sizes[0]`` beside float32; a dtype taking ``factor`` x
    float32's time or more is slow, and is timed again (with float32) at the largest of ``sizes`` whose predicted
    time (``(size / sizes[0]) ** 3`` x the first) stays under ``max_s`` per product, so the slowdown is read off a
    product large enough to time well but never a long one.

    Returns ``({(dtype, size): seconds} of every product timed, the slow dtypes)``."""
    timed: dict[tuple[str, int], float] = {}

    def seconds_of(dtype: str, size: int) -> float:
        if (dtype, size) not in timed:
            timed[dtype, size] = time_product(dtype, size)
        return timed[dtype, size]

    base = sizes[0]
    slow = []
    for dtype in dtypes:
        f32 = seconds_of("float32", base)
        if dtype == "float32":
            continue
        first = seconds_of(dtype, base)
        if first < factor * f32:
            continue
        size = base
        for bigger in sorted(sizes[1:]):
            if first * (bigger / base) ** 3 > max_s:
                break
            size = bigger
        slow.append(SlowDtype(dtype=dtype, size=size, seconds=seconds_of(dtype, size),
                              float32_seconds=seconds_of("float32", size)))
    return timed, tuple(slow)


def _check(device: str, time_budget_s: float, dtypes: Sequence[str] | None, parts: Sequence[str]) -> tuple[str, ...]:
    try:
        budget = float(time_budget_s)
    except (TypeError, ValueError):
        budget = float("nan")
    if not (MIN_BUDGET_S <= budget <= MAX_BUDGET_S):
        raise ConfigError("time_budget_s", time_budget_s,
                          f"a number of seconds from {MIN_BUDGET_S:g} to {MAX_BUDGET_S:g} (default 60)")
    chosen = tuple(DTYPES if dtypes is None else dtypes)
    bad = [d for d in chosen if d not in DTYPES]
    if bad or not chosen:
        raise ConfigError("dtypes", list(chosen), f"one or more of {', '.join(DTYPES)}")
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise ConfigError("parts", list(parts), f"one or more of {', '.join(PARTS)}")
    return tuple(d for d in DTYPES if d in chosen)  # float32 first (when asked for), as in DTYPES


class _Run:
    """One calibration's clock, deadlines, progress and cancel checks, and the timing of calls on its device."""

    def __init__(self, device: str, budget_s: float, progress: Progress | None, cancel, *,
                 start: float | None = None):
        import torch

        self.torch = torch
        self.device = device
        self.cuda = device.startswith("cuda")
        self.budget_s = budget_s
        self.start = time.monotonic() if start is None else start
        self.progress = progress
        self.cancel = cancel
        self.notes: list[str] = []
        self.spreads: list[float] = []  # median / minimum of each timed point: 1 on an idle machine
        self.laps: list[tuple[str, float]] = []
        self._lap_start = self.start

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.laps.append((name, now - self._lap_start))
        self._lap_start = now

    # --- time ---
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def deadline(self, section: str) -> float:
        return self.start + SECTION_ENDS[section] * self.budget_s

    def check(self, message: str) -> None:
        stop = self.cancel
        if stop is not None and (stop.is_set() if isinstance(stop, threading.Event) else stop()):
            raise CalibrationCancelled(f"calibration cancelled after {self.elapsed():.1f} s (nothing was stored)")
        if self.progress is not None:
            self.progress(min(self.elapsed() / self.budget_s, 0.99), message)

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def time_calls(self, fn: Callable[[], object], n: int) -> list[float]:
        """Seconds of each of ``n`` calls: ``profiling.run.device.time_calls`` (the one timing loop: CUDA events per
        call and one synchronise, or ``perf_counter`` around each call on a CPU)."""
        from xtlens.profiling.run.device import time_calls

        return [ms / 1e3 for ms in time_calls(fn, device=self.device, warmup=0, repeats=n)]

    def measure(self, fn: Callable[[], object], *, predicted_s: float, deadline: float,
                best: bool = False, must: bool = False) -> float | None:
        """Median (``best``: minimum) seconds of ``fn`` after one warm-up call, or None when the warm-up and one timed call
        (``2 x predicted_s``) would not end before ``deadline``. Repeats: about ``POINT_TARGET_S`` worth, from
        ``MIN_REPEATS`` to ``MAX_REPEATS``, fewer (at least one) when the deadline is near. ``must``: measured whatever
        the deadline (the warm-up and one timed call at least: a term every prediction needs, cheap by design)."""
        if not must and time.monotonic() + 2 * predicted_s > deadline:
            return None
        t0 = time.monotonic()
        fn()
        self.sync()
        first = max(time.monotonic() - t0, 1e-7)
        if first < POINT_TARGET_S / 10:  # a cheap call gets a second warm-up (lazy kernel selection, caches)
            t0 = time.monotonic()
            fn()
            self.sync()
            first = max(time.monotonic() - t0, 1e-7)
        n = min(MAX_REPEATS, max(MIN_REPEATS, int(POINT_TARGET_S / first)))
        n = max(1 if must else 0, min(n, int((deadline - time.monotonic()) / first)))
        if n < 1:
            return None
        times = self.time_calls(fn, n)
        median, low = statistics.median(times), min(times)
        if low > 0:
            self.spreads.append(median / low)
        return low if best else median


def _rand(torch, shape, dtype, device):
    return torch.randn(*shape, device=device).to(dtype)


def _overheads(run: _Run) -> tuple[float, float]:
    """``(launch_s, module_overhead_s)`` (see the module docstring)."""
    torch = run.torch
    calls = OVERHEAD_CALLS["cuda" if run.cuda else "cpu"]
    x = torch.zeros(1, device=run.device)
    lin = torch.nn.Linear(8, 8).to(run.device)
    inp = torch.zeros(1, 8, device=run.device)
    w, b = lin.weight, lin.bias
    F = torch.nn.functional

    def loop(fn) -> float:
        run.sync()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        run.sync()
        return (time.perf_counter() - t0) / calls

    launch, module, functional = [], [], []
    deadline = run.deadline("overheads")
    with torch.no_grad():
        for fn in (lambda: x + x, lambda: lin(inp), lambda: F.linear(inp, w, b)):  # warm-up
            loop(fn)
        for i in range(OVERHEAD_ROUNDS):
            if i >= 2 and time.monotonic() > deadline:
                break
            run.check("launch and module overheads")
            launch.append(loop(lambda: x + x))
            module.append(loop(lambda: lin(inp)))
            functional.append(loop(lambda: F.linear(inp, w, b)))
    diffs = [m - f for m, f in zip(module, functional, strict=True)]
    return statistics.median(launch), max(0.0, statistics.median(diffs))


def _elementwise(run: _Run, dtypes: Sequence[str]) -> dict[str, float]:
    from xtlens.core.builder import TORCH_DTYPES

    torch = run.torch
    nbytes = ELEMENTWISE_BYTES["cuda" if run.cuda else "cpu"]
    out: dict[str, float] = {}
    deadline = run.deadline("elementwise")
    for i, dtype in enumerate(dtypes):
        run.check(f"element-wise bandwidth, {dtype}")
        dt = TORCH_DTYPES[dtype]
        numel = nbytes // torch.empty((), dtype=dt).element_size()
        a = torch.empty(numel, dtype=dt, device=run.device).fill_(1.0)
        b = torch.empty_like(a).fill_(2.0)
        c = torch.empty_like(a)
        share_end = time.monotonic() + (deadline - time.monotonic()) / (len(dtypes) - i)
        seconds = run.measure(lambda a=a, b=b, c=c: torch.add(a, b, out=c), predicted_s=0.0, deadline=share_end,
                              must=True)
        if seconds is not None:
            out[dtype] = 3 * nbytes / seconds
        del a, b, c
    return out


def _product_timer(run: _Run, deadline: float) -> Callable[[str, int], float]:
    from xtlens.core.builder import TORCH_DTYPES

    torch = run.torch

    def time_product(dtype: str, size: int) -> float:
        run.check(f"slow-dtype probe: {size}x{size} product in {dtype}")
        a = _rand(torch, (size, size), TORCH_DTYPES[dtype], run.device)
        b = _rand(torch, (size, size), TORCH_DTYPES[dtype], run.device)
        # always measured (the probe decides what the rest may cost); the fastest repeat: a neighbour's work slows
        # a product, never makes its kernel faster
        seconds = run.measure(lambda: torch.mm(a, b), predicted_s=0.0, deadline=deadline, best=True, must=True)
        return seconds if seconds is not None else float("inf")

    return time_product


def _matmul(run: _Run, dtypes: Sequence[str], rates: dict[str, float], shapes: Sequence[tuple[int, int, int]],
            slow: set[str]) -> list[MatmulPoint]:
    """The grid per dtype, each dtype an equal share of what is left of the section (see the module docstring)."""
    from xtlens.core.builder import TORCH_DTYPES

    torch = run.torch
    points: list[MatmulPoint] = []
    deadline = run.deadline("matmul")
    for i, dtype in enumerate(dtypes):
        share_end = time.monotonic() + (deadline - time.monotonic()) / (len(dtypes) - i)
        if dtype in slow:  # measured for information only (the page says: measure in float32 here)
            share_end = min(share_end, time.monotonic() + SLOW_SHARE * run.budget_s)
        rate = rates[dtype]
        dt = TORCH_DTYPES[dtype]
        skipped = 0
        for j, (m, n, k) in enumerate(shapes):
            flops = 2 * m * n * k
            predicted = flops / rate * (SLOW_SAFETY if dtype in slow else 1.0)
            first = j == 0  # the smallest shape: always measured (every dtype gets a point)
            if not first and time.monotonic() + 2 * predicted > share_end:
                skipped += 1
                continue
            run.check(f"matrix products, {dtype}: {m}x{k} @ {k}x{n}")
            a = _rand(torch, (m, k), dt, run.device)
            b = _rand(torch, (k, n), dt, run.device)
            with torch.no_grad():
                seconds = run.measure(lambda a=a, b=b: torch.mm(a, b), predicted_s=predicted, deadline=share_end,
                                      must=first)
            del a, b
            if seconds is None:
                skipped += 1
                continue
            points.append(MatmulPoint(dtype=dtype, m=m, n=n, k=k, seconds=seconds))
            rate = flops / seconds
        if skipped:
            run.notes.append(f"matmul {dtype}: {skipped} of {len(shapes)} grid shapes left out (they would not fit "
                             "the time budget)")
    return points


def _attention_inputs(torch, dtype, device, seq_len: int, mask: str, grad: bool):
    shape = (1, ATTENTION_HEADS, seq_len, ATTENTION_HEAD_DIM)
    q, k, v = (torch.randn(*shape, device=device).to(dtype).requires_grad_(grad) for _ in range(3))
    bias = None
    if mask == "dense":  # an ALiBi-like additive bias with the causal part masked, as x-transformers passes it
        pos = torch.arange(seq_len, device=device)
        slopes = torch.tensor([2.0 ** (-8 * (h + 1) / ATTENTION_HEADS) for h in range(ATTENTION_HEADS)], device=device)
        bias = -(pos[None, :] - pos[:, None]).abs()[None] * slopes[:, None, None]
        bias = bias.masked_fill(pos[None, :] > pos[:, None], -torch.finfo(dtype).max / 2).to(dtype)[None]
    return q, k, v, bias


def _attention(run: _Run, dtypes: Sequence[str], backends: Sequence[str | None] | None = None
               ) -> list[AttentionPoint]:
    """The attention points (see the module docstring); ``backends``: forced ones (``CUDA_BACKENDS`` on CUDA), or
    ``(None,)``: whichever kernel torch picks, named from the aten ops it dispatched (a CPU's default)."""
    from xtlens.core.builder import TORCH_DTYPES
    from xtlens.profiling.measure.sdpa import SdpaProbe

    torch = run.torch
    F = torch.nn.functional
    lengths = ATTENTION_LENGTHS["cuda" if run.cuda else "cpu"]
    if backends is None:
        backends = CUDA_BACKENDS if run.cuda else (None,)
    points: list[AttentionPoint] = []
    deadline = run.deadline("attention")
    combos = [(d, be, mk) for d in dtypes for be in backends for mk in ("causal", "dense")]
    for i, (dtype, backend, mask) in enumerate(combos):
        share_end = time.monotonic() + (deadline - time.monotonic()) / (len(combos) - i)
        dt = TORCH_DTYPES[dtype]
        last: tuple[int, float] | None = None  # (length, forward + backward seconds) of the previous length
        for seq_len in lengths:
            predicted = 0.0 if last is None else last[1] * (seq_len / last[0]) ** 2
            if last is not None and time.monotonic() + 2 * predicted > share_end:  # the shortest: always
                break
            run.check(f"attention, {dtype}, {backend or 'default'} backend, {mask} mask, {seq_len} tokens")
            q, k, v, bias = _attention_inputs(torch, dt, run.device, seq_len, mask, grad=False)

            def forward(q=q, k=k, v=v, bias=bias):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=bias is None)

            context = _backend_context(torch, backend)
            try:
                with context, torch.no_grad():
                    if backend is None:
                        with SdpaProbe() as probe:
                            forward()
                        label = probe.backend
                    else:
                        forward()
                        label = backend
                    fwd = run.measure(forward, predicted_s=predicted / 3, deadline=share_end, must=last is None)
            except RuntimeError as exc:  # this backend refuses this dtype, shape or mask (e.g. flash: no mask)
                run.notes.append(f"attention {dtype} {backend} {mask}: not available ({str(exc).splitlines()[0][:120]})")
                break
            if fwd is None:
                break
            both = None
            if last is None or time.monotonic() + 2 * 3 * fwd < share_end:  # the shortest length: always
                qg, kg, vg, bias = _attention_inputs(torch, dt, run.device, seq_len, mask, grad=True)
                grad = torch.randn_like(qg)

                def fwd_bwd(q=qg, k=kg, v=vg, bias=bias, grad=grad):
                    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, is_causal=bias is None)
                    out.backward(grad)
                    q.grad = k.grad = v.grad = None

                try:
                    with _backend_context(torch, backend):
                        both = run.measure(fwd_bwd, predicted_s=3 * fwd, deadline=share_end, must=last is None)
                except RuntimeError as exc:
                    run.notes.append(f"attention {dtype} {label} {mask} backward: not available "
                                     f"({str(exc).splitlines()[0][:120]})")
            points.append(AttentionPoint(backend=label, dtype=dtype, batch=1, heads=ATTENTION_HEADS,
                                         kv_heads=ATTENTION_HEADS, seq_len=seq_len, head_dim=ATTENTION_HEAD_DIM,
                                         mask=mask, seconds=fwd, backward_seconds=both))
            last = (seq_len, both if both is not None else 3 * fwd)
    return points


@contextlib.contextmanager
def _backend_context(torch, backend: str | None):
    """Only ``backend`` may run (None: whichever torch picks). The warnings torch prints when a forced backend
    refuses a call are dropped: the refusal is the RuntimeError that follows, which becomes a note."""
    if backend is None:
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    names = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION",
             "math": "MATH"}
    with warnings.catch_warnings(), sdpa_kernel([getattr(SDPBackend, names[backend])]):
        warnings.simplefilter("ignore", UserWarning)
        yield


def _load_notes(cuda: bool) -> list[str]:
    """The load average at the start, and a warning when other work already kept half the CPUs busy."""
    try:
        load = os.getloadavg()
    except OSError:
        return ["load average: not available"]
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    notes = [f"load average (1, 5, 15 min) at the start: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} on {cpus} CPUs"]
    if not cuda and load[0] > BUSY_LOAD * cpus:
        notes.append(f"the machine was busy (1-minute load {load[0]:.2f} on {cpus} CPUs): multi-threaded ops wait for "
                     "descheduled threads, so these times are longer than the device's; calibrate again when it is idle")
    return notes


def calibrate(device: str = "cpu", *, time_budget_s: float = 60.0, progress: Progress | None = None,
              cancel: Callable[[], bool] | threading.Event | None = None, dtypes: Sequence[str] | None = None,
              parts: Sequence[str] = PARTS, matmul_shapes: Sequence[tuple[int, int, int]] | None = None
              ) -> Calibration:
    """Measure ``device``'s latency terms within ``time_budget_s`` seconds of wall time (from ``MIN_BUDGET_S`` to
    ``MAX_BUDGET_S``); see the module docstring for what and how. ``dtypes`` (default ``DTYPES``; float32's probe
    product is timed whatever they are: the reference of the slowdowns), ``parts`` (default every one of ``PARTS``) and ``matmul_shapes``
    (``(m, n, k)``, default ``matmul_grid()``) narrow it (``profiling.measure.roofline`` needs only the ceilings).

    Raises ``ConfigError`` for a bad argument, ``BuildError`` for a device this machine has not,
    ``CalibrationCancelled`` when ``cancel`` says stop. Stores nothing (``profiling.results.calibrations`` does)."""
    entered = time.monotonic()  # the budget counts from here: importing torch and starting CUDA are in it
    chosen = _check(device, time_budget_s, dtypes, parts)
    from xtlens.profiling.run.device import resolve, versions

    dev, name = resolve(device)
    import torch

    run = _Run(dev, float(time_budget_s), progress, cancel, start=entered)
    run.notes.extend(_load_notes(run.cuda))
    run.notes.append("times: CUDA events around each call (the kernel's own time; launch_s is the host's wall time "
                     "per op, apart)" if run.cuda else
                     "times: wall time of each call (on a CPU the per-op dispatch, launch_s, is inside every time)")
    if run.cuda:
        run.notes.append(f"float32 matmul: TF32 {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'} "
                         f"(torch.backends.cuda.matmul.allow_tf32)")
    shapes = matmul_grid() if matmul_shapes is None else sorted(matmul_shapes, key=lambda s: (s[0] * s[1] * s[2], s))
    launch_s = module_s = float("nan")
    bandwidth: dict[str, float] = {}
    matmul: list[MatmulPoint] = []
    attention: list[AttentionPoint] = []
    slow: tuple[SlowDtype, ...] = ()
    # the random inputs leave the caller's random state as it was (a model built after gets the same weights)
    rng = torch.random.fork_rng(devices=[torch.device(dev).index or 0] if run.cuda else [])
    with rng, torch.cuda.device(dev) if run.cuda else contextlib.nullcontext():
        if "overheads" in parts:
            launch_s, module_s = _overheads(run)
            run.lap("overheads")
        if "elementwise" in parts:
            bandwidth = _elementwise(run, chosen)
            run.lap("element-wise")
        if "matmul" in parts or "attention" in parts:
            threads = torch.get_num_threads()
            try:  # one thread: on a busy machine a multi-threaded small product waits for a descheduled thread
                torch.set_num_threads(1)
                with torch.no_grad():
                    # float32 is always probed: the reference of the slowdowns
                    timed, slow = detect_slow_dtypes(_product_timer(run, run.deadline("probe")), ("float32", *chosen),
                                                     max_s=0.03 * run.budget_s / (1 + MIN_REPEATS))
            finally:
                torch.set_num_threads(threads)
            run.lap("slow-dtype probe")
            slow_names = {s.dtype for s in slow}
            base = PROBE_SIZES[0]
            for dtype in chosen:
                if dtype != "float32" and dtype not in slow_names:
                    run.notes.append(f"{dtype}: {timed[dtype, base] / timed['float32', base]:.2f}x float32's time for "
                                     f"a {base}x{base} product (not slow here: under {SLOW_FACTOR:g}x)")
            # the probe's products are points too: on CUDA all of them; on a CPU (where the probe ran on one thread)
            # only a slow dtype's, whose emulation path runs on one thread anyway and whose grid may stop small
            matmul += [MatmulPoint(dtype=d, m=s, n=s, k=s, seconds=sec) for (d, s), sec in timed.items()
                       if d in chosen and (run.cuda or d in slow_names)]
            if "matmul" in parts:
                largest = {d: max(s for dd, s in timed if dd == d) for d in chosen}
                rates = {d: 2 * s**3 / timed[d, s] for d, s in largest.items()}
                order = [d for d in chosen if d not in slow_names] + [d for d in chosen if d in slow_names]
                matmul += _matmul(run, order, rates, shapes, slow_names)
                run.lap("matrix products")
            if "attention" in parts:
                attention = _attention(run, [d for d in chosen if d not in slow_names])
                run.lap("attention")
                if slow_names:
                    run.notes.append("attention not measured in " + ", ".join(sorted(slow_names)) + " (slow here)")
    if "overheads" not in parts:
        launch_s = module_s = 0.0
        run.notes.append("launch and module overheads not measured (0 here)")
    if run.spreads:
        spread = statistics.median(run.spreads)
        run.notes.append(f"timing spread (median / minimum of each point's repeats, median over {len(run.spreads)} "
                         f"points): {spread:.2f}" + (f": the machine was busy (over {BUSY_SPREAD:g}), these times "
                                                    "include its neighbours' work; calibrate again when it is idle"
                                                    if spread > BUSY_SPREAD else ""))
    run.notes.append("seconds per section: " + ", ".join(f"{name} {sec:.1f}" for name, sec in run.laps))
    vers = versions()
    wall = run.elapsed()
    if run.progress is not None:
        run.progress(1.0, f"calibrated in {wall:.1f} s")
    return Calibration(device=dev.split(":")[0], device_name=name, torch_version=vers["torch"],
                       xtransformers_version=vers["x-transformers"], threads=torch.get_num_threads(),
                       measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), wall_s=wall,
                       launch_s=launch_s, module_overhead_s=module_s, elementwise_bytes_per_s=bandwidth,
                       matmul=tuple(_dedupe(matmul)), attention=tuple(attention), slow_dtypes=slow,
                       notes=tuple(run.notes))


def _dedupe(points: list[MatmulPoint]) -> list[MatmulPoint]:
    """One point per (dtype, m, n, k): the later measurement (the grid's) wins."""
    seen: dict[tuple, MatmulPoint] = {}
    for p in points:
        seen[(p.dtype, p.m, p.n, p.k)] = p
    order = {d: i for i, d in enumerate(DTYPES)}
    return sorted(seen.values(), key=lambda p: (order.get(p.dtype, len(order)), p.m * p.n * p.k, p.m, p.n, p.k))
