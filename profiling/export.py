"""Write profiling tables to CSV, JSON, Parquet and Markdown, and read the first three back exactly.

Round-trip guarantee for CSV, JSON and Parquet: ``read_table(write_table(frame))`` gives the same
columns (``profiling.records.COLUMNS``, in that order), the same dtypes (``Int64`` for integer
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
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xtlens.core.units import GIB
from xtlens.profiling.records import (
    COLUMNS,
    FLOAT_COLUMNS,
    INT64_MAX,
    INT_COLUMNS,
    ProfileRecord,
    frame_from_columns,
    json_safe,
    python_rows,
    rows_to_columns,
)
from xtlens.profiling.records import from_frame as frame_to_records
from xtlens.profiling.records import to_frame as as_frame

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

FORMATS: tuple[str, ...] = ("csv", "json", "parquet", "md")
READABLE_FORMATS: tuple[str, ...] = ("csv", "json", "parquet")
MIME_TYPES: dict[str, str] = {
    "csv": "text/csv",
    "json": "application/json",
    "parquet": "application/vnd.apache.parquet",
    "md": "text/markdown",
}
_ALIASES = {"markdown": "md", "pq": "parquet"}


def format_for(path_or_format: str | Path) -> str:
    """``"csv"``, ``"json"``, ``"parquet"`` or ``"md"`` from a format name or a file name's suffix."""
    text = str(path_or_format).strip().lower()
    name = text.rsplit(".", 1)[-1] if "." in Path(text).name else text
    name = _ALIASES.get(name, name)
    if name not in FORMATS:
        raise ValueError(f"format {str(path_or_format)!r} is not supported: one of {', '.join(FORMATS)} "
                         "(a file name ending in .csv, .json, .parquet or .md)")
    return name


# --- writers ------------------------------------------------------------------------------------

_FORMULA = re.compile(r"'*[=+\-@\t\r]")


def neutralise(text: str) -> str:
    """``text`` as a spreadsheet shows it without running it: a leading ``'`` before ``=``, ``+``, ``-``, ``@``,
    tab or CR (and before text that already starts with ``'`` and one of them, so ``restore`` is exact)."""
    return "'" + text if _FORMULA.match(text) else text


def restore(text: str) -> str:
    """The inverse of ``neutralise``."""
    return text[1:] if text.startswith("'") and _FORMULA.match(text[1:]) else text


def csv_field(value: Any) -> str:
    """One CSV field as xtlens writes it: missing -> empty, text double-quoted (formula-neutralised), floats
    with ``repr``, integers in full. ``csv_text_columns`` reads it back."""
    if value is None:
        return ""
    if isinstance(value, str):
        return '"' + neutralise(value).replace('"', '""') + '"'
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _to_csv(frame: pd.DataFrame) -> bytes:
    lines = [",".join(COLUMNS)]
    for row in python_rows(frame):
        lines.append(",".join(csv_field(row[c]) for c in COLUMNS))
    return ("\n".join(lines) + "\n").encode("utf-8")


def _to_json(frame: pd.DataFrame) -> bytes:
    return json.dumps(json_safe(python_rows(frame)), indent=1, ensure_ascii=False, allow_nan=False).encode("utf-8")


DECIMAL_DIGITS = 38  # pyarrow decimal128's precision


def _int_arrow_type(values: list[int | None]):
    """int64 when every value fits; else decimal128(38, 0) (exact to 10**38 - 1); else text (any size)."""
    import pyarrow as pa

    present = [v for v in values if v is not None]
    if all(-INT64_MAX - 1 <= v <= INT64_MAX for v in present):
        return pa.int64()
    if all(abs(v) < 10**DECIMAL_DIGITS for v in present):
        return pa.decimal128(DECIMAL_DIGITS, 0)
    return pa.string()


def _arrow_table(frame: pd.DataFrame):
    import decimal

    import pyarrow as pa

    rows = python_rows(frame)
    arrays = []
    for c in COLUMNS:
        values = [r[c] for r in rows]
        kind = _int_arrow_type(values) if c in INT_COLUMNS else pa.float64() if c in FLOAT_COLUMNS else pa.string()
        if c not in INT_COLUMNS and c not in FLOAT_COLUMNS:
            values = [None if v is None else neutralise(v) for v in values]
        if c in INT_COLUMNS and kind != pa.int64():
            values = [None if v is None else (decimal.Decimal(v) if pa.types.is_decimal(kind) else str(v))
                      for v in values]
        arrays.append(pa.array(values, type=kind))
    return pa.Table.from_arrays(arrays, names=list(COLUMNS))


def _to_parquet(frame: pd.DataFrame) -> bytes:
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(_arrow_table(frame), sink)
    return sink.getvalue()


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
    frame = as_frame(table)
    rows = python_rows(frame)
    shown = [c for c in COLUMNS if c != "config_json" and any(r[c] not in (None, "") for r in rows)]
    if not shown:
        shown = [c for c in COLUMNS if c != "config_json"]
    right = set(INT_COLUMNS) | set(FLOAT_COLUMNS)
    lines = ["| " + " | ".join(md_header(c) for c in shown) + " |",
             "|" + "|".join("---:" if c in right else "---" for c in shown) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_md_value(c, r[c]) for c in shown) + " |")
    return "\n".join(lines) + "\n"


def to_bytes(table: pd.DataFrame | Sequence[ProfileRecord], fmt: str) -> bytes:
    """The table encoded as ``fmt`` (csv, json, parquet, md): what a browser download serves."""
    fmt = format_for(fmt)
    frame = as_frame(table)
    if fmt == "csv":
        return _to_csv(frame)
    if fmt == "json":
        return _to_json(frame)
    if fmt == "parquet":
        return _to_parquet(frame)
    return to_markdown(frame).encode("utf-8")


# --- readers ------------------------------------------------------------------------------------

def csv_text_columns(data: bytes) -> dict[str, list[str | None]]:
    """A CSV file as columns of text: a quoted ``""`` kept as an empty string, an unquoted empty field as
    missing. The typed conversion is the caller's (in python, so that integers never pass through a double).
    The one CSV reader of result tables and probe tables; ``restored`` undoes the writer's ``neutralise``."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    text = data.decode("utf-8-sig")
    if not text.strip():
        raise ValueError("the CSV file is empty (no header row)")
    header = next(csv.reader(io.StringIO(text)))
    options = pcsv.ConvertOptions(column_types={name: pa.string() for name in header}, strings_can_be_null=True,
                                  quoted_strings_can_be_null=False, null_values=[""])
    table = pcsv.read_csv(io.BytesIO(text.encode("utf-8")), convert_options=options,
                          parse_options=pcsv.ParseOptions(newlines_in_values=True))
    return table.to_pydict()


def restored(columns: dict[str, list[Any]], *, numeric: Collection[str]) -> dict[str, list[Any]]:
    """The text columns (every column not in ``numeric``) with ``neutralise``'s quote removed."""
    return {c: values if c in numeric else [restore(v) if isinstance(v, str) else v for v in values]
            for c, values in columns.items()}


_NUMERIC = frozenset((*INT_COLUMNS, *FLOAT_COLUMNS))


def _from_csv(data: bytes) -> pd.DataFrame:
    return frame_from_columns(restored(csv_text_columns(data), numeric=_NUMERIC))


def _from_json(data: bytes) -> pd.DataFrame:
    try:
        rows = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a JSON table: {exc}") from None
    if isinstance(rows, dict) and "records" in rows:
        rows = rows["records"]
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError("a JSON table is a list of row objects")
    return frame_from_columns(rows_to_columns(rows))


def _from_parquet(data: bytes) -> pd.DataFrame:
    import pyarrow.parquet as pq

    return frame_from_columns(restored(pq.read_table(io.BytesIO(data)).to_pydict(), numeric=_NUMERIC))


def from_bytes(data: bytes, fmt: str) -> pd.DataFrame:
    """Parse a table written by ``to_bytes`` (csv, json or parquet) into the canonical typed frame."""
    fmt = format_for(fmt)
    if fmt == "csv":
        return _from_csv(data)
    if fmt == "json":
        return _from_json(data)
    if fmt == "parquet":
        return _from_parquet(data)
    raise ValueError("Markdown tables are for reading only: load a .csv, .json or .parquet file")


def write_table(table: pd.DataFrame | Sequence[ProfileRecord], path: str | Path, fmt: str | None = None) -> Path:
    """Write the table to ``path`` in ``fmt`` (default: from the suffix). Returns the path."""
    path = Path(path)
    payload = to_bytes(table, fmt or format_for(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(payload)
    tmp.replace(path)
    return path


def read_table(path: str | Path, fmt: str | None = None) -> pd.DataFrame:
    """Read a .csv, .json or .parquet table written by ``write_table`` into the canonical frame."""
    path = Path(path)
    return from_bytes(path.read_bytes(), fmt or format_for(path))


def read_records(path: str | Path, fmt: str | None = None) -> list[ProfileRecord]:
    """Read a table file back into ``ProfileRecord`` rows (exact)."""
    return frame_to_records(read_table(path, fmt))
