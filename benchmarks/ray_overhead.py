"""When does Ray pay? A 16-point FLOP sweep on the local engine vs a local 2-worker Ray cluster.

In one run:

1. the local engine (``profiling.run.executor.LocalExecutor``: one child process, points one after the
   other) runs a 16-point FLOP sweep: the seed with dim in {256, 384, 512, 768} x depth in {2, 4, 6, 8},
   forward FLOPs at ``--seq-len`` tokens (fvcore + FlopCounterMode + the closed form per point);
2. a real Ray cluster starts on 127.0.0.1 with 2 CPUs (``ray start --head``, as the tests do), and the
   same sweep runs on it twice (``RayExecutor``: one task per point, 2 in parallel): cold (the workers
   import torch and x-transformers on their first task) and warm;
3. Ray's fixed cost per task: ``--noop`` points whose measurement returns a row at once, through both
   engines; (wall time) / (points) is the per-point overhead of each engine, the difference is what Ray
   adds per task (submit, schedule, pickle the point and the rows, store them) beyond the local engine.

Result rows go to a throw-away database; the cache is off (``use_cache=False``). The cluster is
stopped at the end. Timings on a shared 2-core machine move by tens of percent: quote them with the
machine and its load.

    .venv/bin/python benchmarks/ray_overhead.py             # 1024 tokens
    .venv/bin/python benchmarks/ray_overhead.py --quick     # 256 tokens, 16 no-op points
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def _local_ray_cluster():
    """``tests/ray_cluster.py``'s ``LocalRayCluster`` (the cluster the tests start), loaded by path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("xtlens_bench_ray_cluster", HERE.parents[1] / "tests" / "ray_cluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LocalRayCluster


def noop(what, cfg, wl, *, device, options, config_name, progress):
    """A measurement that costs nothing: one row, at once (loaded by path in the workers)."""
    from xtlens.profiling.results.records import ProfileRecord, base_fields

    return [ProfileRecord(**base_fields(cfg, wl, config_name=config_name, measurement=what, phase="forward",
                                        device=device, device_name="noop"), predicted_flops=wl.tokens)]


def timed(job) -> tuple[float, list]:
    t0 = time.perf_counter()
    job.start()
    rows = job.wait(timeout=3600)
    return time.perf_counter() - t0, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--noop", type=int, default=64, help="no-op points for the per-task overhead (default 64)")
    parser.add_argument("--quick", action="store_true", help="256 tokens, 16 no-op points")
    args = parser.parse_args()
    if args.quick:
        args.seq_len, args.noop = 256, 16
    os.environ["XTLENS_DB"] = str(Path(tempfile.mkdtemp(prefix="xtlens-bench-")) / "bench.sqlite")

    LocalRayCluster = _local_ray_cluster()  # noqa: N806 - a class
    from xtlens.core.config import PRESETS, Workload
    from xtlens.profiling.run.executor import LocalExecutor, RayExecutor
    from xtlens.profiling.run.plan import SweepOptions, config_grid
    from xtlens.profiling.run.worker import JobSpec

    grid = config_grid(PRESETS["seed"], name="seed", dim=[256, 384, 512, 768], depth=[2, 4, 6, 8])
    opts = SweepOptions(device="cpu", use_cache=False)
    sweep = JobSpec.make("flops", grid, [Workload(seq_len=args.seq_len)], opts, time_limit_s=None)
    noops = JobSpec.make("flops", grid.configs[0][1], [Workload(seq_len=16 + i) for i in range(args.noop)], opts,
                         config_name="noop", time_limit_s=None, measure=f"{HERE}:noop")
    assert len(sweep.points()) == 16
    out: dict[str, float | int | str] = {"points": 16, "seq_len_tokens": args.seq_len, "noop_points": args.noop,
                                         "cpus": os.cpu_count() or 0}
    local = LocalExecutor()
    out["local_s"], local_rows = timed(local.job(sweep))
    out["local_noop_s"], _ = timed(local.job(noops))
    t0 = time.perf_counter()
    cluster = LocalRayCluster(num_cpus=2)
    out["ray_cluster_start_s"] = time.perf_counter() - t0
    try:
        ray_ex = RayExecutor(address=cluster.address)
        out["ray_cold_s"], cold_rows = timed(ray_ex.job(sweep))
        out["ray_warm_s"], warm_rows = timed(ray_ex.job(sweep))
        out["ray_noop_s"], _ = timed(ray_ex.job(noops))
    finally:
        import ray

        ray.shutdown()
        cluster.stop()
    same = sorted((r.config_key, r.torch_counter_flops, r.fvcore_macs) for r in local_rows) == \
        sorted((r.config_key, r.torch_counter_flops, r.fvcore_macs) for r in warm_rows)
    out["identical_counts"] = str(same and all(r.status == "ok" for r in local_rows + cold_rows + warm_rows))
    out["ratio_local_over_ray_warm"] = out["local_s"] / out["ray_warm_s"]
    out["ratio_local_over_ray_cold"] = out["local_s"] / out["ray_cold_s"]
    out["local_per_point_overhead_ms"] = 1000 * out["local_noop_s"] / args.noop
    out["ray_per_task_overhead_ms"] = 1000 * out["ray_noop_s"] / args.noop
    out["local_mean_point_s"] = out["local_s"] / 16
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}, indent=1))
    print(f"\n16-point FLOP sweep at {args.seq_len} tokens: local {out['local_s']:.1f} s, Ray (2 workers) cold "
          f"{out['ray_cold_s']:.1f} s / warm {out['ray_warm_s']:.1f} s -> local/Ray = {out['ratio_local_over_ray_warm']:.2f}x "
          f"warm, {out['ratio_local_over_ray_cold']:.2f}x cold. Fixed cost per point: local engine "
          f"{out['local_per_point_overhead_ms']:.1f} ms, Ray {out['ray_per_task_overhead_ms']:.1f} ms "
          f"(no-op points, {args.noop} of them; cluster start {out['ray_cluster_start_s']:.1f} s not included).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
