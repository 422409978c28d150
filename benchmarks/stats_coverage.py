"""Coverage and cost of the benefit lab's intervals (``profiling.benefit.stats``) on simulated data with a known
truth: the tables of ``docs/benefits.md`` (section "Method").

    .venv/bin/python benchmarks/stats_coverage.py --quick     # 100 data sets per row (about a minute on 2 cores)
    .venv/bin/python benchmarks/stats_coverage.py             # 400 / 300 / 400 data sets (a few minutes)

1. ``bootstrap_mean``: (seeds, windows) normal draws with a seed effect, a window effect (shared by the seeds)
   and noise; the share of 95% intervals covering the true mean, with the small-sample corrections and for the
   plain two-way percentile bootstrap (no scaling, no t widening) on the same data.
2. ``bootstrap_law``: ``L = 2 + 50 N^-0.4`` at 5 sizes with seed noise (sd 0.02 nats): coverage of E and alpha
   (95%) and of the 80% forecast at 3x the largest size, widened (as shipped) and percentile only.
3. ``isoflop_minimum``: a planted vertex at log10 N = 5.2 (5 sizes, seed noise sd 0.01 nats): 95% coverage.
4. Wall time of each call at the default replicates, with the load average.

Coverage is a proportion over independent data sets: its binomial standard error is about 1.1 points at 95% and
400 sets (2.2 at 100).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from xtlens.profiling.benefit import stats


def _plain_mean_interval(v: np.ndarray, reps: int, rng: np.random.Generator) -> tuple[float, float]:
    s, w = v.shape
    cs = rng.multinomial(s, np.full(s, 1 / s), size=reps) / s
    cw = rng.multinomial(w, np.full(w, 1 / w), size=reps) / w
    out = np.einsum("rw,rw->r", cs @ v, cw)
    lo, hi = np.quantile(out, [0.025, 0.975])
    return float(lo), float(hi)


def mean_coverage(draws: int) -> None:
    print(f"bootstrap_mean: 95% coverage of the true mean over {draws} simulated arrays (1000 reps each)")
    print("| seeds x windows | seed sd / window sd / noise sd | plain percentile | with the corrections |")
    print("|---|---|---:|---:|")
    for s, w, sa, sb, se in ((5, 300, 0.05, 0.5, 0.3), (5, 300, 0.1, 0.3, 0.3), (3, 300, 0.1, 0.3, 0.3),
                             (5, 300, 0.01, 0.5, 0.3), (10, 100, 0.05, 0.3, 0.3), (5, 300, 0.0, 0.0, 0.3)):
        rng = np.random.default_rng(0)
        hit = hit_plain = 0
        for i in range(draws):
            v = 5 + rng.normal(0, sa, (s, 1)) + rng.normal(0, sb, (1, w)) + rng.normal(0, se, (s, w))
            iv = stats.bootstrap_mean(v, reps=1000, rng_seed=i)
            hit += iv.low <= 5 <= iv.high
            lo, hi = _plain_mean_interval(v, 1000, rng)
            hit_plain += lo <= 5 <= hi
        print(f"| {s} x {w} | {sa} / {sb} / {se} | {hit_plain / draws:.1%} | {hit / draws:.1%} |", flush=True)


def law_coverage(draws: int) -> None:
    sizes = np.array([1e4, 3e4, 1e5, 3e5, 1e6])
    e0, a0, al0 = 2.0, 50.0, 0.4
    truth = e0 + a0 * 3e6 ** -al0
    print(f"\nbootstrap_law: coverage over {draws} simulated data sets (300 reps each)")
    print("| seeds per size | 95% interval of E | 95% interval of alpha | 80% forecast at 3x the largest size |")
    print("|---|---:|---:|---:|")
    for seeds in (3, 5):
        n = np.repeat(sizes, seeds)
        sd = np.tile(np.arange(seeds), len(sizes))
        hits = np.zeros((2, 3))
        for i in range(draws):
            rng = np.random.default_rng(1000 + i)
            fit = stats.bootstrap_law(n, e0 + a0 * n ** -al0 + rng.normal(0, 0.02, n.size), sd, reps=300, rng_seed=i)
            s = fit.samples
            pred = s[:, 0] + s[:, 1] * 3e6 ** -s[:, 2]
            plain = [np.quantile(s[:, 0], [0.025, 0.975]), np.quantile(s[:, 2], [0.025, 0.975]),
                     np.quantile(pred, [0.1, 0.9])]
            f = fit.forecast(3e6)
            shipped = [(fit.E.low, fit.E.high), (fit.alpha.low, fit.alpha.high), (f.low, f.high)]
            for row, ivs in enumerate((plain, shipped)):
                for col, (want, (lo, hi)) in enumerate(zip((e0, al0, truth), ivs, strict=True)):
                    hits[row, col] += lo <= want <= hi
        for row, name in enumerate(("percentile only", "widened")):
            print(f"| {seeds}, {name} | " + " | ".join(f"{h / draws:.1%}" for h in hits[row]) + " |", flush=True)


def isoflop_coverage(draws: int) -> None:
    x = np.array([4.0, 4.5, 5.0, 5.5, 6.0])
    print(f"\nisoflop_minimum: 95% coverage of a planted vertex over {draws} simulated budgets (2000 reps each)")
    for seeds in (3, 5):
        hit = 0
        for i in range(draws):
            rng = np.random.default_rng(5000 + i)
            n = np.repeat(10 ** x, seeds)
            loss = 3 + 0.2 * (np.log10(n) - 5.2) ** 2 + rng.normal(0, 0.01, n.size)
            iv = stats.isoflop_minimum(n, loss, np.tile(np.arange(seeds), len(x)), rng_seed=i)
            hit += iv is not None and iv.low <= 5.2 <= iv.high
        print(f"{seeds} seeds per size: {hit / draws:.1%}", flush=True)


def timings() -> None:
    rng = np.random.default_rng(0)

    def best(f, k: int = 3) -> float:
        out = []
        for _ in range(k):
            t = time.perf_counter()
            f()
            out.append(time.perf_counter() - t)
        return min(out)

    v = rng.normal(size=(5, 300))
    n = np.repeat([1e4, 3e4, 1e5, 3e5, 1e6], 5)
    y = 2 + 50 * n ** -0.4 + rng.normal(0, 0.02, n.size)
    nj, dj = (a.ravel() for a in np.meshgrid([1e4, 3e4, 1e5, 3e5], [1e5, 1e6, 1e7, 1e8], indexing="ij"))
    nj, dj = np.repeat(nj, 3), np.repeat(dj, 3)
    yj = 1.69 + 406.4 * nj ** -0.34 + 410.7 * dj ** -0.28 + rng.normal(0, 0.01, nj.size)
    x = np.repeat([4.0, 4.5, 5.0, 5.5, 6.0], 3)
    print("\nwall time (best of 3, OMP_NUM_THREADS as set):")
    print(f"bootstrap_mean 5 seeds x 300 windows, 2000 reps: {best(lambda: stats.bootstrap_mean(v)):.3f} s")
    t_law = best(lambda: stats.bootstrap_law(n, y, np.tile(np.arange(5), 5)))
    print(f"bootstrap_law 5 sizes x 5 seeds, 500 reps: {t_law:.3f} s")
    print(f"bootstrap_law joint 16 cells x 3 seeds, 500 reps: "
          f"{best(lambda: stats.bootstrap_law(nj, yj, np.tile(np.arange(3), 16), d=dj), k=1):.3f} s")
    loss = 3 + 0.2 * (x - 5.2) ** 2 + rng.normal(0, 0.005, x.size)
    print(f"isoflop_minimum 5 sizes x 3 seeds, 2000 reps: "
          f"{best(lambda: stats.isoflop_minimum(10 ** x, loss, np.tile(np.arange(3), 5))):.4f} s")
    print(f"load average: {', '.join(f'{a:.2f}' for a in os.getloadavg())} ({os.cpu_count()} cores)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100 simulated data sets per row instead of 300-400")
    args = ap.parse_args()
    mean_coverage(100 if args.quick else 400)
    law_coverage(100 if args.quick else 300)
    isoflop_coverage(100 if args.quick else 400)
    timings()


if __name__ == "__main__":
    main()
