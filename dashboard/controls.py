"""The sidebar: configuration source (preset / pasted code), one section per ``ModelConfig`` field group
(drawn from ``dashboard.schema``, itself derived from the field metadata), workload.

Draws widgets whose values live under the keys of ``dashboard.session.widgets``; returns nothing but the
per-field error slots, so a ``ConfigError`` is shown right under the control it names.
"""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st
from xtlens.core.config import GROUPS, PRESETS, SEED_SNIPPET, inert_fields
from xtlens.dashboard import schema
from xtlens.dashboard.session import loading, widgets

# sizes: a slider with the exact box beside (power-of-two stops for widths and lengths, every integer for counts)
SLIDER_FIELDS = {"dim": "pow2", "depth": "linear", "heads": "linear", "attn_dim_head": "pow2", "max_seq_len": "pow2"}
WORKLOAD_SLIDERS = {"seq_len": "pow2"}  # the workload's sequence length: the same slider + exact box
SLIDER_TOP = {"depth": 64, "heads": 64}  # the slider's end; the exact box takes any allowed value


def _number(spec: schema.FieldSpec, key: str, *, beside_slider: bool = False, disabled: bool = False) -> None:
    """A number box WITHOUT min/max: an out-of-range value reaches ``ModelConfig``, whose message (field and
    allowed range) is shown under the control and the page stops showing numbers until it is fixed.
    (With min/max, Streamlit keeps the bad digits in the box, shows a small "!" and silently keeps the old
    value.)"""
    kwargs = {"step": spec.step, "key": key, "help": spec.help + _range_words(spec), "disabled": disabled}
    if spec.kind == "float":
        kwargs.update(step=float(spec.step), format="%g")
    else:
        kwargs.update(step=int(spec.step))
    if spec.placeholder:
        kwargs["placeholder"] = spec.placeholder
    if beside_slider:  # the slider beside it shows the label; the box keeps it for screen readers and tests
        kwargs["label_visibility"] = "collapsed"
    st.number_input(spec.label, **kwargs)


def _range_words(spec: schema.FieldSpec) -> str:
    if spec.lo is None or spec.hi is None:
        return ""
    fmt = (lambda v: f"{v:g}") if spec.kind == "float" else (lambda v: f"{int(v)}")
    return f" Allowed: {fmt(spec.lo)}..{fmt(spec.hi)}."


def slider_options(spec: schema.FieldSpec, top: int | None = None) -> list[int]:
    """The slider's stops: powers of two for widths (``dim``) and lengths (``seq_len``), every integer for counts
    (``depth``, ``heads``); ``top`` caps the stops (the sequence length at the configuration's ``max_seq_len``)."""
    lo, hi = int(spec.lo), int(SLIDER_TOP.get(spec.name, spec.hi))
    if top is not None:
        hi = max(lo, min(hi, int(top)))
    if SLIDER_FIELDS.get(spec.name, WORKLOAD_SLIDERS.get(spec.name)) == "pow2":
        return [2**k for k in range(0, 31) if lo <= 2**k <= hi]
    return list(range(lo, hi + 1))


def _sized(spec: schema.FieldSpec, key: str, top: int | None = None, disabled: bool = False) -> None:
    """A slider over the usual values and, beside it, the exact number box (the configuration's or the
    workload's key: the URL and the session file keep the exact value)."""
    options = slider_options(spec, top)
    widgets.sync_slider(key, options)
    c = st.columns([3, 2], vertical_alignment="bottom")
    with c[0]:
        st.select_slider(spec.label, options=options, key=key + ".slider", on_change=widgets.on_slider, args=(key,),
                         disabled=disabled,
                         help=spec.help + (" Steps are powers of two; type any other value in the box beside."
                                           if SLIDER_FIELDS.get(spec.name, WORKLOAD_SLIDERS.get(spec.name)) == "pow2"
                                           else ""))
    with c[1]:
        _number(spec, key, beside_slider=True, disabled=disabled)


def sidebar(device_labels: dict[str, str]) -> dict[str, st.delta_generator.DeltaGenerator]:
    """Draw the sidebar; returns one empty slot per field name for its error message."""
    slots: dict[str, st.delta_generator.DeltaGenerator] = {}
    with st.sidebar:
        st.header("Configuration")
        _source()
        slots["_top"] = st.empty()
        st.caption("Hover ? on a control for what x-transformers does with it.")
        inert = inert_now()
        for group, title in GROUPS.items():
            specs = schema.FIELDS_BY_GROUP[group]
            if not specs:
                continue
            with st.expander(title, expanded=group != "no_cost"):  # every setting that costs is visible
                for spec in specs:
                    off = spec.name in inert
                    if spec.kind == "bool":
                        st.checkbox(spec.label, key=widgets.cfg_key(spec.name), help=spec.help, disabled=off)
                    elif spec.name in SLIDER_FIELDS:
                        _sized(spec, widgets.cfg_key(spec.name), disabled=off)
                    else:
                        _number(spec, widgets.cfg_key(spec.name), disabled=off)
                    if off:
                        st.caption(f":material/block: **{spec.name}** {IGNORED_WORDS}: {inert[spec.name]}.")
                    slots[spec.name] = st.empty()
        st.header("Workload")
        _sized(schema.WORKLOAD_SPECS["seq_len"], widgets.wl_key("seq_len"), top=widgets.slider_max_seq_len())
        slots["seq_len"] = st.empty()
        batch = schema.WORKLOAD_SPECS["batch"]
        st.number_input(batch.label, step=1, key=widgets.wl_key("batch"),
                        help=batch.help + f" Allowed: {int(batch.lo):,}..{int(batch.hi):,}.")
        slots["batch"] = st.empty()
        st.selectbox("dtype (weights and activations)", schema.DTYPES, key=widgets.wl_key("dtype"),
                     help="Bytes per element: float32 = 4, bfloat16 / float16 = 2.")
        _device(device_labels)
    return slots


IGNORED_WORDS = "has no effect here"


def inert_now() -> dict[str, str]:
    """The fields the other flags of the configuration in the widgets make irrelevant (``core.config.inert_fields``),
    with the reason; empty while the configuration is not valid (its error is shown instead)."""
    cfg, _ = widgets.read_config()
    return {} if cfg is None else inert_fields(cfg)


def _source() -> None:
    st.selectbox("Preset", list(PRESETS), key=widgets.PRESET_KEY,
                 help="seed = the reference configuration (the TransformerWrapper shown in the README).")
    st.button("Load preset", key="src.load_preset", on_click=loading.on_load_preset, width="stretch")
    with st.expander("Paste x-transformers code"):
        st.text_area("TransformerWrapper(...) code", key=widgets.SNIPPET_KEY, height=170, placeholder=SEED_SNIPPET,
                     help="Parsed with Python's ast, never executed. Only literal keyword values are read.")
        st.button("Load code", key="src.load_snippet", on_click=loading.on_load_snippet, width="stretch")
    note = loading.source_note()
    if note:
        kind, message = note
        (st.success if kind == "ok" else st.error)(message)


def _device(device_labels: dict[str, str]) -> None:
    options = list(device_labels)
    st.selectbox("device (for measurements)", options, key=widgets.wl_key("device"),
                 format_func=lambda d: device_labels.get(d, d),
                 help="Closed-form numbers need no device. Measurements run on this device.")
    if not any(d.startswith("cuda") for d in options):
        st.caption("No CUDA GPU is visible to PyTorch here: measurements run on the CPU.")


def show_errors(slots: dict, errors: Sequence[Exception]) -> None:
    """Put each error under the control it names (or at the top of the sidebar)."""
    for exc in errors:
        field = getattr(exc, "field", None)
        slot = slots.get(field) or slots["_top"]
        spec = schema.CONFIG_SPECS.get(field) or schema.WORKLOAD_SPECS.get(field)
        allowed = _range_words(spec).replace(" Allowed: ", " (allowed ").rstrip(".") + ")" \
            if spec is not None and spec.kind != "bool" and spec.lo is not None and spec.hi is not None else ""
        slot.error(f"**{field}**{allowed}: {exc}. No numbers are shown until it is valid." if field else str(exc))
