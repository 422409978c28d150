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
