"""The claims table: one row per claim of a probe's seed analysis, with its interval, detectable size and verdict.

A claim (``Claim``) is one sentence of what the probe set out to show ("ALiBi's loss beyond the training length is
lower than rotary's"), the metric that decides it with its unit, the estimate and its 95% interval
(``profiling.benefit.stats``), the seeds and windows behind it, the minimum detectable effect at that budget, the
verdict (``VERDICTS``: ``supported`` / ``contradicted`` / ``not_detectable`` / ``not_learned``), and the scale it
was measured at (parameters, training tokens, tokens per parameter, corpus, seeds: ``scale_line``) with the method
(the paper followed and how the interval was made).

``claims_for(frame)`` asks each probe present in a probe frame for its claims: the module
``xtlens.profiling.benefit.probe_<probe>`` and its ``claims(frame) -> list[Claim]``, imported only when that probe
has rows. ``summary_frame`` / ``summary_bytes`` / ``write_summary`` give the table as a frame or a csv / json /
parquet / md file through the row-table base (``profiling.results.rowtable.RowSchema``, as the probe rows do):
integers exact, ``""`` told from missing in CSV, formula cells neutralised, the Markdown with units.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xtlens.profiling.benefit.records import PROBES
from xtlens.profiling.benefit.stats import VERDICT_NAMES
from xtlens.profiling.results.rowtable import RowSchema

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["VERDICTS", "Claim", "SUMMARY_COLUMNS", "SUMMARY_ROWS", "ClaimsUnavailable", "claims_for",
           "summary_frame", "summary_bytes", "summary_from_bytes", "summary_markdown", "write_summary",
           "read_summary", "scale_line", "learned"]

VERDICTS: tuple[str, ...] = VERDICT_NAMES


@dataclass(frozen=True, kw_only=True)
class Claim:
    """One row of the claims table (the field order is ``SUMMARY_COLUMNS``: the issue's columns first).

    ``estimate`` / ``ci95_low`` / ``ci95_high`` / ``min_detectable_effect`` are in ``unit`` (None where the probe
    could not estimate: then the verdict is ``not_detectable`` or ``not_learned`` and ``note`` says why).
    ``windows``: validation windows per seed behind the interval (None or 0: one value per seed)."""

    claim: str
    metric: str
    estimate: float | None
    ci95_low: float | None
    ci95_high: float | None
    seeds: int
    min_detectable_effect: float | None
    verdict: str
    scale: str
    probe: str
    unit: str
    windows: int | None
    num_params: int | None
    non_embedding_params: int | None
    train_tokens: int | None
    tokens_per_param: float | None
    corpus: str
    method: str
    note: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r}: one of {', '.join(VERDICTS)}")
        if self.probe not in PROBES:
            raise ValueError(f"probe {self.probe!r}: one of {', '.join(PROBES)}")
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 0:
            raise ValueError(f"seeds={self.seeds!r}: a whole number >= 0")
        for name in ("estimate", "ci95_low", "ci95_high", "min_detectable_effect", "tokens_per_param"):
            v = getattr(self, name)
            if v is not None and not math.isfinite(v):
                raise ValueError(f"{name}={v!r}: a finite number or None")
        lo, hi = self.ci95_low, self.ci95_high
        if (lo is None) != (hi is None):
            raise ValueError("ci95_low and ci95_high: both given or both None")
        if lo is not None and hi is not None and not lo <= hi:
            raise ValueError(f"ci95_low {lo!r} above ci95_high {hi!r}")
        if self.min_detectable_effect is not None and self.min_detectable_effect < 0:
            raise ValueError(f"min_detectable_effect={self.min_detectable_effect!r}: >= 0")


#: the table machinery of claim rows (``profiling.results.rowtable``)
SUMMARY_ROWS = RowSchema(record=Claim, title="claims table", required=("claim", "metric", "verdict"),
                         partial_frames=True, nan_is_missing=True)
SUMMARY_COLUMNS: tuple[str, ...] = SUMMARY_ROWS.columns


class ClaimsUnavailable(ImportError):
    """A probe present in the frame whose claims module (``xtlens.profiling.benefit.probe_<probe>``) is not
    installed."""


def _probe_module(probe: str) -> Any:
    name = f"xtlens.profiling.benefit.probe_{probe}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name not in (name, None) and not name.startswith(f"{exc.name}."):
            raise  # the module exists but one of ITS imports is missing: that error is the one to see
        raise ClaimsUnavailable(f"the frame holds {probe} probe rows but this xtlens has no claims for them: module "
                                f"{name} is missing (update xtlens, or drop the {probe} rows)") from exc


def claims_for(frame: pd.DataFrame) -> list[Claim]:
    """The claims of every probe present in ``frame`` (a probe frame), in ``records.PROBES`` order: each probe's
    ``xtlens.profiling.benefit.probe_<probe>.claims(frame)``, imported lazily (``ClaimsUnavailable``, an
    ``ImportError``, only when a present probe has no module)."""
    if frame is None or len(frame) == 0 or "probe" not in frame.columns:
        return []
    present = {str(p) for p in frame["probe"].dropna().unique()}
    unknown = sorted(present - set(PROBES))
    if unknown:
        raise ValueError(f"probe(s) {', '.join(unknown)} in the frame: one of {', '.join(PROBES)}")
    out: list[Claim] = []
    for probe in PROBES:
        if probe in present:
            rows = frame[frame["probe"] == probe]
            got = list(_probe_module(probe).claims(rows))
            bad = [type(c).__name__ for c in got if not isinstance(c, Claim)]
            if bad:
                raise TypeError(f"probe_{probe}.claims returned {', '.join(sorted(set(bad)))}, not Claim rows")
            out.extend(got)
    return out


# --- the table --------------------------------------------------------------------------------------------

def summary_frame(claims: pd.DataFrame | Sequence[Claim]) -> pd.DataFrame:
    """The canonical typed frame (``SUMMARY_COLUMNS``; ``Int64``, ``Float64``, ``string``) of claims or a frame."""
    return SUMMARY_ROWS.to_frame(claims)


_MD_HEADERS = {
    "metric": "metric (unit)", "estimate": "estimate (metric's unit)", "ci95_low": "95% CI low",
    "ci95_high": "95% CI high", "min_detectable_effect": "min. detectable effect (metric's unit)",
    "num_params": "parameters", "non_embedding_params": "non-embedding parameters",
    "train_tokens": "training tokens (tokens)", "tokens_per_param": "tokens per parameter (tokens/parameter)",
    "windows": "windows per seed",
}


def summary_markdown(claims: pd.DataFrame | Sequence[Claim]) -> str:
    """A Markdown table for reading: the columns holding a value, each metric with its unit in brackets
    (``mean val loss ... [nats/token]``; the numbers are in that unit), numbers to 4 significant digits with a
    sign where they are differences, counts with thousands separators."""
    frame = summary_frame(claims)
    units = frame["unit"].astype(object).tolist()
    metrics = frame["metric"].astype(object).tolist()
    frame["metric"] = _string_array([m if m is None or u in (None, "") else f"{m} [{u}]"
                                for m, u in zip(metrics, units, strict=True)])

    def cell(c: str, v: Any) -> str:
        if v is None:
            return ""
        if c in SUMMARY_ROWS.int_columns:
            return f"{v:,}"
        if isinstance(v, float):
            return f"{v:+.4g}" if c in ("estimate", "ci95_low", "ci95_high") else f"{v:.4g}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    return SUMMARY_ROWS.markdown(frame, header=lambda c: _MD_HEADERS.get(c, c.replace("_", " ")), cell=cell,
                                 hidden=("unit",), fallback=("claim", "metric", "verdict"))


def _string_array(values: list[Any]) -> Any:
    import pandas as pd

    return pd.array(values, dtype="string")


def summary_bytes(claims_or_frame: pd.DataFrame | Sequence[Claim], fmt: str) -> bytes:
    """The claims table as csv, json, parquet (read back exactly by ``summary_from_bytes``) or md."""
    return SUMMARY_ROWS.to_bytes(claims_or_frame, fmt, markdown=summary_markdown)


def summary_from_bytes(data: bytes, fmt: str) -> pd.DataFrame:
    return SUMMARY_ROWS.from_bytes(data, fmt)


def write_summary(claims_or_frame: pd.DataFrame | Sequence[Claim], path: str | Path) -> Path:
    """Write the claims table to ``path``, the format from its suffix (.csv, .json, .parquet, .md); atomic."""
    return SUMMARY_ROWS.write(claims_or_frame, path, markdown=summary_markdown)


def read_summary(path: str | Path) -> pd.DataFrame:
    return SUMMARY_ROWS.read(path)


# --- helpers the probe modules use ----------------------------------------------------------------------

def _rows(final_rows: Any) -> list[dict[str, Any]]:
    import pandas as pd

    if isinstance(final_rows, pd.DataFrame):
        return [{k: (None if _missing(v) else v) for k, v in r.items()} for r in final_rows.to_dict("records")]
    return [r if isinstance(r, dict) else r.to_dict() for r in final_rows]


def _missing(v: Any) -> bool:
    import pandas as pd

    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _ok_evals(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("status", "ok") == "ok" and r.get("row_kind", "eval") in ("eval", None)]


def learned(final_rows: Any) -> bool:
    """True iff there is at least one ok ``eval`` row and every one has ``val_loss_nats`` below its
    ``unigram_entropy_nats`` (the "learned nothing" line). A row without either number counts as not learned: the
    conclusion is withheld unless the runs show they beat the unigram. ``final_rows``: the final evaluation of each
    run (``analysis.final_evals``), a frame or row dicts / ``ProbeRecord``s."""
    rows = _ok_evals(_rows(final_rows))
    if not rows:
        return False
    for r in rows:
        loss, line = r.get("val_loss_nats"), r.get("unigram_entropy_nats")
        if _missing(loss) or _missing(line) or not float(loss) < float(line):
            return False
    return True


def _si(x: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"


def _span(values: list[float], fmt: Any = _si) -> str:
    lo, hi = min(values), max(values)
    return fmt(lo) if fmt(lo) == fmt(hi) else f"{fmt(lo)}-{fmt(hi)}"


def scale_line(frame: pd.DataFrame) -> str:
    """One line of the scale behind a claim, from the final ok evaluation of each run in ``frame``: parameters
    (non-embedding), training tokens, tokens per parameter, corpus (and its leak fraction), seeds. E.g.
    ``"0.25M-1.1M parameters (0.12M-0.9M non-embedding), 2.1M training tokens, 1.9-8.4 tokens/parameter, corpus
    pydoc-topics (val leak 0.6%), 3 seeds"``."""
    from xtlens.profiling.benefit.analysis import final_evals

    if frame is None or len(frame) == 0:
        return "no runs"
    evals = frame[frame["row_kind"] == "eval"] if "row_kind" in frame.columns else frame
    needed = {"run_key", "variant", "config_name", "budget_kind", "step", "status", "probe", "seed"}
    rows = _ok_evals(_rows(final_evals(evals) if len(evals) and needed <= set(evals.columns) else evals))
    if not rows:
        return "no finished runs"

    def nums(col: str) -> list[float]:
        return [float(r[col]) for r in rows if not _missing(r.get(col))]

    parts = []
    params, non_emb = nums("num_params"), nums("non_embedding_params")
    if params:
        parts.append(f"{_span(params)} parameters" + (f" ({_span(non_emb)} non-embedding)" if non_emb else ""))
    tokens = nums("tokens_seen") or nums("budget_tokens")
    if tokens:
        parts.append(f"{_span(tokens)} training tokens")
    tpp = nums("tokens_per_param")
    if not tpp and tokens and params and len(tokens) == len(params):
        tpp = [t / p for t, p in zip(tokens, params, strict=True) if p > 0]
    if tpp:
        parts.append(f"{_span(tpp, lambda x: f'{x:.2g}')} tokens/parameter")
    corpora = sorted({str(r["corpus_name"]) for r in rows if not _missing(r.get("corpus_name")) and r["corpus_name"]})
    if corpora:
        leak = nums("val_leak_fraction")
        parts.append(f"corpus {', '.join(corpora)}" + (f" (val leak {max(leak):.1%})" if leak else ""))
    seeds = {r["seed"] for r in rows if not _missing(r.get("seed"))}
    parts.append(f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}")
    return ", ".join(parts)
