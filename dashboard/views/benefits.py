"""Benefits: train scaled-down members of the current configuration's family on real text and measure what
dim, depth, heads and each flag buy (the four probes of ``profiling.benefit.probes``)."""

from __future__ import annotations

from contextvars import ContextVar

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from xtlens.dashboard.charts import benefits as bc
from xtlens.dashboard.session import benefit_data, jobs, uploads, widgets
from xtlens.dashboard.views import Ctx
from xtlens.dashboard.views import atlas as atlas_view
from xtlens.dashboard.views import common as view_common
from xtlens.profiling.benefit import analysis, report
from xtlens.profiling.benefit.cli import LIMITS, int_list
from xtlens.profiling.benefit.corpus import DEFAULT_CORPUS_NAME, LEAK_WINDOW_BYTES, SPLIT_VERSION, CorpusError
from xtlens.profiling.benefit.harness import BudgetError, steps_for
from xtlens.profiling.benefit.jobs import time_limit_for
from xtlens.profiling.benefit.probes import (
    DEFAULTS,
    QUICK,
    SCALING_AXES,
    ProbeInputError,
    ProbeOptions,
    base_member,
    plan,
)
from xtlens.profiling.benefit.records import PROBES, probe_bytes
from xtlens.profiling.results import uploads as upload_boundary
from xtlens.profiling.results.export import MIME_TYPES
from xtlens.profiling.run.worker import QueueFull

CLAIMS = {
    "scaling": "Claim (the written analysis that came with the seed configuration): a larger dim gives 'better representation', more depth a 'hierarchical "
               "representation', and larger models 'risk overfitting'. Measured: validation loss of each size at an "
               "equal token budget (with a learning-rate sweep per size, the best rate used) and at three or more "
               "training-FLOP budgets (IsoFLOP), L = E + A N^-alpha fitted on non-embedding parameters with seed "
               "bootstrap intervals, and (optional) the train/validation gap after repeated epochs on a subset.",
    "stability": "Claim: deeper models 'may suffer from vanishing/exploding gradients'; DeepNorm exists to tame them. "
                 "DeepNet (Wang et al. 2022) states it as trainability: deep post-norm diverges at learning rates where "
                 "DeepNorm still trains. Measured: for DeepNorm (the seed's flag), pre-norm and plain post-norm at each "
                 "depth, a learning-rate sweep with gradient clipping off over several seeds: the largest learning "
                 "rate at which every seed trains (no divergence, ends below the unigram line), and the first/last "
                 "block gradient ratio with its interval over seeds.",
    "extrapolation": "Claim: ALiBi / xpos let the model handle sequences longer than it was trained on (Press et al. "
                     "2022 report ALiBi staying flat past the training length). Measured: loss per position at 1-8x the "
                     "training length for ALiBi, rotary (the family's width and full width), xpos, ALiBi + xpos (the "
                     "seed), sinusoidal, learned absolute (up to L only) and no position encoding (NoPE), each with "
                     "and without the token shift; the mean loss past L paired per window against ALiBi.",
    "heads": "Claim: more heads give 'diverse attention' with 'diminishing returns'; attn_one_kv_head (multi-query, "
             "Shazeer 2019) saves KV cache at little cost; grouped K/V (Ainslie et al. 2023) sits between. Measured over "
             "5 seeds, paired per validation window: head counts at equal parameters with the ALiBi share and the "
             "rotary width held fixed (the rotary rule as its own arm), 1 vs grouped vs full K/V heads next to the "
             "KV-cache bytes each needs, and a shuffled-context control that shows what size of difference the probe "
             "can see.",
}
CLAIMS["atlas"] = atlas_view.CLAIM
LABELS = {"scaling": "scaling (dim / depth / heads)", "stability": "stability (DeepNorm vs pre/post-norm)",
          "extrapolation": "extrapolation (positions)", "heads": "heads and K/V heads",
          "atlas": "atlas (every option: quality vs cost)"}
VALUES_HELP = {
    "scaling": "values of the swept field (default {d})",
    "stability": "depths (default {d})",
    "extrapolation": "evaluation lengths as multiples of the training length (default {d})",
    "heads": "head counts at equal parameters (default {d})",
    "atlas": "model sizes: the dims to run every option at (default {d})",
}


#: the page's text boxes and the command-line options they stand for (their ranges: ``cli.LIMITS``)
CONTROLS = {"values": "--values", "sizes (model dims)": "--sizes", "seeds": "--seeds"}
#: the unigram line and the not-learned configurations of the results being drawn (this script run's thread)
_LOSS_LINE: ContextVar[tuple[float | None, frozenset[str]]] = ContextVar("benefits_loss_line", default=(None, frozenset()))


class _ShownUnderControl(Exception):
    """Bad input already shown under its control: stop drawing this run."""


def _defaults(probe: str, quick: bool) -> dict:
    return DEFAULTS[probe] | (QUICK[probe] if quick else {})


def _parse_ints(text: str, control: str) -> tuple[int, ...] | None:
    """A values/seeds box as integers within the command line's range (``cli.LIMITS``); raises
    ``ProbeInputError`` naming the control and its range."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        return int_list(text, CONTROLS[control])
    except ProbeInputError as exc:
        raise ProbeInputError(control, text, str(exc).split(" is not allowed: ", 1)[-1]) from None


def _default_values(probe: str, axis: str, quick: bool = False) -> str:
    d = _defaults(probe, quick)
    v = d["values"] if "values" in d else d["sizes"]  # the atlas's values are its sizes (dims)
    return ",".join(map(str, v[axis] if isinstance(v, dict) else v))


def _tokens_key(probe: str, quick: bool) -> str:
    return f"benefits.{probe}.quick.tokens" if quick else f"benefits.{probe}.tokens"


def options_from_widgets(ctx: Ctx, probe: str, corpus_path: str | None) -> ProbeOptions:
    axis = widgets.value("benefits.axis", "dim") if probe == "scaling" else None
    quick = bool(widgets.value("benefits.quick", False))
    return ProbeOptions(probe=probe, base=ctx.cfg, axis=axis, quick=quick,
                        values=_parse_ints(widgets.value(f"benefits.{probe}.values", ""), _values_label(probe)),
                        tokens=int(widgets.value(_tokens_key(probe, quick), _defaults(probe, quick)["tokens"])),
                        seeds=_parse_ints(widgets.value(f"benefits.{probe}.seeds", ""), "seeds"),
                        corpus=corpus_path, device="cuda" if ctx.device.startswith("cuda") else "cpu",
                        options=_atlas_options() if probe == "atlas" else None)


def _atlas_options() -> tuple[str, ...] | None:
    """The atlas's chosen options (None: every default option, ``probe_atlas.ATLAS_OPTIONS``)."""
    from xtlens.profiling.benefit.probe_atlas import ATLAS_OPTIONS

    picked = widgets.value("benefits.atlas.options", None)
    if not picked or list(picked) == list(ATLAS_OPTIONS):
        return None
    return tuple(picked)


def _bounded_box(col, control: str, *, key: str, placeholder: str, help: str) -> bool:
    """A values/seeds text box; out-of-range or malformed input is named right under it with its range.
    Returns whether the box holds acceptable input."""
    lo, hi = LIMITS[CONTROLS[control]]
    text = col.text_input(control, key=key, placeholder=placeholder, help=f"{help}; integers from {lo:,} to {hi:,}")
    try:
        _parse_ints(text, control)
    except ProbeInputError as exc:
        col.error(str(exc))
        return False
    return True


def _values_label(probe: str) -> str:
    """The values box's label: the atlas's values are its model sizes (``--sizes``, dims)."""
    return "sizes (model dims)" if probe == "atlas" else "values"


def _settings_panel(ctx: Ctx, probe: str) -> str | None:
    """Widgets; returns the corpus path (None = default) or raises CorpusError for a bad upload, and
    ``_ShownUnderControl`` when a text box holds bad input (said under it)."""
    cols = st.columns([1, 2, 1, 1])
    if probe == "scaling":
        cols[0].radio("field to sweep", SCALING_AXES, horizontal=True, key="benefits.axis")
    if probe == "atlas":
        atlas_view.settings(st)
    quick = cols[0].checkbox("Quick", key="benefits.quick",
                             help="The probe's quick settings (probes.QUICK: fewer tokens, seeds and values), as "
                                  "`xtlens probe --quick`: a first look in a fraction of the time. Values you type "
                                  "still win.")
    defaults = _defaults(probe, quick)
    axis = widgets.value("benefits.axis", "dim")
    default = _default_values(probe, axis, quick)
    ok = _bounded_box(cols[1], _values_label(probe), key=f"benefits.{probe}.values", placeholder=default,
                      help=VALUES_HELP[probe].format(d=default) + "; leave empty for the default")
    cols[2].number_input("training tokens per run", min_value=LIMITS["--tokens"][0], max_value=LIMITS["--tokens"][1],
                         step=4096, value=defaults["tokens"], key=_tokens_key(probe, quick),
                         help="The token budget of every run (the scaling probe adds three IsoFLOP budgets and trains every "
                              "point at each learning rate of its sweep).")
    ok &= _bounded_box(cols[3], "seeds", key=f"benefits.{probe}.seeds",
                       placeholder=",".join(map(str, defaults["seeds"])),
                       help="Several seeds give the 95% intervals (seeds and validation windows resampled)")
    c = st.columns([1, 2])
    source = c[0].radio("corpus", ("default", "upload"), horizontal=True, key="benefits.corpus",
                        format_func=lambda s: "default: CPython docs" if s == "default" else "upload a text file")
    if source == "upload":
        up = c[1].file_uploader("a UTF-8 text file (the split and tokenizer are made from it)", type=None,
                                key="benefits.corpus_file")
        if up is None:
            c[1].caption("No file yet: the default corpus is used. " + SPLIT_CAPTION)
            path = None
        else:
            c[1].caption(SPLIT_CAPTION)
            path = benefit_data.save_upload(up.name, up.getvalue())
    else:
        c[1].caption(f"{DEFAULT_CORPUS_NAME}: about 465 KB of English prose shipped with every Python. "
                     + SPLIT_CAPTION)
        path = None
    if not ok:
        raise _ShownUnderControl
    return path


#: the split in words (the rule's name is the corpus module's; the measured leak is shown with the results)
SPLIT_CAPTION = (f"Split rule `{SPLIT_VERSION}`: paragraphs normalised and deduplicated, chunks that share a "
                 f"{LEAK_WINDOW_BYTES}-byte string kept together on one side, each group assigned by hash (about 10 % "
                 "validation). Its measured leak, `val_leak_fraction` (the share of validation tokens inside "
                 f"{LEAK_WINDOW_BYTES}-byte strings that also occur in training), and the unigram line are shown with "
                 "the results.")


def _family_line(opt: ProbeOptions) -> str:
    runs = plan(opt)
    cfg = base_member(opt)
    steps = sum(steps_for(r.cfg, r.budget, r.settings) for r in runs)
    flags = [k for k in ("alibi_pos_bias", "rotary_xpos", "rotary_pos_emb", "deepnorm", "attn_one_kv_head",
                         "attn_flash", "use_abs_pos_emb") if getattr(cfg, k)]
    return (f"{len(runs)} training run(s), {steps:,} optimizer steps in all, each of batch {runs[0].settings.batch} x "
            f"{runs[0].settings.seq_len} tokens. Scaled-down member of the current family: dim {cfg.dim}, depth "
            f"{cfg.depth}, heads {cfg.heads} x {cfg.attn_dim_head} wide, vocabulary {cfg.num_tokens}"
            + (f", ALiBi on {cfg.alibi_heads} of {cfg.heads} heads" if cfg.alibi_pos_bias else "")
            + f", shift_tokens={cfg.shift_tokens}; flags on: {', '.join(flags) or 'none'}. "
            + report.wall_time_line(opt.probe, opt.quick)
            + "; `xtlens probe --full-size` trains the configuration's own sizes (GPU). " + report.FULL_SIZE_NOTE)


def render(ctx: Ctx) -> None:
    st.markdown("**What each hyperparameter buys, measured.** Each probe trains the real x-transformers decoder "
                "(built like everywhere else in xtlens) on real text and reports validation loss in nats per token "
                "and bits per byte. Costs are on the other tabs; the Trade-offs tab puts both side by side.")
    first = PROBES.index("atlas") if widgets.value("benefits.probe") is None and _atlas_stored(ctx) else 0
    probe = st.radio("probe", PROBES, horizontal=True, key="benefits.probe", format_func=LABELS.get, index=first)
    st.caption(CLAIMS[probe])
    try:
        corpus_path = _settings_panel(ctx, probe)
        opt = options_from_widgets(ctx, probe, corpus_path)
        line = _family_line(opt)
    except _ShownUnderControl:
        _uploads(probe)
        return
    except (ProbeInputError, BudgetError, CorpusError) as exc:
        st.error(str(exc).replace("--values", "values").replace("--tokens", "training tokens per run"))
        _uploads(probe)
        return
    st.caption(line)
    frame = _job_panel(opt)
    _uploads(probe)
    tables = benefit_data.finished_tables(probe)
    if probe == "atlas" and frame is None and not tables and _stored_atlas(ctx, opt):
        return
    if frame is None and tables:
        labels = [label for label, _ in tables]
        pick = st.selectbox("results to show", labels, index=len(labels) - 1, key=f"benefits.show.{probe}",
                            help="Finished probes of this session and uploaded tables (newest last).")
        frame = dict(tables)[pick]
        st.caption(f"Showing {pick}.")
    if frame is not None and not frame.empty:
        _results(ctx, probe, frame)


def _atlas_stored(ctx: Ctx) -> bool:
    """Whether runs of this configuration's default atlas are in the result store (then the tab opens on the
    atlas)."""
    try:
        opt = options_from_widgets(ctx, "atlas", None)  # the atlas the tab draws when it opens on it
        return benefit_data.stored_atlas_runs(opt) is not None
    except (ProbeInputError, BudgetError, CorpusError):
        return False


def _stored_atlas(ctx: Ctx, opt: ProbeOptions) -> bool:
    """Draw the atlas from its runs already in the result store (no training) when this session has no finished
    atlas job for ``opt``; returns whether it drew one."""
    if benefit_data.find(opt) is not None:
        return False
    stored = benefit_data.stored_atlas_runs(opt)
    if stored is None:
        return False
    first, last = (t.replace("T", " ").split(".")[0].removesuffix("+00:00") for t in stored.measured)
    when = first if first == last else f"{first} – {last}"
    st.caption(f"From the result store: {stored.runs_found} of the {stored.runs_planned} runs of this atlas "
               f"(measured {when} UTC), nothing trained. Run probe trains the missing ones and serves the stored "
               "ones.")
    token = _LOSS_LINE.set((report.unigram_nats(stored.finals), report.not_learned_configs(stored.finals)))
    try:
        atlas_view.render(ctx, opt, stored.table, stored.finals, key="stored", source="runs in the result store",
                          digest=stored.digest)
    finally:
        _LOSS_LINE.reset(token)
    return True


def _job_panel(opt: ProbeOptions) -> pd.DataFrame | None:
    job = benefit_data.find(opt)
    if job is None:
        head = st.empty()  # the button and "Not run yet": cleared once the press submitted the job
        with head.container():
            cols = st.columns([1, 3])
            pressed = cols[0].button("Run probe", key=f"benefits.run.{opt.probe}", type="primary", width="stretch")
            stored = benefit_data.stored_atlas_runs(opt) if opt.probe == "atlas" else None
            if not pressed:  # pressed: the job's progress follows, not a stale "Not run yet"
                cols[1].caption((f"{stored.runs_found} of its {stored.runs_planned} runs are in the result store: Run probe "
                                 "serves them from there and trains only the missing ones. " if stored else "Not run yet. ")
                                + f"Runs in a separate process (time limit {time_limit_for(opt.probe):g} s) with "
                                "progress and Cancel; the page stays usable. Finished runs are kept in the result store and "
                                "served from there next time (Measure again trains them again).")
        if not pressed:
            return None
        try:
            job = benefit_data.submit(opt, f"{opt.probe} probe")
        except QueueFull as exc:
            st.warning(str(exc))
            return None
        head.empty()
    if not job.done():
        _progress(job.key, f"{opt.probe} probe")
        return None
    frame = benefit_data.frame_of(job)
    if job.outcome in jobs.ENDED_BADLY:
        st.warning(f"{opt.probe} probe: {jobs.ended_words(job)}. The runs it finished are shown; press Retry to run "
                   "it again with the same settings.")
    with st.container(horizontal=True, vertical_alignment="center"):
        st.caption(f"{opt.probe} probe: {job.outcome} in {job.elapsed_s:.1f} s; {len(frame)} row(s); "
                   f"{benefit_data.sources_words(job)}.")
        if st.button("Retry" if job.outcome in jobs.ENDED_BADLY else "Measure again",
                     key=f"benefits.rerun.{opt.probe}", type="secondary", icon=":material/refresh:",
                     help="A new job that trains every run again instead of serving stored runs from the result "
                          "store."):
            try:
                benefit_data.measure_again(opt, job, f"{opt.probe} probe")
            except QueueFull as exc:
                st.warning(str(exc))
                return frame
            st.rerun()
    return frame


def _progress(job_key: str, label: str) -> None:
    @st.fragment(run_every=1.0)
    def poll() -> None:
        job = benefit_data.get(job_key)
        if job is None:
            return
        fraction, message = job.progress()
        place = benefit_data.manager().queue_position(job_key)
        if place:
            message = (f"queued, place {place}: another job on this server runs first (one at a time); this one "
                       "starts when it ends")
        st.progress(min(max(fraction, 0.0), 1.0), text=f"{label} — {message} ({job.elapsed_s:.0f} s)")
        if st.button("Cancel", key=f"benefits.cancel.{job_key}"):
            benefit_data.cancel(job_key)
            st.rerun(scope="app")
        if job.done():
            st.rerun(scope="app")

    poll()


def _downloads(frame: pd.DataFrame, probe: str) -> None:
    cols = st.columns(4)
    for col, fmt in zip(cols, ("csv", "json", "parquet", "md"), strict=True):
        col.download_button(f"{fmt.upper() if fmt != 'parquet' else 'Parquet'}",
                            data=lambda fmt=fmt: probe_bytes(frame, fmt), file_name=f"probe-{probe}.{fmt}",
                            mime=MIME_TYPES[fmt], key=f"benefits.dl.{probe}.{fmt}", on_click="ignore",
                            width="stretch", icon=":material/download:")


def chart(fig: go.Figure, key: str) -> None:
    """Every chart of the tab: the unigram "learned nothing" line on each loss chart and ``not_learned`` on the
    legend of configurations whose runs all ended above it (``bc.with_unigram_line``, ``bc.label_not_learned``)."""
    unigram, not_learned = _LOSS_LINE.get()
    view_common.chart(bc.legible(bc.label_not_learned(bc.with_unigram_line(fig, unigram), not_learned)), key)


#: raw column names of the probe tables and the words (with units) the page shows instead
COLUMN_WORDS = {
    "law": "law", "points": "points", "identifiable": "identifiable", "E_nats": "E (nats/token)",
    "E_ci95_low": "E 95% low", "E_ci95_high": "E 95% high", "alpha": "alpha", "alpha_ci95_low": "alpha 95% low",
    "alpha_ci95_high": "alpha 95% high", "A": "A", "beta": "beta", "B": "B", "reason": "why not identifiable",
    "budget_flops": "budget (training FLOPs)", "sizes": "sizes", "lowest_loss_size": "size with the lowest loss",
    "lowest_loss_nats": "lowest loss (nats/token)", "lowest_at_edge": "lowest at the sweep's edge",
    "n_opt_non_embedding": "fitted optimum N (non-embedding params)", "n_opt_ci95_low": "optimum N 95% low",
    "n_opt_ci95_high": "optimum N 95% high", "lrs_swept": "peak lrs swept", "diverged_at_lrs": "diverged at lr",
    "not_learned_at_lrs": "not learned at lr", "diverged_runs": "diverged runs",
    "init_grad_ratio": "‖grad‖ first/last at init", "variant": "arm kind", "axis": "field", "axis_value": "value",
    "config_name": "configuration", "num_params": "parameters", "non_embedding_params": "non-embedding parameters",
    "val_loss_nats": "val loss (nats/token)", "ci95_low": "95% low", "ci95_high": "95% high",
    "tokens_per_param": "tokens per parameter", "peak_lr": "peak lr", "budget_kind": "budget kind",
    "train_flops": "training FLOPs", "tokens_seen": "tokens seen", "train_loss_nats": "train loss (nats/token)",
    "val_bits_per_byte": "val bits/byte", "grad_norm": "gradient norm", "clip_fraction": "clipped fraction",
    "tokens_per_s": "tokens/s", "config": "configuration", "seed": "seed", "step": "step",
    "shift_tokens": "shift_tokens", "eval_len_tokens": "evaluation length (tokens)",
}


def _words(column: str) -> str:
    """``gain_ci95_low`` -> ``gain 95% low``, ``beyond_L_loss_nats`` -> ``beyond L loss (nats/token)``."""
    for suffix, unit in (("_nats", " (nats/token)"), ("_tokens", " (tokens)"), ("_bytes", " (bytes)")):
        if column.endswith(suffix):
            return _words(column[: -len(suffix)]) + unit
    return column.replace("ci95_", "95% ").replace("_", " ")


def readable(table: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """A probe table as the page shows it: raw column names in words (``COLUMN_WORDS``; any other
    ``snake_case`` name with spaces), and the column settings that write counts of 1,000 or more with thousands
    separators (``st.dataframe(..., column_config=)``)."""
    names = {c: COLUMN_WORDS.get(c, _words(c)) for c in table.columns}
    shown = table.rename(columns=names)
    config = {}
    for raw, word in names.items():
        col = table[raw]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            vals = pd.to_numeric(col, errors="coerce").abs()
            if vals.notna().any() and float(vals.max()) >= 1000:
                config[word] = st.column_config.NumberColumn(format="localized")
    return shown, config


#: what Export calls the Benefits tab's tables (by key, less ``benefits.df.``); any other: the key in words
TABLE_TITLES = {"scaling_laws": "scaling: fitted laws", "scaling_iso": "scaling: IsoFLOP minima",
                "scaling_points": "scaling: every point", "scaling_sweep": "scaling: learning-rate sweep",
                "gaps": "scaling: over-fitting gaps", "extrap.gain": "extrapolation: context gain",
                "extrap.headline": "extrapolation: headline", "extrap": "extrapolation: loss per length", "stab": "stability: largest stable learning rate",
                "heads": "heads: loss per head count"}


def dataframe(table: pd.DataFrame, key: str, *, title: str | None = None, **kw) -> None:
    """``st.dataframe`` of a probe table, ``readable``; Export gets the raw ``table`` (``view_common.dataframe``)."""
    shown, config = readable(table)
    name = key.removeprefix("benefits.df.")
    view_common.dataframe(shown, key, title=title or TABLE_TITLES.get(name, name.replace("_", " ").replace(".", ": ")),
                          raw=table, column_config=config, **kw)


def _results(ctx: Ctx, probe: str, frame: pd.DataFrame) -> None:
    final = analysis.final_evals(frame)
    token = _LOSS_LINE.set((report.unigram_nats(frame), report.not_learned_configs(final)))
    try:
        _results_drawn(ctx, probe, frame, final)
    finally:
        _LOSS_LINE.reset(token)


def _results_drawn(ctx: Ctx, probe: str, frame: pd.DataFrame, final: pd.DataFrame) -> None:
    scope = analysis.describe_scope(frame)
    bad = final[final["status"] != "ok"]
    if len(bad):
        counts = bad["status"].value_counts().to_dict()
        st.warning("Runs not ok: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ". "
                   + "; ".join(f"{r.config_name} seed {r.seed}: {r.error}" for r in bad.head(4).itertuples()))
    flags = report.learned_runs(final)
    known = flags["learned"].map(lambda x: x is not None)
    none_learned = bool(known.any()) and not flags.loc[known, "learned"].any()
    line = report.not_learned_line(final)
    if line is not None:
        st.warning(line + (" " + report.FULL_SIZE_NOTE if none_learned else ""), icon=":material/block:")
    st.caption("Split — " + report.split_line(**report.split_of(frame)))
    _claims_table(probe, frame)
    if none_learned:  # every run above the unigram line: the curves, and no conclusions
        st.info(f"{report.NOT_LEARNED_MESSAGE[0].upper()}{report.NOT_LEARNED_MESSAGE[1:]}. The probe's charts and "
                "conclusions are withheld; the loss curves show how far the runs got.")
        chart(bc.loss_curves(frame, probe=probe, title="Loss curves (every run ended above the unigram line)"),
              f"benefits.{probe}.not_learned_curves")
    else:
        {"scaling": _scaling, "stability": _stability, "extrapolation": _extrapolation, "heads": _heads,
         "atlas": _atlas}[probe](ctx, frame, final)
    st.caption("What was measured — " + scope)
    with st.expander("Table: final evaluation of every run", expanded=False):
        cols = ["config_name", "budget_kind", "seed", "step", "tokens_seen", "train_flops", "num_params",
                "train_loss_nats", "val_loss_nats", "val_bits_per_byte", "grad_norm", "clip_fraction", "tokens_per_s",
                "status", "error"]
        shown = flags[[c for c in cols if c in flags] + ["learned"]]
        shown = shown.assign(learned=shown["learned"].map({True: "learned", False: "not_learned"}).fillna("—"))
        dataframe(shown, f"benefits.df.{probe}", title=f"{probe}: final evaluation of every run", width="stretch")
        st.caption("Every row of the probe (per evaluation step, per layer, per position bucket), as written by "
                   "`xtlens probe`:")
        _downloads(frame, probe)


def claims_display(claims: pd.DataFrame) -> pd.DataFrame:
    """The claims table as shown: verdict (coloured by ``claims_styler``) and its meaning in words, the claim, the
    estimate with its 95% interval and unit (withheld for ``not_learned``), seeds x windows, the minimum
    detectable effect, scale and method."""
    def num(v: object) -> float | None:
        f = pd.to_numeric(pd.Series([v]), errors="coerce").iloc[0]
        return None if pd.isna(f) else float(f)

    rows = []
    for r in claims.astype(object).where(claims.notna(), None).to_dict(orient="records"):
        verdict, unit = str(r.get("verdict") or ""), str(r.get("unit") or "")
        est, lo, hi, mde = (num(r.get(k)) for k in ("estimate", "ci95_low", "ci95_high", "min_detectable_effect"))
        if verdict == "not_learned":
            value = "withheld: " + report.NOT_LEARNED_MESSAGE
        elif est is None:
            value = "no estimate"
        else:
            value = f"{est:+.4f}" + (f" [{lo:+.4f}, {hi:+.4f}]" if lo is not None and hi is not None else "") + f" {unit}"
        windows = num(r.get("windows"))
        rows.append({"verdict": verdict, "meaning": report.VERDICT_WORDS.get(verdict, verdict),
                     "probe": r.get("probe"), "claim": r.get("claim"), "metric": r.get("metric"),
                     "estimate [95% interval]": value,
                     "seeds": f"{r.get('seeds')}" + (f" x {int(windows)} windows" if windows is not None else ""),
                     "min detectable effect": "" if mde is None else f"{mde:.4f} {unit}",
                     "scale": r.get("scale"), "method": r.get("method"), "note": r.get("note") or ""})
    return pd.DataFrame(rows, columns=["verdict", "claim", "estimate [95% interval]", "min detectable effect",
                                       "seeds", "scale", "metric", "meaning", "method", "note", "probe"])


def claims_styler(shown: pd.DataFrame):
    """``claims_display``'s frame with each verdict cell coloured (``bc.VERDICT_COLOURS``); the cell keeps its word."""
    return shown.style.map(lambda v: f"background-color: {bc.VERDICT_COLOURS[v]}; color: #111"
                           if v in bc.VERDICT_COLOURS else "", subset=["verdict"])


def _claims_table(probe: str, frame: pd.DataFrame) -> None:
    """The claims of the seed analysis this probe tests: one row each, verdict coloured and worded, with the
    downloads every table has (the Export tab lists it too)."""
    claims, problem = benefit_data.claims_of(frame)
    st.markdown("**Claims: verdict, estimate with its 95% interval, scale**")
    if claims is None:
        st.warning(f"Claims {problem}.")
        return
    if claims.empty:
        st.caption("No claim of this probe could be evaluated from these rows.")
        return
    view_common.dataframe(claims_styler(claims_display(claims)), f"benefits.claims.{probe}", title=f"claims {probe}",
                          raw=claims, width="stretch",
                 column_config={"claim": st.column_config.TextColumn(width="large"),
                                "estimate [95% interval]": st.column_config.TextColumn(width="medium")})
    st.caption("supported / contradicted: the 95% interval excludes 0 on the claimed / the other side AND the "
               "difference is at least the minimum detectable effect (a difference inside it is never a win); a "
               "\"no difference\" claim is supported when its interval lies inside its margin; not_detectable: "
               "otherwise; not_learned: the runs did not get below the unigram line, so the claim is not judged.")
    view_common.downloads(claims, f"claims {probe}", f"benefits.claims.{probe}")


def _compute(what: str, frame: pd.DataFrame, title: str) -> object:
    from xtlens.profiling.benefit import probe_extrapolation as pe
    from xtlens.profiling.benefit import probe_scaling as ps

    return {"scaling_law": lambda: bc.scaling_law(frame, title=title),
            "isoflop_curves": lambda: bc.isoflop_curves(frame, title=title),
            "law_table": lambda: ps.law_table(frame), "isoflop_table": lambda: ps.isoflop_table(frame),
            "headline": lambda: pe.headline(frame), "context_gains": lambda: pe.context_gains(frame),
            "atlas_table": lambda: _atlas_table(frame)}[what]()


def _atlas_table(frame: pd.DataFrame) -> pd.DataFrame:
    from xtlens.profiling.benefit.probe_atlas import atlas_table

    return atlas_table(frame)


@st.cache_data(max_entries=32, show_spinner=False)
def once(what: str, frame: pd.DataFrame, title: str = "") -> object:
    """The slow analyses of a probe table (the scaling fits with their seed bootstrap, the extrapolation probe's
    paired headline and context gains: seconds each), once per table content instead of on every rerun (each
    rerun filters the session's table into a new frame, so the analyses' own per-frame caches miss)."""
    return _compute(what, frame, title)


def _scaling(ctx: Ctx, frame: pd.DataFrame, final: pd.DataFrame) -> None:
    from xtlens.profiling.benefit import probe_scaling as ps

    axis = frame["axis"].dropna().iloc[0]
    laws = once("law_table", frame)
    unread = report.law_fit_warning(final[final["probe"] == "scaling"] if "probe" in final else final)
    if unread and not laws.empty:  # the fitted curves and the law table below are drawn, under this warning
        st.warning("The laws on this probe's charts and in its table are fitted anyway. " + unread,
                   icon=":material/warning:")
    cols = st.columns(2)
    with cols[0]:
        chart(once("scaling_law", frame, f"Equal tokens: val loss vs non-embedding parameters ({axis} swept)"),
              "benefits.scaling.params")
    with cols[1]:
        chart(once("isoflop_curves", frame, "IsoFLOP: val loss vs non-embedding parameters per FLOP budget"),
              "benefits.scaling.flops")
    st.caption("Method: Kaplan et al. 2020 (size = non-embedding parameters N; L = E + A N^-alpha with an "
               "irreducible term E) and Hoffmann et al. 2022 (IsoFLOP parabolas in log N, approach 2; the joint law "
               "E + A/N^a + B/D^b, approach 3). Every point is trained at each learning rate of a sweep; the best rate "
               "on validation (seed mean) is the point's result, the others are shown hollow. Bars and bands: 95% "
               "bootstrap over seeds (and validation windows). Along dim the attention width grows with it "
               "(heads x attn_dim_head = dim, as in the seed: 8 x 64 = 512).")
    if not laws.empty:
        st.markdown("**Fitted laws** (seed bootstrap; a law that is not identifiable says why)"
                    + (" — not scaling laws: see the warning above" if unread else ""))
        dataframe(laws.drop(columns=["method"]), "benefits.df.scaling_laws", width="stretch")
    iso = once("isoflop_table", frame)
    if not iso.empty:
        st.markdown("**IsoFLOP minima** (the compute-optimal non-embedding size per budget, 95% interval)")
        dataframe(iso, "benefits.df.scaling_iso", width="stretch")
    with st.expander("Table: every point (size x budget x learning rate), tokens per parameter, role", expanded=False):
        dataframe(ps.points_table(frame), "benefits.df.scaling_points", width="stretch")
        sweep = ps.lr_sweep_table(frame)
        if not sweep.empty:
            st.caption("The learning-rate sweep (seed-mean val loss, nats/token); a best rate at the sweep's edge "
                       "means the sweep should be widened.")
            dataframe(sweep, "benefits.df.scaling_sweep", width="stretch")
    best = ps.best_lr_rows(frame)  # one curve per size: its best learning rate (the others are in the table)
    curves = frame[frame["run_key"].isin(set(best["run_key"]))] if not best.empty else frame
    cols = st.columns(2)
    with cols[0]:
        chart(bc.loss_curves(curves, probe="scaling", budget_kind="tokens",
                             title="Loss curves, equal tokens, best lr per size"),
              "benefits.scaling.curves")
    with cols[1]:
        chart(bc.loss_curves(curves, probe="scaling", budget_kind="tokens", x="train_flops",
                             title="Same runs vs training FLOPs (lowest = best use)"),
              "benefits.scaling.curves_flops")
    gaps = analysis.overfit_gaps(final)
    if not gaps.empty:
        st.markdown("**Over-fitting (repeated epochs on a small subset of the training split)**")
        view_common.dataframe(gaps.rename(columns={"axis_value": axis, "train_loss_nats": "train loss (nats/token)",
                                                   "val_loss_nats": "val loss (nats/token)",
                                                   "gap_nats": "val - train (nats)", "num_params": "parameters"}),
                              "benefits.df.gaps", title=TABLE_TITLES["gaps"], raw=gaps)


def _stability(ctx: Ctx, frame: pd.DataFrame, final: pd.DataFrame) -> None:
    from xtlens.profiling.benefit import probe_stability as ps

    outcomes = ps.run_outcomes(frame)
    if outcomes.empty:
        st.info("No stability runs to show.")
        return
    largest = ps.largest_stable_lr(outcomes)
    ratios = ps.grad_ratio_table(ps.grad_ratios(frame))
    cols = st.columns(2)
    with cols[0]:
        chart(bc.stable_lr_chart(outcomes, largest, title="Largest stable learning rate per norm and depth"),
              "benefits.stability.lr")
    with cols[1]:
        chart(bc.grad_ratio_chart(ratios, when="init", title="Gradient ratio first / last block at initialisation"),
              "benefits.stability.ratio")
    st.caption("Left: each swept (depth, peak lr) cell per norm: filled = every seed trained (ended below the unigram "
               "line), open = a seed stayed on the unigram plateau, x = a seed diverged (clipping off); the line joins "
               "the largest stable lr. Right: geometric mean over seeds, bars = 95% seed-bootstrap interval; at step 0 "
               "the ratio does not depend on the learning rate.")
    table = ps.stability_table(frame)
    dataframe(table.rename(columns={"largest_stable_lr": "largest stable lr",
                                    "first_step_below_unigram": "first step below unigram (mean)",
                                    "val_loss_nats_at_largest_stable_lr": "val loss at it (nats/token)",
                                    "unigram_entropy_nats": "unigram (nats/token)"}), "benefits.df.stab")
    depths = sorted(int(d) for d in outcomes["depth"].dropna().unique())
    lrs = sorted(float(v) for v in outcomes["lr"].dropna().unique())
    cols = st.columns(2)
    depth = cols[0].selectbox("depth", depths, index=len(depths) - 1, key="benefits.stability.depth")
    lr = cols[1].selectbox("peak learning rate", lrs, index=0, key="benefits.stability.lr_pick",
                           format_func=lambda v: f"{v:g}")
    chart(bc.stability_curves(frame, depth=depth, lr=lr, title=f"Validation loss, depth {depth}, peak lr {lr:g}"),
          "benefits.stability.curves")
    sub = frame[ps.peak_lrs(frame) == lr] if "config_name" in frame else frame
    steps = sorted(int(s) for s in sub.loc[sub["row_kind"] == "layer", "step"].dropna().unique())
    if steps:
        step = st.selectbox("step for the profile", steps, index=0, key="benefits.stability.step",
                            help="0 = at initialisation, before any update")
        chart(bc.grad_profile(sub, depth=depth, step=step,
                              title=f"Gradient norm per layer at step {step}, depth {depth}, lr {lr:g}"),
              "benefits.stability.profile")
        zrange = bc.grad_range(sub, depth=depth)
        cols = st.columns(3)
        for col, variant in zip(cols, ("deepnorm", "pre_norm", "post_norm"), strict=True):
            with col:
                chart(bc.grad_heatmap(sub, variant=variant, depth=depth, zrange=zrange,
                                      title=f"{variant}, depth {depth}, lr {lr:g}"), f"benefits.stability.heat.{variant}")
        st.caption("Heat maps: log10 of each layer's gradient norm (clipping off) at every evaluated step of the first "
                   "seed, one colour scale for all three so that they compare; dark = vanishing.")


def _atlas(ctx: Ctx, frame: pd.DataFrame, final: pd.DataFrame) -> None:
    opt = None
    try:
        opt = options_from_widgets(ctx, "atlas", None)
    except (ProbeInputError, BudgetError, CorpusError):
        pass
    table, finals = once("atlas_table", frame), final[final["probe"] == "atlas"]
    if opt is not None and benefit_data.find(opt) is not None:  # this page's job: its runs are in the store
        benefit_data.keep_atlas(opt, table, finals)
    atlas_view.render(ctx, opt, table, finals, key="job", source="the atlas shown")


def _extrapolation(ctx: Ctx, frame: pd.DataFrame, final: pd.DataFrame) -> None:

    shifts = sorted({int(v) for v in frame.loc[frame["probe"] == "extrapolation", "axis_value"].dropna()}, reverse=True)
    cols = st.columns(max(1, len(shifts)))
    for col, shift in zip(cols, shifts, strict=False):
        with col:
            chart(bc.extrapolation_position_loss(frame, shift=shift, title=f"Loss by position, shift_tokens={shift}"),
                  f"benefits.extrapolation.positions.{shift}")
    st.caption("Trained at L; every scheme scores the same validation text in windows of up to 8L (learned absolute "
               "positions only up to L: their rows past L were never trained). The token shift hands each position a "
               "slice of the previous position's features, order information of its own: compare the schemes at "
               "shift_tokens=0. Method: Press et al. 2022, 'Train Short, Test Long'.")
    try:
        head, gains = once("headline", frame), once("context_gains", frame)
    except ImportError:  # the statistics module is not there: the curves only
        head = gains = pd.DataFrame()
    if not gains.empty:
        st.markdown("**Does the model use its context at L?** Context gain = the loss of the targets at positions "
                    "L/2..L-1 when the model sees only their last 1-4 input tokens, minus their loss with the whole "
                    "window (the same targets: nats/token; 95 % interval over seeds and windows). Not detectably "
                    "above 0: the extrapolation claims of that setting are not_detectable.")
        dataframe(gains, "benefits.df.extrap.gain")
    if not head.empty:
        st.markdown("**Headline**: mean loss at positions >= L (nats/token), and each scheme minus ALiBi paired per "
                    "window (same text, same seeds; 95 % interval; minimum detectable effect at this budget).")
        dataframe(head, "benefits.df.extrap.headline")
    chart(bc.extrapolation_curves(frame, title="Past the training length: does the longer window help or hurt?"),
          "benefits.extrapolation.curves")
    st.caption("Each point: the validation tokens at those positions of the longest window, scored in that window "
               "minus the same tokens scored with the text cut into training-length windows. Same text for every "
               "position scheme; 0 up to the training length by construction.")
    table = analysis.extrapolation_table(frame)
    dataframe(table, "benefits.df.extrap")


def _heads(ctx: Ctx, frame: pd.DataFrame, final: pd.DataFrame) -> None:
    from xtlens.profiling.benefit import probe_heads as ph

    table = ph.heads_table(frame)
    chart(bc.heads_effects(table, title="Loss difference vs the reference (family head count, full K/V), "
                                         "next to KV-cache bytes per token"), "benefits.heads.effects")
    st.caption("Each arm minus the reference, paired per validation window; bars = 95% interval (seeds and windows "
               "resampled); grey band = ± the probe's largest minimum detectable effect (80% power, 5% level): a "
               "difference inside it cannot be told from 0 at this budget. The shuffled-context control shows the size "
               "of a difference the probe does detect. Grey markers: an arm that did not get below the unigram line.")
    ctl = ph.control_table(frame)
    if not ctl.empty:
        r = ctl.iloc[0]
        st.caption(f"Control (context shuffled at evaluation): {r['effect_nats']:+.4f} nats/token "
                   f"[{r['ci95_low']:+.4f}, {r['ci95_high']:+.4f}]; the probe's minimum detectable effect: "
                   + (f"{r['probe_min_detectable_effect_nats']:.4f}" if pd.notna(r["probe_min_detectable_effect_nats"])
                      else "?") + " nats/token.")
    cols = st.columns(2)
    with cols[0]:
        chart(bc.heads_bars(table, title="Equal parameters: validation loss per head count"), "benefits.heads.bars")
    with cols[1]:
        chart(bc.kv_tradeoff(table, title="K/V heads: validation loss vs KV-cache bytes per token"),
              "benefits.heads.kv")
    dataframe(table.rename(columns={"kv_cache_bytes_per_token": "KV cache (bytes/token, float32)",
                                    "val_loss_nats": "val loss (nats/token)", "num_params": "parameters",
                                    "diff_vs_reference_nats": "Δ vs reference (nats/token)",
                                    "min_detectable_effect_nats": "min detectable (nats/token)",
                                    "unigram_entropy_nats": "unigram (nats/token)"}), "benefits.df.heads")


def _uploads(probe: str) -> None:
    with st.expander("Load probe rows written by `xtlens probe` (CSV, JSON or Parquet)"):
        up = st.file_uploader("probe table", type=["csv", "json", "parquet"], key="benefits.upload")
        if up is not None:
            try:  # the one upload boundary: size cap, nesting, exact counts, a named failure
                frame = upload_boundary.read_probe_upload(up.name, up.getvalue(), up.name.rsplit(".", 1)[-1].lower())
            except ValueError as exc:
                st.error(str(exc))
            else:
                uploads.add_probe_upload(up.name, frame)
                st.caption(f"Loaded {len(frame)} row(s) from {up.name}; probes: "
                           f"{', '.join(sorted(frame['probe'].dropna().unique()))}.")


# --- the Trade-offs view's measured-benefit panel ----------------------------------------------------

def tradeoff_points(frame: pd.DataFrame) -> pd.DataFrame:
    """Per swept value (equal token budget, ok runs): seed-mean validation loss, parameters, training FLOPs
    spent, measured tokens/s and the closed-form training peak (AdamW, no recomputation) of that family member."""
    from xtlens.core.config import ModelConfig, Workload
    from xtlens.core.cost_model import training_headline

    fin = analysis.final_evals(frame)
    fin = fin[(fin["probe"] == "scaling") & (fin["budget_kind"] == "tokens") & (fin["status"] == "ok")]
    if fin.empty:
        return pd.DataFrame()
    from xtlens.profiling.benefit.probe_scaling import best_lr_rows

    best = best_lr_rows(frame)  # a learning-rate sweep: each size at its best rate only
    if not best.empty:
        fin = fin[fin["run_key"].isin(set(best["run_key"]))]
    rows = []
    for value, grp in fin.groupby("axis_value"):
        r = grp.iloc[0]
        cfg = ModelConfig.from_json(r["config_json"])
        peak = training_headline(cfg, Workload(batch=int(r["batch"]), seq_len=int(r["train_seq_len_tokens"]))).peak_bytes
        rows.append({"axis_value": int(value), "num_params": int(r["num_params"]),
                     "train_flops": int(r["train_flops"]), "training_memory_gib": peak / 2**30,
                     "tokens_per_s": float(grp["tokens_per_s"].astype(float).mean()),
                     "val_loss_nats": float(grp["val_loss_nats"].astype(float).mean()), "seeds": len(grp)})
    return pd.DataFrame(rows)


def tradeoff_panel(ctx: Ctx, axis: str) -> None:
    """Measured benefit beside cost for ``axis``, from this session's scaling probe (or an uploaded one)."""

    st.subheader(f"Measured benefit beside cost ({axis})")
    st.caption("Trained in the Benefits tab: scaled-down members of this configuration's family (their own, smaller "
               f"{axis} values, shown on each point), on real text. Compare their order and slopes, not their "
               "absolute sizes, with the full-size costs above.")
    tables = [(label, f) for label, f in benefit_data.finished_tables("scaling") if (f["axis"] == axis).any()]
    if not tables:
        st.caption(f"No scaling probe over {axis} yet: run one in the Benefits tab (probe 'scaling', field {axis}) or "
                   "load a table written by `xtlens probe scaling`. It trains scaled-down members of this "
                   "configuration's family on real text and shows their validation loss here, next to their cost. "
                   + report.wall_time_line("scaling") + ".")
        return
    label, frame = tables[-1]
    frame = frame[frame["axis"] == axis]
    token = _LOSS_LINE.set((report.unigram_nats(frame), frozenset()))
    try:
        _tradeoff_charts(frame, label, axis)
    finally:
        _LOSS_LINE.reset(token)


def _tradeoff_charts(frame: pd.DataFrame, label: str, axis: str) -> None:
    from xtlens.dashboard import proxies

    pts = tradeoff_points(frame)
    current = next((int(v) for n, v in zip(frame["config_name"], frame["axis_value"], strict=True)
                    if "(current)" in str(n)), None)
    cols = st.columns(3)
    with cols[0]:
        chart(bc.loss_vs_cost(pts, x="train_flops", x_title="training FLOPs spent (cost model, log)", axis=axis, current=current,
                              title="Loss vs training compute"), f"tradeoffs.measured.flops.{axis}")
    with cols[1]:
        chart(bc.loss_vs_cost(pts, x="training_memory_gib", x_title="training peak, AdamW, no recomputation (GiB, closed form)",
                              axis=axis, current=current, title="Loss vs training memory", log_x=False),
              f"tradeoffs.measured.mem.{axis}")
    with cols[2]:
        chart(bc.loss_vs_cost(pts, x="tokens_per_s", x_title="measured training throughput (tokens/s)", axis=axis,
                              current=current, title="Loss vs speed", log_x=False), f"tradeoffs.measured.speed.{axis}")
    unread = report.law_fit_warning(analysis.final_evals(frame))
    fit = analysis.fit_power_law(pts["num_params"].tolist(), pts["val_loss_nats"].tolist()) if len(pts) > 1 else None
    if unread and fit:
        st.warning("The power law below is fitted to these runs anyway. " + unread, icon=":material/warning:")
    st.caption(f"Source: {label}. " + analysis.describe_scope(frame) + " Equal token budget; loss is the validation "
               "loss (nats/token, mean over seeds) of the scaled-down family member at each value."
               + (f" Your fit{' (not a scaling law: see the warning above)' if unread else ''}: {fit.describe()}. Literature fit for comparison: Chinchilla's parameter exponent "
                  f"alpha = {proxies.CHINCHILLA_FIT['alpha']} (Hoffmann et al. 2022, on their data, at 70M-16B "
                  "parameters)." if fit else ""))
