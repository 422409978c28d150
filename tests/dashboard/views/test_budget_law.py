"""The budget explorer uses the user's fitted loss law when probe runs exist (issue 18, item 4): the grid's loss
and band are the law's prediction, the Pareto front follows the fitted loss, the sentence names the front, and the
Setups tab switches its label from the literature fit to "fitted to your runs: ..." once probe runs are stored."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from xtlens.core import cost_model, units
from xtlens.core.config import PRESETS, Workload
from xtlens.core.setup import ServingSetup, TrainingSetup
from xtlens.dashboard import budget, proxies
from xtlens.dashboard.charts import setups as setup_charts
from xtlens.profiling.benefit import forecast, probe_store
from xtlens.profiling.benefit.records import ProbeRecord, probe_frame

APP = Path(__file__).resolve().parents[3] / "dashboard" / "app.py"
SEED = PRESETS["seed"]
WL = Workload(seq_len=2048)
TOKENS = 1e10


@dataclass(frozen=True, kw_only=True)
class FakeLaw:
    """A law whose loss is lowest at a middle size (so its front differs from Chinchilla's), interval width known."""

    level: float = 0.8

    label: str = "fitted to your runs: 3 sizes, 2 seeds, corpus fake.txt"
    unit: str = "bits/byte"
    notes: tuple[str, ...] = ("token term not fitted from one budget", "extrapolated x1000 beyond the largest run")
    best_params: float = 3e7

    largest_run_params: float = 1e5

    def extrapolation(self, num_params: float) -> float:
        return num_params / self.largest_run_params

    def predict(self, num_params: float, tokens: float) -> tuple[float, float, float]:
        est = 1.0 + 0.1 * abs(np.log(num_params / self.best_params)) + 1e3 / tokens
        half = 0.01 * (1 + np.log10(num_params))
        return est, est - half, est + half


def _grid(law: budget.LossLaw = budget.CHINCHILLA, memory_gib: float = 8) -> pd.DataFrame:
    b = budget.Budget(device_memory_bytes=int(memory_gib * units.GIB), train_tokens=TOKENS)
    return budget.grid(SEED, WL, x="dim", y="depth", xs=(256, 512, 1024, 2048), ys=(2, 6, 12, 24),
                       training=TrainingSetup(precision="amp_bf16"), serving=ServingSetup(), budget=b, law=law)


def _front_by_hand(frame: pd.DataFrame) -> set[tuple[float, float]]:
    """Feasible points that no feasible point beats on both training FLOPs and loss (brute force)."""
    ok = frame[frame["feasible"]]
    out = set()
    for _, p in ok.iterrows():
        beaten = ((ok["train_flops"] <= p["train_flops"]) & (ok["loss"] <= p["loss"])
                  & ((ok["train_flops"] < p["train_flops"]) | (ok["loss"] < p["loss"]))).any()
        if not beaten:
            out.add((p["dim"], p["depth"]))
    return out


def test_fitted_law_gives_the_loss_and_band_per_grid_point() -> None:
    law = FakeLaw()
    frame = _grid(law)
    assert len(frame) == 16
    for _, r in frame.iterrows():
        pc = cost_model.param_counts(SEED.replace(dim=int(r["dim"]), depth=int(r["depth"])))
        assert r["non_embedding_params"] == pc.non_embedding_params and r["num_params"] == pc.num_params
        est, low, high = law.predict(pc.num_params, TOKENS)
        assert (r["loss"], r["loss_low"], r["loss_high"]) == pytest.approx((est, low, high), rel=1e-12)
        assert r["loss_low"] < r["loss"] < r["loss_high"]
    # the literature fit: Chinchilla's formula on all parameters, a point estimate (low = high = loss)
    chin = _grid()
    f = proxies.CHINCHILLA_FIT
    by_hand = f["E"] + f["A"] / chin["num_params"] ** f["alpha"] + f["B"] / TOKENS ** f["beta"]
    np.testing.assert_allclose(chin["loss"], by_hand, rtol=1e-12)
    assert (chin["loss_low"] == chin["loss"]).all() and (chin["loss_high"] == chin["loss"]).all()


def test_the_front_follows_the_fitted_loss() -> None:
    fitted, chin = _grid(FakeLaw(), memory_gib=80), _grid(memory_gib=80)
    assert (fitted["feasible"] == chin["feasible"]).all()  # the costs do not depend on the law
    front_fitted = set(map(tuple, fitted.loc[fitted["pareto"], ["dim", "depth"]].to_numpy()))
    front_chin = set(map(tuple, chin.loc[chin["pareto"], ["dim", "depth"]].to_numpy()))
    assert front_fitted == _front_by_hand(fitted) and front_chin == _front_by_hand(chin)
    assert front_fitted != front_chin
    # Chinchilla: bigger is always better, so the largest feasible model is on its front; the fake law penalises
    # size past 3e7 non-embedding parameters, so nothing bigger than the best fitted point is on the front
    best = fitted.loc[fitted.loc[fitted["feasible"], "loss"].idxmin()]
    assert fitted.loc[fitted["pareto"], "train_flops"].max() == best["train_flops"]
    assert chin.loc[chin["feasible"], "num_params"].idxmax() in set(chin.index[chin["pareto"]])


def test_the_sentence_names_the_front_the_budget_and_the_law() -> None:
    law = FakeLaw()
    b = budget.Budget(device_memory_bytes=8 * units.GIB, train_tokens=TOKENS, max_train_flops=1e21)
    frame = budget.grid(SEED, WL, x="dim", y="depth", xs=(256, 512, 1024), ys=(2, 6, 12),
                        training=TrainingSetup(precision="amp_bf16"), serving=ServingSetup(), budget=b, law=law)
    text = budget.front_sentence(frame, x="dim", y="depth", budget=b, law=law)
    assert text.startswith("Under 8.000 GiB per device and 1e+21 training FLOPs, for 1e+10 training tokens, "
                           "the configurations on the front are: ")
    assert text.endswith(f"(loss from {law.label}).")
    front = frame[frame["pareto"]].sort_values("train_flops")
    assert len(front) >= 2
    for _, r in front.iterrows():
        assert (f"dim {r['dim']:g} x depth {r['depth']:g} ({r['train_flops']:.3g} FLOPs, loss {r['loss']:.3f} "
                f"[{r['loss_low']:.3f}, {r['loss_high']:.3f}] bits/byte)") in text
    assert text.count(" x depth ") == len(front)  # the front and nothing else
    off = frame[~frame["pareto"]].iloc[0]
    assert f"dim {off['dim']:g} x depth {off['depth']:g} (" not in text
    # nothing fits: said, not an empty list
    tiny = budget.Budget(device_memory_bytes=1, train_tokens=TOKENS)
    none = budget.grid(SEED, WL, x="dim", y="depth", xs=(256,), ys=(2,), training=TrainingSetup(),
                       serving=ServingSetup(), budget=tiny)
    assert "no configuration of this grid fits" in budget.front_sentence(none, x="dim", y="depth", budget=tiny,
                                                                         law=budget.CHINCHILLA)
    assert budget.law_notes(law) == list(law.notes) and budget.law_notes(budget.CHINCHILLA)
    # a long front is named by evenly spaced configurations, the cheapest and the lowest loss included
    big = _grid(memory_gib=80)
    front = big[big["pareto"]].sort_values("train_flops")
    assert len(front) > 3
    short = budget.front_sentence(big, x="dim", y="depth", budget=b, law=budget.CHINCHILLA, max_listed=3)
    first, last = front.iloc[0], front.iloc[-1]
    assert f"the configurations on the front (3 of {len(front)}, from the cheapest to the lowest loss) are: " in short
    assert short.count(" x depth ") == 3 and f"; the other {len(front) - 3} lie between them" in short
    assert f"dim {first['dim']:g} x depth {first['depth']:g} (" in short
    assert f"dim {last['dim']:g} x depth {last['depth']:g} (" in short and last["loss"] == front["loss"].min()


def test_the_extrapolation_note_spans_the_front() -> None:
    law = FakeLaw()
    frame = _grid(law, memory_gib=80)
    front = frame.loc[frame["pareto"], "num_params"]
    lo, hi = front.min() / 1e5, front.max() / 1e5
    assert lo >= 10  # the whole front lies beyond the fake law's largest run
    assert budget.extrapolation_note(frame, law) == (
        f"the front's configurations are {lo:,.0f}x-{hi:,.0f}x the largest run's parameters: extrapolated beyond "
        "the runs")
    assert budget.extrapolation_note(frame, FakeLaw(largest_run_params=1e12)).endswith(": not beyond the runs")
    assert budget.extrapolation_note(frame, budget.CHINCHILLA) == ""  # a law without runs


def test_the_pareto_chart_draws_the_band_only_for_a_law_with_an_interval() -> None:
    frame = _grid(FakeLaw(), memory_gib=80)
    fig = setup_charts.pareto_figure(frame, x="dim", y="depth", current=(512, 6), benefit="fake", unit="bits/byte",
                                     title="t")
    front = frame[frame["pareto"]].sort_values("train_flops")
    (band,) = [t for t in fig.data if t.name == "front: the law's interval"]
    np.testing.assert_allclose(band.y, front["loss_low"])
    (line,) = [t for t in fig.data if t.name == "Pareto front"]
    np.testing.assert_allclose(np.asarray(line.y) + line.error_y.array, front["loss_high"])
    np.testing.assert_allclose(np.asarray(line.y) - line.error_y.arrayminus, front["loss_low"])
    assert fig.layout.yaxis.title.text == "predicted loss (bits/byte)"
    chin = setup_charts.pareto_figure(_grid(), x="dim", y="depth", current=(512, 6), benefit="b", title="t")
    assert "front: the law's interval" not in [t.name for t in chin.data]


# -- the Setups tab, end to end ------------------------------------------------------------------------------------

CORPUS = {"corpus_name": "fake.txt", "corpus_sha256": "ab" * 32}


def _scaling_rows(dims: tuple[int, ...], seeds: tuple[int, ...]) -> list[list[ProbeRecord]]:
    """One run per (dim, seed) of a scaling probe: its final evaluation row (bits/byte falling with size)."""
    runs = []
    for dim in dims:
        cfg = SEED.replace(dim=dim, depth=2)
        pc = cost_model.param_counts(cfg)
        for seed in seeds:
            runs.append([ProbeRecord(
                probe="scaling", run_key=f"scaling-{dim}-{seed}", config_name=f"dim={dim}", config_key=f"k{dim}",
                config_json=cfg.to_json(), variant=f"dim={dim}", axis="dim", axis_value=dim, budget_kind="tokens",
                seed=seed, step=100, steps_total=100, tokens_seen=200_000, budget_tokens=200_000,
                val_loss_nats=2.0 + 40.0 / dim + 0.01 * seed, val_bits_per_byte=1.0 + 20.0 / dim + 0.01 * seed,
                num_params=pc.num_params, non_embedding_params=pc.non_embedding_params, **CORPUS)])
    return runs


def _fake_forecast(monkeypatch, calls: list) -> None:
    """``forecast.budget_law_status`` (what ``law_for_budget`` returns, and why not) replaced by one that records the
    rows it is given and labels the law from them as the real one does, so the test sees what the page passes."""
    def budget_law_status(frame: pd.DataFrame, corpus_label: str) -> tuple[FakeLaw, str]:
        calls.append((frame, corpus_label))
        return FakeLaw(label=f"fitted to your runs: {frame['axis_value'].nunique()} sizes, "
                             f"{frame['seed'].nunique()} seeds, corpus {corpus_label}"), ""

    monkeypatch.setattr(forecast, "budget_law_status", budget_law_status)


def _explorer_texts(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown] + [c.value for c in at.caption]


def test_setups_tab_switches_from_the_literature_fit_to_the_fitted_law(monkeypatch) -> None:
    calls: list = []
    _fake_forecast(monkeypatch, calls)
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params.update({"view": "Setups"})
    at.run()
    at.session_state["view"] = "Setups"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    (law,) = [s for s in at.selectbox if s.key == "setups.law"]
    assert law.options == [budget.LITERATURE_LABEL]
    texts = _explorer_texts(at)
    answer = [t for t in texts if "the configurations on the front" in t]
    assert len(answer) == 1 and answer[0].endswith(f"(loss from {budget.LITERATURE_LABEL}).**"), answer
    assert any("Loss from: **literature fit (Hoffmann et al. 2022, their data)**, in nats/token" in t for t in texts)
    assert not calls

    for run in _scaling_rows((16, 32, 64), (0, 1)):
        probe_store.store_run(run[0].run_key, run)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    (frame, corpus_label), = calls
    assert corpus_label == "fake.txt" and len(frame) == 6 and set(frame["probe"]) == {"scaling"}
    assert sorted(frame["val_bits_per_byte"]) == sorted(r[0].val_bits_per_byte for r in _scaling_rows((16, 32, 64), (0, 1)))
    label = "fitted to your runs: 3 sizes, 2 seeds, corpus fake.txt"
    (law,) = [s for s in at.selectbox if s.key == "setups.law"]
    assert law.options == [f"{label} (scaling probe, 6 runs; result store)", budget.LITERATURE_LABEL]
    assert law.value == law.options[0]  # the fitted law is the default once it exists
    texts = _explorer_texts(at)
    (answer,) = [t for t in texts if "the configurations on the front" in t]
    assert answer.endswith(f"(loss from {label}).**") and "bits/byte" in answer
    # the sentence names the front of the grid the page computed with the fitted law (6 of it at most)
    (grid,) = [d.value for d in at.dataframe if "loss_high" in d.value]
    front = grid[grid["pareto"]].sort_values("train_flops")
    named = [r for _, r in grid.iterrows()
             if f"dim {r['dim']:g} x depth {r['depth']:g} ({r['train_flops']:.3g} FLOPs, loss {r['loss']:.3f}" in answer]
    assert answer.count(" x depth ") == len(named) == min(6, len(front)) and all(r["pareto"] for r in named)
    assert {(r["dim"], r["depth"]) for r in named} >= {tuple(front.iloc[0][["dim", "depth"]]),
                                                       tuple(front.iloc[-1][["dim", "depth"]])}
    assert any(f"Loss from: **{label}**, in bits/byte" in t and "not comparable in absolute terms" in t
               and "Token term not fitted from one budget. Extrapolated x1000 beyond the largest run." in t
               and "The front's configurations are " in t for t in texts)
    assert any("shaded band and bars: the law's 80% interval" in t for t in texts)
    # the user can still rank by the literature fit
    at.selectbox(key="setups.law").set_value(budget.LITERATURE_LABEL).run()
    (answer,) = [t for t in _explorer_texts(at) if "the configurations on the front" in t]
    assert answer.endswith(f"(loss from {budget.LITERATURE_LABEL}).**")


# -- through the real fit (profiling.benefit.forecast.law_for_budget) ----------------------------------------------

E_BITS, A_BITS, ALPHA = 0.9, 30.0, 0.35  # the planted law, in bits/byte against total parameters


def _atlas_reference_runs() -> list[list[ProbeRecord]]:
    """An atlas's reference arm at 4 sizes x 3 seeds whose seed means follow the planted law exactly (seed noise
    +-0.002 bits/byte, mean 0), all below the unigram line (learned)."""
    runs = []
    for dim in (16, 32, 64, 128):
        cfg = SEED.replace(dim=dim, depth=2, num_tokens=256)
        pc = cost_model.param_counts(cfg)
        for seed in (0, 1, 2):
            bpb = E_BITS + A_BITS * pc.num_params ** -ALPHA + 0.002 * (seed - 1)
            runs.append([ProbeRecord(
                probe="atlas", run_key=f"atlas-{dim}-{seed}", config_name=f"reference, dim {dim}", config_key=f"a{dim}",
                config_json=cfg.to_json(), variant="reference", axis="dim", axis_value=dim, seed=seed, step=50,
                steps_total=50, tokens_seen=100_000, budget_tokens=100_000, val_bits_per_byte=bpb,
                val_loss_nats=2.4 * bpb, unigram_entropy_nats=20.0, num_params=pc.num_params,
                non_embedding_params=pc.non_embedding_params, **CORPUS)])
    return runs


def test_the_explorer_ranks_by_the_law_fitted_to_stored_atlas_runs() -> None:
    runs = _atlas_reference_runs()
    law = forecast.law_for_budget(probe_frame([r for run in runs for r in run]), "fake.txt")
    assert law is not None and law.label == "fitted to your runs: 4 sizes, 3 seeds, corpus fake.txt"
    frame = _grid(law, memory_gib=80)
    truth = E_BITS + A_BITS * frame["num_params"].astype(float) ** -ALPHA
    np.testing.assert_allclose(frame["loss"], truth, rtol=1e-6)  # the planted law, recovered
    assert ((frame["loss_low"] <= truth) & (truth <= frame["loss_high"])).all()
    assert (frame["loss_high"] > frame["loss_low"]).all()

    for run in runs:
        probe_store.store_run(run[0].run_key, run)
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params.update({"view": "Setups"})
    at.run()
    at.session_state["view"] = "Setups"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    (choice,) = [s for s in at.selectbox if s.key == "setups.law"]
    assert choice.value == f"{law.label} (atlas probe, 12 runs; result store)"
    texts = _explorer_texts(at)
    (answer,) = [t for t in texts if "the configurations on the front" in t]
    assert answer.endswith(f"(loss from {law.label}).**") and " bits/byte)" in answer
    (grid,) = [d.value for d in at.dataframe if "loss_high" in d.value]
    page_truth = E_BITS + A_BITS * grid["num_params"].astype(float) ** -ALPHA
    np.testing.assert_allclose(grid["loss"], page_truth, rtol=1e-6)
    assert any("token term not fitted" in t.lower() and "extrapolated beyond the runs" in t for t in texts)
    # how far the band can be trusted: the held-out check of the same runs, as computed without the page
    from xtlens.dashboard.views.atlas import coverage_line

    held = forecast.holdout(forecast.arm_points(probe_frame([r for run in runs for r in run])))
    shown = [t for t in texts + [w.value for w in at.warning] if t.startswith("Held-out check of this kind of law")]
    assert shown == [f"Held-out check of this kind of law on these runs: {coverage_line(held)}"], shown


def test_a_store_that_cannot_be_read_leaves_the_literature_fit_and_says_why(tmp_path, monkeypatch) -> None:
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"\x00" * 5000)
    monkeypatch.setenv("XTLENS_DB", str(bad))
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params.update({"view": "Setups"})
    at.run()
    at.session_state["view"] = "Setups"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    (choice,) = [s for s in at.selectbox if s.key == "setups.law"]
    assert choice.options == [budget.LITERATURE_LABEL]
    assert any("The result store could not be read (" in t and "is not an SQLite database" in t
               for t in _explorer_texts(at))
    assert bad.read_bytes() == b"\x00" * 5000


def test_runs_that_give_no_law_are_named_with_the_reason() -> None:
    for run in _atlas_reference_runs()[:3]:  # one size, 3 seeds: no law in size
        probe_store.store_run(run[0].run_key, run)
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params.update({"view": "Setups"})
    at.run()
    at.session_state["view"] = "Setups"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    (choice,) = [s for s in at.selectbox if s.key == "setups.law"]
    assert choice.options == [budget.LITERATURE_LABEL]
    assert any("3 run(s) of the atlas probe on fake.txt (result store) give no law: " in t and "1 size" in t
               for t in _explorer_texts(at)), _explorer_texts(at)


def test_sources_join_the_store_and_the_session_per_probe_and_corpus_without_counting_a_run_twice() -> None:
    from xtlens.dashboard.session import budget_data, store, uploads

    runs = _atlas_reference_runs()
    for run in runs[:6]:  # dims 16 and 32 stored
        probe_store.store_run(run[0].run_key, run)
    other = [r.__class__(**{**r.to_dict(), "corpus_name": "other.txt", "corpus_sha256": "ef" * 32,
                            "run_key": "o-" + r.run_key}) for run in runs[:3] for r in run]
    upload = probe_frame([r for run in runs[3:] for r in run] + other)  # dims 32 (again), 64, 128; another corpus
    with store.use({}):
        uploads.add_probe_upload("mine.csv", upload)
        found, problem = budget_data.sources()
    assert problem == ""
    assert [(s.probe, s.corpus_name, s.runs, s.origin) for s in found] == [
        ("atlas", "fake.txt", 12, "result store + uploaded: mine.csv"), ("atlas", "other.txt", 3, "uploaded: mine.csv")]
    rows = found[0].rows
    assert sorted(rows["run_key"]) == sorted(run[0].run_key for run in runs)  # each run once
    law, why = budget_data.fit(found[0])
    assert why == "" and law.label == "fitted to your runs: 4 sizes, 3 seeds, corpus fake.txt"
    assert budget_data.fit(found[1])[0] is None and "1 size" in budget_data.fit(found[1])[1]


def test_a_gpus_context_and_workspaces_come_off_the_budget_grids_memory():
    """A point whose training peak fits the device's memory but not that memory less the CUDA context and cuBLAS
    workspaces (``Budget.process_overhead_bytes``) is feasible on a CPU of that size and not on a GPU of it."""
    from xtlens.core.cuda_memory import context_bytes_for, cublas_workspace_bytes_for

    cfg, wl = PRESETS["seed"], Workload(batch=1, seq_len=512, dtype="float32")
    training, serving = TrainingSetup(), ServingSetup()
    peak = cost_model.training_memory(cfg, wl, training).peak_bytes
    overhead = context_bytes_for("H200 141GB")[0] + cublas_workspace_bytes_for("H200 141GB")
    device = peak + overhead // 2  # room for the tensors, not for the context as well
    kw = dict(x="dim", y="depth", xs=[cfg.dim], ys=[cfg.depth], training=training, serving=serving)
    cpu = budget.grid(cfg, wl, budget=budget.Budget(device_memory_bytes=device), **kw)
    gpu = budget.grid(cfg, wl, budget=budget.Budget(device_memory_bytes=device, process_overhead_bytes=overhead), **kw)
    assert int(cpu["train_peak_bytes"].iloc[0]) == peak
    assert bool(cpu["feasible"].iloc[0]) and not bool(gpu["feasible"].iloc[0])
