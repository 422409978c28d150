"""The Benefits view and the Trade-offs view's measured-benefit panel, headless (AppTest), and the chart
builders on real probe rows (tiny probes run once per module)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from xtlens.core.config import PRESETS
from xtlens.dashboard.charts import benefits as bc
from xtlens.profiling.benefit import analysis
from xtlens.profiling.benefit import probe_scaling as ps
from xtlens.profiling.benefit.probes import ProbeOptions, run_probe
from xtlens.profiling.benefit.records import probe_frame

APP = Path(__file__).resolve().parents[3] / "dashboard" / "app.py"
SEED = PRESETS["seed"]
SMALL = {"dim": 32, "depth": 1, "heads": 2, "eval_tokens": 512}


def benefits(**state) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    at.session_state["view"] = "Benefits"
    for k, v in state.items():
        at.session_state[k] = v
    return at.run()


def test_benefits_view_says_what_it_trains_and_names_bad_input() -> None:
    at = benefits()
    assert not at.exception, [e.value for e in at.exception]
    captions = " ".join(c.value for c in at.caption)
    # the claim is attributed in words: users do not have the analysis file (issue 9)
    assert "Claim (the written analysis that came with the seed configuration)" in captions
    assert "seed-analysis" not in captions
    assert "Scaled-down member of the current family: dim 64, depth 2, heads 4 x 16 wide, vocabulary 512" in captions
    # scaling: 4 sizes at equal tokens + 3 IsoFLOP budgets x 4 sizes, each at 3 learning rates x 3 seeds
    assert "ALiBi on 2 of 4 heads" in captions and f"{(4 + 3 * 4) * 3 * 3} training run(s)" in captions
    assert any(b.label == "Run probe" for b in at.button)
    at.text_input(key="benefits.scaling.values").set_value("32,x").run()
    assert any("values = '32,x' is not allowed" in e.value for e in at.error), [e.value for e in at.error]
    at.text_input(key="benefits.scaling.values").set_value("").run()
    at.number_input(key="benefits.scaling.tokens").set_value(100).run()
    assert any(e.value.startswith("training tokens per run: 100 tokens buys 0") for e in at.error)


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    mp = pytest.MonkeyPatch()
    mp.setenv("XTLENS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    common = dict(base=SEED, tokens=1024, seq_len=32, batch=8, evals=2, extra=SMALL, seeds=(0,))
    out = {
        "scaling": run_probe(ProbeOptions(probe="scaling", values=(16, 32), **common | {
            "seeds": (0, 1), "extra": SMALL | {"overfit_tokens": 512, "overfit_epochs": 2}})),
        "stability": run_probe(ProbeOptions(probe="stability", values=(3,), **common | {"lr": 3e-3})),
        "extrapolation": run_probe(ProbeOptions(probe="extrapolation", values=(1, 2), **common | {
            "seq_len": 16, "extra": SMALL | {"schemes": ("alibi", "rotary", "absolute", "nope")}})),
        "heads": run_probe(ProbeOptions(probe="heads", values=(2,), **common)),
    }
    mp.undo()
    return {k: probe_frame(v) for k, v in out.items()}


@pytest.mark.slow
def test_chart_builders_on_real_probe_rows(frames) -> None:
    sc = frames["scaling"]
    fig = bc.scaling_points(sc, x="num_params", budget_kind="tokens", current=32, title="t", x_title="x")
    names = [t.name for t in fig.data]
    assert names[0].startswith("measured (mean of 2 seed(s))") and names[1].startswith("your fit: val loss")
    assert names[2] == "current (dim=32)"
    fin = ps.best_lr_rows(sc)  # the probe sweeps the learning rate: each size's best rate is its point
    tok = fin[fin["budget_kind"] == "tokens"]
    means = tok.assign(v=tok["val_loss_nats"].astype(float)).groupby("axis_value")["v"].mean()
    assert list(fig.data[0].y) == pytest.approx(list(means))  # markers are the seed means
    heat = bc.grad_heatmap(frames["stability"], variant="post_norm", depth=3, title="t")
    z = heat.data[0].z
    # 6 blocks + embedding + to_logits (post-norm has no final norm); 4 steps (1,024 tokens / 256 per step),
    # evaluated twice (steps 2 and 4), plus step 0
    assert len(z) == 2 * 3 + 2 and len(z[0]) == 3
    assert heat.data[0].y[0] == "embedding"
    ex = bc.extrapolation_curves(frames["extrapolation"], title="t")
    # the learned absolute table is evaluated only at the training length: no curve past it
    assert {t.name for t in ex.data} == {f"{s}, shift_tokens={k}" for s in ("alibi", "rotary", "nope") for k in (0, 1)}
    pos = bc.extrapolation_position_loss(frames["extrapolation"], shift=0, title="t")
    assert [t.name for t in pos.data] == ["alibi", "rotary", "absolute", "nope"]
    assert max(pos.data[2].x) <= 16 < max(pos.data[0].x) and pos.layout.xaxis.title.text.startswith("position")
    unigram = float(frames["extrapolation"]["unigram_entropy_nats"].dropna().iloc[0])
    assert any(sh.y0 == pytest.approx(unigram) for sh in pos.layout.shapes)  # the "learned nothing" line
    # the training length marked at L, and the log position axis spans the positions (not stretched to 10^L)
    vlines = [sh.x0 for sh in pos.layout.shapes if sh.x0 is not None and sh.x0 == sh.x1]
    assert vlines == [16]
    lo, hi = pos.layout.xaxis.range
    assert lo < 0 < math.log10(max(pos.data[0].x)) < hi < math.log10(max(pos.data[0].x)) + 0.2
    table = analysis.heads_table(frames["heads"])
    kv = bc.kv_tradeoff(table, title="t")
    assert sorted(kv.data[0].x) == sorted(table[table["variant"] == "kv_heads"]["kv_cache_bytes_per_token"])


@pytest.mark.slow
def test_benefits_view_draws_every_probe_and_says_what_was_measured(frames) -> None:
    # these 1,024-token runs end above the unigram line, and the page withholds a probe's charts when every run
    # does (tests/dashboard/views/test_benefits_claims.py): the line is raised above their losses here, so that
    # each probe's own section is drawn
    def learned(f: pd.DataFrame) -> pd.DataFrame:
        return f.assign(unigram_entropy_nats=float(f["val_loss_nats"].astype(float).max()) + 0.5)

    at = benefits(_xtlens_probe_uploads=[(f"{k}.parquet", learned(f)) for k, f in frames.items()])
    for probe in ("scaling", "stability", "extrapolation", "heads"):
        at.radio(key="benefits.probe").set_value(probe).run()
        assert not at.exception, (probe, [e.value for e in at.exception])
        captions = " ".join(c.value for c in at.caption)
        assert f"Showing uploaded: {probe}.parquet" in captions
        assert "What was measured — Corpus: pydoc_data.topics" in captions and "Seeds: " in captions
        assert "Budget: 1,024 training tokens" in captions
        assert len(at.get("plotly_chart")) >= {"scaling": 3, "stability": 4, "extrapolation": 1, "heads": 2}[probe]
    # the Trade-offs view: measured loss beside cost for the swept axis, Chinchilla labelled as a literature fit
    at.session_state["view"] = "Trade-offs"
    at.run()
    assert not at.exception
    heads = [h.value for h in at.subheader]
    assert "Measured benefit beside cost (dim)" in heads
    assert any("literature fits" in h for h in heads)
    assert any("Literature fit for comparison: Chinchilla" in c.value for c in at.caption)


@pytest.mark.slow
def test_run_probe_from_the_page_in_the_worker(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XTLENS_CACHE_DIR", str(tmp_path))
    at = benefits(**{"benefits.probe": "heads", "benefits.heads.values": "4", "benefits.heads.tokens": 4096,
                     "benefits.heads.seeds": "0"})
    (run,) = [b for b in at.button if b.label == "Run probe"]
    run.click().run()
    deadline = time.monotonic() + 240
    while not any("heads probe: finished" in c.value for c in at.caption):
        assert time.monotonic() < deadline, [c.value for c in at.caption]
        time.sleep(2)
        at.run()
    assert not at.exception
    charts = at.get("plotly_chart")
    assert any(m.value.startswith("**Claims: verdict") for m in at.markdown)
    if any("not_learned — every run" in w.value for w in at.warning):  # 4,096 tokens: above the unigram line
        assert len(charts) == 1  # the conclusions withheld: the loss curves alone
    else:
        assert len(charts) >= 2
