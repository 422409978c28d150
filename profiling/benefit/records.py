"""The probe row type: one flat, unit-suffixed row per (run, evaluation step[, layer | position bucket]).

A probe is a set of training runs (``run_key``: configuration, probe, variant, corpus, budget, seed, device,
versions). Each run writes rows of four kinds (``row_kind``):

* ``eval``: one per evaluation step: ``train_loss_nats`` (mean of the steps since the last evaluation),
  ``val_loss_nats`` and ``val_bits_per_byte`` on the validation split, ``grad_norm`` (global L2 norm before
  clipping), ``clip_fraction`` (share of those steps where clipping scaled the gradient), ``lr``,
  ``tokens_seen``, ``train_flops`` (cost model's training-step FLOPs x steps), ``tokens_per_s``;
* ``layer``: per evaluation step and layer (``layer`` = ``embedding``, ``layers.0 (attn)``, ``layers.1 (ff)``,
  ..., ``final_norm``, ``to_logits``): ``grad_norm`` and ``update_to_weight_ratio`` (``||dW|| / ||W||`` of that
  optimizer step);
* ``position``: extrapolation probe: validation loss per position bucket ``[position_start_tokens,
  position_end_tokens)`` at ``eval_seq_len_tokens``;
* ``eval_length``: validation loss over whole windows of ``eval_seq_len_tokens`` (extrapolation probe).

Extrapolation rows also carry ``loss_change_vs_train_len_nats``: the loss of the same target tokens in the
long window minus their loss when the text is cut into windows of the training length (0 for the first L
positions of a window, which see the same context either way; below 0 where the longer context helps, above
0 where the model breaks past the length it was trained on).

``source`` is ``measured`` (trained by this call) or ``cache`` (served from the result store,
``profiling.benefit.probe_store``; ``stored_at`` is when it was stored, ``timestamp`` still when it was
measured).

``status`` is ``ok``, ``diverged`` (non-finite or exploding loss: the run stopped there, a result not a
crash), ``error``, ``timeout`` or ``cancelled``.

Files: the same exact-integer machinery as ``profiling.export`` (integers never pass through a float,
``""`` told from missing in CSV, Parquet typed columns), over ``PROBE_COLUMNS``.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xtlens.profiling.export import csv_field, csv_text_columns, format_for, md_header, restored
from xtlens.profiling.records import _float_value, _int_value, _str_value, is_missing

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ProbeRecord", "PROBE_COLUMNS", "PROBE_INT_COLUMNS", "PROBE_FLOAT_COLUMNS", "PROBES", "STATUSES",
           "probe_frame", "probe_rows", "probe_bytes", "probe_from_bytes", "write_probe_table", "read_probe_table",
           "probe_markdown"]

PROBES = ("scaling", "stability", "extrapolation", "heads")
STATUSES = ("ok", "diverged", "error", "timeout", "cancelled")


@dataclass(frozen=True, kw_only=True)
class ProbeRecord:
    # identity
    probe: str
    run_key: str
    config_name: str
    config_key: str
    config_json: str
    variant: str = ""
    axis: str = ""
    axis_value: int | None = None
    budget_kind: str = ""  # tokens, flops or epochs
    seed: int
    row_kind: str = "eval"
    layer: str = ""
    # progress
    step: int | None = None
    steps_total: int | None = None
    tokens_seen: int | None = None
    train_flops: int | None = None
    budget_tokens: int | None = None
    budget_flops: int | None = None
    # losses
    train_loss_nats: float | None = None
    val_loss_nats: float | None = None
    val_bits_per_byte: float | None = None
    unigram_entropy_nats: float | None = None
    # optimisation
    lr: float | None = None
    grad_norm: float | None = None
    clip_fraction: float | None = None
    grad_clip: float | None = None
    update_to_weight_ratio: float | None = None
    # positions
    train_seq_len_tokens: int | None = None
    eval_seq_len_tokens: int | None = None
    position_start_tokens: int | None = None
    position_end_tokens: int | None = None
    loss_change_vs_train_len_nats: float | None = None  # extrapolation: long window minus training-length windows
    # model
    batch: int | None = None
    num_params: int | None = None
    non_embedding_params: int | None = None
    kv_cache_bytes_per_token: int | None = None
    # speed
    tokens_per_s: float | None = None
    elapsed_s: float | None = None
    # data
    corpus_name: str = ""
    corpus_sha256: str = ""
    vocab_size: int | None = None
    train_split_tokens: int | None = None
    val_split_tokens: int | None = None
    val_split_bytes: int | None = None
    eval_tokens: int | None = None
    eval_bytes: int | None = None
    # provenance
    device: str = ""
    device_name: str = ""
    autocast_dtype: str = ""
    torch_version: str = ""
    xtransformers_version: str = ""
    timestamp: str = ""
    status: str = "ok"
    error: str | None = None
    # where this row came from: "measured" (trained by this call) or "cache" (the result store; stored_at says
    # when it was stored, timestamp when it was measured); "" in tables from before the store
    source: str = ""
    stored_at: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r}: one of {', '.join(STATUSES)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELDS = dataclasses.fields(ProbeRecord)
PROBE_COLUMNS: tuple[str, ...] = tuple(f.name for f in _FIELDS)
PROBE_INT_COLUMNS: frozenset[str] = frozenset(f.name for f in _FIELDS if f.type in ("int", "int | None"))
PROBE_FLOAT_COLUMNS: frozenset[str] = frozenset(f.name for f in _FIELDS if f.type == "float | None")
_PROBE_NUMERIC = PROBE_INT_COLUMNS | PROBE_FLOAT_COLUMNS
#: a file without these is not a probe table; any other missing column (a table from an older xtlens) reads as missing
REQUIRED_COLUMNS: tuple[str, ...] = ("probe", "run_key", "config_key", "seed", "row_kind", "status")


# --- frames -------------------------------------------------------------------------------------------

def _columns_of(rows: Iterable[ProbeRecord | dict[str, Any]]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {c: [] for c in PROBE_COLUMNS}
    for row in rows:
        d = row.to_dict() if isinstance(row, ProbeRecord) else row
        for c in PROBE_COLUMNS:
            out[c].append(d.get(c))
    return out


def _frame_from_columns(columns: dict[str, list[Any]]) -> pd.DataFrame:
    import pandas as pd

    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"not a probe table: missing column(s) {', '.join(missing)}")
    n = len(next(iter(columns.values()), []))
    columns = {c: columns[c] if c in columns else [None] * n for c in PROBE_COLUMNS}  # older tables: fewer columns
    data = {}
    for c in PROBE_COLUMNS:
        values = columns[c]
        if c in PROBE_INT_COLUMNS:
            data[c] = pd.array([_int_value(c, v) for v in values], dtype="Int64")
        elif c in PROBE_FLOAT_COLUMNS:
            data[c] = pd.array([_float_value(c, v) for v in values], dtype="Float64")
        else:
            data[c] = pd.Series([_str_value(v) for v in values], dtype=object).astype("string").array
    return pd.DataFrame(data, columns=list(PROBE_COLUMNS))


def probe_frame(table: pd.DataFrame | Sequence[ProbeRecord]) -> pd.DataFrame:
    """The canonical typed frame (``Int64``, ``Float64``, ``string``) of probe rows or of a frame."""
    import pandas as pd

    if isinstance(table, pd.DataFrame):
        # a frame may hold a subset of the columns (a summary): the others are missing values
        return _frame_from_columns({c: table[c].astype(object).tolist() if c in table else [None] * len(table)
                                    for c in PROBE_COLUMNS})
    return _frame_from_columns(_columns_of(table))


def probe_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Python values per row (ints exact, missing -> None)."""
    cols = {c: frame[c].astype(object).tolist() for c in PROBE_COLUMNS}
    rows = []
    for i in range(len(frame)):
        row = {}
        for c in PROBE_COLUMNS:
            v = cols[c][i]
            if is_missing(v):
                v = None
            elif c in PROBE_INT_COLUMNS:
                v = int(v)
            elif c in PROBE_FLOAT_COLUMNS:
                v = float(v)
            row[c] = v
        rows.append(row)
    return rows


def records_of(frame: pd.DataFrame) -> list[ProbeRecord]:
    out = []
    for row in probe_rows(probe_frame(frame)):
        for c in PROBE_COLUMNS:
            if row[c] is None and c not in PROBE_INT_COLUMNS and c not in PROBE_FLOAT_COLUMNS and c != "error":
                row[c] = ""
        out.append(ProbeRecord(**row))
    return out


# --- files --------------------------------------------------------------------------------------------

def probe_markdown(table: pd.DataFrame | Sequence[ProbeRecord]) -> str:
    """A Markdown table for reading: columns empty in every row and ``config_json`` left out, units in headers."""
    rows = probe_rows(probe_frame(table))
    shown = [c for c in PROBE_COLUMNS if c not in ("config_json", "run_key")
             and any(r[c] not in (None, "") for r in rows)] or ["probe", "status"]
    right = PROBE_INT_COLUMNS | PROBE_FLOAT_COLUMNS

    def cell(c: str, v: Any) -> str:
        if v is None:
            return ""
        if c.endswith("_bytes") or c.endswith("_bytes_per_token"):
            return f"{v:,}"
        if c in PROBE_INT_COLUMNS:
            return f"{v:,}"
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    def header(c: str) -> str:
        special = {"tokens_seen": "tokens seen (tokens)", "train_loss_nats": "train loss (nats/token)",
                   "val_loss_nats": "val loss (nats/token)", "val_bits_per_byte": "val (bits/byte)",
                   "unigram_entropy_nats": "unigram entropy (nats/token)", "kv_cache_bytes_per_token":
                   "KV cache (bytes/token)", "elapsed_s": "elapsed (s)"}
        return special.get(c) or (c.replace("_", " ") + " (bytes)" if c.endswith("_bytes") else md_header(c))

    lines = ["| " + " | ".join(header(c) for c in shown) + " |",
             "|" + "|".join("---:" if c in right else "---" for c in shown) + "|"]
    lines += ["| " + " | ".join(cell(c, r[c]) for c in shown) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def probe_bytes(table: pd.DataFrame | Sequence[ProbeRecord], fmt: str) -> bytes:
    """The probe table as csv, json, parquet or md (exact integers; CSV text always quoted)."""
    fmt = format_for(fmt)
    frame = probe_frame(table)
    if fmt == "md":
        return probe_markdown(frame).encode("utf-8")
    rows = probe_rows(frame)
    if fmt == "csv":
        lines = [",".join(PROBE_COLUMNS)] + [",".join(csv_field(r[c]) for c in PROBE_COLUMNS) for r in rows]
        return ("\n".join(lines) + "\n").encode("utf-8")
    if fmt == "json":
        return json.dumps(rows, indent=1, ensure_ascii=False).encode("utf-8")
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = [pa.array([r[c] for r in rows], type=pa.int64() if c in PROBE_INT_COLUMNS else pa.float64()
                       if c in PROBE_FLOAT_COLUMNS else pa.string()) for c in PROBE_COLUMNS]
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_arrays(arrays, names=list(PROBE_COLUMNS)), sink)
    return sink.getvalue()


def probe_from_bytes(data: bytes, fmt: str) -> pd.DataFrame:
    """Read a probe table written by ``probe_bytes`` (csv, json, parquet) back into the canonical frame."""
    fmt = format_for(fmt)
    if fmt == "csv":  # written with export's CSV writer (text neutralised): read with its reader
        return _frame_from_columns(restored(csv_text_columns(data), numeric=_PROBE_NUMERIC))
    if fmt == "json":
        rows = json.loads(data.decode("utf-8"))
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError("a JSON probe table is a list of row objects")
        return _frame_from_columns(_columns_of(rows))
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return _frame_from_columns(pq.read_table(io.BytesIO(data)).to_pydict())
    raise ValueError("Markdown tables are for reading only: load a .csv, .json or .parquet file")


def write_probe_table(table: pd.DataFrame | Sequence[ProbeRecord], path: str | Path) -> Path:
    path = Path(path)
    payload = probe_bytes(table, format_for(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(payload)
    tmp.replace(path)
    return path


def read_probe_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    return probe_from_bytes(path.read_bytes(), format_for(path))
