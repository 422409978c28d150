"""profiling.measure.breakdown: the latency split into parts of the model adds up to the measured total; the
attribution of profiler events (the CUDA device-time path included) checked on recorded stand-ins."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from xtlens.core import roofline
from xtlens.core.config import PRESETS, Workload
from xtlens.profiling.measure import breakdown as pbd

TINY_SEED = PRESETS["seed"].replace(num_tokens=97, max_seq_len=64, dim=32, depth=2, attn_dim_head=16)
TINY_NO_ALIBI = TINY_SEED.replace(alibi_pos_bias=False, alibi_num_heads=None)
WL = Workload(batch=2, seq_len=32)


@pytest.fixture(scope="module")
def seed_rows():
    return pbd.measure_breakdown(TINY_SEED, WL, repeats=3)


def _by(rows, phase):
    return {r.component: r for r in rows if r.phase == phase}


@pytest.mark.parametrize("phase", ["forward", "train_step"])
def test_parts_add_up_to_the_measured_total(seed_rows, phase):
    """The named parts (profiler self times) cover the wall-clock total (time.perf_counter) within 5%."""
    rows = _by(seed_rows, phase)
    assert all(r.status == "ok" and r.measurement == "breakdown" for r in rows.values())
    total = rows["total"].latency_median_ms
    parts = {k: r.latency_median_ms for k, r in rows.items() if k not in ("total", "total_unprofiled", "remainder")}
    assert abs(total - sum(parts.values())) <= 0.05 * total
    assert rows["remainder"].latency_median_ms == pytest.approx(total - sum(parts.values()))
    expected = {"embedding", "token_shift", "norms", "qkv_proj", "rotary", "alibi_bias", "mask_prep", "attention",
                "out_proj", "feedforward", "residual", "logits"}
    if phase == "train_step":
        expected |= {"loss", "backward", "optimizer"}
    assert expected <= set(parts)
    assert all(v > 0 for k, v in parts.items() if k in expected)
    # the kernel is named: the CPU flash kernel runs even with the dense ALiBi mask
    assert rows["attention"].sdpa_backend == "_scaled_dot_product_flash_attention_for_cpu"
    assert "attention kernel" in rows["attention"].method
    # each part carries its closed-form work and its roofline time on this (calibrated) CPU
    costs = {c.component: c for c in roofline.part_costs(TINY_SEED, WL, phase=phase)}
    assert rows["qkv_proj"].predicted_flops == costs["qkv_proj"].flops
    assert rows["alibi_bias"].bytes_moved == costs["alibi_bias"].bytes > 0
    assert rows["qkv_proj"].predicted_latency_ms > 0 and rows["total"].predicted_latency_ms > 0
    assert rows["qkv_proj"].achieved_flops_per_s == pytest.approx(
        costs["qkv_proj"].flops / (rows["qkv_proj"].latency_median_ms / 1e3))


def test_the_unprofiled_total_is_recorded_beside_it(seed_rows):
    rows = _by(seed_rows, "forward")
    assert rows["total_unprofiled"].latency_median_ms > 0
    assert "profiler" in rows["total_unprofiled"].method


def test_without_alibi_there_is_no_bias_part_and_per_layer_rows():
    rows = _by(pbd.measure_breakdown(TINY_NO_ALIBI, WL, phases=("forward",), repeats=1, per_layer=True), "forward")
    assert not any(k.startswith("alibi_bias") for k in rows)
    # per layer: blocks 0 and 2 are attention, 1 and 3 feed-forward
    assert {"qkv_proj@0", "qkv_proj@2", "feedforward@1", "feedforward@3", "norms@0"} <= set(rows)
    assert "qkv_proj@1" not in rows


def test_hooks_and_patches_are_removed_after_the_measurement():
    import x_transformers.x_transformers as xt
    from xtlens.core.builder import build_model

    before = (xt.apply_rotary_pos_emb, xt.pad_at_dim)
    model = build_model(TINY_SEED).model
    with pbd.PartLabeller(model):
        assert xt.apply_rotary_pos_emb is not before[0]
        assert "forward_custom_pos" in model.attn_layers.rel_pos.__dict__
    assert (xt.apply_rotary_pos_emb, xt.pad_at_dim) == before
    assert "forward_custom_pos" not in model.attn_layers.rel_pos.__dict__
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@dataclass
class _Ev:
    name: str
    cpu_parent: object = None
    self_cpu_time_total: float = 0.0
    self_device_time_total: float = 0.0
    device_type: str = "DeviceType.CPU"
    time_range: object = None


def test_attribution_on_device_times():
    """The CUDA path: kernel (device) self times go to the innermost part range; SDPA ops and everything
    under them to the attention kernel; autograd nodes to backward; GPU-side annotations are skipped."""
    root = _Ev("xtlens::total")
    attend = _Ev("xtlens::mask_prep", root, self_cpu_time_total=50)
    fill = _Ev("aten::masked_fill", attend, self_cpu_time_total=5, self_device_time_total=900)
    sdpa = _Ev("aten::scaled_dot_product_attention", attend, self_cpu_time_total=3)
    kern = _Ev("aten::_scaled_dot_product_efficient_attention", sdpa, self_device_time_total=1600)
    ff = _Ev("xtlens::feedforward@1", root)
    mm = _Ev("aten::addmm", ff, self_device_time_total=300)
    bwd = _Ev("autograd::engine::evaluate_function: MmBackward0")  # another thread: no xtlens root
    root2 = _Ev("xtlens::total")
    loose = _Ev("aten::add", root2, self_device_time_total=7)
    gpu_copy = _Ev("xtlens::mask_prep", root, self_device_time_total=10**6, device_type="DeviceType.CUDA")
    events = [root, attend, fill, sdpa, kern, ff, mm, bwd, root2, loose, gpu_copy]
    calls, kernels = pbd.attribute_events(events, device_time=True, einsum_attention=False)
    assert calls == [{"mask_prep": 900, "attention": 1600, "feedforward@1": 300}, {"framework_other": 7}]
    assert kernels == {"aten::_scaled_dot_product_efficient_attention"}
    assert pbd._kernel_label(kernels) == "_scaled_dot_product_efficient_attention"
    cpu, _ = pbd.attribute_events(events, device_time=False, einsum_attention=False)
    assert cpu[0] == {"mask_prep": 55, "attention": 3}
    # the einsum path: Attend's matmuls and softmax are the attention itself
    ein = _Ev("aten::einsum", attend, self_cpu_time_total=40)
    calls, kernels = pbd.attribute_events([root, attend, ein], device_time=False, einsum_attention=True)
    assert calls == [{"mask_prep": 50, "attention": 40}] and kernels == {"aten::einsum"}


@dataclass
class _Span:
    start: float
    end: float


def test_backward_in_the_autograd_thread_goes_to_its_call():
    """On CUDA the autograd engine runs loss.backward() in its own thread: its ops have no xtlens root (seen on an
    H200: the training step's backward kernels landed in the remainder and "backward" read 0.0007 ms). They are
    the backward of the call whose root range holds their start; outside every call they are dropped."""
    r1 = _Ev("xtlens::total", time_range=_Span(0, 100))
    r2 = _Ev("xtlens::total", time_range=_Span(200, 300))
    fwd = _Ev("aten::mm", _Ev("xtlens::feedforward", r1), self_device_time_total=40, time_range=_Span(10, 20))
    node1 = _Ev("autograd::engine::evaluate_function: MmBackward0", time_range=_Span(50, 60))
    mm1 = _Ev("aten::mm", node1, self_device_time_total=80, time_range=_Span(51, 59))
    node2 = _Ev("autograd::engine::evaluate_function: AddmmBackward0", time_range=_Span(250, 260))
    mm2 = _Ev("aten::mm", node2, self_device_time_total=70, time_range=_Span(251, 259))
    stray = _Ev("aten::mm", _Ev("autograd::engine::evaluate_function: X", time_range=_Span(500, 510)),
                self_device_time_total=999, time_range=_Span(501, 509))
    other = _Ev("aten::add", self_device_time_total=5, time_range=_Span(55, 56))  # no root, not backward
    calls, _ = pbd.attribute_events([r1, fwd.cpu_parent, fwd, node1, mm1, r2, node2, mm2, stray, stray.cpu_parent,
                                     other], device_time=True, einsum_attention=False)
    assert calls == [{"feedforward": 40, "backward": 80}, {"backward": 70}]


def test_module_parts():
    from xtlens.core.builder import build_model

    model = build_model(TINY_SEED).model
    parts = {name: pbd.module_part(name, m) for name, m in model.named_modules()}
    assert parts["token_emb"] == "embedding" and parts["to_logits"] == "logits"
    assert parts["attn_layers.layers.0.1.fn.to_k"] == "qkv_proj" and parts["attn_layers.layers.0.1.fn.to_out"] == "out_proj"
    assert parts["attn_layers.layers.0.1.fn.attend"] == "mask_prep" and parts["attn_layers.rel_pos"] == "alibi_bias"
    assert parts["attn_layers.layers.0.1"] == "token_shift" and parts["attn_layers.layers.1.2"] == "residual"
    assert parts["attn_layers.layers.0.0.2"] == "norms" and parts["attn_layers.layers.0.0.2.ln"] is None
    assert set(p for p in parts.values() if p) <= set(roofline.LATENCY_PARTS) | set(pbd.MEASURED_ONLY_PARTS)


def test_bad_arguments():
    from xtlens.profiling.errors import ProfileError

    with pytest.raises(ProfileError, match="breakdown phase"):
        pbd.measure_breakdown(TINY_SEED, WL, phases=("decode",))
    with pytest.raises(ProfileError, match="repeats"):
        pbd.measure_breakdown(TINY_SEED, WL, repeats=0)


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")
def test_cuda_breakdown_kernel_times():
    rows = _by(pbd.measure_breakdown(TINY_SEED.replace(max_seq_len=256), Workload(batch=1, seq_len=256, dtype="bfloat16"),
                                     device="cuda",
                                     phases=("forward",), repeats=3), "forward")
    assert all(r.status == "ok" for r in rows.values()), [r.error for r in rows.values()]
    total = rows["total"].latency_median_ms
    parts = sum(r.latency_median_ms for k, r in rows.items() if k not in ("total", "remainder"))
    assert rows["remainder"].latency_median_ms == pytest.approx(total - parts)
    assert parts > 0 and "kernel" in rows["total"].method
    assert rows["attention"].sdpa_backend.startswith("_") and rows["alibi_bias"].latency_median_ms > 0
    from xtlens.core.hardware import gpu_family

    if gpu_family(rows["total"].device_name):  # a GPU with a datasheet preset: the roofline is beside it
        assert rows["total"].predicted_latency_ms > 0 and rows["qkv_proj"].predicted_latency_ms > 0


@dataclass
class _Raw:
    """A raw (kineto) profiler event as ``prof.profiler.kineto_results.events()`` gives it."""

    _name: str
    start: int
    end: int
    thread: int = 1
    end_thread: int | None = None
    on_gpu: bool = False
    asynchronous: bool = False

    def name(self):
        return self._name

    def start_ns(self):
        return self.start

    def end_ns(self):
        return self.end

    def start_thread_id(self):
        return self.thread

    def end_thread_id(self):
        return self.thread if self.end_thread is None else self.end_thread

    def is_async(self):
        return self.asynchronous

    def device_type(self):
        from torch.autograd import DeviceType

        return DeviceType.CUDA if self.on_gpu else DeviceType.CPU


def test_cpu_intervals_nest_and_attribute_by_hand():
    """Two calls with known intervals (nanoseconds), listed out of order. By hand, call 1 (0..10,000):
    feedforward range 1,000..5,000 holds addmm 1,500..4,500 which holds copy_ 2,000..2,600: feedforward's own
    4,000 - 3,000 = 1,000, addmm's 3,000 - 600 = 2,400, copy_'s 600 -> feedforward 4,000 ns; the attention
    kernel 6,000..8,000 under mask_prep 5,500..9,000: attention 2,000, mask_prep 3,500 - 2,000 = 1,500; the
    root's own 10,000 - 4,000 - 3,500 = 2,500 -> framework_other. The record_function exit marker inside
    feedforward is not an event (torch leaves it out), nor are the GPU, async and cross-thread ones.
    Call 2 (20,000..21,000): a backward node 20,100..20,900 holding mm 20,200..20,700: backward 800, root 200."""
    raw = [
        _Raw("aten::copy_", 2_000, 2_600), _Raw("xtlens::total", 0, 10_000), _Raw("xtlens::feedforward", 1_000, 5_000),
        _Raw("aten::addmm", 1_500, 4_500), _Raw("profiler::_record_function_exit", 4_600, 4_700),
        _Raw("xtlens::mask_prep", 5_500, 9_000), _Raw("aten::_scaled_dot_product_flash_attention_for_cpu", 6_000, 8_000),
        _Raw("kernel on the GPU", 6_100, 7_900, on_gpu=True), _Raw("aten::add", 3_000, 3_100, asynchronous=True),
        _Raw("aten::mul", 3_000, 3_200, end_thread=2),
        _Raw("xtlens::total", 20_000, 21_000), _Raw("autograd::engine::evaluate_function: MmBackward0", 20_100, 20_900),
        _Raw("aten::mm", 20_200, 20_700),
        _Raw("aten::relu", 30_000, 30_500, thread=7),  # another thread, outside every call: dropped
    ]
    intervals = pbd.cpu_intervals(raw)
    assert [iv.name for iv in intervals][:4] == ["xtlens::total", "xtlens::feedforward", "aten::addmm", "aten::copy_"]
    by_name = {iv.name: iv for iv in intervals}
    assert by_name["aten::copy_"].cpu_parent is by_name["aten::addmm"]
    assert by_name["aten::addmm"].self_cpu_time_total == 2.4  # microseconds
    assert by_name["aten::relu"].cpu_parent is None and len(intervals) == 10
    calls, kernels = pbd.attribute_events(intervals, device_time=False, einsum_attention=False)
    assert calls == [{"feedforward": 4.0, "mask_prep": 1.5, "attention": 2.0, "framework_other": 2.5},
                     {"backward": 0.8, "framework_other": 0.2}]
    assert kernels == {"aten::_scaled_dot_product_flash_attention_for_cpu"}


def test_raw_cpu_events_attribute_as_torch_events_do():
    """A profiled training step of a tiny model, attributed from ``cpu_intervals`` of the raw events and from
    torch's own ``prof.events()`` tree: the same parts, the same microseconds, the same kernels."""
    import torch
    import torch.nn.functional as F
    from torch.profiler import record_function
    from xtlens.core.builder import build_model

    model = build_model(TINY_SEED).model.train()
    ids = torch.randint(0, TINY_SEED.num_tokens, (2, 32))
    targets = torch.randint(0, TINY_SEED.num_tokens, (64,))
    opt = torch.optim.AdamW(model.parameters())

    def call():
        logits = model(ids)
        with record_function("xtlens::loss"):
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets)
        with record_function("xtlens::backward"):
            loss.backward()
        with record_function("xtlens::optimizer"):
            opt.step()
            opt.zero_grad()

    with pbd.PartLabeller(model, per_layer=True):
        prof, _ = pbd._profile_calls(call, dev="cpu", warmup=1, repeats=2)
    fast, fast_kernels = pbd.attribute_events(pbd.profiled_events(prof, device_time=False), device_time=False,
                                              einsum_attention=False)
    slow, slow_kernels = pbd.attribute_events(prof.events(), device_time=False, einsum_attention=False)
    assert len(fast) == len(slow) == 2 and fast_kernels == slow_kernels
    for a, b in zip(fast, slow, strict=True):
        assert set(a) == set(b) and {"feedforward@1", "backward", "optimizer", "loss"} <= set(a)
        assert all(a[k] == pytest.approx(b[k], abs=1e-6) for k in a)
