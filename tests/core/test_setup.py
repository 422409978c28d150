"""Training and serving setups: validation naming the field, URL round-trips, the per-device memory model by
stage, recomputation / tensor-parallel FLOPs, quantised sizes and what fits (closed form, no torch)."""

from __future__ import annotations

import dataclasses
import time

import pytest
from xtlens.core import cost_model as cm
from xtlens.core.config import PRESETS, ConfigError, Workload
from xtlens.core.setup import GPU_PRESETS_GIB, ServingSetup, TrainingSetup

SEED = PRESETS["seed"]


@pytest.mark.parametrize(("kwargs", "field", "fragment"), [
    ({"zero": 3}, "zero", "dp >= 2"),
    ({"zero": 1, "dp": 1}, "zero", "dp >= 2"),
    ({"zero": 4, "dp": 2}, "zero", "0 to 3"),
    ({"dp": 0}, "dp", "1 to"),
    ({"precision": "fp8"}, "precision", "amp_bf16"),
    ({"optimizer": "lion"}, "optimizer", "adamw"),
    ({"recompute": "full"}, "recompute", "selective"),
    ({"grad_accum": 0}, "grad_accum", "1 to"),
    ({"loop": "other"}, "loop", "keep_logits"),
])
def test_training_setup_rejects_bad_input_naming_the_field(kwargs, field, fragment) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        TrainingSetup(**kwargs)
    assert info.value.field == field and str(info.value).startswith(field)


def test_tensor_parallel_must_split_heads_and_kv_heads() -> None:
    with pytest.raises(ConfigError, match="divisor of heads = 8") as info:
        TrainingSetup(tp=3).check_against(SEED)
    assert info.value.field == "tp"
    gqa = SEED.replace(attn_one_kv_head=False, attn_kv_heads=4)
    TrainingSetup(tp=4).check_against(gqa)  # 4 K/V heads over 4 ranks
    TrainingSetup(tp=8).check_against(gqa)  # each K/V head replicated on 2 ranks
    with pytest.raises(ConfigError, match="K/V heads = 3") as info:
        TrainingSetup(tp=2).check_against(SEED.replace(heads=6, attn_one_kv_head=False, attn_kv_heads=3))
    assert info.value.field == "tp"
    TrainingSetup(tp=2).check_against(SEED)  # one K/V head replicated (multi-query attention)


def test_serving_setup_group_size_must_divide_the_linear_widths() -> None:
    with pytest.raises(ConfigError, match="divisor of dim = 512") as info:
        ServingSetup(weights_bits=4, group_size=96).check_against(SEED)
    assert info.value.field == "group_size"
    with pytest.raises(ConfigError, match="feed-forward width"):
        ServingSetup(weights_bits=8, group_size=256).check_against(SEED.replace(ff_mult=4.25))  # f = 2176
    ServingSetup(weights_bits=16, group_size=96).check_against(SEED)  # not quantised: no group rule
    for kwargs, field in (({"weights_bits": 3}, "weights_bits"), ({"kv_cache": "int4"}, "kv_cache"),
                          ({"concurrent": 0}, "concurrent")):
        with pytest.raises(ConfigError) as info:
            ServingSetup(**kwargs)
        assert info.value.field == field


def test_setups_round_trip_through_the_url_and_dicts() -> None:
    t = TrainingSetup(precision="amp_bf16", optimizer="sgd", recompute="block", grad_accum=4, dp=8, zero=3, tp=2,
                      loop="keep_logits")
    s = ServingSetup(weights_bits=4, group_size=64, kv_cache="fp8", concurrent=16, context_len=4096)
    query = t.to_query() + "&" + s.to_query() + "&dim=512&seq_len=128"
    assert TrainingSetup.from_query(query) == t and ServingSetup.from_query(query) == s
    assert TrainingSetup.from_dict(t.to_dict()) == t and ServingSetup.from_dict(s.to_dict()) == s
    assert TrainingSetup().to_query() == "" and ServingSetup.from_query("") == ServingSetup()
    with pytest.raises(ConfigError) as info:
        TrainingSetup.from_query("t_zero=2")
    assert info.value.field == "zero"


@pytest.mark.parametrize("name", ["seed", "seed-no-alibi", "seed-mha"])
def test_without_setups_the_predictions_are_todays(name: str) -> None:
    cfg, wl = PRESETS[name], Workload(seq_len=1024)
    assert cm.predictions(cfg, wl, training=None, serving=None) == cm.predictions(cfg, wl)
    mem = cm.memory_estimate(cfg, wl)
    # the default serving setup changes nothing in the inference rows
    served = {r.quantity: r.value for r in cm.predictions(cfg, wl, serving=ServingSetup()) if r.phase == "inference"}
    today = {r.quantity: r.value for r in cm.predictions(cfg, wl) if r.phase == "inference"}
    assert served == today and served["inference_total_bytes"] == mem.inference_total_bytes


def test_default_setup_keeps_every_size_and_orders_the_peak() -> None:
    """The default setup's sizes are today's terms; its peak is the largest stage, not their sum."""
    for n in (512, 2048, 8192):
        wl = Workload(seq_len=n)
        mem, tm = cm.memory_estimate(SEED, wl), cm.training_memory(SEED, wl, TrainingSetup())
        assert (tm.weights_bytes, tm.grads_bytes, tm.optimizer_bytes, tm.activation_bytes, tm.loss_bytes) == (
            mem.weights_bytes, mem.grads_bytes, mem.adamw_state_bytes, mem.activation_bytes_training,
            mem.loss_bytes_training)
        assert tm.peak_bytes == max(tm.stages_bytes.values())
        if n == 512:  # optimizer state and gradients dominate: they are never alive with all activations
            assert tm.peak_bytes < mem.training_total_bytes - mem.grads_bytes // 2
        # at the start of backward the gradients do not exist yet (zero_grad(set_to_none=True))
        T, V = wl.tokens, SEED.num_tokens
        assert tm.stages_bytes["backward_start"] == (mem.weights_bytes + mem.buffers_bytes + mem.adamw_state_bytes
                                                     + mem.activation_bytes_training - T * V * 4
                                                     + mem.loss_bytes_training + 2 * T * V * 4)


@pytest.mark.parametrize("setup", [
    TrainingSetup(), TrainingSetup(precision="amp_bf16", recompute="block"), TrainingSetup(dp=4, zero=3, tp=2),
    TrainingSetup(optimizer="adafactor", grad_accum=3, loop="keep_logits"), TrainingSetup(precision="bf16"),
    TrainingSetup(recompute="selective", optimizer="adamw8bit", dp=2, zero=1)], ids=lambda s: s.to_query() or "default")
def test_setup_rows_add_up_and_join_the_vocabulary(setup: TrainingSetup) -> None:
    wl = Workload(seq_len=2048, batch=2)
    rows = cm.predictions(SEED, wl, training=setup)
    total = cm.predicted(rows, phase="train_step", component="total", unit="bytes")
    parts = [cm.predicted(rows, phase="train_step", component=f"peak.{p}", unit="bytes") for p in cm.SETUP_PEAK_PARTS]
    assert all(p is not None and p >= 0 for p in parts) and sum(parts) == total
    tm = cm.training_memory(SEED, wl, setup)
    assert total == tm.peak_bytes
    stage = next(r.variant for r in rows if r.component == "peak.weights")
    assert stage == tm.peak_stage and tm.stages_bytes[stage] == total
    for comp, value in (("weights", tm.weights_bytes), ("gradients", tm.grads_bytes), ("optimizer", tm.optimizer_bytes),
                        ("activations", tm.activation_bytes)):
        assert cm.predicted(rows, phase="train_step", component=comp, unit="bytes") == value, comp
    assert len({r.quantity for r in rows}) == len(rows)  # estimate() keys stay unique


def test_precision_zero_and_tp_scale_the_state_as_stated() -> None:
    wl = Workload(seq_len=512)
    P, n = cm.param_counts(SEED).num_params, len(cm.param_shapes(SEED))
    amp = cm.training_memory(SEED, wl, TrainingSetup(precision="amp_bf16"))
    assert (amp.weights_bytes, amp.grads_bytes, amp.optimizer_bytes) == (4 * P, 4 * P, 8 * P + 4 * n)
    pc = cm.param_counts(SEED)
    assert amp.activation_breakdown_bytes["autocast_weight_copies"] == 2 * (pc.attention_params + pc.feedforward_params
                                                                            + pc.logits_params)
    pure = cm.training_memory(SEED, wl, TrainingSetup(precision="bf16"))
    assert (pure.weights_bytes, pure.optimizer_bytes) == (2 * P, 4 * P + 4 * n)
    for zero, shards in ((1, ("optimizer",)), (2, ("optimizer", "grads")), (3, ("optimizer", "grads", "weights"))):
        z = cm.training_memory(SEED, wl, TrainingSetup(dp=4, zero=zero))
        assert z.weights_bytes == (P if "weights" in shards else 4 * P)
        assert z.grads_bytes == (P if "grads" in shards else 4 * P)
        assert z.optimizer_bytes == 2 * P + 4 * n
    tp2 = cm.tp_params(SEED, 2)
    # the feed-forward output biases belong to row-parallel layers: whole on every rank (Megatron-LM)
    out_biases = SEED.num_ff_layers * SEED.dim
    split = pc.attention_params + pc.feedforward_params - out_biases + pc.token_embedding_params + pc.logits_params
    assert tp2 == split // 2 + P - split and cm.tp_params(SEED, 1) == P


def test_param_shapes_add_up_to_the_parameter_count() -> None:
    for cfg in (SEED, PRESETS["seed-mha"], SEED.replace(deepnorm=False, attn_gate_values=True, attn_num_mem_kv=2,
                                                        macaron=True, ff_no_bias=True, tie_embedding=True)):
        shapes = cm.param_shapes(cfg)
        pc = cm.param_counts(cfg)
        assert sum(cm.numel(s) for s in shapes) == pc.num_params and len(shapes) == pc.num_param_tensors


def test_optimizers_state_formulas() -> None:
    P = cm.param_counts(SEED).num_params
    shapes = cm.param_shapes(SEED)
    assert cm.optimizer_state_bytes_for(SEED, "adamw", 4) == cm.optimizer_state_bytes(SEED, Workload())
    assert cm.optimizer_state_bytes_for(SEED, "sgd", 4) == 4 * P
    # Adafactor: (V, d) tables keep V + d; 1-D tensors their size; one float32 step each
    fact = cm.optimizer_state_bytes_for(SEED, "adafactor", 4)
    assert fact == 4 * sum(s[0] + s[1] if len(s) == 2 else s[0] for s in shapes) + 4 * len(shapes)
    assert fact < P  # far below AdamW's 8 bytes per parameter
    eight = cm.optimizer_state_bytes_for(SEED, "adamw8bit", 4)
    assert 2 * P < eight < 2.1 * P


def test_recompute_and_tp_flops() -> None:
    wl = Workload(seq_len=1024)
    fc = cm.flop_counts(SEED, wl)
    base = cm.estimate(SEED, wl, training=TrainingSetup())
    block = cm.estimate(SEED, wl, training=TrainingSetup(recompute="block"))
    sel = cm.estimate(SEED, wl, training=TrainingSetup(recompute="selective"))
    assert base["train_step_flops"] == fc.train_step_flops and base["recompute_flops"] == 0
    ff_out = SEED.depth * 2 * 1024 * SEED.ff_inner_dim * SEED.dim
    assert block["train_step_flops"] - base["train_step_flops"] == (fc.fwd_flops - fc.logits_flops - fc.out_proj_flops
                                                                    - ff_out) == block["recompute_flops"]
    assert sel["train_step_flops"] - base["train_step_flops"] == fc.attn_flops
    tp = cm.estimate(SEED, wl, training=TrainingSetup(tp=2, grad_accum=4))
    assert tp["train_step_flops"] == base["train_step_flops"] // 2
    assert tp["optimizer_step_flops"] == 4 * cm.training_flops_for(SEED, wl, TrainingSetup(tp=2))["train_step_flops"]


def test_quantised_serving_sizes() -> None:
    wl = Workload(seq_len=4096, batch=2)
    P = cm.param_counts(SEED).num_params
    assert cm.serving_weight_bytes(SEED, wl, ServingSetup()) == 4 * P
    assert cm.serving_weight_bytes(SEED, wl, ServingSetup(weights_bits=16)) == 2 * P
    linear = sum(o * i for o, i in cm.linear_shapes(SEED))
    int8 = cm.serving_weight_bytes(SEED, wl, ServingSetup(weights_bits=8, group_size=128))
    int4 = cm.serving_weight_bytes(SEED, wl, ServingSetup(weights_bits=4, group_size=128))
    assert int8 == linear + linear // 128 * 2 + (P - linear) * 2
    assert int4 == linear // 2 + linear // 128 * 4 + (P - linear) * 2
    assert cm.quantised_linear_bytes(512, 512, 4, 64) == 512 * 256 + 512 * 8 * 4
    per_token = {kv: cm.serving_kv_bytes_per_token(SEED, wl, ServingSetup(kv_cache=kv)) for kv in ("16", "fp8", "int8")}
    assert per_token == {"16": 2 * 6 * 64 * 2, "fp8": 2 * 6 * 64, "int8": 2 * 6 * 64 + 2 * 6 * 2}
    sm = cm.serving_memory(SEED, wl, ServingSetup(kv_cache="fp8", concurrent=8, context_len=512))
    assert sm.kv_cache_bytes == per_token["fp8"] * 8 * 512
    rows = cm.predictions(SEED, wl, serving=ServingSetup(weights_bits=4, kv_cache="int8"))
    stack = [cm.predicted(rows, phase="inference", component=c, unit="bytes") for c in cm.MEMORY_STACK["inference"]]
    assert sum(stack) == cm.predicted(rows, phase="inference", component="total", unit="bytes")


def test_what_fits_is_the_boundary() -> None:
    wl = Workload(seq_len=2048, batch=1)
    budget = int(GPU_PRESETS_GIB["RTX 4090 24GB"] * 2**30)
    setup = TrainingSetup(precision="amp_bf16")
    fits = cm.what_fits(SEED, wl, budget, training=setup)
    b = fits["fits_train_batch"]
    assert b > 1
    assert cm.training_memory(SEED, dataclasses.replace(wl, batch=b), setup).peak_bytes <= budget
    assert cm.training_memory(SEED, dataclasses.replace(wl, batch=b + 1), setup).peak_bytes > budget
    n = fits["fits_serve_seq_len_tokens"]
    assert n == SEED.max_seq_len or cm.serving_memory(SEED, wl, ServingSetup(context_len=n + 1)).total_bytes > budget
    assert cm.what_fits(SEED, wl, 10**6)["fits_train_batch"] == 0  # 1 MB holds not even the weights
    # recomputation lets a longer sequence fit on a small card
    small = 4 * 2**30
    assert (cm.what_fits(SEED, Workload(), small, training=TrainingSetup(recompute="block"))["fits_train_seq_len_tokens"]
            > cm.what_fits(SEED, Workload(), small)["fits_train_seq_len_tokens"])


def test_what_fits_is_fast_enough_for_a_slider() -> None:
    start = time.perf_counter()
    for depth in (4, 6, 8, 12):
        cm.what_fits(SEED.replace(depth=depth), Workload(seq_len=2048), 80 * 2**30)
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("weights_bits", [None, 16, 8])
def test_a_context_longer_than_max_seq_len_is_refused_naming_both(weights_bits) -> None:
    short = dataclasses.replace(SEED, max_seq_len=1024)
    with pytest.raises(ConfigError, match=r"context_len = 8192 .*max_seq_len = 1024"):
        ServingSetup(weights_bits=weights_bits, context_len=8192).check_against(short)
    assert ServingSetup(weights_bits=weights_bits, context_len=1024).check_against(short).context_len == 1024


def test_the_cli_refuses_context_len_beyond_max_seq_len(capsys) -> None:
    from xtlens.profiling.cli import main

    assert main(["estimate", "--set", "max_seq_len=1024", "--context-len", "8192"]) == 2
    err = capsys.readouterr().err
    assert "8192" in err and "max_seq_len = 1024" in err and "Traceback" not in err
