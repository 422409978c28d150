"""What the CLI prints and the Benefits tab shows beside a probe's rows: the split line, the unigram "learned
nothing" line, which runs did not get below it (``not_learned``), and one line per claim. Pure (pandas only).

A run is ``not_learned`` when its final validation loss is not below ``unigram_entropy_nats``: the validation
split's cross-entropy under a unigram fitted on the training split, the loss of the best model that ignores
context. Such a run has learned nothing a unigram count would not give, so no conclusion is drawn from it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import pandas as pd

__all__ = ["law_fit_warning", "NOT_LEARNED_MESSAGE", "FULL_SIZE_NOTE", "VERDICT_WORDS", "learned_runs", "not_learned_configs", "not_learned_line",
           "split_line", "split_of", "unigram_nats", "claim_line",
           "WallTime", "MEASURED_WALL_TIMES", "settings_fingerprint", "wall_time_line"]

#: the words shown for a run (or a claim) that ended above the unigram line
NOT_LEARNED_MESSAGE = "nothing learned yet: this run ended above the unigram line; train longer or use a GPU"
#: what the full-size runs on a GPU showed (docs/gpu-results.md): said on the page, not left to the reader
FULL_SIZE_NOTE = ("At the full size on an NVIDIA H200 (xtlens's reference run of 2026-11-26: the default corpus, "
                  "widths 256, 512 and 768, seeds 0 and 1) every width stopped above the unigram entropy "
                  "after 128 steps (6.57 nats/token against 6.15): there, too, the page can only say \"nothing "
                  "learned yet\".")
#: each verdict in words (the page shows these beside its colour: never colour alone)
VERDICT_WORDS = {
    "supported": "supported: the 95% interval excludes 0 on the claimed side, and the difference is at least the "
                 "minimum detectable effect (a \"no difference\" claim: the interval lies inside its margin)",
    "contradicted": "contradicted: the 95% interval excludes 0 on the other side, and the difference is at least the "
                    "minimum detectable effect",
    "not_detectable": "not detectable: the 95% interval includes 0, or the difference is smaller than what this "
                      "budget can reliably see (the minimum detectable effect)",
    "not_learned": "not learned: the runs did not get below the unigram line; conclusion withheld (train longer "
                   "or use a GPU)",
}


def _float(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s, errors="coerce").astype(float)


def unigram_nats(frame: pd.DataFrame) -> float | None:
    """The "learned nothing" line of the rows (nats/token): ``unigram_entropy_nats`` of their evaluation rows
    (one corpus and split per probe: the first finite value), or None when the rows carry none."""
    if frame.empty or "unigram_entropy_nats" not in frame:
        return None
    rows = frame[frame["row_kind"] == "eval"] if "row_kind" in frame else frame
    ent = _float(rows["unigram_entropy_nats"]).dropna()
    ent = ent[ent.map(math.isfinite)]
    return float(ent.iloc[0]) if not ent.empty else None


def learned_runs(final: pd.DataFrame) -> pd.DataFrame:
    """``final`` (one row per run, ``analysis.final_evals``) with a column ``learned``: True when the run's final
    validation loss is below its unigram line, False when not (``not_learned``), None when either is missing
    (a failed run, or an older table without the unigram column)."""
    out = final.copy()
    if out.empty:
        return out.assign(learned=pd.Series(dtype=object))
    v = _float(out["val_loss_nats"]) if "val_loss_nats" in out else pd.Series(math.nan, index=out.index)
    u = _float(out["unigram_entropy_nats"]) if "unigram_entropy_nats" in out else pd.Series(math.nan, index=out.index)
    ok = out["status"] == "ok" if "status" in out else pd.Series(True, index=out.index)
    known = ok & v.notna() & u.notna()
    out["learned"] = [bool(a < b) if k else None for a, b, k in zip(v, u, known, strict=True)]
    return out


def not_learned_configs(final: pd.DataFrame) -> frozenset[str]:
    """The configurations (``config_name``) every one of whose runs with a known outcome ended above the unigram
    line: their charts are labelled ``not_learned``."""
    flags = learned_runs(final)
    if flags.empty or "config_name" not in flags:
        return frozenset()
    known = flags[flags["learned"].map(lambda x: x is not None)]
    out = known.groupby("config_name")["learned"].agg(lambda s: not any(s))
    return frozenset(str(n) for n, none in out.items() if none)


def not_learned_line(final: pd.DataFrame) -> str | None:
    """One sentence naming the runs that ended above the unigram line (None when every run got below it)."""
    flags = learned_runs(final)
    bad = flags[flags["learned"].map(lambda x: x is False)]
    if bad.empty:
        return None
    u = unigram_nats(final)
    names = sorted({str(n) for n in bad["config_name"]}) if "config_name" in bad else []
    where = "every run" if len(bad) == int(flags["learned"].map(lambda x: x is not None).sum()) else \
        f"{len(bad)} of {len(flags)} run(s)"
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    return (f"not_learned — {where} ({shown}) ended at or above the unigram line"
            + (f" ({u:.3f} nats/token)" if u is not None else "") + ": nothing learned yet; train longer or use a "
            "GPU. Their conclusions are withheld.")


def law_fit_warning(final: pd.DataFrame, min_steps: int | None = None) -> str | None:
    """Why a loss law fitted to the runs ``final`` (one row per run, ``analysis.final_evals``) is not to be read,
    or None when it may be: runs that are ``not_learned`` (``learned_runs``: ended at or above the unigram line)
    or that trained fewer than ``min_steps`` optimizer steps (default ``probe_scaling.MIN_STEPS``: warm-up alone
    would be most of them). Such a law fits noise around the starting loss; the page says so beside it."""
    if min_steps is None:
        from xtlens.profiling.benefit.probe_scaling import MIN_STEPS

        min_steps = MIN_STEPS
    if final.empty:
        return None
    flags = learned_runs(final)
    ok = flags[flags["status"] == "ok"] if "status" in flags else flags
    if ok.empty:
        return None
    parts = []
    bad = ok[ok["learned"].map(lambda x: x is False)]
    if not bad.empty:
        u = unigram_nats(final)
        parts.append(f"{len(bad)} of {len(ok)} run(s) ended at or above the unigram line"
                     + (f" ({u:.3f} nats/token)" if u is not None else "") + " (not_learned)")
    steps = pd.to_numeric(ok["step"], errors="coerce") if "step" in ok else pd.Series(dtype=float)
    short = steps[steps < min_steps]
    if not short.empty:
        parts.append(f"{len(short)} of {len(ok)} run(s) trained fewer than {min_steps} optimizer steps (the fewest: "
                     f"{int(short.min())})")
    if not parts:
        return None
    return ("Not a scaling law: " + " and ".join(parts) + ". A law fitted to runs that have not learned describes "
            "noise around the starting loss; read no exponent from it. Train longer (more tokens) or on a GPU.")


def split_line(*, split_version: str | None, val_leak_fraction: float | None, unigram_val_nats: float | None) -> str:
    """The split rule, its measured leak and the unigram line, in one line (the CLI and the page)."""
    leak = ("not measured" if val_leak_fraction is None or not math.isfinite(val_leak_fraction)
            else f"{val_leak_fraction:.2%}")
    uni = ("not measured" if unigram_val_nats is None or not math.isfinite(unigram_val_nats)
           else f"{unigram_val_nats:.3f} nats/token")
    return (f"split rule {split_version or 'unknown'}; val_leak_fraction {leak} (share of validation tokens inside "
            f"64-byte strings that also occur in training); unigram line (learned nothing: the validation loss of "
            f"a unigram fitted on training) {uni}")


def split_of(frame: pd.DataFrame) -> dict[str, object]:
    """``split_line``'s keywords from probe rows (their first non-empty values)."""
    def first(col: str) -> object:
        if col not in frame:
            return None
        s = frame[col].dropna()
        s = s[s.astype(str) != ""]
        return s.iloc[0] if not s.empty else None

    leak = first("val_leak_fraction")
    return {"split_version": first("split_version"), "val_leak_fraction": float(leak) if leak is not None else None,
            "unigram_val_nats": unigram_nats(frame)}


def _num(v: object) -> float | None:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def claim_line(row: dict[str, object] | pd.Series) -> str:
    """One claim as text: verdict first (in words), then estimate [95% interval] with its unit, seeds, minimum
    detectable effect, scale and method. A ``not_learned`` claim shows no estimate: it is withheld."""
    r = {k: (None if v is pd.NA or (isinstance(v, float) and math.isnan(v)) else v) for k, v in dict(row).items()}
    verdict = str(r.get("verdict") or "")
    unit = str(r.get("unit") or "")
    head = f"[{verdict}] {r.get('probe', '')}: {r.get('claim', '')}"
    if verdict == "not_learned":
        return head + f"\n    {NOT_LEARNED_MESSAGE} (estimate withheld). Scale: {r.get('scale', '')}"
    est, lo, hi = _num(r.get("estimate")), _num(r.get("ci95_low")), _num(r.get("ci95_high"))
    mde = _num(r.get("min_detectable_effect"))
    value = "no estimate" if est is None else f"{est:+.4f} {unit}".rstrip()
    if lo is not None and hi is not None:
        value += f" (95% interval {lo:+.4f} .. {hi:+.4f})"
    seeds = r.get("seeds")
    windows = r.get("windows")
    n = f"{seeds} seed(s)" + (f" x {int(windows)} windows" if _num(windows) is not None else "")
    text = (f"{head}\n    {r.get('metric', '')}: {value}; {n}"
            + (f"; minimum detectable effect {mde:.4f} {unit}".rstrip() if mde is not None else "")
            + f"\n    scale: {r.get('scale', '')}; method: {r.get('method', '')}")
    note = str(r.get("note") or "")
    return text + (f"\n    note: {note}" if note else "")


# --- measured wall time per probe (the one place the page and the CLI read it from) ---------------------------

@dataclass(frozen=True, kw_only=True)
class WallTime:
    """One measured wall time of a probe at its default (or ``--quick``) settings, cache off."""

    wall_s: float
    settings_fingerprint: str  # ``settings_fingerprint(probe, quick)`` when it was measured
    how: str  # date, threads, load average, machine


#: measured wall time per probe ("scaling", or "scaling --quick"). The ONE place these numbers live: the Benefits
#: tab's "how long" line reads them; when a probe's ``DEFAULTS`` / ``QUICK`` change, its fingerprint no longer
#: matches and the page says "not measured for the current settings" instead of an old number. To record a new
#: measurement: time the probe (``xtlens probe NAME --fresh [--quick]``), then add its seconds here with
#: ``python -m xtlens.profiling.benefit.report`` (prints the current fingerprints) and the load average.
MEASURED_WALL_TIMES: dict[str, WallTime] = {
    # docs/benefits.md, "Wall time": 2026-12-03 12:10-12:24 UTC, the merged issue-17 code, split dedup-groups-v1,
    # `xtlens probe NAME --preset seed --fresh`, 1 torch thread each, two probes at once on the 2-core machine.
    # Kept, though measured before the paired context gain (more evaluation work, same settings fingerprint): the
    # reruns on the current code (commit 854c903, 12:30 UTC) ran at load 3-7 (wall 597-965 s, user CPU 393-454 s)
    "scaling": WallTime(wall_s=459, settings_fingerprint="cf2e665c8d7f",
                        how="2026-12-03, 1 torch thread, two probes at once on 2 CPU cores, load 1.1 -> 2.1; code "
                            "before the paired context gain"),
    "stability": WallTime(wall_s=333, settings_fingerprint="0eabbb5350d6",
                          how="2026-12-03, 1 torch thread, two probes at once on 2 CPU cores, load 2.1 -> 3.0; code "
                              "before the paired context gain"),
    "extrapolation": WallTime(wall_s=298, settings_fingerprint="e7bab382922a",
                              how="2026-12-03, 1 torch thread, two probes at once on 2 CPU cores, load 2.1 -> 2.1; code "
                                  "before the paired context gain"),
    "extrapolation --quick": WallTime(wall_s=51, settings_fingerprint="58bc8b4b7afc",
                                      how="2026-12-03, 1 torch thread on 2 shared CPU cores, load about 4"),
    # docs/atlas.md, "Measured run": the default atlas (276 runs) in two parts on the same store, 1 torch thread:
    # dims 16-64 (207 runs) 19 min 36 s at load 2-7 (four other jobs on the machine), then dim 128 (69 runs, the
    # others served from the store) 9 min 26 s at load about 1
    "atlas": WallTime(wall_s=1742, settings_fingerprint="80367b28c07c",
                      how="2026-12-03, 1 torch thread on 2 CPU cores, in two parts: dims 16-64 at load 2-7 (shared), "
                          "dim 128 at load about 1"),
    "atlas --quick": WallTime(wall_s=201, settings_fingerprint="b9052f87bcd1",
                              how="2026-12-03, 1 torch thread on 2 CPU cores, load about 1 (92 runs)"),
    "heads": WallTime(wall_s=491, settings_fingerprint="8fd4a8fb4eb5",
                      how="2026-12-03, 1 torch thread, two probes at once on 2 CPU cores, load 1.1 -> 2.1; code "
                          "before the paired context gain"),
}


def settings_fingerprint(probe: str, quick: bool = False) -> str:
    """A short hash of the settings a probe runs with by default (``DEFAULTS``, with ``QUICK`` over them when
    ``quick``) and the split rule's default name: a recorded wall time belongs to these settings only."""
    from xtlens.profiling.benefit.corpus import SPLIT_VERSION
    from xtlens.profiling.benefit.probes import DEFAULTS, QUICK

    settings = DEFAULTS[probe] | (QUICK[probe] if quick else {})
    text = json.dumps({"settings": settings, "split": SPLIT_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def wall_time_line(probe: str, quick: bool = False) -> str:
    """How long the probe takes at its default (or quick) settings: the measured number when one is recorded for
    the current settings (``MEASURED_WALL_TIMES``), else says that it is not measured yet."""
    name = probe + (" --quick" if quick else "")
    rec = MEASURED_WALL_TIMES.get(name)
    if rec is not None and rec.settings_fingerprint == settings_fingerprint(probe, quick):
        minutes = f"{rec.wall_s / 60:.1f} min" if rec.wall_s >= 120 else f"{rec.wall_s:.0f} s"
        return f"The default{' quick' if quick else ''} settings took {minutes} (cache off; {rec.how})"
    return (f"The wall time of the current {'quick ' if quick else ''}default settings is not measured yet (target: "
            "under 10 minutes on 2 CPU cores)")


if __name__ == "__main__":  # pragma: no cover - the fingerprints to record with a new wall time
    from xtlens.profiling.benefit.probes import DEFAULTS

    for _probe in DEFAULTS:
        for _quick in (False, True):
            print(f"{_probe}{' --quick' if _quick else ''}: {settings_fingerprint(_probe, _quick)}")
