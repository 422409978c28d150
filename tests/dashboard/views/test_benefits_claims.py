"""The Benefits tab's generic parts (issue 17): the claims table (verdict coloured and worded, interval, scale,
downloads), runs above the unigram line labelled ``not_learned`` with their conclusions withheld, the split line,
the unigram line on every loss chart, the values/seeds boxes bounded like ``xtlens probe``, and Quick."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest
from streamlit.testing.v1 import AppTest
from xtlens.core.config import PRESETS
from xtlens.dashboard.charts import benefits as bc
from xtlens.profiling.benefit import report
from xtlens.profiling.benefit.cli import LIMITS
from xtlens.profiling.benefit.probes import ProbeOptions, plan
from xtlens.profiling.benefit.records import ProbeRecord, probe_frame

APP = Path(__file__).resolve().parents[3] / "dashboard" / "app.py"
SEED = PRESETS["seed"]
UNIGRAM = 5.2213


def benefits(**state) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    at.session_state["view"] = "Benefits"
    for k, v in state.items():
        at.session_state[k] = v
    return at.run()


def _rows(losses: dict[str, float], *, unigram: float = UNIGRAM) -> pd.DataFrame:
    """Eval rows of a heads probe: per configuration three evaluations falling linearly to ``losses[name]``."""
    rows = []
    for i, (name, final) in enumerate(losses.items()):
        for step in (0, 4, 8):
            v = final + (8 - step) * 0.1
            rows.append(ProbeRecord(
                probe="heads", run_key=f"k{i}", config_name=name, config_key=f"c{i}", config_json=SEED.to_json(),
                variant="equal_params", axis="heads", axis_value=2 ** i, budget_kind="tokens", seed=0, step=step,
                steps_total=8, tokens_seen=step * 1024, train_flops=step * 10**9, budget_tokens=8192,
                train_loss_nats=v, val_loss_nats=v, val_bits_per_byte=v / 0.69 / 4, unigram_entropy_nats=unigram,
                num_params=100_000, batch=8, train_seq_len_tokens=128, corpus_name="pydoc_data.topics",
                corpus_sha256="ab" * 32, vocab_size=512, device="cpu", device_name="cpu", val_leak_fraction=0.0042,
                split_version="dedup-groups-v1"))
    return probe_frame(rows)


def _claims(verdicts: list[str]) -> pd.DataFrame:
    """A claims table as ``claims.summary_frame`` writes it (typed columns, missing values as <NA>)."""
    from xtlens.profiling.benefit.claims import Claim, summary_frame

    rows = []
    for i, v in enumerate(verdicts):
        learned = v != "not_learned"
        rows.append(Claim(probe="heads", claim=f"claim {i}: more heads give diverse attention",
                          metric="mean val loss, 4 heads - 1 head", unit="nats/token",
                          estimate=-0.0123 if learned else None, ci95_low=-0.0201 if learned else None,
                          ci95_high=-0.0042 if learned else None, seeds=5, windows=235,
                          min_detectable_effect=0.0061 if learned else None, verdict=v, num_params=100_000,
                          non_embedding_params=60_000, train_tokens=8192, tokens_per_param=0.08,
                          corpus="pydoc_data.topics", scale="100,000 parameters, 8,192 tokens, 0.08 tokens/param",
                          method="Shazeer (2019); paired bootstrap over 5 seeds x 235 windows"))
    return summary_frame(rows)


def _figures(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _hlines(fig: dict) -> list[float]:
    return [s["y0"] for s in fig["layout"].get("shapes", []) if s.get("y0") is not None and s.get("y0") == s.get("y1")]


def _y_title(fig: dict) -> str:
    t = fig["layout"].get("yaxis", {}).get("title", {})
    return t.get("text", "") if isinstance(t, dict) else str(t)


def test_values_and_seeds_boxes_are_bounded_like_the_cli_and_say_so_under_the_control() -> None:
    at = benefits(**{"benefits.probe": "heads"})
    assert not at.exception
    lo, hi = LIMITS["--values"]
    at.text_input(key="benefits.heads.values").set_value("0").run()
    assert not at.exception, [e.value for e in at.exception]
    (err,) = [e.value for e in at.error]
    assert err == f"values = '0' is not allowed: comma-separated integers from {lo:,} to {hi:,}, e.g. 32,64,128"
    # the message sits in the box's own column, under it, and nothing is planned or offered to run
    col = next(c for c in at.columns if any(t.key == "benefits.heads.values" for t in c.text_input))
    assert [e.value for e in col.error] == [err]
    assert not any(b.label == "Run probe" for b in at.button)
    assert at.radio(key="benefits.corpus").value == "default"  # the rest of the settings stay on the page
    at.text_input(key="benefits.heads.values").set_value("").run()
    at.text_input(key="benefits.heads.seeds").set_value(f"0,{2**32}").run()
    assert [e.value for e in at.error] == [f"seeds = '0,{2**32}' is not allowed: comma-separated integers from 0 to "
                                           "4,294,967,295, e.g. 0,1,2"]
    at.text_input(key="benefits.heads.seeds").set_value("0,1e400").run()
    assert not at.exception and "from 0 to 4,294,967,295" in at.error[0].value
    at.text_input(key="benefits.heads.seeds").set_value("0,1").run()
    assert not at.error and any(b.label == "Run probe" for b in at.button)


def test_quick_uses_the_quick_settings_and_the_wall_time_comes_from_one_place() -> None:
    at = benefits(**{"benefits.probe": "heads"})
    full = " ".join(c.value for c in at.caption)
    assert "a few minutes" not in full and report.wall_time_line("heads", False) in full
    assert report.FULL_SIZE_NOTE in full  # what the full size on a GPU showed, said before anything is run
    at.checkbox(key="benefits.quick").check().run()
    assert not at.exception
    quick = ProbeOptions(probe="heads", base=SEED, quick=True)
    assert at.number_input(key="benefits.heads.quick.tokens").value == quick.default("tokens")
    captions = " ".join(c.value for c in at.caption)
    assert f"{len(plan(quick))} training run(s)" in captions
    assert len(plan(quick)) < len(plan(ProbeOptions(probe="heads", base=SEED)))
    assert report.wall_time_line("heads", True) in captions


def test_claims_table_colours_and_words_each_verdict_and_not_learned_runs_withhold_conclusions(monkeypatch) -> None:
    from xtlens.dashboard.session import benefit_data

    claims = _claims(["supported", "not_detectable", "not_learned"])
    monkeypatch.setattr(benefit_data, "claims_frame", lambda frame: claims)
    frame = _rows({"1 head": 5.6, "4 heads": 5.3})  # both above the unigram line (5.2213)
    at = benefits(**{"benefits.probe": "heads", "_xtlens_probe_uploads": [("heads.parquet", frame)]})
    assert not at.exception, [e.value for e in at.exception]
    warnings = " ".join(w.value for w in at.warning)
    assert "not_learned — every run (1 head, 4 heads) ended at or above the unigram line (5.221 nats/token)" in warnings
    assert "conclusions are withheld" in warnings and report.FULL_SIZE_NOTE in warnings
    assert any(report.NOT_LEARNED_MESSAGE[1:] in i.value for i in at.info)
    captions = " ".join(c.value for c in at.caption)
    assert "Split — split rule dedup-groups-v1; val_leak_fraction 0.42%" in captions
    # the claims table: the verdict is a word in its own cell, coloured, and its meaning is spelt out
    table = next(d for d in at.dataframe if "meaning" in d.value.columns)
    shown = table.value
    assert shown["verdict"].tolist() == ["supported", "not_detectable", "not_learned"]
    assert shown["estimate [95% interval]"].tolist()[:2] == ["-0.0123 [-0.0201, -0.0042] nats/token"] * 2
    assert shown["estimate [95% interval]"].iloc[2] == "withheld: " + report.NOT_LEARNED_MESSAGE
    assert shown["meaning"].iloc[2] == report.VERDICT_WORDS["not_learned"]
    assert shown["seeds"].iloc[0] == "5 x 235 windows" and shown["min detectable effect"].iloc[0] == "0.0061 nats/token"
    assert shown["scale"].iloc[0].startswith("100,000 parameters")
    styles = table.proto.arrow_data.styler.styles
    for i, v in enumerate(("supported", "not_detectable", "not_learned")):  # each verdict cell its own colour
        assert f"row{i}_col0 {{ background-color: {bc.VERDICT_COLOURS[v]}" in styles
    assert "col1" not in styles  # only the verdict column is coloured
    # exportable like every other table: the four formats of common.downloads
    labels = [b.label for b in at.get("download_button") if "dl.benefits.claims.heads." in b.proto.id]
    assert labels == ["CSV", "JSON", "Parquet", "Markdown"]
    # conclusions withheld: only the loss curves, labelled not_learned, with the unigram line
    figs = _figures(at)
    assert len(figs) == 1
    assert {t["name"] for t in figs[0]["data"] if t.get("showlegend") is not False and t.get("name")} \
        >= {"1 head (val) — not_learned", "4 heads (val) — not_learned"}
    assert _hlines(figs[0]) == [pytest.approx(UNIGRAM)]
    # the final-evaluation table says it too
    runs = next(d for d in at.dataframe if "learned" in d.value.columns).value
    assert runs["learned"].tolist() == ["not_learned", "not_learned"]


def test_the_export_tab_lists_the_claims_table(monkeypatch) -> None:
    from xtlens.dashboard.session import benefit_data

    claims = _claims(["contradicted"])
    monkeypatch.setattr(benefit_data, "claims_frame", lambda frame: claims)
    at = benefits(_xtlens_probe_uploads=[("heads.parquet", _rows({"1 head": 4.0}))])
    at.session_state["view"] = "Export"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    md = " ".join(m.value for m in at.markdown)
    assert "**claims of heads: uploaded: heads.parquet** — 1 claim(s)" in md
    keys = [b.proto.id for b in at.get("download_button")]
    assert any("export.claims.0" in k for k in keys), keys


def test_unigram_line_goes_on_loss_charts_only_once_and_inside_a_fixed_range() -> None:
    fig = go.Figure(go.Bar(x=["a"], y=[4.0]))
    fig.update_yaxes(range=[3.9, 4.1], title_text=bc.LOSS_AXIS)
    bc.with_unigram_line(fig, UNIGRAM)
    bc.with_unigram_line(fig, UNIGRAM)
    assert bc.unigram_shapes(fig) == [UNIGRAM]
    lo, hi = fig.layout.yaxis.range
    assert lo == 3.9 and hi > UNIGRAM  # widened to show it
    delta = go.Figure(go.Scatter(x=[1], y=[0.1]))
    delta.update_yaxes(title_text="Δ loss vs 64-token windows (nats; < 0: helps)")
    assert bc.unigram_shapes(bc.with_unigram_line(delta, UNIGRAM)) == []
    grads = go.Figure(go.Scatter(x=[1], y=[0.1]))
    grads.update_yaxes(title_text="gradient norm (L2, before clipping; log)")
    assert not bc.is_loss_chart(grads)
    named = bc.label_not_learned(go.Figure([go.Scatter(name="dim=32 (val)"), go.Scatter(name="dim=320 (val)"),
                                            go.Scatter(name="dim=32")]), {"dim=32"})
    assert [t.name for t in named.data] == ["dim=32 (val) — not_learned", "dim=320 (val)", "dim=32 — not_learned"]


@pytest.fixture(scope="module")
def real_frames(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    """Tiny real probes (each probe's quick settings, shrunk further): the rows the harness writes today."""
    from xtlens.profiling.benefit.probes import run_probe

    mp = pytest.MonkeyPatch()
    mp.setenv("XTLENS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    small = {"dim": 32, "depth": 1, "heads": 2, "eval_tokens": 512}
    common = dict(base=SEED, tokens=1024, seq_len=32, batch=8, evals=2, extra=small, seeds=(0,), quick=True)
    out = {"scaling": run_probe(ProbeOptions(probe="scaling", values=(16, 32, 48),
                                             **common | {"extra": small | {"lrs": (3e-2,)}})),
           "stability": run_probe(ProbeOptions(probe="stability", values=(3,), **common)),
           "extrapolation": run_probe(ProbeOptions(probe="extrapolation", values=(1, 2), **common | {"seq_len": 16})),
           "heads": run_probe(ProbeOptions(probe="heads", values=(2,), **common))}
    mp.undo()
    return {k: probe_frame(v) for k, v in out.items()}


def _absolute_loss_axis(fig: dict) -> bool:
    title = _y_title(fig).lower()
    return "nats" in title and "loss" in title and not title.startswith(("δ", "change")) and "gain" not in title


@pytest.mark.slow
@pytest.mark.parametrize("learned", [True, False])
def test_every_loss_chart_of_every_probe_carries_the_unigram_line(real_frames, learned) -> None:
    """The unigram line is put where every run ended below it (the probe's own charts are drawn) or above it
    (conclusions withheld): on every chart of the tab whose y axis is a loss in nats, the line at that value."""
    drawn = 0
    for probe, frame in real_frames.items():
        loss = frame["val_loss_nats"].astype(float)
        line = round(float(loss.max()) + 0.25 if learned else float(loss.min()) - 0.25, 4)
        at = benefits(**{"benefits.probe": probe,
                         "_xtlens_probe_uploads": [(f"{probe}.parquet", frame.assign(unigram_entropy_nats=line))]})
        assert not at.exception, (probe, [e.value for e in at.exception])
        losses = [f for f in _figures(at) if _absolute_loss_axis(f)]
        for fig in losses:
            assert line in [pytest.approx(y) for y in _hlines(fig)], (probe, _y_title(fig), _hlines(fig))
        drawn += len(losses)
        warned = any("not_learned — every run" in w.value for w in at.warning)
        assert warned is not learned, probe
        if not learned:
            assert len(losses) == len(_figures(at)) == 1  # the loss curves alone: the conclusions withheld
    # today's sections: scaling 4 loss charts, heads 2; withheld: the loss curves of each of the 4 probes
    assert drawn >= 6 if learned else drawn == 4


def test_loss_curves_draw_the_unigram_line_inside_their_range_once() -> None:
    frame = _rows({"1 head": 3.0, "4 heads": 2.9}, unigram=UNIGRAM)  # losses 2.9 .. 3.8: the line above them all
    fig = bc.loss_curves(frame, probe="heads", title="t")
    assert bc.unigram_shapes(fig) == [UNIGRAM]
    lo, hi = fig.layout.yaxis.range
    assert lo < 2.9 and hi > UNIGRAM
    assert bc.unigram_shapes(bc.with_unigram_line(fig, UNIGRAM)) == [UNIGRAM]
