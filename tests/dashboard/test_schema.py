"""The dashboard schema is derived from ModelConfig's field metadata: every field has a control, a URL
round-trip and a description, and a field added without them is named by a failing check."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
from streamlit.testing.v1 import AppTest
from xtlens.core.config import PRESETS, ConfigError, ModelConfig
from xtlens.dashboard import schema

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
FIELDS = [f.name for f in dataclasses.fields(ModelConfig)]


def test_every_field_has_a_control_a_url_round_trip_and_a_description():
    assert schema.missing_parts(ModelConfig) == []
    assert [s.name for s in schema.CONFIG_FIELDS] == FIELDS
    for spec in schema.CONFIG_FIELDS:
        assert spec.help.strip() and spec.kind in schema.KINDS and spec.group in schema.FIELDS_BY_GROUP


def test_a_bare_boolean_field_is_named_with_what_it_lacks():
    """Adding ``my_flag: bool = False`` to ModelConfig with no other change fails the check above."""
    variant = dataclasses.make_dataclass(
        "ModelConfigWithNewFlag", [("my_flag", bool, dataclasses.field(default=False))], bases=(ModelConfig,),
        frozen=True, kw_only=True)
    problems = schema.missing_parts(variant)
    assert problems == ["my_flag: no control (field metadata 'kind' must be one of int, opt_int, float, bool)"]
    # with a control kind but no description and a group the sidebar does not have
    variant2 = dataclasses.make_dataclass(
        "ModelConfigWithNewFlag2", [("my_flag", bool, dataclasses.field(default=False, metadata={"kind": "bool"}))],
        bases=(ModelConfig,), frozen=True, kw_only=True)
    problems = schema.missing_parts(variant2)
    assert any(p.startswith("my_flag: no control (field metadata 'group'") for p in problems)
    assert "my_flag: no description (field metadata 'description')" in problems


def test_a_field_whose_url_value_does_not_come_back_is_named():
    meta = {"kind": "int", "group": "size", "description": "d", "lo": 0, "hi": 9, "step": 1}
    variant = dataclasses.make_dataclass(
        "ModelConfigWithBadType", [("my_count", bool, dataclasses.field(default=False, metadata=meta))],
        bases=(ModelConfig,), frozen=True, kw_only=True)
    assert schema.missing_parts(variant) == ["my_count: control kind 'int' does not match its type <class 'bool'>"]


@pytest.mark.parametrize("name", FIELDS)
def test_each_field_url_value_decodes_with_the_config_decoder(name):
    cfg = PRESETS["plain-prenorm"]
    raw = dict(parse_qsl(cfg.to_query()))[name]
    assert schema.decode(schema.CONFIG_SPECS[name], raw) == getattr(cfg, name)


def test_one_url_decoder_and_its_errors_name_the_field():
    with pytest.raises(ConfigError) as info:
        schema.decode(schema.CONFIG_SPECS["macaron"], "maybe")
    assert info.value.field == "macaron" and "true or false" in str(info.value)
    with pytest.raises(ValueError, match=r"batch = '0' is not allowed: a value from 1 to 4096"):
        schema.decode(schema.WORKLOAD_SPECS["batch"], "0")
    assert not hasattr(schema, "_decode_value")
    import xtlens.core.config as config

    assert not hasattr(config, "_decode_value")  # the one decoder is config.decode_value


def test_the_sidebar_draws_a_control_for_every_field_and_the_url_sets_it():
    cfg = PRESETS["plain-prenorm"].replace(use_rmsnorm=True, macaron=True, attn_num_mem_kv=3, num_residual_streams=2,
                                            rotary_emb_dim=16, ff_dropout=0.25)
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.query_params.update(dict(parse_qsl(cfg.to_query())))
    at.run()
    assert not at.exception
    keys = {w.key for w in list(at.checkbox) + list(at.number_input)}
    assert {f"cfg.{name}" for name in FIELDS} <= keys
    assert at.checkbox(key="cfg.use_rmsnorm").value is True and at.checkbox(key="cfg.macaron").value is True
    assert at.number_input(key="cfg.attn_num_mem_kv").value == 3
    assert at.number_input(key="cfg.rotary_emb_dim").value == 16
    assert at.number_input(key="cfg.ff_dropout").value == 0.25
    assert dict(at.query_params)["num_residual_streams"] == "2"
    # no 1.19.1 parameter count is claimed for options modelled for 2.31 only
    assert any("1.19.1 comparison: not made" in i.value for i in at.info)
    assert "x-transformers 1.19.1" not in [m.label for m in at.metric]
