"""profiling.measure.latency on CPU with tiny configurations; CUDA-only logic through recorded/faked inputs."""

from __future__ import annotations

import pytest
import torch
from xtlens.core import cost_model
from xtlens.core.config import PRESETS, Workload
from xtlens.profiling.measure import latency as plat
from xtlens.profiling.measure import sdpa as psdpa
from xtlens.profiling.measure.sdpa import NO_SDPA, SdpaCall, SdpaProbe

# the seed's shape, shrunk: ALiBi on 4 of 8 heads + xpos rotary + flash + deepnorm + shift + one KV head
TINY_SEED = PRESETS["seed"].replace(num_tokens=97, max_seq_len=64, dim=32, depth=2, attn_dim_head=16)
TINY_NO_ALIBI = TINY_SEED.replace(alibi_pos_bias=False, alibi_num_heads=None)
TINY_EINSUM = TINY_SEED.replace(attn_flash=False)
WL = Workload(batch=2, seq_len=24)
CUDA = torch.cuda.is_available()


def _one(cfg, phase, **kw):
    rows = plat.measure_latency(cfg, WL, phases=(phase,), warmup=kw.pop("warmup", 1), repeats=kw.pop("repeats", 2), **kw)
    assert len(rows) == 1
    return rows[0]


def test_forward_row_columns_and_arithmetic():
    row = _one(TINY_NO_ALIBI, "forward", repeats=3)
    assert row.status == "ok" and row.measurement == "latency" and row.phase == "forward"
    assert row.warmup == 1 and row.repeats == 3
    assert 0 < row.latency_min_ms <= row.latency_median_ms <= row.latency_max_ms
    assert row.tokens_per_s == pytest.approx(WL.tokens / (row.latency_median_ms / 1e3))
    # SDPA ran causal without a mask: the causal-half FLOPs are the basis
    assert row.predicted_flops == cost_model.flop_counts(TINY_NO_ALIBI, WL).fwd_flops_causal
    assert row.achieved_flops_per_s == pytest.approx(row.predicted_flops / (row.latency_median_ms / 1e3))
    assert row.peak_fraction is None  # a CPU has no datasheet peak
    assert row.torch_version == torch.__version__ and row.xtransformers_version.startswith("2.31")
    assert "time.perf_counter" in row.method and "causal half" in row.method


def test_sdpa_backend_cpu_flash_with_alibi_mask():
    row = _one(TINY_SEED, "forward")
    assert row.sdpa_backend == "cpu_flash"
    assert "aten._scaled_dot_product_flash_attention_for_cpu ran" in row.sdpa_backend_reason
    assert "float32 attn_mask of shape (2, 8, 24, 24)" in row.sdpa_backend_reason  # dense (b, h, n, n) ALiBi
    assert "is_causal=False" in row.sdpa_backend_reason
    assert row.predicted_flops == cost_model.flop_counts(TINY_SEED, WL).fwd_flops  # full square with the mask


def test_sdpa_backend_cpu_flash_without_mask_and_no_sdpa_with_einsum():
    row = _one(TINY_NO_ALIBI, "attention")
    assert row.sdpa_backend == "cpu_flash" and "no attn_mask" in row.sdpa_backend_reason
    assert "Attend modules timed by forward hooks" in row.method
    row = _one(TINY_EINSUM, "forward")
    assert row.sdpa_backend == NO_SDPA and row.sdpa_backend_reason.startswith("attn_flash=False")


def test_forced_backends_on_cpu():
    row = _one(TINY_SEED, "forward", sdpa_backend="math")
    assert row.status == "ok" and row.sdpa_backend == "math" and "SDPBackend.MATH" in row.sdpa_backend_reason
    row = _one(TINY_SEED, "forward", sdpa_backend="efficient")
    assert row.status == "error" and "forced SDPA backend 'efficient' cannot run" in row.error
    with pytest.raises(plat.ProfileError, match="Unknown SDPA backend"):
        plat.measure_latency(TINY_SEED, WL, sdpa_backend="turbo")


def test_attention_is_a_part_of_the_forward():
    rows = plat.measure_latency(TINY_SEED, WL, phases=("forward", "attention"), warmup=1, repeats=3)
    fwd, attn = rows
    assert attn.status == "ok" and 0 < attn.latency_median_ms
    assert attn.predicted_flops == cost_model.flop_counts(TINY_SEED, WL).attn_flops
    # hooks time a part of one forward; allow noise from a shared machine on the comparison
    assert attn.latency_min_ms < fwd.latency_max_ms * 1.5


def test_train_step_and_flops_basis():
    row = _one(TINY_SEED, "train_step", warmup=1, repeats=1)
    fc = cost_model.flop_counts(TINY_SEED, WL)
    assert row.status == "ok" and row.sdpa_backend == "cpu_flash"
    assert row.predicted_flops == fc.train_step_flops_flash_recompute  # fused backward recomputes the scores
    row = _one(TINY_EINSUM, "train_step", warmup=0, repeats=1)
    assert row.predicted_flops == fc.train_step_flops


def test_decode_with_cache():
    row = _one(TINY_NO_ALIBI, "decode", decode_context_tokens=20)
    assert row.status == "ok", row.error
    assert row.tokens_per_s == pytest.approx(WL.batch / (row.latency_median_ms / 1e3))
    assert row.predicted_flops == cost_model.decode_flops(TINY_NO_ALIBI, batch=2, context_tokens=20)
    assert "20-token prefix cache" in row.method and "ShiftTokens" in row.method  # the seed shifts tokens


def test_decode_flops_formula():
    """One cached step equals the last row of a full forward's FLOPs over context + 1 tokens."""
    cfg, ctx = TINY_NO_ALIBI, 20
    full = cost_model.flop_counts(cfg, Workload(batch=1, seq_len=ctx + 1))
    prev = cost_model.flop_counts(cfg, Workload(batch=1, seq_len=ctx))
    non_attn = (full.fwd_flops - full.attn_flops) - (prev.fwd_flops - prev.attn_flops)
    attn_row = cfg.depth * 4 * cfg.heads * (ctx + 1) * cfg.attn_dim_head
    assert cost_model.decode_flops(cfg, batch=1, context_tokens=ctx) == non_attn + attn_row


def test_decode_alibi_with_rotary_is_a_clear_error_row():
    row = _one(TINY_SEED, "decode", decode_context_tokens=8)
    assert row.status == "error"
    assert "cannot decode with a KV cache when ALiBi and rotary" in row.error


def test_float16_on_cpu_is_a_row_either_way():
    rows = plat.measure_latency(TINY_NO_ALIBI, Workload(batch=1, seq_len=8, dtype="float16"),
                                phases=("forward",), warmup=0, repeats=1)
    assert rows[0].dtype == "float16"
    assert rows[0].status == "ok" or "float16" in rows[0].error


def test_progress_is_reported():
    seen = []
    plat.measure_latency(TINY_NO_ALIBI, WL, phases=("forward", "attention"), warmup=0, repeats=1,
                         progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0 and fractions[-1] == 1.0
    assert any("attention" in m for _, m in seen)


def test_peak_fraction_for_a_known_gpu_name(monkeypatch):
    monkeypatch.setattr(plat, "_device_name", lambda dev: "NVIDIA H100 80GB HBM3")
    row = _one(TINY_NO_ALIBI, "forward", warmup=0, repeats=1)
    assert row.device_name == "NVIDIA H100 80GB HBM3"
    assert row.peak_fraction == pytest.approx(row.achieved_flops_per_s / 67e12)


def test_time_calls_cuda_branch_with_fake_events(monkeypatch):
    """The CUDA protocol (event pair per call, one synchronise after the loop) on fake events."""
    clock = {"t": 0.0}
    syncs = []

    class FakeEvent:
        def __init__(self, enable_timing=False):
            assert enable_timing
            self.t = None

        def record(self):
            self.t = clock["t"]

        def elapsed_time(self, end):
            assert syncs, "elapsed_time read before synchronising"
            return end.t - self.t

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: syncs.append(a))
    calls = []

    def fn():
        calls.append(1)
        clock["t"] += 2.5

    times = plat.time_calls(fn, device="cuda", warmup=2, repeats=3)
    assert times == [2.5, 2.5, 2.5] and len(calls) == 5 and len(syncs) == 2


def test_time_calls_cpu():
    times = plat.time_calls(lambda: sum(range(1000)), device="cpu", warmup=1, repeats=4)
    assert len(times) == 4 and all(t >= 0 for t in times)


def test_backend_from_ops():
    assert psdpa.backend_from_ops([], sdpa_calls=0) == NO_SDPA
    assert psdpa.backend_from_ops(["bmm", "_safe_softmax"], sdpa_calls=2) == "math"
    assert psdpa.backend_from_ops(["aten._scaled_dot_product_efficient_attention.default"], sdpa_calls=1) == "efficient"
    assert psdpa.backend_from_ops(["_scaled_dot_product_flash_attention", "_scaled_dot_product_cudnn_attention"],
                                 sdpa_calls=2) == "cudnn+flash"


def test_explain_backend_cuda_reasons_from_recorded_call():
    alibi_fp32 = SdpaCall(q_shape=(1, 8, 512, 64), k_shape=(1, 8, 512, 64), dtype="float32", device_type="cuda",
                          mask_dtype="float32", mask_shape=(1, 8, 512, 512), dropout_p=0.0, is_causal=False)
    text = psdpa.explain_backend("efficient", device_type="cuda", call=alibi_fp32, gpu_capability=(9, 0))
    assert "aten._scaled_dot_product_efficient_attention ran" in text
    assert "an attn_mask is passed" in text and "ALiBi" in text and "float32 (flash needs float16 or bfloat16)" in text
    assert "cuDNN is left out" in text
    plain_bf16 = SdpaCall(q_shape=(1, 8, 512, 320), k_shape=(1, 8, 512, 320), dtype="bfloat16", device_type="cuda",
                          mask_dtype=None, mask_shape=None, dropout_p=0.0, is_causal=True)
    text = psdpa.explain_backend("math", device_type="cuda", call=plain_bf16, gpu_capability=(7, 5))
    assert "head dim 320" in text and "compute capability 7.5" in text and "attn_mask is passed" not in text
    assert "not used because" not in psdpa.explain_backend("flash", device_type="cuda", call=plain_bf16)


def test_probe_records_the_fused_op_and_call():
    q = torch.randn(1, 2, 8, 16)
    with SdpaProbe() as probe:
        torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
    assert probe.backend == "cpu_flash" and probe.calls[0].is_causal and probe.calls[0].head_dim == 16
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]), SdpaProbe() as probe:
        torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
    assert probe.backend == "math"


def test_unknown_phase_and_bad_repeats():
    with pytest.raises(plat.ProfileError, match="Unknown latency phase"):
        plat.measure_latency(TINY_SEED, WL, phases=("backward",))
    with pytest.raises(plat.ProfileError, match="repeats >= 1"):
        plat.measure_latency(TINY_SEED, WL, repeats=0)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_cuda_latency_and_backends():
    rows = plat.measure_latency(TINY_NO_ALIBI, Workload(batch=1, seq_len=64, dtype="bfloat16"), device="cuda",
                                phases=("forward", "attention", "decode"), warmup=1, repeats=2)
    assert all(r.status == "ok" for r in rows), [r.error for r in rows]
    assert rows[0].sdpa_backend in ("flash", "efficient", "cudnn") and "torch.cuda.Event" in rows[0].method
    alibi = plat.measure_latency(TINY_SEED, Workload(batch=1, seq_len=64, dtype="bfloat16"), device="cuda",
                                 phases=("forward",), warmup=1, repeats=2)[0]
    assert alibi.sdpa_backend != "flash" and "attn_mask is passed" in alibi.sdpa_backend_reason
    forced = plat.measure_latency(TINY_SEED, Workload(batch=1, seq_len=64, dtype="bfloat16"), device="cuda",
                                  phases=("forward",), sdpa_backend="flash")[0]
    assert forced.status == "error" and "flash" in forced.error


def _gpu_check(name: str):
    """benchmarks/gpu_check.py loaded as a module (it is a script, not part of the package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_script_runs_on_cpu_quick(tmp_path, capsys):
    """benchmarks/gpu_check.py --device cpu --quick: every table printed, every row written."""
    from xtlens.profiling.results.export import read_records

    module = _gpu_check("gpu_check")
    out = tmp_path / "rows.csv"
    assert module.main(["--device", "cpu", "--quick", "--seq-lens", "16", "--dtypes", "float32",
                        "--repeats", "1", "--warmup", "0", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for heading in ("## Latency", "## Memory", "## SDPA backend per point", "## Failures"):
        assert heading in text
    assert "| seed | float32 | 16 | forward |  | ok | cpu_flash |" in text
    assert "| seed | float32 | 16 | forward | math | ok | math |" in text
    assert "cannot decode with a KV cache" in text  # the seed's decode row is an explained failure
    rows = read_records(out)
    assert {r.config_name for r in rows} == {"seed", "seed-no-alibi"}
    assert {r.measurement for r in rows} == {"memory", "latency"}
    tables = text.split("## SDPA backend per point")[0]
    assert len(rows) == len([line for line in tables.splitlines() if line.startswith("| seed")])
    # each point once (the report is written after every point; the rows written so far are not added twice)
    keys = [(r.config_name, r.dtype, r.seq_len_tokens, r.measurement, r.phase, r.component, r.method) for r in rows]
    assert len(set(keys)) == len(keys)


@pytest.mark.slow
def test_gpu_check_latency_parts_on_cpu_quick(tmp_path, capsys):
    """The GPU run's breakdown, what-if and issue-11 criteria sections, exercised on the CPU at toy sizes."""
    from xtlens.profiling.results.export import read_records

    module = _gpu_check("gpu_check_parts")
    out, md = tmp_path / "rows.csv", tmp_path / "gpu-results.md"
    assert module.main(["--device", "cpu", "--quick", "--seq-lens", "16", "--dtypes", "float32", "--repeats", "1",
                        "--warmup", "0", "--latency-parts", "--attention", "asbuilt,flex,cudagraphs",
                        "--out", str(out), "--md-out", str(md)]) == 0
    text = capsys.readouterr().out
    assert md.read_text().strip() == text.strip()
    for heading in ("## Latency breakdown by part", "## What-if attention implementations", "## Issue 11 criteria"):
        assert heading in text
    assert "| seed | float32 | 16 | forward | flex | ok |" in text
    assert "| seed | float32 | 16 | forward | cudagraphs | error |" in text and "CUDA-only" in text
    assert "(criterion <= 1.3)" in text and "ALiBi bias construction + mask preparation" in text
    rows = read_records(out)
    assert {r.measurement for r in rows} == {"memory", "latency", "breakdown", "whatif"}
    assert {r.config_name for r in rows if r.measurement == "whatif"} == {"seed", "seed-no-alibi"}


@pytest.mark.slow
def test_gpu_check_interleaved_criterion_on_cpu_quick(tmp_path, capsys):
    """The issue-11 criterion timed in turns (the H200 run's fair comparison), exercised on the CPU at toy sizes:
    the four forwards in one table, the criterion's ratio the seed-with-FlexAttention row's own ratio."""
    import re

    module = _gpu_check("gpu_check_interleaved")
    md = tmp_path / "criterion.md"
    assert module.main(["--device", "cpu", "--quick", "--no-check", "--no-latency-parts", "--interleaved", "16",
                        "--rounds", "2", "--dtypes", "float32", "--md-out", str(md)]) == 0
    text = md.read_text()
    assert "## Issue 11 criterion, interleaved (16 tokens, float32)" in text
    table = {tuple(c.strip() for c in line.split("|")[1:3]): [c.strip() for c in line.split("|")[3:-1]]
             for line in text.splitlines() if line.startswith("| seed")}
    assert set(table) == {("seed", "asbuilt"), ("seed", "flex"), ("seed-no-alibi", "asbuilt"), ("seed-no-alibi", "flex")}
    assert table[("seed-no-alibi", "asbuilt")][3] == "1.00" and all(row[2] == "" for row in table.values())  # no kernel time on CPU
    wall = {k: float(v[0]) for k, v in table.items()}
    ratio = float(re.search(r"as built = ([0-9.]+)", text).group(1))
    assert ratio == pytest.approx(wall[("seed", "flex")] / wall[("seed-no-alibi", "asbuilt")], abs=0.006)
    assert f"{ratio:.2f}" == table[("seed", "flex")][3]
    assert ("PASS" if ratio <= 1.3 else "FAIL") in text
