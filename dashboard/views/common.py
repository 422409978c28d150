"""Small drawing helpers shared by the views: a table with its four downloads, a chart, a notice."""

from __future__ import annotations

from functools import partial

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from xtlens.dashboard import exporting
from xtlens.profiling.records import arrow_safe


def downloads(frame: pd.DataFrame, title: str, key: str) -> None:
    """Four download buttons (CSV, JSON, Parquet, Markdown) for ``frame``.

    The bytes are made when a button is clicked (a callable ``data``), not on every rerun.
    """
    stem = exporting.file_stem(title)
    cols = st.columns(len(exporting.FORMATS))
    for col, fmt in zip(cols, exporting.FORMATS, strict=True):
        with col:
            st.download_button(
                exporting.LABELS[fmt], data=partial(exporting.table_bytes, frame, fmt), file_name=f"{stem}.{fmt}",
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


def chart(fig: go.Figure, key: str) -> None:
    st.plotly_chart(fig, key=f"chart.{key}", width="stretch", config={"displaylogo": False})
