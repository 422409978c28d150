"""The heads probe, with power: head count at equal parameters, and 1 vs grouped vs full K/V heads.

Papers followed: Shazeer (2019), "Fast Transformer Decoding: One Write-Head is All You Need" (multi-query
attention: one K/V head shared by all query heads) and Ainslie et al. (2023), "GQA: Training Generalized
Multi-Query Transformer Models from Multi-Head Checkpoints" (grouped K/V heads). Both report small quality
costs (of the order of 0.01-0.02 nats/token at their scale) against large KV-cache savings, so the probe must be
able to resolve differences of that size or say that it cannot.

Arms (every seed; ``variant`` / ``axis`` / ``axis_value``):

* ``equal_params`` / ``heads`` / h, for h in ``values`` (default 2, 4, 8): ``heads x attn_dim_head`` kept at the
  family's inner width (equal parameters), full K/V heads, the confounds held fixed: the ALiBi share (the
  family's fraction of heads with ALiBi; exact when ``h x share`` is a whole number, else rounded and said in the
  label) and the rotary width (``rotary_emb_dim`` fixed at the family's, channels per head, for every h);
* ``rotary_rule`` / ``heads`` / h (h other than the family's, when the family uses rotary): the rotary width
  left to x-transformers' rule (``attn_dim_head // 2``), the confound as its own arm;
* ``kv_heads`` / ``kv_heads`` / g at the family's head count: g = 1 (multi-query), heads/2 (grouped), heads
  (full; the same training as ``equal_params`` at the family's head count, trained once), each with the
  KV-cache bytes per token it needs (``kv_cache_bytes_per_token``);
* ``shuffled_context`` / ``heads`` / the family's h: the context-ablation control, the reference model
  (family head count, full K/V) trained identically (same seed, same batches) but evaluated with the (input,
  target) pairs of each window permuted, as ``harness.evaluate(shuffle_context=True)`` does
  (``build_shuffled_context``): every target still follows its own input token, the context before it is shuffled:
  the loss a model pays when it cannot use the order of its context. Its effect and interval stand next to the probe's minimum detectable effect.

Every comparison is paired per validation window against the reference (family head count, full K/V) and
bootstrapped over seeds and windows (``stats.paired_difference``); the minimum detectable effect is
``stats.min_detectable_effect`` of that interval's standard error.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from torch import nn
    from xtlens.core.config import ModelConfig
    from xtlens.profiling.benefit.claims import Claim
    from xtlens.profiling.benefit.harness import RunSpec
    from xtlens.profiling.benefit.probe_options import ProbeOptions

__all__ = ["plan", "build_shuffled_context", "SHUFFLE_SEED_OFFSET", "EQUIVALENCE_MARGIN_NATS", "window_matrix", "paired_vs_reference",
           "heads_table", "control_table", "claims", "REFERENCE", "arm_label"]

#: the shuffled-context control's permutations use ``torch.Generator(seed + SHUFFLE_SEED_OFFSET)``
SHUFFLE_SEED_OFFSET = 7_919
#: the reference arm every difference is taken against: (variant, axis_value = the family's head count)
REFERENCE = "equal_params"
#: "costs no measurable quality" means: the 95% interval of the cost lies inside +- this (nats/token), an equivalence
#: margin of the size of the costs the papers report (and about 2% perplexity); the minimum detectable effect is
#: reported beside it: where it exceeds the margin the verdict cannot be "supported" at this budget
EQUIVALENCE_MARGIN_NATS = 0.02


def _alibi(base: ModelConfig, h: int) -> tuple[int | None, bool]:
    """ALiBi heads for ``h`` heads at the family's share, and whether the share is exact."""
    if not base.alibi_pos_bias or base.alibi_num_heads is None:
        return None, True
    exact = base.alibi_num_heads * h / base.heads
    k = max(1, min(h, round(exact)))
    return k, abs(k - exact) < 1e-9


def _rotary_width(base: ModelConfig, widths: list[int]) -> int | None:
    """The family's rotary width (channels per head), capped to the narrowest head of the sweep (even, >= 4)."""
    if not base.uses_rotary:
        return None
    w = base.rotary_emb_dim or base.attn_dim_head // 2
    w = min(w, *widths)
    return max(4, w - w % 2)


def plan(opt: ProbeOptions) -> list[RunSpec]:
    from xtlens.core.config import ConfigError
    from xtlens.profiling.benefit.harness import RunSpec
    from xtlens.profiling.benefit.probe_options import ProbeInputError, budget_for, member, train_settings

    counts = sorted(set(opt.values or opt.default("values")))
    s = train_settings(opt)
    base = member(opt, s)
    inner = base.heads * base.attn_dim_head
    for h in counts:
        if inner % h:
            raise ProbeInputError("--values", h, f"head counts dividing heads x attn_dim_head = {inner}")
    budget = budget_for(opt, base, s)
    rot = _rotary_width(base, [inner // h for h in counts] + [base.attn_dim_head])

    def cfg_for(h: int, *, rotary: int | None, **kv: Any) -> ModelConfig:
        alibi, _ = _alibi(base, h)
        kw = dict(attn_one_kv_head=False, attn_kv_heads=None) | kv
        try:
            return replace(base, heads=h, attn_dim_head=inner // h, alibi_num_heads=alibi, rotary_emb_dim=rotary, **kw)
        except ConfigError as exc:
            raise ProbeInputError("--values", h, str(exc)) from None

    def alibi_note(h: int) -> str:
        k, exact = _alibi(base, h)
        return "" if k is None else f", ALiBi on {k} of {h}" + ("" if exact else " (share rounded)")

    ref = cfg_for(base.heads, rotary=rot)
    runs = []
    for seed in opt.seed_list:
        for h in counts:
            runs.append(RunSpec(probe="heads", cfg=cfg_for(h, rotary=rot), budget=budget, seed=seed, settings=s,
                                variant="equal_params", axis="heads", axis_value=h,
                                config_name=f"{h} heads x {inner // h} wide, full K/V{alibi_note(h)}"
                                            + (f", rotary {rot}" if rot else "")))
        if rot is not None:
            for h in counts:
                if h == base.heads or (inner // h) // 2 == rot:
                    continue
                runs.append(RunSpec(probe="heads", cfg=cfg_for(h, rotary=None), budget=budget, seed=seed, settings=s,
                                    variant="rotary_rule", axis="heads", axis_value=h,
                                    config_name=f"{h} heads x {inner // h} wide, rotary {(inner // h) // 2} "
                                                "(attn_dim_head // 2)"))
        for g in sorted({1, max(1, base.heads // 2), base.heads}):
            cfg = ref if g == base.heads else cfg_for(base.heads, rotary=rot, attn_one_kv_head=g == 1,
                                                      attn_kv_heads=None if g == 1 else g)
            label = {1: "multi-query (1 K/V head)", base.heads: f"full K/V ({g} heads)"}.get(g, f"grouped ({g} K/V heads)")
            runs.append(RunSpec(probe="heads", cfg=cfg, budget=budget, seed=seed, settings=s, variant="kv_heads",
                                axis="kv_heads", axis_value=g, config_name=label))
        runs.append(RunSpec(probe="heads", cfg=ref, budget=budget, seed=seed, settings=s, variant="shuffled_context",
                            axis="heads", axis_value=base.heads, build="shuffled_context",
                            config_name=f"control: {base.heads} heads, full K/V, context shuffled at evaluation"))
    return runs


def build_shuffled_context(cfg: ModelConfig, seed: int, device: str) -> nn.Module:
    """The model ``core.builder`` builds for ``cfg`` (the same weights for the same seed) whose forward, in eval
    mode only, permutes each window's (input, target) pairs, as ``harness.evaluate(shuffle_context=True)`` does:
    the model reads the window's tokens in a random order (``torch.Generator(seed + SHUFFLE_SEED_OFFSET)``) and
    each output is put back at its input's position, so every target is still predicted right after its own input
    token, with the tokens before it shuffled. Training is untouched: the run trains exactly as the reference run
    (same seed, same batches) and is evaluated with its context order destroyed (the context-ablation control)."""
    import torch
    from xtlens.profiling.benefit.harness import default_builder

    model = default_builder(cfg, seed, device)
    inner = model.forward
    gen = torch.Generator().manual_seed(seed + SHUFFLE_SEED_OFFSET)

    def forward(x, *args, **kwargs):
        if model.training:
            return inner(x, *args, **kwargs)
        perm = torch.argsort(torch.rand(x.shape, generator=gen), dim=-1).to(x.device)
        out = inner(torch.gather(x, -1, perm), *args, **kwargs)
        back = torch.argsort(perm, dim=-1)  # output j belongs to position perm[j]
        return torch.gather(out, 1, back[..., None].expand(-1, -1, out.shape[-1]))

    model.forward = forward
    return model


# --- tables -------------------------------------------------------------------------------------------

def _heads(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["probe"] == "heads"]


def _windows(frame: pd.DataFrame) -> pd.DataFrame:
    h = _heads(frame)
    w = h[(h["row_kind"] == "window") & (h["status"] == "ok")]
    if "eval_seq_len_tokens" in w.columns and "train_seq_len_tokens" in w.columns:
        w = w[w["eval_seq_len_tokens"].astype("Int64") == w["train_seq_len_tokens"].astype("Int64")]
    return w


def reference_heads(frame: pd.DataFrame) -> int | None:
    """The family's head count: the ``kv_heads`` arm with full K/V (its value equals the head count)."""
    kv = _heads(frame)
    kv = kv[kv["variant"] == "kv_heads"]["axis_value"].dropna().astype(int)
    if kv.empty:
        c = _heads(frame)
        c = c[c["variant"] == "shuffled_context"]["axis_value"].dropna().astype(int)
        return int(c.iloc[0]) if len(c) else None
    return int(kv.max())


def window_matrix(frame: pd.DataFrame, variant: str, axis_value: int) -> pd.DataFrame:
    """Per-window validation loss of one arm: a (seed x window_index) frame (nats/token)."""
    w = _windows(frame)
    w = w[(w["variant"] == variant) & (w["axis_value"].astype("Int64") == axis_value)]
    if w.empty:
        return pd.DataFrame()
    w = w.assign(_v=w["val_loss_nats"].astype("Float64").astype(float), _s=w["seed"].astype(int),
                 _w=w["window_index"].astype(int))
    return w.pivot_table(index="_s", columns="_w", values="_v", aggfunc="mean")


def paired_vs_reference(frame: pd.DataFrame, variant: str, axis_value: int) -> Any:
    """``stats.paired_difference`` of the arm minus the reference on their shared seeds and windows (None if none)."""
    from xtlens.profiling.benefit.stats import paired_difference

    ref_h = reference_heads(frame)
    if ref_h is None:
        return None
    a = window_matrix(frame, variant, axis_value)
    b = window_matrix(frame, REFERENCE, ref_h)
    if a.empty or b.empty:
        return None
    seeds = sorted(set(a.index) & set(b.index))
    wins = sorted(set(a.columns) & set(b.columns))
    if not seeds or not wins:
        return None
    av, bv = a.loc[seeds, wins].to_numpy(), b.loc[seeds, wins].to_numpy()
    keep = ~(np.isnan(av).any(axis=0) | np.isnan(bv).any(axis=0))
    if not keep.any():
        return None
    return paired_difference(av[:, keep], bv[:, keep])


def _final(frame: pd.DataFrame) -> pd.DataFrame:
    from xtlens.profiling.benefit.analysis import final_evals

    return final_evals(_heads(frame))


def heads_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per arm: its parameters, KV-cache bytes per token, mean final validation loss, and the paired
    difference against the reference (family head count, full K/V) with its 95% interval and the minimum
    detectable effect; ``learned`` says whether both arms ended below the unigram line."""
    from xtlens.profiling.benefit.stats import min_detectable_effect

    fin = _final(frame)
    ok = fin[fin["status"] == "ok"]
    cols = ["variant", "axis", "axis_value", "config_name", "num_params", "kv_cache_bytes_per_token",
            "val_loss_nats", "unigram_entropy_nats", "learned", "diff_vs_reference_nats", "ci95_low", "ci95_high",
            "min_detectable_effect_nats", "seeds", "windows"]
    if ok.empty:
        return pd.DataFrame(columns=cols)
    ref_h = reference_heads(frame)
    ref = ok[(ok["variant"] == REFERENCE) & (ok["axis_value"].astype("Int64") == ref_h)]
    ref_learned = _learned(ref)
    rows = []
    for (variant, axis, value), g in ok.groupby(["variant", "axis", "axis_value"], sort=True):
        # the reference itself, and the full-K/V arm at the family's head count (the same training)
        is_ref = value == ref_h and variant in (REFERENCE, "kv_heads")
        iv = None if is_ref else paired_vs_reference(frame, variant, int(value))
        loss = g["val_loss_nats"].astype("Float64").astype(float)
        rows.append({"variant": variant, "axis": axis, "axis_value": int(value),
                     "config_name": str(g["config_name"].iloc[0]), "num_params": int(g["num_params"].iloc[0]),
                     "kv_cache_bytes_per_token": int(g["kv_cache_bytes_per_token"].iloc[0]),
                     "val_loss_nats": float(loss.mean()),
                     "unigram_entropy_nats": float(g["unigram_entropy_nats"].astype(float).iloc[0]),
                     "learned": _learned(g) and ref_learned,
                     "diff_vs_reference_nats": iv.estimate if iv else (0.0 if is_ref else None),
                     "ci95_low": iv.low if iv else None, "ci95_high": iv.high if iv else None,
                     "min_detectable_effect_nats": min_detectable_effect(iv.se) if iv else None,
                     "seeds": int(g["seed"].nunique()), "windows": iv.windows if iv else None})
    order = {"equal_params": 0, "rotary_rule": 1, "kv_heads": 2, "shuffled_context": 3}
    t = pd.DataFrame(rows, columns=cols)
    return t.sort_values(["variant", "axis_value"], key=lambda s: s.map(order) if s.name == "variant" else s) \
        .reset_index(drop=True)


def _learned(final_rows: pd.DataFrame) -> bool:
    from xtlens.profiling.benefit.claims import learned

    return bool(len(final_rows)) and bool(learned(final_rows))


def control_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The context-ablation control next to the probe's resolution: the control's effect (shuffled minus intact
    context, nats/token) with its interval, and the largest minimum detectable effect among the probe's arms."""
    t = heads_table(frame)
    c = t[t["variant"] == "shuffled_context"]
    arms = t[~t["variant"].isin(["shuffled_context"]) & t["min_detectable_effect_nats"].notna()]
    if c.empty:
        return pd.DataFrame()
    r = c.iloc[0]
    return pd.DataFrame([{"control": r["config_name"], "effect_nats": r["diff_vs_reference_nats"],
                          "ci95_low": r["ci95_low"], "ci95_high": r["ci95_high"], "seeds": r["seeds"],
                          "windows": r["windows"],
                          "probe_min_detectable_effect_nats": float(arms["min_detectable_effect_nats"].max())
                          if not arms.empty else None}])


# --- claims -------------------------------------------------------------------------------------------

def arm_label(variant: str, value: int) -> str:
    return {"equal_params": f"{value} heads (equal parameters)", "rotary_rule": f"{value} heads, rotary rule",
            "kv_heads": f"{value} K/V head(s)", "shuffled_context": "shuffled context"}[variant] if variant in (
        "equal_params", "rotary_rule", "kv_heads", "shuffled_context") else f"{variant} {value}"


def claims(frame: pd.DataFrame) -> list[Claim]:
    """Multi-query and grouped K/V cost no measurable quality (expected sign 0 with the margin
    ``EQUIVALENCE_MARGIN_NATS``: the interval inside +-0.02 nats/token); more heads at equal parameters help
    (largest vs smallest head count, expected -1); the control is detectable (shuffled minus intact context,
    expected +1)."""
    from xtlens.profiling.benefit.claims import Claim
    from xtlens.profiling.benefit.probe_stability import scale_of
    from xtlens.profiling.benefit.stats import min_detectable_effect, verdict

    h = _heads(frame)
    fin = _final(frame)
    ok = fin[fin["status"] == "ok"]
    ref_h = reference_heads(frame)
    if ok.empty or ref_h is None:
        return []
    sc = scale_of(h)

    def arm_rows(variant: str, value: int) -> pd.DataFrame:
        return ok[(ok["variant"] == variant) & (ok["axis_value"].astype("Int64") == value)]

    kv = ok[ok["variant"] == "kv_heads"][["axis_value", "kv_cache_bytes_per_token"]].dropna()
    kv_bytes = {int(a): int(b) for a, b in zip(kv["axis_value"], kv["kv_cache_bytes_per_token"], strict=True)}

    def make(text: str, metric: str, iv: Any, expected: int, learned: bool, method_extra: str, note: str = "",
             margin: float | None = None, against: str = f"against the reference ({ref_h} heads, full K/V)") -> Claim:
        mde = min_detectable_effect(iv.se) if iv is not None else None
        v = verdict(iv, expected_sign=expected, mde=mde, learned=learned, margin=margin) if iv is not None \
            else ("not_learned" if not learned else "not_detectable")
        return Claim(probe="heads", claim=text, metric=metric, unit="nats/token",
                     estimate=iv.estimate if iv else None, ci95_low=iv.low if iv else None,
                     ci95_high=iv.high if iv else None, seeds=iv.seeds if iv else int(h["seed"].nunique()),
                     windows=iv.windows if iv else None, min_detectable_effect=mde, verdict=v,
                     method=(f"paired per validation window {against}; "
                             "hierarchical bootstrap, seeds and windows resampled" + (f" ({iv.seeds} seeds x "
                             f"{iv.windows} windows)" if iv else "") + "; " + method_extra),
                     note=note, **sc)

    ref_rows = arm_rows(REFERENCE, ref_h)
    result = []
    for g, name, paper in ((1, "Multi-query attention (1 K/V head)", "Shazeer 2019"),
                           (max(1, ref_h // 2), f"Grouped K/V ({max(1, ref_h // 2)} K/V heads)", "Ainslie et al. 2023")):
        if g == ref_h or arm_rows("kv_heads", g).empty:
            continue
        iv = paired_vs_reference(frame, "kv_heads", g)
        saved = (f"; KV cache {kv_bytes.get(g, 0):,} vs {kv_bytes.get(ref_h, 0):,} bytes/token" if kv_bytes else "")
        result.append(make(f"{name} costs no measurable quality against full K/V heads",
                           f"mean val loss, {g} K/V head(s) - {ref_h} K/V heads", iv, 0,
                           _learned(arm_rows("kv_heads", g)) and _learned(ref_rows), paper,
                           margin=EQUIVALENCE_MARGIN_NATS,
                           note=f"'no measurable cost' = the 95% interval inside +-{EQUIVALENCE_MARGIN_NATS} "
                                "nats/token (equivalence margin)" + saved))
    eq = sorted(int(v) for v in ok.loc[ok["variant"] == "equal_params", "axis_value"].dropna().unique())
    if len(eq) >= 2:
        lo, hi = eq[0], eq[-1]
        a, b = window_matrix(frame, "equal_params", hi), window_matrix(frame, "equal_params", lo)
        iv = None
        if not a.empty and not b.empty:
            from xtlens.profiling.benefit.stats import paired_difference

            seeds = sorted(set(a.index) & set(b.index))
            wins = sorted(set(a.columns) & set(b.columns))
            if seeds and wins:
                iv = paired_difference(a.loc[seeds, wins].to_numpy(), b.loc[seeds, wins].to_numpy())
        result.append(make(f"More heads at equal parameters help ({hi} vs {lo} heads)",
                           f"mean val loss, {hi} heads - {lo} heads (heads x head width constant)", iv, -1,
                           _learned(arm_rows("equal_params", hi)) and _learned(arm_rows("equal_params", lo)),
                           "ALiBi share and rotary width held fixed", note="expected below 0 (more heads: lower loss)",
                           against=f"{hi} heads against {lo} heads"))
    if not arm_rows("shuffled_context", ref_h).empty:
        iv = paired_vs_reference(frame, "shuffled_context", ref_h)
        mdes = [m for m in heads_table(frame)["min_detectable_effect_nats"].dropna()]
        result.append(make("Control: the probe detects the loss of context order (shuffled context)",
                           f"mean val loss, context shuffled - intact ({ref_h} heads, full K/V)", iv, +1,
                           _learned(ref_rows), "the same training, inputs permuted within each window at evaluation",
                           note=(f"the probe's largest minimum detectable effect among its arms: {max(mdes):.4f} "
                                 "nats/token" if mdes else "")))
    return result
