"""``core.presets.config_label``: a readable name from the differences to the nearest preset."""

from __future__ import annotations

from dataclasses import fields

import pytest
from xtlens.core.config import ModelConfig
from xtlens.core.presets import LABEL_MAX_FIELDS, PRESETS, config_label

SEED = PRESETS["seed"]


def test_the_seed_is_called_seed():
    assert config_label(SEED) == "seed"


def test_the_seed_with_dim_80_names_the_difference():
    assert config_label(SEED.replace(dim=80)) == "seed · dim=80"


@pytest.mark.parametrize("name", list(PRESETS))
def test_each_preset_gets_its_own_name(name):
    assert config_label(PRESETS[name]) == name


def test_a_config_nearer_another_preset_gets_that_presets_name():
    # seed-mha differs from the seed in one field (attn_one_kv_head); one more change keeps it nearest seed-mha
    cfg = PRESETS["seed-mha"].replace(depth=4)
    assert config_label(cfg) == "seed-mha · depth=4"
    gpt = PRESETS["gpt2-small-shape"].replace(dim=1024, heads=16)
    assert config_label(gpt) == "gpt2-small-shape · dim=1024 · heads=16"


def test_differences_follow_the_field_order_not_the_call_order():
    cfg = SEED.replace(shift_tokens=0, depth=4, dim=80)
    order = [f.name for f in fields(ModelConfig)]
    assert order.index("dim") < order.index("depth") < order.index("shift_tokens")
    assert config_label(cfg) == "seed · dim=80 · depth=4 · shift_tokens=0"


def test_more_than_four_differences_say_how_many_more():
    cfg = SEED.replace(dim=80, depth=4, heads=4, attn_dim_head=32, ff_mult=2.5, num_tokens=1000)
    label = config_label(cfg)
    assert LABEL_MAX_FIELDS == 4
    assert label == "seed · num_tokens=1000 · dim=80 · depth=4 · heads=4 · +2 more"


def test_deterministic_and_distinct_for_distinct_single_changes():
    labels = [config_label(SEED.replace(dim=d)) for d in (72, 80, 96)]
    assert labels == ["seed · dim=72", "seed · dim=80", "seed · dim=96"]
    assert labels == [config_label(SEED.replace(dim=d)) for d in (72, 80, 96)]
