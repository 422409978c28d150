"""What the sidebar controls are, DERIVED from ``ModelConfig``'s field metadata (plus the workload fields).

Pure data (no Streamlit): ``controls`` draws the widgets from it, ``state`` decodes URL values with it.
Nothing here lists model fields: a field added to ``core.config.ModelConfig`` with its metadata (kind,
range, step, group, description) gets its control, its URL parameter and its help text from here.
``missing_parts`` says what a field lacks; ``tests/dashboard/test_schema.py`` runs it on every field.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

from xtlens.core.config import DTYPE_BYTES, GROUPS, ConfigError, ModelConfig, decode_value
from xtlens.core.options import check_field_metadata

MAX_SEQ_LEN_UI = 8192  # the workload slider's upper end (the seed's max_seq_len)
KINDS = ("int", "opt_int", "float", "bool")
_PY_TYPES = {"int": int, "opt_int": int | None, "float": float, "bool": bool}


@dataclass(frozen=True, kw_only=True)
class FieldSpec:
    name: str
    label: str
    kind: str  # "int", "opt_int", "float", "bool"
    lo: float | None = None
    hi: float | None = None
    step: float | None = None
    help: str = ""
    placeholder: str | None = None
    group: str = "size"
    type_: object = None


def spec_from_field(cls: type, field: dataclasses.Field) -> FieldSpec:
    """The control spec of one dataclass field, from its ``metadata`` (``core.options.OptionRegistryError`` naming
    the field if it has none)."""
    check_field_metadata(field)
    meta = field.metadata
    return FieldSpec(
        name=field.name, label=meta.get("label") or field.name, kind=meta["kind"], lo=meta.get("lo"),
        hi=meta.get("hi"), step=meta.get("step"), help=meta["description"], placeholder=meta.get("placeholder"),
        group=meta["group"], type_=typing.get_type_hints(cls)[field.name],
    )


def _sample_value(spec: FieldSpec, default: object) -> object:
    """A valid-looking value different from the default, for the URL round-trip check."""
    if spec.kind == "bool":
        return not default
    if spec.kind == "float":
        return spec.lo if default != spec.lo else spec.hi
    lo = int(spec.lo) if spec.lo is not None else 0
    return lo + 1 if default == lo else lo


def missing_parts(cls: type = ModelConfig) -> list[str]:
    """What each field of ``cls`` lacks to be a complete configuration field, one message per gap naming the
    field and the missing part: metadata for its control (``kind``, ``group``), a description, a URL
    round-trip (``to_query`` -> ``from_query`` of a changed value) and its type matching its control kind.
    Empty when every field is complete. Works on any ``ModelConfig`` variant (a subclass or
    ``dataclasses.make_dataclass`` copy), so a test can show that a new bare field is caught.
    """
    out: list[str] = []
    complete: list[dataclasses.Field] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if meta.get("kind") not in KINDS:
            out.append(f"{f.name}: no control (field metadata 'kind' must be one of {', '.join(KINDS)})")
            continue
        incomplete = False
        if meta.get("group") not in GROUPS:
            out.append(f"{f.name}: no control (field metadata 'group' must be one of {', '.join(GROUPS)})")
            incomplete = True
        if not str(meta.get("description") or "").strip():
            out.append(f"{f.name}: no description (field metadata 'description')")
            incomplete = True
        if incomplete:
            continue
        if meta["kind"] != "bool" and (meta.get("lo") is None or meta.get("hi") is None or meta.get("step") is None):
            out.append(f"{f.name}: no control range (field metadata 'lo', 'hi', 'step')")
            continue
        if hints[f.name] != _PY_TYPES[meta["kind"]]:
            out.append(f"{f.name}: control kind {meta['kind']!r} does not match its type {hints[f.name]}")
            continue
        complete.append(f)
    if out:
        return out  # fix the metadata first: a config cannot be built to round-trip
    base = cls(**_required_values(cls))
    for f in complete:
        spec = spec_from_field(cls, f)
        value = _sample_value(spec, getattr(base, f.name))
        try:
            changed = dataclasses.replace(base, **{f.name: value})
        except ConfigError:
            changed = base  # the sample is invalid for this base config: round-trip the base
        try:
            back = cls.from_query(changed.to_query())
        except ConfigError as exc:
            out.append(f"{f.name}: no URL round-trip ({exc})")
            continue
        if getattr(back, f.name) != getattr(changed, f.name):
            out.append(f"{f.name}: no URL round-trip ({getattr(changed, f.name)!r} came back as "
                       f"{getattr(back, f.name)!r})")
    return out


def _required_values(cls: type) -> dict[str, object]:
    from xtlens.core.config import PRESETS

    seed = PRESETS["seed"]
    return {f.name: getattr(seed, f.name) for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING}


CONFIG_FIELDS: tuple[FieldSpec, ...] = tuple(spec_from_field(ModelConfig, f) for f in dataclasses.fields(ModelConfig))
CONFIG_SPECS: dict[str, FieldSpec] = {s.name: s for s in CONFIG_FIELDS}
FIELDS_BY_GROUP: dict[str, tuple[FieldSpec, ...]] = {
    g: tuple(s for s in CONFIG_FIELDS if s.group == g) for g in GROUPS
}

WORKLOAD_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec(name="seq_len", label="sequence length (tokens)", kind="int", lo=1, hi=MAX_SEQ_LEN_UI, step=1,
              help="Tokens per sequence, up to 8192 (and at most max_seq_len).", type_=int),
    FieldSpec(name="batch", label="batch (sequences)", kind="int", lo=1, hi=4096, step=1,
              help="Sequences processed together.", type_=int),
)
WORKLOAD_SPECS: dict[str, FieldSpec] = {s.name: s for s in WORKLOAD_FIELDS}
DTYPES: tuple[str, ...] = tuple(DTYPE_BYTES)


def decode(spec: FieldSpec, raw: str) -> object:
    """A URL text value as the widget's Python value (``core.config.decode_value``, the one decoder), checked
    against the widget's range; ``ConfigError`` (a ``ValueError``) naming the field otherwise."""
    value = decode_value(spec.name, raw, spec.type_)
    if spec.kind != "bool" and value is not None and not spec.lo <= value <= spec.hi:  # type: ignore[operator]
        raise ConfigError(spec.name, raw, f"a value from {spec.lo:g} to {spec.hi:g}")
    return value
