"""Loading a configuration into the sidebar: a preset, pasted ``TransformerWrapper(...)`` code, a pinned
configuration. The ``on_*`` functions are widget callbacks (they run before the script): they only move values
between keys; parsing is ``core.config``'s. The outcome is shown once under the loader (``source_note``).
"""

from __future__ import annotations

from xtlens.core.config import PRESETS, ConfigError, ModelConfig, parse_snippet
from xtlens.dashboard.session import store, widgets

_SOURCE_NOTE = "_xtlens_source_note"


def on_load_config(cfg: ModelConfig, note: str = "") -> None:
    widgets.write_config_values(cfg.to_dict())
    store.put(_SOURCE_NOTE, ("ok", note) if note else None)


def on_load_preset() -> None:
    name = store.get(widgets.PRESET_KEY) or widgets.DEFAULT_PRESET
    on_load_config(PRESETS[name], f"Loaded preset {name!r}.")


def on_load_snippet() -> None:
    text = store.get(widgets.SNIPPET_KEY) or ""
    try:
        cfg = parse_snippet(text)
    except ConfigError as exc:
        set_source_note("error", str(exc))
        return
    on_load_config(cfg, "Loaded the pasted TransformerWrapper(...) code.")


def set_source_note(kind: str, message: str) -> None:
    """Say ``message`` under the loader on the next run (``kind``: "ok" or "error")."""
    store.put(_SOURCE_NOTE, (kind, message))


def source_note() -> tuple[str, str] | None:
    """("ok" | "error", message) of the last preset/snippet load, shown once under the loader."""
    return store.pop(_SOURCE_NOTE, None)
