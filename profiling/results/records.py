"""The one row type of xtlens: a flat, unit-suffixed record of one measurement (or prediction).

Every row says what configuration and workload it is about, how it was measured (device, dtype,
versions, SDPA backend, warm-up and repeats, spread) and holds predicted and measured columns side
by side. ``to_frame`` turns rows (or a frame read from a file) into the canonical typed pandas DataFrame
(``Int64``, ``Float64``, ``string``; integers never pass through a float); ``from_frame`` reverses it.
The machinery (frames, files, SQLite values) is the row-table base's, ``profiling.results.rowtable.RowSchema``:
``RESULT_ROWS`` here, ``benefit.records.PROBE_ROWS`` for the training-probe rows.

Column families (a row fills the ones its ``measurement`` concerns; the rest stay None):

* identity: ``config_name``, ``config_json``, ``config_key``, ``measurement`` (estimate, flops,
  memory, latency, breakdown, whatif), ``phase`` (e.g. forward, attention, train_step, decode, inference) and
  ``component`` (``total`` or a part: weights, gradients, optimizer, activations, alibi_bias,
  kv_cache, a module or an operator name)
* workload: ``batch``, ``seq_len_tokens``, ``dtype``
* provenance: ``device``, ``device_name``, ``torch_version``, ``xtransformers_version``,
  ``sdpa_backend``, ``sdpa_backend_reason``, ``warmup``, ``repeats``, ``method``, ``timestamp``
* outcome: ``status`` (``ok``, ``oom``, ``error``, ``timeout``) and ``error``
* predictions (``measurement="estimate"``, from ``core.cost_model.predictions``): ``quantity`` (the
  unit-suffixed key of ``estimate()``), ``predicted_params`` / ``predicted_flops`` / ``predicted_bytes``;
  ``method`` says the counting variant (full square, causal, fused backward). Per-token and count
  quantities stay in the CLI's JSON (``estimate()``), not in rows.
* FLOPs: ``predicted_flops``, ``torch_counter_flops``, ``fvcore_macs``, ``fvcore_flops``,
  ``flops_rel_err`` (max relative disagreement of the measured counts against the prediction)
* memory: ``predicted_bytes``, ``measured_bytes``, ``memory_rel_err``
* latency: ``latency_min_ms``, ``latency_median_ms``, ``latency_max_ms``, ``tokens_per_s``,
  ``achieved_flops_per_s``, ``peak_fraction``
* latency breakdown (``measurement="breakdown"``, ``component`` = a part of ``core.roofline.LATENCY_PARTS``
  or a measured-only part): the latency columns per part, ``predicted_latency_ms`` (roofline of the
  device), ``predicted_flops`` and ``bytes_moved`` (closed-form work of the part)
* what-if attention implementations (``measurement="whatif"``, ``component`` = the implementation):
  latency columns, ``logits_rel_err`` (against the as-built model), ``speedup_vs_asbuilt``, ``compile_s``
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from xtlens.core.config import ModelConfig, Workload
from xtlens.profiling.results.rowtable import (  # noqa: F401 - re-exported: the names every row table uses
    INT64_MAX,
    NONFINITE_JSON,
    RowSchema,
    arrow_safe,
    float_array,
    int_array,
    is_missing,
    json_safe,
)

if TYPE_CHECKING:  # pandas is imported lazily: the CLI's estimate path does not need it
    import pandas as pd

STATUSES = ("ok", "oom", "error", "timeout")
MEASUREMENTS = ("estimate", "flops", "memory", "latency", "breakdown", "whatif")
# what a sweep can be asked to measure -> the ``measurement`` of its rows
_MEASUREMENT_OF = {"flops_breakdown": "flops"}


def measurement_of(what: str) -> str:
    """The ``measurement`` column of the rows a sweep point of ``what`` gives (``flops_breakdown`` -> ``flops``)."""
    return _MEASUREMENT_OF.get(what, what)


@dataclass(frozen=True, kw_only=True)
class ProfileRecord:
    # identity
    config_name: str
    config_json: str
    config_key: str
    measurement: str
    phase: str
    component: str = "total"
    # workload
    batch: int
    seq_len_tokens: int
    dtype: str
    # provenance
    device: str
    device_name: str
    torch_version: str | None = None
    xtransformers_version: str | None = None
    sdpa_backend: str | None = None
    sdpa_backend_reason: str | None = None
    warmup: int | None = None
    repeats: int | None = None
    method: str | None = None
    timestamp: str = ""
    # outcome
    status: str = "ok"
    error: str | None = None
    # predictions (measurement="estimate"): the unit-suffixed key of core.cost_model.estimate()
    quantity: str | None = None
    predicted_params: int | None = None
    # FLOPs
    predicted_flops: int | None = None
    torch_counter_flops: int | None = None
    fvcore_macs: int | None = None
    fvcore_flops: int | None = None
    flops_rel_err: float | None = None
    # memory
    predicted_bytes: int | None = None
    measured_bytes: int | None = None
    memory_rel_err: float | None = None
    # latency
    latency_min_ms: float | None = None
    latency_median_ms: float | None = None
    latency_max_ms: float | None = None
    tokens_per_s: float | None = None
    achieved_flops_per_s: float | None = None
    peak_fraction: float | None = None
    # latency breakdown, what-if implementations and roofline predictions (profiling.measure.breakdown / whatif)
    predicted_latency_ms: float | None = None
    bytes_moved: int | None = None
    logits_rel_err: float | None = None
    speedup_vs_asbuilt: float | None = None
    compile_s: float | None = None
    # the training / serving setup the row describes (core.setup, JSON: {"training": {...}, "serving": {...}});
    # empty for the single-device, single-dtype rows
    setup_json: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status = {self.status!r} is not allowed: one of {', '.join(STATUSES)}")
        if self.measurement not in MEASUREMENTS:
            raise ValueError(f"measurement = {self.measurement!r} is not allowed: one of {', '.join(MEASUREMENTS)}")
        if not self.timestamp:
            object.__setattr__(self, "timestamp", now_iso())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def config(self) -> ModelConfig:
        return ModelConfig.from_json(self.config_json)


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ProfileRecord))
INT_COLUMNS = tuple(f.name for f in fields(ProfileRecord) if f.type in ("int", "int | None"))
FLOAT_COLUMNS = tuple(f.name for f in fields(ProfileRecord) if f.type in ("float", "float | None"))


# columns added after the first release: a table written before them reads back with them empty
LATER_COLUMNS = ("quantity", "predicted_params", "predicted_latency_ms", "bytes_moved", "logits_rel_err",
                 "speedup_vs_asbuilt", "compile_s", "setup_json")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def config_key(cfg: ModelConfig | str) -> str:
    """Short stable hash of a configuration (12 hex digits of SHA-256 of its sorted JSON).

    Also takes the JSON text itself (a grid combination that did not validate has no ``ModelConfig``)."""
    text = cfg if isinstance(cfg, str) else cfg.to_json()
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def base_fields(cfg: ModelConfig, wl: Workload, *, config_name: str = "", measurement: str, phase: str,
                device: str, device_name: str) -> dict[str, Any]:
    """The identity, workload and device columns every row of (cfg, wl) shares."""
    return {
        "config_name": config_name or config_key(cfg),
        "config_json": cfg.to_json(),
        "config_key": config_key(cfg),
        "measurement": measurement,
        "phase": phase,
        "batch": wl.batch,
        "seq_len_tokens": wl.seq_len,
        "dtype": wl.dtype,
        "device": device,
        "device_name": device_name,
    }


def rel_err(measured: float | None, predicted: float | None) -> float | None:
    """|measured - predicted| / |predicted|; None when either is missing or the prediction is 0."""
    if measured is None or predicted is None or predicted == 0:
        return None
    return abs(measured - predicted) / abs(predicted)


# --- tables: the row-table base (profiling.results.rowtable) over ProfileRecord ------------------------------------------

#: the table machinery of result rows: frames, CSV / JSON / Parquet, SQLite columns (``profiling.results.rowtable``);
#: a table written before ``LATER_COLUMNS`` joined reads back with them empty
RESULT_ROWS = RowSchema(record=ProfileRecord, title="table", optional=LATER_COLUMNS)


def frame_from_columns(columns: dict[str, list[Any]]) -> pd.DataFrame:
    """Typed canonical frame from python values per column, never passing integers through a float."""
    return RESULT_ROWS.frame(columns)


def to_frame(table: pd.DataFrame | Sequence[ProfileRecord]) -> pd.DataFrame:
    """The canonical typed frame of records or of a frame (extra columns dropped, ints kept exact)."""
    return RESULT_ROWS.to_frame(table)


def from_frame(frame: pd.DataFrame) -> list[ProfileRecord]:
    """Rows of a canonical frame as ``ProfileRecord`` (missing values become None; ints exact)."""
    out = []
    for row in python_rows(to_frame(frame)):
        row["timestamp"] = row["timestamp"] or ""
        out.append(ProfileRecord(**row))
    return out


def python_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Python values per row of a canonical frame (ints exact, missing -> None, NaN kept)."""
    return RESULT_ROWS.python_rows(frame)


def records_to_json(records: list[ProfileRecord]) -> str:
    """Standard JSON (``allow_nan=False``): non-finite floats as strings, see ``json_safe``."""
    return json.dumps([json_safe(r.to_dict()) for r in records], indent=1, sort_keys=False, allow_nan=False)


def records_from_json(text: str) -> list[ProfileRecord]:
    rows = json.loads(text)
    return [ProfileRecord(**{k: NONFINITE_JSON.get(v, v) if k in FLOAT_COLUMNS and isinstance(v, str) else v
                             for k, v in row.items()}) for row in rows]


# --- predictions as rows ------------------------------------------------------------------------------

_PREDICTED_COLUMN = {"params": "predicted_params", "flops": "predicted_flops", "bytes": "predicted_bytes"}
ESTIMATE_DEVICE = "closed form"


def setup_json(training: Any = None, serving: Any = None) -> str | None:
    """The ``setup_json`` column for a ``core.setup.TrainingSetup`` and / or ``ServingSetup`` (None without)."""
    if training is None and serving is None:
        return None
    out = {}
    if training is not None:
        out["training"] = training.to_dict()
    if serving is not None:
        out["serving"] = serving.to_dict()
    return json.dumps(out, sort_keys=True)


def estimate_records(cfg: ModelConfig, wl: Workload, *, config_name: str = "", training: Any = None,
                     serving: Any = None) -> list[ProfileRecord]:
    """``core.cost_model.predictions`` as rows (``measurement="estimate"``, device ``closed form``): every
    parameter, FLOP and byte quantity, in the ``phase`` / ``component`` vocabulary of the measured rows; under
    the ``training`` / ``serving`` setups when given (recorded in ``setup_json``)."""
    from xtlens.core.cost_model import predictions

    rows = []
    setup = setup_json(training, serving)
    for p in predictions(cfg, wl, training=training, serving=serving):
        column = _PREDICTED_COLUMN.get(p.unit)
        if column is None:
            continue
        base = base_fields(cfg, wl, config_name=config_name, measurement="estimate", phase=p.phase,
                           device=ESTIMATE_DEVICE, device_name=ESTIMATE_DEVICE)
        rows.append(ProfileRecord(**base, component=p.component, quantity=p.quantity, method=p.variant or None,
                                  setup_json=setup, **{column: int(p.value)}))
    return rows
