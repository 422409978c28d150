"""``xtlens probe {scaling,stability,extrapolation,heads,atlas}``: train the real decoder on real text, write rows.

    xtlens probe scaling --axis dim --values 32,64,128 --tokens 131072 --seeds 0,1 --out scaling.csv
    xtlens probe stability --values 6,24,48 --out stability.parquet
    xtlens probe extrapolation --seq-len 64 --values 1,2,4,8 --corpus my_texts/ --out extrapolation.json
    xtlens probe heads --values 1,2,4,8 --train-flops 2e11 --out heads.md
    xtlens probe heads --quick --summary-out claims.csv
    xtlens probe atlas --sizes 16,32,64 --options alibi_pos_bias,swiglu,kv_full --out atlas.csv
    xtlens probe atlas --list-options

``xtlens probe atlas`` (``probe_atlas``) toggles each option of ``--options`` (default: ``ATLAS_OPTIONS``) against the
family at each of ``--sizes`` (model dims) and prints the atlas table (bits/byte change with its 95% interval and
verdict, and the cost changes); ``--list-options`` lists the arms and the options skipped with x-transformers'
reason, without training.

``--summary-out FILE`` writes the claims table (``claims.write_summary``): one row per claim of the seed analysis
with its verdict, 95% interval, minimum detectable effect and scale; the same claims are printed on stdout with
the split rule, ``val_leak_fraction`` and the unigram "learned nothing" line. ``--quick`` uses ``probes.QUICK``.

The configuration options (``--preset``, ``--config``, ``--snippet``, ``--set``) give the family; the probe
trains scaled-down members of it (``--full-size`` keeps its sizes, for a GPU). Bad input exits 2 with a
message naming the option.
"""

from __future__ import annotations

import argparse
import sys
import time

from xtlens.profiling.cli_common import (
    ProgressBar,
    add_config_options,
    bounded_float,
    bounded_int,
    check_ray_address,
    config_from_args,
    follow,
    run_on_ray,
    time_limit_s,
)
from xtlens.profiling.results.rowtable import INT64_MAX

__all__ = ["add_probe_parser", "LIMITS", "int_list", "float_list"]

#: the allowed range of each numeric option (inclusive). Counts that reach the probe table (tokens, FLOPs, seeds)
#: stay within its 64-bit integer columns; sizes stay within what a probe can build; ``_check_table_fits``
#: checks the planned runs' totals too (the FLOPs of a run grow with its model).
LIMITS: dict[str, tuple[int, int]] = {
    "--values": (1, 1_048_576),
    "--sizes": (2, 1_048_576),  # the atlas's model dims
    "--seeds": (0, 2**32 - 1),  # torch.Generator and numpy seeds
    "--tokens": (1, 10**12),  # the Benefits page's own maximum
    "--train-flops": (1, 10**18),  # below 2**63 - 1 (about 9.2e18), the probe table's integer range
    "--seq-len": (8, 1_048_576),
    "--batch": (1, 65_536),
    "--vocab": (257, 65_536),
    "--evals": (1, 10_000),
    "--eval-tokens": (1, 10**9),
}


def int_list(text: str | None, option: str) -> tuple[int, ...] | None:
    """``text`` ("32,64,128") as integers within ``LIMITS[option]``; raises ``ProbeInputError`` naming ``option``
    and its range (the command line and the Benefits tab's text boxes share it)."""
    from xtlens.profiling.benefit.probes import ProbeInputError

    if text is None:
        return None
    lo, hi = LIMITS[option]
    allowed = (f"comma-separated integers from {lo:,} to {hi:,}, e.g. "
               f"{'32,64,128' if option in ('--values', '--sizes') else '0,1,2'}")
    values = []
    for x in text.replace(" ", "").split(","):
        if not x:
            continue
        try:
            values.append(bounded_int(lo, hi)(x))
        except Exception:  # noqa: BLE001 - argparse.ArgumentTypeError: the message names the whole option
            raise ProbeInputError(option, text, allowed) from None
    if not values:
        raise ProbeInputError(option, text, "at least one integer")
    return tuple(values)


def _number(text: str | None, option: str) -> int | None:
    from xtlens.profiling.benefit.probes import ProbeInputError

    if text is None:
        return None
    lo, hi = LIMITS[option]
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        value = float("nan")
    if not lo <= value <= hi:  # nan and inf fail here too
        raise ProbeInputError(option, text, f"a number from {lo:,} to {hi:.0e}, e.g. 131072 or 1.2e11")
    return int(value)


def _check_table_fits(runs) -> None:
    """Every run's tokens seen and training FLOPs must fit the probe table's 64-bit integers (refused before
    any training, naming the budget option)."""
    from xtlens.profiling.benefit.harness import step_flops, steps_for
    from xtlens.profiling.benefit.probes import ProbeInputError

    for r in runs:
        steps = steps_for(r.cfg, r.budget, r.settings)
        tokens = steps * r.settings.batch * r.settings.seq_len
        flops = steps * step_flops(r.cfg, r.settings)
        if max(tokens, flops) > INT64_MAX:
            option = "--tokens" if r.budget.kind == "tokens" else "--train-flops"
            raise ProbeInputError(option, r.budget.value, f"a budget whose runs stay within 2**63 - 1 tokens and "
                                  f"training FLOPs (this one: {tokens:.3g} tokens, {flops:.3g} FLOPs for "
                                  f"{r.config_name or 'a run'}); give a smaller budget")


def options_from_args(args: argparse.Namespace):
    """``ProbeOptions`` from the parsed command line (raises the errors that name the option)."""
    from xtlens.profiling.benefit.probes import ProbeInputError, ProbeOptions

    values = int_list(args.values, "--values")
    sizes = int_list(getattr(args, "sizes", None), "--sizes")
    arms = getattr(args, "options", None)
    if args.probe == "atlas":
        if values is not None:
            raise ProbeInputError("--values", args.values, "unset for the atlas: give its model dims with --sizes")
        values = sizes
        if arms is not None:
            from xtlens.profiling.benefit.probe_atlas import check_names

            arms = check_names(arms.split(","))
    else:
        if sizes is not None:
            raise ProbeInputError("--sizes", args.sizes, "only with the atlas probe (its model dims); the other "
                                  "probes take --values")
        if arms is not None:
            raise ProbeInputError("--options", arms, "only with the atlas probe (the options it toggles)")
    return ProbeOptions(probe=args.probe, base=config_from_args(args), axis=args.axis, values=values, options=arms,
                        tokens=_number(args.tokens, "--tokens"), train_flops=_number(args.train_flops, "--train-flops"),
                        seeds=int_list(args.seeds, "--seeds"), seq_len=args.seq_len, batch=args.batch,
                        num_tokens=args.vocab, lr=args.lr, evals=args.evals, corpus=args.corpus, device=args.device,
                        full_size=args.full_size, quick=args.quick,
                        extra=_extra(args))


def float_list(text: str | None, option: str, lo: float, hi: float) -> tuple[float, ...] | None:
    """``text`` ("1e-2,3e-2") as numbers in ``(lo, hi]``; raises ``ProbeInputError`` naming ``option``."""
    import math

    from xtlens.profiling.benefit.probes import ProbeInputError

    if text is None:
        return None
    allowed = f"comma-separated numbers above {lo:g} and at most {hi:g}, e.g. 1e-2,3e-2,6e-2"
    values = []
    for x in text.replace(" ", "").split(","):
        if not x:
            continue
        try:
            v = float(x)
        except ValueError:
            raise ProbeInputError(option, text, allowed) from None
        if not (math.isfinite(v) and lo < v <= hi):
            raise ProbeInputError(option, text, allowed)
        values.append(v)
    if not values:
        raise ProbeInputError(option, text, "at least one number")
    return tuple(sorted(set(values)))


def _extra(args: argparse.Namespace) -> dict:
    """The probe-specific settings of ``ProbeOptions.extra`` given on the command line."""
    from xtlens.profiling.benefit.probes import ProbeInputError

    extra: dict = {}
    if args.eval_tokens is not None:
        extra["eval_tokens"] = args.eval_tokens
    lrs = float_list(getattr(args, "lrs", None), "--lrs", 0.0, 10.0)
    if lrs is not None:
        if args.probe not in ("scaling", "stability"):
            raise ProbeInputError("--lrs", args.lrs, "only with the scaling and stability probes (their learning-rate "
                                  "sweeps)")
        if args.lr is not None:
            raise ProbeInputError("--lrs", args.lrs, "unset when --lr is given (one learning rate, no sweep)")
        extra["lrs"] = lrs
    for option, key in (("--xpos-scale-base", "xpos_scale_base"),
                        ("--xpos-scale-base-per-len", "xpos_scale_base_per_train_len")):
        value = getattr(args, key, None)
        if value is not None:
            if args.probe != "extrapolation":
                raise ProbeInputError(option, value, "only with the extrapolation probe (its xpos arms)")
            extra[key] = value
    if extra.get("xpos_scale_base") is not None and extra.get("xpos_scale_base_per_train_len") is not None:
        raise ProbeInputError("--xpos-scale-base-per-len", extra["xpos_scale_base_per_train_len"],
                              "unset when --xpos-scale-base is given (one scale base)")
    return extra


def _probe(args: argparse.Namespace) -> int:
    from xtlens.profiling.benefit import analysis, report
    from xtlens.profiling.benefit.corpus import load_corpus, tokenize
    from xtlens.profiling.benefit.probe_store import describe_sources
    from xtlens.profiling.benefit.probes import ProbeInputError, plan
    from xtlens.profiling.benefit.records import probe_frame, probe_markdown, write_probe_table
    from xtlens.profiling.results.export import format_for

    for option, path in (("--out", args.out), ("--summary-out", args.summary_out)):
        if path is not None:
            try:
                format_for(path)
            except ValueError as exc:
                raise ProbeInputError(option, path, "a file name ending in .csv, .json, .parquet or .md") from exc
    if args.evals < 1:
        raise ProbeInputError("--evals", args.evals, "an integer of at least 1")
    if args.eval_tokens is not None and args.eval_tokens < 1:
        raise ProbeInputError("--eval-tokens", args.eval_tokens, "an integer of at least 1")
    opt = options_from_args(args)
    if getattr(args, "list_options", False):
        return _list_options(opt)
    runs = plan(opt)
    _check_table_fits(runs)
    if args.ray is not None:
        check_ray_address(args.ray)  # an unreachable cluster: exit 2 now, not after the corpus is tokenised
    from xtlens.profiling.run.device import resolve_device

    resolve_device(opt.device)
    data = tokenize(load_corpus(opt.corpus), opt.num_tokens)
    need = max(max((r.settings.seq_len, *r.settings.eval_seq_lens)) for r in runs) + 1
    if data.val_tokens < need or data.train_tokens < need:
        raise ProbeInputError("--corpus", opt.corpus or "default", f"a corpus whose splits hold at least {need:,} "
                              f"tokens each (this one: {data.train_tokens:,} training, {data.val_tokens:,} "
                              "validation); give more text or a shorter --seq-len")
    print(f"probe {opt.probe}{' (--quick)' if opt.quick else ''}: {len(runs)} run(s) on {data.corpus_name} "
          f"({data.train_tokens:,} training / {data.val_tokens:,} validation tokens, vocabulary {data.vocab_size})",
          file=sys.stderr)
    print("  " + report.split_line(split_version=data.split_version, val_leak_fraction=data.val_leak_fraction,
                                   unigram_val_nats=data.unigram_val_nats), file=sys.stderr)
    bar = ProgressBar()
    started = time.monotonic()
    fresh = args.fresh or args.no_cache
    if args.ray is not None:
        from xtlens.profiling.benefit.jobs import ProbeSpec

        spec = ProbeSpec(options=opt, time_limit_s=args.time_limit or None, use_cache=not fresh)
        rows = run_on_ray("probe", args.ray, spec, bar, noun="run", verb="trained", interval_s=0.5)
        if rows is None:
            return 1
    elif args.time_limit:  # None or 0: in this process, no limit
        from xtlens.profiling.benefit.jobs import ProbeJob, ProbeSpec

        job = follow(ProbeJob(ProbeSpec(options=opt, time_limit_s=args.time_limit, use_cache=not fresh)), bar,
                     interval_s=0.5)
        rows = job.result()
    else:
        from xtlens.profiling.benefit.probes import run_probe

        rows = run_probe(opt, progress=bar, use_cache=not fresh, runs=runs)
    wall = time.monotonic() - started
    print(describe_sources(rows) + ("; --fresh trains them again" if any(r.source == "cache" for r in rows) else ""),
          file=sys.stderr)
    frame = probe_frame(rows)
    final = analysis.final_evals(frame)
    bad = final[final["status"] != "ok"]
    if args.out is not None:
        path = write_probe_table(frame, args.out)
        print(f"wrote {len(frame)} row(s) of {len(runs)} run(s) to {path} in {wall:.1f} s"
              + (f" ({len(bad)} run(s) not ok)" if len(bad) else ""), file=sys.stderr)
    else:
        cols = [c for c in ("config_name", "budget_kind", "seed", "step", "tokens_seen", "train_flops",
                            "train_loss_nats", "val_loss_nats", "val_bits_per_byte", "status", "source") if c in final]
        sys.stdout.write(probe_markdown(final[cols].reset_index(drop=True).assign(probe=opt.probe)))
        print(f"{len(runs)} run(s) in {wall:.1f} s; write every row with --out FILE", file=sys.stderr)
    for r in bad.itertuples():
        print(f"  {r.config_name} seed {r.seed}: {r.status}: {r.error}", file=sys.stderr)
    if opt.probe == "atlas":
        _print_atlas(frame, final, opt)
    return _print_claims(frame, final, args.summary_out)


def _list_options(opt) -> int:
    """``--list-options``: the atlas's arms for the family at each size, and the options skipped with the reason."""
    from xtlens.profiling.benefit.probe_atlas import CONTROL, REFERENCE, arms_for, size_label
    from xtlens.profiling.benefit.probe_options import ProbeInputError, member, train_settings

    if opt.probe != "atlas":
        raise ProbeInputError("--list-options", True, "only with the atlas probe")
    s = train_settings(opt)
    out = sys.stdout
    for dim in sorted(set(opt.values or opt.default("sizes"))):
        ref = member(opt, s, dim=dim)
        arms, skipped = arms_for(ref, opt.options)
        out.write(f"{size_label(dim)}: {REFERENCE} (the family) and {CONTROL} (context shuffled at evaluation), "
                  f"{len(arms)} arm(s), {len(skipped)} skipped\n")
        for a in arms:
            changes = ", ".join(f"{k}={v}" for k, v in a.changes.items())
            out.write(f"  {a.name}: {a.label} [{changes}]" + (f" (note: {a.note})" if a.note else "") + "\n")
        for k in skipped:
            out.write(f"  skipped {k.name}: {k.reason}\n")
    return 0


def _print_atlas(frame, final, opt) -> None:
    """The atlas table on stdout (the main columns; ``--out`` keeps every row), kept beside its runs in the result
    store (``derived_store.keep_atlas``) so that the Benefits tab opens on it without reading the runs again."""
    import sqlite3

    from xtlens.profiling.benefit.derived_store import keep_atlas
    from xtlens.profiling.benefit.probe_atlas import atlas_markdown, atlas_table
    from xtlens.profiling.results.store import StoreError

    t = atlas_table(frame)
    if t.empty:
        return
    try:  # with the forecasts at the family's own size: the page's default "your size"
        from xtlens.core.cost_model import param_counts

        keep_atlas(t, final, forecast_non_embedding_params=param_counts(opt.base).non_embedding_params)
    except (StoreError, sqlite3.Error, OSError) as exc:  # the table is printed either way; the page reads the rows
        print(f"the atlas table was not kept in the result store ({exc}): the Benefits tab computes it on its first "
              "visit", file=sys.stderr)
    cols = ["label", "size_dim", "val_bits_per_byte", "d_bits_per_byte", "ci95_low", "ci95_high",
            "min_detectable_effect_bits", "verdict", "d_num_params", "d_train_flops_pct", "d_tokens_per_s_pct",
            "train_peak_bytes", "d_kv_cache_bytes_per_token", "note"]
    sys.stdout.write("\natlas (bits/byte change vs the reference at the same size, paired per window; d_* = arm minus "
                     "reference):\n" + atlas_markdown(t[cols]) + "\n")


def _print_claims(frame, final, summary_out: str | None) -> int:
    """The split and unigram line of the rows, the runs that learned nothing (``not_learned``), and each claim of
    the seed analysis with its verdict, interval and scale (stdout); with ``summary_out`` the claims table too."""
    from dataclasses import asdict

    from xtlens.profiling.benefit import report
    from xtlens.profiling.benefit.claims import claims_for, write_summary

    out = sys.stdout
    out.write("\n" + report.split_line(**report.split_of(frame)) + "\n")
    line = report.not_learned_line(final)
    if line is not None:
        out.write(line + "\n")
    try:
        claims = claims_for(frame)
    except ImportError as exc:  # claims.ClaimsUnavailable: a probe of the rows without its claims module
        print(f"claims: {exc}", file=sys.stderr)
        return 1 if summary_out is not None else 0
    out.write(f"\n{len(claims)} claim(s) of the seed analysis (verdict, estimate with its 95% interval, scale):\n")
    for c in claims:
        out.write(report.claim_line(asdict(c)) + "\n")
    if summary_out is not None:
        path = write_summary(claims, summary_out)
        print(f"wrote {len(claims)} claim(s) to {path}", file=sys.stderr)
    return 0


def add_probe_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``probe`` to the ``xtlens`` command line (called by ``profiling.cli.build_parser``)."""
    from xtlens.profiling.benefit.records import PROBES

    p = sub.add_parser("probe", help="train the real decoder on real text: what dim, depth, heads and flags buy",
                       description="Training probes on the configuration's family: each trains small models of it on a text "
                                   "corpus and says, with a 95% interval over seeds, whether an option or a size "
                                   "lowers the validation loss.")
    p.add_argument("probe", choices=PROBES, help="which claim to measure")
    add_config_options(p)
    p.add_argument("--axis", default=None, help="scaling: dim, depth or heads (default dim)")
    p.add_argument("--values", default=None, metavar="N,N,...", help="scaling: the axis values; stability: depths "
                   "(default 6,24,48); extrapolation: evaluation lengths as multiples of --seq-len (default 1,2,4,8); "
                   "heads: head counts at equal parameters (default 1,2,4,8)")
    b = p.add_mutually_exclusive_group()
    b.add_argument("--tokens", default=None, metavar="N", help="training tokens per run (default: the probe's)")
    b.add_argument("--train-flops", default=None, metavar="F", help="training FLOPs per run (cost model: 3 x "
                   "forward, 1 multiply-add = 2 FLOPs), e.g. 1.2e11")
    p.add_argument("--seeds", default=None, metavar="S,S,...", help="seeds (model init and batch order)")
    p.add_argument("--sizes", default=None, metavar="D,D,...", help="atlas: the model dims (default 16,32,64,128)")
    p.add_argument("--options", default=None, metavar="NAME,NAME,...", help="atlas: the options to toggle against "
                   "the family (default: every modelled option that changes cost or quality; --list-options lists "
                   "them; FIELD=VALUE sets any field, e.g. attn_dropout=0.0)")
    p.add_argument("--list-options", action="store_true", help="atlas: list the arms for the family at each size "
                   "and the options skipped with x-transformers' reason, then exit (no training)")
    p.add_argument("--seq-len", type=bounded_int(*LIMITS["--seq-len"]), default=None, help="training sequence length in tokens")
    p.add_argument("--batch", type=bounded_int(*LIMITS["--batch"]), default=None, help="sequences per step")
    p.add_argument("--vocab", type=bounded_int(*LIMITS["--vocab"]), default=512, help="BPE vocabulary = the model's num_tokens (default 512)")
    p.add_argument("--lr", type=bounded_float(0.0, 10.0, lo_open=True), default=None,
                   help="one peak learning rate (scaling and stability: instead of their sweeps; default: the "
                        "probe's)")
    p.add_argument("--lrs", default=None, metavar="LR,LR,...",
                   help="scaling and stability: the peak learning rates of the sweep (default: the probe's)")
    p.add_argument("--xpos-scale-base", dest="xpos_scale_base", type=bounded_int(1, 1_048_576), default=None,
                   metavar="N", help="extrapolation: xpos's scale_base in tokens (default: x-transformers' 512)")
    p.add_argument("--xpos-scale-base-per-len", dest="xpos_scale_base_per_train_len",
                   type=bounded_float(0.0625, 1024.0), default=None, metavar="K",
                   help="extrapolation: xpos's scale_base as K times the training length")
    p.add_argument("--evals", type=bounded_int(*LIMITS["--evals"]), default=8, help="evaluations per run (default 8)")
    p.add_argument("--eval-tokens", type=bounded_int(*LIMITS["--eval-tokens"]), default=None, metavar="N", help="validation tokens per evaluation "
                   "(default: the probe's, 2,048 to 8,192)")
    p.add_argument("--corpus", default=None, metavar="PATH", help="a UTF-8 text file or a folder of them (default: "
                   "CPython's pydoc_data.topics)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--full-size", action="store_true", help="train the configuration's own sizes (not scaled down)")
    p.add_argument("--time-limit", type=time_limit_s, default=None, metavar="S", help="run in a child process "
                   "stopped after S seconds (unfinished runs: status timeout); 0 or none: in this process, no limit")
    p.add_argument("--fresh", action="store_true", help="measure again: train every run even when the result store "
                   "holds it (the new rows are stored and served next time)")
    p.add_argument("--no-cache", action="store_true", help="the same as --fresh")
    p.add_argument("--ray", default=None, metavar="ADDRESS", help="run one Ray task per training run (configuration "
                   "point and seed) on the cluster at ADDRESS (host:port, ray://host:10001, or auto)")
    p.add_argument("--out", default=None, metavar="FILE", help=".csv, .json, .parquet or .md (default: a summary "
                   "on stdout)")
    p.add_argument("--summary-out", default=None, metavar="FILE", help="write the claims table (one row per claim "
                   "of the seed analysis: claim, metric, estimate, ci95_low, ci95_high, seeds, min_detectable_effect, "
                   "verdict, scale, method) as .csv, .json, .parquet or .md")
    p.add_argument("--quick", action="store_true", help="the probe's smaller settings (fewer tokens, seeds and "
                   "values: a first look, and the tests); options you give still win")
    p.set_defaults(run=_probe)
