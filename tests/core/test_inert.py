"""core.options.inert_fields (re-exported by core.config): a field the other flags make irrelevant builds the same
model whatever its value (same tensors, same weights from the same seed, same logits); the same field with the
condition lifted changes the model, so the check can fail."""

from __future__ import annotations

import pytest
import torch
from xtlens.core.builder import build_model
from xtlens.core.config import PRESETS, ModelConfig, inert_fields
from xtlens.core.options import INERT

TINY = ModelConfig(num_tokens=64, max_seq_len=32, dim=32, depth=2, heads=2, attn_dim_head=16)

# field -> (base where it is inert, the two values compared, the base where it is NOT inert)
CASES: dict[str, tuple[ModelConfig, tuple[object, object], ModelConfig]] = {
    "pre_norm": (TINY.replace(deepnorm=True), (True, False), TINY),
    "alibi_num_heads": (TINY, (None, 1), TINY.replace(alibi_pos_bias=True)),
    "rotary_pos_emb": (TINY.replace(rotary_xpos=True), (False, True), TINY),
    "rotary_emb_dim": (TINY, (None, 4), TINY.replace(rotary_pos_emb=True)),
    "use_abs_pos_emb": (TINY.replace(rotary_pos_emb=True), (True, False), TINY),
    "ff_swish": (TINY.replace(ff_relu_squared=True), (False, True), TINY),
    "attn_one_kv_head": (TINY.replace(heads=1), (False, True), TINY),
}


def _fingerprint(cfg: ModelConfig) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    model = build_model(cfg, seed=0).model
    tokens = torch.arange(16).remainder(cfg.num_tokens).reshape(1, 16)
    with torch.no_grad():
        logits = model(tokens)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, logits


def _same(a: ModelConfig, b: ModelConfig) -> bool:
    (sa, la), (sb, lb) = _fingerprint(a), _fingerprint(b)
    return (sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)
            and torch.equal(la, lb))


def test_every_rule_has_a_case():
    assert [name for name, _, _ in INERT] == list(CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_inert_field_builds_the_same_model(name):
    base, (a, b), live = CASES[name]
    assert name in inert_fields(base.replace(**{name: a})) and name in inert_fields(base.replace(**{name: b}))
    assert _same(base.replace(**{name: a}), base.replace(**{name: b}))
    # lifted: the control matters again, and the two values build different models
    assert name not in inert_fields(live)
    assert not _same(live.replace(**{name: a}), live.replace(**{name: b}))


def test_seed_inert_fields():
    """The seed: pre_norm (deepnorm), rotary_pos_emb (rotary_xpos) and use_abs_pos_emb (rotary) are irrelevant."""
    got = inert_fields(PRESETS["seed"])
    assert list(got) == ["pre_norm", "rotary_pos_emb", "use_abs_pos_emb"]
    assert got["pre_norm"].startswith("deepnorm is on")
    assert "rotary_xpos is on" in got["rotary_pos_emb"] and got["use_abs_pos_emb"].startswith("rotary_xpos is on")
    assert inert_fields(TINY.replace(rel_pos_bias=True))["use_abs_pos_emb"].startswith("rel_pos_bias is on")
    assert inert_fields(PRESETS["seed"].replace(deepnorm=False)).get("pre_norm") is None
