"""The training harness's evaluation (issue 17): the whole validation split in windows at the end, the fixed sample
during training, window rows, the context gain and its shuffled-context control, clipping off, and the columns
every row carries (peak lr, tokens per parameter, the split's leak fraction, version and unigram line)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from xtlens.core.builder import build_model
from xtlens.core.config import PRESETS
from xtlens.profiling.benefit.corpus import TokenizedCorpus, default_corpus, tokenize
from xtlens.profiling.benefit.harness import (
    CONTEXT_HEAD_TOKENS,
    Budget,
    BudgetError,
    RunSpec,
    TrainSettings,
    evaluate,
    position_edges,
    train_run,
    window_indices,
)
from xtlens.profiling.benefit.probes import family

SEED = PRESETS["seed"]
L = 32
SETTINGS = TrainSettings(seq_len=L, batch=8, evals=2, eval_tokens=1024, layer_stats=False)
STRIDE_VOCAB = 64


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    mp = pytest.MonkeyPatch()
    mp.setenv("XTLENS_CACHE_DIR", str(tmp_path_factory.mktemp("xtlens-cache")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def data():
    return tokenize(default_corpus(), 512)


def tiny(vocab: int, max_seq_len: int = L):
    return family(SEED, dim=32, depth=1, heads=2, attn_dim_head=16, num_tokens=vocab, max_seq_len=max_seq_len)


def run(data, *, settings: TrainSettings = SETTINGS, steps: int = 4, seed: int = 0, cfg=None, build=None):
    spec = RunSpec(probe="scaling", cfg=cfg or tiny(data.vocab_size, max((settings.seq_len, *settings.eval_seq_lens))),
                   budget=Budget(kind="tokens", value=steps * settings.batch * settings.seq_len), seed=seed,
                   settings=settings)
    return train_run(spec, data, build=build)


def stride_corpus(*, leak: float | None = 0.0, unigram: float | None = None) -> TokenizedCorpus:
    """Documents of 256 tokens, each an arithmetic progression ``x0 + s t (mod 64)`` with its own stride s in 1..8:
    the next token follows from the last two (context), not from the last one alone. One byte per token."""
    def ids(docs: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        parts = []
        for _ in range(docs):
            s, x0 = int(torch.randint(1, 9, (1,), generator=g)), int(torch.randint(0, STRIDE_VOCAB, (1,), generator=g))
            parts.append((x0 + s * torch.arange(256)) % STRIDE_VOCAB)
        return torch.cat(parts)

    tr, va = ids(400, 0), ids(40, 1)
    return TokenizedCorpus(corpus_name="strides", corpus_sha256="0" * 64, vocab_size=STRIDE_VOCAB, train_ids=tr,
                           val_ids=va, token_bytes=torch.ones(STRIDE_VOCAB, dtype=torch.long), train_bytes=tr.numel(),
                           val_bytes=va.numel(), tokenizer_path="", val_permille=100, val_leak_fraction=leak,
                           val_leak_fraction_before=0.25, unigram_val_nats=unigram, split_version="strides-v1")


def test_window_indices_whole_split_or_an_even_fixed_sample() -> None:
    assert window_indices(1001, 10).tolist() == list(range(100))
    assert window_indices(1001, 10, max_tokens=10_000).tolist() == list(range(100))
    assert window_indices(1001, 10, max_tokens=40).tolist() == [0, 25, 50, 75]
    assert window_indices(1000, 10, max_tokens=5).tolist() == [0]  # at least one window
    with pytest.raises(BudgetError, match="^--seq-len"):
        window_indices(10, 10)
    assert position_edges(64, 8) == [0, 1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64]


def test_final_window_rows_cover_the_whole_split_and_add_up_to_the_eval_row(data) -> None:
    rows = run(data)
    evals = [r for r in rows if r.row_kind == "eval"]
    last = evals[-1]
    windows = [r for r in rows if r.row_kind == "window"]
    count = (data.val_tokens - 1) // L
    assert len(windows) == count and [w.window_index for w in windows] == list(range(count))
    assert all(w.eval_seq_len_tokens == L and w.eval_tokens == L and w.step == last.step for w in windows)
    # the eval row's loss, two ways: the token-weighted mean of the window rows, and the sum of their nats
    tokens = sum(w.eval_tokens for w in windows)
    assert tokens == last.eval_tokens == count * L
    assert sum(w.val_loss_nats * w.eval_tokens for w in windows) / tokens == pytest.approx(last.val_loss_nats, rel=1e-12)
    assert math.fsum(w.val_loss_nats for w in windows) / count == pytest.approx(last.val_loss_nats, rel=1e-12)
    # bits per byte adds up: the windows' bytes are the split's target bytes, their nats give the eval row's bpb
    target_bytes = int(data.token_bytes[data.val_ids[1:count * L + 1]].sum())
    assert sum(w.eval_bytes for w in windows) == last.eval_bytes == target_bytes
    nats = math.fsum(w.val_bits_per_byte * w.eval_bytes * math.log(2) for w in windows)
    assert nats / math.log(2) / target_bytes == pytest.approx(last.val_bits_per_byte, rel=1e-9)
    assert nats / tokens == pytest.approx(last.val_loss_nats, rel=1e-9)
    # the context gain of the eval row is the mean of the windows'
    assert math.fsum(w.context_gain_nats for w in windows) / count == pytest.approx(last.context_gain_nats, rel=1e-9)
    # during training: the fixed sample, eval_tokens // L windows
    assert [r.eval_tokens for r in evals[:-1]] == [1024, 1024]


def test_evaluate_matches_a_hand_loop_on_the_sample_and_the_context_gain_definition(data) -> None:
    model = build_model(tiny(data.vocab_size), seed=3).model.eval()
    ev = evaluate(model, data.val_ids, data.token_bytes, seq_len=L, max_tokens=8 * L)
    total = (data.val_tokens - 1) // L
    nll = []
    with torch.no_grad():
        for j in range(8):
            start = j * total // 8 * L
            x, y = data.val_ids[start:start + L][None], data.val_ids[start + 1:start + L + 1]
            nll.append(torch.nn.functional.cross_entropy(model(x)[0].double(), y, reduction="none"))
    nll = torch.stack(nll)
    assert ev["windows"] == 8 and ev["loss"] == pytest.approx(float(nll.mean()), rel=1e-5)
    # the context gain, by hand: each target of a window's second half scored from its last c + 1 inputs (c = 0 ..
    # CONTEXT_HEAD_TOKENS - 1, one forward per target and c), averaged, minus its loss in the whole window
    gains = []
    with torch.no_grad():
        for j in range(8):
            start = j * total // 8 * L
            short = []
            for p in range(L // 2, L):
                losses = [torch.nn.functional.cross_entropy(
                    model(data.val_ids[start + p - c:start + p + 1][None])[0, -1].double(),
                    data.val_ids[start + p + 1]) for c in range(CONTEXT_HEAD_TOKENS)]
                short.append(sum(losses) / CONTEXT_HEAD_TOKENS)
            gains.append(float((torch.stack(short) - nll[j, L // 2:]).mean()))
    assert ev["context_gain"] == pytest.approx(sum(gains) / 8, rel=1e-4, abs=1e-6)
    assert [float(g) for g in ev["context_gain_windows"]] == pytest.approx(gains, rel=1e-4, abs=1e-6)
    assert ev["beyond"] is None


def test_rows_carry_the_split_fields_peak_lr_and_tokens_per_param() -> None:
    tc = stride_corpus(leak=0.004, unigram=3.9)
    built = {}

    def keep(cfg, seed, device):
        built["model"] = build_model(cfg, seed=seed).model
        return built["model"]

    rows = run(tc, build=keep, settings=dataclasses.replace(SETTINGS, lr=2e-3))
    n = sum(p.numel() for p in built["model"].parameters())
    for r in rows:
        assert r.val_leak_fraction == 0.004 and r.split_version == "strides-v1" and r.unigram_entropy_nats == 3.9
        assert r.peak_lr == 2e-3 and r.num_params == n
        assert r.tokens_per_param == pytest.approx(4 * 8 * L / n)
    # without a measured unigram line the old one: the empirical entropy of the validation split
    old = run(stride_corpus(unigram=None), steps=2)
    counts = torch.bincount(stride_corpus().val_ids, minlength=STRIDE_VOCAB).double()
    p = counts[counts > 0] / counts.sum()
    assert old[0].unigram_entropy_nats == pytest.approx(float(-(p * p.log()).sum()), rel=1e-9)


def test_clipping_off_reports_gradient_norms_above_the_old_limit(data) -> None:
    # a large learning rate without warm-up: the gradient norm passes 1 (the old limit) at step 2
    s = dataclasses.replace(SETTINGS, evals=8, lr=1.0, warmup_frac=0.0, grad_clip=None, diverge_nats=1e9)
    off = [r for r in run(data, settings=s, steps=8) if r.row_kind == "eval"]
    on = [r for r in run(data, settings=dataclasses.replace(s, grad_clip=1.0), steps=8) if r.row_kind == "eval"]
    assert [r.step for r in off] == list(range(9)) and all(r.status == "ok" for r in off)
    assert all(r.grad_clip is None and r.clip_fraction is None for r in off)
    # the same weights and batches up to step 2: the same pre-clip norms, above 1, which clipping on then cut
    assert [r.grad_norm for r in off[:3]] == pytest.approx([r.grad_norm for r in on[:3]], rel=1e-5)
    assert off[2].grad_norm > 1.0 and on[2].clip_fraction == 1.0 and on[2].grad_clip == 1.0
    # after it the runs part: clipping really was off in one of them
    assert sum(r.grad_norm > 1.0 for r in off) >= 4
    assert any(abs(a.grad_norm - b.grad_norm) > 1e-3 * b.grad_norm for a, b in zip(off[3:], on[3:], strict=True))
    with pytest.raises(BudgetError, match="^grad_clip"):
        run(data, settings=dataclasses.replace(s, grad_clip=0.0))


def test_shuffled_context_control_drops_the_context_gain() -> None:
    """On a corpus where the next token follows from the last two (a stride per document), a model trained 200
    steps has a large context gain; shuffling the context within each window (the control) removes it: the
    paired per-window drop is many standard errors above 0."""
    tc = stride_corpus()
    built = {}

    def keep(cfg, seed, device):
        built["model"] = build_model(cfg, seed=seed).model
        return built["model"]

    s = dataclasses.replace(SETTINGS, batch=16, evals=1, lr=1e-2)
    rows = run(tc, settings=s, steps=200, build=keep)
    model = built["model"]
    ordered = evaluate(model, tc.val_ids, tc.token_bytes, seq_len=L)
    shuffled = evaluate(model, tc.val_ids, tc.token_bytes, seq_len=L, shuffle_context=True)
    last = [r for r in rows if r.row_kind == "eval"][-1]
    assert ordered["loss"] == pytest.approx(last.val_loss_nats, rel=1e-9)
    assert shuffled["tokens"] == ordered["tokens"] and shuffled["bytes"] == ordered["bytes"]  # the same targets
    drop = ordered["context_gain_windows"] - shuffled["context_gain_windows"]
    se = float(drop.std()) / math.sqrt(drop.numel())
    assert ordered["context_gain"] > 0.3 and float(drop.mean()) > 5 * se, (ordered["context_gain"], float(drop.mean()), se)
    assert shuffled["loss"] > ordered["loss"] + 1.0
    # the permutation is a fixed function of the seed: the same seed, the same result
    again = evaluate(model, tc.val_ids, tc.token_bytes, seq_len=L, shuffle_context=True)
    assert again["loss"] == shuffled["loss"]


def test_extrapolation_lengths_give_window_rows_and_the_loss_beyond_the_training_length(data) -> None:
    s = dataclasses.replace(SETTINGS, eval_seq_lens=(L, 2 * L), position_buckets=4)
    rows = run(data, settings=s)
    short = [r for r in rows if r.row_kind == "window" and r.eval_seq_len_tokens == L]
    long = [r for r in rows if r.row_kind == "window" and r.eval_seq_len_tokens == 2 * L]
    assert len(short) == (data.val_tokens - 1) // L and len(long) == (data.val_tokens - 1) // (2 * L)
    assert all(w.beyond_train_len_loss_nats is None for w in short)
    length_row = next(r for r in rows if r.row_kind == "eval_length" and r.eval_seq_len_tokens == 2 * L)
    # the mean beyond L over windows, and the whole-window loss = (first half + beyond) / 2 per window
    assert math.fsum(w.beyond_train_len_loss_nats for w in long) / len(long) == pytest.approx(
        length_row.beyond_train_len_loss_nats, rel=1e-9)
    # the first L positions of a long window see the same context as the short window i*2: the loss change
    # is the beyond-L part only; short windows 2i and 2i+1 cover the same targets as long window i
    for w in long[:5]:
        pair = (short[2 * w.window_index].val_loss_nats + short[2 * w.window_index + 1].val_loss_nats) / 2
        assert w.val_loss_nats - pair == pytest.approx(w.loss_change_vs_train_len_nats, abs=1e-5)
        first_half = 2 * w.val_loss_nats - w.beyond_train_len_loss_nats
        assert first_half == pytest.approx(short[2 * w.window_index].val_loss_nats, abs=1e-4)
    # positions inside the training length: no change
    pos = [r for r in rows if r.row_kind == "position" and r.eval_seq_len_tokens == 2 * L and r.position_end_tokens <= L]
    assert pos and max(abs(r.loss_change_vs_train_len_nats) for r in pos) < 1e-5
    # the training length listed among the lengths: its eval_length row is the final evaluation, no duplicate windows
    at_l = next(r for r in rows if r.row_kind == "eval_length" and r.eval_seq_len_tokens == L)
    final = [r for r in rows if r.row_kind == "eval"][-1]
    assert at_l.val_loss_nats == final.val_loss_nats and at_l.loss_change_vs_train_len_nats == 0.0
