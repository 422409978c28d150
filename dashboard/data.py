"""Cached computations behind the views. Arguments are plain JSON/ints so the caches key on values.

Closed-form numbers (``core.cost_model``) are microseconds each and recomputed on every widget
change; anything that imports torch (the builder's effective kwargs, exact parameter counts on the
meta device) is cached per configuration. Measurements never run here: they are submitted to the
worker (``dashboard.session.jobs``). Nothing returned here is a model: a cached model could be mutated by one
session and seen by another, so only numbers and tables are cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
import streamlit as st
from xtlens.core import cost_model
from xtlens.core.config import ModelConfig, Workload
from xtlens.dashboard import tables

if TYPE_CHECKING:  # the builder imports torch: loaded on first use, inside builder_view
    from xtlens.core.builder import ParamDifference, Translation


def _cfg(cfg_json: str) -> ModelConfig:
    return ModelConfig.from_json(cfg_json)


@st.cache_data(max_entries=4096, show_spinner=False)
def _estimate(cfg_json: str, batch: int, seq_len: int, dtype: str) -> dict:
    return cost_model.estimate(_cfg(cfg_json), Workload(batch=batch, seq_len=seq_len, dtype=dtype))


def estimate(cfg: ModelConfig, wl: Workload) -> dict:
    """``core.cost_model.estimate`` (cached; ``st.cache_data`` returns a copy the caller may modify)."""
    return _estimate(cfg.to_json(), wl.batch, wl.seq_len, wl.dtype)


@st.cache_data(max_entries=4096, show_spinner=False)
def _predictions(cfg_json: str, batch: int, seq_len: int, dtype: str) -> list[cost_model.Prediction]:
    return cost_model.predictions(_cfg(cfg_json), Workload(batch=batch, seq_len=seq_len, dtype=dtype))


def predictions(cfg: ModelConfig, wl: Workload) -> list[cost_model.Prediction]:
    """``core.cost_model.predictions`` (cached): every closed-form quantity as a row."""
    return _predictions(cfg.to_json(), wl.batch, wl.seq_len, wl.dtype)


@st.cache_data(max_entries=4096, show_spinner=False)
def _training_headline(cfg_json: str, batch: int, seq_len: int, dtype: str) -> cost_model.TrainingHeadline:
    return cost_model.training_headline(_cfg(cfg_json), Workload(batch=batch, seq_len=seq_len, dtype=dtype))


def training_headline(cfg: ModelConfig, wl: Workload) -> cost_model.TrainingHeadline:
    """``core.cost_model.training_headline`` (cached): the training FLOPs, peak and upper bound every tab shows."""
    return _training_headline(cfg.to_json(), wl.batch, wl.seq_len, wl.dtype)


_CURVES = {"memory": tables.memory_curve, "flops": tables.flops_curve}


@st.cache_data(max_entries=1024, show_spinner=False)
def _curve(kind: str, cfg_json: str, batch: int, dtype: str, seq_lens: tuple[int, ...]) -> pd.DataFrame:
    wl = Workload(batch=batch, dtype=dtype, seq_len=seq_lens[0])
    return _CURVES[kind](_cfg(cfg_json), wl, seq_lens)


def memory_curve(cfg: ModelConfig, wl: Workload, seq_lens: tuple[int, ...]) -> pd.DataFrame:
    """``tables.memory_curve`` at ``wl``'s batch and dtype (cached)."""
    return _curve("memory", cfg.to_json(), wl.batch, wl.dtype, tuple(seq_lens))


def flops_curve(cfg: ModelConfig, wl: Workload, seq_lens: tuple[int, ...]) -> pd.DataFrame:
    """``tables.flops_curve`` at ``wl``'s batch and dtype (cached)."""
    return _curve("flops", cfg.to_json(), wl.batch, wl.dtype, tuple(seq_lens))


@st.cache_data(max_entries=512, show_spinner=False)
def _sweep(cfg_json: str, batch: int, seq_len: int, dtype: str, axis: str,
           dataset_tokens: float) -> tuple[pd.DataFrame, list[str]]:
    cfg = _cfg(cfg_json)
    wl = Workload(batch=batch, seq_len=seq_len, dtype=dtype)
    values = tables.sweep_values(axis, getattr(cfg, axis))
    return tables.sweep_table(estimate, cfg, wl, axis, values, dataset_tokens=dataset_tokens)


def sweep(cfg: ModelConfig, wl: Workload, axis: str, dataset_tokens: float) -> tuple[pd.DataFrame, list[str]]:
    return _sweep(cfg.to_json(), wl.batch, wl.seq_len, wl.dtype, axis, float(dataset_tokens))


# --- the real model's keywords and parameter counts (imports torch + x-transformers once) ---------------

@dataclass(frozen=True, kw_only=True)
class BuilderView:
    """What ``core.builder`` says about a configuration (no model kept)."""

    code: str
    translations: tuple[Translation, ...]
    notes: tuple[str, ...]
    num_params: int | None  # exact count of the 2.31 model (meta device)
    xt1191_num_params: int | None
    differences: tuple[ParamDifference, ...]
    xtransformers_version: str
    error: str | None = None


@st.cache_data(max_entries=256, show_spinner="Reading the x-transformers model (first time only)…")
def builder_view(cfg_json: str) -> BuilderView:
    from xtlens.core import builder

    cfg = _cfg(cfg_json)
    kw = builder.effective_kwargs(cfg)
    comparable = not builder.xt1191_not_comparable_reason(cfg)
    diffs = tuple(builder.xt1191_param_differences(cfg)) if comparable else ()
    version = builder.installed_xtransformers_version()
    try:
        n = builder.num_params(cfg)
        n1191 = builder.xt1191_num_params(cfg) if comparable else None
        error = None
    except builder.BuildError as exc:
        n = n1191 = None
        error = str(exc)
    return BuilderView(code=kw.as_code(), translations=kw.translations, notes=kw.notes,
                       num_params=n, xt1191_num_params=n1191, differences=diffs, xtransformers_version=version,
                       error=error)


# --- devices -------------------------------------------------------------------------------------------

def no_gpu_driver() -> bool:
    """True on Linux when no GPU driver's device file exists (NVIDIA ``/dev/nvidia<N>``, ROCm ``/dev/kfd``, WSL
    ``/dev/dxg``): PyTorch can then see no GPU, so the device list needs no torch (seconds of a first screen)."""
    import glob
    import os
    import sys

    return sys.platform.startswith("linux") and not (glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/kfd")
                                                       or os.path.exists("/dev/dxg"))


@st.cache_resource(show_spinner=False)
def devices() -> tuple[tuple[str, str], ...]:
    """(device, plain description) pairs: every CUDA GPU first when present, then the CPU."""
    from xtlens.profiling.run import device as dev

    if no_gpu_driver():
        return (("cpu", f"CPU: {dev.cpu_name()}"),)
    import torch

    out = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            out.append((f"cuda:{i}", f"GPU {i}: {dev.device_name(f'cuda:{i}')}"))
    out.append(("cpu", f"CPU: {dev.cpu_name()}"))
    return tuple(out)


@st.cache_data(max_entries=64, show_spinner=False)
def _reference(cfg_json: str, preset: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    from xtlens.dashboard import latency_parts as lp
    from xtlens.profiling.results.records import to_frame
    from xtlens.profiling.results.reference import reference_for

    rows = [r for r in reference_for(_cfg(cfg_json), preset) if r.measurement == "breakdown"]
    if not rows:
        return pd.DataFrame(), pd.DataFrame()
    frame = to_frame(rows)
    return lp.predicted_vs_measured(frame), lp.alibi_share(frame)


def reference(cfg: ModelConfig, preset: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A shipped GPU run's breakdown of this very configuration on ``preset``'s GPU (``profiling.results.reference``):
    measured against predicted per phase, length and dtype, and the ALiBi share; empty frames when that run
    did not measure it (cached: the Latency view asks on every rerun)."""
    return _reference(cfg.to_json(), preset)
