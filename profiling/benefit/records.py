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
* ``eval_length``: validation loss over whole windows of ``eval_seq_len_tokens`` (extrapolation probe);
* ``window``: after the last step, one row per validation window (``window_index``, 0-based, in split order) at
  ``eval_seq_len_tokens`` (the training length, and each extrapolation length): ``val_loss_nats`` (mean over the
  window's targets), ``eval_tokens``, ``eval_bytes``, ``context_gain_nats`` and, past the training length,
  ``beyond_train_len_loss_nats``. Runs evaluated on the same split share windows: the statistics pair arms per
  window and resample seeds and windows (``profiling.benefit.stats``).

``unigram_entropy_nats`` is the validation split's cross-entropy under a unigram fitted on the training split (the
loss of the best model that ignores context: the "learned nothing" line; a run that ends above it is
``not_learned``). ``val_leak_fraction`` is the share of validation tokens inside 64-byte strings that also occur
in the training split (``profiling.benefit.corpus``); ``split_version`` names the split rule. ``context_gain_nats``
is, over the targets of a window's second half, their mean loss when the model sees only their last 1 ..
``CONTEXT_HEAD_TOKENS`` input tokens (averaged) minus their loss with the whole window (paired on the same targets; above 0
when the model uses context; ``harness.short_context_nll``). ``peak_lr`` is the run's peak learning rate; ``tokens_per_param`` the
training tokens of the run's budget per parameter (``num_params``).

Extrapolation rows also carry ``loss_change_vs_train_len_nats``: the loss of the same target tokens in the
long window minus their loss when the text is cut into windows of the training length (0 for the first L
positions of a window, which see the same context either way; below 0 where the longer context helps, above
0 where the model breaks past the length it was trained on).

``source`` is ``measured`` (trained by this call) or ``cache`` (served from the result store,
``profiling.benefit.probe_store``; ``stored_at`` is when it was stored, ``timestamp`` still when it was
measured).

``status`` is ``ok``, ``diverged`` (non-finite or exploding loss: the run stopped there, a result not a
crash), ``error``, ``timeout`` or ``cancelled``.

Frames, files and the SQLite values: the row-table base (``profiling.results.rowtable.RowSchema``, here
``PROBE_ROWS``) that the result tables use too: integers exact at any size (never through a float), ``""`` told
from missing in CSV, typed Parquet columns, formula cells neutralised. Probe-specific: a NaN reads as missing, a
frame may hold a subset of the columns (a summary), and a table needs only ``REQUIRED_COLUMNS``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xtlens.profiling.results.export import md_header
from xtlens.profiling.results.rowtable import RowSchema

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ProbeRecord", "PROBE_COLUMNS", "PROBE_INT_COLUMNS", "PROBE_FLOAT_COLUMNS", "PROBES", "STATUSES",
           "probe_frame", "probe_rows", "probe_bytes", "probe_from_bytes", "write_probe_table", "read_probe_table",
           "probe_markdown", "PROBE_ROWS", "REQUIRED_COLUMNS"]

PROBES = ("scaling", "stability", "extrapolation", "heads", "atlas")
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
    window_index: int | None = None
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
    context_gain_nats: float | None = None
    beyond_train_len_loss_nats: float | None = None
    # optimisation
    lr: float | None = None
    peak_lr: float | None = None
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
    tokens_per_param: float | None = None
    # training peak memory of this run's step (the harness's loop: ``loss = f(model(x))``, AdamW):
    # ``train_peak_bytes`` measured (CUDA: ``max_memory_allocated`` over the run; CPU: MemTracker over one tracked
    # step), ``train_peak_predicted_bytes`` the closed form's ordered peak (``core.training.training_memory``),
    # ``train_peak_method`` how the measured one was taken
    train_peak_bytes: int | None = None
    train_peak_predicted_bytes: int | None = None
    train_peak_method: str = ""
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
    val_leak_fraction: float | None = None
    split_version: str = ""
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


#: a file without these is not a probe table; any other missing column (a table from an older xtlens) reads as missing
REQUIRED_COLUMNS: tuple[str, ...] = ("probe", "run_key", "config_key", "seed", "row_kind", "status")
#: the table machinery of probe rows (``profiling.results.rowtable``)
PROBE_ROWS = RowSchema(record=ProbeRecord, title="probe table", required=REQUIRED_COLUMNS, partial_frames=True,
                       nan_is_missing=True)
PROBE_COLUMNS: tuple[str, ...] = PROBE_ROWS.columns
PROBE_INT_COLUMNS: frozenset[str] = PROBE_ROWS.int_columns
PROBE_FLOAT_COLUMNS: frozenset[str] = PROBE_ROWS.float_columns


# --- frames -------------------------------------------------------------------------------------------

def probe_frame(table: pd.DataFrame | Sequence[ProbeRecord]) -> pd.DataFrame:
    """The canonical typed frame (``Int64``, ``Float64``, ``string``) of probe rows or of a frame (a frame may
    hold a subset of the columns, a summary: the others are missing values)."""
    return PROBE_ROWS.to_frame(table)


def probe_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Python values per row (ints exact, missing -> None)."""
    return PROBE_ROWS.python_rows(frame)


# --- files --------------------------------------------------------------------------------------------

def probe_markdown(table: pd.DataFrame | Sequence[ProbeRecord]) -> str:
    """A Markdown table for reading: columns empty in every row and ``config_json`` left out, units in headers."""
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

    return PROBE_ROWS.markdown(probe_frame(table), header=header, cell=cell, hidden=("config_json", "run_key"),
                               fallback=("probe", "status"))


def probe_bytes(table: pd.DataFrame | Sequence[ProbeRecord], fmt: str) -> bytes:
    """The probe table as csv, json, parquet or md (exact integers; CSV text always quoted)."""
    return PROBE_ROWS.to_bytes(table, fmt, markdown=probe_markdown)


def probe_from_bytes(data: bytes, fmt: str) -> pd.DataFrame:
    """Read a probe table written by ``probe_bytes`` (csv, json, parquet) back into the canonical frame."""
    return PROBE_ROWS.from_bytes(data, fmt)


def write_probe_table(table: pd.DataFrame | Sequence[ProbeRecord], path: str | Path) -> Path:
    return PROBE_ROWS.write(table, path, markdown=probe_markdown)


def read_probe_table(path: str | Path) -> pd.DataFrame:
    return PROBE_ROWS.read(path)
