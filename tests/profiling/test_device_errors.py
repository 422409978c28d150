"""profiling.run.device and profiling.errors: device resolution, peak rates, OOM detection and failure rows."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from xtlens.core.builder import BuildError
from xtlens.core.builder import resolve_device as build_resolve_device
from xtlens.core.config import ModelConfig, Workload
from xtlens.core.cost_model import memory_estimate
from xtlens.profiling import errors as perr
from xtlens.profiling.measure import latency as plat
from xtlens.profiling.measure import memory as pmem
from xtlens.profiling.run import device as pdev

TINY = ModelConfig(num_tokens=64, max_seq_len=64, dim=16, depth=1, heads=2, attn_dim_head=8, attn_flash=True,
                   use_abs_pos_emb=False, rotary_pos_emb=True)
WL = Workload(batch=1, seq_len=16)
CUDA = torch.cuda.is_available()


# --- device -----------------------------------------------------------------------------------------

def test_resolve_device(monkeypatch):
    assert pdev.resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pdev.resolve_device("auto") == "cpu"
    # one resolver (core.builder.resolve_device), one error type for it: the build layer's
    with pytest.raises(BuildError, match="no CUDA GPU"):
        pdev.resolve_device("cuda")
    with pytest.raises(BuildError, match="Unknown device"):
        pdev.resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pdev.resolve_device("auto") == "cuda"
    assert pdev.resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(BuildError, match="has 2 GPU"):
        pdev.resolve_device("cuda:2")
    assert pdev.resolve_device is build_resolve_device


def test_device_name_and_versions():
    name = pdev.device_name("cpu")
    assert "logical CPU" in name and name.split(" (")[0]
    v = pdev.versions()
    assert v["torch"] == torch.__version__
    assert v["x-transformers"].startswith("2.31")


@pytest.mark.parametrize(("name", "dtype", "expected"), [
    ("NVIDIA H100 80GB HBM3", "bfloat16", 989.5e12),
    ("NVIDIA H100 80GB HBM3", "float32", 67e12),
    ("NVIDIA H100 PCIe", "float16", 756.5e12),
    ("NVIDIA H100 NVL", "bf16", 835.5e12),
    ("NVIDIA H200", "bfloat16", 989.5e12),
    ("NVIDIA A100-SXM4-80GB", "bfloat16", 312e12),
    ("NVIDIA A100 80GB PCIe", "float32", 19.5e12),
    ("NVIDIA L4", "bfloat16", 121e12),
    ("NVIDIA L40S", "bfloat16", 366.5e12),
    ("Tesla T4", "bfloat16", None),  # no BF16 units
    ("NVIDIA GeForce GTX 1080", "float32", None),
    ("AMD EPYC (2 logical CPUs)", "float32", None),
])
def test_peak_flops_per_s(name, dtype, expected):
    assert pdev.peak_flops_per_s(name, dtype) == expected


def test_peak_tf32_and_families():
    assert pdev.peak_flops_per_s("NVIDIA H100 80GB HBM3", "float32", tf32=True) == 494.5e12
    assert pdev.peak_flops_per_s("NVIDIA A100-PCIE-40GB", "float32", tf32=True) == 156e12
    assert pdev.gpu_family("NVIDIA L4") == "L4" and pdev.gpu_family("NVIDIA L40S") == "L40S"
    assert pdev.gpu_family("NVIDIA H200 NVL") == "H200 NVL"
    # dense bf16 is twice dense tf32 and at least the fp32 rate for every tensor-core GPU in the table
    for family, rates in pdev.PEAK_FLOPS_PER_S.items():
        if "tf32" in rates:
            assert rates["bfloat16"] == pytest.approx(2 * rates["tf32"], rel=0.01), family
            assert rates["bfloat16"] > rates["float32"], family


def test_synchronize_calls_cuda_only_for_cuda(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: calls.append(d))
    pdev.synchronize("cpu")
    assert calls == []
    pdev.synchronize("cuda:0")
    assert calls == [torch.device("cuda", 0)]


# --- errors -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("exc", "expected"), [
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (MemoryError(), True),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried"), True),
    (RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB"), True),
    (RuntimeError("The size of tensor a (3) must match the size of tensor b (4)"), False),
    (ValueError("out of memory"), False),
    (KeyError("x"), False),
])
def test_is_oom(exc, expected):
    assert perr.is_oom(exc) is expected


def _fail_holding(big_ref: list, exc: BaseException):
    big = torch.empty(1 << 20)  # 4 MiB held by this frame
    big_ref.append(weakref.ref(big))
    raise exc


def test_failure_record_frees_the_failed_attempt(monkeypatch):
    """The tensor a failed measurement held is gone before empty_cache runs; the row says oom."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    seen = []
    refs: list = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: seen.append(refs[0]() is None))
    try:
        _fail_holding(refs, torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB"))
    except Exception as exc:  # noqa: BLE001
        row = perr.failure_record(exc, TINY, WL, measurement="memory", phase="train_step", device="cuda",
                                  device_name="NVIDIA H100 80GB HBM3", method="m", predicted_bytes=5)
    assert seen == [True]
    assert row.status == "oom" and row.measurement == "memory" and row.phase == "train_step"
    assert row.error.startswith("Out of memory on NVIDIA H100 80GB HBM3")
    assert "8.00 GiB" in row.error and row.method == "m" and row.predicted_bytes == 5
    assert row.measured_bytes is None


def test_failure_record_error_status_keeps_profile_error_text():
    row = perr.failure_record(perr.ProfileError("Plain words for the page."), TINY, WL, measurement="latency",
                              phase="decode", device="cpu", device_name="cpu")
    assert row.status == "error" and row.error == "Plain words for the page."
    row = perr.failure_record(RuntimeError("boom\nsecond line"), TINY, WL, measurement="latency",
                              phase="decode", device="cpu", device_name="cpu")
    assert row.status == "error" and "RuntimeError" in row.error and "second line" not in row.error


def test_oom_mid_memory_measurement_becomes_an_oom_row(monkeypatch):
    """A CUDA-style OOM raised inside the real training step (at the loss) gives an oom row, frees the
    logits it held, and leaves the inference rows intact."""
    refs: list = []

    def exploding_loss(logits, *args, **kwargs):
        refs.append(weakref.ref(logits))
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")

    monkeypatch.setattr(pmem.F, "cross_entropy", exploding_loss)
    rows = pmem.measure_memory(TINY, WL, method="real")
    by_phase = {(r.phase, r.component): r for r in rows}
    assert by_phase[("inference", "weights")].status == "ok"
    oom = by_phase[("train_step", "total")]
    assert oom.status == "oom" and "Out of memory" in oom.error and oom.measured_bytes is None
    # the prediction is still shown next to the failure
    assert oom.predicted_bytes == memory_estimate(TINY, WL).training_total_bytes
    gc.collect()
    assert refs and refs[0]() is None
    assert not [r for r in rows if r.phase == "train_step" and r.status == "ok"]


def test_oom_mid_latency_measurement_becomes_an_oom_row(monkeypatch):
    def exploding_loss(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(plat.F, "cross_entropy", exploding_loss)
    rows = plat.measure_latency(TINY, WL, phases=("forward", "train_step"), warmup=0, repeats=1)
    assert [r.status for r in rows] == ["ok", "oom"]
    assert rows[1].warmup == 0 and rows[1].repeats == 1 and rows[1].latency_median_ms is None
