"""Every table and figure of docs/benefits.md, regenerated from the probe tables in docs/benefits/data.

    .venv/bin/python scripts/benefit_figures.py docs/benefits/data     # reads {scaling,stability,extrapolation,heads}.parquet

Tables: each is a markdown block named ``NAME``; the script rewrites the text between ``<!-- table:NAME -->`` and
``<!-- /table:NAME -->`` in ``docs/benefits.md`` (so the numbers in the doc's tables are the data's, never typed),
and writes every block to ``docs/benefits/tables.md`` too. The summary table reads the claims files
``<probe>.claims.csv`` (``xtlens probe ... --summary-out``) when present, else computes the claims from the table.

Figures: PNGs next to the data's folder, from the dashboard's own chart builders (the unigram "learned nothing"
line on every loss chart, as on the Benefits tab), exported with kaleido 1.x (``pip install -e ".[docs]"``), which
drives Chromium (``BROWSER_PATH``, /usr/bin/chromium here). Without kaleido it writes the tables only and says so.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pandas as pd
from xtlens.dashboard.charts import benefits as bc
from xtlens.profiling.benefit import analysis, report
from xtlens.profiling.benefit.claims import claims_for, read_summary, summary_frame
from xtlens.profiling.benefit.records import read_probe_table

PROBES = ("scaling", "stability", "extrapolation", "heads")


def _md(frame: pd.DataFrame, floats: str = "{:.3f}") -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(str(c) for c in cols) + " |", "|" + "|".join("---:" for _ in cols) + "|"]
    for row in frame.itertuples(index=False):
        cells = []
        for v in row:
            v = v.item() if hasattr(v, "item") else v
            if v is None or v is pd.NA or (isinstance(v, float) and v != v):
                cells.append("—")
            elif isinstance(v, bool):
                cells.append("yes" if v else "no")
            elif isinstance(v, float):
                cells.append(floats.format(v))
            elif isinstance(v, int):
                cells.append(f"{v:,}")
            else:
                cells.append(str(v).replace("|", "/"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _num(v: object, fmt: str) -> str:
    try:
        x = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "—"
    return "—" if x != x else fmt.format(x)


def claims_frame(folder: Path, frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per claim of every probe: the committed ``<probe>.claims.csv``, else computed from the table."""
    parts = []
    for p in PROBES:
        path = folder / f"{p}.claims.csv"
        if path.exists():
            parts.append(read_summary(path))
        elif p in frames:
            parts.append(summary_frame(claims_for(frames[p])))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def summary_table(claims: pd.DataFrame) -> pd.DataFrame:
    """The doc's top table: claim, verdict, estimate [95% interval], minimum detectable effect, scale."""
    rows = []
    for r in claims.itertuples(index=False):
        prec = "{:+.3f}" if "nats" in str(r.unit) or "decades" in str(r.unit) or "log10" in str(r.unit) else "{:+.3g}"
        est = _num(r.estimate, prec)
        iv = f"[{_num(r.ci95_low, prec)}, {_num(r.ci95_high, prec)}]" if est != "—" else ""
        rows.append({"probe": r.probe, "claim": r.claim, "verdict": f"**{r.verdict}**",
                     "estimate [95% interval]": f"{est} {iv} {r.unit}".strip() if est != "—"
                     else f"— (no estimate: {str(r.note).split(':')[0]})",
                     "MDE": _num(r.min_detectable_effect, "{:.3f}"),
                     "scale": str(r.scale).replace(", corpus pydoc_data.topics (CPython reference documentation, "
                                                   "PSF License)", ", pydoc topics")})
    return pd.DataFrame(rows)


def build(folder: Path) -> tuple[dict[str, str], dict[str, object]]:
    frames = {p: read_probe_table(folder / f"{p}.parquet") for p in PROBES if (folder / f"{p}.parquet").exists()}
    tables: dict[str, str] = {}
    figs: dict[str, object] = {}
    claims = claims_frame(folder, frames)
    if not claims.empty:
        tables["summary"] = _md(summary_table(claims))
    if "scaling" in frames:
        from xtlens.profiling.benefit import probe_scaling as ps

        f = frames["scaling"]
        figs["scaling_params"] = bc.scaling_law(f, title="Equal tokens: val loss vs non-embedding parameters")
        figs["scaling_isoflop"] = bc.isoflop_curves(f, title="IsoFLOP: val loss vs non-embedding parameters")
        figs["scaling_curves_flops"] = bc.loss_curves(f, probe="scaling", budget_kind="tokens", x="train_flops",
                                                      title="Loss vs training FLOPs spent (equal tokens)")
        pts = ps.points_table(f)
        best = pts[pts["role"] == "best lr"]
        cols = ["axis_value", "heads_n", "non_embedding_params", "num_params", "peak_lr", "lr_at_edge",
                "train_tokens", "tokens_per_param", "tokens_per_non_embedding_param", "val_loss_nats", "ci95_low",
                "ci95_high", "learned"]
        eq = best[best["budget_kind"] == "tokens"].assign(heads_n=lambda d: d["axis_value"] // 16,
                                                          train_tokens=lambda d: d["train_tokens"].astype(int))
        tables["scaling_points"] = _md(eq[cols].rename(columns={"axis_value": "dim", "heads_n": "heads"}))
        iso = best[best["budget_kind"] == "flops"][["budget", "axis_value", "non_embedding_params", "peak_lr",
                                                     "train_tokens", "tokens_per_non_embedding_param",
                                                     "val_loss_nats", "ci95_low", "ci95_high"]]
        tables["scaling_isoflop_points"] = _md(iso.rename(columns={"budget": "budget_flops", "axis_value": "dim"}),
                                               "{:.3g}")
        tables["scaling_sweep"] = _md(ps.lr_sweep_table(f))
        tables["scaling_laws"] = _md(ps.law_table(f).drop(columns=["method"]), "{:.3g}")
        tables["scaling_isoflop"] = _md(ps.isoflop_table(f), "{:.3g}")
    if "stability" in frames:
        from xtlens.profiling.benefit import probe_stability as pst

        f = frames["stability"]
        outcomes = pst.run_outcomes(f)
        ratios = pst.grad_ratio_table(pst.grad_ratios(f))
        figs["stability_lr"] = bc.stable_lr_chart(outcomes, pst.largest_stable_lr(outcomes),
                                                  title="Largest stable learning rate per norm and depth (clipping off)")
        figs["stability_ratio"] = bc.grad_ratio_chart(ratios, when="init",
                                                      title="Gradient ratio first / last block at initialisation")
        depth = int(outcomes["depth"].max())
        for lr in (0.01, 0.03):
            figs[f"stability_curves_lr{lr:g}"] = bc.stability_curves(
                f, depth=depth, lr=lr, title=f"Validation loss, depth {depth}, peak lr {lr:g}")
        st = pst.stability_table(f)
        keep = [c for c in st.columns if c not in ("lrs_swept",)]
        tables["stability_lr"] = _md(st[keep], "{:.3g}")
        tables["stability_ratios"] = _md(ratios, "{:.3g}")
        per_cell = (outcomes.assign(trained=outcomes["outcome"] == "trained")
                    .groupby(["norm", "depth", "lr"], as_index=False)
                    .agg(seeds=("seed", "nunique"), trained=("trained", "sum"),
                         diverged=("status", lambda s: int((s == "diverged").sum())),
                         val_loss_min=("final_val_loss_nats", "min"), val_loss_max=("final_val_loss_nats", "max")))
        tables["stability_runs"] = _md(per_cell, "{:.3f}")
    if "extrapolation" in frames:
        from xtlens.profiling.benefit import probe_extrapolation as pe

        f = frames["extrapolation"]
        figs["extrapolation"] = bc.extrapolation_curves(
            f, title="Past the training length: loss change vs the same tokens in training-length windows")
        for shift in (0, 1):
            figs[f"extrapolation_position_shift{shift}"] = bc.extrapolation_position_loss(
                f, shift=shift, title=f"Loss by position, shift_tokens={shift}")
        h = pe.headline(f)
        longest = h[h["eval_len_tokens"] == h["eval_len_tokens"].max()]
        tables["extrapolation_headline"] = _md(longest.drop(columns=["eval_len_tokens"]), "{:.3f}")
        tables["extrapolation_by_length"] = _md(
            h[["shift_tokens", "scheme", "eval_len_tokens", "windows", "change_vs_L_windows_nats", "change_ci95_low",
               "change_ci95_high", "minus_alibi_nats", "minus_alibi_ci95_low", "minus_alibi_ci95_high"]], "{:.3f}")
        tables["extrapolation_context"] = _md(pe.context_gains(f), "{:.3f}")
    if "heads" in frames:
        from xtlens.profiling.benefit import probe_heads as ph

        f = frames["heads"]
        t = ph.heads_table(f)
        figs["heads_effects"] = bc.heads_effects(t, title="Loss difference vs the reference, next to KV-cache bytes")
        figs["heads_equal_params"] = bc.heads_bars(t, title="Equal parameters: val loss per head count")
        figs["heads_kv"] = bc.kv_tradeoff(t, title="K/V heads: val loss vs KV-cache bytes per token")
        tables["heads_arms"] = _md(t.drop(columns=[c for c in ("axis", "unigram_entropy_nats") if c in t]), "{:.4g}")
        tables["heads_control"] = _md(ph.control_table(f), "{:.4g}")
    for p, f in frames.items():
        tables[f"{p}_scope"] = "Scope: " + analysis.describe_scope(f) + "\n"
        uni = report.unigram_nats(f)
        for name in [n for n in figs if n.startswith(p)]:
            figs[name] = bc.with_unigram_line(figs[name], uni)  # type: ignore[arg-type]
    return tables, figs


def fill(doc: str, tables: dict[str, str]) -> tuple[str, list[str]]:
    """``doc`` with each ``<!-- table:NAME -->...<!-- /table:NAME -->`` block replaced by ``tables[NAME]``; the
    names of the blocks found."""
    found = []

    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name not in tables:
            raise SystemExit(f"docs/benefits.md names table {name!r}, which the data does not give")
        found.append(name)
        return f"<!-- table:{name} -->\n{tables[name]}<!-- /table:{name} -->"

    return re.sub(r"<!-- table:([\w]+) -->\n.*?<!-- /table:\1 -->", sub, doc, flags=re.S), found


def main(argv: list[str]) -> int:
    folder = Path(argv[0] if argv else "docs/benefits/data")
    out = folder.parent
    tables, figs = build(folder)
    (out / "tables.md").write_text("# Tables of docs/benefits.md (written by scripts/benefit_figures.py)\n\n"
                                   + "\n".join(f"## {k}\n\n{v}" for k, v in tables.items()))
    doc_path = out.parent / "benefits.md"
    if doc_path.exists():
        text, found = fill(doc_path.read_text(), tables)
        doc_path.write_text(text)
        print(f"filled {len(found)} table(s) in {doc_path}", file=sys.stderr)
    try:
        import kaleido  # noqa: F401
    except ImportError:
        print("kaleido is not installed: wrote the tables only (pip install -e '.[docs]' for the PNGs)", file=sys.stderr)
        return 0
    if Path("/usr/bin/chromium").exists():
        os.environ.setdefault("BROWSER_PATH", "/usr/bin/chromium")
    import plotly.io as pio

    pio.defaults.mathjax = None  # kaleido would fetch MathJax from a CDN (no chart here uses it; offline it fails)
    for name, fig in figs.items():
        for attempt in range(3):  # under load kaleido's page sometimes runs before its scripts have loaded
            try:
                fig.write_image(out / f"{name}.png", width=900, height=max(int(fig.layout.height or 420), 420),
                                scale=1)
                break
            except Exception as exc:  # kaleido's JavascriptError and time-outs: try again, then give up
                if attempt == 2:
                    raise
                print(f"{name}: {type(exc).__name__}, trying again", file=sys.stderr)
        print(f"wrote {out / (name + '.png')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
