"""A latency calibration of one device: what a roofline leaves out, measured (``profiling.measure.calibrate``)
and used by the calibrated latency predictor (``core.latency_model``).

Standard library only. A ``Calibration`` holds, for one device under one software stack on one date:

* ``matmul``: the median seconds of one ``(m, k) @ (k, n)`` product per dtype on a small grid of shapes
  (throughput against shape: small products run far below the peak);
* ``attention``: the median seconds of one ``scaled_dot_product_attention`` call per SDPA backend that ran,
  dtype, length, causal or dense-mask, forward (and forward + backward where measured);
* ``elementwise_bytes_per_s``: bytes moved per second (read + written) by a large element-wise copy, per dtype;
* ``launch_s``: the per-kernel cost of a tiny op (an add of two 1-element tensors): kernel launch plus the
  framework's dispatch, the floor of every op;
* ``module_overhead_s``: the extra cost of calling an ``nn.Module`` (``__call__``, hooks, Python) over calling
  its op directly;
* ``framework_s_per_module``: the host time per module call of a tiny real x-transformers decoder beyond its ops'
  ``launch_s`` and its modules' ``module_overhead_s`` (the Python x-transformers runs inside each ``forward``:
  einops, argument handling, views), None in calibrations made before it was measured;
* ``slow_dtypes``: dtypes the device runs on a slow emulation path (bfloat16 / float16 on a CPU without native
  support), each with its slowdown against float32 at the same size (``slowdown_vs_float32``) and the size
  it was measured at.

Identity: ``device`` (``cpu`` / ``cuda``), ``device_name`` (the CPU model or ``torch.cuda.get_device_name``),
``torch_version``, ``xtransformers_version``, ``threads`` and ``measured_at`` (ISO 8601, UTC); ``wall_s`` is what
the calibration took. Times are seconds, rates per second, sizes in elements or bytes as named.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

__all__ = ["MatmulPoint", "AttentionPoint", "SlowDtype", "Calibration"]


@dataclass(frozen=True, kw_only=True)
class MatmulPoint:
    """Median seconds of one ``(m, k) @ (k, n)`` product in ``dtype`` (``2 m n k`` FLOPs)."""

    dtype: str
    m: int
    n: int
    k: int
    seconds: float

    @property
    def flops(self) -> int:
        return 2 * self.m * self.n * self.k

    @property
    def flops_per_s(self) -> float:
        return self.flops / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True, kw_only=True)
class AttentionPoint:
    """Median seconds of one ``scaled_dot_product_attention`` call: ``batch`` x ``heads`` query heads of width
    ``head_dim`` over ``seq_len`` tokens, ``kv_heads`` K/V heads, ``mask`` ``causal`` (``is_causal=True``) or
    ``dense`` (a float ``(batch, heads, n, n)`` mask, as x-transformers passes ALiBi), on ``backend`` (the SDPA
    backend that ran: ``flash``, ``efficient``, ``cudnn``, ``math``, or ``cpu_flash`` on a CPU).
    ``backward_seconds``: forward plus backward of the same call, None when not measured."""

    backend: str
    dtype: str
    batch: int
    heads: int
    kv_heads: int
    seq_len: int
    head_dim: int
    mask: str
    seconds: float
    backward_seconds: float | None = None


@dataclass(frozen=True, kw_only=True)
class SlowDtype:
    """A dtype this device emulates: one ``size x size`` product took ``slowdown_vs_float32`` times float32's."""

    dtype: str
    size: int
    seconds: float
    float32_seconds: float

    @property
    def slowdown_vs_float32(self) -> float:
        return self.seconds / self.float32_seconds if self.float32_seconds > 0 else float("inf")

    def message(self) -> str:
        """The plain sentence the page and the CLI show."""
        return (f"{self.dtype} runs on a slow emulation path on this device: a {self.size}x{self.size} matrix "
                f"product takes {self.slowdown_vs_float32:,.0f}x as long as in float32 "
                f"({1e3 * self.seconds:,.1f} ms vs {1e3 * self.float32_seconds:,.2f} ms). Measure in float32 here.")


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """One device's measured latency terms (see the module docstring)."""

    device: str
    device_name: str
    torch_version: str
    xtransformers_version: str
    threads: int
    measured_at: str
    wall_s: float
    launch_s: float
    module_overhead_s: float
    framework_s_per_module: float | None = None
    elementwise_bytes_per_s: dict[str, float] = field(default_factory=dict)
    matmul: tuple[MatmulPoint, ...] = ()
    attention: tuple[AttentionPoint, ...] = ()
    slow_dtypes: tuple[SlowDtype, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """What identifies a calibration in the store: device name, software versions and date."""
        return f"{self.device_name} | torch {self.torch_version} | x-transformers {self.xtransformers_version} | " \
               f"{self.measured_at}"

    def dtypes(self) -> tuple[str, ...]:
        """Dtypes with matrix-product points, in first-seen order."""
        return tuple(dict.fromkeys(p.dtype for p in self.matmul))

    def slow(self, dtype: str) -> SlowDtype | None:
        return next((s for s in self.slow_dtypes if s.dtype == dtype), None)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        d = dict(data)
        d["matmul"] = tuple(MatmulPoint(**p) for p in d.get("matmul", ()))
        d["attention"] = tuple(AttentionPoint(**p) for p in d.get("attention", ()))
        d["slow_dtypes"] = tuple(SlowDtype(**p) for p in d.get("slow_dtypes", ()))
        d["notes"] = tuple(d.get("notes", ()))
        d["elementwise_bytes_per_s"] = {str(k): float(v) for k, v in d.get("elementwise_bytes_per_s", {}).items()}
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        return cls.from_dict(json.loads(text))
