"""``corpus_sha256`` is checkable with ``sha256sum``: a one-file corpus's digest is the file's SHA-256, a folder's is
the SHA-256 of ``sha256sum``'s lines for its files sorted by name; the run-cache key did not change."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest
from xtlens.profiling.benefit.corpus import Corpus, Document, corpus_from_bytes, corpus_from_path

TEXT = "Ein Satz mit Umlauten: äöü. " * 200 + "\n\nA second paragraph, with an emoji 🙂 and a tab\t.\n" * 50


def _sha256sum(*args: str, cwd=None, stdin: bytes | None = None) -> str:
    out = subprocess.run(["sha256sum", *args], cwd=cwd, input=stdin, capture_output=True, check=True)
    return out.stdout.decode()


needs_sha256sum = pytest.mark.skipif(shutil.which("sha256sum") is None, reason="coreutils sha256sum not installed")


@needs_sha256sum
def test_one_file_digest_is_the_files_sha256(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_bytes(TEXT.encode("utf-8"))
    corpus = corpus_from_path(f)
    assert corpus.sha256 == hashlib.sha256(f.read_bytes()).hexdigest()
    assert corpus.sha256 == _sha256sum(str(f)).split()[0]
    # an upload of the same bytes: the same digest
    assert corpus_from_bytes("notes.txt", f.read_bytes()).sha256 == corpus.sha256


@needs_sha256sum
def test_folder_digest_is_sha256sum_of_the_sorted_lines(tmp_path):
    (tmp_path / "b").mkdir()
    files = {"b/z.txt": TEXT, "a-c.txt": TEXT[::-1], "B.txt": "other " * 500}
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    corpus = corpus_from_path(tmp_path)
    names = sorted(files, key=lambda n: n.encode())  # byte order, as `LC_ALL=C sort`
    listing = _sha256sum(*names, cwd=tmp_path)
    assert [line.split("  ", 1)[1] for line in listing.splitlines()] == names
    assert corpus.sha256 == _sha256sum("-", stdin=listing.encode()).split()[0]
    lines = "".join(f"{hashlib.sha256(files[n].encode()).hexdigest()}  {n}\n" for n in names)
    assert corpus.sha256 == hashlib.sha256(lines.encode()).hexdigest()


def test_cache_key_is_the_names_and_text_digest_as_before():
    docs = (Document(name="x", text="hello"), Document(name="y", text="world"))
    before = hashlib.sha256(b"x\0hello\0y\0world\0").hexdigest()
    corpus = Corpus(name="c", documents=docs)
    assert corpus.content_key == before and corpus.sha256 != before
    one = Corpus(name="c", documents=(Document(name="x", text="hello"),))
    assert one.sha256 == hashlib.sha256(b"hello").hexdigest()
    assert one.content_key == hashlib.sha256(b"x\0hello\0").hexdigest()
