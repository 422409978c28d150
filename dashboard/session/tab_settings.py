"""A tab's settings survive a tab switch, and those that change what a view shows go into the URL and the
session file.

Streamlit drops a widget's value when its tab is not drawn; ``tab_setting`` copies the value to a plain key
on every run and gives it back as the widget's default when the widget comes back. ``URL_TAB_SETTINGS`` names the settings that are
part of a link (under a short URL name).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xtlens.core.config import ConfigError
from xtlens.dashboard.session import setting_values, store

_KEPT = "_xtlens_kept"
# the tab settings that change what a view shows: they go into the URL (short name) and the session file
URL_TAB_SETTINGS = {"latency.max_len": "lat_max", "latency.repeats": "lat_rep", "latency.phases": "lat_ph",
                    "latency.variant": "lat_alibi", "tradeoffs.axis": "axis", "tradeoffs.dataset_btokens": "data_bt"}


def _url_list(raw: str) -> list[str]:
    return [part for part in str(raw).split(",") if part]


def _url_bool(raw: str) -> Any:
    """``1``/``true`` and ``0``/``false``; anything else is passed on for ``setting_values`` to refuse by name."""
    return {"1": True, "true": True, "0": False, "false": False}.get(str(raw).lower(), raw)


_URL_KINDS: dict[str, Callable[[str], Any]] = {"latency.max_len": int, "latency.repeats": int,
                                               "latency.phases": _url_list, "latency.variant": _url_bool,
                                               "tradeoffs.axis": str, "tradeoffs.dataset_btokens": float}


def _url_text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def tab_setting(key: str, default: Any, valid: Callable[[Any], bool] | None = None) -> Any:
    """Call before drawing a tab's widget ``key``; returns its value, which the view passes as the widget's own
    default (``value=``, ``default=``, ``index=``): the value survives a tab switch.

    The value is set from the URL on the first run (``settings_from_url``), else from what was kept, else
    ``default``. A kept value the setting cannot hold (``setting_values``), or that ``valid(value)`` rejects (what
    the current configuration allows, e.g. lengths up to its ``max_seq_len``), gives way to ``default``.

    Why the widget's default too: when a tab is re-opened while a job runs, the browser may re-create the widget
    without the value the server set (a fragment's run kept it on the server, or the one-shot "set value" was
    spent on a mount that was thrown away) and then shows and sends back the widget's own default (first option,
    1, off): the Latency settings reset to lat_max=128&lat_rep=1 (issue 21). With the kept value as the widget's
    default, a re-created widget starts from it.
    """
    kept = store.setdefault(_KEPT, {})
    if store.has(key) and _valid(key, valid, store.get(key)):
        kept[key] = store.get(key)
        return kept[key]
    value = kept.get(key, default)
    if not _valid(key, valid, value):
        value = default  # a value from an old link or session that this configuration does not allow
    if store.has(key):  # a value the widget cannot keep: the browser must be told (a one-shot "set value")
        store.put(key, value)
    kept[key] = value
    return value


def _valid(key: str, valid: Callable[[Any], bool] | None, value: Any) -> bool:
    if setting_values.known(key) and not _clean(key, value):
        return False
    if valid is None:
        return True
    try:
        return bool(valid(value))
    except (TypeError, ValueError, OverflowError):
        return False


def _clean(key: str, value: Any) -> bool:
    try:
        setting_values.check_setting(key, value)
    except ConfigError:
        return False
    return True


def kept_settings() -> dict[str, Any]:
    """Every tab setting of this session (for the session file): only values the setting can hold
    (``setting_values``), so the session file is always standard JSON."""
    out = dict(store.get(_KEPT, {}))
    out.update({k: store.get(k) for k in out if store.has(k)})
    return {k: v for k, v in out.items() if not setting_values.known(k) or _clean(k, v)}


def restore_settings(settings: dict[str, Any], notes: list[str] | None = None) -> None:
    """Put tab settings (from a session file or the URL) back; the widgets read them when drawn. A setting
    ``setting_values`` does not know is not restored; a value it cannot hold (NaN, out of range) is not used and
    adds a note naming the setting to ``notes``."""
    kept = store.setdefault(_KEPT, {})
    for key, value in settings.items():
        if not setting_values.known(key):
            continue
        try:
            value = setting_values.check_setting(key, value)
        except ConfigError as exc:
            if notes is not None:
                notes.append(f"The saved value was not used: {exc}.")
            continue
        kept[key] = value
        store.put(key, value)


def tab_url_params() -> dict[str, str]:
    """The URL parameters of the tab settings that change what is shown."""
    kept = kept_settings()
    out = {}
    for key, short in URL_TAB_SETTINGS.items():
        if kept.get(key) is not None:
            out[short] = _url_text(kept[key])
    return out


def settings_from_url(params: dict[str, Any], notes: list[str]) -> None:
    """Restore the tab settings a link carries; a value that is not a number adds a note for the page."""
    settings = {}
    for key, short in URL_TAB_SETTINGS.items():
        raw = params.get(short)
        if raw is None:
            continue
        try:
            settings[key] = setting_values.check_setting(key, _URL_KINDS[key](raw), field=short)
        except ConfigError as exc:
            notes.append(f"The link's value was not used: {exc}.")
        except (ValueError, OverflowError):
            notes.append(f"The link's value was not used: {short} = {raw!r} is not a number.")
    restore_settings(settings, notes)
