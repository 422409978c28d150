"""The atlas charts (``dashboard.charts.atlas``) on a synthetic atlas table whose numbers are known
(``tests/atlas_rows.py``): axes with units, one point per option and size, interval bars equal to the table's,
the quadrants named, verdicts in words, forecasts and the held-out check."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from xtlens.dashboard.charts import atlas as ac

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from atlas_rows import ARMS, REF_PARAMS, SIZES, atlas_table, forecasts_frame, holdout_frame  # noqa: E402


def _points(fig) -> list[tuple[str, int, float, float, float, float]]:
    """(arm, size, x, y, bar up, bar down) of every drawn point (legend key traces have no data)."""
    out = []
    for tr in fig.data:
        if tr.customdata is None:
            continue
        for (arm, size), x, y, up, down in zip(tr.customdata, tr.x, tr.y, tr.error_y.array, tr.error_y.arrayminus,
                                               strict=True):
            out.append((str(arm), int(size), float(x), float(y), float(up), float(down)))
    return out


def test_one_point_per_option_and_size_with_the_tables_interval_bars() -> None:
    table = atlas_table()
    fig = ac.quality_vs_cost(table, cost="d_train_flops_pct")
    pts = _points(fig)
    # every option at every size, once; neither the reference (0 by definition) nor the control
    assert sorted((a, s) for a, s, *_ in pts) == sorted((a, s) for a in ARMS for s in SIZES)
    rows = table.set_index(["arm", "size_dim"])
    for arm, size, x, y, up, down in pts:
        r = rows.loc[(arm, size)]
        assert x == pytest.approx(r["d_train_flops_pct"])
        assert y == pytest.approx(r["d_bits_per_byte"])
        # the bar ends are the table's 95% interval
        assert y + up == pytest.approx(r["ci95_high"]) and y - down == pytest.approx(r["ci95_low"])
    # the effect at dim 32 is twice the one at 16 (atlas_rows), drawn as given
    swiglu = {s: y for a, s, _, y, *_ in pts if a == "swiglu"}
    assert swiglu[32] == pytest.approx(2 * swiglu[16]) == pytest.approx(2 * ARMS["swiglu"][1])


def test_every_axis_has_its_unit_and_the_title_states_the_scale() -> None:
    table = atlas_table()
    for key, cost in ac.COSTS.items():
        fig = ac.quality_vs_cost(table, cost=key)
        x_title, y_title = fig.layout.xaxis.title.text, fig.layout.yaxis.title.text
        assert x_title == cost.axis and any(u in x_title for u in ("%", "count", "MiB", "bytes/token")), x_title
        assert y_title == ac.Y_AXIS and "bits/byte" in y_title
        title = fig.layout.title.text
        # sizes, non-embedding parameters, tokens, tokens per parameter, seeds
        assert "2 size(s) (dim 16–32: 3k–12k non-embedding parameters)" in title, title
        assert "65.5k training tokens" in title and "tokens per parameter" in title and "3 seeds" in title


def test_quadrants_named_zero_lines_drawn_and_verdicts_in_words() -> None:
    fig = ac.quality_vs_cost(atlas_table())
    notes = {a.name: a.text for a in fig.layout.annotations}
    for name, words in ac.QUADRANTS.items():
        assert f"<b>{name}</b><br>{words}" == notes[f"quadrant: {name}"]
    # free lunch in the lower left corner (lower cost, lower loss), not worth it in the upper right
    q = {a.name: (a.x, a.y) for a in fig.layout.annotations}
    assert q["quadrant: free lunch"][0] < 0.5 and q["quadrant: free lunch"][1] < 0.5
    assert q["quadrant: not worth it"][0] > 0.5 and q["quadrant: not worth it"][1] > 0.5
    lines = [(s.x0, s.x1, s.y0, s.y1) for s in fig.layout.shapes if s.type == "line"]
    assert any(s[2] == s[3] == 0 for s in lines) and any(s[0] == s[1] == 0 for s in lines)
    # both zero lines inside the ranges (the quadrants are where the chart says)
    (x0, x1), (y0, y1) = fig.layout.xaxis.range, fig.layout.yaxis.range
    assert x0 < 0 < x1 and y0 < 0 < y1
    legend = [tr.name for tr in fig.data if tr.showlegend is not False]
    # the verdicts present, in words; the sizes by symbol with their non-embedding parameters
    assert "lowers the loss (supported)" in legend and "raises the loss (contradicted)" in legend
    assert "no detectable change (not_detectable)" in legend
    assert "dim 16 (3,000 non-embedding params)" in legend and "dim 32 (12,000 non-embedding params)" in legend
    symbols = {tr.name: tr.marker.symbol for tr in fig.data if tr.name.startswith("dim ")}
    assert len(set(symbols.values())) == 2
    # verdict colours: one per verdict, and never the only carrier (the words are in the legend and the hover)
    hover = " ".join(h for tr in fig.data if tr.hovertext is not None for h in tr.hovertext)
    assert "verdict: lowers the loss (supported)" in hover and "bits/byte [95%:" in hover


def test_costs_computed_from_the_table() -> None:
    table = atlas_table()
    rows = table
    pct = ac.cost_values(rows, "d_num_params_pct")
    sw = rows[(rows["arm"] == "swiglu") & (rows["size_dim"] == 16)].index[0]
    assert pct[sw] == pytest.approx(100 * 4_096 / REF_PARAMS[16])
    mem = ac.cost_values(rows, "d_train_peak_bytes")
    assert mem[sw] == pytest.approx(262_144 / 2**20)
    # predicted peak: arm minus the reference of the same size (the table holds absolute values)
    pred = ac.cost_values(rows, "d_train_peak_predicted_bytes")
    assert pred[sw] == pytest.approx(0.9 * 262_144 / 2**20, abs=1e-6)
    with pytest.raises(ValueError, match="cost = 'watts' is not allowed"):
        ac.quality_vs_cost(table, cost="watts")


def test_speed_axis_is_reversed_so_that_cheaper_stays_left() -> None:
    fig = ac.quality_vs_cost(atlas_table(), cost="d_tokens_per_s_pct")
    x_left, x_right = fig.layout.xaxis.range
    assert x_left > 0 > x_right  # faster (a positive speed change) on the left, with the other savings
    pts = {(a, s): x for a, s, x, *_ in _points(fig)}
    assert pts[("macaron", 16)] == pytest.approx(-20.0)


def test_forecast_chart_lists_a_non_identifiable_option_with_its_reason() -> None:
    f = forecasts_frame(bad="kv_full")
    labels = {a: v[0] for a, v in ARMS.items()} | {"reference": "reference"}
    fig = ac.forecast_chart(f, labels=labels)
    pts = [tr for tr in fig.data if tr.error_x is not None and tr.error_x.array is not None]
    (tr,) = pts
    assert set(tr.y) == {labels[a] for a in f["arm"] if a != "kv_full"}  # no point for the bad one
    got = dict(zip(tr.y, zip(tr.x, tr.error_x.array, tr.error_x.arrayminus, strict=True), strict=True))
    for _, r in f[f["identifiable"]].iterrows():
        x, up, down = got[labels[r["arm"]]]
        assert (x, x + up, x - down) == pytest.approx((r["estimate"], r["high"], r["low"]))
    notes = [a.text for a in fig.layout.annotations]
    assert "not identifiable: the loss does not fall with size (non-monotone points)" in notes
    assert "80% interval" in fig.layout.xaxis.title.text and "bits/byte" in fig.layout.xaxis.title.text
    assert "1,000,000 non-embedding parameters, 20,000,000 tokens (83x the largest run)" in fig.layout.title.text


def test_holdout_chart_counts_what_its_intervals_covered() -> None:
    h = holdout_frame()
    fig = ac.holdout_chart(h, level=0.8)
    assert "80% intervals covered 4 of 5 option(s)" in fig.layout.title.text
    inside = [tr for tr in fig.data if tr.name == "measured: inside the interval"][0]
    outside = [tr for tr in fig.data if tr.name == "measured: outside the interval"][0]
    assert list(outside.y) == ["swiglu"] and len(inside.y) == 4
    assert "bits/byte" in fig.layout.xaxis.title.text


def test_empty_tables_say_what_to_do() -> None:
    assert "run the atlas probe" in ac.quality_vs_cost(pd.DataFrame()).layout.annotations[0].text
    assert "2 or more sizes" in ac.forecast_chart(pd.DataFrame()).layout.annotations[0].text


def test_the_pages_table_and_coverage_line() -> None:
    from xtlens.dashboard.views import atlas as av
    from xtlens.profiling.benefit.forecast import Holdout

    shown = av.display_table(atlas_table())
    assert len(shown) == len(ARMS) * len(SIZES)  # no reference, no control
    assert list(shown["size (dim)"])[: len(ARMS)] == [32] * len(ARMS)  # largest size first
    top = shown[shown["size (dim)"] == 32]
    assert list(top["Δ val (bits/byte)"]) == sorted(top["Δ val (bits/byte)"])  # best change first
    sw = shown[(shown["option name"] == "swiglu") & (shown["size (dim)"] == 16)].iloc[0]
    assert sw["verdict"] == "lowers loss" and sw["Δ training peak, measured (MiB)"] == pytest.approx(0.25)
    assert sw["Δ training peak, predicted (MiB)"] == pytest.approx(0.9 * 0.25, abs=1e-6)
    assert all("(" in c for c in shown.columns if c.startswith("Δ"))  # every change with its unit
    h = holdout_frame()
    ok = h[h["identifiable"]]
    line = av.coverage_line(Holdout(coverage=float(ok["covered"].mean()), arms=len(ok), level=0.8,
                                    median_abs_error_bits=0.0123, table=h))
    assert line.startswith("80% intervals covered 4 of 5 arms at the largest size (dim 64), median error 0.012 "
                           "bits/byte"), line
    assert av.coverage_line(Holdout(coverage=None, arms=0, level=0.8, median_abs_error_bits=None, table=h.iloc[:0],
                                    reason="one size only")) == "Held-out check not possible: one size only."


def test_coverage_line_names_the_E_free_fallback_and_the_prediction_coverage() -> None:
    from xtlens.dashboard.views import atlas as av
    from xtlens.profiling.benefit.forecast import Holdout

    h = holdout_frame()
    ok = h[h["identifiable"]]
    plain = av.coverage_line(Holdout(coverage=float(ok["covered"].mean()), arms=len(ok), level=0.8,
                                     median_abs_error_bits=0.0123, table=h, coverage_prediction=0.6))
    assert plain.endswith("(prediction interval): 60% covered.") and "optimistic" not in plain
    h = h.assign(law="A_arm N^-alpha with no irreducible loss (Kaplan et al. 2020's form ...)")
    line = av.coverage_line(Holdout(coverage=float(ok["covered"].mean()), arms=len(ok), level=0.8,
                                    median_abs_error_bits=0.0123, table=h))
    assert "without an irreducible loss" in line and "optimistic" in line and "prediction interval" not in line


def test_coverage_line_warns_when_the_held_out_intervals_missed() -> None:
    """Intervals that covered far less than promised are called untrustworthy, with the side they missed on (the
    documented atlas: 2 of 22 at dim 128, every miss optimistic)."""
    from xtlens.dashboard.views import atlas as av
    from xtlens.profiling.benefit.forecast import Holdout

    h = holdout_frame()
    ok = h[h["identifiable"]]
    # every forecast 0.1 bits/byte below the measured value, outside its interval: 0 of n covered
    low = h.assign(estimate=h["measured"] - 0.1, low=h["measured"] - 0.15, high=h["measured"] - 0.05,
                   covered=~h["identifiable"].astype(bool) & False)
    line = av.coverage_line(Holdout(coverage=0.0, arms=len(ok), level=0.8, median_abs_error_bits=0.1, table=low))
    assert "not to be trusted" in line and f"{len(ok)} of {len(ok)} forecasts were too low (optimistic)" in line
    assert "median -0.100 bits/byte" in line
    high = low.assign(estimate=h["measured"] + 0.1)
    assert "too high (pessimistic)" in av.coverage_line(Holdout(coverage=0.0, arms=len(ok), level=0.8,
                                                                median_abs_error_bits=0.1, table=high))
    # the 4-of-5 table above (80% promised, 80% covered): no warning
    fine = av.coverage_line(Holdout(coverage=float(ok["covered"].mean()), arms=len(ok), level=0.8,
                                    median_abs_error_bits=0.0123, table=h))
    assert "not to be trusted" not in fine
