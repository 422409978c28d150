"""The one boundary for uploaded result tables and session files: size cap, parse, validate, cache by content.

Everything a user uploads (the Export tab's result tables and session files, ``xtlens results import``)
passes ``read_table_upload`` / ``cached``: a file larger than ``MAX_UPLOAD_BYTES`` is refused before it is
parsed; any parse failure (bad CSV, non-UTF-8 text, JSON nested too deep, an integer column holding
``Infinity`` or ``1e400``, an unsigned Parquet column, ...) becomes a ``ConfigError`` naming the file and, when
known, the column; and a table is validated before anything uses it (the canonical columns, a known ``status``
and ``measurement``, positive batch and sequence length, non-negative counts, sizes and times). Parsed files
are kept by the SHA-256 of their content (``cached``), so a rerun of the page does not parse a file again;
callers get their own copy of a cached table.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from xtlens.core.config import ConfigError
from xtlens.profiling.results.records import FLOAT_COLUMNS, INT_COLUMNS, MEASUREMENTS, STATUSES

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MAX_UPLOAD_BYTES", "read_table_upload", "validate_table", "cached", "check_size"]

log = logging.getLogger(__name__)

#: Largest uploaded table or session file (bytes). ``xtlens profile`` tables are a few MB at most.
MAX_UPLOAD_BYTES = 50 * 2**20
_CACHE_ENTRIES = 16

#: Integer and float columns that can never be negative (counts, sizes, times, rates).
NON_NEGATIVE = tuple(c for c in (*INT_COLUMNS, *FLOAT_COLUMNS))
#: Columns every row must fill.
REQUIRED_TEXT = ("config_json", "measurement", "phase", "component", "dtype", "device", "status")
POSITIVE = ("batch", "seq_len_tokens")

T = TypeVar("T")
_cache: OrderedDict[str, tuple[bool, Any]] = OrderedDict()
_lock = threading.Lock()


def check_size(name: str, data: bytes, limit: int | None = None) -> None:
    """Refuse ``data`` larger than ``limit`` (default ``MAX_UPLOAD_BYTES``) before anything parses it."""
    limit = MAX_UPLOAD_BYTES if limit is None else limit
    if len(data) > limit:
        raise ConfigError(f"file {name}", None, f"at most {limit / 2**20:g} MiB (it has {len(data) / 2**20:,.1f} MiB)")


def _copy(value: Any) -> Any:
    copier = getattr(value, "copy", None)
    return copier() if callable(copier) else value


def cached(kind: str, name: str, data: bytes, parse: Callable[[bytes], T]) -> T:
    """``parse(data)`` once per (kind, content): later calls with the same bytes return a copy of the result, or
    raise the same ``ConfigError`` again, without parsing. Every other exception of ``parse`` becomes a
    ``ConfigError`` naming the file (logged with its traceback on the server, never shown)."""
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
            # the reason on the console, the traceback only at debug level (a CLI prints warnings on stderr)
            log.warning("upload %r could not be read: %s", name, _reason(exc))
            log.debug("upload %r could not be read", name, exc_info=True)
            hit = (False, (f"file {name}", None, f"a readable {kind} ({_reason(exc)})"))
        with _lock:
            _cache[key] = hit
            while len(_cache) > _CACHE_ENTRIES:
                _cache.popitem(last=False)
    ok, value = hit
    if not ok:
        field, shown, allowed = value
        raise ConfigError(field if field.startswith("file ") else f"file {name}: {field}", shown, allowed)
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
        except ValueError as exc:
            raise ConfigError(f"file {name}", None, f"a result table written by xtlens ({_reason(exc)})") from None
        validate_table(frame, name)
        return frame

    return cached(f"{fmt} table", name, data, parse)


def validate_table(frame: pd.DataFrame, name: str) -> None:
    """Raise ``ConfigError`` naming file, column and row when a row of ``frame`` is not a plausible result:
    required text missing, an unknown status or measurement, batch or sequence length < 1, a negative count."""
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
            if value < lowest:
                raise ConfigError(where(col, i), value, f"a number >= {lowest}")


def _NA() -> Any:  # noqa: N802 - reads like the constant it returns
    import pandas as pd

    return pd.NA
