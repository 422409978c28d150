"""The result store under real faults (issue 22): a file-size limit during ``results import``, a read-only
store file or folder before and after measuring (the spool), hand-edited stores in ``results show/export``.

Read-only is made real with the immutable attribute (``chattr +i``: root cannot write such a file, nor create
files in such a folder) and, for the permission bits, with a child that drops to the user nobody."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from xtlens.core.config import ModelConfig, Workload
from xtlens.profiling.cli import main
from xtlens.profiling.results.export import read_records, write_table
from xtlens.profiling.results.records import COLUMNS, ProfileRecord, base_fields
from xtlens.profiling.results.store import ResultStore, StoreError, open_store

PY = sys.executable
TINY = ModelConfig(num_tokens=64, max_seq_len=256, dim=32, depth=1, heads=2, attn_dim_head=16)


def _rows(device_name: str, lens=(32, 64)) -> list[ProfileRecord]:
    out = []
    for n in lens:
        fields = base_fields(TINY, Workload(seq_len=n), config_name="tiny", measurement="latency", phase="forward",
                             device="cpu", device_name=device_name)
        out.append(ProfileRecord(**fields, latency_median_ms=n / 10, latency_min_ms=n / 11, latency_max_ms=n / 9,
                                 repeats=5, warmup=2, timestamp="2026-11-20T10:00:00+00:00"))
    return out


def _chattr(flag: str, path: Path) -> None:
    got = subprocess.run(["chattr", flag, str(path)], capture_output=True, text=True)
    if got.returncode != 0:
        pytest.skip(f"chattr {flag} is not permitted here: {got.stderr.strip()}")


@pytest.fixture
def frozen():
    """``frozen(path)`` sets the immutable attribute on ``path``; every one is cleared at the end."""
    done: list[Path] = []

    def freeze(path: Path) -> None:
        _chattr("+i", path)
        done.append(path)

    yield freeze
    for path in done:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("XTLENS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("XTLENS_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tmp_path


def _cli(*args: str, extra_env: dict[str, str] | None = None, limit_bytes: int | None = None,
         timeout: float = 240) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([PY, "-m", "xtlens.profiling.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(extra_env or {})}, preexec_fn=limit)


# --- 1. disk full during an import --------------------------------------------------------------------------

def _big_csv(path: Path, n: int = 3000) -> Path:
    base = _rows("AMD EPYC (2 logical CPUs)")[0]
    write_table([dataclasses.replace(base, latency_median_ms=i / 7, seq_len_tokens=1 + i % 256) for i in range(n)], path)
    return path


def test_import_past_the_file_size_limit_stores_nothing_and_the_file_imports_again(env) -> None:
    big = _big_csv(env / "big.csv")
    db = env / "full.sqlite"
    got = _cli("results", "--db", str(db), "import", str(big), limit_bytes=400 * 1024)  # ulimit -f 400
    assert got.returncode == 2, got.stderr
    assert "Traceback" not in got.stderr and "rollback" not in got.stderr
    assert str(db) in got.stderr and "file-size limit (ulimit -f) is 409,600 bytes" in got.stderr
    store = ResultStore(db)
    assert store.count() == 0
    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*) FROM meta WHERE key LIKE 'imported:%'").fetchone()[0] == 0  # no mark
    con.close()
    again = _cli("results", "--db", str(db), "import", str(big))
    assert again.returncode == 0, again.stderr
    assert "already imported" not in again.stderr
    assert store.count() == len(read_records(big)) == 3000


def test_a_write_that_fails_rolls_back_once_and_names_the_cause(env) -> None:
    store = ResultStore(env / "s.sqlite")
    rows = _rows("cpu")
    with pytest.raises(StoreError, match="nothing of this write was stored"), store.transaction() as con:
        con.execute("INSERT INTO meta VALUES ('x', 'y')")
        con.execute("INSERT INTO no_such_table VALUES (1)")
    assert store.add(rows) and store.count() == 2
    assert sqlite3.connect(env / "s.sqlite").execute("SELECT COUNT(*) FROM meta WHERE key='x'").fetchone()[0] == 0


def test_a_lock_held_beyond_the_timeout_is_a_message(env) -> None:
    path = env / "locked.sqlite"
    store = ResultStore(path, lock_timeout_s=0.3)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match=r"held its lock for more than 0\.3 s"):
            store.add(_rows("cpu"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert store.count() == 0


# --- 2. a read-only store: refused before measuring ----------------------------------------------------------

def _tiny_config(folder: Path) -> Path:
    path = folder / "tiny.json"
    path.write_text(TINY.to_json())
    return path


def _profile_args(env: Path, time_limit: str, out: Path) -> list[str]:
    return ["profile", "--config", str(_tiny_config(env)), "--what", "flops", "--seq-lens", "16,32", "--device", "cpu",
            "--no-cache", "--time-limit", time_limit, "--out", str(out)]


@pytest.mark.parametrize("time_limit", ["0", "120"])
@pytest.mark.parametrize("which", ["file", "folder"])
def test_a_read_only_store_is_refused_before_measuring(env, frozen, monkeypatch, capsys, which, time_limit) -> None:
    folder = env / "store"
    folder.mkdir()
    db = folder / "r.sqlite"
    ResultStore(db).add(_rows("cpu"))
    monkeypatch.setenv("XTLENS_DB", str(db))
    frozen(db if which == "file" else folder)
    out = env / "out.csv"
    assert main(_profile_args(env, time_limit, out)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "damaged" not in err and "move it away" not in err.lower()
    assert f"cannot write to the result database {db}" in err and "Nothing was measured" in err
    assert ("the file is read-only" if which == "file" else f"its folder {folder} is read-only") in err
    assert not out.exists()
    # reading a read-only store still works; writing to it is the same message
    assert main(["results", "show"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3  # the header and the 2 rows
    assert main(["results", "export", str(env / "all.json")]) == 0 and len(read_records(env / "all.json")) == 2
    assert main(["results", "import", str(env / "all.json")]) == 2
    assert "read-only" in capsys.readouterr().err


@pytest.mark.parametrize("which", ["file", "folder"])
def test_permission_bits_as_an_unprivileged_user_are_read_only_too(env, which) -> None:
    """A child that drops to nobody (uid 65534) meets a root-owned store of mode 0o444 in a folder of 0o555."""
    base = Path(tempfile.mkdtemp(prefix="xtlens-perm-"))  # pytest's tmp_path is root's alone (0o700 above it)
    os.chmod(base, 0o755)
    folder = base / "perm"
    folder.mkdir()
    db = folder / "p.sqlite"
    ResultStore(db).add(_rows("cpu"))
    big = _big_csv(base / "few.csv", n=3)
    os.chmod(big, 0o444)
    os.chmod(db, 0o444 if which == "file" else 0o644)
    if which == "file":  # the folder is nobody's own (writable), the root-owned file 0o444
        os.chown(folder, 65534, 65534)
    else:  # the root-owned folder 0o555: nobody can create SQLite's journal files there
        os.chmod(folder, 0o555)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no new imports from root's folders after setuid, so everything is loaded first
        os.close(read)
        code = 99
        try:
            os.setgid(65534)
            os.setuid(65534)
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                code = main(["results", "--db", str(db), "import", str(big)])
            os.write(write, err.getvalue().encode())
        except BaseException:
            import traceback

            os.write(write, traceback.format_exc().encode())
        finally:
            os._exit(code)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    err = b"".join(chunks).decode()
    os.chmod(folder, 0o755)
    try:
        assert os.waitstatus_to_exitcode(status) == 2, err
        assert ("the file is read-only" if which == "file" else f"its folder {folder} is read-only") in err, err
        assert ResultStore(db).count() == 2
    finally:
        shutil.rmtree(base)


# --- 2. a store that becomes read-only while measuring: --out and the spool keep the rows --------------------

FREEZER = '''
import os, subprocess
target = os.environ.get("XTLENS_TEST_FREEZE")
if target:
    import xtlens.profiling.run.measure as _m
    _real = _m.measure_point
    def measure_point(*args, **kwargs):
        rows = _real(*args, **kwargs)
        subprocess.run(["chattr", "+i", target], check=True)  # the store becomes read-only after measuring
        return rows
    _m.measure_point = measure_point
'''


@pytest.mark.parametrize("time_limit", ["0", pytest.param("120", marks=pytest.mark.slow)])  # 120: the worker child
@pytest.mark.parametrize("which", ["file", "folder"])
def test_rows_measured_when_the_store_turns_read_only_go_to_out_and_the_spool(env, frozen, which, time_limit) -> None:
    folder = env / "store"
    folder.mkdir()
    db = folder / "m.sqlite"
    ResultStore(db)
    site = env / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(FREEZER)
    target = db if which == "file" else folder
    frozen(target)  # skips here when chattr is not permitted; cleared again now, frozen by the measurement
    subprocess.run(["chattr", "-i", str(target)], check=True)
    out = env / "out.csv"
    got = _cli(*_profile_args(env, time_limit, out), extra_env={
        "XTLENS_DB": str(db), "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "XTLENS_TEST_FREEZE": str(target)})
    assert got.returncode == 2, got.stderr
    assert "Traceback" not in got.stderr and "stopped unexpectedly" not in got.stderr
    assert f"cannot write to the result database {db}" in got.stderr
    assert ("the file is read-only" if which == "file" else f"its folder {folder} is read-only") in got.stderr
    written = read_records(out)
    assert sorted(r.seq_len_tokens for r in written) == [16, 32] and all(r.status == "ok" for r in written)
    spooled = sorted((env / "spool").glob("*.json"))
    assert spooled and str(spooled[0]) in got.stderr
    kept = [r for f in spooled for r in json.loads(f.read_text())["rows"]]
    assert sorted(r["seq_len_tokens"] for r in kept) == [16, 32]
    # the next run that can write stores the spool, once, and empties it
    subprocess.run(["chattr", "-i", str(target)], check=True)
    listed = _cli("results", "--db", str(db), "list")
    assert listed.returncode == 0, listed.stderr
    stored = ResultStore(db).query()
    assert sorted(stored["seq_len_tokens"]) == [16, 32] and not list((env / "spool").glob("*.json"))
    _cli("results", "--db", str(db), "list")
    assert ResultStore(db).count() == 2


def test_a_spool_file_is_stored_once_even_if_its_removal_failed(env) -> None:
    db = env / "twice.sqlite"
    store = ResultStore(db)
    from xtlens.profiling.results.store import spool_rows, store_spool

    message = spool_rows(_rows("cpu"), StoreError("cannot write: test"), store_path=db, cache_key="k1")
    assert "kept in the spool file" in str(message)
    (spool,) = (env / "spool").glob("*.json")
    copy = spool.read_bytes()
    assert store_spool(store) == 2
    spool.write_bytes(copy)  # as if the delete after the commit had not happened
    assert store_spool(store) == 0 and store.count() == 2 and not spool.exists()
    assert store.cached("k1") is not None  # served as cache like any stored point


# --- 8. hand-edited or damaged stores in results show / export -----------------------------------------------

def _edited(env: Path, sql: str) -> Path:
    db = env / "edited.sqlite"
    store = ResultStore(db)
    store.add(_rows("cpu"))
    con = sqlite3.connect(db)
    con.executescript(sql)
    con.commit()
    con.close()
    return db


@pytest.mark.parametrize(("sql", "expected"), [
    ("UPDATE meta SET value='abc' WHERE key='schema_version'", "table meta, key schema_version holds 'abc'"),
    ("DROP TABLE results", "no table results"),
    ("UPDATE results SET batch='abc' WHERE id=2", "table results, column batch, row id 2 holds 'abc'"),
    ("UPDATE results SET predicted_flops='1e400' WHERE id=1", "table results, column predicted_flops, row id 1"),
    ("UPDATE results SET latency_median_ms='fast' WHERE id=1", "column latency_median_ms, row id 1"),
    ("UPDATE results SET batch=1.5 WHERE id=2", "table results, column batch, row id 2 holds '1.5', not a whole"),
])
@pytest.mark.parametrize("action", ["show", "export"])
def test_a_hand_edited_store_is_a_message(env, capsys, sql, expected, action) -> None:
    db = _edited(env, sql)
    args = ["results", "--db", str(db), action] + ([str(env / "x.csv")] if action == "export" else [])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(db) in err and expected in err, err
    assert not (env / "x.csv").exists()


def test_open_store_reports_a_hand_edited_store(env) -> None:
    db = _edited(env, "UPDATE meta SET value='abc' WHERE key='schema_version'")
    with pytest.raises(StoreError, match="schema_version"):
        open_store(db)


# --- fuzz: any value in any stored cell, through results show / export ---------------------------------------

@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(col=st.sampled_from(COLUMNS), value=st.one_of(
    st.none(), st.text(max_size=24), st.binary(max_size=24), st.floats(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1), st.sampled_from(["1e400", "-1e400", "nan", "1.5", " 7 ", "0x10"])))
def test_fuzz_a_hand_edited_cell_is_shown_or_named(tmp_path_factory, col, value) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    db = folder / "f.sqlite"
    ResultStore(db).add(_rows("cpu"))
    con = sqlite3.connect(db)
    try:
        con.execute(f'UPDATE results SET "{col}" = ? WHERE id = 1', (value,))
        con.commit()
    except sqlite3.Error:
        return  # a constraint of the table refuses the value: nothing to read back
    finally:
        con.close()
    for action in ("show", "export"):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["results", "--db", str(db), action, *([str(folder / "x.json")] if action == "export" else [])])
        assert code in (0, 2), err.getvalue()
        if code == 2:
            assert str(db) in err.getvalue() and col in err.getvalue(), err.getvalue()


def test_profile_on_ray_exits_2_when_the_driver_could_not_store_its_rows(env, monkeypatch, capsys) -> None:
    # the Ray driver spools rows it cannot store (RayJob.store_failures); `xtlens profile --ray` must say so and
    # exit 2 as the local paths do, with the rows still in --out
    from xtlens.profiling import cli_common
    from xtlens.profiling.run import executor as executor_module

    rows = _rows("cpu")

    class FakeRayJob:
        outcome, hosts, retried = "done", {"node-a"}, {}
        store_failures = ["cannot write to the result database X: read-only; kept in the spool at S"]

        def start(self):
            return self

        def result(self):
            return rows

    class FakeExecutor:
        def __init__(self, **_kwargs) -> None:
            pass

        def job(self, _spec):
            return FakeRayJob()

        def describe(self) -> str:
            return "the Ray cluster at 127.0.0.1:1"

    monkeypatch.setattr(cli_common, "check_ray_address", lambda _address: None)
    monkeypatch.setattr(cli_common, "follow", lambda job, _bar, **_kw: job)
    monkeypatch.setattr(executor_module, "RayExecutor", FakeExecutor)
    out = env / "rows.csv"
    code = main(["profile", "--preset", "seed", "--set", "dim=32", "--what", "flops", "--seq-lens", "32",
                 "--ray", "127.0.0.1:1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "read-only; kept in the spool at S" in err and "Traceback" not in err
    assert len(read_records(out)) == len(rows)
