"""Issue 8: every parser of untrusted text raises only ``ConfigError`` (naming a field), bounded in time and in
the size of its message; the audit's reproducers each get a test."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from xtlens.core.config import (
    MAX_CONFIG_TEXT_CHARS,
    MAX_MESSAGE_CHARS,
    SEED_SNIPPET,
    ConfigError,
    ModelConfig,
    Workload,
    parse_snippet,
    untrusted_text,
)

FIELDS = [f for f in ModelConfig.__dataclass_fields__]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _only_config_errors(call, *args) -> None:
    try:
        call(*args)
    except ConfigError as exc:
        assert exc.field, "a ConfigError names a field"
        assert len(str(exc)) < 2 * MAX_MESSAGE_CHARS + 1_000, "messages stay short"


values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20),
                   st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@SETTINGS
@given(st.dictionaries(st.sampled_from(FIELDS + ["bogus", ""]), values, max_size=8))
def test_model_config_from_dict_raises_only_config_errors(data) -> None:
    base = {"num_tokens": 256, "max_seq_len": 64, "dim": 64, "depth": 1, "heads": 2}
    _only_config_errors(ModelConfig.from_dict, {**base, **data})


@SETTINGS
@given(st.dictionaries(st.sampled_from(["batch", "seq_len", "dtype"]), values, max_size=3))
def test_workload_raises_only_config_errors(data) -> None:
    _only_config_errors(lambda d: Workload(**d), data)


@SETTINGS
@given(st.text(max_size=300))
def test_from_query_raises_only_config_errors(text) -> None:
    _only_config_errors(ModelConfig.from_query, text)


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(FIELDS + ["x", ""]), st.text(max_size=12)), max_size=6))
def test_from_query_pairs_raise_only_config_errors(pairs) -> None:
    _only_config_errors(ModelConfig.from_query, "&".join(f"{k}={v}" for k, v in pairs))


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                         max_size=3), max_leaves=10)


@SETTINGS
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300),
                 st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6).map(json.dumps)))
def test_from_json_raises_only_config_errors(text) -> None:
    _only_config_errors(ModelConfig.from_json, text)


snippet_values = st.one_of(st.integers().map(str), st.floats().map(repr), st.sampled_from(
    ["True", "None", "'x'", "a.b", "f(1)", "[1]", "not 1", "-2", "1e400", "\ud800", "**k", "lambda: 1"]))


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(FIELDS + ["zz"]), snippet_values), max_size=6), st.text(max_size=40))
def test_parse_snippet_raises_only_config_errors(kws, junk) -> None:
    inner = ", ".join(f"{k}={v}" for k, v in kws)
    _only_config_errors(parse_snippet, f"TransformerWrapper(num_tokens=256, max_seq_len=64, "
                                       f"attn_layers=Decoder({inner})){junk}")
    _only_config_errors(parse_snippet, junk)


# --- the audit's reproducers -------------------------------------------------------------------------

def _error(call, *args) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        call(*args)
    return info.value


def test_deep_attribute_chain_is_a_config_error() -> None:
    exc = _error(parse_snippet, "TransformerWrapper(num_tokens=" + "a." * 20_000 + "a)")
    assert exc.field == "snippet" and "nested" in str(exc)


def test_not_not_not_is_a_config_error() -> None:
    snippet = ("TransformerWrapper(num_tokens=256, max_seq_len=64, attn_layers=Decoder(dim=" + "not " * 10_000
               + "1, depth=1, heads=1))")
    assert _error(parse_snippet, snippet).field in ("snippet", "dim")


def test_lone_surrogate_is_a_config_error() -> None:
    assert "UTF-8" in str(_error(parse_snippet, "TransformerWrapper(num_tokens='\ud800')"))


def test_non_utf8_bytes_are_a_config_error() -> None:
    assert _error(untrusted_text, "--config x.json", b"{\"dim\": \xff}").field == "--config x.json"


def test_deep_json_is_a_config_error() -> None:
    assert _error(ModelConfig.from_json, "[" * 10_000).field == "json"


def test_a_10_mb_paste_is_refused_at_once_with_a_short_message() -> None:
    start = time.perf_counter()
    exc = _error(parse_snippet, "x" * 10_000_000)
    assert time.perf_counter() - start < 1.0
    assert f"at most {MAX_CONFIG_TEXT_CHARS:,} characters" in str(exc) and len(str(exc)) < 200


def test_100k_unknown_keywords_give_a_short_message() -> None:
    kws = ", ".join(f"k{i}=1" for i in range(6_000))  # under the size cap
    exc = _error(parse_snippet, f"TransformerWrapper(num_tokens=256, max_seq_len=64, attn_layers=Decoder({kws}))")
    assert "k0" in str(exc) and "and 5,990 more" in str(exc) and len(str(exc)) < 3_000


@pytest.mark.parametrize(("text", "call", "field"), [
    ("TransformerWrapper(num_tokens=256, num_tokens=512, max_seq_len=64, attn_layers=Decoder(dim=64, depth=1, heads=1))",
     parse_snippet, "num_tokens"),
    ("TransformerWrapper(num_tokens=256, max_seq_len=64, attn_layers=Decoder(dim=64, depth=1, depth=2, heads=1))",
     parse_snippet, "depth"),
    ('{"num_tokens": 256, "max_seq_len": 64, "dim": 64, "dim": 128, "depth": 1, "heads": 1}',
     ModelConfig.from_json, "dim"),
    ("num_tokens=256&max_seq_len=64&dim=64&depth=1&heads=1&heads=2", ModelConfig.from_query, "heads"),
])
def test_duplicate_keywords_are_reported(text, call, field) -> None:
    exc = _error(call, text)
    assert exc.field == field and "more than once" in str(exc)


def test_from_query_with_an_empty_name_names_the_query() -> None:
    exc = _error(ModelConfig.from_query, "=1")
    assert exc.field == "query" and "field name" in str(exc)


def test_nonstandard_json_constants_are_refused() -> None:
    assert "standard JSON" in str(_error(ModelConfig.from_json, '{"ff_mult": NaN}'))


def test_the_seed_snippet_still_parses() -> None:
    assert parse_snippet(SEED_SNIPPET).alibi_num_heads == 4
    assert ModelConfig.from_json(parse_snippet(SEED_SNIPPET).to_json()) == parse_snippet(SEED_SNIPPET)


# --- issue 22: a byte-order mark, lone surrogates, special files -----------------------------------------------

def test_a_snippet_file_with_a_utf8_bom_is_read_not_called_a_syntax_error(tmp_path) -> None:
    from xtlens.profiling.cli import main

    assert untrusted_text("snippet", "\ufeff" + SEED_SNIPPET) == SEED_SNIPPET
    assert untrusted_text("snippet", ("\ufeff" + SEED_SNIPPET).encode()) == SEED_SNIPPET
    assert parse_snippet(untrusted_text("snippet", b"\xef\xbb\xbf" + SEED_SNIPPET.encode())).dim == 512
    path = tmp_path / "bom.py"
    path.write_bytes(b"\xef\xbb\xbf" + SEED_SNIPPET.encode())
    assert main(["estimate", "--snippet", str(path), "--format", "json"]) == 0
    cfg = tmp_path / "bom.json"
    cfg.write_bytes(b"\xef\xbb\xbf" + parse_snippet(SEED_SNIPPET).to_json().encode())
    assert main(["estimate", "--config", str(cfg), "--format", "json"]) == 0


def test_a_lone_surrogate_is_named_as_one() -> None:
    with pytest.raises(ConfigError, match="lone surrogate"):
        untrusted_text("name", "a\ud800")


def test_special_files_are_refused_before_reading(tmp_path) -> None:
    import os

    from xtlens.core.untrusted import read_untrusted_file

    pipe = tmp_path / "p.py"
    os.mkfifo(pipe)
    started = time.monotonic()
    with pytest.raises(ConfigError, match="named pipe"):
        read_untrusted_file("--snippet", pipe, 100)
    assert time.monotonic() - started < 5
    with pytest.raises(ConfigError, match="character device"):
        read_untrusted_file("--snippet", "/dev/zero", 100)
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    with pytest.raises(ConfigError, match="symlink loop"):
        read_untrusted_file("--snippet", tmp_path / "loop", 100)
    with pytest.raises(ConfigError, match="no such file"):
        read_untrusted_file("--snippet", tmp_path / "nope", 100)
    (tmp_path / "big").write_bytes(b"x" * 1000)
    assert len(read_untrusted_file("f", tmp_path / "big", 100)) == 101  # the caller sees it is too large


def test_a_snippet_option_naming_a_pipe_exits_2_at_once(tmp_path, capsys) -> None:
    import os

    from xtlens.profiling.cli import main

    os.mkfifo(tmp_path / "s.py")
    assert main(["estimate", "--snippet", str(tmp_path / "s.py")]) == 2
    assert "named pipe" in capsys.readouterr().err
