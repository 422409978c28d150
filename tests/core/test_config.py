"""ModelConfig: validation messages name the field, round-trips are exact, the snippet parser never evaluates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from xtlens.core.config import (
    PRESETS,
    SEED_SNIPPET,
    ConfigError,
    ModelConfig,
    Workload,
    parse_snippet,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from options_strategies import model_configs  # noqa: E402

SEED = PRESETS["seed"]


def test_seed_preset_equals_the_snippet_in_the_developers_guide():
    assert parse_snippet(SEED_SNIPPET) == SEED
    assert SEED.to_dict() == {
        "num_tokens": 20000, "max_seq_len": 8192, "use_abs_pos_emb": False, "tie_embedding": False,
        "dim": 512, "depth": 6, "heads": 8, "attn_dim_head": 64, "ff_mult": 4, "ff_glu": False,
        "attn_one_kv_head": True, "attn_kv_heads": None, "attn_flash": True, "alibi_pos_bias": True,
        "alibi_num_heads": 4, "rotary_pos_emb": False, "rotary_xpos": True, "deepnorm": True, "shift_tokens": 1,
        **XT231_DEFAULTS,
    }


# the x-transformers 2.31 options xtlens models, at x-transformers' defaults (x_transformers.py:2771-2835,
# 1772-1778, 1877-1894, 3985)
XT231_DEFAULTS = {
    "use_rmsnorm": False, "use_simple_rmsnorm": False, "use_scalenorm": False, "ff_swish": False,
    "ff_relu_squared": False, "ff_no_bias": False, "attn_qk_norm": False, "attn_gate_values": False,
    "attn_num_mem_kv": 0, "rotary_emb_dim": None, "rel_pos_bias": False, "sandwich_norm": False,
    "residual_attn": False, "macaron": False, "pre_norm": True, "num_residual_streams": 1,
    "emb_dropout": 0.0, "attn_dropout": 0.0, "ff_dropout": 0.0, "layer_dropout": 0.0,
}


def test_derived_quantities_follow_x_transformers():
    assert SEED.kv_heads == 1  # multi-query
    assert SEED.alibi_heads == 4  # 4 of 8 heads
    assert SEED.uses_rotary and SEED.rotary_dim == 32
    assert SEED.attn_inner_dim == 8 * 64  # heads * attn_dim_head, not dim
    assert SEED.replace(dim=1024).attn_inner_dim == 512
    assert not SEED.has_abs_pos_emb
    assert SEED.ff_inner_dim == 2048
    assert SEED.replace(alibi_pos_bias=False).alibi_heads == 0
    assert SEED.replace(alibi_num_heads=None).alibi_heads == 8
    assert SEED.replace(attn_one_kv_head=False).kv_heads == 8
    assert SEED.replace(attn_one_kv_head=False, attn_kv_heads=2).kv_heads == 2
    # rotary disables the learned absolute table even when use_abs_pos_emb is asked for
    assert not SEED.replace(use_abs_pos_emb=True).has_abs_pos_emb
    assert SEED.replace(use_abs_pos_emb=True, rotary_xpos=False).has_abs_pos_emb


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"dim": 0}, "dim", "from 8 to 32768"),
        ({"depth": 0}, "depth", "from 1 to 512"),
        ({"heads": -1}, "heads", "from 1 to 512"),
        ({"heads": 2.5}, "heads", "an integer"),
        ({"num_tokens": 1}, "num_tokens", "from 2"),
        ({"max_seq_len": 0}, "max_seq_len", "from 1"),
        ({"alibi_num_heads": 9}, "alibi_num_heads", "from 1 to 8"),
        ({"alibi_num_heads": 0}, "alibi_num_heads", "from 1 to 8"),
        ({"attn_kv_heads": 2}, "attn_kv_heads", "attn_one_kv_head"),
        ({"attn_one_kv_head": False, "attn_kv_heads": 3}, "attn_kv_heads", "divisor of heads = 8"),
        ({"attn_one_kv_head": False, "attn_kv_heads": 16}, "attn_kv_heads", "from 1 to 8"),
        ({"attn_dim_head": 6}, "attn_dim_head", "multiple of 4"),
        ({"attn_dim_head": 2}, "attn_dim_head", "from 4"),
        ({"attn_dim_head": 4}, "attn_dim_head", "from 8 up with rotary"),
        ({"ff_mult": 0}, "ff_mult", "from 0.125"),
        ({"ff_mult": True}, "ff_mult", "a number"),
        ({"shift_tokens": -1}, "shift_tokens", "from 0"),
        ({"dim": 8, "shift_tokens": 8}, "shift_tokens", "less than dim"),
        ({"deepnorm": "yes"}, "deepnorm", "true or false"),
        ({"attn_flash": 1}, "attn_flash", "true or false"),
    ],
)
def test_each_rule_names_the_field_and_the_allowed_range(changes, field, fragment):
    with pytest.raises(ConfigError) as info:
        SEED.replace(**changes)
    assert info.value.field == field
    assert str(info.value).startswith(field)
    assert fragment in str(info.value)


def test_attn_dim_head_not_multiple_of_4_is_fine_without_rotary():
    cfg = SEED.replace(rotary_xpos=False, attn_dim_head=6)
    assert cfg.attn_inner_dim == 48


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"batch": 0}, "batch"), ({"seq_len": 0}, "seq_len"), ({"dtype": "int8"}, "dtype")],
)
def test_workload_validation(kwargs, field):
    with pytest.raises(ConfigError) as info:
        Workload(**kwargs)
    assert info.value.field == field


def test_workload_longer_than_the_model_accepts():
    with pytest.raises(ConfigError, match=r"seq_len = 9000 is not allowed: an integer from 1 to max_seq_len = 8192"):
        Workload(seq_len=9000).check_against(SEED)
    assert Workload(seq_len=8192, dtype="bfloat16").check_against(SEED).dtype_bytes == 2


# --- round trips ---

@st.composite
def _round_trip_sizes(draw) -> dict[str, object]:
    return {"num_tokens": draw(st.integers(2, 100_000)), "max_seq_len": 8192, "dim": draw(st.integers(8, 4096)),
            "depth": draw(st.integers(1, 64)), "heads": draw(st.sampled_from([1, 2, 3, 4, 6, 8, 12, 16])),
            "attn_dim_head": 4 * draw(st.integers(2, 64)),
            "ff_mult": draw(st.one_of(st.integers(1, 8), st.sampled_from([0.5, 1.5, 2.6666666666666665, 3.25])))}


# every registered option (tests/options_strategies.py), with wider numbers where a round trip could break
valid_configs = model_configs(_round_trip_sizes(), values={
    "alibi_num_heads": st.one_of(st.none(), st.integers(1, 16)), "shift_tokens": st.integers(0, 4),
    "attn_num_mem_kv": st.integers(0, 16), "num_residual_streams": st.integers(1, 4),
    "emb_dropout": st.sampled_from([0.0, 0.1, 0.5]), "layer_dropout": st.sampled_from([0.0, 0.25]),
})


@settings(max_examples=150, deadline=None)
@given(valid_configs)
def test_round_trips_are_exact(cfg):
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    assert ModelConfig.from_query(cfg.to_query()) == cfg
    assert ModelConfig.from_query("?" + cfg.to_query()) == cfg
    assert parse_snippet(cfg.to_snippet()) == cfg
    # types survive, not only values (True must stay a bool, 4 an int, 1.5 a float)
    back = ModelConfig.from_query(cfg.to_query()).to_dict()
    assert {k: type(v) for k, v in back.items()} == {k: type(v) for k, v in cfg.to_dict().items()}


def test_query_string_rejects_unknown_and_mistyped_fields():
    with pytest.raises(ConfigError, match="colour"):
        ModelConfig.from_query(SEED.to_query() + "&colour=red")
    with pytest.raises(ConfigError) as info:
        ModelConfig.from_query(SEED.to_query().replace("depth=6", "depth=six"))
    assert info.value.field == "depth" and "an integer" in str(info.value)
    with pytest.raises(ConfigError) as info:
        ModelConfig.from_query(SEED.to_query().replace("deepnorm=true", "deepnorm=maybe"))
    assert info.value.field == "deepnorm"


def test_from_dict_reports_missing_and_unknown():
    data = SEED.to_dict()
    del data["dim"]
    with pytest.raises(ConfigError, match="dim is not allowed: a value: this field is required"):
        ModelConfig.from_dict(data)
    with pytest.raises(ConfigError, match="unknown keyword"):
        ModelConfig.from_dict({**SEED.to_dict(), "dropout": 0.1})
    with pytest.raises(ConfigError, match="valid JSON"):
        ModelConfig.from_json("{not json")


# --- snippet parser ---


def test_snippet_with_import_and_assignment_and_defaults():
    text = """
import torch
from x_transformers import TransformerWrapper, Decoder

model = TransformerWrapper(
    num_tokens = 256,
    max_seq_len = 1024,
    attn_layers = Decoder(dim = 128, depth = 2, heads = 4, rotary_pos_emb = True, attn_kv_heads = 2)
)
"""
    cfg = parse_snippet(text)
    assert cfg == ModelConfig(num_tokens=256, max_seq_len=1024, dim=128, depth=2, heads=4, rotary_pos_emb=True,
                              attn_kv_heads=2)
    assert cfg.use_abs_pos_emb is True and cfg.deepnorm is False  # x-transformers defaults, not the seed's


def test_snippet_unknown_keywords_are_reported_by_name():
    # (emb_dropout, attn_qk_norm and ff_swish were this test's examples until xtlens modelled them)
    text = ("TransformerWrapper(num_tokens=10, max_seq_len=8, emb_frac_gradient=0.1, "
            "attn_layers=Decoder(dim=16, depth=1, attn_sparse_topk=8, ff_post_act_ln=True, use_rmsnorm=True))")
    with pytest.raises(ConfigError) as info:
        parse_snippet(text)
    message = str(info.value)
    for name in ("emb_frac_gradient", "attn_sparse_topk", "ff_post_act_ln"):
        assert name in message
    assert "use_rmsnorm" not in message.split("Supported")[0]  # modelled: not reported as unknown


def test_snippet_with_the_flags_users_ask_for():
    text = ("TransformerWrapper(num_tokens=10, max_seq_len=8, emb_dropout=0.1, attn_layers=Decoder(dim=16, depth=1, "
            "attn_qk_norm=True, ff_swish=True, use_rmsnorm=True, ff_no_bias=True, attn_gate_values=True, "
            "attn_num_mem_kv=4, rotary_pos_emb=True, rotary_emb_dim=8, sandwich_norm=True, macaron=True, "
            "num_residual_streams=2, attn_dropout=0.1, ff_dropout=0.2, layer_dropout=0.05))")
    cfg = parse_snippet(text)
    assert (cfg.emb_dropout, cfg.attn_qk_norm, cfg.ff_swish, cfg.attn_num_mem_kv, cfg.rotary_dim,
            cfg.num_residual_streams, cfg.num_layers) == (0.1, True, True, 4, 8, 2, 3)
    assert parse_snippet(cfg.to_snippet()) == cfg
    assert "emb_dropout=0.1" in cfg.to_snippet().split("attn_layers")[0]  # a TransformerWrapper keyword


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"use_rmsnorm": True, "use_scalenorm": True}, "use_scalenorm", "at most one of"),
        ({"deepnorm": False, "use_simple_rmsnorm": True, "use_rmsnorm": True}, "use_simple_rmsnorm", "at most one"),
        ({"rel_pos_bias": True}, "rel_pos_bias", "alibi_pos_bias"),
        ({"alibi_pos_bias": False, "rel_pos_bias": True}, "rel_pos_bias", "attn_flash"),
        ({"residual_attn": True}, "residual_attn", "attn_flash"),
        ({"alibi_pos_bias": False, "attn_flash": False, "rel_pos_bias": True}, "rel_pos_bias", "rotary"),
        ({"sandwich_norm": True}, "sandwich_norm", "pre-norm"),
        ({"deepnorm": False, "pre_norm": False, "sandwich_norm": True}, "sandwich_norm", "pre-norm"),
        ({"num_residual_streams": 2}, "num_residual_streams", "deepnorm"),
        ({"num_residual_streams": 0}, "num_residual_streams", "from 1 to 16"),
        ({"attn_num_mem_kv": -1}, "attn_num_mem_kv", "from 0 to 1024"),
        ({"rotary_emb_dim": 2}, "rotary_emb_dim", "from 4 to 64"),
        ({"rotary_emb_dim": 66}, "rotary_emb_dim", "from 4 to 64"),
        ({"rotary_emb_dim": 7}, "rotary_emb_dim", "even"),
        ({"emb_dropout": 1.5}, "emb_dropout", "from 0 to 1"),
        ({"layer_dropout": -0.1}, "layer_dropout", "from 0 to 1"),
        ({"macaron": "yes"}, "macaron", "true or false"),
    ],
)
def test_each_new_flag_rule_names_the_field(changes, field, fragment):
    with pytest.raises(ConfigError) as info:
        SEED.replace(**changes)
    assert info.value.field == field and str(info.value).startswith(field)
    assert fragment in str(info.value)


def test_rotary_emb_dim_lifts_the_attn_dim_head_rule_and_sets_the_width():
    cfg = SEED.replace(attn_dim_head=6, rotary_emb_dim=4)
    assert cfg.rotary_dim == 4
    assert SEED.replace(rotary_xpos=False, rotary_emb_dim=16).rotary_dim == 0  # no rotary: width unused
    assert not SEED.replace(rotary_xpos=False, alibi_pos_bias=False, attn_flash=False, rel_pos_bias=True,
                            use_abs_pos_emb=True).has_abs_pos_emb  # T5 bias disables the absolute table
    assert SEED.replace(macaron=True).num_layers == 18 and not SEED.uses_pre_norm


def test_snippet_is_never_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    text = (f"TransformerWrapper(num_tokens=__import__('pathlib').Path({str(marker)!r}).touch() or 10, "
            "max_seq_len=8, attn_layers=Decoder(dim=16, depth=1))")
    with pytest.raises(ConfigError) as info:
        parse_snippet(text)
    assert info.value.field == "num_tokens" and "literal" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("TransformerWrapper(num_tokens=10, max_seq_len=8, attn_layers=Encoder(dim=16, depth=1))", "attn_layers"),
        ("TransformerWrapper(num_tokens=10, max_seq_len=8)", "attn_layers"),
        ("Decoder(dim=16, depth=1)", "snippet"),
        ("TransformerWrapper(num_tokens=10,", "snippet"),
        ("TransformerWrapper(num_tokens=10, max_seq_len=8, attn_layers=Decoder(dim=16, depth=1, heads=0))", "heads"),
        ("TransformerWrapper(max_seq_len=8, attn_layers=Decoder(dim=16, depth=1))", "num_tokens"),
    ],
)
def test_snippet_errors_name_the_field(text, field):
    with pytest.raises(ConfigError) as info:
        parse_snippet(text)
    assert info.value.field == field


def test_config_module_imports_only_the_standard_library():
    code = "import sys, core.config; print(json.dumps(sorted(m for m in ('torch','numpy','pandas','x_transformers','streamlit') if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
