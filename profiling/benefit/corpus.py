"""Real text for the training probes: the default corpus, the user's files, the split and the tokenizer.

Default corpus: ``pydoc_data.topics``, the English reference documentation that every CPython installation
ships (the text ``help('if')`` prints: 79 topics, about 465 KB of prose and code examples, licensed under the
Python Software Foundation License Version 2 like CPython itself). Nothing is downloaded.

Your corpus: a UTF-8 text file, or a folder of them (every file under it, recursively, in path order; files
that are not UTF-8 text are skipped and listed).

Split (deterministic, by hash): every document is cut into chunks at blank lines (paragraphs, grouped up to
``CHUNK_BYTES`` bytes). A chunk goes to validation when ``int(sha256(chunk text)[:8], 16) % 1000 <
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


def corpus_from_path(path: str | Path) -> Corpus:
    """A text file or every UTF-8 text file under a folder (recursively, sorted by relative path)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CorpusError(f"{str(path)!r} does not exist (give a UTF-8 text file or a folder of them)")
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    docs, skipped = [], []
    for f in files:
        try:
            text = f.read_bytes().decode("utf-8")
        except (UnicodeDecodeError, OSError):
            skipped.append(str(f))
            continue
        if "\0" in text:
            skipped.append(str(f))
            continue
        if text.strip():
            docs.append(Document(name=str(f.relative_to(p)) if p.is_dir() else f.name, text=text))
    corpus = Corpus(name=str(p), documents=tuple(docs), skipped=tuple(skipped))
    _check_size(corpus)
    return corpus


def corpus_from_bytes(name: str, data: bytes) -> Corpus:
    """An uploaded file (the dashboard's upload), UTF-8 text."""
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

def split_chunks(text: str, max_bytes: int = CHUNK_BYTES) -> list[str]:
    """Paragraphs (cut at blank lines) grouped greedily up to ``max_bytes`` UTF-8 bytes per chunk."""
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    chunks, current, size = [], [], 0
    for para in paragraphs:
        n = len(para.encode("utf-8")) + 2
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
                          "chunk(s) (chunks are paragraphs up to 2 KB; give more text)")
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
            out: list[int] = []
            for enc in tok.encode_batch(chunks):
                out.extend(enc.ids)
            return torch.tensor(out, dtype=torch.long)

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
