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
from xtlens.profiling.results import export
from xtlens.profiling.results.uploads import validate_table

VERSION = 1


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
        cfg = ModelConfig.from_dict(doc["config"])
        wl = Workload(**doc["workload"])
        pins = tuple(PinnedConfig(name=str(p["name"]), config=ModelConfig.from_dict(p["config"]))
                     for p in doc.get("pins", []))
        results = tuple((str(r["name"]), export.from_bytes(json.dumps(r["rows"]).encode("utf-8"), "json"))
                        for r in doc.get("results", []))
        settings = doc.get("settings") or {}
        if not isinstance(settings, dict):
            raise TypeError("settings")
        settings = tuple((str(k), v) for k, v in settings.items() if isinstance(v, (str, int, float, bool, list)))
    except ConfigError as exc:
        raise ValueError(f"the session holds an invalid configuration: {exc}") from None
    except KeyError as exc:
        raise ValueError(f"the session file is incomplete (missing {exc})") from None
    except (TypeError, AttributeError, OverflowError, RecursionError) as exc:
        raise ValueError(f"the session file is malformed ({type(exc).__name__}: {str(exc)[:200]})") from None
    for name, frame in results:
        validate_table(frame, f"session table {name!r}")
    return Snapshot(config=cfg, workload=wl, device=str(doc.get("device", "cpu")), pins=pins, results=results,
                    settings=settings)


def make(cfg: ModelConfig, wl: Workload, device: str, pins: Sequence[tuple[str, ModelConfig]],
         results: Sequence[tuple[str, pd.DataFrame]], settings: dict | None = None) -> Snapshot:
    return Snapshot(config=cfg, workload=wl, device=device,
                    pins=tuple(PinnedConfig(name=n, config=c) for n, c in pins), results=tuple(results),
                    settings=tuple((settings or {}).items()))
