"""How and when a measurement table was measured, in words the page shows next to its numbers (pure pandas).

A job's rows are either measured by that job (fresh) or served from the results database (the cache):
a stored row keeps the timestamp of the run that measured it, so a row older than the job's start came
from the cache, and the page says so with that original time. A job another browser session started (the
two shared one run) measured nothing for this session: all its rows are "from cache" too. "Measured now" is
said only of rows this session's own job measured. The checks below flag what an expert would
distrust: a wide min-max spread, a training step faster than the forward it contains, an attention core
slower than the whole forward.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass

import pandas as pd

SPREAD_WARN = 2.0  # max / min of the repeats above which a timing is called noisy
CACHE_SLACK_S = 2.0  # row timestamps have one-second resolution

__all__ = ["Provenance", "provenance", "spread_warnings", "failure_summary", "machine_state", "load_warning",
           "SPREAD_WARN"]


@dataclass(frozen=True, kw_only=True)
class Provenance:
    cached_rows: int
    fresh_rows: int
    first_measured: str | None  # ISO time of the oldest row
    last_measured: str | None  # ISO time of the newest row
    by: str = "this machine"  # where the rows were measured: "this machine", "the Ray cluster at ..."
    shared: bool = False  # the job was started by another browser session: nothing was measured for this one

    @property
    def source(self) -> str:
        if self.cached_rows and not self.fresh_rows:
            return "from cache"
        if self.cached_rows:
            return "partly from cache"
        return "measured now"

    def words(self) -> str:
        """``from cache (measured 2026-11-26 03:12:05 UTC, by this machine)`` / ``measured now (... by ...)``."""
        when = _show(self.first_measured)
        if self.last_measured and self.last_measured != self.first_measured:
            when += f" .. {_show(self.last_measured)}"
        whose = "; another browser session's run, shared" if self.shared else ""
        if self.source == "from cache":
            return (f"from cache (measured {when}, by {self.by}{whose}): not re-measured; press Measure again for "
                    "fresh numbers")
        if self.source == "partly from cache":
            return (f"partly from cache: {self.cached_rows} row(s) stored earlier, {self.fresh_rows} measured now "
                    f"(measured {when}, by {self.by})")
        return f"measured now ({when}, by {self.by})"


def _parse(ts: str) -> _dt.datetime | None:
    try:
        t = _dt.datetime.fromisoformat(str(ts))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)


def _show(ts: str | None) -> str:
    t = _parse(ts or "")
    return "at an unknown time" if t is None else t.astimezone(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def provenance(frame: pd.DataFrame, started_wall: float | None, *, shared: bool = False,
               by: str = "this machine") -> Provenance:
    """Which rows of a job's table came from the cache: those stored before the job started (``time.time()``), or
    every row when ``shared`` (another session started the job: this session measured nothing). ``by``: where
    the job ran."""
    stamps = [t for t in (_parse(s) for s in frame.get("timestamp", pd.Series(dtype=str)).dropna()) if t is not None]
    if not stamps:
        return Provenance(cached_rows=len(frame) if shared else 0, fresh_rows=0 if shared else len(frame),
                          first_measured=None, last_measured=None, by=by, shared=shared)
    if shared:
        cached = len(stamps)
    else:
        cached = 0 if started_wall is None else sum(t.timestamp() < started_wall - CACHE_SLACK_S for t in stamps)
    return Provenance(cached_rows=cached, fresh_rows=len(stamps) - cached,
                      first_measured=min(stamps).isoformat(), last_measured=max(stamps).isoformat(), by=by,
                      shared=shared)


def spread_warnings(frame: pd.DataFrame) -> list[str]:
    """Noisy timings (max/min above ``SPREAD_WARN``) and an implausible order of phases, one sentence each."""
    if frame is None or frame.empty or "latency_median_ms" not in frame:
        return []
    ok = frame[(frame["measurement"] == "latency") & (frame["status"] == "ok")]
    out = []
    noisy = ok[(ok["latency_min_ms"] > 0) & (ok["latency_max_ms"] / ok["latency_min_ms"] > SPREAD_WARN)]
    if not noisy.empty:
        worst = noisy.assign(r=noisy["latency_max_ms"] / noisy["latency_min_ms"]).sort_values("r").iloc[-1]
        out.append(f"{len(noisy)} timing(s) vary by more than {SPREAD_WARN:g}x between repeats (worst: "
                   f"{worst['phase']} at {int(worst['seq_len_tokens']):,} tokens, {worst['config_name']}: min "
                   f"{worst['latency_min_ms']:.4g} ms, max {worst['latency_max_ms']:.4g} ms). The machine was busy "
                   "or the repeats too few: compare medians with care, or measure again with more repeats.")
    med = ok.pivot_table(index=["config_name", "seq_len_tokens"], columns="phase", values="latency_median_ms",
                         aggfunc="first")
    for (name, n), row in med.iterrows():
        fwd, step, att = row.get("forward"), row.get("train_step"), row.get("attention")
        if pd.notna(fwd) and pd.notna(step) and step < fwd:
            out.append(f"Implausible order at {int(n):,} tokens ({name}): the training step ({step:.4g} ms) came out "
                       f"faster than the forward ({fwd:.4g} ms) it contains: the machine's load changed between "
                       "them. Measure again.")
        if pd.notna(fwd) and pd.notna(att) and att > fwd * 1.05:
            out.append(f"Implausible order at {int(n):,} tokens ({name}): the attention core ({att:.4g} ms) came out "
                       f"slower than the whole forward ({fwd:.4g} ms). Measure again.")
    return out


_WORDS = {"oom": "out of memory", "timeout": "timed out", "error": "failed"}


def _failure_word(status: str, error: str) -> str:
    text = error or ""
    if "cancelled" in text:
        return "cancelled"
    if text.startswith("not run"):
        return "not run"
    return _WORDS.get(status, status)


def failure_summary(bad: pd.DataFrame) -> list[str]:
    """One sentence per kind of failure (cancelled, not run, out of memory, timed out, failed) with its points,
    each point named once."""
    if bad is None or bad.empty:
        return []
    groups: dict[str, list[str]] = {}
    for r in bad.itertuples():
        phase = "" if r.phase in (None, "all", "") else f"{r.phase} "
        point = f"{phase}at {int(r.seq_len_tokens):,} tokens ({r.config_name})"
        word = _failure_word(str(r.status), str(r.error or ""))
        if point not in groups.setdefault(word, []):
            groups[word].append(point)
    return [f"{word}: {', '.join(points)}" for word, points in groups.items()]


_MACHINE = re.compile(r"torch threads \d+, \d+ CPUs, load average \(1 min\) [\d.na]+")


def machine_state(frame: pd.DataFrame) -> str | None:
    """The thread count and load recorded with the timings (``profiling.measure.latency``), first and last point."""
    if frame is None or "method" not in frame:
        return None
    found = [m.group(0) for m in (_MACHINE.search(str(t)) for t in frame["method"].dropna()) if m]
    if not found:
        return None
    return found[0] if found[0] == found[-1] else f"{found[0]} at the first point, {found[-1].split(', ')[-1]} at the last"


_LOAD = re.compile(r"(\d+) CPUs, load average \(1 min\) ([\d.]+)")


def load_warning(frame: pd.DataFrame) -> str | None:
    """A warning when the 1-minute load while timing exceeded the CPU count (other work shared the cores)."""
    if frame is None or "method" not in frame:
        return None
    worst = None
    for text in frame["method"].dropna():
        m = _LOAD.search(str(text))
        if m and float(m.group(2)) > int(m.group(1)) and (worst is None or float(m.group(2)) > worst[1]):
            worst = (int(m.group(1)), float(m.group(2)))
    if worst is None:
        return None
    return (f"The machine was busy while timing: load average {worst[1]:.1f} on {worst[0]} CPUs. Other work shared "
            "the cores, so these timings are slower and noisier than on an idle machine.")
