"""Stored latency calibrations (``core.calibration.Calibration``) in the result store's SQLite file.

A table ``calibrations`` beside ``results`` in the result database (``profiling.results.store.db_path()``: opened,
checked, locked and written through ``ResultStore``, so a file that is not xtlens's, is damaged or cannot be
written is a ``StoreError`` naming the file and what to do). One row per calibration:

* ``id`` (increasing), ``stored_at`` (UTC ISO time it was written), ``host`` (the machine that stored it);
* the identity columns, indexed: ``device`` (``cpu`` / ``cuda``), ``device_name``, ``name_key`` (the device name
  lower-cased without spaces: what ``latest_calibration`` matches), ``torch_version``, ``xtransformers_version``,
  ``measured_at``; ``wall_s``;
* ``calibration_json``: the whole calibration (``Calibration.to_json``).

``calibration_rows`` turns one calibration into a tidy table (one row per measured point, unit-suffixed columns)
for the page and for export.
"""

from __future__ import annotations

import socket
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from xtlens.core.calibration import Calibration
from xtlens.profiling.results.records import now_iso
from xtlens.profiling.results.store import ResultStore, StoreError, db_path, open_store

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ready", "save_calibration", "stored_calibrations", "latest_calibration", "calibration_rows",
           "calibration_summary", "name_key", "ROW_COLUMNS"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS calibrations (id INTEGER PRIMARY KEY AUTOINCREMENT, stored_at TEXT NOT NULL, "
    "host TEXT, device TEXT NOT NULL, device_name TEXT NOT NULL, name_key TEXT NOT NULL, torch_version TEXT, "
    "xtransformers_version TEXT, measured_at TEXT NOT NULL, wall_s REAL, calibration_json TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS calibrations_name ON calibrations (name_key, measured_at)",
    "CREATE INDEX IF NOT EXISTS calibrations_device ON calibrations (device, measured_at)",
)
_READY: set[str] = set()
_LOCK = threading.Lock()

#: the columns of ``calibration_rows``, in order
ROW_COLUMNS = ("device", "device_name", "torch_version", "xtransformers_version", "measured_at", "kind", "dtype",
               "m", "n", "k", "backend", "batch", "heads", "kv_heads", "head_dim", "seq_len_tokens", "mask",
               "seconds", "backward_seconds", "flops", "flops_per_s", "bytes_per_s", "float32_seconds",
               "slowdown_vs_float32")


def name_key(name: str) -> str:
    """``name`` lower-cased without white space: how device names are matched."""
    return "".join(str(name).lower().split())


def ready(path: str | Path | None = None) -> ResultStore:
    """The result store at ``path`` (default ``db_path()``) with the ``calibrations`` table (created once per file
    and process); a store that cannot be written is a ``StoreError`` here, before anything is measured."""
    store = open_store(path)
    key = str(store.path.resolve())
    with _LOCK:
        if key not in _READY or not store.path.exists():
            with store.transaction() as con:
                for stmt in _SCHEMA:
                    con.execute(stmt)
            _READY.add(key)
    return store


def save_calibration(cal: Calibration, path: str | Path | None = None) -> None:
    """Store ``cal`` in the result database at ``path`` (default ``db_path()``), in one transaction."""
    store = ready(path)
    with store.transaction() as con:
        con.execute("INSERT INTO calibrations (stored_at, host, device, device_name, name_key, torch_version, "
                    "xtransformers_version, measured_at, wall_s, calibration_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (now_iso(), socket.gethostname(), cal.device, cal.device_name, name_key(cal.device_name),
                     cal.torch_version, cal.xtransformers_version, cal.measured_at, float(cal.wall_s), cal.to_json()))


def _rows(path: str | Path | None, where: str = "", args: tuple = ()) -> list[Calibration]:
    resolved = Path(path) if path is not None else db_path()
    if not resolved.exists():
        return []  # nothing calibrated yet (and nothing made: reading never creates the database)
    store = open_store(resolved, write=False)
    if not store.readonly:
        ready(resolved)
    con = store.connection()
    try:
        have = con.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='calibrations'").fetchone()
        if have is None:
            return []
        got = con.execute(f"SELECT id, calibration_json FROM calibrations {where} ORDER BY measured_at DESC, id DESC",
                          args).fetchall()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the calibrations in the result database {store.path}: {exc} (a table edited "
                         "by hand?). xtlens has not changed it; set XTLENS_DB to another file to start a new one") from None
    finally:
        con.close()
    out = []
    for row_id, text in got:
        try:
            out.append(Calibration.from_json(text))
        except (ValueError, TypeError, KeyError) as exc:
            raise StoreError(f"the result database {store.path} holds a damaged calibration (table calibrations, id "
                             f"{row_id}: {str(exc)[:160]}); delete that row or set XTLENS_DB to another file") from None
    return out


def stored_calibrations(path: str | Path | None = None) -> list[Calibration]:
    """Every stored calibration, newest (``measured_at``) first; [] when the database does not exist yet."""
    return _rows(path)


def latest_calibration(name: str, path: str | Path | None = None) -> Calibration | None:
    """The newest stored calibration for ``name``: ``cpu`` / ``cuda`` = the newest of that device kind; otherwise
    the newest whose device name equals ``name`` ignoring case and spaces, else the newest whose device name
    contains it (``h200`` finds "NVIDIA H200") or whose GPU family (``core.hardware.gpu_family``) is it (``H200
    SXM``). None when none matches."""
    key = name_key(name)
    if not key:
        return None
    if key in ("cpu", "cuda"):
        got = _rows(path, "WHERE device = ?", (key,))
        return got[0] if got else None
    every = _rows(path)
    from xtlens.core.hardware import gpu_family

    for match in (lambda c: name_key(c.device_name) == key,
                  lambda c: key in name_key(c.device_name),
                  lambda c: name_key(gpu_family(c.device_name) or "") == key):
        for cal in every:
            if match(cal):
                return cal
    return None


def _attention_flops(p) -> int:
    """``4 b h n^2 d`` (Q K^T and P V, 2 FLOPs per multiply-add) for a dense mask, half that for a causal one (the
    masked half is skipped by the fused kernels)."""
    full = 4 * p.batch * p.heads * p.seq_len**2 * p.head_dim
    return full // 2 if p.mask == "causal" else full


def calibration_rows(cal: Calibration) -> pd.DataFrame:
    """One tidy row per measured point of ``cal`` (columns ``ROW_COLUMNS``), ``kind`` one of ``launch``,
    ``module_overhead``, ``elementwise`` (``bytes_per_s``), ``matmul`` (``m, n, k``, ``flops = 2 m n k``),
    ``attention`` (``flops``: ``4 b h n^2 d``, half for causal), ``slow_dtype`` (``m = n = k`` = its size,
    ``slowdown_vs_float32``). Empty cells are None."""
    import pandas as pd

    ident = dict(device=cal.device, device_name=cal.device_name, torch_version=cal.torch_version,
                 xtransformers_version=cal.xtransformers_version, measured_at=cal.measured_at)
    rows: list[dict] = [dict(kind="launch", seconds=cal.launch_s),
                        dict(kind="module_overhead", seconds=cal.module_overhead_s)]
    rows += [dict(kind="elementwise", dtype=d, bytes_per_s=v) for d, v in cal.elementwise_bytes_per_s.items()]
    rows += [dict(kind="matmul", dtype=p.dtype, m=p.m, n=p.n, k=p.k, seconds=p.seconds, flops=p.flops,
                  flops_per_s=p.flops_per_s) for p in cal.matmul]
    for p in cal.attention:
        flops = _attention_flops(p)
        rows.append(dict(kind="attention", dtype=p.dtype, backend=p.backend, batch=p.batch, heads=p.heads,
                         kv_heads=p.kv_heads, head_dim=p.head_dim, seq_len_tokens=p.seq_len, mask=p.mask,
                         seconds=p.seconds, backward_seconds=p.backward_seconds, flops=flops,
                         flops_per_s=flops / p.seconds if p.seconds > 0 else None))
    rows += [dict(kind="slow_dtype", dtype=s.dtype, m=s.size, n=s.size, k=s.size, seconds=s.seconds,
                  flops=2 * s.size**3, flops_per_s=2 * s.size**3 / s.seconds if s.seconds > 0 else None,
                  float32_seconds=s.float32_seconds, slowdown_vs_float32=s.slowdown_vs_float32)
             for s in cal.slow_dtypes]
    frame = pd.DataFrame([{c: {**ident, **r}.get(c) for c in ROW_COLUMNS} for r in rows], columns=list(ROW_COLUMNS))
    for c in ("m", "n", "k", "batch", "heads", "kv_heads", "head_dim", "seq_len_tokens", "flops"):
        frame[c] = frame[c].astype("Int64")
    for c in ("seconds", "backward_seconds", "flops_per_s", "bytes_per_s", "float32_seconds", "slowdown_vs_float32"):
        frame[c] = frame[c].astype("float64")
    return frame



def _rate(value: float, unit: str) -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:,.1f} {prefix}{unit}"
    return f"{value:,.1f} {unit}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:,.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:,.2f} ms"
    return f"{seconds * 1e6:,.2f} us"


def calibration_summary(cal: Calibration) -> str:
    """A few lines for a person: identity, overheads, bandwidth, best matrix-product rate per dtype, attention per
    backend, the slow-dtype sentences (``SlowDtype.message``) and the notes."""
    lines = [f"calibration: {cal.key}",
             f"device {cal.device}, {cal.threads} thread(s), measured in {cal.wall_s:.1f} s",
             f"launch (per op, the floor of every op)   {_duration(cal.launch_s)}",
             f"module call overhead (nn.Module vs op)   {_duration(cal.module_overhead_s)}"]
    if cal.elementwise_bytes_per_s:
        lines.append("element-wise bandwidth (add, 3 operands) " + ", ".join(
            f"{d} {_rate(v, 'B/s')}" for d, v in cal.elementwise_bytes_per_s.items()))
    for dtype in cal.dtypes():
        pts = [p for p in cal.matmul if p.dtype == dtype]
        best = max(pts, key=lambda p: p.flops_per_s)
        lines.append(f"matrix products {dtype:<9} best {_rate(best.flops_per_s, 'FLOP/s')} at ({best.m} x {best.k}) @ "
                     f"({best.k} x {best.n}); {len(pts)} shape(s), {_rate(min(p.flops_per_s for p in pts), 'FLOP/s')} "
                     "at the slowest")
    groups: dict[tuple[str, str, str], list] = {}
    for p in cal.attention:
        groups.setdefault((p.backend, p.dtype, p.mask), []).append(p)
    for (backend, dtype, mask), pts in groups.items():
        top = max(pts, key=lambda p: p.seq_len)
        lines.append(f"attention {backend} {dtype} {mask}: {', '.join(str(p.seq_len) for p in pts)} tokens; at "
                     f"{top.seq_len}: forward {_duration(top.seconds)}, forward + backward "
                     f"{_duration(top.backward_seconds)}")
    lines += [s.message() for s in cal.slow_dtypes]
    lines += [f"note: {n}" for n in cal.notes]
    return "\n".join(lines)
