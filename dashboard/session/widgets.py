"""The sidebar's widget keys and what they describe: the configuration, the workload, the device and the tab.

Widgets are addressed by key: ``cfg.<field>`` for every ``ModelConfig`` field, ``wl.seq_len``, ``wl.batch``,
``wl.dtype``, ``wl.device`` for the workload, ``view`` for the tab. ``read_config`` / ``read_workload`` turn
the widgets' values into a ``ModelConfig`` and a ``Workload`` or the ``ConfigError`` that names the field.
A size slider sits beside its exact number box (``sync_slider`` / ``on_slider``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xtlens.core.config import ConfigError, ModelConfig, Workload
from xtlens.dashboard import schema
from xtlens.dashboard.session import store

CFG = "cfg."
WL = "wl."
VIEW_KEY = "view"
PRESET_KEY = "src.preset"
SNIPPET_KEY = "src.snippet"
DEFAULT_PRESET = "seed"
_DEVICES = "_xtlens_devices"  # the devices this machine offers (the device box's choices)


def cfg_key(name: str) -> str:
    return CFG + name


def wl_key(name: str) -> str:
    return WL + name


# --- writing (the start of a session, a loaded configuration, a restored session) -------------------------

def write_config_values(values: dict[str, Any]) -> None:
    """Put a configuration's values (``ModelConfig.to_dict()`` or decoded URL values) into the ``cfg.*`` widgets."""
    for spec in schema.CONFIG_FIELDS:
        value = values.get(spec.name)
        if spec.kind == "float" and value is not None:
            value = float(value)
        store.put(cfg_key(spec.name), value)


def write_workload(*, seq_len: int, batch: int, dtype: str) -> None:
    store.put(wl_key("seq_len"), min(int(seq_len), schema.MAX_SEQ_LEN_UI))
    store.put(wl_key("batch"), int(batch))
    store.put(wl_key("dtype"), dtype)


def set_devices(devices: Sequence[str], device: str) -> None:
    """The devices this machine offers and the one chosen (one of them)."""
    store.put(_DEVICES, list(devices))
    store.put(wl_key("device"), device)


def choose_device(device: str) -> None:
    """Choose ``device`` when this machine has it (else keep the current one)."""
    if device in store.get(_DEVICES, []):
        store.put(wl_key("device"), device)


# --- reading the widgets ------------------------------------------------------------------------------

def read_config() -> tuple[ModelConfig | None, ConfigError | None]:
    """The configuration the widgets describe, or the error that names the offending field."""
    values: dict[str, Any] = {}
    for spec in schema.CONFIG_FIELDS:
        value = store.get(cfg_key(spec.name))
        if spec.kind == "float" and value is not None and float(value).is_integer():
            value = int(value)  # ff_mult=4 stays 4, as x-transformers' default is written
        values[spec.name] = value
    try:
        return ModelConfig.from_dict(values), None
    except ConfigError as exc:
        return None, exc


def read_workload(cfg: ModelConfig | None) -> tuple[Workload | None, ConfigError | None]:
    try:
        seq_len = _int_or_none(store.get(wl_key("seq_len")))
        if seq_len is None or not 1 <= seq_len <= schema.MAX_SEQ_LEN_UI:
            raise ConfigError("seq_len", store.get(wl_key("seq_len")),
                              f"an integer from 1 to {schema.MAX_SEQ_LEN_UI} (the page's longest; at most max_seq_len)")
        workload = Workload(seq_len=seq_len, batch=int(store.get(wl_key("batch"))), dtype=store.get(wl_key("dtype")))
        if cfg is not None:
            workload.check_against(cfg)
        return workload, None
    except ConfigError as exc:
        return None, exc


def _int_or_none(value: Any) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else None


def slider_max_seq_len() -> int:
    """The sequence-length slider's last stop: the configuration's max_seq_len (as typed; the page's longest,
    8192, when it is not a valid number)."""
    value = _int_or_none(store.get(cfg_key("max_seq_len")))
    return schema.MAX_SEQ_LEN_UI if value is None or value < 1 else min(value, schema.MAX_SEQ_LEN_UI)


def read_device() -> str:
    return str(store.get(wl_key("device"), "cpu"))


def current_view(default: str) -> str:
    return str(store.get(VIEW_KEY) or default)


def value(key: str, default: Any = None) -> Any:
    """The value of any widget ``key`` (a view's own widgets, read outside the line that draws them)."""
    return store.get(key, default)


# --- a size slider beside its exact number box ------------------------------------------------------

def sync_slider(key: str, options: list[int]) -> None:
    """Before drawing the slider of ``key``: put it at the stop nearest the exact value (or an end)."""
    try:
        exact = int(store.get(key))
    except (TypeError, ValueError):
        exact = options[0]
    store.put(key + ".slider", min(options, key=lambda o: (abs(o - exact), o)))


def on_slider(key: str) -> None:
    """The slider moved: its value becomes the exact value."""
    store.put(key, int(store.get(key + ".slider")))
