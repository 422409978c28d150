"""The project's error types: ``XtlensError`` (the base) and ``ConfigError`` (configuration and input),
plus the helpers that keep a message short whatever the user sent.

Standard library only."""

from __future__ import annotations

import typing

__all__ = ["XtlensError", "ConfigError", "MAX_MESSAGE_CHARS", "shorten", "short_repr", "name_list"]

#: Longest part of an error message (an echoed value or a list of names) sent back to the user.
MAX_MESSAGE_CHARS = 2_000


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
        shown = f"{field} = {short_repr(value)}" if value is not None else field
        super().__init__(f"{shorten(shown, 300)} is not allowed: {shorten(allowed, MAX_MESSAGE_CHARS)}")


def shorten(text: str, limit: int) -> str:
    """``text``, cut to ``limit`` characters with a note of its full length."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters in all)"


def short_repr(value: object) -> str:
    """``repr(value)`` cut to 120 characters (a value too large or deep to repr is named by its type)."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an int beyond Python's 4300-digit repr limit, a deep structure
        text = f"<{type(value).__name__}>"
    return shorten(text, 120)


def name_list(names: typing.Sequence[str], limit: int = 10) -> str:
    """The first ``limit`` names joined by commas, and how many more there are."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit:,} more" if len(names) > limit else "")
