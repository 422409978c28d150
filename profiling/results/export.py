"""Write profiling tables to CSV, JSON, Parquet and Markdown, and read the first three back exactly.

Round-trip guarantee for CSV, JSON and Parquet: ``read_table(write_table(frame))`` gives the same
columns (``profiling.results.records.COLUMNS``, in that order), the same dtypes (``Int64`` for integer
columns, ``Float64`` for float columns, ``string`` for text) and the same values, including missing
values (``<NA>``) and integers beyond 2**53 (FLOP counts are never routed through a float). Floats
are written with ``repr`` precision (the shortest text that parses back to the same double).

How each format keeps that promise:

* CSV: a header row, then one row per record. Text is always double-quoted (so an empty string is
  ``""``), a missing value is an empty unquoted field, integers are written in full and floats with
  ``repr`` (``inf`` and ``-inf`` included). Any CSV reader loads it; ours tells ``""`` from missing.
* JSON: a list of row objects (the same shape as ``records.records_to_json``), ``null`` for missing.
  Python's ``json`` keeps integers exact and floats at ``repr`` precision.
* Parquet: ``int64``, ``double`` and ``string`` columns with nulls (pyarrow). An integer column with a value
  beyond int64 (a FLOP count of a huge configuration can reach 10**27) is written as ``decimal128(38, 0)``
  (exact up to 10**38 - 1), and beyond that as decimal text; both read back as exact Python integers.
* JSON is standard JSON (no ``NaN``/``Infinity`` tokens): a non-finite float is written as the string
  ``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` and read back as that float; integers of any size are JSON
  numbers. CSV writes integers of any size in full.
* Text cells that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, tab or
  carriage return) are written to CSV and Parquet with a leading ``'`` (OWASP's CSV-injection advice);
  the reader removes it again, so the round trip is exact.
* Markdown: for reading only (not read back). Columns that are empty in every row and the long
  ``config_json`` are left out; headers carry the unit (``measured (GiB)``, ``latency median (ms)``).

Only the canonical columns are written; a frame missing one of them is rejected with the names.

The machinery is the row-table base's (``profiling.results.rowtable.RowSchema``, here ``records.RESULT_ROWS``), shared with
the probe tables; this module adds the result tables' Markdown (headers with units, bytes in GiB).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xtlens.core.units import GIB
from xtlens.profiling.results.records import INT_COLUMNS, RESULT_ROWS, ProfileRecord
from xtlens.profiling.results.records import from_frame as frame_to_records
from xtlens.profiling.results.records import to_frame as as_frame
from xtlens.profiling.results.rowtable import (  # noqa: F401 - re-exported: the file machinery of every row table
    DECIMAL_DIGITS,
    FORMATS,
    MIME_TYPES,
    READABLE_FORMATS,
    csv_field,
    csv_text_columns,
    format_for,
    neutralise,
    restore,
    restored,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FORMATS",
    "READABLE_FORMATS",
    "MIME_TYPES",
    "format_for",
    "as_frame",
    "frame_to_records",
    "to_bytes",
    "from_bytes",
    "write_table",
    "read_table",
    "read_records",
    "to_markdown",
    "csv_field",
    "md_header",
    "csv_text_columns",
    "restored",
]


# Markdown: header text and how to show each value.


# (column suffix, header template); first match wins, so ``_flops_per_s`` comes before ``_flops`` and ``_per_s``.
_MD_SUFFIX_HEADERS: tuple[tuple[str, str], ...] = (
    ("_bytes", "{} (GiB)"),
    ("_macs", "{} (MACs)"),
    ("_flops_per_s", "{} (FLOP/s)"),
    ("_flops", "{} (FLOPs)"),
    ("_per_s", "{} (per s)"),
    ("_ms", "{} (ms)"),
    ("_tokens", "{} (tokens)"),
    ("_rel_err", "{} rel. error (%)"),
)


def md_header(col: str) -> str:
    """The Markdown header of column ``col``, with its unit (``measured_bytes`` -> ``measured (GiB)``)."""
    if col == "peak_fraction":
        return "peak fraction (%)"
    for suffix, template in _MD_SUFFIX_HEADERS:
        if col.endswith(suffix):
            return template.format(col.removesuffix(suffix).replace("_", " "))
    return col.replace("_", " ")


def _md_value(col: str, value: Any) -> str:
    if value is None:
        return ""
    if col.endswith("_bytes"):
        return f"{value / GIB:,.4f}"
    if col in INT_COLUMNS:
        return f"{value:,}"
    if col.endswith("_rel_err") or col == "peak_fraction":
        return f"{100 * value:.3g}"
    if col.endswith("_per_s"):
        return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:.4g}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(table: pd.DataFrame | Sequence[ProfileRecord]) -> str:
    """A GitHub-flavoured Markdown table for reading (units in headers, bytes shown in GiB = 2**30)."""
    return RESULT_ROWS.markdown(as_frame(table), header=md_header, cell=_md_value)


def to_bytes(table: pd.DataFrame | Sequence[ProfileRecord], fmt: str) -> bytes:
    """The table encoded as ``fmt`` (csv, json, parquet, md): what a browser download serves."""
    return RESULT_ROWS.to_bytes(table, fmt, markdown=to_markdown)


def from_bytes(data: bytes, fmt: str) -> pd.DataFrame:
    """Parse a table written by ``to_bytes`` (csv, json or parquet) into the canonical typed frame."""
    return RESULT_ROWS.from_bytes(data, fmt)


def write_table(table: pd.DataFrame | Sequence[ProfileRecord], path: str | Path, fmt: str | None = None) -> Path:
    """Write the table to ``path`` in ``fmt`` (default: from the suffix). Returns the path."""
    return RESULT_ROWS.write(table, path, fmt, markdown=to_markdown)


def read_table(path: str | Path, fmt: str | None = None) -> pd.DataFrame:
    """Read a .csv, .json or .parquet table written by ``write_table`` into the canonical frame."""
    return RESULT_ROWS.read(path, fmt)


def read_records(path: str | Path, fmt: str | None = None) -> list[ProfileRecord]:
    """Read a table file back into ``ProfileRecord`` rows (exact)."""
    return frame_to_records(read_table(path, fmt))
