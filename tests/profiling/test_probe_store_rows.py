"""``probe_store.stored_rows``: every run of a probe the store would serve (latest write, all rows ok / diverged),
filtered by variant and row kind, without training; ``stored_version`` changes with every stored run."""

from __future__ import annotations

from xtlens.profiling.benefit import probe_store
from xtlens.profiling.benefit.records import ProbeRecord


def _run(key: str, *, probe: str = "atlas", variant: str = "reference", status: str = "ok", loss: float = 1.0,
         kinds: tuple[str, ...] = ("eval", "window", "layer")) -> list[ProbeRecord]:
    return [ProbeRecord(probe=probe, run_key=key, config_name=key, config_key=key, config_json="{}", variant=variant,
                        seed=0, row_kind=kind, val_bits_per_byte=loss, status=status) for kind in kinds]


def test_stored_rows_serves_the_latest_good_write_of_each_run() -> None:
    assert probe_store.stored_rows("atlas") == [] and probe_store.stored_version() == (0, 0)
    probe_store.store_run("a", _run("a", loss=2.0))
    probe_store.store_run("a", _run("a", loss=1.5))  # measured again: the latest write is served
    probe_store.store_run("b", _run("b", variant="alibi_pos_bias"))
    probe_store.store_run("c", _run("c", status="error"))  # never served
    probe_store.store_run("d", _run("d", status="ok"))
    probe_store.store_run("d", _run("d", status="timeout"))  # the latest write failed: not served
    probe_store.store_run("s", _run("s", probe="scaling", variant="dim=32"))
    assert probe_store.stored_version() == (7 * 3, 7 * 3)  # 7 writes of 3 rows
    rows = probe_store.stored_rows("atlas")
    assert sorted((r.run_key, r.row_kind, r.val_bits_per_byte) for r in rows) == [
        ("a", "eval", 1.5), ("a", "layer", 1.5), ("a", "window", 1.5),
        ("b", "eval", 1.0), ("b", "layer", 1.0), ("b", "window", 1.0)]
    assert {r.source for r in rows} == {"cache"} and all(r.stored_at for r in rows)
    ref = probe_store.stored_rows("atlas", variant="reference", row_kinds=("eval", "window"))
    assert sorted((r.run_key, r.row_kind) for r in ref) == [("a", "eval"), ("a", "window")]
    assert [r.run_key for r in probe_store.stored_rows("scaling", row_kinds=("eval",))] == ["s"]
    # the row-kind filter runs in SQLite, yet a run whose latest write failed ("d": timeout) is still left out
    assert sorted((r.run_key, r.row_kind) for r in probe_store.stored_rows("atlas", row_kinds=("eval",))) == [
        ("a", "eval"), ("b", "eval")]
    probe_store.store_run("e", _run("e", kinds=("eval",)) + _run("e", kinds=("layer",), status="error"))
    assert "e" not in {r.run_key for r in probe_store.stored_rows("atlas", row_kinds=("eval",))}
