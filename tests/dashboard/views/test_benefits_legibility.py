"""What an ML engineer reading the Benefits tab needs from every chart and table, on the probe rows committed in
docs/benefits/data (real runs): titles, axis titles with units, a legend below the x-axis title, labelled log
ticks, labels on the plot, table columns in words, the claims table's estimate in view."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest
from xtlens.dashboard.charts import benefits as bc
from xtlens.dashboard.views import benefits as view
from xtlens.profiling.benefit import probe_extrapolation as pe
from xtlens.profiling.benefit import probe_heads as ph
from xtlens.profiling.benefit import probe_scaling as ps
from xtlens.profiling.benefit import probe_stability as pst

DATA = Path(__file__).resolve().parents[3] / "docs" / "benefits" / "data"


@pytest.fixture(scope="module")
def rows() -> dict[str, pd.DataFrame]:
    return {p: pd.read_parquet(DATA / f"{p}.parquet") for p in ("scaling", "stability", "extrapolation", "heads")}


def _figures(rows: dict[str, pd.DataFrame]) -> dict[str, go.Figure]:
    sc, st_, ex, hd = rows["scaling"], rows["stability"], rows["extrapolation"], rows["heads"]
    outcomes = pst.run_outcomes(st_)
    table = ph.heads_table(hd)
    best = ps.best_lr_rows(sc)
    return {
        "scaling_law": bc.scaling_law(sc, title="t"),
        "isoflop": bc.isoflop_curves(sc, title="t"),
        "curves": bc.loss_curves(sc[sc["run_key"].isin(set(best["run_key"]))], probe="scaling", budget_kind="tokens",
                                 title="t"),
        "curves_flops": bc.loss_curves(sc[sc["run_key"].isin(set(best["run_key"]))], probe="scaling",
                                       budget_kind="tokens", x="train_flops", title="t"),
        "stable_lr": bc.stable_lr_chart(outcomes, pst.largest_stable_lr(outcomes), title="t"),
        "ratio": bc.grad_ratio_chart(pst.grad_ratio_table(pst.grad_ratios(st_)), when="init", title="t"),
        "profile": bc.grad_profile(st_, depth=int(outcomes["depth"].max()), step=0, title="t"),
        "positions": bc.extrapolation_position_loss(ex, shift=0, title="t"),
        "effects": bc.heads_effects(table, title="t"),
        "bars": bc.heads_bars(table, title="t"),
        "kv": bc.kv_tradeoff(table, title="t"),
    }


#: the charts the page draws two to a row
HALF_WIDTH = {"scaling_law", "isoflop", "curves", "curves_flops", "stable_lr", "ratio", "positions", "bars", "kv"}


def test_every_chart_has_a_title_axis_titles_with_units_and_a_legend_below_its_x_axis_title(rows) -> None:
    for name, fig in _figures(rows).items():
        fig = bc.legible(fig)
        assert fig.layout.title.text == "t", name
        for letter, axis in (("x", fig.layout.xaxis), ("y", fig.layout.yaxis)):
            categories = all(isinstance(v, str) for t in fig.data for v in (list(getattr(t, letter, None)) if getattr(t, letter, None) is not None else []))
            assert axis.title.text and ("(" in axis.title.text or categories), (name, axis.title.text)  # a unit
            if name in HALF_WIDTH:  # two charts side by side: a longer title is cut at a 1400 px window
                assert len(axis.title.text) <= (60 if letter == "x" else 46), (name, axis.title.text)
        rows_ = bc.legend_rows(fig)
        if rows_:  # below the axis title (container coordinates), the margin grown a line per row
            assert fig.layout.legend.yref == "container" and fig.layout.legend.y == 0, name
            assert fig.layout.margin.b >= 70 + bc.LEGEND_ROW_PX * rows_, name
    # the scaling probe's legend: one curve per size (its best learning rate), not one per (size, lr)
    curves = _figures(rows)["curves"]
    assert len([t for t in curves.data if t.showlegend is not False]) == rows["scaling"].query(
        "probe == 'scaling' and budget_kind == 'tokens'")["axis_value"].nunique()


def _tick_value(text: str) -> float:
    mult = {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    return float(text[:-1]) * mult[text[-1]] if text[-1] in mult else float(text)


def test_log_axes_have_labelled_ticks_only_and_the_swept_learning_rates_are_ticks(rows) -> None:
    figs = {k: bc.legible(f) for k, f in _figures(rows).items()}
    checked = 0
    for name, fig in figs.items():
        for axis in (fig.layout.xaxis, fig.layout.yaxis):
            if axis.type == "log":
                assert axis.tickvals is not None and len(axis.tickvals) >= 2, name
                assert [_tick_value(t) for t in axis.ticktext] == pytest.approx(list(axis.tickvals)), name
                checked += 1
    assert checked >= 5
    lrs = sorted(float(v) for v in pst.run_outcomes(rows["stability"])["lr"].unique())
    assert list(figs["stable_lr"].layout.yaxis.tickvals) == pytest.approx(lrs)


def test_the_training_length_label_sits_at_the_training_length_on_the_log_position_axis(rows) -> None:
    """Plotly reads an annotation's x on a log axis as log10(x): the label put at x = L stretched the axis to
    10^64 positions (the curves squeezed into its first pixels)."""
    fig = _figures(rows)["positions"]
    train_len = pe.train_len_of(rows["extrapolation"])
    label = next(a for a in fig.layout.annotations if "trained at" in (a.text or ""))
    assert label.x == pytest.approx(math.log10(train_len))
    longest = max(max(t.x) for t in fig.data)
    assert 0 < label.x < math.log10(longest)
    texts = [a.text for a in fig.layout.annotations]
    assert any(t.startswith("unigram line") and "nats/token" in t for t in texts)


def test_point_labels_do_not_overlap_or_leave_the_plot(rows) -> None:
    figs = _figures(rows)
    best = next(t for t in figs["scaling_law"].data if (t.name or "").startswith("best lr"))
    assert best.textposition[0].endswith("right") and best.textposition[-1].endswith("left")
    assert all(a.split()[0] != b.split()[0] for a, b in zip(best.textposition, best.textposition[1:], strict=False))
    kv = figs["kv"].data[0]
    assert all(a != b for a, b in zip(kv.textposition, kv.textposition[1:], strict=False))
    assert figs["bars"].data[0].type == "scatter"  # markers on an axis that does not start at 0, not bars


def test_tables_show_words_and_thousands_separators(rows) -> None:
    iso = ps.isoflop_table(rows["scaling"])
    shown, config = view.readable(iso)
    assert not [c for c in shown.columns if "_" in c], list(shown.columns)
    assert "budget (training FLOPs)" in shown.columns and "budget (training FLOPs)" in config
    assert config["budget (training FLOPs)"]["type_config"]["format"] == "localized"
    laws, _ = view.readable(ps.law_table(rows["scaling"]))
    assert "E (nats/token)" in laws.columns and not [c for c in laws.columns if "_" in c]


def test_claims_table_puts_the_estimate_next_to_the_claim() -> None:
    claims = pd.DataFrame([{"probe": "heads", "claim": "c", "metric": "m", "estimate": -0.01, "ci95_low": -0.02,
                            "ci95_high": -0.001, "unit": "nats/token", "seeds": 5, "windows": 10,
                            "min_detectable_effect": 0.004, "verdict": "supported", "scale": "s", "method": "x"}])
    cols = list(view.claims_display(claims).columns)
    assert cols[:4] == ["verdict", "claim", "estimate [95% interval]", "min detectable effect"]


def test_no_two_extrapolation_curves_look_alike_and_table_units_are_words(rows) -> None:
    fig = bc.extrapolation_curves(rows["extrapolation"], title="t")
    styles = [(t.line.color, t.line.dash) for t in fig.data]
    assert len(fig.data) > len(bc.SERIES) and len(set(styles)) == len(styles)
    gains, _ = view.readable(pe.context_gains(rows["extrapolation"]))
    assert "shift_tokens" in gains.columns and any(c.endswith("(nats/token)") for c in gains.columns)
    assert not [c for c in gains.columns if c.endswith(" nats") or "ci95" in c], list(gains.columns)
