"""How fast is the benefit lab? The training harness's tokens/s against a bare hand-written training loop of
the same model, and the wall time of each default CPU probe.

Part 1 (ratio): ``profiling.benefit.harness.train_run`` (one evaluation at the end, per-layer statistics
off, which is what its ``tokens_per_s`` column times: the training steps only) against a bare loop written
here: the same model (``core.builder.build_model``, same seed), the same batches, AdamW, cross-entropy,
``clip_grad_norm_``, ``step``, nothing else between the clock reads (and, like the harness's step 0, one
untimed forward and backward before the clock starts). The two are interleaved over
``--rounds`` rounds (the order alternates; each round gives one harness / bare ratio of two neighbouring runs);
the ratio is max(harness tokens/s) / max(bare tokens/s) (on a shared machine other processes only ever slow a
run down, so the fastest round is the least disturbed), the median of the per-round ratios and their range
(the spread) and the ratio of medians are printed too, with the load average (``os.getloadavg``) before and
after: the same process, threads, model, seed and batches for both. Target: within 5 % (0.95 .. 1.05). The harness's wall-clock rate including its default
evaluations and per-layer statistics is printed as well (what a probe really costs).

Part 2 (``--probes``): each default probe (``xtlens probe NAME`` with its defaults on the seed's family),
cache off, its wall time. Target: each under ~5 minutes on 2 cores.

    .venv/bin/python benchmarks/probe_speed.py --quick          # ratio only, 24 steps, 3 rounds
    .venv/bin/python benchmarks/probe_speed.py                  # ratio: 64 steps, 5 rounds
    .venv/bin/python benchmarks/probe_speed.py --probes         # + the four default probes (several minutes each)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from xtlens.core.builder import build_model
from xtlens.core.config import PRESETS
from xtlens.profiling.benefit.corpus import default_corpus, tokenize
from xtlens.profiling.benefit.harness import Budget, RunSpec, TrainSettings, make_batch, train_run
from xtlens.profiling.benefit.probes import DEFAULTS, ProbeOptions, base_member, run_probe
from xtlens.profiling.run.device import cpu_name


def bare_tokens_per_s(cfg, data, s: TrainSettings, steps: int, seed: int) -> float:
    model = build_model(cfg, seed=seed).model.train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": s.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                            lr=s.lr, betas=(0.9, 0.95))
    # untimed, like the harness's step 0 (the loss and gradient norms at initialisation): one forward and backward
    # before the clock starts, so neither loop pays the first step's one-off costs inside its timing
    x, y = make_batch(data.train_ids, torch.Generator().manual_seed(seed + 1_000_003), s.batch, s.seq_len)
    F.cross_entropy(model(x).float().reshape(-1, cfg.num_tokens), y.reshape(-1)).backward()
    opt.zero_grad(set_to_none=True)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(steps):
        x, y = make_batch(data.train_ids, gen, s.batch, s.seq_len)
        logits = model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        float(loss.detach())
    return steps * s.batch * s.seq_len / (time.perf_counter() - start)


def harness_tokens_per_s(cfg, data, s: TrainSettings, steps: int, seed: int) -> tuple[float, float]:
    run = RunSpec(probe="scaling", cfg=cfg, budget=Budget(kind="tokens", value=steps * s.batch * s.seq_len), seed=seed,
                  settings=s)
    t0 = time.perf_counter()
    rows = train_run(run, data)
    wall = time.perf_counter() - t0
    last = [r for r in rows if r.row_kind == "eval"][-1]
    return last.tokens_per_s, steps * s.batch * s.seq_len / wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--probes", action="store_true", help="also time the four default probes (cache off)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = args.rounds or (3 if args.quick else 5)
    steps = 24 if args.quick else 64
    opt = ProbeOptions(probe="scaling", base=PRESETS["seed"])
    cfg = base_member(opt)
    data = tokenize(default_corpus(), cfg.num_tokens)
    d = DEFAULTS["scaling"]
    s = TrainSettings(seq_len=d["seq_len"], batch=d["batch"], evals=1, layer_stats=False, eval_tokens=1024)
    full = TrainSettings(seq_len=d["seq_len"], batch=d["batch"])
    print(f"machine: {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"model: the scaling probe's default family member of the seed (dim {cfg.dim}, depth {cfg.depth}, heads "
          f"{cfg.heads} x {cfg.attn_dim_head}, vocabulary {cfg.num_tokens}), batch {s.batch} x {s.seq_len} tokens, "
          f"{steps} steps, {rounds} rounds")
    load_before = os.getloadavg()
    bare, harness, wall = [], [], []
    for r in range(rounds):
        order = ("bare", "harness") if r % 2 == 0 else ("harness", "bare")
        for which in order:
            if which == "bare":
                bare.append(bare_tokens_per_s(cfg, data, s, steps, seed=r))
            else:
                harness.append(harness_tokens_per_s(cfg, data, s, steps, seed=r)[0])
        wall.append(harness_tokens_per_s(cfg, data, full, steps, seed=r)[1])
        print(f"  round {r + 1} ({order[0]} first): bare {bare[-1]:,.0f} tokens/s, harness {harness[-1]:,.0f} tokens/s, harness with "
              f"default evaluations and layer statistics (wall clock) {wall[-1]:,.0f} tokens/s", flush=True)
    ratio = max(harness) / max(bare)
    per_round = [h / b for h, b in zip(harness, bare, strict=True)]
    print(f"harness / bare tokens/s: {ratio:.3f} (best rounds), {statistics.median(harness) / statistics.median(bare):.3f}"
          f" (medians), per-round ratios median {statistics.median(per_round):.3f}, range {min(per_round):.3f} .. "
          f"{max(per_round):.3f}; target 0.95 .. 1.05")
    print("load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}; after: {:.2f} {:.2f} {:.2f}".format(
        *load_before, *os.getloadavg()))
    print(f"harness wall clock incl. evaluations / bare: {max(wall) / max(bare):.3f} (best rounds)")
    if args.probes:
        for name in ("scaling", "stability", "extrapolation", "heads"):
            t0 = time.perf_counter()
            load = os.getloadavg()[0]
            rows = run_probe(ProbeOptions(probe=name, base=PRESETS["seed"]), use_cache=False)
            bad = sum(1 for r in rows if r.status not in ("ok", "diverged"))
            print(f"probe {name}: {time.perf_counter() - t0:.0f} s wall ({len(rows)} rows, {bad} failed; load "
                  f"average {load:.1f} before, {os.getloadavg()[0]:.1f} after)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
