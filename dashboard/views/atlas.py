"""The atlas panel of the Benefits tab: what each option of the configuration's family buys (change in validation
bits/byte, 95% interval) per unit of cost (training FLOPs, parameters, measured speed, training peak memory, KV
cache), at 2 or more sizes; the options that could not be combined, with the reason; the forecasts at the user's
size with their 80% intervals and how often such intervals were right (held-out check); downloads.

Drawn from a finished atlas job of this session or from the atlas runs already in the result store
(``benefit_data.stored_atlas_runs``: no training, about a second). The charts are ``dashboard.charts.atlas``.
"""

from __future__ import annotations

import re

import pandas as pd
import streamlit as st
from xtlens.dashboard.charts import atlas as ac
from xtlens.dashboard.charts import benefits as bc
from xtlens.dashboard.session import benefit_data
from xtlens.dashboard.views import Ctx
from xtlens.dashboard.views import common as view_common
from xtlens.profiling.benefit import report
from xtlens.profiling.benefit.probes import ProbeOptions

__all__ = ["render", "settings", "display_table", "coverage_line", "TABLE_WORDS",
           "DEFAULT_TOKENS_PER_PARAM"]

DEFAULT_TOKENS_PER_PARAM = 20.0

CLAIM = ("Which option of this family is worth its cost? Each option is toggled alone against the family as "
         "configured (the reference) and trained with the same seeds, settings and tokens at 2 or more sizes; the "
         "change in validation bits/byte is paired per validation window (95% interval, seeds and windows "
         "resampled; verdicts by the benefit-evidence rules), and the change in parameters, training FLOPs, "
         "measured tokens/s, training peak memory and KV cache comes from the same runs. Method: Narang et al. "
         "2021 (each modification alone on one baseline, same recipe).")

#: the atlas table's columns as the page shows them (units in the headers)
TABLE_WORDS = {
    "label": "option", "size_dim": "size (dim)", "verdict_words": "verdict",
    "d_bits_per_byte": "Δ val (bits/byte)", "ci95_low": "95% low (bits/byte)", "ci95_high": "95% high (bits/byte)",
    "min_detectable_effect_bits": "min detectable (bits/byte)", "d_train_flops_pct": "Δ training FLOPs (%)",
    "d_num_params": "Δ parameters (count)", "d_tokens_per_s_pct": "Δ measured tokens/s (%)",
    "d_train_peak_mib": "Δ training peak, measured (MiB)", "d_train_peak_predicted_mib":
    "Δ training peak, predicted (MiB)", "d_kv_cache_bytes_per_token": "Δ KV cache (bytes/token)",
    "val_bits_per_byte": "val (bits/byte)", "non_embedding_params": "non-embedding parameters",
    "seeds": "seeds", "windows": "windows", "note": "note", "arm": "option name",
}


#: the verdicts in the table's narrow column (the chart's legend has them in full: ``charts.atlas.VERDICT_STYLE``)
VERDICT_SHORT = {"supported": "lowers loss", "contradicted": "raises loss", "not_detectable": "none detected",
                 "not_learned": "not learned"}


def settings(col) -> tuple[str, ...] | None:
    """The options to toggle (a multiselect of ``probe_atlas.ATLAS_OPTIONS``); None = every default option."""
    from xtlens.profiling.benefit.probe_atlas import ATLAS_OPTIONS

    picked = col.multiselect("options to toggle", ATLAS_OPTIONS, default=list(ATLAS_OPTIONS),
                             key="benefits.atlas.options",
                             help="Each option is switched against the family (on when the family has it off, off "
                                  "when on) in a run of its own; options that cannot combine with the family are "
                                  "listed with x-transformers' reason.")
    if not picked or list(picked) == list(ATLAS_OPTIONS):
        return None
    return tuple(picked)


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The atlas table as the page shows it beside the chart: every option at every size (the reference and the
    control left out: they are stated under the chart), the verdict in words, costs with their units."""
    rows = ac.chart_rows(table)
    pred = ac.cost_values(table, "d_train_peak_predicted_bytes").loc[rows.index]
    out = rows.assign(verdict_words=[VERDICT_SHORT.get(str(v), str(v)) for v in rows["verdict"]],
                      d_train_peak_mib=pd.to_numeric(rows["d_train_peak_bytes"], errors="coerce") / ac.MIB,
                      d_train_peak_predicted_mib=pred)
    cols = ["label", "size_dim", "verdict_words", "d_bits_per_byte", "ci95_low", "ci95_high",
            "min_detectable_effect_bits", "d_train_flops_pct", "d_num_params", "d_tokens_per_s_pct",
            "d_train_peak_mib", "d_train_peak_predicted_mib", "d_kv_cache_bytes_per_token", "val_bits_per_byte",
            "non_embedding_params", "seeds", "windows", "note", "arm"]
    out = out.assign(_d=pd.to_numeric(out["d_bits_per_byte"], errors="coerce"))
    out = out.sort_values(["size_dim", "_d"], ascending=[False, True])  # largest size first, best change first
    return out[cols].rename(columns=TABLE_WORDS).reset_index(drop=True)


def _number_config(shown: pd.DataFrame) -> dict:
    fmt = {"Δ val (bits/byte)": "%+.4f", "95% low (bits/byte)": "%+.4f", "95% high (bits/byte)": "%+.4f",
           "min detectable (bits/byte)": "%.4f", "Δ training FLOPs (%)": "%+.1f", "Δ measured tokens/s (%)": "%+.1f",
           "Δ training peak, measured (MiB)": "%+.2f", "Δ training peak, predicted (MiB)": "%+.2f",
           "val (bits/byte)": "%.4f", "Δ parameters (count)": "localized", "Δ KV cache (bytes/token)": "localized",
           "non-embedding parameters": "localized"}
    return {c: st.column_config.NumberColumn(format=f) for c, f in fmt.items() if c in shown} | {
        "option": st.column_config.TextColumn(pinned=True), "verdict": st.column_config.TextColumn(width="medium")}


def coverage_line(h) -> str:
    """``80% intervals covered 17 of 21 arms at the largest size (dim 64), median error 0.012 bits/byte`` from a
    ``forecast.Holdout``; why nothing was held out otherwise."""
    if h.coverage is None:
        return f"Held-out check not possible: {h.reason}."
    ok = h.table[h.table["identifiable"].astype(bool)]
    covered = int(ok["covered"].astype(bool).sum())
    dims = sorted({int(v) for v in pd.to_numeric(h.table["held_out_dim"], errors="coerce").dropna()})
    where = f" (dim {', '.join(map(str, dims))})" if dims else ""
    line = (f"{h.level:.0%} intervals covered {covered} of {h.arms} arms at the largest size{where}, median error "
            f"{h.median_abs_error_bits:.3f} bits/byte (each forecast from the smaller sizes only).")
    if h.coverage_prediction is not None:
        line += (f" Counting the measured mean's own seed noise (prediction interval): "
                 f"{h.coverage_prediction:.0%} covered.")
    signed = pd.to_numeric(ok["estimate"], errors="coerce") - pd.to_numeric(ok["measured"], errors="coerce")
    if h.coverage < h.level - 0.2 and len(signed.dropna()):
        below = int((signed < 0).sum())
        side = ("too low (optimistic)" if below > len(signed.dropna()) / 2 else "too high (pessimistic)")
        line += (f" **These intervals are not to be trusted here:** they covered {h.coverage:.0%} where "
                 f"{h.level:.0%} was promised, and {max(below, len(signed.dropna()) - below)} of "
                 f"{len(signed.dropna())} forecasts were {side}, median {signed.median():+.3f} bits/byte: the loss "
                 "does not follow one power law over these sizes at this token budget; treat the forecasts above as "
                 "a direction, not a number.")
    if "law" in ok and ok["law"].astype(str).str.contains("no irreducible loss").any():
        line += (" Law: A N^-alpha without an irreducible loss, alpha shared (the smaller sizes could not pin the "
                 "floor down): it never flattens, so forecasts far beyond the runs are optimistic.")
    return line


# --- cached computations (once per table content and input) -------------------------------------------------

@st.cache_data(max_entries=16, show_spinner=False)
def _skipped(opt_json: str) -> pd.DataFrame:
    import json

    from xtlens.profiling.benefit.probe_atlas import skipped_table
    from xtlens.profiling.benefit.probes import base_member

    opt = ProbeOptions.from_dict(json.loads(opt_json))
    return skipped_table(base_member(opt), opt.options)


# --- the panel ---------------------------------------------------------------------------------------------

def render(ctx: Ctx, opt: ProbeOptions | None, table: pd.DataFrame, finals: pd.DataFrame, *, key: str,
           source: str, digest: str | None = None) -> None:
    """The atlas panel for ``table`` (``probe_atlas.atlas_table``) and ``finals`` (the final evaluation row of each
    run): chart and table, control, skipped options, scale, forecasts, held-out check, downloads (the Export tab
    lists them too, as drawn from ``source``). ``opt``: the atlas the widgets describe (its skipped options), None
    for an uploaded table. ``key``: widget keys' suffix; ``digest``: the stored runs drawn (their forecasts are
    kept in the result store)."""
    if table.empty:
        st.info("No atlas row could be made from these runs (no finished run of the reference and an option at "
                "the same size).")
        return
    scale = _scale(finals)
    st.markdown("**What each option buys, per unit of cost**")
    names = list(ac.COSTS)
    cost = st.radio("cost on the x axis", names, horizontal=True, key="benefits.atlas.cost",
                    format_func=lambda k: ac.COSTS[k].label,
                    help="Each point: one option at one size. Left of 0 = cheaper than the reference, below 0 = lower "
                         "validation loss. Measured speed: the axis is reversed, so faster is left too.")
    cols = st.columns([3, 2])
    with cols[0]:
        view_common.chart(bc.clean_log_axes(ac.quality_vs_cost(table, cost=cost)), f"benefits.atlas.chart.{key}")
    with cols[1]:
        shown = display_table(table)
        view_common.dataframe(shown, f"benefits.atlas.table.{key}", title=f"benefit atlas: {key}", height=700,
                              raw=ac.chart_rows(table),  # the rows drawn, raw columns (Export also lists the whole stored atlas)
                              column_config=_number_config(shown))
    st.caption("Each point is one option toggled alone at one size (symbol), minus the reference at that size; bars = "
               "95% interval (paired per validation window, seeds and windows resampled). Colour and legend = the "
               "verdict: lowers / raises the loss (the interval excludes 0 and the change is at least the minimum "
               "detectable effect), no detectable change, or not judged (the runs learned nothing). Click a column "
               "of the table to sort by it. Bits/byte: validation cross-entropy per UTF-8 byte of text (independent "
               "of the tokenizer).")
    _control(table)
    st.caption("Scale — " + scale)
    if opt is not None:
        skipped = _skipped(_opt_json(opt))
        if not skipped.empty:
            st.markdown(f"**Options not run: {len(skipped)}** (they cannot combine with this family; "
                        "x-transformers' rule)")
            view_common.dataframe(skipped.rename(columns={"arm": "option", "reason": "why not"}),
                                  f"benefits.atlas.skipped.{key}", title=f"benefit atlas: options not run ({key})",
                                  raw=skipped, width="stretch")
        else:
            st.caption("Every chosen option combines with this family: none skipped.")
    fc, held = _forecast_section(ctx, finals, key, digest)
    benefit_data.remember_atlas_tables(source, {"atlas table": table, "atlas forecasts": fc,
                                                "atlas held-out check": None if held is None else held.table})
    st.markdown("**Downloads**")
    view_common.downloads(table, "atlas table", f"benefits.atlas.dl.table.{key}")
    if fc is not None and not fc.empty:
        st.caption("The forecasts at your size:")
        view_common.downloads(fc, "atlas forecasts", f"benefits.atlas.dl.forecasts.{key}")
    if held is not None and not held.table.empty:
        st.caption("The held-out check:")
        view_common.downloads(held.table, "atlas held-out check", f"benefits.atlas.dl.holdout.{key}")


def _opt_json(opt: ProbeOptions) -> str:
    import json

    return json.dumps(opt.to_dict(), sort_keys=True, default=str)


def _scale(finals: pd.DataFrame) -> str:
    from xtlens.profiling.benefit.claims import scale_line

    text = scale_line(finals)
    split = report.split_of(finals)
    return text + ". Split — " + report.split_line(**split)


def _control(table: pd.DataFrame) -> None:
    ctl = table[table["arm"].astype(str).str.startswith("control")]
    if ctl.empty:
        return
    r = ctl.sort_values("size_dim").iloc[-1]
    mde = pd.to_numeric(ac.chart_rows(table)["min_detectable_effect_bits"], errors="coerce").dropna()
    st.caption(f"Control at dim {int(r['size_dim'])} (the reference with its context order shuffled at evaluation): "
               f"{float(r['d_bits_per_byte']):+.4f} bits/byte [{float(r['ci95_low']):+.4f}, "
               f"{float(r['ci95_high']):+.4f}], {ac.VERDICT_STYLE.get(str(r['verdict']), (str(r['verdict']),))[0]}: "
               "the size of a difference this probe does detect"
               + (f"; the options' minimum detectable effects: {mde.min():.4f}–{mde.max():.4f} bits/byte."
                  if len(mde) else "."))


def _your_size(ctx: Ctx) -> int:
    from xtlens.core.params import param_counts

    return int(param_counts(ctx.cfg).non_embedding_params)


def _forecast_section(ctx: Ctx, finals: pd.DataFrame, key: str, digest: str | None):
    st.markdown("**Forecast at your size** (a loss law per option fitted to the sizes run, 80% seed-bootstrap "
                "interval)")
    c = st.columns([2, 2, 2])
    n = c[0].number_input("your size: non-embedding parameters", min_value=1_000, max_value=10**13,
                          value=_your_size(ctx), step=1_000_000, key="benefits.atlas.forecast_params",
                          help="Default: the current configuration's non-embedding parameters (sidebar).")
    budgets = finals["budget_tokens"].dropna().nunique() if "budget_tokens" in finals else 0
    own = c[2].checkbox("at the atlas's own token budget", key="benefits.atlas.forecast_own_tokens",
                        value=budgets <= 1,  # one budget: a forecast at other tokens is not identifiable
                        help="Forecast the size alone, at the tokens the runs trained on. A forecast at another "
                             "token budget needs runs at 2 or more budgets (the token term B / D^b); with runs at "
                             "one budget this is ticked from the start.")
    tpp = c[1].number_input("tokens per parameter", min_value=0.1, max_value=10_000.0, value=DEFAULT_TOKENS_PER_PARAM,
                            step=1.0, key="benefits.atlas.forecast_tpp", disabled=own,
                            help="Training tokens = this x your non-embedding parameters (Chinchilla's rule of thumb: "
                                 "about 20).")
    tokens = None if own else float(n) * float(tpp)
    try:
        fc = benefit_data.atlas_forecasts(finals, float(n), tokens, digest=digest)
    except (ValueError, KeyError) as exc:
        st.warning(f"No forecast from these runs: {exc}")
        fc = None
    labels = _labels(finals)
    if fc is not None and not fc.empty:
        fc = fc[~fc["arm"].astype(str).str.startswith("control")]  # the detectability control is no option
        ok = fc[fc["identifiable"].astype(bool)]
        if len(ok):
            view_common.chart(ac.forecast_chart(ok, labels=labels), f"benefits.atlas.forecast.{key}")
        bad = fc[~fc["identifiable"].astype(bool)]
        if len(bad):
            why = bad.groupby(bad["reason"].astype(str).map(_plain_reason), sort=False)["arm"].agg(list)
            st.markdown(f"**Not forecast: {len(bad)} of {len(fc)} option(s)** (not identifiable), each reason once:\n"
                        + "\n".join(f"- {reason} — *{len(arms)} option(s): "
                                     f"{', '.join(labels.get(str(a), str(a)) for a in arms)}*"
                                     for reason, arms in why.items()))
            if len(ok) == 0:
                st.info("No option's forecast is identifiable at this input. With runs at one token budget, tick "
                        "\"at the atlas's own token budget\" to forecast the size alone (or run the atlas at 2 or "
                        "more budgets).")
        st.caption("Extrapolating far past the sizes run widens the interval, and the interval only covers the "
                   "seeds' spread under the fitted law: the held-out check below says how often such intervals "
                   "were right here.")
    held = None
    try:
        held = benefit_data.atlas_holdout(finals, digest=digest)
    except (ValueError, KeyError) as exc:
        st.warning(f"No held-out check from these runs: {exc}")
    if held is not None:
        st.markdown("**Held-out check:** " + coverage_line(held))
        shown = held.table[~held.table["arm"].astype(str).str.startswith("control")]
        if not shown.empty and held.coverage is not None:
            view_common.chart(ac.holdout_chart(shown, level=held.level, labels=labels),
                              f"benefits.atlas.holdout.{key}")
    return fc, held


def _plain_reason(reason: str) -> str:
    """A forecast's reason in the page's words (the library names its argument, the page its checkbox)."""
    return re.sub(r"\(tokens=None forecasts at ([\d,]+)\)",
                  "(tick \"at the atlas's own token budget\" to forecast at \\1 tokens)", reason)


def _labels(finals: pd.DataFrame) -> dict[str, str]:
    """arm -> the label a user reads (``config_name`` without its size)."""
    out: dict[str, str] = {}
    if finals.empty or "variant" not in finals:
        return out
    for arm, name in zip(finals["variant"].astype(str), finals["config_name"].astype(str), strict=True):
        out.setdefault(arm, name.rsplit(" (dim ", 1)[0])
    return out
