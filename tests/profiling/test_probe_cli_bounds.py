"""Issue 22, items 7, 8 and part of 10 on the command line: a corpus is bounded before it is read (size on
disk, pipes and devices refused), a single-paragraph corpus is split, every numeric probe option is refused
beyond its range up front, ``--time-limit`` is a finite number >= 0, an unreachable ``--ray`` is exit 2 within
seconds, a deep JSON import logs no traceback; and a fuzz of every probe option and the ``results``
subcommands' arguments: exit 0 or 2, never a traceback, never a training run."""

from __future__ import annotations

import os
import random
import signal
import socket
import time
from contextlib import contextmanager
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from xtlens.core.config import XtlensError
from xtlens.profiling.benefit.corpus import (
    CHUNK_BYTES,
    MAX_CORPUS_BYTES,
    CorpusError,
    corpus_from_bytes,
    corpus_from_path,
    split_chunks,
    split_corpus,
)
from xtlens.profiling.cli import build_parser, main


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("XTLENS_DB", str(tmp_path / "results.sqlite"))
    monkeypatch.setenv("XTLENS_CACHE_DIR", str(tmp_path / "cache"))


@contextmanager
def _no_hang(seconds: int = 20):
    """A call that would block (opening a named pipe) fails the test instead of hanging it."""
    def fail(*_):
        raise AssertionError(f"blocked for {seconds} s")
    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _clean_exit_2(capsys, argv: list[str], *words: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(w in err for w in words), err
    return err


# --- corpora are bounded ----------------------------------------------------------------------------

def test_a_corpus_over_the_cap_is_refused_from_its_size_on_disk(tmp_path, capsys) -> None:
    big = tmp_path / "big200.txt"
    with open(big, "wb") as fh:  # sparse: 200 MB on paper, nothing on disk; reading it would take 200 MB
        fh.truncate(200_000_000)
    started = time.monotonic()
    with pytest.raises(CorpusError, match=r"'.*big200.txt' is 200.0 MB .*at most 64.0 MB .*bytes of memory per corpus"):
        corpus_from_path(big)
    err = _clean_exit_2(capsys, ["probe", "scaling", "--corpus", str(big)], "--corpus", "big200.txt", "200.0 MB",
                        "at most 64.0 MB")
    assert time.monotonic() - started < 10 and len(err) < 1_000


def test_a_folder_is_capped_by_the_sum_of_its_files(tmp_path) -> None:
    for name in ("a.txt", "b.txt"):
        with open(tmp_path / name, "wb") as fh:
            fh.truncate(MAX_CORPUS_BYTES // 2 + 1)
    with pytest.raises(CorpusError, match="at most 64.0 MB"):
        corpus_from_path(tmp_path)


def test_an_upload_over_the_cap_is_a_named_failure() -> None:
    with pytest.raises(CorpusError, match=r"^upload: 'huge.txt' is 64.0 MB \(64,000,001 bytes\); at most"):
        corpus_from_bytes("huge.txt", b"a" * (MAX_CORPUS_BYTES + 1))


def test_a_named_pipe_or_device_is_refused_before_reading(tmp_path, capsys) -> None:
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)  # nobody writes: opening it for reading would block forever
    with _no_hang():
        _clean_exit_2(capsys, ["probe", "scaling", "--corpus", str(fifo)], "--corpus", "pipe.txt", "a named pipe")
        _clean_exit_2(capsys, ["probe", "scaling", "--corpus", "/dev/zero"], "'/dev/zero' is a device")
        # inside a folder a pipe is skipped and listed, the text files are read
        (tmp_path / "text.txt").write_text("\n\n".join(f"Paragraph {i} of real text." for i in range(200)))
        corpus = corpus_from_path(tmp_path)
    assert [d.name for d in corpus.documents] == ["text.txt"]
    assert corpus.skipped == (f"{fifo} (a named pipe)",)


def test_a_symlink_loop_is_named_as_such(tmp_path) -> None:
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(CorpusError, match="cannot be read .*symbolic links"):
        corpus_from_path(loop)


def test_a_one_megabyte_single_paragraph_corpus_is_split(tmp_path) -> None:
    # random words: a periodic text (every 64-byte string repeated) would be one group and refused as unsplittable
    rng = random.Random(0)
    words = [f"word{rng.randrange(997)}" for i in range(200_000)]
    text = " ".join(w + ("." if i % 13 == 12 else "") for i, w in enumerate(words))[:1_000_000]
    assert "\n" not in text and len(text.encode()) == 1_000_000
    (tmp_path / "one.txt").write_text(text)
    chunks = split_chunks(text)
    assert len(chunks) > 400 and max(len(c.encode()) for c in chunks) <= CHUNK_BYTES + 2
    assert "".join(chunks) == text + "\n\n"  # the chunks are the text, cut at sentence ends
    train, val = split_corpus(corpus_from_path(tmp_path / "one.txt"))
    assert len(val) > 10 and len(train) > 300
    # a paragraph without sentences or lines is cut in fixed windows at character boundaries
    word = "é" * 100_000
    assert "".join(split_chunks(word)) == word + "\n\n"
    assert max(len(c.encode()) for c in split_chunks(word)) <= CHUNK_BYTES + 2


def test_ordinary_paragraphs_still_split_as_before() -> None:
    paras = [f"Paragraph {i}. " * (40 if i % 5 else 600) for i in range(12)]  # some 10 KB, under the 16 KB cut
    chunks = split_chunks("\n\n".join(paras))
    assert all(c.endswith("\n\n") for c in chunks) and sorted(p for c in chunks for p in c.split("\n\n") if p) \
        == sorted(paras)


# --- options refused up front, naming the option and the range ----------------------------------------

@pytest.mark.parametrize(("argv", "words"), [
    (["--values", "1e400"], ("--values", "from 1 to 1,048,576")),
    (["--seeds", "1e400"], ("--seeds", "from 0 to 4,294,967,295")),
    (["--seeds", str(2**70)], ("--seeds", "from 0 to 4,294,967,295")),
    (["--tokens", "1e300"], ("--tokens", "from 1 to 1e+12")),
    (["--train-flops", "1e400"], ("--train-flops", "from 1 to 1e+18")),
    (["--full-size", "--tokens", "1e12"], ("--tokens", "2**63 - 1", "FLOPs")),
    (["--seq-len", "1e400"], ("--seq-len", "from 8 to 1,048,576")),
    (["--lr", "nan"], ("--lr", "finite")),
    (["--time-limit", "nan"], ("--time-limit", "finite number of seconds from 0", "0 = no time limit")),
    (["--time-limit", "-5"], ("--time-limit", "finite number of seconds from 0")),
    (["--time-limit", "inf"], ("--time-limit", "finite")),
])
def test_probe_options_beyond_their_limits_exit_2(capsys, argv, words) -> None:
    started = time.monotonic()
    try:  # a value let through reaches the (mocked) tokenizer, exits 2 without the words: no training starts
        with mock.patch("xtlens.profiling.benefit.corpus.tokenize", side_effect=_Reached("validation passed")):
            _clean_exit_2(capsys, ["probe", "scaling", *argv], *words)
    except SystemExit as exc:  # argparse's own refusal: exit 2, "argument --opt: ..."
        assert exc.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and all(w in err for w in words), err
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(("argv", "words"), [
    (["heads", "--lrs", "1e-2"], ("--lrs", "only with the scaling and stability probes")),
    (["scaling", "--lrs", "1e-2", "--lr", "3e-3"], ("--lrs", "unset when --lr is given")),
    (["stability", "--lrs", "0,1e-2"], ("--lrs", "above 0 and at most 10")),
    (["scaling", "--lrs", "nan"], ("--lrs", "above 0 and at most 10")),
    (["scaling", "--xpos-scale-base", "128"], ("--xpos-scale-base", "only with the extrapolation probe")),
    (["extrapolation", "--xpos-scale-base", "128", "--xpos-scale-base-per-len", "2"],
     ("--xpos-scale-base-per-len", "unset when --xpos-scale-base is given")),
])
def test_sweep_and_xpos_options_are_refused_where_they_mean_nothing(capsys, argv, words) -> None:
    with mock.patch("xtlens.profiling.benefit.corpus.tokenize", side_effect=_Reached("validation passed")):
        _clean_exit_2(capsys, ["probe", *argv], *words)


def test_sweep_and_xpos_options_reach_the_plan() -> None:
    from xtlens.profiling.benefit.cli import options_from_args
    from xtlens.profiling.benefit.probe_extrapolation import xpos_scale_base
    from xtlens.profiling.benefit.probes import plan

    def options(*argv: str):
        return options_from_args(build_parser().parse_args(["probe", *argv]))

    for probe in ("scaling", "stability"):
        runs = plan(options(probe, "--quick", "--lrs", "2e-2,5e-3,2e-2"))
        assert sorted({r.settings.lr for r in runs}) == [5e-3, 2e-2], probe  # sorted, once each
    opt = options("extrapolation", "--quick", "--xpos-scale-base-per-len", "2")
    L = plan(opt)[0].settings.seq_len
    assert xpos_scale_base(opt, L) == 2 * L
    assert xpos_scale_base(options("extrapolation", "--quick", "--xpos-scale-base", "96"), L) == 96


@pytest.mark.parametrize("value", ["nan", "-5", "inf", "1e400"])
def test_profile_time_limit_is_finite_and_not_negative(capsys, value) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["profile", "--what", "flops", "--time-limit", value])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--time-limit" in err and "0 = no time limit" in err and "Traceback" not in err
    assert build_parser().parse_args(["profile", "--time-limit", "0"]).time_limit == 0.0
    assert build_parser().parse_args(["probe", "heads", "--time-limit", "0"]).time_limit == 0.0


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


@pytest.mark.parametrize("command", [["probe", "scaling"], ["profile", "--what", "flops", "--seq-lens", "8"]])
def test_an_unreachable_ray_cluster_is_exit_2_within_seconds(capsys, command) -> None:
    started = time.monotonic()
    for address in ("127.0.0.1:1", f"ray://127.0.0.1:{_closed_port()}", "nohost", "127.0.0.1:99999"):
        _clean_exit_2(capsys, [*command, "--ray", address], "--ray", address)
    assert time.monotonic() - started < 30


def test_a_deep_json_import_is_one_message_without_a_traceback(tmp_path, capsys) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    err = _clean_exit_2(capsys, ["results", "--db", str(tmp_path / "r.sqlite"), "import", str(deep)], "deep.json",
                        "nested too deeply")
    assert err.count("\n") <= 3


@pytest.mark.parametrize("argv", [["--id", "abc"], ["--limit", str(10**23)], ["--seq-len", str(10**23)],
                                  ["--id", "0"]])
def test_results_filters_beyond_their_range_exit_2(tmp_path, capsys, argv) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["results", "--db", str(tmp_path / "r.sqlite"), "show", *argv])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and argv[0] in err and "an integer from 1" in err and "Traceback" not in err


# --- fuzz ---------------------------------------------------------------------------------------------

class _Reached(XtlensError):
    """Raised instead of tokenising: every option passed validation (no corpus work, no training)."""


HOSTILE = st.one_of(
    st.sampled_from(["", " ", "0", "-1", "-5", "1", "8", "1e400", "-1e400", "1e300", "nan", "inf", "-inf", "NaN",
                     str(2**70), str(2**63), str(2**64 - 1), "1.5", "0x10", "1,2,", ",", "1,,2", "abc", "é", "\u0661",
                     "١٢", "1_000", "\x00", "🙂", "9" * 5000, "auto", "127.0.0.1:1", "ray://[::1]:1", "a" * 300]),
    st.integers(-(2**80), 2**80).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=30).filter(lambda t: "\x00" not in t),
)
PROBE_OPTIONS = ["--axis", "--values", "--tokens", "--train-flops", "--seeds", "--seq-len", "--batch", "--vocab",
                 "--lr", "--evals", "--eval-tokens", "--corpus", "--device", "--time-limit", "--ray", "--out",
                 "--preset", "--set", "--lrs", "--xpos-scale-base", "--xpos-scale-base-per-len"]
FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))


def _run(argv: list[str], capsys) -> None:
    try:
        with mock.patch("xtlens.profiling.benefit.corpus.tokenize", side_effect=_Reached("ok")), _no_hang(60):
            code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err, (argv, err)


@FUZZ
@given(probe=st.sampled_from(["scaling", "stability", "extrapolation", "heads"]),
       options=st.lists(st.tuples(st.sampled_from(PROBE_OPTIONS), HOSTILE), min_size=1, max_size=3))
def test_fuzz_probe_options_exit_0_or_2_without_a_traceback(probe, options, capsys, tmp_path) -> None:
    argv = ["probe", probe]
    for option, value in options:
        argv += [f"{option}={value}"]  # "=" keeps a value that starts with "-" a value
    _run(argv, capsys)


RESULTS_ARGS = ["--id", "--config", "--device", "--dtype", "--seq-len", "--measurement", "--status", "--since",
                "--until", "--limit"]


@FUZZ
@given(action=st.sampled_from(["list", "show", "export", "import"]),
       options=st.lists(st.tuples(st.sampled_from(RESULTS_ARGS), HOSTILE), max_size=3), name=HOSTILE)
def test_fuzz_results_subcommands_exit_0_or_2_without_a_traceback(action, options, name, capsys, tmp_path) -> None:
    argv = ["results", "--db", str(tmp_path / "fuzz.sqlite"), action]
    if action in ("show", "export"):
        argv += [f"{option}={value}" for option, value in options]
    if action in ("export", "import"):
        safe = name.replace("/", "_").replace("\x00", "_")[:100]
        argv += [str(tmp_path / ("x" + safe))]
    _run(argv, capsys)
