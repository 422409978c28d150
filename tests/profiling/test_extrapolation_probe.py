"""The extrapolation probe (issue 17 item 3; Press et al. 2022): its arms, their builds, the absolute table
evaluated only where it was trained, the tables and the claims."""

from __future__ import annotations

import json
import math
import random

import pytest
from xtlens.core.config import PRESETS
from xtlens.profiling.benefit import probe_extrapolation as pe
from xtlens.profiling.benefit.probes import ProbeInputError, ProbeOptions, builder_for, plan, run_probe
from xtlens.profiling.benefit.records import probe_frame

SEED = PRESETS["seed"]


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    mp = pytest.MonkeyPatch()
    mp.setenv("XTLENS_CACHE_DIR", str(tmp_path_factory.mktemp("xtlens-cache")))
    mp.setenv("XTLENS_DB", str(tmp_path_factory.mktemp("db") / "results.sqlite"))
    yield
    mp.undo()


def test_the_plan_has_every_scheme_the_nope_control_and_both_shift_settings() -> None:
    runs = plan(ProbeOptions(probe="extrapolation", base=SEED))
    assert SEED.shift_tokens == 1
    arms = {(r.variant, r.axis_value) for r in runs}
    assert arms == {(s, shift) for s in pe.SCHEMES for shift in (0, 1)} and len(pe.SCHEMES) == 8
    assert {"nope", "alibi", "rotary", "rotary_full", "xpos", "alibi+xpos", "sinusoidal", "absolute"} == set(pe.SCHEMES)
    assert all(r.axis == "shift_tokens" and r.cfg.shift_tokens == r.axis_value for r in runs)
    L = runs[0].settings.seq_len
    by = {(r.variant, r.axis_value): r for r in runs}
    for shift in (0, 1):
        nope = by[("nope", shift)].cfg
        assert not (nope.alibi_pos_bias or nope.uses_rotary or nope.has_abs_pos_emb)
        assert by[("alibi", shift)].cfg.alibi_heads == nope.heads  # every head
        assert by[("alibi+xpos", shift)].cfg.alibi_heads == nope.heads // 2 and by[("alibi+xpos", shift)].cfg.rotary_xpos
        assert by[("rotary", shift)].cfg.rotary_dim == nope.attn_dim_head // 2  # the family's width
        assert by[("rotary_full", shift)].cfg.rotary_dim == nope.attn_dim_head
        ab = by[("absolute", shift)]
        assert ab.cfg.has_abs_pos_emb and ab.cfg.max_seq_len == L and ab.settings.eval_seq_lens == (L,)
        assert by[("rotary", shift)].settings.eval_seq_lens == (L, 2 * L, 4 * L, 8 * L)
        sinus = json.loads(by[("sinusoidal", shift)].build.removeprefix(pe.BUILD_PREFIX))
        assert sinus == {"wrapper": {"use_abs_pos_emb": True, "scaled_sinu_pos_emb": True}}
    # the seed's own combination at the family's shift is the current configuration
    assert [r.config_name for r in runs if "(current)" in r.config_name] == ["alibi+xpos, shift_tokens=1 (current)"]


def test_xpos_scale_base_relative_to_the_training_length() -> None:
    L = 64
    runs = plan(ProbeOptions(probe="extrapolation", base=SEED, seq_len=L, extra={"xpos_scale_base_per_train_len": 2}))
    xp = [r for r in runs if r.variant in ("xpos", "alibi+xpos")]
    assert {json.loads(r.build.removeprefix(pe.BUILD_PREFIX))["decoder"]["rotary_xpos_scale_base"] for r in xp} == {128}
    assert all(r.build == "builder" for r in runs if r.variant in ("alibi", "rotary", "nope"))
    runs = plan(ProbeOptions(probe="extrapolation", base=SEED, extra={"xpos_scale_base": 96}))
    assert all("96" in r.build for r in runs if r.variant == "xpos")
    for extra, option in (({"xpos_scale_base": 0}, "xpos_scale_base"),
                          ({"xpos_scale_base_per_train_len": -1}, "xpos_scale_base_per_train_len"),
                          ({"xpos_scale_base": 64, "xpos_scale_base_per_train_len": 1}, "xpos_scale_base_per_train_len"),
                          ({"schemes": ("alibi", "t5")}, "schemes")):
        with pytest.raises(ProbeInputError, match=f"^{option} = "):
            plan(ProbeOptions(probe="extrapolation", base=SEED, extra=extra))
    with pytest.raises(ProbeInputError, match="^--seq-len"):
        plan(ProbeOptions(probe="extrapolation", base=SEED, seq_len=6, tokens=10_000))


def test_xpos_decay_matches_x_transformers_rotary_embedding() -> None:
    from x_transformers.x_transformers import RotaryEmbedding

    width, base, n = 8, 512, 1024
    freqs, scale = RotaryEmbedding(width, use_xpos=True, scale_base=base).forward_from_seq_len(n)
    # a query at position i and a key at j < i: scale[i] * scale[j] ** -1 = b ** ((i - j) / scale_base) per channel
    ratio = (scale[0, n - 1] / scale[0, n - 1 - 64]).tolist()
    lo, hi = pe.xpos_decay(64, base, width)
    assert min(ratio) == pytest.approx(lo, rel=1e-5) and max(ratio) == pytest.approx(hi, rel=1e-5)
    assert lo == pytest.approx((0.4 / 1.4) ** (64 / 512)) and lo < hi < 1


def test_builds_with_the_keywords_the_config_does_not_expose() -> None:
    from x_transformers.x_transformers import ScaledSinusoidalEmbedding

    runs = plan(ProbeOptions(probe="extrapolation", base=SEED, extra={"xpos_scale_base": 96}))
    by = {(r.variant, r.axis_value): r for r in runs}
    sin = by[("sinusoidal", 0)]
    model = builder_for(sin.build)(sin.cfg, 0, "cpu")
    assert isinstance(model.pos_emb, ScaledSinusoidalEmbedding)
    nope = builder_for(by[("nope", 0)].build)
    assert nope is None  # plain core.builder
    from xtlens.core.builder import build_model

    plain = build_model(by[("nope", 0)].cfg, seed=0).model
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in plain.parameters()) + 1  # the scale
    xp = by[("xpos", 0)]
    assert builder_for(xp.build)(xp.cfg, 0, "cpu").attn_layers.rotary_pos_emb.scale_base == 96
    with pytest.raises(ValueError, match="only"):
        pe.builder_for(pe.BUILD_PREFIX + json.dumps({"decoder": {"depth": 40}}))


def _tiny_probe(tmp_path, schemes):
    # random sentences (no 64-byte string repeats, so the split has groups on both sides)
    rng = random.Random(0)
    words = [w.lower() for w in "the a model token window position length bias rotary head layer loss text train "
             "test short long scheme value key query shift decoder attention linear table learned fixed".split()]
    text = "\n\n".join(" ".join(rng.choice(words) + str(rng.randrange(100)) for _ in range(40)) + "."
                        for _ in range(150))
    (tmp_path / "c.txt").write_text(text)
    opt = ProbeOptions(probe="extrapolation", base=SEED, quick=True, corpus=str(tmp_path / "c.txt"), num_tokens=300,
                       evals=1, extra={"schemes": schemes})
    return opt, probe_frame(run_probe(opt, use_cache=False))


def test_absolute_has_no_rows_past_the_training_length_and_the_others_reach_the_longest(tmp_path) -> None:
    opt, frame = _tiny_probe(tmp_path, ("alibi", "absolute", "nope"))
    L = opt.default("seq_len")
    assert set(frame["status"]) == {"ok"}
    ab = frame[frame["variant"] == "absolute"]
    assert int(ab["eval_seq_len_tokens"].dropna().max()) == L
    assert ab[ab["row_kind"] == "position"]["position_end_tokens"].max() == L
    for scheme in ("alibi", "nope"):
        f = frame[(frame["variant"] == scheme) & (frame["row_kind"] == "window")]
        assert int(f["eval_seq_len_tokens"].max()) == 2 * L
        val = int(frame["val_split_tokens"].dropna().iloc[0])
        for length in (L, 2 * L):
            per_arm = f[f["eval_seq_len_tokens"] == length].groupby("axis_value").size()
            assert set(per_arm) == {(val - 1) // length}
    curves = pe.position_curves(frame)
    assert int(curves[curves["scheme"] == "absolute"]["position_end_tokens"].max()) == L
    assert int(curves[curves["scheme"] == "alibi"]["position_end_tokens"].max()) == 2 * L
    # the window matrix: one row per seed, one column per window, the beyond-L loss of each long window
    seeds, windows, m = pe.window_matrix(frame, scheme="alibi", shift=0, length=2 * L,
                                         column="beyond_train_len_loss_nats")
    rows = frame[(frame["variant"] == "alibi") & (frame["axis_value"] == 0) & (frame["row_kind"] == "window") &
                 (frame["eval_seq_len_tokens"] == 2 * L)]
    assert seeds == [0] and windows == sorted(rows["window_index"].astype(int))
    assert m[0].tolist() == pytest.approx(rows.sort_values("window_index")["beyond_train_len_loss_nats"].astype(float)
                                          .tolist())
    assert not any(math.isnan(v) for v in m[0])


@pytest.mark.slow
def test_headline_and_claims_from_the_interval(tmp_path) -> None:
    pytest.importorskip("xtlens.profiling.benefit.stats")
    pytest.importorskip("xtlens.profiling.benefit.claims")
    from xtlens.profiling.benefit.claims import VERDICTS

    opt, frame = _tiny_probe(tmp_path, ("alibi", "rotary", "rotary_full", "xpos", "alibi+xpos", "sinusoidal", "nope"))
    L = opt.default("seq_len")
    head = pe.headline(frame)
    assert set(head["eval_len_tokens"]) == {2 * L} and set(head["shift_tokens"]) == {0, 1}
    alibi = head[(head["scheme"] == "alibi")]
    assert alibi["minus_alibi_nats"].isna().all()
    rot = head[(head["scheme"] == "rotary") & (head["shift_tokens"] == 0)].iloc[0]
    # the paired difference's estimate is the difference of the two arms' means (same windows, same seed)
    a = head[(head["scheme"] == "alibi") & (head["shift_tokens"] == 0)].iloc[0]
    assert rot["minus_alibi_nats"] == pytest.approx(rot["beyond_L_loss_nats"] - a["beyond_L_loss_nats"], abs=1e-9)
    assert rot["minus_alibi_ci95_low"] <= rot["minus_alibi_nats"] <= rot["minus_alibi_ci95_high"]
    cl = pe.claims(frame)
    assert cl and all(c.verdict in VERDICTS and c.probe == "extrapolation" for c in cl)
    by = {c.claim: c for c in cl}
    assert any("token shift" in c for c in by)
    gain = by["The model uses its context at the training length (shift_tokens=0)"]
    for c in cl:
        if c.estimate is not None and c.verdict == "supported" and "no difference" not in c.note:
            assert (c.ci95_low > 0) or (c.ci95_high < 0)
    # a tiny quick model that does not demonstrably use its context: its extrapolation verdicts are withheld
    if gain.ci95_low is None or gain.ci95_low <= 0:
        assert all(c.verdict in ("not_detectable", "not_learned") for c in cl
                   if c.claim.startswith("ALiBi extrapolates") and c.claim.endswith("(shift_tokens=0)"))
