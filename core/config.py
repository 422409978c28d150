"""The configuration layer's one import point: re-exports what other code imports from ``core.config``.

The concerns live in their own modules (all standard library only, so that validation and round-trips
import in a millisecond):

* ``core.errors``: ``XtlensError`` (the project's base exception) and ``ConfigError``;
* ``core.untrusted``: the one boundary for untrusted text (size caps, UTF-8, nesting, duplicate names);
* ``core.schema``: the limits, the field metadata, ``ModelConfig`` and ``Workload`` (and what
  x-transformers' keywords mean: read its docstring);
* ``core.presets``: ``PRESETS``, ``SEED_SNIPPET`` and the snippet parser ``parse_snippet``;
* ``core.options``: the registry of modelled options (the value that turns each on, its conflicts, its cost) and
  ``inert_fields`` (the fields the other flags make irrelevant, with the reason; re-exported here).
"""

from __future__ import annotations

from xtlens.core.errors import MAX_MESSAGE_CHARS, ConfigError, XtlensError
from xtlens.core.options import inert_fields
from xtlens.core.presets import PRESETS, SEED_SNIPPET, parse_snippet
from xtlens.core.schema import (
    DROPOUT_RANGE,
    DTYPE_BYTES,
    FF_MULT_RANGE,
    GROUPS,
    LIMITS,
    WRAPPER_FIELDS,
    ModelConfig,
    Workload,
    decode_value,
    field_type,
)
from xtlens.core.untrusted import MAX_CONFIG_TEXT_CHARS, MAX_NESTING, untrusted_text

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
    "GROUPS",
    "decode_value",
    "field_type",
    "LIMITS",
    "FF_MULT_RANGE",
    "DROPOUT_RANGE",
    "MAX_CONFIG_TEXT_CHARS",
    "MAX_MESSAGE_CHARS",
    "MAX_NESTING",
    "untrusted_text",
    "inert_fields",
]
