"""Results that are not this session's measurements: result tables uploaded on the Export tab and the tables of
a restored session file. Each view draws the rows that belong to it (latency rows in Latency, memory rows in
Memory, FLOP rows in FLOPs) beside its own measurement, every row labelled by its *run*: the configuration's
name and where the rows came from (``seed · uploaded gpu.csv``, ``seed · restored session``). The same tables are
listed, with their downloads, on the Export tab.

``runs_frame`` is pure pandas; ``for_view`` reads the session's tables (``session.uploads``).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from xtlens.profiling.results.export import as_frame

# the columns that identify one point of one run: a later table's row replaces an earlier one
POINT = ("run", "measurement", "phase", "component", "method", "batch", "seq_len_tokens", "dtype")


#: names older versions of the page stored the sidebar's configuration (and its ALiBi twin) under: they say nothing
#: about which configuration it was, so a run shows the configuration's readable name instead
PAGE_LABELS = frozenset({"current", "with ALiBi (current)", "without ALiBi (current)", "with ALiBi", "without ALiBi"})


def run_label(config_name: object, origin: str, config_json: object = None) -> str:
    """``<config name> · <where it came from>``; a page label such as "current" (``PAGE_LABELS``) is replaced by the
    configuration's readable name (``core.presets.config_label``, e.g. ``seed · dim=80``) when ``config_json``
    rebuilds it."""
    if str(config_name) in PAGE_LABELS and isinstance(config_json, str):
        from xtlens.core.config import ModelConfig, XtlensError
        from xtlens.core.presets import config_label

        try:
            config_name = config_label(ModelConfig.from_json(config_json))
        except (XtlensError, ValueError, TypeError, KeyError):
            pass
    return f"{config_name} · {origin}"


def runs_frame(tables: Sequence[tuple[str, pd.DataFrame]], measurement: str) -> pd.DataFrame:
    """The ``ok`` rows of ``measurement`` from ``(origin, table)`` pairs, with a ``run`` column; one row per
    point and run (the last table that has the point wins, so a file uploaded twice is not drawn twice)."""
    parts = []
    for origin, table in tables:
        frame = as_frame(table)
        rows = frame[(frame["measurement"] == measurement) & (frame["status"] == "ok")]
        if rows.empty:
            continue
        parts.append(rows.assign(run=[run_label(n, origin, j) for n, j in zip(rows["config_name"],
                                                                               rows["config_json"], strict=True)]))
    if not parts:
        return pd.DataFrame(columns=[*as_frame([]).columns, "run"])
    out = pd.concat(parts, ignore_index=True)
    key = [c for c in POINT if c in out.columns]
    return out.drop_duplicates(key, keep="last").reset_index(drop=True)


def for_view(measurement: str) -> pd.DataFrame:
    """``runs_frame`` of this session's uploaded and restored tables."""
    from xtlens.dashboard.session import uploads

    return runs_frame([(uploads.upload_origin(name), frame) for name, frame in uploads.uploads()], measurement)


def run_keys(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """``(run, config_key)`` of each run in ``frame``, in order of first appearance."""
    if frame.empty:
        return []
    return list(frame.drop_duplicates("run")[["run", "config_key"]].itertuples(index=False, name=None))


def caption(frame: pd.DataFrame, what: str, style: str) -> str:
    """One sentence naming the runs drawn besides this session's own measurement (``style``: how they are drawn)."""
    runs = list(dict.fromkeys(frame["run"]))
    return (f"Also drawn: {what} from {len(runs)} uploaded or restored run(s) — " + "; ".join(runs)
            + f" ({style}; listed with their downloads on the Export tab).")
