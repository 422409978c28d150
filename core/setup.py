"""Training and serving setups: how a configuration is trained or served, beside the ``Workload``.

Standard library only (like ``core.config``): frozen, validated dataclasses with URL round-trips. The cost
of a setup is computed in ``core.cost_model`` (``training_memory``, ``serving_memory``, ``training_flops``,
``what_fits``); this module only says what a setup is and which combinations are allowed.

``TrainingSetup``
    ``precision``: ``auto`` (every tensor in the workload dtype: today's single-dtype numbers), ``fp32``,
    ``bf16`` / ``fp16`` (pure half precision: weights, gradients, optimizer state and activations in 16 bits),
    ``amp_bf16`` / ``amp_fp16`` (``torch.autocast`` mixed precision: fp32 master weights, gradients and
    optimizer state; matmuls and their outputs in 16 bits). ``optimizer``: ``adamw`` (``torch.optim.AdamW``),
    ``sgd`` (``torch.optim.SGD(momentum=0.9)``), ``adafactor`` (``torch.optim.Adafactor``, torch >= 2.5),
    ``adamw8bit`` (bitsandbytes ``AdamW8bit``: predicted only, bitsandbytes needs CUDA). ``recompute``:
    ``none``, ``block`` (``torch.utils.checkpoint`` around every attention and feed-forward block), ``selective``
    (checkpoint around the attention core, x-transformers' ``Attend``: the n x n parts). ``grad_accum``
    micro-batches per optimizer step (the workload's ``batch`` is the micro-batch per device). ``dp``
    data-parallel degree with ``zero`` stage 0-3 (1: optimizer state sharded, 2: + gradients, 3: + weights,
    what FSDP's FULL_SHARD does). ``tp`` tensor-parallel degree (Megatron-style: heads, feed-forward width
    and vocabulary split over ``tp`` devices). ``loop``: ``free_logits`` (``loss = f(model(x))``: the logits
    die after the loss) or ``keep_logits`` (a loop that keeps ``logits`` alive through ``backward()``).

``ServingSetup``
    ``weights_bits``: ``None`` (the workload dtype), 16, 8 or 4 (linear-layer weights quantised per group of
    ``group_size`` input features with a float16 scale, plus a float16 zero point for 4 bits; embeddings and
    norms stay 16-bit). ``kv_cache``: ``None`` (the workload dtype), ``16``, ``fp8`` (float8_e4m3) or ``int8``
    (one float16 scale per cached token and K/V head). ``concurrent`` sequences of ``context_len`` tokens
    (``None``: the workload's batch and sequence length).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, fields
from urllib.parse import parse_qsl, urlencode

from xtlens.core.config import ConfigError, ModelConfig, Workload, decode_value
from xtlens.core.hardware import GPU_MEMORY_GIB

__all__ = [
    "PRECISIONS",
    "OPTIMIZERS",
    "RECOMPUTE",
    "LOOPS",
    "WEIGHT_BITS",
    "KV_CACHE",
    "TrainingSetup",
    "ServingSetup",
    "GPU_PRESETS_GIB",
    "precision_bytes",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "amp_bf16", "amp_fp16")
OPTIMIZERS = ("adamw", "sgd", "adafactor", "adamw8bit")
RECOMPUTE = ("none", "block", "selective")
LOOPS = ("free_logits", "keep_logits")
WEIGHT_BITS = (16, 8, 4)
KV_CACHE = ("16", "fp8", "int8")
MAX_DEGREE = 65_536

#: Device memory of common accelerators, GiB (2**30 bytes), from the one table of GPUs (``core.hardware.GPU_MEMORY_GIB``,
#: which also names each part's compute and bandwidth ceilings).
GPU_PRESETS_GIB: dict[str, float] = {name: gib for name, (gib, _family) in GPU_MEMORY_GIB.items()}

PRECISION_TEXT = {
    "auto": "workload dtype for everything",
    "fp32": "float32 everything",
    "bf16": "pure bfloat16 (weights, grads, optimizer state, activations)",
    "fp16": "pure float16 (weights, grads, optimizer state, activations)",
    "amp_bf16": "autocast bfloat16, fp32 master weights, grads and optimizer state",
    "amp_fp16": "autocast float16, fp32 master weights, grads and optimizer state",
}
OPTIMIZER_TEXT = {
    "adamw": "AdamW (torch.optim)",
    "sgd": "SGD with momentum (torch.optim)",
    "adafactor": "Adafactor (torch.optim, factored second moment)",
    "adamw8bit": "AdamW 8-bit (bitsandbytes; predicted only)",
}
RECOMPUTE_TEXT = {
    "none": "no recomputation",
    "block": "checkpoint every attention / feed-forward block",
    "selective": "checkpoint the attention core (Attend: the n x n parts)",
}
LOOP_TEXT = {
    "free_logits": "loss = f(model(x)): logits freed after the loss",
    "keep_logits": "logits kept alive through backward()",
}


def precision_bytes(precision: str, wl: Workload) -> tuple[int, int]:
    """``(state_bytes, compute_bytes)`` per element: the dtype of weights / gradients / optimizer state and
    the dtype of matmul outputs. ``auto`` is the workload dtype for both (today's single-dtype model)."""
    if precision == "auto":
        return wl.dtype_bytes, wl.dtype_bytes
    if precision == "fp32":
        return 4, 4
    if precision in ("bf16", "fp16"):
        return 2, 2
    return 4, 2  # amp_*: fp32 master state, 16-bit compute


def _choice(name: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(name, value, "one of " + ", ".join(map(str, allowed)))


def _int_in(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(name, value, f"an integer from {lo} to {hi}")


class _QueryMixin:
    """URL round-trip shared by the setups: only fields that differ from the default are written, each
    prefixed (``t_`` / ``s_``) so that they never clash with ``ModelConfig`` or workload parameters."""

    PREFIX: typing.ClassVar[str] = ""

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, object]):
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(unknown[0], None, f"a {cls.__name__} field: one of {', '.join(sorted(known))}")
        return cls(**data)

    def to_query_params(self) -> dict[str, str]:
        default = type(self)()
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value != getattr(default, f.name):
                out[self.PREFIX + f.name] = "none" if value is None else str(value)
        return out

    def to_query(self) -> str:
        return urlencode(self.to_query_params())

    @classmethod
    def from_query(cls, query: str | dict[str, str]):
        """Parse the prefixed parameters of a query string (other parameters are ignored)."""
        items = parse_qsl(query.lstrip("?")) if isinstance(query, str) else list(query.items())
        hints = typing.get_type_hints(cls)
        values: dict[str, object] = {}
        for key, raw in items:
            if not key.startswith(cls.PREFIX):
                continue
            name = key[len(cls.PREFIX):]
            if name not in hints:
                continue
            values[name] = decode_value(name, raw, hints[name])
        return cls(**values)


@dataclass(frozen=True, kw_only=True)
class TrainingSetup(_QueryMixin):
    """How a training step runs (see the module docstring). Validated on construction; ``check_against``
    adds the rules that need the model (tensor parallelism must split the heads)."""

    PREFIX: typing.ClassVar[str] = "t_"

    precision: str = "auto"
    optimizer: str = "adamw"
    recompute: str = "none"
    grad_accum: int = 1
    dp: int = 1
    zero: int = 0
    tp: int = 1
    loop: str = "free_logits"

    def __post_init__(self) -> None:
        _choice("precision", self.precision, PRECISIONS)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("recompute", self.recompute, RECOMPUTE)
        _choice("loop", self.loop, LOOPS)
        _int_in("grad_accum", self.grad_accum, 1, 65_536)
        _int_in("dp", self.dp, 1, MAX_DEGREE)
        _int_in("tp", self.tp, 1, 512)
        _int_in("zero", self.zero, 0, 3)
        if self.zero > 0 and self.dp == 1:
            raise ConfigError("zero", self.zero, f"ZeRO stage {self.zero} shards over data-parallel ranks: it needs "
                              "dp >= 2 (use zero = 0 with dp = 1)")

    @property
    def mixed(self) -> bool:
        return self.precision.startswith("amp_")

    def check_against(self, cfg: ModelConfig) -> TrainingSetup:
        """Raise ``ConfigError`` (naming ``tp``) when tensor parallelism cannot split this model: ``tp`` must
        divide the query heads and the feed-forward width, and divide the K/V heads or be a multiple of
        them (fewer K/V heads than ranks are replicated, as Megatron-LM does)."""
        tp, h, g = self.tp, cfg.heads, cfg.kv_heads
        if tp == 1:
            return self
        if h % tp:
            raise ConfigError("tp", tp, f"a divisor of heads = {h} (tensor parallelism splits the heads)")
        if g % tp and tp % g:
            raise ConfigError("tp", tp, f"a divisor of the K/V heads = {g}, or a multiple of it (K/V heads "
                              "replicated over ranks)")
        if cfg.ff_inner_dim % tp:
            raise ConfigError("tp", tp, f"a divisor of the feed-forward width {cfg.ff_inner_dim} (dim x ff_mult)")
        if cfg.num_residual_streams > 1:
            raise ConfigError("tp", tp, "1 with hyper-connections (num_residual_streams > 1): not modelled")
        return self

    def describe(self) -> str:
        parts = [PRECISION_TEXT[self.precision], OPTIMIZER_TEXT[self.optimizer], RECOMPUTE_TEXT[self.recompute],
                 LOOP_TEXT[self.loop]]
        if self.grad_accum > 1:
            parts.append(f"{self.grad_accum} micro-batches per step")
        if self.dp > 1:
            parts.append(f"data parallel x{self.dp}, ZeRO-{self.zero}")
        if self.tp > 1:
            parts.append(f"tensor parallel x{self.tp}")
        return "; ".join(parts)


@dataclass(frozen=True, kw_only=True)
class ServingSetup(_QueryMixin):
    """How the model is served (see the module docstring). ``check_against`` checks the group size against
    the model's linear layers."""

    PREFIX: typing.ClassVar[str] = "s_"

    weights_bits: int | None = None
    group_size: int = 128
    kv_cache: str | None = None
    concurrent: int | None = None
    context_len: int | None = None

    def __post_init__(self) -> None:
        if self.weights_bits is not None:
            _choice("weights_bits", self.weights_bits, WEIGHT_BITS)
        _int_in("group_size", self.group_size, 1, 1 << 20)
        if self.kv_cache is not None:
            _choice("kv_cache", self.kv_cache, KV_CACHE)
        if self.concurrent is not None:
            _int_in("concurrent", self.concurrent, 1, 4096)
        if self.context_len is not None:
            _int_in("context_len", self.context_len, 1, 1 << 24)

    @property
    def quantised(self) -> bool:
        return self.weights_bits in (8, 4)

    def check_against(self, cfg: ModelConfig) -> ServingSetup:
        """Raise ``ConfigError`` (naming ``group_size``) when a quantised weight's input width is not a
        multiple of the group size: ``dim`` (q/k/v, feed-forward in, logits), ``heads * attn_dim_head``
        (attention out) and the feed-forward width (feed-forward out); and (every setup) a ``context_len`` beyond
        the model's ``max_seq_len``, naming both."""
        if self.context_len is not None and self.context_len > cfg.max_seq_len:
            raise ConfigError("context_len", self.context_len, f"at most the model's max_seq_len = {cfg.max_seq_len}")
        if not self.quantised:
            return self
        for what, width in (("dim", cfg.dim), ("heads x attn_dim_head", cfg.heads * cfg.attn_dim_head),
                            ("the feed-forward width", cfg.ff_inner_dim)):
            if width % self.group_size:
                raise ConfigError("group_size", self.group_size,
                                  f"a divisor of {what} = {width} (int{self.weights_bits} weights are quantised in "
                                  "groups of input features)")
        return self

    def workload(self, wl: Workload) -> Workload:
        """The workload this setup serves: ``concurrent`` sequences of ``context_len`` tokens (the workload's
        own where unset), in the workload dtype."""
        return Workload(batch=self.concurrent or wl.batch, seq_len=self.context_len or wl.seq_len, dtype=wl.dtype)

    def describe(self) -> str:
        w = "weights in the workload dtype" if self.weights_bits is None else (
            "16-bit weights" if self.weights_bits == 16 else f"int{self.weights_bits} weights (groups of "
            f"{self.group_size})")
        kv = "KV cache in the workload dtype" if self.kv_cache is None else f"{self.kv_cache} KV cache"
        return f"{w}; {kv}"
