"""Issue 21, points 4-6 headless (AppTest): a control the other flags make irrelevant is disabled with the reason
beside it (a caption, not only a tooltip); the training FLOPs and the training peak are one number on Overview,
FLOPs, Memory and Setups, labelled with their setup; the Memory tables show byte counts with thousands separators.
The same numbers are read in Chromium by tests/dashboard/test_browser_consistency.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from xtlens.core import cost_model
from xtlens.core.config import PRESETS, Workload, inert_fields
from xtlens.core.setup import TrainingSetup
from xtlens.core.units import fmt_bytes, fmt_flops

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
SEED = PRESETS["seed"]
WL = Workload()
PEAK = "Training peak (AdamW, no recomputation)"
UPPER = "Training upper bound (sum of parts, AdamW)"
FLOPS = "Training-step FLOPs (no recomputation)"


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _captions(at: AppTest) -> str:
    return " ".join(c.value for c in at.sidebar.caption)


@pytest.fixture(scope="module")
def seed_app() -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=120).run()


def test_pre_norm_is_disabled_under_deepnorm_with_the_reason_beside_it(seed_app: AppTest) -> None:
    at = seed_app
    assert not at.exception, [e.value for e in at.exception]
    assert at.checkbox(key="cfg.deepnorm").value is True
    pre_norm = at.checkbox(key="cfg.pre_norm")
    assert pre_norm.value is True and pre_norm.disabled
    words = _captions(at)
    assert "**pre_norm** has no effect here: deepnorm is on" in words
    # every field core.config calls inert for the seed is disabled and explained; the others are live
    for name, why in inert_fields(SEED).items():
        assert at.checkbox(key=f"cfg.{name}").disabled, name
        assert why in words
    assert not at.checkbox(key="cfg.rotary_xpos").disabled and not at.number_input(key="cfg.alibi_num_heads").disabled
    # deepnorm off: pre_norm matters again, its reason disappears; ALiBi off: alibi_num_heads is disabled
    at.checkbox(key="cfg.deepnorm").uncheck().run()
    assert not at.checkbox(key="cfg.pre_norm").disabled
    assert "deepnorm is on" not in _captions(at)
    at.checkbox(key="cfg.alibi_pos_bias").uncheck().run()
    assert at.number_input(key="cfg.alibi_num_heads").disabled
    assert "**alibi_num_heads** has no effect here: alibi_pos_bias is off" in _captions(at)
    assert not at.exception, [e.value for e in at.exception]


def test_training_numbers_are_one_number_across_tabs() -> None:
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    head = cost_model.training_headline(SEED, WL)
    peak = cost_model.training_memory(SEED, WL, TrainingSetup()).peak_bytes
    flops = cost_model.training_flops_for(SEED, WL, TrainingSetup())["train_step_flops"]
    assert head.peak_bytes == peak and head.step_flops == flops
    # why 200.622 G became 207.064 G: 3 x forward plus the scores the fused (attn_flash) backward recomputes
    assert fmt_flops(3 * cost_model.flop_counts(SEED, WL).fwd_flops) == "200.622 GFLOPs"
    assert fmt_flops(head.fused_score_flops) == "6.442 GFLOPs" and fmt_flops(flops) == "207.064 GFLOPs"
    seen = {}
    for view in ("Overview", "FLOPs", "Memory", "Setups"):
        at.session_state["view"] = view
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        seen[view] = _metrics(at)
    assert seen["Overview"][PEAK] == seen["Memory"][PEAK] == fmt_bytes(peak) == "1.057 GiB"
    assert seen["Setups"]["Training peak per device (AdamW, no recomputation)"] == fmt_bytes(peak)
    assert seen["Memory"][UPPER] == fmt_bytes(head.upper_bound_bytes) == "1.117 GiB"
    assert seen["Overview"][FLOPS] == seen["FLOPs"][FLOPS] == fmt_flops(flops)
    assert seen["Setups"]["Training-step FLOPs per device (no recomputation)"] == fmt_flops(flops)
    # no other training-memory or training-FLOPs number without its setup in the label
    for view, metrics in seen.items():
        for label in metrics:
            if label.startswith("Training") and ("peak" in label or "FLOPs" in label or "memory" in label):
                assert "(" in label, (view, label)


def test_memory_tables_show_thousands_separators() -> None:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["view"] = "Memory"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    frames = [d for d in at.dataframe if "total_bytes" in d.value.columns]
    assert frames, "no memory table"
    config = frames[0].proto.columns  # the column configuration sent to the browser (JSON)
    assert '"total_bytes"' in config and '"localized"' in config
    assert frames[0].value["total_bytes"].dtype.kind == "i"  # the data (and its downloads) keep raw integers
