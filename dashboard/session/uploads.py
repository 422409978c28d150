"""Result tables this session holds that it did not measure: uploaded on the Export tab, or the tables of a
restored session file, each with where it came from (``upload_origin``); and the Benefits tab's uploaded
probe tables. A table of the same name replaces the older one.
"""

from __future__ import annotations

from typing import Any

from xtlens.dashboard.session import store

_UPLOADS = "_xtlens_uploads"
_ORIGINS = "_xtlens_upload_origins"
_UPLOAD_IDS = "_xtlens_upload_ids"
_PROBE_UPLOADS = "_xtlens_probe_uploads"


def _replace(key: str, name: str, frame: Any) -> None:
    tables = [table for table in store.get(key, []) if table[0] != name]
    tables.append((name, frame))
    store.put(key, tables)


def add_upload(name: str, frame: Any, origin: str | None = None) -> None:
    """Keep an uploaded result table (``origin``: where it came from, see ``upload_origin``; default
    ``uploaded <name>``). A table of the same name replaces the older one."""
    _replace(_UPLOADS, name, frame)
    store.put(_ORIGINS, {**store.get(_ORIGINS, {}), name: origin or f"uploaded {name}"})


def uploads() -> list[tuple[str, Any]]:
    return list(store.get(_UPLOADS, []))


def upload_origin(name: str) -> str:
    """Where the table ``name`` of ``uploads()`` came from, in words: ``uploaded FILE`` or ``restored session``."""
    return str(store.get(_ORIGINS, {}).get(name) or f"uploaded {name}")


def on_clear_uploads() -> None:
    store.put(_UPLOADS, [])
    store.put(_ORIGINS, {})


def new_upload(file_id: str) -> bool:
    """True the first time the uploader hands over the file ``file_id`` (then remembered)."""
    seen = store.setdefault(_UPLOAD_IDS, set())
    if file_id in seen:
        return False
    seen.add(file_id)
    return True


def forget_upload_id(file_id: str) -> None:
    store.setdefault(_UPLOAD_IDS, set()).discard(file_id)


def add_probe_upload(name: str, frame: Any) -> None:
    """Keep an uploaded probe table (the Benefits tab)."""
    _replace(_PROBE_UPLOADS, name, frame)


def probe_uploads() -> list[tuple[str, Any]]:
    return list(store.get(_PROBE_UPLOADS, []))
