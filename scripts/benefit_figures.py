"""Figures and tables for docs/benefits.md from probe tables written by ``xtlens probe``.

    .venv/bin/python scripts/benefit_figures.py docs/benefits/data     # reads {scaling,stability,extrapolation,heads}.parquet

Writes PNGs (the dashboard's own chart builders, exported with kaleido: ``pip install -e ".[docs]"``; kaleido
drives Chromium, /usr/bin/chromium here) and ``tables.md`` next to them. Without kaleido it writes the tables
only and says so.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
from xtlens.dashboard.charts import benefits as bc
from xtlens.profiling.benefit import analysis
from xtlens.profiling.benefit.records import read_probe_table


def _md(frame: pd.DataFrame, floats: str = "{:.3f}") -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(str(c) for c in cols) + " |", "|" + "|".join("---:" for _ in cols) + "|"]
    for row in frame.itertuples(index=False):
        cells = []
        for v in row:
            v = v.item() if hasattr(v, "item") else v
            if isinstance(v, float) and v != v:
                cells.append("—")
            elif isinstance(v, float):
                cells.append(floats.format(v))
            elif isinstance(v, int):
                cells.append(f"{v:,}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    folder = Path(argv[0] if argv else "docs/benefits/data")
    out = folder.parent
    frames = {p: read_probe_table(folder / f"{p}.parquet") for p in ("scaling", "stability", "extrapolation", "heads")
              if (folder / f"{p}.parquet").exists()}
    figs = {}
    text = []
    if "scaling" in frames:
        f = frames["scaling"]
        from xtlens.profiling.benefit import probe_scaling as ps

        figs["scaling_params"] = bc.scaling_law(f, title="Equal tokens: val loss vs non-embedding parameters")
        figs["scaling_isoflop"] = bc.isoflop_curves(f, title="IsoFLOP: val loss vs non-embedding parameters")
        figs["scaling_curves_flops"] = bc.loss_curves(f, probe="scaling", budget_kind="tokens", x="train_flops",
                                                      title="Loss vs training FLOPs spent (equal tokens)")
        pts = ps.points_table(f)
        cols = ["budget_kind", "budget", "axis_value", "peak_lr", "lr_at_edge", "seeds", "num_params",
                "non_embedding_params", "train_tokens", "tokens_per_param", "tokens_per_non_embedding_param",
                "val_loss_nats", "ci95_low", "ci95_high", "learned"]
        text += ["### scaling: each point at its best learning rate (seed mean, 95% bootstrap interval)\n",
                 _md(pts[pts["role"] == "best lr"][cols]), ""]
        text += ["### scaling: the learning-rate sweep (seed-mean val loss, nats/token)\n", _md(ps.lr_sweep_table(f)), ""]
        text += ["### scaling: fitted laws (seed bootstrap)\n", _md(ps.law_table(f).drop(columns=["method"])), ""]
        text += ["### scaling: IsoFLOP minima\n", _md(ps.isoflop_table(f)), ""]
        fin = analysis.final_evals(f)
        if (fin["budget_kind"] == "epochs").any():
            text += ["### scaling: over-fitting (one seed)\n", _md(analysis.overfit_gaps(fin)), ""]
        text += ["Scope: " + analysis.describe_scope(f), ""]
    if "stability" in frames:
        from xtlens.profiling.benefit import probe_stability as ps

        f = frames["stability"]
        outcomes = ps.run_outcomes(f)
        ratios = ps.grad_ratio_table(ps.grad_ratios(f))
        figs["stability_lr"] = bc.stable_lr_chart(outcomes, ps.largest_stable_lr(outcomes),
                                                  title="Largest stable learning rate per norm and depth (clipping off)")
        figs["stability_ratio"] = bc.grad_ratio_chart(ratios, when="init",
                                                      title="Gradient ratio first / last block at initialisation")
        depth, lr = int(outcomes["depth"].max()), float(outcomes["lr"].min())
        figs["stability_curves"] = bc.stability_curves(f, depth=depth, lr=lr,
                                                       title=f"Validation loss, depth {depth}, peak lr {lr:g}")
        sub = f[ps.peak_lrs(f) == lr]
        zrange = bc.grad_range(sub, depth=depth)
        for v in ("deepnorm", "pre_norm", "post_norm"):
            figs[f"stability_heat_{v}"] = bc.grad_heatmap(sub, variant=v, depth=depth, zrange=zrange,
                                                          title=f"{v}, depth {depth}, lr {lr:g}: log10 grad norm")
        text += ["### stability: largest stable learning rate, gradient ratio at initialisation\n",
                 _md(ps.stability_table(f), "{:.3g}"), "",
                 "### stability: gradient ratio first / last block (geometric mean over seeds, 95% interval)\n",
                 _md(ratios, "{:.3g}"), "",
                 "### stability: every run\n", _md(outcomes.drop(columns=["error"]), "{:.3g}"), "",
                 "Scope: " + analysis.describe_scope(f), ""]
    if "extrapolation" in frames:
        f = frames["extrapolation"]
        figs["extrapolation"] = bc.extrapolation_curves(
            f, title="Past the training length: loss change vs the same tokens in training-length windows")
        text += ["### extrapolation: validation loss by evaluation length\n", _md(analysis.extrapolation_table(f)), "",
                 "Scope: " + analysis.describe_scope(f), ""]
    if "heads" in frames:
        from xtlens.profiling.benefit import probe_heads as ph

        f = frames["heads"]
        t = ph.heads_table(f)
        figs["heads_effects"] = bc.heads_effects(t, title="Loss difference vs the reference, next to KV-cache bytes")
        figs["heads_equal_params"] = bc.heads_bars(t, title="Equal parameters: val loss per head count")
        figs["heads_kv"] = bc.kv_tradeoff(t, title="K/V heads: val loss vs KV-cache bytes per token")
        text += ["### heads: every arm against the reference (paired per window, 95% interval)\n", _md(t, "{:.4g}"), "",
                 "### heads: the context-ablation control\n", _md(ph.control_table(f), "{:.4g}"), "",
                 "Scope: " + analysis.describe_scope(f), ""]
    (out / "tables.md").write_text("\n".join(text))
    try:
        import kaleido  # noqa: F401
    except ImportError:
        print("kaleido is not installed: wrote tables.md only (pip install -e '.[docs]' for the PNGs)", file=sys.stderr)
        return 0
    if Path("/usr/bin/chromium").exists():
        os.environ.setdefault("BROWSER_PATH", "/usr/bin/chromium")
    for name, fig in figs.items():
        fig.write_image(out / f"{name}.png", width=900, height=max(int(fig.layout.height or 420), 420), scale=1)
        print(f"wrote {out / (name + '.png')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
