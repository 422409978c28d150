"""The measured loss laws the budget explorer (Setups tab) can use: one per (probe, corpus) of the user's probe runs.

Where the runs come from: the result store (every stored run of the scaling probe and of the atlas:
``profiling.benefit.probe_store.stored_rows``, their evaluation rows, no training), plus this session's finished probe jobs and uploaded
probe tables (``session.benefit_data.finished_tables``; runs already in the store are not counted twice). Rows of
one probe on one corpus (by the corpus's SHA-256) make one ``Source``; its law is
``profiling.benefit.forecast.law_for_budget(rows, corpus name)`` (``budget_law_status``: None and why when the runs
cannot be fitted), computed once per content (cached), so the explorer stays closed form plus a law evaluation per
grid point.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pandas as pd
import streamlit as st
from xtlens.dashboard.budget import LossLaw
from xtlens.dashboard.session import benefit_data, store
from xtlens.profiling.benefit import forecast, probe_store
from xtlens.profiling.benefit.records import probe_frame
from xtlens.profiling.results.store import StoreError, db_path

#: the probes whose runs give a loss law (all their arms: the atlas's law is its reference arm's, fitted with the
#: other arms sharing its exponent)
LAW_PROBES = ("scaling", "atlas")
#: the rows a law needs: the evaluations (the last of each run is its final whole-split evaluation)
LAW_ROW_KINDS = ("eval",)
_LAW_CHOICES = "_xtlens_budget_law_choices"


@dataclass(frozen=True, kw_only=True)
class Source:
    """One probe's runs on one corpus: where they come from (``origin``), how many runs, and the rows."""

    probe: str
    corpus_name: str
    corpus_sha256: str
    origin: str
    runs: int
    rows: pd.DataFrame = field(compare=False, repr=False)

    @property
    def key(self) -> str:
        """Changes when the rows change (the law's cache key)."""
        digest = pd.util.hash_pandas_object(self.rows, index=False).to_numpy().tobytes()
        return f"{self.probe}:{self.corpus_sha256}:{hashlib.sha256(digest).hexdigest()[:16]}"


@st.cache_data(max_entries=8, show_spinner=False)
def _stored(probe: str, path: str, version: tuple[int, int]) -> pd.DataFrame:
    del path, version  # the cache key: another database, or a stored run, changes it
    return probe_frame(probe_store.stored_rows(probe, row_kinds=LAW_ROW_KINDS))


def _usable(frame: pd.DataFrame, probe: str) -> pd.DataFrame:
    keep = (frame["probe"] == probe).fillna(False).astype(bool)
    if "row_kind" in frame:
        keep &= frame["row_kind"].isin(LAW_ROW_KINDS)
    return frame[keep]


def sources() -> tuple[list[Source], str]:
    """Every (probe, corpus) of the user's probe runs, the one with the most runs first; and why the result store
    could not be read ("" when it could: a store that cannot be opened leaves this session's tables)."""
    try:
        version: tuple[int, int] | None = probe_store.stored_version()
        problem = ""
    except StoreError as exc:
        version, problem = None, str(exc)
    out = []
    for probe in LAW_PROBES:
        parts = [("result store", _stored(probe, str(db_path().resolve()), version))] if version is not None else []
        parts += [(label, _usable(frame, probe)) for label, frame in benefit_data.finished_tables(probe)]
        seen: set[str] = set()
        by_corpus: dict[tuple[str, str], list[tuple[str, pd.DataFrame]]] = {}
        for origin, frame in parts:
            if frame.empty:
                continue
            frame = frame[~frame["run_key"].isin(seen)]
            seen |= set(frame["run_key"])
            for (sha, name), rows in frame.groupby(["corpus_sha256", "corpus_name"], dropna=False, sort=False):
                by_corpus.setdefault((str(sha), str(name)), []).append((origin, rows))
        for (sha, name), found in by_corpus.items():
            rows = pd.concat([r for _, r in found], ignore_index=True)
            out.append(Source(probe=probe, corpus_name=name, corpus_sha256=sha, runs=int(rows["run_key"].nunique()),
                              origin=" + ".join(dict.fromkeys(o for o, _ in found)), rows=rows))
    return sorted(out, key=lambda s: -s.runs), problem


@st.cache_resource(max_entries=16, show_spinner="Fitting the loss law to your runs...")
def _fit(key: str, _rows: pd.DataFrame, corpus_label: str) -> tuple[LossLaw | None, str]:
    del key  # the cache key: the rows' content
    return forecast.budget_law_status(_rows, corpus_label)


def fit(source: Source) -> tuple[LossLaw | None, str]:
    """The loss law fitted to ``source``'s runs (``forecast.law_for_budget``), or None and why not (too few sizes,
    losses that do not fall with size, runs that learned nothing)."""
    return _fit(source.key, source.rows, source.corpus_name or source.corpus_sha256[:12])


@st.cache_resource(max_entries=16, show_spinner="Held-out check of the law on your runs...")
def _holdout(key: str, _rows: pd.DataFrame) -> forecast.Holdout:
    del key  # the cache key: the rows' content
    return forecast.holdout(forecast.arm_points(_rows))


def holdout(source: Source) -> tuple[forecast.Holdout | None, str]:
    """``forecast.holdout`` of ``source``'s runs: the largest size forecast from the smaller ones by the same kind
    of law, each arm's 80% interval against the measured value (how far the explorer's band can be trusted); None
    and why when the rows cannot give one (a table without the columns the check reads)."""
    try:
        return _holdout(source.key, source.rows), ""
    except (ValueError, TypeError, KeyError) as exc:
        return None, f"these runs cannot be checked ({type(exc).__name__}: {exc})"


def follow_new_laws(choices: list[str], widget_key: str) -> None:
    """When the laws on offer change (new probe runs, another corpus), select the first (the law fitted to the most
    runs) in the widget ``widget_key``; otherwise leave the user's choice alone. Call before the widget."""
    if store.get(_LAW_CHOICES) != choices:
        store.put(_LAW_CHOICES, list(choices))
        store.put(widget_key, choices[0])
