"""The one row-table base (``profiling.results.rowtable.RowSchema``) under both row types: result rows
(``records.RESULT_ROWS``) and probe rows (``benefit.records.PROBE_ROWS``).

Each type declares only its columns; frames, files and SQLite values come from the base, so a probe table now
holds integers beyond 64 bits exactly like a result table, and files written by the older probe writer (int64
Parquet without formula quotes, JSON with bare ``NaN``, CSV without the later columns) still load.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from xtlens.core.config import PRESETS, Workload
from xtlens.profiling.benefit import probe_store
from xtlens.profiling.benefit.records import (
    PROBE_COLUMNS,
    PROBE_FLOAT_COLUMNS,
    PROBE_INT_COLUMNS,
    PROBE_ROWS,
    ProbeRecord,
    probe_bytes,
    probe_frame,
    probe_from_bytes,
    probe_rows,
)
from xtlens.profiling.results.export import from_bytes, to_bytes
from xtlens.profiling.results.records import (
    COLUMNS,
    FLOAT_COLUMNS,
    INT_COLUMNS,
    RESULT_ROWS,
    ProfileRecord,
    base_fields,
)
from xtlens.profiling.results.rowtable import RowSchema
from xtlens.profiling.results.store import ResultStore

SEED = PRESETS["seed"]
HUGE = 3 * 2**70 + 7  # beyond int64 and beyond a double's exact integers


def probe_row(**kw) -> ProbeRecord:
    base = {"probe": "scaling", "run_key": "k1", "config_name": "dim=64", "config_key": "abc123",
            "config_json": SEED.to_json(), "seed": 0, "step": 4, "train_flops": 10**9, "val_loss_nats": 3.25,
            "grad_norm": 0.5, "error": None}
    return ProbeRecord(**{**base, **kw})


def test_each_row_type_declares_only_its_columns_and_the_types_come_from_the_dataclass() -> None:
    # the columns and their kinds, read by the base from the dataclass, match the annotations read directly
    for schema, record in ((RESULT_ROWS, ProfileRecord), (PROBE_ROWS, ProbeRecord)):
        fields = dataclasses.fields(record)
        assert schema.columns == tuple(f.name for f in fields)
        assert schema.int_columns == {f.name for f in fields if f.type.replace(" ", "") in ("int", "int|None")}
        assert schema.float_columns == {f.name for f in fields if f.type.replace(" ", "") in ("float", "float|None")}
    # the old module-level names are the schema's
    assert COLUMNS == RESULT_ROWS.columns and set(INT_COLUMNS) == RESULT_ROWS.int_columns
    assert set(FLOAT_COLUMNS) == RESULT_ROWS.float_columns
    assert PROBE_COLUMNS == PROBE_ROWS.columns and PROBE_INT_COLUMNS == PROBE_ROWS.int_columns
    assert PROBE_FLOAT_COLUMNS == PROBE_ROWS.float_columns
    assert {"seed", "train_flops", "num_params"} <= PROBE_ROWS.int_columns and "val_loss_nats" in PROBE_ROWS.float_columns


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_a_probe_table_holds_integers_beyond_64_bits_exactly(fmt) -> None:
    rows = [probe_row(train_flops=HUGE, num_params=2**63), probe_row(run_key="k2", seed=1, train_flops=-HUGE),
            probe_row(run_key="k3", train_flops=None)]
    frame = probe_frame(rows)
    assert frame["train_flops"].tolist()[:2] == [HUGE, -HUGE]  # not rounded through a float
    back = probe_from_bytes(probe_bytes(frame, fmt), fmt)
    got = probe_rows(back)
    assert [r["train_flops"] for r in got] == [HUGE, -HUGE, None]
    assert got[0]["num_params"] == 2**63 and got == probe_rows(frame)


def test_result_and_probe_tables_share_one_writer() -> None:
    # the same machinery: a result row and a probe row with the same huge count write the same CSV cell
    wl = Workload(batch=1, seq_len=128)
    result = ProfileRecord(**base_fields(SEED, wl, config_name="=1+1", measurement="flops", phase="forward",
                                         device="cpu", device_name="cpu"), predicted_flops=HUGE)
    probe = probe_row(train_flops=HUGE, config_name="=1+1")
    result_csv = to_bytes([result], "csv").decode()
    probe_csv = probe_bytes([probe], "csv").decode()
    assert f",{HUGE}," in result_csv and f",{HUGE}," in probe_csv
    assert '"\'=1+1"' in result_csv and '"\'=1+1"' in probe_csv  # formula neutralised in both
    assert from_bytes(to_bytes([result], "parquet"), "parquet")["predicted_flops"].tolist() == [HUGE]


def test_probe_files_written_by_the_older_writer_still_load() -> None:
    # older probe writer: Parquet int64/double/string without formula quotes, no 'source'/'stored_at' columns
    old_cols = [c for c in PROBE_COLUMNS if c not in ("source", "stored_at")]
    row = probe_row(val_loss_nats=math.nan).to_dict()
    arrays = [pa.array([row[c]], type=pa.int64() if c in PROBE_INT_COLUMNS else pa.float64()
                       if c in PROBE_FLOAT_COLUMNS else pa.string()) for c in old_cols]
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_arrays(arrays, names=old_cols), sink)
    from_parquet = probe_rows(probe_from_bytes(sink.getvalue(), "parquet"))[0]
    # JSON with a bare NaN token (json.dumps' default), the way the older writer wrote a diverged loss
    text = json.dumps([{c: row[c] for c in old_cols}])
    assert "NaN" in text
    from_json = probe_rows(probe_from_bytes(text.encode(), "json"))[0]
    # CSV with only the required columns and a few more
    csv = b'probe,run_key,config_key,seed,row_kind,status,train_flops\n"scaling","k1","abc123",0,"eval","ok",1000000000\n'
    from_csv = probe_rows(probe_from_bytes(csv, "csv"))[0]
    for got in (from_parquet, from_json, from_csv):
        assert got["train_flops"] == 10**9 and got["seed"] == 0 and got["status"] == "ok"
        assert got["source"] is None and got["stored_at"] is None  # absent column: missing
    for got in (from_parquet, from_json):
        assert got["val_loss_nats"] is None  # a probe table reads NaN as missing (its own semantics)
        assert got["config_json"] == SEED.to_json() and got["grad_norm"] == 0.5
    with pytest.raises(ValueError, match="probe table is missing column.*run_key"):
        probe_from_bytes(b'probe,seed\n"scaling",0\n', "csv")


def test_result_table_keeps_nan_as_a_value_and_probe_table_as_missing() -> None:
    wl = Workload(batch=1, seq_len=128)
    result = ProfileRecord(**base_fields(SEED, wl, measurement="memory", phase="forward", device="cpu",
                                         device_name="cpu"), memory_rel_err=math.nan)
    assert math.isnan(RESULT_ROWS.python_rows(RESULT_ROWS.to_frame([result]))[0]["memory_rel_err"])
    assert probe_rows(probe_frame([probe_row(val_loss_nats=math.nan)]))[0]["val_loss_nats"] is None


def test_the_sqlite_mapping_is_the_bases_for_both_stores(tmp_path) -> None:
    store = ResultStore(tmp_path / "r.sqlite")
    wl = Workload(batch=1, seq_len=128)
    result = ProfileRecord(**base_fields(SEED, wl, measurement="flops", phase="forward", device="cpu",
                                         device_name="cpu"), predicted_flops=HUGE)
    store.add([result], cache_key="point")
    # beyond SQLite's 64 bits: decimal digits in a BLOB (as TEXT, the INTEGER column turned them into a REAL and
    # this count came back as ...910272: the store lost the low digits before the base took the mapping over)
    assert store.cached("point")[0].predicted_flops == HUGE
    assert store.query()["predicted_flops"].tolist() == [HUGE]
    assert RESULT_ROWS.sql_value("predicted_flops", HUGE) == str(HUGE).encode()
    assert RESULT_ROWS.python_value("predicted_flops", str(HUGE).encode()) == HUGE
    assert RESULT_ROWS.python_value("predicted_flops", str(HUGE)) == HUGE
    assert RESULT_ROWS.sql_value("predicted_flops", 2**63 - 1) == 2**63 - 1  # fits: a plain INTEGER
    assert RESULT_ROWS.sql_type("predicted_flops") == "INTEGER" and RESULT_ROWS.sql_type("latency_min_ms") == "REAL"
    assert PROBE_ROWS.sql_type("seed") == "INTEGER" and PROBE_ROWS.sql_type("probe") == "TEXT"
    rows = [probe_row(train_flops=HUGE)]
    probe_store.store_run("k1", rows, store=store)
    cached = probe_store.cached_run("k1", store=store)
    assert cached[0].train_flops == HUGE and cached[0].source == "cache"


def test_a_schema_refuses_a_table_without_its_required_columns() -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Row:
        name: str
        count: int | None = None
        ratio: float | None = None

    schema = RowSchema(record=Row, title="demo table", optional=("ratio",))
    assert schema.required == ("name", "count")
    with pytest.raises(ValueError, match="demo table is missing column.*count"):
        schema.frame({"name": ["a"]})
    frame = schema.frame({"name": ["a"], "count": [2**65]})
    assert schema.python_rows(frame) == [{"name": "a", "count": 2**65, "ratio": None}]
