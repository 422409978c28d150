"""The extrapolation probe: does the position scheme let a decoder trained at length L read windows of 2L-8L?

Method: Press, Smith and Lewis (2022), "Train Short, Test Long: Attention with Linear Biases Enables Input Length
Extrapolation" (ICLR 2022): train at L, evaluate the same validation text in non-overlapping windows of k L and
read the loss of the tokens PAST L (a scheme that extrapolates keeps it at, or below, its loss with L-token
windows; one that does not breaks there). The seed analysis' claim under test: the seed combines ALiBi (on half
the heads) with xpos (Sun et al. 2023, "A Length-Extrapolatable Transformer") so that it "extrapolates to longer
sequences".

Arms (``variant`` = the scheme; every other flag of the family member kept, its position flags replaced):

* ``alibi``: ALiBi on every head; the REFERENCE every other arm is paired against;
* ``rotary``: rotary at the width the family configures (``rotary_emb_dim``, default ``attn_dim_head // 2``:
  x-transformers warns below 32);
* ``rotary_full``: rotary on every channel of a head (``rotary_emb_dim = attn_dim_head``);
* ``xpos``: rotary with xPos scaling at the family's rotary width. xPos multiplies the score of a query-key pair
  at distance d by ``b_i ** (d / scale_base)`` per channel pair i, ``b_i = (2i + 0.4 w) / (1.4 w)`` (0.29 for the
  fastest-decaying pair, about 1 for the slowest): with x-transformers' ``scale_base`` 512 and the default L = 64
  the strongest decay at distance L is 0.29 ** (64 / 512) = 0.86, barely a decay inside the training window
  (``xpos_decay``). ``extra["xpos_scale_base"]`` (tokens) or ``extra["xpos_scale_base_per_train_len"]`` (a
  multiple of L) sets it (x-transformers' ``rotary_xpos_scale_base``, which ``ModelConfig`` does not expose: the
  run is built with that keyword, ``RunSpec.build`` names it);
* ``alibi+xpos``: the seed's combination (ALiBi on half the heads, xPos rotary on all);
* ``sinusoidal``: x-transformers' own fixed sinusoidal absolute embedding, ``scaled_sinu_pos_emb`` (sin/cos of
  the position at geometric frequencies, times one learned scalar initialised to ``dim ** -0.5``;
  x-transformers has no unscaled sinusoidal embedding, and ``ModelConfig`` exposes neither, so the run is built
  with ``TransformerWrapper(use_abs_pos_emb=True, scaled_sinu_pos_emb=True)``);
* ``absolute``: a learned absolute table of L rows, evaluated ONLY at L: its rows past L would never have been
  trained (random vectors added to the input), so a loss there measures noise, not extrapolation;
* ``nope``: no position information at all (the control: Haviv et al. 2022 show a causal decoder infers some).

Each arm is trained with the family's ``shift_tokens`` (the seed's 1) and with ``shift_tokens=0``
(``axis="shift_tokens"``, ``axis_value``): the token shift hands every position a slice of the previous
position's features, which is order information of its own, so a scheme's effect is read at ``shift_tokens=0``.

Statistics (``profiling.benefit.stats``): every arm is evaluated on the same windows of the whole validation
split; each comparison is the per-window difference (arm minus ALiBi, same seeds), with a hierarchical bootstrap
over seeds and windows. The headline per arm: the mean loss at positions >= L in windows of 8L (and 2L, 4L).
A training length is only informative if the model uses its context there: ``context_gain_nats`` (the targets of
positions [L/2, L) scored from only their last 1 .. ``CONTEXT_HEAD_TOKENS`` inputs, minus their loss with the whole
window; ``harness.short_context_nll``) must be detectably above 0 (verdict ``supported``), else the extrapolation
claims of that setting are ``not_detectable``.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from xtlens.core.config import ConfigError, ModelConfig
from xtlens.profiling.benefit.harness import CONTEXT_HEAD_TOKENS, Builder, RunSpec
from xtlens.profiling.benefit.probe_options import (
    POSITIONS,
    ProbeInputError,
    ProbeOptions,
    budget_for,
    member,
    train_settings,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SCHEMES", "REFERENCE", "SHIFT_AXIS", "BUILD_PREFIX", "scheme_config", "scheme_build", "builder_for",
           "xpos_scale_base", "xpos_decay", "plan", "window_matrix", "headline", "context_gains", "position_curves",
           "claims", "train_len_of"]

SCHEMES: tuple[str, ...] = POSITIONS
REFERENCE = "alibi"
SHIFT_AXIS = "shift_tokens"
#: ``RunSpec.build`` of a run built with x-transformers keywords ``ModelConfig`` does not expose (JSON after it)
BUILD_PREFIX = "xt-kwargs:"
#: the keywords such a build may add (nothing else is passed through)
_ALLOWED = {"wrapper": {"use_abs_pos_emb", "scaled_sinu_pos_emb"}, "decoder": {"rotary_xpos_scale_base"}}
XT_DEFAULT_XPOS_SCALE_BASE = 512  # x_transformers.py: AttentionLayers(rotary_xpos_scale_base = 512)
PRESS_ET_AL = "Press et al. 2022, 'Train Short, Test Long' (ICLR)"


# --- the arms --------------------------------------------------------------------------------------

def scheme_config(base: ModelConfig, scheme: str, *, train_len: int, shift_tokens: int) -> ModelConfig:
    """``base`` with its position flags replaced by ``scheme``'s and ``shift_tokens`` set (``absolute``: a table of
    ``train_len`` rows)."""
    none = dict(alibi_pos_bias=False, alibi_num_heads=None, rotary_pos_emb=False, rotary_xpos=False,
                use_abs_pos_emb=False, rotary_emb_dim=None)
    half = base.alibi_num_heads if base.alibi_num_heads is not None and base.alibi_num_heads < base.heads else \
        max(1, base.heads // 2)
    width = base.rotary_emb_dim
    change = {"alibi": dict(alibi_pos_bias=True),
              "rotary": dict(rotary_pos_emb=True, rotary_emb_dim=width),
              "rotary_full": dict(rotary_pos_emb=True, rotary_emb_dim=base.attn_dim_head),
              "xpos": dict(rotary_xpos=True, rotary_emb_dim=width),
              "alibi+xpos": dict(alibi_pos_bias=True, alibi_num_heads=half, rotary_xpos=True, rotary_emb_dim=width),
              "sinusoidal": {},  # built with scaled_sinu_pos_emb (scheme_build)
              "absolute": dict(use_abs_pos_emb=True, max_seq_len=train_len),
              "nope": {}}
    if scheme not in change:
        raise ProbeInputError("scheme", scheme, f"one of {', '.join(SCHEMES)}")
    try:
        return replace(base, **(none | {"shift_tokens": shift_tokens} | change[scheme]))
    except ConfigError as exc:
        raise ProbeInputError(f"--set {exc.field}", exc.value, exc.allowed) from None


def xpos_scale_base(opt: ProbeOptions, train_len: int) -> int | None:
    """The xPos ``scale_base`` the user asked for (``extra["xpos_scale_base"]`` in tokens, or
    ``extra["xpos_scale_base_per_train_len"]`` times L); None: x-transformers' default (512)."""
    tokens, per = opt.extra.get("xpos_scale_base"), opt.extra.get("xpos_scale_base_per_train_len")
    if tokens is not None and per is not None:
        raise ProbeInputError("xpos_scale_base_per_train_len", per, "unset when xpos_scale_base is given (one of them)")
    if tokens is not None:
        if isinstance(tokens, bool) or not isinstance(tokens, int) or not 1 <= tokens <= 1_048_576:
            raise ProbeInputError("xpos_scale_base", tokens, "an integer number of tokens from 1 to 1,048,576")
        return tokens
    if per is not None:
        if isinstance(per, bool) or not isinstance(per, (int, float)) or not 0.0625 <= per <= 1024:
            raise ProbeInputError("xpos_scale_base_per_train_len", per, "a number from 0.0625 to 1024 (x L)")
        return max(1, round(per * train_len))
    return None


def xpos_decay(distance: int, scale_base: int, rotary_dim: int) -> tuple[float, float]:
    """The factor xPos puts on a query-key score at ``distance`` tokens: (fastest-decaying channel pair, slowest);
    per pair i of ``rotary_dim // 2``, ``((2i + 0.4 w) / (1.4 w)) ** (distance / scale_base)`` (x_transformers.py,
    RotaryEmbedding: the query is scaled by ``b ** (t / scale_base)``, the key by its inverse)."""
    w = rotary_dim
    lo = (0.4 * w) / (1.4 * w)
    hi = (w - 2 + 0.4 * w) / (1.4 * w)
    return lo ** (distance / scale_base), hi ** (distance / scale_base)


def scheme_build(scheme: str, *, scale_base: int | None) -> str:
    """``RunSpec.build`` for a scheme: ``"builder"`` (``core.builder``) or ``BUILD_PREFIX`` + the keywords added."""
    extra: dict[str, dict[str, Any]] = {}
    if scheme == "sinusoidal":
        extra = {"wrapper": {"use_abs_pos_emb": True, "scaled_sinu_pos_emb": True}}
    elif scheme in ("xpos", "alibi+xpos") and scale_base is not None:
        extra = {"decoder": {"rotary_xpos_scale_base": scale_base}}
    return BUILD_PREFIX + json.dumps(extra, sort_keys=True) if extra else "builder"


def builder_for(build: str) -> Builder | None:
    """The builder a ``BUILD_PREFIX`` build string names (None for anything else): ``core.builder``'s keywords for
    the configuration (DeepNorm's init included) plus the allowed extra keywords, initialised under ``seed``."""
    if not build.startswith(BUILD_PREFIX):
        return None
    extra = json.loads(build[len(BUILD_PREFIX):])
    for part, kws in extra.items():
        if part not in _ALLOWED or not set(kws) <= _ALLOWED[part]:
            raise ValueError(f"build {build!r}: only {_ALLOWED} may be added")

    def build_model(cfg: ModelConfig, seed: int, device: str):
        import torch
        from x_transformers import Decoder, TransformerWrapper
        from xtlens.core.builder import deepnorm_beta, deepnorm_init_, effective_kwargs

        kw = effective_kwargs(cfg)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            decoder = Decoder(**(kw.decoder | extra.get("decoder", {})))
            if cfg.deepnorm:
                deepnorm_init_(decoder, deepnorm_beta(cfg.depth))
            model = TransformerWrapper(**(kw.wrapper | extra.get("wrapper", {})), attn_layers=decoder)
        return model.to(device)

    return build_model


def plan(opt: ProbeOptions) -> list[RunSpec]:
    """Every scheme of ``SCHEMES`` (or ``extra["schemes"]``), with the family's ``shift_tokens`` and with 0, per
    seed; evaluated at ``values`` x L (the absolute arm at L only)."""
    mults = sorted(set(opt.values or opt.default("values")))
    L = opt.seq_len or opt.default("seq_len")
    if L < 2 * CONTEXT_HEAD_TOKENS:
        raise ProbeInputError("--seq-len", L, f"at least {2 * CONTEXT_HEAD_TOKENS} for the extrapolation probe (the "
                              "context gain compares its first positions with the second half of the window)")
    schemes = tuple(opt.extra.get("schemes", SCHEMES))
    bad = [s for s in schemes if s not in SCHEMES]
    if bad or not schemes:
        raise ProbeInputError("schemes", ",".join(map(str, schemes)), f"a non-empty subset of {', '.join(SCHEMES)}")
    s = train_settings(opt, eval_seq_lens=tuple(L * m for m in mults), position_buckets=int(opt.default("position_buckets")),
                  grad_clip=opt.defaults.get("grad_clip", 1.0))
    base = member(opt, s)
    budget = budget_for(opt, base, s)
    shifts = sorted({base.shift_tokens, 0}, reverse=True)  # the family's first
    scale_base = xpos_scale_base(opt, L)
    at_l = replace(s, eval_seq_lens=(L,))  # the learned table: evaluated only where it was trained
    runs = []
    for seed in opt.seed_list:
        for shift in shifts:
            for name in schemes:
                cfg = scheme_config(base, name, train_len=L, shift_tokens=shift)
                current = cfg == base and name != "sinusoidal"
                runs.append(RunSpec(probe="extrapolation", cfg=cfg, budget=budget, seed=seed,
                                    settings=at_l if name == "absolute" else s, variant=name, axis=SHIFT_AXIS,
                                    axis_value=shift, build=scheme_build(name, scale_base=scale_base),
                                    config_name=f"{name}, shift_tokens={shift}" + (" (current)" if current else "")))
    return runs


# --- tables ----------------------------------------------------------------------------------------

def _ok(frame: pd.DataFrame, kind: str) -> pd.DataFrame:
    f = frame[(frame["probe"] == "extrapolation") & (frame["row_kind"] == kind) & (frame["status"] == "ok")]
    return f


def train_len_of(frame: pd.DataFrame) -> int | None:
    v = frame.loc[frame["probe"] == "extrapolation", "train_seq_len_tokens"].dropna()
    return int(v.iloc[0]) if len(v) else None


def window_matrix(frame: pd.DataFrame, *, scheme: str, shift: int, length: int, column: str,
                  seeds: list[int] | None = None):
    """(seeds, windows, array seeds x windows) of ``column`` in the ``window`` rows of one arm at one length: the
    seeds that have every window (or the given ``seeds``), the windows every such seed has, in window order."""
    import numpy as np

    w = _ok(frame, "window")
    w = w[(w["variant"] == scheme) & (w["axis_value"] == shift) & (w["eval_seq_len_tokens"] == length)]
    if column == "beyond_change":  # per window: long-window loss past L minus the same tokens in L windows
        L = int(w["train_seq_len_tokens"].iloc[0]) if len(w) else 1
        vals = w["loss_change_vs_train_len_nats"].astype(float) * length / max(length - L, 1)
    else:
        vals = w[column].astype("Float64").astype(float)
    w = w.assign(_v=vals)
    w = w[w["_v"].notna()]
    if w.empty:
        return [], [], np.zeros((0, 0))
    table = w.pivot_table(index="seed", columns="window_index", values="_v", aggfunc="mean")
    if seeds is not None:
        table = table.reindex([s for s in seeds if s in table.index])
    table = table.dropna(axis=1)
    return [int(s) for s in table.index], [int(c) for c in table.columns], table.to_numpy(dtype=float)


def _paired(frame: pd.DataFrame, a: tuple[str, int], b: tuple[str, int], length: int, column: str):
    """The per-window difference ``a - b`` (arms as (scheme, shift)) on the seeds and windows both have."""
    import numpy as np

    sa, wa, ma = window_matrix(frame, scheme=a[0], shift=a[1], length=length, column=column)
    sb, wb, mb = window_matrix(frame, scheme=b[0], shift=b[1], length=length, column=column)
    seeds = [s for s in sa if s in sb]
    windows = sorted(set(wa) & set(wb))
    if not seeds or not windows:
        return None, None, 0, 0
    ia, ib = [sa.index(s) for s in seeds], [sb.index(s) for s in seeds]
    ja, jb = [wa.index(w) for w in windows], [wb.index(w) for w in windows]
    return np.asarray(ma[np.ix_(ia, ja)]), np.asarray(mb[np.ix_(ib, jb)]), len(seeds), len(windows)


def headline(frame: pd.DataFrame) -> pd.DataFrame:
    """Per shift setting, scheme and evaluation length past L: the mean loss at positions >= L (95 % interval over
    seeds and windows), the change against the same tokens in L-token windows, and the paired difference to ALiBi
    at the same shift setting (interval, minimum detectable effect)."""
    import pandas as pd
    from xtlens.profiling.benefit.stats import bootstrap_mean, min_detectable_effect, paired_difference

    L = train_len_of(frame)
    w = _ok(frame, "window")
    if L is None or w.empty:
        return pd.DataFrame()
    out = []
    for (shift, scheme, length), _ in w[w["eval_seq_len_tokens"] > L].groupby(["axis_value", "variant",
                                                                              "eval_seq_len_tokens"]):
        shift, length = int(shift), int(length)
        seeds, windows, m = window_matrix(frame, scheme=scheme, shift=shift, length=length,
                                          column="beyond_train_len_loss_nats")
        if not seeds:
            continue
        iv = bootstrap_mean(m)
        _, _, ch = window_matrix(frame, scheme=scheme, shift=shift, length=length, column="beyond_change")
        cv = bootstrap_mean(ch) if ch.size else None
        row = {"shift_tokens": shift, "scheme": scheme, "eval_len_tokens": length, "seeds": len(seeds),
               "windows": len(windows), "beyond_L_loss_nats": iv.estimate, "beyond_L_ci95_low": iv.low,
               "beyond_L_ci95_high": iv.high,
               "change_vs_L_windows_nats": cv.estimate if cv else None,
               "change_ci95_low": cv.low if cv else None, "change_ci95_high": cv.high if cv else None}
        if scheme != REFERENCE:
            a, b, _, _ = _paired(frame, (scheme, shift), (REFERENCE, shift), length, "beyond_train_len_loss_nats")
            if a is not None:
                d = paired_difference(a, b)
                row |= {"minus_alibi_nats": d.estimate, "minus_alibi_ci95_low": d.low,
                        "minus_alibi_ci95_high": d.high, "minus_alibi_mde_nats": min_detectable_effect(d.se)}
        out.append(row)
    t = pd.DataFrame(out)
    t["_order"] = t["scheme"].map({s: i for i, s in enumerate(SCHEMES)})
    return t.sort_values(["shift_tokens", "eval_len_tokens", "_order"], ascending=[False, True, True]).drop(
        columns="_order").reset_index(drop=True)


def context_gains(frame: pd.DataFrame) -> pd.DataFrame:
    """Per shift setting and scheme: the context gain at L (loss of positions [0, 4) minus loss of [L/2, L), whole
    split in windows of L) with its 95 % interval over seeds and windows, and the loss at L."""
    import pandas as pd
    from xtlens.profiling.benefit.stats import bootstrap_mean

    L = train_len_of(frame)
    w = _ok(frame, "window")
    if L is None or w.empty:
        return pd.DataFrame()
    out = []
    for (shift, scheme), _ in w[w["eval_seq_len_tokens"] == L].groupby(["axis_value", "variant"]):
        seeds, windows, g = window_matrix(frame, scheme=scheme, shift=int(shift), length=L, column="context_gain_nats")
        _, _, loss = window_matrix(frame, scheme=scheme, shift=int(shift), length=L, column="val_loss_nats")
        if not seeds:
            continue
        iv, lv = bootstrap_mean(g), bootstrap_mean(loss)
        out.append({"shift_tokens": int(shift), "scheme": scheme, "seeds": len(seeds), "windows": len(windows),
                    "context_gain_nats": iv.estimate, "gain_ci95_low": iv.low, "gain_ci95_high": iv.high,
                    "val_loss_at_L_nats": lv.estimate, "loss_ci95_low": lv.low, "loss_ci95_high": lv.high})
    t = pd.DataFrame(out)
    t["_order"] = t["scheme"].map({s: i for i, s in enumerate(SCHEMES)})
    return t.sort_values(["shift_tokens", "_order"], ascending=[False, True]).drop(columns="_order").reset_index(
        drop=True)


def position_curves(frame: pd.DataFrame) -> pd.DataFrame:
    """Loss by position (seed mean of the ``position`` rows) in the longest window each arm was evaluated in:
    columns shift_tokens, scheme, eval_len_tokens, position_start_tokens, position_end_tokens, val_loss_nats,
    seeds."""
    import pandas as pd

    pos = _ok(frame, "position")
    if pos.empty:
        return pd.DataFrame()
    longest = pos.groupby(["axis_value", "variant"])["eval_seq_len_tokens"].transform("max")
    pos = pos[pos["eval_seq_len_tokens"] == longest].assign(_v=lambda f: f["val_loss_nats"].astype(float))
    g = pos.groupby(["axis_value", "variant", "eval_seq_len_tokens", "position_start_tokens", "position_end_tokens"])
    t = g.agg(val_loss_nats=("_v", "mean"), seeds=("seed", "nunique")).reset_index()
    return t.rename(columns={"axis_value": "shift_tokens", "variant": "scheme",
                             "eval_seq_len_tokens": "eval_len_tokens"}).astype(
        {"shift_tokens": int, "eval_len_tokens": int, "position_start_tokens": int, "position_end_tokens": int})


# --- claims ----------------------------------------------------------------------------------------

def claims(frame: pd.DataFrame) -> list:
    """The seed analysis' extrapolation claims, each with its interval and verdict (``claims.Claim``)."""
    from xtlens.profiling.benefit.analysis import final_evals
    from xtlens.profiling.benefit.claims import Claim, learned, scale_line
    from xtlens.profiling.benefit.stats import (
        bootstrap_mean,
        min_detectable_effect,
        paired_difference,
        verdict,
    )

    ex = frame[frame["probe"] == "extrapolation"]
    L = train_len_of(ex)
    w = _ok(ex, "window")
    if L is None or w.empty:
        return []
    longest = int(w["eval_seq_len_tokens"].max())
    fin = final_evals(ex)
    scale = scale_line(ex)
    corpus = str(ex["corpus_name"].dropna().iloc[0]) if ex["corpus_name"].notna().any() else ""
    shifts = sorted({int(v) for v in w["axis_value"].dropna()}, reverse=True)
    out: list = []

    def arm_final(scheme: str, shift: int) -> pd.DataFrame:
        return fin[(fin["variant"] == scheme) & (fin["axis_value"] == shift)]

    def facts(rows: pd.DataFrame) -> dict[str, Any]:
        r = rows[rows["status"] == "ok"]
        if r.empty:
            return {"num_params": None, "non_embedding_params": None, "train_tokens": None, "tokens_per_param": None}
        first = r.iloc[0]
        return {"num_params": int(first["num_params"]), "non_embedding_params": int(first["non_embedding_params"]),
                "train_tokens": int(first["tokens_seen"]), "tokens_per_param": float(first["tokens_per_param"])
                if first["tokens_per_param"] is not None and not math.isnan(float(first["tokens_per_param"])) else None}

    def add(claim: str, metric: str, iv, *, sign: int, arms: list[tuple[str, int]], how: str,
            gate: str | None = None, note: str = "") -> None:
        rows = [arm_final(s, sh) for s, sh in arms]
        import pandas as pd

        rows_all = pd.concat(rows) if rows else fin.iloc[:0]
        was_learned = bool(len(rows_all)) and learned(rows_all)
        mde = min_detectable_effect(iv.se) if iv is not None else None
        v = verdict(iv, expected_sign=sign, mde=mde, learned=was_learned)
        if gate and v in ("supported", "contradicted"):
            v, note = "not_detectable", (note + " " if note else "") + gate
        out.append(Claim(probe="extrapolation", claim=claim, metric=metric, unit="nats/token",
                         estimate=iv.estimate if iv else None, ci95_low=iv.low if iv else None,
                         ci95_high=iv.high if iv else None, seeds=iv.seeds if iv else 0,
                         windows=iv.windows if iv else None, min_detectable_effect=mde, verdict=v, corpus=corpus,
                         scale=scale, method=f"{PRESS_ET_AL}: trained at L = {L}, the whole validation split in windows"
                         f" of {longest} (= {longest // L} L); {how}" + (f"; {iv.method}" if iv else ""),
                         note=note, **facts(rows_all)))

    for shift in shifts:
        tag = f" (shift_tokens={shift})"
        # the model uses context at L: the gate of every other claim of this setting
        seeds, windows, g = window_matrix(ex, scheme=REFERENCE, shift=shift, length=L, column="context_gain_nats")
        giv = bootstrap_mean(g) if seeds else None
        add("The model uses its context at the training length" + tag,
            f"context gain at L = {L}: the targets at positions {L // 2}-{L - 1} scored from only their last "
            f"1-{CONTEXT_HEAD_TOKENS} inputs minus their loss with the whole window, ALiBi arm", giv, sign=+1, arms=[(REFERENCE, shift)],
            how="bootstrap over seeds and windows of L")
        gate = None
        if out[-1].verdict != "supported":  # not significantly above 0, or inside its minimum detectable effect
            gate = (f"The context gain at L = {L} is not detectably above 0 at this setting (its verdict: "
                    f"{out[-1].verdict}): the model does not demonstrably use its context, so what happens past L "
                    "says little.")

        for scheme, claim, sign, note in (
                ("rotary", "ALiBi extrapolates better than rotary (at the family's rotary width)", +1, ""),
                ("rotary_full", "ALiBi extrapolates better than full-width rotary", +1, ""),
                ("sinusoidal", "ALiBi extrapolates better than the sinusoidal absolute embedding", +1, ""),
                ("alibi+xpos", "The seed's ALiBi (half the heads) + xpos extrapolates as well as ALiBi", 0,
                 "a claim of no difference: supported only if the interval lies within +-(minimum detectable "
                 "effect)")):
            a, b, _, _ = _paired(ex, (scheme, shift), (REFERENCE, shift), longest, "beyond_train_len_loss_nats")
            add(claim + tag, f"mean loss at positions >= L in windows of {longest}: {scheme} - alibi",
                paired_difference(a, b) if a is not None else None, sign=sign,
                arms=[(scheme, shift), (REFERENCE, shift)], how="paired per window against ALiBi", gate=gate,
                note=note)
        # xpos extrapolates: past L, its tokens score no worse in the long window than in L-token windows
        seeds, windows, ch = window_matrix(ex, scheme="xpos", shift=shift, length=longest, column="beyond_change")
        add("xpos extrapolates: tokens past the training length score better with the longer window, not worse" + tag,
            f"loss at positions >= L in windows of {longest} minus the same tokens' loss in windows of L, xpos",
            bootstrap_mean(ch) if seeds else None, sign=-1, arms=[("xpos", shift)],
            how="the same tokens in both window lengths, bootstrap over seeds and windows", gate=gate,
            note="below 0: the longer context helps (what Press et al. report for ALiBi); above 0: it breaks")
    if len(shifts) == 2 and shifts[1] == 0:
        a, b, _, _ = _paired(ex, ("nope", 0), ("nope", shifts[0]), L, "val_loss_nats")
        add(f"The token shift (shift_tokens={shifts[0]}) carries order information: without any position encoding "
            "(NoPE) it lowers the loss", f"loss at L = {L} (whole split), NoPE with shift_tokens=0 minus NoPE with "
            f"shift_tokens={shifts[0]}", paired_difference(a, b) if a is not None else None, sign=+1,
            arms=[("nope", 0), ("nope", shifts[0])], how="paired per window of L")
    return out
