"""Issue 8: exact integers of any size in every format, standard JSON, neutralised formula cells, and the one
boundary for uploaded tables and session files (size cap, validation, content-hash cache, only ConfigError)."""

from __future__ import annotations

import csv
import decimal
import io
import json
import math

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from xtlens.core.config import PRESETS, ConfigError, Workload
from xtlens.dashboard.session import session_io
from xtlens.profiling.results import uploads
from xtlens.profiling.results.export import as_frame, frame_to_records, from_bytes, to_bytes
from xtlens.profiling.results.records import (
    FLOAT_COLUMNS,
    INT_COLUMNS,
    ProfileRecord,
    base_fields,
    records_from_json,
    records_to_json,
)

HUGE = 3 * 10**26 + 7  # a FLOP count of a 70B-class shape: far beyond int64, exact
BEYOND_DECIMAL = 10**45 + 1  # beyond decimal128(38): Parquet keeps it as text


def _row(**changes) -> ProfileRecord:
    fields = base_fields(PRESETS["seed"], Workload(batch=4, seq_len=8192), config_name="seed", measurement="flops",
                         phase="forward", device="cpu", device_name="CPU")
    fields.update(predicted_flops=HUGE, torch_counter_flops=HUGE + 1, fvcore_macs=2**63, timestamp="t")
    fields.update(changes)
    return ProfileRecord(**fields)


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_counts_beyond_int64_round_trip_exactly(fmt) -> None:
    rows = [_row(), _row(fvcore_flops=BEYOND_DECIMAL, predicted_bytes=-(2**64), flops_rel_err=math.nan),
            _row(predicted_flops=12)]
    frame = as_frame(rows)
    assert frame["predicted_flops"].tolist() == [HUGE, HUGE, 12]  # exact Python ints in the frame
    back = frame_to_records(from_bytes(to_bytes(frame, fmt), fmt))
    assert [r.predicted_flops for r in back] == [HUGE, HUGE, 12]
    assert back[1].fvcore_flops == BEYOND_DECIMAL and back[0].fvcore_macs == 2**63
    assert back[1].predicted_bytes == -(2**64)
    assert math.isnan(back[1].flops_rel_err) and back[0].flops_rel_err is None  # NaN is not "missing"


def test_parquet_types_for_big_counts_are_documented_ones() -> None:
    table = pq.read_table(io.BytesIO(to_bytes([_row(fvcore_flops=BEYOND_DECIMAL)], "parquet")))
    assert table.schema.field("predicted_flops").type == pa.decimal128(38, 0)
    assert table.schema.field("fvcore_flops").type == pa.string()
    assert table.schema.field("batch").type == pa.int64()


def _strict_json(text: str):
    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def test_json_exports_are_standard_json_and_nan_inf_round_trip() -> None:
    rows = [_row(flops_rel_err=math.inf, latency_min_ms=-math.inf, latency_max_ms=math.nan)]
    doc = _strict_json(to_bytes(rows, "json").decode())
    assert doc[0]["flops_rel_err"] == "Infinity" and doc[0]["latency_max_ms"] == "NaN"
    back = frame_to_records(from_bytes(to_bytes(rows, "json"), "json"))[0]
    assert back.flops_rel_err == math.inf and back.latency_min_ms == -math.inf and math.isnan(back.latency_max_ms)
    again = records_from_json(records_to_json(rows))[0]
    assert again.flops_rel_err == math.inf and math.isnan(again.latency_max_ms)
    _strict_json(records_to_json(rows))


def test_session_files_are_standard_json_and_keep_big_ints_and_nan() -> None:
    snap = session_io.make(PRESETS["seed"], Workload(), "cpu", [], [("t", as_frame([_row(flops_rel_err=math.nan,
                                                                                          memory_rel_err=math.inf)]))])
    text = session_io.to_json(snap)
    _strict_json(text)
    back = session_io.from_json(text).results[0][1]
    row = frame_to_records(back)[0]
    assert row.predicted_flops == HUGE and math.isnan(row.flops_rel_err) and row.memory_rel_err == math.inf


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_formula_cells_are_neutralised_on_export_and_restored_on_read(fmt) -> None:
    link = '=HYPERLINK("http://example.invalid","x")'
    rows = [_row(error=link, method="+1", config_name="'=already quoted", device_name="@SUM(A1)")]
    data = to_bytes(rows, fmt)
    if fmt == "csv":
        text = data.decode()
        assert "\"'=HYPERLINK(" in text and "\"'+1\"" in text and "\"'@SUM(A1)\"" in text
        assert "\"''=already quoted\"" in text
    else:
        table = pq.read_table(io.BytesIO(data))
        assert table.column("error")[0].as_py() == "'" + link
    back = frame_to_records(from_bytes(data, fmt))[0]
    assert (back.error, back.method, back.config_name, back.device_name) == (link, "+1", "'=already quoted",
                                                                             "@SUM(A1)")


# --- the upload boundary ---------------------------------------------------------------------------

def _csv(rows=None, **changes) -> bytes:
    return to_bytes(rows or [_row(**changes)], "csv")


def _upload_error(name, data, fmt) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        uploads.read_table_upload(name, data, fmt)
    assert f"file {name}" in str(info.value)
    return info.value


def test_a_csv_header_field_over_128_kib_is_a_clear_error() -> None:
    data = _csv().replace(b"config_name", b"x" * 200_000, 1)
    _upload_error("wide.csv", data, "csv")


@pytest.mark.parametrize("bad", ["Infinity", "1e400", "inf", "NaN", "12abc"])
def test_integer_columns_holding_non_integers_name_the_column(bad) -> None:
    data = _csv().replace(str(HUGE).encode(), bad.encode(), 1)
    assert "predicted_flops" in str(_upload_error("bad.csv", data, "csv"))


def test_an_integer_of_2_pow_70_is_read_exactly() -> None:
    data = _csv().replace(str(HUGE).encode(), str(2**70).encode(), 1)
    assert uploads.read_table_upload("big.csv", data, "csv")["predicted_flops"].tolist() == [2**70]


def test_a_uint64_parquet_column_is_read_exactly() -> None:
    table = pq.read_table(io.BytesIO(to_bytes([_row(predicted_flops=1)], "parquet")))
    i = table.schema.get_field_index("fvcore_macs")
    table = table.set_column(i, "fvcore_macs", pa.array([2**64 - 1], type=pa.uint64()))
    sink = io.BytesIO()
    pq.write_table(table, sink)
    assert uploads.read_table_upload("u.parquet", sink.getvalue(), "parquet")["fvcore_macs"].tolist() == [2**64 - 1]


def test_json_nested_100k_deep_is_a_clear_error() -> None:
    assert "nested too deeply" in str(_upload_error("deep.json", b"[" * 100_000 + b"]" * 100_000, "json"))


@pytest.mark.parametrize(("changes", "column"), [
    ({"status": "pwned"}, "status"),
    ({"batch": -5}, "batch"),
    ({"measured_bytes": -1}, "measured_bytes"),
    ({"latency_median_ms": -0.5}, "latency_median_ms"),
])
def test_implausible_rows_are_refused_naming_column_and_row(changes, column) -> None:
    frame = as_frame([_row()]).astype(object)
    for k, v in changes.items():
        frame.loc[0, k] = v
    data = to_bytes(frame, "json") if column != "status" else _csv().replace(b'"ok"', b'"pwned"')
    exc = _upload_error("bad.json" if column != "status" else "bad.csv", data, "json" if column != "status" else "csv")
    assert f"column {column}, row 1" in str(exc)


def test_a_missing_status_column_is_named() -> None:
    rows = json.loads(to_bytes([_row()], "json"))
    for r in rows:
        del r["status"]
    assert "status" in str(_upload_error("nostatus.json", json.dumps(rows).encode(), "json"))


def test_oversized_files_are_refused_before_parsing(monkeypatch) -> None:
    monkeypatch.setattr(uploads, "MAX_UPLOAD_BYTES", 1_000)
    with pytest.raises(ConfigError, match="at most"):
        uploads.cached("table", "big.csv", b"x" * 2_000, lambda data: pytest.fail("parsed"))


def test_parsed_uploads_are_cached_by_content_and_copied() -> None:
    calls = []

    def parse(data: bytes) -> pd.DataFrame:
        calls.append(data)
        return pd.DataFrame({"a": [1]})

    first = uploads.cached("test", "a.csv", b"content-1", parse)
    first.loc[0, "a"] = 99  # a caller's change does not reach the cache
    second = uploads.cached("test", "renamed.csv", b"content-1", parse)
    assert len(calls) == 1 and second["a"].tolist() == [1]
    uploads.cached("test", "a.csv", b"content-2", parse)
    assert len(calls) == 2

    def fails(data: bytes):
        calls.append(data)
        raise RecursionError
    for _ in range(2):
        with pytest.raises(ConfigError, match="nested too deeply"):
            uploads.cached("test", "deep.json", b"content-3", fails)
    assert len(calls) == 3  # a failure is remembered too


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.sampled_from(["csv", "json", "parquet"]))
def test_any_bytes_give_a_table_or_a_config_error(data, fmt) -> None:
    try:
        uploads.read_table_upload("fuzz." + fmt, data, fmt)
    except ConfigError as exc:
        assert exc.field.startswith("file fuzz.")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2000), st.binary(min_size=1, max_size=8))
def test_damaged_valid_files_give_a_table_or_a_config_error(cut, junk) -> None:
    for fmt in ("csv", "json", "parquet"):
        data = to_bytes([_row()], fmt)
        damaged = data[:cut] + junk + data[cut + len(junk):]
        try:
            uploads.read_table_upload("d." + fmt, damaged, fmt)
        except ConfigError:
            pass


def test_session_files_with_bad_rows_are_value_errors() -> None:
    snap = session_io.make(PRESETS["seed"], Workload(), "cpu", [], [("t", as_frame([_row()]))])
    doc = json.loads(session_io.to_json(snap))
    doc["results"][0]["rows"][0]["batch"] = -5
    with pytest.raises(ValueError, match="batch"):
        session_io.from_json(json.dumps(doc))
    doc["results"][0]["rows"][0]["batch"] = "Infinity"
    with pytest.raises(ValueError, match="batch"):
        session_io.from_json(json.dumps(doc))
    with pytest.raises(ValueError, match="nested"):
        session_io.from_json("[" * 100_000)


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet", "md"])
def test_plain_page_tables_with_big_counts_download_in_every_format(fmt) -> None:
    from xtlens.dashboard import exporting

    frame = pd.DataFrame({"seq_len_tokens": [8192, 16384], "forward_flops": [HUGE, 12], "ratio": [math.inf, 0.5]})
    data = exporting.table_bytes(frame, fmt)
    if fmt == "json":
        assert _strict_json(data.decode())[0]["forward_flops"] == HUGE
    elif fmt == "parquet":
        back = pq.read_table(io.BytesIO(data)).column("forward_flops").to_pylist()
        assert [int(v) for v in back] == [HUGE, 12]
    else:
        assert str(HUGE) in data.decode().replace(",", "")


# --- issue 22: counts kept exactly or refused, never rounded ------------------------------------------------

def _with_value(fmt: str, column: str, value) -> bytes:
    """A one-row table in ``fmt`` whose ``column`` holds ``value`` as that format writes such a number: CSV text,
    a JSON number, a Parquet double (or decimal for an integer beyond int64)."""
    if fmt == "csv":
        header, row = csv.reader(io.StringIO(to_bytes([_row()], "csv").decode()))
        row[header.index(column)] = repr(value) if isinstance(value, float) else str(value)
        numeric = INT_COLUMNS + FLOAT_COLUMNS
        cells = [v if c in numeric or v == "" else '"' + v.replace('"', '""') + '"' for c, v in zip(header, row, strict=True)]
        return (",".join(header) + "\n" + ",".join(cells) + "\n").encode()
    if fmt == "json":
        rows = json.loads(to_bytes([_row()], "json"))
        rows[0][column] = value
        return json.dumps(rows).encode()
    table = pq.read_table(io.BytesIO(to_bytes([_row()], "parquet")))
    kind = pa.float64() if isinstance(value, float) else pa.decimal128(38, 0)
    table = table.set_column(table.schema.get_field_index(column), column, pa.array([value], type=kind))
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
@pytest.mark.parametrize("column", ["batch", "predicted_flops", "measured_bytes"])
def test_a_count_of_1_5_is_refused_naming_column_row_and_range_never_rounded(fmt, column) -> None:
    exc = _upload_error(f"half.{fmt}", _with_value(fmt, column, 1.5), fmt)
    assert f"column {column}, row 1 = " in str(exc) and "1.5" in str(exc)
    assert "never rounded" in str(exc)
    assert ("from 1 to 4,096" if column == "batch" else "whole number >= 0") in str(exc)


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_a_batch_of_2_pow_70_is_refused_naming_the_limit(fmt) -> None:
    exc = _upload_error(f"big.{fmt}", _with_value(fmt, "batch", 2**70), fmt)
    assert f"column batch, row 1 = {2**70}" in str(exc) and "from 1 to 4,096" in str(exc)


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_a_sequence_length_beyond_the_largest_max_seq_len_is_refused(fmt) -> None:
    exc = _upload_error(f"long.{fmt}", _with_value(fmt, "seq_len_tokens", 2**21), fmt)
    assert "column seq_len_tokens, row 1" in str(exc) and "1,048,576" in str(exc)


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_whole_counts_written_as_floats_are_kept_exactly(fmt) -> None:
    frame = uploads.read_table_upload(f"whole.{fmt}", _with_value(fmt, "batch", 8.0), fmt)
    assert frame["batch"].tolist() == [8]
    frame = uploads.read_table_upload(f"huge.{fmt}", _with_value(fmt, "predicted_flops", HUGE), fmt)
    assert frame["predicted_flops"].tolist() == [HUGE]


def test_whole_counts_in_decimal_or_exponent_text_are_exact() -> None:
    huge_point = f"{HUGE}.0"
    data = _csv().replace(str(HUGE).encode(), huge_point.encode(), 1)
    assert uploads.read_table_upload("p.csv", data, "csv")["predicted_flops"].tolist() == [HUGE]
    rows = json.loads(to_bytes([_row()], "json"))
    text = json.dumps(rows).replace(str(HUGE), "3.00000000000000000000000007e26")  # exact in JSON too
    assert uploads.read_table_upload("e.json", text.encode(), "json")["predicted_flops"].tolist() == [HUGE]
    near = json.dumps(rows).replace(str(HUGE), "3.000000000000000000000000075e26")  # not whole: refused
    assert "never rounded" in str(_upload_error("n.json", near.encode(), "json"))


def test_session_rows_with_a_huge_or_fractional_batch_are_refused_naming_the_table() -> None:
    snap = session_io.make(PRESETS["seed"], Workload(), "cpu", [], [("mine", as_frame([_row()]))])
    for bad, words in ((2**70, "from 1 to 4,096"), (1.5, "never rounded")):
        doc = json.loads(session_io.to_json(snap))
        doc["results"][0]["rows"][0]["batch"] = bad
        with pytest.raises(ValueError, match="session table 'mine': column batch, row 1") as info:
            session_io.from_json(json.dumps(doc))
        assert words in str(info.value)


def test_a_lone_surrogate_in_a_text_cell_is_refused_naming_column_and_row() -> None:
    rows = json.loads(to_bytes([_row(), _row()], "json"))
    rows[1]["config_name"] = "\ud800"
    data = json.dumps(rows).encode()  # ASCII JSON with the escape \ud800: valid JSON, not valid text
    assert "column config_name, row 2" in str(_upload_error("s.json", data, "json"))


# --- issue 22: the Benefits tab's probe-table upload goes through the same boundary ---------------------------

def _probe_csv() -> bytes:
    from xtlens.profiling.benefit.records import PROBE_ROWS

    return (",".join(PROBE_ROWS.columns) + "\n").encode()


def test_a_deep_json_probe_table_is_a_named_failure() -> None:
    with pytest.raises(ConfigError, match="file deep.json.*nested too deeply"):
        uploads.read_probe_upload("deep.json", b"[" * 100_000 + b"]" * 100_000, "json")


def test_a_probe_table_with_a_128_kib_header_field_is_a_named_failure() -> None:
    data = _probe_csv().replace(b"probe", b"p" * 200_000, 1)
    with pytest.raises(ConfigError, match="file wide.csv"):
        uploads.read_probe_upload("wide.csv", data, "csv")


def test_an_oversized_probe_table_is_refused_before_parsing(monkeypatch) -> None:
    monkeypatch.setattr(uploads, "MAX_UPLOAD_BYTES", 100)
    with pytest.raises(ConfigError, match="at most"):
        uploads.read_probe_upload("big.csv", _probe_csv() + b"x" * 200, "csv")


def test_a_probe_table_count_of_1_5_is_refused_naming_column_and_row() -> None:
    from xtlens.profiling.benefit.records import PROBE_ROWS

    count = sorted(PROBE_ROWS.int_columns)[0]
    row = {c: ("x" if c not in PROBE_ROWS.numeric_columns else 1) for c in PROBE_ROWS.columns}
    row[count] = 1.5
    with pytest.raises(ConfigError, match=f"file p.json: column {count}, row 1"):
        uploads.read_probe_upload("p.json", json.dumps([row]).encode(), "json")


def test_the_benefits_view_reads_probe_uploads_through_the_boundary() -> None:
    from pathlib import Path

    source = (Path(__file__).resolve().parents[2] / "dashboard" / "views" / "benefits.py").read_text()
    assert "upload_boundary.read_probe_upload(" in source and "probe_from_bytes" not in source


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.sampled_from(["csv", "json", "parquet"]))
def test_any_bytes_give_a_probe_table_or_a_config_error(data, fmt) -> None:
    try:
        uploads.read_probe_upload("fuzz." + fmt, data, fmt)
    except ConfigError as exc:
        assert exc.field.startswith("file fuzz.")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["batch", "seq_len_tokens", "predicted_flops", "warmup"]),
       st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**80), 2**80),
                 st.text(max_size=12)))
def test_any_value_in_a_count_column_is_kept_exactly_or_refused(column, value) -> None:
    rows = json.loads(to_bytes([_row()], "json"))
    rows[0][column] = value
    try:
        frame = uploads.read_table_upload("v.json", json.dumps(rows).encode(), "json")
    except ConfigError as exc:
        assert f"column {column}" in str(exc)
        return
    kept = frame[column].tolist()[0]
    if isinstance(value, str) and not value.strip():
        assert kept is pd.NA  # an empty cell is missing
        return
    written = json.dumps(value)  # what the file says: a JSON number is read exactly as written, never rounded
    assert kept == (int(decimal.Decimal(written)) if isinstance(value, float) else
                    int(decimal.Decimal(value)) if isinstance(value, str) else value)


def test_the_same_unreadable_bytes_under_another_name_are_named_by_that_name() -> None:
    # the content cache keeps the reason, not the first caller's file name
    data = b"[" * 5_000 + b"]" * 5_000
    assert "file first.json" in str(_upload_error("first.json", data, "json"))
    second = str(_upload_error("second.json", data, "json"))
    assert "file second.json" in second and "first.json" not in second and "nested too deeply" in second
