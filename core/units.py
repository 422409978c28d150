"""Units: the one set of number formatters for the page, the CLI and reports (standard library only).

Every number in xtlens carries its unit in its name (``*_bytes``, ``*_flops``, ``*_params``, ``*_ms``);
``unit_of`` reads it back from the name. Bytes are shown in GiB (2**30) or MiB (2**20) and say so; FLOPs
with an SI prefix (one multiply-add = 2 FLOPs); counts with thousands separators. Tables keep the raw
integers: these functions are for display only.
"""

from __future__ import annotations

import math

__all__ = ["GIB", "MIB", "fmt_bytes", "fmt_flops", "fmt_count", "fmt_value", "unit_of"]

GIB = 2**30
MIB = 2**20


def _missing(n: float | None) -> bool:
    return n is None or (isinstance(n, float) and math.isnan(n))


def fmt_bytes(n: float | None, *, like: float | None = None) -> str:
    """``3.214 GiB`` from 0.1 GiB up, ``12.50 MiB`` below; ``n/a`` for a missing value.

    ``like``: choose GiB or MiB by this value instead of ``n`` (one unit for a row of numbers)."""
    if _missing(n):
        return "n/a"
    if abs(n if like is None else like) >= GIB / 10:
        return f"{n / GIB:,.3f} GiB"
    return f"{n / MIB:,.2f} MiB"


def fmt_flops(n: float | None, *, like: float | None = None) -> str:
    """``1.257 TFLOPs`` (P, T, G, M, k prefixes; 2 FLOPs per multiply-add); ``n/a`` for a missing value.

    ``like``: choose the prefix by this value instead of ``n`` (one unit for a row of numbers)."""
    if _missing(n):
        return "n/a"
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n if like is None else like) >= scale:
            return f"{n / scale:,.3f} {prefix}FLOPs"
    return f"{n:,.0f} FLOPs"


def fmt_count(n: float | None) -> str:
    """``36,629,504``; ``n/a`` for a missing value."""
    return "n/a" if _missing(n) else f"{int(n):,}"


def fmt_value(unit: str, n: float | None, *, like: float | None = None) -> str:
    """Format ``n`` by its unit: ``bytes`` (and ``bytes_per_token``), ``flops`` (and ``flops_per_token``,
    also spelled ``FLOPs``), anything else as a count. ``like``: as in ``fmt_bytes``."""
    unit = unit.lower()
    if unit.startswith("bytes"):
        return fmt_bytes(n, like=like)
    if unit.startswith("flops"):
        return fmt_flops(n, like=like)
    return fmt_count(n)


def unit_of(name: str) -> str:
    """The unit a unit-suffixed name carries: ``bytes``, ``flops``, ``params`` or ``count``."""
    if name.endswith("_bytes") or "_bytes_" in name:
        return "bytes"
    if "flops" in name:
        return "flops"
    if name.endswith("params") or "_params_" in name:
        return "params"
    return "count"
