"""The configuration schema: one frozen dataclass whose fields are x-transformers keyword names.

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
configuration is ``PRESETS["seed"]``.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import typing
from dataclasses import dataclass, fields
from urllib.parse import parse_qsl, urlencode

__all__ = [
    "XtlensError",
    "ConfigError",
    "ModelConfig",
    "Workload",
    "PRESETS",
    "DTYPE_BYTES",
    "WRAPPER_FIELDS",
    "parse_snippet",
    "SEED_SNIPPET",
]


class XtlensError(Exception):
    """Base of the project's one exception type per layer: ``ConfigError`` (configuration and input),
    ``core.builder.BuildError`` (building the model), ``profiling.errors.ProfileError`` (measuring). Each
    message is written for the user who sees it; the CLI prints it and exits with status 2."""


class ConfigError(XtlensError, ValueError):
    """Invalid configuration or workload. The message names the field, the value and what is allowed."""

    def __init__(self, field: str, value: object, allowed: str):
        self.field = field
        self.value = value
        self.allowed = allowed
        shown = f"{field} = {value!r}" if value is not None else field
        super().__init__(f"{shown} is not allowed: {allowed}")


# Size limits: generous for real models, small enough to keep the dashboard's math meaningful.
LIMITS: dict[str, tuple[int, int]] = {
    "num_tokens": (2, 1_048_576),
    "max_seq_len": (1, 1_048_576),
    "dim": (8, 32_768),
    "depth": (1, 512),
    "heads": (1, 512),
    "attn_dim_head": (4, 1_024),
    "shift_tokens": (0, 64),
}
FF_MULT_RANGE = (0.125, 64.0)

DTYPE_BYTES: dict[str, int] = {"float32": 4, "bfloat16": 2, "float16": 2}

# TransformerWrapper(...) keywords; every other field is a Decoder(...) keyword.
WRAPPER_FIELDS = ("num_tokens", "max_seq_len", "use_abs_pos_emb", "tie_embedding")


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, value, f"an integer from {lo} to {hi}")
    if not lo <= value <= hi:
        raise ConfigError(name, value, f"an integer from {lo} to {hi}")


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(name, value, "true or false")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """A causal x-transformers decoder: ``TransformerWrapper(..., attn_layers=Decoder(...))``.

    Field names are the x-transformers keyword names. Validated on construction.
    """

    # TransformerWrapper
    num_tokens: int
    max_seq_len: int
    use_abs_pos_emb: bool = True
    tie_embedding: bool = False
    # Decoder: sizes
    dim: int
    depth: int
    heads: int = 8
    attn_dim_head: int = 64
    ff_mult: float = 4
    ff_glu: bool = False
    # Decoder: attention variants
    attn_one_kv_head: bool = False
    attn_kv_heads: int | None = None
    attn_flash: bool = False
    # Decoder: positions
    alibi_pos_bias: bool = False
    alibi_num_heads: int | None = None
    rotary_pos_emb: bool = False
    rotary_xpos: bool = False
    # Decoder: normalisation and residual
    deepnorm: bool = False
    shift_tokens: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in LIMITS:
                _check_int(f.name, value, *LIMITS[f.name])
            elif f.type in ("bool", bool):
                _check_bool(f.name, value)
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
        if self.uses_rotary and (self.attn_dim_head % 4 or self.attn_dim_head < 8):
            raise ConfigError(
                "attn_dim_head",
                self.attn_dim_head,
                "a multiple of 4 from 8 up with rotary embeddings (the rotary width attn_dim_head // 2 must be even,"
                " and x-transformers divides by rotary width - 2)",
            )
        if self.shift_tokens >= self.dim:
            raise ConfigError("shift_tokens", self.shift_tokens, f"an integer from 0 to {self.dim - 1} (less than dim)")

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
        """Rotary width per head: ``attn_dim_head // 2``, x-transformers 2.x's default ``rotary_emb_dim``.

        x-transformers 1.19.1 used ``max(attn_dim_head // 2, 32)``; ``core.builder`` notes the difference
        when ``attn_dim_head < 64``. Rotary embeddings have no parameters, so counts do not change.
        """
        return self.attn_dim_head // 2 if self.uses_rotary else 0

    @property
    def has_abs_pos_emb(self) -> bool:
        """x-transformers adds a learned absolute position table only when no rotary embedding is on."""
        return self.use_abs_pos_emb and not self.uses_rotary

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
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(unknown[0], data[unknown[0]], f"a known field; unknown keyword(s): {', '.join(unknown)}")
        missing = [f.name for f in fields(cls) if f.name not in data and f.default is dataclasses.MISSING]
        if missing:
            raise ConfigError(missing[0], None, "a value: this field is required")
        return cls(**dict(data))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError("json", text[:40], f"valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, dict):
            raise ConfigError("json", data, "a JSON object of ModelConfig fields")
        return cls.from_dict(data)

    def to_query(self) -> str:
        """URL query string holding every field (``true``/``false``, ``none`` for None)."""
        return urlencode({k: _encode_value(v) for k, v in self.to_dict().items()})

    @classmethod
    def from_query(cls, query: str | typing.Mapping[str, str]) -> ModelConfig:
        pairs = dict(parse_qsl(query.lstrip("?"), keep_blank_values=True)) if isinstance(query, str) else dict(query)
        types_ = typing.get_type_hints(cls)
        known = {k: v for k, v in pairs.items() if k in types_}
        unknown = sorted(set(pairs) - set(types_))
        if unknown:
            raise ConfigError(unknown[0], pairs[unknown[0]], f"a known field; unknown keyword(s): {', '.join(unknown)}")
        return cls.from_dict({k: _decode_value(k, v, types_[k]) for k, v in known.items()})

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
        _check_int("batch", self.batch, 1, 4096)
        _check_int("seq_len", self.seq_len, 1, LIMITS["max_seq_len"][1])
        if self.dtype not in DTYPE_BYTES:
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


def _decode_value(name: str, raw: str, type_: object) -> object:
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


# --- presets ---

SEED_SNIPPET = """\
TransformerWrapper(num_tokens=20000, max_seq_len=8192, use_abs_pos_emb=False,
    attn_layers=Decoder(dim=512, depth=6, heads=8, alibi_pos_bias=True, alibi_num_heads=4,
        rotary_xpos=True, attn_flash=True, deepnorm=True, shift_tokens=1, attn_one_kv_head=True))
"""

_SEED = ModelConfig(
    num_tokens=20000,
    max_seq_len=8192,
    use_abs_pos_emb=False,
    dim=512,
    depth=6,
    heads=8,
    alibi_pos_bias=True,
    alibi_num_heads=4,
    rotary_xpos=True,
    attn_flash=True,
    deepnorm=True,
    shift_tokens=1,
    attn_one_kv_head=True,
)

PRESETS: dict[str, ModelConfig] = {
    "seed": _SEED,
    # The seed without ALiBi: SDPA gets no additive bias and can use the flash kernel.
    "seed-no-alibi": _SEED.replace(alibi_pos_bias=False, alibi_num_heads=None),
    # The seed with standard multi-head attention (8 K/V heads): what multi-query saves.
    "seed-mha": _SEED.replace(attn_one_kv_head=False),
    # A plain pre-norm rotary decoder of the same size: x-transformers' defaults plus rotary and flash.
    "plain-prenorm": ModelConfig(num_tokens=20000, max_seq_len=8192, use_abs_pos_emb=False, dim=512, depth=6, heads=8,
                                 rotary_pos_emb=True, attn_flash=True),
    # GPT-2 small's shape (124M with its tied embedding), learned absolute positions.
    "gpt2-small-shape": ModelConfig(num_tokens=50257, max_seq_len=1024, dim=768, depth=12, heads=12, attn_flash=True,
                                    tie_embedding=True),
}


# --- snippet parser (ast only, never eval) ---

_DECODER_NAMES = ("Decoder",)
_WRAPPER_NAMES = ("TransformerWrapper",)


def _call_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Name):
            return func.id
        if isinstance(func, ast.Attribute):
            return func.attr
    return None


def _literal(name: str, node: ast.AST) -> object:
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        raise ConfigError(name, ast.unparse(node), "a literal value (number, True/False, None); expressions are not evaluated") from None


def parse_snippet(text: str) -> ModelConfig:
    """Parse ``TransformerWrapper(..., attn_layers=Decoder(...))`` code into a ``ModelConfig``.

    Uses ``ast`` only; nothing is executed. Unknown keywords are reported by name. Keywords that
    x-transformers leaves at their defaults may be omitted. Only ``Decoder`` is accepted (xtlens
    models a causal decoder; ``rotary_xpos`` in particular needs one).
    """
    try:
        tree = ast.parse(text.strip())
    except SyntaxError as exc:
        raise ConfigError("snippet", (exc.text or "").strip(), f"valid Python (syntax error at line {exc.lineno})") from None
    wrapper = next((n for n in ast.walk(tree) if _call_name(n) in _WRAPPER_NAMES), None)
    if wrapper is None:
        raise ConfigError("snippet", text.strip()[:60], "code containing a TransformerWrapper(...) call")
    if wrapper.args:
        raise ConfigError("snippet", ast.unparse(wrapper.args[0]), "keyword arguments only in TransformerWrapper(...)")
    known = {f.name for f in fields(ModelConfig)}
    values: dict[str, object] = {}
    unknown: list[str] = []
    decoder: ast.Call | None = None
    for kw in wrapper.keywords:
        if kw.arg is None:
            raise ConfigError("snippet", ast.unparse(kw.value), "explicit keywords (no **kwargs)")
        if kw.arg == "attn_layers":
            kind = _call_name(kw.value)
            if kind not in _DECODER_NAMES:
                raise ConfigError("attn_layers", ast.unparse(kw.value)[:60],
                                  "a Decoder(...) call: xtlens models a causal decoder (Encoder is not causal; rotary_xpos needs causal)")
            decoder = kw.value  # type: ignore[assignment]
        elif kw.arg in WRAPPER_FIELDS:
            values[kw.arg] = _literal(kw.arg, kw.value)
        else:
            unknown.append(f"TransformerWrapper(..., {kw.arg}=)")
    if decoder is None:
        raise ConfigError("attn_layers", None, "a Decoder(...) call passed as attn_layers=")
    if decoder.args:
        raise ConfigError("snippet", ast.unparse(decoder.args[0]), "keyword arguments only in Decoder(...)")
    for kw in decoder.keywords:
        if kw.arg is None:
            raise ConfigError("snippet", ast.unparse(kw.value), "explicit keywords (no **kwargs)")
        if kw.arg in known and kw.arg not in WRAPPER_FIELDS:
            values[kw.arg] = _literal(kw.arg, kw.value)
        else:
            unknown.append(f"Decoder(..., {kw.arg}=)")
    if unknown:
        raise ConfigError(unknown[0], None, "a keyword xtlens models; unknown: " + ", ".join(unknown)
                          + f". Supported: {', '.join(sorted(known))}")
    return ModelConfig.from_dict(values)

