"""The one boundary for untrusted text (paste box, URL, uploads, CLI files): size caps, strict UTF-8, bracket
nesting and duplicate names, each failure a ``ConfigError`` naming the field.

Standard library only."""

from __future__ import annotations

import errno
import os
import stat
import typing

from xtlens.core.errors import ConfigError

__all__ = ["MAX_CONFIG_TEXT_CHARS", "MAX_NESTING", "untrusted_text", "read_untrusted_file", "nesting_depth",
           "check_nesting", "no_duplicates"]

#: Largest snippet, JSON configuration or URL query accepted (characters). A real configuration is < 2 KiB.
MAX_CONFIG_TEXT_CHARS = 64 * 1024
#: Most nesting accepted in a snippet or a JSON document (a real configuration nests 2-3 deep).
MAX_NESTING = 50


def untrusted_text(field: str, data: str | bytes, *, limit: int = MAX_CONFIG_TEXT_CHARS) -> str:
    """``data`` (text or raw file bytes) checked at the boundary: at most ``limit`` characters (bytes for
    raw data), strict UTF-8 (no lone surrogates), no NUL. A leading UTF-8 byte-order mark (as Windows editors
    write it) is dropped. Raises ``ConfigError`` naming ``field``."""
    if len(data) > limit:
        raise ConfigError(field, None, f"at most {limit:,} {'bytes' if isinstance(data, bytes) else 'characters'} "
                                       f"(got {len(data):,})")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        text.encode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(field, None, f"UTF-8 text (undecodable byte at position {exc.start})") from None
    except UnicodeEncodeError as exc:
        raise ConfigError(field, None, f"UTF-8 text (a lone surrogate such as \\ud800 at position {exc.start})") from None
    text = text.removeprefix("\ufeff")
    if "\x00" in text:
        raise ConfigError(field, None, "text without NUL characters")
    return text


def read_untrusted_file(field: str, path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of the regular file ``path`` (at most ``limit + 1`` read: the caller's size check sees a file
    that is too large). A named pipe, a device, a socket or a folder is refused before anything is read (it is
    opened without blocking, so a pipe with no writer never hangs); a missing file, a symlink loop and a file
    that cannot be read are each named. Raises ``ConfigError`` naming ``field`` and ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise ConfigError(field, str(path), _open_failure(path, exc)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = _kind(mode)
            hint = "" if kind == "a folder" else "; copy its content to a file first"
            raise ConfigError(field, str(path), f"a regular file (it is {kind}{hint})")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise ConfigError(field, str(path), f"a readable file (cannot read it: {exc.strerror or exc})") from None
    finally:
        os.close(fd)


def _open_failure(path: str | os.PathLike[str], exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a file (it is a symlink loop: a link that leads back to itself)"
    if exc.errno == errno.ENOENT:
        if os.path.islink(path):
            return "a file that exists (it is a symlink to a missing file)"
        return "a file that exists (no such file)"
    if exc.errno == errno.EISDIR:
        return "a regular file (it is a folder)"
    return f"a readable file (cannot open it: {exc.strerror or exc})"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def nesting_depth(text: str) -> int:
    """Upper bound of the bracket nesting of ``text`` (brackets inside strings count too: conservative)."""
    depth = deepest = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth -= 1
    return deepest


def check_nesting(field: str, text: str) -> None:
    """Raise ``ConfigError`` if ``text`` nests brackets deeper than ``MAX_NESTING``."""
    if nesting_depth(text) > MAX_NESTING:
        raise ConfigError(field, None, f"at most {MAX_NESTING} nested brackets")


def no_duplicates(field: str, pairs: typing.Iterable[tuple[str, object]]) -> dict[str, object]:
    """``pairs`` as a dict; a key given twice raises ``ConfigError`` naming it."""
    seen: dict[str, object] = {}
    for key, value in pairs:
        if key in seen:
            raise ConfigError(key, None, f"given once in the {field}: it appears more than once")
        seen[key] = value
    return seen

