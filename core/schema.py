"""The configuration schema (``core.config`` re-exports it): one frozen dataclass whose fields are x-transformers keyword names.

Standard library only, so that validation and round-trips import in a millisecond.

Semantics follow x-transformers, not folklore (read from its source, versions 1.19.1 and 2.31):

* ``heads`` does not split ``dim``: each head is ``attn_dim_head`` wide (default 64), so the
  attention inner width is ``heads * attn_dim_head``, whatever ``dim`` is.
* ``shift_tokens=1`` is token shifting: in each block a slice of the feature vector is taken from
  the previous position (``ShiftTokens``). It is not the next-token target shift.
* ``alibi_num_heads=4`` puts the ALiBi bias on 4 heads; the other heads get no positional bias
  from ALiBi (they are zero-padded in the bias tensor).
* ``attn_one_kv_head=True`` is multi-query attention: one K/V head shared by all query heads.
* ``deepnorm=True`` (x-transformers <= 1.19.1) means post-norm, a learnable residual scale with the
  constant ``(2 * depth) ** 0.25`` and a re-init with gain ``(8 * depth) ** -0.25``. Current
  x-transformers rejects the keyword; ``core.builder`` reproduces it.
* ``attn_flash=True`` asks for PyTorch's ``scaled_dot_product_attention``; with an additive ALiBi
  bias the flash kernel cannot run and another SDPA backend does.

Defaults are those of x-transformers (so a parsed snippet means what it means there); the seed
configuration is ``core.presets.PRESETS["seed"]``.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, fields
from urllib.parse import parse_qsl, urlencode

from xtlens.core.errors import ConfigError, name_list
from xtlens.core.untrusted import MAX_NESTING, check_nesting, no_duplicates, untrusted_text

__all__ = [
    "ModelConfig",
    "Workload",
    "LIMITS",
    "FF_MULT_RANGE",
    "DROPOUT_RANGE",
    "DTYPE_BYTES",
    "WRAPPER_FIELDS",
    "GROUPS",
    "decode_value",
    "field_type",
    "missing_metadata",
]


# Size limits: generous for real models, small enough to keep the dashboard's math meaningful.
LIMITS: dict[str, tuple[int, int]] = {
    "num_tokens": (2, 1_048_576),
    "max_seq_len": (1, 1_048_576),
    "dim": (8, 32_768),
    "depth": (1, 512),
    "heads": (1, 512),
    "attn_dim_head": (4, 1_024),
    "shift_tokens": (0, 64),
    "attn_num_mem_kv": (0, 1_024),
    "rotary_emb_dim": (4, 1_024),
    "num_residual_streams": (1, 16),
    "batch": (1, 4096),  # a workload's sequences (``Workload.batch``; also the largest batch of an uploaded row)
}
FF_MULT_RANGE = (0.125, 64.0)
DROPOUT_RANGE = (0.0, 1.0)

DTYPE_BYTES: dict[str, int] = {"float32": 4, "bfloat16": 2, "float16": 2}

# TransformerWrapper(...) keywords; every other field is a Decoder(...) keyword.
WRAPPER_FIELDS = ("num_tokens", "max_seq_len", "use_abs_pos_emb", "tie_embedding", "emb_dropout")

# Field metadata: what the dashboard's controls, the URL and the help texts are derived from
# (``dashboard.schema`` reads it; nothing else lists the fields). Keys: ``kind`` ("int", "opt_int",
# "float", "bool"), ``lo``/``hi``/``step`` (widget and validation range; for "opt_int" the range of a
# set value), ``group`` (sidebar section, one of ``GROUPS``), ``label``, ``description`` (what
# x-transformers does with the keyword, read from its source), ``placeholder`` (empty "opt_int").
GROUPS: dict[str, str] = {
    "size": "Model size",
    "attention": "Attention",
    "positions": "Positions",
    "feedforward": "Feed-forward",
    "norm_residual": "Normalisation and residual",
    "no_cost": "Dropout (changes no cost)",
}


def _meta(kind: str, group: str, description: str, *, lo: float | None = None, hi: float | None = None,
          step: float | None = None, label: str | None = None, placeholder: str | None = None,
          cost_neutral: bool = False) -> dict[str, object]:
    return {"kind": kind, "group": group, "description": description, "lo": lo, "hi": hi, "step": step,
            "label": label, "placeholder": placeholder, "cost_neutral": cost_neutral}


def _int(default: object, group: str, description: str, *, name: str, step: float = 1,
         label: str | None = None) -> typing.Any:
    """An integer field with its range from ``LIMITS[name]``."""
    lo, hi = LIMITS[name]
    meta = _meta("int", group, description, lo=lo, hi=hi, step=step, label=label)
    return dataclasses.field(metadata=meta) if default is dataclasses.MISSING else dataclasses.field(
        default=default, metadata=meta)


def _opt_int(group: str, description: str, *, lo: int, hi: int, placeholder: str, label: str | None = None,
             step: float = 1) -> typing.Any:
    return dataclasses.field(default=None, metadata=_meta("opt_int", group, description, lo=lo, hi=hi, step=step,
                                                          label=label, placeholder=placeholder))


def _bool(default: bool, group: str, description: str, *, label: str | None = None) -> typing.Any:
    return dataclasses.field(default=default, metadata=_meta("bool", group, description, label=label))


def _dropout(description: str) -> typing.Any:
    lo, hi = DROPOUT_RANGE
    return dataclasses.field(default=0.0, metadata=_meta(
        "float", "no_cost", description + " Changes no parameter or FLOP count; xtlens' training-memory estimate "
        "assumes dropout 0 (a dropout > 0 also keeps its masks for backward).", lo=lo, hi=hi, step=0.05,
        cost_neutral=True))


def missing_metadata(field: dataclasses.Field) -> list[str]:
    """The metadata keys a ``ModelConfig`` field lacks to get its control, URL parameter and help text
    (``kind``, ``group`` one of ``GROUPS``, ``description``); empty when it has them all."""
    meta = field.metadata
    missing = [key for key in ("kind", "description") if not meta.get(key)]
    if meta.get("group") not in GROUPS:
        missing.insert(1, "group")
    return missing


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, value, f"an integer from {lo} to {hi}")
    if not lo <= value <= hi:
        raise ConfigError(name, value, f"an integer from {lo} to {hi}")


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(name, value, "true or false")


def _check_number(name: str, value: object, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ConfigError(name, value, f"a number from {lo:g} to {hi:g}")


_H = LIMITS["heads"][1]


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """A causal x-transformers decoder: ``TransformerWrapper(..., attn_layers=Decoder(...))``.

    Field names are the x-transformers keyword names, defaults are x-transformers' defaults. Validated on
    construction. Each field's ``metadata`` (see ``_meta``) drives the dashboard control, its range and
    its help text.
    """

    # TransformerWrapper
    num_tokens: int = _int(dataclasses.MISSING, "size", "Vocabulary size: rows of the embedding and logits "
                           "matrices.", name="num_tokens", step=1000, label="num_tokens (vocabulary)")
    max_seq_len: int = _int(dataclasses.MISSING, "size", "Longest sequence the model accepts (and rows of a "
                            "learned absolute position table, if any).", name="max_seq_len", step=1024)
    use_abs_pos_emb: bool = _bool(True, "positions", "Learned absolute position table; x-transformers skips it "
                                  "anyway when rotary or rel_pos_bias is on (disable_abs_pos_emb).")
    tie_embedding: bool = _bool(False, "size", "Share the token embedding with the output (logits) projection.")
    emb_dropout: float = _dropout("Dropout on the token (+ position) embeddings (TransformerWrapper.emb_dropout).")
    # Decoder: sizes
    dim: int = _int(dataclasses.MISSING, "size", "Width of the residual stream and of the token embedding.",
                    name="dim", step=64, label="dim (model width)")
    depth: int = _int(dataclasses.MISSING, "size", "Number of blocks; each block is one attention and one "
                      "feed-forward sub-layer (two feed-forwards with macaron).", name="depth",
                      label="depth (layers)")
    heads: int = _int(8, "size", "Number of query heads. Heads do NOT split dim: each head is attn_dim_head wide, "
                      "so the attention inner width is heads x attn_dim_head.", name="heads",
                      label="heads (query heads)")
    attn_dim_head: int = _int(64, "size", "Width of each attention head (x-transformers default 64), independent "
                              "of dim.", name="attn_dim_head", step=16, label="attn_dim_head (head width)")
    ff_mult: float = dataclasses.field(default=4, metadata=_meta(
        "float", "size", "Feed-forward hidden width = int(dim x ff_mult).", lo=FF_MULT_RANGE[0], hi=FF_MULT_RANGE[1],
        step=0.5, label="ff_mult (feed-forward width / dim)"))
    ff_glu: bool = _bool(False, "feedforward", "Gated feed-forward (GLU): the first projection is twice as wide "
                         "(value and gate halves), then value x activation(gate).")
    # Decoder: attention variants
    attn_one_kv_head: bool = _bool(False, "attention", "Multi-query attention: one K/V head shared by all query "
                                   "heads (smaller K/V projections and KV cache).")
    attn_kv_heads: int | None = _opt_int("attention", "Grouped-query attention: number of K/V heads, a divisor of heads. "
                                         "Empty = one K/V head per query head. Must stay empty when "
                                         "attn_one_kv_head is on.", lo=1, hi=_H, placeholder="= heads",
                                         label="attn_kv_heads (K/V heads)")
    attn_flash: bool = _bool(False, "attention", "Use torch.nn.functional.scaled_dot_product_attention. Which kernel "
                             "runs (flash, memory-efficient, math) depends on device, dtype and whether a bias is "
                             "passed.")
    # Decoder: positions
    alibi_pos_bias: bool = _bool(False, "positions", "ALiBi: an additive linear distance penalty on the attention "
                                 "scores of alibi_num_heads heads. An additive bias keeps PyTorch SDPA off the flash "
                                 "kernel.")
    alibi_num_heads: int | None = _opt_int("positions", "With alibi_pos_bias: how many heads get the ALiBi distance "
                                           "penalty; the other heads get no ALiBi bias. Empty = all heads. At most "
                                           "heads.", lo=1, hi=_H, placeholder="= heads",
                                           label="alibi_num_heads (heads with ALiBi)")
    rotary_pos_emb: bool = _bool(False, "positions", "Rotary position embedding on queries and keys "
                                 "(rotary_emb_dim, default attn_dim_head // 2, channels per head).")
    rotary_xpos: bool = _bool(False, "positions", "Rotary with xPos length-extrapolation scaling; switches rotary on "
                              "by itself (causal only).")
    # Decoder: normalisation and residual
    deepnorm: bool = _bool(False, "norm_residual", "x-transformers <= 1.19.1 only: post-norm, residual scale "
                           "(2 depth)^0.25, re-init gain (8 depth)^-0.25. Current x-transformers rejects it; xtlens "
                           "emulates it (see effective kwargs).")
    shift_tokens: int = _int(0, "size", "Token shifting: before each sub-layer, slices of the feature vector are "
                             "taken from the previous 1..shift_tokens positions (x-transformers ShiftTokens). No "
                             "parameters. It is NOT the next-token target shift.", name="shift_tokens")
    # --- x-transformers 2.31 options (AttentionLayers / Attention / FeedForward keywords) ---
    use_rmsnorm: bool = _bool(False, "norm_residual", "RMSNorm instead of LayerNorm in every norm: "
                              "F.normalize(x) * sqrt(dim) * g, one gain g of size dim (x_transformers.py:1076). "
                              "At most one of use_rmsnorm, use_simple_rmsnorm, use_scalenorm.")
    use_simple_rmsnorm: bool = _bool(False, "norm_residual", "SimpleRMSNorm: F.normalize(x) * sqrt(dim), no "
                                     "learned gain at all (x_transformers.py:1114): the norms have 0 parameters.")
    use_scalenorm: bool = _bool(False, "norm_residual", "ScaleNorm: F.normalize(x) * sqrt(dim) * g with ONE scalar "
                                "gain g per norm (x_transformers.py:1059).")
    ff_swish: bool = _bool(False, "feedforward", "SiLU (swish) activation in the feed-forward instead of GELU "
                           "(with ff_glu: SwiGLU). Ignored by x-transformers when ff_relu_squared is on "
                           "(x_transformers.py:1794). No cost change (element-wise).")
    ff_relu_squared: bool = _bool(False, "feedforward", "ReLU(x)^2 activation in the feed-forward "
                                  "(x_transformers.py:375). Takes precedence over ff_swish. No cost change.")
    ff_no_bias: bool = _bool(False, "feedforward", "Drop the biases of the feed-forward linears "
                             "(x_transformers.py:1815, 1820). With ff_glu the GLU input projection keeps its bias: "
                             "x-transformers builds GLU's nn.Linear with a bias regardless (x_transformers.py:1752).")
    attn_qk_norm: bool = _bool(False, "attention", "Cosine-sim attention: queries and keys are l2-normalised per "
                               "head and the scores scaled by a fixed 10 instead of 1/sqrt(attn_dim_head) "
                               "(x_transformers.py:2422; attn_qk_norm_scale default 10). No parameters, no matmul.")
    attn_gate_values: bool = _bool(False, "attention", "Gate the attention output per channel: "
                                   "out * sigmoid(to_v_gate(x)), to_v_gate a bias-free Linear(dim, heads x "
                                   "attn_dim_head) initialised to 0 (x_transformers.py:2048, 2715).")
    attn_num_mem_kv: int = _int(0, "attention", "Learned memory key/value slots prepended to every attention's "
                                "keys and values (mem_k, mem_v: kv_heads x attn_num_mem_kv x attn_dim_head each, "
                                "x_transformers.py:2190): every query attends to n + attn_num_mem_kv keys. Not in the "
                                "KV cache.", name="attn_num_mem_kv", label="attn_num_mem_kv (memory K/V slots)")
    rotary_emb_dim: int | None = _opt_int("positions", "Rotary width per head (channels rotated); empty = "
                                          "attn_dim_head // 2 (x_transformers.py:2894). Only used with rotary. An "
                                          "even number from 4 to attn_dim_head.",
                                          lo=LIMITS["rotary_emb_dim"][0], hi=LIMITS["rotary_emb_dim"][1], step=2,
                                          placeholder="= attn_dim_head // 2", label="rotary_emb_dim (rotary width)")
    rel_pos_bias: bool = _bool(False, "positions", "T5 relative position bias: a learned (32 buckets x heads) table "
                               "shared by all layers, turned into an (heads, n, n) additive bias in every attention "
                               "(x_transformers.py:474-517). Disables the absolute position table. x-transformers "
                               "rejects it with attn_flash and with ALiBi, and fails at forward with rotary "
                               "(x_transformers.py:2584).")
    sandwich_norm: bool = _bool(False, "norm_residual", "A second norm on each sub-layer's output before the "
                                "residual add (post_branch_norm, x_transformers.py:3302): one more norm per "
                                "sub-layer. Pre-norm only.")
    residual_attn: bool = _bool(False, "attention", "Residual attention (RealFormer): each attention adds the previous "
                                "layer's pre-softmax scores to its own (x_transformers.py:3723). Needs the einsum "
                                "path: x-transformers rejects it with attn_flash. No parameters or FLOPs counted "
                                "(an element-wise add).")
    macaron: bool = _bool(False, "norm_residual", "Macaron layout: each block is feed-forward, attention, "
                          "feed-forward, each feed-forward output scaled by 0.5 (x_transformers.py:3009, 3237). Twice "
                          "the feed-forward parameters and FLOPs.")
    pre_norm: bool = _bool(True, "norm_residual", "Pre-norm (x-transformers default): a norm before each sub-layer "
                           "plus a final norm. False = post-norm: a norm after each residual add, no final norm "
                           "(x_transformers.py:3301-3303, 3155). deepnorm implies post-norm.")
    num_residual_streams: int = _int(1, "norm_residual", "Hyper-connections (x_transformers.py:1376ff): more than 1 "
                                     "keeps that many residual streams, mixed before and after every sub-layer by "
                                     "learned static + input-dependent weights; the streams are summed before the "
                                     "final norm. The sub-layers still see one dim-wide input.",
                                     name="num_residual_streams",
                                     label="num_residual_streams (hyper-connections)")
    # --- cost-neutral keywords ---
    attn_dropout: float = _dropout("Dropout on the attention probabilities (Attend dropout; SDPA dropout_p).")
    ff_dropout: float = _dropout("Dropout between the feed-forward projections.")
    layer_dropout: float = _dropout("Stochastic depth: in training each sub-layer is skipped with this probability "
                                    "(x_transformers.py:3646); the counts assume no layer is skipped.")

    def __post_init__(self) -> None:
        for f in fields(self):
            value, kind = getattr(self, f.name), f.metadata.get("kind")
            if kind == "int":
                _check_int(f.name, value, int(f.metadata["lo"]), int(f.metadata["hi"]))
            elif kind == "bool" or f.type in ("bool", bool):
                _check_bool(f.name, value)
            elif kind == "float" and f.metadata.get("cost_neutral"):
                _check_number(f.name, value, *DROPOUT_RANGE)
                object.__setattr__(self, f.name, float(value))  # a probability is a float (0 -> 0.0)
        lo, hi = FF_MULT_RANGE
        if isinstance(self.ff_mult, bool) or not isinstance(self.ff_mult, (int, float)) or not lo <= self.ff_mult <= hi:
            raise ConfigError("ff_mult", self.ff_mult, f"a number from {lo} to {hi:g}")
        if int(self.dim * self.ff_mult) < 1:
            raise ConfigError("ff_mult", self.ff_mult, f"a multiplier giving a feed-forward width int(dim * ff_mult) >= 1 (dim = {self.dim})")
        if self.attn_kv_heads is not None:
            _check_int("attn_kv_heads", self.attn_kv_heads, 1, self.heads)
            if self.attn_one_kv_head:
                raise ConfigError(
                    "attn_kv_heads",
                    self.attn_kv_heads,
                    "unset (None) when attn_one_kv_head is true: x-transformers accepts one or the other",
                )
            if self.heads % self.attn_kv_heads:
                divisors = [d for d in range(1, self.heads + 1) if self.heads % d == 0]
                raise ConfigError("attn_kv_heads", self.attn_kv_heads, f"a divisor of heads = {self.heads}: one of {divisors}")
        if self.alibi_num_heads is not None:
            _check_int("alibi_num_heads", self.alibi_num_heads, 1, self.heads)
        if self.rotary_emb_dim is not None:
            lo_r = LIMITS["rotary_emb_dim"][0]
            _check_int("rotary_emb_dim", self.rotary_emb_dim, lo_r, min(self.attn_dim_head, LIMITS["rotary_emb_dim"][1]))
            if self.rotary_emb_dim % 2:
                raise ConfigError("rotary_emb_dim", self.rotary_emb_dim,
                                  f"an even integer from {lo_r} to attn_dim_head = {self.attn_dim_head} (channels are "
                                  "rotated in pairs)")
        elif self.uses_rotary and (self.attn_dim_head % 4 or self.attn_dim_head < 8):
            raise ConfigError(
                "attn_dim_head",
                self.attn_dim_head,
                "a multiple of 4 from 8 up with rotary embeddings (the rotary width attn_dim_head // 2 must be even,"
                " and x-transformers divides by rotary width - 2)",
            )
        if self.shift_tokens >= self.dim:
            raise ConfigError("shift_tokens", self.shift_tokens, f"an integer from 0 to {self.dim - 1} (less than dim)")
        self._check_combinations()

    def _check_combinations(self) -> None:
        """Cross-field rules x-transformers 2.31 enforces (or would break on), each naming the later field."""
        norms = [n for n in ("use_rmsnorm", "use_simple_rmsnorm", "use_scalenorm") if getattr(self, n)]
        if len(norms) > 1:
            raise ConfigError(norms[1], True, f"false when {norms[0]} is true: x-transformers accepts at most one of "
                              "use_rmsnorm, use_simple_rmsnorm, use_scalenorm")
        if self.rel_pos_bias and self.alibi_pos_bias:
            raise ConfigError("rel_pos_bias", True, "false when alibi_pos_bias is true: x-transformers accepts one "
                              "positional bias (x_transformers.py:2910)")
        if self.rel_pos_bias and self.attn_flash:
            raise ConfigError("rel_pos_bias", True, "false when attn_flash is true: x-transformers rejects the T5 "
                              "relative bias with flash attention (x_transformers.py:2921)")
        if self.rel_pos_bias and self.uses_rotary:
            raise ConfigError("rel_pos_bias", True, "false when rotary is on (rotary_pos_emb / rotary_xpos): with rotary "
                              "x-transformers 2.31 passes positions to every attention and then accepts only ALiBi "
                              "(x_transformers.py:2584, 'only alibi allowed for custom positions'), failing at forward")
        if self.residual_attn and self.attn_flash:
            raise ConfigError("residual_attn", True, "false when attn_flash is true: x-transformers rejects residual "
                              "attention with flash attention (x_transformers.py:2956)")
        if self.sandwich_norm and not self.uses_pre_norm:
            raise ConfigError("sandwich_norm", True, "false with post-norm (pre_norm=False or deepnorm): x-transformers "
                              "allows sandwich norm only with pre-norm (x_transformers.py:2931)")
        if self.num_residual_streams > 1 and self.deepnorm:
            raise ConfigError("num_residual_streams", self.num_residual_streams,
                              "1 with deepnorm: x-transformers' HyperConnection silently drops scale_residual "
                              "(x_transformers.py:1376ff), so DeepNorm's residual scale could not be built")

    # --- derived quantities (what x-transformers actually builds) ---

    @property
    def kv_heads(self) -> int:
        """Number of K/V heads the attention layers have (1 with ``attn_one_kv_head``)."""
        if self.attn_one_kv_head:
            return 1
        return self.attn_kv_heads if self.attn_kv_heads is not None else self.heads

    @property
    def alibi_heads(self) -> int:
        """Heads that receive an ALiBi bias: 0 without ALiBi, ``alibi_num_heads`` or all heads with it."""
        if not self.alibi_pos_bias:
            return 0
        return self.alibi_num_heads if self.alibi_num_heads is not None else self.heads

    @property
    def uses_rotary(self) -> bool:
        """``rotary_xpos`` switches rotary embeddings on by itself, as in x-transformers."""
        return self.rotary_pos_emb or self.rotary_xpos

    @property
    def rotary_dim(self) -> int:
        """Rotary width per head: ``rotary_emb_dim``, by default ``attn_dim_head // 2`` (x-transformers 2.x).

        x-transformers 1.19.1 used ``max(attn_dim_head // 2, 32)``; ``core.builder`` notes the difference
        when ``attn_dim_head < 64``. Rotary embeddings have no parameters, so counts do not change.
        """
        if not self.uses_rotary:
            return 0
        return self.rotary_emb_dim if self.rotary_emb_dim is not None else self.attn_dim_head // 2

    @property
    def has_abs_pos_emb(self) -> bool:
        """x-transformers adds a learned absolute position table only when neither rotary nor the T5 relative
        bias is on (``disable_abs_pos_emb``, x_transformers.py:2892)."""
        return self.use_abs_pos_emb and not self.uses_rotary and not self.rel_pos_bias

    @property
    def uses_pre_norm(self) -> bool:
        """Pre-norm as built: ``pre_norm`` unless ``deepnorm`` (which means post-norm)."""
        return self.pre_norm and not self.deepnorm

    @property
    def num_ff_layers(self) -> int:
        """Feed-forward sub-layers: ``depth``, or ``2 * depth`` with ``macaron`` (blocks f, a, f)."""
        return self.depth * (2 if self.macaron else 1)

    @property
    def num_layers(self) -> int:
        """Sub-layers (attention + feed-forward), each with its own norm(s) and residual."""
        return self.depth + self.num_ff_layers

    @property
    def ff_inner_dim(self) -> int:
        """Hidden width of each feed-forward block: ``int(dim * ff_mult)``."""
        return int(self.dim * self.ff_mult)

    @property
    def attn_inner_dim(self) -> int:
        """Query/output width of each attention block: ``heads * attn_dim_head`` (not ``dim``)."""
        return self.heads * self.attn_dim_head

    # --- round-trips ---

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: typing.Mapping[str, object]) -> ModelConfig:
        if not isinstance(data, typing.Mapping):
            raise ConfigError("config", data, "a mapping of ModelConfig fields")
        known = {f.name for f in fields(cls)}
        unknown = sorted((k for k in data if k not in known), key=str)
        if unknown:
            first = str(unknown[0]) or "config"
            raise ConfigError(first, data[unknown[0]] if first != "config" else None,
                              f"a known field; unknown keyword(s): {name_list([repr(str(k)) for k in unknown])}")
        missing = [f.name for f in fields(cls) if f.name not in data and f.default is dataclasses.MISSING]
        if missing:
            raise ConfigError(missing[0], None, "a value: this field is required")
        return cls(**dict(data))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelConfig:
        """Parse a JSON object of fields; oversized, non-UTF-8, deeply nested, non-standard (NaN, Infinity) or
        duplicate-key input raises ``ConfigError``."""
        text = untrusted_text("json", text)
        check_nesting("json", text)

        def constant(name: str) -> object:
            raise ConfigError("json", name, "standard JSON (no NaN or Infinity)")

        try:
            data = json.loads(text, object_pairs_hook=lambda pairs: no_duplicates("JSON object", pairs),
                              parse_constant=constant)
        except ConfigError:
            raise
        except json.JSONDecodeError as exc:
            raise ConfigError("json", text[:40], f"valid JSON ({exc.msg} at line {exc.lineno})") from None
        except (RecursionError, MemoryError):
            raise ConfigError("json", None, f"at most {MAX_NESTING} nested brackets") from None
        except ValueError as exc:  # an integer beyond Python's digit limit
            raise ConfigError("json", None, f"valid JSON numbers ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError("json", data, "a JSON object of ModelConfig fields")
        return cls.from_dict(data)

    def to_query(self) -> str:
        """URL query string holding every field (``true``/``false``, ``none`` for None)."""
        return urlencode({k: _encode_value(v) for k, v in self.to_dict().items()})

    @classmethod
    def from_query(cls, query: str | typing.Mapping[str, str]) -> ModelConfig:
        """Parse ``name=value&...`` (or a mapping); empty, repeated or unknown names raise ``ConfigError``."""
        if isinstance(query, str):
            query = untrusted_text("query", query)
            try:
                items = parse_qsl(query.lstrip("?"), keep_blank_values=True, max_num_fields=1_000)
            except ValueError:
                raise ConfigError("query", None, "at most 1,000 name=value pairs") from None
            for key, value in items:
                if not key.strip():
                    raise ConfigError("query", f"={value}", "name=value pairs with a field name before '='")
            pairs = no_duplicates("query", items)
        else:
            pairs = dict(query)
        types_ = typing.get_type_hints(cls)
        for key, value in pairs.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ConfigError(str(key), value, "text values")
            untrusted_text(key, value)
        known = {k: v for k, v in pairs.items() if k in types_}
        unknown = sorted(set(pairs) - set(types_))
        if unknown:
            raise ConfigError(unknown[0], pairs[unknown[0]], f"a known field; unknown keyword(s): {name_list(unknown)}")
        return cls.from_dict({k: decode_value(k, v, types_[k]) for k, v in known.items()})

    def replace(self, **changes: object) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def decoder_kwargs(self) -> dict[str, object]:
        """Keywords for ``Decoder(...)`` as a user writes them (x-transformers defaults left out)."""
        return {k: v for k, v in self._non_default_items() if k not in WRAPPER_FIELDS}

    def wrapper_kwargs(self) -> dict[str, object]:
        """Keywords for ``TransformerWrapper(...)`` other than ``attn_layers``."""
        out = {k: v for k, v in self._non_default_items() if k in WRAPPER_FIELDS}
        out.setdefault("use_abs_pos_emb", self.use_abs_pos_emb)
        return out

    def to_snippet(self) -> str:
        """The configuration as the x-transformers code a user would write (x-transformers <= 1.19.1 spelling)."""
        wrapper = ", ".join(f"{k}={v!r}" for k, v in self.wrapper_kwargs().items())
        dec = ",\n        ".join(f"{k}={v!r}" for k, v in self.decoder_kwargs().items())
        return f"TransformerWrapper({wrapper},\n    attn_layers=Decoder(\n        {dec},\n    ),\n)"

    def _non_default_items(self) -> list[tuple[str, object]]:
        out = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.default is dataclasses.MISSING or value != f.default:
                out.append((f.name, value))
        return out


@dataclass(frozen=True, kw_only=True)
class Workload:
    """What the model is run on: ``batch`` sequences of ``seq_len`` tokens in ``dtype``."""

    batch: int = 1
    seq_len: int = 1024
    dtype: str = "float32"

    def __post_init__(self) -> None:
        _check_int("batch", self.batch, *LIMITS["batch"])
        _check_int("seq_len", self.seq_len, 1, LIMITS["max_seq_len"][1])
        if not isinstance(self.dtype, str) or self.dtype not in DTYPE_BYTES:
            raise ConfigError("dtype", self.dtype, f"one of {', '.join(DTYPE_BYTES)}")

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def tokens(self) -> int:
        return self.batch * self.seq_len

    def check_against(self, cfg: ModelConfig) -> Workload:
        """Raise if the sequence length exceeds what the model accepts (its ``max_seq_len``)."""
        if self.seq_len > cfg.max_seq_len:
            raise ConfigError("seq_len", self.seq_len, f"an integer from 1 to max_seq_len = {cfg.max_seq_len}")
        return self

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def _encode_value(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def decode_value(name: str, raw: str, type_: object) -> object:
    """A URL / text value as the Python value of type ``type_`` (``bool``, ``int``, ``float``, ``str`` or
    ``X | None``): the one decoder of the project (``ModelConfig.from_query`` and the dashboard use it).
    ``true/false/1/0/yes/no/on/off`` for booleans, ``none``/``null``/empty for None; a float written without
    a point or exponent stays an int (``ff_mult=4``). Raises ``ConfigError`` naming the field."""
    args = typing.get_args(type_)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), type_) if args else type_
    text = raw.strip()
    if optional and text.lower() in ("none", "null", ""):
        return None
    try:
        if base is bool:
            low = text.lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if base is int:
            return int(text)
        if base is float:
            number = float(text)
            return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number
    except ValueError:
        kind = {bool: "true or false", int: "an integer", float: "a number"}[base]
        raise ConfigError(name, raw, kind + (" or none" if optional else "")) from None
    return text


def field_type(cls: type, name: str) -> object:
    """The resolved type of dataclass field ``name`` of ``cls`` (``int``, ``bool``, ``int | None``, ...)."""
    return typing.get_type_hints(cls)[name]
