"""profiling.benefit.claims: the claims table's columns, exact round trips, the Markdown with units, the lazy
per-probe dispatch, the "learned nothing" test and the scale line."""

from __future__ import annotations

import sys
import types

import pandas as pd
import pytest
from xtlens.profiling.benefit.claims import (
    SUMMARY_COLUMNS,
    VERDICTS,
    Claim,
    ClaimsUnavailable,
    claims_for,
    learned,
    read_summary,
    scale_line,
    summary_bytes,
    summary_frame,
    summary_from_bytes,
    write_summary,
)
from xtlens.profiling.benefit.records import ProbeRecord, probe_frame


def _claim(**kw) -> Claim:
    base = dict(claim="ALiBi's loss beyond the training length is below rotary's", probe="extrapolation",
                metric="mean val loss at positions >= L, rotary - ALiBi", unit="nats/token", estimate=0.146,
                ci95_low=0.101, ci95_high=0.19, seeds=3, windows=235, min_detectable_effect=0.0321,
                verdict="supported", num_params=1_234_567, non_embedding_params=456_789, train_tokens=2_000_000,
                tokens_per_param=1.62, corpus="pydoc-topics", scale="1.2M parameters, 2M tokens, 1.6 tokens/parameter",
                method="Press et al. 2022; paired bootstrap over 3 seeds x 235 windows")
    return Claim(**{**base, **kw})


def _claims() -> list[Claim]:
    return [
        _claim(),
        _claim(claim="=HYPERLINK(\"x\") a formula-looking claim", verdict="not_detectable", estimate=None,
               ci95_low=None, ci95_high=None, min_detectable_effect=None, windows=None, note="",
               train_tokens=2**70, probe="heads"),
        _claim(claim="-0.1 nats: no difference", verdict="not_learned", note="nothing learned yet", unit="",
               tokens_per_param=None, probe="scaling"),
    ]


def test_columns_put_the_issue_columns_first():
    assert SUMMARY_COLUMNS[:9] == ("claim", "metric", "estimate", "ci95_low", "ci95_high", "seeds",
                                   "min_detectable_effect", "verdict", "scale")
    assert set(SUMMARY_COLUMNS) >= {"probe", "unit", "windows", "num_params", "non_embedding_params", "train_tokens",
                                    "tokens_per_param", "corpus", "method", "note"}
    assert VERDICTS == ("supported", "contradicted", "not_detectable", "not_learned")


def test_claim_refuses_bad_values():
    with pytest.raises(ValueError, match="verdict"):
        _claim(verdict="probably")
    with pytest.raises(ValueError, match="probe"):
        _claim(probe="vibes")
    with pytest.raises(ValueError, match="ci95_low"):
        _claim(ci95_low=0.3, ci95_high=0.1)
    with pytest.raises(ValueError, match="both"):
        _claim(ci95_low=None)
    with pytest.raises(ValueError, match="estimate"):
        _claim(estimate=float("nan"))


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_summary_round_trips_exactly(fmt, tmp_path):
    claims = _claims()
    frame = summary_frame(claims)
    assert list(frame.columns) == list(SUMMARY_COLUMNS)
    back = summary_from_bytes(summary_bytes(claims, fmt), fmt)
    pd.testing.assert_frame_equal(back, frame)
    assert back.loc[1, "train_tokens"] == 2**70 and back.loc[1, "claim"].startswith("=HYPERLINK")
    assert back.loc[1, "note"] == "" and pd.isna(back.loc[1, "estimate"])
    path = write_summary(claims, tmp_path / f"claims.{fmt}")
    pd.testing.assert_frame_equal(read_summary(path), frame)


def test_csv_neutralises_formula_cells():
    text = summary_bytes(_claims(), "csv").decode()
    assert "\"'=HYPERLINK(\"\"x\"\") a formula-looking claim\"" in text
    assert "\"'-0.1 nats: no difference\"" in text


def test_markdown_has_the_units(tmp_path):
    md = summary_bytes(_claims(), "md").decode()
    header, _, first, second, third = md.splitlines()
    for col in ("claim", "metric (unit)", "estimate (metric's unit)", "95% CI low", "95% CI high", "seeds",
                "min. detectable effect (metric's unit)", "verdict", "scale", "training tokens (tokens)",
                "tokens per parameter (tokens/parameter)", "windows per seed"):
        assert f"| {col} |" in header
    assert "| unit |" not in header  # the unit goes with the metric
    assert "| mean val loss at positions >= L, rotary - ALiBi [nats/token] | +0.146 | +0.101 | +0.19 | 3 | 0.0321 |" \
        in first
    assert "| 1,234,567 | 456,789 | 2,000,000 | 1.62 |" in first
    assert "1,180,591,620,717,411,303,424" in second  # 2**70 tokens, exact
    assert "| mean val loss at positions >= L, rotary - ALiBi | +0.146 |" in third  # no unit given: no brackets
    assert write_summary(_claims(), tmp_path / "c.md").read_text() == md


def _record(**kw) -> ProbeRecord:
    base = dict(probe="heads", run_key="r", config_name="c", config_key="k", config_json="{}", seed=0, step=10,
                val_loss_nats=4.0, unigram_entropy_nats=5.2, num_params=250_000, non_embedding_params=120_000,
                tokens_seen=2_100_000, tokens_per_param=8.4, corpus_name="pydoc-topics", val_leak_fraction=0.006)
    return ProbeRecord(**{**base, **kw})


def test_learned_needs_every_ok_run_below_the_unigram_line():
    good = [_record(run_key="a"), _record(run_key="b", seed=1, val_loss_nats=5.1)]
    assert learned(probe_frame(good))
    assert learned(good)
    assert not learned(probe_frame(good + [_record(run_key="c", seed=2, val_loss_nats=5.25)]))
    assert not learned(probe_frame(good + [_record(run_key="c", seed=2, val_loss_nats=5.2)]))  # equal: not below
    # diverged runs and non-eval rows do not count; no ok run at all is not learned; a missing line is not learned
    assert learned(probe_frame(good + [_record(run_key="d", status="diverged", val_loss_nats=None)]))
    assert learned(probe_frame(good + [_record(run_key="e", row_kind="window", val_loss_nats=9.0)]))
    assert not learned(probe_frame([_record(status="diverged")]))
    assert not learned(probe_frame([_record(unigram_entropy_nats=None)]))


def test_scale_line():
    rows = [_record(run_key="a", num_params=250_000, non_embedding_params=120_000, tokens_per_param=8.4),
            _record(run_key="b", seed=1, config_key="k2", num_params=1_100_000, non_embedding_params=900_000,
                    tokens_per_param=1.9),
            _record(run_key="a", step=5, num_params=250_000)]  # an earlier evaluation of run a
    line = scale_line(probe_frame(rows))
    assert line == ("250k-1.1M parameters (120k-900k non-embedding), 2.1M training tokens, 1.9-8.4 "
                    "tokens/parameter, corpus pydoc-topics (val leak 0.6%), 2 seeds")
    assert scale_line(probe_frame([])) == "no runs"


def test_claims_for_imports_each_present_probe_lazily(monkeypatch):
    seen = []

    def fake_claims(frame):
        seen.append(set(frame["probe"]))
        return [_claim(probe="heads")]

    fake = types.ModuleType("xtlens.profiling.benefit.probe_heads")
    fake.claims = fake_claims
    monkeypatch.setitem(sys.modules, "xtlens.profiling.benefit.probe_heads", fake)
    monkeypatch.setitem(sys.modules, "xtlens.profiling.benefit.probe_scaling", None)  # "not installed"
    heads = probe_frame([_record(), _record(run_key="b", seed=1)])
    got = claims_for(heads)
    assert got == [_claim(probe="heads")] and seen == [{"heads"}]
    assert claims_for(probe_frame([])) == []
    both = probe_frame([_record(), _record(probe="scaling", run_key="s")])
    with pytest.raises(ClaimsUnavailable, match="scaling probe rows .*probe_scaling is missing") as err:
        claims_for(both)
    assert isinstance(err.value, ImportError)
    bad = types.ModuleType("xtlens.profiling.benefit.probe_heads")
    bad.claims = lambda frame: ["not a claim"]
    monkeypatch.setitem(sys.modules, "xtlens.profiling.benefit.probe_heads", bad)
    with pytest.raises(TypeError, match="not Claim rows"):
        claims_for(heads)
