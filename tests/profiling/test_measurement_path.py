"""The measurement path of one sweep, counted: a 2-point CPU latency sweep of a tiny model run as the worker's
child runs it (spec.json -> JobSpec -> plan -> run_sweep -> the result store) validates its configuration once,
builds its plan once, opens the result store once and looks for the pre-SQLite JSON cache once."""

from __future__ import annotations

import json
from collections import Counter

from xtlens.core.config import ModelConfig, Workload
from xtlens.profiling.results import store
from xtlens.profiling.results.records import records_from_json
from xtlens.profiling.run import plan, sweep, worker
from xtlens.profiling.run.plan import SweepOptions

TINY = ModelConfig(num_tokens=32, max_seq_len=64, dim=16, depth=1, heads=2, attn_dim_head=8)


def test_a_two_point_sweep_validates_plans_opens_and_imports_once(tmp_path, monkeypatch):
    monkeypatch.setenv("XTLENS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("XTLENS_DB", str(tmp_path / "results.sqlite"))
    (tmp_path / "cache" / "results" / "latency").mkdir(parents=True)  # an old JSON cache folder, empty
    counts: Counter[str] = Counter()

    def counting(name, fn):
        def wrapped(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(worker, "plan_sweep", counting("plan", plan.plan_sweep))
    monkeypatch.setattr(sweep, "plan_sweep", counting("plan", plan.plan_sweep))
    monkeypatch.setattr(store, "open_store", counting("open", store.open_store))
    monkeypatch.setattr(store.ResultStore, "import_json_cache",
                        counting("json import", store.ResultStore.import_json_cache))
    monkeypatch.setattr(ModelConfig, "__post_init__", counting("validate", ModelConfig.__post_init__))
    import xtlens.profiling.run.limits as limits

    monkeypatch.setattr(limits, "apply_address_space_limit", lambda limit: limit)  # not on the test process
    monkeypatch.setattr(worker, "_watch_parent", lambda parent, job_dir: None)  # nor the orphan watchdog

    spec = worker.JobSpec.make("latency", TINY, [Workload(seq_len=8), Workload(seq_len=16)],
                               SweepOptions(device="cpu", phases=("forward",), warmup=0, repeats=1))
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "spec.json").write_text(json.dumps(spec.to_dict()))
    (tmp_path / "job" / "events.jsonl").touch()
    counts.clear()
    assert worker._child(tmp_path / "job") == 0

    events = [json.loads(line) for line in (tmp_path / "job" / "events.jsonl").read_text().splitlines()]
    rows = [records_from_json(json.dumps([r]))[0] for e in events if e["type"] == "rows" for r in e["rows"]]
    assert [r.seq_len_tokens for r in rows] == [8, 16] and all(r.status == "ok" for r in rows)
    assert events[-1]["type"] == "done"
    # the child's one validation is JobSpec.from_dict's (the page validated the configuration it sent)
    assert counts == {"validate": 1, "plan": 1, "open": 1, "json import": 1}
    assert sorted(store.open_store().query()["seq_len_tokens"]) == [8, 16]
