"""Synthetic atlas tables (``probe_atlas.ATLAS_COLUMNS``) with known numbers, for the page's tests: every value
is written down here, so a test can compare what a chart or the page shows with the number it was given."""

from __future__ import annotations

import pandas as pd

ATLAS_COLUMNS = ("arm", "label", "size_dim", "num_params", "non_embedding_params", "tokens", "tokens_per_param",
                 "seeds", "windows", "val_bits_per_byte", "d_bits_per_byte", "ci95_low", "ci95_high",
                 "min_detectable_effect_bits", "verdict", "learned", "d_num_params", "d_train_flops",
                 "d_train_flops_pct", "tokens_per_s", "d_tokens_per_s_pct", "train_peak_predicted_bytes",
                 "train_peak_bytes", "d_train_peak_bytes", "kv_cache_bytes_per_token",
                 "d_kv_cache_bytes_per_token", "note")

#: arm -> (label, per-size effect in bits/byte, half-width of its interval, verdict, FLOPs change %, params change,
#: speed change %, measured peak change bytes, KV change bytes/token)
ARMS = {
    "alibi_pos_bias": ("ALiBi off", -0.002, 0.010, "not_detectable", 0.0, 0, 1.5, -65_536, 0),
    "swiglu": ("SwiGLU feed-forward", -0.040, 0.012, "supported", 12.5, 4_096, -8.0, 262_144, 0),
    "kv_full": ("full K/V heads", 0.001, 0.008, "not_detectable", 6.0, 2_048, -3.0, 131_072, 384),
    "shift_tokens": ("token shift off", 0.055, 0.015, "contradicted", 0.0, 0, 4.0, -32_768, 0),
    "macaron": ("macaron feed-forward", -0.030, 0.011, "supported", 25.0, 8_192, -20.0, 524_288, 0),
}
SIZES = (16, 32)
REF_PARAMS = {16: 20_000, 32: 60_000}
REF_NON_EMB = {16: 3_000, 32: 12_000}


def atlas_table() -> pd.DataFrame:
    """The reference, the control and ``ARMS`` at each of ``SIZES``; the effect of an arm at size s is its
    listed effect times s / 16 (so the two sizes differ), the interval its half-width around it."""
    rows = []
    for s in SIZES:
        k = s / 16
        ref_peak, ref_pred = 4_000_000 * k, 3_900_000 * k
        base = dict(size_dim=s, tokens=65_536, seeds=3, windows=32, learned=True)
        rows.append(base | dict(arm="reference", label="reference (the family as configured)",
                                num_params=REF_PARAMS[s], non_embedding_params=REF_NON_EMB[s],
                                tokens_per_param=65_536 / REF_PARAMS[s], val_bits_per_byte=2.5 - 0.1 * k,
                                d_bits_per_byte=0.0, ci95_low=0.0, ci95_high=0.0, min_detectable_effect_bits=None,
                                verdict="", d_num_params=0, d_train_flops=0, d_train_flops_pct=0.0,
                                tokens_per_s=10_000.0, d_tokens_per_s_pct=0.0, train_peak_predicted_bytes=int(ref_pred),
                                train_peak_bytes=int(ref_peak), d_train_peak_bytes=0, kv_cache_bytes_per_token=128,
                                d_kv_cache_bytes_per_token=0, note=""))
        rows.append(base | dict(arm="control:shuffled_context", label="control: context shuffled at evaluation",
                                num_params=REF_PARAMS[s], non_embedding_params=REF_NON_EMB[s],
                                tokens_per_param=65_536 / REF_PARAMS[s], val_bits_per_byte=3.0,
                                d_bits_per_byte=0.5, ci95_low=0.45, ci95_high=0.55, min_detectable_effect_bits=0.02,
                                verdict="contradicted", d_num_params=0, d_train_flops=0, d_train_flops_pct=0.0,
                                tokens_per_s=10_000.0, d_tokens_per_s_pct=0.0, train_peak_predicted_bytes=int(ref_pred),
                                train_peak_bytes=int(ref_peak), d_train_peak_bytes=0, kv_cache_bytes_per_token=128,
                                d_kv_cache_bytes_per_token=0, note=""))
        for arm, (label, eff, half, verdict, flops, dparams, speed, dpeak, dkv) in ARMS.items():
            n = REF_PARAMS[s] + dparams
            rows.append(base | dict(
                arm=arm, label=label, num_params=n, non_embedding_params=REF_NON_EMB[s] + dparams,
                tokens_per_param=65_536 / n, val_bits_per_byte=2.5 - 0.1 * k + eff * k, d_bits_per_byte=eff * k,
                ci95_low=eff * k - half, ci95_high=eff * k + half, min_detectable_effect_bits=half / 1.4,
                verdict=verdict, d_num_params=dparams, d_train_flops=int(flops * 1e6), d_train_flops_pct=flops,
                tokens_per_s=10_000.0 * (1 + speed / 100), d_tokens_per_s_pct=speed,
                train_peak_predicted_bytes=int(ref_pred + 0.9 * dpeak), train_peak_bytes=int(ref_peak + dpeak),
                d_train_peak_bytes=dpeak, kv_cache_bytes_per_token=128 + dkv, d_kv_cache_bytes_per_token=dkv,
                note="rotary_xpos off too (needs ALiBi)" if arm == "alibi_pos_bias" else ""))
    return pd.DataFrame(rows, columns=list(ATLAS_COLUMNS))


def forecasts_frame(*, bad: str | None = "kv_full") -> pd.DataFrame:
    """``forecast.Forecast`` rows for the reference and ``ARMS``: estimates with an 80% interval; ``bad`` is not
    identifiable (with its reason)."""
    rows = []
    for i, arm in enumerate(["reference", *ARMS]):
        ok = arm != bad
        est = 1.8 + 0.01 * i
        rows.append(dict(arm=arm, num_params=1_000_000, tokens=20_000_000, estimate=est if ok else None,
                         low=est - 0.05 if ok else None, high=est + 0.07 if ok else None, level=0.8,
                         unit="bits/byte", law="E + A * N^-alpha", identifiable=ok,
                         reason="" if ok else "the loss does not fall with size (non-monotone points)",
                         sizes=3, seeds=3, extrapolation=83.3))
    return pd.DataFrame(rows)


def holdout_frame() -> pd.DataFrame:
    """``forecast.Holdout.table``: 4 identifiable options, 3 covered; one not identifiable."""
    rows = []
    for i, arm in enumerate(["reference", *ARMS]):
        est = 2.2 + 0.01 * i
        measured = est + (0.2 if arm == "swiglu" else 0.01)
        ok = arm != "kv_full"
        rows.append(dict(arm=arm, held_out_dim=64, measured=measured, estimate=est if ok else None,
                         low=est - 0.05 if ok else None, high=est + 0.05 if ok else None,
                         covered=bool(ok and abs(measured - est) <= 0.05), identifiable=ok,
                         reason="" if ok else "2 sizes: too few for 3 parameters"))
    return pd.DataFrame(rows)


# --- synthetic stored runs of a real atlas plan -------------------------------------------------------------

#: arm -> planted change in every window's validation bits/byte (the others: 0)
PLANTED = {"swiglu": -0.05, "shift_tokens": 0.08}


def stored_atlas_runs(opt, *, windows: int = 24, layers: int = 0, rng_seed: int = 0):
    """Store synthetic rows for every run of ``opt``'s atlas plan in the result store, keyed as the page keys them
    (``probes.run_key`` with the default corpus's SHA-256 and this CPU's name); returns the rows as the probe
    would serve them (a ``probe_frame``). Per run: a step-0 and a final evaluation, ``windows`` validation
    windows whose bits/byte are a shared per-(seed, window) level + ``PLANTED[arm]`` + small noise, and ``layers``
    per-layer rows per evaluation (as a real run writes: no page reads them); the costs from the run's own
    configuration (``core.params.param_counts``)."""
    import numpy as np
    from xtlens.core.params import param_counts
    from xtlens.profiling.benefit import probe_store
    from xtlens.profiling.benefit.corpus import load_corpus
    from xtlens.profiling.benefit.harness import steps_for
    from xtlens.profiling.benefit.probes import plan, run_key, run_labels
    from xtlens.profiling.benefit.records import ProbeRecord, probe_frame
    from xtlens.profiling.results.records import config_key
    from xtlens.profiling.run.device import device_name, resolve_device, versions

    corpus = load_corpus(None)
    sha, name, vers = corpus.sha256, device_name(resolve_device("cpu")), versions()
    rng = np.random.default_rng(rng_seed)
    level = {}
    out = []
    for run in plan(opt):
        key = run_key(run, corpus.content_key, name, vers)
        pc = param_counts(run.cfg)
        steps = steps_for(run.cfg, run.budget, run.settings)
        tokens = steps * run.settings.batch * run.settings.seq_len
        lab = run_labels(run)
        shift = PLANTED.get(run.variant, 0.0) + (0.5 if run.variant.startswith("control") else 0.0)
        size = 64 / int(run.axis_value)  # smaller models: higher loss
        base = dict(probe="atlas", run_key=key, config_name=lab["config_name"], config_key=config_key(run.cfg),
                    config_json=run.cfg.to_json(), variant=run.variant, axis="dim", axis_value=run.axis_value,
                    budget_kind="tokens", seed=run.seed, budget_tokens=tokens, train_seq_len_tokens=run.settings.seq_len,
                    batch=run.settings.batch, num_params=pc.num_params, non_embedding_params=pc.non_embedding_params,
                    tokens_per_param=tokens / pc.num_params, corpus_name="pydoc_data.topics", corpus_sha256=sha,
                    device="cpu", device_name=name, timestamp="2026-12-03T10:00:00+00:00", status="ok",
                    unigram_entropy_nats=6.0, split_version="dedup-groups-v1", val_leak_fraction=0.004)
        wins = []
        for w in range(windows):
            lv = level.setdefault((run.seed, int(run.axis_value), w), 1.6 + 0.2 * size + rng.normal(0, 0.05))
            bits = lv + shift + rng.normal(0, 0.004)
            wins.append(ProbeRecord(**base, row_kind="window", window_index=w, step=steps, val_bits_per_byte=bits,
                                    val_loss_nats=bits * 1.2, eval_seq_len_tokens=run.settings.seq_len,
                                    eval_tokens=run.settings.seq_len, eval_bytes=int(run.settings.seq_len * 1.2 / 0.69)))
        mean = float(np.mean([r.val_bits_per_byte for r in wins]))
        peak = 1_000_000 + 40 * pc.num_params
        evals = [ProbeRecord(**base, row_kind="eval", step=s, tokens_seen=tokens * s // steps,
                             train_flops=6 * pc.num_params * tokens * s // steps,
                             val_bits_per_byte=mean if s else 3.0, val_loss_nats=(mean if s else 3.0) * 1.2,
                             tokens_per_s=20_000.0 * 100_000 / pc.num_params, train_peak_bytes=peak,
                             train_peak_predicted_bytes=int(peak * 0.97), train_peak_method="synthetic",
                             kv_cache_bytes_per_token=4 * 2 * run.cfg.depth * (1 if run.cfg.attn_one_kv_head else
                                                                               run.cfg.heads) * run.cfg.attn_dim_head)
                 for s in (0, steps)]
        rows = evals + wins + [ProbeRecord(**base, row_kind="layer", step=e.step, layer=f"layers.{i}", grad_norm=1.0,
                                           update_to_weight_ratio=1e-3) for e in evals for i in range(layers)]
        probe_store.store_run(key, rows)
        out.extend(rows)
    return probe_frame(out)
