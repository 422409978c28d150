"""One training run of the real decoder (``core.builder``) on a tokenised corpus, measured per evaluation step.

Recipe (what every probe uses unless told otherwise):

* AdamW (betas 0.9, 0.95; weight decay on matrices only), linear warm-up over ``warmup_frac`` of the steps, cosine
  decay to ``min_lr_ratio * lr`` at the last step;
* batches of ``batch`` windows of ``seq_len + 1`` tokens at positions drawn from ``torch.Generator(seed)``
  over the training split; next-token cross-entropy (``logits[:, t]`` predicts token ``t + 1``);
* global gradient-norm clipping at ``grad_clip`` (the pre-clip norm and the share of clipped steps are
  reported); ``grad_clip=None`` switches clipping off (the norm is still measured and reported, ``clip_fraction``
  is then missing);
* bf16 autocast on CUDA, float32 on CPU; the model is built with ``build_model(cfg, seed=seed)`` and the
  batch order uses the same seed, so a run is a pure function of (configuration, data, budget, settings,
  seed) on a given device;
* the budget is in tokens (``steps = tokens // (batch * seq_len)``) or in training FLOPs
  (``steps = flops // train_step_flops``, the cost model's ``flop_counts(cfg, Workload(batch, seq_len))
  .train_step_flops``: forward + backward = 3 x forward, full-square attention, 1 multiply-add = 2 FLOPs).
  ``train_flops`` in every row is that per-step number times the steps done.
* validation: non-overlapping windows of the training length L over the validation split (window ``i``
  predicts targets ``i L + 1 .. (i + 1) L``), loss in nats per token, and bits per byte = total nats / ln 2 /
  UTF-8 bytes of the evaluated target tokens (exact for byte-level BPE). The evaluations during training read a
  stated fixed sample: ``eval_tokens // L`` windows spread evenly over the split (window indices
  ``floor(k W / n)``, ``k = 0 .. n-1`` of the ``W = floor((val_tokens - 1) / L)`` windows), the same for every
  run and step. The FINAL evaluation (after the last step) reads the WHOLE split: all ``W`` windows, one
  ``window`` row each (``window_index``, its loss, bytes and ``context_gain_nats``), and the same at each
  length of ``eval_seq_lens`` (windows of that length; past L also ``beyond_train_len_loss_nats``, the mean
  loss at positions >= L). Every run on a split evaluates the same windows, so two arms pair per window.
* ``context_gain_nats`` = per window, the mean over the targets at positions ``[L/2, L)`` of (the target's loss
  when the model sees only its last 1, 2, .., ``CONTEXT_HEAD_TOKENS`` input tokens, averaged: the contexts of a
  window's first positions) minus (its loss with the whole window before it): what the context buys,
  paired on the same targets, so their difficulty cancels: on the default corpus (the extrapolation probe's ALiBi
  arm, shift_tokens=1, seed 0, 291 windows of 64) its per-window standard deviation is 0.108 nats against 1.31 for
  the first positions of a window minus its second half (147 times less variance; mean 0.29 vs 0.22 nats); above 0
  when the model uses the context it was trained on.
  ``evaluate(..., shuffle_context=True)`` is its control (inputs permuted within each window).
* every row carries ``peak_lr``, ``tokens_per_param`` (the tokens the run trains on, ``steps x batch x L``,
  per parameter of the built model), the split's ``val_leak_fraction`` and ``split_version``, and
  ``unigram_entropy_nats`` (the split's ``unigram_val_nats``, a unigram fitted on training; when the corpus
  object has none, the old measure: the empirical entropy of the validation split itself).
* divergence: a non-finite loss or gradient, or a training loss more than ``diverge_nats`` above
  ``max(ln V, first loss)``, ends the run with a ``diverged`` row at that step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from xtlens.core.config import ModelConfig, Workload, XtlensError
from xtlens.core.cost_model import flop_counts, memory_estimate, param_counts
from xtlens.profiling.benefit.corpus import TokenizedCorpus, unigram_entropy_nats
from xtlens.profiling.benefit.records import ProbeRecord
from xtlens.profiling.results.records import config_key, now_iso

__all__ = ["BudgetError", "Budget", "TrainSettings", "RunSpec", "train_run", "steps_for", "step_flops",
           "layer_of", "make_batch", "Builder", "evaluate", "window_indices", "position_edges",
           "CONTEXT_HEAD_TOKENS", "final_row", "context_gain_of", "short_context_nll", "predicted_train_peak_bytes"]

#: ``context_gain_nats``: the second half of a window's targets, each scored from only its last 1 .. this many
#: input tokens (the contexts of a window's first positions) against the whole window before it
CONTEXT_HEAD_TOKENS = 4

Progress = Callable[[float, str], None]
Builder = Callable[[ModelConfig, int, str], nn.Module]


class BudgetError(XtlensError, ValueError):
    """A budget or setting that cannot give a run; ``option`` names the option."""

    def __init__(self, message: str, option: str):
        self.option = option
        super().__init__(f"{option}: {message}")


@dataclass(frozen=True, kw_only=True)
class Budget:
    """``kind`` ``tokens`` (training tokens) or ``flops`` (training FLOPs, cost-model convention)."""

    kind: str
    value: int

    def __post_init__(self) -> None:
        if self.kind not in ("tokens", "flops"):
            raise BudgetError(f"budget kind {self.kind!r}: tokens or flops", "--tokens/--train-flops")
        if self.value <= 0:
            raise BudgetError(f"{self.value} is not allowed: a positive number",
                              "--tokens" if self.kind == "tokens" else "--train-flops")


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    seq_len: int = 128
    batch: int = 16
    lr: float = 3e-3
    warmup_frac: float = 0.1  # linear warm-up over this share of the steps (at least 1 step)
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float | None = 1.0  # None: clipping off (the pre-clip norm is still reported)
    evals: int = 8  # evaluation points after step 0 (evenly spaced, the last step always included)
    eval_tokens: int = 8192  # evaluations during training: this many tokens, a fixed sample of windows
    eval_seq_lens: tuple[int, ...] = ()  # extrapolation: also evaluate at these lengths (per position)
    position_buckets: int = 8
    layer_stats: bool = True
    train_subset_tokens: int | None = None  # over-fitting probe: train on the first N tokens only (epochs)
    diverge_nats: float = 3.0
    context_gain: bool = True  # False: no ``context_gain_nats`` (the atlas: the short-context passes cost ~25% of a run)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a dict (part of the result store's run key): fields added after the store existed
        (``context_gain``) appear only when not at their default, so runs stored before them are still served."""
        from dataclasses import asdict

        d = asdict(self)
        if d["context_gain"]:
            del d["context_gain"]
        return d


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """One run of a probe: which configuration, how it is labelled, its budget and seed."""

    probe: str
    cfg: ModelConfig
    budget: Budget
    seed: int
    settings: TrainSettings
    variant: str = ""
    axis: str = ""
    axis_value: int | None = None
    config_name: str = ""
    build: str = "builder"  # "builder" (core.builder.build_model) or "post_norm" (see probes.build_post_norm)
    budget_kind_label: str = ""  # "tokens", "flops" or "epochs" (defaults to budget.kind)


def step_flops(cfg: ModelConfig, settings: TrainSettings) -> int:
    """Training FLOPs of one optimizer step (cost model, see module docstring)."""
    return flop_counts(cfg, Workload(batch=settings.batch, seq_len=settings.seq_len)).train_step_flops


def steps_for(cfg: ModelConfig, budget: Budget, settings: TrainSettings) -> int:
    """Optimizer steps the budget buys; raises ``BudgetError`` (naming the option) below 2 steps."""
    if budget.kind == "tokens":
        per, option, unit = settings.batch * settings.seq_len, "--tokens", "tokens"
    else:
        per, option, unit = step_flops(cfg, settings), "--train-flops", "FLOPs"
    steps = budget.value // per
    if steps < 2:
        raise BudgetError(f"{budget.value:,} {unit} buys {steps} training step(s) of {per:,} {unit} (batch "
                          f"{settings.batch} x {settings.seq_len} tokens); at least 2 steps are needed to train and "
                          f"evaluate: give at least {2 * per:,}", option)
    return steps


def lr_at(step: int, steps: int, s: TrainSettings) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warm-up, then cosine to ``min_lr_ratio``."""
    warm = max(1, round(s.warmup_frac * steps))
    if step < warm:
        return s.lr * (step + 1) / warm
    progress = (step - warm) / max(steps - warm, 1)
    return s.lr * (s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def layer_of(name: str, layer_types: Sequence[str]) -> str:
    """The layer a parameter belongs to: ``layers.{i} (attn|ff)``, ``embedding``, ``final_norm``, ``to_logits``."""
    parts = name.split(".")
    if parts[0] == "attn_layers" and len(parts) > 2 and parts[1] == "layers":
        i = int(parts[2])
        kind = {"a": "attn", "f": "ff", "c": "cross"}.get(layer_types[i], layer_types[i]) if i < len(layer_types) else "?"
        return f"layers.{i} ({kind})"
    if parts[0] in ("token_emb", "pos_emb"):
        return "embedding"
    if parts[0] == "attn_layers":
        return parts[1]
    return parts[0]


def make_batch(ids: torch.Tensor, gen: torch.Generator, batch: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    starts = torch.randint(0, ids.numel() - seq_len - 1, (batch,), generator=gen)
    idx = starts[:, None] + torch.arange(seq_len + 1)[None, :]
    window = ids[idx]
    return window[:, :-1], window[:, 1:]


def default_builder(cfg: ModelConfig, seed: int, device: str) -> nn.Module:
    from xtlens.core.builder import build_model

    return build_model(cfg, device=device, seed=seed).model


def _autocast(device: str):
    import contextlib

    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def window_indices(n_tokens: int, seq_len: int, max_tokens: int | None = None) -> torch.Tensor:
    """Which windows of ``seq_len`` an evaluation reads: all ``W = floor((n_tokens - 1) / seq_len)`` of them
    (``max_tokens`` None, or at least ``W * seq_len``), else the stated fixed sample of ``k = max(1, max_tokens //
    seq_len)`` windows spread evenly over the split (indices ``floor(j W / k)``, ``j = 0 .. k-1``)."""
    total = (n_tokens - 1) // seq_len
    if total < 1:
        raise BudgetError(f"the validation split has {n_tokens:,} tokens, fewer than one window of {seq_len} (+1 "
                          "target)", "--seq-len")
    if max_tokens is None or max_tokens // seq_len >= total:
        return torch.arange(total)
    k = max(1, max_tokens // seq_len)
    return torch.arange(k) * total // k


def position_edges(seq_len: int, buckets: int) -> list[int]:
    """Position buckets of a window: ``buckets`` equal buckets, the first split at powers of two (0, 1, 2, 4, ...)
    so the loss of the first positions (the least context) is shown on its own."""
    uniform = {round(seq_len * k / buckets) for k in range(buckets + 1)}
    head = {0}
    p = 1
    first = min(e for e in uniform if e > 0)
    while p < first:
        head.add(p)
        p *= 2
    return sorted(uniform | head)


def context_gain_of(nll: torch.Tensor, short_nll: torch.Tensor | None, train_len: int) -> torch.Tensor | None:
    """Per window (rows of ``nll``, loss per position): the mean over positions ``[train_len / 2, train_len)`` of
    ``short_nll`` (the same targets scored from their last ``CONTEXT_HEAD_TOKENS`` inputs, ``short_context_nll``)
    minus ``nll``; None when ``train_len < 2 * CONTEXT_HEAD_TOKENS`` or there is no ``short_nll``."""
    if short_nll is None or train_len < 2 * CONTEXT_HEAD_TOKENS or nll.shape[1] < train_len:
        return None
    return (short_nll - nll[:, train_len // 2: train_len]).mean(1)


def short_context_nll(model: nn.Module, x_all: torch.Tensor, y_all: torch.Tensor, train_len: int, *, device: str,
                      batch: int = 4096) -> torch.Tensor | None:
    """The loss of the targets at positions ``[train_len / 2, train_len)`` of every window (rows of ``x_all`` /
    ``y_all``) when the model sees only the last ``c + 1`` input tokens ending at the target's own input, averaged
    over ``c = 0 .. CONTEXT_HEAD_TOKENS - 1``: the contexts of a window's first ``CONTEXT_HEAD_TOKENS`` positions,
    given to the same targets (a sequence of length ``c + 1`` per target and ``c``, scored at its last position);
    float64, windows x (train_len / 2)."""
    h = CONTEXT_HEAD_TOKENS
    if train_len < 2 * h or x_all.shape[1] < train_len:
        return None
    first = train_len // 2
    n = train_len - first
    ys = y_all[:, first:train_len].reshape(-1)
    total = torch.zeros(ys.numel(), dtype=torch.float64)
    for c in range(h):
        offsets = torch.arange(first, train_len)[:, None] + torch.arange(-c, 1)[None, :]  # (n, c + 1)
        xs = x_all[:, offsets].reshape(-1, c + 1)  # (windows * n, c + 1)
        parts = []
        for i in range(0, xs.shape[0], batch):
            with _autocast(device):
                logits = model(xs[i:i + batch].to(device))[:, -1]
            parts.append(F.cross_entropy(logits.float(), ys[i:i + batch].to(device), reduction="none").double().cpu())
        total += torch.cat(parts)
    return (total / h).view(-1, n)


@torch.no_grad()
def evaluate(model: nn.Module, ids: torch.Tensor, token_bytes: torch.Tensor, *, seq_len: int,
             max_tokens: int | None = None, device: str = "cpu", buckets: int = 0, batch: int = 16,
             train_len: int | None = None, shuffle_context: bool = False, shuffle_seed: int = 0,
             context_gain: bool = True) -> dict[str, Any]:
    """Validation loss over non-overlapping windows of ``seq_len`` (``window_indices``: the whole split when
    ``max_tokens`` is None, else the fixed sample). Returns ``loss`` (nats/token), ``bpb``, ``tokens``, ``bytes``,
    ``windows``, ``window_index`` (the windows read), ``nll`` (windows x seq_len, float64: each target's loss),
    ``window_bytes``, ``context_gain`` (mean over windows, with ``train_len``, default ``seq_len``; and
    ``context_gain_windows``; ``context_gain=False`` skips it), ``beyond`` (per window, mean loss at positions >= ``train_len``; None unless
    ``seq_len > train_len``) and, with ``buckets``, ``buckets`` = [(start, end, mean loss)] (``position_edges``).

    ``shuffle_context`` is the context-ablation control: within each window the (input, target) pairs are
    permuted (a fixed permutation per window from ``torch.Generator(shuffle_seed)``): every target is still
    predicted from its own input token, but the tokens before it are the window's tokens in random order. A
    model that uses the order of its context loses its context gain; the same targets (and bytes) are scored.
    """
    train_len = train_len or seq_len
    idx = window_indices(ids.numel(), seq_len, max_tokens)
    pos = idx[:, None] * seq_len + torch.arange(seq_len)[None, :]
    x_all, y_all = ids[pos], ids[pos + 1]
    if shuffle_context:
        perm = torch.rand(x_all.shape, generator=torch.Generator().manual_seed(shuffle_seed)).argsort(dim=1)
        x_all, y_all = x_all.gather(1, perm), y_all.gather(1, perm)
    windows = int(idx.numel())
    was_training = model.training
    model.eval()
    parts = []
    for i in range(0, windows, batch):
        x, y = x_all[i:i + batch].to(device), y_all[i:i + batch].to(device)
        with _autocast(device):
            logits = model(x)
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
        parts.append(nll.view(-1, seq_len).double().cpu())
    nll = torch.cat(parts)
    short = short_context_nll(model, x_all, y_all, train_len, device=device) if context_gain else None
    model.train(was_training)
    total_nats = float(nll.sum())
    window_bytes = token_bytes[y_all].sum(1)
    n_bytes = int(window_bytes.sum())
    gain = context_gain_of(nll, short, train_len)
    out: dict[str, Any] = {"loss": total_nats / (windows * seq_len), "bpb": total_nats / math.log(2) / n_bytes,
                           "tokens": windows * seq_len, "bytes": n_bytes, "windows": windows, "window_index": idx,
                           "nll": nll, "window_bytes": window_bytes, "context_gain_windows": gain,
                           "context_gain": float(gain.mean()) if gain is not None else None,
                           "beyond": nll[:, train_len:].mean(1) if seq_len > train_len else None}
    if buckets:
        per_pos = nll.mean(0)
        edges = position_edges(seq_len, buckets)
        out["buckets"] = [(a, b, float(per_pos[a:b].mean())) for a, b in zip(edges, edges[1:], strict=False) if b > a]
    return out


def _global_norm(params: Sequence[torch.nn.Parameter], clip: float | None) -> torch.Tensor:
    """The global L2 gradient norm before clipping; clips to ``clip`` unless it is None (clipping off)."""
    if clip is None:
        return torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    return torch.nn.utils.clip_grad_norm_(params, clip)


def train_run(run: RunSpec, data: TokenizedCorpus, *, device: str = "cpu", device_name: str = "",
              versions: dict[str, str] | None = None, build: Builder | None = None, run_key: str = "",
              progress: Progress | None = None) -> list[ProbeRecord]:
    """Train ``run.cfg`` on ``data`` within ``run.budget``; rows per evaluation step (see ``probes.records``)."""
    s, cfg = run.settings, run.cfg
    steps = steps_for(cfg, run.budget, s)
    per_step_flops = step_flops(cfg, s)
    train_ids = data.train_ids if s.train_subset_tokens is None else data.train_ids[: s.train_subset_tokens]
    if train_ids.numel() < s.seq_len + 2:
        raise BudgetError(f"the training data has {train_ids.numel():,} tokens, fewer than one window of "
                          f"{s.seq_len + 1}", "--seq-len")
    if s.grad_clip is not None and not s.grad_clip > 0:
        raise BudgetError(f"{s.grad_clip} is not allowed: a positive gradient-norm limit, or None (clipping off)",
                          "grad_clip")
    window_indices(data.val_tokens, s.seq_len)  # a validation split shorter than one window: refused up front
    versions = versions or {}
    pc = param_counts(cfg)
    kv = memory_estimate(cfg, Workload(batch=1, seq_len=1)).kv_cache_bytes_per_token
    unigram = data.unigram_val_nats if data.unigram_val_nats is not None else unigram_entropy_nats(data.val_ids)
    model = (build or default_builder)(cfg, run.seed, device)
    model.train()
    num_params = sum(p.numel() for p in model.parameters())  # the built model (a custom builder may differ)
    trained_tokens = steps * s.batch * s.seq_len
    common = dict(probe=run.probe, run_key=run_key, config_name=run.config_name or run.variant,
                  config_key=config_key(cfg), config_json=cfg.to_json(), variant=run.variant, axis=run.axis,
                  axis_value=run.axis_value, budget_kind=run.budget_kind_label or run.budget.kind, seed=run.seed,
                  steps_total=steps, budget_tokens=run.budget.value if run.budget.kind == "tokens" else None,
                  budget_flops=run.budget.value if run.budget.kind == "flops" else None,
                  unigram_entropy_nats=unigram, grad_clip=s.grad_clip, train_seq_len_tokens=s.seq_len,
                  batch=s.batch, num_params=num_params, non_embedding_params=pc.non_embedding_params,
                  kv_cache_bytes_per_token=kv, corpus_name=data.corpus_name, corpus_sha256=data.corpus_sha256,
                  vocab_size=data.vocab_size, train_split_tokens=int(train_ids.numel()),
                  val_split_tokens=data.val_tokens, val_split_bytes=data.val_bytes, device=device,
                  device_name=device_name, autocast_dtype="bfloat16" if device.startswith("cuda") else "float32",
                  torch_version=versions.get("torch", torch.__version__),
                  xtransformers_version=versions.get("x-transformers", ""), peak_lr=s.lr,
                  tokens_per_param=trained_tokens / num_params, val_leak_fraction=data.val_leak_fraction,
                  split_version=data.split_version)
    rows: list[ProbeRecord] = []
    layer_types = list(getattr(model.attn_layers, "layer_types", ()))
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    plist = [p for _, p in params]
    groups: dict[str, list[torch.nn.Parameter]] = {}
    for n, p in params:
        groups.setdefault(layer_of(n, layer_types), []).append(p)
    decay = [p for _, p in params if p.ndim >= 2]
    no_decay = [p for _, p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": s.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=s.lr, betas=(0.9, 0.95),
                            **({"fused": True} if device.startswith("cuda") else {}))
    eval_steps = sorted({max(1, round(steps * k / s.evals)) for k in range(1, s.evals + 1)} | {steps})
    gen = torch.Generator().manual_seed(run.seed)
    first_loss: float | None = None
    limit = math.log(data.vocab_size)
    window_losses: list[float] = []
    window_clipped = 0
    train_time = 0.0
    started = time.perf_counter()
    final: dict[str, Any] = {}
    peak: dict[str, Any] = {"predicted": predicted_train_peak_bytes(cfg, s, device)}

    def window_rows(base: dict[str, Any], ev: dict[str, Any], length: int, change: torch.Tensor | None) -> None:
        nats = ev["nll"].sum(1)
        gain, beyond = ev["context_gain_windows"], ev["beyond"]
        for j, w in enumerate(ev["window_index"].tolist()):
            nb = int(ev["window_bytes"][j])
            rows.append(ProbeRecord(**base, row_kind="window", window_index=w, eval_seq_len_tokens=length,
                                    val_loss_nats=float(nats[j]) / length,
                                    val_bits_per_byte=float(nats[j]) / math.log(2) / nb if nb else None,
                                    eval_tokens=length, eval_bytes=nb,
                                    context_gain_nats=float(gain[j]) if gain is not None else None,
                                    beyond_train_len_loss_nats=float(beyond[j]) if beyond is not None else None,
                                    loss_change_vs_train_len_nats=float(change[j]) if change is not None else None))

    def eval_rows(step: int, *, train_loss: float | None, grad_norm: float | None, clip_fraction: float | None,
                  lr: float | None, layer_stats: dict[str, tuple[float, float | None]] | None,
                  status: str = "ok", error: str | None = None) -> None:
        last = step == steps and status == "ok"
        ev = None
        if status == "ok":  # the last step reads the whole split; the others the fixed sample
            ev = evaluate(model, data.val_ids, data.token_bytes, seq_len=s.seq_len,
                          max_tokens=None if last else s.eval_tokens, device=device, batch=16,
                          buckets=s.position_buckets if last else 0, context_gain=s.context_gain)
        base = dict(common, step=step, tokens_seen=step * s.batch * s.seq_len, train_flops=step * per_step_flops,
                    elapsed_s=time.perf_counter() - started, timestamp=now_iso(),
                    tokens_per_s=(step * s.batch * s.seq_len / train_time) if train_time > 0 else None)
        rows.append(ProbeRecord(**base, row_kind="eval", train_loss_nats=train_loss,
                                val_loss_nats=ev["loss"] if ev else None, val_bits_per_byte=ev["bpb"] if ev else None,
                                context_gain_nats=ev["context_gain"] if ev else None,
                                eval_seq_len_tokens=s.seq_len, eval_tokens=ev["tokens"] if ev else None,
                                eval_bytes=ev["bytes"] if ev else None, grad_norm=grad_norm,
                                clip_fraction=clip_fraction, lr=lr, status=status, error=error))
        for layer, (gnorm, ratio) in (layer_stats or {}).items():
            rows.append(ProbeRecord(**base, row_kind="layer", layer=layer, grad_norm=gnorm,
                                    update_to_weight_ratio=ratio, status=status))
        if last:
            final["ev"] = ev
            window_rows(base | {"elapsed_s": time.perf_counter() - started}, ev, s.seq_len, None)

    def layer_grad_norms() -> dict[str, float]:
        return {layer: float(torch.sqrt(sum((p.grad.detach().float() ** 2).sum() for p in ps if p.grad is not None)
                                        or torch.tensor(0.0))) for layer, ps in groups.items()}

    # step 0: loss and per-layer gradient norms at initialisation (no update)
    x, y = make_batch(train_ids, torch.Generator().manual_seed(run.seed + 1_000_003), s.batch, s.seq_len)
    with _autocast(device):
        logits = model(x.to(device))
    loss0 = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.to(device).reshape(-1))
    loss0.backward()
    init_stats = {k: (v, None) for k, v in layer_grad_norms().items()} if s.layer_stats else None
    gn0 = float(torch.sqrt(sum((p.grad.float() ** 2).sum() for _, p in params if p.grad is not None)))
    opt.zero_grad(set_to_none=True)
    eval_rows(0, train_loss=float(loss0.detach()), grad_norm=gn0, clip_fraction=None, lr=None, layer_stats=init_stats)

    # the measured training peak: CUDA over the whole run; CPU one tracked steady-state step (the first step after
    # the first that evaluates nothing: the optimizer state exists, no weight copies for the layer statistics)
    cuda = device.startswith("cuda")
    tracked_step = next((i for i in range(1, steps) if i + 1 not in eval_steps), 1)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(steps):
        t0 = time.perf_counter()
        lr = lr_at(step, steps, s)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = make_batch(train_ids, gen, s.batch, s.seq_len)
        tracker = _step_tracker(model, opt) if step == tracked_step and not cuda else None
        if tracker is not None:
            try:
                tracker.__enter__()
            except Exception as exc:  # noqa: BLE001 - no measured peak is a missing value, not a failed run
                peak["method"] = f"not measured: MemTracker failed ({type(exc).__name__}: {exc})"[:200]
                tracker = None
        with _autocast(device):
            logits = model(x.to(device, non_blocking=True))
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.to(device).reshape(-1))
        del logits  # the logits die after the loss (the closed form's ``free_logits`` loop)
        loss.backward()
        gnorm_t = _global_norm(plist, s.grad_clip)
        done = step + 1
        is_eval = done in eval_steps
        stats = None
        if is_eval and s.layer_stats:
            grads = layer_grad_norms()
            before = {k: [p.detach().clone() for p in ps] for k, ps in groups.items()}
        opt.step()
        opt.zero_grad(set_to_none=True)
        if tracker is not None:
            try:
                tracker.__exit__(None, None, None)
                peak["measured"] = _tracker_peak_bytes(tracker)
                peak["method"] = (f"torch MemTracker over training step {step + 1} of {steps} (real tensors on the "
                                  "CPU: weights, gradients, AdamW state, activations, temporaries)")
            except Exception as exc:  # noqa: BLE001 - as above
                peak["method"] = f"not measured: MemTracker failed ({type(exc).__name__}: {exc})"[:200]
            del tracker
        loss_v, gnorm = float(loss.detach()), float(gnorm_t)  # synchronises (CUDA) before the clock is read
        train_time += time.perf_counter() - t0
        if is_eval and s.layer_stats:
            stats = {}
            for k, ps in groups.items():
                dw = math.sqrt(sum(float(((p.detach() - b) ** 2).sum()) for p, b in zip(ps, before[k], strict=True)))
                w = math.sqrt(sum(float((b ** 2).sum()) for b in before[k]))
                stats[k] = (grads[k], dw / w if w > 0 else None)
        first_loss = loss_v if first_loss is None else first_loss
        window_losses.append(loss_v)
        window_clipped += int(s.grad_clip is not None and gnorm > s.grad_clip)
        if not (math.isfinite(loss_v) and math.isfinite(gnorm)) or loss_v > max(limit, first_loss) + s.diverge_nats:
            why = ("a non-finite loss or gradient" if not (math.isfinite(loss_v) and math.isfinite(gnorm)) else
                   f"training loss {loss_v:.3g} nats > max(ln V, first loss) + {s.diverge_nats:g}")
            eval_rows(done, train_loss=loss_v if math.isfinite(loss_v) else None,
                      grad_norm=gnorm if math.isfinite(gnorm) else None, clip_fraction=None, lr=lr, layer_stats=stats,
                      status="diverged", error=f"diverged at step {done} of {steps}: {why}")
            return _with_peak(rows, peak, device)
        if is_eval:
            eval_rows(done, train_loss=sum(window_losses) / len(window_losses), grad_norm=gnorm,
                      clip_fraction=window_clipped / len(window_losses) if s.grad_clip is not None else None, lr=lr,
                      layer_stats=stats)
            window_losses, window_clipped = [], 0
            if progress is not None:
                last = final_row(rows)
                progress(done / steps, f"step {done}/{steps}, train {last.train_loss_nats:.3f}, val "
                                       f"{last.val_loss_nats:.3f} nats/token")
    short = final["ev"]  # the whole split in windows of the training length
    for length in s.eval_seq_lens:
        base = dict(common, step=steps, tokens_seen=steps * s.batch * s.seq_len, train_flops=steps * per_step_flops,
                    eval_seq_len_tokens=length, timestamp=now_iso())
        if length == s.seq_len:
            ev, delta = short, torch.zeros_like(short["nll"])
        else:
            ev = evaluate(model, data.val_ids, data.token_bytes, seq_len=length, max_tokens=None, device=device,
                          buckets=s.position_buckets, batch=max(1, 16 * s.seq_len // length), train_len=s.seq_len,
                          context_gain=s.context_gain)
            # the same target tokens in windows of the training length (a prefix of the final evaluation's
            # windows): the per-token difference is what the longer window changes (0 for its first seq_len
            # positions, which see the same context)
            m = length // s.seq_len
            delta = (ev["nll"] - short["nll"][: ev["windows"] * m].reshape(ev["windows"], length)
                     if length % s.seq_len == 0 else None)
        base["elapsed_s"] = time.perf_counter() - started
        rows.append(ProbeRecord(**base, row_kind="eval_length", val_loss_nats=ev["loss"], val_bits_per_byte=ev["bpb"],
                                eval_tokens=ev["tokens"], eval_bytes=ev["bytes"], context_gain_nats=ev["context_gain"],
                                beyond_train_len_loss_nats=float(ev["beyond"].mean()) if ev["beyond"] is not None
                                else None,
                                loss_change_vs_train_len_nats=float(delta.mean()) if delta is not None else None))
        for a, b, loss in ev["buckets"]:
            rows.append(ProbeRecord(**base, row_kind="position", position_start_tokens=a, position_end_tokens=b,
                                    val_loss_nats=loss, loss_change_vs_train_len_nats=float(delta[:, a:b].mean())
                                    if delta is not None else None))
        if length != s.seq_len:
            window_rows({k: v for k, v in base.items() if k != "eval_seq_len_tokens"}, ev, length,
                        delta.mean(1) if delta is not None else None)
    return _with_peak(rows, peak, device)


def predicted_train_peak_bytes(cfg: ModelConfig, settings: TrainSettings, device: str) -> int | None:
    """The closed form's ordered training peak of this harness's step (``core.training.training_memory``): batch x
    seq_len, float32 on the CPU and bf16 autocast on CUDA, AdamW, the logits freed after the loss (``free_logits``);
    the single-tensor AdamW path (the CPU default; CUDA runs fused AdamW, which has no per-tensor temporaries
    either way of the order of the largest tensor). None where the closed form does not cover the model."""
    from xtlens.core.setup import TrainingSetup
    from xtlens.core.training import training_memory

    try:
        setup = TrainingSetup(precision="amp_bf16" if device.startswith("cuda") else "fp32", optimizer="adamw",
                              loop="free_logits")
        return int(training_memory(cfg, Workload(batch=settings.batch, seq_len=settings.seq_len), setup).peak_bytes)
    except Exception:  # noqa: BLE001 - a prediction the closed form cannot make is missing, not a failed run
        return None


def _step_tracker(model: nn.Module, opt: torch.optim.Optimizer):
    from torch.distributed._tools.mem_tracker import MemTracker

    tracker = MemTracker()
    tracker.track_external(model, opt)
    return tracker


def _tracker_peak_bytes(tracker) -> int:
    """The peak of a MemTracker run over all devices ("Total" of its peak snapshot)."""
    total = 0
    for dev_snap in tracker.get_tracker_snapshot("peak").values():
        for key, value in dev_snap.items():
            if getattr(key, "value", key) == "Total":
                total += int(value)
    return total


def _with_peak(rows: list[ProbeRecord], peak: dict[str, Any], device: str) -> list[ProbeRecord]:
    """Every row of the run with its training peak: measured (CUDA: ``max_memory_allocated`` over the run; CPU: the
    tracked step), predicted and how it was measured."""
    from dataclasses import replace

    if device.startswith("cuda"):
        peak["measured"] = int(torch.cuda.max_memory_allocated(device))
        peak["method"] = "torch.cuda.max_memory_allocated over the run (training and evaluation)"
    return [replace(r, train_peak_bytes=peak.get("measured"), train_peak_predicted_bytes=peak.get("predicted"),
                    train_peak_method=peak.get("method", "")) for r in rows]


def final_row(rows: Sequence[ProbeRecord]) -> ProbeRecord:
    """The last ``eval`` row of a run's rows."""
    return next(r for r in reversed(rows) if r.row_kind == "eval")
