"""The training numbers the tabs share, with their setup in the label: one source (``core.cost_model.training_headline``
and ``core.cost_model.training_memory`` / ``training_flops_for`` under the Setups tab's setup), one wording.

"Training peak" is the peak by the order tensors live and die (what a measurement sees, within 0.1% of MemTracker on
the seed); "Training upper bound (sum of parts)" adds every component as if all were alive at once. Training-step
FLOPs include the ``Q K^T`` a fused (flash) SDPA backward recomputes; the label says whether activations are
recomputed too (the Setups tab's recomputation)."""

from __future__ import annotations

from xtlens.core.setup import TrainingSetup

__all__ = ["RECOMPUTE_WORDS", "OPTIMIZER_WORDS", "setup_words", "flops_label", "peak_label", "UPPER_BOUND_LABEL"]

RECOMPUTE_WORDS = {"none": "no recomputation", "block": "with block recomputation",
                   "selective": "with selective recomputation"}
OPTIMIZER_WORDS = {"adamw": "AdamW", "sgd": "SGD", "adafactor": "Adafactor", "adamw8bit": "8-bit AdamW"}
UPPER_BOUND_LABEL = "Training upper bound (sum of parts, AdamW)"


def setup_words(setup: TrainingSetup | None = None) -> str:
    """The training setup in a few words for a label: ``AdamW, no recomputation`` for the default; precision, loop,
    accumulation and parallelism only when they differ from it."""
    s = setup or TrainingSetup()
    parts = [] if s.precision == "auto" else [s.precision]
    parts += [OPTIMIZER_WORDS[s.optimizer], RECOMPUTE_WORDS[s.recompute]]
    if s.loop != "free_logits":
        parts.append("logits kept")
    if s.grad_accum > 1:
        parts.append(f"{s.grad_accum} micro-batches")
    if s.dp > 1:
        parts.append(f"ZeRO-{s.zero} over {s.dp}" if s.zero else f"{s.dp}-way data-parallel")
    if s.tp > 1:
        parts.append(f"{s.tp}-way tensor-parallel")
    return ", ".join(parts)


def flops_label(setup: TrainingSetup | None = None, *, per_device: bool = False) -> str:
    """``Training-step FLOPs (no recomputation)``; ``per device`` and ``tensor-parallel`` words when they apply."""
    s = setup or TrainingSetup()
    words = RECOMPUTE_WORDS[s.recompute] + (f", {s.tp}-way tensor-parallel" if s.tp > 1 else "")
    return f"Training-step FLOPs{' per device' if per_device else ''} ({words})"


def peak_label(setup: TrainingSetup | None = None, *, per_device: bool = False) -> str:
    """``Training peak (AdamW, no recomputation)`` (the ordered peak under ``setup``)."""
    return f"Training peak{' per device' if per_device else ''} ({setup_words(setup)})"
