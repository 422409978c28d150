"""One colour per configuration for the whole session: ``charts.assign_colours`` over the order in which this
session first drew each configuration (the sidebar's first)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xtlens.dashboard.charts import assign_colours
from xtlens.dashboard.session import store
from xtlens.profiling.results.records import config_key

_COLOURS = "_xtlens_config_colours"


def config_colours(items: Sequence[tuple[str, Any]]) -> dict[str, str]:
    """``{label: colour}`` for ``(label, configuration)`` pairs; a configuration is a ``ModelConfig`` or its
    ``config_key`` (a row's column). The same configuration has the same colour in every chart of the session;
    the first configuration drawn (the sidebar's, at the start) gets the first colour."""
    seen = store.setdefault(_COLOURS, [])
    keys = [c if isinstance(c, str) else config_key(c) for _, c in items]
    colours = assign_colours(seen, keys)
    return {label: colours[k] for (label, _), k in zip(items, keys, strict=True)}
