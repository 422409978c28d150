"""Issue 8: a CPU job's child runs under an address-space limit derived from the cost model's predicted peak,
an allocation beyond it is an ``oom`` row, and OOM advice names the part that does not fit."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
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


# --- issue 22: bounds that bound something; refusal before the start; every OOM row names the part ---------

SEED_BIG = Workload(batch=64, seq_len=8192)


def fake_ok(what, cfg, wl, *, device, options, config_name, progress):
    from xtlens.profiling.results.records import ProfileRecord, base_fields

    return [ProfileRecord(**base_fields(cfg, wl, config_name=config_name, measurement=what, phase="forward",
                                        device=device, device_name="fake"), predicted_flops=wl.tokens)]


def test_the_limit_is_at_most_the_available_memory(monkeypatch) -> None:
    """The reproducer: 1.5 x the predicted peak + 6 GiB was 3,563 GiB for the seed at batch 64 x 8192.

    MemAvailable moves between two reads (a page here and there), so it is read once and held for the check."""
    from xtlens.core.config import PRESETS
    from xtlens.profiling.run import limits
    from xtlens.profiling.run.limits import machine_available_bytes, predicted_peak_bytes

    seed = PRESETS["seed"]
    bound = BASE_BYTES + int(PEAK_MARGIN * predicted_peak_bytes(seed, SEED_BIG))
    assert bound > 1000 * GIB  # what the prediction alone allows
    available = machine_available_bytes()
    assert available is not None and 0 < available < bound
    monkeypatch.setattr(limits, "machine_available_bytes", lambda: available)
    assert address_space_limit([(seed, SEED_BIG)]) == available
    assert address_space_limit([(seed, SEED_BIG)], available=23 * GIB) == 23 * GIB
    assert address_space_limit([(TINY, Workload())], available=None) == address_space_limit([(TINY, Workload())],
                                                                                             available=10**15)


def test_a_job_predicted_not_to_fit_is_refused_without_starting_a_child(monkeypatch) -> None:
    from xtlens.core.config import PRESETS
    from xtlens.profiling.run import limits, worker

    def no_child(*args, **kwargs):
        raise AssertionError("a child was started for a job predicted not to fit")

    monkeypatch.setattr(worker.subprocess, "Popen", no_child)
    monkeypatch.setattr(limits, "machine_available_bytes", lambda: int(23.5 * GIB))
    spec = JobSpec.make(("memory", "latency"), PRESETS["seed"], [SEED_BIG], SweepOptions(device="cpu", use_cache=False),
                        config_name="seed", time_limit_s=60)
    job = Job(spec)
    assert not job.started and job.done() and job.outcome == "finished"
    rows = job.result()
    need = limits.predicted_need_bytes(PRESETS["seed"], SEED_BIG, "memory") / GIB
    assert [r.status for r in rows] == ["oom", "oom"]
    assert rows[0].error.startswith(f"Not started: measuring memory at batch 64 x 8192 tokens in float32 is predicted "
                                    f"to need {need:,.2f} GiB, but this machine has 23.50 GiB of memory available.")
    assert "activations at this shape are the part that does not fit" in rows[0].error
    # an inference-only latency job needs less than a training one, and says so
    assert limits.predicted_need_bytes(PRESETS["seed"], SEED_BIG, "latency", ("forward",)) < need * GIB


def test_a_job_runs_the_points_that_fit_and_refuses_the_rest(monkeypatch) -> None:
    """The refused point never reaches the child (its measurement would fail the test), the other is measured."""
    from xtlens.core.config import PRESETS
    from xtlens.profiling.run import limits

    seed = PRESETS["seed"]
    small = Workload(batch=1, seq_len=64)
    available = limits.predicted_need_bytes(seed, small, "memory") * 2
    assert limits.predicted_need_bytes(seed, SEED_BIG, "memory") > available
    monkeypatch.setattr(limits, "machine_available_bytes", lambda: available)
    spec = JobSpec.make("memory", seed, [small, SEED_BIG], SweepOptions(device="cpu", use_cache=False),
                        config_name="seed", measure=f"{__file__}:fake_ok", time_limit_s=120)
    rows = Job(spec).wait(timeout=120)
    assert [(r.batch, r.status) for r in rows] == [(1, "ok"), (64, "oom")], [r.error for r in rows]
    assert rows[1].error.startswith("Not started: measuring memory at batch 64 x 8192 tokens")


def test_flop_counts_are_not_refused_for_a_long_sequence() -> None:
    """FLOP counts trace short forwards: their need does not grow with the sequence length."""
    from xtlens.core.config import PRESETS
    from xtlens.profiling.run.limits import predicted_need_bytes, refusal

    seed = PRESETS["seed"]
    assert predicted_need_bytes(seed, SEED_BIG, "flops") == predicted_need_bytes(seed, Workload(batch=64, seq_len=128),
                                                                                "flops")
    assert refusal(seed, SEED_BIG, "flops", available=4 * GIB) is None
    assert refusal(seed, SEED_BIG, "memory", available=None) is None


def _raise_oom(*args, **kwargs):
    raise MemoryError("fake: cannot allocate memory")


def test_an_oom_row_of_every_measurement_kind_names_the_part(monkeypatch) -> None:
    """The reproducer: out-of-memory rows from latency, memory, breakdown and what-if said the generic "try a
    shorter sequence": the failure row was built without the configuration."""
    from xtlens.profiling.measure import breakdown, latency, memory, whatif

    wl = Workload(batch=2, seq_len=32)
    for module, name in ((latency, "_measure_phase"), (memory, "_inference"), (memory, "_train_step"),
                         (breakdown, "_measure_phase"), (whatif, "_run_phase")):
        monkeypatch.setattr(module, name, _raise_oom)
    rows = {
        "latency": latency.measure_latency(TINY, wl, device="cpu", phases=("forward",), warmup=0, repeats=1),
        "memory": memory.measure_memory(TINY, wl, device="cpu"),
        "breakdown": breakdown.measure_breakdown(TINY, wl, device="cpu", phases=("forward",), warmup=0, repeats=1),
        "whatif": whatif.measure_whatif(TINY, wl, device="cpu", implementations=("asbuilt",), warmup=0, repeats=1),
    }
    for kind, got in rows.items():
        assert got and all(r.status == "oom" for r in got), (kind, [(r.status, r.error) for r in got])
        for r in got:
            assert "activations at this shape are the part that does not fit" in r.error, (kind, r.error)
            state = "weights, gradients and AdamW state" if r.phase == "train_step" else "weights"
            assert f"GiB of {state}" in r.error, (kind, r.phase, r.error)
            assert "Details: fake: cannot allocate memory" in r.error


# --- fuzz (bounded): the new entry points never escape ------------------------------------------------------

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def _points(draw):
    from xtlens.core.config import ConfigError

    heads = draw(st.sampled_from([1, 2, 8, 64]))
    try:
        cfg = ModelConfig(num_tokens=draw(st.integers(2, 256_000)), max_seq_len=8192, depth=draw(st.integers(1, 96)),
                          dim=heads * draw(st.sampled_from([8, 64, 128])), heads=heads,
                          attn_dim_head=draw(st.sampled_from([16, 64, 128])))
        wl = Workload(batch=draw(st.integers(1, 4096)), seq_len=draw(st.integers(1, 8192)),
                      dtype=draw(st.sampled_from(["float32", "bfloat16", "float16"])))
    except ConfigError:
        return TINY, Workload()
    return cfg, wl


@FUZZ
@given(_points(), st.sampled_from(["flops", "flops_breakdown", "memory", "latency", "breakdown", "whatif"]),
       st.sampled_from([None, ("forward",), ("train_step",), ("inference", "train_step")]),
       st.one_of(st.none(), st.integers(0, 2**50)))
def test_fuzz_refusal_and_limit(point, what, phases, available) -> None:
    from xtlens.profiling.run.limits import predicted_need_bytes, refusal

    cfg, wl = point
    need = predicted_need_bytes(cfg, wl, what, phases)
    message = refusal(cfg, wl, what, phases, available=available)
    assert need > 0
    assert (message is not None) == (available is not None and need > available)
    if message is not None:
        assert message.startswith(f"Not started: measuring {what} at batch {wl.batch} x {wl.seq_len} tokens")
        assert "does not fit" in message or "too big for this machine" in message
    limit = address_space_limit([(cfg, wl)], available=available)
    assert available is None or limit <= available


@FUZZ
@given(st.lists(st.one_of(st.text(max_size=12), st.sampled_from(["--parent-pid", "--time-limit-s", "none", "nan",
                                                                  "-1", "0", "1e400", "3", "inf", "x.y"])),
                max_size=7))
def test_fuzz_the_child_guard_arguments(args) -> None:
    """The child's first code parses its command line (``profiling.run.child.parse``): a parent PID > 0, a time limit
    that is ``none`` or a non-negative number, a module and a folder; anything else is ``ValueError`` (usage,
    exit 2), never another exception."""
    from xtlens.profiling.run.child import parse

    try:
        parent, limit, module, job_dir = parse(args)
    except ValueError:
        return
    assert parent > 0 and (limit is None or limit >= 0) and module and str(job_dir)


def test_an_in_process_sweep_refuses_a_point_predicted_not_to_fit(monkeypatch) -> None:
    """``xtlens profile --time-limit 0`` runs the sweep in its own process: the same refusal, before measuring."""
    from xtlens.core.config import PRESETS
    from xtlens.profiling.run import sweep

    monkeypatch.setattr(sweep, "machine_available_bytes", lambda: 8 * GIB)
    rows = sweep.run_sweep([("seed", PRESETS["seed"])], [Workload(batch=1, seq_len=64), SEED_BIG], what="memory",
                           options=SweepOptions(device="cpu", use_cache=False), measure=fake_ok)
    assert [(r.batch, r.status) for r in rows] == [(1, "ok"), (64, "oom")]
    assert rows[1].error.startswith("Not started: measuring memory at batch 64 x 8192 tokens in float32")
    assert "8.00 GiB of memory available" in rows[1].error
