"""Issue 8: a CPU job's child runs under an address-space limit derived from the cost model's predicted peak,
an allocation beyond it is an ``oom`` row, and OOM advice names the part that does not fit."""

from __future__ import annotations

from xtlens.core.config import ModelConfig, Workload
from xtlens.core.cost_model import memory_estimate, param_counts
from xtlens.profiling.run.limits import BASE_BYTES, PEAK_MARGIN, address_space_limit, what_does_not_fit
from xtlens.profiling.run.plan import SweepOptions, seq_len_workloads
from xtlens.profiling.run.worker import Job, JobSpec

TINY = ModelConfig(num_tokens=64, max_seq_len=256, dim=32, depth=1, heads=2, attn_dim_head=16)
BIG = ModelConfig(num_tokens=128000, max_seq_len=8192, dim=8192, depth=80, heads=64, rotary_pos_emb=True)
GIB = 2**30


def fake_allocates_beyond_the_limit(what, cfg, wl, *, device, options, config_name, progress):
    """Asks for 8 GiB at once: more than a TINY job's address-space limit allows (BASE_BYTES + a little)."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    assert soft != resource.RLIM_INFINITY, "the child runs without an address-space limit"
    bytearray(8 * GIB)
    raise AssertionError("8 GiB were granted despite the limit")


def test_the_limit_is_the_predicted_peak_with_a_margin() -> None:
    wl = Workload(batch=2, seq_len=128)
    est = memory_estimate(TINY, wl)
    peak = max(est.training_total_bytes, est.inference_total_bytes) + 4 * param_counts(TINY).num_params
    assert address_space_limit([(TINY, wl)]) == BASE_BYTES + int(PEAK_MARGIN * peak)
    longer = Workload(batch=2, seq_len=256)
    assert address_space_limit([(TINY, wl), (TINY, longer)]) == address_space_limit([(TINY, longer)])


def test_an_allocation_beyond_the_limit_is_an_oom_row_naming_the_activations() -> None:
    spec = JobSpec.make("memory", TINY, seq_len_workloads([64]), SweepOptions(device="cpu", use_cache=False),
                        config_name="tiny", measure=f"{__file__}:fake_allocates_beyond_the_limit", time_limit_s=120)
    rows = Job(spec).wait(timeout=120)
    assert [r.status for r in rows] == ["oom"], [r.error for r in rows]
    assert "activations at this shape are the part that does not fit" in rows[0].error


def test_oom_advice_names_the_weights_when_the_model_itself_does_not_fit() -> None:
    wl = Workload(batch=1, seq_len=128)
    advice = what_does_not_fit(BIG, wl, training=False, available=24 * GIB)
    weights = memory_estimate(BIG, wl).weights_bytes
    assert f"weights alone are predicted to need {weights / GIB:.2f} GiB" in advice
    assert "a shorter sequence will not help" in advice
    small = what_does_not_fit(TINY, Workload(batch=4096, seq_len=256), training=True, available=1)
    assert small.startswith("The model's weights, gradients and AdamW state alone")
    assert "activations" in what_does_not_fit(TINY, Workload(batch=4096, seq_len=256), training=True,
                                              available=24 * GIB)
