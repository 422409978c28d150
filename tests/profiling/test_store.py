"""The SQLite result store: exact round trip, WAL, two writer processes at once, corrupt and foreign files."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import time

import pytest
from xtlens.core.config import ModelConfig, Workload
from xtlens.profiling.results.records import ProfileRecord, base_fields, from_frame
from xtlens.profiling.results.store import ResultStore, StoreError, db_path, open_store

TINY = ModelConfig(num_tokens=64, max_seq_len=256, dim=32, depth=1, heads=2, attn_dim_head=16)


def _row(seq_len: int, *, writer: str = "w", status: str = "ok", flops: int | None = None) -> ProfileRecord:
    fields = base_fields(TINY, Workload(seq_len=seq_len), config_name=writer, measurement="flops", phase="forward",
                         device="cpu", device_name="Test CPU")
    return ProfileRecord(**fields, status=status, predicted_flops=flops if flops is not None else 7 * seq_len,
                         flops_rel_err=0.125, method=f"written by {writer}")


def test_round_trip_is_exact_and_indexed(tmp_path) -> None:
    store = ResultStore(tmp_path / "r.sqlite")
    rows = [_row(32, flops=2**60 + 1), _row(64, status="oom")]  # exact beyond 2**53
    ids = store.add(rows, source="ray", host="node-a", attempts=2, cache_key="k1")
    frame = store.query()
    assert list(frame["id"]) == ids[::-1]  # newest first
    assert from_frame(frame.iloc[::-1].reset_index(drop=True)) == rows
    assert list(frame["host"]) == ["node-a"] * 2 and list(frame["attempts"]) == [2, 2]
    assert int(frame["predicted_flops"].iloc[1]) == 2**60 + 1
    con = sqlite3.connect(tmp_path / "r.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    indexes = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"results_config", "results_workload", "results_device", "results_versions", "results_cache"} <= indexes
    con.close()
    # a point with a failed row is never served as cache; the latest all-ok run is
    assert store.cached("k1") is None
    store.add([_row(32)], cache_key="k1")
    assert [(r.seq_len_tokens, r.predicted_flops) for r in store.cached("k1")] == [(32, 7 * 32)]
    assert store.count() == 3
    # filters
    assert len(store.query(seq_len=64)) == 1 and len(store.query(status="ok")) == 2
    assert len(store.query(config="w")) == 3 and len(store.query(config="nomatch")) == 0
    assert len(store.query(device="Test")) == 3 and len(store.query(since="2999-01-01")) == 0
    assert store.summary()["rows"].sum() == 3


def test_db_path_env(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("XTLENS_DB", raising=False)
    monkeypatch.setenv("XTLENS_CACHE_DIR", str(tmp_path / "c"))
    assert db_path() == tmp_path / "c" / "results.sqlite"
    monkeypatch.setenv("XTLENS_DB", str(tmp_path / "x.db"))
    assert db_path() == tmp_path / "x.db"
    open_store().add([_row(32)])
    assert (tmp_path / "x.db").exists()


def _writer(path: str, name: str, other: str, n: int, barrier) -> None:
    store = ResultStore(path)
    barrier.wait()  # both processes are up: start together
    for i in range(n):
        store.add([_row(i + 1, writer=name), _row(1000 + i, writer=name)], cache_key=f"{name}-{i}")
        if i == 0:  # hold on until the other writer has written too: the two certainly write at the same time
            while not len(store.query(config=other, limit=1)):
                time.sleep(0.01)


@pytest.mark.slow
def test_two_processes_writing_at_once_lose_nothing(tmp_path) -> None:
    path = str(tmp_path / "shared.sqlite")
    ResultStore(path)
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(path, name, other, 40, barrier))
             for name, other in (("page", "cli"), ("cli", "page"))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    frame = ResultStore(path).query()
    assert len(frame) == 2 * 40 * 2
    for name in ("page", "cli"):
        mine = frame[frame["config_name"] == name]
        assert sorted(mine["seq_len_tokens"]) == sorted([i + 1 for i in range(40)] + [1000 + i for i in range(40)])
    # the writers overlapped: each one's first row was stored before the other's last
    ids = {name: frame[frame["config_name"] == name]["id"].astype(int) for name in ("page", "cli")}
    assert ids["page"].min() < ids["cli"].max() and ids["cli"].min() < ids["page"].max()


def test_a_corrupt_file_is_refused_and_never_overwritten(tmp_path) -> None:
    path = tmp_path / "results.sqlite"
    junk = b"these are not the results you are looking for\n" * 100
    path.write_bytes(junk)
    with pytest.raises(StoreError, match="not an SQLite database.*has not changed it"):
        ResultStore(path)
    assert path.read_bytes() == junk
    # an SQLite file damaged after its header
    good = tmp_path / "damaged.sqlite"
    store = ResultStore(good)
    store.add([_row(n) for n in range(1, 200)])
    con = sqlite3.connect(good)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = bytearray(good.read_bytes())
    data[4096:8192] = b"\xff" * 4096  # smash the second page
    good.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="damaged"):
        ResultStore(good)
    assert good.read_bytes() == bytes(data)


def test_a_foreign_sqlite_database_is_refused(tmp_path) -> None:
    path = tmp_path / "other.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE customers (name TEXT)")
    con.execute("INSERT INTO customers VALUES ('ada')")
    con.commit()
    con.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="another program.*customers"):
        ResultStore(path)
    assert path.read_bytes() == before


def test_a_file_is_imported_once_by_content(tmp_path) -> None:
    store = ResultStore(tmp_path / "r.sqlite")
    assert len(store.import_once([_row(32), _row(64)], b"file one", name="a.csv")) == 2
    assert store.import_once([_row(32), _row(64)], b"file one", name="again.csv") is None
    assert len(store.import_once([_row(32)], b"file two", name="b.csv")) == 1
    assert store.count() == 3 and set(store.query()["source"]) == {"import"}


def test_a_database_from_before_a_new_column_gets_it(tmp_path):
    """Columns join records.COLUMNS over time (LATER_COLUMNS): an older database is extended, its rows kept."""
    import sqlite3

    from xtlens.profiling.results.records import LATER_COLUMNS
    from xtlens.profiling.results.store import open_store

    path = tmp_path / "old.sqlite"
    store = open_store(path)
    store.add(_rows_for_migration())
    con = sqlite3.connect(path)
    for c in LATER_COLUMNS:
        con.execute(f'ALTER TABLE results DROP COLUMN "{c}"')
    con.commit()
    con.close()
    from xtlens.profiling.results.store import ResultStore

    again = ResultStore(path)  # a new process opening the old file (open_store caches per process)
    again.add(_rows_for_migration())
    assert again.count() == 2
    back = again.query()
    assert set(LATER_COLUMNS) <= set(back.columns)


def _rows_for_migration():
    from xtlens.core.config import PRESETS, Workload
    from xtlens.profiling.results.records import ProfileRecord, base_fields

    base = base_fields(PRESETS["seed"], Workload(seq_len=64), measurement="flops", phase="forward", device="cpu",
                       device_name="test cpu")
    return [ProfileRecord(**base, predicted_flops=123)]
