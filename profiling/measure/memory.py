"""Memory of the real x-transformers model, measured next to the closed form of ``core.cost_model``.

``measure_memory`` returns one ``ProfileRecord`` (``measurement="memory"``) per (phase, component):

* phase ``inference`` (eval mode, ``torch.no_grad()`` forward of ``batch x seq_len`` ids):
  ``total`` (peak), ``weights`` (parameters), ``buffers``, ``activations`` (peak minus weights and
  buffers), ``kv_cache`` (the ``cached_kv`` tensors of x-transformers' cached-generation path,
  ``model(ids, return_intermediates=True)``), and with ALiBi ``alibi_bias`` (ALiBi memory live at one
  block's SDPA call, captured from the model: the ``(h, n, n)`` bias handed to ``Attend``, the dense
  ``attn_mask`` SDPA receives, the bool causal mask used to fill it, the cached ``rel_pos.bias`` buffer)
  and ``alibi_sdpa_mask`` (the dense mask alone; flash path only).
* phase ``train_step`` (train mode; two steps of forward, cross-entropy, backward, ``AdamW.step()``,
  ``zero_grad(set_to_none=True)``; the second, steady-state step is the one described):
  ``total`` (peak over both steps), ``weights``, ``buffers``, ``gradients`` (after backward),
  ``optimizer`` (AdamW state after the step), ``activations`` (tensors alive when the forward returns,
  i.e. saved for backward, plus the logits and the ids).

Predicted columns come from ``core.cost_model.predictions``: the row with the same ``(phase, component)`` in
bytes (same definitions; see ``MemoryEstimate``'s docstring).

How (``method`` column):

* CPU (``method="auto"`` or ``"fake"``): ``torch.distributed._tools.mem_tracker.MemTracker`` under
  ``FakeTensorMode``: the real model code runs on fake tensors (shapes, dtypes, storages, no data), so a
  training step of the seed at 8192 tokens takes seconds and no memory. ``MemTracker`` refuses a second
  iteration unless ``reset_mod_stats()`` is called after each one (verified with torch 2.13: it raises
  ``NotImplementedError``). ``"real"``: the same tracker on real CPU tensors (for small sizes; the tests
  use it to check the fake run).
* CUDA (``"auto"`` or ``"cuda"``): real tensors; ``total`` is ``torch.cuda.max_memory_allocated()``
  growth over the run (model included); components from ``MemTracker`` on the same run; an extra
  ``total_tracked`` row holds the tracker's peak. On CUDA every storage occupies a multiple of 512 bytes
  (the caching allocator's block; ``MemTracker`` counts it so), so the ``weights`` and ``gradients`` rows
  are predicted allocator-rounded too (``core.allocator.weights_bytes_allocated``): measured and predicted
  mean the same thing, and the check stays exact.
* ``rss=True`` (CPU): an extra ``total_rss`` row per phase: peak resident set size (``VmHWM``, reset with
  ``/proc/self/clear_refs`` after the imports) minus the RSS before the model is built, of a real run in a
  fresh subprocess (RSS peaks are per process). Includes allocator and framework overhead.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from xtlens.core.allocator import weights_bytes_allocated
from xtlens.core.builder import TORCH_DTYPES as _TORCH_DTYPES
from xtlens.core.builder import build_model, fake_model
from xtlens.core.config import ModelConfig, Workload
from xtlens.core.cost_model import Prediction, predicted, predictions
from xtlens.profiling.errors import ProfileError, failure_record
from xtlens.profiling.measure.sdpa import SdpaProbe, explain_backend
from xtlens.profiling.results.records import ProfileRecord, base_fields, rel_err
from xtlens.profiling.run.device import device_name as _device_name
from xtlens.profiling.run.device import resolve_device, synchronize, versions

__all__ = ["MEMORY_PHASES", "METHODS", "measure_memory", "rss_peak_bytes", "kv_cache_bytes", "AlibiCapture",
           "tensor_bytes", "model_in", "snapshot_totals", "cuda_peak_start"]

MEMORY_PHASES = ("inference", "train_step")
METHODS = ("auto", "fake", "real", "cuda")

# measured components made of one tensor per parameter tensor: on CUDA their prediction is allocator-rounded
_ROUNDED_ON_CUDA = ("weights", "gradients")

_METHOD_TEXT = {
    "fake": "torch MemTracker under FakeTensorMode (tensor sizes; no memory used)",
    "real": "torch MemTracker on real tensors",
    "cuda": "torch.cuda.max_memory_allocated growth",
    "cuda_tracker": "torch MemTracker on the same CUDA run",
    "rss": "peak process RSS (VmHWM) growth of a real run in a fresh subprocess",
}


def tensor_bytes(t: torch.Tensor) -> int:
    """Logical size of a tensor (numel x element size); works for fake tensors."""
    return t.numel() * t.element_size()


# --------------------------------------------------------------------------------------------------
# captures
# --------------------------------------------------------------------------------------------------


@dataclass
class AlibiCapture:
    """Hooks on a model the caller owns: the ALiBi tensors of the first block's attention call.

    ``bias_bytes``: the bias ``Attend`` receives (``(h, n, n)`` after x-transformers' pads);
    ``causal_mask_bytes``: the bool mask made by ``Attend.create_causal_mask`` while the bias is present;
    ``cached_buffer_bytes``: ``AlibiPositionalBias.bias`` after the forward (None when not cached).
    The dense SDPA ``attn_mask`` comes from an ``SdpaProbe``.
    """

    bias_bytes: int | None = None
    bias_shape: tuple[int, ...] | None = None
    causal_mask_bytes: int = 0
    cached_buffer_bytes: int = 0
    _handles: list = field(default_factory=list)
    _in_block: bool = False

    def attach(self, model: torch.nn.Module) -> AlibiCapture:
        for module in model.modules():
            if type(module).__name__ == "Attend":
                self._handles.append(module.register_forward_pre_hook(self._pre, with_kwargs=True))
                self._handles.append(module.register_forward_hook(self._post))
                original = module.create_causal_mask

                def wrapped(*args, _orig=original, **kwargs):
                    out = _orig(*args, **kwargs)
                    if self._in_block:
                        self.causal_mask_bytes = max(self.causal_mask_bytes, tensor_bytes(out))
                    return out

                module.create_causal_mask = wrapped
        self._model = model
        return self

    def _pre(self, module, args, kwargs):
        bias = kwargs.get("attn_bias")
        first = self.bias_bytes is None
        self._in_block = first and bias is not None and getattr(module, "flash", False)
        if first and bias is not None:
            self.bias_bytes = tensor_bytes(bias)
            self.bias_shape = tuple(bias.shape)
        return None

    def _post(self, module, args, _output):
        self._in_block = False

    def finish(self) -> None:
        for h in self._handles:
            h.remove()
        for module in self._model.modules():
            if type(module).__name__ == "AlibiPositionalBias":
                buf = getattr(module, "bias", None)
                if isinstance(buf, torch.Tensor):
                    self.cached_buffer_bytes = tensor_bytes(buf)


def kv_cache_bytes(intermediates: Any) -> int:
    """Bytes of the ``cached_kv`` tensors in x-transformers' ``LayerIntermediates`` (all blocks, k and v)."""
    total = 0
    for inter in getattr(intermediates, "attn_intermediates", None) or []:
        kv = getattr(inter, "cached_kv", None)
        if kv is None:
            continue
        total += sum(tensor_bytes(t) for t in kv)
    return total


# --------------------------------------------------------------------------------------------------
# model construction
# --------------------------------------------------------------------------------------------------


@contextmanager
def model_in(cfg: ModelConfig, wl: Workload, dev: str, mode: str):
    """Yield a fresh model: built on fake tensors inside ``FakeTensorMode`` (everything run inside the
    ``with`` is fake too), or a real one from ``core.builder.build_model``."""
    if mode == "fake":
        with fake_model(cfg, wl.dtype) as (model, _mode):
            yield model
    else:
        yield build_model(cfg, device=dev, dtype=wl.dtype, seed=0).model


# --------------------------------------------------------------------------------------------------
# the runs
# --------------------------------------------------------------------------------------------------


def snapshot_totals(snapshot: dict) -> dict[str, int]:
    """Sum a MemTracker snapshot over devices into {category name: bytes} (+ "Total")."""
    out: dict[str, int] = {}
    for dev_snap in snapshot.values():
        for key, value in dev_snap.items():
            name = getattr(key, "value", key)
            out[name] = out.get(name, 0) + int(value)
    return out


def cuda_peak_start(dev: str) -> int:
    """Open a CUDA peak window: wait for queued work, reset the peak counter, return the bytes allocated now."""
    synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    return torch.cuda.memory_allocated(dev)


def _totals(tracked_peak_bytes: int, dev: str, cuda_base_bytes: int | None) -> dict[str, int]:
    """``total`` (and on CUDA ``total_tracked``): the tracker's peak, or the CUDA peak growth since
    ``cuda_peak_start`` with the tracker's peak beside it."""
    if cuda_base_bytes is None:
        return {"total": tracked_peak_bytes}
    synchronize(dev)
    return {"total": torch.cuda.max_memory_allocated(dev) - cuda_base_bytes, "total_tracked": tracked_peak_bytes}


def _inference(cfg: ModelConfig, wl: Workload, dev: str, mode: str) -> tuple[dict[str, int], dict[str, Any]]:
    from torch.distributed._tools.mem_tracker import MemTracker

    parts: dict[str, int] = {}
    info: dict[str, Any] = {}
    cuda = mode == "cuda"
    base = cuda_peak_start(dev) if cuda else None
    with model_in(cfg, wl, dev, mode) as model:
        model.eval()
        buffers0 = sum(tensor_bytes(b) for b in model.buffers())
        ids = torch.randint(0, cfg.num_tokens, (wl.batch, wl.seq_len), device=dev)
        capture = AlibiCapture().attach(model) if cfg.alibi_pos_bias else None
        probe = SdpaProbe()
        tracker = MemTracker()
        tracker.track_external(model)
        with tracker, torch.no_grad(), probe:
            out = model(ids)
            del out
        if capture is not None:
            capture.finish()
        peak = snapshot_totals(tracker.get_tracker_snapshot("peak"))
        now = snapshot_totals(tracker.get_tracker_snapshot("current"))
        parts.update(_totals(peak["Total"], dev, base))
        parts["weights"] = now.get("Parameter", 0)
        # buffers as built; the ALiBi bias x-transformers caches as a buffer during the forward (no
        # rotary) is an activation here, as in the cost model
        parts["buffers"] = buffers0
        parts["activations"] = peak["Total"] - parts["weights"] - buffers0
        if capture is not None:
            mask = next((c for c in probe.calls if c.mask_dtype not in (None, "bool")), None)
            mask_bytes = math.prod(mask.mask_shape) * _TORCH_DTYPES.get(mask.mask_dtype, torch.float32).itemsize \
                if mask is not None else 0
            parts["alibi_bias"] = ((capture.bias_bytes or 0) + mask_bytes + capture.causal_mask_bytes
                                   + capture.cached_buffer_bytes)
            if cfg.attn_flash:
                parts["alibi_sdpa_mask"] = mask_bytes
        with torch.no_grad():
            _, intermediates = model(ids, return_intermediates=True)
            parts["kv_cache"] = kv_cache_bytes(intermediates)
            del intermediates
        info["sdpa_backend"] = probe.backend
        info["sdpa_backend_reason"] = explain_backend(
            probe.backend, device_type=torch.device(dev).type, call=probe.calls[0] if probe.calls else None,
            attn_flash=cfg.attn_flash,
            gpu_capability=torch.cuda.get_device_capability(torch.device(dev)) if cuda else None)
        del model
    return parts, info


def _train_step(cfg: ModelConfig, wl: Workload, dev: str, mode: str) -> tuple[dict[str, int], dict[str, Any]]:
    from torch.distributed._tools.mem_tracker import MemTracker

    parts: dict[str, int] = {}
    base = cuda_peak_start(dev) if mode == "cuda" else None
    with model_in(cfg, wl, dev, mode) as model:
        model.train()
        buffers0 = sum(tensor_bytes(b) for b in model.buffers())
        targets = torch.randint(0, cfg.num_tokens, (wl.batch * wl.seq_len,), device=dev)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        tracker = MemTracker()
        tracker.track_external(model, opt)
        snaps: dict[str, dict[str, int]] = {}
        with tracker:
            ids = torch.randint(0, cfg.num_tokens, (wl.batch, wl.seq_len), device=dev)
            for step in range(2):
                logits = model(ids)
                if step == 1:
                    snaps["forward"] = snapshot_totals(tracker.get_tracker_snapshot("current"))
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets)
                del logits
                loss.backward()
                del loss
                if step == 1:
                    snaps["backward"] = snapshot_totals(tracker.get_tracker_snapshot("current"))
                opt.step()
                opt.zero_grad(set_to_none=True)
                if step == 1:
                    snaps["step"] = snapshot_totals(tracker.get_tracker_snapshot("current"))
                tracker.reset_mod_stats()  # MemTracker raises on a second iteration without it
        parts.update(train_step_parts(tracker, snaps, buffers0, dev, base))
        del model, opt
    return parts, {}


def train_step_parts(tracker: Any, snaps: dict[str, dict[str, int]], buffers0: int, dev: str,
                     cuda_base_bytes: int | None) -> dict[str, int]:
    """The ``train_step`` components from a tracked run: ``total`` (peak), ``weights`` and ``optimizer`` (after the
    step), ``gradients`` (after backward), ``activations`` (alive after the forward, buffers excluded), ``buffers``;
    ``snaps`` holds the tracker's ``current`` snapshots ``forward``, ``backward`` and ``step``."""
    peak = snapshot_totals(tracker.get_tracker_snapshot("peak"))
    parts = _totals(peak["Total"], dev, cuda_base_bytes)
    parts["weights"] = snaps["step"].get("Parameter", 0)
    parts["buffers"] = buffers0
    parts["gradients"] = snaps["backward"].get("Gradient", 0)
    parts["optimizer"] = snaps["step"].get("Optstate", 0)
    parts["activations"] = (snaps["forward"].get("Activation", 0) + snaps["forward"].get("Temp", 0)
                            + snaps["forward"].get("Buffer", 0) - buffers0)
    return parts


# --------------------------------------------------------------------------------------------------
# RSS in a subprocess
# --------------------------------------------------------------------------------------------------


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise ProfileError(f"/proc/self/status has no {key} line: RSS measurement needs Linux.")


def _rss_child(payload: str) -> dict[str, int]:
    """Run in a fresh process: build, run one phase for real on the CPU, report RSS numbers in bytes."""
    data = json.loads(payload)
    cfg = ModelConfig.from_dict(data["cfg"])
    wl = Workload(**data["wl"])
    phase = data["phase"]  # core.builder (x-transformers) was imported with this module: before the baseline
    try:
        with open("/proc/self/clear_refs", "w") as fh:  # reset VmHWM to the current RSS
            fh.write("5")
        reset = 1
    except OSError:
        reset = 0
    base = _status_kib("VmRSS") * 1024
    model = build_model(cfg, device="cpu", dtype=wl.dtype, seed=0).model
    ids = torch.randint(0, cfg.num_tokens, (wl.batch, wl.seq_len))
    if phase == "inference":
        with torch.no_grad():
            model(ids)
    else:
        model.train()
        targets = torch.randint(0, cfg.num_tokens, (wl.batch * wl.seq_len,))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        for _ in range(2):
            logits = model(ids)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets)
            del logits
            loss.backward()
            del loss
            opt.step()
            opt.zero_grad(set_to_none=True)
    return {"base_rss_bytes": base, "peak_rss_bytes": _status_kib("VmHWM") * 1024, "hwm_reset": reset}


def rss_peak_bytes(cfg: ModelConfig, wl: Workload, phase: str, *, timeout_s: float = 600) -> int:
    """Peak RSS growth (bytes) of a real CPU run of ``phase`` in a fresh Python subprocess."""
    payload = json.dumps({"cfg": cfg.to_dict(), "wl": wl.to_dict(), "phase": phase})
    root = str(Path(__file__).resolve().parents[2])  # the folder that holds core/ and profiling/
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH", "")])))
    proc = subprocess.run([sys.executable, "-m", "xtlens.profiling.measure.memory", "--rss-child", payload], capture_output=True,
                          text=True, timeout=timeout_s, env=env, cwd=root)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        if proc.returncode < 0 or "MemoryError" in proc.stderr or "can't allocate" in proc.stderr:
            raise MemoryError(f"the RSS subprocess died (exit {proc.returncode}): {tail[0]}")
        raise ProfileError(f"The RSS measurement subprocess failed (exit {proc.returncode}): {tail[0]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return int(result["peak_rss_bytes"] - result["base_rss_bytes"])


# --------------------------------------------------------------------------------------------------
# measure_memory
# --------------------------------------------------------------------------------------------------

def _predicted(phase: str, component: str, est: list[Prediction]) -> int | None:
    """The prediction joined to a measured row: same ``(phase, component)``, in bytes (``core.cost_model``'s
    vocabulary; ``total_tracked`` / ``total_rss`` are the ``total`` measured another way)."""
    value = predicted(est, phase=phase, component=component, unit="bytes")
    return None if value is None else int(value)


def measure_memory(
    cfg: ModelConfig,
    wl: Workload,
    *,
    device: str = "cpu",
    phases: Iterable[str] = MEMORY_PHASES,
    config_name: str = "",
    method: str = "auto",
    rss: bool = False,
) -> list[ProfileRecord]:
    """Measured memory of ``cfg`` on ``wl`` per (phase, component), with the closed-form prediction beside it.

    ``method``: ``auto`` (``fake`` on CPU, ``cuda`` on a GPU), ``fake``, ``real`` or ``cuda`` (see the module
    docstring). ``rss=True`` adds a ``total_rss`` row per phase from a real run in a subprocess (CPU only;
    needs the memory and time of a real run). A failing phase becomes a row with status ``oom``/``error``.
    """
    phases = tuple(phases)
    unknown = [p for p in phases if p not in MEMORY_PHASES]
    if unknown:
        raise ProfileError(f"Unknown memory phase(s) {', '.join(map(repr, unknown))}: choose from "
                           f"{', '.join(MEMORY_PHASES)}.")
    if method not in METHODS:
        raise ProfileError(f"Unknown memory method {method!r}: choose one of {', '.join(METHODS)}.")
    wl.check_against(cfg)
    dev = resolve_device(device)
    mode = ("cuda" if dev.startswith("cuda") else "fake") if method == "auto" else method
    if (mode == "cuda") != dev.startswith("cuda"):
        raise ProfileError(f"Memory method {method!r} does not apply to device {dev!r}: use 'cuda' on a GPU, "
                           "'fake' or 'real' on the CPU (or 'auto').")
    name = _device_name(dev)
    vers = versions()
    est = predictions(cfg, wl)
    provenance = dict(torch_version=vers["torch"], xtransformers_version=vers["x-transformers"])
    rows: list[ProfileRecord] = []
    backend: dict[str, Any] = {}
    for phase in phases:
        run = _inference if phase == "inference" else _train_step
        try:
            parts, info = run(cfg, wl, dev, mode)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a row
            rows.append(failure_record(exc, cfg, wl, measurement="memory", phase=phase, device=dev,
                                       device_name=name, config_name=config_name, method=_METHOD_TEXT[mode],
                                       context=f"the {phase.replace('_', ' ')} memory measurement",
                                       predicted_bytes=_predicted(phase, "total", est), **provenance))
            continue
        backend = backend or info
        for component, measured in parts.items():
            how = _METHOD_TEXT["cuda_tracker"] if component == "total_tracked" else _METHOD_TEXT[mode]
            if component in ("alibi_bias", "alibi_sdpa_mask", "kv_cache"):
                how += "; captured tensor sizes"
            predicted = _predicted(phase, component, est)
            if mode == "cuda" and component in _ROUNDED_ON_CUDA:
                # measured through the CUDA caching allocator (512-byte blocks): predict the same thing
                predicted = weights_bytes_allocated(cfg, wl.dtype_bytes)
                how += "; predicted: each parameter-shaped tensor rounded up to 512-byte CUDA allocator blocks"
            rows.append(ProfileRecord(
                **base_fields(cfg, wl, config_name=config_name, measurement="memory", phase=phase, device=dev,
                              device_name=name),
                component=component, method=how, **provenance, predicted_bytes=predicted, measured_bytes=int(measured),
                memory_rel_err=rel_err(measured, predicted),
            ))
        if rss:
            try:
                if dev != "cpu":
                    raise ProfileError("The RSS measurement applies to the CPU only.")
                measured = rss_peak_bytes(cfg, wl, phase)
                predicted = _predicted(phase, "total_rss", est)
                rows.append(ProfileRecord(
                    **base_fields(cfg, wl, config_name=config_name, measurement="memory", phase=phase, device=dev,
                                  device_name=name),
                    component="total_rss", method=_METHOD_TEXT["rss"], **provenance, predicted_bytes=predicted,
                    measured_bytes=measured, memory_rel_err=rel_err(measured, predicted)))
            except Exception as exc:  # noqa: BLE001
                rows.append(failure_record(exc, cfg, wl, measurement="memory", phase=phase, device=dev,
                                           device_name=name, config_name=config_name, component="total_rss",
                                           method=_METHOD_TEXT["rss"], context="the RSS measurement", **provenance))
    if backend:
        rows = [r if r.status != "ok" else _with_backend(r, backend) for r in rows]
    return rows


def _with_backend(row: ProfileRecord, info: dict[str, Any]) -> ProfileRecord:
    import dataclasses

    return dataclasses.replace(row, sdpa_backend=info.get("sdpa_backend"),
                               sdpa_backend_reason=info.get("sdpa_backend_reason"))


if __name__ == "__main__":  # pragma: no cover - the RSS subprocess entry point
    if len(sys.argv) == 3 and sys.argv[1] == "--rss-child":
        print(json.dumps(_rss_child(sys.argv[2])))
    else:
        sys.exit("usage: python -m profiling.measure.memory --rss-child JSON")
