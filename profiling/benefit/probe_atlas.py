"""The flag atlas: what each option buys (validation bits/byte) and what it costs (parameters, training FLOPs,
measured tokens/s, training peak memory, KV-cache bytes per token), at two or more model sizes.

Method. Each arm toggles one option of the configuration's family (``ATLAS_OPTIONS``: an option already on in the
family is switched OFF, one that is off is switched ON, through ``core.options``: ``is_on``, ``enable``,
``conflicts``) and is trained with the same seeds, settings and token budget as the family itself (the
``reference``) at each size (``dim`` in ``sizes``; heads and head width fixed: heads do not split ``dim`` in
x-transformers). Each arm is compared with the reference per validation window (every run evaluates the same
windows of the whole validation split) and the difference in bits per byte is bootstrapped over seeds and windows
(``stats.paired_difference``, as ``probe_heads`` does), with its minimum detectable effect
(``stats.min_detectable_effect``) and a verdict (``stats.verdict`` with expected sign -1, "the option lowers the
loss": ``supported`` = it helps, ``contradicted`` = it hurts, ``not_detectable``, ``not_learned``). The control
``control:shuffled_context`` (the reference trained identically and evaluated with each window's context order
shuffled, ``probe_heads.build_shuffled_context``) shows that the probe can see an effect at its budget.

This follows the design of the closest published atlas of transformer modifications: Narang et al. (2021), "Do
Transformer Modifications Transfer Across Implementations and Applications?" (EMNLP 2021): each modification
applied alone to one shared baseline, trained with the same recipe and budget, compared on held-out loss, with
the parameters and compute it adds beside it; here with the paired per-window intervals and minimum detectable
effect of the benefit-evidence rules (docs/benefits.md) rather than single runs.

Options that cannot combine with the family (a rule of x-transformers without a fix, or a ``ConfigError``) are
``Skipped`` with the reason, never dropped silently; where ``enable`` applies a rule's fix (e.g.
``num_residual_streams`` needs DeepNorm off), the arm runs with the fix and ``Arm.note`` says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from xtlens.core.config import ModelConfig
    from xtlens.profiling.benefit.claims import Claim
    from xtlens.profiling.benefit.harness import RunSpec
    from xtlens.profiling.benefit.probe_options import ProbeOptions

__all__ = ["ATLAS_OPTIONS", "EXTRA_ARMS", "CONTROL", "REFERENCE", "GROUP_ARMS", "Arm", "Skipped", "arms_for", "plan",
           "check_names", "allowed_names", "atlas_table", "atlas_markdown", "ATLAS_COLUMNS", "skipped_table", "claims", "arm_window_matrix",
           "size_label"]

REFERENCE = "reference"
CONTROL = "control:shuffled_context"
#: the default arms (single ``ModelConfig`` fields, or the groups of ``GROUP_ARMS``)
ATLAS_OPTIONS: tuple[str, ...] = (
    "alibi_pos_bias", "rotary_xpos", "rotary", "alibi_num_heads", "deepnorm", "sandwich_norm", "use_rmsnorm",
    "use_scalenorm", "kv_grouped", "kv_full", "shift_tokens", "swiglu", "ff_relu_squared", "attn_qk_norm",
    "attn_gate_values", "attn_num_mem_kv", "residual_attn", "macaron", "num_residual_streams", "attn_dim_head",
    "ff_mult")
#: arms that are not one field toggled, and what they change (words)
GROUP_ARMS: dict[str, str] = {
    "rotary": "all rotary position encoding off (rotary_pos_emb, rotary_xpos, rotary_emb_dim); on when the family "
              "has none",
    "swiglu": "SwiGLU feed-forward (ff_glu + ff_swish) on; off when the family has it",
    "kv_grouped": "grouped K/V heads: attn_kv_heads = heads / 2",
    "kv_full": "full K/V heads (one K/V head off, attn_kv_heads empty); one K/V head (multi-query) when the family "
               "already has full K/V heads",
    "attn_dim_head": "head width doubled",
    "ff_mult": "feed-forward width halved (ff_mult / 2)",
    "alibi_num_heads": "ALiBi on all heads instead of the family's share (on a share of heads when the family has "
                       "it on all)",
    "no_position": "every position signal off: ALiBi, rotary, xpos, the T5 bias, absolute positions and the token "
                   "shift (not a default arm: the planted loss of the tests; a causal decoder keeps only what its "
                   "mask tells it)",
}
#: arms ``--options`` accepts besides ``ATLAS_OPTIONS`` and the registry's options
EXTRA_ARMS: tuple[str, ...] = ("no_position",)


@dataclass(frozen=True, kw_only=True)
class Arm:
    """One arm of the atlas: ``changes`` are the fields that differ from the reference (fixes included); ``note``
    says why a fix was needed ("" if none)."""

    name: str
    label: str
    changes: dict[str, object] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True, kw_only=True)
class Skipped:
    """An option that cannot be combined with the family, with x-transformers' reason (``core.options``)."""

    name: str
    reason: str


def _default(name: str) -> object:
    import dataclasses

    from xtlens.core.config import ModelConfig

    return next(f.default for f in dataclasses.fields(ModelConfig) if f.name == name)


def _parse_value(text: str) -> object:
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", ""):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text


def _diff(ref: ModelConfig, cfg: ModelConfig) -> dict[str, object]:
    a, b = ref.to_dict(), cfg.to_dict()
    return {k: b[k] for k in b if a.get(k) != b[k]}


def _fix_note(ref: ModelConfig, name: str, value: object) -> str:
    """The reasons of the rules of ``name`` that apply in ``ref`` and carry a fix (what ``enable`` changed)."""
    from xtlens.core.options import option

    parts = []
    for rule in option(name).rules:
        if rule.applies(ref, value) and rule.fix:
            fix = ", ".join(f"{k}={v}" for k, v in rule.fix.items())
            parts.append(f"{rule.reason}; fixed by {fix}")
    return "; ".join(parts)


def _blocking(ref: ModelConfig, name: str, value: object) -> str | None:
    """The reason of a rule of ``name`` that applies in ``ref`` and that no fix lifts (None when every applying
    rule has a fix)."""
    from xtlens.core.options import option

    for rule in option(name).rules:
        if rule.applies(ref, value) and not rule.fix:
            return rule.reason
    return None


def _switch(ref: ModelConfig, name: str, value: object = None, *, label_on: str, label_off: str,
            off_extra: dict[str, object] | None = None) -> Arm | Skipped:
    """One field toggled: off (to x-transformers' default, plus ``off_extra``) when on in ``ref``, else on through
    ``core.options.enable`` (its fixes noted); ``Skipped`` with the reason when nothing makes it combine."""
    from xtlens.core.config import ConfigError
    from xtlens.core.options import enable, is_on, option

    if is_on(ref, name):
        try:
            cfg = ref.replace(**({name: _default(name)} | (off_extra or {})))
        except ConfigError as exc:
            return Skipped(name=name, reason=str(exc))
        return Arm(name=name, label=label_off, changes=_diff(ref, cfg))
    value = option(name).value if value is None else value
    why = _blocking(ref, name, value)
    if why is not None:
        return Skipped(name=name, reason=why)
    try:
        cfg = enable(ref, name, value)
    except ConfigError as exc:
        return Skipped(name=name, reason=str(exc))
    return Arm(name=name, label=label_on, changes=_diff(ref, cfg), note=_fix_note(ref, name, value))


def _replace(ref: ModelConfig, name: str, label: str, note: str = "", **changes: object) -> Arm | Skipped:
    from xtlens.core.config import ConfigError

    try:
        cfg = ref.replace(**changes)
    except ConfigError as exc:
        return Skipped(name=name, reason=str(exc))
    d = _diff(ref, cfg)
    if not d:
        return Skipped(name=name, reason=f"{label}: the family already has it (the arm would be the reference)")
    return Arm(name=name, label=label, changes=d, note=note)


_LABELS: dict[str, tuple[str, str]] = {  # (switched on, switched off)
    "alibi_pos_bias": ("ALiBi on", "ALiBi off"),
    "deepnorm": ("DeepNorm on", "DeepNorm off (pre-norm)"),
    "sandwich_norm": ("sandwich norm on", "sandwich norm off"),
    "use_rmsnorm": ("RMSNorm", "LayerNorm (RMSNorm off)"),
    "use_scalenorm": ("ScaleNorm", "LayerNorm (ScaleNorm off)"),
    "shift_tokens": ("token shift on (1)", "token shift off"),
    "ff_relu_squared": ("ReLU^2 feed-forward", "ReLU^2 off (GELU)"),
    "attn_qk_norm": ("qk-norm on", "qk-norm off"),
    "attn_gate_values": ("gated values on", "gated values off"),
    "attn_num_mem_kv": ("2 memory K/V", "memory K/V off"),
    "residual_attn": ("residual attention on", "residual attention off"),
    "macaron": ("macaron on", "macaron off"),
    "num_residual_streams": ("hyper-connections (2 streams)", "hyper-connections off"),
    "ff_glu": ("GLU feed-forward", "GLU off"),
    "ff_swish": ("swish feed-forward", "swish off"),
    "pre_norm": ("post-norm", "pre-norm"),
    "use_simple_rmsnorm": ("simple RMSNorm", "LayerNorm (simple RMSNorm off)"),
    "tie_embedding": ("tied embedding", "untied embedding"),
    "ff_no_bias": ("feed-forward without bias", "feed-forward bias on"),
    "attn_flash": ("flash attention", "flash attention off"),
}


def _arm(ref: ModelConfig, name: str) -> Arm | Skipped:
    """The arm called ``name`` for the family member ``ref`` (see ``GROUP_ARMS``; ``field=value`` sets a field)."""
    from dataclasses import replace

    return replace(_arm_of(ref, name), name=name)


def _arm_of(ref: ModelConfig, name: str) -> Arm | Skipped:
    from xtlens.core.options import OPTIONS

    if "=" in name:
        key, _, text = name.partition("=")
        key = key.strip()
        if key not in OPTIONS:
            raise KeyError(name)
        value = _parse_value(text)
        return _replace(ref, name, f"{key} = {value}", **{key: value}) if getattr(ref, key) != value else \
            Arm(name=name, label=f"{key} = {value} (the family's own value)", changes={},
                note="the same configuration as the reference: a null arm")
    if name == "no_position":
        return _replace(ref, name, "no position signal (no ALiBi, rotary, absolute positions or token shift)",
                        alibi_pos_bias=False, alibi_num_heads=None, rotary_pos_emb=False, rotary_xpos=False,
                        rotary_emb_dim=None, rel_pos_bias=False, use_abs_pos_emb=False, shift_tokens=0)
    if name == "rotary":
        if ref.uses_rotary:
            return _replace(ref, name, "rotary off", rotary_pos_emb=False, rotary_xpos=False, rotary_emb_dim=None)
        return _switch(ref, "rotary_pos_emb", label_on="rotary on", label_off="rotary off")
    if name == "rotary_xpos":
        if ref.rotary_xpos:
            return _replace(ref, name, "xpos off (plain rotary kept)", rotary_xpos=False, rotary_pos_emb=True)
        return _switch(ref, "rotary_xpos", label_on="xpos on", label_off="xpos off")
    if name == "alibi_pos_bias":
        return _switch(ref, name, label_on="ALiBi on", label_off="ALiBi off", off_extra={"alibi_num_heads": None})
    if name == "alibi_num_heads":
        if not ref.alibi_pos_bias:
            return Skipped(name=name, reason="alibi_num_heads needs alibi_pos_bias (without ALiBi x-transformers "
                                             "ignores it); the alibi_pos_bias arm switches ALiBi on")
        if ref.alibi_num_heads is not None and ref.alibi_num_heads != ref.heads:
            return _replace(ref, name, f"ALiBi on all {ref.heads} heads (not {ref.alibi_num_heads})",
                            alibi_num_heads=None)
        k = max(1, ref.heads // 2)
        if k == ref.heads:
            return Skipped(name=name, reason="with one head ALiBi is on all heads or none (the alibi_pos_bias arm)")
        return _replace(ref, name, f"ALiBi on {k} of {ref.heads} heads (not all)", alibi_num_heads=k)
    if name == "swiglu":
        if ref.ff_glu and ref.ff_swish:
            return _replace(ref, name, "SwiGLU off (GELU)", ff_glu=False, ff_swish=False)
        note = "ff_relu_squared is on: x-transformers then ignores ff_swish; fixed by ff_relu_squared=False" \
            if ref.ff_relu_squared else ""
        return _replace(ref, name, "SwiGLU on", note=note, ff_glu=True, ff_swish=True, ff_relu_squared=False)
    if name == "kv_grouped":
        g = ref.heads // 2
        if g < 2:
            return Skipped(name=name, reason=f"grouped K/V needs at least 4 query heads (heads / 2 >= 2): the family "
                                             f"has {ref.heads}")
        if ref.attn_kv_heads == g:
            return Skipped(name=name, reason=f"the family already has {g} K/V heads (the reference)")
        return _replace(ref, name, f"grouped K/V ({g} K/V heads)", attn_one_kv_head=False, attn_kv_heads=g)
    if name == "kv_full":
        if ref.heads == 1:
            return Skipped(name=name, reason="with one query head there is already one K/V head")
        if not ref.attn_one_kv_head and ref.attn_kv_heads in (None, ref.heads):  # full already: one K/V head on
            return _replace(ref, name, "multi-query (1 K/V head)", attn_one_kv_head=True, attn_kv_heads=None)
        return _replace(ref, name, f"full K/V ({ref.heads} K/V heads)", attn_one_kv_head=False, attn_kv_heads=None)
    if name == "attn_dim_head":
        changes: dict[str, object] = {"attn_dim_head": ref.attn_dim_head * 2}
        return _replace(ref, name, f"head width doubled ({ref.attn_dim_head} -> {ref.attn_dim_head * 2})", **changes)
    if name == "ff_mult":
        if ref.ff_mult < 2:
            return _replace(ref, name, f"ff_mult doubled ({ref.ff_mult} -> {ref.ff_mult * 2})",
                            ff_mult=ref.ff_mult * 2)
        return _replace(ref, name, f"ff_mult halved ({ref.ff_mult} -> {ref.ff_mult // 2})", ff_mult=ref.ff_mult // 2)
    if name in OPTIONS and OPTIONS[name].kind == "option":
        on, off = _LABELS.get(name, (f"{name} on", f"{name} off"))
        return _switch(ref, name, label_on=on, label_off=off)
    raise KeyError(name)


def allowed_names() -> list[str]:
    """The arm names ``--options`` accepts: ``ATLAS_OPTIONS``, every other switchable option of
    ``core.options.OPTIONS``, and ``field=value``."""
    from xtlens.core.options import OPTIONS

    extra = [n for n, o in OPTIONS.items() if o.kind == "option" and n not in ATLAS_OPTIONS]
    return [*ATLAS_OPTIONS, *EXTRA_ARMS, *extra]


def check_names(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` validated (``ProbeInputError`` naming ``--options`` and the allowed names otherwise)."""
    from xtlens.core.options import OPTIONS
    from xtlens.profiling.benefit.probe_options import ProbeInputError

    allowed = allowed_names()
    out = []
    for n in names:
        n = n.strip()
        if not n:
            continue
        key = n.partition("=")[0].strip() if "=" in n else None
        if (key is None and n not in allowed) or (key is not None and key not in OPTIONS):
            raise ProbeInputError("--options", n, "comma-separated arm names: " + ", ".join(allowed)
                                  + "; or FIELD=VALUE for any configuration field (e.g. attn_dropout=0.0)")
        if n in (REFERENCE, CONTROL):
            continue
        out.append(n)
    if not out:
        raise ProbeInputError("--options", ",".join(names), "at least one arm name: " + ", ".join(allowed))
    return tuple(dict.fromkeys(out))


def arms_for(reference: ModelConfig, names: Sequence[str] | None = None) -> tuple[list[Arm], list[Skipped]]:
    """The arms for the family member ``reference`` (``names``: default ``ATLAS_OPTIONS``) and the options that
    cannot be combined with it, with x-transformers' reason."""
    arms: list[Arm] = []
    skipped: list[Skipped] = []
    for n in check_names(names) if names is not None else ATLAS_OPTIONS:
        a = _arm(reference, n)
        (arms if isinstance(a, Arm) else skipped).append(a)
    return arms, skipped


def size_label(dim: int) -> str:
    return f"dim {dim}"


def _sizes(opt: ProbeOptions) -> list[int]:
    return sorted(set(opt.values or opt.default("sizes")))


def plan(opt: ProbeOptions) -> list[RunSpec]:
    """The reference, the control and every arm at each size (``values`` = dims, default ``sizes``), each with every
    seed; the same settings and token budget for every arm at a size. Arms that are skipped at a size are not
    planned (``skipped_table`` lists them)."""
    from xtlens.core.config import ConfigError
    from xtlens.profiling.benefit.harness import RunSpec
    from xtlens.profiling.benefit.probe_options import ProbeInputError, budget_for, member, train_settings

    s = train_settings(opt, context_gain=False)  # the atlas reads bits/byte per window; no context-gain passes
    runs: list[RunSpec] = []
    for dim in _sizes(opt):
        ref = member(opt, s, dim=dim)
        budget = budget_for(opt, ref, s)
        arms, _skipped = arms_for(ref, opt.options)
        planned: list[tuple[str, str, ModelConfig, str]] = [(REFERENCE, "reference (the family)", ref, "builder"),
                                                            (CONTROL, "control: context shuffled at evaluation",
                                                             ref, "shuffled_context")]
        for a in arms:
            try:
                planned.append((a.name, a.label, ref.replace(**a.changes), "builder"))
            except ConfigError as exc:  # arms_for checked it; a size where it fails is bad input
                raise ProbeInputError("--sizes", dim, f"a size where arm {a.name} builds: {exc}") from None
        for seed in opt.seed_list:
            for name, label, cfg, build in planned:
                runs.append(RunSpec(probe="atlas", cfg=cfg, budget=budget, seed=seed, settings=s, variant=name,
                                    axis="dim", axis_value=dim, build=build,
                                    config_name=f"{label} ({size_label(dim)})"))
    return runs


def skipped_table(reference: ModelConfig, names: Sequence[str] | None = None) -> pd.DataFrame:
    """The options of ``names`` (default ``ATLAS_OPTIONS``) that cannot be combined with ``reference``: ``arm``,
    ``reason``."""
    _arms, skipped = arms_for(reference, names)
    return pd.DataFrame([{"arm": s.name, "reason": s.reason} for s in skipped], columns=["arm", "reason"])


# --- tables -------------------------------------------------------------------------------------------

ATLAS_COLUMNS: tuple[str, ...] = (
    "arm", "label", "size_dim", "num_params", "non_embedding_params", "tokens", "tokens_per_param", "seeds", "windows",
    "val_bits_per_byte", "d_bits_per_byte", "ci95_low", "ci95_high", "min_detectable_effect_bits", "verdict",
    "learned", "d_num_params", "d_train_flops", "d_train_flops_pct", "tokens_per_s", "d_tokens_per_s_pct",
    "train_peak_predicted_bytes", "train_peak_bytes", "d_train_peak_bytes", "kv_cache_bytes_per_token",
    "d_kv_cache_bytes_per_token", "note")


def _atlas(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["probe"] == "atlas"] if "probe" in frame.columns else frame


def _window_matrices(frame: pd.DataFrame, value: str = "val_bits_per_byte") -> dict[tuple[str, int], pd.DataFrame]:
    """Per (arm, dim): the (seed x window_index) frame of ``value`` over the final evaluation's windows at the training
    length (one pass over the rows, plain numpy dtypes: fast on a full default atlas)."""
    w = _atlas(frame)
    w = w[(w["row_kind"] == "window") & (w["status"] == "ok")]
    if "eval_seq_len_tokens" in w.columns and "train_seq_len_tokens" in w.columns:
        w = w[w["eval_seq_len_tokens"].astype("Int64") == w["train_seq_len_tokens"].astype("Int64")]
    w = w[w[value].notna() & w["axis_value"].notna() & w["window_index"].notna()]
    if w.empty:
        return {}
    plain = pd.DataFrame({"arm": w["variant"].astype(str).to_numpy(dtype=object),
                          "dim": w["axis_value"].astype("Int64").to_numpy(dtype=np.int64),
                          "seed": w["seed"].astype("Int64").to_numpy(dtype=np.int64),
                          "win": w["window_index"].astype("Int64").to_numpy(dtype=np.int64),
                          "v": w[value].astype("Float64").to_numpy(dtype=float)})
    out = {}
    for (arm, dim), g in plain.groupby(["arm", "dim"], sort=False):
        out[(str(arm), int(dim))] = g.groupby(["seed", "win"])["v"].mean().unstack("win")
    return out


def arm_window_matrix(frame: pd.DataFrame, arm: str, dim: int, value: str = "val_bits_per_byte") -> pd.DataFrame:
    """Per-window ``value`` of one arm at one size: a (seed x window_index) frame."""
    a = _atlas(frame)
    a = a[(a["variant"] == arm) & (a["axis_value"].astype("Int64") == dim)]
    return _window_matrices(a, value).get((arm, dim), pd.DataFrame())


def _paired(mats: dict[tuple[str, int], pd.DataFrame], arm: str, dim: int) -> Any:
    """``stats.paired_difference`` of the arm minus the reference at ``dim`` on their shared seeds and windows."""
    from xtlens.profiling.benefit.stats import paired_difference

    a, b = mats.get((arm, dim)), mats.get((REFERENCE, dim))
    if a is None or b is None or a.empty or b.empty:
        return None
    seeds = sorted(set(a.index) & set(b.index))
    wins = sorted(set(a.columns) & set(b.columns))
    if not seeds or not wins:
        return None
    av, bv = a.loc[seeds, wins].to_numpy(dtype=float), b.loc[seeds, wins].to_numpy(dtype=float)
    keep = ~(np.isnan(av).any(axis=0) | np.isnan(bv).any(axis=0))
    if not keep.any():
        return None
    return paired_difference(av[:, keep], bv[:, keep])


_LEARNED_COLUMNS = ("status", "row_kind", "val_loss_nats", "unigram_entropy_nats")
_NUMERIC = ("num_params", "non_embedding_params", "tokens_seen", "tokens_per_param", "val_bits_per_byte", "train_flops",
            "tokens_per_s", "train_peak_predicted_bytes", "train_peak_bytes", "kv_cache_bytes_per_token",
            "val_loss_nats", "unigram_entropy_nats")


def _learned(rows: pd.DataFrame) -> bool:
    from xtlens.profiling.benefit.claims import learned

    return bool(len(rows)) and bool(learned(rows[[c for c in _LEARNED_COLUMNS if c in rows.columns]]))


def _mean(g: pd.DataFrame | None, col: str) -> float | None:
    if g is None or col not in g.columns:
        return None
    v = g[col].to_numpy(dtype=float)
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else None


def _int(g: pd.DataFrame, col: str) -> int | None:
    v = _mean(g, col)
    return None if v is None else int(round(v))


def _notes(frame: pd.DataFrame) -> dict[tuple[str, int], str]:
    """The arms' notes (fixes applied), recomputed from each size's reference configuration in the rows."""
    from xtlens.core.config import ModelConfig

    out: dict[tuple[str, int], str] = {}
    a = _atlas(frame)
    a = a[a["row_kind"] == "eval"] if "row_kind" in a.columns else a
    if "config_json" not in a.columns:
        return out
    ref = a[(a["variant"] == REFERENCE) & a["config_json"].notna()]
    for dim, g in ref.groupby(ref["axis_value"].astype("Int64")):
        try:
            cfg = ModelConfig.from_json(str(g["config_json"].iloc[0]))
        except Exception:  # noqa: BLE001 - a row from another xtlens: no notes
            continue
        names = [n for n in a.loc[a["axis_value"].astype("Int64") == dim, "variant"].dropna().unique()
                 if n not in (REFERENCE, CONTROL)]
        for n in names:
            try:
                arm = _arm(cfg, str(n))
            except (KeyError, ValueError):
                continue
            if isinstance(arm, Arm) and arm.note:
                out[(str(n), int(dim))] = arm.note
    return out


def _final_plain(a: pd.DataFrame) -> pd.DataFrame:
    """The final ok evaluation of every atlas run, with plain dtypes (numbers float64, missing NaN)."""
    from xtlens.profiling.benefit.analysis import final_evals

    fin = final_evals(a[a["row_kind"] == "eval"]) if "row_kind" in a.columns else a.iloc[:0]
    ok = fin[(fin["status"] == "ok") & fin["axis_value"].notna()] if len(fin) else fin
    if ok.empty:
        return pd.DataFrame()
    cols = {"arm": ok["variant"].astype(str).to_numpy(dtype=object),
            "dim": ok["axis_value"].astype("Int64").to_numpy(dtype=np.int64),
            "seed": ok["seed"].astype("Int64").to_numpy(dtype=np.int64),
            "config_name": ok["config_name"].astype(str).to_numpy(dtype=object),
            "status": ok["status"].astype(str).to_numpy(dtype=object),
            "row_kind": ok["row_kind"].astype(str).to_numpy(dtype=object)}
    for c in _NUMERIC:
        cols[c] = ok[c].astype("Float64").to_numpy(dtype=float, na_value=np.nan) if c in ok.columns else np.nan
    return pd.DataFrame(cols)


def _table_and_intervals(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[tuple[str, int], Any]]:
    from xtlens.profiling.benefit.stats import min_detectable_effect, verdict

    a = _atlas(frame)
    empty = pd.DataFrame(columns=list(ATLAS_COLUMNS))
    if a.empty:
        return empty, {}
    ok = _final_plain(a)
    if ok.empty:
        return empty, {}
    mats = _window_matrices(a)
    notes = _notes(a)
    refs = {int(d): g for d, g in ok[ok["arm"] == REFERENCE].groupby("dim")}
    ref_learned = {d: _learned(g) for d, g in refs.items()}
    rows = []
    intervals: dict[tuple[str, int], Any] = {}
    for (arm, dim), g in ok.groupby(["arm", "dim"], sort=False):
        arm, dim = str(arm), int(dim)
        ref = refs.get(dim)
        is_ref = arm == REFERENCE
        iv = None if is_ref or ref is None else _paired(mats, arm, dim)
        intervals[(arm, dim)] = iv
        mde = min_detectable_effect(iv.se) if iv is not None else None
        learned = _learned(g) and ref_learned.get(dim, False)
        v = "" if is_ref else (verdict(iv, expected_sign=-1, mde=mde, learned=learned) if iv is not None
                               else ("not_learned" if not learned else "not_detectable"))

        def d(col: str, _g: pd.DataFrame = g, _ref: pd.DataFrame | None = ref) -> float | None:
            x, y = _mean(_g, col), _mean(_ref, col)
            return None if x is None or y is None else x - y

        def pct(col: str, _ref: pd.DataFrame | None = ref) -> float | None:
            y, dd = _mean(_ref, col), d(col)
            return None if dd is None or not y else 100.0 * dd / y

        label = str(g["config_name"].iloc[0]).rsplit(f" ({size_label(dim)})", 1)[0]
        rows.append({
            "arm": arm, "label": label, "size_dim": dim, "num_params": _int(g, "num_params"),
            "non_embedding_params": _int(g, "non_embedding_params"), "tokens": _int(g, "tokens_seen"),
            "tokens_per_param": _mean(g, "tokens_per_param"), "seeds": int(g["seed"].nunique()),
            "windows": iv.windows if iv is not None else None, "val_bits_per_byte": _mean(g, "val_bits_per_byte"),
            "d_bits_per_byte": 0.0 if is_ref else (iv.estimate if iv is not None else None),
            "ci95_low": 0.0 if is_ref else (iv.low if iv is not None else None),
            "ci95_high": 0.0 if is_ref else (iv.high if iv is not None else None),
            "min_detectable_effect_bits": mde, "verdict": v, "learned": learned,
            "d_num_params": _rnd(d("num_params")), "d_train_flops": _rnd(d("train_flops")),
            "d_train_flops_pct": pct("train_flops"),
            "tokens_per_s": _mean(g, "tokens_per_s"), "d_tokens_per_s_pct": pct("tokens_per_s"),
            "train_peak_predicted_bytes": _int(g, "train_peak_predicted_bytes"),
            "train_peak_bytes": _int(g, "train_peak_bytes"), "d_train_peak_bytes": _rnd(d("train_peak_bytes")),
            "kv_cache_bytes_per_token": _int(g, "kv_cache_bytes_per_token"),
            "d_kv_cache_bytes_per_token": _rnd(d("kv_cache_bytes_per_token")),
            "note": notes.get((arm, dim), "")})
    t = pd.DataFrame(rows, columns=list(ATLAS_COLUMNS))
    order = {REFERENCE: 0, CONTROL: 1} | {n: i + 2 for i, n in enumerate(ATLAS_OPTIONS)}
    t["_o"] = t["arm"].map(lambda n: order.get(n, len(order) + 1))
    return t.sort_values(["size_dim", "_o", "arm"]).drop(columns="_o").reset_index(drop=True), intervals


def atlas_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (arm, size) (``ATLAS_COLUMNS``): the arm's mean final validation bits/byte and its difference
    from the reference at the same size, paired per validation window and bootstrapped over seeds and windows,
    with the 95% interval, minimum detectable effect and verdict (expected sign -1: the option lowers the loss),
    and from the same runs the cost differences (``d_*`` = arm minus reference): parameters, training FLOPs,
    measured tokens/s, training peak memory (predicted and measured) and KV-cache bytes per token."""
    return _table_and_intervals(frame)[0]


def atlas_markdown(table: pd.DataFrame) -> str:
    """A Markdown table of (columns of) ``atlas_table`` for reading: differences signed, counts with separators."""
    def cell(c: str, v: Any) -> str:
        if v is None or (isinstance(v, float) and not np.isfinite(v)) or v is pd.NA:
            return ""
        if isinstance(v, (bool, np.bool_)):
            return "yes" if v else "no"
        if isinstance(v, (int, np.integer)):
            return f"{v:+,}" if c.startswith("d_") else f"{v:,}"
        if isinstance(v, (float, np.floating)):
            if c.endswith("_pct"):
                return f"{v:+.1f}%"
            return f"{v:+.4f}" if c.startswith("d_") or c.startswith("ci95") else f"{v:.4g}"
        return str(v).replace("|", "\\|")

    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(cell(c, v) for c, v in zip(cols, row, strict=True)) + " |")
    return "\n".join(lines) + "\n"


def _rnd(x: float | None) -> int | None:
    return None if x is None else int(round(x))


# --- claims -------------------------------------------------------------------------------------------

def claims(frame: pd.DataFrame) -> list[Claim]:
    """Per arm at the largest size: "<arm> lowers the validation loss" (bits/byte, expected sign -1); and the
    control: shuffling the context raises it (expected +1, the probe can see an effect)."""
    from xtlens.profiling.benefit.claims import Claim
    from xtlens.profiling.benefit.probe_stability import scale_of
    from xtlens.profiling.benefit.stats import min_detectable_effect, verdict

    a = _atlas(frame)
    if a.empty:
        return []
    t, intervals = _table_and_intervals(a)
    if t.empty:
        return []
    dim = int(t["size_dim"].max())
    at = t[t["size_dim"] == dim]
    ev = a[a["row_kind"] == "eval"]
    sc = scale_of(ev[ev["axis_value"].astype("Int64") == dim])
    out = []
    for r in at.itertuples():
        if r.arm == REFERENCE:
            continue
        iv = intervals.get((r.arm, dim))
        control = r.arm == CONTROL
        expected = +1 if control else -1
        mde = min_detectable_effect(iv.se) if iv is not None else None
        learned = bool(r.learned)
        v = verdict(iv, expected_sign=expected, mde=mde, learned=learned) if iv is not None else \
            ("not_learned" if not learned else "not_detectable")
        text = ("Control: the probe detects the loss of context order (shuffled context raises the loss)" if control
                else f"{r.label} lowers the validation loss")
        cost = (f"; cost vs reference: {r.d_num_params:+,} parameters, {r.d_train_flops_pct:+.1f}% training FLOPs"
                if r.d_num_params is not None and r.d_train_flops_pct is not None and not control else "")
        out.append(Claim(probe="atlas", claim=f"{text} ({size_label(dim)})",
                         metric=f"val bits/byte, {r.label} - reference", unit="bits/byte",
                         estimate=iv.estimate if iv else None, ci95_low=iv.low if iv else None,
                         ci95_high=iv.high if iv else None, seeds=iv.seeds if iv else int(r.seeds),
                         windows=iv.windows if iv else None, min_detectable_effect=mde, verdict=v,
                         method="paired per validation window against the reference (the family at the same size, "
                                "same seeds, settings and token budget); hierarchical bootstrap, seeds and windows "
                                "resampled; Narang et al. 2021 (one modification at a time against one baseline)",
                         note=(f"expected {'above' if expected > 0 else 'below'} 0" + cost
                               + (f"; {r.note}" if r.note else "")), **sc))
    return out
