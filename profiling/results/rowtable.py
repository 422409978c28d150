"""The one row-table base of xtlens: measured, predicted and probe rows as frames, files and SQLite values.

A row type is a frozen dataclass of flat, unit-suffixed columns (``records.ProfileRecord`` for measured and
predicted rows, ``benefit.records.ProbeRecord`` for training-probe rows). ``RowSchema(record=...)`` reads its
columns and their types from the dataclass (``int`` / ``int | None`` -> integer, ``float | None`` -> float,
the rest text) and gives every table of that type the same machinery:

* frames: the canonical typed pandas DataFrame (``Int64``, ``Float64``, ``string``). Integers never pass through
  a float: a column holding a count beyond int64 is an ``object`` column of exact Python ints. A missing float is
  ``<NA>``; NaN stays a value (``nan_is_missing=True`` makes it missing instead, as the probe tables want).
* files (``to_bytes`` / ``from_bytes``, ``write`` / ``read``): CSV, JSON and Parquet written and read back
  exactly, Markdown written for reading:

  - CSV: text always double-quoted (``""`` told from missing, an empty unquoted field), integers in full,
    floats with ``repr``;
  - JSON: standard JSON (a non-finite float is the string ``"NaN"`` / ``"Infinity"`` / ``"-Infinity"``),
    a list of row objects (``{"records": [...]}`` is read too);
  - Parquet: ``int64``, ``double`` and ``string`` columns; an integer column with a value beyond int64 is
    ``decimal128(38, 0)`` and beyond that decimal text, both read back as exact ints;
  - text a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``, tab, CR first) is written to CSV and
    Parquet with a leading ``'`` (``neutralise``) and read back without it (``restore``).
* SQLite (``sql_type``, ``sql_value``, ``python_value``): INTEGER / REAL / TEXT columns; an integer beyond
  SQLite's 64 bits is stored as its decimal digits in a BLOB (an INTEGER column would turn text holding such a
  number into a REAL) and read back as an exact int.

Tables written before a column joined a row type still load: ``required`` names the columns a table must have
(by default all but ``optional``); every other absent column reads as missing.
"""

from __future__ import annotations

import csv
import dataclasses
import decimal
import io
import json
import math
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas is imported lazily: the CLI's estimate path does not need it
    import pandas as pd

__all__ = ["RowSchema", "CellError", "INT64_MAX", "NONFINITE_JSON", "FORMATS", "READABLE_FORMATS", "MIME_TYPES", "format_for",
           "is_missing", "int_value", "float_value", "str_value", "int_array", "float_array", "arrow_safe",
           "json_safe", "neutralise", "restore", "csv_field", "csv_text_columns", "restored", "int_arrow_type"]

INT64_MAX = 2**63 - 1
NONFINITE_JSON = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
DECIMAL_DIGITS = 38  # pyarrow decimal128's precision

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


# --- one value ------------------------------------------------------------------------------------------

class CellError(ValueError):
    """A value of a table that its column cannot hold: ``column``, ``row`` (1-based, None when not known),
    the ``value`` and what the column ``allowed``. A ``ValueError``, so every reader's handling still holds."""

    def __init__(self, column: str, value: Any, allowed: str, row: int | None = None):
        self.column, self.value, self.allowed, self.row = column, value, allowed, row
        where = f"column {column}" + (f", row {row}" if row is not None else "")
        super().__init__(f"{where}: expected {allowed}, got {_shown(value)!r}")

    def at_row(self, row: int) -> CellError:
        return CellError(self.column, self.value, self.allowed, row)


def _is_na(value: Any) -> bool:
    try:
        import pandas as pd

        return value is pd.NA
    except ImportError:  # pragma: no cover - pandas is a dependency
        return False


def is_missing(value: Any) -> bool:
    """None, ``pd.NA`` or a float NaN."""
    if value is None or _is_na(value):
        return True
    return isinstance(value, float) and math.isnan(value)


def _shown(value: Any) -> str:
    text = str(value) if not isinstance(value, int) or abs(value) < 10**60 else f"an integer of {len(str(abs(value)))} digits"
    return text if len(text) <= 60 else text[:60] + "..."


def int_value(col: str, value: Any) -> int | None:
    """``value`` of the integer column ``col`` as an exact int (None when missing). A whole number written as a
    float, a decimal or text (``2``, ``2.0``, ``"2e3"``) is accepted exactly; anything else (``1.5``, ``inf``,
    ``NaN`` text, ``"12abc"``, a boolean, text beyond ``1e308`` in exponent form) raises ``ValueError`` naming
    the column: a count is never rounded."""
    if is_missing(value):
        return None
    if isinstance(value, bool):
        raise CellError(col, value, "a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise CellError(col, value, "a whole number")
        return int(value)
    if isinstance(value, decimal.Decimal):
        exact = value
    else:
        text = str(value).strip()
        if text == "":
            return None
        try:
            return int(text)
        except ValueError:
            pass
        try:
            exact = decimal.Decimal(text)
        except (decimal.InvalidOperation, ValueError):
            raise CellError(col, value, "a whole number") from None
    if not exact.is_finite() or exact.adjusted() > 308 or exact != exact.to_integral_value():
        raise CellError(col, value, "a whole number")
    return int(exact)


def float_value(col: str, value: Any) -> float | None:
    """``value`` of the float column ``col`` as a float (None when missing; NaN stays NaN); raises
    ``ValueError`` naming the column for text that is not a number."""
    if value is None or _is_na(value):
        return None
    if isinstance(value, str) and value.strip() == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError, ArithmeticError):
        raise CellError(col, value, "a number") from None


def str_value(value: Any) -> str | None:
    """``value`` of a text column as text (None when missing)."""
    return None if is_missing(value) else str(value)


def _text_value(col: str, value: Any) -> str | None:
    """``str_value``, refusing text that is not UTF-8 (a lone surrogate from a JSON ``\\ud800`` escape)."""
    text = str_value(value)
    if text is not None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise CellError(col, value, "UTF-8 text (without a lone surrogate such as \\ud800)") from None
    return text


# --- columns ----------------------------------------------------------------------------------------------

def _each(col: str, convert: Callable[[str, Any], Any], values: Iterable[Any]) -> list[Any]:
    """``convert(col, v)`` of every value; a ``CellError`` says its row (1-based)."""
    out = []
    for i, v in enumerate(values):
        try:
            out.append(convert(col, v))
        except CellError as exc:
            raise exc.at_row(i + 1) from None
    return out


def int_array(col: str, values: Iterable[Any]):
    """An exact integer column: pandas ``Int64`` when every value fits in int64, else ``object`` holding Python
    ints (counts beyond 2**63 - 1 stay exact; None for missing). Never through a float."""
    import pandas as pd

    ints = _each(col, int_value, values)
    if all(v is None or -INT64_MAX - 1 <= v <= INT64_MAX for v in ints):
        return pd.array(ints, dtype="Int64")
    return pd.array(ints, dtype=object)


def float_array(col: str, values: Iterable[Any], *, nan_is_missing: bool = False):
    """A ``Float64`` column where a missing value is ``<NA>`` and NaN stays NaN (a value, e.g. a 0/0 ratio),
    unless ``nan_is_missing``."""
    import numpy as np
    import pandas as pd

    floats = _each(col, float_value, values)
    data = np.array([np.nan if v is None else v for v in floats], dtype="float64")
    mask = np.array([v is None or (nan_is_missing and math.isnan(v)) for v in floats], dtype=bool)
    return pd.arrays.FloatingArray(data, mask)


def arrow_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` ready for Arrow (``st.dataframe``, Parquet via pandas): a column holding an integer beyond int64
    becomes text with every digit (exact; ``int(text)`` gives the count back). Other columns are unchanged."""
    out = frame
    for col in frame.columns:
        if frame[col].dtype != object:
            continue
        values = frame[col].tolist()
        if any(isinstance(v, int) and not isinstance(v, bool) and not -INT64_MAX - 1 <= v <= INT64_MAX
               for v in values):
            if out is frame:
                out = frame.copy()
            out[col] = [None if is_missing(v) else str(v) for v in values]
    return out


def json_safe(value: Any) -> Any:
    """``value`` for standard JSON: a non-finite float becomes the string ``"NaN"``, ``"Infinity"`` or
    ``"-Infinity"`` (read back by the float columns' parser); integers of any size stay JSON numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


# --- CSV and spreadsheet formulas -------------------------------------------------------------------------

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


def csv_text_columns(data: bytes) -> dict[str, list[str | None]]:
    """A CSV file as columns of text: a quoted ``""`` kept as an empty string, an unquoted empty field as
    missing. The typed conversion is the caller's (in python, so that integers never pass through a double).
    ``restored`` undoes the writer's ``neutralise``."""
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


def int_arrow_type(values: list[int | None]):
    """int64 when every value fits; else decimal128(38, 0) (exact to 10**38 - 1); else text (any size)."""
    import pyarrow as pa

    present = [v for v in values if v is not None]
    if all(-INT64_MAX - 1 <= v <= INT64_MAX for v in present):
        return pa.int64()
    if all(abs(v) < 10**DECIMAL_DIGITS for v in present):
        return pa.decimal128(DECIMAL_DIGITS, 0)
    return pa.string()


# --- the schema of a row type ---------------------------------------------------------------------------------

def _kind(type_text: Any) -> str:
    text = str(type_text).replace(" ", "")
    if text in ("int", "int|None"):
        return "int"
    if text in ("float", "float|None"):
        return "float"
    return "text"


@dataclass(frozen=True, kw_only=True)
class RowSchema:
    """The columns of one row type and the table machinery over them (see the module docstring).

    ``record``: the frozen dataclass of one row; ``title``: what a table of it is called in messages
    (``table``, ``probe table``); ``required``: the columns every table must have (None: every column not in
    ``optional``); ``partial_frames``: a DataFrame given to ``to_frame`` may hold any subset of the columns (a
    summary), the others read as missing; ``nan_is_missing``: a float NaN reads as missing."""

    record: type
    title: str = "table"
    required: tuple[str, ...] | None = None
    optional: tuple[str, ...] = ()
    partial_frames: bool = False
    nan_is_missing: bool = False
    columns: tuple[str, ...] = field(init=False)
    int_columns: frozenset[str] = field(init=False)
    float_columns: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        fields = dataclasses.fields(self.record)
        object.__setattr__(self, "columns", tuple(f.name for f in fields))
        object.__setattr__(self, "int_columns", frozenset(f.name for f in fields if _kind(f.type) == "int"))
        object.__setattr__(self, "float_columns", frozenset(f.name for f in fields if _kind(f.type) == "float"))
        if self.required is None:
            object.__setattr__(self, "required", tuple(c for c in self.columns if c not in self.optional))

    @property
    def numeric_columns(self) -> frozenset[str]:
        return self.int_columns | self.float_columns

    # --- frames -----------------------------------------------------------------------------------------

    def frame(self, columns: dict[str, list[Any]]) -> pd.DataFrame:
        """The canonical typed frame of Python values per column; raises ``ValueError`` naming the required
        columns that are absent. Absent optional columns read as missing, unknown columns are dropped."""
        import pandas as pd

        missing = [c for c in self.required if c not in columns]
        if missing:
            raise ValueError(f"{self.title} is missing column(s): {', '.join(missing)}")
        length = len(next(iter(columns.values()), []))
        data = {}
        for col in self.columns:
            values = columns[col] if col in columns else [None] * length
            if col in self.int_columns:
                data[col] = int_array(col, values)
            elif col in self.float_columns:
                data[col] = float_array(col, values, nan_is_missing=self.nan_is_missing)
            else:
                data[col] = pd.Series(_each(col, _text_value, values), dtype=object).astype("string").array
        return pd.DataFrame(data, columns=list(self.columns))

    def columns_of(self, rows: Iterable[Any]) -> dict[str, list[Any]]:
        """Columns of Python values from records or row dicts (a key a row lacks is missing)."""
        out: dict[str, list[Any]] = {c: [] for c in self.columns}
        for row in rows:
            d = row if isinstance(row, dict) else dataclasses.asdict(row)
            for c in self.columns:
                out[c].append(d.get(c))
        return out

    def to_frame(self, table: pd.DataFrame | Iterable[Any]) -> pd.DataFrame:
        """The canonical typed frame of records, row dicts or a frame (extra columns dropped, ints kept exact)."""
        import pandas as pd

        if isinstance(table, pd.DataFrame):
            if self.partial_frames:
                return self.frame({c: table[c].astype(object).tolist() if c in table.columns else [None] * len(table)
                                   for c in self.columns})
            return self.frame({c: table[c].astype(object).tolist() for c in self.columns if c in table.columns})
        return self.frame(self.columns_of(table))

    def python_rows(self, frame: pd.DataFrame) -> list[dict[str, Any]]:
        """Python values per row of a canonical frame: ints exact, missing -> None, NaN kept (unless
        ``nan_is_missing``)."""
        cols = {c: frame[c].astype(object).tolist() for c in self.columns}
        rows = []
        for i in range(len(frame)):
            row = {}
            for c in self.columns:
                v = cols[c][i]
                if c in self.float_columns and not (v is None or _is_na(v)) and not self.nan_is_missing:
                    v = float(v)  # NaN stays NaN: it is a value here, <NA> is missing
                elif is_missing(v):
                    v = None
                elif c in self.int_columns:
                    v = int(v)
                elif c in self.float_columns:
                    v = float(v)
                row[c] = v
            rows.append(row)
        return rows

    def known(self, row: dict[str, Any]) -> dict[str, Any]:
        """``row`` without keys that are not columns (a row written by a newer or older xtlens)."""
        return {k: v for k, v in row.items() if k in self.columns}

    # --- files --------------------------------------------------------------------------------------------

    def to_bytes(self, table: pd.DataFrame | Iterable[Any], fmt: str,
                 markdown: Callable[[pd.DataFrame], str] | None = None) -> bytes:
        """The table as csv, json or parquet (exact), or md through ``markdown(frame)`` (the row type's own
        headers and units)."""
        fmt = format_for(fmt)
        frame = self.to_frame(table)
        if fmt == "md":
            if markdown is None:
                raise ValueError(f"no Markdown writer given for a {self.title}")
            return markdown(frame).encode("utf-8")
        rows = self.python_rows(frame)
        if fmt == "csv":
            lines = [",".join(self.columns)] + [",".join(csv_field(r[c]) for c in self.columns) for r in rows]
            return ("\n".join(lines) + "\n").encode("utf-8")
        if fmt == "json":
            return json.dumps(json_safe(rows), indent=1, ensure_ascii=False, allow_nan=False).encode("utf-8")
        return self._parquet(rows)

    def _parquet(self, rows: list[dict[str, Any]]) -> bytes:
        import pyarrow as pa
        import pyarrow.parquet as pq

        arrays = []
        for c in self.columns:
            values = [r[c] for r in rows]
            if c in self.int_columns:
                kind = int_arrow_type(values)
                if kind != pa.int64():
                    values = [None if v is None else (decimal.Decimal(v) if pa.types.is_decimal(kind) else str(v))
                              for v in values]
            elif c in self.float_columns:
                kind = pa.float64()
            else:
                kind = pa.string()
                values = [None if v is None else neutralise(v) for v in values]
            arrays.append(pa.array(values, type=kind))
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_arrays(arrays, names=list(self.columns)), sink)
        return sink.getvalue()

    def from_bytes(self, data: bytes, fmt: str) -> pd.DataFrame:
        """Parse a table written by ``to_bytes`` (csv, json or parquet) into the canonical typed frame."""
        fmt = format_for(fmt)
        if fmt == "csv":
            return self.frame(restored(csv_text_columns(data), numeric=self.numeric_columns))
        if fmt == "json":
            try:
                # numbers with a point or an exponent as exact decimals: a whole count written ``1.0e25`` stays
                # exact in an integer column, ``1.5`` is refused there (never rounded); float columns take float()
                rows = json.loads(data.decode("utf-8"), parse_float=decimal.Decimal)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValueError(f"not a JSON {self.title}: {exc}") from None
            if isinstance(rows, dict) and "records" in rows:
                rows = rows["records"]
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise ValueError(f"a JSON {self.title} is a list of row objects")
            return self.frame(self.columns_of(rows))
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return self.frame(restored(pq.read_table(io.BytesIO(data)).to_pydict(), numeric=self.numeric_columns))
        raise ValueError("Markdown tables are for reading only: load a .csv, .json or .parquet file")

    def write(self, table: pd.DataFrame | Iterable[Any], path: str | Path, fmt: str | None = None,
              markdown: Callable[[pd.DataFrame], str] | None = None) -> Path:
        """Write the table to ``path`` in ``fmt`` (default: from the suffix), atomically. Returns the path."""
        path = Path(path)
        payload = self.to_bytes(table, fmt or format_for(path), markdown)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(payload)
        tmp.replace(path)
        return path

    def read(self, path: str | Path, fmt: str | None = None) -> pd.DataFrame:
        """Read a .csv, .json or .parquet table written by ``write`` into the canonical frame."""
        path = Path(path)
        return self.from_bytes(path.read_bytes(), fmt or format_for(path))

    def markdown(self, frame: pd.DataFrame, *, header: Callable[[str], str], cell: Callable[[str, Any], str],
                 hidden: Sequence[str] = ("config_json",), fallback: Sequence[str] | None = None) -> str:
        """A GitHub-flavoured Markdown table of a canonical frame: the columns not ``hidden`` that hold a value
        in some row (else ``fallback``, default every column not hidden), numbers right-aligned."""
        rows = self.python_rows(frame)
        shown = [c for c in self.columns if c not in hidden and any(r[c] not in (None, "") for r in rows)]
        if not shown:
            shown = list(fallback) if fallback is not None else [c for c in self.columns if c not in hidden]
        lines = ["| " + " | ".join(header(c) for c in shown) + " |",
                 "|" + "|".join("---:" if c in self.numeric_columns else "---" for c in shown) + "|"]
        lines += ["| " + " | ".join(cell(c, r[c]) for c in shown) + " |" for r in rows]
        return "\n".join(lines) + "\n"

    # --- SQLite -----------------------------------------------------------------------------------------------

    def sql_type(self, col: str) -> str:
        """The SQLite column type of ``col``: INTEGER, REAL or TEXT."""
        if col in self.int_columns:
            return "INTEGER"
        if col in self.float_columns:
            return "REAL"
        return "TEXT"

    def sql_value(self, col: str, value: Any) -> Any:
        """``value`` as stored in SQLite: an integer beyond 64 bits as its decimal digits in a BLOB, the rest as
        it is. (Not as TEXT: an INTEGER column converts text holding a number too large for 64 bits to a REAL,
        which loses the low digits.)"""
        if value is not None and col in self.int_columns and abs(int(value)) > INT64_MAX:
            return str(int(value)).encode("ascii")
        return value

    def python_value(self, col: str, value: Any) -> Any:
        """The inverse of ``sql_value`` (also reads the decimal text and the REAL of databases written before)."""
        if value is not None and col in self.int_columns and not isinstance(value, int):
            if isinstance(value, float) and not value.is_integer():  # a count is never rounded (1.5 is not 1)
                raise ValueError(f"{value!r} is not a whole number")
            return int(value.decode("ascii") if isinstance(value, bytes) else value)
        return value
