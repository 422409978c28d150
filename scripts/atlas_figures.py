"""The tables and figures of docs/atlas.md's "Measured run", regenerated from the stored atlas run.

    .venv/bin/python scripts/atlas_figures.py docs/atlas/data     # reads atlas.parquet (xtlens probe atlas --out)

Tables: markdown blocks written between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` in ``docs/atlas.md``
(the numbers in the doc are the data's, never typed): ``largest`` (every option at the largest size), ``sizes``
(the change at every size, one column per size), ``holdout`` (the largest size forecast from the smaller ones),
``forecast`` (each option at the seed's own size). Figures: PNGs in ``docs/atlas/`` from the dashboard's own chart
builders (``dashboard.charts.atlas``), exported with kaleido 1.x (``pip install -e ".[docs]"``; it drives Chromium,
``BROWSER_PATH``, /usr/bin/chromium here). Without kaleido it writes the tables only and says so.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from pathlib import Path

import pandas as pd
from xtlens.core.cost_model import param_counts
from xtlens.core.presets import PRESETS
from xtlens.dashboard.charts import atlas as ac
from xtlens.profiling.benefit import forecast, probe_atlas
from xtlens.profiling.benefit.records import read_probe_table

DOC = Path(__file__).resolve().parents[1] / "docs" / "atlas.md"
VERDICT = {"supported": "lowers the loss", "contradicted": "raises the loss", "not_detectable": "not detectable",
           "not_learned": "not learned", "": ""}


def _f(v: object, fmt: str) -> str:
    try:
        x = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "—"
    return "—" if x != x else fmt.format(x)


def _md(rows: list[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def largest_table(table: pd.DataFrame) -> str:
    dim = int(table["size_dim"].max())
    t = table[table["size_dim"] == dim]
    rows = []
    for _, r in t.iterrows():
        rows.append([str(r["label"]), _f(r["d_bits_per_byte"], "{:+.4f}"),
                     f"[{_f(r['ci95_low'], '{:+.4f}')}, {_f(r['ci95_high'], '{:+.4f}')}]",
                     _f(r["min_detectable_effect_bits"], "{:.4f}"), VERDICT.get(str(r["verdict"] or ""), str(r["verdict"])),
                     _f(r["d_num_params"], "{:+,.0f}"), _f(r["d_train_flops_pct"], "{:+.1f}%"),
                     _f(r["d_tokens_per_s_pct"], "{:+.0f}%"), _f(r["d_train_peak_bytes"], "{:+,.0f}"),
                     _f(r["d_kv_cache_bytes_per_token"], "{:+,.0f}")])
    return _md(rows, ["option (switched against the family)", "Δ bits/byte", "95% interval", "MDE (bits/byte)",
                      "verdict", "Δ parameters", "Δ training FLOPs", "Δ tokens/s (measured)",
                      "Δ training peak, measured (bytes)", "Δ KV cache (bytes/token)"])


def sizes_table(table: pd.DataFrame) -> str:
    dims = sorted(int(d) for d in table["size_dim"].unique())
    rows = []
    for arm, g in table.groupby("arm", sort=False):
        if arm == probe_atlas.REFERENCE:
            continue
        cells = [str(g["label"].iloc[0])]
        for d in dims:
            r = g[g["size_dim"] == d]
            if r.empty:
                cells.append("—")
                continue
            r = r.iloc[0]
            cells.append(f"{_f(r['d_bits_per_byte'], '{:+.3f}')} [{_f(r['ci95_low'], '{:+.3f}')}, "
                         f"{_f(r['ci95_high'], '{:+.3f}')}] {VERDICT.get(str(r['verdict'] or ''), '')}")
        rows.append(cells)
    ref = table[table["arm"] == probe_atlas.REFERENCE].set_index("size_dim")
    head = ["option"] + [f"dim {d} ({int(ref.loc[d, 'non_embedding_params']):,} non-emb. params; reference "
                         f"{float(ref.loc[d, 'val_bits_per_byte']):.3f} bits/byte)" for d in dims]
    return _md(rows, head)


def holdout_table(h: forecast.Holdout, labels: dict[str, str]) -> str:
    rows = []
    for _, r in h.table.iterrows():
        ok = bool(r["identifiable"])
        rows.append([labels.get(r["arm"], r["arm"]), _f(r["measured"], "{:.3f}"),
                     _f(r["estimate"], "{:.3f}") if ok else "not forecast",
                     f"[{_f(r['low'], '{:.3f}')}, {_f(r['high'], '{:.3f}')}]" if ok else str(r["reason"])[:160],
                     ("yes" if r["covered"] else "no") if ok else "—", _f(r["abs_error"], "{:.3f}") if ok else "—"])
    return _md(rows, ["option", "measured (bits/byte, mean of seeds)", "forecast", "80% interval / reason",
                      "covered", "|error| (bits/byte)"])


def forecast_table(fc: list[forecast.Forecast], labels: dict[str, str]) -> str:
    rows = []
    for f in fc:
        rows.append([labels.get(f.arm, f.arm), _f(f.estimate, "{:.3f}") if f.identifiable else "not forecast",
                     f"[{_f(f.low, '{:.3f}')}, {_f(f.high, '{:.3f}')}]" if f.identifiable else f.reason[:160],
                     _f(f.extrapolation, "{:,.0f}x")])
    return _md(rows, ["option", "forecast (bits/byte)", "80% interval / reason", "beyond the largest run"])


def replace_block(text: str, name: str, body: str) -> str:
    pat = re.compile(rf"(<!-- table:{name} -->\n).*?(<!-- /table:{name} -->)", re.S)
    if not pat.search(text):
        raise SystemExit(f"docs/atlas.md has no <!-- table:{name} --> block")
    return pat.sub(lambda m: m.group(1) + body + m.group(2), text)


def main(folder: Path) -> None:
    frame = read_probe_table(folder / "atlas.parquet")
    table = probe_atlas.atlas_table(frame)
    labels = dict(zip(table["arm"], table["label"], strict=True))
    points = forecast.arm_points(frame)
    h = forecast.holdout(points)
    seed_n = param_counts(PRESETS["seed"]).non_embedding_params
    fc = forecast.forecast_arms(points, num_params=seed_n, tokens=None)
    text = DOC.read_text()
    cov = (f"{h.coverage:.0%} of {h.arms} options" if h.arms else "no option could be forecast")
    summary = (f"Held out: dim {int(h.table['held_out_dim'].max())}, forecast from the smaller sizes at the 80% level: "
               f"the interval covered the measured mean for {cov}"
               + (f" (the prediction interval, which adds the seeds' own spread: "
                  f"{h.coverage_prediction:.0%})" if getattr(h, "coverage_prediction", None) is not None else "")
               + (f"; median |error| {h.median_abs_error_bits:.3f} bits/byte" if h.median_abs_error_bits is not None
                  else "") + ".\n")
    for name, body in (("largest", largest_table(table)), ("sizes", sizes_table(table)),
                       ("holdout", summary + "\n" + holdout_table(h, labels)),
                       ("forecast", f"At the seed's own size ({seed_n:,} non-embedding parameters), at the runs' token "
                                    "budget per run (65,536 tokens; the token term is not fitted from one budget):\n\n"
                                    + forecast_table(fc, labels))):
        text = replace_block(text, name, body)
    DOC.write_text(text)
    print(f"tables written into {DOC}")
    try:
        import kaleido  # noqa: F401
    except ImportError:
        print("kaleido is not installed (pip install -e '.[docs]'): figures not written")
        return
    os.environ.setdefault("BROWSER_PATH", "/usr/bin/chromium")
    out = DOC.parent / "atlas"
    figs = {"quality_vs_flops.png": ac.quality_vs_cost(table, "d_train_flops_pct"),
            "quality_vs_kv_cache.png": ac.quality_vs_cost(table, "d_kv_cache_bytes_per_token"),
            "quality_vs_memory.png": ac.quality_vs_cost(table, "d_train_peak_bytes"),
            "holdout.png": ac.holdout_chart(h.table, labels=labels),
            "forecast.png": ac.forecast_chart(pd.DataFrame([dataclasses.asdict(f) for f in fc]), labels=labels)}
    for name, fig in figs.items():
        fig.write_image(out / name, width=1100, height=700 if name.startswith("quality") else 820, scale=1)
        print(f"wrote {out / name}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/atlas/data"))
