"""Export offers every table the page draws (``views.common.shown_tables``), and no text the page or the CLI
shows names a repository-only file (docs/, tests/, scripts/, benchmarks/), headless (AppTest) and in the source."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import user_key_from_element_id
from xtlens.dashboard import exporting
from xtlens.dashboard.views.common import SHOWN_KEY

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "dashboard" / "app.py"
TABS = ("Overview", "FLOPs", "Memory", "Latency", "Trade-offs", "Benefits", "Setups", "Compare", "History")
REPO_ONLY = ("docs/", "tests/", "scripts/", "benchmarks/")
TEXT_KINDS = ("markdown", "caption", "info", "warning", "error", "success", "subheader", "header", "title", "text")


def _texts(at: AppTest) -> list[str]:
    out = []
    for kind in TEXT_KINDS:
        out += [str(e.value) for e in getattr(at, kind)]
    for kind in ("button", "checkbox", "selectbox", "number_input", "text_input", "radio", "slider", "toggle",
                 "multiselect", "select_slider"):
        for w in getattr(at, kind):
            out += [str(getattr(w, "label", "")), str(getattr(w, "help", "") or "")]
    out += [str(e.proto.label) + " " + str(e.proto.help) for e in at.get("download_button")]
    out += [str(e.proto.label) for e in at.get("expander")]
    return out


def _walk(state: dict | None = None) -> dict:
    """Every tab opened once (as a user does), then Export: per tab the tables it drew (registry entries made in
    that run, and the ``st.dataframe`` elements), its texts; Export's markdown and download buttons."""
    at = AppTest.from_file(str(APP), default_timeout=180).run()
    for k, v in (state or {}).items():
        at.session_state[k] = v
    drawn, texts = {}, {}
    for tab in TABS:
        before = {k: id(v) for k, v in at.session_state[SHOWN_KEY].items()} if SHOWN_KEY in at.session_state else {}
        at.session_state["view"] = tab
        at.run()
        assert not at.exception, (tab, [e.value for e in at.exception])
        now = at.session_state[SHOWN_KEY] if SHOWN_KEY in at.session_state else {}
        new = {k: v for k, v in now.items() if before.get(k) != id(v)}
        drawn[tab] = (new, [d.value for d in at.dataframe])
        texts[tab] = _texts(at)
    at.session_state["view"] = "Export"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    texts["Export"] = _texts(at)
    downloads = {user_key_from_element_id(d.proto.id): d for d in at.get("download_button")}
    return {"drawn": drawn, "texts": texts, "downloads": downloads, "markdown": [m.value for m in at.markdown]}


@pytest.fixture(scope="module")
def walked(tmp_path_factory: pytest.TempPathFactory) -> dict:
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("home")
    mp.setenv("XTLENS_CACHE_DIR", str(home / "cache"))
    mp.setenv("XTLENS_DB", str(home / "results.sqlite"))
    try:
        return _walk()
    finally:
        mp.undo()


def _check_remembered(walked: dict) -> None:
    for tab, (new, frames) in walked["drawn"].items():
        assert len(new) == len(frames), (tab, sorted(new), [f.shape for f in frames])
        assert sorted(len(t.frame) for t in new.values()) == sorted(len(f) for f in frames), tab
        assert all(t.tab == tab for t in new.values()), (tab, {k: t.tab for k, t in new.items()})


def _check_offered(walked: dict) -> None:
    lines = walked["markdown"]
    for tab, (new, _) in walked["drawn"].items():
        for key, t in new.items():
            line = next((m for m in lines if m.startswith(f"**{tab}: {t.title}** — {len(t.frame)} rows")), None)
            assert line is not None, (tab, t.title)
            if "the same table as" not in line:
                assert f"dl.export.shown.{key}.csv" in walked["downloads"], key


def test_every_drawn_table_is_remembered(walked) -> None:
    """Each table a tab draws (every ``st.dataframe``) is in the registry Export reads: a new table drawn without
    ``common.table`` / ``common.dataframe`` fails here."""
    _check_remembered(walked)
    named = {tab: {t.title for t in new.values()} for tab, (new, _) in walked["drawn"].items()}
    assert {"per-device memory by component", "budget grid"} <= named["Setups"]
    assert any(t.startswith("roofline: predicted forward on ") for t in named["Latency"])


def test_export_offers_every_drawn_table_as_csv_with_raw_numbers(walked) -> None:
    _check_offered(walked)
    # the budget grid's CSV: the raw numbers of the table the Setups tab drew, units in the column names
    grid = walked["drawn"]["Setups"][0]["setups.grid"].frame
    back = pd.read_csv(io.BytesIO(exporting.table_bytes(grid, "csv")))
    assert list(back.columns) == list(grid.columns)
    assert "train_peak_bytes" in back.columns and back["train_peak_bytes"].tolist() == grid["train_peak_bytes"].tolist()
    roof = next(t for t in walked["drawn"]["Latency"][0].values() if t.key == "latency.roofline").frame
    assert {"flops", "bytes_moved", "predicted_ms"} <= set(roof.columns)


def test_no_page_text_names_a_repository_file(walked) -> None:
    for tab, texts in walked["texts"].items():
        bad = [t for t in texts if any(p in t for p in REPO_ONLY)]
        assert not bad, (tab, bad)


def _shown_strings(path: Path) -> list[tuple[int, str]]:
    """String constants of ``path`` that are not docstrings (what a user can be shown)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docs.add(id(first.value))
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def test_no_string_in_the_dashboard_or_cli_names_a_repository_file() -> None:
    files = [*sorted((ROOT / "dashboard").rglob("*.py")), ROOT / "profiling" / "cli.py",
             ROOT / "profiling" / "benefit" / "cli.py", ROOT / "profiling" / "benefit" / "report.py"]
    bad = [f"{f.relative_to(ROOT)}:{line}: {s[:80]!r}" for f in files for line, s in _shown_strings(f)
           if any(p in s for p in REPO_ONLY)]
    assert not bad, bad


@pytest.mark.slow
def test_with_measurements_probe_tables_and_an_atlas_every_table_is_offered_too(tmp_path) -> None:
    """The tables that need data: uploaded latency and memory rows (Overview, Latency, Memory), an atlas's runs
    in the result store and uploaded on the Benefits tab (its table, options not run, claims)."""
    import sys

    from xtlens.core.config import PRESETS, Workload
    from xtlens.profiling.benefit.probes import ProbeOptions
    from xtlens.profiling.results.records import to_frame

    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT / "tests" / "dashboard"))
    from atlas_rows import stored_atlas_runs
    from fake_measure import measure

    opt = ProbeOptions(probe="atlas", base=PRESETS["seed"], values=(16, 32), options=("swiglu", "shift_tokens"),
                       seeds=(0, 1))
    atlas = stored_atlas_runs(opt, windows=6)
    atlas = atlas.assign(unigram_entropy_nats=float(atlas["val_loss_nats"].astype(float).max()) + 0.5)
    rows = [r for n in (128, 256, 1024) for what in ("latency", "memory")
            for r in measure(what, PRESETS["seed"], Workload(seq_len=n), device="cpu", options=_Phases(),
                             config_name="seed")]
    walked = _walk({"_xtlens_uploads": [("fake.csv", to_frame(rows))],
                    "_xtlens_upload_origins": {"fake.csv": "uploaded fake.csv"},
                    "_xtlens_probe_uploads": [("atlas.parquet", atlas)], "benefits.probe": "atlas"})
    _check_remembered(walked)
    _check_offered(walked)
    assert walked["drawn"]["Benefits"][0], "the atlas drew no table"
    assert any(t.key.startswith("benefits.atlas.table.") for t in walked["drawn"]["Benefits"][0].values())
    bad = [t for texts in walked["texts"].values() for t in texts if any(p in t for p in REPO_ONLY)]
    assert not bad, bad


class _Phases:
    phases = ("forward", "train_step")
