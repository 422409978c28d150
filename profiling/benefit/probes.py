"""The four probes, each answering one claim of the written analysis that came with the seed configuration, with training runs.

All sizes are the user's; the defaults are scaled-down members of the current configuration's family
(``family``: every flag of the configuration kept, ``dim``/``depth``/``heads``/vocabulary scaled down) sized
to finish on 2 CPU cores in a few minutes per probe.

* ``scaling``: sweep ``dim``, ``depth`` or ``heads`` (``values``) at an equal token budget and at an equal
  training-FLOP budget (the current value's FLOPs at the token budget); plus, with seed 0, each value
  trained on the first ``overfit_tokens`` tokens of the training split for ``overfit_epochs`` x that many
  tokens (random windows of the subset, so "epochs" counts tokens seen, ``budget_kind=epochs``): the train /
  validation gap (the over-fitting claim).
* ``stability`` (``probe_stability``, DeepNet's method): DeepNorm (the seed's translation), pre-norm
  (x-transformers' default) and plain post-norm (``pre_norm=False`` without DeepNorm's residual scale and init) at
  each depth in ``values`` and each peak learning rate of a sweep, gradient clipping off: the largest stable
  learning rate per norm and depth, gradient ratios across seeds, divergences as rows.
* ``extrapolation`` (``probe_extrapolation``, Press et al. 2022): train at ``seq_len`` L, evaluate the whole
  validation split at ``values`` x L (default 1, 2, 4, 8) for ALiBi (all heads), rotary (the family's width and
  full width), xpos, ALiBi + xpos (the seed's combination, ALiBi on half the heads), sinusoidal, learned absolute
  (at L only) and no position encoding (NoPE), each with the family's ``shift_tokens`` and with 0; paired per
  window against ALiBi.
* ``heads`` (``probe_heads``): ``values`` head counts (default 2, 4, 8) at equal parameters with the ALiBi share
  and the rotary width held fixed (the rotary rule as its own arm), 1 vs grouped vs full K/V heads next to the
  KV-cache bytes per token each needs, and a shuffled-context control; paired per window, 5 seeds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from xtlens.core.config import ModelConfig
from xtlens.profiling.benefit.corpus import SPLIT_VERSION
from xtlens.profiling.benefit.harness import BudgetError, RunSpec, steps_for
from xtlens.profiling.benefit.probe_options import (
    DEFAULT_VOCAB,
    DEFAULTS,
    NORMS,
    OVERFIT_EPOCHS,
    OVERFIT_TOKENS,
    POSITIONS,
    QUICK,
    SCALING_AXES,
    ProbeInputError,
    ProbeOptions,
    axis_config,
    budget_for,
    family,
    member,
    scaled_heads,
    train_settings,
)
from xtlens.profiling.benefit.records import ProbeRecord

__all__ = ["ProbeOptions", "ProbeInputError", "family", "plan", "run_probe", "run_one", "run_key", "build_post_norm",
           "run_or_failure", "DEFAULTS", "QUICK", "SCALING_AXES", "NORMS", "POSITIONS",
           "run_labels", "base_member", "member", "train_settings", "budget_for", "axis_config", "scaled_heads",
           "DEFAULT_VOCAB", "OVERFIT_TOKENS", "OVERFIT_EPOCHS"]

# What a probe is (options, defaults, family, settings, budget): ``probe_options``; re-exported here.

def base_member(opt: ProbeOptions) -> ModelConfig:
    """The family member a probe is centred on (the "current" point of its sweep)."""
    return plan(opt)[0].cfg if opt.probe == "stability" else member(opt, train_settings(opt))


def plan(opt: ProbeOptions) -> list[RunSpec]:
    """The runs of a probe, in order (validated: bad input raises ``ProbeInputError`` / ``BudgetError``)."""
    if opt.probe == "stability":
        from xtlens.profiling.benefit import probe_stability

        return probe_stability.plan(opt)
    if opt.probe == "heads":
        from xtlens.profiling.benefit import probe_heads

        return probe_heads.plan(opt)
    if opt.probe == "extrapolation":
        from xtlens.profiling.benefit import probe_extrapolation

        return probe_extrapolation.plan(opt)
    if opt.probe == "atlas":
        from xtlens.profiling.benefit import probe_atlas

        return probe_atlas.plan(opt)
    return _plan_scaling(opt)


def _plan_scaling(opt: ProbeOptions) -> list[RunSpec]:
    from xtlens.profiling.benefit import probe_scaling

    return probe_scaling.plan(opt)


# --- running ---------------------------------------------------------------------------------------

def build_post_norm(cfg: ModelConfig, seed: int, device: str):
    """Plain post-norm: ``core.builder``'s keywords for ``cfg`` (without DeepNorm) plus ``pre_norm=False``:
    a norm after each residual add, no residual scale, x-transformers' default init."""
    import torch
    from x_transformers import Decoder, TransformerWrapper
    from xtlens.core.builder import effective_kwargs

    kw = effective_kwargs(replace(cfg, deepnorm=False))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TransformerWrapper(**kw.wrapper, attn_layers=Decoder(**kw.decoder, pre_norm=False))
    return model.to(device)


def builder_for(build: str):
    """The model builder a ``RunSpec.build`` names: ``None`` for ``"builder"`` (``core.builder``), plain post-norm
    (``build_post_norm``), the heads probe's shuffled-context control (``probe_heads.build_shuffled_context``), or
    x-transformers keywords ``ModelConfig`` does not expose (``probe_extrapolation.builder_for``)."""
    if build == "post_norm":
        return build_post_norm
    if build == "shuffled_context":
        from xtlens.profiling.benefit.probe_heads import build_shuffled_context

        return build_shuffled_context
    if build.startswith("xt-kwargs:"):
        from xtlens.profiling.benefit.probe_extrapolation import builder_for as xt_builder

        return xt_builder(build)
    return None


def run_key(run: RunSpec, corpus_key: str, device_name: str, versions: dict[str, str]) -> str:
    """The cache key of a run in the result store: identity of the training itself (configuration and how it is
    built, the optimizer steps the budget buys, seed, training settings, the corpus's ``content_key``, split rule, device name, torch and
    x-transformers versions). A token and a FLOP budget that buy the same steps share one key, and so do two
    probes that train the same run (it is done once; its rows are relabelled with each probe and budget)."""
    payload = {"cfg": run.cfg.to_dict(), "build": run.build, "steps": steps_for(run.cfg, run.budget, run.settings),
               "seed": run.seed, "settings": run.settings.to_dict(),
               "corpus": corpus_key, "split": SPLIT_VERSION, "device_name": device_name, "versions": versions, "format": 2}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_one(run: RunSpec, data, *, device: str, device_name: str, versions: dict[str, str],
            progress: Callable[[float, str], None] | None = None, use_cache: bool = True,
            store: bool = True, done: dict[str, list[ProbeRecord]] | None = None) -> list[ProbeRecord]:
    """One run: from the result store (``probe_store``) when the same run was stored before and ``use_cache``,
    else trained here (rows ``source="measured"``) and, with ``store``, stored (a fresh run replaces the
    cached one: the latest stored run of a key is the one served). ``done`` (run key -> rows) holds the runs
    already trained by this call: a probe that plans the same training twice (the heads probe's full-K/V run
    at the family's head count) trains it once, also when fresh."""
    from xtlens.profiling.benefit.harness import train_run
    from xtlens.profiling.benefit.probe_store import cached_run, store_run

    key = run_key(run, data.run_key_corpus, device_name, versions)
    if done is not None and key in done:
        return [replace(r, **run_labels(run)) for r in done[key]]
    if use_cache:
        cached = cached_run(key)
        if cached is not None:  # a run stored before corpus_sha256 became the file's digest: served with the new one
            return [replace(r, **run_labels(run), corpus_sha256=data.corpus_sha256) for r in cached]
    rows = train_run(run, data, device=device, device_name=device_name, versions=versions, run_key=key,
                     build=builder_for(run.build), progress=progress)
    rows = [replace(r, source="measured") for r in rows]
    if store:
        store_run(key, rows, source="local")
    if done is not None and all(r.status in ("ok", "diverged") for r in rows):
        done[key] = rows
    return rows


def run_or_failure(run: RunSpec, data, *, device: str, device_name: str, versions: dict[str, str],
                   progress: Callable[[float, str], None] | None = None, use_cache: bool = True,
                   store: bool = True, done: dict[str, list[ProbeRecord]] | None = None) -> list[ProbeRecord]:
    """``run_one``, with a failed run (out of memory, an exception in the model) as an ``error`` row instead of
    an exception; bad input (``BudgetError``, ``ProbeInputError``) still raises."""
    import torch

    try:
        return run_one(run, data, device=device, device_name=device_name, versions=versions, progress=progress,
                       use_cache=use_cache, store=store, done=done)
    except (BudgetError, ProbeInputError):
        raise
    except (torch.OutOfMemoryError, MemoryError) as exc:  # the row names the part that does not fit
        return failure_rows_for(run, "error", _oom_message(exc, run, device_name), corpus_sha256=data.corpus_sha256,
                                device=device, device_name=device_name)
    except Exception as exc:  # noqa: BLE001 - a failed run is a row, the probe goes on
        return failure_rows_for(run, "error", f"{type(exc).__name__}: {exc}"[:300], corpus_sha256=data.corpus_sha256,
                                device=device, device_name=device_name)


def _oom_message(exc: BaseException, run: RunSpec, device_name: str) -> str:
    """The one out-of-memory wording (``profiling.errors.failure_message``) for a training run: its shape and the
    part that does not fit (the model's weights, gradients and AdamW state, or the activations)."""
    from xtlens.core.config import ConfigError, Workload
    from xtlens.profiling.errors import failure_message

    try:
        wl = Workload(batch=run.settings.batch, seq_len=run.settings.seq_len)
    except ConfigError:  # a shape beyond the workload's limits: the plain wording
        return f"out of memory: {exc}"
    return failure_message(exc, what="a training run", device_name=device_name or "this device", wl=wl, cfg=run.cfg,
                           training=True)[1]


def run_labels(run: RunSpec) -> dict[str, Any]:
    """The columns that say which run of a probe a row belongs to (probe, variant, axis, budget): set on rows
    served from the result store, whose stored labels may come from another probe with the same run."""
    return {"probe": run.probe, "variant": run.variant, "axis": run.axis, "axis_value": run.axis_value,
            "config_name": run.config_name or run.variant, "budget_kind": run.budget_kind_label or run.budget.kind,
            "budget_tokens": run.budget.value if run.budget.kind == "tokens" else None,
            "budget_flops": run.budget.value if run.budget.kind == "flops" else None}


def failure_rows_for(run: RunSpec, status: str, message: str, *, corpus_sha256: str = "", device: str = "",
                     device_name: str = "") -> list[ProbeRecord]:
    from xtlens.profiling.results.records import config_key, now_iso

    return [ProbeRecord(probe=run.probe, run_key="", config_name=run.config_name, config_key=config_key(run.cfg),
                        config_json=run.cfg.to_json(), variant=run.variant, axis=run.axis, axis_value=run.axis_value,
                        budget_kind=run.budget_kind_label or run.budget.kind, seed=run.seed,
                        train_seq_len_tokens=run.settings.seq_len, batch=run.settings.batch,
                        budget_tokens=run.budget.value if run.budget.kind == "tokens" else None,
                        budget_flops=run.budget.value if run.budget.kind == "flops" else None,
                        corpus_sha256=corpus_sha256, device=device, device_name=device_name, timestamp=now_iso(),
                        status=status, error=message)]


def load_data(opt: ProbeOptions):
    from xtlens.profiling.benefit.corpus import load_corpus, tokenize

    return tokenize(load_corpus(opt.corpus), opt.num_tokens)


def run_probe(opt: ProbeOptions, *, progress: Callable[[float, str], None] | None = None,
              on_rows: Callable[[int, list[ProbeRecord]], None] | None = None, use_cache: bool = True,
              runs: Sequence[RunSpec] | None = None) -> list[ProbeRecord]:
    """Plan and run a probe in this process (the CLI without a time limit, tests); see ``jobs`` for the worker
    and for Ray. Runs found in the result store are served from it unless ``use_cache`` is False."""
    from xtlens.profiling.run.device import device_name as name_of
    from xtlens.profiling.run.device import resolve_device, versions

    runs = list(runs if runs is not None else plan(opt))
    data = load_data(opt)
    device = resolve_device(opt.device)
    dname, vers = name_of(device), versions()
    rows: list[ProbeRecord] = []
    done: dict[str, list[ProbeRecord]] = {}
    for i, run in enumerate(runs):
        def inner(f: float, m: str, _i: int = i, _run: RunSpec = run) -> None:
            if progress is not None:
                progress((_i + f) / len(runs), f"run {_i + 1}/{len(runs)} {_run.config_name} seed {_run.seed}: {m}")

        if progress is not None:
            progress(i / len(runs), f"run {i + 1}/{len(runs)} {run.config_name} seed {run.seed}")
        out = run_or_failure(run, data, device=device, device_name=dname, versions=vers, progress=inner,
                             use_cache=use_cache, done=done)
        rows.extend(out)
        if on_rows is not None:
            on_rows(i, out)
    if progress is not None:
        progress(1.0, f"done: {len(runs)} run(s)")
    return rows
