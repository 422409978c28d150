"""One training run of the real decoder (``core.builder``) on a tokenised corpus, measured per evaluation step.

Recipe (what every probe uses unless told otherwise):

* AdamW (betas 0.9, 0.95; weight decay on matrices only), linear warm-up over ``warmup_frac`` of the steps, cosine
  decay to ``min_lr_ratio * lr`` at the last step;
* batches of ``batch`` windows of ``seq_len + 1`` tokens at positions drawn from ``torch.Generator(seed)``
  over the training split; next-token cross-entropy (``logits[:, t]`` predicts token ``t + 1``);
* global gradient-norm clipping at ``grad_clip`` (the pre-clip norm and the share of clipped steps are
  reported);
* bf16 autocast on CUDA, float32 on CPU; the model is built with ``build_model(cfg, seed=seed)`` and the
  batch order uses the same seed, so a run is a pure function of (configuration, data, budget, settings,
  seed) on a given device;
* the budget is in tokens (``steps = tokens // (batch * seq_len)``) or in training FLOPs
  (``steps = flops // train_step_flops``, the cost model's ``flop_counts(cfg, Workload(batch, seq_len))
  .train_step_flops``: forward + backward = 3 x forward, full-square attention, 1 multiply-add = 2 FLOPs).
  ``train_flops`` in every row is that per-step number times the steps done.
* validation: non-overlapping windows of the validation split (up to ``eval_tokens`` targets), loss in nats
  per token, and bits per byte = total nats / ln 2 / UTF-8 bytes of the evaluated target tokens (exact for
  byte-level BPE).
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
           "layer_of", "make_batch", "Builder"]

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
    grad_clip: float = 1.0
    evals: int = 8  # evaluation points after step 0 (evenly spaced, the last step always included)
    eval_tokens: int = 8192
    eval_seq_lens: tuple[int, ...] = ()  # extrapolation: also evaluate at these lengths (per position)
    position_buckets: int = 8
    layer_stats: bool = True
    train_subset_tokens: int | None = None  # over-fitting probe: train on the first N tokens only (epochs)
    diverge_nats: float = 3.0

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


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


@torch.no_grad()
def evaluate(model: nn.Module, ids: torch.Tensor, token_bytes: torch.Tensor, *, seq_len: int, max_tokens: int,
             device: str, buckets: int = 0, batch: int = 16, keep_nll: bool = False) -> dict[str, Any]:
    """Validation loss over non-overlapping windows of ``seq_len`` (at least one window) covering the first
    ``windows * seq_len + 1`` tokens; ``keep_nll`` also returns every target's loss in order (``nll``)."""
    windows = max(1, min(max_tokens // seq_len, (ids.numel() - 1) // seq_len))
    if (ids.numel() - 1) < seq_len:
        raise BudgetError(f"the validation split has {ids.numel():,} tokens, fewer than one window of {seq_len}",
                          "--seq-len")
    x_all = ids[: windows * seq_len].view(windows, seq_len)
    y_all = ids[1: windows * seq_len + 1].view(windows, seq_len)
    was_training = model.training
    model.eval()
    nats_pos = torch.zeros(seq_len, dtype=torch.float64)
    kept = []
    for i in range(0, windows, batch):
        x, y = x_all[i:i + batch].to(device), y_all[i:i + batch].to(device)
        with _autocast(device):
            logits = model(x)
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
        nats_pos += nll.view(-1, seq_len).double().sum(0).cpu()
        if keep_nll:
            kept.append(nll.double().cpu())
    model.train(was_training)
    total_nats = float(nats_pos.sum())
    n_targets = windows * seq_len
    n_bytes = int(token_bytes[y_all.reshape(-1)].sum())
    out: dict[str, Any] = {"loss": total_nats / n_targets, "bpb": total_nats / math.log(2) / n_bytes,
                           "tokens": n_targets, "bytes": n_bytes, "windows": windows}
    if keep_nll:
        out["nll"] = torch.cat(kept)
    if buckets:
        edges = [round(seq_len * k / buckets) for k in range(buckets + 1)]
        out["buckets"] = [(a, b, float(nats_pos[a:b].sum()) / (windows * (b - a))) for a, b in zip(edges, edges[1:], strict=False)
                          if b > a]
    return out


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
    versions = versions or {}
    pc = param_counts(cfg)
    kv = memory_estimate(cfg, Workload(batch=1, seq_len=1)).kv_cache_bytes_per_token
    unigram = unigram_entropy_nats(data.val_ids)
    common = dict(probe=run.probe, run_key=run_key, config_name=run.config_name or run.variant,
                  config_key=config_key(cfg), config_json=cfg.to_json(), variant=run.variant, axis=run.axis,
                  axis_value=run.axis_value, budget_kind=run.budget_kind_label or run.budget.kind, seed=run.seed,
                  steps_total=steps, budget_tokens=run.budget.value if run.budget.kind == "tokens" else None,
                  budget_flops=run.budget.value if run.budget.kind == "flops" else None,
                  unigram_entropy_nats=unigram, grad_clip=s.grad_clip, train_seq_len_tokens=s.seq_len,
                  batch=s.batch, num_params=pc.num_params, non_embedding_params=pc.non_embedding_params,
                  kv_cache_bytes_per_token=kv, corpus_name=data.corpus_name, corpus_sha256=data.corpus_sha256,
                  vocab_size=data.vocab_size, train_split_tokens=int(train_ids.numel()),
                  val_split_tokens=data.val_tokens, val_split_bytes=data.val_bytes, device=device,
                  device_name=device_name, autocast_dtype="bfloat16" if device.startswith("cuda") else "float32",
                  torch_version=versions.get("torch", torch.__version__),
                  xtransformers_version=versions.get("x-transformers", ""))
    rows: list[ProbeRecord] = []
    model = (build or default_builder)(cfg, run.seed, device)
    model.train()
    layer_types = list(getattr(model.attn_layers, "layer_types", ()))
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
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

    def eval_rows(step: int, *, train_loss: float | None, grad_norm: float | None, clip_fraction: float | None,
                  lr: float | None, layer_stats: dict[str, tuple[float, float | None]] | None,
                  status: str = "ok", error: str | None = None) -> None:
        ev = evaluate(model, data.val_ids, data.token_bytes, seq_len=s.seq_len, max_tokens=s.eval_tokens,
                      device=device) if status == "ok" else None
        base = dict(common, step=step, tokens_seen=step * s.batch * s.seq_len, train_flops=step * per_step_flops,
                    elapsed_s=time.perf_counter() - started, timestamp=now_iso(),
                    tokens_per_s=(step * s.batch * s.seq_len / train_time) if train_time > 0 else None)
        rows.append(ProbeRecord(**base, row_kind="eval", train_loss_nats=train_loss,
                                val_loss_nats=ev["loss"] if ev else None, val_bits_per_byte=ev["bpb"] if ev else None,
                                eval_seq_len_tokens=s.seq_len, eval_tokens=ev["tokens"] if ev else None,
                                eval_bytes=ev["bytes"] if ev else None, grad_norm=grad_norm,
                                clip_fraction=clip_fraction, lr=lr, status=status, error=error))
        for layer, (gnorm, ratio) in (layer_stats or {}).items():
            rows.append(ProbeRecord(**base, row_kind="layer", layer=layer, grad_norm=gnorm,
                                    update_to_weight_ratio=ratio, status=status))

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

    for step in range(steps):
        t0 = time.perf_counter()
        lr = lr_at(step, steps, s)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = make_batch(train_ids, gen, s.batch, s.seq_len)
        with _autocast(device):
            logits = model(x.to(device, non_blocking=True))
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.to(device).reshape(-1))
        loss.backward()
        gnorm_t = torch.nn.utils.clip_grad_norm_([p for _, p in params], s.grad_clip)
        done = step + 1
        is_eval = done in eval_steps
        stats = None
        if is_eval and s.layer_stats:
            grads = layer_grad_norms()
            before = {k: [p.detach().clone() for p in ps] for k, ps in groups.items()}
        opt.step()
        opt.zero_grad(set_to_none=True)
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
        window_clipped += int(gnorm > s.grad_clip)
        if not (math.isfinite(loss_v) and math.isfinite(gnorm)) or loss_v > max(limit, first_loss) + s.diverge_nats:
            why = ("a non-finite loss or gradient" if not (math.isfinite(loss_v) and math.isfinite(gnorm)) else
                   f"training loss {loss_v:.3g} nats > max(ln V, first loss) + {s.diverge_nats:g}")
            eval_rows(done, train_loss=loss_v if math.isfinite(loss_v) else None,
                      grad_norm=gnorm if math.isfinite(gnorm) else None, clip_fraction=None, lr=lr, layer_stats=stats,
                      status="diverged", error=f"diverged at step {done} of {steps}: {why}")
            return rows
        if is_eval:
            eval_rows(done, train_loss=sum(window_losses) / len(window_losses), grad_norm=gnorm,
                      clip_fraction=window_clipped / len(window_losses), lr=lr, layer_stats=stats)
            window_losses, window_clipped = [], 0
            if progress is not None:
                last = rows[-1 - (len(stats) if stats else 0)]
                progress(done / steps, f"step {done}/{steps}, train {last.train_loss_nats:.3f}, val "
                                       f"{last.val_loss_nats:.3f} nats/token")
    for length in s.eval_seq_lens:
        ev = evaluate(model, data.val_ids, data.token_bytes, seq_len=length, max_tokens=max(s.eval_tokens, length),
                      device=device, buckets=s.position_buckets, batch=max(1, 16 * s.seq_len // length), keep_nll=True)
        # the same target tokens, evaluated in windows of the training length: the per-token difference is what
        # the longer window changes (0 for the first seq_len positions of a window, which see the same context)
        short = evaluate(model, data.val_ids, data.token_bytes, seq_len=s.seq_len, max_tokens=ev["tokens"],
                         device=device, keep_nll=True) if length % s.seq_len == 0 else None
        delta = (ev["nll"] - short["nll"]).view(-1, length) if short is not None else None
        base = dict(common, step=steps, tokens_seen=steps * s.batch * s.seq_len, train_flops=steps * per_step_flops,
                    eval_seq_len_tokens=length, timestamp=now_iso(), elapsed_s=time.perf_counter() - started)
        rows.append(ProbeRecord(**base, row_kind="eval_length", val_loss_nats=ev["loss"], val_bits_per_byte=ev["bpb"],
                                eval_tokens=ev["tokens"], eval_bytes=ev["bytes"],
                                loss_change_vs_train_len_nats=float(delta.mean()) if delta is not None else None))
        for a, b, loss in ev["buckets"]:
            rows.append(ProbeRecord(**base, row_kind="position", position_start_tokens=a, position_end_tokens=b,
                                    val_loss_nats=loss, loss_change_vs_train_len_nats=float(delta[:, a:b].mean())
                                    if delta is not None else None))
    return rows
