"""The page's link: the URL fills the widgets once, then every valid configuration is written back to it.

On the first run of a browser session the URL (or the seed) fills the widget keys (``start_session``), and
what the link held that could not be used becomes a note on the page (``url_notes``). Afterwards the widgets
are the source of truth and ``sync_url`` writes the configuration, workload, device, tab, the tab settings
of ``tab_settings.URL_TAB_SETTINGS`` and the training / serving setups (``t_*`` / ``s_*``) into the URL, so
a link reproduces the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qsl

from xtlens.core.config import PRESETS, ModelConfig, Workload
from xtlens.dashboard import schema
from xtlens.dashboard.session import ownership, store, tab_settings, widgets

_STARTED = "_xtlens_started"
_URL_NOTES = "_xtlens_url_notes"
_SETUP_PARAMS = "_xtlens_setup_params"  # the training / serving setup's URL parameters (t_*, s_*)
_WORKLOAD_PARAMS = ("seq_len", "batch", "dtype", "device")


def start_session(*, default_wl: Workload, devices: Sequence[str], views: Sequence[str]) -> None:
    """Fill every widget key once per session, from the URL where it says something, else from the seed."""
    if store.get(_STARTED):
        return
    notes: list[str] = []
    params = store.url_params()
    ownership.adopt(params.get(ownership.SID_PARAM))  # a reload of a session's link: its jobs come back
    values = PRESETS[widgets.DEFAULT_PRESET].to_dict()
    for name, raw in params.items():
        if name in schema.CONFIG_SPECS and raw is not None:
            try:
                values[name] = schema.decode(schema.CONFIG_SPECS[name], raw)
            except ValueError as exc:
                notes.append(f"The link's value was not used: {exc}.")
    widgets.write_config_values(values)
    setups = {k: v for k, v in params.items() if k.startswith(("t_", "s_")) and v is not None}
    store.put(_SETUP_PARAMS, setups)
    workload = default_wl.to_dict()
    for name in ("seq_len", "batch"):
        if name in params:
            try:
                workload[name] = schema.decode(schema.WORKLOAD_SPECS[name], params[name])
            except ValueError as exc:
                notes.append(f"The link's value was not used: {exc}.")
    if "dtype" in params:
        if params["dtype"] in schema.DTYPES:
            workload["dtype"] = params["dtype"]
        else:
            notes.append(f"The link's value was not used: dtype = {params['dtype']!r} is not allowed: one of "
                         f"{', '.join(schema.DTYPES)}.")
    widgets.write_workload(seq_len=workload["seq_len"], batch=workload["batch"], dtype=workload["dtype"])
    device = params.get("device")
    if device and device not in devices:
        notes.append(f"The link asks for device {device!r}, which this machine does not have: using "
                     f"{devices[0]!r} instead.")
        device = None
    widgets.set_devices(devices, device or devices[0])
    view = params.get(widgets.VIEW_KEY)
    if view in views:
        store.put(widgets.VIEW_KEY, view)
    tab_settings.settings_from_url(params, notes)
    unknown = sorted(set(params) - set(schema.CONFIG_SPECS) - {*_WORKLOAD_PARAMS, widgets.VIEW_KEY, ownership.SID_PARAM}
                     - set(setups) - set(tab_settings.URL_TAB_SETTINGS.values()))
    if unknown:
        notes.append(f"The link has parameter(s) xtlens does not know, ignored: {', '.join(unknown)}.")
    store.put(widgets.PRESET_KEY, widgets.DEFAULT_PRESET)
    store.put(_URL_NOTES, notes)
    store.put(_STARTED, True)


def url_notes() -> list[str]:
    """What the link held that was not used, in words (one note per value)."""
    return list(store.get(_URL_NOTES, []))


def url_params(cfg: ModelConfig, wl: Workload, device: str, view: str | None = None) -> dict[str, str]:
    """The query parameters that reproduce (cfg, workload, device, view)."""
    out = dict(parse_qsl(cfg.to_query(), keep_blank_values=True))
    out.update({"seq_len": str(wl.seq_len), "batch": str(wl.batch), "dtype": wl.dtype, "device": device})
    if view:
        out[widgets.VIEW_KEY] = view
    out.update(tab_settings.tab_url_params())
    out.update(ownership.url_param())
    return out


def sync_url(cfg: ModelConfig, wl: Workload, device: str, view: str | None = None) -> None:
    """Write the valid configuration into the URL (only when it changed)."""
    wanted = url_params(cfg, wl, device, view)
    wanted.update(setup_params())
    if store.url_params() != wanted:
        store.replace_url_params(wanted)


# --- training / serving setups (the Setups view's controls; kept in the URL as t_* / s_* parameters) -------

def setup_params() -> dict[str, str]:
    """The setups' URL parameters of this session (from the link, then from the Setups view)."""
    return dict(store.get(_SETUP_PARAMS) or {})


def remember_setups(params: dict[str, str]) -> None:
    """Store the setups' URL parameters (``TrainingSetup.to_query_params()`` and ``ServingSetup``'s) and write
    them into the URL, replacing the previous ones."""
    old = store.get(_SETUP_PARAMS) or {}
    if old == params:
        return
    store.put(_SETUP_PARAMS, dict(params))
    for key in old:
        if key not in params:
            store.drop_url_param(key)
    for key, value in params.items():
        store.set_url_param(key, value)
