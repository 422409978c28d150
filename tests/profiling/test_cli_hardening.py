"""Issue 8 on the command line: every hostile file is exit status 2 with a message naming the file, profile has a
default time limit, the cache key includes the configuration's name, and a count beyond int64 is measured,
written and read back exactly."""

from __future__ import annotations

import pytest
from xtlens.profiling.cli import DEFAULT_TIME_LIMIT_S, build_parser, main
from xtlens.profiling.results.export import read_table


@pytest.mark.parametrize(("option", "content", "words"), [
    ("--snippet", b"TransformerWrapper(num_tokens=\xff\xfe)", "UTF-8"),
    ("--config", b"[" * 100_000, "at most"),
    ("--config", b"[" * 40, "valid JSON"),
    ("--snippet", ("TransformerWrapper(num_tokens=" + "a." * 20_000 + "a)").encode(), "nested"),
    ("--snippet", b"x" * 1_000_000, "at most 65,536"),
    ("--config", b'{"dim": 64, "dim": 128}', "more than once"),
])
def test_hostile_files_exit_2_naming_the_file(tmp_path, capsys, option, content, words) -> None:
    path = tmp_path / "input.txt"
    path.write_bytes(content)
    assert main(["estimate", option, str(path)]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err) < 3_000


def test_profile_has_a_default_time_limit() -> None:
    args = build_parser().parse_args(["profile", "--what", "flops"])
    assert args.time_limit == DEFAULT_TIME_LIMIT_S == 600.0


def test_the_cache_key_includes_the_configuration_name(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XTLENS_DB", str(tmp_path / "r.sqlite"))
    common = ["profile", "--preset", "plain-prenorm", "--set", "num_tokens=16", "--set", "dim=16", "--set", "depth=1",
              "--set", "heads=1", "--what", "flops", "--seq-lens", "8", "--device", "cpu", "--time-limit", "0"]
    assert main([*common, "--name", "A", "--out", str(tmp_path / "a.csv")]) == 0
    assert main([*common, "--name", "B", "--out", str(tmp_path / "b.csv")]) == 0
    assert set(read_table(tmp_path / "b.csv")["config_name"]) == {"B"}


@pytest.mark.slow
def test_a_flop_count_beyond_int64_is_measured_written_and_read_back(tmp_path, monkeypatch) -> None:
    """The audit's reproducer: 4096 x 1,048,576 tokens through a tiny model counts ~9.2e18 > 2**63 - 1 FLOPs."""
    monkeypatch.setenv("XTLENS_DB", str(tmp_path / "r.sqlite"))
    out = tmp_path / "x.csv"
    argv = ["profile", "--preset", "plain-prenorm", "--set", "num_tokens=2", "--set", "dim=8", "--set", "depth=1",
            "--set", "max_seq_len=1048576", "--what", "flops", "--seq-lens", "1048576", "--batch", "4096",
            "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    frame = read_table(out)
    (flops,) = frame["predicted_flops"].tolist()
    assert frame["status"].tolist() == ["ok"] and flops > 2**63 - 1 and isinstance(flops, int)
    assert frame["torch_counter_flops"].tolist() == [flops]  # measured = predicted, exactly
    assert main(argv) == 0  # the rerun reads the stored row back (it was storable)
    assert read_table(out)["predicted_flops"].tolist() == [flops]
