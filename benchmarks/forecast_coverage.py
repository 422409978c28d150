"""How often the forecasts' 80% intervals are right (``profiling.benefit.forecast``), on simulated atlases with a
known truth at the atlas's real scale: the table of ``docs/atlas.md`` (section "Forecasts").

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/forecast_coverage.py --quick   # 40 atlases per row
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/forecast_coverage.py           # 150 atlases per row

Each simulated atlas: ``arms`` arms (the reference and options) x 3 sizes (dim 16, 32, 64 of a 2-layer model:
non-embedding parameters ``24 dim^2 + 512 dim``, 1.4e4..1.3e5, each arm's count scaled by 0.9..1.3 as options
change it) x 3 seeds, the validation loss in bits/byte ``E_arm + A_arm N^-0.3`` (``A`` 23 +- 15% per arm, so the
reference goes from about 2.3 to 1.7 bits/byte as the real runs do) plus seed noise of sd ``sigma`` (a part
``rho`` of its variance shared by the arms at the same size and seed: the same data order) and, where named, an
irreducible loss that differs between arms (sd ``E spread``: the shared-E law is then wrong).

Reported per row: (1) ``forecast_arms`` from all 3 sizes at 10x the largest run: the share of arms whose 80%
interval covers the true loss, and the share of the estimates' errors inside the mean half-width measured over the
atlases (the same quantity a second way: from the spread of the estimates, not from the intervals); (2)
``holdout``: the dim-64 size held out and forecast from dims 16 and 32, the share of arms whose interval covers the
measured seed mean (what ``Holdout.coverage`` reports), the share covered by the prediction interval of a new seed
mean (``Holdout.coverage_prediction``), the share that covers the true loss there, and the median
absolute error (bits/byte). Arms that are not identifiable are counted apart, and so is the share of held-out
fits that used the E-free fallback (``A_arm N^-alpha``: the E laws could not pin E down; its own table is
``fallback_check``). A proportion over ``n`` atlases x
arms has a binomial standard error of about 0.4 / sqrt(n x arms) at 80% (larger: arms of one atlas are correlated).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd
from xtlens.profiling.benefit import forecast

DIMS = (16, 32, 64)
ALPHA, E0, A0 = 0.3, 1.0, 23.0


def atlas(rng: np.random.Generator, *, arms: int, sigma: float, rho: float, e_spread: float,
          seeds: int = 3, e0: float = E0) -> tuple[pd.DataFrame, dict]:
    names = ["reference"] + [f"option{i}" for i in range(1, arms)]
    scale = np.r_[1.0, rng.uniform(0.9, 1.3, arms - 1)]
    amp = A0 * np.r_[1.0, rng.uniform(0.85, 1.15, arms - 1)]
    e = e0 + np.r_[0.0, rng.normal(0.0, e_spread, arms - 1)]
    rows, truth = [], {}
    for c, dim in enumerate(DIMS):
        shared = rng.normal(0.0, sigma * np.sqrt(rho), seeds)
        for k, name in enumerate(names):
            ne = (24 * dim * dim + 512 * dim) * scale[k]
            truth[(name, c)] = (ne, e[k] + amp[k] * ne ** -ALPHA)
            for s in range(seeds):
                y = truth[(name, c)][1] + shared[s] + rng.normal(0.0, sigma * np.sqrt(1 - rho))
                rows.append({"arm": name, "size_dim": dim, "seed": s, "non_embedding_params": ne, "tokens": 131_072.0,
                             "val_bits_per_byte": y, "val_loss_nats": y * 2.0, "num_params": ne + 512 * dim,
                             "learned": True, "probe": "atlas"})
    pts = pd.DataFrame(rows)
    pts["size_dim"] = pts["size_dim"].astype("Int64")
    return pts, {"names": names, "scale": scale, "amp": amp, "e": e, "truth": truth}


def row(draws: int, *, arms: int, sigma: float, rho: float, e_spread: float) -> dict:
    rng = np.random.default_rng(12345)
    cov10, err10, half10, nid10 = [], [], [], 0
    cov_meas, cov_pred, cov_true, abs_err, nid_h, fb_h = [], [], [], [], 0, 0
    for _ in range(draws):
        pts, t = atlas(rng, arms=arms, sigma=sigma, rho=rho, e_spread=e_spread)
        n_big = {nm: 10 * t["truth"][(nm, 2)][0] for nm in t["names"]}
        for f in forecast.forecast_arms(pts, num_params=n_big):
            k = t["names"].index(f.arm)
            true = t["e"][k] + t["amp"][k] * n_big[f.arm] ** -ALPHA
            if not f.identifiable:
                nid10 += 1
                continue
            cov10.append(f.low <= true <= f.high)
            err10.append(f.estimate - true)
            half10.append((f.high - f.low) / 2)
        h = forecast.holdout(pts)
        # which law the held-out fit used (the same fit, served from forecast's cache): the E-free fallback?
        small = pts[pts["size_dim"] < DIMS[-1]]
        fb_h += sum("no irreducible loss" in f.law for f in forecast.forecast_arms(small, num_params=1e5))
        for r in h.table.itertuples(index=False):
            if not r.identifiable:
                nid_h += 1
                continue
            true = t["truth"][(r.arm, 2)][1]
            cov_meas.append(bool(r.covered))
            cov_pred.append(bool(r.covered_prediction))
            cov_true.append(r.low <= true <= r.high)
            abs_err.append(r.abs_error)
    err10, half10 = np.array(err10), np.array(half10)
    return {"far_cov": np.mean(cov10) if cov10 else float("nan"),
            "far_cov2": float(np.mean(np.abs(err10 - 0) <= half10.mean())) if len(err10) else float("nan"),
            "far_nid": nid10 / (draws * arms), "far_half": float(np.median(half10)) if len(half10) else float("nan"),
            "h_meas": np.mean(cov_meas) if cov_meas else float("nan"),
            "h_pred": np.mean(cov_pred) if cov_pred else float("nan"),
            "h_true": np.mean(cov_true) if cov_true else float("nan"),
            "h_mae": float(np.median(abs_err)) if abs_err else float("nan"), "h_nid": nid_h / (draws * arms),
            "h_fb": fb_h / (draws * arms)}


def paired_check(draws: int) -> None:
    """The reference arm's 80% forecast at 10x its largest run (``stats.bootstrap_shared_law``, alpha shared),
    drawing a size's seeds once for every arm (as shipped) or each arm apart, on atlases whose seed noise is
    half shared by the arms (8 arms, sd 0.02 bits/byte) and on independent noise."""
    from xtlens.profiling.benefit import stats

    print(f"\npaired vs per-arm seed draws: {draws} simulated 8-arm atlases, seed sd 0.02 bits/byte")
    print("| shared part of the seed variance | seeds drawn | 80% covers truth | sd of the error | mean half-width / "
          "1.28 |")
    print("|---:|---|---:|---:|---:|")
    for rho in (0.5, 0.0):
        rng = np.random.default_rng(7)
        res: dict[bool, list] = {True: [], False: []}
        for d in range(draws):
            pts, t = atlas(rng, arms=8, sigma=0.02, rho=rho, e_spread=0.0)
            nb = 10 * t["truth"][("reference", 2)][0]
            true = t["e"][0] + t["amp"][0] * nb ** -ALPHA
            for paired in (True, False):
                f = stats.bootstrap_shared_law(pts["arm"], pts["non_embedding_params"], pts["val_bits_per_byte"],
                                               pts["seed"], paired_seeds=paired, rng_seed=d, size_key=pts["size_dim"])
                iv = f.forecast("reference", nb)
                if iv is not None:
                    res[paired].append((iv.estimate - true, (iv.high - iv.low) / 2, iv.low <= true <= iv.high))
        for paired in (True, False):
            r = np.array(res[paired], dtype=float)
            print(f"| {rho} | {'once per size for every arm' if paired else 'per arm'} | {r[:, 2].mean():.1%} | "
                  f"{r[:, 0].std():.4f} | {r[:, 1].mean() / 1.2816:.4f} |", flush=True)


def fallback_check(draws: int) -> None:
    """The E-free fallback (``stats.bootstrap_shared_law(share="no_E")``, what ``forecast`` uses when E cannot be
    pinned down) on simulated 22-arm atlases (seed sd 0.02 bits/byte) whose truth has an irreducible loss ``E``:
    fitted to dims 16 and 32, its 80% interval at dim 64 (the held-out size, 4x the parameters of dim 32) and at
    10x dim 64, against the truth; the signed error says which way it is wrong (below 0: optimistic)."""
    from xtlens.profiling.benefit import stats

    print(f"\nE-free fallback (A_arm N^-alpha, alpha shared), fitted to dims 16 and 32: {draws} simulated 22-arm "
          "atlases, seed sd 0.02 bits/byte, truth E + A_arm N^-0.3")
    print("| true E (bits/byte) | dim 64: 80% covers truth | dim 64: median signed error | 10x dim 64: 80% covers "
          "truth | 10x dim 64: median signed error | fitted alpha (median) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for e0 in (0.0, 0.25, 1.0):
        rng = np.random.default_rng(11)
        near, far, sn, sf, alphas = [], [], [], [], []
        for _ in range(draws):
            pts, t = atlas(rng, arms=22, sigma=0.02, rho=0.0, e_spread=0.0, e0=e0)
            tr = pts[pts["size_dim"] < 64]
            fit = stats.bootstrap_shared_law(tr["arm"], tr["non_embedding_params"], tr["val_bits_per_byte"],
                                             tr["seed"], share="no_E", size_key=tr["size_dim"])
            if not fit.law.identifiable:
                continue
            alphas.append(fit.law.alpha)
            for k, nm in enumerate(t["names"]):
                n64, y64 = t["truth"][(nm, 2)]
                iv = fit.forecast(nm, n64)
                near.append(iv.low <= y64 <= iv.high)
                sn.append(iv.estimate - y64)
                yb = t["e"][k] + t["amp"][k] * (10 * n64) ** -ALPHA
                iv = fit.forecast(nm, 10 * n64)
                far.append(iv.low <= yb <= iv.high)
                sf.append(iv.estimate - yb)
        print(f"| {e0} | {np.mean(near):.1%} | {np.median(sn):+.3f} | {np.mean(far):.1%} | {np.median(sf):+.3f} | "
              f"{np.median(alphas):.3f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="40 simulated atlases per row instead of 150")
    ap.add_argument("--draws", type=int, default=None, help="simulated atlases per row (overrides --quick)")
    ap.add_argument("--rows", type=str, default=None, help="comma-separated row numbers to run (0-based)")
    ap.add_argument("--fallback-only", action="store_true", help="only the E-free fallback's table")
    args = ap.parse_args()
    draws = args.draws or (40 if args.quick else 150)
    settings = [  # arms, sigma, rho, E spread
        (8, 0.01, 0.0, 0.0), (8, 0.02, 0.0, 0.0), (8, 0.03, 0.0, 0.0), (8, 0.02, 0.5, 0.0), (8, 0.02, 0.0, 0.03),
        (22, 0.02, 0.0, 0.0),
    ]
    print(f"{draws} simulated atlases per row; load average {os.getloadavg()[0]:.2f} at the start")
    if args.fallback_only:
        t0 = time.perf_counter()
        fallback_check(draws)
        print(f"wall {time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.2f} at the end")
        return
    print("| arms | seed sd (bits/byte) | shared part | E spread | 10x: 80% covers truth | 10x: errors inside mean "
          "half-width | 10x: median half-width | 10x: not identifiable | held out: covers measured mean | held out: "
          "prediction interval covers measured mean | held out: covers truth | held out: median abs error (bits/byte) | held out: not identifiable | held out: E-free fallback |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    t0 = time.perf_counter()
    pick = [int(i) for i in args.rows.split(",")] if args.rows else range(len(settings))
    for arms, sigma, rho, es in (settings[i] for i in pick):
        r = row(draws, arms=arms, sigma=sigma, rho=rho, e_spread=es)
        print(f"| {arms} | {sigma} | {rho} | {es} | {r['far_cov']:.1%} | {r['far_cov2']:.1%} | {r['far_half']:.3f} | "
              f"{r['far_nid']:.0%} | {r['h_meas']:.1%} | {r['h_pred']:.1%} | {r['h_true']:.1%} | {r['h_mae']:.3f} | {r['h_nid']:.0%} | "
              f"{r['h_fb']:.0%} |",
              flush=True)
    if not args.rows:
        paired_check(draws)
        fallback_check(draws)
    print(f"wall {time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
