"""What the sidebar controls are: one spec per ``ModelConfig`` field and per workload field.

Pure data (no Streamlit): ``controls`` draws the widgets from it, ``state`` decodes URL values with it.
Every help text states what the keyword does in x-transformers (not what folklore says).
"""

from __future__ import annotations

from dataclasses import dataclass

from xtlens.core.config import DTYPE_BYTES, FF_MULT_RANGE, LIMITS

MAX_SEQ_LEN_UI = 8192  # the workload slider's upper end (the seed's max_seq_len)


@dataclass(frozen=True, kw_only=True)
class FieldSpec:
    name: str
    label: str
    kind: str  # "int", "opt_int", "float", "bool"
    lo: float | None = None
    hi: float | None = None
    step: float | None = None
    help: str = ""
    placeholder: str | None = None


SIZE_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec(name="dim", label="dim (model width)", kind="int", lo=LIMITS["dim"][0], hi=LIMITS["dim"][1], step=64,
              help="Width of the residual stream and of the token embedding."),
    FieldSpec(name="depth", label="depth (layers)", kind="int", lo=LIMITS["depth"][0], hi=LIMITS["depth"][1], step=1,
              help="Number of blocks; each block is one attention and one feed-forward sub-layer."),
    FieldSpec(name="heads", label="heads (query heads)", kind="int", lo=LIMITS["heads"][0], hi=LIMITS["heads"][1],
              step=1,
              help="Number of query heads. Heads do NOT split dim: each head is attn_dim_head wide, so the "
                   "attention inner width is heads x attn_dim_head."),
    FieldSpec(name="attn_dim_head", label="attn_dim_head (head width)", kind="int", lo=LIMITS["attn_dim_head"][0],
              hi=LIMITS["attn_dim_head"][1], step=16,
              help="Width of each attention head (x-transformers default 64), independent of dim."),
    FieldSpec(name="attn_kv_heads", label="attn_kv_heads (K/V heads)", kind="opt_int", lo=1, hi=LIMITS["heads"][1],
              step=1, placeholder="= heads",
              help="Grouped-query attention: number of K/V heads, a divisor of heads. Empty = one K/V head per "
                   "query head. Must stay empty when attn_one_kv_head is on."),
    FieldSpec(name="alibi_num_heads", label="alibi_num_heads (heads with ALiBi)", kind="opt_int", lo=1,
              hi=LIMITS["heads"][1], step=1, placeholder="= heads",
              help="With alibi_pos_bias: how many heads get the ALiBi distance penalty; the other heads get no "
                   "ALiBi bias. Empty = all heads. At most heads."),
    FieldSpec(name="ff_mult", label="ff_mult (feed-forward width / dim)", kind="float", lo=FF_MULT_RANGE[0],
              hi=FF_MULT_RANGE[1], step=0.5,
              help="Feed-forward hidden width = int(dim x ff_mult)."),
    FieldSpec(name="shift_tokens", label="shift_tokens", kind="int", lo=LIMITS["shift_tokens"][0],
              hi=LIMITS["shift_tokens"][1], step=1,
              help="Token shifting: before each sub-layer, slices of the feature vector are taken from the previous "
                   "1..shift_tokens positions (x-transformers ShiftTokens). No parameters. It is NOT the next-token "
                   "target shift."),
    FieldSpec(name="num_tokens", label="num_tokens (vocabulary)", kind="int", lo=LIMITS["num_tokens"][0],
              hi=LIMITS["num_tokens"][1], step=1000, help="Vocabulary size: rows of the embedding and logits matrices."),
    FieldSpec(name="max_seq_len", label="max_seq_len", kind="int", lo=LIMITS["max_seq_len"][0],
              hi=LIMITS["max_seq_len"][1], step=1024,
              help="Longest sequence the model accepts (and rows of a learned absolute position table, if any)."),
)

FLAG_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec(name="alibi_pos_bias", label="alibi_pos_bias", kind="bool",
              help="ALiBi: an additive linear distance penalty on the attention scores of alibi_num_heads heads. "
                   "An additive bias keeps PyTorch SDPA off the flash kernel."),
    FieldSpec(name="rotary_pos_emb", label="rotary_pos_emb", kind="bool",
              help="Rotary position embedding on queries and keys (attn_dim_head // 2 channels per head)."),
    FieldSpec(name="rotary_xpos", label="rotary_xpos", kind="bool",
              help="Rotary with xPos length-extrapolation scaling; switches rotary on by itself (causal only)."),
    FieldSpec(name="attn_flash", label="attn_flash", kind="bool",
              help="Use torch.nn.functional.scaled_dot_product_attention. Which kernel runs (flash, "
                   "memory-efficient, math) depends on device, dtype and whether a bias is passed."),
    FieldSpec(name="deepnorm", label="deepnorm", kind="bool",
              help="x-transformers <= 1.19.1 only: post-norm, residual scale (2 depth)^0.25, re-init gain "
                   "(8 depth)^-0.25. Current x-transformers rejects it; xtlens emulates it (see effective kwargs)."),
    FieldSpec(name="attn_one_kv_head", label="attn_one_kv_head", kind="bool",
              help="Multi-query attention: one K/V head shared by all query heads (smaller K/V projections and KV "
                   "cache)."),
    FieldSpec(name="use_abs_pos_emb", label="use_abs_pos_emb", kind="bool",
              help="Learned absolute position table; x-transformers skips it anyway when rotary is on."),
    FieldSpec(name="ff_glu", label="ff_glu", kind="bool",
              help="Gated feed-forward (GLU): the first projection is twice as wide."),
    FieldSpec(name="tie_embedding", label="tie_embedding", kind="bool",
              help="Share the token embedding with the output (logits) projection."),
)

CONFIG_FIELDS: tuple[FieldSpec, ...] = SIZE_FIELDS + FLAG_FIELDS
CONFIG_SPECS: dict[str, FieldSpec] = {s.name: s for s in CONFIG_FIELDS}

WORKLOAD_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec(name="seq_len", label="sequence length (tokens)", kind="int", lo=1, hi=MAX_SEQ_LEN_UI, step=1,
              help="Tokens per sequence, up to 8192 (and at most max_seq_len)."),
    FieldSpec(name="batch", label="batch (sequences)", kind="int", lo=1, hi=4096, step=1,
              help="Sequences processed together."),
)
WORKLOAD_SPECS: dict[str, FieldSpec] = {s.name: s for s in WORKLOAD_FIELDS}
DTYPES: tuple[str, ...] = tuple(DTYPE_BYTES)


def decode(spec: FieldSpec, raw: str) -> object:
    """A URL text value as the widget's Python value; ``ValueError`` with a message naming the field."""
    text = raw.strip()
    if spec.kind == "bool":
        low = text.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{spec.name} = {raw!r} is not allowed: true or false")
    if spec.kind == "opt_int" and text.lower() in ("", "none", "null"):
        return None
    try:
        value: object = float(text) if spec.kind == "float" else int(text)
    except ValueError:
        kind = "a number" if spec.kind == "float" else "an integer"
        raise ValueError(f"{spec.name} = {raw!r} is not allowed: {kind} from {spec.lo:g} to {spec.hi:g}") from None
    if not spec.lo <= value <= spec.hi:  # type: ignore[operator]
        raise ValueError(f"{spec.name} = {raw!r} is not allowed: a value from {spec.lo:g} to {spec.hi:g}")
    return value
