"""The whole session as one JSON file (configurations and result tables) and back. Pure (no Streamlit).

Format (``xtlens_session`` = 1)::

    {"xtlens_session": 1, "config": {...ModelConfig fields...}, "workload": {"batch", "seq_len", "dtype"},
     "device": "cpu", "pins": [{"name": ..., "config": {...}}],
     "results": [{"name": ..., "rows": [ProfileRecord dicts]}],
     "settings": {"latency.max_len": 2048, ...}}   # the tabs' settings (optional; absent in older files)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from xtlens.core.config import ConfigError, ModelConfig, Workload
from xtlens.core.untrusted import untrusted_text
from xtlens.dashboard.session import setting_values
from xtlens.profiling.results import export
from xtlens.profiling.results.rowtable import CellError
from xtlens.profiling.results.uploads import cell_error, validate_table

VERSION = 1
#: Longest pin or table name a session file may hold.
MAX_NAME_CHARS = 1_000


@dataclass(frozen=True, kw_only=True)
class PinnedConfig:
    name: str
    config: ModelConfig


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    config: ModelConfig
    workload: Workload
    device: str
    pins: tuple[PinnedConfig, ...] = ()
    results: tuple[tuple[str, pd.DataFrame], ...] = ()
    settings: tuple[tuple[str, object], ...] = ()  # the tabs' settings (``tab_settings.kept_settings``)


def to_json(snapshot: Snapshot) -> str:
    results = []
    for name, frame in snapshot.results:
        rows = json.loads(export.to_bytes(frame, "json").decode("utf-8"))
        results.append({"name": name, "rows": rows})
    doc = {
        "xtlens_session": VERSION,
        "config": snapshot.config.to_dict(),
        "workload": snapshot.workload.to_dict(),
        "device": snapshot.device,
        "pins": [{"name": p.name, "config": p.config.to_dict()} for p in snapshot.pins],
        "results": results,
        "settings": dict(snapshot.settings),
    }
    return json.dumps(doc, indent=1, allow_nan=False)  # standard JSON: non-finite floats are strings in the rows


def from_json(text: str | bytes) -> Snapshot:
    """Parse a session file; ``ValueError`` with a message for the page when it is not one."""
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a JSON file: {exc}") from None
    except RecursionError:
        raise ValueError("not a session file: it is nested too deeply") from None
    if not isinstance(doc, dict) or doc.get("xtlens_session") != VERSION:
        raise ValueError("not an xtlens session file (no \"xtlens_session\": 1): use the Export tab's session download")
    try:
        # names and settings are checked first: a lone surrogate or a NaN would break the views that show them
        pin_names = [_name(f"pin {i + 1}'s name", p["name"]) for i, p in enumerate(doc.get("pins", []))]
        table_names = [_name(f"result table {i + 1}'s name", r["name"]) for i, r in enumerate(doc.get("results", []))]
        settings = doc.get("settings") or {}
        if not isinstance(settings, dict):
            raise TypeError("settings")
        settings = tuple((k, setting_values.check_setting(k, v, field=f"setting {k}")) for k, v in settings.items()
                         if setting_values.known(k))  # a setting this version does not know is not restored
    except ConfigError as exc:
        raise ValueError(f"the session file's {exc}") from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"the session file is malformed ({type(exc).__name__}: {str(exc)[:200]})") from None
    try:
        cfg = ModelConfig.from_dict(doc["config"])
        wl = Workload(**doc["workload"])
        pins = tuple(PinnedConfig(name=n, config=ModelConfig.from_dict(p["config"]))
                     for n, p in zip(pin_names, doc.get("pins", []), strict=True))
        results = tuple((n, _rows(n, r["rows"])) for n, r in zip(table_names, doc.get("results", []), strict=True))
    except ConfigError as exc:
        if exc.field.startswith("file session table"):
            raise ValueError(str(exc)) from None
        raise ValueError(f"the session holds an invalid configuration: {exc}") from None
    except KeyError as exc:
        raise ValueError(f"the session file is incomplete (missing {exc})") from None
    except (TypeError, AttributeError, OverflowError, RecursionError) as exc:
        raise ValueError(f"the session file is malformed ({type(exc).__name__}: {str(exc)[:200]})") from None
    for name, frame in results:
        validate_table(frame, f"session table {name!r}")
    return Snapshot(config=cfg, workload=wl, device=str(doc.get("device", "cpu")), pins=pins, results=results,
                    settings=settings)


def _rows(name: str, rows: object) -> pd.DataFrame:
    try:
        return export.from_bytes(json.dumps(rows).encode("utf-8"), "json")
    except CellError as exc:  # a count that is not a whole number, a batch of 1.5: named, never rounded
        raise cell_error(exc, f"session table {name!r}") from None


def _name(field: str, value: object) -> str:
    """A pin's or a table's name: UTF-8 text (no lone surrogate, no NUL) of at most ``MAX_NAME_CHARS``
    characters (a pin name is typed in a box of 200, a table's is a file name)."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(field, value, "a non-empty text")
    return untrusted_text(field, value, limit=MAX_NAME_CHARS)


def make(cfg: ModelConfig, wl: Workload, device: str, pins: Sequence[tuple[str, ModelConfig]],
         results: Sequence[tuple[str, pd.DataFrame]], settings: dict | None = None) -> Snapshot:
    return Snapshot(config=cfg, workload=wl, device=device,
                    pins=tuple(PinnedConfig(name=n, config=c) for n, c in pins), results=tuple(results),
                    settings=tuple((settings or {}).items()))
