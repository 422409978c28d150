"""Named configurations (``PRESETS``, the seed's x-transformers code ``SEED_SNIPPET``) and the snippet parser
that turns pasted ``TransformerWrapper(..., attn_layers=Decoder(...))`` code into a ``ModelConfig`` (``ast``
only, nothing is executed).

Standard library only."""

from __future__ import annotations

import ast
from dataclasses import fields

from xtlens.core.errors import ConfigError, name_list, shorten
from xtlens.core.schema import WRAPPER_FIELDS, ModelConfig
from xtlens.core.untrusted import MAX_NESTING, check_nesting, no_duplicates, untrusted_text

__all__ = ["PRESETS", "SEED_SNIPPET", "config_label", "parse_snippet"]


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


# --- readable names of configurations ---

#: how many differing fields ``config_label`` names before it says ``+N more``
LABEL_MAX_FIELDS = 4


def _label_value(value: object) -> str:
    if isinstance(value, float) and not isinstance(value, bool):
        return format(value, "g")
    return str(value)


def config_label(cfg: ModelConfig) -> str:
    """A readable name of any configuration: the nearest preset (fewest differing ``ModelConfig`` fields; ties
    go to the first in ``PRESETS`` order), then `` · field=value`` for each field that differs, in
    ``dataclasses.fields`` order, at most ``LABEL_MAX_FIELDS`` and then `` · +N more``.

    ``config_label(PRESETS["seed"]) == "seed"``; the seed with ``dim=80`` is ``"seed · dim=80"``. Pure and
    deterministic: the same configuration always gets the same name (two configurations may share a name only
    when they differ in more than ``LABEL_MAX_FIELDS`` fields; their ``config_key`` tells them apart)."""
    names = [f.name for f in fields(ModelConfig)]
    best_name, best_diff = "", names
    for preset_name, preset in PRESETS.items():
        diff = [n for n in names if getattr(cfg, n) != getattr(preset, n)]
        if len(diff) < len(best_diff):
            best_name, best_diff = preset_name, diff
    parts = [best_name] + [f"{n}={_label_value(getattr(cfg, n))}" for n in best_diff[:LABEL_MAX_FIELDS]]
    if len(best_diff) > LABEL_MAX_FIELDS:
        parts.append(f"+{len(best_diff) - LABEL_MAX_FIELDS} more")
    return " · ".join(parts)


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
    if not isinstance(node, ast.Constant) and not (
            isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd))
            and isinstance(node.operand, ast.Constant)):
        raise ConfigError(name, _unparse(node), "a literal value (number, True/False, None); expressions are not evaluated")
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        raise ConfigError(name, _unparse(node), "a literal value (number, True/False, None); expressions are not evaluated") from None


def _unparse(node: ast.AST) -> str:
    try:
        return shorten(ast.unparse(node), 120)
    except (RecursionError, ValueError, MemoryError):
        return f"<{type(node).__name__} expression>"


def parse_snippet(text: str) -> ModelConfig:
    """Parse ``TransformerWrapper(..., attn_layers=Decoder(...))`` code into a ``ModelConfig``.

    Uses ``ast`` only; nothing is executed. Unknown keywords are reported by name. Keywords that
    x-transformers leaves at their defaults may be omitted. Only ``Decoder`` is accepted (xtlens
    models a causal decoder; ``rotary_xpos`` in particular needs one).
    """
    text = untrusted_text("snippet", text)
    check_nesting("snippet", text)
    try:
        return _parse_snippet(text)
    except (RecursionError, MemoryError):
        raise ConfigError("snippet", None, f"an expression nested at most {MAX_NESTING} deep") from None


def _parse_snippet(text: str) -> ModelConfig:
    try:
        tree = ast.parse(text.strip())
    except SyntaxError as exc:
        raise ConfigError("snippet", (exc.text or "").strip(), f"valid Python (syntax error at line {exc.lineno})") from None
    except ValueError as exc:  # e.g. an integer literal beyond Python's digit limit
        raise ConfigError("snippet", None, f"valid Python ({exc})") from None
    wrapper = next((n for n in ast.walk(tree) if _call_name(n) in _WRAPPER_NAMES), None)
    if wrapper is None:
        raise ConfigError("snippet", text.strip()[:60], "code containing a TransformerWrapper(...) call")
    if wrapper.args:
        raise ConfigError("snippet", _unparse(wrapper.args[0]), "keyword arguments only in TransformerWrapper(...)")
    known = {f.name for f in fields(ModelConfig)}
    values: dict[str, object] = {}
    unknown: list[str] = []
    decoder: ast.Call | None = None
    no_duplicates("TransformerWrapper(...) call", [(kw.arg, None) for kw in wrapper.keywords if kw.arg])
    for kw in wrapper.keywords:
        if kw.arg is None:
            raise ConfigError("snippet", _unparse(kw.value), "explicit keywords (no **kwargs)")
        if kw.arg == "attn_layers":
            kind = _call_name(kw.value)
            if kind not in _DECODER_NAMES:
                raise ConfigError("attn_layers", _unparse(kw.value)[:60],
                                  "a Decoder(...) call: xtlens models a causal decoder (Encoder is not causal; rotary_xpos needs causal)")
            decoder = kw.value  # type: ignore[assignment]
        elif kw.arg in WRAPPER_FIELDS:
            values[kw.arg] = _literal(kw.arg, kw.value)
        else:
            unknown.append(f"TransformerWrapper(..., {kw.arg}=)")
    if decoder is None:
        raise ConfigError("attn_layers", None, "a Decoder(...) call passed as attn_layers=")
    if decoder.args:
        raise ConfigError("snippet", _unparse(decoder.args[0]), "keyword arguments only in Decoder(...)")
    no_duplicates("Decoder(...) call", [(kw.arg, None) for kw in decoder.keywords if kw.arg])
    for kw in decoder.keywords:
        if kw.arg is None:
            raise ConfigError("snippet", _unparse(kw.value), "explicit keywords (no **kwargs)")
        if kw.arg in known and kw.arg not in WRAPPER_FIELDS:
            values[kw.arg] = _literal(kw.arg, kw.value)
        else:
            unknown.append(f"Decoder(..., {kw.arg}=)")
    if unknown:
        raise ConfigError(unknown[0], None, "a keyword xtlens models; unknown: " + name_list(unknown)
                          + f". Supported: {', '.join(sorted(known))}")
    return ModelConfig.from_dict(values)

