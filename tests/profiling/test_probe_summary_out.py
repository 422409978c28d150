"""``xtlens probe ... --summary-out FILE`` and ``--quick`` (issue 17, item 2): the claims table written with the
issue's columns, the printed split rule, unigram line and verdicts, and a bad suffix refused before training."""

from __future__ import annotations

from unittest import mock

import pandas as pd
import pytest
from xtlens.profiling.benefit.cli import options_from_args
from xtlens.profiling.cli import build_parser, main

ISSUE_COLUMNS = ("claim", "metric", "estimate", "ci95_low", "ci95_high", "seeds", "min_detectable_effect", "verdict",
                 "scale")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XTLENS_DB", str(tmp_path / "results.sqlite"))
    monkeypatch.setenv("XTLENS_CACHE_DIR", str(tmp_path / "cache"))


class _Reached(Exception):
    pass


@pytest.mark.parametrize("name", ["claims.txt", "claims", "claims.csv.gz", "claims.xlsx"])
def test_a_summary_file_of_unknown_format_is_refused_before_any_training(tmp_path, capsys, name) -> None:
    with mock.patch("xtlens.profiling.benefit.corpus.tokenize", side_effect=_Reached("training was reached")):
        assert main(["probe", "heads", "--quick", "--summary-out", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert "--summary-out" in err and ".csv, .json, .parquet or .md" in err and "Traceback" not in err, err
    assert not (tmp_path / name).exists()


def test_quick_sets_the_probe_options_quick() -> None:
    parser = build_parser()
    assert options_from_args(parser.parse_args(["probe", "stability", "--quick"])).quick is True
    opt = options_from_args(parser.parse_args(["probe", "stability"]))
    assert opt.quick is False
    quick = options_from_args(parser.parse_args(["probe", "stability", "--quick"]))
    # the quick settings are QUICK's over DEFAULTS, and options given on the command line still win
    from xtlens.profiling.benefit.probes import DEFAULTS, QUICK

    assert quick.defaults == DEFAULTS["stability"] | QUICK["stability"]
    assert options_from_args(parser.parse_args(["probe", "stability", "--quick", "--values", "3"])).values == (3,)


@pytest.mark.slow
def test_summary_out_writes_one_row_per_claim_with_the_issue_columns(tmp_path, capsys) -> None:
    """A real quick probe run end to end (heads at its quick settings, one seed, a smaller budget); then the same
    probe again, served from the result store, writing Markdown."""
    from xtlens.profiling.benefit.claims import VERDICTS, read_summary

    out = tmp_path / "claims.csv"
    rows = tmp_path / "rows.csv"
    argv = ["probe", "heads", "--quick", "--seeds", "0", "--tokens", "4096"]
    assert main([*argv, "--out", str(rows), "--summary-out", str(out)]) == 0
    captured = capsys.readouterr()
    claims = read_summary(out)
    assert list(claims.columns[: len(ISSUE_COLUMNS)]) == list(ISSUE_COLUMNS)  # the issue's columns first
    assert len(claims) >= 1 and set(claims["verdict"]) <= set(VERDICTS)
    assert (claims["probe"] == "heads").all() and (claims["seeds"] <= 1).all()
    assert f"wrote {len(claims)} claim(s) to {out}" in captured.err
    # printed: the split rule and its leak, the unigram line, and each claim's verdict with its scale
    probe_rows = pd.read_csv(rows)
    split = probe_rows["split_version"].dropna().iloc[0]
    leak = float(probe_rows["val_leak_fraction"].dropna().iloc[0])
    unigram = float(probe_rows["unigram_entropy_nats"].dropna().iloc[0])
    assert f"split rule {split}; val_leak_fraction {leak:.2%}" in captured.out
    assert f"unigram line (learned nothing: the validation loss of a unigram fitted on training) {unigram:.3f} " \
           "nats/token" in captured.out
    assert f"split rule {split}; val_leak_fraction {leak:.2%}" in captured.err  # before training, from the corpus
    for verdict, claim in zip(claims["verdict"], claims["claim"], strict=True):
        assert f"[{verdict}] heads: {claim}" in captured.out
    final = probe_rows[probe_rows["row_kind"] == "eval"].groupby("run_key").tail(1)
    if (final["val_loss_nats"] >= final["unigram_entropy_nats"]).any():
        assert "not_learned — " in captured.out and "nothing learned yet" in captured.out
    # again, from the result store, as Markdown: the same claims
    md = tmp_path / "claims.md"
    assert main([*argv, "--summary-out", str(md)]) == 0
    text = md.read_text()
    assert all(str(c) in text for c in claims["claim"])
