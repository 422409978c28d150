"""Pinned configurations (the Compare tab): up to ``MAX_PINS`` named configurations kept for this session.

The ``on_*`` functions are widget callbacks. A pin is stored as ``(name, ModelConfig JSON)``, so the session
holds plain values; names are made unique by a ``(2)``, ``(3)`` suffix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xtlens.core.config import PRESETS, ConfigError, ModelConfig, parse_snippet
from xtlens.dashboard.session import store, widgets

_PINS = "_xtlens_pins"
MAX_PINS = 4


@dataclass(frozen=True, kw_only=True)
class Pin:
    name: str
    config: ModelConfig


def pinned() -> list[Pin]:
    """This session's pins, oldest first."""
    return [Pin(name=name, config=ModelConfig.from_json(text)) for name, text in store.get(_PINS, [])]


def replace_pins(named: Sequence[tuple[str, ModelConfig]]) -> None:
    """Make the ``(name, configuration)`` pairs (the first ``MAX_PINS``) this session's pins (a restored session)."""
    store.put(_PINS, [(name, cfg.to_json()) for name, cfg in named][:MAX_PINS])


def on_add_pin(name: str, cfg: ModelConfig) -> None:
    current = list(store.get(_PINS, []))
    if len(current) >= MAX_PINS:
        return
    names = {n for n, _ in current}
    unique, suffix = name, 2
    while unique in names:
        unique, suffix = f"{name} ({suffix})", suffix + 1
    current.append((unique, cfg.to_json()))
    store.put(_PINS, current)


def on_pin_current(name_key: str, cfg: ModelConfig) -> None:
    """Pin ``cfg`` under the name typed in the widget ``name_key`` (read now, not when the button was drawn)."""
    on_add_pin(str(store.get(name_key) or "pinned"), cfg)


def on_pin_preset(preset_key: str) -> None:
    name = store.get(preset_key) or widgets.DEFAULT_PRESET
    on_add_pin(name, PRESETS[name])


def on_pin_snippet(snippet_key: str) -> None:
    try:
        cfg = parse_snippet(store.get(snippet_key) or "")
    except ConfigError:
        return  # the view shows the parse error under the text box
    on_add_pin("pasted", cfg)


def on_remove_pin(index: int) -> None:
    current = list(store.get(_PINS, []))
    if 0 <= index < len(current):
        del current[index]
    store.put(_PINS, current)
