"""The one boundary for uploaded result tables and session files: size cap, parse, validate, cache by content.

Everything a user uploads (the Export tab's result tables and session files, ``xtlens results import``)
passes ``read_table_upload`` / ``cached``: a file larger than ``MAX_UPLOAD_BYTES`` is refused before it is
parsed; any parse failure (bad CSV, non-UTF-8 text, JSON nested too deep, an integer column holding
``Infinity`` or ``1e400``, an unsigned Parquet column, ...) becomes a ``ConfigError`` naming the file and, when
known, the column and row; a count that is not a whole number (``1.5``) is refused, never rounded, while whole
numbers of any size are kept exactly; and a table is validated before anything uses it (the canonical columns, a
known ``status`` and ``measurement``, batch and sequence length within ``RANGES``, non-negative counts, sizes and
times, UTF-8 text). Parsed files
are kept by the SHA-256 of their content (``cached``), so a rerun of the page does not parse a file again;
callers get their own copy of a cached table.
"""

from __future__ import annotations

import decimal
import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from xtlens.core.config import LIMITS, ConfigError
from xtlens.core.untrusted import read_untrusted_file
from xtlens.profiling.results.records import FLOAT_COLUMNS, INT_COLUMNS, MEASUREMENTS, STATUSES
from xtlens.profiling.results.rowtable import CellError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MAX_UPLOAD_BYTES", "RANGES", "read_table_upload", "validate_table", "cached", "check_size", "allowed_in",
           "cell_error", "read_upload_file", "read_probe_upload"]

log = logging.getLogger(__name__)

#: Largest uploaded table or session file (bytes). ``xtlens profile`` tables are a few MB at most.
MAX_UPLOAD_BYTES = 50 * 2**20
_CACHE_ENTRIES = 16

#: Integer and float columns that can never be negative (counts, sizes, times, rates).
NON_NEGATIVE = (*INT_COLUMNS, *FLOAT_COLUMNS)
#: Columns every row must fill.
REQUIRED_TEXT = ("config_json", "measurement", "phase", "component", "dtype", "device", "status")
POSITIVE = ("batch", "seq_len_tokens")
#: The integer columns with an upper limit (a workload's, ``core.config.LIMITS``); every other count may be any
#: whole number >= 0 (a FLOP count beyond 2**64 is kept exactly).
RANGES: dict[str, tuple[int, int]] = {"batch": LIMITS["batch"], "seq_len_tokens": (1, LIMITS["max_seq_len"][1])}

T = TypeVar("T")
_cache: OrderedDict[str, tuple[bool, Any]] = OrderedDict()
_lock = threading.Lock()


def check_size(name: str, data: bytes, limit: int | None = None) -> None:
    """Refuse ``data`` larger than ``limit`` (default ``MAX_UPLOAD_BYTES``) before anything parses it."""
    limit = MAX_UPLOAD_BYTES if limit is None else limit
    if len(data) > limit:
        raise ConfigError(f"file {name}", None, f"at most {limit / 2**20:g} MiB (it has {len(data) / 2**20:,.1f} MiB)")


def read_upload_file(field: str, path: str | os.PathLike[str]) -> bytes:
    """The content of the file ``path`` a user gives (``xtlens results import``), at most ``MAX_UPLOAD_BYTES``:
    a named pipe, a device or a folder is refused before anything is read, a symlink loop is named as one
    (``core.untrusted.read_untrusted_file``). Raises ``ConfigError`` naming ``field`` and the file."""
    data = read_untrusted_file(field, path, MAX_UPLOAD_BYTES)
    check_size(str(path), data)
    return data


def _copy(value: Any) -> Any:
    copier = getattr(value, "copy", None)
    return copier() if callable(copier) else value


def cached(kind: str, name: str, data: bytes, parse: Callable[[bytes], T]) -> T:
    """``parse(data)`` once per (kind, content): later calls with the same bytes return a copy of the result, or
    raise the same ``ConfigError`` again, without parsing. Every other exception of ``parse`` becomes a
    ``ConfigError`` naming the file (logged in one line at info level, its traceback at debug level; never shown)."""
    check_size(name, data)
    key = kind + ":" + hashlib.sha256(data).hexdigest()
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
    if hit is None:
        try:
            hit = (True, parse(data))
        except ConfigError as exc:
            hit = (False, (exc.field, exc.value, exc.allowed))
        except (Exception, RecursionError, MemoryError) as exc:  # noqa: BLE001 - untrusted input: never escapes
            # the user gets the ConfigError; the server's log one line (info) and the traceback (debug): nothing
            # reaches the CLI's stderr but the message
            log.info("upload %r could not be read: %s", name, _reason(exc))
            log.debug("upload %r could not be read", name, exc_info=True)
            hit = (False, ("", None, f"a readable {kind} ({_reason(exc)})"))  # named at each call: same bytes, other name
        with _lock:
            _cache[key] = hit
            while len(_cache) > _CACHE_ENTRIES:
                _cache.popitem(last=False)
    ok, value = hit
    if not ok:
        field, shown, allowed = value
        raise ConfigError(f"file {name}: {field}" if field else f"file {name}", shown, allowed)
    return _copy(value)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "it is nested too deeply"
    if isinstance(exc, MemoryError):
        return "it needs too much memory to read"
    if isinstance(exc, UnicodeDecodeError):
        return f"it is not UTF-8 text (byte {exc.start})"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "..."


def read_table_upload(name: str, data: bytes, fmt: str) -> pd.DataFrame:
    """The uploaded measurement table ``name`` (csv, json or parquet) as the canonical frame, validated.
    Raises ``ConfigError`` naming the file (and the column and row where one is at fault)."""
    from xtlens.profiling.results.export import from_bytes

    def parse(content: bytes) -> pd.DataFrame:
        try:
            frame = from_bytes(content, fmt)
        except CellError as exc:
            raise cell_error(exc, name) from None
        except ValueError as exc:
            raise ConfigError(f"file {name}", None, f"a result table written by xtlens ({_reason(exc)})") from None
        validate_table(frame, name)
        return frame

    return cached(f"{fmt} table", name, data, parse)


def read_probe_upload(name: str, data: bytes, fmt: str) -> pd.DataFrame:
    """An uploaded probe table (``xtlens probe --out``; the Benefits tab) as its canonical frame, through the same
    boundary as result tables: size cap, any parse failure (JSON nested too deep, a CSV header field over 128
    KiB, a count that is not a whole number) a ``ConfigError`` naming the file (and the column and row), cached
    by content."""
    from xtlens.profiling.benefit.records import probe_from_bytes

    def parse(content: bytes) -> pd.DataFrame:
        try:
            return probe_from_bytes(content, fmt)
        except CellError as exc:
            raise ConfigError(f"file {name}: column {exc.column}" + (f", row {exc.row}" if exc.row else ""),
                              str(exc.value) if isinstance(exc.value, decimal.Decimal) else exc.value,
                              exc.allowed) from None
        except ValueError as exc:
            raise ConfigError(f"file {name}", None, f"a probe table written by xtlens probe ({_reason(exc)})") from None

    return cached(f"{fmt} probe table", name, data, parse)


def allowed_in(col: str) -> str:
    """What the result-table column ``col`` holds, in words (for messages)."""
    if col in RANGES:
        lo, hi = RANGES[col]
        return f"a whole number from {lo:,} to {hi:,}"
    if col in INT_COLUMNS:
        return "a whole number >= 0 (of any size)"
    if col in FLOAT_COLUMNS:
        return "a number >= 0"
    return "text"


def cell_error(exc: CellError, name: str) -> ConfigError:
    """A ``ConfigError`` naming the file, column and row of a value the reader could not take."""
    where = f"file {name}: column {exc.column}" + (f", row {exc.row}" if exc.row is not None else "")
    allowed = allowed_in(exc.column) if exc.column in INT_COLUMNS or exc.column in FLOAT_COLUMNS else exc.allowed
    if exc.allowed == "a whole number" and exc.column in INT_COLUMNS:
        allowed += "; a count is never rounded"
    value = str(exc.value) if isinstance(exc.value, decimal.Decimal) else exc.value  # JSON numbers are read exactly
    return ConfigError(where, value, allowed)


def validate_table(frame: pd.DataFrame, name: str) -> None:
    """Raise ``ConfigError`` naming file, column and row when a row of ``frame`` is not a plausible result:
    required text missing, an unknown status or measurement, batch or sequence length outside ``RANGES``, a
    negative count, size or time, text that is not UTF-8 (a lone surrogate from a JSON escape)."""
    def where(col: str, index: int) -> str:
        return f"file {name}: column {col}, row {index + 1}"

    for col, allowed in (("status", STATUSES), ("measurement", MEASUREMENTS)):
        for i, value in enumerate(frame[col].astype(object).tolist()):
            if value not in allowed:
                raise ConfigError(where(col, i), value, f"one of {', '.join(allowed)}")
    for col in REQUIRED_TEXT:
        for i, value in enumerate(frame[col].astype(object).tolist()):
            if not isinstance(value, str) or not value:
                raise ConfigError(where(col, i), None, "a value (this column is required in every row)")
    for col in NON_NEGATIVE:
        lowest = 1 if col in POSITIVE else 0
        for i, value in enumerate(frame[col].astype(object).tolist()):
            if value is None or value is _NA() or value != value:  # missing or NaN
                if col in POSITIVE:
                    raise ConfigError(where(col, i), None, "a value (this column is required in every row)")
                continue
            if value < lowest or (col in RANGES and value > RANGES[col][1]):
                raise ConfigError(where(col, i), value, allowed_in(col))
    for col in frame.columns:
        if col in NON_NEGATIVE:
            continue
        for i, value in enumerate(frame[col].astype(object).tolist()):
            if isinstance(value, str) and not _utf8(value):
                raise ConfigError(where(col, i), None, "UTF-8 text (it holds a lone surrogate such as \\ud800)")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _NA() -> Any:  # noqa: N802 - reads like the constant it returns
    import pandas as pd

    return pd.NA
