"""What each flag of the seed really does in x-transformers, and where seed-analysis.md is wrong.

Pure data for the Overview's facts panel (read from the x-transformers 1.19.1 and 2.31 sources; the
same facts are the docstring of ``core.config``). ``Fact.correction`` is set where the seed analysis
says something else.
"""

from __future__ import annotations

from dataclasses import dataclass

from xtlens.core.config import ModelConfig


@dataclass(frozen=True, kw_only=True)
class Fact:
    keyword: str
    does: str
    correction: str | None = None


def facts(cfg: ModelConfig) -> list[Fact]:
    """The facts, with the numbers of ``cfg`` filled in."""
    inner = cfg.attn_inner_dim
    alibi = cfg.alibi_heads
    seg = cfg.shift_tokens + 1
    return [
        Fact(
            keyword="heads",
            does=(f"{cfg.heads} query heads, each attn_dim_head = {cfg.attn_dim_head} wide: the attention inner width "
                  f"is heads x attn_dim_head = {inner}, whatever dim ({cfg.dim}) is. More heads add parameters and "
                  "FLOPs in proportion (Q and output projections grow), they do not slice dim."),
            correction=("seed-analysis.md describes heads as splitting the representation; in x-transformers the head "
                        "width is attn_dim_head, so heads=8 with dim=512 is 8 x 64 = 512 only because the default "
                        "attn_dim_head is 64."),
        ),
        Fact(
            keyword="shift_tokens",
            does=(f"shift_tokens = {cfg.shift_tokens}: before every attention and feed-forward sub-layer the feature "
                  f"vector is cut into {seg} slices of dim // {seg} = {cfg.dim // seg} channels; slice k is taken from "
                  "k positions earlier (token shifting, x-transformers ShiftTokens). It adds no parameters."
                  if cfg.shift_tokens else
                  "shift_tokens = 0: no token shifting. (With shift_tokens = n > 0, slices of each feature vector are "
                  "taken from the previous 1..n positions before every sub-layer.)"),
            correction=("seed-analysis.md calls it 'the number of tokens to shift during training to form the target "
                        "sequence'. It is not: the next-token target shift is done by the loss (AutoregressiveWrapper), "
                        "whatever shift_tokens is."),
        ),
        Fact(
            keyword="alibi_pos_bias / alibi_num_heads",
            does=(f"ALiBi adds a linear distance penalty to the attention scores of {alibi} of {cfg.heads} heads "
                  "(the other heads get a zero bias). In x-transformers 2.31 the bias is materialised as a "
                  "(batch, heads, n, n) tensor for every layer call: memory grows with n^2."
                  if cfg.alibi_pos_bias else
                  "ALiBi is off. (With it, a linear distance penalty is added to the scores of alibi_num_heads heads, "
                  "as a materialised (batch, heads, n, n) bias.)"),
            correction=("seed-analysis.md calls alibi_num_heads 'the number of ALiBi attention heads': they are not "
                        "extra heads, they are the subset of the existing heads that receive the bias."),
        ),
        Fact(
            keyword="attn_flash",
            does=("Calls torch.nn.functional.scaled_dot_product_attention (SDPA). SDPA picks a kernel: flash needs a "
                  "CUDA GPU, fp16/bf16 and no additive attention mask; memory-efficient accepts a bias; math is the "
                  "fallback. The Latency view shows the kernel that actually ran."),
            correction=("seed-analysis.md implies flash attention runs. With alibi_pos_bias the additive bias keeps "
                        "SDPA off the flash kernel, and on CPU there is no flash kernel at all."
                        if cfg.alibi_pos_bias else None),
        ),
        Fact(
            keyword="deepnorm",
            does=("x-transformers <= 1.19.1: post-norm (LayerNorm after each residual add, no final norm), a learnable "
                  f"residual scale times (2 x depth)^0.25 = {(2 * cfg.depth) ** 0.25:.4g}, and Xavier re-initialisation "
                  f"with gain (8 x depth)^-0.25 = {(8 * cfg.depth) ** -0.25:.4g} on value, output and feed-forward "
                  "weights. x-transformers 2.x removed the keyword; xtlens emulates it with pre_norm=False, "
                  "scale_residual=True, scale_residual_constant and the re-init (see effective kwargs)."),
            correction="seed-analysis.md does not say that deepnorm no longer exists in current x-transformers.",
        ),
        Fact(
            keyword="rotary_xpos",
            does=(f"Rotary embedding on attn_dim_head // 2 = {cfg.attn_dim_head // 2} channels of each query and key "
                  "head, with xPos scaling for length extrapolation. It switches rotary on by itself and disables "
                  "the learned absolute position table. Causal attention only. No parameters (buffers only)."),
        ),
        Fact(
            keyword="attn_one_kv_head",
            does=(f"Multi-query attention: all {cfg.heads} query heads share one K and one V head, so the K/V "
                  f"projections are dim x {cfg.attn_dim_head} instead of dim x {inner}, and the KV cache is "
                  f"{cfg.heads}x smaller than with one K/V head per query head."),
        ),
        Fact(
            keyword="use_abs_pos_emb",
            does=("Learned absolute position table (max_seq_len x dim). x-transformers leaves it out whenever rotary "
                  "embeddings are on, so with rotary_xpos it is absent whatever this flag says."),
        ),
        Fact(
            keyword="FLOPs and MACs",
            does=("Every FLOP number here counts one multiply-add as 2 FLOPs (torch FlopCounterMode's convention). "
                  "fvcore counts one multiply-add as one 'flop': its raw count is shown as MACs."),
        ),
    ]
