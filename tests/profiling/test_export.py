"""Exact round-trips of profiling tables through CSV, JSON and Parquet (property tests), and Markdown."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from xtlens.core.config import PRESETS, Workload
from xtlens.profiling.results.export import (
    FORMATS,
    as_frame,
    format_for,
    frame_to_records,
    from_bytes,
    md_header,
    read_records,
    read_table,
    to_bytes,
    to_markdown,
    write_table,
)
from xtlens.profiling.results.records import (
    COLUMNS,
    FLOAT_COLUMNS,
    INT_COLUMNS,
    MEASUREMENTS,
    STATUSES,
    ProfileRecord,
    base_fields,
)

TEXT_COLUMNS = [c for c in COLUMNS if c not in INT_COLUMNS and c not in FLOAT_COLUMNS]
REQUIRED_TEXT = {"config_name", "config_json", "config_key", "measurement", "phase", "component", "dtype",
                 "device", "device_name", "timestamp", "status"}

ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
floats = st.floats(allow_nan=False)  # +-inf, -0.0, subnormals included
texts = st.text(max_size=20)


@st.composite
def records(draw) -> ProfileRecord:
    row: dict = {}
    for col in COLUMNS:
        if col == "status":
            row[col] = draw(st.sampled_from(STATUSES))
        elif col == "measurement":
            row[col] = draw(st.sampled_from(MEASUREMENTS))
        elif col == "timestamp":
            row[col] = draw(st.text(min_size=1, max_size=30))
        elif col in INT_COLUMNS:
            row[col] = draw(ints) if col in ("batch", "seq_len_tokens") else draw(st.none() | ints)
        elif col in FLOAT_COLUMNS:
            row[col] = draw(st.none() | floats)
        elif col in REQUIRED_TEXT:
            row[col] = draw(texts)
        else:
            row[col] = draw(st.none() | texts)
    return ProfileRecord(**row)


record_lists = st.lists(records(), min_size=0, max_size=4)


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=record_lists)
def test_bytes_round_trip_is_exact(fmt: str, rows: list[ProfileRecord]) -> None:
    frame = as_frame(rows)
    back = from_bytes(to_bytes(frame, fmt), fmt)
    pd.testing.assert_frame_equal(back, frame, check_exact=True)
    assert list(back.columns) == list(COLUMNS)
    # value by value, including the sign of zero and None vs "" in text columns
    assert [r.to_dict() for r in frame_to_records(back)] == [r.to_dict() for r in rows]
    assert [repr(r.to_dict()) for r in frame_to_records(back)] == [repr(r.to_dict()) for r in rows]


def test_dtypes_are_canonical() -> None:
    frame = as_frame([_seed_row()])
    for col in INT_COLUMNS:
        assert str(frame[col].dtype) == "Int64", col
    for col in FLOAT_COLUMNS:
        assert str(frame[col].dtype) == "Float64", col
    for col in TEXT_COLUMNS:
        assert isinstance(frame[col].dtype, pd.StringDtype), col


def _seed_row(**changes) -> ProfileRecord:
    cfg = PRESETS["seed"]
    wl = Workload(batch=1, seq_len=8192, dtype="float32")
    fields = base_fields(cfg, wl, config_name="seed", measurement="flops", phase="forward", device="cpu",
                         device_name="CPU")
    fields.update(predicted_flops=1_256_546_369_536, torch_counter_flops=2**62 + 1, fvcore_macs=2**53 + 1,
                  flops_rel_err=0.1 + 0.2, error="", sdpa_backend=None, timestamp="2026-01-01T00:00:00+00:00")
    fields.update(changes)
    return ProfileRecord(**fields)


@pytest.mark.parametrize("suffix", [".csv", ".json", ".parquet"])
def test_file_round_trip_keeps_large_ints_and_empty_vs_missing(tmp_path, suffix: str) -> None:
    rows = [_seed_row(), _seed_row(status="oom", error='CUDA out of memory, "tried" 2 GiB\nline 2',
                                   predicted_flops=None, measured_bytes=17_179_869_184)]
    path = write_table(rows, tmp_path / f"table{suffix}")
    back = read_records(path)
    assert back == rows
    assert back[0].torch_counter_flops == 2**62 + 1
    assert back[0].fvcore_macs == 9_007_199_254_740_993
    assert back[0].predicted_flops == 1_256_546_369_536
    assert back[0].error == "" and back[0].sdpa_backend is None
    assert back[0].flops_rel_err == 0.30000000000000004
    assert read_table(path).loc[1, "measured_bytes"] == 17_179_869_184


def test_csv_text_is_plain_and_loadable_by_pandas(tmp_path) -> None:
    path = write_table([_seed_row()], tmp_path / "t.csv")
    text = path.read_text()
    assert text.splitlines()[0] == ",".join(COLUMNS)
    assert ",1256546369536," in text and ",4611686018427387905," in text and ",0.30000000000000004," in text
    plain = pd.read_csv(path)  # an ordinary reader sees the same numbers
    assert int(plain.loc[0, "predicted_flops"]) == 1_256_546_369_536
    assert plain.loc[0, "config_name"] == "seed"


def test_json_matches_records_shape() -> None:
    rows = json.loads(to_bytes([_seed_row()], "json"))
    assert rows[0]["predicted_flops"] == 1_256_546_369_536 and rows[0]["sdpa_backend"] is None
    assert list(rows[0]) == list(COLUMNS)


def test_markdown_has_units_and_gib() -> None:
    md = to_markdown([_seed_row(measured_bytes=3 * 2**30, latency_median_ms=12.5)])
    header = md.splitlines()[0]
    assert "predicted (FLOPs)" in header and "measured (GiB)" in header and "latency median (ms)" in header
    assert "seq len (tokens)" in header and "flops rel. error (%)" in header
    assert "config json" not in header and "latency max (ms)" not in header  # long / all-empty columns left out
    assert "1,256,546,369,536" in md and "3.0000" in md and "12.5" in md
    assert md.count("\n") == 3
    with pytest.raises(ValueError, match="reading only"):
        from_bytes(md.encode(), "md")


@pytest.mark.parametrize(("column", "header"), [
    ("achieved_flops_per_s", "achieved (FLOP/s)"),  # not "(FLOPs)" nor "(per s)": the longest suffix wins
    ("tokens_per_s", "tokens (per s)"),
    ("fvcore_macs", "fvcore (MACs)"),
    ("peak_fraction", "peak fraction (%)"),
    ("memory_rel_err", "memory rel. error (%)"),
    ("device_name", "device name"),
])
def test_markdown_header_units(column: str, header: str) -> None:
    assert md_header(column) == header


def test_empty_table_round_trips() -> None:
    for fmt in ("csv", "json", "parquet"):
        back = from_bytes(to_bytes([], fmt), fmt)
        assert list(back.columns) == list(COLUMNS) and len(back) == 0


def test_format_names_and_errors(tmp_path) -> None:
    assert [format_for(x) for x in ("a.CSV", "b.json", "c.parquet", "d.md", "markdown", "csv")] == [
        "csv", "json", "parquet", "md", "md", "csv"]
    assert FORMATS == ("csv", "json", "parquet", "md")
    with pytest.raises(ValueError, match="not supported"):
        format_for("table.xlsx")
    frame = as_frame([_seed_row()]).drop(columns=["device"])
    with pytest.raises(ValueError, match="missing column"):
        to_bytes(frame, "csv")
