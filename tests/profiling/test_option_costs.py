"""Every registered option (core.options) against the real model, as a DIFFERENCE: switching the option on
changes the closed form's FLOPs (forward and training step) and inference / training memory by what
torch's FlopCounterMode and MemTracker measure on the real model; a cost-neutral option changes nothing.

Tiny model (tests/core/test_option_registry.TINY: d=32, L=2, h=4, dh=8, vocab 50), batch 2, 16 tokens,
float32, CPU under FakeTensorMode. Tolerances are tests/profiling/test_memory.py's, applied to each option's
difference: tensor-size components exact, activations (and the inference total) within 12% of the measured
difference plus 1% of the configuration's measured activations (what a term of a few hundred bytes may be
off by). The training total (a peak reached where not all of weights, gradients, AdamW state and
activations are live) is not compared as a difference: its parts are. ``KNOWN_GAPS`` lists the differences
the closed form misses today, each asserted to be still outside the tolerance (so that a fix shows here).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest
from xtlens.core import cost_model, options
from xtlens.core.config import ModelConfig, Workload
from xtlens.profiling.measure import flops
from xtlens.profiling.measure import memory as pmem

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from options_strategies import NEUTRAL_OPTIONS  # noqa: E402

TINY = ModelConfig(num_tokens=50, max_seq_len=32, dim=32, depth=2, heads=4, attn_dim_head=8)
WL = Workload(batch=2, seq_len=16)
EXACT = ("weights", "buffers", "gradients", "optimizer", "kv_cache", "alibi_bias", "alibi_sdpa_mask")
APPROX = ("inference.activations", "inference.total", "train_step.activations")
ACT_TOL = 0.12
FLOOR_SHARE = 0.01
#: (option, measure) -> what the closed form misses (measured on this tiny model, bytes)
KNOWN_GAPS: dict[tuple[str, str], str] = {}


def _training_flops(cfg: ModelConfig, fc: cost_model.FlopCounts) -> int:
    # CPU SDPA recomputes the scores in backward unless dropout sends it down the math path
    # (tests/profiling/test_flops.py::test_new_options_flops_exact)
    return fc.train_step_flops_flash_recompute if cfg.attn_flash and not cfg.attn_dropout else fc.train_step_flops


@functools.cache
def _measures(cfg: ModelConfig, phase: str) -> dict[str, tuple[int, int]]:
    """measure -> (closed form, real model) for one configuration: FLOPs and memory of ``phase`` ("inference":
    the forward; "train_step": a training step)."""
    fc = cost_model.flop_counts(cfg, WL)
    if phase == "inference":
        out = {"flops.forward": (fc.fwd_flops, flops.torch_flop_count(cfg, WL).total_flops)}
    elif cfg.layer_dropout:  # stochastic depth skips random sub-layers in training
        out = {}
    else:
        out = {"flops.train_step": (_training_flops(cfg, fc),
                                    flops.torch_flop_count(cfg, WL, train_step=True).total_flops)}
    for row in pmem.measure_memory(cfg, WL, phases=(phase,)):
        assert row.status == "ok", row.error
        out[f"{row.phase}.{row.component}"] = (row.predicted_bytes, row.measured_bytes)
    return out


def _differences(name: str, phase: str) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[int, int]]]:
    """(differences: measure -> (closed form, real), the configuration without the option's measures)."""
    off, on = options.switched(TINY, name)
    before, after = _measures(off, phase), _measures(on, phase)
    keys = [k for k in {**before, **after} if k != "train_step.total"]
    diff = {k: tuple(a - b for a, b in zip(after.get(k, (0, 0)), before.get(k, (0, 0)), strict=True)) for k in keys}
    return diff, before


def _within(name: str, key: str, closed: int, real: int, before: dict[str, tuple[int, int]]) -> bool:
    if key.startswith("flops.") or key.split(".")[1] in EXACT:
        return closed == real
    phase = key.split(".")[0]
    allowed = ACT_TOL * abs(real) + FLOOR_SHARE * before[f"{phase}.activations"][1]
    return abs(closed - real) <= allowed


def _check_option(name: str, phase: str) -> set[str]:
    """Assert the option's differences in ``phase``; return what the closed form changes (FLOPS, MEMORY)."""
    diff, before = _differences(name, phase)
    wrong = [f"{key}: closed form {closed:+,}, real model {real:+,}" for key, (closed, real) in diff.items()
             if (name, key) not in KNOWN_GAPS and not _within(name, key, closed, real, before)]
    assert not wrong, f"{name} switched on ({options.OPTIONS[name].value!r}): " + "; ".join(wrong)
    still = [key for (opt, key) in KNOWN_GAPS if opt == name and key.startswith(phase)
             and _within(name, key, *diff[key], before)]
    assert not still, f"{name}: now within tolerance, remove from KNOWN_GAPS: {still}"
    return {options.FLOPS if k.startswith("flops.") else options.MEMORY for k, (closed, _) in diff.items() if closed}


_COST_OPTIONS = [n for n in options.OPTIONS if n not in NEUTRAL_OPTIONS]


@pytest.mark.parametrize("name", _COST_OPTIONS)
def test_forward_flops_and_inference_memory_change_as_the_real_models(name):
    changed = _check_option(name, "inference")
    claimed = options.OPTIONS[name].changes - {options.PARAMS}
    # the registry's claim of what the option changes, against the closed form (attn_flash: training FLOPs)
    assert changed <= claimed, f"{name}: the closed form changes {sorted(changed)}, the registry says {sorted(claimed)}"


@pytest.mark.slow
@pytest.mark.parametrize("name", _COST_OPTIONS)
def test_training_step_flops_and_memory_change_as_the_real_models(name):
    changed = _check_option(name, "train_step") | _check_option(name, "inference")
    claimed = options.OPTIONS[name].changes - {options.PARAMS}
    assert changed == claimed, f"{name}: the registry says it changes {sorted(claimed)}, the closed form {sorted(changed)}"


@pytest.mark.parametrize("name", NEUTRAL_OPTIONS)
def test_cost_neutral_option_changes_nothing(name):
    """Nothing changes, in the closed form or in the real model (for the dropouts: in eval, the inference
    measures; a training step with dropout keeps its masks, which the closed form does not model)."""
    phases = ("inference",) if options.OPTIONS[name].training_assumption else ("inference", "train_step")
    for phase in phases:
        diff, _ = _differences(name, phase)
        assert diff and not {k: v for k, v in diff.items() if v != (0, 0)}, (name, phase)
