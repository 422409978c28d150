"""What each kept tab setting may hold: the one check of a setting that comes from outside (a session file, a
link's URL) before it reaches a widget or the session file. Pure (no Streamlit).

A setting this module does not know is not restored (a session file could otherwise write any key of the page's
state); a known one with a value it cannot hold (``NaN``, ``inf``, a number out of the widget's range, a lone
surrogate, the wrong type) raises ``ConfigError`` naming the setting and what it allows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xtlens.core.config import LIMITS, ConfigError
from xtlens.dashboard.tables import LATENCY_PHASES, SWEEP_AXES

__all__ = ["SETTINGS", "known", "check_setting"]



@dataclass(frozen=True)
class _Rule:
    allowed: str
    check: Callable[[Any], Any]  # the clean value, or raises ValueError / TypeError


def _int_in(lo: int, hi: int) -> _Rule:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError
        return value
    return _Rule(f"a whole number from {lo:,} to {hi:,}", check)


def _float_in(lo: float, hi: float) -> _Rule:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError
        value = float(value)
        if not math.isfinite(value) or not lo <= value <= hi:
            raise ValueError
        return value
    return _Rule(f"a finite number from {lo:g} to {hi:g}", check)


def _one_of(options: tuple[str, ...]) -> _Rule:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in options:
            raise ValueError
        return value
    return _Rule(f"one of {', '.join(options)}", check)


def _subset_of(options: tuple[str, ...]) -> _Rule:
    def check(value: Any) -> list[str]:
        if not isinstance(value, list) or any(not isinstance(v, str) or v not in options for v in value):
            raise ValueError
        return list(dict.fromkeys(value))
    return _Rule(f"a list of {', '.join(options)}", check)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError
    return value


#: Every kept tab setting (``tab_settings.tab_setting`` keys) and what it may hold.
SETTINGS: dict[str, _Rule] = {
    "latency.max_len": _int_in(1, LIMITS["max_seq_len"][1]),
    "latency.repeats": _int_in(1, 50),
    "latency.phases": _subset_of(LATENCY_PHASES),
    "latency.variant": _Rule("true or false", _bool),
    "tradeoffs.axis": _one_of(SWEEP_AXES),
    "tradeoffs.dataset_btokens": _float_in(0.001, 100_000.0),
    "compare.include_current": _Rule("true or false", _bool),
}


def known(key: object) -> bool:
    return isinstance(key, str) and key in SETTINGS


def check_setting(key: str, value: Any, *, field: str | None = None) -> Any:
    """``value`` of the tab setting ``key`` as the widget takes it; raises ``ConfigError`` naming ``field``
    (default: the setting's key) and what the setting allows."""
    rule = SETTINGS[key]
    try:
        return rule.check(value)
    except (ValueError, TypeError, OverflowError):
        raise ConfigError(field or key, value, rule.allowed) from None
