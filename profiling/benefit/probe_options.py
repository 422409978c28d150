"""What a probe is, before it runs: its options (``ProbeOptions``), each probe's defaults (``DEFAULTS``, ``QUICK``),
the family member it trains (``family``, ``member``), its training settings and its budget.

Shared by ``probes`` (planning dispatch and running) and the four probe modules (``probe_scaling``,
``probe_stability``, ``probe_extrapolation``, ``probe_heads``), which import from here, never from ``probes``:
``probes.plan`` imports them, so this module is what breaks the cycle (``tests/test_seams.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from xtlens.core.config import ConfigError, ModelConfig, XtlensError
from xtlens.profiling.benefit.harness import Budget, TrainSettings, steps_for
from xtlens.profiling.benefit.records import PROBES

__all__ = ["ProbeOptions", "ProbeInputError", "family", "member", "train_settings", "budget_for", "axis_config",
           "scaled_heads", "DEFAULTS", "QUICK", "SCALING_AXES", "NORMS", "POSITIONS", "DEFAULT_VOCAB",
           "OVERFIT_TOKENS", "OVERFIT_EPOCHS"]

SCALING_AXES = ("dim", "depth", "heads")
NORMS = ("deepnorm", "pre_norm", "post_norm")
#: the extrapolation probe's position schemes (``probe_extrapolation``)
POSITIONS = ("alibi", "rotary", "rotary_full", "xpos", "alibi+xpos", "sinusoidal", "absolute", "nope")

# Default sizes per probe (CPU, 2 cores, a few minutes each): the family member and the training recipe.
DEFAULTS: dict[str, dict[str, Any]] = {
    "scaling": {"dim": 64, "depth": 2, "heads": 4, "attn_dim_head": 16, "seq_len": 64, "batch": 32,
                "tokens": 131_072, "seeds": (0, 1, 2), "values": {"dim": (16, 32, 48, 64), "depth": (1, 2, 3, 4),
                                                                    "heads": (1, 2, 4, 8)}, "axis": "dim",
                "eval_tokens": 2048, "lrs": (1.5e-2, 3e-2, 6e-2), "isoflop_budgets": 3},
    # stability (probe_stability): 128 steps of 8 x 64 tokens (enough to leave the unigram plateau at a
    # stable lr), lr sweep with clipping off, 3 seeds
    "stability": {"dim": 32, "depth": 6, "heads": 2, "attn_dim_head": 16, "seq_len": 64, "batch": 8,
                  "tokens": 65_536, "seeds": (0, 1, 2), "values": (2, 8), "lrs": (3e-3, 1e-2, 3e-2, 1e-1),
                  "eval_tokens": 1024},
    # extrapolation (probe_extrapolation): 16 arms (8 schemes x 2 token-shift settings) x 3 seeds at L = 64,
    # 256 steps of 8 x 64 tokens at lr 1e-2: the model uses its context there (context gain at L of one ALiBi run
    # 0.17 +- 0.07 nats; at 98,304 tokens 0.15 +- 0.07, and with the old 16 x 64 batches at lr 3e-3 0.03 +- 0.05)
    "extrapolation": {"dim": 64, "depth": 2, "heads": 4, "attn_dim_head": 16, "seq_len": 64, "batch": 8,
                      "lr": 1e-2, "tokens": 131_072, "seeds": (0, 1, 2), "values": (1, 2, 4, 8), "eval_tokens": 2048,
                      "position_buckets": 16, "grad_clip": 1.0},
    # heads (probe_heads): 5 seeds, head counts at equal parameters with ALiBi share and rotary width fixed
    "heads": {"dim": 64, "depth": 2, "heads": 4, "attn_dim_head": 16, "seq_len": 128, "batch": 16,
              "tokens": 245_760, "seeds": (0, 1, 2, 3, 4), "values": (2, 4, 8), "eval_tokens": 4096},
    # atlas (probe_atlas): every arm (ATLAS_OPTIONS) + reference + control at 3 dims x 3 seeds, 4 heads x 16 wide
    # (heads do not split dim), the extrapolation probe's recipe (8 x 64 tokens per step, lr 1e-2); ``dim`` is the
    # member the probe is centred on (the largest size)
    "atlas": {"sizes": (16, 32, 64, 128), "dim": 64, "depth": 2, "heads": 4, "attn_dim_head": 16, "seq_len": 64,
              "batch": 8, "lr": 1e-2, "tokens": 65_536, "seeds": (0, 1, 2), "eval_tokens": 1024},
}
#: ``--quick`` (tests, a first look): each probe's settings that differ from ``DEFAULTS`` (the rest is kept)
QUICK: dict[str, dict[str, Any]] = {
    "scaling": {"tokens": 8_192, "seeds": (0, 1), "values": {"dim": (16, 32, 48), "depth": (1, 2, 3), "heads": (1, 2, 4)},
                "dim": 32, "heads": 2, "depth": 1, "seq_len": 32, "batch": 8, "eval_tokens": 512, "lrs": (3e-2, 6e-2),
                "isoflop_budgets": 3},
    "stability": {"tokens": 8_192, "seeds": (0, 1), "values": (1, 2), "lrs": (3e-3, 3.0),
                  "eval_tokens": 512},
    "extrapolation": {"tokens": 4_096, "seeds": (0,), "values": (1, 2), "seq_len": 16, "batch": 8, "dim": 32,
                      "depth": 1, "heads": 2, "eval_tokens": 512, "position_buckets": 4},
    "heads": {"tokens": 16_384, "seeds": (0, 1), "values": (2, 4), "eval_tokens": 1024},
    "atlas": {"sizes": (32, 64), "dim": 64, "tokens": 32_768, "seeds": (0, 1), "eval_tokens": 512},
}
DEFAULT_VOCAB = 512
OVERFIT_TOKENS = 8_192
OVERFIT_EPOCHS = 16


class ProbeInputError(XtlensError, ValueError):
    """Bad probe input; ``option`` names the command-line option (the page names its control)."""

    def __init__(self, option: str, value: object, allowed: str):
        self.option = option
        super().__init__(f"{option} = {value!r} is not allowed: {allowed}")


@dataclass(frozen=True, kw_only=True)
class ProbeOptions:
    """Everything that defines a probe. ``None`` means the probe's default (``DEFAULTS``)."""

    probe: str
    base: ModelConfig
    axis: str | None = None
    values: tuple[int, ...] | None = None
    tokens: int | None = None
    train_flops: int | None = None
    seeds: tuple[int, ...] | None = None
    seq_len: int | None = None
    batch: int | None = None
    num_tokens: int = DEFAULT_VOCAB
    lr: float | None = None
    evals: int = 8
    corpus: str | None = None  # a path; None = the default corpus
    device: str = "cpu"
    full_size: bool = False  # keep the base configuration's sizes (GPU): no scaling down
    options: tuple[str, ...] | None = None  # atlas: the options (arm names, ``probe_atlas``) to toggle; None = default
    quick: bool = False  # ``--quick``: ``QUICK``'s smaller settings over ``DEFAULTS`` (tests, a first look)
    extra: dict[str, Any] = field(default_factory=dict)  # family sizes (dim, depth, heads, attn_dim_head), overfit_*, eval_tokens

    def __post_init__(self) -> None:
        if self.probe not in PROBES:
            raise ProbeInputError("probe", self.probe, f"one of {', '.join(PROBES)}")
        if self.probe == "scaling" and self.axis is not None and self.axis not in SCALING_AXES:
            raise ProbeInputError("--axis", self.axis, f"one of {', '.join(SCALING_AXES)} (the field to sweep)")
        if self.tokens is not None and self.train_flops is not None:
            raise ProbeInputError("--train-flops", self.train_flops, "unset when --tokens is given (one budget)")
        for name, v, lo in (("--tokens", self.tokens, 1), ("--train-flops", self.train_flops, 1),
                            ("--seq-len", self.seq_len, 8), ("--batch", self.batch, 1)):
            if v is not None and v < lo:
                raise ProbeInputError(name, v, f"an integer of at least {lo}")
        if self.values is not None and (not self.values or any(v < 1 for v in self.values)):
            raise ProbeInputError("--values", ",".join(map(str, self.values)), "positive integers, e.g. 32,64,128")
        if self.seeds is not None and (not self.seeds or any(s < 0 for s in self.seeds)):
            raise ProbeInputError("--seeds", self.seeds, "non-negative integers, e.g. 0,1,2")
        if not 257 <= self.num_tokens <= 65536:
            raise ProbeInputError("--vocab", self.num_tokens, "an integer from 257 to 65,536 (byte-level BPE)")

    @property
    def defaults(self) -> dict[str, Any]:
        """This probe's defaults: ``DEFAULTS``, with ``QUICK``'s entries over them when ``quick``."""
        return DEFAULTS[self.probe] | (QUICK[self.probe] if self.quick else {})

    def default(self, key: str) -> Any:
        return self.defaults[key]

    @property
    def seed_list(self) -> tuple[int, ...]:
        return self.seeds if self.seeds is not None else self.default("seeds")

    def to_dict(self) -> dict[str, Any]:
        return {"probe": self.probe, "base": self.base.to_dict(), "axis": self.axis,
                "values": list(self.values) if self.values is not None else None, "tokens": self.tokens,
                "train_flops": self.train_flops, "seeds": list(self.seeds) if self.seeds is not None else None,
                "seq_len": self.seq_len, "batch": self.batch, "num_tokens": self.num_tokens, "lr": self.lr,
                "evals": self.evals, "corpus": self.corpus, "device": self.device, "full_size": self.full_size,
                "quick": self.quick, "extra": dict(self.extra),
                "options": list(self.options) if self.options is not None else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeOptions:
        d = dict(d)
        d["base"] = ModelConfig.from_dict(d["base"])
        for k in ("values", "seeds", "options"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)


def scaled_heads(n: int | None, old_heads: int, new_heads: int) -> int | None:
    return None if n is None else max(1, min(new_heads, round(n * new_heads / old_heads)))


def family(base: ModelConfig, *, dim: int, depth: int, heads: int, attn_dim_head: int, num_tokens: int,
           max_seq_len: int) -> ModelConfig:
    """A member of ``base``'s family at the given sizes: every flag kept; ALiBi heads and K/V heads scaled with
    ``heads``; ``shift_tokens`` kept (capped below ``dim``)."""
    kv = base.attn_kv_heads
    if kv is not None:
        kv = scaled_heads(kv, base.heads, heads)
        while heads % kv:
            kv -= 1
    try:
        return replace(base, dim=dim, depth=depth, heads=heads, attn_dim_head=attn_dim_head, num_tokens=num_tokens,
                       max_seq_len=max_seq_len, alibi_num_heads=scaled_heads(base.alibi_num_heads, base.heads, heads),
                       attn_kv_heads=kv, shift_tokens=min(base.shift_tokens, dim - 1))
    except ConfigError as exc:
        raise ProbeInputError(f"--set {exc.field}", exc.value, exc.allowed) from None


def train_settings(opt: ProbeOptions, **over: Any) -> TrainSettings:
    kw: dict[str, Any] = {"seq_len": opt.seq_len or opt.default("seq_len"), "batch": opt.batch or opt.default("batch"),
                          "evals": opt.evals}
    lr = opt.lr if opt.lr is not None else opt.defaults.get("lr")
    if lr is not None:
        kw["lr"] = lr
    kw["eval_tokens"] = int(opt.extra.get("eval_tokens", opt.default("eval_tokens")))
    kw.update(over)
    return TrainSettings(**kw)


def member(opt: ProbeOptions, settings: TrainSettings, **sizes: int) -> ModelConfig:
    if opt.full_size:
        b = opt.base
        sz = {"dim": b.dim, "depth": b.depth, "heads": b.heads, "attn_dim_head": b.attn_dim_head} | sizes
        vocab = opt.num_tokens
    else:
        d = opt.defaults | {k: v for k, v in opt.extra.items() if k in ("dim", "depth", "heads", "attn_dim_head")}
        sz = {k: d[k] for k in ("dim", "depth", "heads", "attn_dim_head")} | sizes
        vocab = opt.num_tokens
    need = max((settings.seq_len, *settings.eval_seq_lens))
    return family(opt.base, num_tokens=vocab, max_seq_len=need, **sz)


def budget_for(opt: ProbeOptions, reference: ModelConfig, settings: TrainSettings) -> Budget:
    if opt.train_flops is not None:
        b = Budget(kind="flops", value=opt.train_flops)
    else:
        b = Budget(kind="tokens", value=opt.tokens if opt.tokens is not None else opt.default("tokens"))
    steps_for(reference, b, settings)  # raises BudgetError naming --tokens / --train-flops
    return b


def axis_config(cfg: ModelConfig, axis: str, value: int) -> ModelConfig:
    try:
        if axis == "heads":
            return replace(cfg, heads=value, alibi_num_heads=scaled_heads(cfg.alibi_num_heads, cfg.heads, value),
                           attn_kv_heads=None if cfg.attn_kv_heads is None else
                           max(k for k in range(1, value + 1) if value % k == 0 and k <= cfg.attn_kv_heads))
        return replace(cfg, **{axis: value})
    except ConfigError as exc:
        raise ProbeInputError("--values", value, f"a valid {axis} for this family: {exc}") from None
