"""What each flag of the configuration really does in x-transformers, and where the seed's written analysis
is wrong.

Pure data for the Overview's facts panel (read from the x-transformers 1.19.1 and 2.31 sources; the
same facts are the docstring of ``core.config``). Every text follows the current flags; the attention
kernel text follows the kernel that actually ran when one was measured. Where the analysis that came
with the seed configuration says something else, ``Fact.claim`` states that claim briefly (attributed,
in our words: users do not have that document) and ``Fact.correction`` corrects it.
"""

from __future__ import annotations

from dataclasses import dataclass

from xtlens.core.config import ModelConfig


@dataclass(frozen=True, kw_only=True)
class Fact:
    keyword: str
    does: str
    claim: str | None = None  # what the seed configuration's written analysis says (attributed by the page)
    correction: str | None = None


CLAIM_SOURCE = "the written analysis that came with the seed configuration"


def _kernel_words(kernel: str | None) -> str:
    if kernel:
        return (f"The kernel that ran in the last measurement: `{kernel}`"
                + (" (a fused flash kernel; on CPU PyTorch has its own flash implementation, `cpu_flash`)."
                   if "flash" in kernel else " (not a flash kernel)."))
    return "Not measured yet: press Measure above to see which kernel runs on this device."


def _abs_pos_words(cfg: ModelConfig) -> str:
    """What use_abs_pos_emb does with its actual value (and whether rotary / rel_pos_bias make it irrelevant)."""
    other = "rotary_xpos" if cfg.rotary_xpos else "rotary_pos_emb" if cfg.rotary_pos_emb else "rel_pos_bias"
    table = f"a learned max_seq_len x dim = {cfg.max_seq_len:,} x {cfg.dim} absolute position table"
    if cfg.uses_rotary or cfg.rel_pos_bias:
        return (f"use_abs_pos_emb = {cfg.use_abs_pos_emb}: no absolute position table, and there would be none with "
                f"True either: x-transformers leaves it out whenever {other} is on (disable_abs_pos_emb), so this flag "
                "has no effect here (its control is disabled).")
    if cfg.use_abs_pos_emb:
        return f"use_abs_pos_emb = True: {table} is added to the token embeddings."
    return (f"use_abs_pos_emb = False: no absolute position table (with True: {table}). Positions come only from "
            + ("ALiBi's distance penalty." if cfg.alibi_pos_bias else "nothing: no positional encoding is on."))


def facts(cfg: ModelConfig, kernel: str | None = None) -> list[Fact]:
    """The facts, with the numbers and flags of ``cfg`` filled in; ``kernel``: the SDPA backend that ran."""
    inner = cfg.attn_inner_dim
    alibi = cfg.alibi_heads
    seg = cfg.shift_tokens + 1
    return [
        Fact(
            keyword="heads",
            does=(f"{cfg.heads} query heads, each attn_dim_head = {cfg.attn_dim_head} wide: the attention inner width "
                  f"is heads x attn_dim_head = {inner}, whatever dim ({cfg.dim}) is. More heads add parameters and "
                  "FLOPs in proportion (Q and output projections grow), they do not slice dim."),
            claim="heads split the model's representation (dim) between them.",
            correction=("in x-transformers the head width is attn_dim_head, so heads=8 with dim=512 is 8 x 64 = 512 "
                        "only because the default attn_dim_head is 64."),
        ),
        Fact(
            keyword="shift_tokens",
            does=(f"shift_tokens = {cfg.shift_tokens}: before every attention and feed-forward sub-layer the feature "
                  f"vector is cut into {seg} slices of dim // {seg} = {cfg.dim // seg} channels; slice k is taken from "
                  "k positions earlier (token shifting, x-transformers ShiftTokens). It adds no parameters."
                  if cfg.shift_tokens else
                  "shift_tokens = 0: no token shifting. (With shift_tokens = n > 0, slices of each feature vector are "
                  "taken from the previous 1..n positions before every sub-layer.)"),
            claim="shift_tokens is how many tokens the training target is shifted by.",
            correction=("it is token shifting inside the blocks; the next-token target shift is done by the loss "
                        "(AutoregressiveWrapper), whatever shift_tokens is."),
        ),
        Fact(
            keyword="alibi_pos_bias / alibi_num_heads",
            does=(f"ALiBi adds a linear distance penalty to the attention scores of {alibi} of {cfg.heads} heads "
                  "(the other heads get a zero bias). In x-transformers 2.31 the bias is materialised as a "
                  "(batch, heads, n, n) tensor for every layer call: memory grows with n^2."
                  if cfg.alibi_pos_bias else
                  "ALiBi is off. (With it, a linear distance penalty is added to the scores of alibi_num_heads heads, "
                  "as a materialised (batch, heads, n, n) bias.)"),
            claim="alibi_num_heads is a number of extra ALiBi attention heads.",
            correction="they are not extra heads: they are the subset of the existing heads that receive the bias.",
        ),
        Fact(
            keyword="attn_flash",
            does=(("attn_flash = True: calls torch.nn.functional.scaled_dot_product_attention (SDPA), which picks a "
                   "kernel. On CUDA the flash kernel takes no additive mask"
                   + (", so ALiBi's bias rules it out there (memory-efficient or math runs)" if cfg.alibi_pos_bias
                      else "")
                   + "; on CPU PyTorch's own flash implementation (`cpu_flash`) accepts a mask. ")
                  if cfg.attn_flash else
                  "attn_flash = False: attention is computed with einsum and an explicit softmax (no SDPA kernel). ")
                 + _kernel_words(kernel),
            claim="attn_flash makes flash attention run." if cfg.attn_flash and cfg.alibi_pos_bias else None,
            correction=(("on CUDA ALiBi's additive bias keeps SDPA off the flash kernel; on CPU `cpu_flash` can run"
                         + (f" (measured here: `{kernel}`)." if kernel else " (the Latency view shows the kernel per "
                            "length)."))
                        if cfg.attn_flash and cfg.alibi_pos_bias else None),
        ),
        Fact(
            keyword="deepnorm",
            does=(("deepnorm = True (x-transformers <= 1.19.1): post-norm (LayerNorm after each residual add, no final "
                   f"norm), a learnable residual scale times (2 x depth)^0.25 = {(2 * cfg.depth) ** 0.25:.4g}, and "
                   f"Xavier re-initialisation with gain (8 x depth)^-0.25 = {(8 * cfg.depth) ** -0.25:.4g} on value, "
                   "output and feed-forward weights. x-transformers 2.x removed the keyword; xtlens emulates it with "
                   "pre_norm=False, scale_residual=True, scale_residual_constant and the re-init (see effective kwargs).")
                  if cfg.deepnorm else
                  "deepnorm = False: x-transformers 2.x normalisation as configured (pre-norm unless pre_norm=False). "
                  "(deepnorm = True, removed in 1.20, is emulated by xtlens as 1.19.1 did it.)"),
            claim="deepnorm is an ordinary x-transformers option." if cfg.deepnorm else None,
            correction=("x-transformers removed deepnorm in 1.20; xtlens emulates what 1.19.1 did."
                        if cfg.deepnorm else None),
        ),
        Fact(
            keyword="rotary_xpos",
            does=(f"rotary_xpos = True: rotary embedding on attn_dim_head // 2 = {cfg.attn_dim_head // 2} channels of "
                  "each query and key head, with xPos scaling for length extrapolation. It switches rotary on by "
                  "itself and disables the learned absolute position table. Causal attention only. No parameters "
                  "(buffers only)."
                  if cfg.rotary_xpos else
                  "rotary_xpos = False: no xPos scaling"
                  + (f" (plain rotary on {cfg.attn_dim_head // 2} channels per head is on: rotary_pos_emb)."
                     if cfg.rotary_pos_emb else "; rotary embeddings are off.")
                  + " (With it, rotary with xPos length-extrapolation scaling is switched on by itself.)"),
        ),
        Fact(
            keyword="attn_one_kv_head",
            does=(f"attn_one_kv_head = True: multi-query attention: all {cfg.heads} query heads share one K and one V "
                  f"head, so the K/V projections are dim x {cfg.attn_dim_head} instead of dim x {inner}, and the KV "
                  f"cache is {cfg.heads}x smaller than with one K/V head per query head."
                  if cfg.attn_one_kv_head else
                  f"attn_one_kv_head = False: {cfg.kv_heads} K/V head(s) for {cfg.heads} query heads"
                  + (" (multi-head attention: one K/V head per query head)." if cfg.kv_heads == cfg.heads else
                     " (grouped-query attention).")),
        ),
        Fact(
            keyword="use_abs_pos_emb",
            does=_abs_pos_words(cfg),
        ),
        Fact(
            keyword="FLOPs and MACs",
            does=("Every FLOP number here counts one multiply-add as 2 FLOPs (torch FlopCounterMode's convention). "
                  "fvcore counts one multiply-add as one 'flop': its raw count is shown as MACs."),
        ),
    ]
