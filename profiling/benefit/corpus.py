"""Real text for the training probes: the default corpus, the user's files, the split and the tokenizer.

Default corpus: ``pydoc_data.topics``, the English reference documentation that every CPython installation
ships (the text ``help('if')`` prints: 79 topics, about 465 KB of prose and code examples, licensed under the
Python Software Foundation License Version 2 like CPython itself). Nothing is downloaded.

Your corpus: a UTF-8 text file, or a folder of them (every file under it, recursively, in path order; files
that are not UTF-8 text are skipped and listed).

Size cap: at most ``MAX_CORPUS_BYTES`` (64 MB) of files, checked on disk before anything is read (a file, or the
sum over a folder's files); an upload likewise. Why: loading, splitting, training the tokenizer and encoding
hold at most about 15 bytes of memory per corpus byte above the process's baseline (measured on generated
English-like text: 14.4 at 20 MB, 11.2 at 50 MB; see ``docs/benefits.md``, "Corpus size"), so 64 MB is about
1 GB on top of torch, within a small machine, and its tokenisation takes one to three minutes on 2 cores.
The split and its leak measure (below) add about 4 bytes per corpus byte to that peak and about a third to
the time: ``benchmarks/split_scale.py`` at 20 MB, the whole of ``tokenize``, measured +516 MiB and 61 s against
+433 MiB and 42 s for the previous split in the same harness (2026-12-03, load average 6 to 9 on 2 CPUs).
Encoding runs in batches of ``ENCODE_BATCH_CHUNKS`` chunks (encoding the whole split at once held 67 to 91 bytes per
byte: 1.5 GB for 20 MB, about 7 GB for 200 MB). Named pipes, devices and sockets
are refused before they are opened (reading one would block or never end); inside a folder they are skipped
and listed.

Split (``SPLIT_VERSION`` = ``"dedup-groups-v1"``; deterministic, independent of document order and of the machine).
It follows the deduplication of Lee et al. (2022), "Deduplicating Training Data Makes Language Models Better"
(ACL): exact duplicates removed, and text sharing a long exact substring kept on one side of the split.

1. Documents are taken in a canonical order (by the SHA-256 of their text, then name) and cut into paragraphs at
   blank lines (surrounding newlines dropped; each paragraph is followed by one blank line in the split's text).
   A paragraph longer than ``LONG_PARAGRAPH_BYTES`` (16 KB; none in the default corpus, whose longest is 6 KB) is
   first cut into pieces of at most ``CHUNK_BYTES``: at line ends, then a line still too long at sentence ends
   (``.``, ``!`` or ``?`` followed by white space), then fixed windows of ``CHUNK_BYTES`` bytes (at a character
   boundary); the pieces concatenate back to the paragraph exactly, so a one-paragraph file of 1 MB splits too.
2. Normalise and deduplicate: a paragraph (or piece) whose normalised form (Unicode NFKC, case folded, white space
   runs as one space) was seen before is dropped; the first in the canonical order is kept.
3. Each document's remaining paragraphs are grouped greedily into chunks of up to ``CHUNK_BYTES`` (2 KB).
4. Group: two chunks that share a ``LEAK_WINDOW_BYTES``-byte (64) string are in one group, and so on
   transitively (connected components; every 64-byte window of every chunk is hashed with a polynomial rolling
   hash modulo 2**64 in numpy, and equal hashes joined; memory bounded by cutting the hash space into partitions).
   This groups near-duplicates (a paragraph copied with a word changed keeps 64-byte runs in common) and
   paragraphs sharing a boilerplate line of 64 bytes or more.
5. Assign: a group goes to validation when ``key % 1000 < val_permille`` (default 100, about 10 %), where ``key``
   is the smallest ``int(sha256(chunk)[:8], 16)`` over its chunks (for a chunk alone in its group, the previous
   rule, ``is_val_chunk``); a group is never cut. A corpus whose chunks all land on one side (one group holding
   everything, or too little text) is refused with a ``CorpusError`` naming ``--corpus``.

Measured on every tokenisation (``TokenizedCorpus``): ``val_leak_fraction``, the share of validation tokens that
lie wholly inside a 64-byte string of the validation text that also occurs in the training text (the contamination
measure of Brown et al. (2020), section 4, on bytes instead of 13-grams); ``val_leak_fraction_before``, the same under
the previous rule (``split_corpus_v1``: each document's 2 KB chunks hashed one by one; its validation text
encoded with the same tokenizer); ``unigram_val_nats``, the validation tokens' cross-entropy under a unigram fitted
on the training tokens with add-one (Laplace) smoothing over the vocabulary. On the default corpus:
``val_leak_fraction`` 0.0 (before: 0.362), 2,608 paragraphs of which 538 duplicates (92,135 bytes) are dropped,
241 chunks in 203 groups, 336,582 training and 37,350 validation bytes (9.99 %). Only strings that cross a chunk
boundary (of either split's text) can still leak: none in the default corpus.

Tokenizer: a byte-level BPE (Hugging Face ``tokenizers``) trained on the training split only, to the probe's
vocabulary size (``num_tokens``), cached under ``.xtlens-cache/tokenizers/`` by (corpus sha256, vocabulary
size, split). Byte-level BPE maps every byte to one symbol, so the number of UTF-8 bytes a token stands for is
the length of its symbol string: ``token_bytes`` gives it per id, which makes bits per byte exact.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from xtlens.core.config import XtlensError

__all__ = [
    "CorpusError",
    "Document",
    "Corpus",
    "TokenizedCorpus",
    "DEFAULT_CORPUS_NAME",
    "CHUNK_BYTES",
    "load_corpus",
    "default_corpus",
    "corpus_from_path",
    "corpus_from_bytes",
    "split_chunks",
    "is_val_chunk",
    "split_corpus",
    "split_corpus_v1",
    "split_corpus_groups",
    "Split",
    "SPLIT_VERSION",
    "LEAK_WINDOW_BYTES",
    "window_hashes",
    "shared_string_groups",
    "leaked_tokens",
    "val_leak_fraction",
    "tokenize",
    "unigram_entropy_nats",
    "unigram_cross_entropy_nats",
    "describe",
    "cache_dir",
]

DEFAULT_CORPUS_NAME = "pydoc_data.topics (CPython reference documentation, PSF License)"
CHUNK_BYTES = 2048
#: the split rule (part of every run key and cache key: a new rule never serves runs of an old split)
SPLIT_VERSION = "dedup-groups-v1"
#: the length of the shared strings that group chunks and define a leak
LEAK_WINDOW_BYTES = 64
DEFAULT_VAL_PERMILLE = 100
MIN_CORPUS_BYTES = 2_000
#: the largest corpus (bytes on disk, or an upload): about 15 bytes of memory per corpus byte (module docstring)
MAX_CORPUS_BYTES = 64_000_000
MEMORY_BYTES_PER_CORPUS_BYTE = 15
#: a paragraph longer than this is cut at line ends, sentence ends, then fixed windows (module docstring)
LONG_PARAGRAPH_BYTES = 16_384
#: chunks encoded per call of the tokenizer (memory: the encodings of one batch, not of the whole split)
ENCODE_BATCH_CHUNKS = 512


class CorpusError(XtlensError, ValueError):
    """The corpus cannot be used. ``option`` names the command-line option or page control it came from."""

    def __init__(self, message: str, option: str = "--corpus"):
        self.option = option
        super().__init__(f"{option}: {message}")


@dataclass(frozen=True, kw_only=True)
class Document:
    name: str
    text: str


def corpus_digest(documents: Sequence[Document]) -> str:
    """The SHA-256 a user can check with ``sha256sum``: for one document, the SHA-256 of its bytes (what
    ``sha256sum FILE`` prints); for several, the SHA-256 of the lines ``"<sha256 of the bytes>  <name>\\n"`` sorted by
    name (byte order), i.e. what ``sha256sum`` prints for the files in that order, piped into ``sha256sum`` again.
    A document's bytes are its text as UTF-8 (the file's bytes: only UTF-8 files are read)."""
    if len(documents) == 1:
        return hashlib.sha256(documents[0].text.encode("utf-8")).hexdigest()
    docs = sorted(documents, key=lambda d: d.name.encode("utf-8"))
    lines = "".join(f"{hashlib.sha256(d.text.encode('utf-8')).hexdigest()}  {d.name}\n" for d in docs)
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


@dataclass(frozen=True, kw_only=True)
class Corpus:
    """Documents in a fixed order. ``sha256``: ``corpus_digest`` (a one-file corpus: that file's SHA-256);
    ``content_key``: the SHA-256 over names and text that keys cached tokenizers and stored runs (unchanged since
    the first probe, so runs stored before ``sha256`` became the file's digest are still found)."""

    name: str
    documents: tuple[Document, ...]
    skipped: tuple[str, ...] = ()
    sha256: str = field(init=False)
    content_key: str = field(init=False)

    def __post_init__(self) -> None:
        h = hashlib.sha256()
        for doc in self.documents:
            h.update(doc.name.encode("utf-8") + b"\0" + doc.text.encode("utf-8") + b"\0")
        object.__setattr__(self, "content_key", h.hexdigest())
        object.__setattr__(self, "sha256", corpus_digest(self.documents))

    @property
    def num_bytes(self) -> int:
        return sum(len(d.text.encode("utf-8")) for d in self.documents)


def cache_dir(kind: str) -> Path:
    root = Path(os.environ.get("XTLENS_CACHE_DIR", Path.cwd() / ".xtlens-cache"))
    path = root / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_corpus() -> Corpus:
    """CPython's ``pydoc_data.topics``: one document per help topic, sorted by topic name."""
    from pydoc_data.topics import topics

    docs = tuple(Document(name=f"pydoc_data.topics[{k!r}]", text=topics[k]) for k in sorted(topics))
    return Corpus(name=DEFAULT_CORPUS_NAME, documents=docs)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB ({n:,} bytes)"


def _too_big(name: str, size: int, option: str) -> CorpusError:
    return CorpusError(f"{name!r} is {_mb(size)}; at most {_mb(MAX_CORPUS_BYTES)} is allowed (a probe holds about "
                       f"{MEMORY_BYTES_PER_CORPUS_BYTE} bytes of memory per corpus byte while it splits and tokenises "
                       "it; give a part of it)", option)


def _kind(mode: int) -> str:
    return ("a named pipe" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")


def corpus_from_path(path: str | Path) -> Corpus:
    """A text file or every UTF-8 text file under a folder (recursively, sorted by relative path).

    The size on disk is checked against ``MAX_CORPUS_BYTES`` and special files are refused before anything is
    read; every ``CorpusError`` names the path."""
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except FileNotFoundError:
        raise CorpusError(f"{str(path)!r} does not exist (give a UTF-8 text file or a folder of them)") from None
    except OSError as exc:  # a symlink loop, a name too long, no permission
        raise CorpusError(f"{str(path)!r} cannot be read ({exc.strerror or exc}; give a UTF-8 text file or a folder "
                          "of them)") from None
    skipped: list[str] = []
    if stat.S_ISDIR(st.st_mode):
        files, total = [], 0
        for f in sorted(p.rglob("*")):
            try:
                fst = f.stat()
            except OSError:
                skipped.append(str(f))
                continue
            if stat.S_ISDIR(fst.st_mode):
                continue
            if not stat.S_ISREG(fst.st_mode):
                skipped.append(f"{f} ({_kind(fst.st_mode)})")
                continue
            files.append(f)
            total += fst.st_size
            if total > MAX_CORPUS_BYTES:
                raise _too_big(str(p), total, "--corpus") from None
    elif stat.S_ISREG(st.st_mode):
        if st.st_size > MAX_CORPUS_BYTES:
            raise _too_big(str(p), st.st_size, "--corpus")
        files = [p]
    else:
        raise CorpusError(f"{str(path)!r} is {_kind(st.st_mode)}; give a UTF-8 text file or a folder of them (a pipe "
                          "or a device is not read: it could block or never end)")
    docs, budget = [], MAX_CORPUS_BYTES
    for f in files:
        try:
            with open(f, "rb") as fh:
                data = fh.read(budget + 1)  # bounded: a file that grew after the size check stops here
        except OSError:
            skipped.append(str(f))
            continue
        if len(data) > budget:
            raise _too_big(str(p), MAX_CORPUS_BYTES - budget + len(data), "--corpus")
        budget -= len(data)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            skipped.append(str(f))
            continue
        del data
        if "\0" in text:
            skipped.append(str(f))
            continue
        if text.strip():
            docs.append(Document(name=str(f.relative_to(p)) if p.is_dir() else f.name, text=text))
    corpus = Corpus(name=str(p), documents=tuple(docs), skipped=tuple(skipped))
    _check_size(corpus)
    return corpus


def corpus_from_bytes(name: str, data: bytes) -> Corpus:
    """An uploaded file (the dashboard's upload), UTF-8 text of at most ``MAX_CORPUS_BYTES``."""
    if len(data) > MAX_CORPUS_BYTES:
        raise _too_big(name, len(data), "upload")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{name!r} is not UTF-8 text ({exc.reason} at byte {exc.start})", "upload") from None
    corpus = Corpus(name=name, documents=(Document(name=name, text=text),) if text.strip() else ())
    _check_size(corpus, option="upload")
    return corpus


def _check_size(corpus: Corpus, option: str = "--corpus") -> None:
    if not corpus.documents:
        raise CorpusError(f"{corpus.name!r} holds no UTF-8 text" + (
            f" ({len(corpus.skipped)} file(s) skipped as not UTF-8 text)" if corpus.skipped else ""), option)
    if corpus.num_bytes < MIN_CORPUS_BYTES:
        raise CorpusError(f"{corpus.name!r} has {corpus.num_bytes:,} bytes of text; at least {MIN_CORPUS_BYTES:,} "
                          "are needed for a training and a validation split", option)


def load_corpus(path: str | Path | None) -> Corpus:
    """``None`` (or ``"default"``): the default corpus; otherwise ``corpus_from_path``."""
    if path is None or str(path) in ("", "default"):
        return default_corpus()
    return corpus_from_path(path)


# --- split ------------------------------------------------------------------------------------------

_SENTENCE = re.compile(r".*?[.!?]+(?:\s+|$)|.+", re.S)


def _window(text: str, max_bytes: int) -> list[str]:
    """``text`` in consecutive pieces of at most ``max_bytes`` UTF-8 bytes, cut at character boundaries."""
    data, out, start = text.encode("utf-8"), [], 0
    while start < len(data):
        end = min(start + max_bytes, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:  # not inside a character
            end -= 1
        out.append(data[start:end].decode("utf-8"))
        start = end
    return out


def _pieces(paragraph: str, max_bytes: int) -> list[str]:
    """A long paragraph in pieces of at most ``max_bytes``: lines, then sentences, then fixed windows (each piece
    keeps its separators, so the pieces concatenate back to the paragraph)."""
    out = []
    for line in paragraph.splitlines(keepends=True):
        if len(line.encode("utf-8")) <= max_bytes:
            out.append(line)
            continue
        for sentence in _SENTENCE.findall(line):
            out.extend([sentence] if len(sentence.encode("utf-8")) <= max_bytes else _window(sentence, max_bytes))
    return out


def split_chunks(text: str, max_bytes: int = CHUNK_BYTES) -> list[str]:
    """Paragraphs (cut at blank lines) grouped greedily up to ``max_bytes`` UTF-8 bytes per chunk; a paragraph of
    more than ``LONG_PARAGRAPH_BYTES`` is cut into pieces (``_pieces``) regrouped up to ``max_bytes``."""
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    chunks, current, size = [], [], 0
    for para in paragraphs:
        n = len(para.encode("utf-8")) + 2
        if n - 2 > max(LONG_PARAGRAPH_BYTES, max_bytes):
            if current:
                chunks.append("\n\n".join(current) + "\n\n")
                current, size = [], 0
            group, gsize = [], 0
            for piece in _pieces(para, max_bytes):
                m = len(piece.encode("utf-8"))
                if group and gsize + m > max_bytes:
                    chunks.append("".join(group))
                    group, gsize = [], 0
                group.append(piece)
                gsize += m
            chunks.append("".join(group) + "\n\n")
            continue
        if current and size + n > max_bytes:
            chunks.append("\n\n".join(current) + "\n\n")
            current, size = [], 0
        current.append(para)
        size += n
    if current:
        chunks.append("\n\n".join(current) + "\n\n")
    return chunks


def is_val_chunk(chunk: str, val_permille: int = DEFAULT_VAL_PERMILLE) -> bool:
    """Validation iff ``int(sha256(chunk)[:8], 16) % 1000 < val_permille``: the previous rule for a chunk, and the
    current rule's side for a chunk alone in its group (a group's key is the smallest of its chunks' keys)."""
    return _chunk_key(chunk) % 1000 < val_permille


def _chunk_key(chunk: str) -> int:
    return int(hashlib.sha256(chunk.encode("utf-8")).hexdigest()[:8], 16)


def split_corpus_v1(corpus: Corpus, val_permille: int = DEFAULT_VAL_PERMILLE) -> tuple[list[str], list[str]]:
    """The previous rule (``hash-chunks-v1``): each document's 2 KB chunks hashed one by one. Kept to measure
    ``val_leak_fraction_before``; it leaks (a paragraph repeated in two documents lands in two different chunks)."""
    train, val = [], []
    for doc in corpus.documents:
        for chunk in split_chunks(doc.text):
            (val if is_val_chunk(chunk, val_permille) else train).append(chunk)
    return train, val


def _normalise(paragraph: str) -> str:
    """The form two paragraphs are compared in: Unicode NFKC, case folded, every run of white space one space."""
    return " ".join(unicodedata.normalize("NFKC", paragraph).casefold().split())


def _units(text: str) -> list[str]:
    """A document's paragraphs (cut at blank lines, surrounding newlines dropped, each followed by one blank line);
    a paragraph longer than ``LONG_PARAGRAPH_BYTES`` in pieces of at most ``CHUNK_BYTES`` (``_pieces``)."""
    out = []
    for para in text.split("\n\n"):
        para = para.strip("\n")
        if not para.strip():
            continue
        if len(para.encode("utf-8")) > max(LONG_PARAGRAPH_BYTES, CHUNK_BYTES):
            pieces = _pieces(para, CHUNK_BYTES)
            out.extend(pieces[:-1] + [pieces[-1] + "\n\n"])
        else:
            out.append(para + "\n\n")
    return out


@dataclass(frozen=True, kw_only=True)
class Split:
    """The split of a corpus (``split_corpus_groups``). ``chunks`` in the canonical order (documents sorted by the
    SHA-256 of their text, then name; paragraphs in document order), ``group[i]`` the group of chunk ``i`` (the
    smallest index of a chunk in it), ``is_val[i]`` its side."""

    chunks: tuple[str, ...]
    group: tuple[int, ...]
    is_val: tuple[bool, ...]
    paragraphs: int  # paragraphs (and pieces of long ones) read
    duplicate_paragraphs: int  # of them dropped as duplicates after normalisation
    duplicate_bytes: int  # their UTF-8 bytes
    groups: int  # groups of chunks that share a 64-byte string (a chunk sharing none is a group of one)
    largest_group_bytes: int

    @property
    def train(self) -> list[str]:
        return [c for c, v in zip(self.chunks, self.is_val, strict=True) if not v]

    @property
    def val(self) -> list[str]:
        return [c for c, v in zip(self.chunks, self.is_val, strict=True) if v]


def split_corpus_groups(corpus: Corpus, val_permille: int = DEFAULT_VAL_PERMILLE) -> Split:
    """The split (``SPLIT_VERSION``; the module docstring states the rule)."""
    docs = sorted(corpus.documents, key=lambda d: (hashlib.sha256(d.text.encode("utf-8")).digest(), d.name))
    seen: set[bytes] = set()
    chunks: list[str] = []
    paragraphs = dups = dup_bytes = 0
    for doc in docs:
        current: list[str] = []
        size = 0
        for unit in _units(doc.text):
            paragraphs += 1
            n = len(unit.encode("utf-8"))
            key = hashlib.sha256(_normalise(unit).encode("utf-8")).digest()
            if key in seen:
                dups += 1
                dup_bytes += n
                continue
            seen.add(key)
            if current and size + n > CHUNK_BYTES:
                chunks.append("".join(current))
                current, size = [], 0
            current.append(unit)
            size += n
        if current:
            chunks.append("".join(current))
    del seen
    label = shared_string_groups(chunks)
    sizes = np.array([len(c.encode("utf-8")) for c in chunks], dtype=np.int64)
    group_bytes = np.bincount(label, weights=sizes, minlength=len(chunks)) if chunks else np.zeros(0)
    keys = np.array([_chunk_key(c) for c in chunks], dtype=np.int64)
    group_key = np.full(len(chunks), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(group_key, label, keys)
    is_val = (group_key[label] % 1000) < val_permille
    return Split(chunks=tuple(chunks), group=tuple(int(g) for g in label), is_val=tuple(bool(v) for v in is_val),
                 paragraphs=paragraphs, duplicate_paragraphs=dups, duplicate_bytes=dup_bytes,
                 groups=int(len(np.unique(label))), largest_group_bytes=int(group_bytes.max()) if chunks else 0)


def split_corpus(corpus: Corpus, val_permille: int = DEFAULT_VAL_PERMILLE) -> tuple[list[str], list[str]]:
    """The training and validation chunks of ``split_corpus_groups`` (their concatenations are the two splits'
    text); a ``CorpusError`` naming ``--corpus`` when either side is empty."""
    split = split_corpus_groups(corpus, val_permille)
    _check_split(corpus, split)
    return split.train, split.val


def _check_split(corpus: Corpus, split: Split) -> None:
    n_val = sum(split.is_val)
    n_train = len(split.chunks) - n_val
    if not n_train or not n_val:
        raise CorpusError(
            f"{corpus.name!r} cannot be split without leakage: {n_train} training and {n_val} validation chunk(s) "
            f"({len(split.chunks)} chunk(s) of up to 2 KB after dropping {split.duplicate_paragraphs} duplicate "
            f"paragraph(s), in {split.groups} group(s) of chunks sharing {LEAK_WINDOW_BYTES}-byte strings; the "
            f"largest group holds {split.largest_group_bytes:,} of {sum(len(c.encode()) for c in split.chunks):,} "
            "bytes and a group is never cut; give more, or less repetitive, text)")


# --- 64-byte strings: rolling hashes, groups, the leak measure ----------------------------------------

#: the polynomial rolling hash's base (odd, so invertible modulo 2**64) and the block it runs over
_BASE = np.uint64(0x100000001B3)
_BASE_INV = np.uint64(pow(0x100000001B3, -1, 2**64))
HASH_BLOCK_BYTES = 1 << 18
#: windows per partition of the hash space when grouping, at most (memory: about 36 bytes per window of one
#: partition; the number of partitions is the power of two that keeps each under this)
GROUP_PARTITION_BYTES = 4_000_000
_POWERS: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``B**t`` and ``B**-t`` modulo 2**64 for t < n (uint64 arithmetic wraps modulo 2**64); computed once for the
    longest block asked so far."""
    have = _POWERS.get("n")
    if have is None or len(have[0]) < n:
        m = max(n, HASH_BLOCK_BYTES + LEAK_WINDOW_BYTES)
        up = np.full(m, _BASE, dtype=np.uint64)
        up[0] = 1
        down = np.full(m, _BASE_INV, dtype=np.uint64)
        down[0] = 1
        _POWERS["n"] = have = (np.cumprod(up, dtype=np.uint64), np.cumprod(down, dtype=np.uint64))
    return have[0][:n], have[1][:n]


def _hash_block(x: np.ndarray, width: int) -> np.ndarray:
    """Hashes of every ``width``-byte window of ``x`` (uint8): ``sum_k x[i+k] B**(width-1-k) mod 2**64`` (the high
    bits depend on every byte through the carries: partitions are cut by the top bits, not the low ones).

    Vectorised through prefix sums: with ``S[j] = sum_{t<j} x[t] B**-t``, the window at ``i`` is
    ``(S[i+width] - S[i]) * B**(i+width-1)``."""
    n = len(x) - width + 1
    if n <= 0:
        return np.zeros(0, dtype=np.uint64)
    up, down = _powers(len(x))
    prefix = np.zeros(len(x) + 1, dtype=np.uint64)
    np.cumsum(x.astype(np.uint64) * down, dtype=np.uint64, out=prefix[1:])
    return (prefix[width:] - prefix[:n]) * up[width - 1:]


def window_hashes(data: bytes | np.ndarray, width: int = 64) -> np.ndarray:
    """The hash of every ``width``-byte window of ``data`` (``len - width + 1`` of them), in blocks of
    ``HASH_BLOCK_BYTES`` (memory: about 40 bytes per byte of one block, plus the 8-byte result per window)."""
    x = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes | bytearray) else data
    n = len(x) - width + 1
    if n <= 0:
        return np.zeros(0, dtype=np.uint64)
    out = np.empty(n, dtype=np.uint64)
    for a in range(0, n, HASH_BLOCK_BYTES):
        b = min(a + HASH_BLOCK_BYTES, n)
        out[a:b] = _hash_block(x[a:b + width - 1], width)
    return out


def _blocks(chunks: Sequence[str], width: int):
    """The UTF-8 bytes of ``"".join(chunks)`` as (offset, uint8 block) pairs whose consecutive blocks overlap by
    ``width - 1`` bytes, so every window lies in one block exactly once (memory: one block, not the text)."""
    carry, offset, parts, size = b"", 0, [], 0
    for chunk in chunks:
        data = chunk.encode("utf-8")
        parts.append(data)
        size += len(data)
        if size >= HASH_BLOCK_BYTES:
            block = carry + b"".join(parts)
            yield offset, np.frombuffer(block, dtype=np.uint8)
            keep = min(width - 1, len(block))
            offset += len(block) - keep
            carry, parts, size = block[len(block) - keep:], [], 0
    block = carry + b"".join(parts)
    if len(block) >= width:
        yield offset, np.frombuffer(block, dtype=np.uint8)


def shared_string_groups(chunks: Sequence[str], width: int = LEAK_WINDOW_BYTES) -> np.ndarray:
    """Connected components of the chunks under "shares a ``width``-byte string" (a window wholly inside each),
    as one label per chunk (the smallest chunk index of its component).

    Exact up to 64-bit hash collisions: every window's hash is computed, the windows are sorted by hash, and two
    chunks holding the same hash are joined. Memory is bounded by cutting the hash space (by its top bits) into
    partitions of at most about ``GROUP_PARTITION_BYTES`` windows (one pass over the text per partition)."""
    sizes = np.array([len(c.encode("utf-8")) for c in chunks], dtype=np.int64)
    ends = np.cumsum(sizes)
    starts = ends - sizes
    total = int(ends[-1]) if len(chunks) else 0
    bits = max(0, math.ceil(math.log2(max(1, total) / GROUP_PARTITION_BYTES)))
    parts = 1 << bits
    edges = []
    for part in range(parts):
        hs, cs = [], []
        for offset, block in _blocks(chunks, width):
            h = window_hashes(block, width)
            pos = np.flatnonzero((h >> np.uint64(64 - bits)) == part) if bits else np.arange(len(h))
            h = h[pos]
            pos += offset
            chunk = np.searchsorted(starts, pos, side="right") - 1
            inside = pos + width <= ends[chunk]
            hs.append(h[inside])
            cs.append(chunk[inside].astype(np.int32))
            del h, pos, chunk, inside
        if not hs:
            continue
        h, c = np.concatenate(hs), np.concatenate(cs)
        del hs, cs
        order = np.argsort(h)  # equal hashes adjacent; consecutive pairs of a run link all its chunks
        h, c = h[order], c[order]
        del order
        pair = (h[1:] == h[:-1]) & (c[1:] != c[:-1])
        edges.append(np.stack([c[:-1][pair], c[1:][pair]], axis=1).astype(np.int64))
        del h, c, pair
    label = np.arange(len(chunks), dtype=np.int64)
    if edges:
        e = np.unique(np.concatenate(edges), axis=0)
        while len(e):  # min-label propagation with pointer jumping until every edge joins equal labels
            m = np.minimum(label[e[:, 0]], label[e[:, 1]])
            np.minimum.at(label, e[:, 0], m)
            np.minimum.at(label, e[:, 1], m)
            while True:
                jumped = label[label]
                if np.array_equal(jumped, label):
                    break
                label = jumped
            if np.array_equal(label[e[:, 0]], label[e[:, 1]]):
                break
    return label


def leaked_tokens(val_chunks: Sequence[str], train_chunks: Sequence[str], val_token_bytes: np.ndarray,
                  width: int = LEAK_WINDOW_BYTES) -> np.ndarray:
    """Per validation token (``val_token_bytes``: the UTF-8 bytes of each, in order, summing to the validation
    text's bytes), whether it lies wholly inside a ``width``-byte string of the validation text that also occurs
    in the training text (each split's text is the concatenation of its chunks).

    Memory: the validation windows' hashes (8 bytes per validation byte) and one block of training text at a
    time."""
    val = "".join(val_chunks).encode("utf-8")
    lengths = np.asarray(val_token_bytes, dtype=np.int64)
    if int(lengths.sum()) != len(val):
        raise ValueError(f"the tokens stand for {int(lengths.sum()):,} bytes, the validation text has {len(val):,}")
    vh = window_hashes(val, width)
    uniq, inverse = np.unique(vh, return_inverse=True)
    del vh
    found = np.zeros(len(uniq), dtype=bool)
    if len(uniq):
        for _, block in _blocks(train_chunks, width):
            th = np.sort(window_hashes(block, width))  # sorted needles: the binary searches walk forward (7x faster)
            idx = np.searchsorted(uniq, th)
            idx[idx == len(uniq)] = 0
            found[idx[uniq[idx] == th]] = True
    leaked = found[inverse]  # per window start in the validation text
    del inverse
    prefix = np.concatenate([[0], np.cumsum(leaked, dtype=np.int64)])
    end = np.cumsum(lengths)
    start = end - lengths
    lo = np.maximum(end - width, 0)
    hi = np.minimum(start, len(leaked) - 1)
    ok = hi >= lo
    out = np.zeros(len(lengths), dtype=bool)
    out[ok] = prefix[hi[ok] + 1] - prefix[lo[ok]] > 0
    return out


def val_leak_fraction(val_chunks: Sequence[str], train_chunks: Sequence[str], val_token_bytes: np.ndarray,
                      width: int = LEAK_WINDOW_BYTES) -> float:
    """Share of validation tokens lying wholly inside a ``width``-byte string that also occurs in the training
    text (``leaked_tokens``); 0.0 for an empty validation split."""
    leaked = leaked_tokens(val_chunks, train_chunks, val_token_bytes, width)
    return float(leaked.mean()) if len(leaked) else 0.0


# --- tokenizer --------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class TokenizedCorpus:
    """The corpus as token ids (torch int64), with what bits per byte needs.

    ``token_bytes[i]`` is the number of UTF-8 bytes token id ``i`` stands for (byte-level BPE: exact).
    """

    corpus_name: str
    corpus_sha256: str  # ``Corpus.sha256``: checkable with sha256sum
    vocab_size: int
    train_ids: object  # torch.LongTensor
    val_ids: object  # torch.LongTensor
    token_bytes: object  # torch.LongTensor, one entry per id
    train_bytes: int
    val_bytes: int
    tokenizer_path: str
    val_permille: int
    #: share of validation tokens inside 64-byte strings that also occur in the training split (None: not measured)
    val_leak_fraction: float | None = None
    #: the same share under the previous rule (hashing 2 KB chunks), reported beside it (None: not measured)
    val_leak_fraction_before: float | None = None
    #: cross-entropy of the validation split under a unigram fitted on the training split (nats/token)
    unigram_val_nats: float | None = None
    #: the split rule's name (part of every run key: a new rule never serves runs of an old split)
    split_version: str = "hash-chunks-v1"
    #: ``Corpus.content_key``: the corpus part of every run's cache key (``probes.run_key``); "" = ``corpus_sha256``
    corpus_key: str = ""

    @property
    def run_key_corpus(self) -> str:
        return self.corpus_key or self.corpus_sha256

    @property
    def train_tokens(self) -> int:
        return int(self.train_ids.numel())

    @property
    def val_tokens(self) -> int:
        return int(self.val_ids.numel())


def _train_tokenizer(texts: Sequence[str], vocab_size: int, path: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(list(texts), trainer=trainer)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tok.save(str(tmp))
    tmp.replace(path)
    return tok


def _token_lengths(tok, vocab_size: int):
    import torch

    lengths = torch.zeros(vocab_size, dtype=torch.long)
    for symbol, i in tok.get_vocab().items():
        lengths[i] = len(symbol)  # byte-level alphabet: one symbol per byte
    return lengths


def _encode(tok, chunks: Sequence[str]):
    """The token ids of ``"".join(chunks)``, each chunk encoded on its own, ``ENCODE_BATCH_CHUNKS`` at a time (the
    tokenizer's encodings (ids, offsets, token strings) of one batch in memory, not of the whole split)."""
    import torch

    parts = [torch.tensor([i for enc in tok.encode_batch(list(chunks[start:start + ENCODE_BATCH_CHUNKS])) for i in enc.ids],
                          dtype=torch.long) for start in range(0, len(chunks), ENCODE_BATCH_CHUNKS)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


def tokenize(corpus: Corpus, vocab_size: int, *, val_permille: int = DEFAULT_VAL_PERMILLE) -> TokenizedCorpus:
    """Split (``split_corpus``), train (or load the cached) byte-level BPE on the training split, encode both
    splits, and measure the leak (``val_leak_fraction``, and ``val_leak_fraction_before`` under the old rule, its
    validation text encoded with the same tokenizer) and the unigram cross-entropy (``unigram_val_nats``)."""
    import torch
    from tokenizers import Tokenizer

    if not 257 <= vocab_size <= 1_048_576:
        raise CorpusError(f"num_tokens = {vocab_size} is not allowed: the byte-level BPE needs from 257 (256 bytes + "
                          "at least one merge) to 1,048,576", "num_tokens")
    train, val = split_corpus(corpus, val_permille)
    key = f"{corpus.content_key[:20]}-v{vocab_size}-p{val_permille}-{SPLIT_VERSION}"
    tdir = cache_dir("tokenizers")
    path = tdir / f"{key}.json"
    tok = Tokenizer.from_file(str(path)) if path.exists() else _train_tokenizer(train, vocab_size, path)
    ids_path = cache_dir("corpora") / f"{key}.pt"
    data = None
    if ids_path.exists():
        try:
            data = torch.load(ids_path, weights_only=True)
        except Exception:  # noqa: BLE001 - a torn cache file is rebuilt
            data = None
    if data is None:
        lengths = _token_lengths(tok, vocab_size)
        train_ids, val_ids = _encode(tok, train), _encode(tok, val)
        leak = val_leak_fraction(val, train, lengths[val_ids].numpy())
        old_train, old_val = split_corpus_v1(corpus, val_permille)
        before = (val_leak_fraction(old_val, old_train, lengths[_encode(tok, old_val)].numpy())
                  if old_val and old_train else None)
        del old_train, old_val
        data = {"train": train_ids, "val": val_ids, "token_bytes": lengths,
                "train_bytes": torch.tensor(sum(len(c.encode("utf-8")) for c in train)),
                "val_bytes": torch.tensor(sum(len(c.encode("utf-8")) for c in val)),
                "val_leak_fraction": leak, "val_leak_fraction_before": before,
                "unigram_val_nats": unigram_cross_entropy_nats(train_ids, val_ids, vocab_size)}
        tmp = ids_path.with_name(ids_path.name + f".{os.getpid()}.tmp")
        torch.save(data, tmp)
        tmp.replace(ids_path)
    return TokenizedCorpus(corpus_name=corpus.name, corpus_sha256=corpus.sha256, vocab_size=vocab_size,
                           train_ids=data["train"], val_ids=data["val"], token_bytes=data["token_bytes"],
                           train_bytes=int(data["train_bytes"]), val_bytes=int(data["val_bytes"]),
                           tokenizer_path=str(path), val_permille=val_permille,
                           val_leak_fraction=data["val_leak_fraction"],
                           val_leak_fraction_before=data["val_leak_fraction_before"],
                           unigram_val_nats=data["unigram_val_nats"], split_version=SPLIT_VERSION,
                           corpus_key=corpus.content_key)


def unigram_entropy_nats(ids: Sequence[int] | object) -> float:
    """Entropy of the empirical token distribution, ``-sum p log p`` in nats per token (the loss of the
    best model that ignores context, fitted on the very tokens it scores: see ``unigram_cross_entropy_nats``)."""
    values = ids.tolist() if hasattr(ids, "tolist") else list(ids)
    counts = Counter(values)
    n = len(values)
    return -sum(c / n * math.log(c / n) for c in counts.values())


def unigram_cross_entropy_nats(train_ids: Sequence[int] | object, val_ids: Sequence[int] | object,
                               vocab_size: int) -> float:
    """Cross-entropy of ``val_ids`` under a unigram fitted on ``train_ids`` with add-one (Laplace) smoothing over the
    vocabulary, ``p(i) = (count_train(i) + 1) / (N_train + vocab_size)``, in nats per token: the loss of a model
    that learned the training split's token frequencies and nothing else (the "learned nothing" line)."""
    train = np.asarray(train_ids.numpy() if hasattr(train_ids, "numpy") else train_ids, dtype=np.int64)
    val = np.asarray(val_ids.numpy() if hasattr(val_ids, "numpy") else val_ids, dtype=np.int64)
    if not len(val):
        raise ValueError("the validation split has no tokens")
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64)
    log_p = np.log(counts + 1.0) - math.log(len(train) + vocab_size)
    return float(-log_p[val].mean())


def describe(tc: TokenizedCorpus) -> dict[str, object]:
    """A JSON-able summary (what the page and the docs print)."""
    return {"corpus": tc.corpus_name, "corpus_sha256": tc.corpus_sha256, "vocab_size": tc.vocab_size,
            "train_split_tokens": tc.train_tokens, "val_split_tokens": tc.val_tokens, "train_split_bytes": tc.train_bytes,
            "val_split_bytes": tc.val_bytes, "val_permille": tc.val_permille, "split_version": tc.split_version,
            "val_leak_fraction": tc.val_leak_fraction, "val_leak_fraction_before": tc.val_leak_fraction_before,
            "unigram_val_nats": tc.unigram_val_nats}


if __name__ == "__main__":  # pragma: no cover - a quick look: python -m xtlens.profiling.benefit.corpus
    print(json.dumps(describe(tokenize(default_corpus(), 512)), indent=1))
