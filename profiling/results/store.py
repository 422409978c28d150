"""Every measured row in one SQLite database: the result store (and the sweep's result cache).

One table, ``results``, holds one ``ProfileRecord`` per row (all its columns, same names) plus where
the row came from:

* ``id`` (increasing), ``stored_at`` (UTC ISO time it was written);
* ``source``: ``local`` (this machine's child process or an in-process sweep), ``ray`` (a Ray task,
  stored by the driver), ``import`` (a file given to ``xtlens results import`` or uploaded on the page)
  or ``json-cache`` (the pre-SQLite ``.xtlens-cache/results/*.json`` files, imported once);
* ``host``: the machine that measured it (the Ray node's host name for Ray rows);
* ``attempts``: how many times the point was started (2 when a Ray worker died and the point was
  retried once);
* ``cache_key``: the sweep cache key (``profiling.run.sweep``) of the point; a point whose rows are all
  ``ok`` is served from here instead of being measured again. Failure rows are stored too, but never
  served as cache.

Probe rows (``profiling.benefit.records.ProbeRecord``, another row type) are kept in the same file, in the
table ``probe_results`` that ``profiling.benefit.probe_store`` adds (through ``connection()`` and
``transaction()``).

Indexed by ``config_key``, the workload (``measurement``, ``batch``, ``seq_len_tokens``, ``dtype``), the
device (``device``, ``device_name``), the versions and ``cache_key``.

Where: ``$XTLENS_DB`` when set, else ``results.sqlite`` in the cache folder (``$XTLENS_CACHE_DIR`` or
``./.xtlens-cache``). The database runs in WAL mode with a 30 s busy timeout and writes in ``BEGIN
IMMEDIATE`` transactions, so the page, a CLI run and a Ray driver can write at once and lose nothing.

A file at that path that is not an SQLite database (corrupt, truncated, something else) or an SQLite
database that is not xtlens's raises ``StoreError`` with the path and what to do; the file is never
written to, moved or replaced.

Integers are stored exactly (SQLite INTEGER is 64-bit; a count beyond 2**63 - 1 is stored as its
decimal digits in a BLOB and read back as an int): the column mapping is the row-table base's (``records.RESULT_ROWS``,
``profiling.results.rowtable.RowSchema.sql_type`` / ``sql_value`` / ``python_value``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xtlens.profiling.errors import ProfileError
from xtlens.profiling.results.records import (
    COLUMNS,
    RESULT_ROWS,
    ProfileRecord,
    frame_from_columns,
    now_iso,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["StoreError", "ResultStore", "db_path", "cache_folder", "open_store", "PROVENANCE", "SOURCES"]

APP_ID = "xtlens-results"
SCHEMA_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"
PROVENANCE: tuple[str, ...] = ("id", "stored_at", "source", "host", "attempts", "cache_key")
SOURCES: tuple[str, ...] = ("local", "ray", "import", "json-cache")


class StoreError(ProfileError):
    """The result database cannot be used (the message says which file, why and what to do)."""


def cache_folder() -> Path:
    """``$XTLENS_CACHE_DIR`` or ``./.xtlens-cache``."""
    return Path(os.environ.get("XTLENS_CACHE_DIR") or ".xtlens-cache")


def db_path() -> Path:
    """``$XTLENS_DB`` or ``<cache folder>/results.sqlite``."""
    env = os.environ.get("XTLENS_DB")
    return Path(env) if env else cache_folder() / "results.sqlite"


_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS results (id INTEGER PRIMARY KEY AUTOINCREMENT, stored_at TEXT NOT NULL, "
    "source TEXT NOT NULL, host TEXT, attempts INTEGER NOT NULL DEFAULT 1, cache_key TEXT, write_id TEXT, "
    + ", ".join(f'"{c}" {RESULT_ROWS.sql_type(c)}' for c in COLUMNS) + ")",
    "CREATE INDEX IF NOT EXISTS results_config ON results (config_key)",
    "CREATE INDEX IF NOT EXISTS results_workload ON results (measurement, batch, seq_len_tokens, dtype)",
    "CREATE INDEX IF NOT EXISTS results_device ON results (device, device_name)",
    "CREATE INDEX IF NOT EXISTS results_versions ON results (torch_version, xtransformers_version)",
    "CREATE INDEX IF NOT EXISTS results_cache ON results (cache_key)",
    "CREATE INDEX IF NOT EXISTS results_time ON results (timestamp)",
]


class ResultStore:
    """The SQLite result database at ``path`` (default ``db_path()``); created when absent.

    Each method opens its own short-lived connection, so one store object is safe to share between
    threads (the Streamlit server) and the file between processes.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else db_path()
        self._json_cache_checked: set[str] = set()  # folders import_json_cache has dealt with (this object)
        self._check_file()
        with self._connect() as con:
            self._init_schema(con)

    # --- opening ---------------------------------------------------------------------------------

    def _refuse(self, why: str) -> StoreError:
        return StoreError(
            f"the result database {self.path} {why}. xtlens has not changed it. Move the file away (or set "
            "XTLENS_DB to another file) and xtlens will start a new database there; results already in the "
            "file can be recovered with the sqlite3 tool's .recover command.")

    def _check_file(self) -> None:
        if self.path.is_dir():
            raise StoreError(f"the result database path {self.path} is a folder; XTLENS_DB must name a file")
        if not self.path.exists() or self.path.stat().st_size == 0:
            if self.path.exists():
                return  # an empty file (e.g. touched): SQLite makes a database of it
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the folder of the result database {self.path}: "
                                 f"{exc.strerror or exc}") from None
            return
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(len(SQLITE_MAGIC))
        except OSError as exc:
            raise StoreError(f"cannot read the result database {self.path}: {exc.strerror or exc}") from None
        if head != SQLITE_MAGIC:
            raise self._refuse("is not an SQLite database (it is corrupt or another kind of file)")
        try:
            con = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
            try:
                check = con.execute("PRAGMA quick_check").fetchone()
                tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                app = None
                if "meta" in tables:
                    got = con.execute("SELECT value FROM meta WHERE key='app'").fetchone()
                    app = got[0] if got else None
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            raise self._refuse(f"is damaged ({exc})") from None
        if check is None or check[0] != "ok":
            raise self._refuse(f"is damaged (SQLite's integrity check says: {check[0] if check else 'nothing'})")
        user_tables = {t for t in tables if not t.startswith("sqlite_")}
        if app != APP_ID and user_tables:
            raise self._refuse(f"is an SQLite database of another program (tables: {', '.join(sorted(user_tables))}), "
                               "not xtlens's result store")

    def _connect(self) -> sqlite3.Connection:
        try:
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            con.execute("PRAGMA busy_timeout = 30000")
            mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise self._refuse(f"cannot be opened ({exc})") from None
        if str(mode).lower() != "wal":  # e.g. a file system without shared memory: still correct, slower
            con.execute("PRAGMA journal_mode = DELETE")
        con.execute("PRAGMA synchronous = NORMAL")
        return con

    def connection(self) -> sqlite3.Connection:
        """A new connection to this database (WAL, busy timeout); the caller closes it. For tables kept
        beside ``results`` in the same file (``profiling.benefit.probe_store``)."""
        return self._connect()

    def transaction(self):
        """``with store.transaction() as con:`` one ``BEGIN IMMEDIATE`` write transaction (committed on exit)."""
        return self._write()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        con = self._connect()
        try:
            for attempt in range(50):
                try:
                    con.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as exc:  # "database is locked" beyond the busy timeout
                    if "locked" not in str(exc) or attempt == 49:
                        raise
                    time.sleep(0.05 * (attempt + 1))
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    def _init_schema(self, con: sqlite3.Connection) -> None:
        got = con.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
        if got is not None:
            version = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if version is not None and int(version[0]) > SCHEMA_VERSION:
                raise StoreError(f"the result database {self.path} was written by a newer xtlens (schema "
                                 f"{version[0]} > {SCHEMA_VERSION}); upgrade xtlens or set XTLENS_DB to another file")
            self._add_later_columns(con)
            return
        with self._write() as w:
            for stmt in _SCHEMA:
                w.execute(stmt)
            w.execute("INSERT OR IGNORE INTO meta VALUES ('app', ?)", (APP_ID,))
            w.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            w.execute("INSERT OR IGNORE INTO meta VALUES ('created_at', ?)", (now_iso(),))

    def _add_later_columns(self, con: sqlite3.Connection) -> None:
        """A database made before a column joined ``records.COLUMNS`` gets it (empty for its old rows)."""
        have = {r[1] for r in con.execute("PRAGMA table_info(results)")}
        missing = [c for c in COLUMNS if c not in have]
        if missing:
            with self._write() as w:
                for c in missing:
                    w.execute(f'ALTER TABLE results ADD COLUMN "{c}" {RESULT_ROWS.sql_type(c)}')

    # --- writing ---------------------------------------------------------------------------------

    def add(self, rows: Iterable[ProfileRecord], *, source: str = "local", host: str | None = None,
            attempts: int = 1, cache_key: str | None = None) -> list[int]:
        """Store ``rows`` in one transaction; returns their ids."""
        if source not in SOURCES:
            raise ValueError(f"source = {source!r} is not allowed: one of {', '.join(SOURCES)}")
        rows = list(rows)
        if not rows:
            return []
        host = socket.gethostname() if host is None else host
        stamp, write_id = now_iso(), uuid.uuid4().hex
        cols = ["stored_at", "source", "host", "attempts", "cache_key", "write_id", *COLUMNS]
        sql = f"INSERT INTO results ({', '.join(chr(34) + c + chr(34) for c in cols)}) VALUES ({', '.join('?' * len(cols))})"
        ids = []
        with self._write() as con:
            for row in rows:
                data = row.to_dict()
                cur = con.execute(sql, [stamp, source, host, attempts, cache_key, write_id,
                                        *(RESULT_ROWS.sql_value(c, data[c]) for c in COLUMNS)])
                ids.append(int(cur.lastrowid))
        return ids

    def import_once(self, rows: Iterable[ProfileRecord], content: bytes, *, name: str = "") -> list[int] | None:
        """Store the rows of a file unless a file with the same bytes was imported before (then None).

        A page re-runs its script on every click, and an uploaded file stays in its uploader: keyed by the
        SHA-256 of its bytes, each file's rows are stored once."""
        import hashlib

        marker = f"imported:{hashlib.sha256(content).hexdigest()}"
        rows = list(rows)
        with self._write() as con:
            if con.execute("SELECT 1 FROM meta WHERE key = ?", (marker,)).fetchone() is not None:
                return None
            con.execute("INSERT INTO meta VALUES (?, ?)", (marker, json.dumps({"file": name, "rows": len(rows),
                                                                                "at": now_iso()})))
        return self.add(rows, source="import", host="")

    def forget_cache(self) -> int:
        """Stop serving every stored point as cache (rows stay, as history); returns how many rows it touched."""
        with self._write() as con:
            return con.execute("UPDATE results SET cache_key = NULL WHERE cache_key IS NOT NULL").rowcount

    # --- reading ---------------------------------------------------------------------------------

    def cached(self, cache_key: str) -> list[ProfileRecord] | None:
        """The rows of the latest run of the point ``cache_key`` when all of them are ``ok``, else None."""
        con = self._connect()
        try:
            last = con.execute("SELECT write_id FROM results WHERE cache_key = ? ORDER BY id DESC LIMIT 1",
                               (cache_key,)).fetchone()
            if last is None:
                return None
            got = con.execute(f"SELECT {', '.join(chr(34) + c + chr(34) for c in COLUMNS)} FROM results "
                              "WHERE cache_key = ? AND write_id IS ? ORDER BY id", (cache_key, last[0])).fetchall()
        finally:
            con.close()
        rows = [ProfileRecord(**{c: RESULT_ROWS.python_value(c, v) for c, v in zip(COLUMNS, r, strict=True)}) for r in got]
        if not rows or any(r.status != "ok" for r in rows):
            return None
        return rows

    def count(self) -> int:
        con = self._connect()
        try:
            return int(con.execute("SELECT COUNT(*) FROM results").fetchone()[0])
        finally:
            con.close()

    def query(self, *, ids: Sequence[int] | None = None, config: str | None = None, device: str | None = None,
              dtype: str | None = None, seq_len: int | None = None, measurement: str | None = None,
              status: str | None = None, since: str | None = None, until: str | None = None,
              limit: int | None = None) -> pd.DataFrame:
        """Stored rows, newest first: the canonical columns (``records.COLUMNS``) then ``PROVENANCE``.

        ``config`` matches a config key prefix or a substring of the config name; ``device`` a substring of
        the device or device name; ``since`` / ``until`` compare with the measurement's ``timestamp``
        (ISO text: ``2026-11-26`` means from/through that day).
        """
        where, args = [], []
        if ids is not None:
            ids = [int(i) for i in ids]
            if not ids:
                ids = [-1]
            where.append(f"id IN ({', '.join('?' * len(ids))})")
            args += ids
        if config:
            where.append("(config_key LIKE ? OR config_name LIKE ?)")
            args += [f"{config}%", f"%{config}%"]
        if device:
            where.append("(device LIKE ? OR device_name LIKE ?)")
            args += [f"%{device}%", f"%{device}%"]
        for col, value in (("dtype", dtype), ("seq_len_tokens", seq_len), ("measurement", measurement),
                           ("status", status)):
            if value is not None and value != "":
                where.append(f"{col} = ?")
                args.append(value)
        if since:
            where.append("timestamp >= ?")
            args.append(since)
        if until:
            where.append("timestamp < ?")
            args.append(until + "\uffff" if len(until) <= 10 else until)  # a day includes its whole date
        sql = (f"SELECT {', '.join(chr(34) + c + chr(34) for c in (*COLUMNS, *PROVENANCE))} FROM results"
               + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY id DESC"
               + (f" LIMIT {int(limit)}" if limit else ""))
        con = self._connect()
        try:
            got = con.execute(sql, args).fetchall()
        finally:
            con.close()
        return _frame(got)

    def summary(self) -> pd.DataFrame:
        """One line per (config, measurement, device, dtype): how many rows, lengths, failures, first/last time."""
        import pandas as pd

        sql = ("SELECT config_name, config_key, measurement, device_name, dtype, COUNT(*) AS rows, "
               "SUM(status != 'ok') AS failed, MIN(seq_len_tokens) AS min_seq_len_tokens, "
               "MAX(seq_len_tokens) AS max_seq_len_tokens, GROUP_CONCAT(DISTINCT source) AS sources, "
               "MIN(timestamp) AS first, MAX(timestamp) AS last FROM results "
               "GROUP BY config_key, config_name, measurement, device_name, dtype ORDER BY last DESC")
        con = self._connect()
        try:
            cur = con.execute(sql)
            names = [d[0] for d in cur.description]
            got = cur.fetchall()
        finally:
            con.close()
        return pd.DataFrame(got, columns=names)

    # --- the pre-SQLite JSON cache -----------------------------------------------------------------

    def import_json_cache(self, root: Path) -> int:
        """Import ``root/<what>/<key>.json`` (the old per-point cache) once per folder; returns rows added.

        The files are left where they are; ``meta`` remembers the folder so a second call does nothing, and
        this object remembers it too, so a second call in the same process does not even ask the database.
        """
        from xtlens.profiling.results.records import records_from_json

        root = Path(root)
        marker = f"json_cache_imported:{root.resolve()}"
        if marker in self._json_cache_checked or not root.is_dir():
            return 0
        added = self._import_json_folder(root, marker, records_from_json)
        self._json_cache_checked.add(marker)
        return added

    def _import_json_folder(self, root: Path, marker: str, records_from_json) -> int:
        con = self._connect()
        try:
            if con.execute("SELECT 1 FROM meta WHERE key = ?", (marker,)).fetchone() is not None:
                return 0
        finally:
            con.close()
        added = 0
        with self._write() as con:
            if con.execute("SELECT 1 FROM meta WHERE key = ?", (marker,)).fetchone() is not None:
                return 0  # another process imported it meanwhile
            cols = ["stored_at", "source", "host", "attempts", "cache_key", "write_id", *COLUMNS]
            sql = (f"INSERT INTO results ({', '.join(chr(34) + c + chr(34) for c in cols)}) "
                   f"VALUES ({', '.join('?' * len(cols))})")
            for path in sorted(root.glob("*/*.json")):
                try:
                    rows = records_from_json(path.read_text())
                except (OSError, ValueError, TypeError, AttributeError, RecursionError, MemoryError):
                    continue  # a torn, foreign or deeply nested file: skipped, left in place
                for row in rows:
                    data = row.to_dict()
                    con.execute(sql, [now_iso(), "json-cache", "", 1, path.stem, f"json:{path}",
                                      *(RESULT_ROWS.sql_value(c, data[c]) for c in COLUMNS)])
                    added += 1
            con.execute("INSERT INTO meta VALUES (?, ?)", (marker, json.dumps({"rows": added, "at": now_iso()})))
        return added


def _frame(got: list[tuple]) -> pd.DataFrame:
    import pandas as pd

    n = len(COLUMNS)
    columns: dict[str, list[Any]] = {c: [RESULT_ROWS.python_value(c, r[i]) for r in got] for i, c in enumerate(COLUMNS)}
    frame = frame_from_columns(columns)
    for j, name in enumerate(PROVENANCE):
        values = [r[n + j] for r in got]
        if name in ("id", "attempts"):
            frame[name] = pd.array(values, dtype="Int64")
        else:
            frame[name] = pd.Series(values, dtype=object).astype("string").array
    return frame


_STORES: dict[str, ResultStore] = {}


def open_store(path: str | Path | None = None) -> ResultStore:
    """The store at ``path`` (default ``db_path()``), opened and checked once per process and path."""
    resolved = str(Path(path if path is not None else db_path()).resolve())
    store = _STORES.get(resolved)
    if store is None or not Path(resolved).exists():
        store = ResultStore(resolved)
        _STORES[resolved] = store
    return store
