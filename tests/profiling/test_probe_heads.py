"""The heads probe: equal-parameter head counts with the confounds fixed, K/V heads, the context-ablation control."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from xtlens.core.builder import build_model
from xtlens.core.config import PRESETS
from xtlens.core.cost_model import param_counts
from xtlens.profiling.benefit import probe_heads as ph
from xtlens.profiling.benefit.probes import DEFAULTS, ProbeOptions, family, plan, run_key
from xtlens.profiling.benefit.records import ProbeRecord, probe_frame

SEED = PRESETS["seed"]
UNIGRAM = 5.2


def test_plan_holds_the_confounds_fixed_and_has_the_control() -> None:
    runs = plan(ProbeOptions(probe="heads", base=SEED))
    d = DEFAULTS["heads"]
    assert len(d["seeds"]) >= 5 and {r.seed for r in runs} == set(d["seeds"])
    seed0 = [r for r in runs if r.seed == 0]
    eq = {r.axis_value: r.cfg for r in seed0 if r.variant == "equal_params"}
    assert sorted(eq) == sorted(d["values"])
    # equal parameters; ALiBi on the same share of heads (the seed's 4 of 8); one rotary width for all
    assert len({param_counts(c).num_params for c in eq.values()}) == 1
    assert {c.alibi_num_heads / c.heads for c in eq.values()} == {SEED.alibi_num_heads / SEED.heads}
    assert {c.rotary_emb_dim for c in eq.values()} == {d["attn_dim_head"] // 2}
    assert {c.heads * c.attn_dim_head for c in eq.values()} == {d["heads"] * d["attn_dim_head"]}
    assert all(not c.attn_one_kv_head and c.attn_kv_heads is None for c in eq.values())
    # the rotary rule as its own arm, where it differs
    rule = {r.axis_value: r.cfg for r in seed0 if r.variant == "rotary_rule"}
    assert sorted(rule) == [2, 8] and all(c.rotary_emb_dim is None for c in rule.values())
    # K/V heads 1, grouped, full at the family's head count; full K/V is the reference training (one key)
    kv = {r.axis_value: r for r in seed0 if r.variant == "kv_heads"}
    assert sorted(kv) == [1, 2, 4]
    assert kv[1].cfg.attn_one_kv_head and kv[2].cfg.attn_kv_heads == 2
    ref = [r for r in seed0 if r.variant == "equal_params" and r.axis_value == d["heads"]][0]
    assert run_key(kv[4], "c", "cpu", {}) == run_key(ref, "c", "cpu", {})
    # the control: the reference configuration, built to shuffle its context at evaluation
    ctl = [r for r in seed0 if r.variant == "shuffled_context"]
    assert len(ctl) == 1 and ctl[0].cfg == ref.cfg and ctl[0].build == "shuffled_context"
    assert run_key(ctl[0], "c", "cpu", {}) != run_key(ref, "c", "cpu", {})
    assert len(seed0) == 3 + 2 + 3 + 1


def test_kv_cache_bytes_fall_with_fewer_kv_heads() -> None:
    from xtlens.core.config import Workload
    from xtlens.core.cost_model import memory_estimate

    seed0 = [r for r in plan(ProbeOptions(probe="heads", base=SEED, seeds=(0,))) if r.variant == "kv_heads"]
    b = {r.axis_value: memory_estimate(r.cfg, Workload(batch=1, seq_len=1)).kv_cache_bytes_per_token for r in seed0}
    depth, dh = DEFAULTS["heads"]["depth"], DEFAULTS["heads"]["attn_dim_head"]
    assert b == {g: 2 * depth * g * dh * 4 for g in (1, 2, 4)}  # K and V x layers x K/V heads x width x fp32


def test_shuffled_context_model_trains_as_the_reference_and_permutes_at_evaluation() -> None:
    cfg = family(SEED, dim=32, depth=1, heads=2, attn_dim_head=16, num_tokens=300, max_seq_len=16)
    ref = build_model(cfg, device="cpu", seed=3).model
    ctl = ph.build_shuffled_context(cfg, 3, "cpu")
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), ctl.state_dict().values(), strict=True))
    x = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    ref.train(), ctl.train()
    assert torch.equal(ref(x), ctl(x))  # training is untouched
    ref.eval(), ctl.eval()
    gen = torch.Generator().manual_seed(3 + ph.SHUFFLE_SEED_OFFSET)
    perm = torch.argsort(torch.rand(x.shape, generator=gen), dim=-1)
    with torch.no_grad():
        got = ctl(x)
        shuffled = ref(torch.gather(x, -1, perm))
        plain = ref(x)
    # the output at position perm[j] is the reference's output after reading the shuffled window up to j
    for b in range(2):
        for j in range(16):
            assert torch.allclose(got[b, perm[b, j]], shuffled[b, j])
    # position 0 of the shuffled window has no context: it equals the plain model on that token alone
    first = perm[:, 0]
    with torch.no_grad():
        alone = ref(x.gather(1, first[:, None]))
    assert torch.allclose(got[torch.arange(2), first], alone[:, 0], atol=1e-5)
    assert not torch.allclose(got, plain)
    assert sorted(perm[0].tolist()) == list(range(16))


def _frame(offsets: dict, *, seeds=(0, 1, 2, 3, 4), windows: int = 40, base: float = 4.0, noise: float = 0.03,
           seed_sd: float = 0.02):
    """Window rows (and a final eval row) per arm: loss = base + seed effect + window effect + offset + noise.
    ``offsets``: (variant, axis, axis_value) -> offset in nats. Pairing cancels the seed and window effects."""
    rng = np.random.default_rng(0)
    win = rng.normal(0, 0.5, windows)
    seed_eff = {s: rng.normal(0, seed_sd) for s in seeds}
    rows = []
    for (variant, axis, value), off in offsets.items():
        kv = 2 * 2 * (value if axis == "kv_heads" else 4) * 16 * 4
        for s in seeds:
            key = f"{variant}-{value}-{s}"
            c = dict(probe="heads", run_key=key, config_name=f"{variant} {value}", config_key=key, config_json="{}",
                     variant=variant, axis=axis, axis_value=value, seed=s, unigram_entropy_nats=UNIGRAM,
                     num_params=10_000, kv_cache_bytes_per_token=kv, budget_tokens=100_000, train_seq_len_tokens=128)
            losses = base + seed_eff[s] + win + off + rng.normal(0, noise, windows)
            rows.append(ProbeRecord(**c, row_kind="eval", step=10, val_loss_nats=float(losses.mean())))
            rows += [ProbeRecord(**c, row_kind="window", step=10, window_index=i, eval_seq_len_tokens=128,
                                 val_loss_nats=float(v)) for i, v in enumerate(losses)]
    return probe_frame(rows)


ARMS = {("equal_params", "heads", 2): 0.0, ("equal_params", "heads", 4): 0.0, ("equal_params", "heads", 8): -0.08,
        ("kv_heads", "kv_heads", 1): 0.0, ("kv_heads", "kv_heads", 2): 0.0, ("kv_heads", "kv_heads", 4): 0.0,
        ("shuffled_context", "heads", 4): 0.6}


def test_paired_difference_recovers_the_planted_offsets() -> None:
    f = _frame(ARMS)
    t = ph.heads_table(f).set_index(["variant", "axis_value"])
    assert t.loc[("equal_params", 4), "diff_vs_reference_nats"] == 0.0
    # full K/V at the family's head count is the reference training: 0, no interval of a run against itself
    assert t.loc[("kv_heads", 4), "diff_vs_reference_nats"] == 0.0 and pd.isna(t.loc[("kv_heads", 4), "ci95_low"])
    assert t.loc[("shuffled_context", 4), "diff_vs_reference_nats"] == pytest.approx(0.6, abs=0.03)
    assert t.loc[("equal_params", 8), "diff_vs_reference_nats"] == pytest.approx(-0.08, abs=0.03)
    # the paired estimate equals the plain difference of means over the same seeds and windows
    a, b = ph.window_matrix(f, "equal_params", 8), ph.window_matrix(f, "equal_params", 4)
    assert t.loc[("equal_params", 8), "diff_vs_reference_nats"] == pytest.approx(float((a - b).to_numpy().mean()))
    assert t.loc[("kv_heads", 1), "kv_cache_bytes_per_token"] * 4 == t.loc[("kv_heads", 4), "kv_cache_bytes_per_token"]
    assert t["learned"].all() and (t["seeds"] == 5).all()
    ctl = ph.control_table(f).iloc[0]
    assert ctl["ci95_low"] > ctl["probe_min_detectable_effect_nats"] > 0


def test_claims_from_constructed_frames() -> None:
    cl = {c.claim.split(" (")[0]: c for c in ph.claims(_frame(ARMS))}
    assert cl["Multi-query attention"].verdict == "supported"  # interval inside +- the equivalence margin
    assert cl["Grouped K/V"].verdict == "supported"
    assert cl["More heads at equal parameters help"].verdict == "supported"
    assert cl["Control: the probe detects the loss of context order"].verdict == "supported"
    mq = cl["Multi-query attention"]
    assert mq.ci95_low < 0 < mq.ci95_high and mq.seeds == 5 and mq.windows == 40
    assert -ph.EQUIVALENCE_MARGIN_NATS < mq.ci95_low and mq.ci95_high < ph.EQUIVALENCE_MARGIN_NATS
    # (z_0.975 + z_0.8) x se, with se ~ the 95% interval's half-width / 1.96
    assert mq.min_detectable_effect == pytest.approx(2.8016 * (mq.ci95_high - mq.ci95_low) / 2 / 1.96, rel=0.25)
    # planted costs: multi-query 0.1 nats worse -> contradicted; more heads hurt -> contradicted
    worse = ARMS | {("kv_heads", "kv_heads", 1): 0.1, ("equal_params", "heads", 8): 0.08}
    cl = {c.claim.split(" (")[0]: c for c in ph.claims(_frame(worse))}
    assert cl["Multi-query attention"].verdict == "contradicted"
    assert cl["More heads at equal parameters help"].verdict == "contradicted"
    # noise far above the planted effect: not detectable
    noisy = {c.claim.split(" (")[0]: c for c in ph.claims(_frame(ARMS | {("equal_params", "heads", 8): -0.01},
                                                                     noise=0.8, windows=10, seeds=(0, 1, 2)))}
    assert noisy["More heads at equal parameters help"].verdict == "not_detectable"
    # above the unigram line: not learned
    flat = {c.claim.split(" (")[0]: c for c in ph.claims(_frame(ARMS, base=UNIGRAM + 0.5))}
    assert {c.verdict for k, c in flat.items()} == {"not_learned"}


@pytest.mark.slow
def test_quick_heads_probe_end_to_end(tmp_path, monkeypatch) -> None:
    from xtlens.profiling.benefit.claims import VERDICTS
    from xtlens.profiling.benefit.probes import QUICK, run_probe

    monkeypatch.setenv("XTLENS_CACHE_DIR", str(tmp_path))
    frame = probe_frame(run_probe(ProbeOptions(probe="heads", base=SEED, quick=True)))
    t = ph.heads_table(frame)
    assert set(t["variant"]) == {"equal_params", "rotary_rule", "kv_heads", "shuffled_context"}
    assert (t["seeds"] == len(QUICK["heads"]["seeds"])).all()
    ctl = ph.control_table(frame).iloc[0]
    assert ctl["effect_nats"] > 0  # a shuffled context costs loss even after a short training
    assert all(c.verdict in VERDICTS for c in ph.claims(frame))


def test_effects_chart_puts_each_interval_beside_its_kv_bytes() -> None:
    from xtlens.dashboard.charts import benefits as bc

    t = ph.heads_table(_frame(ARMS))
    fig = bc.heads_effects(t, title="t")
    dots, bars = fig.data
    rows = t.iloc[::-1]
    assert list(dots.y) == list(bars.y) == list(rows["config_name"])
    assert list(dots.x) == pytest.approx(list(rows["diff_vs_reference_nats"].astype(float)))
    assert list(bars.x) == list(rows["kv_cache_bytes_per_token"])
    hi = (rows["ci95_high"].astype(float) - rows["diff_vs_reference_nats"].astype(float)).fillna(0)
    assert list(dots.error_x.array) == pytest.approx(list(hi))
    kv = bc.kv_tradeoff(t, title="t")
    assert any(s.y0 == UNIGRAM for s in kv.layout.shapes)
