"""The atlas panel of the Benefits tab on the seed, drawn from runs already in the result store (no training):
the tab opens on it, the chart and the table show the atlas table's numbers, the skipped options and the scale are
named, the Export tab lists the atlas tables, and the page is drawn fast once the derived tables are stored."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest
from xtlens.core.config import PRESETS
from xtlens.dashboard.views import atlas as atlas_view
from xtlens.profiling.benefit.probe_atlas import atlas_table, skipped_table
from xtlens.profiling.benefit.probes import ProbeOptions, base_member

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from atlas_rows import PLANTED, stored_atlas_runs  # noqa: E402

APP = Path(__file__).resolve().parents[3] / "dashboard" / "app.py"
#: the seed's default atlas, as the Benefits tab's widgets describe it before anything is typed
OPT = ProbeOptions(probe="atlas", base=PRESETS["seed"])


def _open_benefits() -> tuple[AppTest, float]:
    """A new browser session: the app on its first view, then the Benefits tab (the elapsed time of that run)."""
    at = AppTest.from_file(str(APP), default_timeout=180).run()
    at.session_state["view"] = "Benefits"
    t0 = time.perf_counter()
    at.run()
    return at, time.perf_counter() - t0


def _atlas_chart(at: AppTest) -> dict:
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return next(c for c in charts if str(c["layout"]["title"]["text"]).startswith("What each option buys"))


@pytest.mark.slow
def test_stored_atlas_opens_with_the_tab_shows_the_tables_numbers_and_is_fast_from_the_store() -> None:
    frame = stored_atlas_runs(OPT)
    expected = atlas_table(frame)  # the same table computed from the rows in memory, not through the store
    at, first_s = _open_benefits()
    assert not at.exception, [e.value for e in at.exception]
    assert at.radio(key="benefits.probe").value == "atlas"  # the tab opens on the stored atlas
    captions = " ".join(c.value for c in at.caption)
    runs = frame["run_key"].nunique()
    assert f"From the result store: {runs} of the {runs} runs of this atlas" in captions and "nothing trained" in captions
    assert f"{runs} of its {runs} runs are in the result store: Run probe serves them" in captions
    # the chart: one point per option and size with the table's numbers and interval ends
    chart = _atlas_chart(at)
    pts = {}
    for tr in chart["data"]:
        for (arm, size), x, y, up, down in zip(tr.get("customdata") or [], tr.get("x", []), tr.get("y", []),
                                               (tr.get("error_y") or {}).get("array", []),
                                               (tr.get("error_y") or {}).get("arrayminus", []), strict=False):
            pts[(arm, int(size))] = (x, y, y + up, y - down)
    rows = expected[(expected["arm"] != "reference") & ~expected["arm"].str.startswith("control")]
    assert set(pts) == {(a, int(s)) for a, s in zip(rows["arm"], rows["size_dim"], strict=True)}
    for r in rows.itertuples():
        x, y, hi, lo = pts[(r.arm, int(r.size_dim))]
        assert (x, y, hi, lo) == pytest.approx((r.d_train_flops_pct, r.d_bits_per_byte, r.ci95_high, r.ci95_low))
    # the planted effects come out with their sign at the largest size
    big = expected[expected["size_dim"] == expected["size_dim"].max()].set_index("arm")
    assert big.loc["swiglu", "verdict"] == "supported" and big.loc["shift_tokens", "verdict"] == "contradicted"
    assert big.loc["swiglu", "d_bits_per_byte"] == pytest.approx(PLANTED["swiglu"], abs=0.005)
    # the sortable table beside it: the same numbers, verdicts in words, units in the headers
    (table,) = [d.value for d in at.dataframe if "Δ val (bits/byte)" in d.value.columns]
    shown = atlas_view.display_table(expected)
    pd.testing.assert_frame_equal(table.reset_index(drop=True)[shown.columns], shown, check_dtype=False)
    assert set(table["verdict"]) == {"lowers loss", "raises loss", "none detected"}
    # the options that could not run, with x-transformers' reason
    skipped = skipped_table(base_member(OPT))
    if len(skipped):
        (sk,) = [d.value for d in at.dataframe if "why not" in d.value.columns]
        assert list(sk["why not"]) == list(skipped["reason"])
    assert "3 seeds" in captions and "training tokens" in captions and "tokens/parameter" in captions
    # the Export tab lists the atlas tables drawn
    at.session_state["view"] = "Export"
    at.run()
    names = [m.value for m in at.markdown if "benefit atlas:" in m.value]
    assert any("atlas table (runs in the result store)" in n and f"{len(expected)} rows" in n for n in names), names
    # a new server process: nothing cached in memory, the derived tables read back from the store
    st.cache_data.clear()
    at2, cold_s = _open_benefits()
    assert not at2.exception
    assert _atlas_chart(at2)["data"] == chart["data"]
    print(f"\nBenefits tab with a stored atlas of {runs} runs: first open (tables derived) {first_s:.2f} s; "
          f"new process, derived tables stored {cold_s:.2f} s")
    # the target is under 2 s (benchmark-style, reported above with the load); a generous bound here
    assert cold_s < 8.0, cold_s


@pytest.mark.slow
def test_a_real_tiny_atlas_is_drawn_from_its_rows(monkeypatch) -> None:
    """The job / upload path: a tiny atlas trained here (2 options, 2 sizes, 2 seeds), its rows loaded on the page:
    the chart has one point per option and size at the atlas table's numbers, the forecast inputs default to the
    sidebar configuration's non-embedding parameters."""
    from xtlens.core.params import param_counts
    from xtlens.profiling.benefit.probes import run_probe
    from xtlens.profiling.benefit.records import probe_frame

    opt = ProbeOptions(probe="atlas", base=PRESETS["seed"], values=(16, 32), options=("swiglu", "shift_tokens"),
                       tokens=1024, seq_len=16, batch=8, seeds=(0, 1), evals=2,
                       extra={"depth": 1, "heads": 2, "eval_tokens": 256})
    frame = probe_frame(run_probe(opt))  # stored in this test's result store as it trains
    # the page keeps what it drew of its own job beside the runs: the stored atlas is then served without
    # reading the runs' rows (the slow path is made to fail here)
    from xtlens.dashboard.session import benefit_data
    from xtlens.profiling.benefit.analysis import final_evals

    kept = atlas_table(frame)
    assert benefit_data.keep_atlas(opt, kept, final_evals(frame))
    with monkeypatch.context() as m:
        m.setattr(benefit_data, "_atlas_from_rows", lambda *a: pytest.fail("read the rows again"))
        pd.testing.assert_frame_equal(benefit_data.stored_atlas(opt), kept, check_dtype=False)
    # these runs are too short to learn: the unigram line is raised above them so that the atlas is drawn
    frame = frame.assign(unigram_entropy_nats=float(frame["val_loss_nats"].astype(float).max()) + 0.5)
    table = atlas_table(frame)
    at = AppTest.from_file(str(APP), default_timeout=180).run()
    at.session_state["view"] = "Benefits"
    at.session_state["_xtlens_probe_uploads"] = [("atlas.parquet", frame)]
    at.session_state["benefits.probe"] = "atlas"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    chart = _atlas_chart(at)
    pts = {(a, int(s)): y for tr in chart["data"] for (a, s), y in zip(tr.get("customdata") or [], tr.get("y", []),
                                                                       strict=False)}
    rows = table[table["arm"].isin(["swiglu", "shift_tokens"])]
    assert len(pts) == len(rows) == 4
    for r in rows.itertuples():
        assert pts[(r.arm, int(r.size_dim))] == pytest.approx(r.d_bits_per_byte)
    assert at.number_input(key="benefits.atlas.forecast_params").value == param_counts(PRESETS["seed"]).non_embedding_params
    assert at.number_input(key="benefits.atlas.forecast_tpp").value == 20.0
    assert any("Held-out check" in m.value for m in at.markdown)
