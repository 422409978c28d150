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
* Parquet: ``int64``, ``double`` and ``string`` columns with nulls (pyarrow).
* Markdown: for reading only (not read back). Columns that are empty in every row and the long
  ``config_json`` are left out; headers carry the unit (``measured (GiB)``, ``latency median (ms)``).

Only the canonical columns are written; a frame missing one of them is rejected with the names.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from profiling.records import COLUMNS, FLOAT_COLUMNS, INT_COLUMNS, ProfileRecord

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


# --- exact frame construction -------------------------------------------------------------------

def _int_value(col: str, value: Any) -> int | None:
    if _missing(value):
        return None
    if isinstance(value, bool):
        raise ValueError(f"column {col}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(round(value))
    text = str(value).strip()
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        try:
            return int(round(float(text)))
        except (ValueError, OverflowError):
            raise ValueError(f"column {col}: expected an integer, got {value!r}") from None


def _float_value(col: str, value: Any) -> float | None:
    if _missing(value):
        return None
    if isinstance(value, str) and value.strip() == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"column {col}: expected a number, got {value!r}") from None


def _str_value(value: Any) -> str | None:
    return None if _missing(value) else str(value)


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        import pandas as pd

        if value is pd.NA:
            return True
    except ImportError:  # pragma: no cover - pandas is a dependency
        pass
    return isinstance(value, float) and math.isnan(value)


def _frame_from_columns(columns: dict[str, list[Any]]) -> pd.DataFrame:
    """Typed canonical frame from python values per column, never passing integers through a float."""
    import pandas as pd

    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"table is missing column(s): {', '.join(missing)}")
    data = {}
    for col in COLUMNS:
        values = columns[col]
        if col in INT_COLUMNS:
            data[col] = pd.array([_int_value(col, v) for v in values], dtype="Int64")
        elif col in FLOAT_COLUMNS:
            data[col] = pd.array([_float_value(col, v) for v in values], dtype="Float64")
        else:
            data[col] = pd.Series([_str_value(v) for v in values], dtype=object).astype("string").array
    return pd.DataFrame(data, columns=list(COLUMNS))


def _rows_to_columns(rows: Iterable[dict[str, Any]]) -> dict[str, list[Any]]:
    rows = list(rows)
    names = list(COLUMNS) + [k for row in rows[:1] for k in row if k not in COLUMNS]
    out: dict[str, list[Any]] = {c: [] for c in names}
    for row in rows:
        for c in names:
            out[c].append(row.get(c))
    if not rows:  # an empty table still has its columns
        return {c: [] for c in COLUMNS}
    return out


def as_frame(table: pd.DataFrame | Sequence[ProfileRecord]) -> pd.DataFrame:
    """The canonical typed frame of records or of a frame (extra columns dropped, ints kept exact)."""
    import pandas as pd

    if isinstance(table, pd.DataFrame):
        missing = [c for c in COLUMNS if c not in table.columns]
        if missing:
            raise ValueError(f"table is missing column(s): {', '.join(missing)}")
        return _frame_from_columns({c: table[c].astype(object).tolist() for c in COLUMNS})
    return _frame_from_columns(_rows_to_columns(r.to_dict() for r in table))


def frame_to_records(frame: pd.DataFrame) -> list[ProfileRecord]:
    """Rows of a canonical frame as ``ProfileRecord`` (missing values become None; ints exact)."""
    out = []
    for row in _python_rows(as_frame(frame)):
        row["timestamp"] = row["timestamp"] or ""
        out.append(ProfileRecord(**row))
    return out


def _python_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    cols = {c: frame[c].astype(object).tolist() for c in COLUMNS}
    rows = []
    for i in range(len(frame)):
        row = {}
        for c in COLUMNS:
            v = cols[c][i]
            if _missing(v):
                v = None
            elif c in INT_COLUMNS:
                v = int(v)
            elif c in FLOAT_COLUMNS:
                v = float(v)
            row[c] = v
        rows.append(row)
    return rows


# --- writers ------------------------------------------------------------------------------------

def _csv_field(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return '"' + value.replace('"', '""') + '"'
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _to_csv(frame: pd.DataFrame) -> bytes:
    lines = [",".join(COLUMNS)]
    for row in _python_rows(frame):
        lines.append(",".join(_csv_field(row[c]) for c in COLUMNS))
    return ("\n".join(lines) + "\n").encode("utf-8")


def _to_json(frame: pd.DataFrame) -> bytes:
    return json.dumps(_python_rows(frame), indent=1, ensure_ascii=False).encode("utf-8")


def _arrow_table(frame: pd.DataFrame):
    import pyarrow as pa

    rows = _python_rows(frame)
    arrays = []
    for c in COLUMNS:
        kind = pa.int64() if c in INT_COLUMNS else pa.float64() if c in FLOAT_COLUMNS else pa.string()
        arrays.append(pa.array([r[c] for r in rows], type=kind))
    return pa.Table.from_arrays(arrays, names=list(COLUMNS))


def _to_parquet(frame: pd.DataFrame) -> bytes:
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(_arrow_table(frame), sink)
    return sink.getvalue()


# Markdown: header text and how to show each value.
_GIB = 2**30


def _md_header(col: str) -> str:
    if col.endswith("_bytes"):
        return f"{col[: -len('_bytes')].replace('_', ' ')} (GiB)"
    if col.endswith("_macs"):
        return f"{col[: -len('_macs')].replace('_', ' ')} (MACs)"
    if col.endswith("_flops_per_s"):
        return f"{col[: -len('_flops_per_s')].replace('_', ' ')} (FLOP/s)"
    if col.endswith("_flops"):
        return f"{col[: -len('_flops')].replace('_', ' ')} (FLOPs)"
    if col.endswith("_per_s"):
        return f"{col[: -len('_per_s')].replace('_', ' ')} (per s)"
    if col.endswith("_ms"):
        return f"{col[: -len('_ms')].replace('_', ' ')} (ms)"
    if col.endswith("_tokens"):
        return f"{col[: -len('_tokens')].replace('_', ' ')} (tokens)"
    if col.endswith("_rel_err"):
        return f"{col[: -len('_rel_err')].replace('_', ' ')} rel. error (%)"
    if col == "peak_fraction":
        return "peak fraction (%)"
    return col.replace("_", " ")


def _md_value(col: str, value: Any) -> str:
    if value is None:
        return ""
    if col.endswith("_bytes"):
        return f"{value / _GIB:,.4f}"
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
    rows = _python_rows(frame)
    shown = [c for c in COLUMNS if c != "config_json" and any(r[c] not in (None, "") for r in rows)]
    if not shown:
        shown = [c for c in COLUMNS if c != "config_json"]
    right = set(INT_COLUMNS) | set(FLOAT_COLUMNS)
    lines = ["| " + " | ".join(_md_header(c) for c in shown) + " |",
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

def _from_csv(data: bytes) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    text = data.decode("utf-8-sig")
    if not text.strip():
        raise ValueError("the CSV file is empty (no header row)")
    header = next(csv.reader(io.StringIO(text)))
    # Every column as text, quoted "" kept as an empty string and an unquoted empty field as missing;
    # the typed conversion happens in python so that integers never pass through a double.
    options = pcsv.ConvertOptions(column_types={name: pa.string() for name in header}, strings_can_be_null=True,
                                  quoted_strings_can_be_null=False, null_values=[""])
    table = pcsv.read_csv(io.BytesIO(text.encode("utf-8")), convert_options=options,
                          parse_options=pcsv.ParseOptions(newlines_in_values=True))
    return _frame_from_columns(table.to_pydict())


def _from_json(data: bytes) -> pd.DataFrame:
    try:
        rows = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a JSON table: {exc}") from None
    if isinstance(rows, dict) and "records" in rows:
        rows = rows["records"]
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError("a JSON table is a list of row objects")
    return _frame_from_columns(_rows_to_columns(rows))


def _from_parquet(data: bytes) -> pd.DataFrame:
    import pyarrow.parquet as pq

    return _frame_from_columns(pq.read_table(io.BytesIO(data)).to_pydict())


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
