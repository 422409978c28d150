"""One module per view. Each has ``render(ctx)``: read its widgets, call cached functions, draw."""

from __future__ import annotations

from dataclasses import dataclass

from xtlens.core.config import ModelConfig, Workload


@dataclass(frozen=True, kw_only=True)
class Ctx:
    """What every view gets: the valid configuration and workload, and where measurements run."""

    cfg: ModelConfig
    wl: Workload
    device: str
    device_label: str
    config_name: str = "current"
