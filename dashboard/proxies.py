"""Capacity and benefit proxies for the Trade-offs view, each with its source. Pure functions.

These are rules of thumb from the scaling-law literature, not measurements of this model; the page
prints ``SOURCES`` next to the curves.

* Capacity: non-embedding parameters N (Kaplan et al. 2020, "Scaling Laws for Neural Language
  Models", arXiv:2001.08361: loss follows N excluding embeddings).
* Compute-optimal data: D* ~= 20 tokens per parameter (Hoffmann et al. 2022, "Training
  Compute-Optimal Large Language Models" (Chinchilla), arXiv:2203.15556; their parameter counts
  include embeddings, see Pearce & Song 2024, arXiv:2406.12907).
* Tokens per parameter of the user's data set D / N_total: below ~20 the model is larger than
  compute-optimal for the data (repeated epochs risk over-fitting); far above, a larger model could
  use the data (under-fitting / capacity-limited regime).
* Training compute C ~= 6 N D FLOPs (Kaplan et al. 2020, section 2.1: forward 2N + backward 4N per token).
* Chinchilla's parametric loss fit L(N, D) = E + A / N^alpha + B / D^beta with E = 1.69, A = 406.4,
  B = 410.7, alpha = 0.34, beta = 0.28 (Hoffmann et al. 2022, eq. 10, approach 3). Fitted on their data
  and tokenizer: only differences between configurations are meaningful, not the absolute value.
"""

from __future__ import annotations

CHINCHILLA_TOKENS_PER_PARAM = 20.0
CHINCHILLA_FIT = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}

SOURCES: dict[str, str] = {
    "non_embedding_params": "Capacity proxy: non-embedding parameters N (Kaplan et al. 2020, arXiv:2001.08361).",
    "compute_optimal_tokens": "Compute-optimal training tokens D* = 20 x parameters (Hoffmann et al. 2022, "
                              "'Chinchilla', arXiv:2203.15556; parameters counted with embeddings).",
    "tokens_per_param": "Your data set size D / parameters, against the Chinchilla ratio ~20 (Hoffmann et al. 2022).",
    "train_compute_flops": "Training compute C = 6 x N x D FLOPs (Kaplan et al. 2020, sec. 2.1), N = "
                           "non-embedding parameters, D = your data set in tokens.",
    "chinchilla_loss_nats": "Predicted loss L(N, D) = 1.69 + 406.4 / N^0.34 + 410.7 / D^0.28 (Hoffmann et al. 2022, "
                       "eq. 10, approach 3), N = all parameters, D = your data set in tokens. Fitted on MassiveText "
                       "with their tokenizer: read differences between configurations, not the absolute value.",
}


def compute_optimal_tokens(num_params: int) -> float:
    """Chinchilla's compute-optimal training tokens for ``num_params`` parameters: 20 x N."""
    return CHINCHILLA_TOKENS_PER_PARAM * num_params


def tokens_per_param(dataset_tokens: float, num_params: int) -> float:
    return dataset_tokens / num_params


def data_regime(dataset_tokens: float, num_params: int) -> str:
    """A one-line verdict for the tokens-per-parameter indicator (ratio against Chinchilla's 20)."""
    ratio = tokens_per_param(dataset_tokens, num_params) / CHINCHILLA_TOKENS_PER_PARAM
    if ratio < 0.5:
        return (f"{ratio:.2g}x the compute-optimal data: the model is large for this data set; several epochs risk "
                "over-fitting, a smaller model reaches the same loss for less compute")
    if ratio > 2:
        return (f"{ratio:.2g}x the compute-optimal data: the data could feed a larger model (capacity-limited / "
                "under-fitting regime); still fine if inference cost matters more")
    return f"{ratio:.2g}x the compute-optimal data: close to Chinchilla's ~20 tokens per parameter"


def train_compute_flops(non_embedding_params: int, dataset_tokens: float) -> float:
    """Kaplan et al.'s C = 6 N D FLOPs (one multiply-add = 2 FLOPs)."""
    return 6.0 * non_embedding_params * dataset_tokens


def chinchilla_loss(num_params: int, dataset_tokens: float) -> float:
    """Hoffmann et al. 2022's fitted loss L(N, D) in nats per token (their data; compare, don't read absolutely)."""
    f = CHINCHILLA_FIT
    return f["E"] + f["A"] / num_params ** f["alpha"] + f["B"] / dataset_tokens ** f["beta"]
