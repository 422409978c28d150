"""Small drawing helpers shared by the views: a table with its four downloads, a chart, a notice."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from xtlens.dashboard import charts, exporting
from xtlens.profiling.results.records import arrow_safe

EAGER_ROWS = 2_000  # tables up to this size are encoded on every run (a few ms); larger ones when clicked


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


CHART_CONFIG = {"displaylogo": False, "displayModeBar": "hover"}  # the toolbar shows on hover, above the title


def chart(fig: go.Figure, key: str) -> None:
    """``fig`` full width, its title below the toolbar strip (``charts.toolbar_room``)."""
    st.plotly_chart(charts.toolbar_room(fig), key=f"chart.{key}", width="stretch", config=CHART_CONFIG)
