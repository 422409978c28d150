"""Memory of a training step under a ``TrainingSetup`` and of a quantised serving setup, measured on the real
x-transformers model next to ``core.cost_model``'s per-device prediction.

``measure_training_setup`` runs the training loop the setup describes on the real model, under torch's
``MemTracker`` (``FakeTensorMode`` on the CPU, as ``profiling.measure.memory``; CUDA: real tensors and
``torch.cuda.max_memory_allocated``): ``torch.autocast`` for the ``amp_*`` precisions (the loss inside the
autocast region, as the PyTorch AMP recipe writes it), the model cast to 16 bits for the pure precisions,
``torch.utils.checkpoint`` (non-reentrant) around every attention / feed-forward block (``block``) or around
x-transformers' ``Attend`` (``selective``), ``grad_accum`` micro-batches, the optimizer the setup names, and
``zero_grad(set_to_none=True)``. The optimizer state is created before tracking; the tracked step is a
steady-state step. Rows: phase ``train_step``,
components ``total``, ``weights``, ``gradients``, ``optimizer``, ``activations`` (as ``profiling.measure.memory``).

``measure_fsdp_ranks`` runs ``world`` CPU processes (``torch.distributed``, gloo) training a small model
wrapped with FSDP2's ``fully_shard`` (ZeRO-3) and reports each rank's tracked peak and its sharded state.

``quantised_sizes`` quantises the real model's linear weights (int8 / int4 in groups, with their scales and
zero points) and its captured KV cache (fp8 / int8 with scales) and returns the exact tensor bytes.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from xtlens.core.config import ModelConfig, Workload
from xtlens.core.cost_model import predicted, predictions, training_memory
from xtlens.core.setup import ServingSetup, TrainingSetup
from xtlens.profiling.errors import ProfileError, failure_record
from xtlens.profiling.measure.memory import (
    cuda_peak_start,
    model_in,
    snapshot_totals,
    tensor_bytes,
    train_step_parts,
)
from xtlens.profiling.results.records import ProfileRecord, base_fields, rel_err, setup_json
from xtlens.profiling.run.device import device_name as _device_name
from xtlens.profiling.run.device import resolve_device, versions

__all__ = ["Checkpointed", "apply_recompute", "make_optimizer", "train_loop", "measure_training_setup", "train_setup_parts",
           "measure_fsdp_ranks", "quantise_weight", "quantised_sizes"]

_AUTOCAST = {"amp_bf16": torch.bfloat16, "amp_fp16": torch.float16}
_PURE = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


class Checkpointed(nn.Module):
    """``inner`` run under ``torch.utils.checkpoint.checkpoint(use_reentrant=False)``: only its inputs are
    saved; its forward runs again in backward."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, *args, **kwargs):
        if not torch.is_grad_enabled():
            return self.inner(*args, **kwargs)
        return checkpoint(self.inner, *args, use_reentrant=False, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("inner"), name)


def apply_recompute(model: nn.Module, recompute: str) -> int:
    """Wrap the blocks of ``model`` (a ``TransformerWrapper``) in ``Checkpointed``: every attention /
    feed-forward block of ``AttentionLayers.layers`` (``block``) or every ``Attend`` (``selective``).
    Returns the number of wrapped modules."""
    if recompute == "none":
        return 0
    count = 0
    for module in list(model.modules()):
        if recompute == "block" and type(module).__name__ in ("Decoder", "AttentionLayers", "Encoder"):
            for entry in module.layers:
                entry[1] = Checkpointed(entry[1])
                count += 1
        elif recompute == "selective" and type(module).__name__ == "Attention":
            module.attend = Checkpointed(module.attend)
            count += 1
    if not count:
        raise ProfileError(f"recompute={recompute!r}: no block of this model could be wrapped.")
    return count


def make_optimizer(name: str, params) -> torch.optim.Optimizer:
    """The optimizer a ``TrainingSetup`` names (torch's own; ``adamw8bit`` needs bitsandbytes on CUDA)."""
    params = list(params)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-4)
    if name == "sgd":
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    if name == "adafactor":
        if not hasattr(torch.optim, "Adafactor"):
            raise ProfileError("optimizer='adafactor' needs torch >= 2.5 (torch.optim.Adafactor).")
        return torch.optim.Adafactor(params, lr=1e-3)
    try:
        import bitsandbytes as bnb  # noqa: PLC0415 - optional, CUDA only
    except ImportError as exc:
        raise ProfileError("optimizer='adamw8bit' is measured with bitsandbytes on a CUDA GPU; it is not "
                           "installed here: the row is predicted only.") from exc
    return bnb.optim.AdamW8bit(params, lr=1e-4)


def train_loop(model: nn.Module, opt: torch.optim.Optimizer, ids, targets, setup: TrainingSetup, tracker=None,
          snaps: dict | None = None, steps: int = 2) -> None:
    """The training loop of ``setup``: ``grad_accum`` micro-batches (forward, loss, backward) then
    ``opt.step()`` and ``zero_grad(set_to_none=True)``; ``steps`` optimizer steps."""
    amp = _AUTOCAST.get(setup.precision)
    dev_type = ids.device.type
    for step in range(steps):
        for _micro in range(setup.grad_accum):
            with torch.autocast(dev_type, dtype=amp) if amp is not None else nullcontext():
                logits = model(ids)
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets)
            if setup.loop == "free_logits":
                del logits
            last = snaps is not None and step == steps - 1
            if last:
                snaps["forward"] = snapshot_totals(tracker.get_tracker_snapshot("current"))
                snaps["peak_forward"] = snapshot_totals(tracker.get_tracker_snapshot("peak"))
            (loss / setup.grad_accum).backward()
            del loss
            if setup.loop == "keep_logits":
                del logits
            if tracker is not None:
                tracker.reset_mod_stats()  # MemTracker raises on a second iteration without it
        if last:
            snaps["backward"] = snapshot_totals(tracker.get_tracker_snapshot("current"))
            snaps["peak_backward"] = snapshot_totals(tracker.get_tracker_snapshot("peak"))
        opt.step()
        opt.zero_grad(set_to_none=True)
        if last:
            snaps["step"] = snapshot_totals(tracker.get_tracker_snapshot("current"))
            snaps["peak_step"] = snapshot_totals(tracker.get_tracker_snapshot("peak"))


def _prepare_state(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    """Create the optimizer state before tracking (one step on zero gradients, then ``zero_grad(set_to_none=True)``),
    so that the one tracked step is a steady-state step (the same peak as the second of two steps, measured on
    the seed at 512 tokens: 737,128,900 bytes both ways) at half the time."""
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad(set_to_none=True)


def train_setup_parts(cfg: ModelConfig, wl: Workload, setup: TrainingSetup, *, device: str = "cpu",
                      method: str = "auto") -> dict[str, int]:
    """Measured bytes of one steady-state training step under ``setup`` on one device (``dp = tp = 1``): ``total`` (peak),
    ``weights``, ``gradients`` (after the last backward), ``optimizer`` (after the step), ``activations``
    (alive after the last micro-batch's loss)."""
    from torch.distributed._tools.mem_tracker import MemTracker

    if setup.dp != 1 or setup.tp != 1:
        raise ProfileError("train_setup_parts measures one device: use measure_fsdp_ranks for dp > 1 (tp > 1 is "
                           "predicted only).")
    dev = resolve_device(device)
    mode = ("cuda" if dev.startswith("cuda") else "fake") if method == "auto" else method
    dtype = _PURE.get(setup.precision, "float32" if setup.mixed else wl.dtype)
    model_wl = Workload(batch=wl.batch, seq_len=wl.seq_len, dtype=dtype)
    base = cuda_peak_start(dev) if mode == "cuda" else None
    parts: dict[str, int] = {}
    with model_in(cfg, model_wl, dev, mode) as model:
        model.train()
        apply_recompute(model, setup.recompute)
        buffers0 = sum(tensor_bytes(b) for b in model.buffers())
        targets = torch.randint(0, cfg.num_tokens, (wl.batch * wl.seq_len,), device=dev)
        ids = torch.randint(0, cfg.num_tokens, (wl.batch, wl.seq_len), device=dev)
        opt = make_optimizer(setup.optimizer, model.parameters())
        _prepare_state(model, opt)
        tracker = MemTracker()
        tracker.track_external(model, opt)
        snaps: dict[str, dict[str, int]] = {}
        with tracker:
            train_loop(model, opt, ids, targets, setup, tracker, snaps, steps=1)
        parts.update(train_step_parts(tracker, snaps, buffers0, dev, base))
        # the running peak after the last step's forward, backward and optimizer step: which stage holds it
        parts.update({f"peak_after_{k}": snaps[f"peak_{k}"]["Total"] for k in ("forward", "backward", "step")})
        del model, opt
    return parts


def measure_training_setup(cfg: ModelConfig, wl: Workload, setup: TrainingSetup, *, device: str = "cpu",
                           config_name: str = "", method: str = "auto") -> list[ProfileRecord]:
    """``train_setup_parts`` as ``ProfileRecord`` rows (``measurement="memory"``, phase ``train_step``) with
    ``core.cost_model.predictions(cfg, wl, training=setup)`` joined per component; the method names the setup.
    A failure (out of memory included) becomes a row."""
    wl.check_against(cfg)
    setup.check_against(cfg)
    dev = resolve_device(device)
    vers = versions()
    name = _device_name(dev)
    est = predictions(cfg, wl, training=setup)
    how = f"torch MemTracker ({'CUDA' if dev.startswith('cuda') else 'FakeTensorMode'}); setup: {setup.describe()}"
    provenance = dict(torch_version=vers["torch"], xtransformers_version=vers["x-transformers"])
    try:
        parts = train_setup_parts(cfg, wl, setup, device=dev, method=method)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a row
        return [failure_record(exc, cfg, wl, measurement="memory", phase="train_step", device=dev, device_name=name,
                               config_name=config_name, method=how, context="the training-setup memory measurement",
                               predicted_bytes=predicted(est, phase="train_step", component="total", unit="bytes"),
                               **provenance)]
    rows = []
    cuda = dev.startswith("cuda")
    for component, measured in parts.items():
        if component.startswith("peak_after_"):
            continue
        pred = predicted(est, phase="train_step", component=component, unit="bytes")
        if cuda and component in ("total", "total_tracked"):  # torch's optimizers take the foreach path on CUDA
            pred = training_memory(cfg, wl, setup, foreach=True).peak_bytes
        pred = None if pred is None else int(pred)
        rows.append(ProfileRecord(
            **base_fields(cfg, wl, config_name=config_name, measurement="memory", phase="train_step", device=dev,
                          device_name=name),
            component=component, method=how, **provenance, predicted_bytes=pred, measured_bytes=int(measured),
            memory_rel_err=rel_err(measured, pred), setup_json=setup_json(setup)))
    return rows


# --------------------------------------------------------------------------------------------------
# FSDP over CPU processes
# --------------------------------------------------------------------------------------------------


def _fsdp_rank(rank: int, world: int, init_file: str, payload: dict, out: Any) -> None:
    import torch.distributed as dist
    from torch.distributed._tools.mem_tracker import MemTracker
    from torch.distributed.fsdp import fully_shard
    from xtlens.core.builder import build_model

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        cfg = ModelConfig.from_dict(payload["cfg"])
        wl = Workload(**payload["wl"])
        setup = TrainingSetup(**payload["setup"])
        torch.manual_seed(0)
        model = build_model(cfg, device="cpu", dtype="float32", seed=0).model
        model.train()
        apply_recompute(model, setup.recompute)
        for module in model.modules():
            if type(module).__name__ in ("Decoder", "AttentionLayers"):
                for entry in module.layers:
                    fully_shard(entry[1])  # each attention / feed-forward block is one FSDP unit
        fully_shard(model)
        opt = make_optimizer(setup.optimizer, model.parameters())
        ids = torch.randint(0, cfg.num_tokens, (wl.batch, wl.seq_len))
        targets = torch.randint(0, cfg.num_tokens, (wl.batch * wl.seq_len,))
        tracker = MemTracker()
        tracker.track_external(model, opt)
        snaps: dict[str, dict[str, int]] = {}
        with tracker:
            train_loop(model, opt, ids, targets, setup, tracker, snaps)
        peak = snapshot_totals(tracker.get_tracker_snapshot("peak"))
        local = sum(p.to_local().numel() * p.element_size() if hasattr(p, "to_local") else tensor_bytes(p)
                    for p in model.parameters())
        out.put({"rank": rank, "total": peak["Total"], "weights": local,
                 "optimizer": snaps["step"].get("Optstate", 0)})
    finally:
        dist.destroy_process_group()


def measure_fsdp_ranks(cfg: ModelConfig, wl: Workload, setup: TrainingSetup, *, timeout_s: float = 300
                       ) -> list[dict[str, int]]:
    """Each rank's measured bytes of a ZeRO-3 (FSDP2 ``fully_shard`` per block and on the root) training run on
    ``setup.dp`` CPU processes with gloo: ``total`` (MemTracker peak of real tensors), ``weights`` (the local
    parameter shards) and ``optimizer`` (state after the step). fp32 only (gloo reduces fp32)."""
    import torch.multiprocessing as mp

    if setup.zero != 3 or setup.precision not in ("auto", "fp32"):
        raise ProfileError("measure_fsdp_ranks runs ZeRO-3 (FSDP FULL_SHARD) in fp32 on CPU processes.")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    fd, init_file = tempfile.mkstemp(prefix="xtlens-fsdp-")
    os.close(fd)
    os.unlink(init_file)
    payload = {"cfg": cfg.to_dict(), "wl": wl.to_dict(), "setup": setup.to_dict()}
    procs = [ctx.Process(target=_fsdp_rank, args=(r, setup.dp, init_file, payload, queue)) for r in range(setup.dp)]
    for p in procs:
        p.start()
    results = []
    try:
        for _ in procs:
            results.append(queue.get(timeout=timeout_s))
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
        if os.path.exists(init_file):
            os.unlink(init_file)
    if any(p.exitcode not in (0, None) for p in procs) and len(results) < setup.dp:
        raise ProfileError("an FSDP rank failed: " + ", ".join(str(p.exitcode) for p in procs))
    return sorted(results, key=lambda r: r["rank"])


# --------------------------------------------------------------------------------------------------
# quantised serving: exact tensor sizes
# --------------------------------------------------------------------------------------------------


def quantise_weight(w: torch.Tensor, bits: int, group_size: int) -> dict[str, torch.Tensor]:
    """Group-wise quantisation of a ``(out, in)`` weight over its input features: ``bits=8`` symmetric int8
    with one float16 scale per group; ``bits=4`` asymmetric uint4 packed two per byte with a float16 scale and
    a float16 zero point per group (the GPTQ / AWQ layout). Returns the tensors a quantised checkpoint stores."""
    out_f, in_f = w.shape
    g = w.float().reshape(out_f, in_f // group_size, group_size)
    if bits == 8:
        scale = g.abs().amax(-1, keepdim=True).clamp(min=1e-8) / 127
        q = torch.round(g / scale).clamp(-127, 127).to(torch.int8).reshape(out_f, in_f)
        return {"qweight": q, "scales": scale.squeeze(-1).half()}
    lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    scale = ((hi - lo) / 15).clamp(min=1e-8)
    zero = torch.round(-lo / scale)
    q = (torch.round(g / scale) + zero).clamp(0, 15).to(torch.uint8).reshape(out_f, in_f)
    packed = q[:, 0::2] | (q[:, 1::2] << 4)
    return {"qweight": packed, "scales": scale.squeeze(-1).half(), "zeros": zero.squeeze(-1).half()}


def quantised_sizes(cfg: ModelConfig, wl: Workload, serving: ServingSetup) -> dict[str, int]:
    """Exact bytes of the served state, from real tensors: ``weights`` (every ``nn.Linear`` weight quantised
    by ``quantise_weight`` when ``weights_bits`` is 8 or 4, the rest, embeddings, norms and biases, in 16 bits
    (or in the workload dtype when ``weights_bits`` is None)) and ``kv_cache`` (the model's captured
    ``cached_kv`` for ``serving.workload(wl)``, cast to float8_e4m3fn, or int8 with a float16 scale per token
    and K/V head)."""
    from xtlens.core.builder import build_model

    serving.check_against(cfg)
    swl = serving.workload(wl)
    model = build_model(cfg, device="cpu", dtype="float32", seed=0).model.eval()
    e = wl.dtype_bytes if serving.weights_bits is None else 2
    weights = 0
    linear_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    for module in model.modules():
        if isinstance(module, nn.Linear) and serving.quantised:
            weights += sum(tensor_bytes(t) for t in quantise_weight(module.weight.detach(), serving.weights_bits,
                                                               serving.group_size).values())
    seen = set()
    for p in model.parameters():
        if id(p) in seen or (serving.quantised and id(p) in linear_weights):
            continue
        seen.add(id(p))
        weights += p.numel() * e
    with torch.no_grad():
        _, inter = model(torch.randint(0, cfg.num_tokens, (swl.batch, swl.seq_len)), return_intermediates=True)
    kv = 0
    kv_e = wl.dtype_bytes if serving.kv_cache is None else 2
    for attn in inter.attn_intermediates or []:
        for t in attn.cached_kv or ():
            if serving.kv_cache == "fp8":
                kv += tensor_bytes(t.to(torch.float8_e4m3fn))
            elif serving.kv_cache == "int8":
                scale = t.abs().amax(-1, keepdim=True).half()  # one per (batch, K/V head, token)
                kv += tensor_bytes((t / scale.float().clamp(min=1e-8) * 127).round().to(torch.int8)) + tensor_bytes(scale)
            else:
                kv += t.numel() * kv_e
    return {"weights": weights, "kv_cache": kv}
