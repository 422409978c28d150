"""Benefit lab: corpus, split, tokenizer, training harness, probes, rows and the ``xtlens probe`` command.

Tiny configurations keep the default run fast; the longer checks are marked ``slow`` (still well under a
minute each on 2 cores).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random

import pytest
import torch
from xtlens.core.config import PRESETS, Workload
from xtlens.core.cost_model import flop_counts
from xtlens.profiling.benefit import analysis
from xtlens.profiling.benefit.corpus import (
    Corpus,
    CorpusError,
    corpus_from_path,
    default_corpus,
    is_val_chunk,
    split_corpus,
    split_corpus_groups,
    tokenize,
    unigram_entropy_nats,
)
from xtlens.profiling.benefit.harness import Budget, BudgetError, RunSpec, TrainSettings, train_run
from xtlens.profiling.benefit.probes import ProbeOptions, family, plan, run_probe
from xtlens.profiling.benefit.records import (
    ProbeRecord,
    probe_bytes,
    probe_frame,
    probe_from_bytes,
    probe_rows,
    read_probe_table,
)
from xtlens.profiling.cli import main

SEED = PRESETS["seed"]
VOCAB = 512
TINY = family(SEED, dim=32, depth=1, heads=2, attn_dim_head=16, num_tokens=VOCAB, max_seq_len=32)
TINY_SETTINGS = TrainSettings(seq_len=32, batch=8, evals=2, eval_tokens=1024)


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    mp = pytest.MonkeyPatch()
    mp.setenv("XTLENS_CACHE_DIR", str(tmp_path_factory.mktemp("xtlens-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def data():
    return tokenize(default_corpus(), VOCAB)


def tiny_run(data, *, seed: int = 0, tokens: int = 6 * 8 * 32, settings: TrainSettings = TINY_SETTINGS,
             cfg=TINY) -> list[ProbeRecord]:
    run = RunSpec(probe="scaling", cfg=cfg, budget=Budget(kind="tokens", value=tokens), seed=seed, settings=settings)
    return train_run(run, data)


# --- corpus, split, tokenizer ------------------------------------------------------------------------

def test_default_corpus_is_cpython_prose_and_the_split_is_by_content_hash() -> None:
    corpus = default_corpus()
    assert corpus.num_bytes > 400_000 and len(corpus.documents) > 50
    train, val = split_corpus(corpus)
    split = split_corpus_groups(corpus)
    assert (split.train, split.val) == (train, val)
    # the rule, computed independently: sha256 of each chunk's UTF-8 text, first 8 hex digits; a group's key is the
    # smallest over its chunks, mod 1000 < 100 sends the whole group to validation (alone: the old per-chunk rule)
    keys: dict[int, int] = {}
    for chunk, g in zip(split.chunks, split.group, strict=True):
        keys[g] = min(keys.get(g, 2**40), int(hashlib.sha256(chunk.encode()).hexdigest()[:8], 16))
    alone = {g for g in split.group if split.group.count(g) == 1}
    for chunk, g, v in zip(split.chunks, split.group, split.is_val, strict=True):
        assert (keys[g] % 1000 < 100) == v == (chunk in val)
        if g in alone:
            assert v == is_val_chunk(chunk)
    assert 0.05 < len(val) / (len(train) + len(val)) < 0.15
    # the split does not depend on the order of the documents
    docs = list(corpus.documents)
    random.Random(0).shuffle(docs)
    train2, val2 = split_corpus(Corpus(name="shuffled", documents=tuple(docs)))
    assert sorted(val2) == sorted(val) and sorted(train2) == sorted(train)


def test_token_bytes_make_bits_per_byte_exact(data) -> None:
    from tokenizers import Tokenizer

    _, val = split_corpus(default_corpus())
    assert int(data.token_bytes[data.val_ids].sum()) == data.val_bytes == sum(len(c.encode()) for c in val)
    tok = Tokenizer.from_file(data.tokenizer_path)
    assert tok.decode(data.val_ids.tolist()) == "".join(val)
    assert data.vocab_size == VOCAB and int(data.train_ids.max()) < VOCAB


def test_tokenizer_is_cached_by_corpus_hash(data, tmp_path, monkeypatch) -> None:
    from pathlib import Path

    path = Path(data.tokenizer_path)
    monkeypatch.setenv("XTLENS_CACHE_DIR", str(path.parent.parent))  # the data fixture's cache folder
    mtime = path.stat().st_mtime_ns
    again = tokenize(default_corpus(), VOCAB)
    assert again.tokenizer_path == data.tokenizer_path and path.stat().st_mtime_ns == mtime
    assert torch.equal(again.val_ids, data.val_ids)
    (tmp_path / "a.txt").write_text("\n\n".join(f"Paragraph {i}: the quick brown fox {i * 7}." for i in range(400)))
    other = tokenize(corpus_from_path(tmp_path), 300)
    assert other.corpus_sha256 != data.corpus_sha256 and other.tokenizer_path != data.tokenizer_path


def test_bad_corpora_name_the_option(tmp_path) -> None:
    with pytest.raises(CorpusError, match="--corpus: .*does not exist"):
        corpus_from_path(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="--corpus: .*holds no UTF-8 text"):
        corpus_from_path(tmp_path / "empty")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "x.bin").write_bytes(bytes(range(256)) * 10)
    with pytest.raises(CorpusError, match="1 file\\(s\\) skipped"):
        corpus_from_path(tmp_path / "bin")
    (tmp_path / "small.txt").write_text("too short")
    with pytest.raises(CorpusError, match="at least 2,000"):
        corpus_from_path(tmp_path / "small.txt")


# --- harness ----------------------------------------------------------------------------------------

def test_same_seed_same_losses_and_flops_equal_cost_model_times_steps(data) -> None:
    a, b = tiny_run(data), tiny_run(data)
    ev_a = [r for r in a if r.row_kind == "eval"]
    ev_b = [r for r in b if r.row_kind == "eval"]
    assert [r.val_loss_nats for r in ev_a] == [r.val_loss_nats for r in ev_b]
    assert [r.train_loss_nats for r in ev_a] == [r.train_loss_nats for r in ev_b]
    other = [r for r in tiny_run(data, seed=1) if r.row_kind == "eval"]
    assert other[-1].val_loss_nats != ev_a[-1].val_loss_nats
    per_step = flop_counts(TINY, Workload(batch=8, seq_len=32)).train_step_flops
    assert [r.step for r in ev_a] == [0, 3, 6] and ev_a[-1].steps_total == 6
    for r in ev_a:
        assert r.train_flops == per_step * r.step
        assert r.tokens_seen == 8 * 32 * r.step
        assert r.status == "ok" and r.corpus_sha256 == data.corpus_sha256


def test_bits_per_byte_is_nats_per_token_times_tokens_over_bytes(data) -> None:
    from tokenizers import Tokenizer

    rows = tiny_run(data, settings=dataclasses.replace(TINY_SETTINGS, eval_tokens=4096))
    evals = [r for r in rows if r.row_kind == "eval"]
    last = evals[-1]
    assert [r.eval_tokens for r in evals[:-1]] == [4096, 4096]  # during training: the fixed sample
    whole = (data.val_tokens - 1) // 32 * 32  # the final evaluation: the whole split in windows of 32
    assert last.eval_tokens == whole
    assert last.val_bits_per_byte == pytest.approx(last.val_loss_nats * last.eval_tokens / last.eval_bytes / math.log(2),
                                                   rel=1e-12)
    # the bytes of the evaluated targets, counted a second way: decode them and encode as UTF-8
    targets = data.val_ids[1:whole + 1].tolist()
    decoded = Tokenizer.from_file(data.tokenizer_path).decode(targets).encode("utf-8")
    assert abs(len(decoded) - last.eval_bytes) <= 6  # a character cut at either end decodes as U+FFFD
    unigram = data.unigram_val_nats if data.unigram_val_nats is not None else unigram_entropy_nats(data.val_ids)
    assert last.unigram_entropy_nats == pytest.approx(unigram)


def test_per_layer_gradient_norms_add_up_to_the_global_norm(data) -> None:
    rows = tiny_run(data)
    for step in (0, 3, 6):
        glob = next(r.grad_norm for r in rows if r.row_kind == "eval" and r.step == step)
        layers = [r for r in rows if r.row_kind == "layer" and r.step == step]
        assert {r.layer for r in layers} == {"embedding", "layers.0 (attn)", "layers.1 (ff)", "to_logits"}
        assert math.sqrt(sum(r.grad_norm ** 2 for r in layers)) == pytest.approx(glob, rel=1e-4)
        if step > 0:
            assert all(r.update_to_weight_ratio is not None and 0 < r.update_to_weight_ratio < 1 for r in layers)


def test_divergence_is_a_row_not_a_crash(data) -> None:
    s = dataclasses.replace(TINY_SETTINGS, lr=200.0, grad_clip=1e9, evals=10)
    rows = tiny_run(data, tokens=40 * 8 * 32, settings=s)
    last = [r for r in rows if r.row_kind == "eval"][-1]
    assert last.status == "diverged" and "diverged at step" in last.error
    assert last.step < 40


def test_an_out_of_memory_training_run_is_a_row_naming_the_part(data, monkeypatch) -> None:
    # issue 22: every out-of-memory row names the part that does not fit (the probe's said "out of memory: ...")
    from xtlens.profiling.benefit import probes

    def oom(*_args, **_kwargs):
        raise MemoryError("fake: cannot allocate memory")

    monkeypatch.setattr(probes, "run_one", oom)
    run = RunSpec(probe="scaling", cfg=TINY, budget=Budget(kind="tokens", value=6 * 8 * 32), seed=0,
                  settings=TINY_SETTINGS)
    rows = probes.run_or_failure(run, data, device="cpu", device_name="cpu", versions={})
    assert [r.status for r in rows] == ["error"]
    assert "Out of memory on cpu during a training run (batch 8 x 32 tokens in float32)" in rows[0].error
    assert "activations at this shape are the part that does not fit" in rows[0].error
    assert "GiB of weights, gradients and AdamW state" in rows[0].error


def test_a_budget_too_small_names_its_option() -> None:
    with pytest.raises(BudgetError, match="^--tokens: 100 tokens buys 0"):
        plan(ProbeOptions(probe="heads", base=SEED, tokens=100))
    with pytest.raises(BudgetError, match="^--train-flops"):
        plan(ProbeOptions(probe="scaling", base=SEED, train_flops=1000))


def test_power_law_fit_recovers_a_known_exponent() -> None:
    xs = [1e4, 3e4, 1e5, 3e5]
    fit = analysis.fit_power_law(xs, [5.0 * x ** -0.3 for x in xs])
    assert fit.b == pytest.approx(0.3) and fit.a == pytest.approx(5.0) and fit.b_stderr == pytest.approx(0, abs=1e-9)
    noisy = analysis.fit_power_law(xs + xs, [5.0 * x ** -0.3 * (1.02 if i < 4 else 0.98) for i, x in enumerate(xs + xs)])
    assert noisy.b == pytest.approx(0.3, abs=1e-9) and noisy.b_stderr > 0


# --- rows, files, command line ----------------------------------------------------------------------

def test_probe_rows_round_trip_exactly_through_csv_json_parquet(data) -> None:
    rows = tiny_run(data)
    big = dataclasses.replace(rows[0], train_flops=2**62 + 1, error="a \"quoted\", comma", variant="")
    # text a spreadsheet would run is written neutralised ('=...) and read back as it was
    formula = dataclasses.replace(rows[0], config_name="=SUM(A1)", error="-inf loss at step 3", variant="'+x")
    frame = probe_frame([big, formula, *rows])
    assert "\"'=SUM(A1)\"" in probe_bytes(frame, "csv").decode()
    for fmt in ("csv", "json", "parquet"):
        back = probe_from_bytes(probe_bytes(frame, fmt), fmt)
        assert probe_rows(back) == probe_rows(frame), fmt
    assert "val loss (nats/token)" in probe_bytes(frame, "md").decode()


@pytest.mark.parametrize(("argv", "option"), [
    (["probe", "scaling", "--tokens", "100"], "--tokens"),
    (["probe", "scaling", "--axis", "width"], "--axis"),
    (["probe", "heads", "--corpus", "/nonexistent/corpus"], "--corpus"),
    (["probe", "heads", "--values", "3"], "--values"),
    (["probe", "heads", "--values", "a,b"], "--values"),
    (["probe", "stability", "--seeds", "x"], "--seeds"),
    (["probe", "heads", "--out", "rows.txt"], "--out"),
    (["probe", "extrapolation", "--train-flops", "-5"], "--train-flops"),
    (["probe", "scaling", "--device", "tpu"], "tpu"),
])
def test_cli_bad_input_exits_2_naming_the_option(argv, option, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("xtlens probe: error:") and option in err and "Traceback" not in err


def test_cli_without_out_prints_a_summary_table(capsys) -> None:
    assert main(["probe", "stability", "--values", "2", "--tokens", "512", "--seq-len", "32", "--batch", "8",
                 "--evals", "1", "--lr", "3e-3", "--seeds", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| probe | config name | budget kind | seed | step |")
    assert {line.split(" | ")[1] for line in out[2:] if line.startswith("| stability")} == {
        "deepnorm, depth 2, lr 0.003", "pre_norm, depth 2, lr 0.003", "post_norm, depth 2, lr 0.003"}


def test_cli_empty_corpus_folder_exits_2(tmp_path, capsys) -> None:
    assert main(["probe", "heads", "--corpus", str(tmp_path)]) == 2
    assert "--corpus" in capsys.readouterr().err


def test_cli_tiny_heads_probe_writes_tidy_rows(tmp_path, capsys) -> None:
    out = tmp_path / "heads.csv"
    assert main(["probe", "heads", "--values", "1,2", "--tokens", "2048", "--seq-len", "32", "--batch", "8",
                 "--evals", "2", "--eval-tokens", "512", "--seeds", "0", "--out", str(out)]) == 0
    frame = read_probe_table(out)
    fin = analysis.final_evals(frame)
    # 2 head counts + the rotary rule at each + 1, 2 and 4 K/V heads + the shuffled-context control
    assert (fin["status"] == "ok").all() and len(fin) == 8
    table = analysis.heads_table(frame)
    kv = table[table["variant"] == "kv_heads"].set_index("axis_value")
    # KV cache per token: 2 (K and V) x layers x K/V heads x head width x 4 bytes, from the cost model
    cfg = fin.iloc[0]
    depth, dh = 2, 16
    assert kv.loc[1, "kv_cache_bytes_per_token"] == 2 * depth * 1 * dh * 4
    assert kv.loc[4, "kv_cache_bytes_per_token"] == 2 * depth * 4 * dh * 4
    eq = table[table["variant"] == "equal_params"]
    assert eq["num_params"].nunique() == 1  # equal parameters across head counts
    assert cfg["corpus_name"].startswith("pydoc_data.topics")


# --- the worker child -----------------------------------------------------------------------------

def _tiny_options(**kw) -> ProbeOptions:
    kw.setdefault("seeds", (0,))
    return ProbeOptions(probe="heads", base=SEED, values=(2,), tokens=1024, seq_len=32, batch=8, evals=1,
                        extra={"dim": 32, "depth": 1, "heads": 2, "eval_tokens": 512}, **kw)


def test_probe_job_time_limit_and_cancel_become_rows() -> None:
    from xtlens.profiling.benefit.jobs import ProbeJob, ProbeSpec

    job = ProbeJob(ProbeSpec(options=_tiny_options(), time_limit_s=0.5, use_cache=False))
    rows = job.wait(60)
    assert job.outcome == "timeout" and rows and all(r.status == "timeout" for r in rows)
    assert len({(r.config_name, r.seed) for r in rows}) == len(plan(_tiny_options()))
    job = ProbeJob(ProbeSpec(options=_tiny_options(seeds=(5,)), time_limit_s=120, use_cache=False))
    job.cancel()
    assert job.outcome == "cancelled" and all(r.status == "cancelled" for r in job.result())


def test_final_evals_keeps_a_run_that_never_trained_beside_finished_ones(data) -> None:
    """A probe stopped at its time limit (seen on an H200: 10 of 15 runs done): the finished runs give their last
    evaluation, the unfinished one its timeout row, and the summary does not fail on the row without a step."""
    from xtlens.profiling.benefit.probes import failure_rows_for

    done = tiny_run(data)
    runs = plan(_tiny_options())
    stopped = failure_rows_for(runs[0], "timeout", "stopped at the time limit of 64 s")
    fin = analysis.final_evals(probe_frame(done + stopped))
    assert sorted(fin["status"]) == ["ok", "timeout"]
    last = max((r for r in done if r.row_kind == "eval"), key=lambda r: r.step)
    assert fin[fin["status"] == "ok"]["val_loss_nats"].iloc[0] == pytest.approx(last.val_loss_nats)
    assert list(analysis.final_evals(probe_frame(stopped))["status"]) == ["timeout"]


@pytest.mark.slow
def test_probe_job_runs_in_a_child_with_progress() -> None:
    from xtlens.profiling.benefit.jobs import ProbeSpec
    from xtlens.profiling.run.worker import JobManager

    mgr = JobManager()  # the one manager of measurement and probe jobs
    job = mgr.submit_spec(ProbeSpec(options=_tiny_options(seeds=(3,)), time_limit_s=300))
    assert mgr.submit_spec(ProbeSpec(options=_tiny_options(seeds=(3,)))) is job  # the same probe again: the same job
    rows = job.wait(300)
    assert job.outcome == "finished", job.stderr_tail()
    fin = analysis.final_evals(probe_frame(rows))
    n = len(plan(_tiny_options(seeds=(3,))))  # 2 heads, multi-query, full K/V (the same training), the control
    assert n == 4 and (fin["status"] == "ok").all() and len(fin) == n
    log = job.progress_log()
    assert any(m.startswith(f"run 2/{n}") and "step 4/4, train" in m and "nats/token" in m for m in log), log


# --- it learns; the probes ------------------------------------------------------------------------

@pytest.mark.slow
def test_learns_well_below_the_unigram_entropy(data) -> None:
    cfg = family(SEED, dim=64, depth=2, heads=4, attn_dim_head=16, num_tokens=VOCAB, max_seq_len=64)
    s = TrainSettings(seq_len=64, batch=16, evals=2, eval_tokens=8192)
    rows = tiny_run(data, cfg=cfg, settings=s, tokens=150 * 16 * 64)
    last = [r for r in rows if r.row_kind == "eval"][-1]
    entropy = unigram_entropy_nats(data.val_ids)
    assert last.status == "ok"
    assert last.val_loss_nats < 0.85 * entropy, (last.val_loss_nats, entropy)
    assert last.val_bits_per_byte < 0.85 * entropy * data.val_tokens / data.val_bytes / math.log(2)


@pytest.mark.slow
def test_each_probe_runs_tiny_and_its_summary_is_complete() -> None:
    small = {"dim": 32, "depth": 1, "heads": 2, "eval_tokens": 512}
    sc = probe_frame(run_probe(ProbeOptions(probe="scaling", base=SEED, values=(16, 32), tokens=2048, seq_len=32,
                                            batch=8, evals=2, seeds=(0, 1),
                                            extra=small | {"overfit_tokens": 512, "overfit_epochs": 4})))
    fin = analysis.final_evals(sc)
    assert set(fin["budget_kind"]) == {"tokens", "flops", "epochs"}
    assert len(analysis.overfit_gaps(fin)) == 2
    flops = fin[fin["budget_kind"] == "flops"]
    assert flops["train_flops"].max() <= flops["budget_flops"].max()
    st = probe_frame(run_probe(ProbeOptions(probe="stability", base=SEED, values=(2, 4), tokens=1024, seq_len=32,
                                            batch=8, evals=2, extra=small, seeds=(0,), lr=3e-3)))
    div = analysis.divergences(st)
    assert set(div["norm"]) == {"deepnorm", "pre_norm", "post_norm"} and set(div["depth"]) == {2, 4}
    deep4 = st[(st["row_kind"] == "layer") & (st["axis_value"] == 4) & (st["step"] == 0)]
    assert deep4["layer"].str.startswith("layers.").sum() == 3 * 8  # 3 norms x 2 x depth layers at init
    ex = probe_frame(run_probe(ProbeOptions(probe="extrapolation", base=SEED, values=(1, 2), tokens=1024,
                                            seq_len=16, batch=8, evals=1, seeds=(0,),
                                            extra=small | {"schemes": ("alibi", "rotary", "absolute", "nope")})))
    table = analysis.extrapolation_table(ex)
    assert set(zip(table["variant"], table["shift_tokens"], strict=True)) == {
        (s, k) for s in ("alibi", "rotary", "absolute", "nope") for k in (0, 1)}
    assert list(table.columns[2:]) == ["val loss @ 16 tokens (nats)", "val loss @ 32 tokens (nats)",
                                       "change vs 16-token windows @ 32 (nats)"]
    assert table[table["variant"] == "absolute"]["val loss @ 32 tokens (nats)"].isna().all()  # only up to L
    pos = ex[(ex["row_kind"] == "position") & (ex["eval_seq_len_tokens"] == 32)]
    assert set(pos["position_end_tokens"].dropna().astype(int)) >= {16, 32}
    # positions inside the training length see the same context in a 32-token window as in 16-token windows:
    # the loss change there is 0 (up to float rounding), for every position scheme
    from xtlens.profiling.benefit.harness import position_edges

    inside_buckets = sum(1 for b in position_edges(32, 16)[1:] if b <= 16)
    inside = pos[pos["position_end_tokens"] <= 16]
    assert len(inside) == 3 * 2 * inside_buckets and inside["loss_change_vs_train_len_nats"].astype(float).abs().max() < 1e-4
    assert ex[(ex["variant"] == "absolute")]["eval_seq_len_tokens"].dropna().max() == 16


def test_reported_train_flops_equal_a_flop_counter_on_the_real_training_step(data) -> None:
    """The FLOPs a run reports (cost model x steps) against torch's FlopCounterMode on the harness's own model
    and batch: forward, cross-entropy and backward of one real training step (einsum attention: the fused
    kernel's backward would recompute the scores, which the cost model's train_step_flops leaves out)."""
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode
    from xtlens.core.builder import build_model
    from xtlens.profiling.benefit.harness import make_batch
    from xtlens.profiling.measure.flops import SDPA_FLOP_FORMULAS

    cfg = TINY.replace(attn_flash=False)
    rows = [r for r in tiny_run(data, cfg=cfg) if r.row_kind == "eval"]
    model = build_model(cfg, seed=0).model.train()
    x, y = make_batch(data.train_ids, torch.Generator().manual_seed(0), 8, 32)
    counter = FlopCounterMode(display=False, custom_mapping=SDPA_FLOP_FORMULAS)
    with counter:
        logits = model(x)
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).backward()
    counted = int(counter.get_total_flops())
    assert counted > 0 and [r.train_flops for r in rows] == [counted * r.step for r in rows]


def test_bits_per_byte_recomputed_independently_from_the_initial_model(data) -> None:
    """Step 0 evaluates the model as built (no update yet): rebuild it with the same seed, compute the loss of
    the same validation targets with a hand-written loop, count their bytes by decoding them, and get the
    row's nats per token and bits per byte back. The byte table also adds up to the split's UTF-8 size."""
    import torch.nn.functional as F
    from tokenizers import Tokenizer
    from xtlens.core.builder import build_model

    assert int(data.token_bytes[data.val_ids].sum()) == data.val_bytes
    assert int(data.token_bytes[data.train_ids].sum()) == data.train_bytes
    row = next(r for r in tiny_run(data) if r.row_kind == "eval" and r.step == 0)
    n = row.eval_tokens
    assert n == 1024
    model = build_model(TINY, seed=0).model.eval()
    nats = 0.0
    # the stated fixed sample: 1024 // 32 windows spread evenly over the W windows of the split
    total = (data.val_tokens - 1) // 32
    starts = [j * total // 32 * 32 for j in range(32)]
    tok = Tokenizer.from_file(data.tokenizer_path)
    decoded_bytes = 0
    with torch.no_grad():
        for start in starts:
            x = data.val_ids[start:start + 32][None]
            y = data.val_ids[start + 1:start + 33]
            nats += float(F.cross_entropy(model(x)[0].double(), y, reduction="sum"))
            decoded_bytes += len(tok.decode(y.tolist()).encode("utf-8"))
    assert row.val_loss_nats == pytest.approx(nats / n, rel=1e-5)
    assert abs(decoded_bytes - row.eval_bytes) <= 6 * 32  # a character cut at either end decodes as U+FFFD
    assert row.val_bits_per_byte == pytest.approx(nats / math.log(2) / decoded_bytes, rel=2e-3)
