"""``xtlens results list|show|import|export`` and ``xtlens profile`` filling the result store."""

from __future__ import annotations

import subprocess
import sys

from xtlens.core.config import ModelConfig, Workload
from xtlens.profiling.cli import main
from xtlens.profiling.results.export import read_records, write_table
from xtlens.profiling.results.records import ProfileRecord, base_fields
from xtlens.profiling.results.store import ResultStore

TINY = ModelConfig(num_tokens=64, max_seq_len=256, dim=32, depth=1, heads=2, attn_dim_head=16)


def _rows(device_name: str, lens=(32, 64)) -> list[ProfileRecord]:
    out = []
    for n in lens:
        fields = base_fields(TINY, Workload(seq_len=n), config_name="tiny", measurement="latency", phase="forward",
                             device="cuda" if "H100" in device_name else "cpu", device_name=device_name)
        out.append(ProfileRecord(**fields, latency_median_ms=n / 10, latency_min_ms=n / 11, latency_max_ms=n / 9,
                                 repeats=5, warmup=2, timestamp="2026-11-20T10:00:00+00:00"))
    return out


def test_import_list_show_export_round_trip(tmp_path, monkeypatch, capsys) -> None:
    db = tmp_path / "r.sqlite"
    monkeypatch.setenv("XTLENS_DB", str(db))
    h100 = tmp_path / "h100.parquet"
    write_table(_rows("NVIDIA H100 80GB HBM3"), h100)
    cpu = tmp_path / "cpu.csv"
    write_table(_rows("AMD EPYC (2 logical CPUs)", lens=(32,)), cpu)
    assert main(["results", "import", str(h100), str(cpu)]) == 0
    err = capsys.readouterr().err
    assert "imported 2 row(s)" in err and "imported 1 row(s)" in err and "3 row(s) in all" in err
    assert main(["results", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:6] == ["config_name", "config_key", "measurement", "device_name", "dtype", "rows"]
    assert any("NVIDIA H100 80GB HBM3" in line and " 2 " in line for line in out[1:])
    assert main(["results", "show", "--device", "H100"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert len(shown) == 3 and all("import" in line for line in shown[1:])
    out_file = tmp_path / "h100-again.json"
    assert main(["results", "export", "--device", "H100", "--seq-len", "64", str(out_file)]) == 0
    assert read_records(out_file) == _rows("NVIDIA H100 80GB HBM3", lens=(64,))  # exact, timestamps included
    assert main(["results", "export", "--since", "2026-11-21", str(tmp_path / "none.csv")]) == 0
    assert read_records(tmp_path / "none.csv") == []
    assert main(["results", "export", "--until", "2026-11-20", str(tmp_path / "day.csv")]) == 0
    assert len(read_records(tmp_path / "day.csv")) == 3


def test_profile_stores_its_rows(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("XTLENS_DB", str(tmp_path / "p.sqlite"))
    cfg = tmp_path / "tiny.json"
    cfg.write_text(TINY.to_json())
    assert main(["profile", "--config", str(cfg), "--what", "flops", "--seq-lens", "16,32", "--device", "cpu",
                 "--out", str(tmp_path / "t.csv")]) == 0
    stored = ResultStore(tmp_path / "p.sqlite").query()
    assert sorted(stored["seq_len_tokens"]) == [16, 32] and set(stored["source"]) == {"local"}
    assert sorted(int(v) for v in stored["torch_counter_flops"]) == sorted(
        r.torch_counter_flops for r in read_records(tmp_path / "t.csv"))


def test_a_corrupt_database_exits_2_with_a_message_and_is_left_alone(tmp_path) -> None:
    db = tmp_path / "results.sqlite"
    db.write_bytes(b"PK\x03\x04 a zip file, not a database")
    run = subprocess.run([sys.executable, "-m", "xtlens.profiling.cli", "results", "--db", str(db), "list"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "is not an SQLite database" in run.stderr and "Traceback" not in run.stderr
    assert db.read_bytes() == b"PK\x03\x04 a zip file, not a database"


def test_import_of_a_missing_or_bad_file(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("XTLENS_DB", str(tmp_path / "r.sqlite"))
    assert main(["results", "import", str(tmp_path / "nope.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    assert main(["results", "import", str(tmp_path / "bad.csv")]) == 2
    assert "missing column" in capsys.readouterr().err


def test_profile_with_a_foreign_database_exits_2(tmp_path, monkeypatch, capsys) -> None:
    import sqlite3

    db = tmp_path / "theirs.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE invoices (n INTEGER)")
    con.commit()
    con.close()
    monkeypatch.setenv("XTLENS_DB", str(db))
    assert main(["profile", "--what", "flops", "--seq-lens", "16", "--device", "cpu"]) == 2
    assert "another program (tables: invoices)" in capsys.readouterr().err


def test_profile_on_an_unreachable_ray_cluster_says_so(tmp_path, capsys) -> None:
    assert main(["profile", "--what", "flops", "--seq-lens", "16", "--ray", "127.0.0.1:9"]) == 2  # bad input: 2
    err = capsys.readouterr().err
    assert "could not connect to the Ray cluster at 127.0.0.1:9: nothing answers there" in err
    assert "--ray" in err and "Traceback" not in err


def test_the_same_file_is_imported_once(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("XTLENS_DB", str(tmp_path / "r.sqlite"))
    path = tmp_path / "cpu.json"
    write_table(_rows(CPU_NAME), path)
    assert main(["results", "import", str(path)]) == 0
    assert main(["results", "import", str(path)]) == 0
    assert "already imported" in capsys.readouterr().err
    assert ResultStore(tmp_path / "r.sqlite").count() == 2


CPU_NAME = "AMD EPYC (2 logical CPUs)"


# --- issue 22: special files, symlink loops and counts that are not whole numbers ----------------------------

def _import(tmp_path, *files: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**__import__("os").environ, "XTLENS_DB": str(tmp_path / "r.sqlite")}
    return subprocess.run([sys.executable, "-m", "xtlens.profiling.cli", "results", "import", *files],
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_importing_a_named_pipe_returns_at_once_with_a_message(tmp_path) -> None:
    import os
    import time

    pipe = tmp_path / "rows.csv"
    os.mkfifo(pipe)  # no writer: reading it would block for ever
    started = time.monotonic()
    run = _import(tmp_path, str(pipe), timeout=60)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "rows.csv" in run.stderr and "named pipe" in run.stderr
    assert time.monotonic() - started < 30  # it did not wait for a writer


def test_importing_a_device_or_a_folder_is_refused_unread(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("XTLENS_DB", str(tmp_path / "r.sqlite"))
    assert main(["results", "import", "/dev/zero"]) == 2  # read, it would never end
    assert "character device" in capsys.readouterr().err
    (tmp_path / "d.csv").mkdir()
    assert main(["results", "import", str(tmp_path / "d.csv")]) == 2
    assert "it is a folder" in capsys.readouterr().err


def test_a_symlink_loop_is_called_a_symlink_loop(tmp_path, monkeypatch, capsys) -> None:
    import os

    monkeypatch.setenv("XTLENS_DB", str(tmp_path / "r.sqlite"))
    os.symlink(tmp_path / "b.csv", tmp_path / "a.csv")
    os.symlink(tmp_path / "a.csv", tmp_path / "b.csv")
    assert main(["results", "import", str(tmp_path / "a.csv")]) == 2
    err = capsys.readouterr().err
    assert "symlink loop" in err and "no such file" not in err
    os.symlink(tmp_path / "gone.csv", tmp_path / "dangling.csv")
    assert main(["results", "import", str(tmp_path / "dangling.csv")]) == 2
    assert "symlink to a missing file" in capsys.readouterr().err


def test_import_refuses_a_fractional_count_naming_column_and_row_and_stores_nothing(tmp_path) -> None:
    good = tmp_path / "good.csv"
    write_table(_rows("cpu", lens=(32, 64)), good)
    header, *rows = good.read_text().splitlines()
    assert rows[1].count(",5,") == 1  # repeats=5 is the only cell holding 5
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([header, rows[0], rows[1].replace(",5,", ",1.5,", 1)]) + "\n")
    run = _import(tmp_path, str(bad))
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert "column repeats, row 2 = '1.5'" in run.stderr and "never rounded" in run.stderr, run.stderr
    assert ResultStore(tmp_path / "r.sqlite").count() == 0
    run = _import(tmp_path, str(good))  # the file is not marked: a good one still imports
    assert run.returncode == 0 and ResultStore(tmp_path / "r.sqlite").count() == 2


def test_importing_a_deep_json_prints_one_message_and_no_traceback(tmp_path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    run = _import(tmp_path, str(deep))
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines() == [
        f"xtlens results: error: file {deep} is not allowed: a readable json table (it is nested too deeply)"]
