"""core.tensors.param_tensors against the real model, tensor by tensor, for every option that changes the
parameter layout: names, shapes and order of ``named_parameters()``, each tensor's role read from the module that
owns it, the ``nn.Linear`` weights, what ``torch.autocast`` casts, and optimizer state summed over real optimizers."""

from __future__ import annotations

import pytest
import torch
import x_transformers.x_transformers as xt
from torch.utils._python_dispatch import TorchDispatchMode
from xtlens.core import cost_model
from xtlens.core.builder import build_model
from xtlens.core.config import PRESETS, ModelConfig
from xtlens.core.tensors import ROLES, TP_SPLITS, buffer_tensors, param_tensors

BASE = ModelConfig(num_tokens=50, max_seq_len=16, dim=16, depth=2, heads=4, attn_dim_head=8)

# one entry per ModelConfig field that changes the parameter layout (or might), and combinations whose module
# paths nest (macaron + token shifting: ``.fn.fn``; hyper-connections with macaron and post-norm)
OPTIONS: dict[str, dict[str, object]] = {
    "base": {},
    "alibi": {"alibi_pos_bias": True, "alibi_num_heads": 2, "attn_flash": True},
    "rotary": {"rotary_pos_emb": True},
    "xpos": {"rotary_xpos": True},
    "rotary_emb_dim": {"rotary_pos_emb": True, "rotary_emb_dim": 4},
    "deepnorm": {"deepnorm": True},
    "pre_norm=False": {"pre_norm": False},
    "sandwich_norm": {"sandwich_norm": True},
    "macaron": {"macaron": True},
    "rmsnorm": {"use_rmsnorm": True},
    "simple_rmsnorm": {"use_simple_rmsnorm": True},
    "scalenorm": {"use_scalenorm": True},
    "ff_glu": {"ff_glu": True},
    "ff_no_bias": {"ff_no_bias": True},
    "ff_no_bias+glu": {"ff_no_bias": True, "ff_glu": True},
    "ff_swish": {"ff_swish": True},
    "ff_relu_squared": {"ff_relu_squared": True},
    "attn_qk_norm": {"attn_qk_norm": True},
    "attn_gate_values": {"attn_gate_values": True},
    "attn_num_mem_kv": {"attn_num_mem_kv": 3},
    "attn_one_kv_head": {"attn_one_kv_head": True},
    "attn_kv_heads": {"attn_kv_heads": 2},
    "heads=1": {"heads": 1},
    "rel_pos_bias": {"rel_pos_bias": True},
    "residual_attn": {"residual_attn": True},
    "streams=2": {"num_residual_streams": 2},
    "streams=4": {"num_residual_streams": 4},
    "tie_embedding": {"tie_embedding": True},
    "use_abs_pos_emb=False": {"use_abs_pos_emb": False},
    "shift_tokens": {"shift_tokens": 2},
    "macaron+shift": {"macaron": True, "shift_tokens": 1},
    "streams+macaron+post+scalenorm": {"num_residual_streams": 3, "macaron": True, "pre_norm": False,
                                       "use_scalenorm": True},
    "sandwich+rms+gate+mem+glu": {"sandwich_norm": True, "use_rmsnorm": True, "attn_gate_values": True,
                                  "attn_num_mem_kv": 2, "ff_glu": True, "ff_no_bias": True},
    "rel_pos+tie+post": {"rel_pos_bias": True, "tie_embedding": True, "pre_norm": False},
}
SEED = PRESETS["seed"]
CONFIGS = {name: BASE.replace(**kw) for name, kw in OPTIONS.items()}
CONFIGS["seed"] = SEED
CONFIGS["seed-mha"] = PRESETS["seed-mha"]


@pytest.fixture(scope="module", params=list(CONFIGS))
def built(request) -> tuple[ModelConfig, torch.nn.Module]:
    cfg = CONFIGS[request.param]
    return cfg, build_model(cfg).model


def test_names_shapes_and_order_are_the_real_models(built) -> None:
    cfg, model = built
    real = [(name, tuple(p.shape)) for name, p in model.named_parameters()]  # tied parameters once
    table = [(t.name, t.shape) for t in param_tensors(cfg)]
    assert table == real
    assert len({name for name, _ in table}) == len(table)
    buffers = [(name, tuple(b.shape)) for name, b in model.named_buffers()]
    assert [(t.name, t.shape) for t in buffer_tensors(cfg)] == buffers


# the x-transformers module that owns a tensor -> its role (read from the module types, not from the names)
_ROLE_OF_MODULE: tuple[tuple[type, str], ...] = (
    (xt.HyperConnection, "hyper_connection"),
    (xt.TokenEmbedding, "token_embedding"),
    (xt.AbsolutePositionalEmbedding, "abs_pos_embedding"),
    (xt.RelativePositionBias, "rel_pos_bias"),
    (xt.FeedForward, "feedforward"),
    (xt.LayerNorm, "norm"), (xt.RMSNorm, "norm"), (xt.ScaleNorm, "norm"),
    (xt.Residual, "residual_scale"),
)


def _role_from_modules(model: torch.nn.Module, name: str) -> str:
    """The role of parameter ``name`` from the classes of the modules on its path (innermost known one wins)."""
    if name == "to_logits.weight":
        return "logits"
    if name == "attn_layers.stream_emb":
        return "hyper_connection"
    parts = name.split(".")
    role = None
    for i in range(1, len(parts)):
        module = model.get_submodule(".".join(parts[:i]))
        for cls, r in _ROLE_OF_MODULE:
            if isinstance(module, cls):
                role = r
        if isinstance(module, xt.Attention):
            leaf = parts[i]
            role = {"mem_k": "mem_kv", "mem_v": "mem_kv", "to_v_gate": "attn_gate"}.get(leaf, "attention")
    assert role is not None, name
    return role


def test_roles_match_the_owning_modules(built) -> None:
    cfg, model = built
    table = param_tensors(cfg)
    assert all(t.role in ROLES and t.tp_split in TP_SPLITS for t in table)
    assert {t.name: t.role for t in table} == {n: _role_from_modules(model, n) for n, _ in model.named_parameters()}


def test_matmul_weights_are_the_linear_layers(built) -> None:
    cfg, model = built
    linear = {f"{m_name}.weight" for m_name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert {t.name for t in param_tensors(cfg) if t.is_matmul_weight} == linear
    assert [(t.shape[0], t.shape[1]) for t in param_tensors(cfg) if t.is_matmul_weight] == cost_model.linear_shapes(cfg)


def test_counts_and_shapes_derive_from_the_table(built) -> None:
    cfg, model = built
    pc = cost_model.param_counts(cfg)
    assert pc.num_params == sum(p.numel() for p in model.parameters())
    assert pc.num_param_tensors == len(list(model.parameters()))
    assert cost_model.param_shapes(cfg) == [tuple(p.shape) for p in model.parameters()]
    streams = cfg.num_residual_streams > 1  # then layer 0's residual (``.2``) is its HyperConnection
    assert cost_model.hyper_connection_params_per_layer(cfg) == sum(
        p.numel() for n, p in model.named_parameters() if streams and n.startswith("attn_layers.layers.0.2."))


def test_tp_split_follows_megatron() -> None:
    """Column-parallel layers split their outputs (and bias), row-parallel ones their inputs (bias whole on every
    rank); the embedding and logits are vocabulary-parallel; the rest is replicated."""
    cfg = BASE.replace(ff_glu=False, attn_gate_values=True, attn_num_mem_kv=1)
    split = {t.name: t.tp_split for t in param_tensors(cfg)}
    block, ff = "attn_layers.layers.0.1", "attn_layers.layers.1.1.ff"
    assert [split[f"{block}.to_{x}.weight"] for x in ("q", "k", "v", "v_gate", "out")] == ["column"] * 4 + ["row"]
    assert [split[f"{ff}.{x}"] for x in ("0.0.weight", "0.0.bias", "2.weight", "2.bias")] == [
        "column", "column", "row", "replicated"]
    assert split["token_emb.emb.weight"] == split["to_logits.weight"] == "vocab"
    assert split["attn_layers.final_norm.gamma"] == split["pos_emb.emb.weight"] == "replicated"
    P = cost_model.param_counts(cfg).num_params
    whole = sum(t.numel for t in param_tensors(cfg) if t.tp_split == "replicated")
    assert cost_model.tp_params(cfg, 4) == (P - whole) // 4 + whole


class _CastSpy(TorchDispatchMode):
    """Records which parameters ``torch.autocast`` casts to 16 bits (its ``_to_copy`` of a parameter's storage)."""

    def __init__(self, names_by_ptr: dict[int, str]):
        super().__init__()
        self.names_by_ptr, self.cast = names_by_ptr, set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default and kwargs.get("dtype") == torch.bfloat16:
            name = self.names_by_ptr.get(args[0].data_ptr())
            if name is not None:
                self.cast.add(name)
        return func(*args, **kwargs)


@pytest.mark.parametrize("option", ["sandwich+rms+gate+mem+glu", "streams=2", "tie_embedding", "deepnorm"])
def test_autocast_casts_what_the_table_says(option: str) -> None:
    """The tensors autocast copies to 16 bits in one forward (a tiny model: 16-wide matmuls, no slow bf16 kernel)."""
    cfg = CONFIGS[option]
    model = build_model(cfg).model
    spy = _CastSpy({p.data_ptr(): n for n, p in model.named_parameters()})
    with torch.autocast("cpu", dtype=torch.bfloat16), spy:
        model(torch.randint(0, cfg.num_tokens, (1, 8)))
    assert spy.cast == {t.name for t in param_tensors(cfg) if t.cast_by_autocast}
    elements = sum(p.numel() for n, p in model.named_parameters() if n in spy.cast)
    assert cost_model.autocast_weight_copy_bytes(cfg, 2) == 2 * elements


@pytest.mark.parametrize("option", ["streams=2", "streams+macaron+post+scalenorm", "sandwich+rms+gate+mem+glu"])
@pytest.mark.parametrize("optimizer", ["adamw", "adafactor", "sgd"])
def test_optimizer_state_is_the_real_optimizers(option: str, optimizer: str) -> None:
    """State bytes after one step of the torch optimizer equal ``optimizer_state_bytes_for`` (Adafactor factors
    every >= 2-D tensor by its real shape: the hyper-connections' ``(s, s+1)`` and ``(d, s+1)`` matrices too)."""
    cfg = CONFIGS[option]
    model = build_model(cfg).model
    make = {"adamw": lambda p: torch.optim.AdamW(p, lr=1e-3), "adafactor": lambda p: torch.optim.Adafactor(p, lr=1e-3),
            "sgd": lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9)}[optimizer]
    opt = make(model.parameters())
    model(torch.randint(0, cfg.num_tokens, (1, 8))).sum().backward()
    opt.step()
    state = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if torch.is_tensor(t))
    assert state == cost_model.optimizer_state_bytes_for(cfg, optimizer, 4)
