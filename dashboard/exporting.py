"""Every table of the page as CSV, JSON, Parquet or Markdown bytes, and back. Pure (no Streamlit).

Measurement tables (the canonical ``ProfileRecord`` columns) go through ``profiling.results.export`` so a
file from the dashboard and one from ``xtlens profile`` are the same format. Other tables (closed-form
curves, sweeps, comparisons) are written column for column: CSV with a header, JSON as a list of row
objects, Parquet via pyarrow, Markdown for reading. ``table_from_bytes`` reads the first three back.
"""

from __future__ import annotations

import io
import json
import math

import pandas as pd
from xtlens.profiling.results import export
from xtlens.profiling.results.records import COLUMNS, arrow_safe, json_safe

FORMATS: tuple[str, ...] = ("csv", "json", "parquet", "md")
LABELS = {"csv": "CSV", "json": "JSON", "parquet": "Parquet", "md": "Markdown"}
MIME = dict(export.MIME_TYPES)


def is_records(frame: pd.DataFrame) -> bool:
    return all(c in frame.columns for c in COLUMNS)


def _plain(value: object) -> object:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def _markdown(frame: pd.DataFrame) -> str:
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in frame.itertuples(index=False):
        cells = []
        for v in row:
            v = _plain(v)
            text = "" if v is None else (f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v))
            cells.append(text.replace("|", "\\|").replace("\n", " "))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_bytes(frame: pd.DataFrame, fmt: str) -> bytes:
    """``frame`` encoded as ``fmt`` (csv, json, parquet, md)."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not supported: one of {', '.join(FORMATS)}")
    if is_records(frame):
        return export.to_bytes(frame, fmt)
    frame = frame.reset_index(drop=True)
    if fmt == "csv":
        return frame.to_csv(index=False).encode("utf-8")
    if fmt == "json":
        rows = [{str(k): _plain(v) for k, v in rec.items()} for rec in frame.to_dict(orient="records")]
        return json.dumps(json_safe(rows), indent=1, ensure_ascii=False, allow_nan=False).encode("utf-8")
    if fmt == "parquet":
        sink = io.BytesIO()
        arrow_safe(frame).to_parquet(sink, index=False)  # a count beyond int64 as exact digit text
        return sink.getvalue()
    return _markdown(frame).encode("utf-8")


def table_from_bytes(data: bytes, fmt: str, *, records: bool | None = None) -> pd.DataFrame:
    """Read a table written by ``table_bytes`` (csv, json, parquet).

    ``records=None`` detects a measurement table (canonical columns) and reads it exactly with
    ``profiling.results.export``; otherwise pandas reads it.
    """
    if fmt == "md":
        raise ValueError("Markdown tables are for reading only: load a .csv, .json or .parquet file")
    if records is None:
        plain = _read_plain(data, fmt)
        if not is_records(plain):
            return plain
        records = True
    if records:
        return export.from_bytes(data, fmt)
    return _read_plain(data, fmt)


def _read_plain(data: bytes, fmt: str) -> pd.DataFrame:
    if fmt == "csv":
        return pd.read_csv(io.BytesIO(data))
    if fmt == "json":
        return pd.DataFrame(json.loads(data.decode("utf-8")))
    if fmt == "parquet":
        return pd.read_parquet(io.BytesIO(data))
    raise ValueError(f"format {fmt!r} is not supported")


def file_stem(name: str) -> str:
    """A safe file name stem from a table title."""
    keep = "".join(ch if ch.isalnum() else "-" for ch in name.lower())
    return "-".join(p for p in keep.split("-") if p) or "table"
