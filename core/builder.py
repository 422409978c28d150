"""Turn a ``ModelConfig`` into the real x-transformers model: the one module that imports x-transformers.

``ModelConfig`` uses the keyword names of x-transformers <= 1.19.1 (the seed configuration is written for
1.19.1). The installed x-transformers (2.31.x) spells some of them differently or no longer has them.
``effective_kwargs`` computes, without building anything, the exact ``TransformerWrapper(...,
attn_layers=Decoder(...))`` call this module makes, with every keyword it had to translate
(``Translation``), every step done after construction (``post_init``) and every behaviour difference
that no 2.31 keyword can reproduce (``notes``), so that the UI can show all of it.

Translations (all verified against both sources, see ``docs/parity.md``):

* ``deepnorm=True`` -> ``pre_norm=False, scale_residual=True, scale_residual_constant=(2*depth)**0.25``
  plus, after the ``Decoder`` is built, 1.19.1's ``deepnorm_init``: every ``nn.Linear`` of the attention
  layers re-initialised with ``xavier_normal_`` (gain ``(8*depth)**-0.25`` for ``.ff.``, ``.to_v``,
  ``.to_out``; gain 1 for ``to_q``/``to_k``), biases set to 0.
* ``tie_embedding=True`` -> also ``tie_embedding_scale=1.0``: 2.31 multiplies tied logits by
  ``dim ** -0.5`` unless told otherwise; 1.19.1 does not scale them.
* ``heads=1`` -> also ``attn_project_out=True``: 2.31 drops the attention output projection for a single
  head (and then fails in forward unless ``attn_dim_head == dim``); 1.19.1 always has it.

Parameter differences against x-transformers 1.19.1 (LayerNorm biases, the logits bias) are data here:
``xt1191_param_differences``; ``tests/core/test_parity_1191.py`` checks them against a real 1.19.1 build.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import re
import traceback
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from xtlens.core.config import DTYPE_BYTES, ModelConfig, XtlensError
from xtlens.core.hardware import machine_available_bytes

__all__ = [
    "BuildError",
    "Translation",
    "EffectiveKwargs",
    "BuiltModel",
    "ParamDifference",
    "effective_kwargs",
    "build_model",
    "resolve_device",
    "num_params",
    "installed_xtransformers_version",
    "deepnorm_init_",
    "deepnorm_beta",
    "DEEPNORM_BETA_GAIN_MATCH",
    "xt1191_param_differences",
    "xt1191_num_params",
    "xt231_only_options",
    "xt1191_not_comparable_reason",
]

TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

# x-transformers 1.19.1 deepnorm_init: linears whose module name contains one of these get gain beta.
DEEPNORM_BETA_GAIN_MATCH: tuple[str, ...] = (".ff.", ".to_v", ".to_out")


class BuildError(XtlensError, RuntimeError):
    """The model could not be built. The message says why, in words meant for the page."""


@dataclass(frozen=True, kw_only=True)
class Translation:
    """One ``ModelConfig`` keyword the builder had to spell differently for the installed x-transformers.

    ``requested`` is the value in the configuration (1.19.1 spelling); ``effective`` the keywords passed
    instead (2.31 spelling, possibly including the original keyword when it is kept).
    """

    keyword: str
    requested: object
    effective: dict[str, object]
    reason: str


@dataclass(frozen=True, kw_only=True)
class EffectiveKwargs:
    """What the builder actually does: ``TransformerWrapper(**wrapper, attn_layers=Decoder(**decoder))``.

    ``post_init`` lists steps done after construction; ``notes`` lists behaviour differences against
    x-transformers 1.19.1 that no 2.31 keyword can express (shown to the user, not acted on).
    """

    wrapper: dict[str, object]
    decoder: dict[str, object]
    translations: tuple[Translation, ...]
    post_init: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def as_code(self) -> str:
        """The exact constructor call, as Python source (post-construction steps as trailing comments)."""
        dec = "".join(f"        {k}={v!r},\n" for k, v in self.decoder.items())
        wrap = "".join(f"    {k}={v!r},\n" for k, v in self.wrapper.items())
        code = f"TransformerWrapper(\n{wrap}    attn_layers=Decoder(\n{dec}    ),\n)"
        if self.post_init:
            code += "\n" + "\n".join(f"# then: {step}" for step in self.post_init)
        return code


@dataclass(frozen=True, kw_only=True)
class BuiltModel:
    """A freshly built model (never shared: callers that cache it must not mutate it)."""

    model: nn.Module
    kwargs: EffectiveKwargs
    device: str
    dtype: str
    xtransformers_version: str

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


@dataclass(frozen=True, kw_only=True)
class ParamDifference:
    """One parameter tensor present in x-transformers 1.19.1's build of a config and absent in ours.

    ``role`` is the tensor's parameter name in the 1.19.1 model (e.g. ``attn_layers.final_norm.bias``);
    ``count`` is signed: positive when 1.19.1 has the tensor and our 2.31 build lacks it, negative for
    the reverse (no such tensor exists for any ``ModelConfig`` today).
    """

    role: str
    shape: tuple[int, ...]
    count: int
    cause: str


def installed_xtransformers_version() -> str:
    """Version string of the installed x-transformers distribution (e.g. ``"2.31.10"``)."""
    return importlib.metadata.version("x-transformers")


def deepnorm_beta(depth: int) -> float:
    """DeepNorm init gain for value/output/feed-forward weights: ``(8 * depth) ** -0.25`` (decoder-only)."""
    return (8 * depth) ** -0.25


def deepnorm_alpha(depth: int) -> float:
    """DeepNorm residual constant: ``(2 * depth) ** 0.25``."""
    return (2 * depth) ** 0.25


def deepnorm_init_(attn_layers: nn.Module, beta: float) -> None:
    """x-transformers 1.19.1 ``deepnorm_init``, verbatim in effect: applied to the attention layers.

    Every module of exact type ``nn.Linear`` gets ``xavier_normal_`` with gain ``beta`` when its name
    (relative to ``attn_layers``) contains ``.ff.``, ``.to_v`` or ``.to_out``, gain 1 otherwise; biases 0.
    """
    for name, module in attn_layers.named_modules():
        if type(module) is not nn.Linear:
            continue
        gain = beta if any(s in name for s in DEEPNORM_BETA_GAIN_MATCH) else 1.0
        nn.init.xavier_normal_(module.weight.data, gain=gain)
        if module.bias is not None:
            nn.init.constant_(module.bias.data, 0.0)


def effective_kwargs(cfg: ModelConfig) -> EffectiveKwargs:
    """The keywords the builder passes for ``cfg`` (pure and cheap: nothing is built)."""
    wrapper: dict[str, object] = {
        "num_tokens": cfg.num_tokens,
        "max_seq_len": cfg.max_seq_len,
        "use_abs_pos_emb": cfg.use_abs_pos_emb,
    }
    if cfg.emb_dropout:
        wrapper["emb_dropout"] = cfg.emb_dropout
    decoder = {k: v for k, v in cfg.decoder_kwargs().items() if k != "deepnorm"}
    translations: list[Translation] = []
    post_init: list[str] = []
    notes: list[str] = []

    if cfg.tie_embedding:
        wrapper["tie_embedding"] = True
        wrapper["tie_embedding_scale"] = 1.0
        translations.append(
            Translation(
                keyword="tie_embedding",
                requested=True,
                effective={"tie_embedding": True, "tie_embedding_scale": 1.0},
                reason=(
                    f"x-transformers 2.x multiplies tied-embedding logits by dim ** -0.5 = {cfg.dim**-0.5:.4g} "
                    "by default; 1.19.1 does not scale them, so the builder passes tie_embedding_scale=1.0."
                ),
            )
        )

    if cfg.deepnorm:
        alpha, beta = deepnorm_alpha(cfg.depth), deepnorm_beta(cfg.depth)
        eff = {"pre_norm": False, "scale_residual": True, "scale_residual_constant": alpha}
        decoder.update(eff)
        translations.append(
            Translation(
                keyword="deepnorm",
                requested=True,
                effective=dict(eff),
                reason=(
                    f"x-transformers 2.x no longer accepts deepnorm. In 1.19.1 it meant post-norm (a LayerNorm after "
                    f"each residual add, no final norm), a learnable per-channel residual scale times the constant "
                    f"(2 * depth) ** 0.25 = {alpha:.6g}, and a DeepNorm re-initialisation with gain "
                    f"(8 * depth) ** -0.25 = {beta:.6g}, which the builder applies after building the Decoder."
                ),
            )
        )
        post_init.append(
            f"DeepNorm re-init (x-transformers 1.19.1 deepnorm_init) of the Decoder before it is wrapped: every "
            f"nn.Linear gets xavier_normal_ with gain {beta:.6g} = (8 * {cfg.depth}) ** -0.25 if its name contains "
            f"'.ff.', '.to_v' or '.to_out', gain 1 otherwise (to_q, to_k); biases set to 0"
        )

    if cfg.heads == 1:
        decoder["attn_project_out"] = True
        translations.append(
            Translation(
                keyword="heads",
                requested=1,
                effective={"heads": 1, "attn_project_out": True},
                reason=(
                    "x-transformers 2.x drops the attention output projection when heads == 1 (and then fails unless "
                    "attn_dim_head == dim); 1.19.1 always has it, so the builder passes attn_project_out=True."
                ),
            )
        )

    if cfg.uses_rotary:
        notes.append(
            "Rotary embeddings: x-transformers 1.19.1 also rotated the values (with the inverse xpos scale); 2.x rotates "
            "queries and keys only. No 2.x keyword restores it, so outputs differ from 1.19.1 for the same weights "
            "(parameter counts do not)."
        )
        if cfg.attn_dim_head < 64:
            notes.append(
                f"Rotary width: 2.x rotates attn_dim_head // 2 = {cfg.attn_dim_head // 2} channels per head; 1.19.1 "
                f"rotated max(attn_dim_head // 2, 32) = {max(cfg.attn_dim_head // 2, 32)}"
                + (
                    " (more than attn_dim_head, so 1.19.1 failed at forward time)"
                    if cfg.attn_dim_head < 32
                    else ""
                )
                + ". No parameters change."
            )
    newer = xt231_only_options(cfg)
    if newer:
        notes.append(xt1191_not_comparable_reason(cfg))
    if cfg.ff_no_bias and cfg.ff_glu:
        notes.append(
            "ff_no_bias with ff_glu: x-transformers 2.31 still builds the GLU input projection with a bias "
            "(GLU.proj = nn.Linear(dim, 2 * inner), x_transformers.py:1752); only the output projection loses it."
        )
    if cfg.ff_swish and cfg.ff_relu_squared:
        notes.append("ff_swish is ignored: x-transformers 2.31 picks ReLU squared first (x_transformers.py:1794).")
    diffs = [] if newer else xt1191_param_differences(cfg)
    if diffs:
        notes.append(
            f"x-transformers 1.19.1 builds this configuration with {sum(d.count for d in diffs):,} more parameters: "
            + "; ".join(_summarise_differences(diffs))
            + "."
        )
    return EffectiveKwargs(
        wrapper=wrapper,
        decoder=decoder,
        translations=tuple(translations),
        post_init=tuple(post_init),
        notes=tuple(notes),
    )


# ModelConfig fields x-transformers 1.19.1's build (and xt1191_param_differences) is verified for.
XT1191_FIELDS: frozenset[str] = frozenset({
    "num_tokens", "max_seq_len", "use_abs_pos_emb", "tie_embedding", "dim", "depth", "heads", "attn_dim_head",
    "ff_mult", "ff_glu", "attn_one_kv_head", "attn_kv_heads", "attn_flash", "alibi_pos_bias", "alibi_num_heads",
    "rotary_pos_emb", "rotary_xpos", "deepnorm", "shift_tokens",
})


def xt231_only_options(cfg: ModelConfig) -> list[str]:
    """Fields set away from their default that the 1.19.1 parity check does not cover (dropouts excluded:
    they change no parameter)."""
    out = []
    for f in dataclasses.fields(cfg):
        if f.name in XT1191_FIELDS or f.metadata.get("cost_neutral"):
            continue
        if getattr(cfg, f.name) != f.default:
            out.append(f"{f.name}={getattr(cfg, f.name)!r}")
    return out


def xt1191_not_comparable_reason(cfg: ModelConfig) -> str:
    """Why no x-transformers 1.19.1 count is given for ``cfg`` ('' when one is)."""
    newer = xt231_only_options(cfg)
    if not newer:
        return ""
    return ("x-transformers 1.19.1 comparison: not made for options xtlens models for 2.31 only ("
            + ", ".join(newer) + "); the 1.19.1 parity checks (run against a real 1.19.1 build when xtlens is tested) cover the seed's "
            "keywords.")


def _summarise_differences(diffs: list[ParamDifference]) -> list[str]:
    ln = [d for d in diffs if d.cause.startswith("LayerNorm")]
    out = []
    if ln:
        out.append(f"{len(ln)} LayerNorm biases of {ln[0].shape[0]} (2.x LayerNorm has no bias)")
    for d in diffs:
        if d not in ln:
            out.append(f"{d.role} ({d.count:,})")
    return out


def _construct(cfg: ModelConfig, kw: EffectiveKwargs) -> nn.Module:
    """Build on the current default device (CPU or meta); x-transformers errors become ``BuildError``."""
    # imported here, not at module import: resolving a device or reading effective kwargs needs no model
    from x_transformers import Decoder, TransformerWrapper

    try:
        decoder = Decoder(**kw.decoder)
        if cfg.deepnorm:
            deepnorm_init_(decoder, deepnorm_beta(cfg.depth))
        return TransformerWrapper(**kw.wrapper, attn_layers=decoder)
    except AssertionError as exc:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        detail = str(exc) or f"the check `{frame.line}` failed"
        raise BuildError(
            f"x-transformers {installed_xtransformers_version()} rejected this configuration: {detail}."
        ) from exc
    except (TypeError, ValueError) as exc:
        raise BuildError(
            f"x-transformers {installed_xtransformers_version()} could not build this configuration: {exc}."
        ) from exc


def num_params(cfg: ModelConfig) -> int:
    """Exact parameter count of the model ``build_model`` builds, counted on the meta device (no memory used)."""
    with torch.device("meta"):
        model = _construct(cfg, effective_kwargs(cfg))
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def fake_model(cfg: ModelConfig, dtype: str = "float32") -> Iterator[tuple[nn.Module, object]]:
    """Yield ``(model, fake_mode)``: the model ``build_model`` builds, constructed inside a
    ``FakeTensorMode`` (no parameter memory, no init: for counting FLOPs and tracking memory).

    Everything run inside the ``with`` block is fake too; fake tensors cannot leave it. ``Module.to``
    cannot swap fake parameters, so the dtype cast replaces floating parameters and buffers in place
    (a parameter shared by two modules, e.g. a tied embedding, stays shared).
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        model = _construct(cfg, effective_kwargs(cfg))
        if dtype != "float32":
            target = TORCH_DTYPES[dtype]
            done: dict[int, nn.Parameter] = {}
            for module in model.modules():
                for key, p in list(module._parameters.items()):
                    if p is None or not p.is_floating_point():
                        continue
                    if id(p) not in done:
                        done[id(p)] = nn.Parameter(p.detach().to(target), requires_grad=p.requires_grad)
                    module._parameters[key] = done[id(p)]
                for key, b in list(module._buffers.items()):
                    if b is not None and b.is_floating_point():
                        module._buffers[key] = b.to(target)
        yield model.eval(), mode


def _available_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    avail = machine_available_bytes()
    try:  # a measurement child runs under an address-space limit (profiling.run.limits): what is left of it
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/status") as fh:
                used = next((int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:")), 0)
            avail = max(soft - used, 0) if avail is None else min(avail, max(soft - used, 0))
    except (ImportError, OSError, ValueError):
        pass
    return avail


def resolve_device(device: str = "auto") -> str:
    """The one device resolver: ``"auto"`` -> ``"cuda"`` when PyTorch sees a CUDA GPU, else ``"cpu"``;
    ``"cpu"``, ``"cuda"`` and ``"cuda:N"`` are checked (a GPU must exist, ``N`` below the GPU count) and
    returned as given. Raises ``BuildError`` with a message for the page otherwise."""
    name = (device or "auto").strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match is None:
        raise BuildError(f"Unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'.")
    if not torch.cuda.is_available():
        raise BuildError(f"Device {device!r} was requested, but PyTorch sees no CUDA GPU on this machine "
                         f"(torch {torch.__version__}). Use device 'cpu' or 'auto'.")
    count = torch.cuda.device_count()
    if match.group(1) is not None and int(match.group(1)) >= count:
        raise BuildError(f"Device {device!r} does not exist: this machine has {count} GPU(s).")
    return name


def build_model(
    cfg: ModelConfig, *, device: str = "cpu", dtype: str = "float32", seed: int | None = 0
) -> BuiltModel:
    """Build a new ``TransformerWrapper`` for ``cfg`` on ``device`` in ``dtype``, in eval mode.

    The weights are initialised on the CPU in float32 (so a given ``seed`` gives the same weights on every
    device; the global RNG state is left untouched when a seed is given), then the model is moved with
    ``model.to(device=device, dtype=dtype)``: parameters and floating buffers (rotary ``inv_freq``, ALiBi
    slopes) end up in ``dtype``, as when a user calls ``.to(torch.bfloat16)``. ``seed=None`` draws from the
    global RNG. Raises ``BuildError`` for an unknown dtype or device, a model that does not fit in the
    available memory, or a configuration x-transformers rejects.
    """
    if dtype not in TORCH_DTYPES:
        raise BuildError(f"Unknown dtype {dtype!r}: choose one of {', '.join(DTYPE_BYTES)}.")
    dev = torch.device(resolve_device(device))
    kw = effective_kwargs(cfg)

    count = num_params(cfg)  # also surfaces x-transformers assertions before any memory is used
    need_cpu_bytes = count * 4  # initialised in float32 on the CPU ...
    if dev.type == "cpu" and dtype != "float32":
        need_cpu_bytes += count * DTYPE_BYTES[dtype]  # ... and cast: both copies live during .to()
    need_dev_bytes = count * DTYPE_BYTES[dtype] if dev.type == "cuda" else 0
    for where, need, avail in (
        ("CPU", need_cpu_bytes, _available_bytes(torch.device("cpu"))),
        (str(dev), need_dev_bytes, _available_bytes(dev) if dev.type == "cuda" else None),
    ):
        if avail is not None and need > avail:
            raise BuildError(
                f"This model has {count:,} parameters and needs {need / 2**30:.2f} GiB on {where} to build, "
                f"but only {avail / 2**30:.2f} GiB is available. The weights themselves do not fit, so a shorter "
                "sequence or a smaller batch will not help: try a smaller dim, depth or num_tokens."
            )

    try:
        if seed is None:
            model = _construct(cfg, kw)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                with torch.device("cpu"):
                    model = _construct(cfg, kw)
        model = model.to(device=dev, dtype=TORCH_DTYPES[dtype]).eval()
    except torch.OutOfMemoryError as exc:
        raise BuildError(f"Out of memory while building a {count:,}-parameter model on {dev}: {exc}") from exc

    if dtype != "float32":
        kw = dataclasses.replace(
            kw,
            post_init=kw.post_init
            + (
                f"model.to(dtype=torch.{dtype}): parameters and floating buffers (rotary inv_freq, ALiBi slopes) in {dtype}",
            ),
        )
    return BuiltModel(
        model=model,
        kwargs=kw,
        device=str(dev),
        dtype=dtype,
        xtransformers_version=installed_xtransformers_version(),
    )


# --- parity with x-transformers 1.19.1 ---

_LN_BIAS_CAUSE = (
    "x-transformers 2.x LayerNorm has no bias (only a gain `gamma`, stored with a unit offset: init 0, used as "
    "gamma + 1); 1.19.1 used torch.nn.LayerNorm with weight and bias. The weight maps to gamma + 1."
)
_LOGITS_BIAS_CAUSE = (
    "x-transformers 2.x builds the output projection to_logits without a bias (LinearNoBias); 1.19.1 used "
    "nn.Linear(dim, num_tokens) with a bias. With tie_embedding neither version has a bias."
)


@dataclass(frozen=True, kw_only=True)
class _NormLayout:
    per_layer_index: int  # index in each layer's [pre_branch, post_branch, post_main] norms
    has_final_norm: bool
    kind: str


def _norm_layout(cfg: ModelConfig) -> _NormLayout:
    if cfg.deepnorm:
        return _NormLayout(
            per_layer_index=2, has_final_norm=False, kind="post-norm (DeepNorm): post_main_norm"
        )
    return _NormLayout(per_layer_index=0, has_final_norm=True, kind="pre-norm: pre_branch_norm")


def xt1191_param_differences(cfg: ModelConfig) -> list[ParamDifference]:
    """Each parameter tensor x-transformers 1.19.1 has for ``cfg`` and our 2.31 build lacks (signed counts).

    * One LayerNorm bias (``dim``) per LayerNorm: 1.19.1 puts one LayerNorm in each of the ``2 * depth``
      sub-layers (attention and feed-forward), before the branch with pre-norm (``layers.i.0.0``) or after
      the residual add with post-norm/DeepNorm (``layers.i.0.2``), plus a final norm
      (``attn_layers.final_norm``) with pre-norm only. 2.x LayerNorms have no bias.
    * The logits bias ``to_logits.bias`` (``num_tokens``), unless ``tie_embedding``.

    Verified to be exhaustive for the other options (``ff_glu``, K/V heads, absolute positions, rotary,
    ALiBi, shift_tokens, ``heads=1`` with the ``attn_project_out`` translation) by
    ``tests/core/test_parity_1191.py``. Rotary and ALiBi tables are buffers, not parameters, in both versions.
    Raises ``BuildError`` for a configuration using an option modelled for 2.31 only (``xt231_only_options``).
    """
    reason = xt1191_not_comparable_reason(cfg)
    if reason:
        raise BuildError(reason)
    layout = _norm_layout(cfg)
    diffs: list[ParamDifference] = []
    for i in range(2 * cfg.depth):
        sub = "attention" if i % 2 == 0 else "feed-forward"
        diffs.append(
            ParamDifference(
                role=f"attn_layers.layers.{i}.0.{layout.per_layer_index}.bias",
                shape=(cfg.dim,),
                count=cfg.dim,
                cause=f"LayerNorm bias of layer {i} ({sub}, {layout.kind}). " + _LN_BIAS_CAUSE,
            )
        )
    if layout.has_final_norm:
        diffs.append(
            ParamDifference(
                role="attn_layers.final_norm.bias",
                shape=(cfg.dim,),
                count=cfg.dim,
                cause="LayerNorm bias of the final norm (pre-norm only). " + _LN_BIAS_CAUSE,
            )
        )
    if not cfg.tie_embedding:
        diffs.append(
            ParamDifference(
                role="to_logits.bias",
                shape=(cfg.num_tokens,),
                count=cfg.num_tokens,
                cause=_LOGITS_BIAS_CAUSE,
            )
        )
    return diffs


def xt1191_num_params(cfg: ModelConfig) -> int:
    """Parameter count of x-transformers 1.19.1's build of ``cfg``: ours plus ``xt1191_param_differences``."""
    return num_params(cfg) + sum(d.count for d in xt1191_param_differences(cfg))
