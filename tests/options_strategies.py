"""The tests' one source of option grids and hypothesis strategies, drawn from ``core.options.OPTIONS``.

A field added to ``ModelConfig`` with its registry entry is drawn by every strategy and enters every grid
here without a test edit. Import it as the Ray tests import ``ray_cluster``::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from options_strategies import ...  # noqa: E402
"""

from __future__ import annotations

import dataclasses
import typing

from hypothesis import strategies as st
from xtlens.core import options
from xtlens.core.config import ConfigError, ModelConfig

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
#: every option that is not a model size (kind "option"), in field order
OPTION_NAMES: tuple[str, ...] = tuple(n for n, o in options.OPTIONS.items() if o.kind == "option")
#: the cost-neutral options and the ones that change a cost (in the closed form)
NEUTRAL_OPTIONS: tuple[str, ...] = tuple(n for n in OPTION_NAMES if options.OPTIONS[n].cost_neutral)
COST_OPTIONS: tuple[str, ...] = tuple(n for n in OPTION_NAMES if not options.OPTIONS[n].cost_neutral)


def option_grid(base: ModelConfig, names: tuple[str, ...] = OPTION_NAMES) -> dict[str, ModelConfig]:
    """``base`` with each option switched on by ``core.options.enable`` (conflicts fixed), by option name."""
    return {name: options.enable(base, name) for name in names}


def candidate_values(name: str, sizes: ModelConfig) -> list[object]:
    """The values the strategies draw for option ``name``: its default, its registry value and samples, those
    that ``ModelConfig`` accepts with these sizes (a K/V head count dividing ``heads``, ``shift_tokens`` below
    ``dim``...)."""
    opt = options.OPTIONS[name]
    out = [_DEFAULTS[name]]
    for value in (opt.value, *opt.samples):
        if value in out:
            continue
        try:
            sizes.replace(**{name: value})
        except ConfigError:
            continue
        out.append(value)
    return out


@st.composite
def option_settings(draw, sizes: ModelConfig, *, exclude: tuple[str, ...] = (),
                    values: typing.Mapping[str, st.SearchStrategy] | None = None) -> dict[str, object]:
    """Every option of the registry (but ``exclude``), each drawn independently: off, or on with one of its
    values valid for these sizes (``values`` may give an option a wider strategy of its own). Combinations
    x-transformers rejects are resolved by ``options.resolve``."""
    values = values or {}
    return {name: draw(values[name] if name in values else st.sampled_from(candidate_values(name, sizes)))
            for name in OPTION_NAMES if name not in exclude}


@st.composite
def model_configs(draw, sizes: st.SearchStrategy[dict[str, object]], *, exclude: tuple[str, ...] = (),
                  values: typing.Mapping[str, st.SearchStrategy] | None = None) -> ModelConfig:
    """A valid ``ModelConfig``: the sizes ``sizes`` draws (every required field, plus e.g. ``heads``) and every
    registered option drawn by ``option_settings``, resolved by ``core.options.resolve`` (an option that does
    not combine with the ones before it in field order, or whose drawn value is invalid, stays at its
    default)."""
    size_kw = draw(sizes)
    base = ModelConfig(**size_kw)
    return options.resolve({**size_kw, **draw(option_settings(base, exclude=exclude, values=values))})
