"""Small drawing helpers shared by the views: a table with its four downloads, a chart, a notice.

Every table a view draws goes through ``table`` or ``dataframe``, which also remember it for this browser session
(``shown_tables``): the Export tab lists them all, so a new table cannot be left out of Export
(``tests/dashboard/test_export_registry.py`` walks every tab and checks)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from xtlens.dashboard import charts, exporting
from xtlens.dashboard.session import store
from xtlens.profiling.results.records import arrow_safe

EAGER_ROWS = 2_000  # tables up to this size are encoded on every run (a few ms); larger ones when clicked

#: session-state key of the tables drawn this session (``shown_tables``)
SHOWN_KEY = "_xtlens_shown_tables"
#: the tab of a table, from the first part of its key (``setups.grid``: Setups)
TAB_OF_KEY = {"overview": "Overview", "flops": "FLOPs", "memory": "Memory", "latency": "Latency",
              "tradeoffs": "Trade-offs", "benefits": "Benefits", "setups": "Setups", "compare": "Compare",
              "history": "History", "export": "Export"}


@dataclass(frozen=True, kw_only=True)
class ShownTable:
    """A table as a view last drew it: its key, tab, title, the raw frame (numbers, units in column names), the
    configuration and workload it was drawn for, and when (local time, HH:MM:SS)."""

    key: str
    tab: str
    title: str
    frame: pd.DataFrame
    drawn_for: str
    drawn_at: str


def drawn_for() -> str:
    """The sidebar's configuration and workload, as a table drawn now was made for them ('' when invalid)."""
    from xtlens.dashboard.session import widgets
    from xtlens.profiling.results.records import config_key

    cfg, _ = widgets.read_config()
    wl, _ = widgets.read_workload(cfg) if cfg is not None else (None, None)
    if cfg is None or wl is None:
        return ""
    return f"{config_key(cfg)} · batch {wl.batch} x {wl.seq_len} tokens, {wl.dtype}"


def remember(frame: pd.DataFrame, title: str, key: str) -> None:
    """Keep ``frame`` (the raw table behind what is drawn) for the Export tab, replacing this key's last one."""
    key = key.removeprefix("df.")
    tab = TAB_OF_KEY.get(key.split(".", 1)[0], "")
    shown = store.setdefault(SHOWN_KEY, {})
    shown[key] = ShownTable(key=key, tab=tab, title=title, frame=frame, drawn_for=drawn_for(),
                            drawn_at=time.strftime("%H:%M:%S"))


def shown_tables() -> list[ShownTable]:
    """Every table drawn in this browser session (the last drawing of each key), in the order first drawn."""
    return list(store.get(SHOWN_KEY, {}).values())


def dataframe(frame, key: str, *, title: str, raw: pd.DataFrame | None = None, **kwargs) -> None:
    """``st.dataframe(frame, key=key, hide_index=True, **kwargs)``, remembered for Export under ``title``:
    ``raw`` when the drawn ``frame`` is a display form (words for column names, a Styler), else ``frame``."""
    st.dataframe(frame, key=key, **{"hide_index": True, **kwargs})
    from pandas.io.formats.style import Styler

    kept = raw if raw is not None else frame.data if isinstance(frame, Styler) else frame
    remember(kept, title, key)


def download_data(make: Callable[[], bytes], eager: bool) -> bytes | Callable[[], bytes]:
    """What a download button gets: the bytes themselves (``eager``) or ``make`` to run on click.

    Eager bytes are a stored file whose link survives the next rerun, so a click that lands while the page
    reruns (a widget changed, a job finished) still gets its file; a callable's link is replaced by every
    rerun and such a click got no file ("4 of 48 download clicks produced no file"). Large tables stay lazy:
    encoding them on every rerun would slow the page."""
    return make() if eager else make


def downloads(frame: pd.DataFrame, title: str, key: str) -> None:
    """Four download buttons (CSV, JSON, Parquet, Markdown) for ``frame``.

    Tables up to ``EAGER_ROWS`` rows are encoded now (see ``download_data``); larger ones when clicked. A format
    that cannot hold the table is a disabled button that says why, not a click without a file.
    """
    stem = exporting.file_stem(title)
    eager = len(frame) <= EAGER_ROWS
    cols = st.columns(len(exporting.FORMATS))
    for col, fmt in zip(cols, exporting.FORMATS, strict=True):
        with col:
            try:
                data = download_data(partial(exporting.table_bytes, frame, fmt), eager)
            except (ValueError, TypeError, OverflowError) as exc:
                st.button(exporting.LABELS[fmt], key=f"dl.{key}.{fmt}", disabled=True, width="stretch",
                          help=f"This table cannot be written as {exporting.LABELS[fmt]}: {str(exc)[:200]}")
                continue
            st.download_button(
                exporting.LABELS[fmt], data=data, file_name=f"{stem}.{fmt}",
                mime=exporting.MIME[fmt], key=f"dl.{key}.{fmt}", on_click="ignore", width="stretch",
                icon=":material/download:",
            )


def table(frame: pd.DataFrame, title: str, key: str, *, caption: str | None = None, expanded: bool = False,
          column_config: dict | None = None) -> None:
    """The table behind a chart, in an expander, with its downloads."""
    with st.expander(f"Table: {title}", expanded=expanded):
        if caption:
            st.caption(caption)
        st.dataframe(arrow_safe(frame), hide_index=True, width="stretch", column_config=column_config, key=f"df.{key}")
        downloads(frame, title, key)
    remember(frame, title, key)


CHART_CONFIG = {"displaylogo": False, "displayModeBar": "hover"}  # the toolbar shows on hover, above the title


def chart(fig: go.Figure, key: str) -> None:
    """``fig`` full width, its title below the toolbar strip (``charts.toolbar_room``)."""
    st.plotly_chart(charts.toolbar_room(fig), key=f"chart.{key}", width="stretch", config=CHART_CONFIG)
