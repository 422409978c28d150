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
written to, moved or replaced. Opening also checks that the file and its folder can be written (a
read-only file or folder is named as such, before anything is measured), and a hand-edited store (a
``schema_version`` that is not a number, no ``results`` table, a value its column cannot hold) is a
``StoreError`` naming the table, the column and the row.

Every write is one transaction: ``import_once`` writes a file's "imported" mark and its rows together
or not at all. A write that fails (the disk is full or the process's file-size limit is reached, the
file or folder is read-only, another writer holds the lock for more than ``LOCK_TIMEOUT_S``) is rolled
back and raised as one ``StoreError`` naming the file and the cause. Measured rows that could not be
stored are kept in a spool (``spool_rows``: one JSON file per point in ``spool_folders()``, the first
that can be written: ``$XTLENS_SPOOL_DIR``, ``<cache folder>/spool``, ``<temp>/xtlens-spool-<uid>``);
``open_store`` stores the spooled rows of its database (then deletes their files) the next time the
database can be written.

Integers are stored exactly (SQLite INTEGER is 64-bit; a count beyond 2**63 - 1 is stored as its
decimal digits in a BLOB and read back as an int): the column mapping is the row-table base's (``records.RESULT_ROWS``,
``profiling.results.rowtable.RowSchema.sql_type`` / ``sql_value`` / ``python_value``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import sqlite3
import tempfile
import threading
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

__all__ = ["StoreError", "ResultStore", "db_path", "cache_folder", "open_store", "PROVENANCE", "SOURCES",
           "spool_folders", "spool_rows", "store_spool", "not_writable", "LOCK_TIMEOUT_S"]

APP_ID = "xtlens-results"
SCHEMA_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"
PROVENANCE: tuple[str, ...] = ("id", "stored_at", "source", "host", "attempts", "cache_key")
SOURCES: tuple[str, ...] = ("local", "ray", "import", "json-cache")
LOCK_TIMEOUT_S = 30.0  # how long a write waits for another writer's lock before it is a StoreError


class StoreError(ProfileError):
    """The result database cannot be used (the message says which file, why and what to do)."""


def cache_folder() -> Path:
    """``$XTLENS_CACHE_DIR`` or ``./.xtlens-cache``."""
    return Path(os.environ.get("XTLENS_CACHE_DIR") or ".xtlens-cache")


def db_path() -> Path:
    """``$XTLENS_DB`` or ``<cache folder>/results.sqlite``."""
    env = os.environ.get("XTLENS_DB")
    return Path(env) if env else cache_folder() / "results.sqlite"


def _os_cause(exc: OSError) -> str:
    if exc.errno == errno.EROFS:
        return "it is on a read-only file system"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied (no write permission, or the immutable attribute: chattr -i)"
    return exc.strerror or str(exc)


def not_writable(path: Path) -> str | None:
    """Why the database ``path`` cannot be written (its folder, for SQLite's journal files, or the file itself),
    or None when both can be. Tried for real (a file made and removed in the folder, the file opened for
    writing without changing it): permission bits, the immutable attribute and read-only mounts all count."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, probe = tempfile.mkstemp(prefix=".xtlens-write-check-", dir=folder)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None  # made when the database is created (a failure there is its own message)
        return f"its folder {folder} is read-only ({_os_cause(exc)}); SQLite writes its journal files beside the database"
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    if path.exists() and not path.is_dir():
        try:
            with open(path, "r+b"):
                pass
        except OSError as exc:
            return f"the file is read-only ({_os_cause(exc)})"
    return None


def _disk_note(path: Path) -> str:
    """What may have filled: the file-size limit of this process and the free space of the folder."""
    notes = []
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY:
            notes.append(f"this process's file-size limit (ulimit -f) is {limit:,} bytes")
    except (ImportError, OSError, ValueError):
        pass
    with contextlib.suppress(OSError):
        notes.append(f"{shutil.disk_usage(path.parent if str(path.parent) else '.').free:,} bytes free on its disk")
    return "; ".join(notes)


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

    def __init__(self, path: str | Path | None = None, *, lock_timeout_s: float = LOCK_TIMEOUT_S,
                 readonly: bool = False):
        self.path = Path(path) if path is not None else db_path()
        self.lock_timeout_s = float(lock_timeout_s)
        self.readonly = readonly  # opened for reading only (``open_store(write=False)`` of a read-only store)
        self.spool_stored = 0  # rows of the spool stored when open_store opened this store
        self._json_cache_checked: set[str] = set()  # folders import_json_cache has dealt with (this object)
        if readonly and not self.path.is_file():
            raise StoreError(f"there is no result database at {self.path} (and it cannot be made: "
                             f"{not_writable(self.path) or 'opened read-only'})")
        if not readonly and not self.path.is_dir():
            why = not_writable(self.path)
            if why is not None:
                raise StoreError(f"cannot write to the result database {self.path}: {why}. Nothing was measured or "
                                 "changed. Make it writable, or set XTLENS_DB (or --db) to a file in a writable folder")
        self._check_file()
        con = self._connect()
        try:
            self._init_schema(con)
        finally:
            con.close()

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
            con = sqlite3.connect(self._ro_uri(), uri=True, timeout=30)
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

    def write_error(self, exc: sqlite3.Error) -> StoreError:
        """The ``StoreError`` for a failed write: the file and the cause (disk full or the file-size limit,
        read-only, locked beyond the timeout), and what to do."""
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        text = str(exc)
        if primary == sqlite3.SQLITE_FULL or "full" in text:
            note = _disk_note(self.path)
            cause = f"the disk is full{f' ({note})' if note else ''}. Free some space (or raise the limit) and run again"
        elif primary == sqlite3.SQLITE_IOERR or "I/O" in text:
            note = _disk_note(self.path)
            cause = (f"a write failed ({text}): the disk is full or the file-size limit was reached"
                     f"{f' ({note})' if note else ''}. Free some space (or raise the limit) and run again")
        elif primary in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM) or "readonly" in text:
            why = not_writable(self.path) or f"it is read-only ({text})"
            cause = f"{why}. Make it writable, or set XTLENS_DB (or --db) to a file in a writable folder"
        elif primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in text:
            cause = (f"another process (xtlens profile, the dashboard, a Ray driver) held its lock for more than "
                     f"{self.lock_timeout_s:g} s. Run again when it has finished")
        else:
            cause = f"SQLite says: {text}"
        return StoreError(f"cannot write to the result database {self.path}: {cause}; nothing of this write was stored")

    def _ro_uri(self) -> str:
        """The read-only URI of the file; ``immutable`` where SQLite could not make its shared-memory file (a
        read-only folder without one), which a read-only store's readers need."""
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        shm = self.path.with_name(self.path.name + "-shm")
        if self.readonly and not shm.exists() and not_writable(self.path.with_name(".xtlens-folder-check")):
            uri += "&immutable=1"
        return uri

    def _connect(self) -> sqlite3.Connection:
        con = None
        if self.readonly:
            try:
                con = sqlite3.connect(self._ro_uri(), uri=True, timeout=self.lock_timeout_s, isolation_level=None)
                con.execute(f"PRAGMA busy_timeout = {int(self.lock_timeout_s * 1000)}")
            except sqlite3.DatabaseError as exc:
                if con is not None:
                    con.close()
                raise self._refuse(f"cannot be opened for reading ({exc})") from None
            return con
        try:
            con = sqlite3.connect(self.path, timeout=self.lock_timeout_s, isolation_level=None)
            con.execute(f"PRAGMA busy_timeout = {int(self.lock_timeout_s * 1000)}")
            mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":  # e.g. a file system without shared memory: still correct, slower
                con.execute("PRAGMA journal_mode = DELETE")
            con.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as exc:
            if con is not None:
                con.close()
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
                raise self._refuse(f"cannot be opened ({exc})") from None
            raise self.write_error(exc) from None
        return con

    def connection(self) -> sqlite3.Connection:
        """A new connection to this database (WAL, busy timeout); the caller closes it. For tables kept
        beside ``results`` in the same file (``profiling.benefit.probe_store``)."""
        return self._connect()

    def transaction(self):
        """``with store.transaction() as con:`` one ``BEGIN IMMEDIATE`` write transaction (committed on exit)."""
        return self._write()

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A connection for reading; an SQLite error (a hand-edited table, a lock held too long) is a ``StoreError``."""
        con = self._connect()
        try:
            yield con
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise self.write_error(exc) from None
            raise StoreError(f"cannot read the result database {self.path}: {exc} (a table edited by hand?). "
                             "xtlens has not changed it; set XTLENS_DB to another file to start a new one") from None
        finally:
            con.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed on exit, rolled back on any error (a rollback that
        fails, or finds the transaction already undone by SQLite, never hides the first error); an SQLite
        error is raised as ``write_error``'s ``StoreError``."""
        con = self._connect()
        try:
            deadline = time.monotonic() + self.lock_timeout_s
            attempt = 0
            while True:
                try:
                    con.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as exc:  # "database is locked": sometimes without the busy wait
                    if "locked" not in str(exc) or time.monotonic() >= deadline:
                        raise
                    attempt += 1
                    time.sleep(min(0.05 * attempt, 1.0))
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                if con.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        con.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self.write_error(exc) from None
        finally:
            with contextlib.suppress(sqlite3.Error):
                con.close()

    def _init_schema(self, con: sqlite3.Connection) -> None:
        got = con.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
        if got is not None:
            version = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            try:
                number = None if version is None else int(str(version[0]).strip())
            except ValueError:
                raise self._refuse(f"is damaged: table meta, key schema_version holds {str(version[0])[:40]!r}, not "
                                   f"a whole number (this xtlens writes {SCHEMA_VERSION})") from None
            if number is not None and number > SCHEMA_VERSION:
                raise StoreError(f"the result database {self.path} was written by a newer xtlens (schema "
                                 f"{version[0]} > {SCHEMA_VERSION}); upgrade xtlens or set XTLENS_DB to another file")
            if con.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='results'").fetchone() is None:
                raise self._refuse("is damaged: it has xtlens's table meta but no table results (dropped or renamed "
                                   "by hand?)")
            if not self.readonly:
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
        with self._write() as con:
            return self._insert(con, rows, source=source, host=host, attempts=attempts, cache_key=cache_key)

    @staticmethod
    def _insert(con: sqlite3.Connection, rows: list[ProfileRecord], *, source: str, host: str | None,
                attempts: int, cache_key: str | None) -> list[int]:
        """Insert ``rows`` in the caller's transaction; their ids."""
        host = socket.gethostname() if host is None else host
        stamp, write_id = now_iso(), uuid.uuid4().hex
        cols = ["stored_at", "source", "host", "attempts", "cache_key", "write_id", *COLUMNS]
        sql = f"INSERT INTO results ({', '.join(chr(34) + c + chr(34) for c in cols)}) VALUES ({', '.join('?' * len(cols))})"
        ids = []
        for row in rows:
            data = row.to_dict()
            cur = con.execute(sql, [stamp, source, host, attempts, cache_key, write_id,
                                    *(RESULT_ROWS.sql_value(c, data[c]) for c in COLUMNS)])
            ids.append(int(cur.lastrowid))
        return ids

    def import_once(self, rows: Iterable[ProfileRecord], content: bytes, *, name: str = "") -> list[int] | None:
        """Store the rows of a file unless a file with the same bytes was imported before (then None).

        A page re-runs its script on every click, and an uploaded file stays in its uploader: keyed by the
        SHA-256 of its bytes, each file's rows are stored once. The mark and the rows are one transaction:
        a write that fails (disk full, read-only) leaves neither, so the file can be imported again."""
        import hashlib

        marker = f"imported:{hashlib.sha256(content).hexdigest()}"
        rows = list(rows)
        with self._write() as con:
            if con.execute("SELECT 1 FROM meta WHERE key = ?", (marker,)).fetchone() is not None:
                return None
            con.execute("INSERT INTO meta VALUES (?, ?)", (marker, json.dumps({"file": name, "rows": len(rows),
                                                                                "at": now_iso()})))
            return self._insert(con, rows, source="import", host="", attempts=1, cache_key=None)

    def forget_cache(self) -> int:
        """Stop serving every stored point as cache (rows stay, as history); returns how many rows it touched."""
        with self._write() as con:
            return con.execute("UPDATE results SET cache_key = NULL WHERE cache_key IS NOT NULL").rowcount

    # --- reading ---------------------------------------------------------------------------------

    def cached(self, cache_key: str) -> list[ProfileRecord] | None:
        """The rows of the latest run of the point ``cache_key`` when all of them are ``ok``, else None."""
        with self._read() as con:
            last = con.execute("SELECT write_id FROM results WHERE cache_key = ? ORDER BY id DESC LIMIT 1",
                               (cache_key,)).fetchone()
            if last is None:
                return None
            got = con.execute(f"SELECT {', '.join(chr(34) + c + chr(34) for c in COLUMNS)}, id FROM results "
                              "WHERE cache_key = ? AND write_id IS ? ORDER BY id", (cache_key, last[0])).fetchall()
        rows = [ProfileRecord(**{c: _cell(self.path, c, v, r[-1]) for c, v in zip(COLUMNS, r[:-1], strict=True)})
                for r in got]
        if not rows or any(r.status != "ok" for r in rows):
            return None
        return rows

    def count(self) -> int:
        with self._read() as con:
            return int(con.execute("SELECT COUNT(*) FROM results").fetchone()[0])

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
        with self._read() as con:
            got = con.execute(sql, args).fetchall()
        return _frame(got, self.path)

    def summary(self) -> pd.DataFrame:
        """One line per (config, measurement, device, dtype): how many rows, lengths, failures, first/last time."""
        import pandas as pd

        sql = ("SELECT config_name, config_key, measurement, device_name, dtype, COUNT(*) AS rows, "
               "SUM(status != 'ok') AS failed, MIN(seq_len_tokens) AS min_seq_len_tokens, "
               "MAX(seq_len_tokens) AS max_seq_len_tokens, GROUP_CONCAT(DISTINCT source) AS sources, "
               "MIN(timestamp) AS first, MAX(timestamp) AS last FROM results "
               "GROUP BY config_key, config_name, measurement, device_name, dtype ORDER BY last DESC")
        with self._read() as con:
            cur = con.execute(sql)
            names = [d[0] for d in cur.description]
            got = cur.fetchall()
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


def _cell(path: Path, col: str, value: Any, row_id: Any) -> Any:
    """The python value of one stored cell, or a ``StoreError`` naming the table, the column and the row."""
    try:
        out = RESULT_ROWS.python_value(col, value)
        if out is not None and col in RESULT_ROWS.float_columns and not isinstance(out, (int, float)):
            raise TypeError("not a number")
        if out is not None and col in RESULT_ROWS.int_columns and isinstance(out, bool):
            raise TypeError("not a whole number")
    except (ValueError, TypeError, OverflowError, UnicodeDecodeError, AttributeError):
        kind = "a whole number" if col in RESULT_ROWS.int_columns else "a number"
        raise StoreError(f"the result database {path} is damaged: table results, column {col}, row id {row_id} "
                         f"holds {str(value)[:40]!r}, not {kind} (edited by hand?). Fix or delete that row with the "
                         "sqlite3 tool, or set XTLENS_DB to another file") from None
    return out


def _frame(got: list[tuple], path: Path | None = None) -> pd.DataFrame:
    import pandas as pd

    n = len(COLUMNS)
    where = path if path is not None else db_path()
    columns: dict[str, list[Any]] = {c: [_cell(where, c, r[i], r[n]) for r in got] for i, c in enumerate(COLUMNS)}
    try:
        frame = frame_from_columns(columns)
    except (ValueError, TypeError, OverflowError) as exc:
        raise StoreError(f"the result database {where} holds rows xtlens cannot read ({exc}); fix them with the "
                         "sqlite3 tool, or set XTLENS_DB to another file") from None
    for j, name in enumerate(PROVENANCE):
        values = [r[n + j] for r in got]
        if name in ("id", "attempts"):
            frame[name] = pd.array(values, dtype="Int64")
        else:
            frame[name] = pd.Series(values, dtype=object).astype("string").array
    return frame


# --- the spool: measured rows that could not be stored ------------------------------------------------

def spool_folders() -> list[Path]:
    """Where rows that could not be stored are kept, in order of preference: ``$XTLENS_SPOOL_DIR``,
    ``<cache folder>/spool``, ``<temp folder>/xtlens-spool-<uid>`` (the first that can be written is used; all
    are looked at when the spool is stored)."""
    env = os.environ.get("XTLENS_SPOOL_DIR")
    uid = os.getuid() if hasattr(os, "getuid") else 0
    folders = [Path(env)] if env else []
    return [*folders, cache_folder() / "spool", Path(tempfile.gettempdir()) / f"xtlens-spool-{uid}"]


def spool_rows(rows: Sequence[ProfileRecord], error: StoreError, *, store_path: str | Path | None = None,
               source: str = "local", host: str | None = None, attempts: int = 1,
               cache_key: str | None = None) -> StoreError:
    """Keep ``rows`` (which ``error`` kept out of the store at ``store_path``) in the spool; the error to raise,
    its message naming the spool file (or saying that the rows could not be kept there either)."""
    from xtlens.profiling.results.records import records_to_json

    target = str(Path(store_path if store_path is not None else db_path()).resolve())
    rows = list(rows)
    payload = json.dumps({"store": target, "source": source, "host": socket.gethostname() if host is None else host,
                          "attempts": attempts, "cache_key": cache_key, "why": str(error), "spooled_at": now_iso(),
                          "rows": json.loads(records_to_json(rows))}, indent=1)
    tried = []
    for folder in spool_folders():
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.json"  # sorts in the order the points were spooled
        try:
            folder.mkdir(parents=True, exist_ok=True)
            part = folder / (name + ".part")
            part.write_text(payload, encoding="utf-8")
            os.replace(part, folder / name)
        except OSError as exc:
            with contextlib.suppress(OSError, UnboundLocalError):
                part.unlink()
            tried.append(f"{folder}: {exc.strerror or exc}")
            continue
        return StoreError(f"{error}. The {len(rows)} measured row(s) are kept in the spool file {folder / name}; the "
                          f"next xtlens run that can write to {target} stores them")
    return StoreError(f"{error}. The {len(rows)} measured row(s) could not be kept in a spool either "
                      f"({'; '.join(tried)}): they are only in this run's output")


def _spooled(folder: Path, target: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    try:
        files = sorted(folder.glob("*.json"))
    except OSError:
        return
    for file in files:
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            continue  # torn or foreign: left where it is
        if isinstance(data, dict) and data.get("store") == target:
            yield file, data


_STORES: dict[str, ResultStore] = {}


def store_spool(store: ResultStore) -> int:
    """Store the spooled rows meant for ``store`` (each file in one transaction with a mark, so a file is never
    stored twice), then delete their files; rows added. A file that cannot be read or stored stays."""
    from xtlens.profiling.results.records import records_from_json

    target = str(store.path.resolve())
    added = 0
    for folder in spool_folders():
        for file, data in _spooled(folder, target):
            try:
                rows = records_from_json(json.dumps(data["rows"]))
                source = data.get("source") if data.get("source") in SOURCES else "local"
                marker = f"spooled:{file.name}"
                with store._write() as con:
                    if con.execute("SELECT 1 FROM meta WHERE key = ?", (marker,)).fetchone() is None:
                        con.execute("INSERT INTO meta VALUES (?, ?)", (marker, json.dumps({"rows": len(rows),
                                                                                            "at": now_iso()})))
                        store._insert(con, rows, source=source, host=str(data.get("host") or ""),
                                      attempts=int(data.get("attempts") or 1), cache_key=data.get("cache_key"))
                        added += len(rows)
            except StoreError:
                return added  # still cannot write: the spool stays for the next run
            except (KeyError, TypeError, ValueError, OverflowError):
                continue
            with contextlib.suppress(OSError):
                file.unlink()
    return added


_SCHEMAS_READY: set[tuple[str, tuple[str, ...]]] = set()
_SCHEMAS_LOCK = threading.Lock()


def with_schema(store: ResultStore, schema: Sequence[str]) -> ResultStore:
    """``store`` with the tables and indexes of ``schema`` (``CREATE ... IF NOT EXISTS`` statements) created, once per
    file, schema and process (again when the file was removed): the probe tables, the calibrations."""
    key = (str(store.path.resolve()), tuple(schema))
    with _SCHEMAS_LOCK:
        if key not in _SCHEMAS_READY or not store.path.exists():
            with store.transaction() as con:
                for stmt in schema:
                    con.execute(stmt)
            _SCHEMAS_READY.add(key)
    return store


def open_store(path: str | Path | None = None, *, write: bool = True) -> ResultStore:
    """The store at ``path`` (default ``db_path()``), opened and checked once per process and path (a file or
    folder that cannot be written is a ``StoreError`` here, before anything is measured); rows spooled for it
    by an earlier run that could not write are stored then. ``write=False`` (reading only: ``results list``,
    ``show``, ``export``): a store that cannot be written is opened read-only instead of refused."""
    resolved = str(Path(path if path is not None else db_path()).resolve())
    store = _STORES.get(resolved)
    if not write and store is None and Path(resolved).is_file() and not_writable(Path(resolved)) is not None:
        return ResultStore(resolved, readonly=True)
    if store is None or not Path(resolved).exists():
        store = ResultStore(resolved)
        _STORES[resolved] = store
        store.spool_stored = store_spool(store)
    return store
