"""Time and peak memory of the split (``dedup-groups-v1``) and its leak measure on generated English-like text.

The text: 20,000 pseudo-words drawn with Zipf weights (1/rank), sentences of 5-20 words, paragraphs of 3-8
sentences, documents of 40 paragraphs (the text ``docs/benefits.md``'s "Corpus size" measured with). Each stage
runs in a fresh child process; its peak memory is the rise of ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` over
the child's peak after it generated the text (so the corpus's own string is not counted).

Stages: ``split`` (``split_corpus_groups``: normalise, deduplicate, group, assign); ``leak`` (the split, then
``val_leak_fraction`` for it and for the old rule; validation tokens are the byte-level pre-tokenizer's pieces, a
stand-in for BPE tokens that costs the same to measure); ``tokenize`` (the whole of ``tokenize``: split, BPE
training, encoding, both leak measures, the unigram line).

    .venv/bin/python benchmarks/split_scale.py --quick               # 2 MB
    .venv/bin/python benchmarks/split_scale.py --mb 20               # split and leak
    .venv/bin/python benchmarks/split_scale.py --mb 20 --stages split leak tokenize
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def generate(n_bytes: int, seed: int = 0):
    import numpy as np
    from xtlens.profiling.benefit.corpus import Corpus, Document

    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    vocab = ["".join(rng.choice(letters, rng.integers(2, 11))) for _ in range(20_000)]
    p = 1.0 / np.arange(1, len(vocab) + 1)
    p /= p.sum()
    docs, size, d = [], 0, 0
    while size < n_bytes:
        n_sents = rng.integers(3, 9, size=40)  # sentences per paragraph
        n_words = rng.integers(5, 21, size=int(n_sents.sum()))  # words per sentence
        words = iter(rng.choice(len(vocab), int(n_words.sum()), p=p).tolist())
        sents = iter([" ".join(vocab[next(words)] for _ in range(k)).capitalize() + "." for k in n_words.tolist()])
        text = "\n\n".join(" ".join(next(sents) for _ in range(k)) for k in n_sents.tolist()) + "\n"
        docs.append(Document(name=f"doc{d:05d}.txt", text=text))
        size += len(text.encode())
        d += 1
    return Corpus(name=f"generated-{n_bytes}", documents=tuple(docs))


def child(stage: str, mb: float) -> dict:
    import numpy as np
    from xtlens.profiling.benefit import corpus as c

    corpus = generate(int(mb * 1e6))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    out: dict = {"stage": stage, "corpus_bytes": corpus.num_bytes}
    if stage == "tokenize":
        tc = c.tokenize(corpus, 512)
        out.update(c.describe(tc))
    else:
        split = c.split_corpus_groups(corpus)
        out.update(chunks=len(split.chunks), groups=split.groups, duplicate_paragraphs=split.duplicate_paragraphs,
                   largest_group_bytes=split.largest_group_bytes, split_s=time.perf_counter() - t0)
        if stage == "leak":
            from tokenizers import pre_tokenizers

            pre = pre_tokenizers.ByteLevel(add_prefix_space=False)

            def lengths(chunks):
                return np.array([len(s) for ch in chunks for s, _ in pre.pre_tokenize_str(ch)], dtype=np.int64)

            train, val = split.train, split.val
            val_lengths = lengths(val)
            t1 = time.perf_counter()
            out["val_leak_fraction"] = c.val_leak_fraction(val, train, val_lengths)
            out["leak_s"] = time.perf_counter() - t1
            old_train, old_val = c.split_corpus_v1(corpus)
            old_lengths = lengths(old_val)
            t1 = time.perf_counter()
            out["val_leak_fraction_before"] = c.val_leak_fraction(old_val, old_train, old_lengths)
            out["leak_before_s"] = time.perf_counter() - t1
            out["val_bytes"] = sum(len(x.encode()) for x in val)
            out["train_bytes"] = sum(len(x.encode()) for x in train)
    out["total_s"] = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["peak_rise_mib"] = (peak - base) / 1024
    out["peak_rise_bytes_per_corpus_byte"] = (peak - base) * 1024 / corpus.num_bytes
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=20.0, help="corpus size in MB (1e6 bytes)")
    ap.add_argument("--quick", action="store_true", help="2 MB (seconds)")
    ap.add_argument("--stages", nargs="+", default=["split", "leak"], choices=["split", "leak", "tokenize"])
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.mb = 2.0
    if args.child:
        print(json.dumps(child(args.child, args.mb)))
        return 0
    env = dict(os.environ, OMP_NUM_THREADS="1", RAYON_NUM_THREADS=os.environ.get("RAYON_NUM_THREADS", "2"))
    for stage in args.stages:
        res = subprocess.run([sys.executable, __file__, "--mb", str(args.mb), "--child", stage], env=env,
                             capture_output=True, text=True, check=True)
        row = json.loads(res.stdout.strip().splitlines()[-1])
        row["load_average"] = os.getloadavg()
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
