"""core.latency_model: the kernel and module-call counts of the closed form against a count on the real
x-transformers model (TorchDispatchMode + forward hooks), and the predictor's arithmetic on fake timings
(each overhead term moves the prediction by exactly its amount)."""

from __future__ import annotations

import collections
import dataclasses

import pytest
from xtlens.core import latency_model as lm
from xtlens.core.calibration import AttentionPoint, Calibration, MatmulPoint
from xtlens.core.config import PRESETS, ConfigError, ModelConfig, Workload
from xtlens.core.hardware import hardware_preset

BASE = dict(num_tokens=256, max_seq_len=512, dim=64, depth=2, heads=4, attn_dim_head=16, attn_flash=True,
            rotary_pos_emb=True, use_abs_pos_emb=False)
CONFIGS = {
    "rotary": ModelConfig(**BASE),
    "alibi": ModelConfig(**{**BASE, "alibi_pos_bias": True}),
    "alibi-no-rotary": ModelConfig(**{**BASE, "alibi_pos_bias": True, "rotary_pos_emb": False}),
    "gqa": ModelConfig(**{**BASE, "attn_kv_heads": 2}),
    "mqa": ModelConfig(**{**BASE, "attn_one_kv_head": True}),
    "abs-pos": ModelConfig(**{**BASE, "rotary_pos_emb": False, "use_abs_pos_emb": True}),
    "glu": ModelConfig(**{**BASE, "ff_glu": True}),
    "einsum": ModelConfig(**{**BASE, "attn_flash": False}),
    "seed-small": PRESETS["seed"].replace(num_tokens=256, dim=64, depth=3),
}


# --------------------------------------------------------------------------------------------------
# counts against the real model
# --------------------------------------------------------------------------------------------------


def _count(cfg: ModelConfig, *, train: bool):
    """Per part: aten ops dispatched and module calls of one forward in steady state (after a first call), and,
    with ``train``, the backward's and the AdamW step's ops."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    from torch.utils._python_dispatch import TorchDispatchMode
    from xtlens.core.builder import build_model
    from xtlens.profiling.measure.breakdown import PartLabeller

    model = build_model(cfg, device="cpu", dtype="float32", seed=0).model
    ids = torch.randint(0, cfg.num_tokens, (1, 16), generator=torch.Generator().manual_seed(0))
    ops: collections.Counter = collections.Counter()
    calls: collections.Counter = collections.Counter()
    phase = {"now": "forward"}

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func)
            if "profiler" not in name:
                part = lab._current_part() or "other"
                if "scaled_dot_product" in name:
                    part = "attention"
                ops[part if phase["now"] == "forward" else phase["now"]] += 1
            return func(*args, **(kwargs or {}))

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4) if train else None

    def step():
        if not train:
            with torch.no_grad():
                model(ids)
            return
        logits = model(ids)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1))
        phase["now"] = "backward"
        loss.backward()
        phase["now"] = "optimizer"
        opt.step()
        opt.zero_grad(set_to_none=True)
        phase["now"] = "forward"

    model.train(train)
    with PartLabeller(model) as lab:
        step()  # steady state: caches built, optimizer state allocated
        hooks = [m.register_forward_pre_hook(lambda mod, a: calls.update([lab._current_part()]))
                 for m in model.modules()]
        ops.clear()
        with Count():
            step()
        for h in hooks:
            h.remove()
    return ops, calls


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_forward_kernels_and_module_calls_match_the_real_model(name):
    cfg = CONFIGS[name]
    ops, calls = _count(cfg, train=False)
    kernels = lm.part_kernels(cfg)
    if not cfg.attn_flash:  # the einsum path's ops run inside Attend, labelled mask_prep by the breakdown
        ops["attention"] = ops["mask_prep"] - kernels["mask_prep"]
        ops["mask_prep"] = kernels["mask_prep"]
    measured = {k: v for k, v in ops.items() if v}
    predicted = {k: v for k, v in kernels.items() if v}
    assert measured == predicted
    assert {k: v for k, v in calls.items() if v} == {k: v for k, v in lm.part_module_calls(cfg).items() if v}


@pytest.mark.parametrize("name", ["rotary", "alibi-no-rotary", "gqa", "einsum", "seed-small", "glu", "abs-pos"])
def test_training_step_kernels_match_the_real_model(name):
    cfg = CONFIGS[name]
    ops, _calls = _count(cfg, train=True)
    kernels = lm.part_kernels(cfg, train=True)
    forward = sum(v for k, v in ops.items() if k not in ("backward", "optimizer", "other"))
    assert forward == sum(kernels.values())
    assert ops["other"] == 5  # the loss: reshape, log_softmax, nll_loss and their views
    assert ops["backward"] == lm.backward_kernels(cfg)
    assert ops["optimizer"] == lm.ADAMW_OPS_PER_TENSOR * lm.param_tensor_count(cfg)


# --------------------------------------------------------------------------------------------------
# fake timings
# --------------------------------------------------------------------------------------------------


def fake_calibration(*, launch_s=1e-6, module_s=2e-6, bandwidth=10e9, device="cpu") -> Calibration:
    """A calibration with made-up, self-consistent numbers: every product runs at 100 GFLOP/s plus one launch;
    attention at 1 ns per unit of work (3 ns forward + backward) plus one launch."""
    mm = tuple(MatmulPoint(dtype="float32", m=m, n=n, k=k, seconds=2 * m * n * k / 100e9 + launch_s)
               for m in (64, 1024) for n in (64, 1024) for k in (64, 1024))
    att = tuple(AttentionPoint(backend="cpu_flash" if device == "cpu" else "flash", dtype="float32", batch=1, heads=8,
                               kv_heads=8, seq_len=n, head_dim=64, mask=mask, seconds=8 * n * n * 64 * 1e-9 + launch_s,
                               backward_seconds=3 * 8 * n * n * 64 * 1e-9 + launch_s)
                for n in (128, 1024) for mask in ("causal", "dense"))
    return Calibration(device=device, device_name="fake", torch_version="0", xtransformers_version="0", threads=1,
                       measured_at="2026-12-04T00:00:00+00:00", wall_s=1.0, launch_s=launch_s, module_overhead_s=module_s,
                       elementwise_bytes_per_s={"float32": bandwidth}, matmul=mm, attention=att)


CFG = CONFIGS["alibi"]
WL = Workload(batch=1, seq_len=256, dtype="float32")


@pytest.mark.parametrize("phase", lm.PHASES)
def test_each_part_is_the_sum_of_its_terms(phase):
    cal = fake_calibration()
    rows = lm.predict_latency(CFG, WL, cal, phase=phase)
    assert rows and all(r.phase == phase for r in rows)
    for r in rows:
        assert r.total_ms == pytest.approx(r.compute_ms + r.memory_ms + r.launch_ms + r.framework_ms)
        assert r.launch_ms == pytest.approx(1e3 * r.kernels * cal.launch_s)
    assert lm.phase_ms(CFG, WL, cal, phase=phase) == pytest.approx(sum(r.total_ms for r in rows))


@pytest.mark.parametrize("phase", ["forward", "train_step"])
def test_module_overhead_moves_the_prediction_by_exactly_its_amount(phase):
    base = lm.predict_latency(CFG, WL, fake_calibration(module_s=2e-6), phase=phase)
    more = lm.predict_latency(CFG, WL, fake_calibration(module_s=7e-6), phase=phase)
    calls = sum(r.module_calls for r in base)
    assert calls > 0
    total = sum(r.total_ms for r in more) - sum(r.total_ms for r in base)
    assert total == pytest.approx(1e3 * calls * 5e-6, rel=1e-9)
    for a, b in zip(base, more, strict=True):  # only the framework term moves
        assert (b.compute_ms, b.memory_ms, b.launch_ms) == pytest.approx((a.compute_ms, a.memory_ms, a.launch_ms))


@pytest.mark.parametrize("phase", ["forward", "train_step"])
def test_launch_cost_moves_the_prediction_by_exactly_its_amount(phase):
    """A device whose every call costs 3 us more (the tiny op and every measured point alike): the prediction
    grows by (kernels + XT_PYTHON_LAUNCHES_PER_MODULE x module calls) x 3 us, the compute terms stay."""
    delta = 3e-6
    base = lm.predict_latency(CFG, WL, fake_calibration(launch_s=1e-6), phase=phase)
    more = lm.predict_latency(CFG, WL, fake_calibration(launch_s=1e-6 + delta), phase=phase)  # points too
    kernels = sum(r.kernels for r in base)
    calls = sum(r.module_calls for r in base)
    expected = 1e3 * delta * (kernels + lm.XT_PYTHON_LAUNCHES_PER_MODULE * calls)
    assert sum(r.total_ms for r in more) - sum(r.total_ms for r in base) == pytest.approx(expected, rel=1e-9)
    assert [r.compute_ms for r in more] == pytest.approx([r.compute_ms for r in base], rel=1e-9)


def test_bandwidth_scales_the_memory_term_only():
    a = lm.predict_latency(CFG, WL, fake_calibration(bandwidth=10e9), phase="train_step")
    b = lm.predict_latency(CFG, WL, fake_calibration(bandwidth=5e9), phase="train_step")
    assert sum(r.memory_ms for r in a) > 0
    for x, y in zip(a, b, strict=True):
        assert y.memory_ms == pytest.approx(2 * x.memory_ms)
        assert y.compute_ms == pytest.approx(x.compute_ms)


def test_matmul_and_attention_on_the_grid_are_the_measured_points():
    """At a grid shape the product takes its measured time less the launch (x the CPU in-model factor); at a
    measured length the attention takes the point's time per unit of work x this model's work."""
    cal = fake_calibration()
    terms = lm._Terms(cal, "float32")
    assert terms.gemm_s(1024, 64, 1024) == pytest.approx(lm.CPU_GEMM_FACTOR * 2 * 1024 * 64 * 1024 / 100e9)
    # between grid points the rate is between theirs (all 100 GFLOP/s here)
    assert terms.gemm_s(300, 200, 500) == pytest.approx(lm.CPU_GEMM_FACTOR * 2 * 300 * 200 * 500 / 100e9)
    assert terms.attention_s(batch=2, heads=4, seq_len=1024, head_dim=16, dense=False, backward=False) == \
        pytest.approx(2 * 4 * 1024**2 * 16 * 1e-9)
    assert terms.attention_s(batch=1, heads=8, seq_len=128, head_dim=64, dense=False, backward=True) == \
        pytest.approx(2 * 8 * 128**2 * 64 * 1e-9)  # (fwd+bwd) - fwd = 2 ns per unit
    # the forward's attention part: depth x the kernel (ALiBi: a dense mask, the full square at twice the causal
    # rate; these fake dense points are no slower than that, so no denormal excess)
    rows = {r.component: r for r in lm.predict_latency(CFG, Workload(batch=1, seq_len=1024), cal)}
    assert rows["attention"].compute_ms == pytest.approx(2e3 * CFG.depth * 4 * 1024**2 * 16 * 1e-9)


def test_gpu_overlaps_host_and_device():
    cal = fake_calibration(device="cuda")
    for r in lm.predict_latency(CFG, WL, cal, phase="forward"):
        assert r.total_ms == pytest.approx(max(r.compute_ms + r.memory_ms, r.launch_ms + r.framework_ms))


def test_labels_and_uncalibrated_presets():
    cal = fake_calibration()
    assert lm.prediction_label(cal) == f"calibrated on {cal.key}"
    h200 = hardware_preset("h200")
    label = lm.prediction_label(h200)
    assert label.startswith(lm.UNCALIBRATED_LABEL) and "H200 SXM" in label and "24%" in label
    rows = lm.predict_latency(PRESETS["seed"], Workload(batch=1, seq_len=1024, dtype="bfloat16"), h200)
    launch = sum(r.launch_ms for r in rows)
    assert launch == pytest.approx(1e3 * sum(r.kernels for r in rows) * lm.TYPICAL_LAUNCH_S)
    # the seed's 1024-token forward on an H200 is launch-bound: host terms dominate
    assert sum(r.launch_ms + r.framework_ms for r in rows) > 5 * sum(r.compute_ms + r.memory_ms for r in rows)


def test_decode_and_bad_input():
    cal = fake_calibration()
    cached = lm.phase_ms(CFG, WL, cal, phase="decode_cached")
    uncached = lm.phase_ms(CFG, WL, cal, phase="decode_uncached")
    assert 0 < cached < uncached
    with pytest.raises(ConfigError, match="phase"):
        lm.predict_latency(CFG, WL, cal, phase="backward")
    with pytest.raises(ConfigError, match="bfloat16"):
        lm.predict_latency(CFG, Workload(batch=1, seq_len=64, dtype="bfloat16"), hardware_preset("T4"))
    empty = dataclasses.replace(cal, matmul=())
    with pytest.raises(ConfigError, match="matrix-product"):
        lm.predict_latency(CFG, WL, empty)


def test_dense_mask_on_a_cpu_scales_with_the_denormal_fraction():
    """A dense ALiBi mask on a CPU: twice the causal rate (the full square) plus the dense points' excess scaled by
    the model's share of scores in exp's denormal band over the calibration's own (8 heads, slopes 1/2..1/256)."""
    cal = fake_calibration()  # dense and causal points at the same rate per unit: excess = dense - 2 causal < 0
    slow_dense = dataclasses.replace(cal, attention=tuple(
        dataclasses.replace(p, seconds=10 * p.seconds, backward_seconds=10 * p.backward_seconds) if p.mask == "dense"
        else p for p in cal.attention))
    terms = lm._Terms(slow_dense, "float32")
    kw = dict(batch=1, heads=8, seq_len=1024, head_dim=64, dense=True)
    causal = terms.attention_s(**{**kw, "dense": False}, backward=False)
    # no score in the band (few heads, small slopes): the clean full square, 2x the causal kernel
    assert terms.attention_s(**kw, backward=False) == pytest.approx(2 * causal)
    # the calibration's own configuration (8 heads, x-transformers' slopes, a measured length): the dense point
    frac = lm.alibi_denormal_fraction(lm._alibi_slopes(8), 8, 1024)
    assert 0.01 < frac < 0.05
    dense = terms.attention_s(**kw, backward=False, denormal_fraction=frac)
    assert dense == pytest.approx(10 * 8 * 1024**2 * 64 * 1e-9, rel=1e-3)
    # half the fraction: half the excess
    half = terms.attention_s(**kw, backward=False, denormal_fraction=frac / 2)
    assert half == pytest.approx(2 * causal + (dense - 2 * causal) / 2, rel=1e-6)
    # x-transformers' slopes: 8 heads at 1024 tokens reach the band, 2 heads (1/16, 1/256) do not
    assert lm.alibi_denormal_fraction(lm._alibi_slopes(2), 2, 1024) == 0.0
    assert lm._alibi_slopes(8)[:2] == [0.5, 0.25] and lm._alibi_slopes(6)[:2] == [0.25, 0.0625]
