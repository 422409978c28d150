"""docs/gpu-results.md states figures of a GPU run; its rows ship with the package (xtlens.profiling.results.reference,
h200-rows.parquet). The headline numbers of the page are recomputed here from those rows, so the page and its
data cannot drift apart."""

from __future__ import annotations

from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def rows():
    from xtlens.profiling.results.reference import reference_rows

    return list(reference_rows("H200 SXM"))


def _parts(rows, config: str, n: int, phase: str = "forward", dtype: str = "bfloat16") -> dict[str, float]:
    return {r.component: r.latency_median_ms for r in rows if r.measurement == "breakdown" and r.status == "ok"
            and (r.config_name, r.seq_len_tokens, r.phase, r.dtype) == (config, n, phase, dtype)}


def test_the_alibi_share_on_the_page_is_the_rows(rows):
    page = (DOCS / "gpu-results.md").read_text()
    p = _parts(rows, "seed", 8192)
    alibi, kernel, total = p["alibi_bias"] + p["mask_prep"], p["attention"], p["total"]
    assert f"{100 * alibi / total:.0f} %** of the forward ({alibi:.2f} of {total:.2f} ms)" in page
    assert f"is **{100 * kernel / total:.0f} %** ({kernel:.2f} ms)" in page
    # the parts and the GPU-idle remainder add up to the measured total
    assert sum(v for k, v in p.items() if k != "total") == pytest.approx(total, rel=1e-9)
    assert all(r.device_name == "NVIDIA H200" for r in rows)


def test_the_launch_bound_and_whatif_figures_on_the_page_are_the_rows(rows):
    page = (DOCS / "gpu-results.md").read_text()
    fwd = next(r for r in rows if r.measurement == "latency" and r.status == "ok" and r.config_name == "seed"
               and r.seq_len_tokens == 1024 and r.phase == "forward" and r.dtype == "bfloat16" and not r.method.count("forced"))
    assert f"runs at {fwd.achieved_flops_per_s / 1e12:.1f} TFLOP/s ({100 * fwd.peak_fraction:.1f} %" in page
    graphs = next(r for r in rows if r.measurement == "whatif" and r.component == "cudagraphs"
                  and r.config_name == "seed" and r.seq_len_tokens == 1024)
    assert f"**{graphs.latency_median_ms:.2f} ms ({graphs.speedup_vs_asbuilt:.1f}x)**" in page
    flex = [r for r in rows if r.measurement == "whatif" and r.component == "flex" and r.phase == "forward"
            and r.status == "ok"]
    assert flex and max(r.logits_rel_err for r in flex if r.dtype == "bfloat16") < 3e-2
    assert max(r.logits_rel_err for r in flex if r.dtype == "float32") < 1e-4


def test_the_latency_view_quotes_the_roofline_check_of_the_rows(rows):
    """The Latency view's roofline caption quotes the H200 check (measured / roofline-predicted forward): the
    quoted ratios are the shipped rows' own."""
    source = (Path(__file__).resolve().parents[2] / "dashboard" / "views" / "latency.py").read_text()
    total = {(r.config_name, r.seq_len_tokens): r for r in rows if r.measurement == "breakdown"
             and r.component == "total" and r.phase == "forward" and r.dtype == "bfloat16"}
    ratio = {k: r.latency_median_ms / r.predicted_latency_ms for k, r in total.items()}
    assert f"was {ratio[('seed', 8192)]:.1f}x this bound at 8192 tokens" in source
    assert f"and {ratio[('seed', 1024)]:.0f}x at 1024 tokens" in source
    assert f"without ALiBi, {ratio[('seed-no-alibi', 8192)]:.0f}x at 8192 tokens" in source
