"""The one boundary for untrusted text (paste box, URL, uploads, CLI files): size caps, strict UTF-8, bracket
nesting and duplicate names, each failure a ``ConfigError`` naming the field.

Standard library only."""

from __future__ import annotations

import typing

from xtlens.core.errors import ConfigError

__all__ = ["MAX_CONFIG_TEXT_CHARS", "MAX_NESTING", "untrusted_text", "nesting_depth", "check_nesting",
           "no_duplicates"]

#: Largest snippet, JSON configuration or URL query accepted (characters). A real configuration is < 2 KiB.
MAX_CONFIG_TEXT_CHARS = 64 * 1024
#: Most nesting accepted in a snippet or a JSON document (a real configuration nests 2-3 deep).
MAX_NESTING = 50


def untrusted_text(field: str, data: str | bytes, *, limit: int = MAX_CONFIG_TEXT_CHARS) -> str:
    """``data`` (text or raw file bytes) checked at the boundary: at most ``limit`` characters (bytes for
    raw data), strict UTF-8 (no lone surrogates), no NUL. Raises ``ConfigError`` naming ``field``."""
    if len(data) > limit:
        raise ConfigError(field, None, f"at most {limit:,} {'bytes' if isinstance(data, bytes) else 'characters'} "
                                       f"(got {len(data):,})")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        text.encode("utf-8")
    except UnicodeError as exc:
        raise ConfigError(field, None, f"UTF-8 text (undecodable character at position {exc.start})") from None
    if "\x00" in text:
        raise ConfigError(field, None, "text without NUL characters")
    return text


def nesting_depth(text: str) -> int:
    """Upper bound of the bracket nesting of ``text`` (brackets inside strings count too: conservative)."""
    depth = deepest = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth -= 1
    return deepest


def check_nesting(field: str, text: str) -> None:
    """Raise ``ConfigError`` if ``text`` nests brackets deeper than ``MAX_NESTING``."""
    if nesting_depth(text) > MAX_NESTING:
        raise ConfigError(field, None, f"at most {MAX_NESTING} nested brackets")


def no_duplicates(field: str, pairs: typing.Iterable[tuple[str, object]]) -> dict[str, object]:
    """``pairs`` as a dict; a key given twice raises ``ConfigError`` naming it."""
    seen: dict[str, object] = {}
    for key, value in pairs:
        if key in seen:
            raise ConfigError(key, None, f"given once in the {field}: it appears more than once")
        seen[key] = value
    return seen

