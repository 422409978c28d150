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
Encoding runs in batches of ``ENCODE_BATCH_CHUNKS`` chunks (encoding the whole split at once held 67 to 91 bytes per
byte: 1.5 GB for 20 MB, about 7 GB for 200 MB). Named pipes, devices and sockets
are refused before they are opened (reading one would block or never end); inside a folder they are skipped
and listed.

Split (deterministic, by hash): every document is cut into chunks at blank lines (paragraphs, grouped up to
``CHUNK_BYTES`` bytes). A paragraph longer than ``LONG_PARAGRAPH_BYTES`` (16 KB; none in the default corpus,
whose longest is 6 KB) is first cut into pieces of at most ``CHUNK_BYTES``: at line ends, then a line still
too long at sentence ends (``.``, ``!`` or ``?`` followed by white space), then a sentence still too long in
fixed windows of ``CHUNK_BYTES`` bytes (at a character boundary); consecutive pieces are regrouped up to
``CHUNK_BYTES``, so the chunks concatenate back to the paragraph exactly. So a single-paragraph file of 1 MB
gives about 500 chunks, not one. A chunk goes to validation when ``int(sha256(chunk text)[:8], 16) % 1000 <
val_permille`` (default 100, i.e. about 10 %), otherwise to training. The split depends only on the text, not
on file order or on the machine; identical chunks always land on the same side (no leak by duplication).

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
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
    "tokenize",
    "unigram_entropy_nats",
    "cache_dir",
]

DEFAULT_CORPUS_NAME = "pydoc_data.topics (CPython reference documentation, PSF License)"
CHUNK_BYTES = 2048
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


@dataclass(frozen=True, kw_only=True)
class Corpus:
    """Documents in a fixed order, with the sha256 of their content (names and text)."""

    name: str
    documents: tuple[Document, ...]
    skipped: tuple[str, ...] = ()
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        h = hashlib.sha256()
        for doc in self.documents:
            h.update(doc.name.encode("utf-8") + b"\0" + doc.text.encode("utf-8") + b"\0")
        object.__setattr__(self, "sha256", h.hexdigest())

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
    """Validation iff ``int(sha256(chunk)[:8], 16) % 1000 < val_permille``."""
    return int(hashlib.sha256(chunk.encode("utf-8")).hexdigest()[:8], 16) % 1000 < val_permille


def split_corpus(corpus: Corpus, val_permille: int = DEFAULT_VAL_PERMILLE) -> tuple[list[str], list[str]]:
    train, val = [], []
    for doc in corpus.documents:
        for chunk in split_chunks(doc.text):
            (val if is_val_chunk(chunk, val_permille) else train).append(chunk)
    if not train or not val:
        raise CorpusError(f"{corpus.name!r} is too small to split: {len(train)} training and {len(val)} validation "
                          "chunk(s) (chunks are paragraphs up to 2 KB, long paragraphs cut at lines and sentences; give "
                          "more text)")
    return train, val


# --- tokenizer --------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class TokenizedCorpus:
    """The corpus as token ids (torch int64), with what bits per byte needs.

    ``token_bytes[i]`` is the number of UTF-8 bytes token id ``i`` stands for (byte-level BPE: exact).
    """

    corpus_name: str
    corpus_sha256: str
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


def tokenize(corpus: Corpus, vocab_size: int, *, val_permille: int = DEFAULT_VAL_PERMILLE) -> TokenizedCorpus:
    """Train (or load the cached) byte-level BPE on the training split and encode both splits."""
    import torch
    from tokenizers import Tokenizer

    if not 257 <= vocab_size <= 1_048_576:
        raise CorpusError(f"num_tokens = {vocab_size} is not allowed: the byte-level BPE needs from 257 (256 bytes + "
                          "at least one merge) to 1,048,576", "num_tokens")
    train, val = split_corpus(corpus, val_permille)
    key = f"{corpus.sha256[:20]}-v{vocab_size}-p{val_permille}"
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
        def encode(chunks: list[str]) -> torch.Tensor:
            # in batches: the tokenizer's encodings (ids, offsets, token strings) of one batch at a time
            parts = [torch.tensor([i for enc in tok.encode_batch(chunks[start:start + ENCODE_BATCH_CHUNKS]) for i in enc.ids],
                                  dtype=torch.long) for start in range(0, len(chunks), ENCODE_BATCH_CHUNKS)]
            return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)

        vocab = tok.get_vocab()
        lengths = torch.zeros(vocab_size, dtype=torch.long)
        for symbol, i in vocab.items():
            lengths[i] = len(symbol)  # byte-level alphabet: one symbol per byte
        data = {"train": encode(train), "val": encode(val), "token_bytes": lengths,
                "train_bytes": torch.tensor(sum(len(c.encode("utf-8")) for c in train)),
                "val_bytes": torch.tensor(sum(len(c.encode("utf-8")) for c in val))}
        tmp = ids_path.with_name(ids_path.name + f".{os.getpid()}.tmp")
        torch.save(data, tmp)
        tmp.replace(ids_path)
    return TokenizedCorpus(corpus_name=corpus.name, corpus_sha256=corpus.sha256, vocab_size=vocab_size,
                           train_ids=data["train"], val_ids=data["val"], token_bytes=data["token_bytes"],
                           train_bytes=int(data["train_bytes"]), val_bytes=int(data["val_bytes"]),
                           tokenizer_path=str(path), val_permille=val_permille)


def unigram_entropy_nats(ids: Sequence[int] | object) -> float:
    """Entropy of the empirical token distribution, ``-sum p log p`` in nats per token (the loss of the
    best model that ignores context)."""
    values = ids.tolist() if hasattr(ids, "tolist") else list(ids)
    counts = Counter(values)
    n = len(values)
    return -sum(c / n * math.log(c / n) for c in counts.values())


def describe(tc: TokenizedCorpus) -> dict[str, object]:
    """A JSON-able summary (what the page and the docs print)."""
    return {"corpus": tc.corpus_name, "corpus_sha256": tc.corpus_sha256, "vocab_size": tc.vocab_size,
            "train_split_tokens": tc.train_tokens, "val_split_tokens": tc.val_tokens, "train_split_bytes": tc.train_bytes,
            "val_split_bytes": tc.val_bytes, "val_permille": tc.val_permille}


if __name__ == "__main__":  # pragma: no cover - a quick look: python -m xtlens.profiling.benefit.corpus
    print(json.dumps(describe(tokenize(default_corpus(), 512)), indent=1))
