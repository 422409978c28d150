"""One module per view. Each has ``render(ctx)``: read its widgets, call cached functions, draw."""

from __future__ import annotations

from dataclasses import dataclass

from xtlens.core.config import ModelConfig, Workload
from xtlens.core.presets import config_label


@dataclass(frozen=True, kw_only=True)
class Ctx:
    """What every view gets: the valid configuration and workload, and where measurements run.

    ``config_name``: the name the rows measured from this configuration are stored under; by default its readable
    name ``core.presets.config_label`` (e.g. ``seed · dim=80``), never a label of the sidebar such as "current"."""

    cfg: ModelConfig
    wl: Workload
    device: str
    device_label: str
    config_name: str = ""

    def __post_init__(self) -> None:
        if not self.config_name:
            object.__setattr__(self, "config_name", config_label(self.cfg))
