"""``profiling.benefit.report``: the unigram "learned nothing" line, ``not_learned`` runs, the split line, claim
lines and the measured wall times the page quotes."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from xtlens.profiling.benefit import report
from xtlens.profiling.benefit.probes import DEFAULTS, QUICK


def _final(losses: dict[tuple[str, int], float], unigram: float = 5.0) -> pd.DataFrame:
    return pd.DataFrame([{"config_name": n, "seed": s, "val_loss_nats": v, "unigram_entropy_nats": unigram,
                          "status": "ok", "row_kind": "eval"} for (n, s), v in losses.items()])


def test_a_run_is_not_learned_exactly_when_it_ends_at_or_above_the_unigram_line() -> None:
    final = _final({("a", 0): 4.9, ("a", 1): 5.0, ("b", 0): 5.3, ("b", 1): 5.01, ("c", 0): 3.0})
    flags = report.learned_runs(final)
    assert flags["learned"].tolist() == [True, False, False, False, True]  # 5.0 is not below 5.0
    # "a" learned in one seed of two: not labelled; "b" in none
    assert report.not_learned_configs(final) == frozenset({"b"})
    line = report.not_learned_line(final)
    assert line.startswith("not_learned — 3 of 5 run(s) (a, b) ended at or above the unigram line (5.000 nats/token)")
    assert "conclusions are withheld" in line
    assert report.not_learned_line(_final({("a", 0): 4.0})) is None


def test_failed_runs_and_tables_without_the_unigram_column_are_unknown_not_not_learned() -> None:
    final = _final({("a", 0): 6.0, ("b", 0): 6.0})
    final.loc[1, "status"] = "diverged"
    assert report.learned_runs(final)["learned"].tolist() == [False, None]
    old = final.drop(columns="unigram_entropy_nats")
    assert report.learned_runs(old)["learned"].tolist() == [None, None]
    assert report.not_learned_line(old) is None and report.unigram_nats(old) is None
    every = report.not_learned_line(_final({("a", 0): 6.0, ("b", 0): 7.0}))
    assert every.startswith("not_learned — every run (a, b)")


def test_split_line_names_the_rule_the_leak_and_the_unigram_line() -> None:
    frame = pd.DataFrame({"row_kind": ["eval", "eval"], "split_version": ["", "dedup-groups-v1"],
                          "val_leak_fraction": [None, 0.0042], "unigram_entropy_nats": [math.nan, 5.2213]})
    kw = report.split_of(frame)
    assert kw == {"split_version": "dedup-groups-v1", "val_leak_fraction": 0.0042, "unigram_val_nats": 5.2213}
    line = report.split_line(**kw)
    assert "split rule dedup-groups-v1" in line and "val_leak_fraction 0.42%" in line and "5.221 nats/token" in line
    assert "val_leak_fraction not measured" in report.split_line(split_version=None, val_leak_fraction=None,
                                                                unigram_val_nats=None)


def test_claim_line_shows_verdict_interval_unit_and_withholds_a_not_learned_estimate() -> None:
    row = {"probe": "heads", "claim": "more heads help", "metric": "loss 8 heads - 1 head", "unit": "nats/token",
           "estimate": -0.0123, "ci95_low": -0.02, "ci95_high": -0.004, "seeds": 5, "windows": 235,
           "min_detectable_effect": 0.0061, "verdict": "supported", "scale": "0.1 M parameters", "method": "paired"}
    text = report.claim_line(row)
    assert text.startswith("[supported] heads: more heads help")
    assert "-0.0123 nats/token (95% interval -0.0200 .. -0.0040); 5 seed(s) x 235 windows" in text
    assert "minimum detectable effect 0.0061 nats/token" in text and "scale: 0.1 M parameters" in text
    nl = report.claim_line(row | {"verdict": "not_learned"})
    assert nl.startswith("[not_learned]") and report.NOT_LEARNED_MESSAGE in nl and "-0.0123" not in nl


@pytest.mark.parametrize("quick", [False, True])
def test_wall_time_is_quoted_only_for_the_settings_it_was_measured_with(monkeypatch, quick) -> None:
    name = "heads" + (" --quick" if quick else "")
    fp = report.settings_fingerprint("heads", quick)
    assert fp != report.settings_fingerprint("heads", not quick)
    monkeypatch.setitem(report.MEASURED_WALL_TIMES, name, report.WallTime(wall_s=312, settings_fingerprint=fp,
                                                                            how="test, load 1.0"))
    assert report.wall_time_line("heads", quick).endswith("took 5.2 min (cache off; test, load 1.0)")
    # the probe's settings change: the old number is no longer quoted
    monkeypatch.setitem(QUICK if quick else DEFAULTS, "heads", (QUICK if quick else DEFAULTS)["heads"] | {"tokens": 7})
    assert report.settings_fingerprint("heads", quick) != fp
    assert "not measured yet" in report.wall_time_line("heads", quick)
    assert "took" not in report.wall_time_line("heads", quick)


def test_claim_line_reads_rows_of_the_typed_claims_table() -> None:
    from xtlens.profiling.benefit.claims import Claim, summary_frame

    kw = dict(probe="stability", claim="DeepNorm trains at higher lr", metric="log10 largest stable lr, deepnorm - "
              "post_norm", unit="log10 lr", seeds=3, windows=None, num_params=None, non_embedding_params=None,
              train_tokens=None, tokens_per_param=None, corpus="c", scale="s", method="m")
    frame = summary_frame([Claim(estimate=0.5, ci95_low=0.2, ci95_high=0.8, min_detectable_effect=0.3,
                                 verdict="supported", **kw),
                           Claim(estimate=None, ci95_low=None, ci95_high=None, min_detectable_effect=None,
                                 verdict="not_learned", note="every run above the unigram line", **kw)])
    first, second = (report.claim_line(r) for _, r in frame.iterrows())
    assert "+0.5000 log10 lr (95% interval +0.2000 .. +0.8000); 3 seed(s);" in first and "windows" not in first
    assert second.startswith("[not_learned] stability: DeepNorm trains at higher lr") and "withheld" in second
