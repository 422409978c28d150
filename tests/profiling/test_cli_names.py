"""``xtlens profile`` stores rows under the configuration's readable name (``core.presets.config_label``)."""

from __future__ import annotations

from xtlens.core.config import PRESETS
from xtlens.profiling.cli import main
from xtlens.profiling.results.records import config_key
from xtlens.profiling.results.store import ResultStore, db_path


def test_a_modified_preset_is_stored_under_its_real_name(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("XTLENS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("XTLENS_DB", raising=False)
    argv = ["profile", "--preset", "seed", "--set", "dim=80", "--what", "flops", "--seq-lens", "16", "--device", "cpu",
            "--out", str(tmp_path / "rows.csv")]
    assert main(argv) == 0
    stored = ResultStore(db_path()).query()
    assert db_path().is_relative_to(tmp_path)
    assert list(stored["config_name"]) == ["seed · dim=80"]  # not "seed": the run is not the seed
    assert list(stored["config_key"]) == [config_key(PRESETS["seed"].replace(dim=80))]
    # the unmodified preset keeps its name, and --name still wins
    assert main(["profile", "--preset", "seed-mha", "--what", "flops", "--seq-lens", "16", "--device", "cpu",
                 "--out", str(tmp_path / "mha.csv")]) == 0
    assert main([*argv[:-1], str(tmp_path / "named.csv"), "--name", "my run"]) == 0
    names = ResultStore(db_path()).query().sort_values("id")["config_name"].tolist()
    assert names == ["seed · dim=80", "seed-mha", "my run"]
    capsys.readouterr()
