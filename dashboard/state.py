"""The one module that touches ``st.session_state`` and ``st.query_params``.

Widgets are addressed by key: ``cfg.<field>`` for every ``ModelConfig`` field, ``wl.seq_len``,
``wl.batch``, ``wl.dtype``, ``wl.device`` for the workload, ``view`` for the tab. On the first run of
a browser session the URL (or the seed) fills those keys; afterwards the widgets are the source of
truth and every valid configuration is written back to the URL, so a link reproduces the page.

Functions named ``on_*`` are widget callbacks: they only move values between keys (parsing is done
by ``core.config`` / ``dashboard.session_io``), so the page logic stays testable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import streamlit as st
from xtlens.core.config import PRESETS, ConfigError, ModelConfig, Workload, parse_snippet
from xtlens.dashboard import schema

CFG = "cfg."
WL = "wl."
VIEW_KEY = "view"
PRESET_KEY = "src.preset"
SNIPPET_KEY = "src.snippet"
_STARTED = "_xtlens_started"
_URL_NOTES = "_xtlens_url_notes"
_SOURCE_NOTE = "_xtlens_source_note"
_PINS = "_xtlens_pins"
_JOBS = "_xtlens_jobs"
_UPLOADS = "_xtlens_uploads"
_DEVICES = "_xtlens_devices"
_SETUP_PARAMS = "_xtlens_setup_params"  # the training / serving setup's URL parameters (t_*, s_*)
DEFAULT_PRESET = "seed"


def cfg_key(name: str) -> str:
    return CFG + name


def wl_key(name: str) -> str:
    return WL + name


# --- start of a session: URL or seed into the widgets ------------------------------------------------

def start_session(*, default_wl: Workload, devices: Sequence[str], views: Sequence[str]) -> None:
    """Fill every widget key once per session, from the URL where it says something, else from the seed."""
    ss = st.session_state
    if ss.get(_STARTED):
        return
    notes: list[str] = []
    params = {k: st.query_params.get(k) for k in st.query_params.keys()}
    values = PRESETS[DEFAULT_PRESET].to_dict()
    for name, raw in params.items():
        if name in schema.CONFIG_SPECS and raw is not None:
            try:
                values[name] = schema.decode(schema.CONFIG_SPECS[name], raw)
            except ValueError as exc:
                notes.append(f"The link's value was not used: {exc}.")
    _write_config_values(values)
    ss[_SETUP_PARAMS] = {k: v for k, v in params.items() if k.startswith(("t_", "s_")) and v is not None}
    wl = default_wl.to_dict()
    for name in ("seq_len", "batch"):
        if name in params:
            try:
                wl[name] = schema.decode(schema.WORKLOAD_SPECS[name], params[name])
            except ValueError as exc:
                notes.append(f"The link's value was not used: {exc}.")
    if "dtype" in params:
        if params["dtype"] in schema.DTYPES:
            wl["dtype"] = params["dtype"]
        else:
            notes.append(f"The link's value was not used: dtype = {params['dtype']!r} is not allowed: one of "
                         f"{', '.join(schema.DTYPES)}.")
    ss[wl_key("seq_len")] = min(int(wl["seq_len"]), schema.MAX_SEQ_LEN_UI)
    ss[wl_key("batch")] = int(wl["batch"])
    ss[wl_key("dtype")] = wl["dtype"]
    device = params.get("device")
    if device and device not in devices:
        notes.append(f"The link asks for device {device!r}, which this machine does not have: using "
                     f"{devices[0]!r} instead.")
        device = None
    ss[wl_key("device")] = device or devices[0]
    ss[_DEVICES] = list(devices)
    view = params.get(VIEW_KEY)
    if view in views:
        ss[VIEW_KEY] = view
    _tab_settings_from_url(params, notes)
    unknown = sorted(set(params) - set(schema.CONFIG_SPECS) - {"seq_len", "batch", "dtype", "device", VIEW_KEY}
                     - set(ss[_SETUP_PARAMS]) - set(URL_TAB_SETTINGS.values()))
    if unknown:
        notes.append(f"The link has parameter(s) xtlens does not know, ignored: {', '.join(unknown)}.")
    ss[PRESET_KEY] = DEFAULT_PRESET
    ss[_URL_NOTES] = notes
    ss[_STARTED] = True


def url_notes() -> list[str]:
    return list(st.session_state.get(_URL_NOTES, []))


def _write_config_values(values: dict[str, Any]) -> None:
    for spec in schema.CONFIG_FIELDS:
        value = values.get(spec.name)
        if spec.kind == "float" and value is not None:
            value = float(value)
        st.session_state[cfg_key(spec.name)] = value


# --- reading the widgets --------------------------------------------------------------------------

def read_config() -> tuple[ModelConfig | None, ConfigError | None]:
    """The configuration the widgets describe, or the error that names the offending field."""
    values: dict[str, Any] = {}
    for spec in schema.CONFIG_FIELDS:
        value = st.session_state.get(cfg_key(spec.name))
        if spec.kind == "float" and value is not None and float(value).is_integer():
            value = int(value)  # ff_mult=4 stays 4, as x-transformers' default is written
        values[spec.name] = value
    try:
        return ModelConfig.from_dict(values), None
    except ConfigError as exc:
        return None, exc


def read_workload(cfg: ModelConfig | None) -> tuple[Workload | None, ConfigError | None]:
    ss = st.session_state
    try:
        seq_len = _int_or_none(ss.get(wl_key("seq_len")))
        if seq_len is None or not 1 <= seq_len <= schema.MAX_SEQ_LEN_UI:
            raise ConfigError("seq_len", ss.get(wl_key("seq_len")),
                              f"an integer from 1 to {schema.MAX_SEQ_LEN_UI} (the page's longest; at most max_seq_len)")
        wl = Workload(seq_len=seq_len, batch=int(ss[wl_key("batch")]), dtype=ss[wl_key("dtype")])
        if cfg is not None:
            wl.check_against(cfg)
        return wl, None
    except ConfigError as exc:
        return None, exc


def _int_or_none(value: Any) -> int | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return int(f) if f.is_integer() else None


def slider_max_seq_len() -> int:
    """The sequence-length slider's last stop: the configuration's max_seq_len (as typed; the page's longest,
    8192, when it is not a valid number)."""
    value = _int_or_none(st.session_state.get(cfg_key("max_seq_len")))
    return schema.MAX_SEQ_LEN_UI if value is None or value < 1 else min(value, schema.MAX_SEQ_LEN_UI)


def read_device() -> str:
    return str(st.session_state.get(wl_key("device"), "cpu"))


def current_view(default: str) -> str:
    return str(st.session_state.get(VIEW_KEY) or default)


# --- the URL --------------------------------------------------------------------------------------

def url_params(cfg: ModelConfig, wl: Workload, device: str, view: str | None = None) -> dict[str, str]:
    """The query parameters that reproduce (cfg, workload, device, view)."""
    out = dict(parse_qsl(cfg.to_query(), keep_blank_values=True))
    out.update({"seq_len": str(wl.seq_len), "batch": str(wl.batch), "dtype": wl.dtype, "device": device})
    if view:
        out[VIEW_KEY] = view
    out.update(tab_url_params())
    return out


def sync_url(cfg: ModelConfig, wl: Workload, device: str, view: str | None = None) -> None:
    """Write the valid configuration into the URL (only when it changed)."""
    wanted = url_params(cfg, wl, device, view)
    wanted.update(st.session_state.get(_SETUP_PARAMS) or {})
    current = {k: st.query_params.get(k) for k in st.query_params.keys()}
    if current != wanted:
        st.query_params.from_dict(wanted)


# --- loading a configuration into the widgets (callbacks: run before the script) --------------------

def on_load_config(cfg: ModelConfig, note: str = "") -> None:
    _write_config_values(cfg.to_dict())
    st.session_state[_SOURCE_NOTE] = ("ok", note) if note else None


def on_load_preset() -> None:
    name = st.session_state.get(PRESET_KEY) or DEFAULT_PRESET
    on_load_config(PRESETS[name], f"Loaded preset {name!r}.")


def on_load_snippet() -> None:
    text = st.session_state.get(SNIPPET_KEY) or ""
    try:
        cfg = parse_snippet(text)
    except ConfigError as exc:
        st.session_state[_SOURCE_NOTE] = ("error", str(exc))
        return
    on_load_config(cfg, "Loaded the pasted TransformerWrapper(...) code.")


def source_note() -> tuple[str, str] | None:
    """("ok" | "error", message) of the last preset/snippet load, shown once under the loader."""
    return st.session_state.pop(_SOURCE_NOTE, None)


# --- pinned configurations (Compare) ----------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Pin:
    name: str
    config: ModelConfig


MAX_PINS = 4


def pins() -> list[Pin]:
    return [Pin(name=n, config=ModelConfig.from_json(j)) for n, j in st.session_state.get(_PINS, [])]


def on_add_pin(name: str, cfg: ModelConfig) -> None:
    current = list(st.session_state.get(_PINS, []))
    if len(current) >= MAX_PINS:
        return
    names = {n for n, _ in current}
    unique, i = name, 2
    while unique in names:
        unique, i = f"{name} ({i})", i + 1
    current.append((unique, cfg.to_json()))
    st.session_state[_PINS] = current


def on_pin_current(name_key: str, cfg: ModelConfig) -> None:
    """Pin ``cfg`` under the name typed in the widget ``name_key`` (read now, not when the button was drawn)."""
    on_add_pin(str(st.session_state.get(name_key) or "pinned"), cfg)


def on_pin_preset(preset_key: str) -> None:
    name = st.session_state.get(preset_key) or DEFAULT_PRESET
    on_add_pin(name, PRESETS[name])


def on_pin_snippet(snippet_key: str) -> None:
    try:
        cfg = parse_snippet(st.session_state.get(snippet_key) or "")
    except ConfigError:
        return  # the view shows the parse error under the text box
    on_add_pin("pasted", cfg)


def on_remove_pin(index: int) -> None:
    current = list(st.session_state.get(_PINS, []))
    if 0 <= index < len(current):
        del current[index]
    st.session_state[_PINS] = current


def on_clear_pins() -> None:
    st.session_state[_PINS] = []


# --- measurement jobs this session asked for ---------------------------------------------------------

def session_owner() -> str:
    """A random id of this browser session, made on first use: the owner of the jobs it submits."""
    if _OWNER not in st.session_state:
        import uuid

        st.session_state[_OWNER] = uuid.uuid4().hex
    return str(st.session_state[_OWNER])


_OWNER = "_xtlens_job_owner"


def remember_job(job_id: str, label: str) -> None:
    jobs = dict(st.session_state.get(_JOBS, {}))
    jobs[job_id] = label
    st.session_state[_JOBS] = jobs


def session_jobs() -> dict[str, str]:
    return dict(st.session_state.get(_JOBS, {}))


# --- uploaded result tables ------------------------------------------------------------------------

def add_upload(name: str, frame: Any, origin: str | None = None) -> None:
    """Keep an uploaded result table (``origin``: where it came from, see ``upload_origin``; default
    ``uploaded <name>``). A table of the same name replaces the older one."""
    uploads = [u for u in st.session_state.get(_UPLOADS, []) if u[0] != name]
    uploads.append((name, frame))
    st.session_state[_UPLOADS] = uploads
    st.session_state[_ORIGINS] = {**st.session_state.get(_ORIGINS, {}), name: origin or f"uploaded {name}"}


_UPLOAD_IDS = "_xtlens_upload_ids"


def new_upload(file_id: str) -> bool:
    """True the first time the uploader hands over the file ``file_id`` (then remembered)."""
    seen = st.session_state.setdefault(_UPLOAD_IDS, set())
    if file_id in seen:
        return False
    seen.add(file_id)
    return True


def forget_upload_id(file_id: str) -> None:
    st.session_state.setdefault(_UPLOAD_IDS, set()).discard(file_id)


def uploads() -> list[tuple[str, Any]]:
    return list(st.session_state.get(_UPLOADS, []))


def on_clear_uploads() -> None:
    st.session_state[_UPLOADS] = []
    st.session_state[_ORIGINS] = {}


# --- whole-session restore ---------------------------------------------------------------------------

def on_restore_session(snapshot: Any) -> None:
    """Load a ``session_io.Snapshot``: current config and workload into the widgets, pins, result tables."""
    ss = st.session_state
    _write_config_values(snapshot.config.to_dict())
    ss[wl_key("seq_len")] = min(snapshot.workload.seq_len, schema.MAX_SEQ_LEN_UI)
    ss[wl_key("batch")] = snapshot.workload.batch
    ss[wl_key("dtype")] = snapshot.workload.dtype
    if snapshot.device in ss.get(_DEVICES, []):
        ss[wl_key("device")] = snapshot.device
    ss[_PINS] = [(p.name, p.config.to_json()) for p in snapshot.pins][:MAX_PINS]
    for name, frame in snapshot.results:
        add_upload(name, frame, origin="restored session")
    restore_settings(dict(getattr(snapshot, "settings", ()) or ()))
    ss[_SOURCE_NOTE] = ("ok", f"Restored a saved session ({len(snapshot.pins)} pinned configuration(s), "
                              f"{len(snapshot.results)} result table(s)).")


# --- where measurements run (this machine or a Ray cluster) --------------------------------------------

RUN_ON_KEY = "run.on"
RAY_ADDRESS_KEY = "run.ray_address"
RAY_DEVICE_KEY = "run.ray_device"
RUN_ON_CHOICES = ("this machine", "Ray cluster")


def run_on() -> tuple[str | None, str | None]:
    """``(Ray address, device on the cluster)``, or ``(None, None)`` for this machine."""
    ss = st.session_state
    if ss.get(RUN_ON_KEY) != RUN_ON_CHOICES[1]:
        return None, None
    address = str(ss.get(RAY_ADDRESS_KEY) or "").strip() or "auto"
    return address, str(ss.get(RAY_DEVICE_KEY) or "auto")


# --- benefit probes (Benefits view) ----------------------------------------------------------------

_PROBE_JOBS = "_xtlens_probe_jobs"
_PROBE_UPLOADS = "_xtlens_probe_uploads"


def remember_probe(job_key: str, probe: str, label: str) -> None:
    jobs = dict(st.session_state.get(_PROBE_JOBS, {}))
    jobs[job_key] = (probe, label)
    st.session_state[_PROBE_JOBS] = jobs


def session_probes() -> dict[str, tuple[str, str]]:
    """Probe jobs this session started: job key -> (probe, label), oldest first."""
    return dict(st.session_state.get(_PROBE_JOBS, {}))


def add_probe_upload(name: str, frame: Any) -> None:
    uploads = [u for u in st.session_state.get(_PROBE_UPLOADS, []) if u[0] != name]
    uploads.append((name, frame))
    st.session_state[_PROBE_UPLOADS] = uploads


def probe_uploads() -> list[tuple[str, Any]]:
    return list(st.session_state.get(_PROBE_UPLOADS, []))


# --- training / serving setups (the Setups view's controls; kept in the URL as t_* / s_* parameters) -------

def setup_params() -> dict[str, str]:
    """The setups' URL parameters of this session (from the link, then from the Setups view)."""
    return dict(st.session_state.get(_SETUP_PARAMS) or {})


def remember_setups(params: dict[str, str]) -> None:
    """Store the setups' URL parameters (``TrainingSetup.to_query_params()`` and ``ServingSetup``'s) and write
    them into the URL, replacing the previous ones."""
    old = st.session_state.get(_SETUP_PARAMS) or {}
    if old == params:
        return
    st.session_state[_SETUP_PARAMS] = dict(params)
    for key in old:
        if key not in params and key in st.query_params:
            del st.query_params[key]
    for key, value in params.items():
        st.query_params[key] = value


# --- a size slider beside its exact number box ------------------------------------------------------

def sync_slider(key: str, options: list[int]) -> None:
    """Before drawing the slider of ``key``: put it at the stop nearest the exact value (or an end)."""
    value = st.session_state.get(key)
    try:
        v = int(value)
    except (TypeError, ValueError):
        v = options[0]
    st.session_state[key + ".slider"] = min(options, key=lambda o: (abs(o - v), o))


def on_slider(key: str) -> None:
    """The slider moved: its value becomes the exact value."""
    st.session_state[key] = int(st.session_state[key + ".slider"])


# --- tab settings that survive a tab switch ------------------------------------------------------------

_KEPT = "_xtlens_kept"
# the tab settings that change what a view shows: they go into the URL (short name) and the session file
URL_TAB_SETTINGS = {"latency.max_len": "lat_max", "latency.repeats": "lat_rep", "tradeoffs.axis": "axis",
                    "tradeoffs.dataset_btokens": "data_bt"}


def tab_setting(key: str, default: Any, valid: Any = None) -> None:
    """Call before drawing a tab's widget ``key`` (drawn without ``value=``): the value survives a tab switch.

    Streamlit drops a widget's value when its tab is not drawn; the value is copied to a plain key on
    every run and put back when the widget comes back (or set from the URL on the first run, else ``default``).
    ``valid(value)`` rejects a kept value the widget cannot show now (``default`` is used instead).
    """
    ss = st.session_state
    if _KEPT not in ss:
        ss[_KEPT] = {}
    kept = ss[_KEPT]
    if key in ss:
        kept[key] = ss[key]
    else:
        ss[key] = kept.get(key, default)
        if valid is not None and not valid(ss[key]):
            ss[key] = default  # a value from an old link that this configuration does not allow
        kept[key] = ss[key]


def kept_settings() -> dict[str, Any]:
    """Every tab setting of this session (for the session file)."""
    ss = st.session_state
    out = dict(ss.get(_KEPT, {}))
    out.update({k: ss[k] for k in out if k in ss})
    return out


def restore_settings(settings: dict[str, Any]) -> None:
    """Put tab settings (from a session file or the URL) back; the widgets read them when drawn."""
    ss = st.session_state
    if _KEPT not in ss:
        ss[_KEPT] = {}
    kept = ss[_KEPT]
    for key, value in settings.items():
        kept[key] = value
        ss[key] = value


def tab_url_params() -> dict[str, str]:
    """The URL parameters of the tab settings that change what is shown."""
    kept = kept_settings()
    out = {}
    for key, short in URL_TAB_SETTINGS.items():
        if key in kept and kept[key] is not None:
            value = kept[key]
            out[short] = f"{value:g}" if isinstance(value, float) else str(value)
    return out


def _tab_settings_from_url(params: dict[str, Any], notes: list[str]) -> None:
    kinds = {"latency.max_len": int, "latency.repeats": int, "tradeoffs.axis": str, "tradeoffs.dataset_btokens": float}
    settings = {}
    for key, short in URL_TAB_SETTINGS.items():
        raw = params.get(short)
        if raw is None:
            continue
        try:
            settings[key] = kinds[key](raw)
        except ValueError:
            notes.append(f"The link's value was not used: {short} = {raw!r} is not a number.")
    restore_settings(settings)


# --- one colour per configuration (charts.assign_colours over this session's first-seen order) -----------

_COLOURS = "_xtlens_config_colours"


def config_colours(items: Sequence[tuple[str, Any]]) -> dict[str, str]:
    """``{label: colour}`` for ``(label, configuration)`` pairs; a configuration is a ``ModelConfig`` or its
    ``config_key`` (a row's column). The same configuration has the same colour in every chart of the session;
    the first configuration drawn (the sidebar's, at the start) gets the first colour."""
    from xtlens.dashboard.charts import assign_colours
    from xtlens.profiling.records import config_key

    seen = st.session_state.setdefault(_COLOURS, [])
    keys = [c if isinstance(c, str) else config_key(c) for _, c in items]
    colours = assign_colours(seen, keys)
    return {label: colours[k] for (label, _), k in zip(items, keys, strict=True)}


# --- where an uploaded or restored table came from -------------------------------------------------------

_ORIGINS = "_xtlens_upload_origins"


def upload_origin(name: str) -> str:
    """Where the table ``name`` of ``uploads()`` came from, in words: ``uploaded FILE`` or ``restored session``."""
    return str(st.session_state.get(_ORIGINS, {}).get(name) or f"uploaded {name}")
