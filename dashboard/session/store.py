"""The one module that touches ``st.session_state`` and ``st.query_params``.

Every other module of the dashboard reads and writes the browser session through these few functions, so a
search for ``session_state`` finds one file, and a test can swap the session for a plain dict (``use``).
Keys are plain strings: a widget's ``key=`` (``cfg.dim``, ``latency.max_len``) or a private ``_xtlens_*`` key
owned by one module of ``dashboard.session``.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import streamlit as st

_override: MutableMapping[str, Any] | None = None


def _session() -> MutableMapping[str, Any]:
    return st.session_state if _override is None else _override


@contextmanager
def use(session: MutableMapping[str, Any]) -> Iterator[None]:
    """Within the block, read and write ``session`` instead of Streamlit's (an ``AppTest``'s session, a dict)."""
    global _override
    previous, _override = _override, session
    try:
        yield
    finally:
        _override = previous


# --- the browser session's values ---------------------------------------------------------------------

def get(key: str, default: Any = None) -> Any:
    return _session().get(key, default)


def put(key: str, value: Any) -> None:
    _session()[key] = value


def has(key: str) -> bool:
    return key in _session()


def pop(key: str, default: Any = None) -> Any:
    return _session().pop(key, default)


def setdefault(key: str, default: Any) -> Any:
    """The value under ``key``, first stored as ``default`` when there is none (a mutable default is shared)."""
    session = _session()
    if key not in session:
        session[key] = default
    return session[key]


# --- the page's URL -----------------------------------------------------------------------------------

def url_params() -> dict[str, str]:
    """The query parameters of the page's URL now."""
    return {k: st.query_params.get(k) for k in st.query_params.keys()}


def replace_url_params(params: dict[str, str]) -> None:
    """Make ``params`` the URL's whole query."""
    st.query_params.from_dict(params)


def set_url_param(key: str, value: str) -> None:
    st.query_params[key] = value


def drop_url_param(key: str) -> None:
    if key in st.query_params:
        del st.query_params[key]
